"""``data=torchvision``: any torchvision classification dataset class, read into memory.

``data.name`` is the class in ``torchvision.datasets`` (CIFAR10, MNIST, SVHN, ...), ``data.root``
where its files are. Its training and test splits come from the class's ``train=`` or
``split=`` argument; a class with neither gives one split, and a fixed ``test_fraction`` of it
(seed 0) becomes the test set. Classes that keep their images in ``.data`` with ``.targets``
(or ``.labels``) are read at once; others are read item by item as PIL images, converted to
``data.channels`` and ``data.size``. Nothing is downloaded unless ``data.download=true``.
torchvision is the optional extra ``archsearch[torchvision]``.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import numpy as np

from archsearch.data.arrays import dataset_from_arrays
from archsearch.data.base import Dataset
from archsearch.data.decode import Target, to_array
from archsearch.data.settings import DataSettings, TorchvisionOptions
from archsearch.errors import ConfigError, DataError

__all__ = ["load_torchvision"]

INSTALL_HINT = (
    "install the build matching your torch with `pip install 'archsearch[torchvision]'` "
    "(or `pip install torchvision`)"
)


def load_torchvision(settings: DataSettings, seed: int) -> Dataset:
    """The torchvision dataset ``settings.name`` under its ``root`` as an in-memory Dataset
    (:class:`~archsearch.data.loaders.TorchvisionOptions`).

    Raises:
        DataError: torchvision is not installed, or the dataset's files are missing or bad.
        ConfigError: the class is not a torchvision dataset.
    """
    try:
        datasets = importlib.import_module("torchvision.datasets")
    except ImportError:
        raise DataError(
            f"data=torchvision needs torchvision, which is not installed; {INSTALL_HINT}."
        ) from None
    options = settings.options_as(TorchvisionOptions)
    name = settings.name
    cls = getattr(datasets, name, None)
    if not inspect.isclass(cls):
        raise ConfigError(
            f"data.name {name!r} is not a dataset class of torchvision.datasets (e.g. CIFAR10)."
        )
    root = str(Path(str(options.root)).expanduser())
    train = _instantiate(cls, name, root, options.download, train=True)
    x, y = _arrays(train, options, name)
    params = inspect.signature(cls).parameters
    if "train" in params or "split" in params:
        test_x, test_y = _arrays(_instantiate(cls, name, root, options.download, train=False), options, name)
    else:
        # One split only: carve a fixed test set (seed 0) so it is the same in every run.
        order = np.random.default_rng(0).permutation(len(y))
        n_test = round(len(y) * options.test_fraction)
        test, rest = np.sort(order[:n_test]), np.sort(order[n_test:])
        x, y, test_x, test_y = x[rest], y[rest], x[test], y[test]
    classes = getattr(train, "classes", None)
    return dataset_from_arrays(
        name,
        x,
        y,
        test_x=test_x,
        test_y=test_y,
        num_classes=len(classes) if classes else None,
        val_fraction=settings.val_fraction,
        subset=settings.subset,
        seed=seed,
        augment=settings.augment,
        channels=options.channels,
        class_names=[str(c) for c in classes] if classes else None,
    )


def _instantiate(cls: type, name: str, root: str, download: bool, *, train: bool) -> Any:
    """``cls(root, train=... | split=..., download=...)`` with whichever arguments it takes."""
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "train" in params:
        kwargs["train"] = train
    elif "split" in params:
        kwargs["split"] = "train" if train else "test"
    if "download" in params:
        kwargs["download"] = download
    try:
        return cls(root, **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        hint = "" if download else "; set data.download=true to download it"
        raise DataError(f"torchvision {name} cannot be read from {root} ({exc}){hint}.") from None


def _arrays(dataset: Any, options: TorchvisionOptions, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split: from ``.data`` if the class keeps them there, else item by item."""
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = getattr(dataset, "labels", None)
    data = getattr(dataset, "data", None)
    if data is not None and labels is not None and not isinstance(data, list | str):
        images = np.asarray(data.numpy() if hasattr(data, "numpy") else data)
        return images, np.asarray(labels.numpy() if hasattr(labels, "numpy") else labels, dtype=np.int64)
    if len(dataset) == 0:
        raise DataError(f"torchvision {name} under {options.root} holds no images.")
    size = options.size
    channels = options.channels or 3
    first = dataset[0][0]
    height, width = (size[0], size[1]) if size else (first.height, first.width)
    target = Target(channels, int(height), int(width), resize=bool(size))
    xs, ys = [], []
    for i in range(len(dataset)):
        image, label = dataset[i]
        xs.append(to_array(image, target, f"{name}[{i}]"))
        ys.append(int(label))
    return np.stack(xs), np.asarray(ys, dtype=np.int64)
