"""The commands a sweep prints to retrain its networks as they were trained.

A trial is shaped by its network, the data split (dataset, its keys, the seed that draws the
validation split and the subset), every trainer setting and the seed of weight initialisation
and shuffling. The commands carry each of these that differs from what the CLI would compose by
default, so the same seed gives the same per-epoch curve. They name the interpreter the sweep
ran with and absolute paths, every word shell-quoted, so a command pasted into a shell works
from any directory: a relative ``model_file`` would resolve against the new working directory.

A study stores its commands as they were made; whoever reads them for printing re-roots them
where the project is now (:func:`relocate_commands`), so a moved or copied project prints
commands that name its own files.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Protocol

from archsearch.storage.database import url_without_password
from archsearch.train.settings import TrainerSettings

if TYPE_CHECKING:
    from archsearch.data.settings import DataSettings

__all__ = ["CONFIG", "Commands", "fill_config", "finalize_command", "relocate_commands", "retrain_command"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Tracked(Protocol):
    @property
    def dir(self) -> Path: ...
    @property
    def uri(self) -> str | None: ...
    @property
    def enabled(self) -> bool: ...


class SearchLike(Protocol):
    """What the commands read of a search's settings (``SearchSettings`` is one; results sit
    below search, so they name the members they read rather than the class)."""

    @property
    def trainer(self) -> TrainerSettings: ...
    @property
    def seed(self) -> int: ...
    @property
    def study(self) -> _Named: ...
    @property
    def tracking(self) -> _Tracked: ...
    @property
    def storage_url(self) -> str: ...
    @property
    def export_dir(self) -> Path: ...


#: Stands for a member's net YAML in a stored retrain command (see :func:`fill_config`).
CONFIG = "{config}"

# A string Hydra reads back as that same string without quotes (not a number, flag or null).
_BARE = re.compile(r"[A-Za-z_~/][\w./~:+-]*")
_KEYWORDS = {"null", "true", "false", "inf", "nan"}


@dataclass(frozen=True)
class Commands:
    """The commands stored with a study: retrain one member, finalize the front ("" if none can work)."""

    retrain: str
    finalize: str


def fill_config(command: str, config: str | Path) -> str:
    """``command`` with its ``model_file={config}`` word naming the net YAML ``config``.

    The path is quoted for Hydra and then for the shell, so spaces and quotes in it survive.
    """
    word = f"model_file={CONFIG}"
    return command.replace(word, shlex.quote(_override("model_file", str(config))))


def relocate_commands(
    stored: Commands, *, tracking_dir: str | Path | None = None, export_dir: str | Path | None = None
) -> Commands:
    """The stored commands re-rooted where the project is now.

    The finalize command names the tracking and export directories the study was written with
    (``tracking.dir=``, ``export.dir=``). Given where they are now, every path under them (the
    storage's SQLite file, the directories themselves) is rewritten there, in both commands,
    even when the old one still exists: a copied project names its own files. Any other
    absolute path under the project's old location (the common parent the directories moved
    with: ``/a`` for ``/a/mlruns`` -> ``/b/mlruns``), such as a virtual environment or a data
    file inside the project, becomes the same path under the new location when that exists;
    an interpreter that exists nowhere becomes this one (``sys.executable``).

    Args:
        stored: the study's ``retrain_command`` and ``finalize_command`` user attrs.
        tracking_dir, export_dir: where the project's directories are now (None: not known;
            paths under it then follow the other directory's move, when found there).
    """
    named = (_path_word(word) for word in shlex.split(stored.finalize))
    old = {w[0]: PurePath(w[1]) for w in named if w is not None and w[0] in _ROOT_KEYS}
    new = {"tracking.dir": tracking_dir, "export.dir": export_dir}
    roots = [(old[k], Path(v).resolve()) for k, v in new.items() if k in old and v is not None]
    mover = _Mover(roots, [_shift(a, b) for a, b in roots])
    return Commands(mover.command(stored.retrain), mover.command(stored.finalize))


#: The finalize command's words naming the project's directories.
_ROOT_KEYS = ("tracking.dir", "export.dir")


def _path_word(word: str) -> tuple[str, str, str] | None:
    """(key, path, prefix) of a ``key=[prefix]PATH`` word naming an absolute path (prefix: ``sqlite:///``)."""
    key, eq, raw = word.partition("=")
    value = _unquote(raw) if eq else ""
    prefix = "sqlite:///" if value.startswith("sqlite:///") else ""
    return (key, value[len(prefix) :], prefix) if value[len(prefix) :].startswith("/") else None


def _unquote(value: str) -> str:
    """A Hydra override value as :func:`_hydra_value` quoted it, unquoted."""
    if len(value) < 2 or value[0] != "'" or value[-1] != "'":
        return value
    out, escaped = [], False
    for char in value[1:-1]:
        if char == "\\" and not escaped:
            escaped = True
            continue
        out.append(char)
        escaped = False
    return "".join(out)


def _shift(old: PurePath, new: Path) -> tuple[PurePath, Path]:
    """``/a/mlruns`` -> ``/b/mlruns`` is a move of ``/a`` to ``/b``: the common tail dropped."""
    while old.name and old.name == new.name and old.parent != old and new.parent != new:
        old, new = old.parent, new.parent
    return old, new


@dataclass(frozen=True)
class _Mover:
    """Re-roots paths: under an old root always, under the project's old place when found at its new one."""

    roots: list[tuple[PurePath, Path]]
    shifts: list[tuple[PurePath, Path]]

    def path(self, text: str) -> str | None:
        """Where ``text`` is now; None to leave it as it is."""
        path = PurePath(text)
        for old, new in self.roots:
            if path.is_relative_to(old):
                return str(new / path.relative_to(old))
        for old, new in self.shifts:
            if path.is_relative_to(old) and (new / path.relative_to(old)).exists():
                return str(new / path.relative_to(old))
        return None

    def command(self, command: str) -> str:
        if not command:
            return command
        words = shlex.split(command)
        moved = self.path(words[0]) if words[0].startswith("/") else None
        if moved is None and words[0].startswith("/") and not Path(words[0]).exists():
            moved = sys.executable
        out = [shlex.quote(moved or words[0])]
        for word in words[1:]:
            found = _path_word(word)
            where = None if found is None else self.path(found[1])
            if found is not None and where is not None:
                word = _override(found[0], found[2] + where)
            # The net YAML's placeholder stays bare for fill_config.
            out.append(word if word == f"model_file={CONFIG}" else shlex.quote(word))
        return " ".join(out)


def retrain_command(settings: SearchLike, data: DataSettings | None, hardware: str = "") -> str:
    """The command that retrains one exported net exactly as its trial was trained.

    Args:
        settings: the search's settings (trainer, seed).
        data: the settings the dataset was loaded from with ``seed``
            (:func:`archsearch.data.datasets.load_dataset`); None when they are not known.
        hardware: the name of the hardware profile ``latency_est_ms`` was estimated on, when it
            is a config file (``hardware=NAME``), so the retrained net's estimate is the same;
            "" (``hardware=auto``, the default, or a profile built in Python): not stated.

    Returns:
        The command with ``{config}`` standing for the net YAML, or "" when the data cannot
        be named on the command line (no settings, e.g. a dataset built from arrays, or no
        config file of their name).
    """
    data_words = _data_overrides(data)
    if data_words is None:
        return ""
    trainer = _trainer_overrides(settings.trainer, TrainerSettings())
    words = [sys.executable, "-m", "archsearch"]
    profile = [_override("hardware", hardware)] if hardware and _is_profile_config(hardware) else []
    return (
        _join(words)
        + f" model_file={CONFIG} "
        + _join([*data_words, *trainer, *profile, f"seed={settings.seed}"])
    )


def _is_profile_config(name: str) -> bool:
    """Whether ``hardware=NAME`` names a profile file (shipped or the user's), ``auto`` aside."""
    from archsearch.errors import ConfigError
    from archsearch.resources import find_config

    if name == "auto":
        return False
    try:
        find_config("hardware", name)
    except ConfigError:
        return False
    return True


def finalize_command(settings: SearchLike, data: DataSettings | None) -> str:
    """The command that retrains the whole front at full fidelity and scores it on test.

    ``python -m archsearch.finalize`` with the study's storage (without its password), tracking,
    export directory, data (its ``subset`` dropped: finalizing trains on the full split), the
    trainer keys of the search except ``epochs`` (``finalize.epochs`` sets those) and the seed.
    "" when the data cannot be named on the command line.
    """
    data_words = _data_overrides(None if data is None else dataclasses.replace(data, subset=None))
    if data_words is None:
        return ""
    tracking = settings.tracking
    trainer = [
        w
        for w in _trainer_overrides(settings.trainer, TrainerSettings())
        if not w.startswith(("trainer.epochs=", "trainer.threads="))
    ]
    words = [
        sys.executable,
        "-m",
        "archsearch.finalize",
        _override("study.name", settings.study.name),
        # No password: pasted, the command reads it from PGPASSWORD or ~/.pgpass (README "Scaling out").
        _override("study.storage", _absolute_sqlite(url_without_password(settings.storage_url))),
        _override("tracking.dir", str(tracking.dir.resolve())),
        *([_override("tracking.uri", tracking.uri)] if tracking.uri else []),
        *([] if tracking.enabled else ["tracking.enabled=false"]),
        _override("export.dir", str(settings.export_dir.resolve())),
        *data_words,
        # conf/finalize.yaml sets its own thread count, so the search's is always stated.
        _override("trainer.threads", settings.trainer.threads),
        *trainer,
        f"seed={settings.seed}",
    ]
    return _join(words)


def _absolute_sqlite(url: str) -> str:
    """A SQLite URL with its file made absolute (``sqlite:///notebook.db`` from a notebook's
    directory): the command may be run from anywhere. Other URLs are left as they are."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix) :].startswith("/") or url == prefix + ":memory:":
        return url
    path, _, query = url[len(prefix) :].partition("?")
    return prefix + str(Path(path).expanduser().resolve()) + (f"?{query}" if query else "")


def _join(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def _data_overrides(data: DataSettings | None) -> list[str] | None:
    """``data=CONFIG`` and every key that differs from that config file, or None if unnameable."""
    changed = None if data is None else data.overrides()
    if data is None or changed is None:
        return None
    return [f"data={data.config}", *(_override(key, value) for key, value in changed.items())]


def _trainer_overrides(trainer: TrainerSettings, default: TrainerSettings) -> list[str]:
    """``trainer.KEY=VALUE`` for every trainer setting that differs from ``default``."""
    ours, base = trainer.to_mapping(), default.to_mapping()
    words = []
    opt, base_opt = ours.pop("optimizer"), base.pop("optimizer")
    if opt["_target_"] != base_opt["_target_"] or set(opt) != set(base_opt):
        # Another optimizer takes other arguments: the default's block is dropped, not merged into.
        words += ["~trainer.optimizer", _override("+trainer.optimizer", opt)]
    else:
        ours["optimizer"] = opt
        base["optimizer"] = base_opt
    base_flat = dict(_flat(base))
    words += [_override(f"trainer.{k}", v) for k, v in _flat(ours) if base_flat.get(k, object()) != v]
    return words


def _flat(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _override(key: str, value: Any) -> str:
    return f"{key}={_hydra_value(value)}"


def _hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar, read back as the same value and type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _BARE.fullmatch(text) and text.lower() not in _KEYWORDS:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
