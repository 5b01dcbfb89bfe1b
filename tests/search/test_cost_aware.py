"""The cost-aware sampler: expected hypervolume improvement with exact costs, and its proposals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest

import archsearch as A
from archsearch.errors import ConfigError
from archsearch.pareto import hypervolume
from archsearch.search import ehvi
from archsearch.search.cost_aware import CostAwareSampler
from archsearch.testing import FixedCostFit

DIRECTIONS = ["maximize", "minimize", "minimize"]


def _exact_gain(front: list[list[float]], candidate: list[float], box: ehvi.CostBox) -> float:
    """HV(front + candidate) - HV(front) with archsearch.pareto.hypervolume, on ehvi's scaling."""
    lower = [0.0, *box.lower]
    upper = [1.0, *box.upper]
    return hypervolume([*front, candidate], DIRECTIONS, lower, upper) - hypervolume(
        front, DIRECTIONS, lower, upper
    )


@pytest.fixture
def problem() -> tuple[ehvi.CostBox, list[list[float]]]:
    box = ehvi.CostBox(np.array([3.0, 5.0]), np.array([5.0, 7.0]), points=8192, seed=1)
    # accuracy, log10 params, log10 MACs
    front = [[0.80, 3.5, 5.6], [0.86, 4.0, 6.0], [0.90, 4.6, 6.5]]
    return box, front


def _level(box: ehvi.CostBox, front: list[list[float]]) -> np.ndarray:
    acc = np.array([p[0] for p in front])
    costs = box.scale(np.array([p[1:] for p in front]))
    return ehvi.levels(acc, costs, box)


@pytest.mark.parametrize(
    "candidate", [[0.88, 3.8, 5.9], [0.95, 4.8, 6.8], [0.70, 3.2, 5.2], [0.85, 4.7, 6.6]]
)
def test_a_sure_accuracy_gains_the_exact_hypervolume_improvement(problem, candidate) -> None:
    box, front = problem
    gain = ehvi.expected_improvement(
        np.array([candidate[0]]),
        np.array([1e-9]),
        box.scale(np.array([candidate[1:]])),
        _level(box, front),
        box,
    )[0]
    exact = _exact_gain(front, candidate, box)
    assert gain == pytest.approx(exact, abs=0.01 * 1.1**3)  # the quadrature's resolution in cost space
    if exact == 0:
        assert gain == pytest.approx(0.0, abs=1e-12)  # a dominated candidate gains nothing


def test_expected_improvement_is_the_mean_gain_under_the_predicted_accuracy(problem) -> None:
    box, front = problem
    costs = [4.2, 6.1]
    level = _level(box, front)
    mu, sigma = 0.87, 0.04
    closed = ehvi.expected_improvement(
        np.array([mu]), np.array([sigma]), box.scale(np.array([costs])), level, box
    )[0]
    draws = np.random.default_rng(0).normal(mu, sigma, 4000)
    # The same quadrature, one sure accuracy at a time: the closed form must be its average.
    sure = ehvi.expected_improvement(
        draws, np.full(len(draws), 1e-9), np.repeat(box.scale(np.array([costs])), len(draws), 0), level, box
    )
    assert closed == pytest.approx(sure.mean(), rel=0.05)
    # More uncertainty on a candidate that is probably dominated raises its expected gain.
    low = dict(mu=np.array([0.75]), costs=box.scale(np.array([costs])), level=level, box=box)
    assert (
        ehvi.expected_improvement(sigma=np.array([0.1]), **low)[0]
        > ehvi.expected_improvement(sigma=np.array([0.01]), **low)[0]
    )


def _search(
    tmp: Path, name: str, n_trials: int, sampler: optuna.samplers.BaseSampler, **settings
) -> A.SearchResult:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 1, 8, 8)).astype("float32")
    y = (np.arange(120) % 3).astype("int64")
    base = dict(
        study=A.StudySettings(name=name, n_trials=n_trials),
        trainer=A.TrainerSettings(epochs=2, batch_size=32, threads=1),
        tracking=A.TrackingSettings(enabled=False),
        export=A.ExportSettings(dir=tmp / name, plots=False),
        constraints=(A.Constraint("params", max=20_000),),
    )
    base.update(settings)
    return A.run_search(
        A.load_space("fire"),
        A.dataset_from_arrays("mine", x, y),
        A.SearchSettings(**base),
        sampler=sampler,
        storage=f"sqlite:///{tmp / 'optuna.db'}",
        fit_fn=FixedCostFit(seconds=0.0, epochs=2),
    )


def test_proposals_are_feasible_new_networks_and_timed(tmp_path: Path) -> None:
    sampler = CostAwareSampler(seed=0, n_startup_trials=4, pool_size=200, neighbours=40)
    result = _search(tmp_path, "ca", 12, sampler)
    trials = result.study.trials
    assert len(trials) == 12 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # Never a network that breaks the cost constraint, never one already tried.
    assert all(t.user_attrs["costs"]["params"] <= 20_000 for t in trials)
    assert len({t.user_attrs["spec_hash"] for t in trials}) == 12
    assert all(t.user_attrs["proposal_seconds"] >= 0 for t in trials)
    # FixedCostFit's accuracy grows with size: past the start-up, the model proposes networks
    # that extend the front, so the front holds more than the start-up's members.
    assert len(result.front) >= 3


