"""The ops that merge several inputs: ``add`` (a bypass, optionally projected) and ``concat``.

Builders import torch when called.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from archsearch.errors import SpecError
from archsearch.net.kernels import Kernel, OpCost
from archsearch.net.nodes import AddNode, ConcatNode, Shape
from archsearch.net.ops_conv import conv_layer_kernels

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "add_cost",
    "add_kernels",
    "add_shape",
    "build_add",
    "build_concat",
    "concat_kernels",
    "concat_shape",
]


def add_shape(node: AddNode, in_shapes: Sequence[Shape], num_classes: int, where: str) -> Shape:
    """The last input's shape; others must match it, or only its spatial size when projected."""
    target = in_shapes[-1]
    for src_shape, src in zip(in_shapes, node.inputs or (), strict=False):
        if src_shape == target:
            continue
        same_spatial = len(src_shape) == len(target) == 3 and src_shape[1:] == target[1:]
        if node.project and same_spatial:
            continue
        hint = "" if node.project else " (set 'project: true' for a 1x1 projection)"
        raise SpecError(
            f"{where} field 'inputs' adds {src!r} of shape {list(src_shape)} to shape "
            f"{list(target)}; shapes must match{hint if same_spatial else ''}."
        )
    return target


def _projected(node: AddNode, shape: Shape, out: Shape) -> bool:
    return node.project and shape[0] != out[0]


def add_cost(node: AddNode, in_shapes: Sequence[Shape], out: Shape, batch: int) -> OpCost:
    """Inputs read, the sum written; each 1x1 projection adds weights and writes and re-reads its output."""
    out_elems = batch * math.prod(out)
    params, macs, moved = 0, 0, out_elems
    for shape in in_shapes:
        moved += batch * math.prod(shape)
        if _projected(node, shape, out):
            params += shape[0] * out[0] + out[0]
            macs += math.prod(out) * shape[0]
            moved += 2 * out_elems
    return OpCost(params, macs, moved + params, "conv1x1" if macs else "elementwise")


def add_kernels(node: AddNode, in_shapes: Sequence[Shape], out: Shape, batch: int) -> list[Kernel]:
    """The 1x1 projections, then one add per input after the first."""
    pixels = batch * math.prod(out[1:])
    kernels: list[Kernel] = []
    for shape in in_shapes:
        if _projected(node, shape, out):
            elems = batch * math.prod(shape)
            kernels += conv_layer_kernels(shape[0], out[0], 1, 1, elems, pixels, False, "none")
    kernels += [Kernel("add", bytes=3 * batch * math.prod(out)) for _ in in_shapes[1:]]
    return kernels


def build_add(node: AddNode, in_shapes: Sequence[Shape], out: Shape) -> nn.Module:
    """The sum, with a 1x1 conv on each input to project."""
    from archsearch.net.layers import ProjectedAdd

    return ProjectedAdd([s[0] for s in in_shapes], out[0], node.project)


def concat_shape(node: ConcatNode, in_shapes: Sequence[Shape], num_classes: int, where: str) -> Shape:
    """Channels add up; every input must have the first one's spatial size."""
    first = in_shapes[0]
    if any(len(s) != len(first) or s[1:] != first[1:] for s in in_shapes):
        raise SpecError(
            f"{where} field 'inputs' has shapes {[list(s) for s in in_shapes]}; "
            "concat needs equal spatial sizes."
        )
    return (sum(s[0] for s in in_shapes), *first[1:])


def concat_kernels(node: ConcatNode, in_shapes: Sequence[Shape], out: Shape, batch: int) -> list[Kernel]:
    """One copy: ``torch.cat`` reads the inputs and writes the output."""
    return [Kernel("concat", bytes=2 * batch * math.prod(out))]


def build_concat(node: ConcatNode, in_shapes: Sequence[Shape], out: Shape) -> nn.Module:
    """Concatenation along the channel axis."""
    from archsearch.net.layers import Concat

    return Concat()
