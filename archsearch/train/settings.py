"""Typed, frozen trainer settings: the one place the ``trainer`` config is checked and defaulted.

The command line turns the ``trainer`` block of its config (layout: conf/trainer/default.yaml)
into a :class:`TrainerSettings` with :meth:`TrainerSettings.from_mapping` before anything is
trained, so a bad key fails at once with one :class:`~archsearch.errors.ConfigError` sentence
that names it. Everything below that edge (:func:`archsearch.train.fit.fit`, DSD, searches)
takes the settings object and never sees a config mapping. The defaults here are those of
conf/trainer/default.yaml.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from archsearch.checks import check_choice, check_flag, check_int, check_number, known_keys
from archsearch.errors import ConfigError
from archsearch.hardware.choices import MEMORY_FORMATS
from archsearch.targets import check_target

if TYPE_CHECKING:  # torch loads only when an optimizer is checked or built
    import torch

__all__ = [
    "DEVICE_NAMES",
    "PRECISIONS",
    "SCHEDULES",
    "DsdSettings",
    "OptimizerSettings",
    "ScheduleSettings",
    "TrainerSettings",
]

SCHEDULES = ("onecycle", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICE_NAMES = "auto, cpu, cuda, cuda:N, mps"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_OPTIMIZER_EXAMPLES = "torch.optim.SGD or torch.optim.AdamW"


@dataclass(frozen=True)
class OptimizerSettings:
    """A torch optimizer class by dotted name, and the keyword arguments it is built with."""

    target: str = "torch.optim.SGD"  # dotted name of a torch.optim.Optimizer subclass
    # (name, value) pairs sorted by name, sequences as tuples: immutable, hashable and picklable.
    kwargs: tuple[tuple[str, Any], ...] = (
        ("lr", 0.1),  # peak learning rate of the schedule
        ("momentum", 0.9),
        ("nesterov", True),
        ("weight_decay", 5e-4),
    )

    def __post_init__(self) -> None:
        # Sorting makes equality independent of the order the keys were written in.
        pairs = sorted(dict(self.kwargs).items())
        object.__setattr__(self, "kwargs", tuple((k, _freeze(v)) for k, v in pairs))

    @property
    def lr(self) -> float | None:
        """The configured learning rate, or None when the optimizer's own default applies."""
        lr = dict(self.kwargs).get("lr")
        return None if lr is None else float(lr)

    def with_lr(self, lr: float) -> OptimizerSettings:
        """The same optimizer with another learning rate."""
        return dataclasses.replace(self, kwargs=tuple({**dict(self.kwargs), "lr": lr}.items()))

    def build(self, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        """Validate, then construct the optimizer over ``params``.

        Raises:
            ConfigError: the target or an argument is invalid (keys named under ``trainer.optimizer``).
        """
        cls, kwargs = _checked_optimizer(self.target, dict(self.kwargs), "trainer.optimizer")
        return cls(params, **kwargs)

    @classmethod
    def from_mapping(cls, raw: Any, key: str = "trainer.optimizer") -> OptimizerSettings:
        """Read an optimizer block: ``_target_``, ``_partial_`` (ignored) and the class's arguments."""
        if not isinstance(raw, Mapping) or "_target_" not in raw:
            raise ConfigError(f"{key} must be a mapping with a _target_ such as {_OPTIMIZER_EXAMPLES}.")
        # _partial_ is Hydra's marker for "called later with the parameters", which is always so here.
        kwargs = {str(k): v for k, v in raw.items() if k not in ("_target_", "_partial_")}
        _, checked = _checked_optimizer(raw["_target_"], kwargs, key)
        return cls(target=raw["_target_"], kwargs=tuple(checked.items()))

    def to_mapping(self) -> dict[str, Any]:
        """The YAML layout: ``_target_``, ``_partial_: true`` and the arguments (tuples as lists)."""
        return {"_target_": self.target, "_partial_": True, **{k: _thaw(v) for k, v in self.kwargs}}


@dataclass(frozen=True)
class ScheduleSettings:
    """The per-step learning-rate schedule, a multiplier on the optimizer's (peak) lr."""

    name: str = "onecycle"  # onecycle | cosine (linear warm-up, then cosine to 0) | constant
    warmup: float = 0.25  # fraction of all steps spent warming up

    @classmethod
    def from_mapping(cls, raw: Any, key: str = "trainer.schedule") -> ScheduleSettings:
        """Read a schedule block (``name``, ``warmup``); missing keys take the defaults."""
        block = known_keys(raw, key, ("name", "warmup"))
        base = cls()
        return cls(
            name=check_choice(f"{key}.name", block.get("name", base.name), SCHEDULES),
            warmup=check_number(f"{key}.warmup", block.get("warmup", base.warmup), "in [0, 1)", _unit),
        )


@dataclass(frozen=True)
class DsdSettings:
    """Dense-Sparse-Dense training (Han et al. 2016), see archsearch/train/dsd.py."""

    enabled: bool = False  # dense, then sparse (mask held), then dense again, within trainer.epochs
    sparsity: float = 0.3  # share of each conv/linear layer's weights zeroed in the sparse phase
    sparse: float = 0.25  # fraction of trainer.epochs trained sparse
    redense: float = 0.25  # fraction of trainer.epochs retrained dense at the end
    sparse_lr: float = 1.0  # sparse phase peak lr, as a multiple of optimizer.lr
    redense_lr: float = 0.1  # final dense phase peak lr, as a multiple of optimizer.lr (the paper: 1/10)

    @classmethod
    def from_mapping(cls, raw: Any, key: str = "trainer.dsd") -> DsdSettings:
        """Read a dsd block (absent or null = off); missing keys take the defaults."""
        names = tuple(f.name for f in dataclasses.fields(cls))
        block = known_keys(raw, key, names)
        base = cls()
        values: dict[str, Any] = {"enabled": check_flag(f"{key}.enabled", block.get("enabled", base.enabled))}
        for name in names[1:]:
            bounded = name in ("sparsity", "sparse", "redense")
            values[name] = check_number(
                f"{key}.{name}",
                block.get(name, getattr(base, name)),
                "in (0, 1)" if bounded else "> 0",
                (lambda v: 0 < v < 1) if bounded else _positive,
            )
        settings = cls(**values)
        if settings.sparse + settings.redense >= 1.0:
            raise ConfigError(
                f"{key}.sparse + {key}.redense is {settings.sparse + settings.redense:g}; "
                "keep it below 1 so the dense phase has epochs."
            )
        return settings

    def phase_epochs(self, epochs: int) -> tuple[int, int, int]:
        """Epochs of the dense, sparse and re-dense phases; they add up to ``epochs``."""
        sparse = round(epochs * self.sparse)
        redense = round(epochs * self.redense)
        dense = epochs - sparse - redense
        if min(dense, sparse, redense) < 1:
            raise ConfigError(
                f"trainer.epochs={epochs} split by trainer.dsd.sparse={self.sparse:g} and "
                f"trainer.dsd.redense={self.redense:g} leaves a phase without epochs "
                f"({dense}/{sparse}/{redense}); train for more epochs."
            )
        return dense, sparse, redense


@dataclass(frozen=True)
class TrainerSettings:
    """How :func:`archsearch.train.fit.fit` trains one network."""

    epochs: int = 10  # passes over the training split
    batch_size: int = 128  # training images per optimizer step
    eval_batch_size: int = 256  # validation/test batch; on a small CPU 256 beats 1024 by 1.5x
    max_seconds: float | None = None  # time budget from the start of training, checked every step
    threads: int | None = None  # torch.set_num_threads while training; None keeps torch's default
    device: str = "auto"  # auto = CUDA if available, else CPU; or cpu, cuda, cuda:N, mps
    precision: str = "auto"  # auto = fp16 autocast on CUDA, fp32 on CPU; or fp32, bf16, fp16
    memory_format: str = "auto"  # auto = channels_last for conv nets; or channels_last, contiguous
    augment: bool = False  # apply the dataset's augmentation (crop/flip/erase) to training batches
    label_smoothing: float = 0.1  # of the cross-entropy loss
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)  # built afresh per fit
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)  # per-step lr multiplier
    dsd: DsdSettings = field(default_factory=DsdSettings)  # off unless dsd.enabled

    def __post_init__(self) -> None:
        """Built from Python (``TrainerSettings(batch_size=0)``), a bad value is refused as from a config."""
        for name in ("epochs", "batch_size", "eval_batch_size"):
            check_int(f"trainer.{name}", getattr(self, name), 1)
        if self.threads is not None:
            check_int("trainer.threads", self.threads, 1, " or null")
        if self.max_seconds is not None:
            check_number("trainer.max_seconds", self.max_seconds, "of seconds > 0 or null", _positive)
        _device(self.device, "trainer.device")
        check_choice("trainer.precision", self.precision, PRECISIONS)
        check_choice("trainer.memory_format", self.memory_format, MEMORY_FORMATS)
        check_flag("trainer.augment", self.augment)
        check_number("trainer.label_smoothing", self.label_smoothing, "in [0, 1)", _unit)
        for name, kind in (
            ("optimizer", OptimizerSettings),
            ("schedule", ScheduleSettings),
            ("dsd", DsdSettings),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"trainer.{name} must be a {kind.__name__}, got {getattr(self, name)!r}.")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], key: str = "trainer") -> TrainerSettings:
        """Validate every key of a ``trainer`` block; missing keys take the defaults.

        Args:
            raw: the block, laid out as conf/trainer/default.yaml.
            key: where the block sits in the whole config, to name keys in messages.

        Raises:
            ConfigError: one sentence naming the first bad or unknown key and what is allowed.
        """
        names = tuple(f.name for f in dataclasses.fields(cls))
        block = known_keys(raw, key, names)
        base = cls()

        def get(name: str) -> Any:
            return block.get(name, getattr(base, name))

        threads = get("threads")
        max_seconds = get("max_seconds")
        settings = cls(
            epochs=check_int(f"{key}.epochs", get("epochs"), 1),
            batch_size=check_int(f"{key}.batch_size", get("batch_size"), 1),
            eval_batch_size=check_int(f"{key}.eval_batch_size", get("eval_batch_size"), 1),
            max_seconds=None
            if max_seconds is None
            else check_number(f"{key}.max_seconds", max_seconds, "of seconds > 0 or null", _positive),
            threads=None if threads is None else check_int(f"{key}.threads", threads, 1, " or null"),
            device=_device(get("device"), f"{key}.device"),
            precision=check_choice(f"{key}.precision", get("precision"), PRECISIONS),
            memory_format=check_choice(f"{key}.memory_format", get("memory_format"), MEMORY_FORMATS),
            augment=check_flag(f"{key}.augment", get("augment")),
            label_smoothing=check_number(
                f"{key}.label_smoothing", get("label_smoothing"), "in [0, 1)", _unit
            ),
            optimizer=OptimizerSettings.from_mapping(block["optimizer"], f"{key}.optimizer")
            if block.get("optimizer") is not None
            else base.optimizer,
            schedule=ScheduleSettings.from_mapping(block.get("schedule"), f"{key}.schedule"),
            dsd=DsdSettings.from_mapping(block.get("dsd"), f"{key}.dsd"),
        )
        if settings.dsd.enabled:
            if settings.optimizer.lr is None:
                raise ConfigError(f"{key}.dsd needs {key}.optimizer.lr to scale each phase's learning rate.")
            settings.dsd.phase_epochs(settings.epochs)
        return settings

    def to_mapping(self) -> dict[str, Any]:
        """The YAML layout of conf/trainer/default.yaml; ``from_mapping`` reads it back equal."""
        scalars = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {
            **scalars,
            "optimizer": self.optimizer.to_mapping(),
            "schedule": dataclasses.asdict(self.schedule),
            "dsd": dataclasses.asdict(self.dsd),
        }


