"""Dense-Sparse-Dense training (Han et al., "DSD: Dense-Sparse-Dense Training for Deep Neural
Networks", ICLR 2017, arXiv:1607.04381), the ``trainer.dsd`` option of :func:`archsearch.train.fit.fit`.

Three phases share ``trainer.epochs``:

1. dense: ordinary training;
2. sparse: the smallest-magnitude ``sparsity`` share of every conv and linear layer's weights is
   zeroed and held at zero while training goes on (gradients are masked, and the mask is
   reapplied after every optimizer step, so momentum and weight decay cannot revive a weight);
3. re-dense: the mask is dropped and the whole network trains again at a lower learning rate.

Each phase is one ordinary :func:`~archsearch.train.fit.fit` call with its own optimizer and schedule
(peak learning rate ``trainer.optimizer.lr`` times the phase's factor), so everything the trainer
does (augmentation, precision, time budget, ``on_epoch_end``) applies unchanged; epochs are
numbered across the phases.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from archsearch.errors import ConfigError

__all__ = ["DsdSettings", "fit_dsd", "hold_masks", "magnitude_masks", "prunable_weights"]

KEYS = ("enabled", "sparsity", "sparse", "redense", "sparse_lr", "redense_lr")


@dataclass(frozen=True)
class DsdSettings:
    """The validated ``trainer.dsd`` block.

    Attributes:
        enabled: train dense-sparse-dense instead of plainly.
        sparsity: share of each conv/linear layer's weights zeroed in the sparse phase.
        sparse: fraction of ``trainer.epochs`` trained sparse.
        redense: fraction of ``trainer.epochs`` retrained dense at the end.
        sparse_lr: the sparse phase's peak learning rate, as a multiple of ``trainer.optimizer.lr``.
        redense_lr: the re-dense phase's peak learning rate, as a multiple of ``trainer.optimizer.lr``.
    """

    enabled: bool = False
    sparsity: float = 0.3
    sparse: float = 0.25
    redense: float = 0.25
    sparse_lr: float = 1.0
    redense_lr: float = 0.1

    @classmethod
    def from_trainer_cfg(cls, trainer_cfg: Mapping[str, Any] | DictConfig) -> DsdSettings:
        """Read ``trainer.dsd`` (absent = off); one ConfigError sentence per bad key."""
        raw: Any = trainer_cfg.get("dsd")
        if isinstance(raw, DictConfig):
            raw = OmegaConf.to_container(raw, resolve=True)
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError(f"trainer.dsd must be a mapping with keys {', '.join(KEYS)}.")
        unknown = set(raw) - set(KEYS)
        if unknown:
            raise ConfigError(
                f"trainer.dsd has unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                f"allowed: {', '.join(KEYS)}."
            )
        enabled = raw.get("enabled", False)
        if not isinstance(enabled, bool):
            raise ConfigError(f"trainer.dsd.enabled must be true or false, got {enabled!r}.")
        base = cls()
        values = {}
        for key, low, high in (
            ("sparsity", 0.0, 1.0),
            ("sparse", 0.0, 1.0),
            ("redense", 0.0, 1.0),
            ("sparse_lr", 0.0, None),
            ("redense_lr", 0.0, None),
        ):
            v = raw.get(key, getattr(base, key))
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not (low < v and (high is None or v < high))
            ):
                bound = f"in ({low:g}, {high:g})" if high is not None else f"> {low:g}"
                raise ConfigError(f"trainer.dsd.{key} must be a number {bound}, got {v!r}.")
            values[key] = float(v)
        settings = cls(enabled=enabled, **values)
        if settings.sparse + settings.redense >= 1.0:
            raise ConfigError(
                f"trainer.dsd.sparse + trainer.dsd.redense is {settings.sparse + settings.redense:g}; "
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


def prunable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight of every conv and linear layer, by parameter name (biases and norms are kept dense)."""
    return {
        f"{name}.weight" if name else "weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    }


def magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Per layer, a 0/1 mask that zeroes exactly ``round(sparsity * numel)`` smallest-magnitude weights.

    Ties in magnitude are broken by position, so the count is exact even among equal weights.
    """
    masks = {}
    for name, weight in prunable_weights(model).items():
        flat = weight.detach().abs().flatten()
        k = round(sparsity * flat.numel())
        mask = torch.ones_like(flat)
        if k:
            mask[torch.argsort(flat, stable=True)[:k]] = 0.0
        masks[name] = mask.view_as(weight)
    return masks


@contextlib.contextmanager
def hold_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Zero the masked weights and keep them zero through every optimizer step while inside.

    Gradients of masked weights are zeroed as they are computed, so momentum buffers and
    adaptive statistics never see them, and after every step of any optimizer holding these
    parameters the mask is multiplied in again (weight decay or a stale momentum buffer would
    otherwise move them). Everything is undone on exit; the weights stay where training left them.
    """
    weights = prunable_weights(model)
    held = [(weights[name], mask.to(weights[name].device)) for name, mask in masks.items()]
    ids = {id(p) for p, _ in held}
    with torch.no_grad():
        for p, mask in held:
            p.mul_(mask)

    def reapply(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if any(id(p) in ids for group in optimizer.param_groups for p in group["params"]):
            with torch.no_grad():
                for p, mask in held:
                    p.mul_(mask)

    handles = [p.register_hook(lambda grad, mask=mask: grad * mask) for p, mask in held]
    # The trainer builds its optimizer inside fit, so the hook is registered for all optimizers
    # and acts only on one that holds these parameters.
    handles.append(register_optimizer_step_post_hook(reapply))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def fit_dsd(
    model: nn.Module,
    data: Any,
    trainer_cfg: Mapping[str, Any] | DictConfig,
    *,
    seed: int = 0,
    on_epoch_end: Callable[[int, dict[str, float]], bool | None] | None = None,
    evaluate_test: bool = False,
) -> Any:
    """Train ``model`` dense, sparse, then dense again; arguments and result as :func:`~archsearch.train.fit.fit`.

    ``on_epoch_end`` sees epochs numbered across the phases and a ``phase`` metric (0 dense,
    1 sparse, 2 re-dense); returning True or running out of ``trainer.max_seconds`` ends the
    whole run. The test split is scored once, on the final weights.
    """
    from archsearch.train.fit import TrainerSettings, TrainResult, evaluate, fit

    raw: dict[str, Any] = (
        OmegaConf.to_container(trainer_cfg, resolve=True)  # type: ignore[assignment]
        if isinstance(trainer_cfg, DictConfig)
        else dict(trainer_cfg)
    )
    dsd = DsdSettings.from_trainer_cfg(raw)
    settings = TrainerSettings.from_cfg(raw)
    lr = settings.optimizer.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, int | float):
        raise ConfigError(
            "trainer.dsd needs a numeric trainer.optimizer.lr to scale each phase's learning rate."
        )
    phases = list(zip(dsd.phase_epochs(settings.epochs), (1.0, dsd.sparse_lr, dsd.redense_lr), strict=True))

    started = time.perf_counter()
    results = []
    history: list[dict[str, float]] = []
    offset = 0
    for phase, (epochs, factor) in enumerate(phases):
        cfg = {
            **raw,
            "epochs": epochs,
            "optimizer": {**settings.optimizer, "lr": lr * factor},
            "dsd": {"enabled": False},
        }
        if settings.max_seconds is not None:
            cfg["max_seconds"] = settings.max_seconds - (time.perf_counter() - started)
            if cfg["max_seconds"] <= 0:
                break
        renumber = functools.partial(
            _renumber,
            phase=phase,
            offset=offset,
            shift=time.perf_counter() - started,
            best=max((h["val_acc"] for h in history), default=0.0),
        )
        callback = None if on_epoch_end is None else functools.partial(_forward, on_epoch_end, renumber)
        hold = (
            hold_masks(model, magnitude_masks(model, dsd.sparsity))
            if phase == 1
            else contextlib.nullcontext()
        )
        with hold:
            result = fit(model, data, cfg, seed=seed + phase, on_epoch_end=callback)
        results.append(result)
        history.extend(renumber(h) for h in result.history)
        offset += result.epochs_done
        if result.stopped_early or result.budget_exhausted:
            break

    last = results[-1]
    test_acc = None
    if evaluate_test:
        test_acc = evaluate(
            model, data.test_x, data.test_y, settings.eval_batch_size, last.device, precision=last.precision
        )
    per_step = min(settings.batch_size, len(data.train_y))
    images = sum(r.steps_done for r in results) * per_step
    train_time = sum(r.steps_done * per_step / r.images_per_s for r in results if r.images_per_s > 0)
    steps_per_epoch = results[0].steps_total // phases[0][0]
    return TrainResult(
        val_acc_best=max(h["val_acc"] for h in history),
        val_acc_last=history[-1]["val_acc"],
        test_acc=test_acc,
        history=history,
        images_per_s=images / max(train_time, 1e-9),
        epochs_done=offset,
        steps_done=sum(r.steps_done for r in results),
        steps_total=steps_per_epoch * settings.epochs,
        budget_exhausted=any(r.budget_exhausted for r in results),
        stopped_early=any(r.stopped_early for r in results),
        seconds=time.perf_counter() - started,
        device=last.device,
        precision=last.precision,
        memory_format=last.memory_format,
    )


def _renumber(
    entry: Mapping[str, float], *, phase: int, offset: int, shift: float, best: float
) -> dict[str, float]:
    """A phase's epoch metrics as seen from the whole run: epoch and seconds counted from its start."""
    return {
        **entry,
        "epoch": entry["epoch"] + offset,
        "phase": float(phase),
        "seconds": entry["seconds"] + shift,
        "val_acc_best": max(best, entry["val_acc_best"]),
    }


def _forward(
    target: Callable[[int, dict[str, float]], bool | None],
    renumber: Callable[[Mapping[str, float]], dict[str, float]],
    epoch: int,
    metrics: dict[str, float],
) -> bool | None:
    entry = renumber(metrics)
    return target(int(entry["epoch"]), entry)
