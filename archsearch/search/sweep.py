"""Run a search: a study whose trials sample, cost, bound, train and log networks, then the export.

:func:`run_search` is the one entry point, for the CLI and for notebooks alike: typed
settings and real objects in (a search space, a dataset, an Optuna sampler, a storage), a
:class:`SearchResult` out. Every setting has been checked before the storage or MLflow is
written to (constructing :class:`~archsearch.search.settings.SearchSettings` checks it; the
backends are checked here).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from archsearch.errors import ConfigError, WorkerFault
from archsearch.results.commands import finalize_command, retrain_command
from archsearch.results.publish import log_front
from archsearch.results.tracking import Tracker
from archsearch.search.cost_aware import CostAwareSampler
from archsearch.search.definition import check_definition, study_definition
from archsearch.search.fidelity import RungInformedSampler, SuccessiveHalving
from archsearch.search.objective import Objective, TrialFailed
from archsearch.search.preflight import check_some_trial_ran, preflight
from archsearch.search.recovery import close_cut_short_run, close_orphan_runs
from archsearch.search.samplers import SamplerArg, SamplerFactory, bind_sampler, default_sampler, make_sampler
from archsearch.search.settings import SearchSettings
from archsearch.search.study import check_backends, finished_trials, open_study, quiet_libraries
from archsearch.search.supernet_fidelity import SupernetFidelity
from archsearch.search.warm_start import enqueue_warm_start
from archsearch.search.workers import (
    WORKERS_STARTED,
    StaleTrialCallback,
    run_trials,
    sigint_ignored,
    worker_seed,
)
from archsearch.storage.database import StorageLock, describe_url, mask_passwords, open_storage

if TYPE_CHECKING:
    from archsearch.hardware.profile import HardwareProfile
    from archsearch.search.space import SearchSpace

__all__ = ["SamplerArg", "SamplerFactory", "SearchResult", "default_sampler", "retrain_command", "run_search"]


@dataclass
class SearchResult:
    """What a search leaves: the study, its front (complete trials with spec, values, costs,
    weights path and MLflow run id in ``user_attrs``) and the exported files."""

    study: optuna.Study
    front: list[FrozenTrial]
    export_dir: Path
    files: dict[str, Path]
    parent_run_id: str
    seconds: float
    settings: SearchSettings = field(repr=False, default_factory=SearchSettings)

    @property
    def members(self) -> list[dict[str, Any]]:
        """One plain record per front member: trial, values by metric, costs, spec, weights, run."""
        names = self.settings.metric_names
        return [
            {
                "trial": t.number,
                "values": dict(zip(names, t.values or [], strict=False)),
                "costs": dict(t.user_attrs.get("costs") or {}),
                "spec": t.user_attrs.get("spec"),
                "spec_hash": t.user_attrs.get("spec_hash"),
                "weights": t.user_attrs.get("weights"),
                "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            }
            for t in self.front
        ]


def run_search(
    space: SearchSpace,
    data: Any,
    settings: SearchSettings | None = None,
    *,
    sampler: SamplerArg = None,
    storage: str | optuna.storages.RDBStorage | None = None,
    hardware: HardwareProfile | None = None,
    fit_fn: Callable[..., Any] | None = None,
    console: Any = None,
    config_yaml: str | None = None,
    data_name: str | None = None,
    data_config: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> SearchResult:
    """Run (or resume, or join) a search and export its front.

    Args:
        space: what to search (:func:`archsearch.search.space.load_space`, or a space object).
        data: the dataset (:func:`archsearch.data.datasets.load_dataset`): its ``shape`` and
            ``num_classes`` shape the sampled networks.
        settings: objectives, constraints, study, trainer, fidelity, tracking, export (or defaults).
        sampler: an Optuna sampler, or a function making one from this worker's seed; None is
            :func:`default_sampler` (cost-aware where the objectives allow, else TPE).
        storage: a storage URL or an ``optuna.storages.RDBStorage`` (overrides ``study.storage``).
        hardware: the profile ``latency_est_ms`` is estimated on (None: ``hardware=auto``, this
            host calibrated for ``settings.latency`` once and cached; see archsearch.hardware.auto).
        fit_fn: replaces :func:`archsearch.train.fit.fit` (same signature; tests pass a fake).
        console: a ``rich.console.Console`` for progress; a quiet one if None.
        config_yaml: the study's config as logged (the CLI's composed one; None: the settings).
        data_name: the ``data=`` config the retrain commands start from (``data_config["name"]``).
        data_config: the ``data`` mapping ``data`` was loaded from with ``settings.seed``; without
            it (a dataset built from arrays, say) no retrain command is printed: none could work.
        callbacks: called with the study and each finished trial, as ``study.optimize`` calls
            them; ``study.stop()`` in one ends this process's search (the front is exported).

    Returns the study, its front and the exported files.

    Raises:
        ConfigError: a backend does not answer, or the study exists with other objectives.
        SearchFailed: every trial of the study failed (exported and logged first).
    """
    from rich.console import Console

    from archsearch.hardware.auto import auto_profile_for
    from archsearch.train.fit import fit

    settings = settings or SearchSettings()
    console = console or Console(quiet=True)
    if storage is not None:
        url = storage if isinstance(storage, str) else str(storage.url)
        settings = _with_storage(settings, url)
    check_backends(settings)
    seeds = preflight(settings, space, sampler, console.print)
    hardware = hardware or auto_profile_for(settings.latency)
    fidelity = SuccessiveHalving.from_settings(
        settings.fidelity, settings.trainer.epochs, settings.objectives
    )
    # Built before anything is written: a space the supernet cannot share is refused here.
    supernet = SupernetFidelity.for_search(settings, space, data, hardware, log=console.print)
    name = data_name or str((data_config or {}).get("name", "")) or str(getattr(data, "name", ""))
    run = _Run(
        settings=settings,
        space=space,
        data=data,
        hardware=hardware,
        fit_fn=fit_fn or fit,
        console=console,
        config_yaml=_settings_yaml(settings) if config_yaml is None else config_yaml,
        fidelity=fidelity,
        supernet=supernet,
        storage=storage if isinstance(storage, optuna.storages.RDBStorage) else None,
        retrain=retrain_command(settings, data_config, data_name or ""),
        finalize=finalize_command(settings, data_config, data_name or ""),
        data_name=name,
        callbacks=tuple(callbacks),
        seeds=seeds,
    )
    with quiet_libraries():
        return run.run(sampler)


def _settings_yaml(settings: SearchSettings) -> str:
    import yaml

    return mask_passwords(str(yaml.safe_dump(settings.to_mapping(), sort_keys=False)))


def _with_storage(settings: SearchSettings, url: str) -> SearchSettings:
    import dataclasses

    if not url:
        raise ConfigError("storage must be a database URL such as sqlite:///optuna.db or an RDBStorage.")
    return dataclasses.replace(settings, study=dataclasses.replace(settings.study, storage=url))


@dataclass
class _Run:
    """One process's part in a search: opened under the storage lock, run, then exported."""

    settings: SearchSettings
    space: SearchSpace
    data: Any
    hardware: HardwareProfile
    fit_fn: Callable[..., Any]
    console: Any
    config_yaml: str
    fidelity: SuccessiveHalving | None
    supernet: SupernetFidelity | None
    storage: optuna.storages.RDBStorage | None
    retrain: str
    finalize: str
    data_name: str
    callbacks: tuple[Callable[[optuna.Study, FrozenTrial], None], ...] = ()
    seeds: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # warm start (new study only)
    tracker: Tracker | None = None

    def run(self, sampler: SamplerArg) -> SearchResult:
        from archsearch.results.terminal import SweepReporter

        settings = self.settings
        lock = StorageLock(settings.storage_url, outage_s=settings.study.storage_outage_s)
        on_stale = StaleTrialCallback(settings.study.retries, cleanup=self._close_run)
        with lock:
            # One worker at a time creates tables, the study and its parent run, so none is made twice.
            storage = self.storage or open_storage(
                settings.storage_url,
                settings.study.heartbeat_interval,
                settings.study.grace_period,
                on_stale,
                outage_s=settings.study.storage_outage_s,
            )
            study = open_study(settings, storage=storage)
            check_definition(
                study,
                study_definition(settings, self.space, self.data),
                settings.study.allow_changes,
                self.console.print,
            )
            enqueue_warm_start(study, self.seeds, self.console.print)
            worker = self._register(study)
            if "finalize_command" not in study.user_attrs:
                study.set_user_attr("finalize_command", self.finalize)
            tracker = self.tracker = Tracker(
                settings.tracking.resolved_uri,
                experiment=f"archsearch/{settings.study.name}",
                artifact_dir=settings.tracking.dir / "artifacts",
                enabled=settings.tracking.enabled,
            )
            parent = tracker.start_study(settings.study.name, self._study_params(study), self.config_yaml)
            close_orphan_runs(tracker, study)  # left RUNNING by a fault MLflow could not record
        study.sampler = self._sampler(sampler, worker, resumed=bool(study.trials))
        reporter = SweepReporter(self.console, settings.metric_names, settings.study.n_trials, self.hardware)
        objective = Objective(
            settings,
            self.space,
            self.data,
            hardware=self.hardware,
            tracker=tracker,
            config_yaml=self.config_yaml,
            fit_fn=self.fit_fn,
            fidelity=self.fidelity,
            scorer=self.supernet,
        )
        started = time.perf_counter()
        status = "FINISHED"
        try:
            if self.supernet is not None:
                self.supernet.prepare(study, lock, tracker, parent)
            self._trials(study, objective, reporter, storage, lock, on_stale)
        except KeyboardInterrupt:
            status = "KILLED"
            self.console.print(
                "interrupted: the running trial is marked failed and queued to run again on the next start"
            )
            raise
        except WorkerFault:
            status = "LOST"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            exported = self._export(study, parent, lock, status)
        check_some_trial_ran(study)
        seconds = time.perf_counter() - started
        reporter.finish(
            study,
            exported,
            seconds,
            storage=settings.storage_url,
            tracking_uri=settings.tracking.resolved_uri,
        )
        return SearchResult(
            study, exported.front, exported.directory, exported.files, parent, seconds, settings
        )

    def _sampler(self, sampler: SamplerArg, worker: int, resumed: bool) -> optuna.samplers.BaseSampler:
        """This worker's sampler, bound to the search; wrapped to learn from pruned trials."""
        made = bind_sampler(
            make_sampler(sampler, worker_seed(self.settings.seed, worker), self.settings.objectives),
            self.settings,
            self.space,
            self.data,
            self.hardware,
            resumed=isinstance(sampler, optuna.samplers.BaseSampler) and resumed,
        )
        if (
            self.fidelity is not None
            and self.fidelity.settings.learn_from_pruned
            # A grid learns nothing; the cost-aware sampler reads pruned trials' rungs itself.
            and not isinstance(made, optuna.samplers.GridSampler | CostAwareSampler)
        ):
            return RungInformedSampler(made)
        return made

    def _register(self, study: optuna.Study) -> int:
        """Record what the study is (first worker only) and count this worker in; its index."""
        if "objectives" not in study.user_attrs:
            study.set_user_attr("objectives", self.settings.metric_names)
            study.set_user_attr("space", self.space.name)
            study.set_user_attr("space_hash", self.space.hash)
            study.set_user_attr("retrain_command", self.retrain)
        # Names the objectives in Optuna's own tools (optuna-dashboard, plots) instead of "Objective 0".
        if study.metric_names is None:
            study.set_metric_names(list(self.settings.metric_names))
        worker = int(study.user_attrs.get(WORKERS_STARTED, 0))
        study.set_user_attr(WORKERS_STARTED, worker + 1)
        return worker

    def _study_params(self, study: optuna.Study) -> dict[str, Any]:
        settings = self.settings
        return {
            "space": self.space.name,
            "objectives": dict(settings.objectives),
            "constraints": {c.metric: {"max": c.max, "min": c.min} for c in settings.constraints},
            "n_trials": settings.study.n_trials,
            "sampler": type(study.sampler).__name__,
            "data": self.data_name,
            "storage": describe_url(settings.storage_url),
        }

    def _trials(
        self,
        study: optuna.Study,
        objective: Objective,
        reporter: Any,
        storage: optuna.storages.RDBStorage,
        lock: StorageLock,
        on_stale: StaleTrialCallback,
    ) -> None:
        settings = self.settings
        done = finished_trials(study)
        if done >= settings.study.n_trials:
            self.console.print(
                f"study {settings.study.name!r} already has {settings.study.n_trials} finished trials; "
                "raise study.n_trials to run more."
            )
            return
        reporter.start(study, done)
        run_trials(
            study,
            objective,
            storage=storage,
            lock=lock,
            n_trials=settings.study.n_trials,
            timeout=settings.study.timeout,
            catch=(TrialFailed,),
            callbacks=[
                lambda st, t: reporter.trial_done(st, t, objective.outcomes.pop(t.number, {})),
                *self.callbacks,
            ],
            on_stale=on_stale,
            on_wait=lambda b: self.console.print(
                f"no trial left to take; waiting for {b.running} running in other workers "
                f"(a dead worker's trial is retried after {settings.study.grace_period}s without heartbeat)"
            ),
        )

    def _export(self, study: optuna.Study, parent: str, lock: StorageLock, status: str) -> Any:
        """Export the front; every worker rewrites it, so one writes at a time and Ctrl-C waits."""
        from archsearch.results.export import export_study
        from archsearch.results.onnx_export import add_onnx

        assert self.tracker is not None
        if status == "LOST":
            # A fault (the study storage unreachable, a full disk): nothing can be exported now,
            # and MLflow may fail too; the next start closes what is left open.
            with contextlib.suppress(Exception):
                self.tracker.end_study("FAILED")
            lock.close()
            return None
        try:
            with sigint_ignored(), lock:
                exported = export_study(study, self.settings.export_dir, plots=self.settings.export.plots)
                if self.settings.export.onnx:  # trained members as ONNX (+ int8), checked on real inputs
                    add_onnx(exported, self.data, self.settings.export.int8)
                log_front(
                    self.tracker,
                    parent,
                    study,
                    exported,
                    log_weights=self.settings.tracking.log_weights,
                    trials=finished_trials(study),
                )
                self.tracker.end_study(status)
        finally:
            lock.close()
        return exported

    def _close_run(self, _study: optuna.Study, trial: FrozenTrial) -> None:
        if self.tracker is not None:
            close_cut_short_run(self.tracker, trial)
