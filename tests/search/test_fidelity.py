"""Multi-objective successive halving: the promotion rule, pruning inside a sweep, and across workers."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from omegaconf import DictConfig
from optuna.trial import TrialState

from archsearch.cli.compose import compose_sweep
from archsearch.cli.main import run_sweep
from archsearch.errors import ConfigError
from archsearch.pareto import crowding_distances, pareto_ranks
from archsearch.resources import ROOT
from archsearch.results.front import front_trials
from archsearch.search.fidelity import (
    FidelitySettings,
    RungInformedSampler,
    SuccessiveHalving,
    default_rungs,
    observed_at_last_rung,
    promote,
    rung_key,
)
from archsearch.testing import FixedCostFit

ACC_PARAMS = ["maximize", "minimize"]
# A fake objective with known values: (accuracy, params) per trial number.
#   front 0: 0, 1, 2, 3      (3 is the most crowded: neighbours 1 and 0 on both axes)
#   front 1: 5, 7, 8         (5 is interior, 7 and 8 are its ends)
#   front 2: 4, front 3: 6
KNOWN = {
    0: (0.90, 100.0),
    1: (0.80, 50.0),
    2: (0.70, 10.0),
    3: (0.85, 80.0),
    4: (0.60, 200.0),
    5: (0.75, 60.0),
    6: (0.50, 300.0),
    7: (0.88, 120.0),
    8: (0.65, 20.0),
}


def test_non_dominated_sorting_and_crowding_of_the_known_values() -> None:
    numbers = sorted(KNOWN)
    ranks = pareto_ranks([KNOWN[n] for n in numbers], ACC_PARAMS)
    assert dict(zip(numbers, ranks, strict=True)) == {0: 0, 1: 0, 2: 0, 3: 0, 4: 2, 5: 1, 6: 3, 7: 1, 8: 1}
    # Front 0 sorted by accuracy is 2, 1, 3, 0: the ends are infinite, 1 gets 0.15/0.2 + 70/90.
    crowd = crowding_distances([KNOWN[n] for n in (0, 1, 2, 3)])
    assert crowd[0] == crowd[2] == float("inf")
    assert crowd[1] == pytest.approx(0.15 / 0.2 + 70 / 90)
    assert crowd[3] == pytest.approx(0.10 / 0.2 + 50 / 90)


def test_rung_promotes_exactly_the_best_third_by_rank_then_crowding() -> None:
    # 9 entries, eta 3: three continue; front 0 has four, so crowding drops trial 3.
    assert promote(KNOWN, ACC_PARAMS, eta=3) == {0, 1, 2}
    # eta 2: four continue, exactly front 0.
    assert promote(KNOWN, ACC_PARAMS, eta=2) == {0, 1, 2, 3}
    # Without trial 3, four of eight continue: front 0 plus front 1's best-spread member; 7 and 8
    # are both ends (infinite crowding), and the earlier trial wins the tie.
    without_3 = {n: v for n, v in KNOWN.items() if n != 3}
    assert promote(without_3, ACC_PARAMS, eta=2) == {0, 1, 2, 7}
    # eta 9: one continues; 0 and 2 are both ends of front 0, the earlier wins.
    assert promote(KNOWN, ACC_PARAMS, eta=9) == {0}


def test_with_fewer_than_eta_entries_the_non_dominated_continue() -> None:
    assert promote({1: KNOWN[1], 5: KNOWN[5]}, ACC_PARAMS, eta=3) == {1}
    assert promote({0: KNOWN[0], 2: KNOWN[2]}, ACC_PARAMS, eta=3) == {0, 2}
    assert promote({4: KNOWN[4]}, ACC_PARAMS, eta=3) == {4}


def test_the_halving_decision_is_a_value_written_by_no_one() -> None:
    """decide() reads entries and returns a verdict: no storage, no MLflow (the objective writes)."""
    halving = SuccessiveHalving(
        FidelitySettings(enabled=True, rungs=(1,), eta=3), [("val_acc", "maximize"), ("params", "minimize")]
    )
    entries = {n: KNOWN[n] for n in range(6)}
    kept = promote(entries, ACC_PARAMS, eta=3)
    for number in range(6):
        decision = halving.decide(number, 1, entries)
        assert decision.continues == (number in kept)
        assert decision.seen == tuple(range(6)) and decision.kept == len(kept)
        attrs = decision.user_attrs()["rung_1_decision"]
        assert attrs["continues"] == decision.continues and attrs["seen"] == list(range(6))
        if not decision.continues:
            assert decision.reason == "pruned after epoch 1: not among the best 2 of 6 trials at this rung"
    alone = halving.decide(0, 1, {0: KNOWN[0], 9: [KNOWN[0][0] + 0.1, KNOWN[0][1] - 1]})
    assert alone.reason == "pruned after epoch 1: dominated by one of the 1 trials at this rung"


def test_rungs_default_to_powers_of_eta_below_the_epochs() -> None:
    assert default_rungs(8, 3) == (1, 3)
    assert default_rungs(12, 3) == (1, 3, 9)
    assert default_rungs(1, 3) == ()
    assert default_rungs(27, 3, min_epochs=3) == (3, 9)
    assert FidelitySettings.from_mapping({"enabled": True, "eta": 2, "min_epochs": 1}).rungs_for(8) == (
        1,
        2,
        4,
    )
    assert FidelitySettings.from_mapping({"rungs": [2, 5]}) == FidelitySettings(False, 3, 3, (2, 5))
    assert FidelitySettings().rungs_for(27) == (3, 9)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"rungs": [1, 8]}, r"sweep.fidelity.rungs must be null or increasing epochs in \[1, 8\)"),
        ({"rungs": [3, 1]}, "sweep.fidelity.rungs must be"),
        ({"eta": 1}, "sweep.fidelity.eta must be an integer >= 2, got 1"),
        ({"min_epochs": 0}, "sweep.fidelity.min_epochs must be an integer >= 1, got 0"),
        ({"enabled": "yes"}, "sweep.fidelity.enabled must be true or false"),
        ({"learn_from_pruned": 1}, "sweep.fidelity.learn_from_pruned must be true or false, got 1"),
        ({"fraction": 0.5}, "sweep.fidelity has unknown key"),
    ],
)
def test_bad_fidelity_settings_are_one_sentence(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FidelitySettings.from_mapping(block).rungs_for(8)


# --------------------------------------------------------------------------- inside a sweep


def sweep_cfg(tmp: Path, *overrides: str) -> DictConfig:
    return compose_sweep(
        tmp,
        "trainer.epochs=4",
        "sweep.fidelity.enabled=true",
        "sweep.fidelity.eta=2",
        "sweep.fidelity.min_epochs=1",
        *overrides,
    )


class EpochCountingFit:
    """FixedCostFit (accuracy a fixed function of size, growing with the epoch), counting epochs run."""

    def __init__(self) -> None:
        self.inner = FixedCostFit(seconds=0.0, epochs=4)
        self.epochs = 0

    def __call__(self, model: Any, data: Any, cfg: Any, *, on_epoch_end: Any = None, **kw: Any) -> Any:
        def count(epoch: int, metrics: dict[str, float]) -> Any:
            self.epochs += 1
            return on_epoch_end(epoch, metrics)

        return self.inner(model, data, cfg, on_epoch_end=count, **kw)


def assert_decisions_replay(study: optuna.Study, rungs: tuple[int, ...], eta: int) -> int:
    """Every recorded rung decision is what ``promote`` gives on the entries it saw; returns their count."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    count = 0
    for t in trials.values():
        for epoch in rungs:
            decision = t.user_attrs.get(f"{rung_key(epoch)}_decision")
            if decision is None:
                continue
            count += 1
            entries = {n: trials[n].user_attrs[rung_key(epoch)] for n in decision["seen"]}
            assert (t.number in promote(entries, ["maximize", "minimize", "minimize"], eta)) == decision[
                "continues"
            ]
            if not decision["continues"]:
                assert t.state == TrialState.PRUNED
                assert t.user_attrs["pruned_at_epoch"] == epoch
    return count


