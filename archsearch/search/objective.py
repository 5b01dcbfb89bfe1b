"""The per-trial pipeline: sample -> validate -> cost -> constraints (before training) -> train -> values.

An infeasible net is not trained; its violations go to ``trial.set_constraint`` so the
sampler learns. Every trial is an MLflow child run under the study's parent run.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.errors import ArchsearchError, WorkerFault
from archsearch.net.cost import analyze
from archsearch.results.relocate import stored_path
from archsearch.results.tracking import STUDY_TAG
from archsearch.search.recovery import disk_full
from archsearch.search.settings import RESULT_METRICS, TRAINED_METRICS
from archsearch.storage.database import set_user_attrs

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike
    from archsearch.hardware.profile import HardwareProfile
    from archsearch.net.spec import NetSpec
    from archsearch.results.net_files import TrialTexts
    from archsearch.results.provenance import Provenance
    from archsearch.results.tracking import TrialTracker
    from archsearch.search.fidelity import RungDecision, SuccessiveHalving
    from archsearch.search.settings import SearchSettings
    from archsearch.search.space import SearchSpace
    from archsearch.train.fit import FitFn

__all__ = ["Objective", "TrialFailed"]


class TrialFailed(Exception):
    """Raised after a trial's failure has been recorded, so Optuna marks it FAIL and goes on."""


