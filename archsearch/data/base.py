"""The Dataset every source produces, and the seeded split and normalisation they share.

A :class:`Dataset` holds its images either as normalised float32 tensors (small data, read into
memory) or as :class:`~archsearch.data.images.ImageArray` views of a memory-mapped uint8 cache
that normalise each batch as it is read (image folders). Both answer ``len(x)``, ``x[idx]`` (a
float32 batch) and ``x.to(device)``, which is all the trainer and ``evaluate`` use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from archsearch.data.images import Images
from archsearch.errors import ConfigError

__all__ = [
    "Augment",
    "Dataset",
    "RawImages",
    "fraction",
    "parse_augment",
    "prepare",
    "split_indices",
    "subset_size",
]


@dataclass(frozen=True)
class Augment:
    """Batch augmentation a dataset allows (applied by the trainer to training batches only).

    Args:
        crop_padding: pad by this many pixels and crop back at a random offset (0 = off).
        flip: mirror left-right with probability 1/2 (off for digits and text).
        erase_p: probability of erasing a random rectangle of each image (0 = off).
    """

    crop_padding: int = 0
    flip: bool = False
    erase_p: float = 0.0

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip or self.erase_p > 0


@dataclass(frozen=True)
class Dataset:
    """Images (N, C, H, W) read as normalised float32 batches, and int64 label tensors.

    The ``*_x`` fields are float32 tensors for data held in memory, or
    :class:`~archsearch.data.images.ImageArray` views of a memory-mapped cache; ``mean`` and
    ``std`` are the training split's per-channel statistics either way.
    """

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    train_x: Images
    train_y: torch.Tensor
    val_x: Images
    val_y: torch.Tensor
    test_x: Images
    test_y: torch.Tensor
    augment: Augment
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def summary(self) -> str:
        """One line: name, shape, classes and split sizes."""
        c, h, w = self.shape
        return (
            f"{self.name} {c}x{h}x{w}, {self.num_classes} classes: {len(self.train_y)} train / "
            f"{len(self.val_y)} val / {len(self.test_y)} test"
        )


@dataclass(frozen=True)
class RawImages:
    """Images as read from disk (uint8 or float, N x C x H x W) with the official test split."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int


def split_indices(n: int, cfg: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) indices into ``n`` training images, drawn with ``seed``.

    ``data.val_fraction`` of the images are held out; ``data.subset`` then thins the rest, so
    the validation images do not depend on the subset.

    Raises:
        ConfigError: the fraction leaves no image on one side, or the subset is out of range.
    """
    val_fraction = fraction(cfg, "val_fraction", 0.1)
    n_val = round(n * val_fraction)
    if n_val < 1 or n - n_val < 1:
        raise ConfigError(
            f"data.val_fraction={val_fraction} leaves no validation or no training image out of {n}."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    val_idx, pool = order[:n_val], order[n_val:]
    train_idx = np.sort(pool[: subset_size(cfg.get("subset"), len(pool))])
    return train_idx, np.sort(val_idx)


def prepare(name: str, raw: RawImages, cfg: Mapping[str, Any], seed: int) -> Dataset:
    """Split ``raw``'s training images (:func:`split_indices`) and normalise every split in memory."""
    train_idx, val_idx = split_indices(len(raw.train_y), cfg, seed)
    train_x = torch.from_numpy(raw.train_x[train_idx]).float()
    mean = train_x.mean(dim=(0, 2, 3))
    std = train_x.std(dim=(0, 2, 3)).clamp_min(1e-6)

    def norm(x: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(x).float()
        return ((t - mean[:, None, None]) / std[:, None, None]).contiguous()

    c, h, w = raw.train_x.shape[1:]
    return Dataset(
        name=name,
        shape=(int(c), int(h), int(w)),
        num_classes=raw.num_classes,
        train_x=((train_x - mean[:, None, None]) / std[:, None, None]).contiguous(),
        train_y=torch.from_numpy(raw.train_y[train_idx]).long(),
        val_x=norm(raw.train_x[val_idx]),
        val_y=torch.from_numpy(raw.train_y[val_idx]).long(),
        test_x=norm(raw.test_x),
        test_y=torch.from_numpy(raw.test_y).long(),
        augment=parse_augment(cfg.get("augment") or {}),
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
    )


def subset_size(subset: Any, available: int) -> int:
    """Training images kept out of ``available``: ``None`` = all; a float in (0, 1] = that
    fraction; an int >= 1 = that many images."""
    if subset is None:
        return available
    if isinstance(subset, bool) or not isinstance(subset, int | float):
        raise ConfigError(f"data.subset must be a fraction in (0, 1] or an image count, got {subset!r}.")
    if isinstance(subset, float):
        if not 0.0 < subset <= 1.0:
            raise ConfigError(f"data.subset={subset} as a fraction must lie in (0, 1].")
        return max(1, round(available * subset))
    if not 1 <= subset <= available:
        raise ConfigError(
            f"data.subset={subset} images asked for, but only {available} training images are "
            "left after the validation split."
        )
    return subset


def fraction(cfg: Mapping[str, Any], key: str, default: float) -> float:
    """``cfg[key]`` (or ``default``) as a number strictly between 0 and 1, else a ConfigError."""
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ConfigError(f"data.{key} must be a number strictly between 0 and 1, got {value!r}.")
    return float(value)


def parse_augment(raw: Mapping[str, Any]) -> Augment:
    """A ``data.augment`` mapping as a checked :class:`Augment`."""
    unknown = set(raw) - {"crop_padding", "flip", "erase_p"}
    if unknown:
        raise ConfigError(
            f"data.augment has unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            "allowed: crop_padding, flip, erase_p."
        )
    aug = Augment(
        crop_padding=raw.get("crop_padding", 0),
        flip=raw.get("flip", False),
        erase_p=raw.get("erase_p", 0.0),
    )
    if isinstance(aug.crop_padding, bool) or not isinstance(aug.crop_padding, int) or aug.crop_padding < 0:
        raise ConfigError(f"data.augment.crop_padding must be an integer >= 0, got {aug.crop_padding!r}.")
    if not isinstance(aug.flip, bool):
        raise ConfigError(f"data.augment.flip must be true or false, got {aug.flip!r}.")
    if isinstance(aug.erase_p, bool) or not isinstance(aug.erase_p, int | float) or not 0 <= aug.erase_p <= 1:
        raise ConfigError(f"data.augment.erase_p must be a probability in [0, 1], got {aug.erase_p!r}.")
    return aug