def test_sweep_prunes_dominated_trials_and_keeps_their_partial_results(tmp_path: Path) -> None:
    fit = EpochCountingFit()
    result = run_sweep(sweep_cfg(tmp_path, "study.n_trials=8", "sampler=tpe"), fit_fn=fit)
    study = result.study
    assert isinstance(study.sampler, RungInformedSampler)
    assert isinstance(study.sampler.sampler, optuna.samplers.TPESampler)
    trained = [t for t in study.trials if rung_key(1) in t.user_attrs]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in trained if t.state == TrialState.COMPLETE]
    assert pruned and complete
    assert assert_decisions_replay(study, (1, 2), eta=2) >= len(trained)
    # A pruned trial trained exactly up to its rung, and says so.
    assert fit.epochs == 4 * len(complete) + sum(t.user_attrs["pruned_at_epoch"] for t in pruned)
    for t in pruned:
        assert t.user_attrs["state"] == "pruned"
        assert t.user_attrs["epochs_done"] == t.user_attrs["pruned_at_epoch"]
        assert t.user_attrs["val_acc"] == t.user_attrs[rung_key(t.user_attrs["pruned_at_epoch"])][0]
    assert {t.number for t in front_trials(study)} <= {t.number for t in complete}

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("archsearch/fire")
    assert exp is not None
    runs = {
        r.info.run_id: r
        for r in client.search_runs([exp.experiment_id], "tags.`archsearch.role` = 'trial'", max_results=100)
    }
    for t in pruned:
        run = runs[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "KILLED"
        assert run.data.tags["archsearch.state"] == "pruned"
        assert run.data.metrics["val_acc"] == pytest.approx(t.user_attrs["val_acc"])
        assert run.data.metrics["pruned_at_epoch"] == t.user_attrs["pruned_at_epoch"]


@pytest.mark.parametrize(
    ("overrides", "wrapped"),
    [
        (["sweep.fidelity.learn_from_pruned=false"], False),
        (["sampler=grid", "sweep.space=sr_grid"], False),  # a grid learns nothing: left as it is
        (["sweep.fidelity.enabled=false"], False),
        (["sampler=random"], True),
        (["sampler=nsga2"], True),
    ],
)
def test_which_sweeps_wrap_their_sampler(tmp_path: Path, overrides: list[str], wrapped: bool) -> None:
    study = run_sweep(sweep_cfg(tmp_path, "study.n_trials=2", *overrides), fit_fn=EpochCountingFit()).study
    assert isinstance(study.sampler, RungInformedSampler) is wrapped


# --------------------------------------------------------------------------- what the sampler learns

THREE = [
    optuna.study.StudyDirection.MAXIMIZE,
    optuna.study.StudyDirection.MINIMIZE,
    optuna.study.StudyDirection.MINIMIZE,
]
X = optuna.distributions.FloatDistribution(0.0, 1.0)


def _trial(
    x: float, state: TrialState, values: list[float] | None = None, **attrs: Any
) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        state=state, values=values, params={"x": x}, distributions={"x": X}, user_attrs=attrs
    )


