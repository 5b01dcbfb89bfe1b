"""Exceptions a user can cause. The CLI prints their one-sentence message and exits 2 (3 for SearchFailed)."""

from __future__ import annotations

__all__ = ["ArchsearchError", "ConfigError", "DataError", "SearchFailed", "SpecError"]


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
