"""What a reviewer sees of a sweep: MLflow metric histories, Pareto tags, the runs URL, metric names."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from rich.console import Console

from archsearch.cli.compose import compose_sweep
from archsearch.cli.main import run_sweep
from archsearch.results.tracking import runs_view_url
from archsearch.testing import FixedCostFit

EPOCHS = 3
#: One Fire net, so every trial after the first reuses trial 0's result.
FIXED_NET = (
    "stem_width: 16\nstem_kernel: 3\ndepth: 2\nbase_e: 16\nincr_e: 0\nfreq: 1\nsr: {sr}\n"
    "pct3x3: 0.5\npools: 1\nbypass: none\ndropout: 0.0\n"
)


class ConstantFit(FixedCostFit):
    """:class:`FixedCostFit` whose every net ends at ``acc``, so a test decides who dominates."""

    def __init__(self, acc: float) -> None:
        super().__init__(seconds=0.0, epochs=1)
        self.acc = acc

    def __call__(self, model: Any, data: Any, settings: Any, **kwargs: Any) -> Any:
        import dataclasses

        result = super().__call__(model, data, settings, **kwargs)
        return dataclasses.replace(result, val_acc_last=self.acc, val_acc_best=self.acc)


def _client(tmp: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")


def _fixed_space(tmp: Path, sr: float = 0.25) -> Path:
    path = tmp / f"fixed_{sr}.yaml"
    path.write_text(FIXED_NET.format(sr=sr))
    return path


def _pareto_tags(tmp: Path, study: optuna.Study) -> dict[str, set[int]]:
    """``"true"``/``"false"`` -> trial numbers whose run MLflow finds with that tag."""
    client = _client(tmp)
    experiment = client.get_experiment_by_name(f"archsearch/{study.study_name}")
    assert experiment is not None
    number = {t.user_attrs["mlflow_run_id"]: t.number for t in study.trials}
    return {
        value: {
            number[r.info.run_id]
            for r in client.search_runs(
                [experiment.experiment_id], filter_string=f"tags.`archsearch.pareto` = '{value}'"
            )
        }
        for value in ("true", "false")
    }


def test_val_acc_history_is_one_point_per_epoch_and_a_reused_trial_logs_one(tmp_path: Path) -> None:
    cfg = compose_sweep(tmp_path, f"sweep.space={_fixed_space(tmp_path)}", "study.n_trials=3")
    result = run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0, epochs=EPOCHS))
    client = _client(tmp_path)
    trained, *reused = result.study.trials
    history = client.get_metric_history(trained.user_attrs["mlflow_run_id"], "val_acc")
    assert [m.step for m in history] == list(range(1, EPOCHS + 1))  # no step-0 point
    assert history[-1].value == trained.user_attrs["val_acc"]
    for t in reused:
        assert t.user_attrs["reused_from"] == trained.number
        copied = client.get_metric_history(t.user_attrs["mlflow_run_id"], "val_acc")
        assert [(m.step, m.value) for m in copied] == [(EPOCHS, trained.user_attrs["val_acc"])]


def test_every_completed_run_is_tagged_on_or_off_the_front(tmp_path: Path) -> None:
    cfg = compose_sweep(tmp_path, f"sweep.space={_fixed_space(tmp_path)}", "study.n_trials=3")
    result = run_sweep(cfg, fit_fn=FixedCostFit(seconds=0.0, epochs=1))
    # Trial 0 trained the only net; the trials that reused its result are not front members.
    assert _pareto_tags(tmp_path, result.study) == {"true": {0}, "false": {1, 2}}


def test_pareto_tags_follow_a_later_trial_that_changes_the_front(tmp_path: Path) -> None:
    first = compose_sweep(tmp_path, f"sweep.space={_fixed_space(tmp_path, 0.25)}", "study.n_trials=1")
    run_sweep(first, fit_fn=ConstantFit(0.5))
    # A smaller net (squeeze ratio 0.125) that scores higher dominates trial 0.
    later = compose_sweep(
        tmp_path,
        f"sweep.space={_fixed_space(tmp_path, 0.125)}",
        "study.n_trials=2",
        "study.allow_changes=true",
    )
    result = run_sweep(later, fit_fn=ConstantFit(0.9))
    assert [t.number for t in result.front] == [1]
    assert _pareto_tags(tmp_path, result.study) == {"true": {1}, "false": {0}}


def test_sweep_prints_the_runs_table_url_and_names_the_objectives(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, color_system=None)
    cfg = compose_sweep(tmp_path, "study.n_trials=2")
    run_sweep(cfg, console=console, fit_fn=FixedCostFit(seconds=0.0, epochs=1))
    experiment = _client(tmp_path).get_experiment_by_name("archsearch/fire")
    assert experiment is not None
    # MLflow 3 opens a model-training experiment on its runs, not on the GenAI traces page.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    printed = out.getvalue()
    assert "mlflow ui --backend-store-uri sqlite:///" in printed
    # The runs table of the classic (model training) layout, not MLflow 3's GenAI pages.
    url = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    assert url in printed

    study = optuna.load_study(study_name="fire", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")
    assert study.metric_names == ["val_acc", "params", "macs"]


def test_runs_view_url_of_a_tracking_server_is_on_that_server() -> None:
    assert runs_view_url("http://mlflow.example.org:5000/", "7") == (
        "http://mlflow.example.org:5000/#/experiments/7/runs?workflowType=machine_learning"
    )
    assert runs_view_url("sqlite:////x/mlflow.db", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    )


def test_the_ui_bundled_with_mlflow_reads_the_workflow_type_query() -> None:
    """The query the URL carries is the one this MLflow's UI reads (a renamed key would be ignored)."""
    import mlflow

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    if not bundle.is_dir():
        pytest.skip("this MLflow install has no UI bundle")
    text = "".join(p.read_text(errors="ignore") for p in bundle.glob("main.*.js"))
    assert 'get("workflowType")' in text and '"machine_learning"' in text


def test_a_new_store_keeps_its_default_experiment_in_its_own_project(tmp_path: Path) -> None:
    """New stores are copies of a cached empty one; its Default experiment must not name the
    folder of the project the template was first made in."""
    from mlflow import MlflowClient

    from archsearch.results.tracking import Tracker

    for name in ("first", "second"):
        uri = f"sqlite:///{tmp_path / name / 'mlflow.db'}"
        Tracker(uri, "archsearch/x", tmp_path / name / "artifacts")
        default = MlflowClient(tracking_uri=uri).get_experiment("0")
        assert default.artifact_location.startswith(str((tmp_path / name).resolve())), (
            default.artifact_location
        )
