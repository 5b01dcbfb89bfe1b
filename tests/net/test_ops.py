"""The op registry: every op's four rules agree with its module, and an op added there works everywhere."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from archsearch.errors import SpecError
from archsearch.hardware.profile import HardwareProfile
from archsearch.net.cost import analyze
from archsearch.net.kernels import KERNEL_KINDS, OP_CLASSES, Kernel, stream_cost
from archsearch.net.model import build, count_params
from archsearch.net.nodes import Node, Shape
from archsearch.net.ops import OPS, OpDef
from archsearch.net.spec import NetSpec, node_from_dict

# Tiny models on a shared 2-core machine run far faster without intra-op threading.
pytestmark = pytest.mark.usefixtures("one_thread")

#: One node of every registered op, with the input shapes it reads.
SAMPLES: dict[str, tuple[dict[str, Any], list[Shape]]] = {
    "conv": ({"out": 6, "kernel": 3, "stride": 2, "groups": 2, "bn": True}, [(4, 9, 9)]),
    "fire": ({"squeeze": 3, "expand": {1: 4, 3: 5}, "bn": True, "act": "gelu"}, [(6, 7, 7)]),
    "maxpool": ({"kernel": 3, "stride": 2, "ceil_mode": True}, [(4, 8, 8)]),
    "avgpool": ({"kernel": 2, "padding": 1}, [(4, 7, 7)]),
    "global_avgpool": ({}, [(4, 5, 5)]),
    "dropout": ({"p": 0.3}, [(4, 5, 5)]),
    "flatten": ({}, [(4, 3, 3)]),
    "linear": ({"out": 7, "act": "relu"}, [(12,)]),
    "add": ({"inputs": ["a", "b"], "project": True}, [(3, 5, 5), (4, 5, 5)]),
    "concat": ({"inputs": ["a", "b"]}, [(3, 5, 5), (4, 5, 5)]),
}


def test_every_registered_op_has_its_node_class_and_all_four_rules() -> None:
    assert set(SAMPLES) == set(OPS), "each registered op needs a sample here, so its rules get checked"
    for name, op in OPS.items():
        assert op.name == name == op.node.op
        assert issubclass(op.node, Node)
        assert all(callable(rule) for rule in (op.shape, op.cost, op.kernels, op.build))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_ops_shape_cost_and_kernels_rules_match_its_built_module(name: str) -> None:
    fields, in_shapes = SAMPLES[name]
    op = OPS[name]
    node = node_from_dict({"name": "n", "op": name, **fields})
    out = op.shape(node, in_shapes, 10, "node 'n'")
    batch = 2
    module = op.build(node, in_shapes, out).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = module(*(torch.randn(batch, *s) for s in in_shapes))
    cost = op.cost(node, in_shapes, out, batch)
    assert tuple(y.shape) == (batch, *out)
    assert cost.params == count_params(module)
    assert cost.macs == counter.get_total_flops() // 2 // batch
    assert cost.op_class in OP_CLASSES
    kernels = op.kernels(node, in_shapes, out, batch)
    assert kernels and all(k.kind in KERNEL_KINDS for k in kernels)
    assert sum(k.flops for k in kernels) == 2 * batch * cost.macs


@dataclass(frozen=True)
class ScaleNode(Node):
    """A toy op: multiply by a constant."""

    op: ClassVar[str] = "scale"
    factor: float = 2.0


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def scale_shape(node: ScaleNode, in_shapes: Sequence[Shape], num_classes: int, where: str) -> Shape:
    if node.factor == 0:
        raise SpecError(f"{where} field 'factor' must not be 0.")
    return in_shapes[0]


def scale_kernels(node: ScaleNode, in_shapes: Sequence[Shape], out: Shape, batch: int) -> list[Kernel]:
    # A multiply by a scalar streams like an add: read once, write once.
    return [Kernel("add", bytes=2 * batch * math.prod(out))]


def scale_build(node: ScaleNode, in_shapes: Sequence[Shape], out: Shape) -> nn.Module:
    return Scale(node.factor)


SCALE = OpDef(ScaleNode, scale_shape, stream_cost, scale_kernels, scale_build)

SCALED: dict[str, Any] = {
    "name": "scaled",
    "input": [3, 8, 8],
    "num_classes": 5,
    "nodes": [
        {"name": "conv", "op": "conv", "out": 4, "kernel": 3},
        {"name": "shrink", "op": "scale", "factor": 0.5},
        {"name": "head", "op": "conv", "out": "num_classes", "act": "none"},
        {"name": "gap", "op": "global_avgpool"},
    ],
}


def test_an_op_registered_in_ops_alone_validates_costs_and_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setitem(OPS, SCALE.name, SCALE)
        spec = NetSpec.from_dict(SCALED)
        assert NetSpec.from_yaml(spec.to_yaml()) == spec
        assert spec.validate()["shrink"] == (4, 8, 8)
        bad = {**SCALED, "nodes": [*SCALED["nodes"][:1], {"name": "shrink", "op": "scale", "factor": 0.0}]}
        with pytest.raises(SpecError, match=r"node 'shrink' field 'factor' must not be 0\."):
            NetSpec.from_dict(bad)

        report = analyze(spec, HardwareProfile("toy", peak_gflops=100.0, bandwidth_gbs=10.0), batch_size=2)
        shrink = next(n for n in report.nodes if n.name == "shrink")
        assert (shrink.params, shrink.macs, shrink.bytes) == (0, 0, 4 * 2 * (2 * 4 * 8 * 8))
        assert shrink.latency_s > 0

        net = build(spec).eval()
        x = torch.randn(2, 3, 8, 8)
        with torch.no_grad():
            expected = net.ops["gap"](net.ops["head"](0.5 * net.ops["conv"](x)))
            assert torch.allclose(net(x), expected)

    with pytest.raises(SpecError, match=r"field 'op' is 'scale', not an op"):
        NetSpec.from_dict(SCALED)


def test_specs_ops_and_costs_import_without_torch() -> None:
    code = (
        "import sys, archsearch.net.spec, archsearch.net.ops, archsearch.net.cost; "
        "print('torch' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"
