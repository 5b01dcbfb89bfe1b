"""Measured inference latency of a built model on the device the search runs on.

``latency_ms`` in a sweep is the median of :func:`measure_latency`: the time of one forward
pass of a batch after warm-up, in eval mode under ``torch.inference_mode``, channels-last for
conv nets (as the trainer leaves them). It measures *this* machine at the time of the trial,
with whatever else runs on it (``clock="wall"``), or the calling thread's CPU time
(``clock="cpu"``, one thread), which other jobs do not inflate. Compare ``latency_ms`` values
only within one machine and setting; ``latency_est_ms`` (:mod:`archsearch.net.cost`) predicts it
from a hardware profile without running anything.
"""

from __future__ import annotations

import copy
import gc
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from archsearch.checks import check_choice
from archsearch.devices import resolve_device
from archsearch.errors import ConfigError
from archsearch.hardware.choices import CLOCKS, MEMORY_FORMATS, RUNTIMES
from archsearch.hardware.runtime import (
    check_threads,
    resolve_memory_format,
    stored_in,
    to_memory_format,
    torch_threads,
)

__all__ = [
    "CLOCKS",
    "LATENCY_KINDS",
    "MEMORY_FORMATS",
    "PROFILE_KINDS",
    "RUNTIMES",
    "LatencyResult",
    "PreparedModel",
    "latency_device",
    "measure_latency",
    "prepare_latency",
    "profile_device",
    "resolve_memory_format",
    "settle_allocator",
    "to_memory_format",
    "torch_threads",
]


#: The device kinds ``latency_ms`` runs on, in the order ``auto`` prefers them: MPS only when
#: named, since ``auto`` is also the device ``hardware=auto`` calibrates a profile on
#: (:func:`profile_device`) and no profile describes MPS.
LATENCY_KINDS = ("cuda", "cpu", "mps")
#: The device kinds a hardware profile describes, in the order ``auto`` prefers them: calibration
#: times CPUs and CUDA GPUs, not MPS.
PROFILE_KINDS = ("cuda", "cpu")


def latency_device(device: str, clock: str = "wall", runtime: str = "torch") -> str:
    """The device ``latency_ms`` runs on: ``auto`` is the GPU when torch sees one, except that a
    CPU clock and ONNX Runtime (its CPU provider) measure the CPU; a named device as named."""
    if device != "auto":
        return device
    if clock == "cpu" or runtime == "onnxruntime":
        return "cpu"
    return resolve_device(device, "device", LATENCY_KINDS).type


def profile_device(device: str = "auto", clock: str = "wall", runtime: str = "torch") -> torch.device:
    """The device a hardware profile for these settings is measured on: the one ``latency_ms``
    runs on (:func:`latency_device`: ``auto`` is the GPU when torch sees one, the CPU for a CPU
    clock), and always the CPU for ONNX Runtime (its CPU provider).

    Raises:
        ConfigError: ``device`` is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, or names a GPU
            torch does not see (:func:`archsearch.devices.resolve_device`).
    """
    name = "cpu" if runtime == "onnxruntime" else latency_device(device, clock, runtime)
    return resolve_device(name, "device", PROFILE_KINDS)


@dataclass(frozen=True)
class LatencyResult:
    """Timings of repeated forward passes of one batch.

    Attributes:
        median_ms: median over the timed repeats, milliseconds per batch.
        p90_ms: 90th percentile (nearest rank) over the timed repeats.
        samples_ms: every timed repeat, in the order run.
        batch_size: images per forward pass.
        threads: torch intra-op threads used while timing.
        device: device the forward passes ran on.
        memory_format: ``channels_last`` or ``contiguous``, as resolved for the run.
        clock: ``wall`` or ``cpu`` (see :func:`measure_latency`).
    """

    median_ms: float
    p90_ms: float
    samples_ms: tuple[float, ...]
    batch_size: int
    threads: int
    device: str
    memory_format: str
    clock: str = "wall"

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def per_image_ms(self) -> float:
        return self.median_ms / self.batch_size

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["samples_ms"] = list(self.samples_ms)
        return out


def _in_format(model: nn.Module, fmt: torch.memory_format) -> bool:
    return all(stored_in(p, fmt) for p in model.parameters() if p.dim() == 4)


