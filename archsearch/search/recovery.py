"""What a fault leaves behind, and how a worker and the next start put it right.

* :func:`disk_full` tells a full disk (``ENOSPC``, or SQLite's "database or disk is full" under
  MLflow or Optuna) from a failure of the architecture being trained, so that the trial is
  retried rather than recorded as a failed architecture.
* :func:`close_cut_short_run` closes the MLflow run of a trial whose worker died or met a
  fault (FAILED) or was interrupted (KILLED); it is the cleanup of the stale-trial callback.
* :func:`close_orphan_runs`, at every start, closes the MLflow runs of trials Optuna has
  finished but whose run stayed RUNNING because MLflow could not be written at that moment
  (a full disk): nothing is left RUNNING once the next start has run.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.errors import DiskFull, causes

if TYPE_CHECKING:
    from archsearch.results.tracking import TrialTracker

__all__ = ["close_cut_short_run", "close_orphan_runs", "disk_full"]

_FULL_TEXTS = ("database or disk is full", "no space left on device")


def disk_full(exc: BaseException) -> DiskFull | None:
    """A :class:`DiskFull` naming what could not be written if ``exc`` (or its cause) is a full disk."""
    for current in causes(exc):
        full = isinstance(current, OSError) and current.errno == errno.ENOSPC
        if full or any(text in str(current).lower() for text in _FULL_TEXTS):
            where = getattr(current, "filename", None)
            place = f" writing {where}" if where else " (MLflow's or the study's database)"
            return DiskFull(
                f"no space left on the device{place}; the running trial runs again on the next "
                "start: free some space and run the same command."
            )
    return None


def close_cut_short_run(tracker: TrialTracker, trial: FrozenTrial) -> None:
    """Close the MLflow run of a trial whose worker died (FAILED) or was interrupted (KILLED)."""
    run_id = str(trial.user_attrs.get("mlflow_run_id", ""))
    if trial.user_attrs.get("state") == "interrupted":
        tracker.set_tags(run_id, {"archsearch.state": "interrupted"})
        tracker.end_trial(run_id, "KILLED")
        return
    reason = (
        "a fault of the machine stopped its worker (a full disk); it runs again"
        if trial.user_attrs.get("state") == "fault"
        else "its worker stopped sending heartbeats (killed or lost)"
    )
    tracker.set_tags(run_id, {"archsearch.state": "failed", "archsearch.fail_reason": reason})
    tracker.end_trial(run_id, "FAILED")


def close_orphan_runs(tracker: TrialTracker, study: optuna.Study) -> int:
    """Close the RUNNING MLflow runs of trials Optuna has finished; how many were closed.

    A COMPLETE trial's run becomes FINISHED, a PRUNED one's KILLED, a FAILED one's as
    :func:`close_cut_short_run` closes it. Runs of trials still RUNNING in Optuna (live
    workers) are not touched.
    """
    open_runs = tracker.trial_runs(study.study_name, running_only=True)
    if not open_runs:
        return 0
    closed = 0
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for trial in study.get_trials(deepcopy=False, states=finished):
        run_id = open_runs.get(trial.number)
        if run_id is None or trial.user_attrs.get("mlflow_run_id", run_id) != run_id:
            continue
        if trial.state == TrialState.FAIL:
            close_cut_short_run(tracker, trial)
        else:
            tracker.end_trial(run_id, "FINISHED" if trial.state == TrialState.COMPLETE else "KILLED")
        closed += 1
    return closed