class Objective:
    """The per-trial pipeline. Plain data in, objective values out; everything is logged."""

    def __init__(
        self,
        settings: SearchSettings,
        space: SearchSpace,
        data: DatasetLike,
        *,
        hardware: HardwareProfile,
        tracker: TrialTracker,
        config_yaml: str,
        fit_fn: FitFn,
        fidelity: SuccessiveHalving | None = None,
        scorer: Callable[[NetSpec], dict[str, Any]] | None = None,
        provenance: Provenance | None = None,
        texts: TrialTexts | None = None,
    ) -> None:
        self.settings = settings
        self.space = space
        self.data = data
        self.hardware = hardware
        self.tracker = tracker
        self.seed = settings.seed
        self.config_yaml = config_yaml
        #: What happened in each trial this process ran (state, metrics, reason, seconds),
        #: read by the progress callback once Optuna has recorded the trial.
        self.outcomes: dict[int, dict[str, Any]] = {}
        self.fit_fn = fit_fn
        #: Multi-objective successive halving (``sweep.fidelity``); None trains every trial fully.
        self.fidelity = fidelity
        #: Measures accuracy instead of training (the supernet fidelity); None trains each trial.
        self.scorer = scorer
        self.weights_dir = settings.export_dir / "weights"
        #: Tags every trial's run carries: where it ran (:mod:`archsearch.results.provenance`).
        self.provenance_tags = provenance.tags() if provenance is not None else {}
        #: Each trial's config.yaml and net.yaml; None logs the study's config and the bare net.
        self.texts = texts

    # Values that make an unevaluated (infeasible) trial rank last whatever its direction.
    def _worst(self, known: Mapping[str, float]) -> list[float]:
        out = []
        for metric, direction in self.settings.objectives:
            if metric in known:
                out.append(float(known[metric]))
            else:
                out.append(0.0 if direction == "maximize" else math.inf)
        return out

    def __call__(self, trial: optuna.Trial) -> list[float]:
        from archsearch.search.space import InfeasibleArchitecture

        started = time.perf_counter()
        run_id = ""
        outcome: dict[str, Any] = {"state": "failed"}
        try:
            try:
                spec = self.space.sample(trial, tuple(self.data.shape), int(self.data.num_classes))
            except InfeasibleArchitecture as exc:
                run_id = self._start_run(trial, None, {})
                return self._infeasible(trial, run_id, {"architecture": 1.0}, str(exc), {}, outcome)
            report = analyze(
                spec,
                self.hardware,
                batch_size=self.settings.cost.batch_size,
                bytes_per_element=self.settings.cost.bytes_per_element,
            )
            metrics: dict[str, float] = report.metrics()
            run_id = self._start_run(trial, spec, metrics)
            model = None
            if self.settings.needs_latency:
                model = self._build(spec)
                metrics["latency_ms"] = self._latency(model, spec)
                trial.set_user_attr("costs", metrics)
                self.tracker.log_metrics(run_id, {"latency_ms": metrics["latency_ms"]})
            violations = {
                c.name: c.violation(metrics[c.metric])
                for c in self.settings.constraints
                if c.metric in metrics
            }
            for name, v in violations.items():
                trial.set_constraint(name, v)
            broken = [n for n, v in violations.items() if v > 0]
            if broken:
                reason = "violates " + ", ".join(
                    f"{c.metric} {'<=' if c.max is not None else '>='} "
                    f"{c.max if c.max is not None else c.min:g} (is {metrics[c.metric]:g})"
                    for c in self.settings.constraints
                    if c.name in broken
                )
                return self._infeasible(trial, run_id, {}, reason, metrics, outcome)
            previous = self._previous_result(trial, spec.hash)
            results: dict[str, Any] = {}
            if previous is not None:
                results = self._reused_results(run_id, previous, outcome)
            elif self.settings.needs_training:
                results = (
                    self.scorer(spec) if self.scorer is not None else self._train(trial, run_id, spec, model)
                )
            metrics.update({k: float(results[k]) for k in RESULT_METRICS if k in results})
            return self._complete(trial, run_id, metrics, results, outcome)
        except WorkerFault:
            with contextlib.suppress(Exception):  # MLflow may be what failed; the next start closes it
                self.tracker.end_trial(run_id, "KILLED")
            raise
        except (optuna.TrialPruned, ArchsearchError, KeyboardInterrupt) as exc:
            if isinstance(exc, optuna.TrialPruned):
                outcome.update(trial.user_attrs.get("costs") or {}, state="pruned", reason=str(exc))
                outcome["val_acc"] = trial.user_attrs.get("val_acc")
            self.tracker.end_trial(run_id, "KILLED")
            raise
        except TrialFailed:
            raise
        except Exception as exc:
            full = disk_full(exc)
            if full is not None:
                with contextlib.suppress(Exception):
                    self.tracker.end_trial(run_id, "KILLED")
                raise full from exc
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            set_user_attrs(trial, {"state": "failed", "fail_reason": reason})
            outcome.update(state="failed", reason=reason)
            self.tracker.end_trial(
                run_id, "FAILED", tags={"archsearch.state": "failed", "archsearch.fail_reason": reason}
            )
            raise TrialFailed(reason) from exc
        finally:
            outcome["seconds"] = time.perf_counter() - started
            self.outcomes[trial.number] = outcome

    # -- steps ------------------------------------------------------------------------------

    def _start_run(self, trial: optuna.Trial, spec: NetSpec | None, costs: Mapping[str, float]) -> str:
        """Open the trial's MLflow run and record what is known before training, in one write each."""
        tags = {
            STUDY_TAG: self.settings.study.name,
            "archsearch.space_hash": self.space.hash,
            "archsearch.fidelity": self.settings.fidelity.kind,
            **self.provenance_tags,
        }
        attrs: dict[str, Any] = {}
        texts = {"config.yaml": self.config_yaml}
        if spec is not None:
            tags["archsearch.spec_hash"] = spec.hash
            attrs.update(costs=dict(costs), spec_hash=spec.hash, spec=spec.to_dict())
            texts["net.yaml"] = spec.to_yaml()
        if self.texts is not None:  # this trial's network in both, the net YAML as the export writes it
            texts = self.texts(trial.number, attrs.get("spec"), spec.hash if spec is not None else "")
        # The cost-aware sampler times each proposal (target: <= 2 s at 100 trials).
        proposed = getattr(trial.study.sampler, "proposal_seconds", None)
        if isinstance(proposed, dict) and trial.number in proposed:
            attrs["proposal_seconds"] = float(proposed.pop(trial.number))
        run_id = self.tracker.start_trial(
            trial.number,
            trial.params,
            tags,
            {**costs, **{k: attrs[k] for k in ("proposal_seconds",) if k in attrs}},
        )
        set_user_attrs(trial, {**attrs, "mlflow_run_id": run_id})
        self.tracker.log_texts(run_id, texts)
        return run_id

    def _infeasible(
        self,
        trial: optuna.Trial,
        run_id: str,
        extra_constraints: Mapping[str, float],
        reason: str,
        metrics: Mapping[str, float],
        outcome: dict[str, Any],
    ) -> list[float]:
        for name, v in extra_constraints.items():
            trial.set_constraint(name, v)
        set_user_attrs(trial, {"state": "infeasible", "infeasible_reason": reason})
        outcome.update(state="infeasible", reason=reason, **metrics)
        self.tracker.end_trial(
            run_id,
            "FINISHED",
            tags={"archsearch.state": "infeasible", "archsearch.infeasible_reason": reason},
        )
        return self._worst(metrics)

    def _previous_result(self, trial: optuna.Trial, spec_hash: str) -> FrozenTrial | None:
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get("spec_hash") == spec_hash and t.user_attrs.get("state") == "complete":
                return t
        return None

    def _reused_results(self, run_id: str, previous: FrozenTrial, outcome: dict[str, Any]) -> dict[str, Any]:
        """The trained results of an earlier trial of the same architecture (user attrs to copy)."""
        source = int(previous.user_attrs.get("reused_from", previous.number))
        outcome["reused_from"] = source
        self.tracker.set_tags(run_id, {"archsearch.reused_from": str(source)})
        out: dict[str, Any] = {
            "reused_from": source,
            "fidelity": previous.user_attrs.get("fidelity", "epochs"),
        }
        for key in RESULT_METRICS:
            if key in previous.user_attrs:
                out[key] = float(previous.user_attrs[key])
        return out

    def _complete(
        self,
        trial: optuna.Trial,
        run_id: str,
        metrics: dict[str, float],
        results: Mapping[str, Any],
        outcome: dict[str, Any],
    ) -> list[float]:
        """Record a trained (or reused) trial: its results and state in one storage write.

        The final values go to MLflow at the step of the trial's last epoch. A trained trial's
        ``val_acc`` is not logged again: every epoch logged it, and the last epoch's value is the
        final one. A reused trial trained no epoch here, so it logs the copied value once.
        """
        for c in self.settings.constraints:
            if c.metric in TRAINED_METRICS and c.metric in metrics:
                trial.set_constraint(c.name, c.violation(metrics[c.metric]))
        values = [float(metrics[m]) for m in self.settings.metric_names]
        set_user_attrs(trial, {**results, "state": "complete"})
        outcome.update(state="complete", **metrics)
        final = {f"objective.{m}": v for m, v in zip(self.settings.metric_names, values, strict=True)}
        if "reused_from" in results or results.get("fidelity") == "supernet":
            final.update({k: v for k, v in metrics.items() if k in TRAINED_METRICS})
        self.tracker.end_trial(
            run_id,
            "FINISHED",
            metrics=final,
            tags={"archsearch.state": "complete"},
            step=int(results.get("epochs_done", 0)),
        )
        return values

    def _build(self, spec: NetSpec) -> Any:
        import torch

        from archsearch.net.model import build

        torch.manual_seed(self.seed)
        return build(spec)

    def _latency(self, model: Any, spec: NetSpec) -> float:
        from archsearch.hardware.latency import measure_latency

        lat = self.settings.latency
        result = measure_latency(
            model,
            tuple(spec.input),
            lat.batch_size,
            threads=lat.threads,
            warmup=lat.warmup,
            repeats=lat.repeats,
            memory_format=lat.memory_format,
            clock=lat.clock,
            device=lat.device,
            runtime=lat.runtime,
        )
        return float(result.median_ms)

    def _record_rung(
        self, trial: optuna.Trial, run_id: str, decision: RungDecision, metrics: Mapping[str, float]
    ) -> None:
        """Store a halving decision; a pruned trial keeps its partial results and its run is tagged.

        Raises:
            optuna.TrialPruned: the trial stops at this rung (``decision.reason`` says why).
        """
        if decision.continues:
            set_user_attrs(trial, decision.user_attrs())
            return
        epoch = decision.epoch
        partial = {
            "val_acc": float(metrics["val_acc"]),
            "val_acc_best": float(metrics.get("val_acc_best", metrics["val_acc"])),
            "epochs_done": float(epoch),
            "train_seconds": float(metrics.get("seconds", 0.0)),
        }
        attrs = {**decision.user_attrs(), **partial, "state": "pruned", "pruned_at_epoch": epoch}
        set_user_attrs(trial, attrs)
        # val_acc and val_acc_best are already in the run's history at this epoch's step.
        done = {"epochs_done": float(epoch), "train_seconds": partial["train_seconds"]}
        self.tracker.log_metrics(run_id, {**done, "pruned_at_epoch": float(epoch)}, step=epoch)
        self.tracker.set_tags(
            run_id,
            {
                "archsearch.state": "pruned",
                "archsearch.pruned_at_epoch": str(epoch),
                "archsearch.prune_reason": decision.reason,
            },
        )
        raise optuna.TrialPruned(decision.reason)

    def _train(self, trial: optuna.Trial, run_id: str, spec: NetSpec, model: Any) -> dict[str, Any]:
        """Train the candidate; its results as user attrs for :meth:`_complete` to record."""
        fit = self.fit_fn
        if model is None:
            model = self._build(spec)

        trained = 0

        def on_epoch_end(epoch: int, m: dict[str, float]) -> None:
            nonlocal trained
            trained = epoch
            self.tracker.log_metrics(
                run_id, {k: v for k, v in m.items() if isinstance(v, int | float)}, step=epoch
            )
            if self.fidelity is not None:
                decision = self.fidelity.after_epoch(trial, epoch, m["val_acc"])
                if decision is not None:
                    self._record_rung(trial, run_id, decision, m)

        try:
            result = fit(model, self.data, self.settings.trainer, seed=self.seed, on_epoch_end=on_epoch_end)
        except optuna.TrialPruned:
            raise  # the halving rule stored epochs_done with the rung it pruned at
        except Exception:
            # A trial that failed mid-training consumed its epochs too; study.max_epochs counts them.
            if trained:
                trial.set_user_attr("epochs_done", float(trained))
            raise
        if result.epochs_done == 0:
            raise RuntimeError("time budget (trainer.max_seconds) ran out before one epoch finished")
        out: dict[str, Any] = {
            "val_acc": float(result.val_acc_last),
            "val_acc_best": float(result.val_acc_best),
            "epochs_done": float(result.epochs_done),
            "train_seconds": float(result.seconds),
            "train_images_per_s": float(result.images_per_s),
            "fidelity": "epochs",
        }
        if self.settings.tracking.log_weights != "none":
            import torch

            self.weights_dir.mkdir(parents=True, exist_ok=True)
            path = self.weights_dir / f"trial_{trial.number:04d}.pt"
            torch.save(model.state_dict(), path)
            # Relative to the export directory (weights/trial_NNNN.pt), so a moved project finds it.
            out["weights"] = stored_path(path, self.settings.export_dir)
            if self.settings.tracking.log_weights == "all":
                self.tracker.log_artifact(run_id, path, "weights")
        return out
