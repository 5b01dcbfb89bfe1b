"""The search: an Optuna study whose objective samples, costs, bounds, trains and logs a network.

Per trial: sample a NetSpec from the search space -> analytic costs -> constraints checked
*before* training (an infeasible net is not trained; its violations go to
``trial.set_constraint`` so the sampler learns) -> build -> train -> objective values.
Every trial is an MLflow child run under the study's parent run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from archsearch.errors import ArchsearchError, ConfigError
from archsearch.net.cost import COST_METRICS, HardwareProfile, analyze
from archsearch.net.spec import NetSpec
from archsearch.results.tracking import STUDY_TAG, Tracker, check_tracking_uri, resolve_tracking_uri
from archsearch.search.fidelity import RungInformedSampler, SuccessiveHalving
from archsearch.search.storage import StorageLock, check_database_url, describe_url, set_user_attrs
from archsearch.search.workers import (
    WORKERS_STARTED,
    StaleTrialCallback,
    budget,
    open_storage,
    run_trials,
    sigint_ignored,
    worker_seed,
)

__all__ = [
    "ALL_METRICS",
    "SweepResult",
    "SweepSettings",
    "check_backends",
    "finished_trials",
    "make_sampler",
    "open_study",
    "run_sweep",
]

#: Metrics known only after training, with their natural direction.
TRAINED_METRICS = {"val_acc": "maximize"}
#: What training records per trial (user attrs, copied when an architecture is seen again).
RESULT_METRICS = ("val_acc", "val_acc_best", "epochs_done", "train_seconds", "train_images_per_s")
#: Measured inference latency (built model, no training needed).
MEASURED_METRICS = {"latency_ms": "minimize"}
ALL_METRICS: dict[str, str] = {
    **TRAINED_METRICS,
    **{m: "minimize" for m in COST_METRICS},
    **MEASURED_METRICS,
}
DIRECTIONS = ("minimize", "maximize")


class _TrialFailed(Exception):
    """Raised after a trial's failure has been recorded, so Optuna marks it FAIL and goes on."""


@dataclass(frozen=True)
class Constraint:
    metric: str
    max: float | None = None
    min: float | None = None

    def violation(self, value: float) -> float:
        """<= 0 when satisfied; otherwise the relative amount by which the bound is missed."""
        worst = -1.0
        if self.max is not None:
            worst = max(worst, (value - self.max) / (abs(self.max) or 1.0))
        if self.min is not None:
            worst = max(worst, (self.min - value) / (abs(self.min) or 1.0))
        return worst

    @property
    def name(self) -> str:
        return self.metric


