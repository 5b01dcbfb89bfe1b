"""The CPU side of calibration: time the calibration plan's cases and fit a profile to them.

:func:`measure_cpu` is what :func:`archsearch.hardware.calibrate.calibrate` runs on the CPU
(:func:`archsearch.hardware.cuda.calibrate_cuda` on a GPU); the cases come from
:mod:`archsearch.hardware.plan`, the fits from :mod:`archsearch.hardware.fitting` and
:mod:`archsearch.hardware.probes`.

What is measured, and the term of the latency model (:mod:`archsearch.net.cost`) it sets:

- a large fp32 matmul -> ``peak_gflops`` (bf16 too where oneDNN supports it, recorded only, on
  torch);
- large tensor copies -> ``bandwidth_gbs``;
- every kernel kind on a tiny tensor in a hot loop -> its relative dispatch cost;
- every streaming kind (batch norm, activations, pools, add, concat) on a Fire-sized tensor
  (64 x 64 x 14 x 14) -> its rate in ``bandwidths``;
- about 100 random convolutions of stem and Fire shapes (1x1 and kxk, batch 1 to 64; on ONNX
  Runtime for ``runtime=onnxruntime``) and a dozen linear layers -> each one's achieved rate
  and batch (``gemm_rates``, which the estimate interpolates, or ``gemm_lines`` where lines fit
  better), and per class ``peaks``, ``bandwidths`` and GEMM ``efficiency`` half-sizes fitted
  by least squares in log time (kept for reference). On ONNX Runtime with a blocked layout
  (NCHWc, ``nchwc_block``, asked of ONNX Runtime itself) the convolutions it runs outside the
  layout get tables of their own (``conv1x1_nchw``, ``convkxk_nchw``), and a blocked one's
  time is cut to the share its profiler puts on the convolution, without the reorders of its
  input and output that a network mostly spares it (:func:`archsearch.hardware.ort.node_share`);
- 96 probe networks built by ``archsearch.net.model.build`` (40 exported to ONNX Runtime for
  ``runtime=onnxruntime``, all of them Fire-module networks; half of torch's), at batch 1 ->
  ``overheads_us``: what each kernel costs beyond its roofline inside a network (module
  calls, graph glue, dispatch with cold caches), fitted as ``factor * hot-loop cost`` on
  torch and ``factor * hot-loop cost + extra`` on ONNX Runtime, and on torch ``cold_start``,
  what each kernel pays at any batch as a fraction of its roofline time at batch 1;
  every fourth also at batch 32 (64 on ONNX Runtime) -> ``per_image_us``, what each kernel
  adds per image in a network, and for ONNX Runtime a scale on the roofline (all fitted
  together there).

All cases are built first and then timed together in eight interleaved rounds
(:mod:`archsearch.hardware.timing`): every figure is a case's least round median, so the
profile describes the machine in one state even when a virtual machine's speed drifts by
1.7x within seconds. ``clock=wall`` describes the machine as loaded while calibrating;
``clock=cpu`` (with ``threads=1``) times the thread's CPU time and so describes the hardware
even when other jobs share it. A profile is valid for the thread count and memory
format it was measured with; both are recorded under ``measured``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from archsearch.hardware.fitting import ContextFit, GemmTables, fit_gemm_tables
from archsearch.hardware.microbench import (
    GemmSample,
    bf16_supported,
    measure_copy_bandwidth,
    measure_matmul,
    stream_rates,
)
from archsearch.hardware.ort import nchwc_layout
from archsearch.hardware.plan import calibration_cases
from archsearch.hardware.probes import RUNTIME_FUSED, fit_probes, in_networks
from archsearch.hardware.profile import HardwareProfile
from archsearch.hardware.timing import ROUNDS, time_groups
from archsearch.net.kernels import GEMM_KINDS

__all__ = ["measure_cpu"]


def measure_cpu(
    name: str, quick: bool, seed: int, fmt: torch.memory_format, say: Callable[[str], None], runtime: str
) -> tuple[HardwareProfile, ContextFit, dict[str, Any]]:
    """Run every micro-benchmark and fit, in the order the later ones need the earlier ones.

    The caller sets the clock, the threads and inference mode
    (:func:`archsearch.hardware.calibrate.calibrate`).

    Returns:
        The roofline profile as networks on ``runtime`` see it (unrounded peak and bandwidth,
        no overheads yet), the in-network overhead fit, and the raw figures for
        ``extra["measured"]``.
    """
    fp32 = measure_matmul((512,) if quick else (1024,))
    # bf16 is torch's (oneDNN's) alone: an ONNX Runtime profile runs fp32 and skips it (2 s).
    bf16_here = bf16_supported() and runtime == "torch"
    bf16 = measure_matmul((512,) if quick else (1024,), torch.bfloat16) if bf16_here else None
    say(f"matmul: fp32 {fp32:.1f} GFLOP/s" + (f", bf16 {bf16:.1f} GFLOP/s" if bf16 else ""))
    copy_gbs = measure_copy_bandwidth(16 if quick else 256)
    say(f"copy: {copy_gbs:.1f} GB/s")
    block, step = nchwc_layout() if runtime == "onnxruntime" else (0, 0)
    if block:
        say(f"ONNX Runtime's blocked layout: NCHWc, {block} channels a block, inputs in multiples of {step}")
    guess = HardwareProfile("guess", fp32 / 2, copy_gbs / 2)
    cases = calibration_cases(quick, seed, fmt, runtime, guess, (block, step))
    started = time.perf_counter()
    rounds = 2 if quick else ROUNDS
    times = time_groups(cases.groups(), rounds, seed)
    say(f"timed {cases.count} cases in {rounds} interleaved rounds in {time.perf_counter() - started:.1f} s")
    single = {k: round(v * 1e6, 3) for k, v in zip(cases.single, times["single"], strict=True)}
    say("single-op overhead (us): " + ", ".join(f"{k} {v:.1f}" for k, v in single.items()))
    rates = stream_rates(cases.stream, times["stream"], single)
    say("streaming (GB/s): " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
    call_s = times["call"][0] if "call" in times else 0.0
    if call_s:  # ONNX Runtime's own fixed cost per call comes off its convs' times
        single = {**single, **dict.fromkeys(("conv1x1", "convkxk"), round(call_s * 1e6, 3))}
    samples = cases.gemm_samples(times["gemm"], times["linear"], call_s)
    tables = _fit_gemms(samples, single, fp32, copy_gbs, say)
    roofline = _roofline(name, fp32, copy_gbs, rates, tables, (block, step))
    # Every fourth probe also runs at a large batch (32 on torch, 64 on ONNX Runtime): that fits
    # the cost per image and a scale on the roofline. Eager torch's batch-1 probes first fit a
    # cold start (kernels amid other ops ran ~1.6x their hot-loop time at batch 1, less so at a
    # large batch: a scale alone, fitted at 1.6x, put fire nets at batch 64 1.4x high) and
    # overheads that are multiples of the single-op costs alone; its large ones then the scale
    # (1.3-1.5) and cost per image, in turns. ONNX Runtime's probes (all Fire networks) fit
    # every parameter together: fitted in turns, its batch-1 estimates came out 1.2x high.
    context = fit_probes(
        cases.probe,
        cases.probe_seconds(times),
        lambda k: roofline.kernel_seconds(k)[0],
        single,
        fit_scale=True,
        joint=runtime == "onnxruntime",
        per_kernel=runtime == "onnxruntime",
        cold=runtime == "torch",
    )
    say(
        f"in networks on {runtime}: roofline time x {context.busy_scale:.2f}, overhead "
        f"{context.factor:.2f} x single-op + {context.extra_us:.1f} us per kernel + "
        f"{context.per_image_us:.2f} us per kernel and image + {context.cold_start:.2f} x batch-1 "
        "roofline time per kernel "
        f"(fit median error {100 * context.median_ape:.0f}%)"
    )
    figures = {
        "matmul_gflops": {"fp32": round(fp32, 2), "bf16": round(bf16, 2) if bf16 else None},
        "copy_mib": 16 if quick else 256,
        "stream_shape": list(cases.stream_shape),
        "single_op_overhead_us": single,
        "gemm_fits": tables.fits,
        "gemm_errors": tables.errors,
        "in_network_overhead": {
            "factor": context.factor,
            "extra_us": context.extra_us,
            "busy_scale": context.busy_scale,
            "per_image_us": context.per_image_us,
            "cold_start": context.cold_start,
            "median_ape": context.median_ape,
        },
    }
    roofline, context = in_networks(roofline, context, RUNTIME_FUSED[runtime])
    return roofline, context, figures


def _roofline(
    name: str,
    peak_gflops: float,
    bandwidth_gbs: float,
    rates: Mapping[str, float],
    tables: GemmTables,
    layout: tuple[int, int],
) -> HardwareProfile:
    """The micro-benchmarks' profile: peaks, streaming rates, GEMM tables and the blocked layout
    (the plain-layout tables' roofline fits stay under ``measured`` only)."""
    fits = {kind: f for kind, f in tables.fits.items() if kind in GEMM_KINDS}
    return HardwareProfile(
        name=name,
        peak_gflops=peak_gflops,
        bandwidth_gbs=bandwidth_gbs,
        peaks={kind: f["gflops"] for kind, f in fits.items()},
        bandwidths={**rates, **{kind: f["gbs"] for kind, f in fits.items()}},
        efficiency={kind: f["half"] for kind, f in fits.items()},
        gemm_rates=tables.rates,
        gemm_lines=tables.lines,
        nchwc_block=layout[0],
        nchwc_step=layout[1],
    )


def _fit_gemms(
    by_class: Mapping[str, Sequence[GemmSample]],
    single: Mapping[str, float],
    peak_gflops: float,
    bandwidth_gbs: float,
    say: Callable[[str], None],
) -> GemmTables:
    """:func:`~archsearch.hardware.fitting.fit_gemm_tables`, with a line per class said."""
    tables = fit_gemm_tables(by_class, single, peak_gflops, bandwidth_gbs)
    for kind, f in tables.fits.items():
        err = tables.errors.get(kind)
        choice = (
            f"; priced by {'lines' if kind in tables.lines else 'nearest shapes'} (median error "
            f"{100 * err['lines']:.0f}% lines, {100 * err['rates']:.0f}% nearest shapes)"
            if err and err["lines"] < float("inf")
            else ""
        )
        say(
            f"{kind}: {f['gflops']:.1f} GFLOP/s over {len(by_class[kind])} shapes, roofline fit median "
            f"error {100 * f['median_ape']:.0f}%{choice}"
        )
    return tables
