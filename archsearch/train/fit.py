"""Train one network on an in-memory Dataset: a plain PyTorch loop, fast on small CPUs.

The loop shuffles indices and slices batches straight out of the dataset tensors (no
per-sample DataLoader), augments whole batches on the device, runs in channels-last memory
format where that is faster (see ``resolve_memory_format``), and uses mixed precision on CUDA.
Augmentation (``trainer.augment``) uses what the dataset allows (``data.augment``).
It scores on the validation split after every epoch; the test split is only touched when
``evaluate_test=True``, so a search steered by ``val_acc`` never sees it.

The trainer knows nothing about searches or tracking: a search passes ``on_epoch_end`` to
report progress (and raises its own pruning exception from it), and records a
:class:`TrainingDiverged` as a failed trial.

Keys of ``trainer_cfg`` (see conf/trainer/default.yaml): ``epochs``, ``batch_size``,
``eval_batch_size``, ``max_seconds``, ``threads``, ``device``, ``precision``,
``memory_format``, ``augment``, ``optimizer`` (a Hydra ``_target_`` with ``_partial_: true``),
``schedule`` (``name``: onecycle | cosine | constant, ``warmup``: fraction of the steps) and
``label_smoothing``; ``dsd`` turns on Dense-Sparse-Dense training (see archsearch/dsd.py).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import hydra.utils
import torch
import torch.nn.functional as F
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from archsearch.data.datasets import Augment, Dataset
from archsearch.errors import ConfigError
from archsearch.hardware.runtime import MEMORY_FORMATS, resolve_memory_format, torch_threads

__all__ = [
    "PRECISIONS",
    "SCHEDULES",
    "TrainResult",
    "TrainerSettings",
    "TrainingDiverged",
    "augment_batch",
    "evaluate",
    "fit",
    "resolve_device",
    "resolve_memory_format",
]

SCHEDULES = ("onecycle", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: One-cycle starts at lr / 25 and ends at lr / 25 / 1e4, torch's OneCycleLR defaults.
ONECYCLE_START = 1 / 25
ONECYCLE_END = 1 / 25 / 1e4

EpochCallback = Callable[[int, dict[str, float]], bool | None]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite. Not a user error: the trial failed."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(f"training diverged: loss is {loss} at epoch {epoch}, step {step}")
        self.epoch = epoch
        self.step = step
        self.loss = loss


@dataclass
class TrainResult:
    """What a training run achieved and how fast.

    Attributes:
        val_acc_best: best validation accuracy over the evaluated epochs.
        val_acc_last: validation accuracy of the final weights.
        test_acc: test accuracy of the final weights, or None unless ``evaluate_test=True``.
        history: one dict per evaluated epoch: epoch, steps, train_loss, val_acc, lr, seconds
            (since the start of ``fit``); a budget stop mid-epoch adds a last, partial entry.
        images_per_s: training images per second of training-step time (evaluation excluded).
        epochs_done: fully completed epochs.
        steps_done: optimizer steps taken (out of ``steps_total`` planned).
        steps_total: optimizer steps the schedule was planned for.
        budget_exhausted: training stopped because ``max_seconds`` ran out.
        stopped_early: ``on_epoch_end`` returned True.
        seconds: wall time of the whole call, evaluation included.
        device, precision, memory_format: what was actually used.
    """

    val_acc_best: float
    val_acc_last: float
    test_acc: float | None
    history: list[dict[str, float]]
    images_per_s: float
    epochs_done: int
    steps_done: int
    steps_total: int
    budget_exhausted: bool
    stopped_early: bool
    seconds: float
    device: str = "cpu"
    precision: str = "fp32"
    memory_format: str = "contiguous"


@dataclass(frozen=True)
class TrainerSettings:
    """Validated trainer configuration (one ConfigError sentence per bad key).

    Defaults are those of conf/trainer/default.yaml, for callers that pass a partial dict.
    """

    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 256
    max_seconds: float | None = None
    threads: int | None = None
    device: str = "auto"
    precision: str = "auto"
    memory_format: str = "auto"
    augment: bool = False
    optimizer: Mapping[str, Any] = field(
        default_factory=lambda: {
            "_target_": "torch.optim.SGD",
            "_partial_": True,
            "lr": 0.1,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 5e-4,
        }
    )
    schedule: str = "onecycle"
    warmup: float = 0.25
    label_smoothing: float = 0.1

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> TrainerSettings:
        """Read a ``trainer`` config (DictConfig or dict); missing keys take the defaults above."""
        raw: Mapping[str, Any] = (
            OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg  # type: ignore[assignment]
        )
        base = cls()
        schedule = raw.get("schedule") or {}
        if not isinstance(schedule, Mapping):
            raise ConfigError("trainer.schedule must be a mapping with name and warmup.")
        settings = cls(
            epochs=_integer(raw, "epochs", base.epochs, minimum=1),
            batch_size=_integer(raw, "batch_size", base.batch_size, minimum=1),
            eval_batch_size=_integer(raw, "eval_batch_size", base.eval_batch_size, minimum=1),
            max_seconds=_optional_positive(raw, "max_seconds"),
            threads=_integer(raw, "threads", None, minimum=1),
            device=str(raw.get("device", base.device)),
            precision=_choice(raw, "precision", base.precision, PRECISIONS),
            memory_format=_choice(raw, "memory_format", base.memory_format, MEMORY_FORMATS),
            augment=_flag(raw, "augment", base.augment),
            optimizer=raw.get("optimizer", base.optimizer),
            schedule=_choice(schedule, "name", base.schedule, SCHEDULES, key="trainer.schedule.name"),
            warmup=_number(schedule, "warmup", base.warmup, 0.0, 1.0, key="trainer.schedule.warmup"),
            label_smoothing=_number(raw, "label_smoothing", base.label_smoothing, 0.0, 1.0),
        )
        if not isinstance(settings.optimizer, Mapping) or "_target_" not in settings.optimizer:
            raise ConfigError("trainer.optimizer must be a mapping with a _target_ such as torch.optim.SGD.")
        return settings


def _integer(raw: Mapping[str, Any], key: str, default: int | None, minimum: int) -> Any:
    value = raw.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"trainer.{key} must be an integer >= {minimum}, got {value!r}.")
    return value


def _flag(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"trainer.{key} must be true or false, got {value!r}.")
    return value


def _optional_positive(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"trainer.{key} must be a number of seconds > 0 or null, got {value!r}.")
    return float(value)


def _number(
    raw: Mapping[str, Any], name: str, default: float, low: float, high: float, key: str = ""
) -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value < high:
        raise ConfigError(f"{key or 'trainer.' + name} must be a number in [{low}, {high}), got {value!r}.")
    return float(value)


def _choice(raw: Mapping[str, Any], name: str, default: str, allowed: tuple[str, ...], key: str = "") -> str:
    value = raw.get(name, default)
    if value not in allowed:
        raise ConfigError(f"{key or 'trainer.' + name} is {value!r}; allowed: {', '.join(allowed)}.")
    return str(value)


# --------------------------------------------------------------------------- device and format


def resolve_device(name: str) -> torch.device:
    """``auto`` = the first CUDA device if there is one, else the CPU; otherwise a torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device is {name!r}; allowed: auto, cpu, cuda, cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device is {name!r} but torch sees no CUDA device; use auto or cpu.")
    return device


