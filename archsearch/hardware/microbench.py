"""Micro-benchmarks of single kernels for :mod:`archsearch.hardware.calibrate`.

Each function times one family of kernels in a hot loop (large matmuls, tensor copies, every
kernel kind on a tiny tensor, streaming kinds on a Fire-sized tensor, random convolutions and
linear layers) and returns medians over repeats. Nothing here fits a model: the figures go to
:mod:`archsearch.hardware.fitting`. All timings read the clock :func:`timing_clock` selects.
"""

from __future__ import annotations

import contextvars
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from archsearch.hardware.runtime import to_memory_format
from archsearch.net.cost import node_kernels
from archsearch.net.kernels import GEMM_KINDS, KERNEL_KINDS, Kernel
from archsearch.net.layers import make_activation
from archsearch.net.nodes import (
    AddNode,
    AvgPoolNode,
    ConcatNode,
    ConvNode,
    GlobalAvgPoolNode,
    LinearNode,
    MaxPoolNode,
    Node,
)
from archsearch.net.ops import OPS

__all__ = [
    "STREAM_KINDS",
    "GemmSample",
    "bf16_supported",
    "fire_gemm_shapes",
    "forward_maker",
    "measure_call_overhead",
    "measure_copy_bandwidth",
    "measure_gemms",
    "measure_linears",
    "measure_matmul",
    "measure_overheads",
    "measure_stream_rates",
    "median_seconds",
    "repeats_for",
    "timing_clock",
]

STREAM_KINDS = tuple(k for k in KERNEL_KINDS if k not in GEMM_KINDS and k != "identity")


@dataclass(frozen=True)
class GemmSample:
    """One timed GEMM-like kernel (a conv or linear layer) and its median seconds."""

    kernel: Kernel
    seconds: float


#: The clock every measurement reads (:func:`timing_clock` sets it for a block).
_NOW: contextvars.ContextVar[Callable[[], float]] = contextvars.ContextVar("now", default=time.perf_counter)


@contextmanager
def timing_clock(clock: str) -> Iterator[None]:
    """Time every measurement in the block with ``clock``.

    Args:
        clock: ``wall`` (elapsed time) or ``cpu`` (the calling thread's CPU time).
    """
    token = _NOW.set(time.thread_time if clock == "cpu" else time.perf_counter)
    try:
        yield
    finally:
        _NOW.reset(token)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    now = _NOW.get()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = now()
        fn()
        times.append(now() - start)
    return statistics.median(times)


def repeats_for(expected_s: float, budget_s: float, low: int = 3, high: int = 50) -> int:
    """How many repeats fit a per-measurement time budget (at least ``low``)."""
    return int(min(high, max(low, budget_s / max(expected_s, 1e-7))))


