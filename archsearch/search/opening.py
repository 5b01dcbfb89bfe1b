"""Opening a search: the study, this worker's place in it, and the MLflow parent run.

Run under the storage lock, so that one worker at a time creates the tables, the study and
its parent run and none is made twice: the study is created, resumed or joined, its
definition checked against the stored one, the warm start enqueued (a new study only), the
worker counted in, the reproduce commands stored, and the parent run started and tagged with
this worker's provenance (also stored on the study: user attr ``provenance``); runs a fault
left RUNNING are closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from archsearch.results.commands import Commands
from archsearch.results.net_files import TrialTexts
from archsearch.results.provenance import PROVENANCE_ATTR, Provenance, gather_provenance
from archsearch.results.tracking import TrialTracker, open_tracker
from archsearch.search.definition import check_definition, study_definition
from archsearch.search.recovery import close_orphan_runs
from archsearch.search.study import open_study
from archsearch.search.warm_start import enqueue_warm_start
from archsearch.search.workers import WORKERS_STARTED
from archsearch.storage.database import StorageLock, describe_url, open_storage

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike
    from archsearch.hardware.profile import HardwareProfile
    from archsearch.search.settings import SearchSettings
    from archsearch.search.space import SearchSpace

__all__ = ["Opened", "open_search", "search_lock"]


@dataclass(frozen=True)
class Opened:
    """A search as this worker joined it."""

    study: optuna.Study
    storage: optuna.storages.RDBStorage
    worker: int  # this worker's index among those that joined the study
    tracker: TrialTracker
    parent: str  # the MLflow parent run's id
    provenance: Provenance  # this worker's: versions, commit, device, hardware profile
    texts: TrialTexts  # what each trial's run logs: its config.yaml and net.yaml


def open_search(
    settings: SearchSettings,
    space: SearchSpace,
    data: DatasetLike,
    *,
    storage: optuna.storages.RDBStorage | None,
    on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None,
    seeds: list[tuple[str, dict[str, Any]]],
    commands: Commands,
    sampler: Callable[[int, bool], optuna.samplers.BaseSampler],
    config_yaml: str,
    data_name: str,
    log: Callable[[str], Any],
    hardware: HardwareProfile | None = None,
) -> Opened:
    """Create, resume or join the study and start its parent run; call under the storage lock.

    Args:
        storage: an opened storage; None opens ``settings.storage_url`` with heartbeats.
        on_stale: called for a trial whose worker stopped beating (Optuna's failed-trial callback).
        seeds: the warm start's trials, enqueued into a new study only.
        sampler: makes this worker's sampler from its index and whether the study has trials.
        config_yaml: the study's config as logged on the parent run.
        data_name: the data set's name, a parameter of the parent run.
        hardware: the profile ``latency_est_ms`` is priced on, named in the provenance.
    """
    study_settings = settings.study
    storage = storage or open_storage(
        settings.storage_url,
        study_settings.heartbeat_interval,
        study_settings.grace_period,
        on_stale,
        outage_s=study_settings.storage_outage_s,
    )
    study = open_study(settings, storage=storage)
    check_definition(study, study_definition(settings, space, data), study_settings.allow_changes, log)
    enqueue_warm_start(study, seeds, log)
    worker = _register(study, settings, space, commands)
    provenance = gather_provenance(hardware, settings.trainer.device)
    if study.user_attrs.get(PROVENANCE_ATTR) != provenance.to_dict():  # the latest worker's
        study.set_user_attr(PROVENANCE_ATTR, provenance.to_dict())
    study.sampler = sampler(worker, bool(study.trials))
    tracker = open_tracker(
        settings.tracking.resolved_uri,
        f"archsearch/{study_settings.name}",
        settings.tracking.dir / "artifacts",
        enabled=settings.tracking.enabled,
    )
    params = _study_params(study, settings, space, data_name)
    parent = tracker.start_study(study_settings.name, params, config_yaml)
    tracker.set_tags(parent, provenance.tags())
    close_orphan_runs(tracker, study)  # left RUNNING by a fault MLflow could not record
    texts = TrialTexts(study_settings.name, config_yaml, commands.retrain, settings.export_dir)
    return Opened(study, storage, worker, tracker, parent, provenance, texts)


def _register(study: optuna.Study, settings: SearchSettings, space: SearchSpace, commands: Commands) -> int:
    """Record what the study is (first worker only) and count this worker in; its index."""
    if "objectives" not in study.user_attrs:
        study.set_user_attr("objectives", settings.metric_names)
        study.set_user_attr("space", space.name)
        study.set_user_attr("space_hash", space.hash)
        study.set_user_attr("retrain_command", commands.retrain)
    # Names the objectives in Optuna's own tools (optuna-dashboard, plots) instead of "Objective 0".
    if study.metric_names is None:
        study.set_metric_names(list(settings.metric_names))
    worker = int(study.user_attrs.get(WORKERS_STARTED, 0))
    study.set_user_attr(WORKERS_STARTED, worker + 1)
    if "finalize_command" not in study.user_attrs:
        study.set_user_attr("finalize_command", commands.finalize)
    return worker


def _study_params(
    study: optuna.Study, settings: SearchSettings, space: SearchSpace, data_name: str
) -> dict[str, Any]:
    return {
        "space": space.name,
        "objectives": dict(settings.objectives),
        "constraints": {c.metric: {"max": c.max, "min": c.min} for c in settings.constraints},
        "n_trials": settings.study.n_trials,
        "sampler": type(study.sampler).__name__,
        "data": data_name,
        "storage": describe_url(settings.storage_url),
    }


def search_lock(settings: SearchSettings) -> StorageLock:
    """The lock every worker of the study takes to open it, take a trial, or publish the front."""
    return StorageLock(settings.storage_url, outage_s=settings.study.storage_outage_s)
