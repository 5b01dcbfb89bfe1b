"""Where a result came from: package and library versions, the git commit, the device, the hardware profile.

:func:`gather_provenance` collects it once per process; the search records it on the study
(user attr ``provenance``), tags the study's MLflow parent run and every trial and finalize
run with it (``archsearch.<field>``, plus MLflow's own ``mlflow.source.git.commit``), and the
export writes it to ``pareto.json`` (a top-level ``provenance`` block) and to ``pareto.csv``
(one column per field, see :data:`FIELDS`).

Fields (``None`` where unknown):

- ``archsearch_version``: the installed package's version (``importlib.metadata``).
- ``git_commit``: the commit checked out where the package's source is, when it runs from a git
  checkout (``git rev-parse HEAD``, 2 s at most); ``None`` for an installed wheel.
- ``git_dirty``: whether tracked files differ from that commit (``git status``); ``None``
  outside a checkout.
- ``python_version``, ``torch_version``: the interpreter's and torch's versions.
- ``device``: the training device (``trainer.device`` resolved: ``cpu``, ``cuda:0 (NVIDIA
  H100 ...)``, ``mps``).
- ``hardware``: the name of the hardware profile behind ``latency_est_ms``.
- ``hardware_hash``: the first 12 hex digits of the SHA-256 of that profile's content
  (:func:`profile_hash`): two estimates share it only if they were priced by the same numbers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archsearch.hardware.profile import HardwareProfile

__all__ = [
    "FIELDS",
    "HARDWARE_FIELDS",
    "PROVENANCE_ATTR",
    "Provenance",
    "gather_provenance",
    "git_state",
    "profile_hash",
    "row_provenance",
]

#: The study user attr holding the search's provenance (:meth:`Provenance.to_dict`).
PROVENANCE_ATTR = "provenance"
#: Every field, in the order of pareto.csv's columns.
FIELDS = (
    "archsearch_version",
    "git_commit",
    "git_dirty",
    "python_version",
    "torch_version",
    "device",
    "hardware",
    "hardware_hash",
)
#: The fields that describe the cost estimate (the search's), not who trained a network.
HARDWARE_FIELDS = ("hardware", "hardware_hash")
#: MLflow tags are ``archsearch.<field>``.
TAG_PREFIX = "archsearch."
#: Seconds each git command may take before the commit is left unknown.
GIT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Provenance:
    """Where a result came from; see the module docstring for each field."""

    archsearch_version: str
    git_commit: str | None
    git_dirty: bool | None
    python_version: str
    torch_version: str
    device: str | None
    hardware: str | None
    hardware_hash: str | None

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values (for the study, pareto.json and pareto.csv)."""
        return asdict(self)

    def tags(self) -> dict[str, str]:
        """MLflow tags: ``archsearch.<field>`` for every known field, and MLflow's git commit tag."""
        out = {f"{TAG_PREFIX}{k}": _text(v) for k, v in self.to_dict().items() if v is not None}
        if self.git_commit:
            out["mlflow.source.git.commit"] = self.git_commit
        return out


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def gather_provenance(hardware: HardwareProfile | None = None, device: str | None = None) -> Provenance:
    """This process's provenance.

    Args:
        hardware: the profile ``latency_est_ms`` is priced on (None: no estimate, e.g. finalize).
        device: a ``trainer.device`` setting (``auto`` is resolved as the trainer resolves it);
            None leaves the device unknown.
    """
    import torch

    commit, dirty = git_state(_source_root())
    return Provenance(
        archsearch_version=_package_version(),
        git_commit=commit,
        git_dirty=dirty,
        python_version=platform.python_version(),
        torch_version=str(torch.__version__),
        device=None if device is None else _describe_device(device),
        hardware=None if hardware is None else hardware.name,
        hardware_hash=None if hardware is None else profile_hash(hardware),
    )


def profile_hash(profile: HardwareProfile) -> str:
    """12 hex digits of the SHA-256 of the profile's content (its YAML layout, keys sorted)."""
    text = json.dumps(profile.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def row_provenance(search: Mapping[str, Any] | None, trained: Mapping[str, Any] | None) -> dict[str, Any]:
    """The provenance of one exported front member, one value per :data:`FIELDS`.

    Args:
        search: the search's provenance (the study's ``provenance`` user attr; None for a
            study searched before it was recorded).
        trained: who produced the member's accuracy when that was not the search (a finalized
            member's record); its hardware fields are ignored, since ``latency_est_ms`` is
            always the search's estimate.
    """
    base = dict(search or {})
    if trained:
        base.update({k: v for k, v in trained.items() if k not in HARDWARE_FIELDS})
    return {k: base.get(k) for k in FIELDS}


@functools.cache
def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("archsearch")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown"


def _source_root() -> Path:
    from archsearch.resources import PACKAGE_DIR

    return PACKAGE_DIR.parent


@functools.cache
def git_state(root: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout at ``root``; (None, None) when ``root`` is not one.

    Only ``root`` itself is looked at (a wheel installed in a virtual environment inside some
    checkout is not that checkout's code). Each git command may take :data:`GIT_TIMEOUT_S`;
    ``status`` takes no optional locks, so it never contends with another git process.
    """
    git = shutil.which("git")
    if git is None or not (root / ".git").exists():
        return None, None
    commit = _git(git, root, "rev-parse", "--verify", "HEAD")
    if commit is None or len(commit) < 40:
        return None, None
    status = _git(git, root, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


def _git(git: str, root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            [git, "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _describe_device(name: str) -> str:
    """``auto`` resolved as the trainer resolves it; a CUDA device with its name."""
    from archsearch.devices import resolve_device
    from archsearch.errors import ConfigError

    try:
        device = resolve_device(name, "trainer.device")
    except ConfigError:  # a device this host lacks: say what was asked for
        return name
    if device.type == "cuda":
        import torch

        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
