"""The node types of a NetSpec: one frozen dataclass per op, plain data with no behaviour.

What each op *does* (its output shape, cost, kernels and torch module) lives in its
registry entry, :data:`archsearch.net.ops.OPS`, keyed by the node class's ``op``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, ClassVar

__all__ = [
    "ACTIVATIONS",
    "NUM_CLASSES",
    "AddNode",
    "AvgPoolNode",
    "ConcatNode",
    "ConvNode",
    "DropoutNode",
    "FireNode",
    "FlattenNode",
    "GlobalAvgPoolNode",
    "LinearNode",
    "MaxPoolNode",
    "Node",
    "PoolNode",
    "Shape",
    "Width",
    "conv_padding",
    "pool_stride",
    "resolve_width",
]

NUM_CLASSES = "num_classes"
ACTIVATIONS = ("relu", "relu6", "gelu", "silu", "none")

#: (C, H, W) for feature maps, (F,) for flat vectors.
Shape = tuple[int, ...]
#: An output width: a channel count, or ``"num_classes"`` (the spec's class count).
Width = int | str


def resolve_width(width: Width, num_classes: int) -> int:
    """A declared width as a number, ``"num_classes"`` taken as ``num_classes``."""
    return num_classes if width == NUM_CLASSES else int(width)


@dataclass(frozen=True)
class Node:
    """Fields every node has. Subclasses add their op's fields; ``op`` is their registry key."""

    op: ClassVar[str] = ""
    name: str
    inputs: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with only non-default fields, ``name`` and ``op`` first."""
        out: dict[str, Any] = {"name": self.name, "op": self.op}
        for f in fields(self):
            if f.name == "name":
                continue
            value = getattr(self, f.name)
            default = f.default if f.default is not dataclasses.MISSING else None
            if value == default:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def canonical_dict(self) -> dict[str, Any]:
        """``to_dict`` less fields spelled out at the value they would default to (for hashing)."""
        return self.to_dict()


@dataclass(frozen=True)
class ConvNode(Node):
    """Conv2d, optionally followed by batch norm and an activation.

    ``padding`` defaults to ``dilation * (kernel - 1) // 2`` ("same" at stride 1) for odd
    kernels; an even kernel must give it explicitly.
    """

    op: ClassVar[str] = "conv"
    out: Width = 0
    kernel: int = 1
    stride: int = 1
    padding: int | None = None
    dilation: int = 1
    groups: int = 1
    bias: bool = True
    bn: bool = False
    act: str = "relu"

    def canonical_dict(self) -> dict[str, Any]:
        raw = self.to_dict()
        if self.kernel % 2 and raw.get("padding") == _same_padding(self):
            del raw["padding"]
        return raw


def conv_padding(node: ConvNode) -> int:
    """The padding a conv node uses (explicit, or "same" for odd kernels)."""
    return node.padding if node.padding is not None else _same_padding(node)


def _same_padding(node: ConvNode) -> int:
    return node.dilation * (node.kernel - 1) // 2


@dataclass(frozen=True)
class FireNode(Node):
    """SqueezeNet Fire module: 1x1 squeeze, then parallel expand convs concatenated.

    ``expand`` is the kernel mix: kernel size -> output channels, e.g. ``{1: 64, 3: 64}``.
    Expand outputs are concatenated in ascending kernel order.
    """

    op: ClassVar[str] = "fire"
    squeeze: int = 0
    expand: tuple[tuple[int, int], ...] = ()
    bn: bool = False
    act: str = "relu"

    def __post_init__(self) -> None:
        # Stored as sorted (kernel, channels) pairs so equality and hashing ignore key order.
        mix = dict(self.expand)
        object.__setattr__(self, "expand", tuple(sorted((int(k), int(v)) for k, v in mix.items())))

    @property
    def mix(self) -> dict[int, int]:
        """The kernel mix as a dict, kernel size -> channels, ascending."""
        return dict(self.expand)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if "expand" in out:
            # Written as the mapping a YAML file declares, not as the stored pairs.
            out["expand"] = self.mix
        return out


@dataclass(frozen=True)
class PoolNode(Node):
    """Max or average pooling; ``stride`` defaults to ``kernel``."""

    op: ClassVar[str] = "maxpool"
    kernel: int = 2
    stride: int | None = None
    padding: int = 0
    ceil_mode: bool = False

    def canonical_dict(self) -> dict[str, Any]:
        raw = self.to_dict()
        if raw.get("stride") == self.kernel:
            del raw["stride"]
        return raw


def pool_stride(node: PoolNode) -> int:
    """The stride a pool node uses (explicit, or its kernel)."""
    return node.stride if node.stride is not None else node.kernel


@dataclass(frozen=True)
class MaxPoolNode(PoolNode):
    """Max pooling."""

    op: ClassVar[str] = "maxpool"


@dataclass(frozen=True)
class AvgPoolNode(PoolNode):
    """Average pooling (padding counts as zeros, as torch's default)."""

    op: ClassVar[str] = "avgpool"


@dataclass(frozen=True)
class GlobalAvgPoolNode(Node):
    """Average over all spatial positions; the output is a flat (C,) vector."""

    op: ClassVar[str] = "global_avgpool"


@dataclass(frozen=True)
class DropoutNode(Node):
    """Dropout with probability ``p`` (the identity at inference)."""

    op: ClassVar[str] = "dropout"
    p: float = 0.5


@dataclass(frozen=True)
class FlattenNode(Node):
    """Flattens a feature map to a (C * H * W,) vector."""

    op: ClassVar[str] = "flatten"


@dataclass(frozen=True)
class LinearNode(Node):
    """Fully connected layer to ``out`` features, then an activation (none by default)."""

    op: ClassVar[str] = "linear"
    out: Width = 0
    bias: bool = True
    act: str = "none"


@dataclass(frozen=True)
class AddNode(Node):
    """Elementwise sum (bypass). Output channels are those of the last input.

    With ``project: true`` every other input whose channel count differs passes through a
    1x1 conv (with bias) first: the SqueezeNet paper's "complex bypass".
    """

    op: ClassVar[str] = "add"
    project: bool = False


@dataclass(frozen=True)
class ConcatNode(Node):
    """Channel-wise concatenation of inputs with equal spatial size."""

    op: ClassVar[str] = "concat"
