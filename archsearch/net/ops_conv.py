"""The convolution ops' rules: ``conv`` (Conv2d, batch norm, activation) and SqueezeNet's ``fire``.

Builders import torch when called, so the rules can be costed without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from archsearch.errors import SpecError
from archsearch.net.kernels import Kernel, OpCost
from archsearch.net.nodes import ConvNode, FireNode, Shape, conv_padding, resolve_width
from archsearch.net.shapes import check_spatial, feature_map, out_size, require_positive

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "build_conv",
    "build_fire",
    "conv_cost",
    "conv_kernels",
    "conv_layer_kernels",
    "conv_params",
    "conv_shape",
    "fire_cost",
    "fire_kernels",
    "fire_shape",
]


def conv_params(cin: int, cout: int, k: int, groups: int, bias: bool, bn: bool) -> int:
    """Learnable parameters of a ``k x k`` conv, its bias and its batch norm's weight and bias."""
    return cout * (cin // groups) * k * k + (cout if bias else 0) + (2 * cout if bn else 0)


def conv_layer_kernels(
    cin: int, cout: int, kernel: int, groups: int, in_elems: int, pixels: int, bn: bool, act: str
) -> list[Kernel]:
    """A conv over ``pixels`` output positions (all images), then its unfused batch norm and activation."""
    k = (cin // groups) * kernel * kernel
    out_elems = cout * pixels
    kernels = [
        Kernel(
            "conv1x1" if kernel == 1 else "convkxk",
            flops=2 * out_elems * k,
            bytes=cout * k + in_elems + out_elems,
            gemm=(cout // groups, pixels, k),
            taps=kernel * kernel,
            groups=groups,
        )
    ]
    if bn:
        kernels.append(Kernel("batchnorm", bytes=2 * out_elems))
    if act != "none":
        kernels.append(Kernel(act, bytes=2 * out_elems))
    return kernels


def conv_shape(node: ConvNode, in_shapes: Sequence[Shape], num_classes: int, where: str) -> Shape:
    """The conv's output channels on the map its window arithmetic leaves."""
    c, h, w = feature_map(where, in_shapes[0], node.op)
    out = resolve_width(node.out, num_classes)
    require_positive(where, "out", out)
    for key in ("kernel", "stride", "dilation", "groups"):
        require_positive(where, key, getattr(node, key))
    if node.padding is None and node.kernel % 2 == 0:
        raise SpecError(f"{where} has even kernel {node.kernel}; set field 'padding' explicitly.")
    if node.padding is not None and node.padding < 0:
        raise SpecError(f"{where} field 'padding' must be >= 0, got {node.padding}.")
    if c % node.groups or out % node.groups:
        raise SpecError(
            f"{where} field 'groups' ({node.groups}) must divide input channels ({c}) and 'out' ({out})."
        )
    pad = conv_padding(node)
    oh = out_size(h, node.kernel, node.stride, pad, node.dilation, False)
    ow = out_size(w, node.kernel, node.stride, pad, node.dilation, False)
    check_spatial(where, oh, ow, h, w, "'kernel', 'stride', 'padding' or 'dilation'")
    return (out, oh, ow)


def conv_cost(node: ConvNode, in_shapes: Sequence[Shape], out: Shape, batch: int) -> OpCost:
    """Weights read once, the input read and the output written (batch norm and activation fused)."""
    cin = in_shapes[0][0]
    params = conv_params(cin, out[0], node.kernel, node.groups, node.bias, node.bn)
    macs = math.prod(out) * (cin // node.groups) * node.kernel * node.kernel
    moved = params + batch * (math.prod(in_shapes[0]) + math.prod(out))
    return OpCost(params, macs, moved, "conv1x1" if node.kernel == 1 else "convkxk")


def conv_kernels(node: ConvNode, in_shapes: Sequence[Shape], out: Shape, batch: int) -> list[Kernel]:
    """The conv, then its unfused batch norm and activation."""
    in_elems = batch * math.prod(in_shapes[0])
    pixels = batch * math.prod(out[1:])
    return conv_layer_kernels(
        in_shapes[0][0], out[0], node.kernel, node.groups, in_elems, pixels, node.bn, node.act
    )


def build_conv(node: ConvNode, in_shapes: Sequence[Shape], out: Shape) -> nn.Module:
    """Conv2d, batch norm if asked, activation."""
    from archsearch.net.layers import ConvAct

    return ConvAct(
        in_shapes[0][0],
        out[0],
        node.kernel,
        node.stride,
        conv_padding(node),
        node.dilation,
        node.groups,
        node.bias,
        node.bn,
        node.act,
    )


def fire_shape(node: FireNode, in_shapes: Sequence[Shape], num_classes: int, where: str) -> Shape:
    """The expand channels added up, on the input's map; squeeze narrower than that."""
    _, h, w = feature_map(where, in_shapes[0], node.op)
    require_positive(where, "squeeze", node.squeeze)
    if not node.expand:
        raise SpecError(
            f"{where} needs field 'expand', mapping kernel size to channels, e.g. {{1: 64, 3: 64}}."
        )
    for k, ch in node.expand:
        if k < 1 or k % 2 == 0:
            raise SpecError(
                f"{where} field 'expand' has kernel {k}; expand kernels must be odd and positive."
            )
        require_positive(where, f"expand[{k}]", ch)
    total = sum(ch for _, ch in node.expand)
    if node.squeeze >= total:
        raise SpecError(
            f"{where} field 'squeeze' ({node.squeeze}) must be smaller than the total "
            f"expand channels ({total}), the Fire module rule."
        )
    return (total, h, w)


def fire_cost(node: FireNode, in_shapes: Sequence[Shape], out: Shape, batch: int) -> OpCost:
    """Squeeze and expand convs; the squeeze output is read by every expand branch."""
    cin, h, w = in_shapes[0]
    s = node.squeeze
    params = conv_params(cin, s, 1, 1, True, node.bn)
    macs = s * h * w * cin
    for k, ch in node.expand:
        params += conv_params(s, ch, k, 1, True, node.bn)
        macs += ch * h * w * s * k * k
    moved = (
        params
        + batch * cin * h * w
        + batch * s * h * w * (1 + len(node.expand))  # written once, read by each branch
        + 3 * batch * math.prod(out)  # branches write, concat reads and writes
    )
    has_kxk = any(k > 1 for k, _ in node.expand)
    return OpCost(params, macs, moved, "convkxk" if has_kxk else "conv1x1")


def fire_kernels(node: FireNode, in_shapes: Sequence[Shape], out: Shape, batch: int) -> list[Kernel]:
    """Squeeze conv, each expand conv (each with batch norm and activation), then the concatenation."""
    # torch.cat copies even a single branch, so a Fire module always ends in a concatenation.
    pixels = batch * math.prod(out[1:])
    s = node.squeeze
    in_elems = batch * math.prod(in_shapes[0])
    kernels = conv_layer_kernels(in_shapes[0][0], s, 1, 1, in_elems, pixels, node.bn, node.act)
    for k, ch in node.expand:
        kernels += conv_layer_kernels(s, ch, k, 1, s * pixels, pixels, node.bn, node.act)
    kernels.append(Kernel("concat", bytes=2 * batch * math.prod(out)))
    return kernels


def build_fire(node: FireNode, in_shapes: Sequence[Shape], out: Shape) -> nn.Module:
    """The Fire module with the node's kernel mix."""
    from archsearch.net.layers import Fire

    return Fire(in_shapes[0][0], node.squeeze, node.mix, node.bn, node.act)
