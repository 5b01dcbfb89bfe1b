"""study.max_epochs: a search budget in training epochs, pruned trials' included, shared by workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import archsearch as A
from archsearch.hardware.profile import load_hardware
from archsearch.search.workers import epochs_consumed
from archsearch.testing import FixedCostFit


class CountingFit:
    """FixedCostFit of ``epochs`` instant epochs, counting every epoch actually trained."""

    def __init__(self, epochs: int) -> None:
        self.inner = FixedCostFit(seconds=0.0, epochs=epochs)
        self.epochs = 0
        self.calls = 0

    def __call__(self, model: Any, data: Any, cfg: Any, *, on_epoch_end: Any = None, **kw: Any) -> Any:
        self.calls += 1

        def count(epoch: int, metrics: dict[str, float]) -> Any:
            self.epochs += 1
            return on_epoch_end(epoch, metrics)

        return self.inner(model, data, cfg, on_epoch_end=count, **kw)


def search(tmp_path: Path, fit: CountingFit, study: A.StudySettings, **settings: Any) -> optuna.Study:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 1, 8, 8)).astype("float32")
    y = (np.arange(120) % 4).astype("int64")
    data = A.dataset_from_arrays("tiny", x, y)
    result = A.run_search(
        A.load_space("fire"),
        data,
        A.SearchSettings(
            study=study,
            trainer=A.TrainerSettings(epochs=fit.inner.epochs, batch_size=32, threads=1),
            tracking=A.TrackingSettings(enabled=False),
            export=A.ExportSettings(dir=tmp_path / "results", plots=False),
            **settings,
        ),
        sampler=optuna.samplers.RandomSampler(seed=3),
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        hardware=load_hardware("laptop_cpu"),
        fit_fn=fit,
    )
    return result.study


def test_budget_of_10_epochs_runs_five_2_epoch_trials(tmp_path: Path) -> None:
    fit = CountingFit(epochs=2)
    study = search(tmp_path, fit, A.StudySettings(name="b", n_trials=100, max_epochs=10))
    assert fit.calls == 5
    assert fit.epochs == 10
    assert epochs_consumed(study.get_trials(deepcopy=False)) == 10
    trained = [t for t in study.trials if "epochs_done" in t.user_attrs]
    assert len(trained) == 5


def test_pruned_trials_epochs_count_against_the_budget(tmp_path: Path) -> None:
    fit = CountingFit(epochs=4)
    study = search(
        tmp_path,
        fit,
        A.StudySettings(name="h", n_trials=100, max_epochs=20),
        fidelity=A.FidelitySettings(enabled=True, eta=2, min_epochs=1),
    )
    trials = study.get_trials(deepcopy=False)
    assert any(t.state == TrialState.PRUNED for t in trials)
    # Every trained epoch is on record, and the last trial started below the budget.
    assert epochs_consumed(trials) == fit.epochs
    last = max((t for t in trials if "epochs_done" in t.user_attrs), key=lambda t: t.number)
    assert fit.epochs - last.user_attrs["epochs_done"] < 20 <= fit.epochs


def test_max_epochs_is_checked_and_read_from_config() -> None:
    with pytest.raises(A.ConfigError, match=r"study\.max_epochs"):
        A.StudySettings(max_epochs=0)
    assert A.StudySettings.from_mapping({"max_epochs": 30}).max_epochs == 30
    assert A.StudySettings().max_epochs is None
