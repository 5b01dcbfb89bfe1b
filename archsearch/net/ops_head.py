"""The classifier-head ops' rules: ``flatten``, ``dropout`` and ``linear``.

Builders import torch when called.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from archsearch.errors import SpecError
from archsearch.net.kernels import Kernel, OpCost
from archsearch.net.nodes import DropoutNode, FlattenNode, LinearNode, Node, Shape, resolve_width
from archsearch.net.shapes import require_positive

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "build_dropout",
    "build_flatten",
    "build_linear",
    "dropout_shape",
    "flatten_shape",
    "identity_cost",
    "identity_kernels",
    "linear_cost",
    "linear_kernels",
    "linear_shape",
]


def identity_cost(node: Node, in_shapes: Sequence[Shape], out: Shape, batch: int) -> OpCost:
    """Dropout (the identity at inference) and flatten (a view) move nothing."""
    return OpCost(0, 0, 0, "elementwise")


def identity_kernels(node: Node, in_shapes: Sequence[Shape], out: Shape, batch: int) -> list[Kernel]:
    """No work, but eager mode still pays the op's dispatch."""
    return [Kernel("identity")]


def flatten_shape(node: FlattenNode, in_shapes: Sequence[Shape], num_classes: int, where: str) -> Shape:
    """Every input element in one flat vector."""
    return (math.prod(in_shapes[0]),)


def build_flatten(node: FlattenNode, in_shapes: Sequence[Shape], out: Shape) -> nn.Module:
    """A view keeping the batch axis."""
    from torch import nn

    return nn.Flatten(1)


def dropout_shape(node: DropoutNode, in_shapes: Sequence[Shape], num_classes: int, where: str) -> Shape:
    """The input's shape; ``p`` must be a probability below 1."""
    if not 0.0 <= node.p < 1.0:
        raise SpecError(f"{where} field 'p' must be in [0, 1), got {node.p}.")
    return in_shapes[0]


def build_dropout(node: DropoutNode, in_shapes: Sequence[Shape], out: Shape) -> nn.Module:
    """Dropout with the node's ``p`` (the identity in eval mode)."""
    from torch import nn

    return nn.Dropout(node.p)


def linear_shape(node: LinearNode, in_shapes: Sequence[Shape], num_classes: int, where: str) -> Shape:
    """``out`` features from a flat input."""
    if len(in_shapes[0]) != 1:
        raise SpecError(
            f"{where} (op 'linear') needs a flat input, got {list(in_shapes[0])}; "
            "put a flatten or global_avgpool node before it."
        )
    out = resolve_width(node.out, num_classes)
    require_positive(where, "out", out)
    return (out,)


def linear_cost(node: LinearNode, in_shapes: Sequence[Shape], out: Shape, batch: int) -> OpCost:
    """Weights read once, the input read and the output written."""
    fin = in_shapes[0][0]
    params = fin * out[0] + (out[0] if node.bias else 0)
    return OpCost(params, fin * out[0], params + batch * (fin + out[0]), "linear")


def linear_kernels(node: LinearNode, in_shapes: Sequence[Shape], out: Shape, batch: int) -> list[Kernel]:
    """The GEMM (weights, input and output streamed), then the unfused activation if any."""
    fin = in_shapes[0][0]
    out_elems = batch * out[0]
    kernels = [
        Kernel(
            "linear",
            flops=2 * batch * fin * out[0],
            bytes=fin * out[0] + batch * fin + out_elems,
            gemm=(out[0], batch, fin),
        )
    ]
    if node.act != "none":
        kernels.append(Kernel(node.act, bytes=2 * out_elems))
    return kernels


def build_linear(node: LinearNode, in_shapes: Sequence[Shape], out: Shape) -> nn.Module:
    """Linear, followed by the activation unless it is ``none``."""
    from torch import nn

    from archsearch.net.layers import make_activation

    linear = nn.Linear(in_shapes[0][0], out[0], bias=node.bias)
    return linear if node.act == "none" else nn.Sequential(linear, make_activation(node.act))
