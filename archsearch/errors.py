"""Exceptions the CLI reports as one sentence: a user's mistake exits 2, SearchFailed 3, a lost database 4."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "ArchsearchError",
    "ConfigError",
    "DataError",
    "DiskFull",
    "SearchFailed",
    "SpecError",
    "StorageUnreachable",
    "WorkerFault",
    "causes",
]


class ArchsearchError(Exception):
    """Base of every error that is the user's to fix (bad file, key, value or node)."""


class SpecError(ArchsearchError):
    """A network declaration is invalid; the message names the node and the field."""


class ConfigError(ArchsearchError):
    """A configuration value is invalid; the message names the key and what is allowed."""


class DataError(ArchsearchError):
    """A dataset is missing or malformed; the message names the path and how to get it."""


class SearchFailed(ArchsearchError):
    """Every trial of a search failed: there is no front. The CLI exits 3.

    The study, its MLflow runs and the (empty) export are kept; each failed trial's reason is in
    its ``fail_reason`` attribute and MLflow tag, the first of them in the message.
    """


class WorkerFault(Exception):
    """The machine, not the input, stopped a worker: the CLI prints the message and exits 4.

    The input was checked before the first write, so this is a fault of the environment. The
    trial the worker was running is failed and queued to run again (at once when the study
    storage still answers, else by the next start through its stale heartbeat); its architecture
    is not counted as a failed one.
    """


class StorageUnreachable(WorkerFault):
    """The study's database server refused connections for longer than ``study.storage_outage_s``."""


class DiskFull(WorkerFault):
    """A file system the search writes to (MLflow's store, the export, weights) ran out of space."""


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what caused it (``__cause__``, else ``__context__``), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
