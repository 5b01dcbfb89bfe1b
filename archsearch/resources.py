"""Where the shipped configuration lives: ``conf/`` and ``search_spaces/`` inside the package."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PACKAGE_DIR = Path(str(files("archsearch")))
CONF_DIR = PACKAGE_DIR / "conf"
SEARCH_SPACES_DIR = PACKAGE_DIR / "search_spaces"
#: The source checkout (or site-packages) holding the package: what a subprocess needs on PYTHONPATH.
ROOT = PACKAGE_DIR.parent
