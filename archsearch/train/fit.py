"""Train one network on a Dataset: a plain PyTorch loop, fast on small CPUs.

The loop shuffles indices and slices batches straight out of the dataset tensors, or out of the
memory-mapped cache of an image folder, normalised per batch (no per-sample DataLoader),
augments whole batches on the device, runs in channels-last memory format where that is faster
(see ``resolve_memory_format``), and uses mixed precision on CUDA.
Augmentation (``settings.augment``) uses what the dataset allows (``data.augment``).
It scores on the validation split after every epoch; the test split is only touched when
``evaluate_test=True``, so a search steered by ``val_acc`` never sees it.

The trainer knows nothing about searches or tracking: a search passes ``on_epoch_end`` to
report progress (and raises its own pruning exception from it), and records a
:class:`TrainingDiverged` as a failed trial. What to do comes as a validated
:class:`~archsearch.train.settings.TrainerSettings`; ``settings.dsd`` turns on Dense-Sparse-Dense
training (see archsearch/train/dsd.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from archsearch.hardware.runtime import resolve_memory_format, torch_threads
from archsearch.train.augment import augment_batch
from archsearch.train.device import autocast, resolve_device, resolve_precision
from archsearch.train.dsd import fit_dsd
from archsearch.train.evaluate import evaluate
from archsearch.train.result import TrainResult
from archsearch.train.settings import TrainerSettings

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike

    # Only for annotations: the dataset module reads configs, which the trainer never does.
    from archsearch.data.datasets import Augment
    from archsearch.data.images import Images

__all__ = ["EpochCallback", "FitFn", "TrainingDiverged", "fit", "lr_scheduler"]

#: One-cycle starts at lr / 25 and ends at lr / 25 / 1e4, torch's OneCycleLR defaults.
ONECYCLE_START = 1 / 25
ONECYCLE_END = 1 / 25 / 1e4

EpochCallback = Callable[[int, dict[str, float]], bool | None]


class FitFn(Protocol):
    """What trains a candidate: :func:`fit`, or a stand-in with its signature (tests pass a fake
    with fixed results, :class:`archsearch.testing.FixedCostFit`)."""

    def __call__(
        self,
        model: nn.Module,
        data: DatasetLike,
        settings: TrainerSettings,
        *,
        seed: int = 0,
        on_epoch_end: EpochCallback | None = None,
        evaluate_test: bool = False,
    ) -> TrainResult: ...


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite. Not a user error: the trial failed."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(f"training diverged: loss is {loss} at epoch {epoch}, step {step}")
        self.epoch = epoch
        self.step = step
        self.loss = loss

    def __reduce__(self) -> tuple[type[TrainingDiverged], tuple[int, int, float]]:
        # Pickled with its own arguments, so a worker process (joblib, a process pool) can raise it.
        return (type(self), (self.epoch, self.step, self.loss))


# --------------------------------------------------------------------------- optimiser and schedule


def lr_scheduler(name: str, warmup: float, optimizer: torch.optim.Optimizer, total: int) -> Any:
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


@dataclass
class _Progress:
    """How far a run has got; updated after every step."""

    started: float
    history: list[dict[str, float]] = field(default_factory=list)
    step: int = 0
    images: int = 0
    epochs_done: int = 0
    train_seconds: float = 0.0
    lr: float = 0.0
    budget_exhausted: bool = False
    stopped_early: bool = False


@dataclass
class _Loop:
    """What every training step uses, set up once per run."""

    model: nn.Module
    settings: TrainerSettings
    device: torch.device
    precision: str
    memory_format: torch.memory_format
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    watch: _DivergenceWatch
    augment: Augment | None


def fit(
    model: nn.Module,
    data: DatasetLike,
    settings: TrainerSettings,
    *,
    seed: int = 0,
    on_epoch_end: EpochCallback | None = None,
    evaluate_test: bool = False,
) -> TrainResult:
    """Train ``model`` on ``data.train_*``, scoring on ``data.val_*`` after every epoch.

    Args:
        model: a freshly built network (moved to the trainer's device and memory format here).
        data: the in-memory dataset from :func:`archsearch.data.datasets.load_dataset`.
        settings: how to train, from :meth:`TrainerSettings.from_mapping` at the config's edge.
        seed: seeds shuffling, augmentation and dropout (``torch.manual_seed``); weight
            initialisation is the caller's, before building the model. Same seed, settings and
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
        ConfigError: the device or precision is not available on this machine.
    """
    if settings.dsd.enabled:
        # DSD is built on this function: each phase comes back here with dsd off.
        return fit_dsd(
            model,
            data,
            settings,
            seed=seed,
            on_epoch_end=on_epoch_end,
            evaluate_test=evaluate_test,
            phase_fit=fit,
        )
    progress = _Progress(started=time.perf_counter())
    with torch_threads(settings.threads):
        device = resolve_device(settings.device)
        precision = resolve_precision(settings.precision, device)
        fmt = resolve_memory_format(settings.memory_format, model)
        torch.manual_seed(seed)
        generator = torch.Generator(device=device).manual_seed(seed)
        model.to(device=device, memory_format=fmt)  # type: ignore[call-overload]
        train = data.train_x.to(device), data.train_y.to(device)
        val = data.val_x.to(device), data.val_y.to(device)

        per_epoch = len(_batches(torch.arange(len(train[1])), settings.batch_size))
        steps_total = per_epoch * settings.epochs
        optimizer = settings.optimizer.build(model.parameters())
        loop = _Loop(
            model=model,
            settings=settings,
            device=device,
            precision=precision,
            memory_format=fmt,
            generator=generator,
            optimizer=optimizer,
            scheduler=lr_scheduler(settings.schedule.name, settings.schedule.warmup, optimizer, steps_total),
            scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
            loss_fn=nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing),
            watch=_DivergenceWatch(device),
            augment=data.augment if settings.augment and data.augment.active else None,
        )
        _run_epochs(loop, progress, train, val, per_epoch, on_epoch_end)
        test_acc = None
        if evaluate_test:
            test_acc = evaluate(
                model, data.test_x, data.test_y, settings.eval_batch_size, device, precision=precision
            )
    return _result(progress, loop, steps_total, test_acc)


def _run_epochs(
    loop: _Loop,
    progress: _Progress,
    train: tuple[Images, torch.Tensor],
    val: tuple[Images, torch.Tensor],
    per_epoch: int,
    on_epoch_end: EpochCallback | None,
) -> None:
    """Train and validate epoch by epoch until the epochs, the budget or the callback end it."""
    settings = loop.settings
    for epoch in range(1, settings.epochs + 1):
        tick = time.perf_counter()
        loss_sum, epoch_steps = _train_epoch(loop, progress, epoch, *train)
        if loop.device.type == "cuda":
            torch.cuda.synchronize(loop.device)
        progress.train_seconds += time.perf_counter() - tick
        val_acc = evaluate(loop.model, *val, settings.eval_batch_size, loop.device, precision=loop.precision)
        entry = {
            "epoch": float(epoch),
            "steps": float(progress.step),
            "train_loss": (loss_sum / max(1, epoch_steps)).item(),
            "val_acc": val_acc,
            "val_acc_best": max([val_acc, *(h["val_acc"] for h in progress.history)]),
            "lr": progress.lr,
            "seconds": time.perf_counter() - progress.started,
            "images_per_s": progress.images / max(progress.train_seconds, 1e-9),
        }
        progress.history.append(entry)
        if progress.budget_exhausted and epoch_steps < per_epoch:
            return
        progress.epochs_done = epoch
        if on_epoch_end is not None and on_epoch_end(epoch, dict(entry)) is True:
            progress.stopped_early = True
            return
        if progress.budget_exhausted:
            return


def _train_epoch(
    loop: _Loop, progress: _Progress, epoch: int, train_x: Images, train_y: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """One pass over a fresh permutation of the training split; returns the loss sum and steps.

    Stops early, setting ``progress.budget_exhausted``, once ``max_seconds`` have passed.
    """
    max_seconds = loop.settings.max_seconds
    loop.model.train()
    loss_sum = torch.zeros((), device=loop.device)
    epoch_steps = 0
    perm = torch.randperm(len(train_y), generator=loop.generator, device=loop.device)
    for idx in _batches(perm, loop.settings.batch_size):
        xb, yb = train_x[idx], train_y[idx]
        if loop.augment is not None:
            xb = augment_batch(xb, loop.augment, loop.generator)
        xb = xb.contiguous(memory_format=loop.memory_format)
        with autocast(loop.device, loop.precision):
            loss = loop.loss_fn(loop.model(xb), yb)
        loop.optimizer.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        progress.lr = float(loop.optimizer.param_groups[0]["lr"])
        progress.step += 1
        loop.scheduler.step()
        epoch_steps += 1
        progress.images += len(idx)
        loss = loss.detach()
        loss_sum += loss
        loop.watch.add(epoch, progress.step, loss)
        if max_seconds is not None and time.perf_counter() - progress.started >= max_seconds:
            progress.budget_exhausted = True
            break
    loop.watch.check()
    return loss_sum, epoch_steps


def _result(progress: _Progress, loop: _Loop, steps_total: int, test_acc: float | None) -> TrainResult:
    return TrainResult(
        val_acc_best=max(h["val_acc"] for h in progress.history),
        val_acc_last=progress.history[-1]["val_acc"],
        test_acc=test_acc,
        history=progress.history,
        images_per_s=progress.images / max(progress.train_seconds, 1e-9),
        epochs_done=progress.epochs_done,
        steps_done=progress.step,
        steps_total=steps_total,
        budget_exhausted=progress.budget_exhausted,
        stopped_early=progress.stopped_early,
        seconds=time.perf_counter() - progress.started,
        device=str(loop.device),
        precision=loop.precision,
        memory_format="channels_last" if loop.memory_format == torch.channels_last else "contiguous",
    )
