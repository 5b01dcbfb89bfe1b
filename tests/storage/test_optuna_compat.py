"""archsearch.storage.optuna_compat: each private Optuna call pinned on real in-memory and SQLite studies.

An Optuna release that moves one of these internals fails here, not in a sweep.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from archsearch.search.fidelity import RungInformedSampler
from archsearch.storage import optuna_compat

ATTRS = {"state": "complete", "val_acc": 0.9, "spec": {"nodes": [{"op": "conv", "out": 8}]}}


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[optuna.storages.BaseStorage]:
    """A real storage of each kind, with an unrelated study first so trial ids differ from numbers."""
    if request.param == "memory":
        backend: optuna.storages.BaseStorage = optuna.storages.InMemoryStorage()
    else:
        backend = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    other = optuna.create_study(storage=backend, study_name="other")
    for _ in range(3):
        other.add_trial(create_trial(value=1.0))
    yield backend
    if isinstance(backend, optuna.storages.RDBStorage):
        backend.engine.dispose()


def _study(storage: optuna.storages.BaseStorage) -> optuna.Study:
    return optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"])


def _public_trial_id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def test_trial_id_is_the_storage_id_of_running_and_frozen_trials(storage: Any) -> None:
    study = _study(storage)
    running = [study.ask() for _ in range(2)]
    study.tell(running[0], [0.5, 1.0])
    for trial in running:
        assert optuna_compat.trial_id(trial) == _public_trial_id(storage, study, trial.number)
    for frozen in study.get_trials(deepcopy=False):
        assert optuna_compat.trial_id(frozen) == _public_trial_id(storage, study, frozen.number)
    assert optuna_compat.trial_id(running[0]) != running[0].number  # the id, not the number


@pytest.mark.parametrize("use_cache", [False, True])
def test_study_trials_lists_like_get_trials(storage: Any, use_cache: bool) -> None:
    study = _study(storage)
    study.tell(study.ask(), [0.5, 1.0])
    study.tell(study.ask(), state=TrialState.PRUNED)
    study.ask()
    for states in (None, (TrialState.COMPLETE,), (TrialState.PRUNED, TrialState.RUNNING)):
        for deepcopy in (False, True):
            listed = optuna_compat.study_trials(study, deepcopy=deepcopy, states=states, use_cache=use_cache)
            assert listed == study.get_trials(deepcopy=True, states=states)


def test_study_trials_with_cache_is_a_snapshot_until_the_next_ask(storage: Any) -> None:
    study = _study(storage)
    study.ask()
    before = optuna_compat.study_trials(study, deepcopy=False, states=None, use_cache=True)
    # Another process (here another handle) adds a trial: the cache does not see it, the storage does.
    optuna.load_study(study_name="s", storage=storage).add_trial(create_trial(values=[0.5, 1.0]))
    assert len(optuna_compat.study_trials(study, deepcopy=False, states=None, use_cache=True)) == len(before)
    assert len(optuna_compat.study_trials(study, deepcopy=False, states=None, use_cache=False)) == 2
    study.ask()  # Optuna drops the cache at every ask and tell
    assert len(optuna_compat.study_trials(study, deepcopy=False, states=None, use_cache=True)) == 3


def test_samplers_list_trials_through_the_views_private_name(storage: Any, monkeypatch) -> None:
    # RungInformedSampler's view must answer the name Optuna's samplers call, or they bypass it.
    calls: list[bool] = []
    listing = optuna_compat.study_trials

    def spy(study: optuna.Study, **kwargs: Any) -> Any:
        calls.append(kwargs["use_cache"])
        return listing(study, **kwargs)

    monkeypatch.setattr(optuna_compat, "study_trials", spy)
    sampler = RungInformedSampler(optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    study = optuna.create_study(storage=storage, study_name="s", sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0) ** 2, n_trials=4)
    assert True in calls


def test_one_write_on_sqlite_commits_once_and_updates_the_trial(tmp_path: Path, monkeypatch) -> None:
    from sqlalchemy import event

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url)
    study = _study(storage)
    trial = study.ask()
    trial.set_user_attr("state", "running")

    def one_key_path(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the one-write path fell back to one write per key")

    commits: list[int] = []
    event.listen(storage.engine, "commit", lambda _conn: commits.append(1))
    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_user_attr", one_key_path)
    assert optuna_compat.set_user_attrs_in_one_write(trial, ATTRS) is True
    monkeypatch.undo()

    assert len(commits) == 1
    assert trial.user_attrs == ATTRS  # the trial's own view, the earlier value replaced
    assert optuna.load_study(study_name="s", storage=url).trials[0].user_attrs == ATTRS
    storage.engine.dispose()


def test_one_write_refuses_a_finished_trial(tmp_path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = _study(storage)
    trial = study.ask()
    study.tell(trial, [0.5, 1.0])
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        optuna_compat.set_user_attrs_in_one_write(trial, ATTRS)
    assert study.trials[0].user_attrs == {}
    storage.engine.dispose()


def test_one_write_declines_storages_without_a_database() -> None:
    study = _study(optuna.storages.InMemoryStorage())
    trial = study.ask()
    assert optuna_compat.set_user_attrs_in_one_write(trial, ATTRS) is False
    assert study.trials[0].user_attrs == {}


def test_optimize_loop_lets_study_stop_work_and_resets_after(storage: Any) -> None:
    study = _study(storage)
    with pytest.raises(RuntimeError, match="supposed to be invoked"):
        study.stop()  # outside any loop Optuna refuses, which is what the context manager lifts
    with optuna_compat.optimize_loop(study) as stop_asked:
        assert not stop_asked()
        study.stop()
        assert stop_asked()
    with pytest.raises(RuntimeError, match="supposed to be invoked"):
        study.stop()
    with optuna_compat.optimize_loop(study) as stop_asked:
        assert not stop_asked()  # a new loop starts without the old request
    # Study.optimize still works afterwards, and still honours stop.
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=5, callbacks=[lambda s, t: s.stop()])
    assert len(study.trials) == 1


def test_population_size_reads_nsga_samplers_and_nothing_else() -> None:
    assert optuna_compat.population_size(optuna.samplers.NSGAIISampler(population_size=12)) == 12
    assert optuna_compat.population_size(optuna.samplers.NSGAIIISampler(population_size=14)) == 14
    assert optuna_compat.population_size(optuna.samplers.TPESampler()) is None


def test_the_outage_wrapper_covers_every_private_call_the_cached_storage_makes() -> None:
    """A study on an RDBStorage reads through Optuna's _CachedStorage, which calls some of the
    backend's private methods (``_get_trials`` for ``study.get_trials``): a lost connection there
    must be retried like one in a public call (a database outage killed a worker otherwise)."""
    import inspect
    import re

    from optuna.storages import _cached_storage

    from archsearch.storage.outage import OutageTolerantStorage

    called = set(re.findall(r"self\._backend\.(_\w+)\(", inspect.getsource(_cached_storage)))
    assert called == set(optuna_compat.CACHED_BACKEND_CALLS)
    for name in optuna_compat.CACHED_BACKEND_CALLS:
        wrapped = getattr(OutageTolerantStorage, name)
        assert wrapped is not getattr(optuna.storages.RDBStorage, name)
        assert wrapped.__wrapped__ is getattr(optuna.storages.RDBStorage, name)
