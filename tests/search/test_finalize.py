"""Finalizing a front: every member retrained once at full fidelity, test accuracy in export and MLflow."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from omegaconf import DictConfig

from archsearch.cli.compose import compose_sweep
from archsearch.cli.finalize import finalize
from archsearch.cli.main import run_sweep
from archsearch.errors import ConfigError
from archsearch.resources import ROOT
from archsearch.results.export import finalized_results
from archsearch.results.front import front_trials
from archsearch.testing import FixedCostFit
from archsearch.train.result import TrainResult


def sweep_cfg(tmp: Path, *overrides: str) -> DictConfig:
    return compose_sweep(
        tmp, "data.subset=100", "study.n_trials=8", "trainer.epochs=2", "finalize.epochs=5", *overrides
    )


class FinalFit:
    """Retraining adds 0.05 to what the search saw, except that the largest member collapses to
    0.1 (so the finalized front loses it); test accuracy is validation accuracy minus 0.02."""

    def __init__(self, search_acc: dict[int, float], collapse: int) -> None:
        self.search_acc = search_acc  # params -> search-time accuracy
        self.collapse = collapse  # params of the member that collapses
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self, model: Any, data: Any, cfg: Any, *, seed: int = 0, on_epoch_end: Any = None, evaluate_test: bool
    ) -> TrainResult:
        params = sum(p.numel() for p in model.parameters())
        self.calls.append(
            {"params": params, "cfg": cfg.to_mapping(), "train": len(data.train_y), "test": evaluate_test}
        )
        acc = 0.1 if params == self.collapse else self.search_acc[params] + 0.05
        history = [{"epoch": float(e), "val_acc": acc, "seconds": 0.0} for e in range(1, cfg.epochs + 1)]
        for entry in history:
            on_epoch_end(int(entry["epoch"]), dict(entry))
        return TrainResult(
            val_acc_best=acc,
            val_acc_last=acc,
            test_acc=acc - 0.02 if evaluate_test else None,
            history=history,
            images_per_s=1.0,
            epochs_done=cfg.epochs,
            steps_done=1,
            steps_total=1,
            budget_exhausted=False,
            stopped_early=False,
            seconds=0.5,
        )


def test_finalize_retrains_each_member_once_and_exports_test_accuracy(tmp_path: Path) -> None:
    study = run_sweep(sweep_cfg(tmp_path), fit_fn=FixedCostFit(seconds=0.0, epochs=2)).study
    # DSD splits finalize.epochs (5), not the search's 2 epochs, into its three phases.
    cfg = sweep_cfg(tmp_path, "trainer.dsd.enabled=true")
    members = front_trials(study)
    assert len(members) >= 2
    params = {t.number: int(t.user_attrs["costs"]["params"]) for t in members}
    largest = max(members, key=lambda t: params[t.number])
    fit = FinalFit({params[t.number]: t.user_attrs["val_acc"] for t in members}, params[largest.number])

    result = finalize(cfg, study=study, fit_fn=fit)

    # Once per member, from scratch, at finalize.epochs, on the whole training split, with test.
    assert sorted(c["params"] for c in fit.calls) == sorted(params.values())
    assert all(c["cfg"]["epochs"] == 5 and c["cfg"]["dsd"]["enabled"] and c["test"] for c in fit.calls)
    assert {c["train"] for c in fit.calls} == {round(512 * 0.8)}
    stored = finalized_results(study)
    assert set(stored) == {t.number for t in members}
    # The exported front is the front on finalized values: the collapsed member is dominated now.
    expected = {t.number for t in members} - {largest.number}
    assert {t.number for t in result.front} == expected
    with (tmp_path / "results" / "pareto.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {int(r["trial"]) for r in rows} == expected
    header = list(rows[0])
    assert header[header.index("val_acc") + 1] == "test_acc"
    by_trial = {t.number: t for t in members}
    for row in rows:
        search = by_trial[int(row["trial"])].user_attrs["val_acc"]
        assert float(row["val_acc"]) == pytest.approx(search + 0.05)
        assert float(row["test_acc"]) == pytest.approx(search + 0.03)
        assert float(row["search_val_acc"]) == pytest.approx(search)
        assert row["dsd"] == "True"
    assert json.loads((tmp_path / "results" / "pareto.json").read_text())["finalized"] is True

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("archsearch/fire")
    assert exp is not None
    parent = client.search_runs([exp.experiment_id], "tags.`archsearch.role` = 'parent'")[0]
    runs = client.search_runs([exp.experiment_id], "tags.`archsearch.role` = 'finalize'")
    assert sorted(r.info.run_name for r in runs) == sorted(f"finalize-{t.number}" for t in members)
    for run in runs:
        number = int(run.data.tags["archsearch.trial"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["archsearch.spec_hash"] == by_trial[number].user_attrs["spec_hash"]
        assert run.data.tags["archsearch.search_run_id"] == by_trial[number].user_attrs["mlflow_run_id"]
        assert run.data.tags["archsearch.pareto"] == str(number in expected).lower()
        assert run.data.metrics["test_acc"] == pytest.approx(stored[number]["test_acc"])
        assert run.info.run_id == stored[number]["mlflow_run_id"]

    # Finalizing again with the same settings trains nothing; force retrains everyone.
    again = finalize(cfg, study=study, fit_fn=fit)
    assert len(fit.calls) == len(members) and not any(m.trained for m in again.members)
    assert {t.number for t in again.front} == expected
    forced = sweep_cfg(tmp_path, "trainer.dsd.enabled=true", "finalize.force=true")
    finalize(forced, study=study, fit_fn=fit)
    assert len(fit.calls) == 2 * len(members)


def _trial(number: int, acc: float, params: int) -> Any:
    import optuna

    return optuna.trial.create_trial(
        values=[acc, params],
        distributions={},
        params={},
        user_attrs={"val_acc": acc, "costs": {"params": params}},
    )


def test_spread_over_sizes_keeps_the_accuracy_size_front_and_spreads_it_over_log_params() -> None:
    from archsearch.results.front import spread_over_sizes

    sizes = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000]
    front = [_trial(i, 0.80 + 0.01 * i, p) for i, p in enumerate(sizes)]
    # A larger network that is no more accurate than a smaller one is never chosen.
    front.append(_trial(7, 0.805, 50_000))
    for t, number in zip(front, range(8), strict=True):
        t.number = number
    chosen = spread_over_sizes(front, 3)
    assert [t.number for t in chosen] == [0, 3, 6]  # smallest, log-middle, largest
    assert [t.number for t in spread_over_sizes(front, 1)] == [6]  # one member: the most accurate
    assert [t.number for t in spread_over_sizes(front, 20)] == list(range(7))


def test_finalize_members_retrains_a_chosen_few_and_exports_only_them(tmp_path: Path) -> None:
    study = run_sweep(sweep_cfg(tmp_path), fit_fn=FixedCostFit(seconds=0.0, epochs=2)).study
    members = front_trials(study)
    params = {t.number: int(t.user_attrs["costs"]["params"]) for t in members}
    fit = FinalFit({params[t.number]: t.user_attrs["val_acc"] for t in members}, collapse=-1)

    result = finalize(sweep_cfg(tmp_path, "finalize.members=1"), study=study, fit_fn=fit)

    best = max(members, key=lambda t: (t.user_attrs["val_acc"], -params[t.number]))
    assert [c["params"] for c in fit.calls] == [params[best.number]]
    assert [m.trial for m in result.members] == [best.number]
    assert [t.number for t in result.front] == [best.number]
    with (tmp_path / "results" / "pareto.csv").open() as fh:
        assert [int(r["trial"]) for r in csv.DictReader(fh)] == [best.number]
    # Finalizing the whole front afterwards retrains the others and exports them all.
    finalize(sweep_cfg(tmp_path), study=study, fit_fn=fit)
    assert len(fit.calls) == len(members)
    assert set(finalized_results(study)) == {t.number for t in members}


def test_finalize_members_must_be_a_positive_count(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"finalize\.members"):
        finalize(sweep_cfg(tmp_path, "finalize.members=0"), fit_fn=FixedCostFit(seconds=0.0, epochs=2))


def test_sweep_with_finalize_true_returns_the_finalized_front(tmp_path: Path) -> None:
    cfg = sweep_cfg(tmp_path, "sweep.finalize=true", "tracking.enabled=false", "study.n_trials=4")
    result = run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0, epochs=2))
    assert result.front
    # FixedCostFit reports its final validation accuracy as test accuracy.
    assert all(t.user_attrs["test_acc"] == t.user_attrs["val_acc"] for t in result.front)
    assert set(finalized_results(result.study)) == {t.number for t in front_trials(result.study)}


def test_data_that_does_not_fit_the_networks_is_refused(tmp_path: Path) -> None:
    cfg = sweep_cfg(tmp_path, "tracking.enabled=false", "study.n_trials=2")
    study = run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0, epochs=2)).study
    with pytest.raises(
        ConfigError, match=r"data=digits \(1x8x8, 10 classes\) does not fit trial \d+'s network"
    ):
        finalize(sweep_cfg(tmp_path, "data=digits"), study=study, fit_fn=FixedCostFit(seconds=0.0))
    assert finalized_results(study) == {}


def test_finalize_command_names_a_missing_study_in_one_sentence(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "archsearch.finalize", "study.name=nope", f"tracking.dir={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: study.storage ") and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_finalized_member_is_an_mlflow_model_that_predicts_raw_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import mlflow
    import numpy as np
    import torch

    from archsearch.cli.config import plain
    from archsearch.data.datasets import DataSettings, load_dataset

    study = run_sweep(sweep_cfg(tmp_path, "study.n_trials=3"), fit_fn=FixedCostFit(seconds=0.0)).study
    cfg = sweep_cfg(tmp_path, "finalize.epochs=1", "finalize.members=1", "finalize.register_as=fire-net")
    member = finalize(cfg, study=study).members[0]  # really trained: one epoch of one small net

    assert member.model_uri == f"runs:/{member.mlflow_run_id}/model" and member.model_error == ""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model(member.model_uri)
    # The data as finalize read it (whole training split); its test images back in raw pixels.
    data = load_dataset(dataclasses.replace(DataSettings.from_mapping(plain(cfg.data)), subset=None), seed=0)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (data.mean, data.std))
    raw = (data.test_x * std + mean).numpy().astype(np.float32)
    predicted = model.predict(raw).argmax(axis=1)
    accuracy = float((predicted == data.test_y.numpy()).mean())
    assert accuracy == pytest.approx(member.test_acc, abs=1.5 / len(raw))  # the member's own test score
    assert mlflow.pyfunc.load_model("models:/fire-net/1").metadata.run_id == member.mlflow_run_id
    run = MlflowClient(tracking_uri=uri).get_run(member.mlflow_run_id)
    assert run.data.tags["archsearch.model_uri"] == member.model_uri
    assert run.data.tags["archsearch.registered_model"] == "models:/fire-net/1"
    with (tmp_path / "results" / "pareto.csv").open() as fh:
        assert [r["model_uri"] for r in csv.DictReader(fh)] == [member.model_uri]


def test_register_as_is_a_model_name_and_needs_tracking(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^finalize\.register_as must be null or a model name"):
        finalize(sweep_cfg(tmp_path, "finalize.register_as='a/b'"), fit_fn=FixedCostFit(seconds=0.0))
    cfg = sweep_cfg(tmp_path, "tracking.enabled=false", "study.n_trials=2")
    study = run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0)).study
    with pytest.raises(ConfigError, match=r"finalize\.register_as needs tracking\.enabled true"):
        finalize(sweep_cfg(tmp_path, "tracking.enabled=false", "finalize.register_as=net"), study=study)