def test_a_resumed_study_does_not_repeat_its_draws(tmp_path: Path) -> None:
    _search(tmp_path, "again", 5, CostAwareSampler(seed=3, n_startup_trials=20, pool_size=100))
    resumed = _search(tmp_path, "again", 9, CostAwareSampler(seed=3, n_startup_trials=20, pool_size=100))
    hashes = [t.user_attrs["spec_hash"] for t in resumed.study.trials]
    assert len(set(hashes)) == 9


def test_a_seeded_sampler_instance_is_reseeded_on_resume(tmp_path: Path) -> None:
    # The README's own NSGAIISampler(seed=0): seeded again, a resume repeated every earlier draw.
    first = _search(tmp_path, "nsga", 4, optuna.samplers.NSGAIISampler(seed=0, population_size=50))
    before = [t.params for t in first.study.trials]
    resumed = _search(tmp_path, "nsga", 8, optuna.samplers.NSGAIISampler(seed=0, population_size=50))
    after = [t.params for t in resumed.study.trials[4:]]
    assert len(after) == 4 and not any(p in before for p in after)


def test_pruned_trials_are_observations_at_their_rung(tmp_path: Path) -> None:
    from archsearch.search.cost_aware import _observations
    from archsearch.search.samplers import cost_problem

    result = _search(
        tmp_path,
        "halving",
        10,
        CostAwareSampler(seed=0, n_startup_trials=3, pool_size=100),
        fidelity=A.FidelitySettings(enabled=True, rungs=(1,), eta=3),
    )
    pruned = [t for t in result.study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "halving pruned nothing"
    problem = cost_problem(result.settings, A.load_space("fire"), _Data(), None)  # type: ignore[arg-type]
    seen = _observations(result.study.trials, problem)
    at_rung = [o for o in seen if o[2] < 1.0]
    assert len(at_rung) == len(pruned) and all(o[2] == pytest.approx(0.5) for o in at_rung)


class _Data:
    shape = (1, 8, 8)
    num_classes = 3


def test_objectives_it_cannot_serve_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sampler=cost_aware"):
        _search(
            tmp_path,
            "lat",
            2,
            CostAwareSampler(),
            objectives=(("val_acc", "maximize"), ("latency_ms", "minimize")),
        )
    assert not (tmp_path / "optuna.db").exists()


@pytest.mark.parametrize("key", ["n_startup_trials", "pool_size", "neighbours", "max_observations"])
def test_bad_settings_are_one_sentence(key: str) -> None:
    with pytest.raises(ConfigError, match=f"sampler.{key}"):
        CostAwareSampler(**{key: -1})


def test_the_cli_runs_it(tmp_path: Path) -> None:
    from archsearch.cli.compose import compose_sweep
    from archsearch.cli.main import run_sweep

    cfg = compose_sweep(
        tmp_path,
        "sampler=cost_aware",
        "study.n_trials=4",
        "trainer.epochs=1",
        "sampler.pool_size=50",
        "sampler.n_startup_trials=2",
        "data.subset=100",
        "constraints.params.max=30000",
    )
    result = run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0, epochs=1))
    assert type(result.study.sampler).__name__ == "CostAwareSampler"
    assert len(result.study.trials) == 4
    assert math.isfinite(result.study.trials[-1].user_attrs["proposal_seconds"])


def test_a_population_larger_than_the_trials_is_warned_of(tmp_path: Path) -> None:
    from rich.console import Console

    from archsearch.search.samplers import check_sampler

    console = Console(record=True, width=200)
    settings = A.SearchSettings(study=A.StudySettings(n_trials=12))
    check_sampler(optuna.samplers.NSGAIISampler(population_size=50), settings, console.print)
    assert "population (50) is not smaller than study.n_trials (12)" in console.export_text()
    quiet = Console(record=True, width=200)
    check_sampler(optuna.samplers.NSGAIISampler(population_size=4), settings, quiet.print)
    check_sampler(None, settings, quiet.print)
    assert quiet.export_text() == ""


def test_a_rung_inside_the_warm_up_is_warned_of() -> None:
    from rich.console import Console

    from archsearch.search.preflight import preflight

    def warned(rungs: tuple[int, ...], warmup: float) -> str:
        console = Console(record=True, width=300)
        settings = A.SearchSettings(
            trainer=A.TrainerSettings.from_mapping({"epochs": 9, "schedule": {"warmup": warmup}}),
            fidelity=A.FidelitySettings(enabled=True, rungs=rungs),
        )
        preflight(settings, A.load_space("fire"), None, console.print)
        return console.export_text()

    text = warned((1, 3), 0.25)
    assert "rung at epoch 1 falls inside the learning-rate warm-up (the first 2.25 of 9" in text
    assert warned((3,), 0.25) == ""  # the default rungs start after the default warm-up
    assert warned((1, 3), 0.05) == ""


def test_the_default_is_cost_aware_where_it_can_serve_and_tpe_elsewhere() -> None:
    from archsearch.search.samplers import default_sampler

    accuracy = (("val_acc", "maximize"), ("params", "minimize"))
    assert isinstance(default_sampler(0, accuracy), CostAwareSampler)
    measured = (("val_acc", "maximize"), ("latency_ms", "minimize"))
    assert isinstance(default_sampler(0, measured), optuna.samplers.TPESampler)
    assert isinstance(default_sampler(0), optuna.samplers.TPESampler)
