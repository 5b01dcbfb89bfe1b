"""Measure this machine and write a hardware profile for ``latency_est_ms``.

``python -m archsearch.calibrate out=conf/hardware/mybox.yaml threads=1 clock=cpu`` times
micro-benchmarks on the CPU and writes (and prints) a profile that ``hardware=mybox`` selects.
Without ``out=`` the profile becomes ``hardware=auto``'s cached profile for its settings
(:mod:`archsearch.hardware.auto`). Nothing else is written: no Hydra output folder, no logs.
Progress goes to stderr, the YAML to stdout. A full run takes 20-30 s on a 2-core machine;
``quick=true`` about 2 s.

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

import dataclasses
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from archsearch.checks import check_choice
from archsearch.errors import ConfigError
from archsearch.hardware.cache import cache_key, cache_path, cpu_name
from archsearch.hardware.choices import CLOCKS, MEMORY_FORMATS, RUNTIMES
from archsearch.hardware.fitting import ContextFit, GemmTables, fit_gemm_tables
from archsearch.hardware.latency import settle_allocator
from archsearch.hardware.microbench import (
    GemmSample,
    bf16_supported,
    measure_copy_bandwidth,
    measure_matmul,
    stream_rates,
)
from archsearch.hardware.ort import import_deploy, nchwc_layout
from archsearch.hardware.plan import calibration_cases
from archsearch.hardware.probes import RUNTIME_FUSED, fit_probes, in_networks
from archsearch.hardware.profile import HardwareProfile, check_profile_path, profile_yaml, write_profile
from archsearch.hardware.runtime import torch_threads
from archsearch.hardware.timing import ROUNDS, time_groups, timing_clock
from archsearch.net.kernels import GEMM_KINDS

__all__ = ["CalibrateConfig", "calibrate", "cpu_name", "run"]


@dataclass(frozen=True)
class CalibrateConfig:
    """Options of ``python -m archsearch.calibrate`` (each one a ``key=value`` override).

    Attributes:
        out: YAML file to write (``conf/hardware/NAME.yaml`` makes ``hardware=NAME``); None
            prints the profile and stores it as ``hardware=auto``'s cached profile for these
            threads, memory format, clock and device (:mod:`archsearch.hardware.auto`).
        name: profile name; None takes the stem of ``out`` (or ``auto``).
        threads: torch intra-op threads to measure with; None keeps torch's default.
        quick: a few-second run with smaller sizes and fewer shapes (for tests and smoke runs).
        seed: seeds the random Fire-module shapes.
        memory_format: tensor layout to measure in (``auto`` = channels-last, as the trainer
            and ``measure_latency`` use for conv nets; or ``contiguous``).
        clock: ``wall`` or ``cpu`` (thread CPU time; needs ``threads=1``).
        device: ``auto`` (the GPU when there is one), ``cpu`` or ``cuda[:N]``.
        runtime: what the probe networks run on: ``torch`` (eager) or ``onnxruntime`` (CPU),
            as ``latency.runtime`` measures.
    """

    out: str | None = None
    name: str | None = None
    threads: int | None = None
    quick: bool = False
    seed: int = 0
    memory_format: str = "auto"
    clock: str = "wall"
    device: str = "auto"
    runtime: str = "torch"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> CalibrateConfig:
        """Check the types of parsed overrides (Hydra hands over strings it cannot type).

        Raises:
            ConfigError: naming the key and what it accepts.
        """
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(
                f"unknown key {unknown[0]!r}; allowed: {', '.join(f.name for f in fields(cls))}."
            )
        out, name = raw.get("out"), raw.get("name")
        threads, quick, seed = raw.get("threads"), raw.get("quick", False), raw.get("seed", 0)
        for key, value in (("out", out), ("name", name)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{key} must be a non-empty string or null, got {value!r}.")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be a positive integer or null, got {threads!r}.")
        if not isinstance(quick, bool):
            raise ConfigError(f"quick must be true or false, got {quick!r}.")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}.")
        memory_format, clock = raw.get("memory_format", "auto"), raw.get("clock", "wall")
        device, runtime = raw.get("device", "auto"), raw.get("runtime", "torch")
        if not isinstance(device, str):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {device!r}.")
        _check_options(threads, memory_format, clock, runtime)
        return cls(out, name, threads, quick, seed, memory_format, clock, device, runtime)


def calibrate(
    threads: int | None = None,
    quick: bool = False,
    name: str = "this_machine",
    seed: int = 0,
    memory_format: str = "auto",
    clock: str = "wall",
    log: Callable[[str], None] | None = None,
    device: str = "cpu",
    runtime: str = "torch",
) -> HardwareProfile:
    """Measure the CPU (or a GPU) and return a calibrated HardwareProfile (writes nothing).

    Args:
        threads: torch intra-op threads to measure with (None: torch's current setting);
            the process's setting is restored afterwards.
        quick: smaller sizes and fewer shapes: a few seconds, coarser numbers.
        name: the profile's name.
        seed: seeds the Fire-module conv shapes.
        memory_format: layout of every tensor measured: ``channels_last`` (also what ``auto``
            means here: the trainer's choice for conv nets, so ``latency_ms``'s default) or
            ``contiguous``. Calibrate with the format ``latency_ms`` measures in.
        clock: ``wall`` or ``cpu`` (the thread's CPU time, with ``threads=1`` only): on a
            machine shared with other jobs the CPU clock measures the hardware, not the load.
        log: called with one line per finished step (e.g. ``print``); None is silent.
        device: ``cpu``, ``cuda[:N]`` or ``auto`` (the GPU when torch sees one). A GPU is timed
            with CUDA events (:func:`archsearch.hardware.cuda.calibrate_cuda`).
        runtime: ``torch`` or ``onnxruntime``: the probe networks that fit the in-network
            costs run on it (ONNX Runtime on the CPU, whatever ``device`` says), and the kinds
            it fuses into convolutions cost nothing in the profile.

    Returns:
        The profile; ``extra["measured"]`` records the date, threads, CPU and raw figures.
    """
    from archsearch.hardware.cuda import calibrate_cuda, select_device

    fmt = _check_options(threads, memory_format, clock, runtime)
    dev = select_device("cpu" if runtime == "onnxruntime" else device)
    if dev.type == "cuda":
        return calibrate_cuda(dev, name, quick, log)
    started = time.perf_counter()
    settle_allocator()
    with timing_clock(clock), torch_threads(threads) as used, torch.inference_mode():
        torch.manual_seed(seed)
        roofline, context, figures = _measure(name, quick, seed, fmt, log or (lambda _line: None), runtime)
    command = ["python -m archsearch.calibrate", f"threads={'null' if threads is None else threads}"]
    command += [f"clock={clock}", f"memory_format={memory_format}", f"seed={seed}"]
    command += (["quick=true"] if quick else []) + ([f"runtime={runtime}"] if runtime != "torch" else [])
    measured = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "tool": " ".join(command),
        "host": platform.node(),
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "threads": used,
        "memory_format": "contiguous" if memory_format == "contiguous" else "channels_last",
        "clock": clock,
        "runtime": runtime,
        "torch": str(torch.__version__),
        "seconds": round(time.perf_counter() - started, 1),
        **figures,
    }
    return dataclasses.replace(
        roofline,
        description=f"calibrated on {cpu_name()}, {used} thread(s), {clock} clock, {runtime}",
        peak_gflops=round(roofline.peak_gflops, 2),
        bandwidth_gbs=round(roofline.bandwidth_gbs, 2),
        overhead_us=round(statistics.median(context.overheads_us.values()), 3),
        overheads_us=context.overheads_us,
        calibrated=True,
        extra={"measured": measured},
    )


def _check_options(threads: int | None, memory_format: str, clock: str, runtime: str) -> torch.memory_format:
    """The tensor layout to measure in, after checking ``calibrate``'s options.

    Raises:
        ConfigError: an unknown memory format, clock or runtime, a CPU clock with other than
            one thread, or ``onnxruntime`` without the deploy extra.
    """
    check_choice("runtime", runtime, RUNTIMES)
    if runtime == "onnxruntime":
        import_deploy()  # say which extra is missing before measuring anything
    check_choice("memory_format", memory_format, MEMORY_FORMATS)
    check_choice("clock", clock, CLOCKS)
    if clock == "cpu" and threads != 1:
        raise ConfigError(f"clock=cpu times only the calling thread, so it needs threads=1 (got {threads}).")
    return torch.contiguous_format if memory_format == "contiguous" else torch.channels_last


def _measure(
    name: str, quick: bool, seed: int, fmt: torch.memory_format, say: Callable[[str], None], runtime: str
) -> tuple[HardwareProfile, ContextFit, dict[str, Any]]:
    """Run every micro-benchmark and fit, in the order the later ones need the earlier ones.

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


def run(cfg: CalibrateConfig) -> HardwareProfile:
    """What the CLI does: calibrate, print the YAML to stdout, write it to ``cfg.out`` if given.

    Progress lines go to stderr so stdout is the profile alone. Without ``cfg.out`` the profile
    also becomes ``hardware=auto``'s cached profile for its settings, so this command is how
    the auto profile is refreshed.
    """
    if cfg.out is not None:
        check_profile_path(cfg.out)  # before a minute of measuring, not after
    name = cfg.name or (Path(cfg.out).stem if cfg.out else "auto")
    profile = calibrate(
        cfg.threads,
        cfg.quick,
        name,
        cfg.seed,
        cfg.memory_format,
        cfg.clock,
        log=lambda line: print(line, file=sys.stderr),
        device=cfg.device,
        runtime=cfg.runtime,
    )
    if cfg.out is None:
        key = cache_key(cfg.threads, cfg.memory_format, cfg.clock, cfg.device, cfg.runtime)
        profile = HardwareProfile.from_dict({**profile.to_dict(), "auto_key": key}, source="calibrate")
    print(profile_yaml(profile), end="")
    if cfg.out is not None:
        print(f"wrote {write_profile(profile, cfg.out)}", file=sys.stderr)
    else:
        cache_path(key).parent.mkdir(parents=True, exist_ok=True)
        print(
            f"stored as the hardware=auto profile: {write_profile(profile, cache_path(key))}", file=sys.stderr
        )
    return profile