def measure_matmul(sizes: Sequence[int], dtype: torch.dtype = torch.float32) -> float:
    """Best sustained GFLOP/s of square ``n x n`` matmuls over ``sizes``."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        first = median_seconds(partial(torch.mm, a, b), repeats=1, warmup=1)
        seconds = median_seconds(partial(torch.mm, a, b), repeats_for(first, 1.0, 3, 10), 0)
        best = max(best, 2 * n**3 / seconds / 1e9)
    return best


def bf16_supported() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and check is not None and check())


def measure_copy_bandwidth(megabytes: int) -> float:
    """GB/s of bytes read plus written by ``dst.copy_(src)`` for a ``megabytes`` MiB tensor."""
    src = torch.ones(megabytes * 2**18)
    dst = torch.empty_like(src)
    first = median_seconds(lambda: dst.copy_(src), repeats=1, warmup=1)
    seconds = median_seconds(lambda: dst.copy_(src), repeats_for(first, 1.0, 3, 20), 0)
    return 2 * src.numel() * 4 / seconds / 1e9


#: The node whose single kernel is each streaming kind that is an op of its own.
_STREAM_NODES: dict[str, Node] = {
    "maxpool": MaxPoolNode("k"),
    "avgpool": AvgPoolNode("k"),
    "global_avgpool": GlobalAvgPoolNode("k"),
    "add": AddNode("k"),
    "concat": ConcatNode("k"),
}


def _stream_case(
    kind: str, shape: tuple[int, int, int, int], fmt: torch.memory_format
) -> tuple[Callable[[], object], Kernel]:
    """A callable running one kernel of ``kind`` as the builder's modules do, and its Kernel.

    Ops of their own run through their registry builder. Batch norm and activations are
    kernels of a conv node, so they run alone here, without the conv the builder puts first.
    """
    n, c, h, w = shape
    x = torch.randn(shape).contiguous(memory_format=fmt)
    node = _STREAM_NODES.get(kind) or ConvNode(
        "k", out=c, bn=kind == "batchnorm", act="none" if kind == "batchnorm" else kind
    )
    op = OPS[node.op]
    in_shapes = [(c, h, w)] * (2 if op.multi_input else 1)
    out = op.shape(node, in_shapes, c, f"{kind} case")
    module: nn.Module
    if kind in _STREAM_NODES:
        module = op.build(node, in_shapes, out)
    else:
        module = nn.BatchNorm2d(c).eval() if kind == "batchnorm" else make_activation(kind)
    kernel = next(k for k in node_kernels(node, in_shapes, out, n) if k.kind == kind)
    xs = [x] * len(in_shapes)
    return lambda: module(*xs), kernel


def measure_overheads(fmt: torch.memory_format) -> dict[str, float]:
    """Microseconds per call of every kernel kind on a tiny tensor: dispatch and module-call cost."""
    tiny = (1, 1, 2, 2)
    out: dict[str, float] = {}
    for kind in STREAM_KINDS:
        fn, _ = _stream_case(kind, tiny, fmt)
        out[kind] = median_seconds(fn, 200, 20)
    x = torch.randn(tiny).contiguous(memory_format=fmt)
    convs = {"conv1x1": nn.Conv2d(1, 1, 1), "convkxk": nn.Conv2d(1, 1, 3, padding=1)}
    for kind, conv in convs.items():
        out[kind] = median_seconds(partial(conv, x), 200, 20)
    linear, flat = nn.Linear(1, 1), torch.randn(1, 1)
    out["linear"] = median_seconds(lambda: linear(flat), 200, 20)
    dropout = nn.Dropout(0.5).eval()
    out["identity"] = median_seconds(lambda: dropout(x), 200, 20)
    return {k: round(v * 1e6, 3) for k, v in out.items()}


def measure_stream_rates(
    shape: tuple[int, int, int, int], overheads_us: dict[str, float], fmt: torch.memory_format
) -> dict[str, float]:
    """GB/s (read plus written, as ``node_kernels`` counts) of each streaming kind on ``shape``."""
    rates = {}
    for kind in STREAM_KINDS:
        fn, kernel = _stream_case(kind, shape, fmt)
        first = median_seconds(fn, 1, 1)
        seconds = median_seconds(fn, repeats_for(first, 0.25, 5, 30), 0)
        # The tiny-op overhead is already its own model term; the rate is what is left.
        busy = max(seconds - overheads_us[kind] * 1e-6, 0.2 * seconds)
        rates[kind] = round(kernel.bytes / busy / 1e9, 3)
    return rates


def fire_gemm_shapes(count: int, seed: int, max_gflop: float) -> list[tuple[int, int, int, int, int]]:
    """Random (batch, cin, cout, kernel, side) convs of stem and Fire shapes, ``max_gflop`` at most.

    Output channels are log-uniform over 8..256 (squeeze layers narrow, expand layers wide);
    input channels too, or 1 or 3 one time in five (a stem on grey or colour images); maps
    28, 14, 7 or 4 pixels wide; batch 1, 8 or 64; kernels 1 (two in five), 3 or 5.
    """
    rng = random.Random(seed)
    shapes: list[tuple[int, int, int, int, int]] = []
    while len(shapes) < count:
        batch = rng.choice((1, 1, 8, 64, 64))
        kernel = rng.choice((1, 1, 3, 3, 5))
        side = rng.choice((28, 14, 14, 7, 7, 4))
        cout = round(2 ** rng.uniform(3, 8))
        cin = rng.choice((1, 3)) if rng.random() < 0.2 else round(2 ** rng.uniform(3, 8))
        if 2 * batch * cin * cout * kernel**2 * side**2 <= max_gflop * 1e9:
            shapes.append((batch, cin, cout, kernel, side))
    return shapes


def measure_gemms(
    shapes: Sequence[tuple[int, int, int, int, int]],
    budget_s: float,
    fmt: torch.memory_format,
    runtime: str = "torch",
) -> list[GemmSample]:
    """Median time of each conv in ``shapes`` (as ``nn.Conv2d`` with bias, 'same' padding).

    ``runtime="onnxruntime"``: each conv exported to ONNX and run in an ONNX Runtime session
    with torch's current thread count (its own kernels, in its own NCHW layout).
    """
    samples = []
    each = budget_s / max(len(shapes), 1)
    for batch, cin, cout, kernel, side in shapes:
        conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
        forward = forward_maker(conv, (cin, side, side), fmt, runtime)(batch)
        first = median_seconds(forward, 1, 1)
        seconds = median_seconds(forward, repeats_for(first, each, 3, 30), 0)
        node = ConvNode("k", out=cout, kernel=kernel, act="none")
        samples.append(
            GemmSample(node_kernels(node, [(cin, side, side)], (cout, side, side), batch)[0], seconds)
        )
    return samples


def measure_call_overhead(fmt: torch.memory_format, runtime: str) -> float:
    """Microseconds of one call of a 1-channel 1x1 conv on a 2x2 map: a run's fixed cost."""
    forward = forward_maker(nn.Conv2d(1, 1, 1), (1, 2, 2), fmt, runtime)(1)
    return round(median_seconds(forward, 200, 20) * 1e6, 3)