def test_a_pruned_trial_is_observed_at_its_last_rung() -> None:
    pruned = _trial(
        0.3,
        TrialState.PRUNED,
        rung_1=[0.5, 10.0, 20.0],
        rung_3=[0.7, 10.0, 20.0],
        rung_3_decision={"continues": False},
        val_acc=0.7,
    )
    seen = observed_at_last_rung(pruned)
    assert seen is not None
    assert seen.state == TrialState.COMPLETE
    assert seen.values == [0.7, 10.0, 20.0]
    assert seen.params == {"x": 0.3} and seen.user_attrs == pruned.user_attrs
    assert pruned.state == TrialState.PRUNED and pruned.values is None  # the stored trial is untouched
    # Only pruned trials that reached a rung are shown differently.
    assert observed_at_last_rung(_trial(0.3, TrialState.PRUNED)) is None
    assert (
        observed_at_last_rung(_trial(0.3, TrialState.COMPLETE, [0.9, 1.0, 1.0], rung_1=[0.5, 1.0, 1.0]))
        is None
    )


def _study_with_pruned_trials() -> optuna.Study:
    """One completed trial at x=0.5, then 30 pruned ones.

    The first 10 pruned trials (x near 0.9) measured badly at their rung; the other 20 measured
    well where x < 0.2 and badly elsewhere. TPE ranks pruned trials of a multi-objective study as
    equals and fills its "good" share with the earliest, so unaided it samples near x = 0.9.
    """
    study = optuna.create_study(directions=THREE)
    study.add_trial(_trial(0.5, TrialState.COMPLETE, [0.5, 1.0, 1.0]))
    for i in range(10):
        study.add_trial(_trial(0.85 + 0.01 * i, TrialState.PRUNED, rung_1=[0.1, 1.0, 1.0]))
    for i in range(20):
        x = 0.05 * i
        study.add_trial(_trial(x, TrialState.PRUNED, rung_1=[0.9 if x < 0.2 else 0.1, 1.0, 1.0]))
    return study


