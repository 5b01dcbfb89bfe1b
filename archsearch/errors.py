"""Exceptions the CLI reports as one sentence: a user's mistake exits 2, SearchFailed 3, a lost database 4."""

from __future__ import annotations

__all__ = ["ArchsearchError", "ConfigError", "DataError", "SearchFailed", "SpecError", "StorageUnreachable"]


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


class StorageUnreachable(Exception):
    """The study's database server refused connections for longer than ``study.storage_outage_s``.

    Not the user's input (the URL was checked before the first write): a fault. The CLI prints
    the message and exits 4; the trials the worker was running are failed and retried by the
    next start, through their stale heartbeats (archsearch.search.workers).
    """
