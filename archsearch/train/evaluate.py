"""Scoring a network: its accuracy on a split, batch by batch, without gradients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from archsearch.train.device import autocast, model_memory_format

if TYPE_CHECKING:
    from archsearch.data.images import Images

__all__ = ["evaluate"]


def evaluate(
    model: nn.Module,
    x: Images,
    y: torch.Tensor,
    batch_size: int,
    device: torch.device | str,
    *,
    precision: str = "fp32",
) -> float:
    """Accuracy of ``model`` on ``(x, y)``, in eval mode, without gradients.

    ``x`` is a normalised tensor or an :class:`~archsearch.data.images.ImageArray` (slices of
    either are float32 batches).

    Inputs follow the model's memory format; the model's train/eval mode is restored after.

    Returns:
        The share of correct predictions, or NaN for an empty split.
    """
    if len(y) == 0:
        return float("nan")
    device = torch.device(device)
    fmt = model_memory_format(model)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    try:
        with torch.inference_mode(), autocast(device, precision):
            for start in range(0, len(y), batch_size):
                xb = x[start : start + batch_size].to(device, non_blocking=True).contiguous(memory_format=fmt)
                yb = y[start : start + batch_size].to(device, non_blocking=True)
                correct += (model(xb).argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    return correct.item() / len(y)