def _resolve_precision(choice: str, device: torch.device) -> str:
    if choice == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return choice


_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPE[precision])


def _model_memory_format(model: nn.Module) -> torch.memory_format:
    """Channels-last if any 4-D weight is stored so (a 1x1 or single-input-channel kernel fits both)."""
    for p in model.parameters():
        if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
    return torch.contiguous_format


# --------------------------------------------------------------------------- augmentation


def augment_batch(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """Randomly crop (with zero padding), flip and erase a batch (N, C, H, W), per image.

    Inputs are normalised, so zero fill is the dataset mean. Randomness comes only from
    ``generator`` (on ``x``'s device), so a seeded generator repeats the same augmentation.
    """
    n, c, h, w = x.shape
    dev = x.device
    if aug.crop_padding > 0:
        p = aug.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n, 1, 1, 1), generator=generator, device=dev)
        dx = torch.randint(0, 2 * p + 1, (n, 1, 1, 1), generator=generator, device=dev)
        rows = dy + torch.arange(h, device=dev).view(1, 1, h, 1)
        cols = dx + torch.arange(w, device=dev).view(1, 1, 1, w)
        x = padded[
            torch.arange(n, device=dev).view(n, 1, 1, 1),
            torch.arange(c, device=dev).view(1, c, 1, 1),
            rows,
            cols,
        ]
    if aug.flip:
        flip = torch.rand(n, 1, 1, 1, generator=generator, device=dev) < 0.5
        x = torch.where(flip, x.flip(3), x)
    if aug.erase_p > 0:
        x = _random_erase(x, aug.erase_p, generator)
    return x


