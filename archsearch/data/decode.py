"""Decoding image files with Pillow into uint8 C x H x W arrays, in parallel worker processes.

Every image is converted to the asked channel count (``L`` or ``RGB``), resized so its shorter
side fits the target and centre-cropped to it. Workers decode chunks of files and send back the
pixels with per-image channel sums and sums of squares, so normalisation statistics of any split
come later from the sums without reading the pixels again. Files Pillow cannot read are
reported, not raised, so the caller decides whether to skip them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
from PIL import Image

from archsearch.errors import DataError

__all__ = ["Problem", "Target", "decode_into", "image_suffixes", "to_array"]

#: Pillow's error types for a file it cannot parse (a decompression bomb counts as unreadable too).
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Target:
    """What every decoded image becomes: ``channels`` x ``height`` x ``width`` uint8.

    ``resize`` false means the images must already be this size (``data.size`` unset).
    """

    channels: int
    height: int
    width: int
    resize: bool


@dataclass(frozen=True)
class Problem:
    """A file that did not decode: ``unreadable`` ones may be skipped, others are always errors."""

    index: int
    message: str
    unreadable: bool


def image_suffixes() -> frozenset[str]:
    """Lower-case file suffixes of every format this Pillow reads."""
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def to_array(image: Image.Image, target: Target, path: str) -> np.ndarray:
    """``image`` converted, resized (shorter side first) and centre-cropped to ``target``.

    Raises:
        DataError: its mode has no conversion to the channel count, or (without ``resize``)
            its size differs from the target's.
    """
    mode = "L" if target.channels == 1 else "RGB"
    if image.mode != mode:
        try:
            image = image.convert(mode)
        except ValueError:
            raise DataError(
                f"image {path} has mode {image.mode}, which cannot be converted to "
                f"{target.channels} channel(s)."
            ) from None
    w, h = image.size
    th, tw = target.height, target.width
    if (h, w) != (th, tw):
        if not target.resize:
            raise DataError(
                f"image {path} is {h}x{w} but the first image is {th}x{tw}; set data.size=[H, W] "
                "to resize every image."
            )
        scale = max(th / h, tw / w)
        nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
        image = image.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - tw) // 2, (nh - th) // 2
        image = image.crop((left, top, left + tw, top + th))
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _decode_chunk(
    start: int, paths: Sequence[str], target: Target
) -> tuple[int, np.ndarray, np.ndarray, list[Problem]]:
    """Decode ``paths`` (global rows from ``start``): pixels, per-image moments and problems."""
    pixels = np.zeros((len(paths), target.channels, target.height, target.width), dtype=np.uint8)
    moments = np.zeros((len(paths), 2, target.channels), dtype=np.float64)
    problems = []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image.load()
                array = to_array(image, target, path)
        except DataError as exc:
            problems.append(Problem(start + i, str(exc), unreadable=False))
            continue
        except _UNREADABLE as exc:
            problems.append(Problem(start + i, f"image {path} cannot be read ({exc})", unreadable=True))
            continue
        pixels[i] = array
        flat = array.reshape(target.channels, -1).astype(np.float64)
        moments[i, 0], moments[i, 1] = flat.sum(axis=1), np.square(flat).sum(axis=1)
    return start, pixels, moments, problems


def decode_into(
    paths: Sequence[str],
    target: Target,
    pixels: np.ndarray,
    moments: np.ndarray,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> list[Problem]:
    """Decode every file of ``paths`` into ``pixels[i]`` and its moments into ``moments[i]``.

    Args:
        paths: image files, one row each.
        target: what each image becomes.
        pixels: uint8 N x C x H x W destination (a memory map: chunks are written as they come).
        moments: float64 N x 2 x C destination (per-channel sum and sum of squares).
        workers: decoding processes; None = one per core, 1 = decode in this process.
        progress: show a progress bar on stderr when it is a terminal.

    Returns:
        The files that did not decode (their rows are left zero), in row order.
    """
    from rich.console import Console
    from rich.progress import Progress

    workers = workers or os.cpu_count() or 1
    # Chunks big enough to amortise the round trip, small enough to keep every worker busy.
    size = max(8, min(256, len(paths) // (workers * 8) or 1))
    chunks = [(s, list(paths[s : s + size])) for s in range(0, len(paths), size)]
    problems: list[Problem] = []
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not (progress and console.is_terminal)) as bar:
        task = bar.add_task(f"decoding {len(paths)} images", total=len(paths))

        def store(done: tuple[int, np.ndarray, np.ndarray, list[Problem]]) -> None:
            start, chunk_pixels, chunk_moments, chunk_problems = done
            pixels[start : start + len(chunk_pixels)] = chunk_pixels
            moments[start : start + len(chunk_pixels)] = chunk_moments
            problems.extend(chunk_problems)
            bar.advance(task, len(chunk_pixels))

        if workers == 1 or len(chunks) == 1:
            for start, chunk in chunks:
                store(_decode_chunk(start, chunk, target))
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
                futures = [pool.submit(_decode_chunk, start, chunk, target) for start, chunk in chunks]
                for future in as_completed(futures):
                    store(future.result())
    return sorted(problems, key=lambda p: p.index)
