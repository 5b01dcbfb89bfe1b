"""Publishing a search's front to MLflow: which runs are members, their weights, the export files.

Kept with the other results code so that the search decides and results publish: the search
calls :func:`log_front` after each export with what it knows (the front, the trial count).
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from archsearch.results.export import ExportResult
from archsearch.results.tracking import Tracker

__all__ = ["log_front"]


def log_front(
    tracker: Tracker,
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
        weights = t.user_attrs.get("weights")
        if member and log_weights == "pareto" and weights and Path(weights).is_file():
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
