"""The GPU side of calibration and latency timing: CUDA-event timing and a GPU's profile.

Which device a setting names is :func:`archsearch.hardware.latency.profile_device`'s (for a
profile) and :func:`archsearch.devices.resolve_device`'s (for everything).

On a GPU the host clock measures when work was *queued*, not when it ran, so every timing
here brackets the work with ``torch.cuda.Event`` pairs and synchronizes before reading them.
A GPU profile holds what decides small-network latency there: the kernel launch overhead
(which dominates batch 1), the large-matmul peak and the device-to-device copy bandwidth.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from functools import partial

import torch

from archsearch.hardware.profile import HardwareProfile

__all__ = ["calibrate_cuda", "cuda_event_ms", "device_name"]


def device_name(dev: torch.device) -> str:
    """A device's model for cache keys and descriptions (``cpu`` for the host)."""
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return "cpu"


def cuda_event_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn`` on the current CUDA stream.

    Each call is bracketed by a pair of CUDA events; the device is synchronized once after
    warm-up and once before the events are read, so the figures are GPU execution time.
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    pairs = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in pairs]


def _matmul_gflops(dev: torch.device, sizes: Sequence[int]) -> float:
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
        ms = statistics.median(cuda_event_ms(partial(torch.matmul, a, b), 10))
        best = max(best, 2 * n**3 / (ms * 1e-3) / 1e9)
    return best


def _copy_gbs(dev: torch.device, megabytes: int) -> float:
    src = torch.empty(megabytes * 2**18, device=dev)
    dst = torch.empty_like(src)
    ms = statistics.median(cuda_event_ms(lambda: dst.copy_(src), 10))
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def _launch_us(dev: torch.device) -> float:
    """Per-kernel cost of a tiny op: launch overhead plus the smallest kernel's run time."""
    x = torch.randn(8, device=dev)
    ms = cuda_event_ms(lambda: [torch.relu(x) for _ in range(100)], 10)
    return 1e3 * statistics.median(ms) / 100


def calibrate_cuda(
    dev: torch.device, name: str = "auto", quick: bool = False, log: Callable[[str], None] | None = None
) -> HardwareProfile:
    """Measure a CUDA device: large-matmul peak, copy bandwidth and launch overhead (seconds)."""
    say = log or (lambda _line: None)
    with torch.inference_mode():
        peak = _matmul_gflops(dev, (1024,) if quick else (2048, 4096))
        bandwidth = _copy_gbs(dev, 64 if quick else 512)
        launch = _launch_us(dev)
    say(f"{device_name(dev)}: matmul {peak:.0f} GFLOP/s, copy {bandwidth:.0f} GB/s, launch {launch:.1f} us")
    return HardwareProfile(
        name=name,
        peak_gflops=round(peak, 1),
        bandwidth_gbs=round(bandwidth, 1),
        overhead_us=round(launch, 2),
        description=f"calibrated on {torch.cuda.get_device_name(dev)} (CUDA events)",
        calibrated=True,
        extra={"measured": {"device": device_name(dev), "torch": str(torch.__version__), "quick": quick}},
    )