# --------------------------------------------------------------------------- optimizer checks


def _checked_optimizer(
    target: Any, kwargs: Mapping[str, Any], key: str
) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """The optimizer class named by ``target`` and ``kwargs`` checked against its signature.

    The class's own argument checks run too, so what it refuses (say, Nesterov without
    momentum) is reported now rather than when training starts.
    """
    cls = _optimizer_class(target, f"{key}._target_")
    signature = list(inspect.signature(cls).parameters.values())[1:]  # [0] is the parameters
    accepted = {p.name: p.default for p in signature if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    unknown = [f"{key}.{name}" for name in kwargs if name not in accepted]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in signature):
        verb = "is not an argument" if len(unknown) == 1 else "are not arguments"
        raise ConfigError(f"{', '.join(unknown)} {verb} of {target}; accepted: {', '.join(accepted)}.")
    checked = {
        name: _optimizer_value(value, accepted.get(name), f"{key}.{name}") for name, value in kwargs.items()
    }
    try:
        # An empty parameter list: the class checks its arguments first, then torch's base class
        # refuses the list before it adds a parameter group, which would import torch._dynamo
        # (1.2 s of start-up here that a fake-trained or cost-only sweep never needs).
        cls([], **checked)
    except (TypeError, ValueError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        if reason != "optimizer got an empty parameter list":
            raise ConfigError(f"{key} is refused by {target}: {reason}.") from None
    return cls, checked


def _optimizer_class(target: Any, key: str) -> type[torch.optim.Optimizer]:
    import torch

    found: Any = None
    check_target("trainer.optimizer", target, shown=key.removesuffix("._target_"))
    if isinstance(target, str) and "." in target:
        module, _, name = target.rpartition(".")
        try:
            found = getattr(importlib.import_module(module), name, None)
        except (ImportError, ValueError):
            found = None
    if not (isinstance(found, type) and issubclass(found, torch.optim.Optimizer)):
        raise ConfigError(
            f"{key} must name a torch.optim.Optimizer subclass such as {_OPTIMIZER_EXAMPLES}, got {target!r}."
        )
    return found


def _optimizer_value(value: Any, default: Any, key: str) -> Any:
    """``value`` if it has the kind of the argument's default (number, flag, tuple of numbers)."""
    if key.endswith(".lr"):
        check_number(key, value, "> 0", _positive)
    elif isinstance(default, bool):
        check_flag(key, value)
    elif isinstance(default, int | float):
        check_number(key, value)
    elif isinstance(default, tuple):
        if not (_sequence(value) and len(value) == len(default)):
            raise ConfigError(f"{key} must be a list of {len(default)} numbers, got {value!r}.")
        for i, item in enumerate(value):
            check_number(f"{key}[{i}]", item)
        return tuple(value)
    return _freeze(value)


# --------------------------------------------------------------------------- value checks


def _positive(value: float) -> bool:
    return value > 0


def _unit(value: float) -> bool:
    return 0 <= value < 1


def _device(value: Any, key: str) -> str:
    """A device name by its form only, so a config can be checked on a machine without the device."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ConfigError(f"{key} is {value!r}; allowed: {DEVICE_NAMES}.")
    return value


def _sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if _sequence(value) else value


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value
