"""Measure this machine and write a hardware profile for ``latency_est_ms``.

``python -m archsearch.calibrate out=conf/hardware/mybox.yaml threads=1 clock=cpu`` times
micro-benchmarks on the CPU and writes (and prints) a profile that ``hardware=mybox`` selects.
Without ``out=`` the profile becomes ``hardware=auto``'s cached profile for its settings
(:mod:`archsearch.hardware.auto`). Nothing else is written: no Hydra output folder, no logs.
Progress goes to stderr, the YAML to stdout. A full run takes 20-30 s on a 2-core machine;
``quick=true`` about 2 s.

The command is :func:`run` behind a thin Hydra wrapper (:mod:`archsearch.cli.calibrate`); in
Python, :func:`calibrate` measures and returns the profile without writing it. Both take their
defaults from :class:`~archsearch.hardware.calibrate_config.CalibrateConfig`, which checks the
options too. What is measured on the CPU, and which term of the latency model each figure sets,
is :mod:`archsearch.hardware.cpu`'s to say; a GPU is timed by
:func:`archsearch.hardware.cuda.calibrate_cuda`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from archsearch.hardware.cache import cache_key, cache_path, cpu_name
from archsearch.hardware.calibrate_config import CalibrateConfig, check_options
from archsearch.hardware.cpu import measure_cpu
from archsearch.hardware.cuda import calibrate_cuda
from archsearch.hardware.latency import profile_device, settle_allocator
from archsearch.hardware.profile import HardwareProfile, check_profile_path, profile_yaml, write_profile
from archsearch.hardware.runtime import torch_threads
from archsearch.hardware.timing import timing_clock

__all__ = ["CalibrateConfig", "calibrate", "cpu_name", "run"]

#: The defaults of :func:`calibrate`'s options: the command's (one source, never restated here).
_DEFAULT = CalibrateConfig()


def calibrate(
    threads: int | None = _DEFAULT.threads,
    quick: bool = _DEFAULT.quick,
    name: str | None = _DEFAULT.name,
    seed: int = _DEFAULT.seed,
    memory_format: str = _DEFAULT.memory_format,
    clock: str = _DEFAULT.clock,
    log: Callable[[str], None] | None = None,
    device: str = _DEFAULT.device,
    runtime: str = _DEFAULT.runtime,
) -> HardwareProfile:
    """Measure the CPU (or a GPU) and return a calibrated HardwareProfile (writes nothing).

    The defaults are :class:`CalibrateConfig`'s, so ``calibrate()`` measures what ``python -m
    archsearch.calibrate`` without options does (it just does not print or store the profile).

    Args:
        threads: torch intra-op threads to measure with (None: torch's current setting);
            the process's setting is restored afterwards.
        quick: smaller sizes and fewer shapes: a few seconds, coarser numbers.
        name: the profile's name (None: ``auto``, as the command names a profile without ``out``).
        seed: seeds the Fire-module conv shapes.
        memory_format: layout of every tensor measured: ``channels_last`` (also what ``auto``
            means here: the trainer's choice for conv nets, so ``latency_ms``'s default) or
            ``contiguous``. Calibrate with the format ``latency_ms`` measures in.
        clock: ``wall`` or ``cpu`` (the thread's CPU time, with ``threads=1`` only): on a
            machine shared with other jobs the CPU clock measures the hardware, not the load.
        log: called with one line per finished step (e.g. ``print``); None is silent.
        device: ``auto`` (the device ``latency_ms`` runs on: the GPU when torch sees one,
            except that ``clock=cpu`` measures the CPU), ``cpu``, ``cuda`` or ``cuda:N``
            (:func:`archsearch.hardware.latency.profile_device`). A GPU is timed with CUDA events
            (:func:`archsearch.hardware.cuda.calibrate_cuda`).
        runtime: ``torch`` or ``onnxruntime``: the probe networks that fit the in-network
            costs run on it (ONNX Runtime on the CPU, whatever ``device`` says), and the kinds
            it fuses into convolutions cost nothing in the profile.

    Returns:
        The profile; ``extra["measured"]`` records the date, threads, CPU and raw figures.

    Raises:
        ConfigError: a bad option (:func:`~archsearch.hardware.calibrate_config.check_options`)
            or a device torch cannot use here, before anything is measured.
    """
    name = name or "auto"
    fmt = check_options(threads, memory_format, clock, runtime)
    dev = profile_device(device, clock, runtime)
    if dev.type == "cuda":
        return calibrate_cuda(dev, name, quick, log)
    started = time.perf_counter()
    settle_allocator()
    with timing_clock(clock), torch_threads(threads) as used, torch.inference_mode():
        torch.manual_seed(seed)
        roofline, context, figures = measure_cpu(name, quick, seed, fmt, log or (lambda _line: None), runtime)
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


def run(cfg: CalibrateConfig) -> HardwareProfile:
    """What the CLI does: calibrate, print the YAML to stdout, write it to ``cfg.out`` if given.

    Progress lines go to stderr so stdout is the profile alone. Without ``cfg.out`` the profile
    also becomes ``hardware=auto``'s cached profile for its settings, so this command is how
    the auto profile is refreshed.
    """
    if cfg.out is not None:
        check_profile_path(cfg.out)  # before a minute of measuring, not after
    profile = calibrate(
        cfg.threads,
        cfg.quick,
        cfg.profile_name,
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