def _random_erase(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomErasing (area 2-33%, aspect 0.3-3.3, zero fill), batched with masks."""
    n, _, h, w = x.shape
    dev = x.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, device=dev)

    area = h * w * uniform(0.02, 0.33)
    aspect = torch.exp(uniform(math.log(0.3), math.log(3.3)))
    eh = torch.sqrt(area * aspect).round().clamp(1, h)
    ew = torch.sqrt(area / aspect).round().clamp(1, w)
    y0 = (uniform(0.0, 1.0) * (h - eh + 1)).floor()
    x0 = (uniform(0.0, 1.0) * (w - ew + 1)).floor()
    apply = uniform(0.0, 1.0) < p
    r = torch.arange(h, device=dev).view(1, h)
    q = torch.arange(w, device=dev).view(1, w)
    in_rows = (r >= y0[:, None]) & (r < (y0 + eh)[:, None])
    in_cols = (q >= x0[:, None]) & (q < (x0 + ew)[:, None])
    mask = in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]
    return x.masked_fill(mask[:, None], 0.0)


# --------------------------------------------------------------------------- optimiser and schedule


def _optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    try:
        factory = hydra.utils.instantiate(dict(cfg))
        optimizer = factory(model.parameters())
    except (HydraException, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"trainer.optimizer cannot be built from _target_ {cfg.get('_target_')!r} with _partial_: true "
            f"({first})."
        ) from None
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"trainer.optimizer _target_ {cfg.get('_target_')!r} is not a torch optimizer.")
    return optimizer


def _scheduler(name: str, warmup: float, optimizer: torch.optim.Optimizer, total: int) -> Any:
    """A per-step learning-rate multiplier on the optimizer's configured (peak) lr.

    - ``onecycle``: as torch's OneCycleLR (cosine up from lr/25 over the warm-up, cosine down
      to lr/250000 at the last step) without its failure on runs of a handful of steps.
    - ``cosine``: linear warm-up from ~0, then cosine decay towards 0.
    - ``constant``: linear warm-up, then the configured lr.
    """
    warm = warmup * total

    def onecycle(step: int) -> float:
        if step < warm:
            return ONECYCLE_START + (1 - ONECYCLE_START) * (1 - math.cos(math.pi * step / warm)) / 2
        done = min(1.0, (step - warm) / max(1.0, total - 1 - warm))
        return ONECYCLE_END + (1 - ONECYCLE_END) * (1 + math.cos(math.pi * done)) / 2

    def warmed(step: int) -> float:
        if step < warm:
            return min(1.0, (step + 1) / warm)
        if name == "constant":
            return 1.0
        return (1 + math.cos(math.pi * (step - warm) / max(1.0, total - warm))) / 2

    return torch.optim.lr_scheduler.LambdaLR(optimizer, onecycle if name == "onecycle" else warmed)


# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    device: torch.device | str,
    *,
    precision: str = "fp32",
) -> float:
    """Accuracy of ``model`` on ``(x, y)``, in eval mode, without gradients.

    Inputs follow the model's memory format; the model's train/eval mode is restored after.
    """
    if len(y) == 0:
        return float("nan")
    device = torch.device(device)
    fmt = _model_memory_format(model)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    try:
        with torch.inference_mode(), _autocast(device, precision):
            for start in range(0, len(y), batch_size):
                xb = x[start : start + batch_size].to(device, non_blocking=True).contiguous(memory_format=fmt)
                yb = y[start : start + batch_size].to(device, non_blocking=True)
                correct += (model(xb).argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    return correct.item() / len(y)


# --------------------------------------------------------------------------- training


class _DivergenceWatch:
    """Raises TrainingDiverged at the first non-finite loss.

    On the CPU every loss is checked as it comes (reading it costs nothing); on CUDA losses are
    checked in groups so the device is not synchronised every step.
    """

    def __init__(self, device: torch.device) -> None:
        self.every = 1 if device.type == "cpu" else 32
        self.pending: list[tuple[int, int, torch.Tensor]] = []

    def add(self, epoch: int, step: int, loss: torch.Tensor) -> None:
        self.pending.append((epoch, step, loss))
        if len(self.pending) >= self.every:
            self.check()

    def check(self) -> None:
        if not self.pending:
            return
        values = torch.stack([loss for _, _, loss in self.pending]).float().cpu()
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            epoch, step, _ = self.pending[int(bad[0])]
            raise TrainingDiverged(epoch, step, float(values[int(bad[0])]))
        self.pending.clear()


def _batches(perm: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Full batches only (fixed shapes, and BatchNorm never sees a batch of one); every image is
    still seen over the epochs since each epoch draws a new permutation."""
    if len(perm) <= batch_size:
        return [perm]
    usable = len(perm) - len(perm) % batch_size
    return list(perm[:usable].split(batch_size))


