"""The only place archsearch reaches into Optuna's private API; everything else uses public names.

Each function here does one thing Optuna 5 has no public API for, or whose public route costs
measurably more, and says which it is and what the public fallback would be. tests/
test_optuna_compat.py pins every function against a real in-memory and a real SQLite study, so
an Optuna release that moves one of these internals fails that test rather than a sweep; the
dependency is held below the next major version (``optuna>=5.0,<6`` in pyproject.toml).

One private name is used the other way round and so cannot live here:
archsearch.search.fidelity's study view answers ``_get_trials``, because that is what Optuna's
samplers call on the study they are given (tests/test_optuna_compat.py pins that too).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Container, Iterator, Mapping
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "CACHED_BACKEND_CALLS",
    "optimize_loop",
    "population_size",
    "set_user_attrs_in_one_write",
    "study_trials",
    "trial_id",
]


#: RDBStorage's private methods that Optuna's caching wrapper (``_CachedStorage``, through which
#: every study on an RDBStorage reads and writes) calls instead of their public twins. A wrapper
#: of RDBStorage's public methods alone (archsearch.storage.outage) misses these calls.
CACHED_BACKEND_CALLS = (
    "_create_new_trial",
    "_set_trial_param",
    "_get_best_trial_id",
    "_get_trials",
    "_get_stale_trial_ids",
)


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (not its number), as heartbeats and storage calls take it.

    Private because neither ``Trial`` nor ``FrozenTrial`` exposes it. The public route is two
    storage round trips, ``storage.get_trial_id_from_study_id_trial_number(
    storage.get_study_id_from_name(study.study_name), trial.number)``, taken while workers hold the
    storage lock; the attribute is already in memory.
    """
    return trial._trial_id


@contextlib.contextmanager
def optimize_loop(study: optuna.Study) -> Iterator[Callable[[], bool]]:
    """Let ``study.stop()`` work inside archsearch's own trial loop; yields "was stop asked?".

    Private because ``Study.stop`` (which user callbacks call, and GridSampler calls once its
    grid is exhausted) raises unless ``Study.optimize`` set ``_thread_local.in_optimize_loop``,
    and the flag it sets, ``_stop_flag``, has no public reader. archsearch runs trials with
    ask/tell (its workers take trials under a storage lock and count slots), so without this
    ``study.stop()`` raises "supposed to be invoked inside an objective function or a
    callback". There is no public fallback: a callback would need another way to stop.
    """
    local = study._thread_local
    before = local.in_optimize_loop
    local.in_optimize_loop = True
    study._stop_flag = False
    try:
        yield lambda: bool(study._stop_flag)
    finally:
        local.in_optimize_loop = before
        study._stop_flag = False


def population_size(sampler: optuna.samplers.BaseSampler) -> int | None:
    """An evolutionary sampler's population size (NSGA-II/III), or None for other samplers.

    Private because Optuna keeps it as ``_population_size`` with no public reader; the public
    fallback is the ``population_size`` the caller passed (the CLI's config has it, an instance
    does not).
    """
    if isinstance(sampler, optuna.samplers.NSGAIISampler | optuna.samplers.NSGAIIISampler):
        size = getattr(sampler, "_population_size", None)
        return size if isinstance(size, int) else None
    return None


def study_trials(
    study: optuna.Study,
    *,
    deepcopy: bool,
    states: Container[TrialState] | None,
    use_cache: bool,
) -> list[FrozenTrial]:
    """``study.get_trials(deepcopy, states)``, from the per-thread trial cache when ``use_cache``.

    Private because only ``Study._get_trials`` reads the cache Optuna fills once per trial for
    its samplers. The public ``study.get_trials`` ignores it: a sampler then reads the storage
    once per suggested parameter instead of once per trial.
    """
    return study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)


def set_user_attrs_in_one_write(trial: optuna.Trial, attrs: Mapping[str, Any]) -> bool:
    """Write several user attrs of a running trial in one database transaction, if possible.

    The public ``trial.set_user_attr`` opens a session and commits once per key: on PostgreSQL,
    ten keys take 66-73 ms that way against 25-33 ms in one transaction (SQLite in WAL mode
    with ``synchronous=NORMAL``: 7-8 ms against 5-6 ms). The rows are those
    ``RDBStorage.set_trial_user_attr`` writes (its own per-key upsert, which also refuses a
    finished trial), and the trial's own view is updated as ``set_user_attr`` updates it.

    Args:
        trial: a running trial.
        attrs: key -> JSON-serialisable value.

    Returns:
        True when written; False, with nothing written, when the study's storage is not a
        database or this Optuna's internals differ. The public fallback is then
        ``trial.set_user_attr`` per key.

    Raises:
        optuna.exceptions.UpdateFinishedTrialError: the trial has finished (nothing written).
    """
    write = _one_transaction_writer(trial.storage)
    if write is None:
        return False
    write(trial_id(trial), attrs)
    trial._cached_frozen_trial.user_attrs.update(attrs)
    return True


def _one_transaction_writer(storage: Any) -> Callable[[int, Mapping[str, Any]], None] | None:
    """A function (trial id, attrs) writing through the database under ``storage``, or None."""
    # A study keeps its RDBStorage inside Optuna's private caching wrapper.
    backend = getattr(storage, "_backend", storage)
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        return None
    if not isinstance(backend, RDBStorage) or not hasattr(backend, "_set_trial_attr_without_commit"):
        return None

    def write(key_id: int, attrs: Mapping[str, Any]) -> None:
        with _create_scoped_session(backend.scoped_session, True) as session:
            for key, value in attrs.items():
                backend._set_trial_attr_without_commit(
                    session, models.TrialUserAttributeModel, key_id, key, value
                )

    return write


def running_without_heartbeat(storage: Any, study_id: int) -> list[int]:
    """Storage ids of the study's RUNNING trials that have no heartbeat at all.

    Such a trial's worker died between creating it and recording its first heartbeat (two
    transactions), so Optuna's stale-trial check, which compares heartbeats, never sees it.
    Read through Optuna's private table models; [] when they are not there (the next start's
    beat over every running trial then catches it, as before).
    """
    backend = getattr(storage, "_backend", storage)
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        return []
    if not isinstance(backend, RDBStorage) or not hasattr(models, "TrialHeartbeatModel"):
        return []
    with _create_scoped_session(backend.scoped_session) as session:
        beating = session.query(models.TrialHeartbeatModel.trial_id)
        rows = (
            session.query(models.TrialModel.trial_id)
            .filter(models.TrialModel.study_id == study_id)
            .filter(models.TrialModel.state == TrialState.RUNNING)
            .filter(models.TrialModel.trial_id.not_in(beating))
            .all()
        )
    return [int(r[0]) for r in rows]
