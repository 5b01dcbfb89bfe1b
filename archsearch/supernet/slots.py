"""Where each parameter of a candidate lives in the supernet: one slot per tensor, by op rule.

A candidate is a :class:`~archsearch.net.spec.NetSpec`; its module is the ordinary
:func:`~archsearch.net.model.build` of that spec. Every parameter of that module is a slice of a
*bank*, a tensor of the supernet named after the node and the parameter's role (``fire3.expand3.w``:
the 3x3 expand bank of node ``fire3``). Nodes are matched across candidates by name, which is
what the search spaces keep stable: a template space names Fire module ``i`` ``fire{i+2}`` at every
depth, and a graph space names nodes by their path.

Channel axes are sliced by *layout*: a channel axis is a run of segments, each the leading
channels of one producer's bank (``("fire2.e1", 24)``: the first 24 channels of fire2's 1x1
expand bank). A Fire module's output is its expand banks side by side, so the next module's input
weights are indexed per segment and channel ``j`` of the 3x3 bank meets the same input weights
whatever the 1x1 share of the candidate is (a plain leading slice would hand them to another
kernel's channels). Spatial kernel axes are centre-cropped (Once-for-All's elastic kernel), so a
3x3 stem shares the centre of the 5x5 bank.

No torch here: slots are plain data, and the plan over all candidates is computed before the
supernet is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from archsearch.net.nodes import (
    AddNode,
    ConcatNode,
    ConvNode,
    FireNode,
    FlattenNode,
    LinearNode,
    Node,
    Shape,
)
from archsearch.net.spec import NetSpec

__all__ = ["PASS_THROUGH", "Layout", "Slot", "Unshareable", "candidate_slots"]

#: A channel axis: (segment, channels) runs; a segment is the leading channels of one bank axis.
Layout = tuple[tuple[str, int], ...]

#: Ops with no parameters whose output channels are their input's.
PASS_THROUGH = ("maxpool", "avgpool", "global_avgpool", "dropout")


class Unshareable(Exception):
    """A node cannot take its parameters from a shared bank (an op with no slicing rule).

    Args:
        node: the node's name.
        reason: why, in a phrase.
    """

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"node {node!r} {reason}")
        self.node = node
        self.reason = reason


@dataclass(frozen=True)
class Slot:
    """One parameter of a candidate as a slice of a bank.

    Attributes:
        bank: the bank's name (``<node>.<role>``).
        role: ``weight`` (conv or linear), ``bias``, ``bn_weight`` or ``bn_bias``: how the bank
            is initialised.
        axes: the layout of each channel axis (dim 0, and dim 1 for a weight).
        kernel: the candidate's spatial kernel size (0 for no spatial axes); the bank holds the
            largest and the candidate takes its centre.
    """

    bank: str
    role: str
    axes: tuple[Layout, ...]
    kernel: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        """The candidate's tensor shape."""
        channels = tuple(sum(n for _, n in axis) for axis in self.axes)
        return channels + ((self.kernel, self.kernel) if self.kernel else ())


def _conv_slots(
    prefix: str, bank: str, out: Layout, inp: Layout, kernel: int, bias: bool, bn: bool
) -> dict[str, Slot]:
    """A ConvAct under ``prefix``: its conv at ``0``, its batch norm (if any) at ``1``."""
    conv = f"{prefix}0."
    slots = {f"{conv}weight": Slot(f"{bank}.w", "weight", (out, inp), kernel)}
    if bias:
        slots[f"{conv}bias"] = Slot(f"{bank}.b", "bias", (out,))
    if bn:
        slots[f"{prefix}1.weight"] = Slot(f"{bank}.bn_w", "bn_weight", (out,))
        slots[f"{prefix}1.bias"] = Slot(f"{bank}.bn_b", "bn_bias", (out,))
    return slots


def _flat(shape: Shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def node_slots(
    node: Node, inputs: Sequence[Layout], in_shapes: Sequence[Shape], out: Shape
) -> tuple[dict[str, Slot], Layout]:
    """The slots of one node's parameters (named as in its built module) and its output layout.

    Raises:
        Unshareable: the op has no slicing rule.
    """
    name = node.name
    if node.op in PASS_THROUGH:
        return {}, inputs[0]
    if isinstance(node, ConvNode):
        if node.groups != 1:
            raise Unshareable(
                name, f"is a grouped conv (groups {node.groups}), whose input slices do not align"
            )
        layout: Layout = ((name, out[0]),)
        return _conv_slots("", name, layout, inputs[0], node.kernel, node.bias, node.bn), layout
    if isinstance(node, FireNode):
        squeeze: Layout = ((f"{name}.s", node.squeeze),)
        slots = _conv_slots("squeeze.", f"{name}.squeeze", squeeze, inputs[0], 1, True, node.bn)
        parts: list[tuple[str, int]] = []
        for i, (k, ch) in enumerate(sorted(node.mix.items())):
            bank = (f"{name}.e{k}", ch)
            slots.update(_conv_slots(f"expand.{i}.", f"{name}.expand{k}", (bank,), squeeze, k, True, node.bn))
            parts.append(bank)
        return slots, tuple(parts)
    if isinstance(node, LinearNode):
        layout = ((name, out[0]),)
        prefix = "" if node.act == "none" else "0."
        slots = {f"{prefix}weight": Slot(f"{name}.w", "weight", (layout, inputs[0]))}
        if node.bias:
            slots[f"{prefix}bias"] = Slot(f"{name}.b", "bias", (layout,))
        return slots, layout
    if isinstance(node, FlattenNode):
        # Positions of a flattened map depend on its size; the linear layer after it slices plainly.
        return {}, ((f"{name}.flat", _flat(in_shapes[0])),)
    if isinstance(node, AddNode):
        layout = inputs[-1]
        slots = {}
        for i, (src, shape) in enumerate(zip(inputs, in_shapes, strict=True)):
            if node.project and shape[0] != out[0]:
                slots[f"proj.{i}.weight"] = Slot(f"{name}.proj{i}.w", "weight", (layout, src), 1)
                slots[f"proj.{i}.bias"] = Slot(f"{name}.proj{i}.b", "bias", (layout,))
        return slots, layout
    if isinstance(node, ConcatNode):
        return {}, tuple(seg for layout in inputs for seg in layout)
    raise Unshareable(name, f"has op {node.op!r}, which the supernet has no slicing rule for")


def candidate_slots(spec: NetSpec) -> dict[str, Slot]:
    """Every parameter of ``build(spec)`` (named as in its ``state_dict``) as a slot of a bank.

    Raises:
        Unshareable: a node's op has no slicing rule.
    """
    shapes: Mapping[str, Shape] = {"input": spec.input, **spec.validate()}
    layouts: dict[str, Layout] = {"input": (("input", spec.input[0]),)}
    sources = spec.input_names()
    out: dict[str, Slot] = {}
    for node in spec.nodes:
        srcs = sources[node.name]
        slots, layouts[node.name] = node_slots(
            node, [layouts[s] for s in srcs], [shapes[s] for s in srcs], shapes[node.name]
        )
        out.update({f"ops.{node.name}.{key}": slot for key, slot in slots.items()})
    return out
