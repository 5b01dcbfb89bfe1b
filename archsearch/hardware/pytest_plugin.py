"""A pytest plugin that keeps test runs away from the user's ``hardware=auto`` cache.

Loaded by pyproject's ``addopts = "-p archsearch.hardware.pytest_plugin"``. For the whole
session (and every subprocess it starts, through the environment) the auto-profile cache is a
fresh temporary folder and a missing profile is calibrated quickly (~2 s, once per session), so
no test depends on, or writes to, a calibration made before it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from archsearch.hardware.cache import CACHE_ENV, QUICK_ENV

_saved: dict[str, str | None] = {}
_folder: list[str] = []


def pytest_configure(config: Any) -> None:
    """Point the cache at a new temporary folder and ask for quick calibrations."""
    folder = tempfile.mkdtemp(prefix="archsearch-hardware-")
    _folder.append(folder)
    for name, value in ((CACHE_ENV, folder), (QUICK_ENV, "quick")):
        _saved[name] = os.environ.get(name)
        os.environ[name] = value


def pytest_unconfigure(config: Any) -> None:
    """Put the environment back and delete the session's cache."""
    for name, value in _saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    for folder in _folder:
        shutil.rmtree(folder, ignore_errors=True)
