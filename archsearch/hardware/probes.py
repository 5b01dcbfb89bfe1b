"""Random probe networks that show what each kernel costs inside a whole network.

A kernel amid other ops pays more than its hot-loop micro-benchmark shows (module calls, graph
glue, dispatch with cold caches). :func:`probe_cases` builds random networks with
``archsearch.net.model.build``; once the calibration has timed them, :func:`fit_probes` fits
that extra cost with :func:`archsearch.hardware.fitting.fit_context_overheads`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from archsearch.errors import ArchsearchError, SpecError
from archsearch.hardware.fitting import ContextFit, fit_context_overheads
from archsearch.hardware.microbench import forward_maker
from archsearch.hardware.profile import HardwareProfile
from archsearch.net.cost import node_kernels
from archsearch.net.kernels import KERNEL_KINDS, Kernel
from archsearch.net.model import build
from archsearch.net.spec import NetSpec

__all__ = [
    "RUNTIME_FUSED",
    "Probe",
    "fire_probe_spec",
    "fit_probes",
    "in_networks",
    "probe_cases",
    "probe_spec",
    "spec_kernels",
]

#: Kernel kinds a runtime does not run as kernels of their own. ONNX Runtime folds batch norm
#: into the preceding convolution (so does the exporter), fuses ReLU and ReLU6 (Clip) into it
#: (FusedConv), and drops dropout and flatten; eager PyTorch runs them all.
RUNTIME_FUSED: dict[str, tuple[str, ...]] = {
    "torch": (),
    "onnxruntime": ("batchnorm", "relu", "relu6", "identity"),
}


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


def fire_probe_spec(rng: random.Random, index: int, side: int) -> NetSpec:
    """A random Fire-module network of the kind the ``fire`` search spaces sample.

    A stem conv (16-64 channels, 3x3 or 5x5) on a one- or three-channel ``side`` map, 2 to 6
    Fire modules (expand widths 16-128 split among 1x1, 3x3 and 5x5 kernels, squeeze 1/8 to
    3/4 of that), two 2x2 max pools, sums bypassing a third of the modules, dropout, then a 1x1
    head and global pooling, all with batch norm and ReLU: what most searched networks are.
    """
    stem = rng.choice((16, 32, 48, 64))
    nodes: list[dict[str, Any]] = [
        {"name": "stem", "op": "conv", "out": stem, "kernel": rng.choice((3, 5)), "bn": True}
    ]
    depth = rng.randint(2, 6)
    pools = set(rng.sample(range(depth + 1), 2))
    if 0 in pools:
        nodes.append({"name": "pool0", "op": "maxpool", "kernel": 2})
    prev, prev_c = nodes[-1]["name"], stem
    for i in range(1, depth + 1):
        e = rng.choice((16, 32, 48, 64, 96, 128))
        k3 = round(e * rng.choice((0.0, 0.125, 0.25, 0.5, 0.75)))
        k5 = round(e * rng.choice((0.0, 0.0, 0.25))) if k3 <= e * 0.5 else 0
        expand = {k: c for k, c in ((1, e - k3 - k5), (3, k3), (5, k5)) if c > 0}
        squeeze = max(1, round(e * rng.uniform(0.125, 0.75)))
        nodes.append({"name": f"fire{i}", "op": "fire", "squeeze": squeeze, "expand": expand, "bn": True})
        if rng.random() < 1 / 3:
            nodes.append(
                {"name": f"by{i}", "op": "add", "inputs": [prev, f"fire{i}"], "project": prev_c != e}
            )
        if i in pools:
            nodes.append({"name": f"pool{i}", "op": "maxpool", "kernel": 2})
        prev, prev_c = nodes[-1]["name"], e
    nodes += [
        {"name": "drop", "op": "dropout", "p": 0.5},
        {"name": "head", "op": "conv", "out": "num_classes", "act": "none"},
        {"name": "gap", "op": "global_avgpool"},
    ]
    channels = rng.choice((1, 3))
    return NetSpec.from_dict(
        {"name": f"fire_probe{index}", "input": [channels, side, side], "num_classes": 10, "nodes": nodes}
    )


def spec_kernels(net: NetSpec, batch_size: int = 1) -> list[Kernel]:
    """Every kernel of a network, in launch order (``node_kernels`` over its nodes)."""
    shapes = {"input": net.input, **net.validate()}
    sources = net.input_names()
    kernels: list[Kernel] = []
    for node in net.nodes:
        kernels += node_kernels(node, [shapes[s] for s in sources[node.name]], shapes[node.name], batch_size)
    return kernels


class Probe(NamedTuple):
    """A no-argument forward of a probe network, the kernels its runtime runs for it, its batch,
    and those kernels at batch 1."""

    fn: Callable[[], object]
    kernels: list[Kernel]
    batch: int
    batch1: list[Kernel]


def probe_cases(
    count: int,
    seed: int,
    fmt: torch.memory_format,
    widths: tuple[int, int] = (4, 64),
    sides: tuple[int, ...] = (7, 14, 28),
    large_batch: int = 0,
    too_slow: Callable[[list[Kernel]], bool] = lambda _kernels: False,
    runtime: str = "torch",
    fire_sides: tuple[int, ...] = (8, 28, 32),
    fire_only: bool = False,
) -> list[Probe]:
    """``count`` random probe networks on ``runtime``, each at batch 1.

    Every other one is a Fire-module network (:func:`fire_probe_spec` on a ``fire_sides`` map),
    the rest use every op the builder knows (:func:`probe_spec`); ``fire_only``: all are Fire
    networks (for ONNX Runtime, whose exporter splits GELU and SiLU into several nodes that
    the kernel count of a network of every op misses). Every fourth (a Fire one)
    also runs at ``large_batch`` unless ``too_slow`` says its kernels there would take too long
    to time: batch 1 shows the fixed costs, the large batch what each image adds (and the
    roofline's scale); ``large_batch=0``: batch 1 only. A probe's kernels leave out the ones
    ``runtime`` fuses away (:data:`RUNTIME_FUSED`).
    """
    rng = random.Random(seed)
    skip = RUNTIME_FUSED[runtime]
    probes = []
    for i in range(count):
        if i % 2 and not fire_only:
            net = probe_spec(rng, i, widths, rng.choice(sides))
        else:
            net = fire_probe_spec(rng, i, rng.choice(fire_sides))
        forward_at = forward_maker(build(net), net.input, fmt, runtime)
        batch1 = [k for k in spec_kernels(net, 1) if k.kind not in skip]
        for batch in (1, large_batch) if large_batch and i % 4 == 0 else (1,):
            kernels = batch1 if batch == 1 else [k for k in spec_kernels(net, batch) if k.kind not in skip]
            if batch == 1 or not too_slow(kernels):
                probes.append(Probe(forward_at(batch), kernels, batch, batch1))
    return probes


def fit_probes(
    probes: Sequence[Probe],
    seconds: Sequence[float],
    busy: Callable[[Kernel], float],
    single_us: Mapping[str, float],
    fit_scale: bool,
    joint: bool = False,
    per_kernel: bool = True,
    cold: bool = False,
) -> ContextFit:
    """What kernels cost in the timed probe networks, per call and per image, beyond the roofline
    time ``busy`` predicts (:func:`archsearch.hardware.fitting.fit_context_overheads`;
    ``fit_scale``: and a scale on it; ``joint``: all fitted together; ``per_kernel``: a fixed
    cost per kernel beside the multiple of its single-op cost; ``cold``: a cost once a call in
    proportion to the kernels' roofline time at batch 1)."""
    counts = [[sum(k.kind == kind for k in p.kernels) for kind in KERNEL_KINDS] for p in probes]
    busy_s = [sum(busy(k) for k in p.kernels) for p in probes]
    busy1_s = np.array([sum(busy(k) for k in p.batch1) for p in probes]) if cold else None
    return fit_context_overheads(
        np.array(counts, dtype=float),
        single_us,
        np.array(busy_s),
        np.array(seconds),
        fit_scale,
        np.array([p.batch for p in probes]),
        joint,
        per_kernel,
        busy1_s,
    )


#: The smallest roofline scale a calibration accepts: networks 20x faster than their kernels'
#: micro-benchmarked rates allow are timing noise, not hardware.
MIN_BUSY_SCALE = 0.05
#: The streaming rate of a kernel a runtime fuses away: its time is nil next to anything else.
FUSED_GBS = 1e6


def in_networks(
    roofline: HardwareProfile, context: ContextFit, fused: tuple[str, ...]
) -> tuple[HardwareProfile, ContextFit]:
    """The micro-benchmarks' roofline as networks run it: peaks, streaming rates and measured
    GEMM rates divided by the fitted scale, each kernel's cost per image and cold start, and
    the kernels the runtime fuses away free (no overhead, no streaming time)."""
    scale = context.busy_scale
    if scale < MIN_BUSY_SCALE:
        # A fit that puts (almost) no time on the roofline: the timings were noise, which a busy
        # machine makes; the profile it would give prices every kernel at nothing.
        raise ArchsearchError(
            f"calibration failed: the probe networks' times fit a roofline scale of {scale:g}, i.e. "
            "no time spent computing or moving data; the machine was too busy to time kernels, "
            "so run python -m archsearch.calibrate (or the search with hardware=auto) when it is idle."
        )
    rates = {k: v / scale for k, v in roofline.bandwidths.items()}
    scaled = dataclasses.replace(
        roofline,
        peak_gflops=roofline.peak_gflops / scale,
        bandwidth_gbs=roofline.bandwidth_gbs / scale,
        peaks={k: round(v / scale, 2) for k, v in roofline.peaks.items()},
        bandwidths={k: round(v, 2) for k, v in {**rates, **dict.fromkeys(fused, FUSED_GBS)}.items()},
        # The fit scaled the whole roofline time, GEMMs' measured rates included.
        gemm_rates={
            k: [[*r[:3], round(r[3] / scale, 3), *r[4:]] for r in rows]
            for k, rows in roofline.gemm_rates.items()
        },
        per_image_us={k: 0.0 if k in fused else context.per_image_us for k in KERNEL_KINDS},
        cold_start=round(context.cold_start / scale, 4),  # of the scaled roofline time
        # A line's times grow with the scale as its rate falls.
        gemm_lines={
            k: [
                [
                    t,
                    b,
                    round(f * scale, 3),
                    round(p * scale, 4),
                    round(g / scale, 3),
                    *(round(o / scale, 3) for o in operand),  # operand_gbs, where the row has it
                ]
                for t, b, f, p, g, *operand in rows
            ]
            for k, rows in roofline.gemm_lines.items()
        },
    )
    overheads = {k: 0.0 if k in fused else v for k, v in context.overheads_us.items()}
    return scaled, dataclasses.replace(context, overheads_us=overheads)
