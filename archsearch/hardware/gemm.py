"""How a calibrated profile prices a GEMM (a convolution or linear layer) from its measurements.

Two tables, both written by :mod:`archsearch.hardware.calibrate`:

- ``gemm_rates``: the rate each timed kernel achieved; a GEMM is priced at the rate of its
  nearest measured shapes (:func:`interpolate_rate`).
- ``gemm_lines``: per kernel area, a line fitted to the timed kernels, ``fixed + per_image *
  batch + flops / rate`` with output channels rounded up to the vector ``block`` the library
  computes in (:func:`line_seconds`): a convolution with 17 outputs takes as long as one with
  32 on a 16-lane CPU, which no interpolation over a few dozen random shapes sees. The
  calibration keeps a class's lines only where they fit its timings better than the nearest
  shapes predict them (on the 2-core build VM: eager torch's convolutions, not ONNX Runtime's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from archsearch.errors import ConfigError
from archsearch.net.kernels import GEMM_KINDS, Kernel

__all__ = ["LINE_FIELDS", "NEAREST", "check_lines", "check_rates", "interpolate_rate", "line_seconds"]

#: Measured shapes an interpolated GEMM rate averages over (inverse squared distance weights).
NEAREST = 4


def interpolate_rate(
    rows: Sequence[Sequence[float]] | np.ndarray, gemm: tuple[int, int, int], batch: int = 1
) -> float:
    """GFLOP/s of a GEMM of shape ``gemm`` (``batch`` images) from measured rows.

    Rows are ``[m, n, k, gflops]`` or ``[m, n, k, gflops, batch]``. The geometric mean of the
    ``NEAREST`` closest rows' rates, in log2 (m, n, k) space, and batch too where rows give it,
    weighted by inverse squared distance (an exact match takes that row's rate): doubling a
    dimension is the same step everywhere, and outside the measured range the nearest shapes
    answer. The batch counts apart from ``n`` (pixels of all images): a conv of 64 images of 7x7
    runs a loop a conv of one 56x56 image does not (0.6-0.8x the rate on ONNX Runtime).
    """
    table = np.asarray(rows, dtype=float)
    point = np.log2(np.maximum(np.asarray([*gemm, batch], dtype=float), 1.0))
    coords = [0, 1, 2, 4][: table.shape[1] - 1]  # m, n, k and, in five-column rows, the batch
    dist2 = ((np.log2(table[:, coords]) - point[: len(coords)]) ** 2).sum(axis=1)
    nearest = np.argsort(dist2)[:NEAREST]
    weights = 1.0 / (dist2[nearest] + 1e-2)
    return float(np.exp((weights * np.log(table[nearest, 3])).sum() / weights.sum()))


def check_rates(raw: Mapping[str, Any], source: str) -> dict[str, list[list[float]]]:
    """Validate ``gemm_rates``: GEMM classes to non-empty lists of four or five positive numbers."""
    return _check_tables(
        raw,
        "gemm_rates",
        source,
        lambda table: (
            len({len(r) for r in table}) == 1 and all(len(r) in (4, 5) and min(r) > 0 for r in table)
        ),
        "[m, n, k, gflops] or [m, n, k, gflops, batch] rows (all alike) of positive numbers.",
    )


#: The numbers of a ``gemm_lines`` row.
LINE_FIELDS = ("taps", "block", "fixed_us", "per_image_us", "gflops")


def line_seconds(rows: Sequence[Sequence[float]], kernel: Kernel) -> float:
    """Seconds of ``kernel`` on its class's line for its kernel area (else the nearest area's).

    ``fixed + per_image * batch + 2 * ceil(m / block) * block * n * k / rate``, where ``m`` is
    the output channels; a row is ``[taps, block, fixed_us, per_image_us, gflops]``.
    """
    _, block, fixed_us, per_image_us, gflops = min(rows, key=lambda r: (abs(r[0] - kernel.taps), r[0]))
    m, n, k = kernel.gemm
    padded = 2.0 * math.ceil(m / block) * block * n * k
    return (fixed_us + per_image_us * kernel.batch) * 1e-6 + padded / (gflops * 1e9)


def check_lines(raw: Mapping[str, Any], source: str) -> dict[str, list[list[float]]]:
    """Validate ``gemm_lines``: GEMM classes to non-empty lists of ``LINE_FIELDS`` rows."""
    return _check_tables(
        raw,
        "gemm_lines",
        source,
        lambda table: all(len(r) == 5 and min(r[0], r[1], r[4]) > 0 and min(r[2:4]) >= 0 for r in table),
        f"[{', '.join(LINE_FIELDS)}] rows: taps, block and gflops > 0, the times >= 0.",
    )


def _check_tables(
    raw: Mapping[str, Any], key: str, source: str, valid: Callable[[list[list[float]]], bool], layout: str
) -> dict[str, list[list[float]]]:
    """GEMM classes to non-empty tables of numbers that ``valid`` accepts.

    Raises:
        ConfigError: an unknown class, or a table that is empty, not numbers or not ``valid``,
            naming ``key`` and the ``layout`` its rows must have.
    """
    out: dict[str, list[list[float]]] = {}
    for kind, rows in raw.items():
        if kind not in GEMM_KINDS:
            raise ConfigError(
                f"{source} key '{key}' has unknown class {kind!r}; allowed: {', '.join(GEMM_KINDS)}."
            )
        try:
            table = [[float(v) for v in row] for row in rows]
        except (TypeError, ValueError):
            table = []
        if not table or not valid(table):
            raise ConfigError(f"{source} key '{key}.{kind}' must be a non-empty list of {layout}")
        out[str(kind)] = table
    return out
