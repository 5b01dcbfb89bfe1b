"""The loader table: each kind of dataset, its own typed options and the function loading it.

A dataset's kind (``data.name``, or ``data.source`` where the name is a torchvision class) picks
a row of :data:`LOADERS`: the options class holding the keys only that loader reads (a folder,
a file, a shape, ...), a frozen dataclass that checks itself with one
:class:`~archsearch.errors.ConfigError` sentence per bad key, and the function that loads the
dataset from :class:`~archsearch.data.settings.DataSettings`. The keys every dataset has
(``val_fraction``, ``subset``, ``augment``) are DataSettings' own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

from archsearch.checks import check_flag, check_int, check_number, is_int
from archsearch.errors import ConfigError

if TYPE_CHECKING:  # the loaders' arguments and result; importing the latter would load torch
    from collections.abc import Callable

    from archsearch.data.base import Dataset
    from archsearch.data.settings import DataSettings

__all__ = [
    "DATASETS",
    "LOADERS",
    "ArraysOptions",
    "Cifar10Options",
    "DigitsOptions",
    "FashionMnistOptions",
    "ImageFolderOptions",
    "Loader",
    "LoaderOptions",
    "SyntheticOptions",
    "TorchvisionOptions",
    "check_fraction",
]


def check_fraction(key: str, value: Any) -> float:
    """``value`` is a number strictly between 0 and 1 (``key`` names it, e.g. ``data.val_fraction``)."""
    return check_number(key, value, "strictly between 0 and 1", lambda v: 0 < v < 1)


def _path(key: str, value: Any) -> str | None:
    """A file or folder setting as a string (a ``Path`` is accepted from Python); None stays None."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ConfigError(f"data.{key} must be a path, got {value!r}.")


def _size(value: Any) -> tuple[int, int] | None:
    """``data.size``: None, or [height, width] in pixels (one number: a square)."""
    if is_int(value):
        value = [value, value]
    if value is None:
        return None
    if not (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(is_int(d) and d > 0 for d in value)
    ):
        raise ConfigError(f"data.size must be null or [height, width] in pixels, got {value!r}.")
    return int(value[0]), int(value[1])


def _channels(value: Any, *, keep: bool) -> None:
    """``data.channels``: 1 or 3, or also None (as stored) where ``keep``."""
    if (value is None and keep) or (is_int(value) and value in (1, 3)):
        return
    if keep:
        raise ConfigError(f"data.channels must be null (as stored), 1 or 3, got {value!r}.")
    raise ConfigError(f"data.channels must be 1 (grey) or 3 (RGB), got {value!r}.")


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------------- each loader's own keys


@dataclass(frozen=True)
class DigitsOptions:
    """``data=digits``: scikit-learn's bundled 8x8 digits; no files needed."""

    test_fraction: float = 0.2  # carved out as the test split with seed 0, the same in every run

    PATHS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        check_fraction("data.test_fraction", self.test_fraction)

    def require(self, name: str) -> None:
        """Nothing is required."""


@dataclass(frozen=True)
class _FilesOptions:
    """A built-in dataset read from files in ``dir``."""

    dir: str | None

    PATHS: ClassVar[tuple[str, ...]] = ("dir",)

    def __post_init__(self) -> None:
        _set(self, "dir", _path("dir", self.dir))

    def require(self, name: str) -> None:
        """``dir`` is set."""
        if not self.dir:
            raise ConfigError(f"data.dir must name the directory holding the {name} files.")


@dataclass(frozen=True)
class FashionMnistOptions(_FilesOptions):
    """``data=fashion_mnist``: the four IDX files in ``dir`` (Debian's dataset-fashion-mnist's folder)."""

    dir: str | None = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class Cifar10Options(_FilesOptions):
    """``data=cifar10``: the python batches in ``dir`` (the extracted cifar-10-batches-py, or its parent)."""

    dir: str | None = "~/datasets/cifar-10-batches-py"


@dataclass(frozen=True)
class SyntheticOptions:
    """``data=synthetic``: a smooth random pattern per class plus Gaussian noise, of any shape."""

    shape: tuple[int, int, int] = (1, 8, 8)  # channels, height, width
    num_classes: int = 4
    train_size: int = 512
    test_size: int = 128
    noise: float = 1.0  # standard deviation of the noise added to each class's pattern
    generator_seed: int = 0  # draws the patterns and the noise

    PATHS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        shape = self.shape
        if not (
            isinstance(shape, Sequence)
            and not isinstance(shape, str)
            and len(shape) == 3
            and all(is_int(d) and d > 0 for d in shape)
        ):
            raise ConfigError(f"data.shape must be [channels, height, width], got {shape!r}.")
        _set(self, "shape", (int(shape[0]), int(shape[1]), int(shape[2])))
        check_int("data.num_classes", self.num_classes, 2)
        check_int("data.train_size", self.train_size, 1)
        check_int("data.test_size", self.test_size, 1)
        check_number("data.noise", self.noise, ">= 0", lambda v: v >= 0)
        check_int("data.generator_seed", self.generator_seed, 0)

    def require(self, name: str) -> None:
        """Nothing is required."""


