"""The dataset registry: ``load_dataset(settings, seed)`` for every kind of the Hydra group ``data``.

Built-in datasets are read once per process (the file-reading part is cached, since a search
loads the same data every trial) and then split and normalised in memory:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, no files needed). It has no
  official test split, so a fixed 20% (``test_fraction``) is carved out with seed 0 whatever
  the run's seed: the test set is the same in every run.
- ``fashion_mnist``: the four IDX files (gzipped or not) from ``dir``; Debian's
  ``dataset-fashion-mnist`` installs them under /usr/share/datasets/fashion-mnist.
- ``cifar10``: the CIFAR-10 python batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch``).
- ``synthetic``: class-dependent patterns plus noise, of any shape and class count (for tests).

The user's own data: ``image_folder`` (archsearch/data/image_folder.py, decoded once into a
memory-mapped cache), ``arrays`` (.npz/.npy files, archsearch/data/arrays.py) and
``torchvision`` (any torchvision dataset class, chosen by ``source: torchvision`` with the class
as ``name``; archsearch/data/torchvision_data.py). Which function loads which kind, with which
options, is the table :data:`archsearch.data.loaders.LOADERS`.

The validation split is drawn from the official training images with the run's seed and does
not depend on ``subset``, which then thins the remaining training images only; so runs with
different subsets are scored on the same validation images. Mean and standard deviation per
channel come from the training images actually used. Nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import gzip
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archsearch.data.base import Augment, Dataset, RawImages, prepare
from archsearch.data.settings import (
    DATASETS,
    LOADERS,
    Cifar10Options,
    DataSettings,
    DigitsOptions,
    FashionMnistOptions,
    SyntheticOptions,
)
from archsearch.errors import DataError

__all__ = [
    "DATASETS",
    "Augment",
    "DataSettings",
    "Dataset",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_synthetic",
]

#: Label names, in label order, as the data sets' own documentation gives them.
DIGITS_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

FASHION_MNIST_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or set data.dir "
    "to a directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (optionally .gz)"
)
CIFAR10_HINT = (
    "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html on a "
    "connected machine, extract it and set data.dir to its cifar-10-batches-py directory"
)
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def load_dataset(data: DataSettings | Mapping[str, Any] | str, seed: int = 0) -> Dataset:
    """Load, split and normalise the dataset ``data`` describes.

    Args:
        data: the :class:`~archsearch.data.settings.DataSettings`. From Python, also a ``data``
            mapping laid out as conf/data/*.yaml (``{"name": "fashion_mnist", "subset": 0.5}``;
            missing keys take the settings' defaults) or the name of a data config (``"digits"``:
            the file ``data=digits`` composes, the user's config folders first), either turned
            into settings at once.
        seed: seeds the train/validation split and the subset (not the test set).

    Returns:
        The Dataset, with ``val_*`` drawn from the official training images.

    Raises:
        DataError: the files are missing or malformed (naming the path and how to get them).
        ConfigError: a key has a value outside what is allowed.
    """
    if isinstance(data, str):
        data = DataSettings.from_config(data)
    elif not isinstance(data, DataSettings):
        data = DataSettings.from_mapping(data)
    return LOADERS[data.kind].load()(data, seed)


def _prepared(settings: DataSettings, raw: RawImages, seed: int) -> Dataset:
    return prepare(
        settings.name,
        raw,
        seed,
        val_fraction=settings.val_fraction,
        subset=settings.subset,
        augment=settings.augment,
    )


def load_digits(settings: DataSettings, seed: int) -> Dataset:
    """``data=digits`` (:class:`~archsearch.data.loaders.DigitsOptions`)."""
    return _prepared(settings, _digits(settings.options_as(DigitsOptions).test_fraction), seed)


def load_fashion_mnist(settings: DataSettings, seed: int) -> Dataset:
    """``data=fashion_mnist`` (:class:`~archsearch.data.loaders.FashionMnistOptions`)."""
    directory = Path(str(settings.options_as(FashionMnistOptions).dir)).expanduser()
    return _prepared(settings, _read_fashion_mnist(str(directory)), seed)


def load_cifar10(settings: DataSettings, seed: int) -> Dataset:
    """``data=cifar10`` (:class:`~archsearch.data.loaders.Cifar10Options`)."""
    directory = Path(str(settings.options_as(Cifar10Options).dir)).expanduser()
    return _prepared(settings, _read_cifar10(str(directory)), seed)


def load_synthetic(settings: DataSettings, seed: int) -> Dataset:
    """``data=synthetic`` (:class:`~archsearch.data.loaders.SyntheticOptions`)."""
    o = settings.options_as(SyntheticOptions)
    raw = _generate_synthetic(
        o.shape, o.num_classes, o.train_size, o.test_size, float(o.noise), o.generator_seed
    )
    return _prepared(settings, raw, seed)


# --------------------------------------------------------------------------- readers (cached)


@functools.lru_cache(maxsize=2)
def _digits_table() -> np.ndarray:
    """scikit-learn's digits as 1797 rows of 64 pixels and a label, read from the file it ships.

    Reading ``sklearn/datasets/data/digits.csv.gz`` directly skips importing scikit-learn and
    SciPy, which took 1.3 s of every run's start-up; ``load_digits`` is the fallback.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    origin = Path(spec.origin).parent if spec is not None and spec.origin else None
    table = origin / "datasets" / "data" / "digits.csv.gz" if origin else None
    if table is not None and table.is_file():
        with gzip.open(table, "rt") as f:
            return np.loadtxt(f, delimiter=",", dtype=np.float64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.column_stack([bunch.data, bunch.target])


def _digits(test_fraction: float) -> RawImages:
    table = _digits_table()
    x = table[:, :-1].astype(np.float32).reshape(-1, 1, 8, 8)
    y = table[:, -1].astype(np.int64)
    # Seed 0 on purpose: the carved test set must be identical in every run, whatever cfg.seed is.
    order = np.random.default_rng(0).permutation(len(y))
    n_test = round(len(y) * test_fraction)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return RawImages(x[train], y[train], x[test], y[test], num_classes=10, class_names=DIGITS_CLASSES)


@functools.lru_cache(maxsize=2)
def _read_fashion_mnist(directory: str) -> RawImages:
    root = Path(directory)
    train_x = _read_idx(root, "train-images-idx3-ubyte", 3)
    train_y = _read_idx(root, "train-labels-idx1-ubyte", 1)
    test_x = _read_idx(root, "t10k-images-idx3-ubyte", 3)
    test_y = _read_idx(root, "t10k-labels-idx1-ubyte", 1)
    for images, labels, stem in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if len(images) != len(labels):
            raise DataError(
                f"Fashion-MNIST in {root} is malformed: {stem} has {len(images)} images but "
                f"{len(labels)} labels; {FASHION_MNIST_HINT}."
            )
    if train_y.max() > 9 or test_y.max() > 9:
        raise DataError(f"Fashion-MNIST in {root} is malformed: labels go beyond 9; {FASHION_MNIST_HINT}.")
    return RawImages(
        train_x[:, None],
        train_y.astype(np.int64),
        test_x[:, None],
        test_y.astype(np.int64),
        num_classes=10,
        class_names=FASHION_MNIST_CLASSES,
    )


def _read_idx(root: Path, stem: str, ndim: int) -> np.ndarray:
    """Read one unsigned-byte IDX file (``stem`` or ``stem.gz``) into an array."""
    path = next((p for p in (root / stem, root / f"{stem}.gz") if p.is_file()), None)
    if path is None:
        raise DataError(f"Fashion-MNIST not found: {root} has no {stem}[.gz]; {FASHION_MNIST_HINT}.")
    try:
        blob = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"Fashion-MNIST file {path} cannot be read ({exc}); {FASHION_MNIST_HINT}.") from None
    # IDX header: two zero bytes, type code 0x08 (ubyte), ndim, then ndim big-endian uint32 sizes.
    if len(blob) < 4 + 4 * ndim or blob[:4] != bytes([0, 0, 8, ndim]):
        raise DataError(
            f"Fashion-MNIST file {path} is not an unsigned-byte IDX file with {ndim} dimension(s); "
            f"{FASHION_MNIST_HINT}."
        )
    dims = tuple(int.from_bytes(blob[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = memoryview(blob)[4 + 4 * ndim :]
    if len(body) != math.prod(dims):
        raise DataError(
            f"Fashion-MNIST file {path} is truncated: header says {dims} but {len(body)} bytes follow; "
            f"{FASHION_MNIST_HINT}."
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds (dicts, lists, numpy arrays): no arbitrary code."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            # Python 3 writes the bytes of an array through _codecs.encode under protocol 2.
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _cifar10_root(directory: Path) -> Path:
    # Accept the directory the tarball extracts into as well as its parent.
    nested = directory / "cifar-10-batches-py"
    return nested if not (directory / "data_batch_1").exists() and nested.is_dir() else directory


@functools.lru_cache(maxsize=2)
def _read_cifar10(directory: str) -> RawImages:
    root = _cifar10_root(Path(directory))
    parts = [_read_cifar_batch(root / name) for name in CIFAR10_FILES]
    train_x = np.concatenate([x for x, _ in parts[:5]])
    train_y = np.concatenate([y for _, y in parts[:5]])
    return RawImages(train_x, train_y, parts[5][0], parts[5][1], num_classes=10, class_names=CIFAR10_CLASSES)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"CIFAR-10 not found: {path} is missing; {CIFAR10_HINT}.")
    try:
        with path.open("rb") as fh:
            batch = _BatchUnpickler(fh, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as exc:  # any unpickling or key problem means the file is not a CIFAR batch
        raise DataError(
            f"CIFAR-10 file {path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc}); "
            f"{CIFAR10_HINT}."
        ) from None
    if (
        data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        or len(labels) != len(data)
        or labels.max(initial=0) > 9
    ):
        raise DataError(
            f"CIFAR-10 file {path} holds data of shape {data.shape} with {len(labels)} labels, not "
            f"N x 3072 bytes with N labels in 0..9; {CIFAR10_HINT}."
        )
    return data.reshape(-1, 3, 32, 32), labels


@functools.lru_cache(maxsize=4)
def _generate_synthetic(
    shape: tuple[int, int, int], num_classes: int, train_size: int, test_size: int, noise: float, seed: int
) -> RawImages:
    """Each class is a fixed smooth random template; an image is its template plus Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    c, h, w = shape
    # Upsampled coarse noise gives blob-like templates a small conv net can tell apart.
    coarse = torch.randn(num_classes, c, max(1, h // 4), max(1, w // 4), generator=gen)
    templates = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    templates = templates / templates.flatten(1).std(dim=1).clamp_min(1e-6)[:, None, None, None]
    n = train_size + test_size
    y = torch.arange(n) % num_classes
    y = y[torch.randperm(n, generator=gen)]
    x = templates[y] + noise * torch.randn(n, c, h, w, generator=gen)
    xs, ys = x.numpy(), y.numpy()
    return RawImages(
        xs[:train_size], ys[:train_size], xs[train_size:], ys[train_size:], num_classes=num_classes
    )
