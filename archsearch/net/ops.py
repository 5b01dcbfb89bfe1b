"""The op registry: everything the framework knows about an op, in one entry per op name.

An op is a node class (its fields, :mod:`archsearch.net.nodes`) and four rules:

- ``shape(node, in_shapes, num_classes, where) -> Shape``: the output shape, per image;
  raises :class:`~archsearch.errors.SpecError` starting with ``where`` for a bad field.
- ``cost(node, in_shapes, out, batch) -> OpCost``: params, MACs per image, elements moved
  for the batch and op class (conventions in :mod:`archsearch.net.cost`).
- ``kernels(node, in_shapes, out, batch) -> list[Kernel]``: the kernels eager PyTorch
  launches for the node, FLOPs and elements moved for the whole batch.
- ``build(node, in_shapes, out) -> nn.Module``: the torch module, called with one tensor
  per input.

Spec parsing and validation (:mod:`archsearch.net.spec`), cost analysis
(:mod:`archsearch.net.cost`) and the builder (:mod:`archsearch.net.model`) look ops up
here, so adding an op means adding its entry to :data:`OPS` and nothing else. Importing
this module does not import torch: builders import it when called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from archsearch.net.kernels import Kernel, OpCost, stream_cost
from archsearch.net.nodes import (
    AddNode,
    AvgPoolNode,
    ConcatNode,
    ConvNode,
    DropoutNode,
    FireNode,
    FlattenNode,
    GlobalAvgPoolNode,
    LinearNode,
    MaxPoolNode,
    Node,
    Shape,
)
from archsearch.net.ops_conv import (
    build_conv,
    build_fire,
    conv_cost,
    conv_kernels,
    conv_shape,
    fire_cost,
    fire_kernels,
    fire_shape,
)
from archsearch.net.ops_head import (
    build_dropout,
    build_flatten,
    build_linear,
    dropout_shape,
    flatten_shape,
    identity_cost,
    identity_kernels,
    linear_cost,
    linear_kernels,
    linear_shape,
)
from archsearch.net.ops_merge import (
    add_cost,
    add_kernels,
    add_shape,
    build_add,
    build_concat,
    concat_kernels,
    concat_shape,
)
from archsearch.net.ops_pool import (
    build_avgpool,
    build_global_avgpool,
    build_maxpool,
    global_avgpool_shape,
    pool_kernels,
    pool_shape,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = ["OPS", "OpDef"]

N = TypeVar("N", bound=Node)


@dataclass(frozen=True)
class OpDef(Generic[N]):
    """One op: its node class and its four rules (see the module docstring for their signatures).

    Attributes:
        node: the node dataclass; its ``op`` is the op's name and registry key.
        shape: output shape rule, which also validates the node's fields.
        cost: analytic cost rule.
        kernels: latency-model kernels rule.
        build: torch module builder.
        multi_input: whether the node reads two or more inputs (else exactly one).
    """

    node: type[N]
    shape: Callable[[N, Sequence[Shape], int, str], Shape]
    cost: Callable[[N, Sequence[Shape], Shape, int], OpCost]
    kernels: Callable[[N, Sequence[Shape], Shape, int], list[Kernel]]
    build: Callable[[N, Sequence[Shape], Shape], nn.Module]
    multi_input: bool = False

    @property
    def name(self) -> str:
        """The op's name, as a spec's ``op:`` field spells it."""
        return self.node.op


#: Every op, by name. A plain dict: registering an op is ``OPS[op.name] = op``.
OPS: dict[str, OpDef[Any]] = {
    op.name: op
    for op in (
        OpDef(ConvNode, conv_shape, conv_cost, conv_kernels, build_conv),
        OpDef(FireNode, fire_shape, fire_cost, fire_kernels, build_fire),
        OpDef(MaxPoolNode, pool_shape, stream_cost, pool_kernels, build_maxpool),
        OpDef(AvgPoolNode, pool_shape, stream_cost, pool_kernels, build_avgpool),
        OpDef(GlobalAvgPoolNode, global_avgpool_shape, stream_cost, pool_kernels, build_global_avgpool),
        OpDef(DropoutNode, dropout_shape, identity_cost, identity_kernels, build_dropout),
        OpDef(FlattenNode, flatten_shape, identity_cost, identity_kernels, build_flatten),
        OpDef(LinearNode, linear_shape, linear_cost, linear_kernels, build_linear),
        OpDef(AddNode, add_shape, add_cost, add_kernels, build_add, multi_input=True),
        OpDef(ConcatNode, concat_shape, stream_cost, concat_kernels, build_concat, multi_input=True),
    )
}
