"""Publishing a search's front: the export files, ONNX, and MLflow's view of which runs are members.

The one home of publishing, so that the search decides and results publish: the search calls
:func:`publish_front` (export, then :func:`log_front`) with what it knows after its trials.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from archsearch.results.export import ExportResult, export_study
from archsearch.results.relocate import weights_file
from archsearch.results.tracking import TrialTracker

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike

__all__ = ["log_front", "publish_finalized", "publish_front"]


def publish_front(
    study: optuna.Study,
    export_dir: Path,
    *,
    tracker: TrialTracker,
    parent: str,
    data: DatasetLike,
    plots: bool,
    onnx: bool,
    int8: bool,
    log_weights: str,
    trials: int,
    tracking_dir: Path | None = None,
) -> ExportResult:
    """Export the study's front (pareto.csv/json, nets, weights, plots; ONNX when asked) to
    ``export_dir`` and tag its runs in MLflow (:func:`log_front`). The export is rewritten whole.

    Args:
        data: the search's dataset: ONNX members are checked on its real inputs.
        plots, onnx, int8: ``export.plots``, ``export.onnx``, ``export.int8``.
        log_weights: ``tracking.log_weights``.
        trials: the study's finished trials, logged on the parent run.
        tracking_dir: ``tracking.dir``, which the exported finalize command names.
    """
    exported = export_study(study, export_dir, plots=plots, tracking_dir=tracking_dir)
    if onnx:  # trained members as ONNX (+ int8), checked on real inputs
        from archsearch.results.onnx_export import add_onnx

        add_onnx(exported, data, int8)
    log_front(tracker, parent, study, exported, log_weights=log_weights, trials=trials)
    return exported


def publish_finalized(
    study: optuna.Study,
    export_dir: Path,
    *,
    tracker: TrialTracker,
    parent: str,
    runs: Mapping[int, str],
    plots: bool,
    tracking_dir: Path | None = None,
) -> ExportResult:
    """Export the finalized front, tag each finalized member's run on or off it, put the export on
    the finalize parent run and end that run.

    Args:
        runs: the MLflow run of each finalized member, by search trial number.
        tracking_dir: ``tracking.dir``, which the exported finalize command names.
    """
    exported = export_study(study, export_dir, plots=plots, tracking_dir=tracking_dir)
    on_front = {t.number for t in exported.front}
    for trial, run_id in runs.items():
        tracker.set_tags(run_id, {"archsearch.pareto": str(trial in on_front).lower()})
    for path in exported.files.values():
        tracker.log_artifact(parent, path, "pareto")
    tracker.log_metrics(parent, {"finalized_front_size": float(len(exported.front))})
    tracker.end_study("FINISHED")
    return exported


def log_front(
    tracker: TrialTracker,
    parent: str,
    study: optuna.Study,
    exported: ExportResult,
    *,
    log_weights: str,
    trials: int,
) -> None:
    """Tag every completed trial's run ``archsearch.pareto`` true or false, log members' weights, put
    the exports on the parent run, and keep the experiment id for the printed runs URL.

    Args:
        log_weights: ``tracking.log_weights``; ``pareto`` logs each member's weights file.
        trials: the study's finished trials, logged on the parent run.
    """
    if not tracker.enabled:
        return
    on_front = {t.number for t in exported.front}
    before = set(study.user_attrs.get("pareto_members", []))
    # A tagged run keeps its tag until its membership changes (older studies tagged members only).
    tagged = set(study.user_attrs.get("pareto_tagged", before))
    changed = on_front ^ before
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = t.user_attrs.get("mlflow_run_id")
        if not run_id or (t.number in tagged and t.number not in changed):
            continue
        member = t.number in on_front
        tracker.set_tags(run_id, {"archsearch.pareto": "true" if member else "false"})
        tagged.add(t.number)
        weights = weights_file(t.user_attrs.get("weights"), exported.directory)
        if member and log_weights == "pareto" and weights is not None and weights.is_file():
            tracker.log_artifact(run_id, weights, "weights")
    for key, value in (
        ("pareto_members", sorted(on_front)),
        ("pareto_tagged", sorted(tagged)),
        ("mlflow_experiment_id", tracker.experiment_id),
    ):
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    for path in exported.files.values():
        tracker.log_artifact(parent, path, "pareto")
    tracker.log_metrics(parent, {"front_size": float(len(exported.front)), "trials": float(trials)})