def settle_allocator() -> None:
    """Put the C allocator in the state a long-running process reaches, once per process.

    glibc returns freed blocks above its *dynamic* mmap threshold to the OS and maps them
    afresh (page faults on first touch) at the next allocation, until one block of up to
    32 MiB has been freed, which raises the threshold for good. A process that has trained a
    network is past that point; a fresh one is not, and would pay page faults on every forward
    for its largest activations (measured: 25 MB of faults per forward, twice the latency at
    batch 64, for a 64-channel 28x28 stem). Allocating and freeing one 30 MiB block removes
    that dependence on the process's past; with other allocators it is a harmless allocation.
    """
    global _allocator_settled
    if not _allocator_settled:
        torch.empty(30 * 2**18).fill_(0.0)
        _allocator_settled = True


_allocator_settled = False


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """What to call before reading the clock so queued device work has finished."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = 1,
    *,
    threads: int | None = None,
    warmup: int = 5,
    repeats: int = 20,
    device: str = "cpu",
    memory_format: str = "auto",
    clock: str = "wall",
    runtime: str = "torch",
) -> LatencyResult:
    """Median latency of ``model`` on one random batch, on the current machine.

    The model runs in eval mode under ``torch.inference_mode``; its training flag, device,
    memory format and the process's torch thread count are as before when this returns
    (a copy is converted when ``device`` or ``memory_format`` asks for a change). Garbage
    collection is paused while timing so a collection does not land inside one repeat, and
    :func:`settle_allocator` runs first so the result does not depend on the process's past.
    To time one model many times, :func:`prepare_latency` converts (or exports) it once.

    Args:
        model: the network (e.g. ``archsearch.net.model.build(spec)``).
        input_shape: one image's shape without the batch dimension, e.g. ``(1, 28, 28)``.
        batch_size: images per forward pass.
        threads: torch intra-op threads while timing; None keeps the current setting.
        warmup: untimed forward passes first (allocator, oneDNN primitive caches, clocks).
        repeats: timed forward passes; the median and p90 are taken over these.
        device: torch device name to run on (``auto``: see :func:`latency_device`). On CUDA each
            forward is timed with CUDA events and a synchronize.
        memory_format: ``auto`` (channels-last for conv nets, as the trainer), ``channels_last``
            or ``contiguous``; weights and input are put in that format before timing.
        clock: ``wall`` (elapsed time: what a user waits, including time other processes
            take from this one) or ``cpu`` (this thread's CPU time: the latency the machine
            would have with no competing load; needs ``threads=1`` on the CPU, where torch
            runs every op on the calling thread).
        runtime: ``torch`` (eager) or ``onnxruntime`` (the model exported to ONNX in memory and
            run by an ONNX Runtime CPU session with ``threads`` intra-op threads; fp32).

    Returns:
        A LatencyResult; ``median_ms`` is the figure a sweep uses as ``latency_ms``.

    Raises:
        ConfigError: a non-positive batch size, repeat count or thread count, a negative
            warm-up, an unknown memory format or clock, a CPU clock with more than one
            thread or on an accelerator, or a device this torch cannot use.
    """
    _check_counts(batch_size, warmup, repeats)
    prepared = prepare_latency(
        model,
        input_shape,
        threads=threads,
        device=device,
        memory_format=memory_format,
        clock=clock,
        runtime=runtime,
    )
    return prepared.measure(batch_size, warmup, repeats)


@dataclass(frozen=True)
class PreparedModel:
    """A model made ready once (:func:`prepare_latency`) and timed at any batch size.

    Attributes:
        forwards: ``(batch_size, warmup, repeats)`` -> milliseconds of each timed forward pass.
        threads, device, memory_format, clock: as :class:`LatencyResult` records them.
    """

    forwards: Callable[[int, int, int], list[float]]
    threads: int
    device: str
    memory_format: str
    clock: str

    def measure(self, batch_size: int = 1, warmup: int = 5, repeats: int = 20) -> LatencyResult:
        """:func:`measure_latency` of the prepared model (a fresh random batch each call).

        Raises:
            ConfigError: a non-positive batch size or repeat count, or a negative warm-up.
        """
        _check_counts(batch_size, warmup, repeats)
        samples = self.forwards(batch_size, warmup, repeats)
        return _result(samples, batch_size, self.threads, self.device, self.memory_format, self.clock)


def prepare_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    threads: int | None = None,
    device: str = "cpu",
    memory_format: str = "auto",
    clock: str = "wall",
    runtime: str = "torch",
) -> PreparedModel:
    """``model`` converted to ``device`` and ``memory_format`` (for ONNX Runtime: exported and
    loaded in a session) once, to be timed by :meth:`PreparedModel.measure` as often as wanted;
    the arguments are :func:`measure_latency`'s.

    Raises:
        ConfigError: as :func:`measure_latency` lists.
    """
    check_choice("runtime", runtime, RUNTIMES)
    dev = _check_arguments(input_shape, threads, latency_device(device, clock, runtime), clock)
    now = time.thread_time if clock == "cpu" else time.perf_counter
    if runtime == "onnxruntime":
        return _prepare_onnxruntime(model, input_shape, threads, clock, now)
    fmt = resolve_memory_format(memory_format, model)
    param = next(model.parameters(), None)
    if (param is not None and param.device != dev) or not _in_format(model, fmt):
        net = to_memory_format(copy.deepcopy(model).to(dev), fmt)
    else:
        net = model

    def forwards(batch_size: int, warmup: int, repeats: int) -> list[float]:
        x = torch.randn(batch_size, *input_shape, device=dev)
        if x.dim() == 4:
            x = x.contiguous(memory_format=fmt)
        settle_allocator()
        with torch_threads(threads):
            return _time_forwards(net, x, warmup, repeats, now)

    layout = "channels_last" if fmt == torch.channels_last else "contiguous"
    return PreparedModel(forwards, check_threads(threads), str(dev), layout, clock)


def _prepare_onnxruntime(
    model: nn.Module, input_shape: tuple[int, ...], threads: int | None, clock: str, now: Callable[[], float]
) -> PreparedModel:
    """:func:`prepare_latency` on ONNX Runtime: export in memory, load a CPU session."""
    from archsearch.hardware.ort import onnx_session, time_session, to_onnx_bytes

    net = to_memory_format(copy.deepcopy(model).to("cpu"), torch.contiguous_format)
    session = onnx_session(to_onnx_bytes(net, input_shape), threads)

    def forwards(batch_size: int, warmup: int, repeats: int) -> list[float]:
        x = torch.randn(batch_size, *input_shape).numpy()
        settle_allocator()
        return time_session(session, x, warmup, repeats, now)

    used = (os.cpu_count() or 1) if threads is None else check_threads(threads)
    return PreparedModel(forwards, used, "cpu:onnxruntime", "contiguous", clock)


def _result(
    samples: list[float], batch_size: int, threads: int, device: str, memory_format: str, clock: str
) -> LatencyResult:
    ranked = sorted(samples)
    return LatencyResult(
        median_ms=statistics.median(samples),
        p90_ms=ranked[max(0, math.ceil(0.9 * len(ranked)) - 1)],
        samples_ms=tuple(samples),
        batch_size=batch_size,
        threads=threads,
        device=device,
        memory_format=memory_format,
        clock=clock,
    )


def _check_counts(batch_size: int, warmup: int, repeats: int) -> None:
    """Raises ConfigError unless the batch size and repeats are positive and the warm-up is not negative."""
    for key, value, low in (("batch_size", batch_size, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}.")


def _check_arguments(
    input_shape: tuple[int, ...], threads: int | None, device: str, clock: str
) -> torch.device:
    """The device to run on, after checking :func:`prepare_latency`'s arguments.

    Raises:
        ConfigError: as :func:`measure_latency` lists.
    """
    if not input_shape or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ConfigError(
            f"input_shape must be positive integers without the batch size, got {input_shape!r}."
        )
    dev = resolve_device(device, "device", LATENCY_KINDS)
    check_choice("clock", clock, CLOCKS)
    if clock == "cpu" and (dev.type != "cpu" or threads != 1):
        raise ConfigError(
            "clock=cpu times only the calling thread, so it needs device=cpu and threads=1 "
            f"(got device={device}, threads={threads})."
        )
    return dev


def _time_forwards(
    net: nn.Module, x: torch.Tensor, warmup: int, repeats: int, now: Callable[[], float]
) -> list[float]:
    """Milliseconds of each of ``repeats`` forward passes of ``x``, after ``warmup`` untimed ones.

    Runs in eval mode under ``torch.inference_mode`` and restores every module's training flag.
    Garbage collection is paused while timing so a collection does not land inside one repeat.
    """
    if x.device.type == "cuda":
        return _time_cuda(net, x, warmup, repeats)
    sync = _synchronizer(x.device)
    modes = {m: m.training for m in net.modules()}
    gc_was_enabled = gc.isenabled()
    samples: list[float] = []
    net.eval()
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                net(x)
            sync()
            gc.disable()
            for _ in range(repeats):
                start = now()
                net(x)
                sync()
                samples.append(1e3 * (now() - start))
    finally:
        if gc_was_enabled:
            gc.enable()
        for m, training in modes.items():
            m.training = training
    return samples


def _time_cuda(net: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> list[float]:
    """:func:`_time_forwards` on a GPU: each forward bracketed by CUDA events (GPU time)."""
    from archsearch.hardware.cuda import cuda_event_ms

    training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            return cuda_event_ms(lambda: net(x), repeats, warmup)
    finally:
        net.train(training)