def forward_maker(
    module: nn.Module, input_shape: tuple[int, ...], fmt: torch.memory_format, runtime: str = "torch"
) -> Callable[[int], Callable[[], object]]:
    """For a batch size, a no-argument forward of ``module`` on a random input, on ``runtime``.

    ``torch``: eager, in ``fmt``. ``onnxruntime``: the module exported to ONNX once (batch axis
    dynamic) and run in an ONNX Runtime session with torch's current thread count.
    """
    module = module.eval()
    if runtime == "onnxruntime":
        from archsearch.hardware.ort import onnx_session, to_onnx_bytes

        session = onnx_session(to_onnx_bytes(module, input_shape), torch.get_num_threads())
        name = session.get_inputs()[0].name
        return lambda batch: partial(session.run, None, {name: torch.randn(batch, *input_shape).numpy()})
    module = to_memory_format(module, fmt)
    return lambda batch: partial(module, torch.randn(batch, *input_shape).contiguous(memory_format=fmt))


def measure_linears(count: int, seed: int, budget_s: float) -> list[GemmSample]:
    """Median time of random ``nn.Linear`` layers (classifier-sized, batch 1 to 64)."""
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        batch = rng.choice((1, 8, 64))
        fin, fout = (round(2 ** rng.uniform(3, 10)) for _ in range(2))
        forward = partial(nn.Linear(fin, fout), torch.randn(batch, fin))
        first = median_seconds(forward, 1, 1)
        seconds = median_seconds(forward, repeats_for(first, budget_s / count), 0)
        node = LinearNode("k", out=fout)
        samples.append(GemmSample(node_kernels(node, [(fin,)], (fout,), batch)[0], seconds))
    return samples
