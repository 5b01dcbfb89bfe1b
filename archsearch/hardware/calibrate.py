"""Measure this machine and write a hardware profile for ``latency_est_ms``.

``python -m archsearch.calibrate out=conf/hardware/mybox.yaml threads=1 clock=cpu`` times
micro-benchmarks on the CPU and writes (and prints) a profile that ``hardware=mybox`` selects.
Nothing else is written: no Hydra output folder, no logs. Progress goes to stderr, the YAML
to stdout. A full run takes 20-40 s on a 2-core machine; ``quick=true`` about 2 s.

What is measured, and the term of the latency model (:mod:`archsearch.net.cost`) it sets:

- large fp32 matmuls -> ``peak_gflops`` (bf16 too where oneDNN supports it, recorded only);
- large tensor copies -> ``bandwidth_gbs``;
- every kernel kind on a tiny tensor in a hot loop -> its relative dispatch cost;
- every streaming kind (batch norm, activations, pools, add, concat) on a Fire-sized tensor
  (64 x 64 x 14 x 14) -> its rate in ``bandwidths``;
- about 100 random convolutions of stem and Fire shapes (1x1 and kxk, batch 1 to 64) and a
  dozen linear layers -> per class ``peaks``, ``bandwidths`` and GEMM ``efficiency``
  half-sizes, fitted by least squares in log time;
- 160 random probe networks built by ``archsearch.net.model.build`` at batch 1 -> ``overheads_us``:
  what each kernel costs beyond its roofline inside a network (module calls, graph glue,
  dispatch with cold caches), fitted as ``factor * hot-loop cost + extra``.

Every figure is a median over repeats. ``clock=wall`` describes the machine as loaded while
calibrating; ``clock=cpu`` (with ``threads=1``) times the thread's CPU time and so describes
the hardware even when other jobs share it. A profile is valid for the thread count and memory
format it was measured with; both are recorded under ``measured``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from scipy.optimize import least_squares, nnls
from torch import nn

from archsearch.errors import ConfigError, SpecError
from archsearch.hardware.latency import (
    CLOCKS,
    MEMORY_FORMATS,
    settle_allocator,
    to_memory_format,
    torch_threads,
)
from archsearch.hardware.profile import HardwareProfile
from archsearch.net.cost import node_kernels
from archsearch.net.kernels import GEMM_KINDS, KERNEL_KINDS, Kernel
from archsearch.net.layers import make_activation
from archsearch.net.model import build
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
from archsearch.net.spec import NetSpec

__all__ = [
    "CalibrateConfig",
    "ContextFit",
    "GemmSample",
    "calibrate",
    "fit_context_overheads",
    "fit_gemm_class",
    "probe_spec",
    "profile_yaml",
    "run",
    "spec_kernels",
    "write_profile",
]


STREAM_KINDS = tuple(k for k in KERNEL_KINDS if k not in GEMM_KINDS and k != "identity")


@dataclass(frozen=True)
class CalibrateConfig:
    """Options of ``python -m archsearch.calibrate`` (each one a ``key=value`` override).

    Attributes:
        out: YAML file to write (``conf/hardware/NAME.yaml`` makes ``hardware=NAME``); None
            prints the profile only.
        name: profile name; None takes the stem of ``out`` (or ``this_machine``).
        threads: torch intra-op threads to measure with; None keeps torch's default.
        quick: a few-second run with smaller sizes and fewer shapes (for tests and smoke runs).
        seed: seeds the random Fire-module shapes.
        memory_format: tensor layout to measure in (``auto`` = channels-last, as the trainer
            and ``measure_latency`` use for conv nets; or ``contiguous``).
        clock: ``wall`` or ``cpu`` (thread CPU time; needs ``threads=1``).
    """

    out: str | None = None
    name: str | None = None
    threads: int | None = None
    quick: bool = False
    seed: int = 0
    memory_format: str = "auto"
    clock: str = "wall"

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
        memory_format = raw.get("memory_format", "auto")
        if memory_format not in MEMORY_FORMATS:
            raise ConfigError(f"memory_format is {memory_format!r}; allowed: {', '.join(MEMORY_FORMATS)}.")
        clock = raw.get("clock", "wall")
        if clock not in CLOCKS:
            raise ConfigError(f"clock is {clock!r}; allowed: {', '.join(CLOCKS)}.")
        return cls(out, name, threads, quick, seed, memory_format, clock)


@dataclass(frozen=True)
class GemmSample:
    """One timed GEMM-like kernel (a conv or linear layer) and its median seconds."""

    kernel: Kernel
    seconds: float


#: The clock every measurement reads (``calibrate(clock=...)`` sets it for its duration).
_NOW: contextvars.ContextVar[Callable[[], float]] = contextvars.ContextVar("now", default=time.perf_counter)


def _median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    now = _NOW.get()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = now()
        fn()
        times.append(now() - start)
    return statistics.median(times)


def _repeats_for(expected_s: float, budget_s: float, low: int = 3, high: int = 50) -> int:
    """How many repeats fit a per-measurement time budget (at least ``low``)."""
    return int(min(high, max(low, budget_s / max(expected_s, 1e-7))))


def measure_matmul(sizes: Sequence[int], dtype: torch.dtype = torch.float32) -> float:
    """Best sustained GFLOP/s of square ``n x n`` matmuls over ``sizes``."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        first = _median_seconds(partial(torch.mm, a, b), repeats=1, warmup=1)
        seconds = _median_seconds(partial(torch.mm, a, b), _repeats_for(first, 1.0, 3, 10), 0)
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
    first = _median_seconds(lambda: dst.copy_(src), repeats=1, warmup=1)
    seconds = _median_seconds(lambda: dst.copy_(src), _repeats_for(first, 1.0, 3, 20), 0)
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
        out[kind] = _median_seconds(fn, 200, 20)
    x = torch.randn(tiny).contiguous(memory_format=fmt)
    convs = {"conv1x1": nn.Conv2d(1, 1, 1), "convkxk": nn.Conv2d(1, 1, 3, padding=1)}
    for kind, conv in convs.items():
        out[kind] = _median_seconds(partial(conv, x), 200, 20)
    linear, flat = nn.Linear(1, 1), torch.randn(1, 1)
    out["linear"] = _median_seconds(lambda: linear(flat), 200, 20)
    dropout = nn.Dropout(0.5).eval()
    out["identity"] = _median_seconds(lambda: dropout(x), 200, 20)
    return {k: round(v * 1e6, 3) for k, v in out.items()}


