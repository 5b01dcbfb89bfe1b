"""How a calibrated profile prices a GEMM (a convolution or linear layer) from its measurements.

Two tables, both written by :mod:`archsearch.hardware.calibrate`:

- ``gemm_rates``: the rate each timed kernel achieved; a GEMM is priced at the rate of its
  nearest measured shapes (:func:`interpolate_rate`).
- ``gemm_lines``: per kernel area, a line fitted to the timed kernels, ``fixed + per_image *
  batch + flops / rate + operand bytes / operand_gbs`` with output channels rounded up to the
  vector ``block`` the library computes in (:func:`line_seconds`): a convolution with 17 outputs
  takes as long as one with 32 on a 16-lane CPU, which no interpolation over a few dozen random
  shapes sees. The operand term is the GEMM's ``k x n`` operand streamed once: the im2col matrix
  ONNX Runtime builds for a convolution outside its blocked layout (a plain 5x5 one with 16
  outputs at batch 64 ran at 30 GFLOP/s where its line without the term said 51), or the input
  of a 1x1 convolution, which with few input channels streams more than it computes. A line
  without it put that time on ``per_image`` and charged it to every small convolution at a large
  batch. The calibration keeps a class's lines only where they fit its timings better than the
  nearest shapes predict them (on the 2-core build VM: eager torch's convolutions and most of
  ONNX Runtime's).

A runtime with a blocked channel layout runs some convolutions in it and the rest in plain NCHW,
with other kernels: ONNX Runtime on x86 rewrites a convolution into its NCHWc form (channels in
blocks of 8 or 16) only when its input channels allow (:func:`runs_blocked`), and runs the rest
through im2col and a GEMM, 1.1-1.8x slower for the same work on the build VM. A profile of such a
runtime keeps the plain ones' measurements apart, as ``conv1x1_nchw`` and ``convkxk_nchw``
tables (:func:`table_class`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from archsearch.errors import ConfigError
from archsearch.net.kernels import GEMM_KINDS, Kernel

__all__ = [
    "LINE_FIELDS",
    "NEAREST",
    "OPERAND_BYTES",
    "PLAIN_SUFFIX",
    "TABLE_CLASSES",
    "base_class",
    "check_lines",
    "check_rates",
    "interpolate_rate",
    "line_seconds",
    "runs_blocked",
    "table_class",
]

#: What a GEMM table's name adds to its class for the convolutions a blocked-layout runtime
#: runs in plain NCHW.
PLAIN_SUFFIX = "_nchw"

#: The names a GEMM table may have: the GEMM classes, and the convolutions' plain-layout tables.
TABLE_CLASSES = (*GEMM_KINDS, "conv1x1" + PLAIN_SUFFIX, "convkxk" + PLAIN_SUFFIX)

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


def runs_blocked(kernel: Kernel, block: int, step: int = 0) -> bool:
    """Whether a convolution runs in a blocked layout of ``block`` channels (ONNX Runtime's NCHWc).

    ONNX Runtime's ``NchwcTransformer`` rewrites a convolution when it has fewer input channels
    than a block (it reads the plain input directly) or a multiple of ``step`` (its input is
    padded to whole blocks; 4 in ONNX Runtime 1.32, the block itself in older versions, the
    default here), whatever layout its input arrives in; a grouped one only when its output
    channels are a multiple of a block and it is depthwise, or both its channel counts per group
    are multiples. Output channels are padded up to the block. ``block`` 0: no blocked layout.
    """
    if block <= 0 or kernel.kind == "linear":
        return False
    m, _, k = kernel.gemm
    cin, cout = k // max(kernel.taps, 1) * kernel.groups, m * kernel.groups
    if kernel.groups == 1:
        return cin < block or cin % (step or block) == 0
    depthwise = cin == kernel.groups == cout
    return cout % block == 0 and (depthwise or (cin % block == 0 and m % block == 0))


def table_class(kernel: Kernel, block: int, step: int = 0) -> str:
    """The GEMM table that prices ``kernel`` on a runtime with a ``block``-channel layout
    (:func:`runs_blocked`): its class, or the class's plain-layout table for a convolution that
    runs outside the layout."""
    plain = block > 0 and kernel.kind != "linear" and not runs_blocked(kernel, block, step)
    return kernel.kind + PLAIN_SUFFIX if plain else kernel.kind


def base_class(table: str) -> str:
    """The GEMM class of a table name (``convkxk_nchw`` -> ``convkxk``)."""
    return table.removesuffix(PLAIN_SUFFIX)


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
LINE_FIELDS = ("taps", "block", "fixed_us", "per_image_us", "gflops", "operand_gbs")

#: Bytes of one element of a GEMM's operands as the calibration times them (fp32).
OPERAND_BYTES = 4


def line_seconds(rows: Sequence[Sequence[float]], kernel: Kernel) -> float:
    """Seconds of ``kernel`` on its class's line for its kernel area (else the nearest area's).

    ``fixed + per_image * batch + 2 * ceil(m / block) * block * n * k / rate + 4 * k * n /
    operand_gbs``, where ``m`` is the output channels and ``k x n`` the GEMM's operand (the
    im2col matrix, or a 1x1 convolution's input); a row is ``[taps, block, fixed_us,
    per_image_us, gflops, operand_gbs]``, ``operand_gbs`` 0 (or left out, as profiles before
    it have it) for no operand term.
    """
    row = min(rows, key=lambda r: (abs(r[0] - kernel.taps), r[0]))
    _, block, fixed_us, per_image_us, gflops = row[:5]
    operand_gbs = row[5] if len(row) > 5 else 0.0
    m, n, k = kernel.gemm
    padded = 2.0 * math.ceil(m / block) * block * n * k
    streamed = OPERAND_BYTES * n * k / (operand_gbs * 1e9) if operand_gbs > 0 else 0.0
    return (fixed_us + per_image_us * kernel.batch) * 1e-6 + padded / (gflops * 1e9) + streamed


def check_lines(raw: Mapping[str, Any], source: str) -> dict[str, list[list[float]]]:
    """Validate ``gemm_lines``: GEMM classes to non-empty lists of ``LINE_FIELDS`` rows."""
    return _check_tables(
        raw,
        "gemm_lines",
        source,
        lambda table: all(
            len(r) in (5, 6) and min(r[0], r[1], r[4]) > 0 and min(r[2:4]) >= 0 and min(r[5:], default=0) >= 0
            for r in table
        ),
        f"[{', '.join(LINE_FIELDS)}] rows: taps, block and gflops > 0, the times and operand_gbs "
        ">= 0 (operand_gbs 0 or left out: no operand term).",
    )


def _check_tables(
    raw: Mapping[str, Any], key: str, source: str, valid: Callable[[list[list[float]]], bool], layout: str
) -> dict[str, list[list[float]]]:
    """GEMM table classes (:data:`TABLE_CLASSES`) to non-empty tables of numbers that ``valid`` accepts.

    Raises:
        ConfigError: an unknown class, or a table that is empty, not numbers or not ``valid``,
            naming ``key`` and the ``layout`` its rows must have.
    """
    out: dict[str, list[list[float]]] = {}
    for kind, rows in raw.items():
        if kind not in TABLE_CLASSES:
            raise ConfigError(
                f"{source} key '{key}' has unknown class {kind!r}; allowed: {', '.join(TABLE_CLASSES)}."
            )
        try:
            table = [[float(v) for v in row] for row in rows]
        except (TypeError, ValueError):
            table = []
        if not table or not valid(table):
            raise ConfigError(f"{source} key '{key}.{kind}' must be a non-empty list of {layout}")
        out[str(kind)] = table
    return out
