"""A dataset from the caller's own arrays or tensors, split and normalised like the built-in ones."""

from __future__ import annotations

from typing import Any

import numpy as np

from archsearch.data.datasets import Augment, Dataset, RawImages, prepare
from archsearch.errors import DataError

__all__ = ["dataset_from_arrays"]


def _images(x: Any, key: str) -> np.ndarray:
    array = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise DataError(f"{key} must be N x H x W or N x C x H x W images, got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{key} must hold numbers, got dtype {array.dtype}.")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(f"{key} holds NaN or infinite values.")
    return array


def _labels(y: Any, key: str, n: int, classes: int) -> np.ndarray:
    labels = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)
    if labels.ndim != 1 or len(labels) != n:
        raise DataError(f"{key} must be one integer label per image ({n}), got shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{key} must be integer class labels, got dtype {labels.dtype}.")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"{key} must lie in 0..{classes - 1}, got {labels.min()}..{labels.max()}.")
    return labels.astype(np.int64)


def dataset_from_arrays(
    name: str,
    x: Any,
    y: Any,
    *,
    test_x: Any = None,
    test_y: Any = None,
    num_classes: int | None = None,
    val_fraction: float = 0.1,
    subset: int | float | None = None,
    seed: int = 0,
    augment: Augment | None = None,
) -> Dataset:
    """A :class:`Dataset` from images (N x H x W or N x C x H x W, numpy or torch) and labels.

    The validation split is drawn from ``x`` with ``seed``; normalisation statistics come from
    the training images. Without ``test_x``, the test split is empty (accuracy on it is NaN).

    Raises:
        DataError: shapes, labels or values that do not make a dataset (one sentence each).
    """
    train_x = _images(x, "x")
    classes = int(num_classes) if num_classes is not None else int(np.asarray(y).max()) + 1
    if classes < 2:
        raise DataError(f"dataset {name!r} needs at least two classes, got {classes}.")
    train_y = _labels(y, "y", len(train_x), classes)
    if test_x is None:
        tx, ty = train_x[:0], train_y[:0]
    else:
        tx = _images(test_x, "test_x")
        ty = _labels(test_y, "test_y", len(tx), classes)
        if tx.shape[1:] != train_x.shape[1:]:
            raise DataError(f"test_x images are {tx.shape[1:]}, training images {train_x.shape[1:]}.")
    raw = RawImages(train_x, train_y, tx, ty, classes)
    cfg: dict[str, Any] = {"val_fraction": val_fraction, "subset": subset}
    data = prepare(name, raw, cfg, seed)
    if augment is not None:
        import dataclasses

        data = dataclasses.replace(data, augment=augment)
    return data
