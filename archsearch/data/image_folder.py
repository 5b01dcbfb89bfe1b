"""A dataset from a folder of images, decoded once into a memory-mapped cache.

Layouts (torchvision's ImageFolder): one subfolder per class, or ``train/``, ``val/`` and
``test/`` at the top with the class folders inside (``val/`` and ``test/`` optional). Without a
``test/`` folder a fixed ``test_fraction`` of the images is carved out with seed 0, the same in
every run; without ``val/`` the validation split is drawn with the run's seed, as for the
built-in datasets.

The first load decodes every image in parallel (:mod:`archsearch.data.decode`) into a uint8
cache entry (:mod:`archsearch.data.cache`) keyed by the folder and the settings, and checked
against the file list, sizes and modification times; later loads memory-map it and start in
seconds. The Dataset holds :class:`~archsearch.data.images.ImageArray` views that normalise
each batch with the training split's mean and std, computed from per-image sums stored in the
cache.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archsearch.data.base import Augment, Dataset, split_indices, subset_size
from archsearch.data.cache import CacheEntry, default_cache_dir, fingerprint, settings_key
from archsearch.data.decode import Target, decode_into, image_suffixes
from archsearch.data.images import ImageArray
from archsearch.data.settings import DataSettings, ImageFolderOptions
from archsearch.errors import DataError

__all__ = ["dataset_from_folder", "load_image_folder"]

#: Row roles in the cache's ``part`` array.
TRAIN, VAL, TEST, SKIPPED = 0, 1, 2, -1


@dataclass(frozen=True)
class Listing:
    """Every image file of a folder with its class and split (``part``), in a fixed order.

    ``stamps`` holds each file's (path, size, modification time in ns) for the fingerprint.
    """

    root: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]
    stamps: tuple[tuple[str, int, int], ...]
    labels: np.ndarray
    parts: np.ndarray


def scan(root: Path) -> Listing:
    """List the image files of ``root`` by class and split.

    Raises:
        DataError: the folder is missing, has fewer than two class folders, or a training
            class folder holds no image.
    """
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory.")
    top = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    splits = {"train": TRAIN, "val": VAL, "test": TEST}
    roots = {name: top[name] for name in splits if name in top} if "train" in top else {"train": root}
    classes = tuple(sorted(_class_dirs(roots["train"])))
    if not classes:
        raise DataError(
            f"image folder {roots['train']} has no class folders; put each class's images in a "
            "subfolder named after the class."
        )
    if len(classes) < 2:
        raise DataError(
            f"image folder {roots['train']} has one class folder ({classes[0]}); a classifier "
            "needs at least two."
        )
    suffixes = image_suffixes()
    stamps: list[tuple[str, int, int]] = []
    labels: list[int] = []
    parts: list[int] = []
    for split, folder in roots.items():
        for name in sorted(_class_dirs(folder)):
            if name not in classes:
                raise DataError(f"class folder {folder / name} is not a class of {roots['train']}.")
            found = sorted(_image_files(str(folder / name), suffixes))
            if not found and split == "train":
                raise DataError(
                    f"class folder {folder / name} holds no images (looked for "
                    f"{', '.join(sorted(s for s in suffixes if s in ('.png', '.jpg', '.jpeg')))}, ...)."
                )
            stamps += found
            labels += [classes.index(name)] * len(found)
            parts += [splits[split]] * len(found)
    files = tuple(path for path, _, _ in stamps)
    return Listing(
        root, classes, files, tuple(stamps), np.asarray(labels, np.int64), np.asarray(parts, np.int8)
    )


def _image_files(folder: str, suffixes: frozenset[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every image under ``folder``, hidden entries skipped.

    ``os.scandir`` rather than pathlib: one stat per file, which keeps a cached load of a
    large folder fast (listing is most of its time).
    """
    return _walk(folder, suffixes, set())