@dataclass(frozen=True)
class SweepSettings:
    """The validated sweep part of a config."""

    space: str
    objectives: tuple[tuple[str, str], ...]
    constraints: tuple[Constraint, ...]
    study_name: str
    storage: str
    n_trials: int
    timeout: float | None
    export_dir: Path
    plots: bool
    tracking_uri: str
    tracking_dir: Path
    tracking_enabled: bool
    log_weights: str
    latency: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds between a running trial's heartbeats in the storage.
    heartbeat_interval: int = 10
    #: Seconds without a heartbeat after which a running trial counts as dead (failed, retried).
    grace_period: int = 30
    #: How often an architecture whose worker died or was interrupted is run again.
    retries: int = 1

    @property
    def metric_names(self) -> list[str]:
        return [m for m, _ in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [d for _, d in self.objectives]

    @property
    def needs_training(self) -> bool:
        trained = set(TRAINED_METRICS)
        return any(m in trained for m in self.metric_names) or any(
            c.metric in trained for c in self.constraints
        )

    @property
    def needs_latency(self) -> bool:
        return "latency_ms" in self.metric_names or any(c.metric == "latency_ms" for c in self.constraints)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> SweepSettings:
        """Validate objectives, constraints and study settings; one ConfigError per problem."""
        objectives_cfg = cfg.get("objectives")
        if not isinstance(objectives_cfg, Mapping) or not objectives_cfg:
            raise ConfigError(
                "key 'objectives' must map metric names to minimize/maximize, e.g. {val_acc: maximize}."
            )
        objectives = []
        for metric, direction in objectives_cfg.items():
            metric = str(metric)
            if direction is None:  # `objectives.macs=null` drops an inherited objective
                continue
            if metric not in ALL_METRICS:
                raise ConfigError(
                    f"objectives.{metric} is not a known metric; allowed: {', '.join(ALL_METRICS)}."
                )
            if direction not in DIRECTIONS:
                raise ConfigError(
                    f"objectives.{metric} has direction {direction!r}; allowed: minimize, maximize."
                )
            objectives.append((metric, str(direction)))
        if not objectives:
            raise ConfigError("key 'objectives' sets every metric to null; keep at least one objective.")
        constraints = []
        for metric, bound in (cfg.get("constraints") or {}).items():
            metric = str(metric)
            if bound is None:
                continue
            if metric not in ALL_METRICS:
                raise ConfigError(
                    f"constraints.{metric} is not a known metric; allowed: {', '.join(ALL_METRICS)}."
                )
            if not isinstance(bound, Mapping) or set(bound) - {"max", "min"}:
                raise ConfigError(f"constraints.{metric} must be a mapping with 'max' and/or 'min'.")
            lo, hi = bound.get("min"), bound.get("max")
            for key, v in (("min", lo), ("max", hi)):
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    raise ConfigError(f"constraints.{metric}.{key} must be a number or null, got {v!r}.")
            if lo is None and hi is None:
                continue
            if lo is not None and hi is not None and lo > hi:
                raise ConfigError(f"constraints.{metric} has min {lo} > max {hi}.")
            constraints.append(
                Constraint(
                    metric, float(hi) if hi is not None else None, float(lo) if lo is not None else None
                )
            )
        study = cfg.get("study") or {}
        name = study.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("study.name must be a non-empty string.")
        n_trials = study.get("n_trials")
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials <= 0:
            raise ConfigError(f"study.n_trials must be a positive integer, got {n_trials!r}.")
        timeout = study.get("timeout")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise ConfigError(f"study.timeout must be a positive number of seconds or null, got {timeout!r}.")
        heartbeat = _study_int(study, "heartbeat_interval", 10, minimum=1)
        grace = _study_int(study, "grace_period", 30, minimum=heartbeat + 1)
        retries = _study_int(study, "retries", 1, minimum=0)
        tracking = cfg.get("tracking") or {}
        tracking_dir = Path(str(tracking.get("dir", "mlruns")))
        storage = study.get("storage")
        if storage is None or str(storage) == "":
            # Only named here: nothing is created before every setting has been checked.
            storage = f"sqlite:///{(tracking_dir / 'optuna.db').resolve()}"
        log_weights = str(tracking.get("log_weights", "pareto"))
        if log_weights not in ("pareto", "all", "none"):
            raise ConfigError(f"tracking.log_weights is {log_weights!r}; allowed: pareto, all, none.")
        sweep = cfg.get("sweep") or {}
        export = cfg.get("export") or {}
        enabled = bool(tracking.get("enabled", True))
        return cls(
            space=str(sweep.get("space", "fire")),
            objectives=tuple(objectives),
            constraints=tuple(constraints),
            study_name=name,
            storage=str(storage),
            n_trials=n_trials,
            timeout=float(timeout) if timeout is not None else None,
            export_dir=Path(str(export.get("dir") or f"results/{name}")),
            plots=bool(export.get("plots", True)),
            tracking_uri=resolve_tracking_uri(tracking.get("uri"), tracking_dir) if enabled else "",
            tracking_dir=tracking_dir,
            tracking_enabled=enabled,
            log_weights=log_weights,
            latency=dict(cfg.get("latency") or {}),
            heartbeat_interval=heartbeat,
            grace_period=grace,
            retries=retries,
        )


def _study_int(study: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    """``study.<key>`` as an integer >= ``minimum`` (heartbeat times are whole seconds in Optuna)."""
    value = study.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        more = " (more than study.heartbeat_interval)" if key == "grace_period" else ""
        raise ConfigError(f"study.{key} must be an integer >= {minimum}{more}, got {value!r}.")
    return value


def make_sampler(
    sampler_cfg: Mapping[str, Any] | DictConfig, seed: int, grid: Callable[[], dict[str, list[Any]]]
) -> optuna.samplers.BaseSampler:
    """Instantiate the configured sampler (``_target_``); the grid sampler gets the space's grid."""
    from hydra.utils import instantiate

    plain = (
        OmegaConf.to_container(sampler_cfg, resolve=True)
        if isinstance(sampler_cfg, DictConfig)
        else dict(sampler_cfg)
    )
    cfg = OmegaConf.create(plain if isinstance(plain, dict) else {})
    target = str(cfg.get("_target_", ""))
    kwargs: dict[str, Any] = {}
    if target.endswith("GridSampler"):
        kwargs["search_space"] = grid()
        cfg._target_ = "archsearch.search.workers.WorkerGridSampler"
    if "seed" in cfg and cfg.seed is None:
        cfg.seed = seed
    try:
        sampler = instantiate(cfg, **kwargs)
    except Exception as exc:
        raise ConfigError(
            f"sampler config could not be instantiated ({target}): {exc}".splitlines()[0]
        ) from None
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        raise ConfigError(f"sampler._target_ {target!r} is not an Optuna sampler.")
    return sampler


def check_backends(settings: SweepSettings) -> None:
    """The study storage and the MLflow backend both answer; checked before either is written to.

    Raises:
        ConfigError: one sentence naming ``study.storage`` or ``tracking.uri`` and why.
    """
    check_database_url(settings.storage, "study.storage")
    StorageLock(settings.storage)  # a backend workers cannot lock is refused here too
    if settings.tracking_enabled:
        check_tracking_uri(settings.tracking_uri)


def open_study(
    settings: SweepSettings,
    sampler: optuna.samplers.BaseSampler | None = None,
    storage: optuna.storages.RDBStorage | None = None,
) -> optuna.Study:
    """Create or resume the study; an unreachable storage or other objectives are a ConfigError.

    Args:
        settings: the validated sweep settings.
        sampler: the study's sampler (Optuna's default if None).
        storage: an opened storage (:func:`archsearch.search.workers.open_storage`); by default
            one is opened on ``settings.storage`` with the settings' heartbeats.
    """
    try:
        if storage is None:
            storage = open_storage(settings.storage, settings.heartbeat_interval, settings.grace_period, None)
        study = optuna.create_study(
            study_name=settings.study_name,
            storage=storage,
            sampler=sampler,
            directions=settings.directions,  # type: ignore[arg-type]
            load_if_exists=True,
        )
    except ValueError as exc:
        raise ConfigError(
            f"study {settings.study_name!r} in {describe_url(settings.storage)} exists with other "
            f"objectives: {str(exc).splitlines()[0]}"
        ) from None
    except ArchsearchError:
        raise
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
        raise ConfigError(
            f"study.storage {describe_url(settings.storage)!r} cannot be opened ({reason[0]}); "
            "check the URL, that the server runs and the database exists."
        ) from None
    stored = study.user_attrs.get("objectives")
    if stored is not None and list(stored) != settings.metric_names:
        raise ConfigError(
            f"study {settings.study_name!r} was created with objectives {list(stored)}, not "
            f"{settings.metric_names}; use another study.name."
        )
    return study


def finished_trials(study: optuna.Study) -> int:
    """Finished slots of ``study.n_trials``: complete, pruned or failed trials, a retried one once.

    A trial whose worker died and that was retried counts once, through its retry (see
    :mod:`archsearch.search.workers` for the budget rule).
    """
    return budget(study.get_trials(deepcopy=False), 0).finished


@dataclass
class SweepResult:
    study: optuna.Study
    front: list[FrozenTrial]
    export_dir: Path
    files: dict[str, Path]
    parent_run_id: str
    seconds: float


class Objective:
    """The per-trial pipeline. Plain data in, objective values out; everything is logged."""

    def __init__(
        self,
        settings: SweepSettings,
        space: Any,
        data: Any,
        trainer_cfg: Mapping[str, Any],
        hardware: HardwareProfile,
        cost_cfg: Mapping[str, Any],
        tracker: Tracker,
        seed: int,
        config_yaml: str,
        fit_fn: Callable[..., Any] | None = None,
        fidelity: SuccessiveHalving | None = None,
    ) -> None:
        self.settings = settings
        self.space = space
        self.data = data
        self.trainer_cfg = trainer_cfg
        self.hardware = hardware
        self.cost_cfg = cost_cfg
        self.tracker = tracker
        self.seed = seed
        self.config_yaml = config_yaml
        #: What happened in each trial this process ran (state, metrics, reason, seconds),
        #: read by the progress callback once Optuna has recorded the trial.
        self.outcomes: dict[int, dict[str, Any]] = {}
        self.fit_fn = fit_fn
        #: Multi-objective successive halving (``sweep.fidelity``); None trains every trial fully.
        self.fidelity = fidelity
        self.weights_dir = settings.export_dir / "weights"

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
                batch_size=int(self.cost_cfg.get("batch_size", 1)),
                bytes_per_element=int(self.cost_cfg.get("bytes_per_element", 4)),
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
                results = self._train(trial, run_id, spec, model)
            metrics.update({k: float(results[k]) for k in RESULT_METRICS if k in results})
            return self._complete(trial, run_id, metrics, results, outcome)
        except (optuna.TrialPruned, ArchsearchError, KeyboardInterrupt) as exc:
            if isinstance(exc, optuna.TrialPruned):
                outcome.update(trial.user_attrs.get("costs") or {}, state="pruned", reason=str(exc))
                outcome["val_acc"] = trial.user_attrs.get("val_acc")
            self.tracker.end_trial(run_id, "KILLED")
            raise
        except _TrialFailed:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            set_user_attrs(trial, {"state": "failed", "fail_reason": reason})
            outcome.update(state="failed", reason=reason)
            self.tracker.end_trial(
                run_id, "FAILED", tags={"archsearch.state": "failed", "archsearch.fail_reason": reason}
            )
            raise _TrialFailed(reason) from exc
        finally:
            outcome["seconds"] = time.perf_counter() - started
            self.outcomes[trial.number] = outcome

    # -- steps ------------------------------------------------------------------------------

    def _start_run(self, trial: optuna.Trial, spec: NetSpec | None, costs: Mapping[str, float]) -> str:
        """Open the trial's MLflow run and record what is known before training, in one write each."""
        tags = {STUDY_TAG: self.settings.study_name}
        attrs: dict[str, Any] = {}
        texts = {"config.yaml": self.config_yaml}
        if spec is not None:
            tags["archsearch.spec_hash"] = spec.hash
            attrs.update(costs=dict(costs), spec_hash=spec.hash, spec=spec.to_dict())
            texts["net.yaml"] = spec.to_yaml()
        run_id = self.tracker.start_trial(trial.number, trial.params, tags, costs)
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
        out: dict[str, Any] = {"reused_from": source}
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
        """Record a trained (or reused) trial: its results and state in one storage write."""
        for c in self.settings.constraints:
            if c.metric in TRAINED_METRICS and c.metric in metrics:
                trial.set_constraint(c.name, c.violation(metrics[c.metric]))
        values = [float(metrics[m]) for m in self.settings.metric_names]
        set_user_attrs(trial, {**results, "state": "complete"})
        outcome.update(state="complete", **metrics)
        self.tracker.end_trial(
            run_id,
            "FINISHED",
            metrics={
                **{k: v for k, v in metrics.items() if k in TRAINED_METRICS},
                **{f"objective.{m}": v for m, v in zip(self.settings.metric_names, values, strict=True)},
            },
            tags={"archsearch.state": "complete"},
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
            int(lat.get("batch_size", 1)),
            threads=lat.get("threads"),
            warmup=int(lat.get("warmup", 5)),
            repeats=int(lat.get("repeats", 20)),
            memory_format=str(lat.get("memory_format", "auto")),
            clock=str(lat.get("clock", "wall")),
        )
        return float(result.median_ms)

    def _train(self, trial: optuna.Trial, run_id: str, spec: NetSpec, model: Any) -> dict[str, Any]:
        """Train the candidate; its results as user attrs for :meth:`_complete` to record."""
        from archsearch.train.fit import fit as default_fit

        fit = self.fit_fn or default_fit
        if model is None:
            model = self._build(spec)

        def on_epoch_end(epoch: int, m: dict[str, float]) -> None:
            self.tracker.log_metrics(
                run_id, {k: v for k, v in m.items() if isinstance(v, int | float)}, step=epoch
            )
            if self.fidelity is not None:
                self.fidelity.after_epoch(trial, epoch, m, self.tracker, run_id)

        result = fit(model, self.data, self.trainer_cfg, seed=self.seed, on_epoch_end=on_epoch_end)
        if result.epochs_done == 0:
            raise RuntimeError("time budget (trainer.max_seconds) ran out before one epoch finished")
        out: dict[str, Any] = {
            "val_acc": float(result.val_acc_last),
            "val_acc_best": float(result.val_acc_best),
            "epochs_done": float(result.epochs_done),
            "train_seconds": float(result.seconds),
            "train_images_per_s": float(result.images_per_s),
        }
        if self.settings.log_weights != "none":
            import torch

            self.weights_dir.mkdir(parents=True, exist_ok=True)
            path = self.weights_dir / f"trial_{trial.number:04d}.pt"
            torch.save(model.state_dict(), path)
            out["weights"] = str(path.resolve())
            if self.settings.log_weights == "all":
                self.tracker.log_artifact(run_id, path, "weights")
        return out


def _quiet_libraries() -> None:
    """Our progress lines replace Optuna's per-trial logging and MLflow's schema messages."""
    import logging
    import warnings

    import mlflow  # noqa: F401  (mlflow sets its loggers to INFO on import: import first, then quieten)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for name in ("mlflow", "alembic", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _plain(node: Any) -> dict[str, Any]:
    """A config node as a plain dict (resolved)."""
    value = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else {}


def _retrain_command(cfg: DictConfig) -> str:
    data = cfg.get("data") or {}
    trainer = cfg.get("trainer") or {}
    parts = ["python -m archsearch", "model_file={config}"]
    if data.get("name"):
        parts.append(f"data={data.get('name')}")
    if trainer.get("epochs") is not None:
        parts.append(f"trainer.epochs={trainer.get('epochs')}")
    parts.append(f"seed={cfg.get('seed', 0)}")
    return " ".join(parts)


def run_sweep(
    cfg: DictConfig, *, console: Any = None, fit_fn: Callable[..., Any] | None = None
) -> SweepResult:
    """Run (or resume, or join) the configured sweep and export its front.

    Args:
        cfg: the composed config (root config plus a ``sweep/`` config).
        console: a ``rich.console.Console`` for progress; a quiet one is made if None.
        fit_fn: replaces ``archsearch.train.fit.fit`` (same signature): tests and the overhead
            benchmark pass a fake with fixed results instead of training.
    """
    from rich.console import Console

    from archsearch.net.cost import HardwareProfile
    from archsearch.results.export import export_study
    from archsearch.results.terminal import SweepReporter
    from archsearch.search.space import load_space

    console = console or Console(quiet=True)
    settings = SweepSettings.from_config(cfg)
    fidelity = SuccessiveHalving.from_config(cfg, settings.objectives)
    space = load_space(settings.space)
    seed = int(cfg.get("seed", 0))
    hardware = HardwareProfile.from_dict(_plain(cfg.hardware), source="hardware")
    check_backends(settings)
    # The checks above need neither torch nor MLflow, so a typo is reported without their import time.
    _quiet_libraries()
    from archsearch.data.datasets import load_dataset

    data = load_dataset(cfg.data, seed=seed)
    make_sampler(cfg.sampler, seed, space.grid)  # a bad sampler config is refused before any write
    fit_fn = fit_fn or _configured_fit(cfg)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    # Everything is valid: from here on the storage and MLflow are written to.
    lock = StorageLock(settings.storage)
    tracker: Tracker | None = None

    def close_run(_study: optuna.Study, trial: FrozenTrial) -> None:
        if tracker is not None:
            _close_cut_short_run(tracker, trial)

    on_stale = StaleTrialCallback(settings.retries, cleanup=close_run)
    with lock:
        # One worker at a time creates tables, the study and its parent run, so none is made twice.
        storage = open_storage(settings.storage, settings.heartbeat_interval, settings.grace_period, on_stale)
        study = open_study(settings, storage=storage)
        if "objectives" not in study.user_attrs:
            study.set_user_attr("objectives", settings.metric_names)
            study.set_user_attr("space", settings.space)
            study.set_user_attr("retrain_command", _retrain_command(cfg))
        worker = int(study.user_attrs.get(WORKERS_STARTED, 0))
        study.set_user_attr(WORKERS_STARTED, worker + 1)
        tracker = Tracker(
            settings.tracking_uri,
            experiment=f"archsearch/{settings.study_name}",
            artifact_dir=settings.tracking_dir / "artifacts",
            enabled=settings.tracking_enabled,
        )
        parent = tracker.start_study(
            settings.study_name,
            {
                "space": settings.space,
                "objectives": dict(settings.objectives),
                "constraints": {c.metric: {"max": c.max, "min": c.min} for c in settings.constraints},
                "n_trials": settings.n_trials,
                "sampler": str(cfg.sampler.get("_target_", "")),
                "data": str(cfg.data.get("name", "")),
                "storage": describe_url(settings.storage),
            },
            config_yaml,
        )
    study.sampler = make_sampler(cfg.sampler, worker_seed(seed, worker), space.grid)
    if (
        fidelity is not None
        and fidelity.settings.learn_from_pruned
        and not isinstance(study.sampler, optuna.samplers.GridSampler)
    ):
        study.sampler = RungInformedSampler(study.sampler)
    reporter = SweepReporter(console, settings.metric_names, settings.n_trials)
    objective = Objective(
        settings,
        space,
        data,
        cfg.trainer,
        hardware,
        cfg.get("cost") or {},
        tracker,
        seed,
        config_yaml,
        fit_fn=fit_fn,
        fidelity=fidelity,
    )
    started = time.perf_counter()
    done = finished_trials(study)
    status = "FINISHED"
    try:
        if done < settings.n_trials:
            reporter.start(study, done)
            run_trials(
                study,
                objective,
                storage=storage,
                lock=lock,
                n_trials=settings.n_trials,
                timeout=settings.timeout,
                catch=(_TrialFailed,),
                callbacks=[lambda st, t: reporter.trial_done(st, t, objective.outcomes.pop(t.number, {}))],
                on_stale=on_stale,
                on_wait=lambda b: console.print(
                    f"no trial left to take; waiting for {b.running} running in other workers "
                    f"(a dead worker's trial is retried after {settings.grace_period}s without heartbeat)"
                ),
            )
        else:
            console.print(
                f"study {settings.study_name!r} already has {settings.n_trials} finished trials; "
                "raise study.n_trials to run more."
            )
    except KeyboardInterrupt:
        status = "KILLED"
        console.print(
            "interrupted: the running trial is marked failed and queued to run again on the next start"
        )
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        # Exports are rewritten by every worker, so one writes at a time; Ctrl-C waits for it.
        with sigint_ignored(), lock:
            exported = export_study(study, settings.export_dir, plots=settings.plots)
            _log_front(tracker, parent, study, exported.front, exported.files, settings)
            tracker.end_study(status)
        lock.close()
    seconds = time.perf_counter() - started
    reporter.finish(study, exported, settings, seconds)
    if (cfg.get("sweep") or {}).get("finalize"):
        from archsearch.search.finalize import finalize_study

        exported = finalize_study(study, cfg, fit_fn=fit_fn, console=console).export
    return SweepResult(study, exported.front, exported.directory, exported.files, parent, seconds)


def _configured_fit(cfg: DictConfig) -> Callable[..., Any] | None:
    """``sweep.fit``: a ``_target_`` that replaces the trainer, e.g. ``archsearch.testing.FixedCostFit``.

    A hook for benchmarks and command-line tests, which cannot pass ``fit_fn``; absent normally.
    """
    from hydra.utils import instantiate

    node = (cfg.get("sweep") or {}).get("fit")
    if node is None:
        return None
    try:
        fit = instantiate(node)
    except Exception as exc:
        raise ConfigError(f"sweep.fit could not be instantiated: {str(exc).splitlines()[0]}") from None
    if not callable(fit):
        raise ConfigError(f"sweep.fit must make a callable like archsearch.train.fit.fit, got {fit!r}.")
    return fit


def _close_cut_short_run(tracker: Tracker, trial: FrozenTrial) -> None:
    """Close the MLflow run of a trial whose worker died (FAILED) or was interrupted (KILLED)."""
    run_id = str(trial.user_attrs.get("mlflow_run_id", ""))
    if trial.user_attrs.get("state") == "interrupted":
        tracker.set_tags(run_id, {"archsearch.state": "interrupted"})
        tracker.end_trial(run_id, "KILLED")
        return
    tracker.set_tags(
        run_id,
        {
            "archsearch.state": "failed",
            "archsearch.fail_reason": "its worker stopped sending heartbeats (killed or lost)",
        },
    )
    tracker.end_trial(run_id, "FAILED")


def _log_front(
    tracker: Tracker,
    parent: str,
    study: optuna.Study,
    front: Sequence[FrozenTrial],
    files: Mapping[str, Path],
    settings: SweepSettings,
) -> None:
    """Tag Pareto members' runs, log their weights, and put the exports on the parent run."""
    if not tracker.enabled:
        return
    on_front = {t.number for t in front}
    # Only runs whose membership may have changed since the last export are touched.
    before = set(study.user_attrs.get("pareto_members", []))
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = t.user_attrs.get("mlflow_run_id")
        if not run_id or t.number not in on_front | before:
            continue
        member = t.number in on_front
        tracker.set_tags(run_id, {"archsearch.pareto": "true" if member else "false"})
        weights = t.user_attrs.get("weights")
        if member and settings.log_weights == "pareto" and weights and Path(weights).is_file():
            tracker.log_artifact(run_id, weights, "weights")
    study.set_user_attr("pareto_members", sorted(on_front))
    for path in files.values():
        tracker.log_artifact(parent, path, "pareto")
    tracker.log_metrics(parent, {"front_size": float(len(front)), "trials": float(finished_trials(study))})
