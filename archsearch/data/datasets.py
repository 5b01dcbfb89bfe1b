"""Datasets as in-memory tensors: a seeded train/validation split, a separate test set, normalised.

Each dataset of the Hydra group ``data`` is read once per process (the file-reading part is
cached, since a search loads the same data every trial) and then split and normalised:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, no files needed). It has no
  official test split, so a fixed 20% (``test_fraction``) is carved out with seed 0 whatever
  the run's seed: the test set is the same in every run.
- ``fashion_mnist``: the four IDX files (gzipped or not) from ``dir``; Debian's
  ``dataset-fashion-mnist`` installs them under /usr/share/datasets/fashion-mnist.
- ``cifar10``: the CIFAR-10 python batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch``).
- ``synthetic``: class-dependent patterns plus noise, of any shape and class count (for tests).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archsearch.errors import ConfigError, DataError

__all__ = ["DATASETS", "Augment", "Dataset", "load_dataset"]

DATASETS = ("digits", "fashion_mnist", "cifar10", "synthetic")

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
    """A dataset held as normalised float32 tensors (N, C, H, W) and int64 labels."""

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
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


def load_dataset(data_cfg: Mapping[str, Any], seed: int = 0) -> Dataset:
    """Load, split and normalise the dataset a ``data`` config names.

    Args:
        data_cfg: a ``conf/data/*.yaml`` mapping (plain dict): ``name``, ``dir`` where
            files are read, ``subset``, ``val_fraction``, ``augment`` and per-dataset keys.
        seed: seeds the train/validation split and the subset (not the test set).

    Returns:
        The Dataset, with ``val_*`` drawn from the official training images.

    Raises:
        DataError: the files are missing or malformed (naming the path and how to get them).
        ConfigError: a key has a value outside what is allowed.
    """
    name = str(data_cfg.get("name", ""))
    if name == "digits":
        raw = _digits(_fraction(data_cfg, "test_fraction", 0.2))
    elif name == "fashion_mnist":
        raw = _read_fashion_mnist(str(_directory(data_cfg)))
    elif name == "cifar10":
        raw = _read_cifar10(str(_directory(data_cfg)))
    elif name == "synthetic":
        raw = _synthetic(data_cfg)
    else:
        raise ConfigError(f"data.name is {name!r}; allowed: {', '.join(DATASETS)}.")
    return prepare(name, raw, data_cfg, seed)


def prepare(name: str, raw: RawImages, cfg: Mapping[str, Any], seed: int) -> Dataset:
    n = len(raw.train_y)
    val_fraction = _fraction(cfg, "val_fraction", 0.1)
    n_val = round(n * val_fraction)
    if n_val < 1 or n - n_val < 1:
        raise ConfigError(
            f"data.val_fraction={val_fraction} leaves no validation or no training image out of {n}."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    val_idx, pool = order[:n_val], order[n_val:]
    # The subset comes from the images left after the validation split, so it never changes it.
    train_idx = np.sort(pool[: _subset_size(cfg.get("subset"), len(pool))])
    val_idx = np.sort(val_idx)

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
        augment=_augment(cfg.get("augment") or {}),
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
    )


def _subset_size(subset: Any, available: int) -> int:
    """``None`` = all; a float in (0, 1] = that fraction; an int >= 1 = that many images."""
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


def _fraction(cfg: Mapping[str, Any], key: str, default: float) -> float:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ConfigError(f"data.{key} must be a number strictly between 0 and 1, got {value!r}.")
    return float(value)


def _augment(raw: Mapping[str, Any]) -> Augment:
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


def _directory(cfg: Mapping[str, Any]) -> Path:
    raw = cfg.get("dir")
    if not raw:
        raise ConfigError(f"data.dir must name the directory holding the {cfg.get('name')} files.")
    return Path(str(raw)).expanduser()


# --------------------------------------------------------------------------- readers (cached)


@functools.lru_cache(maxsize=2)
def _digits(test_fraction: float) -> RawImages:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    # Seed 0 on purpose: the carved test set must be identical in every run, whatever cfg.seed is.
    order = np.random.default_rng(0).permutation(len(y))
    n_test = round(len(y) * test_fraction)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return RawImages(x[train], y[train], x[test], y[test], num_classes=10)


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
        train_x[:, None], train_y.astype(np.int64), test_x[:, None], test_y.astype(np.int64), num_classes=10
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
    return RawImages(train_x, train_y, parts[5][0], parts[5][1], num_classes=10)


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


def _synthetic(cfg: Mapping[str, Any]) -> RawImages:
    shape = cfg.get("shape", [1, 8, 8])
    if (
        not isinstance(shape, list | tuple)
        or len(shape) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        raise ConfigError(f"data.shape must be [channels, height, width], got {shape!r}.")
    numbers = {
        key: cfg.get(key, default)
        for key, default in (("num_classes", 4), ("train_size", 512), ("test_size", 128))
    }
    for key, value in numbers.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < (2 if key == "num_classes" else 1)
        ):
            raise ConfigError(f"data.{key} must be a positive integer (num_classes >= 2), got {value!r}.")
    noise = cfg.get("noise", 1.0)
    if isinstance(noise, bool) or not isinstance(noise, int | float) or noise < 0:
        raise ConfigError(f"data.noise must be a number >= 0, got {noise!r}.")
    return _generate_synthetic(
        (int(shape[0]), int(shape[1]), int(shape[2])),
        numbers["num_classes"],
        numbers["train_size"],
        numbers["test_size"],
        float(noise),
        int(cfg.get("generator_seed", 0)),
    )


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
