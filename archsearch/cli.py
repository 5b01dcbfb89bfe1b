"""Shared plumbing for the command-line entry points: user errors become one line and exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from archsearch.errors import ArchsearchError

T = TypeVar("T")

EXIT_USER_ERROR = 2


def run_cli(fn: Callable[[], T]) -> T:
    """Run ``fn``; an ArchsearchError prints ``error: <sentence>`` to stderr and exits 2."""
    try:
        return fn()
    except ArchsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