def _proposals(study: optuna.Study, sampler: optuna.samplers.BaseSampler, n: int = 12) -> list[float]:
    study.sampler = sampler
    out = []
    for _ in range(n):
        trial = study.ask({"x": X})
        out.append(trial.params["x"])
        study.tell(trial, state=TrialState.FAIL)  # failed proposals teach the sampler nothing
    return out


def test_the_wrapped_sampler_learns_where_pruned_trials_measured_well() -> None:
    blind = _proposals(_study_with_pruned_trials(), optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    informed = _proposals(
        _study_with_pruned_trials(),
        RungInformedSampler(optuna.samplers.TPESampler(seed=0, n_startup_trials=5)),
    )
    assert sum(x > 0.7 for x in blind) > len(blind) / 2
    assert sum(x < 0.3 for x in informed) > len(informed) / 2


def test_the_view_lists_pruned_trials_as_observed_and_leaves_the_study_alone() -> None:
    study = _study_with_pruned_trials()
    seen: dict[str, Any] = {}

    class Spy(optuna.samplers.RandomSampler):
        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            seen["complete"] = len(study.get_trials(states=(TrialState.COMPLETE,)))
            seen["pruned"] = len(
                study._get_trials(deepcopy=False, states=(TrialState.PRUNED,), use_cache=True)
            )
            seen["all"] = len(study.trials)
            return super().sample_independent(study, trial, name, dist)

    _proposals(study, RungInformedSampler(Spy(seed=0)), n=1)
    assert seen == {"complete": 31, "pruned": 0, "all": 32}  # 31 + the running trial
    assert len(study.get_trials(states=(TrialState.PRUNED,))) == 30


# --------------------------------------------------------------------------- two workers


def _storage(tmp: Path) -> tuple[str, str]:
    url = os.environ.get("ARCHSEARCH_TEST_POSTGRES")
    if url:
        return url, f"fidelity_{uuid.uuid4().hex[:8]}"
    return f"sqlite:///{tmp / 'optuna.db'}", "fidelity"


@pytest.mark.slow
def test_pruning_decisions_are_shared_by_two_worker_processes(tmp_path: Path) -> None:
    storage, name = _storage(tmp_path)
    command = [
        sys.executable,
        "-m",
        "archsearch",
        "+sweep=fire",
        "data=synthetic",
        f"study.name={name}",
        f"study.storage={storage}",
        "study.n_trials=12",
        "tracking.enabled=false",
        f"export.dir={tmp_path / 'results'}",
        "export.plots=false",
        "trainer.epochs=4",
        "sweep.fidelity.enabled=true",
        "sweep.fidelity.eta=2",
        "sweep.fidelity.min_epochs=1",
        "+sweep.fit._target_=archsearch.testing.FixedCostFit",
        "+sweep.fit.seconds=0.2",
        "+sweep.fit.epochs=4",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [*command, f"hydra.run.dir={tmp_path / f'hydra{i}'}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    study = optuna.load_study(study_name=name, storage=storage)
    assert len(study.trials) >= 12
    assert any(t.state == TrialState.PRUNED for t in study.trials)
    assert assert_decisions_replay(study, (1, 2), eta=2) > 0
    decisions = {
        t.number: t.user_attrs[f"{rung_key(1)}_decision"]
        for t in study.trials
        if f"{rung_key(1)}_decision" in t.user_attrs
    }
    worker_of = {n: d["worker"] for n, d in decisions.items()}
    assert len(set(worker_of.values())) == 2
    # Some decision of one worker weighed entries that the other worker wrote.
    assert any(any(worker_of[s] != worker_of[n] for s in d["seen"]) for n, d in decisions.items())
