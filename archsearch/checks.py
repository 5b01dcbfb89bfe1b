"""Checks of plain config values, shared by every settings class: one sentence per bad key.

At the bottom of the package (it imports only :mod:`archsearch.errors`), so settings at any
depth use the same tests and the same wording.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from archsearch.errors import ConfigError

__all__ = [
    "check_choice",
    "check_flag",
    "check_int",
    "check_number",
    "check_writable_dir",
    "is_int",
    "is_number",
    "known_fields",
    "known_keys",
    "plain_fields",
]


def is_int(value: Any) -> bool:
    """An integer, and not a bool (YAML's ``true`` is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a float, and not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(key: str, value: Any, minimum: int, why: str = "") -> int:
    """``value`` is an integer >= ``minimum``; ``why`` is appended to the bound in the message."""
    if not is_int(value) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}{why}, got {value!r}.")
    return int(value)


def check_number(key: str, value: Any, allowed: str = "", ok: Callable[[float], bool] | None = None) -> float:
    """``value`` is a number (not a flag) that ``ok`` accepts; ``allowed`` says which in the message
    (``"in [0, 1)"`` reads "KEY must be a number in [0, 1), got ...")."""
    if not is_number(value) or (ok is not None and not ok(value)):
        raise ConfigError(f"{key} must be a number{' ' + allowed if allowed else ''}, got {value!r}.")
    return float(value)


def check_flag(key: str, value: Any) -> bool:
    """``value`` is true or false."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}.")
    return value


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    """``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{key} is {value!r}; allowed: {', '.join(allowed)}.")
    return str(value)


def known_keys(raw: Any, key: str, allowed: Sequence[str]) -> dict[str, Any]:
    """``raw`` (a mapping, or None for an empty one) as a dict whose keys are all in ``allowed``.

    Raises:
        ConfigError: ``raw`` is not a mapping, or has a key not in ``allowed`` (naming ``key``).
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key} must be a mapping with keys {', '.join(allowed)}, got {raw!r}.")
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise ConfigError(f"{key} has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}.")
    return {str(k): v for k, v in raw.items()}


def known_fields(raw: Any, key: str, cls: type) -> dict[str, Any]:
    """``raw`` (a mapping, or None for the defaults) as keyword arguments of dataclass ``cls``.

    Raises:
        ConfigError: ``raw`` is not a mapping, or has a key ``cls`` does not (naming ``key``).
    """
    return known_keys(raw, key, [f.name for f in dataclasses.fields(cls)])


def plain_fields(settings: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A flat settings dataclass as the config layout: paths as strings, tuples as lists."""
    out = {}
    for f in dataclasses.fields(settings):
        if f.name in drop:
            continue
        value = getattr(settings, f.name)
        if isinstance(value, Path | tuple):
            value = str(value) if isinstance(value, Path) else list(value)
        out[f.name] = value
    return out


def check_writable_dir(key: str, path: Any) -> None:
    """Refuse a folder setting that cannot be written, before anything is: a file in the way, a
    read-only or immutable folder, a pseudo file system. Leaves nothing behind (the probe file is
    anonymous and gone when closed; no folder is created).

    Raises:
        ConfigError: naming the key, the path and why.
    """
    import tempfile
    from pathlib import Path

    target = Path(path).expanduser().absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key} {str(path)!r} cannot be a folder: {existing} is a file.")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:
        raise ConfigError(
            f"{key} {str(path)!r} cannot be written ({exc.strerror or type(exc).__name__} in {existing})."
        ) from None
