"""Typed, frozen settings of a search: what it optimises and bounds, where it stores and logs.

Each block is a frozen dataclass whose defaults are the project's defaults (the CLI's YAML
only sets what a sweep changes). Constructing one checks it: a notebook user gets the same
one-sentence :class:`~archsearch.errors.ConfigError` as the CLI, naming the config key.
``from_mapping`` reads the plain mapping a composed config becomes, refusing unknown keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archsearch.checks import (
    check_choice,
    check_flag,
    check_int,
    is_int,
    is_number,
    known_fields,
    plain_fields,
)
from archsearch.errors import ConfigError
from archsearch.net.cost import COST_METRICS
from archsearch.search.fidelity import FidelitySettings
from archsearch.search.warm_start import WarmStartSettings
from archsearch.train.settings import TrainerSettings

__all__ = [
    "ALL_METRICS",
    "DEFAULT_TPE",
    "RESULT_METRICS",
    "TRAINED_METRICS",
    "Constraint",
    "CostSettings",
    "ExportSettings",
    "FinalizeSettings",
    "LatencySettings",
    "SearchSettings",
    "StudySettings",
    "TrackingSettings",
]

#: archsearch's TPE: the CLI's ``sampler=tpe``.
DEFAULT_TPE: dict[str, Any] = {
    "n_startup_trials": 10,  # random trials before the model kicks in
    "multivariate": True,
    "group": True,  # conditional (depth-dependent) parameters are modelled per group
    "constant_liar": True,  # parallel workers avoid proposing the same point
}

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
LOG_WEIGHTS = ("pareto", "all", "none")
#: A registered model name (``finalize.register_as``): safe in a ``models:/<name>/<version>`` URI.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


@dataclass(frozen=True)
class Constraint:
    """A bound on one metric; infeasible trials are not trained and the sampler learns the bound."""

    metric: str
    max: float | None = None
    min: float | None = None

    def __post_init__(self) -> None:
        key = f"constraints.{self.metric}"
        if self.metric not in ALL_METRICS:
            raise ConfigError(f"{key} is not a known metric; allowed: {', '.join(ALL_METRICS)}.")
        for name, v in (("min", self.min), ("max", self.max)):
            if v is not None and not is_number(v):
                raise ConfigError(f"{key}.{name} must be a number or null, got {v!r}.")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(f"{key} has min {self.min} > max {self.max}.")
        for name in ("min", "max"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))

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
class StudySettings:
    """The Optuna study: its name, storage and budget, and how dead workers are detected."""

    name: str = "archsearch"  # the study (and MLflow experiment archsearch/NAME)
    storage: str | None = (
        None  # None = sqlite:///<tracking.dir>/optuna.db; or sqlite:///x.db, postgresql://...
    )
    n_trials: int = 30  # total, across resumes and workers
    timeout: float | None = None  # seconds for this invocation; None = no limit
    # Training epochs the whole study may consume (pruned and failed trials' included); once
    # reached no new trial starts, running ones finish. Unlike seconds, load cannot move it.
    max_epochs: int | None = None
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats in the storage
    grace_period: int = 30  # seconds without heartbeat after which a trial is failed (its worker died)
    retries: int = 1  # reruns of an architecture whose worker died or was interrupted
    # Seconds a worker keeps retrying a database server that refuses connections (a restart)
    # before it stops with exit 4; 0 = stop at once (archsearch.storage.outage).
    storage_outage_s: float = 120.0
    # Continue a study whose space, data, objectives, constraints, fidelity or trainer settings
    # differ from those it was run with (archsearch.search.definition); false refuses.
    allow_changes: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("study.name must be a non-empty string.")
        if any(c in self.name for c in "/\\\0") or self.name.strip() in (".", ".."):
            # It names folders (results/NAME, the supernet checkpoint): no path may escape through it.
            raise ConfigError(
                f"study.name {self.name!r} must not contain '/', '\\' or be '.' or '..': it names folders."
            )
        if self.storage is not None and not isinstance(self.storage, str):
            raise ConfigError(f"study.storage must be a database URL or null, got {self.storage!r}.")
        if not is_int(self.n_trials) or self.n_trials <= 0:
            raise ConfigError(f"study.n_trials must be a positive integer, got {self.n_trials!r}.")
        if self.timeout is not None and (not is_number(self.timeout) or self.timeout <= 0):
            raise ConfigError(
                f"study.timeout must be a positive number of seconds or null, got {self.timeout!r}."
            )
        if self.max_epochs is not None:
            check_int("study.max_epochs", self.max_epochs, 1, " or null")
        check_int("study.heartbeat_interval", self.heartbeat_interval, 1)
        more = " (more than study.heartbeat_interval)"
        check_int("study.grace_period", self.grace_period, self.heartbeat_interval + 1, more)
        check_int("study.retries", self.retries, 0)
        if not is_number(self.storage_outage_s) or not 0 <= self.storage_outage_s <= 86400:
            raise ConfigError(
                "study.storage_outage_s must be a number of seconds from 0 to 86400, "
                f"got {self.storage_outage_s!r}."
            )
        check_flag("study.allow_changes", self.allow_changes)

    @classmethod
    def from_mapping(cls, raw: Any) -> StudySettings:
        values = known_fields(raw, "study", cls)
        if values.get("storage") == "":
            values["storage"] = None
        return cls(**values)


@dataclass(frozen=True)
class TrackingSettings:
    """MLflow: on or off, which backend, and which weights go to it."""

    enabled: bool = True  # log every trial as an MLflow run
    uri: str | None = None  # None = SQLite under `dir`; or any MLflow URI, e.g. http://127.0.0.1:5000
    dir: Path = Path("mlruns")  # local backend store, artifacts and (by default) the Optuna storage
    log_weights: str = "pareto"  # pareto = weights of front members; all = every trained trial; none

    def __post_init__(self) -> None:
        check_flag("tracking.enabled", self.enabled)
        check_choice("tracking.log_weights", self.log_weights, LOG_WEIGHTS)
        object.__setattr__(self, "dir", Path(self.dir))

    @classmethod
    def from_mapping(cls, raw: Any) -> TrackingSettings:
        values = known_fields(raw, "tracking", cls)
        if values.get("uri") == "":
            values["uri"] = None
        return cls(**values)

    @property
    def resolved_uri(self) -> str:
        """The MLflow URI in use ("" when tracking is off); nothing is created by asking."""
        from archsearch.results.tracking import resolve_tracking_uri

        return resolve_tracking_uri(self.uri, self.dir) if self.enabled else ""


@dataclass(frozen=True)
class CostSettings:
    """At what batch size and element width bytes and estimated latency are counted."""

    batch_size: int = 1  # batch size at which bytes and latency_est_ms are computed
    bytes_per_element: int = 4  # 4 = fp32, 2 = fp16/bf16, 1 = int8

    def __post_init__(self) -> None:
        check_int("cost.batch_size", self.batch_size, 1)
        check_int("cost.bytes_per_element", self.bytes_per_element, 1)

    @classmethod
    def from_mapping(cls, raw: Any) -> CostSettings:
        return cls(**known_fields(raw, "cost", cls))


@dataclass(frozen=True)
class LatencySettings:
    """How ``latency_ms`` is measured on the built model (only when an objective or bound uses it)."""

    batch_size: int = 1
    threads: int | None = 1  # like trainer.threads: one core per worker; None = torch's default
    warmup: int = 5  # untimed calls before timing
    repeats: int = 20  # timed calls; the median is the figure
    memory_format: str = "auto"  # auto = channels_last for conv nets, as the trainer runs them
    clock: str = "wall"  # wall, or cpu (needs threads 1) on a machine shared with other jobs
    runtime: str = "torch"  # torch (eager), or onnxruntime: the model exported to ONNX, fp32
    device: str = "auto"  # auto = the GPU when there is one (torch runtime), else cpu

    def __post_init__(self) -> None:
        from archsearch.hardware.choices import CLOCKS, MEMORY_FORMATS, RUNTIMES

        check_int("latency.batch_size", self.batch_size, 1)
        if self.threads is not None:
            check_int("latency.threads", self.threads, 1)
        check_int("latency.warmup", self.warmup, 0)
        check_int("latency.repeats", self.repeats, 1)
        check_choice("latency.memory_format", self.memory_format, MEMORY_FORMATS)
        check_choice("latency.clock", self.clock, CLOCKS)
        if self.clock == "cpu" and self.threads != 1:
            raise ConfigError(f"latency.clock cpu needs latency.threads 1, got {self.threads!r}.")
        check_choice("latency.runtime", self.runtime, RUNTIMES)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu") or self.device.split(":")[0] == "cuda"
        ):
            raise ConfigError(f"latency.device must be auto, cpu or cuda[:N], got {self.device!r}.")

    @classmethod
    def from_mapping(cls, raw: Any) -> LatencySettings:
        return cls(**known_fields(raw, "latency", cls))


#: Where a finalized member's weights start (``finalize.init``).
FINALIZE_INITS = ("scratch", "supernet")


@dataclass(frozen=True)
class FinalizeSettings:
    """The validated ``finalize`` block.

    Attributes:
        epochs: training epochs of every member (the trainer's other keys, ``trainer.dsd``
            included, come from ``trainer``).
        force: retrain members already finalized with the same settings.
        init: ``scratch`` (fresh weights) or ``supernet``: each member starts from its slice of
            the study's supernet (a study searched with ``sweep.fidelity.kind=supernet``).
        members: retrain at most this many members, chosen on validation accuracy and spread
            over the front's sizes (:func:`archsearch.results.front.spread_over_sizes`); None
            retrains the whole front.
        register_as: also register every finalized member's MLflow Model in MLflow's model
            registry under this name (one version per member); None registers nothing.
    """

    epochs: int = 30
    force: bool = False
    init: str = "scratch"
    members: int | None = None
    register_as: str | None = None

    def __post_init__(self) -> None:
        check_int("finalize.epochs", self.epochs, 1)
        check_flag("finalize.force", self.force)
        check_choice("finalize.init", self.init, FINALIZE_INITS)
        if self.members is not None:
            check_int("finalize.members", self.members, 1)
        if self.register_as is not None and not (
            isinstance(self.register_as, str) and _MODEL_NAME.fullmatch(self.register_as)
        ):
            raise ConfigError(
                "finalize.register_as must be null or a model name of letters, digits, '_', '.' and '-' "
                f"(starting with a letter or digit), got {self.register_as!r}."
            )

    @classmethod
    def from_mapping(cls, raw: Any) -> FinalizeSettings:
        """Read the ``finalize`` block (a plain mapping, or None for the defaults)."""
        return cls(**known_fields(raw, "finalize", cls))


@dataclass(frozen=True)
class ExportSettings:
    """Where the front goes (pareto.csv/json, nets/, plots, weights, ONNX)."""

    dir: Path | None = None  # None = results/<study.name>
    plots: bool = True  # PNG and interactive HTML plots of the front
    onnx: bool = False  # each member's trained weights as onnx/*.onnx, checked on ONNX Runtime
    int8: bool = False  # also int8 (static quantization), its accuracy measured (needs onnx)

    def __post_init__(self) -> None:
        check_flag("export.plots", self.plots)
        check_flag("export.onnx", self.onnx)
        check_flag("export.int8", self.int8)
        if self.int8 and not self.onnx:
            raise ConfigError("export.int8 true needs export.onnx true (int8 models are made from the ONNX).")
        if self.dir is not None:
            object.__setattr__(self, "dir", Path(self.dir))

    @classmethod
    def from_mapping(cls, raw: Any) -> ExportSettings:
        values = known_fields(raw, "export", cls)
        if values.get("dir") == "":
            values["dir"] = None
        return cls(**values)


DEFAULT_OBJECTIVES = (("val_acc", "maximize"), ("params", "minimize"), ("macs", "minimize"))


@dataclass(frozen=True)
class SearchSettings:
    """Everything a search needs besides its space, data and sampler; checked on construction."""

    objectives: tuple[tuple[str, str], ...] = DEFAULT_OBJECTIVES  # (metric, direction), in study order
    constraints: tuple[Constraint, ...] = ()  # checked before training (val_acc after)
    study: StudySettings = field(default_factory=StudySettings)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    fidelity: FidelitySettings = field(default_factory=FidelitySettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    cost: CostSettings = field(default_factory=CostSettings)
    latency: LatencySettings = field(default_factory=LatencySettings)
    seed: int = 0  # seeds the data split, weight init and the sampler
    warm_start: WarmStartSettings = field(default_factory=WarmStartSettings)  # seeds a new study

    def __post_init__(self) -> None:
        objectives = tuple((str(m), str(d)) for m, d in dict(self.objectives).items())
        if not objectives:
            raise ConfigError(
                "key 'objectives' is empty; keep at least one objective, e.g. val_acc: maximize."
            )
        for metric, direction in objectives:
            if metric not in ALL_METRICS:
                raise ConfigError(
                    f"objectives.{metric} is not a known metric; allowed: {', '.join(ALL_METRICS)}."
                )
            if direction not in DIRECTIONS:
                raise ConfigError(
                    f"objectives.{metric} has direction {direction!r}; allowed: minimize, maximize."
                )
        object.__setattr__(self, "objectives", objectives)
        object.__setattr__(self, "constraints", tuple(self.constraints))
        check_int("seed", self.seed, 0)
        self.fidelity.rungs_for(self.trainer.epochs)  # rungs beyond trainer.epochs are refused here

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> SearchSettings:
        """Read a composed sweep config (plain mapping); one ConfigError sentence per bad key."""
        objectives_cfg = cfg.get("objectives")
        if not isinstance(objectives_cfg, Mapping) or not objectives_cfg:
            raise ConfigError(
                "key 'objectives' must map metric names to minimize/maximize, e.g. {val_acc: maximize}."
            )
        # `objectives.macs=null` drops an inherited objective.
        objectives = tuple((str(m), d) for m, d in objectives_cfg.items() if d is not None)
        if not objectives:
            raise ConfigError("key 'objectives' sets every metric to null; keep at least one objective.")
        trainer = TrainerSettings.from_mapping(cfg.get("trainer") or {})
        sweep = cfg.get("sweep") or {}
        return cls(
            objectives=objectives,
            constraints=_constraints(cfg.get("constraints")),
            study=StudySettings.from_mapping(cfg.get("study")),
            trainer=trainer,
            fidelity=FidelitySettings.from_mapping(
                sweep.get("fidelity") if isinstance(sweep, Mapping) else None
            ),
            tracking=TrackingSettings.from_mapping(cfg.get("tracking")),
            export=ExportSettings.from_mapping(cfg.get("export")),
            cost=CostSettings.from_mapping(cfg.get("cost")),
            latency=LatencySettings.from_mapping(cfg.get("latency")),
            seed=cfg.get("seed", 0),
            warm_start=WarmStartSettings.from_mapping(cfg.get("warm_start")),
        )

    @property
    def metric_names(self) -> list[str]:
        return [m for m, _ in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [d for _, d in self.objectives]

    @property
    def needs_training(self) -> bool:
        return any(m in TRAINED_METRICS for m in self.metric_names) or any(
            c.metric in TRAINED_METRICS for c in self.constraints
        )

    @property
    def needs_latency(self) -> bool:
        return "latency_ms" in self.metric_names or any(c.metric == "latency_ms" for c in self.constraints)

    @property
    def storage_url(self) -> str:
        """The study storage URL: ``study.storage``, else SQLite beside the MLflow store."""
        if self.study.storage:
            return self.study.storage
        return f"sqlite:///{(self.tracking.dir / 'optuna.db').resolve()}"

    @property
    def export_dir(self) -> Path:
        return self.export.dir if self.export.dir is not None else Path("results") / self.study.name

    def to_mapping(self) -> dict[str, Any]:
        """The settings in the config's layout (plain values), as logged with the study."""
        return {
            "objectives": dict(self.objectives),
            "constraints": {c.metric: {"max": c.max, "min": c.min} for c in self.constraints},
            "study": plain_fields(self.study),
            "trainer": self.trainer.to_mapping(),
            "sweep": {"fidelity": self.fidelity.to_mapping()},
            "tracking": plain_fields(self.tracking),
            "export": plain_fields(self.export),
            "cost": plain_fields(self.cost),
            "latency": plain_fields(self.latency),
            "seed": self.seed,
            "warm_start": {**plain_fields(self.warm_start), "points": list(self.warm_start.points)},
        }


def _constraints(raw: Any) -> tuple[Constraint, ...]:
    out = []
    for metric, bound in (raw or {}).items():
        metric = str(metric)
        if bound is None:
            continue
        if not isinstance(bound, Mapping) or set(bound) - {"max", "min"}:
            raise ConfigError(f"constraints.{metric} must be a mapping with 'max' and/or 'min'.")
        lo, hi = bound.get("min"), bound.get("max")
        if lo is None and hi is None:
            if metric not in ALL_METRICS:
                raise ConfigError(
                    f"constraints.{metric} is not a known metric; allowed: {', '.join(ALL_METRICS)}."
                )
            continue
        out.append(Constraint(metric, hi, lo))
    return tuple(out)