@dataclass(frozen=True)
class ImageFolderOptions:
    """``data=image_folder``: a folder of images, decoded once into a memory-mapped cache."""

    dir: str | None = None  # one subfolder per class, or train/, val/, test/ holding them; required
    size: tuple[int, int] | None = None  # [height, width] resized and centre-cropped to; None = as stored
    channels: int = 3  # 1 (grey) or 3 (RGB); images are converted as needed
    workers: int | None = None  # decoding processes; None = one per core
    cache_dir: str | None = None  # None = archsearch.resources.user_cache_dir()
    skip_bad: bool = False  # skip unreadable or corrupt files, and say how many
    test_fraction: float = 0.2  # without test/: carved out with seed 0, the same in every run

    PATHS: ClassVar[tuple[str, ...]] = ("dir", "cache_dir")

    def __post_init__(self) -> None:
        _set(self, "dir", _path("dir", self.dir))
        _set(self, "size", _size(self.size))
        _channels(self.channels, keep=False)
        if self.workers is not None:
            check_int("data.workers", self.workers, 1, " or null (one per core)")
        _set(self, "cache_dir", _path("cache_dir", self.cache_dir))
        check_flag("data.skip_bad", self.skip_bad)
        check_fraction("data.test_fraction", self.test_fraction)

    def require(self, name: str) -> None:
        """``dir`` is set."""
        if not self.dir:
            raise ConfigError("data.dir must name the image folder (one subfolder per class).")


@dataclass(frozen=True)
class ArraysOptions:
    """``data=arrays``: a ``.npz`` file (keys x, y[, test_x, test_y]) or ``.npy`` files."""

    path: str | None = None  # the .npz, or the images' .npy; required
    labels: str | None = None  # with a .npy path: the labels' .npy
    test_path: str | None = None  # optional test images (.npy)
    test_labels: str | None = None  # optional test labels (.npy)
    num_classes: int | None = None  # None = the largest label + 1
    channels: int | None = None  # None = as stored; 1 or 3 converts

    PATHS: ClassVar[tuple[str, ...]] = ("path", "labels", "test_path", "test_labels")

    def __post_init__(self) -> None:
        for key in self.PATHS:
            _set(self, key, _path(key, getattr(self, key)))
        if self.num_classes is not None:
            check_int("data.num_classes", self.num_classes, 2, " or null")
        _channels(self.channels, keep=True)

    def require(self, name: str) -> None:
        """``path`` names a .npz file, or a .npy file with ``labels`` beside it."""
        if not self.path:
            raise ConfigError(
                "data.path must name a .npz file (keys x, y[, test_x, test_y]) or an .npy file."
            )
        path = Path(self.path).expanduser()
        if path.suffix not in (".npz", ".npy"):
            raise ConfigError(f"data.path must end in .npz or .npy, got {path}.")
        if path.suffix == ".npy" and not self.labels:
            raise ConfigError(f"data.labels must name the .npy file of labels for data.path={path}.")


@dataclass(frozen=True)
class TorchvisionOptions:
    """``source: torchvision``: the class ``name`` of ``torchvision.datasets`` reading from ``root``."""

    root: str | None = None  # the directory holding the dataset's files; required
    download: bool = False  # let torchvision download the files
    size: tuple[int, int] | None = None  # for classes read item by item: [height, width]; None = the first's
    channels: int | None = None  # None = as stored; 1 or 3 converts
    test_fraction: float = 0.2  # for classes with a single split: carved out with seed 0

    PATHS: ClassVar[tuple[str, ...]] = ("root",)

    def __post_init__(self) -> None:
        _set(self, "root", _path("root", self.root))
        check_flag("data.download", self.download)
        _set(self, "size", _size(self.size))
        _channels(self.channels, keep=True)
        check_fraction("data.test_fraction", self.test_fraction)

    def require(self, name: str) -> None:
        """``root`` is set."""
        if not self.root:
            raise ConfigError(f"data.root must name the directory holding the {name} files.")


# --------------------------------------------------------------------------- the loader table


class LoaderOptions(Protocol):
    """What every loader's options class has besides its keys (a frozen dataclass checking itself)."""

    #: The keys naming files or folders (the retrain commands make them absolute).
    PATHS: ClassVar[tuple[str, ...]]
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def require(self, name: str) -> None:
        """Refuse settings the loader cannot work without (a folder, a file), naming the key."""


class Loader(NamedTuple):
    """One kind of dataset: its options class and the function loading it.

    ``function`` is ``"module:name"``, imported when a dataset of this kind is loaded (reading
    settings never imports torch); it is called as ``function(settings, seed)`` and returns a
    :class:`~archsearch.data.base.Dataset`.
    """

    options: type[LoaderOptions]
    function: str

    def load(self) -> Callable[[DataSettings, int], Dataset]:
        """The loading function itself."""
        import importlib

        module, _, name = self.function.partition(":")
        loaded: Callable[[DataSettings, int], Dataset] = getattr(importlib.import_module(module), name)
        return loaded


#: Each kind of dataset (``data.name``, or ``data.source`` where the name is not a kind).
LOADERS: dict[str, Loader] = {
    "digits": Loader(DigitsOptions, "archsearch.data.datasets:load_digits"),
    "fashion_mnist": Loader(FashionMnistOptions, "archsearch.data.datasets:load_fashion_mnist"),
    "cifar10": Loader(Cifar10Options, "archsearch.data.datasets:load_cifar10"),
    "synthetic": Loader(SyntheticOptions, "archsearch.data.datasets:load_synthetic"),
    "image_folder": Loader(ImageFolderOptions, "archsearch.data.image_folder:load_image_folder"),
    "arrays": Loader(ArraysOptions, "archsearch.data.arrays:load_arrays"),
    "torchvision": Loader(TorchvisionOptions, "archsearch.data.torchvision_data:load_torchvision"),
}
DATASETS = tuple(LOADERS)