def fit(
    model: nn.Module,
    data: Dataset,
    trainer_cfg: Mapping[str, Any],
    *,
    seed: int = 0,
    on_epoch_end: EpochCallback | None = None,
    evaluate_test: bool = False,
) -> TrainResult:
    """Train ``model`` on ``data.train_*``, scoring on ``data.val_*`` after every epoch.

    Args:
        model: a freshly built network (moved to the trainer's device and memory format here).
        data: the in-memory dataset from :func:`archsearch.data.datasets.load_dataset`.
        trainer_cfg: the ``trainer`` config (DictConfig or dict), see the module docstring.
        seed: seeds shuffling, augmentation and dropout (``torch.manual_seed``); weight
            initialisation is the caller's, before building the model. Same seed, config and
            thread count give the same accuracy on the CPU.
        on_epoch_end: called as ``on_epoch_end(epoch, metrics)`` after each full epoch with
            ``train_loss``, ``val_acc``, ``val_acc_best``, ``lr``, ``seconds`` and
            ``images_per_s``; returning True stops training, and what it raises propagates.
        evaluate_test: also score the final weights on the test split.

    Returns:
        A TrainResult; the time budget ``max_seconds`` is checked after every step, and the
        last validation (and test) pass runs after it.

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
        ConfigError: a trainer key is invalid.
    """
    settings = TrainerSettings.from_cfg(trainer_cfg)
    from archsearch.train.dsd import DsdSettings, fit_dsd

    if DsdSettings.from_trainer_cfg(trainer_cfg).enabled:
        # Each of its phases comes back here with trainer.dsd switched off.
        return fit_dsd(
            model, data, trainer_cfg, seed=seed, on_epoch_end=on_epoch_end, evaluate_test=evaluate_test
        )
    started = time.perf_counter()
    with torch_threads(settings.threads):
        device = resolve_device(settings.device)
        precision = _resolve_precision(settings.precision, device)
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError("trainer.precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU.")
        fmt = resolve_memory_format(settings.memory_format, model)
        torch.manual_seed(seed)
        generator = torch.Generator(device=device).manual_seed(seed)
        model.to(device=device, memory_format=fmt)  # type: ignore[call-overload]
        train_x, train_y = data.train_x.to(device), data.train_y.to(device)
        val_x, val_y = data.val_x.to(device), data.val_y.to(device)

        per_epoch = len(_batches(torch.arange(len(train_y)), settings.batch_size))
        steps_total = per_epoch * settings.epochs
        optimizer = _optimizer(settings.optimizer, model)
        scheduler = _scheduler(settings.schedule, settings.warmup, optimizer, steps_total)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        watch = _DivergenceWatch(device)
        augment = settings.augment and data.augment.active

        history: list[dict[str, float]] = []
        step = images = epochs_done = 0
        train_seconds = lr = 0.0
        budget_exhausted = stopped_early = False
        for epoch in range(1, settings.epochs + 1):
            model.train()
            tick = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            epoch_steps = 0
            perm = torch.randperm(len(train_y), generator=generator, device=device)
            for idx in _batches(perm, settings.batch_size):
                xb, yb = train_x[idx], train_y[idx]
                if augment:
                    xb = augment_batch(xb, data.augment, generator)
                xb = xb.contiguous(memory_format=fmt)
                with _autocast(device, precision):
                    loss = loss_fn(model(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                lr = float(optimizer.param_groups[0]["lr"])
                step += 1
                scheduler.step()
                epoch_steps += 1
                images += len(idx)
                loss = loss.detach()
                loss_sum += loss
                watch.add(epoch, step, loss)
                if settings.max_seconds is not None and time.perf_counter() - started >= settings.max_seconds:
                    budget_exhausted = True
                    break
            watch.check()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds += time.perf_counter() - tick
            val_acc = evaluate(model, val_x, val_y, settings.eval_batch_size, device, precision=precision)
            entry = {
                "epoch": float(epoch),
                "steps": float(step),
                "train_loss": (loss_sum / max(1, epoch_steps)).item(),
                "val_acc": val_acc,
                "val_acc_best": max([val_acc, *(h["val_acc"] for h in history)]),
                "lr": lr,
                "seconds": time.perf_counter() - started,
                "images_per_s": images / max(train_seconds, 1e-9),
            }
            history.append(entry)
            if budget_exhausted and epoch_steps < per_epoch:
                break
            epochs_done = epoch
            if on_epoch_end is not None and on_epoch_end(epoch, dict(entry)) is True:
                stopped_early = True
                break
            if budget_exhausted:
                break

        test_acc = None
        if evaluate_test:
            test_acc = evaluate(
                model, data.test_x, data.test_y, settings.eval_batch_size, device, precision=precision
            )
    return TrainResult(
        val_acc_best=max(h["val_acc"] for h in history),
        val_acc_last=history[-1]["val_acc"],
        test_acc=test_acc,
        history=history,
        images_per_s=images / max(train_seconds, 1e-9),
        epochs_done=epochs_done,
        steps_done=step,
        steps_total=steps_total,
        budget_exhausted=budget_exhausted,
        stopped_early=stopped_early,
        seconds=time.perf_counter() - started,
        device=str(device),
        precision=precision,
        memory_format="channels_last" if fmt == torch.channels_last else "contiguous",
    )
