"""One process's part in a search: open it, run trials until the budget is spent, publish the front.

:class:`SearchSession` is what :func:`archsearch.search.sweep.run_search` runs once every check
has passed (:func:`archsearch.search.preflight.prepare`). Every worker of a study runs one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from archsearch.errors import ConfigError, WorkerFault
from archsearch.results.members import best_trial, load_member, member_records
from archsearch.results.publish import publish_front
from archsearch.search.objective import Objective, TrialFailed
from archsearch.search.opening import Opened, open_search, search_lock
from archsearch.search.recovery import close_cut_short_run
from archsearch.search.samplers import SamplerArg, search_sampler
from archsearch.search.settings import SearchSettings
from archsearch.search.study import check_some_trial_ran, finished_trials
from archsearch.search.workers import StaleTrialCallback, run_trials, sigint_ignored, worker_seed

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from archsearch.data.base import DatasetLike
    from archsearch.hardware.profile import HardwareProfile
    from archsearch.results.commands import Commands
    from archsearch.results.export import ExportResult
    from archsearch.results.terminal import SearchReporter
    from archsearch.search.fidelity import SuccessiveHalving
    from archsearch.search.space import SearchSpace
    from archsearch.search.supernet_fidelity import SupernetFidelity
    from archsearch.storage.database import StorageLock
    from archsearch.train.fit import FitFn

__all__ = ["SearchResult", "SearchSession"]


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
    #: The training split's per-channel (mean, std), which :meth:`load_member` builds into the net.
    normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = field(repr=False, default=None)

    @property
    def members(self) -> list[dict[str, Any]]:
        """One plain record per front member (:func:`~archsearch.results.members.member_records`):
        trial, values by metric, architecture params, costs, spec, net file, weights, run."""
        return member_records(self.front, self.settings.metric_names, self.export_dir)

    def best_member(self, objective: str = "val_acc") -> dict[str, Any]:
        """The member best on ``objective`` (one of the study's objectives; ties: fewer params)."""
        chosen = best_trial(self.front, objective, self.settings.metric_names, self.settings.directions)
        return next(m for m in self.members if m["trial"] == chosen.number)

    def load_member(self, trial: int | None = None, *, objective: str = "val_acc") -> nn.Module:
        """A member's network with its trained weights and the input normalisation built in.

        Args:
            trial: the member's trial number; None: the best member on ``objective``.

        The module takes images as the data set's files hold them (it normalises them as the
        trainer did), in eval mode on the CPU. A ConfigError names a trial that is not a member
        or has no weights file.
        """
        if trial is None:
            chosen = best_trial(self.front, objective, self.settings.metric_names, self.settings.directions)
        else:
            found = [t for t in self.front if t.number == trial]
            if not found:
                numbers = sorted(t.number for t in self.front)
                raise ConfigError(f"trial {trial} is not a front member; the members are trials {numbers}.")
            chosen = found[0]
        mean, std = self.normalisation or (None, None)
        return load_member(chosen, self.export_dir, mean=mean, std=std)


@dataclass
class SearchSession:
    """One process's part in a search: opened under the storage lock, run, then published."""

    settings: SearchSettings
    space: SearchSpace
    data: DatasetLike
    hardware: HardwareProfile
    fit_fn: FitFn
    reporter: SearchReporter
    log: Callable[[str], Any]
    config_yaml: str
    fidelity: SuccessiveHalving | None
    supernet: SupernetFidelity | None
    storage: optuna.storages.RDBStorage | None
    commands: Commands
    data_name: str
    callbacks: tuple[Callable[[optuna.Study, FrozenTrial], None], ...] = ()
    seeds: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # warm start (new study only)
    opened: Opened | None = None

    def run(self, sampler: SamplerArg) -> SearchResult:
        settings = self.settings
        lock = search_lock(settings)
        on_stale = StaleTrialCallback(settings.study.retries, cleanup=self._close_run)
        with lock:
            opened = self.opened = open_search(
                settings,
                self.space,
                self.data,
                storage=self.storage,
                on_stale=on_stale,
                seeds=self.seeds,
                commands=self.commands,
                sampler=lambda worker, resumed: self._sampler(sampler, worker, resumed),
                config_yaml=self.config_yaml,
                data_name=self.data_name,
                log=self.log,
                hardware=self.hardware,
            )
        study, tracker = opened.study, opened.tracker
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
            provenance=opened.provenance,
            texts=opened.texts,
        )
        started = time.perf_counter()
        status = "FINISHED"
        try:
            if self.supernet is not None:
                self.supernet.prepare(study, lock, tracker, opened.parent)
            self._trials(objective, lock, on_stale)
        except KeyboardInterrupt:
            status = "KILLED"
            self.log(
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
            exported = self._publish(lock, status)
        check_some_trial_ran(study)
        assert exported is not None  # only a worker fault leaves nothing published, and it re-raised
        seconds = time.perf_counter() - started
        self.reporter.finish(
            study,
            exported,
            seconds,
            storage=settings.storage_url,
            tracking_uri=settings.tracking.resolved_uri,
        )
        return SearchResult(
            study,
            exported.front,
            exported.directory,
            exported.files,
            opened.parent,
            seconds,
            settings,
            normalisation=(tuple(self.data.mean), tuple(self.data.std)),
        )

    def _sampler(self, sampler: SamplerArg, worker: int, resumed: bool) -> optuna.samplers.BaseSampler:
        return search_sampler(
            sampler,
            worker_seed(self.settings.seed, worker),
            self.settings,
            self.space,
            self.data,
            self.hardware,
            fidelity=self.fidelity,
            resumed=resumed,
        )

    def _trials(self, objective: Objective, lock: StorageLock, on_stale: StaleTrialCallback) -> None:
        assert self.opened is not None
        settings, study = self.settings, self.opened.study
        done = finished_trials(study)
        if done >= settings.study.n_trials:
            self.log(
                f"study {settings.study.name!r} already has {settings.study.n_trials} finished trials; "
                "raise study.n_trials to run more."
            )
            return
        reporter = self.reporter
        reporter.start(study, done)
        run_trials(
            study,
            objective,
            storage=self.opened.storage,
            lock=lock,
            n_trials=settings.study.n_trials,
            timeout=settings.study.timeout,
            max_epochs=settings.study.max_epochs,
            catch=(TrialFailed,),
            callbacks=[
                lambda st, t: reporter.trial_done(st, t, objective.outcomes.pop(t.number, {})),
                *self.callbacks,
            ],
            on_stale=on_stale,
            on_wait=lambda b: self.log(
                f"no trial left to take; waiting for {b.running} running in other workers "
                f"(a dead worker's trial is retried after {settings.study.grace_period}s without heartbeat)"
            ),
        )

    def _publish(self, lock: StorageLock, status: str) -> ExportResult | None:
        """Publish the front; every worker rewrites it, so one writes at a time and Ctrl-C waits."""
        assert self.opened is not None
        study, tracker, settings = self.opened.study, self.opened.tracker, self.settings
        if status == "LOST":
            # A fault (the study storage unreachable, a full disk): nothing can be exported now,
            # and MLflow may fail too; the next start closes what is left open.
            with contextlib.suppress(Exception):
                tracker.end_study("FAILED")
            lock.close()
            return None
        try:
            with sigint_ignored(), lock:
                exported = publish_front(
                    study,
                    settings.export_dir,
                    tracker=tracker,
                    parent=self.opened.parent,
                    data=self.data,
                    plots=settings.export.plots,
                    onnx=settings.export.onnx,
                    int8=settings.export.int8,
                    log_weights=settings.tracking.log_weights,
                    trials=finished_trials(study),
                    tracking_dir=settings.tracking.dir,
                )
                tracker.end_study(status)
        finally:
            lock.close()
        return exported

    def _close_run(self, _study: optuna.Study, trial: FrozenTrial) -> None:
        if self.opened is not None:
            close_cut_short_run(self.opened.tracker, trial)
