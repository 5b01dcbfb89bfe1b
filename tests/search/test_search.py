"""The search layer against a fake trainer with fixed results (no training), plus its errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from omegaconf import DictConfig

from archsearch.cli.compose import compose_sweep
from archsearch.cli.config import plain
from archsearch.cli.main import run_sweep
from archsearch.errors import ConfigError
from archsearch.net.spec import load_spec
from archsearch.pareto import non_dominated
from archsearch.results.front import completed_feasible, front_trials
from archsearch.search.settings import SearchSettings
from archsearch.train.fit import TrainingDiverged


def sweep_cfg(tmp: Path, *overrides: str) -> DictConfig:
    return compose_sweep(tmp, "study.n_trials=6", *overrides)


class FakeResult:
    def __init__(self, acc: float) -> None:
        self.val_acc_last = acc
        self.val_acc_best = acc
        self.test_acc = None
        self.epochs_done = 2
        self.seconds = 0.01
        self.images_per_s = 1000.0
        self.history: list[dict[str, float]] = []


class FakeFit:
    """Accuracy grows with log(params), so the front trades them off; counts calls."""

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.calls = 0
        self.fail_on = fail_on or set()

    def __call__(
        self, model: Any, data: Any, cfg: Any, *, seed: int = 0, on_epoch_end: Any = None
    ) -> FakeResult:
        self.calls += 1
        if self.calls in self.fail_on:
            raise TrainingDiverged(epoch=1, step=3, loss=float("nan"))
        params = sum(p.numel() for p in model.parameters())
        acc = min(0.99, 0.1 * math.log10(params) + 0.003 * (params % 7))
        if on_epoch_end is not None:
            for epoch in (1, 2):
                on_epoch_end(epoch, {"train_loss": 1.0 / epoch, "val_acc": acc * epoch / 2})
        return FakeResult(acc)


def runs_of(tmp: Path, study: str) -> list[Any]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"archsearch/{study}")
    assert exp is not None
    return list(client.search_runs([exp.experiment_id], max_results=1000))


def test_sweep_runs_every_trial_into_storage_mlflow_and_export(tmp_path: Path) -> None:
    fit = FakeFit()
    result = run_sweep(sweep_cfg(tmp_path), fit_fn=fit)
    study = result.study
    assert len(study.trials) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert fit.calls == len({t.user_attrs["spec_hash"] for t in study.trials})

    runs = runs_of(tmp_path, "fire")
    parents = [r for r in runs if r.data.tags.get("archsearch.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("archsearch.role") == "trial"]
    assert len(parents) == 1
    assert sorted(r.info.run_name for r in children) == sorted(f"trial-{n}" for n in range(6))
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in runs)
    child = children[0]
    assert {"params", "macs", "bytes", "latency_est_ms", "val_acc"} <= set(child.data.metrics)
    assert "spec_hash" not in child.data.params and "depth" in child.data.params
    # Each child run holds its net and the resolved config as artifacts.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    by_run = {t.user_attrs["mlflow_run_id"]: t for t in study.trials}
    for run in children:
        assert {"net.yaml", "config.yaml"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        net = client.download_artifacts(run.info.run_id, "net.yaml", str(tmp_path / run.info.run_id))
        assert load_spec(Path(net)).hash == by_run[run.info.run_id].user_attrs["spec_hash"]

    # The exported front is exactly the non-dominated set of completed feasible trials.
    trials = [t for t in completed_feasible(study) if "reused_from" not in t.user_attrs]
    expected = {
        trials[i].number
        for i in non_dominated([t.values for t in trials], ["maximize", "minimize", "minimize"])
    }
    assert {t.number for t in result.front} == expected
    csv_rows = (result.export_dir / "pareto.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + len(expected)
    for net in (result.export_dir / "nets").glob("*.yaml"):
        spec = load_spec(net)
        assert spec.hash in net.name


def test_rerun_resumes_and_tops_up_to_n_trials(tmp_path: Path) -> None:
    run_sweep(sweep_cfg(tmp_path, "study.n_trials=3"), fit_fn=FakeFit())
    again = run_sweep(sweep_cfg(tmp_path, "study.n_trials=5"), fit_fn=FakeFit())
    assert [t.number for t in again.study.trials] == [0, 1, 2, 3, 4]
    runs = runs_of(tmp_path, "fire")
    assert sum(r.data.tags.get("archsearch.role") == "parent" for r in runs) == 1
    assert sum(r.data.tags.get("archsearch.role") == "trial" for r in runs) == 5


def test_infeasible_trial_is_not_trained(tmp_path: Path) -> None:
    fit = FakeFit()
    result = run_sweep(sweep_cfg(tmp_path, "constraints.params.max=10", "study.n_trials=4"), fit_fn=fit)
    assert fit.calls == 0
    for t in result.study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.user_attrs["state"] == "infeasible"
        assert t.constraints["params"] > 0
        assert "params <= 10" in t.user_attrs["infeasible_reason"]
    assert result.front == []
    tags = [
        r.data.tags.get("archsearch.state")
        for r in runs_of(tmp_path, "fire")
        if r.data.tags.get("archsearch.role") == "trial"
    ]
    assert tags == ["infeasible"] * 4


def test_failed_trial_is_recorded_and_the_study_goes_on(tmp_path: Path) -> None:
    fit = FakeFit(fail_on={2})
    result = run_sweep(sweep_cfg(tmp_path, "study.n_trials=4"), fit_fn=fit)
    states = [t.state for t in result.study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    failed = next(t for t in result.study.trials if t.state == optuna.trial.TrialState.FAIL)
    assert "TrainingDiverged" in failed.user_attrs["fail_reason"]
    runs = runs_of(tmp_path, "fire")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    bad = [r for r in runs if r.info.status == "FAILED"]
    assert len(bad) == 1 and bad[0].info.run_name == f"trial-{failed.number}"


def test_same_architecture_reuses_the_earlier_result(tmp_path: Path) -> None:
    space = tmp_path / "fixed.yaml"
    space.write_text(
        "stem_width: 16\nstem_kernel: 3\ndepth: 2\nbase_e: 16\nincr_e: 0\nfreq: 1\nsr: 0.25\n"
        "pct3x3: 0.5\npools: 1\nbypass: none\ndropout: 0.0\n"
    )
    fit = FakeFit()
    result = run_sweep(sweep_cfg(tmp_path, f"sweep.space={space}", "study.n_trials=3"), fit_fn=fit)
    assert fit.calls == 1
    reused = [t.user_attrs.get("reused_from") for t in result.study.trials]
    assert reused == [None, 0, 0]
    assert len({tuple(t.values) for t in result.study.trials}) == 1
    assert [t.number for t in front_trials(result.study)] == [0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+objectives.flops_per_byte=minimize", "objectives.flops_per_byte is not a known metric"),
        ("objectives.params=smaller", "objectives.params has direction 'smaller'"),
        ("+constraints.speed.max=3", "constraints.speed is not a known metric"),
        ("study.n_trials=0", "study.n_trials must be a positive integer"),
        ("constraints.val_acc.min=0.9", None),
    ],
)
def test_sweep_settings_validation(tmp_path: Path, override: str, message: str | None) -> None:
    cfg = sweep_cfg(tmp_path, override)
    if message is None:
        assert SearchSettings.from_mapping(plain(cfg)).constraints[0].min == 0.9
        return
    with pytest.raises(ConfigError, match=message):
        SearchSettings.from_mapping(plain(cfg))


@pytest.mark.parametrize(("limits", "minor_labelled"), [((2e3, 9e3), True), ((1e3, 2e5), False)])
def test_cost_axes_label_in_engineering_notation(limits: tuple[float, float], minor_labelled: bool) -> None:
    """Log cost axes read "10k"; minor ticks are labelled only when no decade fits on the axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from archsearch.results.plots import eng_log_formatter

    fig, ax = plt.subplots()
    ax.set_xscale("log")
    ax.set_xlim(*limits)
    ax.xaxis.set_major_formatter(eng_log_formatter(minor=False))
    ax.xaxis.set_minor_formatter(eng_log_formatter(minor=True))
    fig.canvas.draw()
    major = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    minor = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    plt.close(fig)
    assert "$" not in "".join(major + minor)
    if minor_labelled:
        assert "5k" in minor
    else:
        assert {"10k", "100k"} <= set(major) and minor == []
