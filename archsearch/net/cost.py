"""Analytic cost of a NetSpec: parameters, MACs, bytes moved and a roofline latency estimate.

No forward pass and no torch: everything is computed from the inferred shapes, so costing
a candidate takes microseconds and happens before a trial decides whether to train it.

Conventions (what the numbers mean):
- ``params`` counts learnable parameters as ``sum(p.numel())`` does (batch-norm weight and
  bias included, running statistics not).
- ``macs`` counts multiply-accumulates of convolutions and linear layers per image, the
  convention of torchvision's published "GFLOPS" column and of
  ``torch.utils.flop_counter`` (which reports 2 x MACs). Bias adds, batch norm,
  activations, pooling and sums are not counted as MACs; they are counted as bytes.
- ``bytes`` is the memory traffic of one inference batch as eager PyTorch runs it:
  every weight read once, every op's inputs read and outputs written, with batch norm and
  activation fused into their conv. Inside a Fire module the squeeze output is written
  once and read by each expand branch, and the concatenation reads the branch outputs
  and writes the module output. A sum's 1x1 projections write and re-read their output.
  Dropout (identity at inference) and flatten (a view) move nothing.
- ``model_bytes`` (the deployed weights, batch norm folded, plus graph overhead) and
  ``peak_activation_bytes`` (the largest set of node outputs alive at once) are defined in
  :mod:`archsearch.net.deploy`.
Each op's own rules (:data:`archsearch.net.ops.OPS`) give its costs and kernels; this module
sums them over a network.

- ``latency_est_ms`` is a roofline estimate of eager PyTorch inference. Each node is split
  into the kernels eager mode launches for it (a Fire module: squeeze conv, batch norm and
  activation, the same per expand branch, then the concatenation), and each kernel costs
  ``overhead + max(flops / (peak * efficiency), kernel_bytes / bandwidth)`` with the fixed
  overhead, peak, bandwidth and small-GEMM efficiency of its kind from the hardware profile
  (see :func:`node_kernels` and
  :meth:`archsearch.hardware.profile.HardwareProfile.kernel_seconds`), plus, with a profile's
  ``cold_start``, a fraction of each kernel's roofline time at batch 1 whatever the batch
  (:meth:`~archsearch.hardware.profile.HardwareProfile.cold_seconds`). ``kernel_bytes``
  differs from ``bytes`` on purpose: eager mode does not fuse batch norm and activation, so
  each re-reads and re-writes the conv output. :func:`analyze` takes any
  :class:`~archsearch.net.latency_model.LatencyModel` (the hardware profile is the one the
  package ships), so this module imports nothing from :mod:`archsearch.hardware`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from archsearch.errors import ConfigError
from archsearch.net.deploy import model_bytes, peak_activation_bytes
from archsearch.net.kernels import Kernel
from archsearch.net.latency_model import LatencyModel
from archsearch.net.nodes import Node, Shape
from archsearch.net.ops import OPS
from archsearch.net.spec import NetSpec

__all__ = ["COST_METRICS", "CostReport", "NodeCost", "analyze", "node_kernels"]

#: Metric names a sweep may use as an objective or a constraint (all minimised).
COST_METRICS = (
    "params",
    "macs",
    "flops",
    "bytes",
    "activations",
    "latency_est_ms",
    "model_bytes",
    "peak_activation_bytes",
)


@dataclass(frozen=True)
class NodeCost:
    """Cost of one node for one batch (``macs`` and ``activations`` are per image)."""

    name: str
    op: str
    out_shape: tuple[int, ...]
    params: int
    macs: int
    activations: int
    bytes: int
    op_class: str
    latency_s: float = 0.0
    compute_s: float = 0.0
    memory_s: float = 0.0
    batch_factor: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def intensity(self) -> float:
        """Arithmetic intensity of the batch: FLOPs per byte moved."""
        return 0.0 if self.bytes == 0 else self.flops * self.batch_factor / self.bytes

    @property
    def bound(self) -> str:
        if self.bytes == 0 and self.macs == 0:
            return "-"
        return "compute" if self.compute_s >= self.memory_s else "memory"


@dataclass(frozen=True)
class CostReport:
    """Per-node costs and totals of a network at one batch size and element width."""

    spec_name: str
    spec_hash: str
    batch_size: int
    bytes_per_element: int
    hardware: str
    nodes: tuple[NodeCost, ...]
    #: Deployed weights plus graph overhead, at ``bytes_per_element`` (:mod:`archsearch.net.deploy`).
    model_bytes: int = 0
    #: Largest set of node outputs alive at once, for the batch (:mod:`archsearch.net.deploy`).
    peak_activation_bytes: int = 0

    @property
    def params(self) -> int:
        return sum(n.params for n in self.nodes)

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def activations(self) -> int:
        return sum(n.activations for n in self.nodes)

    @property
    def bytes(self) -> int:
        return sum(n.bytes for n in self.nodes)

    @property
    def latency_est_ms(self) -> float:
        return 1e3 * sum(n.latency_s for n in self.nodes)

    @property
    def intensity(self) -> float:
        return self.flops * self.batch_size / self.bytes if self.bytes else 0.0

    def metrics(self) -> dict[str, float]:
        """The scalar metrics a sweep can optimise or bound, by name (see ``COST_METRICS``)."""
        return {
            "params": float(self.params),
            "macs": float(self.macs),
            "flops": float(self.flops),
            "bytes": float(self.bytes),
            "activations": float(self.activations),
            "latency_est_ms": self.latency_est_ms,
            "model_bytes": float(self.model_bytes),
            "peak_activation_bytes": float(self.peak_activation_bytes),
        }


def node_kernels(
    node: Node, in_shapes: Sequence[Shape], out: Shape, batch_size: int = 1, bytes_per_element: int = 4
) -> tuple[Kernel, ...]:
    """The kernels eager PyTorch runs for ``node`` (as ``archsearch.net.model.build`` makes it).

    Its op's ``kernels`` rule, with bytes scaled from elements to the element width.

    Batch norm and activations are separate kernels that read and write the conv output; a
    Fire module always ends in a concatenation (``torch.cat`` copies even a single branch);
    a sum runs its 1x1 projections, then one add per extra input; dropout (eval mode) and
    flatten (a view) cost only their dispatch.

    Args:
        node: the node.
        in_shapes: shapes of its inputs, per image.
        out: its output shape, per image.
        batch_size: images per batch.
        bytes_per_element: element width.

    Returns:
        The kernels in launch order, with FLOPs and bytes for the whole batch.
    """
    kernels = OPS[node.op].kernels(node, in_shapes, out, batch_size)
    return tuple(dataclasses.replace(k, bytes=bytes_per_element * k.bytes, batch=batch_size) for k in kernels)


def analyze(
    net: NetSpec,
    hardware: LatencyModel | None = None,
    batch_size: int = 1,
    bytes_per_element: int = 4,
) -> CostReport:
    """Cost every node of a spec, with a roofline latency estimate if a profile is given.

    Args:
        net: a NetSpec (validated here; raises SpecError if invalid).
        hardware: what prices each kernel for the latency estimate (a
            :class:`~archsearch.hardware.profile.HardwareProfile` or any other
            :class:`~archsearch.net.latency_model.LatencyModel`); without one, latencies are zero.
        batch_size: images per inference batch (scales bytes of activations, not weights).
        bytes_per_element: 4 for fp32, 2 for fp16/bf16, 1 for int8.

    Returns:
        A CostReport with one NodeCost per node, in spec order.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    if bytes_per_element < 1:
        raise ConfigError(
            f"bytes_per_element must be >= 1 (4 fp32, 2 fp16, 1 int8), got {bytes_per_element}."
        )
    shapes = {"input": net.input, **net.validate()}
    sources = net.input_names()
    rows: list[NodeCost] = []
    for node in net.nodes:
        in_shapes = [shapes[s] for s in sources[node.name]]
        out = shapes[node.name]
        cost = OPS[node.op].cost(node, in_shapes, out, batch_size)
        compute_s = memory_s = latency = 0.0
        if hardware is not None:
            for kernel in node_kernels(node, in_shapes, out, batch_size, bytes_per_element):
                seconds, compute, memory = hardware.kernel_seconds(kernel)
                latency += seconds
                compute_s += compute
                memory_s += memory
            if hardware.cold_start:  # paid once a call, as the kernels' batch-1 time sets it
                batch1 = node_kernels(node, in_shapes, out, 1, bytes_per_element)
                latency += sum(hardware.cold_seconds(kernel) for kernel in batch1)
        rows.append(
            NodeCost(
                name=node.name,
                op=node.op,
                out_shape=out,
                params=cost.params,
                macs=cost.macs,
                activations=math.prod(out),
                bytes=bytes_per_element * cost.moved,
                op_class=cost.op_class,
                latency_s=latency,
                compute_s=compute_s,
                memory_s=memory_s,
                batch_factor=batch_size,
            )
        )
    return CostReport(
        spec_name=net.name,
        spec_hash=net.hash,
        batch_size=batch_size,
        bytes_per_element=bytes_per_element,
        hardware=hardware.name if hardware is not None else "",
        nodes=tuple(rows),
        model_bytes=model_bytes(net, bytes_per_element),
        peak_activation_bytes=peak_activation_bytes(net, batch_size, bytes_per_element),
    )
