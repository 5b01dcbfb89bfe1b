"""A dataset from the caller's own arrays or tensors, split and normalised like the built-in ones.

Images may be N x H x W, N x C x H x W or N x H x W x C (channels last is recognised when the
last axis has 1, 3 or 4 entries and the second does not), uint8 or float; labels are integers.
``data=arrays`` reads them from a ``.npz`` file (keys ``x``, ``y``, optional ``test_x`` and
``test_y``) or from ``.npy`` files (``data.path`` and ``data.labels``, optional
``data.test_path`` and ``data.test_labels``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from archsearch.checks import check_int
from archsearch.data.base import Augment, Dataset, RawImages, prepare
from archsearch.data.settings import ArraysOptions, DataSettings
from archsearch.errors import DataError

__all__ = ["dataset_from_arrays", "load_arrays"]

#: Channel counts an image axis may have (grey, RGB, RGBA).
CHANNEL_COUNTS = (1, 3, 4)


def _as_numpy(value: Any) -> np.ndarray:
    return np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)


def _images(x: Any, key: str, channels: int | None = None) -> np.ndarray:
    array = _as_numpy(x)
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise DataError(
            f"{key} must be N x H x W, N x C x H x W or N x H x W x C images, got shape {array.shape}."
        )
    if array.shape[3] in CHANNEL_COUNTS and array.shape[1] not in CHANNEL_COUNTS:
        array = array.transpose(0, 3, 1, 2)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{key} must hold real numbers, got dtype {array.dtype}.")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(f"{key} holds NaN or infinite values.")
    return _convert_channels(array, key, channels)


def _convert_channels(array: np.ndarray, key: str, channels: int | None) -> np.ndarray:
    """Grey to RGB by repetition, RGB(A) to grey by ITU-R 601 luma, RGBA to RGB by dropping alpha."""
    have = array.shape[1]
    if channels is None or channels == have:
        return array
    if channels == 3 and have == 1:
        return np.repeat(array, 3, axis=1)
    if channels == 3 and have == 4:
        return array[:, :3]
    if channels == 1 and have in (3, 4):
        luma = np.tensordot(np.array([0.299, 0.587, 0.114]), array[:, :3], axes=([0], [1]))
        return luma[:, None].astype(np.float32)
    raise DataError(f"{key} has {have} channel(s), which cannot be converted to {channels}.")


def _labels(y: Any, key: str, n: int, classes: int) -> np.ndarray:
    labels = _as_numpy(y)
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
    channels: int | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
) -> Dataset:
    """A :class:`Dataset` from images and labels (numpy or torch; layouts in the module docstring).

    The validation split is drawn from ``x`` with ``seed``; normalisation statistics come from
    the training images. Without ``test_x``, the test split is empty (accuracy on it is NaN).
    ``channels`` (1 or 3) converts the images; None keeps their channel count. ``class_names``
    names each label (one per class); None numbers them.

    Raises:
        DataError: shapes, labels or values that do not make a dataset (one sentence each).
    """
    train_x = _images(x, "x", channels)
    labels = _as_numpy(y)
    if labels.ndim != 1 or len(labels) != len(train_x):
        raise DataError(f"x holds {len(train_x)} images but y has shape {labels.shape}; give one label each.")
    if not np.issubdtype(labels.dtype, np.integer) or not labels.size:
        raise DataError(f"y must be integer class labels, got dtype {labels.dtype}.")
    if num_classes is not None:
        # A numpy integer (a label's max, say) counts as an integer.
        number = int(num_classes) if isinstance(num_classes, np.integer) else num_classes
        check_int("data.num_classes", number, 2, " or null")
    if labels.min() < 0:
        raise DataError(f"y must be class indices 0..K-1, got labels from {labels.min()} to {labels.max()}.")
    classes = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    distinct = len(np.unique(labels))
    if num_classes is None and classes > 100 and classes > 2 * distinct:
        raise DataError(
            f"y's labels run up to {labels.max()} but only {distinct} distinct values occur; relabel them "
            "0..K-1 or give data.num_classes."
        )
    if classes < 2:
        raise DataError(f"dataset {name!r} needs at least two classes, got {classes}.")
    train_y = _labels(y, "y", len(train_x), classes)
    if test_x is None:
        tx, ty = train_x[:0], train_y[:0]
    else:
        tx = _images(test_x, "test_x", channels)
        ty = _labels(test_y, "test_y", len(tx), classes)
        if tx.shape[1:] != train_x.shape[1:]:
            raise DataError(f"test_x images are {tx.shape[1:]}, training images {train_x.shape[1:]}.")
    if class_names is not None and len(class_names) != classes:
        raise DataError(f"class_names names {len(class_names)} classes, but the labels make {classes}.")
    raw = RawImages(train_x, train_y, tx, ty, classes, tuple(class_names or ()))
    return prepare(name, raw, seed, val_fraction=val_fraction, subset=subset, augment=augment or Augment())


def load_arrays(settings: DataSettings, seed: int) -> Dataset:
    """``data=arrays``: the arrays in ``data.path`` (``.npz``, or ``.npy`` with ``data.labels``),
    as :class:`~archsearch.data.loaders.ArraysOptions` name them.

    Raises:
        DataError: a file is missing, unreadable or lacks a key; the arrays do not make a dataset.
    """
    options = settings.options_as(ArraysOptions)
    path = Path(str(options.path)).expanduser()
    if path.suffix == ".npz":
        with _load(path) as archive:
            missing = [key for key in ("x", "y") if key not in archive.files]
            if missing:
                held = ", ".join(sorted(archive.files)) or "nothing"
                raise DataError(f"{path} has no array {missing[0]!r}; it holds {held}.")
            try:
                arrays = {k: archive[k] for k in ("x", "y", "test_x", "test_y") if k in archive.files}
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                raise DataError(f"array file {path} cannot be read as numpy data ({exc}).") from None
            except MemoryError:
                raise DataError(_TOO_LARGE.format(path=path)) from None
    else:  # .npy: the settings allow no other suffix
        files = {
            "x": options.path,
            "y": options.labels,
            "test_x": options.test_path,
            "test_y": options.test_labels,
        }
        arrays = {k: _load(Path(file).expanduser()) for k, file in files.items() if file}
    if ("test_x" in arrays) != ("test_y" in arrays):
        raise DataError(f"{path}: test_x and test_y come together; one of them is missing.")
    return dataset_from_arrays(
        path.stem,
        arrays["x"],
        arrays["y"],
        test_x=arrays.get("test_x"),
        test_y=arrays.get("test_y"),
        num_classes=options.num_classes,
        val_fraction=settings.val_fraction,
        subset=settings.subset,
        seed=seed,
        augment=settings.augment,
        channels=options.channels,
    )


def _load(path: Path) -> Any:
    """``np.load`` without pickles; a missing or unreadable file is a DataError naming it."""
    if not path.is_file():
        raise DataError(f"array file {path} does not exist.")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"array file {path} cannot be read as numpy data ({exc}).") from None
    except MemoryError:
        raise DataError(_TOO_LARGE.format(path=path)) from None


#: A header may declare any shape; loading one larger than memory raised a bare MemoryError.
_TOO_LARGE = (
    "array file {path} declares an array larger than this machine's memory; check how it was written."
)
