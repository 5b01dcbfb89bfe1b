"""Which torch device a setting names: the one resolver behind every ``device`` key.

The trainer (``trainer.device``, :mod:`archsearch.train`), latency timing and calibration
(``latency.device``, ``python -m archsearch.calibrate device=...``, :mod:`archsearch.hardware`)
all turn ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` into a :class:`torch.device`, and
they must agree on what ``auto`` picks and on what an unknown or missing device is told. Why a
top-level module: ``hardware`` sits below ``train`` in the package's layers
(``tests/test_layout.py``), so the resolver must sit below both, and a device is a property of
the host rather than of a network spec (``net``); beside :mod:`archsearch.errors` and
:mod:`archsearch.checks` every package may import it. What a caller supports differs (no
hardware profile describes an MPS device), so each passes the device kinds it takes, in the
order ``auto`` prefers them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from archsearch.errors import ConfigError

__all__ = ["DEVICE_KINDS", "device_names", "resolve_device"]

#: Every device kind the package runs on, in the order ``auto`` prefers them: CUDA, then MPS
#: (Apple GPUs), then the CPU, which is always there.
DEVICE_KINDS = ("cuda", "mps", "cpu")

_LABELS = {"cuda": "CUDA", "mps": "MPS", "cpu": "CPU"}


def device_names(kinds: Sequence[str] = DEVICE_KINDS) -> str:
    """The names a ``device`` key accepts for ``kinds``: ``auto, cpu, cuda, cuda:N, mps`` by default."""
    names = ["auto"]
    for kind in ("cpu", "cuda", "mps"):  # always listed in this order, whatever auto prefers
        if kind in kinds:
            names += ["cuda", "cuda:N"] if kind == "cuda" else [kind]
    return ", ".join(names)


def _available(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        return torch.backends.mps.is_available()
    return kind == "cpu"


def resolve_device(name: str, key: str = "device", kinds: Sequence[str] = DEVICE_KINDS) -> torch.device:
    """The torch device a ``key`` setting names.

    Args:
        name: ``auto`` (the first of ``kinds`` torch can use here), or ``cpu``, ``cuda``,
            ``cuda:N`` or ``mps``, each only if its kind is in ``kinds``.
        key: the setting's name, for the error (``trainer.device``).
        kinds: the device kinds the caller runs on, in the order ``auto`` prefers them. The CPU
            is always available, so a kind listed after ``cpu`` is used only when named:
            ``("cuda", "cpu", "mps")`` lets ``auto`` pick a GPU or the CPU, never MPS.

    Returns:
        The device (``auto`` gives ``cuda``, ``mps`` or ``cpu`` without an index).

    Raises:
        ConfigError: one sentence naming ``key`` and the names allowed, when ``name`` is not a
            device of ``kinds`` or names one torch cannot use on this machine.
    """
    if name == "auto":
        kind = next((k for k in kinds if _available(k)), None)
        if kind is None:
            raise ConfigError(f"{key} is 'auto' but torch can use none of {', '.join(kinds)} here.")
        return torch.device(kind)
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in kinds:
        raise ConfigError(f"{key} is {name!r}; allowed: {device_names(kinds)}.")
    here = device_names([k for k in kinds if _available(k)])
    if not _available(device.type):
        raise ConfigError(
            f"{key} is {name!r} but torch sees no {_LABELS[device.type]} device here; allowed here: {here}."
        )
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise ConfigError(
            f"{key} is {name!r} but torch sees {count} CUDA device(s) here; "
            f"allowed here: {here} with N below {count}."
        )
    return device
