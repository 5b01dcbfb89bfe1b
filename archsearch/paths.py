"""Where the shipped configuration lives (the repository's conf/ and search_spaces/)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
SEARCH_SPACES_DIR = ROOT / "search_spaces"
