"""The study a search runs in: backends checked before any write, then created, resumed or joined."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import optuna

from archsearch.errors import ArchsearchError, ConfigError, SearchFailed
from archsearch.results.relocate import locate_artifacts, refuse_moved_store
from archsearch.results.tracking import check_tracking_uri
from archsearch.search.settings import SearchSettings
from archsearch.search.workers import budget
from archsearch.storage.database import StorageLock, check_database_url, describe_url, open_storage

__all__ = ["check_backends", "check_some_trial_ran", "finished_trials", "open_study", "quiet_libraries"]


def check_backends(settings: SearchSettings) -> None:
    """The study storage and the MLflow backend both answer; checked before either is written to.

    Raises:
        ConfigError: one sentence naming ``study.storage`` or ``tracking.uri`` and why, or the
            re-root command of a moved MLflow store.
    """
    check_database_url(settings.storage_url, "study.storage")
    StorageLock(settings.storage_url)  # a backend workers cannot lock is refused here too
    if settings.tracking.enabled:
        uri = settings.tracking.resolved_uri
        check_tracking_uri(uri)
        # A moved or copied project is re-rooted before a run is logged to it.
        artifacts = settings.tracking.dir / "artifacts"
        refuse_moved_store(uri, locate_artifacts(uri, f"archsearch/{settings.study.name}", artifacts))


def open_study(
    settings: SearchSettings,
    sampler: optuna.samplers.BaseSampler | None = None,
    storage: optuna.storages.RDBStorage | None = None,
) -> optuna.Study:
    """Create or resume the study; an unreachable storage or other objectives are a ConfigError.

    Args:
        settings: the validated sweep settings.
        sampler: the study's sampler (Optuna's default if None).
        storage: an opened storage (:func:`archsearch.search.workers.open_storage`); by default
            one is opened on ``settings.storage`` with the settings' heartbeats.
    """
    try:
        if storage is None:
            storage = open_storage(
                settings.storage_url,
                settings.study.heartbeat_interval,
                settings.study.grace_period,
                None,
                outage_s=settings.study.storage_outage_s,
            )
        study = optuna.create_study(
            study_name=settings.study.name,
            storage=storage,
            sampler=sampler,
            directions=settings.directions,  # type: ignore[arg-type]
            load_if_exists=True,
        )
    except ValueError as exc:
        raise ConfigError(
            f"study {settings.study.name!r} in {describe_url(settings.storage_url)} exists with other "
            f"objectives: {str(exc).splitlines()[0]}"
        ) from None
    except ArchsearchError:
        raise
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
        raise ConfigError(
            f"study.storage {describe_url(settings.storage_url)!r} cannot be opened ({reason[0]}); "
            "check the URL, that the server runs and the database exists."
        ) from None
    stored = study.user_attrs.get("objectives")
    if stored is not None and list(stored) != settings.metric_names:
        raise ConfigError(
            f"study {settings.study.name!r} was created with objectives {list(stored)}, not "
            f"{settings.metric_names}; use another study.name."
        )
    return study


def finished_trials(study: optuna.Study) -> int:
    """Finished slots of ``study.n_trials``: complete, pruned or failed trials, a retried one once.

    A trial whose worker died and that was retried counts once, through its retry (see
    :mod:`archsearch.search.workers` for the budget rule).
    """
    return budget(study.get_trials(deepcopy=False), 0).finished


def check_some_trial_ran(study: optuna.Study) -> None:
    """Raise SearchFailed when the study's every finished trial failed (there is no front)."""
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    if finished and all(t.state == optuna.trial.TrialState.FAIL for t in finished):
        reason = next(
            (str(t.user_attrs["fail_reason"]) for t in finished if "fail_reason" in t.user_attrs), ""
        )
        raise SearchFailed(
            f"every one of the study's {len(finished)} trials failed, so there is no front"
            + (f"; the first said: {reason.rstrip('.')}." if reason else ".")
        )


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Within the block, our progress lines replace Optuna's per-trial logging and MLflow's schema
    messages; the caller's log levels and warning filters are restored after it."""
    import logging
    import warnings

    import mlflow  # noqa: F401  (mlflow sets its loggers to INFO on import: import first, then quieten)

    # It logs every database error it re-raises, with a traceback; the error reaches archsearch,
    # which reports it in one sentence (a full disk) or with its traceback (a bug).
    levels = {"mlflow": logging.WARNING, "alembic": logging.WARNING, "matplotlib": logging.WARNING}
    levels["mlflow.store.db.utils"] = logging.CRITICAL
    before = {name: logging.getLogger(name).level for name in levels}
    verbosity = optuna.logging.get_verbosity()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(verbosity)
            for name, level in before.items():
                logging.getLogger(name).setLevel(level)
