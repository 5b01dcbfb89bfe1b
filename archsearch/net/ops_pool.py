"""The pooling ops' rules: ``maxpool``, ``avgpool`` and ``global_avgpool``.

Each runs one streaming kernel named after its op. Builders import torch when called.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from archsearch.errors import SpecError
from archsearch.net.kernels import Kernel
from archsearch.net.nodes import (
    AvgPoolNode,
    GlobalAvgPoolNode,
    MaxPoolNode,
    Node,
    PoolNode,
    Shape,
    pool_stride,
)
from archsearch.net.shapes import check_spatial, feature_map, out_size, require_positive

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "build_avgpool",
    "build_global_avgpool",
    "build_maxpool",
    "global_avgpool_shape",
    "pool_kernels",
    "pool_shape",
]


def pool_shape(node: PoolNode, in_shapes: Sequence[Shape], num_classes: int, where: str) -> Shape:
    """Windowed pooling keeps the channels and shrinks the map by ``kernel``/``stride``."""
    c, h, w = feature_map(where, in_shapes[0], node.op)
    require_positive(where, "kernel", node.kernel)
    stride = pool_stride(node)
    require_positive(where, "stride", stride)
    if node.padding < 0 or node.padding * 2 > node.kernel:
        raise SpecError(f"{where} field 'padding' must be between 0 and kernel/2, got {node.padding}.")
    oh = out_size(h, node.kernel, stride, node.padding, 1, node.ceil_mode)
    ow = out_size(w, node.kernel, stride, node.padding, 1, node.ceil_mode)
    check_spatial(where, oh, ow, h, w, "'kernel', 'stride' or 'padding'")
    return (c, oh, ow)


def global_avgpool_shape(
    node: GlobalAvgPoolNode, in_shapes: Sequence[Shape], num_classes: int, where: str
) -> Shape:
    """A (C, H, W) map becomes a flat (C,) vector."""
    c, _, _ = feature_map(where, in_shapes[0], node.op)
    return (c,)


def pool_kernels(node: Node, in_shapes: Sequence[Shape], out: Shape, batch: int) -> list[Kernel]:
    """One kernel of the op's own kind, streaming the input and the output."""
    return [Kernel(node.op, bytes=batch * (math.prod(in_shapes[0]) + math.prod(out)))]


def build_maxpool(node: MaxPoolNode, in_shapes: Sequence[Shape], out: Shape) -> nn.Module:
    """MaxPool2d with the node's window."""
    from torch import nn

    return nn.MaxPool2d(node.kernel, pool_stride(node), node.padding, ceil_mode=node.ceil_mode)


def build_avgpool(node: AvgPoolNode, in_shapes: Sequence[Shape], out: Shape) -> nn.Module:
    """AvgPool2d with the node's window."""
    from torch import nn

    return nn.AvgPool2d(node.kernel, pool_stride(node), node.padding, ceil_mode=node.ceil_mode)


def build_global_avgpool(node: GlobalAvgPoolNode, in_shapes: Sequence[Shape], out: Shape) -> nn.Module:
    """Adaptive average pooling to 1x1, flattened to (C,)."""
    from torch import nn

    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
