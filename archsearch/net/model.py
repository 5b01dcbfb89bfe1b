"""build(spec) -> nn.Module: each node becomes the module its op's ``build`` rule makes."""

from __future__ import annotations

import torch
from torch import nn

from archsearch.net.ops import OPS
from archsearch.net.spec import NetSpec

__all__ = ["GraphNet", "build", "count_params"]


class GraphNet(nn.Module):
    """Runs a NetSpec's nodes in order, keeping each output only while a later node needs it."""

    def __init__(self, net: NetSpec) -> None:
        super().__init__()
        shapes = net.validate()
        shapes_in = {"input": net.input, **shapes}
        self.spec_hash = net.hash
        self.input_shape = net.input
        self.order = [n.name for n in net.nodes]
        self.sources = net.input_names()
        self.ops = nn.ModuleDict(
            {
                n.name: OPS[n.op].build(n, [shapes_in[s] for s in self.sources[n.name]], shapes[n.name])
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


def build(net: NetSpec) -> GraphNet:
    """Build the torch module for a validated spec (weights freshly initialised)."""
    return GraphNet(net)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