def _walk(folder: str, suffixes: frozenset[str], seen: set[str]) -> list[tuple[str, int, int]]:
    """:func:`_image_files` below ``folder``; a folder reached again through a symlink is listed once."""
    real = os.path.realpath(folder)
    if real in seen:
        return []
    seen.add(real)
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    found += _walk(entry.path, suffixes, seen)
                elif os.path.splitext(entry.name)[1].lower() in suffixes and entry.is_file():
                    stat = entry.stat()
                    found.append((entry.path, stat.st_size, stat.st_mtime_ns))
            except OSError as exc:
                why = exc.strerror or str(exc)
                raise DataError(
                    f"image folder entry {entry.path} cannot be read ({why}); remove or fix it."
                ) from None
    return found


def _class_dirs(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]


def _first_size(files: Sequence[str]) -> tuple[int, int]:
    """(height, width) of the first file Pillow can open; (1, 1) if none can (all fail later)."""
    from PIL import Image

    for path in files:
        try:
            with Image.open(path) as image:
                return image.height, image.width
        except Exception:  # an unreadable file is reported by the decoder, with its name
            continue
    return 1, 1


def _build(entry: CacheEntry, listing: Listing, target: Target, workers: int | None, skip_bad: bool) -> None:
    """Decode every file into ``entry``: pixels, labels, parts, moments, then the manifest."""
    n = len(listing.files)
    entry.begin()
    try:
        pixels = entry.open_array("x", (n, target.channels, target.height, target.width), np.uint8)
        moments = np.zeros((n, 2, target.channels), np.float64)
        problems = decode_into(listing.files, target, pixels, moments, workers=workers)
        fatal = [p for p in problems if not p.unreadable or not skip_bad]
        if fatal:
            hint = "; set data.skip_bad=true to skip such files" if fatal[0].unreadable else ""
            more = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
            raise DataError(f"{fatal[0].message}{more}{hint}.")
        pixels.flush()  # type: ignore[attr-defined]  # open_memmap returns a np.memmap
        del pixels
        parts = listing.parts.copy()
        parts[[p.index for p in problems]] = SKIPPED
        if not (parts == TRAIN).any():
            raise DataError(f"image folder {listing.root} has no readable training image.")
        entry.save_array("y", listing.labels)
        entry.save_array("part", parts)
        entry.save_array("moments", moments)
        skipped = [os.path.relpath(listing.files[p.index], listing.root) for p in problems]
        entry.commit({"classes": list(listing.classes), "skipped": skipped})
    finally:
        entry.abort()


def _rows(parts: np.ndarray, settings: DataSettings, seed: int) -> tuple[np.ndarray, ...]:
    """Row numbers of the train, validation and test splits."""
    pool = np.flatnonzero(parts == TRAIN)
    test = np.flatnonzero(parts == TEST)
    if not len(test):
        # No test/ folder: a fixed carve (seed 0) so the test set is the same in every run.
        order = np.random.default_rng(0).permutation(len(pool))
        n_test = round(len(pool) * settings.options_as(ImageFolderOptions).test_fraction)
        test, pool = np.sort(pool[order[:n_test]]), np.sort(pool[order[n_test:]])
    val = np.flatnonzero(parts == VAL)
    if len(val):
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed)).numpy()
        return np.sort(pool[order[: subset_size(settings.subset, len(pool))]]), val, test
    train_at, val_at = split_indices(len(pool), settings.val_fraction, settings.subset, seed)
    return pool[train_at], pool[val_at], test