def measure_stream_rates(
    shape: tuple[int, int, int, int], overheads_us: dict[str, float], fmt: torch.memory_format
) -> dict[str, float]:
    """GB/s (read plus written, as ``node_kernels`` counts) of each streaming kind on ``shape``."""
    rates = {}
    for kind in STREAM_KINDS:
        fn, kernel = _stream_case(kind, shape, fmt)
        first = _median_seconds(fn, 1, 1)
        seconds = _median_seconds(fn, _repeats_for(first, 0.25, 5, 30), 0)
        # The tiny-op overhead is already its own model term; the rate is what is left.
        busy = max(seconds - overheads_us[kind] * 1e-6, 0.2 * seconds)
        rates[kind] = round(kernel.bytes / busy / 1e9, 3)
    return rates


def probe_spec(rng: random.Random, index: int, widths: tuple[int, int], side: int) -> NetSpec:
    """A random network using every op the builder knows, ``widths`` channels on a ``side`` map.

    Run through ``archsearch.net.model.build``, such a network pays each kernel's fixed cost the
    way a real one does: module calls, graph bookkeeping, and dispatch with caches cold from
    the other ops in between (several times what a hot single-op loop shows).
    """
    acts = ("relu", "relu6", "gelu", "silu", "none")
    while True:
        nodes: list[dict[str, Any]] = []
        for i in range(rng.randint(6, 14)):
            op = rng.choice(
                ("conv", "conv", "fire", "fire", "maxpool", "avgpool", "add", "concat", "dropout")
            )
            node: dict[str, Any] = {"name": f"n{i}", "op": op}
            if op == "conv":
                node.update(out=rng.randint(*widths), kernel=rng.choice((1, 3)), bn=rng.random() < 0.5)
                node["act"] = rng.choice(acts)
            elif op == "fire":
                kernels = rng.sample((1, 3), rng.randint(1, 2))
                expand = {k: rng.randint(*widths) for k in kernels}
                squeeze = rng.randint(1, max(1, sum(expand.values()) // 2))
                node.update(squeeze=squeeze, expand=expand, bn=rng.random() < 0.5)
                node["act"] = rng.choice(acts[:4])
            elif op in ("maxpool", "avgpool"):
                node.update(kernel=3, stride=1, padding=1)
            elif op in ("add", "concat") and i > 0:
                node["inputs"] = [f"n{rng.randrange(i)}", f"n{i - 1}"]
                if op == "add":
                    node["project"] = True
            else:
                node = {"name": f"n{i}", "op": "dropout", "p": 0.5}
            nodes.append(node)
        if rng.random() < 0.5:
            nodes += [{"name": "head", "op": "conv", "out": "num_classes", "act": "none"}]
            nodes += [{"name": "gap", "op": "global_avgpool"}]
        else:
            flat = rng.choice(({"name": "gap", "op": "global_avgpool"}, {"name": "flat", "op": "flatten"}))
            nodes += [flat, {"name": "fc", "op": "linear", "out": "num_classes"}]
        raw = {"name": f"probe{index}", "input": [2, side, side], "num_classes": 3, "nodes": nodes}
        try:
            return NetSpec.from_dict(raw)
        except SpecError:
            continue


def spec_kernels(net: NetSpec, batch_size: int = 1) -> list[Kernel]:
    """Every kernel of a network, in launch order (``node_kernels`` over its nodes)."""
    shapes = {"input": net.input, **net.validate()}
    sources = net.input_names()
    kernels: list[Kernel] = []
    for node in net.nodes:
        kernels += node_kernels(node, [shapes[s] for s in sources[node.name]], shapes[node.name], batch_size)
    return kernels


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
    target = np.maximum(residual_s, 1e-7)
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


def measure_context_overheads(
    count: int,
    seed: int,
    budget_s: float,
    busy: Callable[[Kernel], float],
    single_us: Mapping[str, float],
    fmt: torch.memory_format,
    widths: tuple[int, int] = (4, 64),
    sides: tuple[int, ...] = (7, 14, 28),
) -> ContextFit:
    """Time ``count`` random probe networks at batch 1 and fit the fixed cost kernels pay in them.

    Each probe net (:func:`probe_spec`) is timed with 5 to 30 repeats, as ``budget_s`` shared
    by the nets allows; the roofline time ``busy`` predicts for its kernels is subtracted and
    :func:`fit_context_overheads` explains the rest.
    """
    rng = random.Random(seed)
    counts, residuals = [], []
    for i in range(count):
        net = probe_spec(rng, i, widths, rng.choice(sides))
        model = to_memory_format(build(net).eval(), fmt)
        forward = partial(model, torch.randn(1, *net.input).contiguous(memory_format=fmt))
        first = _median_seconds(forward, 1, 2)
        seconds = _median_seconds(forward, _repeats_for(first, budget_s / count, 5, 30), 0)
        kernels = spec_kernels(net)
        counts.append([sum(k.kind == kind for k in kernels) for kind in KERNEL_KINDS])
        residuals.append(seconds - sum(busy(k) for k in kernels))
    return fit_context_overheads(np.array(counts, dtype=float), single_us, np.array(residuals))


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
    shapes: Sequence[tuple[int, int, int, int, int]], budget_s: float, fmt: torch.memory_format
) -> list[GemmSample]:
    """Median time of each conv in ``shapes`` (as ``nn.Conv2d`` with bias, 'same' padding)."""
    samples = []
    each = budget_s / max(len(shapes), 1)
    for batch, cin, cout, kernel, side in shapes:
        conv = to_memory_format(nn.Conv2d(cin, cout, kernel, padding=kernel // 2).eval(), fmt)
        forward = partial(conv, torch.randn(batch, cin, side, side).contiguous(memory_format=fmt))
        first = _median_seconds(forward, 1, 1)
        seconds = _median_seconds(forward, _repeats_for(first, each, 3, 30), 0)
        node = ConvNode("k", out=cout, kernel=kernel, act="none")
        samples.append(
            GemmSample(node_kernels(node, [(cin, side, side)], (cout, side, side), batch)[0], seconds)
        )
    return samples


def measure_linears(count: int, seed: int, budget_s: float) -> list[GemmSample]:
    """Median time of random ``nn.Linear`` layers (classifier-sized, batch 1 to 64)."""
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        batch = rng.choice((1, 8, 64))
        fin, fout = (round(2 ** rng.uniform(3, 10)) for _ in range(2))
        forward = partial(nn.Linear(fin, fout), torch.randn(batch, fin))
        first = _median_seconds(forward, 1, 1)
        seconds = _median_seconds(forward, _repeats_for(first, budget_s / count), 0)
        node = LinearNode("k", out=fout)
        samples.append(GemmSample(node_kernels(node, [(fin,)], (fout,), batch)[0], seconds))
    return samples


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


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def calibrate(
    threads: int | None = None,
    quick: bool = False,
    name: str = "this_machine",
    seed: int = 0,
    memory_format: str = "auto",
    clock: str = "wall",
    log: Callable[[str], None] | None = None,
) -> HardwareProfile:
    """Measure the CPU and return a calibrated HardwareProfile (writes nothing).

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

    Returns:
        The profile; ``extra["measured"]`` records the date, threads, CPU and raw figures.
    """
    say = log or (lambda _line: None)
    if memory_format not in MEMORY_FORMATS:
        raise ConfigError(f"memory_format is {memory_format!r}; allowed: {', '.join(MEMORY_FORMATS)}.")
    fmt = torch.contiguous_format if memory_format == "contiguous" else torch.channels_last
    if clock not in CLOCKS:
        raise ConfigError(f"clock is {clock!r}; allowed: {', '.join(CLOCKS)}.")
    if clock == "cpu" and threads != 1:
        raise ConfigError(f"clock=cpu times only the calling thread, so it needs threads=1 (got {threads}).")
    started = time.perf_counter()
    settle_allocator()
    token = _NOW.set(time.thread_time if clock == "cpu" else time.perf_counter)
    try:
        with torch_threads(threads) as used, torch.inference_mode():
            torch.manual_seed(seed)
            fp32 = measure_matmul((512,) if quick else (1024, 2048))
            bf16 = (
                measure_matmul((512,) if quick else (1024, 2048), torch.bfloat16)
                if bf16_supported()
                else None
            )
            say(f"matmul: fp32 {fp32:.1f} GFLOP/s" + (f", bf16 {bf16:.1f} GFLOP/s" if bf16 else ""))
            copy_gbs = measure_copy_bandwidth(16 if quick else 256)
            say(f"copy: {copy_gbs:.1f} GB/s")
            single = measure_overheads(fmt)
            say("single-op overhead (us): " + ", ".join(f"{k} {v:.1f}" for k, v in single.items()))
            stream_shape = (8, 64, 14, 14) if quick else (64, 64, 14, 14)
            rates = measure_stream_rates(stream_shape, single, fmt)
            say("streaming (GB/s): " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
            shapes = fire_gemm_shapes(10 if quick else 96, seed, 0.05 if quick else 3.0)
            by_class: dict[str, list[GemmSample]] = {"conv1x1": [], "convkxk": []}
            for sample in measure_gemms(shapes, 1.0 if quick else 30.0, fmt):
                by_class[sample.kernel.kind].append(sample)
            by_class["linear"] = measure_linears(4 if quick else 12, seed, 0.2 if quick else 2.0)
            fits = {
                kind: fit_gemm_class(samples, single[kind], fp32, copy_gbs)
                for kind, samples in by_class.items()
                if samples
            }
            for kind, f in fits.items():
                say(
                    f"{kind}: {f['gflops']:.1f} GFLOP/s, {f['gbs']:.1f} GB/s, half m/n/k "
                    f"{f['half']['m']:.0f}/{f['half']['n']:.0f}/{f['half']['k']:.0f}, "
                    f"fit median error {100 * f['median_ape']:.0f}% over {len(by_class[kind])} shapes"
                )
            roofline = HardwareProfile(
                name=name,
                peak_gflops=fp32,
                bandwidth_gbs=copy_gbs,
                peaks={kind: f["gflops"] for kind, f in fits.items()},
                bandwidths={**rates, **{kind: f["gbs"] for kind, f in fits.items()}},
                efficiency={kind: f["half"] for kind, f in fits.items()},
            )
            context = measure_context_overheads(
                30 if quick else 160,
                seed,
                0.6 if quick else 12.0,
                lambda k: roofline.kernel_seconds(k)[0],
                single,
                fmt,
                (2, 12) if quick else (4, 64),
                (6, 8) if quick else (7, 14, 28),
            )
            say(
                f"in-network overhead: {context.factor:.2f} x single-op + {context.extra_us:.1f} us "
                f"per kernel (fit median error {100 * context.median_ape:.0f}%)"
            )
    finally:
        _NOW.reset(token)
    command = ["python -m archsearch.calibrate", f"threads={'null' if threads is None else threads}"]
    command += [f"clock={clock}", f"memory_format={memory_format}", f"seed={seed}"]
    command += ["quick=true"] if quick else []
    measured = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "tool": " ".join(command),
        "host": platform.node(),
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "threads": used,
        "memory_format": "contiguous" if memory_format == "contiguous" else "channels_last",
        "clock": clock,
        "torch": str(torch.__version__),
        "seconds": round(time.perf_counter() - started, 1),
        "matmul_gflops": {"fp32": round(fp32, 2), "bf16": round(bf16, 2) if bf16 else None},
        "copy_mib": 16 if quick else 256,
        "stream_shape": list(stream_shape),
        "single_op_overhead_us": single,
        "gemm_fits": fits,
        "in_network_overhead": {
            "factor": context.factor,
            "extra_us": context.extra_us,
            "median_ape": context.median_ape,
        },
    }
    return dataclasses.replace(
        roofline,
        description=f"calibrated on {_cpu_name()}, {used} thread(s), {clock} clock",
        peak_gflops=round(fp32, 2),
        bandwidth_gbs=round(copy_gbs, 2),
        overhead_us=round(statistics.median(context.overheads_us.values()), 3),
        overheads_us=context.overheads_us,
        calibrated=True,
        extra={"measured": measured},
    )


def profile_yaml(profile: HardwareProfile) -> str:
    """The profile as YAML text, with a header saying how it was made and how to redo it."""
    m = profile.extra.get("measured", {})
    header = (
        f"# Written by `{m.get('tool', 'python -m archsearch.calibrate')}` on {m.get('date', '?')},\n"
        f"# {m.get('threads', '?')} thread(s), {m.get('clock', 'wall')} clock, "
        f"{m.get('memory_format', '?')}. Every figure is a median over repeats;\n"
        "# rerun it with out=<this file> to refresh. Raw figures are under `measured` at the end.\n"
    )
    return header + yaml.safe_dump(profile.to_dict(), sort_keys=False, default_flow_style=None, width=100)


def _check_out(out: str | Path) -> Path:
    path = Path(out)
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"out={out} must be a .yaml or .yml path, e.g. conf/hardware/mybox.yaml.")
    if not path.parent.is_dir():
        raise ConfigError(f"out={out}: folder {path.parent} does not exist.")
    return path


def write_profile(profile: HardwareProfile, out: str | Path) -> Path:
    """Write ``profile_yaml(profile)`` to ``out`` atomically (a temp file renamed into place).

    Raises:
        ConfigError: ``out`` does not end in .yaml/.yml or its folder does not exist.
    """
    path = _check_out(out)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(profile_yaml(profile))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def run(cfg: CalibrateConfig) -> HardwareProfile:
    """What the CLI does: calibrate, print the YAML to stdout, write it to ``cfg.out`` if given.

    Progress lines go to stderr so stdout is the profile alone.
    """
    if cfg.out is not None:
        _check_out(cfg.out)  # before a minute of measuring, not after
    name = cfg.name or (Path(cfg.out).stem if cfg.out else "this_machine")
    profile = calibrate(
        cfg.threads,
        cfg.quick,
        name,
        cfg.seed,
        cfg.memory_format,
        cfg.clock,
        log=lambda line: print(line, file=sys.stderr),
    )
    print(profile_yaml(profile), end="")
    if cfg.out is not None:
        print(f"wrote {write_profile(profile, cfg.out)}", file=sys.stderr)
    return profile
