"""Fitting the latency model's parameters to micro-benchmark timings.

:func:`fit_gemm_class` fits one GEMM class's roofline (peak, bandwidth and efficiency
half-sizes) by least squares in log time; :func:`fit_context_overheads` fits the fixed cost a
kernel pays inside a network by non-negative least squares. Both are pure numpy/scipy, so they
can be checked on synthetic timings without measuring anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares, nnls

from archsearch.hardware.microbench import GemmSample
from archsearch.net.kernels import KERNEL_KINDS

__all__ = ["ContextFit", "fit_context_overheads", "fit_gemm_class"]


@dataclass(frozen=True)
class ContextFit:
    """Per-kernel fixed cost inside networks: ``factor * single-op overhead + extra_us``.

    Attributes:
        factor: how much dearer a kernel's own dispatch is amid other ops than in a hot loop.
        extra_us: fixed microseconds every kernel adds in a network (module calls, graph glue).
        overheads_us: the resulting overhead of every kernel kind.
        median_ape: median relative error of the fit over the probe networks.
    """

    factor: float
    extra_us: float
    overheads_us: dict[str, float]
    median_ape: float


def fit_context_overheads(
    kernel_counts: np.ndarray, single_us: Mapping[str, float], residual_s: np.ndarray
) -> ContextFit:
    """Fit ``factor`` and ``extra`` so ``sum(counts * (factor * single + extra))`` matches residuals.

    Args:
        kernel_counts: one row per probe network, one column per ``KERNEL_KINDS`` entry.
        single_us: single-op-loop overhead of every kernel kind, microseconds.
        residual_s: each network's measured seconds less its roofline (busy) seconds.

    Non-negative least squares, each row divided by its residual so the error minimised is
    relative. Two shared parameters rather than one per kind: in networks the conv, batch
    norm and activation counts move together, so per-kind values are not identifiable,
    while the single-op loop already gives each kind's relative cost.
    """
    single = np.array([single_us[kind] for kind in KERNEL_KINDS]) * 1e-6
    design = np.stack([kernel_counts @ single, kernel_counts.sum(axis=1)], axis=1)
    # A probe the roofline already over-predicts has no overhead left to explain, and a relative
    # error against a residual near zero weighs it a million times the others: one such probe
    # used to pull both parameters to 0 (median error 100%). Fit on the probes with a residual.
    usable = residual_s > 1e-6
    if usable.sum() < 2:
        usable = np.ones(len(residual_s), dtype=bool)
    design, target = design[usable], np.maximum(residual_s[usable], 1e-6)
    (factor, extra), _ = nnls(design / target[:, None], np.ones(len(target)))
    ape = np.abs(design @ np.array([factor, extra]) - target) / target
    return ContextFit(
        factor=round(float(factor), 3),
        extra_us=round(float(extra) * 1e6, 3),
        overheads_us={
            k: round(float(factor * s + extra) * 1e6, 3) for k, s in zip(KERNEL_KINDS, single, strict=True)
        },
        median_ape=round(float(np.median(ape)), 3),
    )


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