def _statistics(
    moments: np.ndarray, rows: np.ndarray, pixels_per_image: int
) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std of the training rows, from the stored sums."""
    sums = np.asarray(moments[rows], dtype=np.float64).sum(axis=0)
    count = len(rows) * pixels_per_image
    mean = sums[0] / count
    var = np.maximum(sums[1] - count * mean**2, 0.0) / max(count - 1, 1)
    return mean.tolist(), [max(math.sqrt(v), 1e-6) for v in var]


def dataset_from_folder(
    directory: str | os.PathLike[str],
    *,
    size: Sequence[int] | None = None,
    channels: int = 3,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    subset: int | float | None = None,
    seed: int = 0,
    augment: Augment | None = None,
    workers: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    skip_bad: bool = False,
    name: str | None = None,
) -> Dataset:
    """A :class:`Dataset` from a folder of images (see the module docstring for layouts).

    Args:
        directory: the folder (class subfolders, or ``train/``, ``val/``, ``test/``).
        size: ``[height, width]`` every image is resized (shorter side) and centre-cropped to;
            None = keep the first image's size, which every image must then have.
        channels: 1 (grey) or 3 (RGB); images are converted as needed.
        val_fraction: share of the training images held out for validation (without ``val/``).
        test_fraction: share carved out, with seed 0, as the test split (without ``test/``).
        subset: training images kept after the validation split: None, a fraction or a count.
        seed: seeds the validation split and the subset.
        augment: batch augmentation the trainer may apply.
        workers: decoding processes; None = one per core.
        cache_dir: where the decoded cache lives; None = :func:`default_cache_dir`.
        skip_bad: skip (and count) files Pillow cannot read instead of failing.
        name: the dataset's name; None = the folder's name.

    Raises:
        DataError: the folder, a class folder or an image is missing, empty or unreadable.
        ConfigError: a setting is out of range.
    """
    settings = DataSettings(
        name="image_folder",
        val_fraction=val_fraction,
        subset=subset,
        augment=augment or Augment(),
        options=ImageFolderOptions(
            dir=os.fspath(directory),
            size=None if size is None else tuple(size),  # type: ignore[arg-type]  # checked: [H, W]
            channels=channels,
            workers=workers,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            skip_bad=skip_bad,
            test_fraction=test_fraction,
        ),
    )
    return load_image_folder(settings, seed, name=name)


def load_image_folder(settings: DataSettings, seed: int, *, name: str | None = None) -> Dataset:
    """``data=image_folder``: the folder ``data.dir`` as a Dataset, through its cache
    (:class:`~archsearch.data.loaders.ImageFolderOptions`)."""
    options = settings.options_as(ImageFolderOptions)
    root = Path(str(options.dir)).expanduser().resolve()
    size, channels, skip_bad = options.size, options.channels, options.skip_bad
    listing = scan(root)
    height, width = size or _first_size(listing.files)
    target = Target(channels, height, width, resize=size is not None)
    key = {"dir": str(root), "size": list(size or ()), "channels": channels, "skip_bad": skip_bad}
    cache_root = Path(str(options.cache_dir or default_cache_dir())).expanduser()
    entry = CacheEntry(
        cache_root / f"folder-{root.name}-{settings_key(key)}", key, fingerprint(listing.stamps)
    )
    loaded = entry.load()
    if loaded is None:
        _build(entry, listing, target, options.workers, skip_bad)
        loaded = entry.load()
        if loaded is None:
            raise DataError(f"the image cache in {entry.directory} could not be read back after writing it.")
    manifest, arrays = loaded
    if manifest["skipped"]:
        from rich.console import Console

        Console(stderr=True).print(
            f"skipped {len(manifest['skipped'])} unreadable image(s) under {root} (data.skip_bad=true), "
            f"e.g. {manifest['skipped'][0]}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    return _dataset(name or root.name, manifest, arrays, entry.directory, settings, seed)


def _dataset(
    name: str,
    manifest: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    directory: Path,
    settings: DataSettings,
    seed: int,
) -> Dataset:
    pixels, labels, parts = arrays["x"], arrays["y"], np.asarray(arrays["part"])
    train, val, test = _rows(parts, settings, seed)
    c, h, w = (int(d) for d in pixels.shape[1:])
    mean, std = _statistics(arrays["moments"], train, h * w)

    def view(rows: np.ndarray) -> ImageArray:
        return ImageArray(pixels, rows, mean, std, source=directory / "x.npy")

    y = torch.from_numpy(np.array(labels, dtype=np.int64))
    return Dataset(
        name=name,
        shape=(c, h, w),
        num_classes=len(manifest["classes"]),
        train_x=view(train),
        train_y=y[train],
        val_x=view(val),
        val_y=y[val],
        test_x=view(test),
        test_y=y[test],
        augment=settings.augment,
        mean=tuple(mean),
        std=tuple(std),
        class_names=tuple(str(c) for c in manifest["classes"]),
    )
