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
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from archsearch.errors import ConfigError
from archsearch.train.evaluate import evaluate
from archsearch.train.result import TrainResult
from archsearch.train.settings import DsdSettings, TrainerSettings

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike

__all__ = ["fit_dsd", "hold_masks", "magnitude_masks", "prunable_weights"]


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
    data: DatasetLike,
    settings: TrainerSettings,
    *,
    seed: int = 0,
    on_epoch_end: Callable[[int, dict[str, float]], bool | None] | None = None,
    evaluate_test: bool = False,
    phase_fit: Callable[..., TrainResult],
) -> TrainResult:
    """Train ``model`` dense, sparse, then dense again; arguments and result as in ``fit``.

    ``phase_fit`` trains one phase (``archsearch.train.fit.fit``, which dispatches here).

    ``on_epoch_end`` sees epochs numbered across the phases and a ``phase`` metric (0 dense,
    1 sparse, 2 re-dense); returning True or running out of ``settings.max_seconds`` ends the
    whole run. The test split is scored once, on the final weights.
    """
    fit = phase_fit
    dsd = settings.dsd
    lr = settings.optimizer.lr
    if lr is None:
        raise ConfigError("trainer.dsd needs trainer.optimizer.lr to scale each phase's learning rate.")
    phases = list(zip(dsd.phase_epochs(settings.epochs), (1.0, dsd.sparse_lr, dsd.redense_lr), strict=True))

    started = time.perf_counter()
    results = []
    history: list[dict[str, float]] = []
    offset = 0
    for phase, (epochs, factor) in enumerate(phases):
        phase_settings = dataclasses.replace(
            settings, epochs=epochs, optimizer=settings.optimizer.with_lr(lr * factor), dsd=DsdSettings()
        )
        if settings.max_seconds is not None:
            left = settings.max_seconds - (time.perf_counter() - started)
            if left <= 0:
                break
            phase_settings = dataclasses.replace(phase_settings, max_seconds=left)
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
            result = fit(model, data, phase_settings, seed=seed + phase, on_epoch_end=callback)
        results.append(result)
        history.extend(renumber(h) for h in result.history)
        offset += result.epochs_done
        if result.stopped_early or result.budget_exhausted:
            break

    test_acc = None
    if evaluate_test:
        last = results[-1]
        test_acc = evaluate(
            model, data.test_x, data.test_y, settings.eval_batch_size, last.device, precision=last.precision
        )
    return _combined(
        results,
        history,
        settings,
        test_acc=test_acc,
        epochs_done=offset,
        images_per_step=min(settings.batch_size, len(data.train_y)),
        steps_per_epoch=results[0].steps_total // phases[0][0],
        seconds=time.perf_counter() - started,
    )


def _combined(
    results: list[TrainResult],
    history: list[dict[str, float]],
    settings: TrainerSettings,
    *,
    test_acc: float | None,
    epochs_done: int,
    images_per_step: int,
    steps_per_epoch: int,
    seconds: float,
) -> TrainResult:
    """One result for the whole run from its phases' results and the renumbered ``history``."""
    images = sum(r.steps_done for r in results) * images_per_step
    train_time = sum(r.steps_done * images_per_step / r.images_per_s for r in results if r.images_per_s > 0)
    last = results[-1]
    return TrainResult(
        val_acc_best=max(h["val_acc"] for h in history),
        val_acc_last=history[-1]["val_acc"],
        test_acc=test_acc,
        history=history,
        images_per_s=images / max(train_time, 1e-9),
        epochs_done=epochs_done,
        steps_done=sum(r.steps_done for r in results),
        steps_total=steps_per_epoch * settings.epochs,
        budget_exhausted=any(r.budget_exhausted for r in results),
        stopped_early=any(r.stopped_early for r in results),
        seconds=seconds,
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
