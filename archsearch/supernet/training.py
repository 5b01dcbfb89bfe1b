"""Training the supernet once: the sandwich rule, checkpointed every epoch and resumable.

Each step trains the pool's largest network, its smallest, and ``random_per_step`` members at
sizes drawn uniformly in log-MACs (:class:`~archsearch.supernet.pool.CandidatePool`) on the same
batch, adding their gradients before one optimiser step (Yu & Huang's sandwich rule, as in
BigNAS). With ``distill`` the others learn the largest one's predictions. The optimiser,
schedule, batch size, label smoothing, augmentation, device and precision are the trainer's
(mixed precision on CUDA, as :func:`~archsearch.train.fit.fit` does).

A checkpoint (banks, optimiser, schedule, random states, history) is written atomically after
every epoch; a training started again with the same fingerprint goes on after the last
finished epoch.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.errors import ConfigError
from archsearch.hardware.runtime import torch_threads
from archsearch.supernet.network import Supernet
from archsearch.supernet.plan import BankPlan
from archsearch.train.augment import augment_batch
from archsearch.train.device import autocast, resolve_device, resolve_precision
from archsearch.train.fit import TrainingDiverged, lr_scheduler

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike
    from archsearch.supernet.pool import CandidatePool
    from archsearch.supernet.settings import SupernetSettings
    from archsearch.train.settings import TrainerSettings

if TYPE_CHECKING:
    pass

__all__ = ["SupernetRun", "load_checkpoint", "load_supernet", "train_supernet"]

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class SupernetRun:
    """What training the supernet left: the banks and one record per epoch."""

    supernet: Supernet
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0  # epochs already done by an earlier, interrupted training

    @property
    def seconds(self) -> float:
        return sum(h["seconds"] for h in self.history)


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it was written for ``fingerprint``; None when there is none.

    Raises:
        ConfigError: the file is another study's supernet (another fingerprint) or unreadable.
    """
    if not path.is_file():
        return None
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ConfigError(
            f"supernet checkpoint {path} cannot be read ({type(exc).__name__}); delete it."
        ) from None
    if state.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"supernet checkpoint {path} was trained for another space, data or settings; "
            "delete it or use another study.name."
        )
    return state


