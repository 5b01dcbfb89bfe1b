"""Random probe networks that show what each kernel costs inside a whole network.

A kernel amid other ops pays more than its hot-loop micro-benchmark shows (module calls, graph
glue, dispatch with cold caches). :func:`measure_context_overheads` times random networks
built by ``archsearch.net.model.build`` and fits that extra cost with
:func:`archsearch.hardware.fitting.fit_context_overheads`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from archsearch.errors import SpecError
from archsearch.hardware.fitting import ContextFit, fit_context_overheads
from archsearch.hardware.microbench import forward_maker, median_seconds, repeats_for
from archsearch.net.cost import node_kernels
from archsearch.net.kernels import KERNEL_KINDS, Kernel
from archsearch.net.model import build
from archsearch.net.spec import NetSpec

__all__ = ["RUNTIME_FUSED", "measure_context_overheads", "probe_spec", "spec_kernels"]

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


def spec_kernels(net: NetSpec, batch_size: int = 1) -> list[Kernel]:
    """Every kernel of a network, in launch order (``node_kernels`` over its nodes)."""
    shapes = {"input": net.input, **net.validate()}
    sources = net.input_names()
    kernels: list[Kernel] = []
    for node in net.nodes:
        kernels += node_kernels(node, [shapes[s] for s in sources[node.name]], shapes[node.name], batch_size)
    return kernels


def measure_context_overheads(
    count: int,
    seed: int,
    budget_s: float,
    busy: Callable[[Kernel], float],
    single_us: Mapping[str, float],
    fmt: torch.memory_format,
    widths: tuple[int, int] = (4, 64),
    sides: tuple[int, ...] = (7, 14, 28),
    large_batch: int = 0,
    runtime: str = "torch",
) -> ContextFit:
    """Time ``count`` random probe networks and fit what kernels cost in them.

    Each probe net (:func:`probe_spec`) is timed at batch 1, and every fourth one also at
    ``large_batch`` unless its roofline time there would eat more than its share of
    ``budget_s``: batch 1 shows the fixed costs, the large batch the roofline part, whose
    scale is fitted only then (``large_batch=0``: batch 1 only, the rates kept). Each timing
    takes 3 to 30 repeats, as ``budget_s`` shared by the timings allows.
    :func:`archsearch.hardware.fitting.fit_context_overheads` then fits the in-network overhead
    and the scale of the roofline time ``busy`` predicts for the kernels ``runtime`` runs
    (``onnxruntime``: without the ones it fuses away, :data:`RUNTIME_FUSED`).
    """
    rng = random.Random(seed)
    skip = RUNTIME_FUSED[runtime]
    share = budget_s / (count * 1.25)
    counts, busy_s, measured = [], [], []
    for i in range(count):
        net = probe_spec(rng, i, widths, rng.choice(sides))
        forward_at = forward_maker(build(net), net.input, fmt, runtime)
        for batch in (1, large_batch) if large_batch and i % 4 == 0 else (1,):
            kernels = [k for k in spec_kernels(net, batch) if k.kind not in skip]
            predicted = sum(busy(k) for k in kernels)
            if batch > 1 and predicted * 6 > share:
                continue  # too slow to time within the budget: batch 1 only
            forward = forward_at(batch)
            first = median_seconds(forward, 1, 2)
            measured.append(median_seconds(forward, repeats_for(first, share, 3, 30), 0))
            counts.append([sum(k.kind == kind for k in kernels) for kind in KERNEL_KINDS])
            busy_s.append(predicted)
    return fit_context_overheads(
        np.array(counts, dtype=float), single_us, np.array(busy_s), np.array(measured), bool(large_batch)
    )
