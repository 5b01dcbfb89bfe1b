"""Fitting the latency model's parameters to micro-benchmark timings.

:func:`fit_gemm_class` fits one GEMM class's roofline (peak, bandwidth and efficiency
half-sizes) by least squares in log time; :func:`fit_context_overheads` fits the fixed cost a
kernel pays inside a network (per call and per image), and a scale on its roofline time, by
non-negative least squares.
Both are pure numpy/scipy, so they can be checked on synthetic timings without measuring anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares, nnls

from archsearch.hardware.gemm import OPERAND_BYTES, base_class, interpolate_rate
from archsearch.hardware.microbench import GemmSample, busy_seconds
from archsearch.net.kernels import KERNEL_KINDS, Kernel

__all__ = [
    "ContextFit",
    "GemmTables",
    "fit_context_overheads",
    "fit_gemm_class",
    "fit_gemm_lines",
    "fit_gemm_tables",
]


@dataclass(frozen=True)
class ContextFit:
    """What a kernel costs inside networks: its fixed cost and a scale on the roofline time.

    Attributes:
        factor: how much dearer a kernel's own dispatch is amid other ops than in a hot loop.
        extra_us: fixed microseconds every kernel adds in a network (module calls, graph glue).
        overheads_us: the resulting overhead of every kernel kind.
        median_ape: median relative error of the fit over the probe networks.
        busy_scale: measured over predicted roofline (busy) time of whole networks: the
            micro-benchmarks' peaks and rates divided by it describe kernels as networks run
            them (caches shared with neighbours, another runtime's kernels).
        per_image_us: what every kernel adds in a network per image of its batch.
        cold_start: what every kernel adds in a network at any batch, as a fraction of its
            roofline time at batch 1.
    """

    factor: float
    extra_us: float
    overheads_us: dict[str, float]
    median_ape: float
    busy_scale: float = 1.0
    per_image_us: float = 0.0
    cold_start: float = 0.0


def fit_context_overheads(
    kernel_counts: np.ndarray,
    single_us: Mapping[str, float],
    busy_s: np.ndarray,
    measured_s: np.ndarray,
    fit_scale: bool = True,
    batch: np.ndarray | None = None,
    joint: bool = False,
    per_kernel: bool = True,
    busy1_s: np.ndarray | None = None,
) -> ContextFit:
    """Fit ``scale``, ``factor``, ``extra``, ``per_image`` and ``cold`` so probe networks' times are
    explained.

    The model of one network is ``scale * busy + cold * busy1 + sum(counts * (factor * single +
    extra + per_image * batch))``.

    Args:
        kernel_counts: one row per timed probe network, one column per ``KERNEL_KINDS`` entry.
        single_us: single-op-loop overhead of every kernel kind, microseconds.
        busy_s: each network's roofline (busy) seconds, with the micro-benchmarks' rates.
        measured_s: each network's measured seconds.
        fit_scale: fit ``scale`` too; False keeps the micro-benchmarks' rates (scale 1).
        batch: images per timed network (None: all 1). The networks at batch 1 fit ``factor``
            and ``extra``; the larger ones, with those fixed, ``per_image`` (and ``scale``).
        joint: fit all four together over every network instead (with networks at a large
            batch among them): ONNX Runtime's, where in turns the batch-1 networks put on
            their fixed costs what its roofline misses and the estimate of small networks came
            out 1.2x high.
        per_kernel: fit ``extra`` too; False keeps it 0 (eager torch's: the two are nearly
            collinear, and one fit in five put everything on ``extra``, losing the kinds'
            relative costs).
        busy1_s: each network's roofline seconds at batch 1, to fit ``cold`` with the batch-1
            networks' other terms; None: ``cold`` is 0. Eager torch's batch-1 networks ran their
            kernels ~1.6x their hot-loop time, large ones less so: a scale alone, fitted where
            batch 1 sets it, put batch-64 estimates up to 1.4x high.

    Non-negative robust least squares on log times (:func:`_robust_log_fit`), so a 50 us net
    counts as much as a 50 ms one and one odd probe cannot drag the fit. Shared overhead
    parameters rather than one per kind: in networks the conv, batch norm and activation
    counts move together, so per-kind values are not identifiable, while the single-op loop
    already gives each kind's relative cost. ``scale`` (at most 20) is fitted only with a probe
    whose roofline time is a quarter of its time; otherwise it stays 1.
    """
    single = np.array([single_us[kind] for kind in KERNEL_KINDS]) * 1e-6
    target = np.maximum(np.asarray(measured_s, dtype=float), 1e-7)
    busy = np.asarray(busy_s, dtype=float)
    images = np.ones(len(target)) if batch is None else np.asarray(batch, dtype=float)
    total = kernel_counts.sum(axis=1)
    cold_busy = 0 * busy if busy1_s is None else np.asarray(busy1_s, dtype=float)
    fixed = total if per_kernel else 0 * total
    design = np.stack([busy, kernel_counts @ single, fixed, total * images, cold_busy], axis=1)
    large = images > 1
    cold = 0.0
    if joint and large.any():
        upper = (20.0 if fit_scale else 1.0 + 1e-9, np.inf, np.inf, np.inf)
        scale, factor, extra, per_image = _robust_log_fit(
            design[:, :4], target, (1.0, 1.0, 1e-6, 1e-8), upper
        )
    elif not large.any() and fit_scale and np.max(busy / target) >= 0.25:
        scale, factor, extra = _robust_log_fit(
            design[:, :3], target, (1.0, 1.0, 1e-6), (20.0, np.inf, np.inf)
        )
        per_image = 0.0
    else:
        scale, factor, extra, per_image, cold = _staged_fit(design, target, large, fit_scale)
    params = np.array([scale, factor, extra, per_image, cold])
    ape = np.abs(design @ params - target) / target
    return ContextFit(
        factor=round(float(factor), 3),
        extra_us=round(float(extra) * 1e6, 3),
        overheads_us={
            k: round(float(factor * s + extra) * 1e6, 3) for k, s in zip(KERNEL_KINDS, single, strict=True)
        },
        median_ape=round(float(np.median(ape)), 3),
        busy_scale=round(float(scale), 3),
        per_image_us=round(float(per_image) * 1e6, 4),
        cold_start=round(float(cold), 4),
    )


def _staged_fit(
    design: np.ndarray, target: np.ndarray, large: np.ndarray, fit_scale: bool
) -> tuple[float, float, float, float, float]:
    """``scale, factor, extra, per_image, cold`` fitted in turns (columns of ``design`` in that
    order).

    The batch-1 probes, where they dominate, fit the per-call costs (and the cold start, if
    its column is not all 0); the large-batch ones, with those fixed, what each image adds and
    (``fit_scale``) the roofline's scale; three rounds of turns settle both. Without
    large-batch probes the scale stays 1 (it is not identifiable where no probe's time is
    mostly roofline) and nothing is charged per image.
    """
    small = ~large if large.any() else np.ones(len(target), dtype=bool)
    scale, factor, extra, per_image, cold = 1.0, 1.0, 1e-6, 0.0, 0.1
    per_call = [1, 2, 4]  # factor, extra, cold
    for _ in range(3 if large.any() else 1):
        rest = np.maximum(target - design[:, [0, 3]] @ np.array([scale, per_image]), 1e-3 * target)
        factor, extra, cold = _robust_log_fit(
            design[small][:, per_call],
            rest[small],
            (factor, max(extra, 1e-9), max(cold, 1e-3)),
            (np.inf,) * 3,
        )
        if not large.any():
            break
        rest = np.maximum(target - design[:, per_call] @ np.array([factor, extra, cold]), 1e-3 * target)[
            large
        ]
        if fit_scale:
            scale, per_image = _robust_log_fit(
                design[large][:, [0, 3]], rest, (scale, max(per_image, 1e-9)), (20.0, np.inf)
            )
        else:
            rest = np.maximum(rest - design[large, 0], 1e-3 * target[large])
            (per_image,) = _robust_log_fit(design[large][:, 3:4], rest, (max(per_image, 1e-9),), (np.inf,))
    return scale, factor, extra, per_image, cold


def _robust_log_fit(
    design: np.ndarray, target: np.ndarray, x0: Sequence[float], upper: Sequence[float]
) -> list[float]:
    """Non-negative ``x`` (at most ``upper``) making ``design @ x`` match ``target`` in log space.

    Errors in log space are symmetric: a relative error lets a fit predict 0 for a cost of 1
    per probe but punishes overprediction without bound, so one net faster than its roofline
    used to pull every parameter to 0. A soft-L1 fit, refined with a Cauchy loss (scale 0.1,
    about 10%) whose pull vanishes for far-off points, keeps an odd probe (a timing hiccup)
    from dragging the rest.
    """
    free = np.any(design != 0, axis=0)  # a parameter whose column is all 0 has no say: it is 0
    x = np.asarray(x0, dtype=float)[free]
    for loss in ("soft_l1", "cauchy"):
        x = least_squares(
            lambda p: np.log(design[:, free] @ p) - np.log(target),
            x,
            bounds=(1e-12, np.asarray(upper, dtype=float)[free]),
            loss=loss,
            f_scale=0.1,
            x_scale="jac",
        ).x
    full = np.zeros(len(free))
    full[free] = x
    return [float(v) for v in full]


def fit_gemm_class(
    samples: Sequence[GemmSample], overhead_us: float, peak_gflops: float, bandwidth_gbs: float
) -> dict[str, Any]:
    """Least-squares fit, in log time, of one class's roofline to its timed kernels.

    The model is ``overhead + max(flops / (peak * prod(d / (d + half_d))), bytes / bw)``
    with the overhead fixed at the tiny-op measurement; ``peak``, ``bw`` and the three
    half-sizes are fitted within physical bounds (the peak within 0.05x..2x the matmul peak).

    Returns:
        ``{"gflops", "gbs", "half": {"m", "n", "k"}, "median_ape"}``.
    """
    flops = np.array([s.kernel.flops for s in samples], dtype=float)
    moved = np.array([s.kernel.bytes for s in samples], dtype=float)
    dims = np.array([s.kernel.gemm for s in samples], dtype=float)
    seconds = np.array([s.seconds for s in samples])
    overhead = overhead_us * 1e-6

    def predict(p: np.ndarray) -> np.ndarray:
        peak, bw, hm, hn, hk = np.exp(p[:2]).tolist() + np.expm1(p[2:]).tolist()
        eff = dims[:, 0] / (dims[:, 0] + hm) * dims[:, 1] / (dims[:, 1] + hn) * dims[:, 2] / (dims[:, 2] + hk)
        return overhead + np.maximum(flops / (peak * 1e9 * eff), moved / (bw * 1e9))

    x0 = np.array(
        [math.log(peak_gflops * 0.7), math.log(bandwidth_gbs), math.log1p(8), math.log1p(8), math.log1p(8)]
    )
    lower = [math.log(peak_gflops * 0.05), math.log(bandwidth_gbs * 0.05), 0.0, 0.0, 0.0]
    upper = [math.log(peak_gflops * 2), math.log(bandwidth_gbs * 20), *[math.log1p(4096)] * 3]
    fit = least_squares(
        lambda p: np.log(predict(p)) - np.log(seconds), x0, bounds=(lower, upper), loss="soft_l1"
    )
    peak, bw = np.exp(fit.x[:2])
    halves = np.expm1(fit.x[2:])
    ape = np.abs(predict(fit.x) - seconds) / seconds
    return {
        "gflops": round(float(peak), 2),
        "gbs": round(float(bw), 2),
        "half": {d: round(float(h), 2) for d, h in zip(("m", "n", "k"), halves, strict=True)},
        "median_ape": round(float(np.median(ape)), 3),
    }


#: Vector widths ``fit_gemm_lines`` tries for the output channels (1: no rounding).
BLOCKS = (1, 8, 16)


def _busy(samples: Sequence[GemmSample], overhead_us: float) -> np.ndarray:
    """Each sample's time less its dispatch (:func:`archsearch.hardware.microbench.busy_seconds`)."""
    return np.asarray(busy_seconds(np.array([s.seconds for s in samples]), overhead_us))


def _rate_rows(samples: Sequence[GemmSample], busy: np.ndarray) -> np.ndarray:
    """``gemm_rates`` rows (m, n, k, GFLOP/s, batch) of timed kernels, unrounded."""
    return np.array(
        [
            [*s.kernel.gemm, s.kernel.flops / b / 1e9, s.kernel.batch]
            for s, b in zip(samples, busy, strict=True)
        ]
    )


def fit_gemm_lines(samples: Sequence[GemmSample], overhead_us: float) -> tuple[list[list[float]], float]:
    """Lines ``fixed + per_image * batch + padded flops / rate + operand bytes / operand rate``
    through one class's timings (:func:`archsearch.hardware.gemm.line_seconds`).

    One line per kernel area with at least four samples (non-negative least squares on
    relative errors of the time less dispatch), all with the output-channel block of
    :data:`BLOCKS` that fits best.

    Returns:
        ``gemm_lines`` rows (``[taps, block, fixed_us, per_image_us, gflops, operand_gbs]``,
        ``operand_gbs`` 0 where the fit puts nothing on the operand) and their median
        relative error; no rows and an infinite error with too few samples.
    """
    busy = _busy(samples, overhead_us)
    best: tuple[list[list[float]], float] = ([], math.inf)
    for block in BLOCKS:
        rows, errors = [], []
        for taps in sorted({s.kernel.taps for s in samples}):
            idx = [i for i, s in enumerate(samples) if s.kernel.taps == taps]
            if len(idx) < 4:
                continue
            design = np.array([_line_features(samples[i].kernel, block) for i in idx])
            x, _ = nnls(design / busy[idx, None], np.ones(len(idx)))
            x[2] = max(x[2], 1e-15)
            operand_gbs = 1e-9 / x[3] if x[3] > 0 else 0.0
            row = [float(taps), float(block), x[0] * 1e6, x[1] * 1e6, 1e-9 / x[2], operand_gbs]
            rows.append([round(float(v), 4) for v in row])
            errors += list(np.abs(design @ x - busy[idx]) / busy[idx])
        if rows and float(np.median(errors)) < best[1]:
            best = (rows, float(np.median(errors)))
    return best


def _line_features(kernel: Kernel, block: int) -> list[float]:
    m, n, k = kernel.gemm
    padded = 2.0 * math.ceil(m / block) * block * n * k
    return [1.0, float(kernel.batch), padded, float(OPERAND_BYTES * n * k)]


def _leave_one_out_error(samples: Sequence[GemmSample], busy: np.ndarray, rows: np.ndarray) -> float:
    """Median relative error of pricing each sample's ``busy`` time from the other ``rows``
    (leave one out), as :func:`archsearch.hardware.gemm.interpolate_rate` prices a kernel it
    has not seen."""
    if len(rows) < 2:
        return math.inf
    errors = [
        abs(
            s.kernel.flops
            / (interpolate_rate(np.delete(rows, i, axis=0), s.kernel.gemm, s.kernel.batch) * 1e9)
            - b
        )
        / b
        for i, (s, b) in enumerate(zip(samples, busy, strict=True))
    ]
    return float(np.median(errors))


@dataclass(frozen=True)
class GemmTables:
    """What a calibration keeps of its timed GEMMs, by class.

    Attributes:
        fits: :func:`fit_gemm_class`'s roofline fit (kept for reference).
        rates: ``gemm_rates`` rows, each timed kernel's rate less its dispatch, and batch.
        lines: ``gemm_lines`` rows, for the classes whose lines beat their rate table.
        errors: median relative error of the lines and of the rate table (leave one out).
    """

    fits: dict[str, dict[str, Any]]
    rates: dict[str, list[list[float]]]
    lines: dict[str, list[list[float]]]
    errors: dict[str, dict[str, float]]


def fit_gemm_tables(
    by_class: Mapping[str, Sequence[GemmSample]],
    single_us: Mapping[str, float],
    peak_gflops: float,
    bandwidth_gbs: float,
) -> GemmTables:
    """Each class's roofline fit, rate table and, for convolutions, lines if they predict the
    class's timings better than its rate table does (each judged on kernels it has not seen
    only for the table; the lines have four parameters per kernel area).

    ``by_class`` is keyed by GEMM table (:data:`archsearch.hardware.gemm.TABLE_CLASSES`); a
    plain-layout table takes its class's dispatch cost from ``single_us``.
    """
    fits, rates, lines, errors = {}, {}, {}, {}
    for kind, samples in by_class.items():
        dispatch = single_us[base_class(kind)]
        fits[kind] = fit_gemm_class(samples, dispatch, peak_gflops, bandwidth_gbs)
        busy = _busy(samples, dispatch)
        table = _rate_rows(samples, busy)
        rates[kind] = [
            [*s.kernel.gemm, round(float(r[3]), 3), s.kernel.batch]
            for s, r in zip(samples, table, strict=True)
        ]
        if kind == "linear":
            continue
        rows, line_error = fit_gemm_lines(samples, dispatch)
        errors[kind] = {
            "lines": round(float(line_error), 3),
            "rates": round(_leave_one_out_error(samples, busy, table), 3),
        }
        if line_error < errors[kind]["rates"]:
            lines[kind] = rows
    return GemmTables(fits, rates, lines, errors)
