"""The Dataset every source produces, and the seeded split and normalisation they share.

A :class:`Dataset` holds its images either as normalised float32 tensors (small data, read into
memory) or as :class:`~archsearch.data.images.ImageArray` views of a memory-mapped uint8 cache
that normalise each batch as it is read (image folders). Both answer ``len(x)``, ``x[idx]`` (a
float32 batch) and ``x.to(device)``, which is all the trainer and ``evaluate`` use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from archsearch.data.images import Images
from archsearch.data.settings import Augment, check_fraction, check_subset
from archsearch.errors import ConfigError

__all__ = [
    "Augment",
    "Dataset",
    "DatasetLike",
    "RawImages",
    "class_names",
    "describe",
    "prepare",
    "split_indices",
    "subset_size",
]


class DatasetLike(Protocol):
    """What a search, the trainer and the exports read of a data set: :class:`Dataset` is one
    (``load_dataset``, ``dataset_from_arrays``, ``dataset_from_folder`` make it); any object with
    these read-only members serves as well, without subclassing."""

    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> tuple[int, int, int]: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def train_x(self) -> Images: ...
    @property
    def train_y(self) -> torch.Tensor: ...
    @property
    def val_x(self) -> Images: ...
    @property
    def val_y(self) -> torch.Tensor: ...
    @property
    def test_x(self) -> Images: ...
    @property
    def test_y(self) -> torch.Tensor: ...
    @property
    def augment(self) -> Augment: ...
    @property
    def mean(self) -> tuple[float, ...]: ...
    @property
    def std(self) -> tuple[float, ...]: ...


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
    #: What each label means (``class_names[label]``); () where the source names none.
    class_names: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line: name, shape, classes and split sizes (:func:`describe`)."""
        return describe(self)


def describe(data: DatasetLike) -> str:
    """One line on any data set: name, shape, classes and split sizes."""
    c, h, w = data.shape
    return (
        f"{data.name} {c}x{h}x{w}, {data.num_classes} classes: {len(data.train_y)} train / "
        f"{len(data.val_y)} val / {len(data.test_y)} test"
    )


@dataclass(frozen=True)
class RawImages:
    """Images as read from disk (uint8 or float, N x C x H x W) with the official test split."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    class_names: tuple[str, ...] = ()  # one per class; () = "0", "1", ...


def split_indices(
    n: int, val_fraction: float, subset: int | float | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) indices into ``n`` training images, drawn with ``seed``.

    ``val_fraction`` of the images are held out; ``subset`` (:func:`subset_size`) then thins the
    rest, so the validation images do not depend on the subset.

    Raises:
        ConfigError: the fraction leaves no image on one side, or the subset is out of range.
    """
    val_fraction = check_fraction("data.val_fraction", val_fraction)
    n_val = round(n * val_fraction)
    if n_val < 1 or n - n_val < 1:
        raise ConfigError(
            f"data.val_fraction={val_fraction} leaves no validation or no training image out of {n}."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    val_idx, pool = order[:n_val], order[n_val:]
    train_idx = np.sort(pool[: subset_size(subset, len(pool))])
    return train_idx, np.sort(val_idx)


def prepare(
    name: str,
    raw: RawImages,
    seed: int,
    *,
    val_fraction: float,
    subset: int | float | None,
    augment: Augment,
) -> Dataset:
    """Split ``raw``'s training images (:func:`split_indices`) and normalise every split in memory."""
    train_idx, val_idx = split_indices(len(raw.train_y), val_fraction, subset, seed)
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
        augment=augment,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        class_names=class_names(raw.class_names, raw.num_classes),
    )


def class_names(given: tuple[str, ...] | list[str] | None, num_classes: int) -> tuple[str, ...]:
    """The classes' names: ``given`` when it names each class once, else "0", "1", ... ."""
    names = tuple(str(n) for n in given or ())
    return names if len(names) == num_classes else tuple(str(i) for i in range(num_classes))


def subset_size(subset: int | float | None, available: int) -> int:
    """Training images kept out of ``available``: ``None`` = all; a float in (0, 1] = that
    fraction; an int >= 1 = that many images (:func:`~archsearch.data.settings.check_subset`)."""
    subset = check_subset(subset)
    if subset is None:
        return available
    if isinstance(subset, float):
        return max(1, round(available * subset))
    if subset > available:
        raise ConfigError(
            f"data.subset={subset} images asked for, but only {available} training images are "
            "left after the validation split."
        )
    return subset
