"""What the ops' cost rules report: a node's analytic :class:`OpCost` and the :class:`Kernel` s it runs.

:mod:`archsearch.net.cost` sums these over a network; a
:class:`~archsearch.net.latency_model.LatencyModel` (such as
:class:`archsearch.hardware.profile.HardwareProfile`) turns each Kernel into seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from archsearch.net.nodes import Node, Shape

__all__ = [
    "GEMM_KINDS",
    "KERNEL_KINDS",
    "OP_CLASSES",
    "Kernel",
    "OpCost",
    "op_class",
    "stream_cost",
]

#: Op classes with their own peak in a calibrated profile.
OP_CLASSES = ("conv1x1", "convkxk", "linear", "elementwise")

#: Kernel kinds of the latency model: the eager PyTorch kernels a node runs (see ``node_kernels``).
#: The first three are GEMM-like and share their op class's name; the rest are ``elementwise``.
KERNEL_KINDS = (
    "conv1x1",
    "convkxk",
    "linear",
    "batchnorm",
    "relu",
    "relu6",
    "gelu",
    "silu",
    "maxpool",
    "avgpool",
    "global_avgpool",
    "add",
    "concat",
    "identity",
)

#: Kernel kinds that are GEMMs (convolutions and linear layers), with FLOPs and an efficiency curve.
GEMM_KINDS = KERNEL_KINDS[:3]


def op_class(kind: str) -> str:
    """The op class a kernel kind takes its peak from (GEMM kinds are their own class)."""
    return kind if kind in OP_CLASSES else "elementwise"


@dataclass(frozen=True)
class Kernel:
    """One kernel eager PyTorch launches for a node, for the whole batch.

    Attributes:
        kind: one of ``KERNEL_KINDS``.
        flops: floating-point operations (2 x MACs for GEMM-like kinds, 0 for the rest).
        bytes: bytes the kernel reads plus writes (elements, in what the op rules return;
            :func:`archsearch.net.cost.node_kernels` scales them by the element width).
        gemm: (m, n, k) of the GEMM for GEMM-like kinds, else (0, 0, 0).
        batch: images in the batch it runs on (a profile's ``per_image_us`` scales with it).
        taps: a convolution's kernel area (9 for 3x3), else 1: ``gemm_lines`` are per area.
        groups: a convolution's groups (``gemm`` is one group's), else 1: whether a runtime
            runs it in a blocked layout depends on its channels per group.
    """

    kind: str
    flops: int = 0
    bytes: int = 0
    gemm: tuple[int, int, int] = (0, 0, 0)
    batch: int = 1
    taps: int = 1
    groups: int = 1


class OpCost(NamedTuple):
    """Analytic cost of one node (see :mod:`archsearch.net.cost` for the conventions).

    Attributes:
        params: learnable parameters.
        macs: multiply-accumulates per image.
        moved: elements read plus written for the whole batch, weights included.
        op_class: one of ``OP_CLASSES``.
    """

    params: int
    macs: int
    moved: int
    op_class: str


def stream_cost(node: Node, in_shapes: Sequence[Shape], out: Shape, batch: int) -> OpCost:
    """The cost rule of ops without weights or MACs: inputs read once, the output written once."""
    moved = batch * (sum(math.prod(s) for s in in_shapes) + math.prod(out))
    return OpCost(0, 0, moved, "elementwise")
