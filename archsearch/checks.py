"""Checks of plain config values, shared by every settings class: one sentence per bad key.

At the bottom of the package (it imports only :mod:`archsearch.errors`), so settings at any
depth use the same tests and the same wording.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from archsearch.errors import ConfigError

__all__ = [
    "check_choice",
    "check_flag",
    "check_int",
    "check_writable_dir",
    "is_int",
    "is_number",
    "known_fields",
    "plain_fields",
]


def is_int(value: Any) -> bool:
    """An integer, and not a bool (YAML's ``true`` is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a float, and not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(key: str, value: Any, minimum: int, why: str = "") -> None:
    """``value`` is an integer >= ``minimum``; ``why`` is appended to the bound in the message."""
    if not is_int(value) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}{why}, got {value!r}.")


def check_flag(key: str, value: Any) -> None:
    """``value`` is true or false."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}.")


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{key} is {value!r}; allowed: {', '.join(allowed)}.")


def known_fields(raw: Any, key: str, cls: type) -> dict[str, Any]:
    """``raw`` (a mapping, or None for the defaults) as keyword arguments of dataclass ``cls``.

    Raises:
        ConfigError: ``raw`` is not a mapping, or has a key ``cls`` does not (naming ``key``).
    """
    if raw is None:
        return {}
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key} must be a mapping with keys {', '.join(names)}.")
    unknown = sorted(str(k) for k in raw if k not in names)
    if unknown:
        raise ConfigError(f"{key} has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(names)}.")
    return {str(k): v for k, v in raw.items()}


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