def load_supernet(path: Path, fingerprint: str) -> Supernet | None:
    """The trained supernet in the checkpoint at ``path`` (on the CPU), or None when there is none.

    Raises:
        ConfigError: the file is another study's supernet or unreadable.
    """
    state = load_checkpoint(path, fingerprint)
    if state is None:
        return None
    supernet = Supernet(BankPlan.from_dict(state["plan"]))
    supernet.load_state_dict(state["supernet"])
    return supernet


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_supernet(
    plan: BankPlan,
    pool: CandidatePool,
    data: DatasetLike,
    trainer: TrainerSettings,
    settings: SupernetSettings,
    *,
    seed: int = 0,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    on_epoch_end: EpochCallback | None = None,
    on_step: Callable[[], None] | None = None,
) -> SupernetRun:
    """Train a supernet of ``plan`` on ``data.train_*`` for ``settings.epochs`` epochs.

    Args:
        plan: the banks (:func:`~archsearch.supernet.plan.plan_banks`).
        pool: the feasible networks to train (:func:`~archsearch.supernet.pool.draw_pool`).
        checkpoint: written after every epoch; if it exists with ``fingerprint``, training
            resumes after its last epoch (and returns at once when it had finished).
        fingerprint: what the supernet was trained for (space, data, constraints, settings).
        on_epoch_end: ``(epoch, {"train_loss", "seconds", "images"})`` after each epoch.
        on_step: called after every optimiser step (a worker's heartbeat).

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
        ConfigError: the checkpoint belongs to another supernet.
    """
    with torch_threads(trainer.threads):
        device = resolve_device(trainer.device)
        precision = resolve_precision(trainer.precision, device)
        state = load_checkpoint(checkpoint, fingerprint) if checkpoint is not None else None
        supernet = Supernet(BankPlan.from_dict(state["plan"]) if state is not None else plan, seed=seed)
        if state is not None:
            supernet.load_state_dict(state["supernet"])
        supernet.to(device)
        per_epoch = max(1, len(data.train_y) // trainer.batch_size)
        optimizer = trainer.optimizer.build(supernet.parameters())
        total = per_epoch * settings.epochs
        scheduler = lr_scheduler(trainer.schedule.name, trainer.schedule.warmup, optimizer, total)
        torch.manual_seed(seed)
        loop = _Loop(
            _Step(supernet, pool, settings, trainer, device, precision, optimizer, random.Random(seed)),
            scheduler,
            torch.Generator().manual_seed(seed),
            SupernetRun(supernet),
        )
        if state is not None:
            loop.restore(state)
        for epoch in range(len(loop.run.history) + 1, settings.epochs + 1):
            record = loop.epoch(data, trainer, epoch, per_epoch, on_step)
            if checkpoint is not None:
                _save(checkpoint, {**loop.state(), "fingerprint": fingerprint, "epochs": settings.epochs})
            if on_epoch_end is not None:
                on_epoch_end(epoch, dict(record))
    return loop.run


@dataclass
class _Loop:
    """What an epoch advances and a checkpoint keeps: the step, schedule, random states, history."""

    step: _Step
    scheduler: Any
    generator: torch.Generator
    run: SupernetRun

    def epoch(
        self,
        data: DatasetLike,
        trainer: TrainerSettings,
        epoch: int,
        per_epoch: int,
        on_step: Callable[[], None] | None,
    ) -> dict[str, float]:
        """One pass over a fresh permutation of the training split (full batches only)."""
        tick = time.perf_counter()
        device = self.step.device
        augment = data.augment if trainer.augment and data.augment.active else None
        perm = torch.randperm(len(data.train_y), generator=self.generator)
        loss_sum, steps = 0.0, 0
        for idx in perm[: per_epoch * trainer.batch_size].split(trainer.batch_size):
            xb = data.train_x[idx].to(device)
            if augment is not None:
                xb = augment_batch(xb, augment, self.generator)
            loss_sum += self.step(xb, data.train_y[idx].to(device), epoch, steps)
            self.scheduler.step()
            steps += 1
            if on_step is not None:
                on_step()
        record = {
            "epoch": float(epoch),
            "train_loss": loss_sum / max(1, steps),
            "seconds": time.perf_counter() - tick,
            "images": float(steps * trainer.batch_size),
        }
        self.run.history.append(record)
        return record

    def state(self) -> dict[str, Any]:
        return {
            "plan": self.run.supernet.plan.to_dict(),
            "supernet": self.run.supernet.state_dict(),
            "optimizer": self.step.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "random": self.step.rng.getstate(),
            "torch": torch.get_rng_state(),  # dropout draws from it
            "history": self.run.history,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.step.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.step.rng.setstate(state["random"])
        torch.set_rng_state(state["torch"])
        self.run.history = list(state["history"])
        self.run.resumed_from = len(self.run.history)


class _Step:
    """One sandwich step: forward and backward of each sampled network, then one optimiser step."""

    def __init__(
        self,
        supernet: Supernet,
        pool: CandidatePool,
        settings: SupernetSettings,
        trainer: TrainerSettings,
        device: torch.device,
        precision: str,
        optimizer: torch.optim.Optimizer,
        rng: random.Random,
    ) -> None:
        self.supernet = supernet
        self.pool = pool
        self.settings = settings
        self.device = device
        self.precision = precision
        self.optimizer = optimizer
        self.rng = rng
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=trainer.label_smoothing)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int, step: int) -> float:
        nets = [self.pool.largest, self.pool.smallest]
        nets += [self.pool.by_size(self.rng) for _ in range(self.settings.random_per_step)]
        self.optimizer.zero_grad(set_to_none=True)
        teacher: torch.Tensor | None = None
        first = 0.0
        for i, spec in enumerate(nets):
            candidate = self.supernet.candidate(spec)
            candidate.module.train()
            with autocast(self.device, self.precision):
                logits = self.supernet.run(candidate, xb)
                if i > 0 and teacher is not None:
                    loss = F.kl_div(F.log_softmax(logits.float(), 1), teacher, reduction="batchmean")
                else:
                    loss = self.loss_fn(logits, yb)
            if i == 0:
                first = float(loss.detach())
                if not torch.isfinite(loss.detach()):
                    raise TrainingDiverged(epoch, step, first)
                if self.settings.distill:
                    teacher = F.softmax(logits.detach().float(), 1)
            # Averaged, so the step is the size the trainer's learning rate was set for one network.
            self.scaler.scale(loss / len(nets)).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return first
