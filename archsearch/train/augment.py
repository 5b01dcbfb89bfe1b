"""Whole-batch data augmentation on the device: random crop, horizontal flip and erasing.

Works on a batch at once with index arithmetic and masks rather than image by image, so it
costs little next to a training step; randomness comes only from the generator passed in.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from archsearch.data.datasets import Augment

__all__ = ["augment_batch"]


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
