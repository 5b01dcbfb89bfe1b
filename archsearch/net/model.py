"""build(spec) -> nn.Module. The only place a NetSpec becomes torch code."""

from __future__ import annotations

import torch
from torch import nn

from archsearch.net import spec as S
from archsearch.net.layers import Concat, ConvAct, Fire, ProjectedAdd, make_activation

__all__ = ["GraphNet", "build", "count_params"]


def _make(node: S.Node, net: S.NetSpec, in_shapes: list[S.Shape], out_shape: S.Shape) -> nn.Module:
    if isinstance(node, S.ConvNode):
        return ConvAct(
            in_shapes[0][0],
            out_shape[0],
            node.kernel,
            node.stride,
            S.conv_padding(node),
            node.dilation,
            node.groups,
            node.bias,
            node.bn,
            node.act,
        )
    if isinstance(node, S.FireNode):
        return Fire(in_shapes[0][0], node.squeeze, node.mix, node.bn, node.act)
    if isinstance(node, S.MaxPoolNode):
        return nn.MaxPool2d(node.kernel, S.pool_stride(node), node.padding, ceil_mode=node.ceil_mode)
    if isinstance(node, S.AvgPoolNode):
        return nn.AvgPool2d(node.kernel, S.pool_stride(node), node.padding, ceil_mode=node.ceil_mode)
    if isinstance(node, S.GlobalAvgPoolNode):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    if isinstance(node, S.DropoutNode):
        return nn.Dropout(node.p)
    if isinstance(node, S.FlattenNode):
        return nn.Flatten(1)
    if isinstance(node, S.LinearNode):
        lin = nn.Linear(in_shapes[0][0], out_shape[0], bias=node.bias)
        return lin if node.act == "none" else nn.Sequential(lin, make_activation(node.act))
    if isinstance(node, S.AddNode):
        return ProjectedAdd([s[0] for s in in_shapes], out_shape[0], node.project)
    if isinstance(node, S.ConcatNode):
        return Concat()
    raise TypeError(f"no builder for op {node.op!r}")  # pragma: no cover


class GraphNet(nn.Module):
    """Runs a NetSpec's nodes in order, keeping each output only while a later node needs it."""

    def __init__(self, net: S.NetSpec) -> None:
        super().__init__()
        shapes = net.validate()
        shapes_in = {"input": net.input, **shapes}
        self.spec_hash = net.hash
        self.input_shape = net.input
        self.order = [n.name for n in net.nodes]
        self.sources = net.input_names()
        self.ops = nn.ModuleDict(
            {
                n.name: _make(n, net, [shapes_in[s] for s in self.sources[n.name]], shapes[n.name])
                for n in net.nodes
            }
        )
        last_use: dict[str, int] = {}
        for i, name in enumerate(self.order):
            for src in self.sources[name]:
                last_use[src] = i
        # After step i, these values are dead and can be freed early.
        self._free_after = [[s for s, last in last_use.items() if last == i] for i in range(len(self.order))]
        self._chain = all(
            self.sources[n] == (p,) for p, n in zip(["input", *self.order[:-1]], self.order, strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._chain:
            for name in self.order:
                x = self.ops[name](x)
            return x
        values: dict[str, torch.Tensor] = {"input": x}
        for i, name in enumerate(self.order):
            values[name] = self.ops[name](*(values[s] for s in self.sources[name]))
            for dead in self._free_after[i]:
                if dead != name:
                    values.pop(dead, None)
        return values[self.order[-1]]


def build(net: S.NetSpec) -> GraphNet:
    """Build the torch module for a validated spec (weights freshly initialised)."""
    return GraphNet(net)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
