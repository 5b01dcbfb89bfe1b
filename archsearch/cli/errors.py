"""Shared plumbing for the command-line entry points: user errors become one line and exit 2.

Two layers, one message format (``error: <sentence>`` on stderr):

* :func:`run_cli` wraps what a command does: an :class:`ArchsearchError` (or an OmegaConf
  error, e.g. an interpolation to a missing key) exits 2, a search whose every trial failed
  (:class:`SearchFailed`) exits 3, a fault of the machine (:class:`WorkerFault`: the study
  database stayed unreachable, a disk is full) exits 4, Ctrl-C exits 130.
* :func:`run_hydra` wraps a ``@hydra.main`` function: Hydra's own composition errors (an
  unknown ``group=option``, an override of a key that does not exist, an override Hydra cannot
  parse, a malformed YAML file under conf/) become one sentence and exit 2 instead of Hydra's
  multi-line report and exit 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from archsearch.errors import ArchsearchError, SearchFailed, WorkerFault

__all__ = [
    "EXIT_ALL_FAILED",
    "EXIT_FAULT",
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "hydra_error_sentence",
    "run_cli",
    "run_hydra",
]

T = TypeVar("T")

EXIT_USER_ERROR = 2
#: Every trial of the search failed (errors.SearchFailed): the input was accepted, nothing trained.
EXIT_ALL_FAILED = 3
#: A fault of the machine stopped the worker (errors.WorkerFault); its trial runs again.
EXIT_FAULT = 4
#: What a shell reports for a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130


def _fail(sentence: str) -> NoReturn:
    print(f"error: {sentence}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR) from None


def run_cli(fn: Callable[[], T]) -> T:
    """Run ``fn``; a user error prints ``error: <sentence>`` and exits 2, Ctrl-C exits 130."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return fn()
    except SearchFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_ALL_FAILED) from None
    except WorkerFault as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_FAULT) from None
    except ArchsearchError as exc:
        _fail(str(exc))
    except OmegaConfBaseException as exc:
        _fail(hydra_error_sentence(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None


def run_hydra(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main``-decorated ``main`` with Hydra's composition errors as one sentence.

    Hydra reports an error itself and exits 1 unless ``HYDRA_FULL_ERROR=1``, in which case it
    re-raises: that is set here so the error can be caught and reworded. The task function
    should still wrap its body in :func:`run_cli`, so its own errors never reach Hydra.
    """
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (HydraException, OmegaConfBaseException, yaml.YAMLError) as exc:
        _fail(hydra_error_sentence(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return (lines[0] if lines else "").rstrip(".")


def _close_key(key: str) -> str | None:
    """The known settings key closest to a misspelled dotted ``key`` (None when none is close)."""
    import dataclasses
    import difflib

    from archsearch.search.settings import (
        CostSettings,
        ExportSettings,
        FinalizeSettings,
        LatencySettings,
        StudySettings,
        TrackingSettings,
    )
    from archsearch.search.warm_start import WarmStartSettings
    from archsearch.train.settings import TrainerSettings

    blocks: dict[str, Any] = {
        "study": StudySettings,
        "trainer": TrainerSettings,
        "tracking": TrackingSettings,
        "export": ExportSettings,
        "cost": CostSettings,
        "latency": LatencySettings,
        "finalize": FinalizeSettings,
        "warm_start": WarmStartSettings,
    }
    known = [f"{block}.{f.name}" for block, cls in blocks.items() for f in dataclasses.fields(cls)]
    known += ["seed", "model_file", "sweep.space", "sweep.finalize", "sweep.fidelity.enabled"]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return close[0] if close else None


def hydra_error_sentence(exc: BaseException) -> str:
    """One sentence for a Hydra, OmegaConf or YAML error met while composing or reading a config."""
    import yaml
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, MissingConfigException):
        missing = str(exc.missing_cfg_file or "")
        group, _, name = missing.rpartition("/")
        if group and exc.options:
            options = ", ".join(exc.options)
            if group.startswith("hydra/"):
                return f"{group} {name!r} is not installed; available: {options}."
            return (
                f"{group} {name!r} is not declared under conf/{group}/ or {group}/ of your config "
                f"directories; available: {options}."
            )
        return f"config {missing!r} cannot be found ({_first_line(str(exc))})."
    if isinstance(exc, OverrideParseException):
        return f"override {exc.override!r} cannot be parsed: {_first_line(exc.message)}."
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or _first_line(str(exc))
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}"
            return f"{mark.name} is not valid YAML: {problem} ({where})."
        return f"a config file is not valid YAML: {problem}."
    if isinstance(exc, ConfigCompositionException):
        text = _first_line(str(exc))
        cause = exc.__cause__
        if text.startswith("Could not override") and "To append" in str(exc):
            key = text.split("'")[1] if "'" in text else text
            close = _close_key(key)
            if close:
                return f"override {key!r} names a key the config does not have (did you mean {close!r}?)."
            return (
                f"override {key!r} names a key the config does not have; "
                f"check its spelling, or add a new key with +{key}=VALUE."
            )
        if isinstance(cause, OmegaConfBaseException):
            return f"{text}: {_first_line(str(cause))}."
        return f"{text}."
    if isinstance(exc, OmegaConfBaseException):
        full_key = getattr(exc, "full_key", None)
        text = _first_line(str(exc))
        return f"config key {full_key!r} is invalid: {text}." if full_key else f"invalid config: {text}."
    return f"{_first_line(str(exc)) or type(exc).__name__}."
