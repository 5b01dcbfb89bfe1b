"""The micro-benchmark cases of :mod:`archsearch.hardware.calibrate`.

Each function builds one family of cases: a no-argument callable running one kernel (or one
network) as the built models run it, with the :class:`~archsearch.net.kernels.Kernel` it
stands for. Large matmuls and tensor copies, every kernel kind on a tiny tensor, streaming
kinds on a Fire-sized tensor, random convolutions and linear layers. The calibration times
all cases together in interleaved rounds (:func:`archsearch.hardware.timing.time_groups`);
nothing here fits a model: the figures go to :mod:`archsearch.hardware.fitting`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from archsearch.hardware.gemm import runs_blocked
from archsearch.hardware.runtime import to_memory_format
from archsearch.hardware.timing import fastest_times
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
    "Case",
    "GemmSample",
    "bf16_supported",
    "busy_seconds",
    "call_overhead_case",
    "fire_gemm_shapes",
    "forward_maker",
    "gemm_cases",
    "linear_cases",
    "measure_copy_bandwidth",
    "measure_matmul",
    "overhead_cases",
    "stream_cases",
    "stream_rates",
]

STREAM_KINDS = tuple(k for k in KERNEL_KINDS if k not in GEMM_KINDS and k != "identity")


class Case(NamedTuple):
    """A no-argument callable running one kernel, the kernel it runs, and the share of its run
    (less the runtime's fixed cost per call) that is that kernel: less than 1 where the runtime
    adds work around it alone that it spares it in a network (:func:`gemm_cases`)."""

    fn: Callable[[], object]
    kernel: Kernel
    share: float = 1.0


@dataclass(frozen=True)
class GemmSample:
    """One timed GEMM-like kernel (a conv or linear layer) and its median seconds."""

    kernel: Kernel
    seconds: float


def measure_matmul(sizes: Sequence[int], dtype: torch.dtype = torch.float32) -> float:
    """Best sustained GFLOP/s of square ``n x n`` matmuls over ``sizes``."""
    fns = [partial(torch.mm, torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)) for n in sizes]
    seconds = fastest_times(fns, 1.0 * len(sizes), low=2, high=10)
    return max(2 * n**3 / t / 1e9 for n, t in zip(sizes, seconds, strict=True))


def bf16_supported() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and check is not None and check())


def measure_copy_bandwidth(megabytes: int) -> float:
    """GB/s of bytes read plus written by ``dst.copy_(src)`` for a ``megabytes`` MiB tensor."""
    src = torch.ones(megabytes * 2**18)
    dst = torch.empty_like(src)
    (seconds,) = fastest_times([lambda: dst.copy_(src)], 1.0, high=20)
    return 2 * src.numel() * 4 / seconds / 1e9


#: The node whose single kernel is each streaming kind that is an op of its own.
_STREAM_NODES: dict[str, Node] = {
    "maxpool": MaxPoolNode("k"),
    "avgpool": AvgPoolNode("k"),
    "global_avgpool": GlobalAvgPoolNode("k"),
    "add": AddNode("k"),
    "concat": ConcatNode("k"),
}


class _Twice(nn.Module):
    """A two-input op fed one tensor twice, so that it exports to ONNX with a single input."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, x)


def _stream_case(
    kind: str, shape: tuple[int, int, int, int], fmt: torch.memory_format, runtime: str = "torch"
) -> Case:
    """A callable running one kernel of ``kind`` as the builder's modules do, and its Kernel.

    Ops of their own run through their registry builder. Batch norm and activations are
    kernels of a conv node, so they run alone here, without the conv the builder puts first.
    ``runtime="onnxruntime"``: the module exported to ONNX and run in an ONNX Runtime session
    (:func:`forward_maker`), whose kernels for these ops are not torch's (its add and global
    average pool stream at under half eager torch's rate on the build VM).
    """
    n, c, h, w = shape
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
    if runtime == "onnxruntime":
        exported = _Twice(module) if len(in_shapes) == 2 else module
        return Case(forward_maker(exported, (c, h, w), fmt, runtime)(n), kernel)
    xs = [torch.randn(shape).contiguous(memory_format=fmt)] * len(in_shapes)
    return Case(lambda: module(*xs), kernel)


def overhead_cases(fmt: torch.memory_format) -> dict[str, Callable[[], object]]:
    """A call of every kernel kind on a tiny tensor: what it costs is dispatch and module calls."""
    tiny = (1, 1, 2, 2)
    fns: dict[str, Callable[[], object]] = {kind: _stream_case(kind, tiny, fmt).fn for kind in STREAM_KINDS}
    x = torch.randn(tiny).contiguous(memory_format=fmt)
    fns["conv1x1"] = partial(to_memory_format(nn.Conv2d(1, 1, 1), fmt), x)
    fns["convkxk"] = partial(to_memory_format(nn.Conv2d(1, 1, 3, padding=1), fmt), x)
    fns["linear"] = partial(nn.Linear(1, 1), torch.randn(1, 1))
    fns["identity"] = partial(nn.Dropout(0.5).eval(), x)
    return fns


def stream_cases(
    shape: tuple[int, int, int, int], fmt: torch.memory_format, runtime: str = "torch"
) -> dict[str, Case]:
    """One kernel of every streaming kind on ``shape`` (batch, channels, height, width), run on
    ``runtime``."""
    return {kind: _stream_case(kind, shape, fmt, runtime) for kind in STREAM_KINDS}


def busy_seconds(seconds: Any, overhead_us: float) -> Any:
    """A kernel's time less its dispatch, at least a fifth of it (scalars or numpy arrays alike).

    The tiny-op dispatch is its own model term (``overheads_us``); a rate is of what is left.
    """
    return np.maximum(seconds - overhead_us * 1e-6, 0.2 * seconds)


def stream_rates(
    cases: Mapping[str, Case], seconds: Sequence[float], overheads_us: Mapping[str, float]
) -> dict[str, float]:
    """GB/s (read plus written, as ``node_kernels`` counts) of each timed streaming case."""
    rates = {}
    for (kind, case), time_s in zip(cases.items(), seconds, strict=True):
        rates[kind] = round(float(case.kernel.bytes / busy_seconds(time_s, overheads_us[kind]) / 1e9), 3)
    return rates


def fire_gemm_shapes(
    count: int, seed: int, max_gflop: float, block: int = 0, step: int = 0
) -> list[tuple[int, int, int, int, int]]:
    """Random (batch, cin, cout, kernel, side) convs of stem and Fire shapes, ``max_gflop`` at most.

    Output channels are log-uniform over 8..256 (squeeze layers narrow, expand layers wide);
    input channels too, or 1 or 3 one time in five (a stem on grey or colour images); maps
    28, 14, 7 or 4 pixels wide; batch 1, 8 or 64; kernels 1 (two in five), 3 or 5. With a
    ``block`` (a runtime's blocked layout, whose convolutions of a block or more inputs need
    them in multiples of ``step``), half of the input widths of a block or more are rounded to
    such a multiple and the other half moved off one, so that convolutions in and out of the
    layout are both measured (:func:`archsearch.hardware.gemm.runs_blocked`).
    """
    rng = random.Random(seed)
    shapes: list[tuple[int, int, int, int, int]] = []
    while len(shapes) < count:
        batch = rng.choice((1, 1, 8, 64, 64))
        kernel = rng.choice((1, 1, 3, 3, 5))
        side = rng.choice((28, 14, 14, 7, 7, 4))
        cout = round(2 ** rng.uniform(3, 8))
        cin = rng.choice((1, 3)) if rng.random() < 0.2 else round(2 ** rng.uniform(3, 8))
        if block and cin >= block:
            multiple = step or block
            cin = round(cin / multiple) * multiple if rng.random() < 0.5 else cin + (cin % multiple == 0)
        if 2 * batch * cin * cout * kernel**2 * side**2 <= max_gflop * 1e9:
            shapes.append((batch, cin, cout, kernel, side))
    return shapes


def gemm_cases(
    shapes: Sequence[tuple[int, int, int, int, int]],
    fmt: torch.memory_format,
    runtime: str = "torch",
    layout: tuple[int, int] = (0, 0),
) -> list[Case]:
    """Each conv of ``shapes`` (as ``nn.Conv2d`` with bias, 'same' padding) on a random batch.

    ``runtime="onnxruntime"``: each conv exported to ONNX and run in an ONNX Runtime session
    with torch's current thread count (its own kernels and layouts). A conv that runs in its
    blocked layout (``layout``, :func:`archsearch.hardware.gemm.runs_blocked`) runs there
    between reorders of its input and output, so its case carries the share of the run that
    its profiler puts on the conv itself (:func:`archsearch.hardware.ort.node_share`).
    """
    cases = []
    for batch, cin, cout, kernel, side in shapes:
        conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2).eval()
        node = ConvNode("k", out=cout, kernel=kernel, act="none")
        k = node_kernels(node, [(cin, side, side)], (cout, side, side), batch)[0]
        if runtime != "onnxruntime":
            cases.append(Case(forward_maker(conv, (cin, side, side), fmt, runtime)(batch), k))
            continue
        from archsearch.hardware.ort import node_share, onnx_session, to_onnx_bytes

        model = to_onnx_bytes(conv, (cin, side, side))
        session, x = onnx_session(model, torch.get_num_threads()), torch.randn(batch, cin, side, side).numpy()
        share = node_share(model, x) if runs_blocked(k, *layout) else 1.0
        cases.append(Case(partial(session.run, None, {session.get_inputs()[0].name: x}), k, share))
    return cases


def call_overhead_case(fmt: torch.memory_format, runtime: str) -> Callable[[], object]:
    """One call of a 1-channel 1x1 conv on a 2x2 map: a run's fixed cost on ``runtime``."""
    return forward_maker(nn.Conv2d(1, 1, 1), (1, 2, 2), fmt, runtime)(1)


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


def linear_cases(count: int, seed: int) -> list[Case]:
    """Random ``nn.Linear`` layers (classifier-sized, batch 1 to 64) on random inputs."""
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        batch = rng.choice((1, 8, 64))
        fin, fout = (round(2 ** rng.uniform(3, 10)) for _ in range(2))
        kernel = node_kernels(LinearNode("k", out=fout), [(fin,)], (fout,), batch)[0]
        cases.append(Case(partial(nn.Linear(fin, fout), torch.randn(batch, fin)), kernel))
    return cases
