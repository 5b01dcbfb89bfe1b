"""A directory of ``.npy`` arrays with a manifest, written atomically and memory-mapped back.

One cache entry is one directory. Its arrays are written under temporary names and renamed into
place, and the manifest (``manifest.json``) is renamed in last: a directory without a valid
manifest is incomplete. The manifest records the settings and the source fingerprint the arrays
were made from and every array's shape, dtype and byte size, so an entry whose source changed
(stale) or whose files were cut short (truncated) is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CacheEntry", "default_cache_dir", "fingerprint", "settings_key"]

#: Bumped whenever the layout of an entry changes, so older entries are rebuilt.
CACHE_VERSION = 1
MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    """:func:`archsearch.resources.user_cache_dir` (per user)."""
    from archsearch.resources import user_cache_dir

    return user_cache_dir()


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short stable hash of JSON-able settings (names an entry directory)."""
    blob = json.dumps({"version": CACHE_VERSION, **settings}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def fingerprint(stamps: Iterable[tuple[str, int, int]]) -> str:
    """Hash of every file's (path, size, modification time in ns): changes when any file does."""
    digest = hashlib.sha256()
    for path, size, mtime_ns in stamps:
        digest.update(f"{path}\0{size}\0{mtime_ns}\n".encode())
    return digest.hexdigest()


class CacheEntry:
    """The entry in ``directory`` for ``settings`` made from a source with ``source_fingerprint``."""

    def __init__(self, directory: Path, settings: Mapping[str, Any], source_fingerprint: str) -> None:
        self.directory = directory
        self.settings = dict(settings)
        self.fingerprint = source_fingerprint
        self._token = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._pending: dict[str, Path] = {}

    # ------------------------------------------------------------------ reading

    def load(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """The manifest and its arrays (memory-mapped, read-only), or None if absent or invalid."""
        try:
            manifest = json.loads((self.directory / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if (
            not isinstance(manifest, dict)
            or manifest.get("version") != CACHE_VERSION
            or manifest.get("settings") != self.settings
            or manifest.get("fingerprint") != self.fingerprint
            or not isinstance(manifest.get("arrays"), dict)
        ):
            return None
        arrays = {}
        for name, meta in manifest["arrays"].items():
            path = self.directory / f"{name}.npy"
            try:
                if path.stat().st_size != meta["bytes"]:
                    return None
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, KeyError, TypeError):
                return None
            if list(array.shape) != meta["shape"] or str(array.dtype) != meta["dtype"]:
                return None
            arrays[name] = array
        return manifest, arrays

    # ------------------------------------------------------------------ writing

    def begin(self) -> None:
        """Invalidate the entry before rewriting it, so no reader trusts a half-replaced one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / MANIFEST).unlink(missing_ok=True)

    def open_array(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A writable memory map at a temporary path; :meth:`commit` renames it into place."""
        path = self.directory / f".{name}.{self._token}.tmp"
        self._pending[name] = path
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)

    def save_array(self, name: str, array: np.ndarray) -> None:
        """Write a small array under a temporary path; :meth:`commit` renames it into place."""
        path = self.directory / f".{name}.{self._token}.tmp"
        self._pending[name] = path
        with path.open("wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())

    def commit(self, extra: Mapping[str, Any]) -> None:
        """Rename every pending array into place, then write the manifest (with ``extra``) last."""
        arrays = {}
        for name, tmp in self._pending.items():
            array = np.load(tmp, mmap_mode="r", allow_pickle=False)
            arrays[name] = {
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "bytes": tmp.stat().st_size,
            }
            del array
            os.replace(tmp, self.directory / f"{name}.npy")
        self._pending.clear()
        manifest = {
            "version": CACHE_VERSION,
            "settings": self.settings,
            "fingerprint": self.fingerprint,
            "arrays": arrays,
            **extra,
        }
        tmp = self.directory / f".{MANIFEST}.{self._token}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, self.directory / MANIFEST)

    def abort(self) -> None:
        """Remove what an unfinished write left behind (the entry directory too, if left empty)."""
        for tmp in self._pending.values():
            tmp.unlink(missing_ok=True)
        self._pending.clear()
        # Fails when not empty: a committed or older entry lives there.
        with contextlib.suppress(OSError):
            self.directory.rmdir()
