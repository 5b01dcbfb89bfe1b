"""Networks as plain data: a NetSpec is a graph of nodes, validated before anything is built.

This module has no torch import on purpose: specs are sampled, hashed, costed and written
to YAML without ever constructing a model.

A node's input is the previous node unless ``inputs`` names others. Channel counts and
spatial sizes are inferred by :func:`infer_shapes`; an output width may be the literal
string ``"num_classes"``, resolved against the spec's class count, so one declared network
can be retargeted to any dataset with :meth:`NetSpec.retarget`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from archsearch.errors import SpecError

#: libyaml's emitter where PyYAML was built with it (several times faster), else the pure-Python one.
_SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

__all__ = [
    "ACTIVATIONS",
    "NUM_CLASSES",
    "AddNode",
    "ConcatNode",
    "ConvNode",
    "DropoutNode",
    "FireNode",
    "FlattenNode",
    "GlobalAvgPoolNode",
    "LinearNode",
    "NetSpec",
    "Node",
    "PoolNode",
    "Shape",
    "infer_shapes",
    "load_spec",
    "node_from_dict",
]

NUM_CLASSES = "num_classes"
ACTIVATIONS = ("relu", "relu6", "gelu", "silu", "none")

#: (C, H, W) for feature maps, (F,) for flat vectors.
Shape = tuple[int, ...]
Width = int | str


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
            if isinstance(self, FireNode) and f.name == "expand":
                value = self.mix
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


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


@dataclass(frozen=True)
class PoolNode(Node):
    """Max or average pooling; ``stride`` defaults to ``kernel``."""

    op: ClassVar[str] = "maxpool"
    kernel: int = 2
    stride: int | None = None
    padding: int = 0
    ceil_mode: bool = False


@dataclass(frozen=True)
class MaxPoolNode(PoolNode):
    op: ClassVar[str] = "maxpool"


@dataclass(frozen=True)
class AvgPoolNode(PoolNode):
    op: ClassVar[str] = "avgpool"


@dataclass(frozen=True)
class GlobalAvgPoolNode(Node):
    """Average over all spatial positions; the output is a flat (C,) vector."""

    op: ClassVar[str] = "global_avgpool"


@dataclass(frozen=True)
class DropoutNode(Node):
    op: ClassVar[str] = "dropout"
    p: float = 0.5


@dataclass(frozen=True)
class FlattenNode(Node):
    op: ClassVar[str] = "flatten"


@dataclass(frozen=True)
class LinearNode(Node):
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


NODE_TYPES: dict[str, type[Node]] = {
    cls.op: cls
    for cls in (
        ConvNode,
        FireNode,
        MaxPoolNode,
        AvgPoolNode,
        GlobalAvgPoolNode,
        DropoutNode,
        FlattenNode,
        LinearNode,
        AddNode,
        ConcatNode,
    )
}

_MULTI_INPUT_OPS = ("add", "concat")


def _where(index: int, raw: Mapping[str, Any]) -> str:
    name = raw.get("name")
    return f"node {name!r}" if isinstance(name, str) and name else f"node #{index}"


def node_from_dict(raw: Mapping[str, Any], index: int = 0) -> Node:
    """Build a node from a plain mapping, rejecting unknown ops, unknown fields and bad types."""
    if not isinstance(raw, Mapping):
        raise SpecError(f"node #{index} must be a mapping with 'name' and 'op', got {raw!r}.")
    where = _where(index, raw)
    op = raw.get("op")
    if op not in NODE_TYPES:
        raise SpecError(f"{where} field 'op' is {op!r}, not an op; allowed: {', '.join(sorted(NODE_TYPES))}.")
    cls = NODE_TYPES[op]
    allowed = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "op":
            continue
        if key not in allowed:
            names = ", ".join(sorted(allowed))
            raise SpecError(f"{where} has unknown field {key!r} for op {op!r}; allowed: {names}.")
        kwargs[key] = _coerce(where, key, value, allowed[key].type)
    if not kwargs.get("name"):
        raise SpecError(f"node #{index} (op {op!r}) needs a non-empty 'name'.")
    return cls(**kwargs)


def _coerce(where: str, key: str, value: Any, annotation: Any) -> Any:
    """Check a field's value against its declared type; convert lists and mappings."""
    ann = str(annotation)
    if key == "inputs":
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
            raise SpecError(f"{where} field 'inputs' must be a list of node names, got {value!r}.")
        return tuple(value)
    if key == "expand":
        if not isinstance(value, Mapping) or not value:
            raise SpecError(
                f"{where} field 'expand' must map kernel size to channels, e.g. {{1: 64, 3: 64}}."
            )
        try:
            return {int(k): _strict_int(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise SpecError(
                f"{where} field 'expand' must map integer kernel sizes to integer channels, "
                f"got {dict(value)!r}."
            ) from None
    if key == "name":
        if not isinstance(value, str):
            raise SpecError(f"{where} field 'name' must be a string, got {value!r}.")
        return value
    if key == "act":
        if value not in ACTIVATIONS:
            raise SpecError(f"{where} field 'act' is {value!r}; allowed: {', '.join(ACTIVATIONS)}.")
        return value
    if key == "out":
        if value == NUM_CLASSES:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where} field 'out' must be an integer or '{NUM_CLASSES}', got {value!r}.")
        return value
    if ann.startswith("bool"):
        if not isinstance(value, bool):
            raise SpecError(f"{where} field {key!r} must be true or false, got {value!r}.")
        return value
    if ann.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(f"{where} field {key!r} must be a number, got {value!r}.")
        return float(value)
    if ann.startswith("int"):
        if value is None and "None" in ann:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where} field {key!r} must be an integer, got {value!r}.")
        return value
    return value


def _strict_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(v)
    return v


@dataclass(frozen=True)
class NetSpec:
    """A whole network: input shape, class count and an ordered tuple of nodes."""

    name: str
    input: tuple[int, int, int]
    num_classes: int
    nodes: tuple[Node, ...]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "model") -> NetSpec:
        """Parse and validate a plain mapping (as read from YAML or an OmegaConf container).

        Args:
            raw: mapping with ``name``, ``input``, ``num_classes`` and ``nodes``.
            source: what to call the mapping in error messages (a file name, a config key).

        Raises:
            SpecError: naming the node and field that is wrong.
        """
        if not isinstance(raw, Mapping):
            raise SpecError(f"{source} must be a mapping with name, input, num_classes and nodes.")
        unknown = set(raw) - {"name", "input", "num_classes", "nodes", "description"}
        if unknown:
            raise SpecError(
                f"{source} has unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                "allowed: name, input, num_classes, nodes, description."
            )
        shape = raw.get("input")
        if (
            not isinstance(shape, Sequence)
            or len(shape) != 3
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        ):
            raise SpecError(f"{source} key 'input' must be [channels, height, width], got {shape!r}.")
        num_classes = raw.get("num_classes")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise SpecError(f"{source} key 'num_classes' must be a positive integer.")
        raw_nodes = raw.get("nodes")
        if not isinstance(raw_nodes, Sequence) or isinstance(raw_nodes, str) or not raw_nodes:
            raise SpecError(f"{source} key 'nodes' must be a non-empty list of nodes.")
        nodes = tuple(node_from_dict(n, i) for i, n in enumerate(raw_nodes))
        spec = cls(
            name=str(raw.get("name", "net")),
            input=(int(shape[0]), int(shape[1]), int(shape[2])),
            num_classes=num_classes,
            nodes=nodes,
        )
        spec.validate()
        return spec

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-ready dict; ``NetSpec.from_dict(spec.to_dict()) == spec``."""
        return {
            "name": self.name,
            "input": list(self.input),
            "num_classes": self.num_classes,
            "nodes": [n.to_dict() for n in self.nodes],
        }

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_SafeDumper, sort_keys=False, default_flow_style=None)

    @classmethod
    def from_yaml(cls, text: str, source: str = "model") -> NetSpec:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(f"{source} is not valid YAML: {_yaml_problem(exc)}.") from None
        return cls.from_dict(raw, source=source)

    @property
    def hash(self) -> str:
        """Stable 12-hex-digit hash of the graph (input, classes, nodes; not the name).

        Spellings of the same graph hash alike: expand keys in any order, an ``inputs`` list
        naming just the previous node, a conv ``padding`` equal to its default and a pool
        ``stride`` equal to its kernel.
        """
        body = self.to_dict()
        del body["name"]
        previous = "input"
        for node, raw in zip(self.nodes, body["nodes"], strict=True):
            if raw.get("inputs") == [previous]:
                del raw["inputs"]
            if isinstance(node, ConvNode) and node.kernel % 2 and raw.get("padding") == _same_padding(node):
                del raw["padding"]
            if isinstance(node, PoolNode) and raw.get("stride") == node.kernel:
                del raw["stride"]
            previous = node.name
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:12]

    def validate(self) -> dict[str, Shape]:
        """Check the whole graph; return every node's output shape. Raises SpecError."""
        return infer_shapes(self)

    def retarget(self, input: Sequence[int] | None = None, num_classes: int | None = None) -> NetSpec:
        """Same graph for another input shape or class count (validated again)."""
        spec = dataclasses.replace(
            self,
            input=tuple(input) if input is not None else self.input,  # type: ignore[arg-type]
            num_classes=num_classes if num_classes is not None else self.num_classes,
        )
        spec.validate()
        return spec

    def input_names(self) -> dict[str, tuple[str, ...]]:
        """Each node's resolved input names ("input" is the network input)."""
        resolved: dict[str, tuple[str, ...]] = {}
        previous = "input"
        for node in self.nodes:
            resolved[node.name] = node.inputs if node.inputs is not None else (previous,)
            previous = node.name
        return resolved

    def resolve_width(self, width: Width) -> int:
        return self.num_classes if width == NUM_CLASSES else int(width)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)


def load_spec(path: str | Path) -> NetSpec:
    """Read a model YAML file (as under ``conf/model/``)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read model file {p}: {exc.strerror}.") from None
    return NetSpec.from_yaml(text, source=str(p))


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil: bool) -> int:
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if ceil:
        out = -(-span // stride) + 1
        # PyTorch drops a last window that would start entirely in the right padding.
        if (out - 1) * stride >= size + padding:
            out -= 1
        return out
    return span // stride + 1


def conv_padding(node: ConvNode) -> int:
    """The padding a conv node uses (explicit, or "same" for odd kernels)."""
    return node.padding if node.padding is not None else _same_padding(node)


def _same_padding(node: ConvNode) -> int:
    return node.dilation * (node.kernel - 1) // 2


def pool_stride(node: PoolNode) -> int:
    return node.stride if node.stride is not None else node.kernel


def infer_shapes(spec: NetSpec) -> dict[str, Shape]:
    """Infer every node's output shape, checking the graph as it goes.

    Raises:
        SpecError: one sentence naming the node and the field that is wrong.
    """
    shapes: dict[str, Shape] = {"input": spec.input}
    seen: set[str] = set()
    all_names = [n.name for n in spec.nodes]
    for name in all_names:
        if name == "input":
            raise SpecError("node name 'input' is reserved for the network input.")
        if all_names.count(name) > 1:
            raise SpecError(f"node {name!r} is declared more than once; node names must be unique.")
    inputs = spec.input_names()
    for node in spec.nodes:
        where = f"node {node.name!r}"
        srcs = inputs[node.name]
        for src in srcs:
            if src not in shapes:
                if src in all_names:
                    raise SpecError(
                        f"{where} field 'inputs' names {src!r}, which comes later in the list "
                        "(a cycle or forward reference); a node may only read earlier nodes."
                    )
                raise SpecError(f"{where} field 'inputs' names unknown node {src!r}.")
        if node.op not in _MULTI_INPUT_OPS and len(srcs) != 1:
            raise SpecError(f"{where} field 'inputs' must name exactly one node for op {node.op!r}.")
        if node.op in _MULTI_INPUT_OPS and len(srcs) < 2:
            raise SpecError(f"{where} field 'inputs' must name at least two nodes for op {node.op!r}.")
        in_shapes = [shapes[s] for s in srcs]
        shapes[node.name] = _node_shape(spec, node, in_shapes, where)
        seen.add(node.name)
    last = shapes[spec.nodes[-1].name]
    del shapes["input"]
    if last != (spec.num_classes,):
        raise SpecError(
            f"node {spec.nodes[-1].name!r} (the last) outputs shape {list(last)}, but the network "
            f"must end in a flat vector of num_classes={spec.num_classes} "
            "(add global_avgpool or flatten + linear with out: num_classes)."
        )
    return shapes


def _positive(where: str, key: str, value: int) -> None:
    if value < 1:
        raise SpecError(f"{where} field {key!r} must be a positive integer, got {value}.")


def _spatial(where: str, shape: Shape, op: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise SpecError(
            f"{where} (op {op!r}) needs a feature map [C, H, W] as input, got flat shape {list(shape)}."
        )
    return shape[0], shape[1], shape[2]


def _node_shape(spec: NetSpec, node: Node, in_shapes: list[Shape], where: str) -> Shape:
    if isinstance(node, ConvNode):
        c, h, w = _spatial(where, in_shapes[0], node.op)
        out = spec.resolve_width(node.out)
        _positive(where, "out", out)
        for key in ("kernel", "stride", "dilation", "groups"):
            _positive(where, key, getattr(node, key))
        if node.padding is None and node.kernel % 2 == 0:
            raise SpecError(f"{where} has even kernel {node.kernel}; set field 'padding' explicitly.")
        if node.padding is not None and node.padding < 0:
            raise SpecError(f"{where} field 'padding' must be >= 0, got {node.padding}.")
        if c % node.groups or out % node.groups:
            raise SpecError(
                f"{where} field 'groups' ({node.groups}) must divide input channels ({c}) and 'out' ({out})."
            )
        pad = conv_padding(node)
        oh = _out_size(h, node.kernel, node.stride, pad, node.dilation, False)
        ow = _out_size(w, node.kernel, node.stride, pad, node.dilation, False)
        _check_spatial(where, oh, ow, h, w, "'kernel', 'stride', 'padding' or 'dilation'")
        return (out, oh, ow)
    if isinstance(node, FireNode):
        c, h, w = _spatial(where, in_shapes[0], node.op)
        _positive(where, "squeeze", node.squeeze)
        if not node.expand:
            raise SpecError(
                f"{where} needs field 'expand', mapping kernel size to channels, e.g. {{1: 64, 3: 64}}."
            )
        for k, ch in node.expand:
            if k < 1 or k % 2 == 0:
                raise SpecError(
                    f"{where} field 'expand' has kernel {k}; expand kernels must be odd and positive."
                )
            _positive(where, f"expand[{k}]", ch)
        total = sum(ch for _, ch in node.expand)
        if node.squeeze >= total:
            raise SpecError(
                f"{where} field 'squeeze' ({node.squeeze}) must be smaller than the total "
                f"expand channels ({total}), the Fire module rule."
            )
        return (total, h, w)
    if isinstance(node, PoolNode):
        c, h, w = _spatial(where, in_shapes[0], node.op)
        _positive(where, "kernel", node.kernel)
        stride = pool_stride(node)
        _positive(where, "stride", stride)
        if node.padding < 0 or node.padding * 2 > node.kernel:
            raise SpecError(f"{where} field 'padding' must be between 0 and kernel/2, got {node.padding}.")
        oh = _out_size(h, node.kernel, stride, node.padding, 1, node.ceil_mode)
        ow = _out_size(w, node.kernel, stride, node.padding, 1, node.ceil_mode)
        _check_spatial(where, oh, ow, h, w, "'kernel', 'stride' or 'padding'")
        return (c, oh, ow)
    if isinstance(node, GlobalAvgPoolNode):
        c, _, _ = _spatial(where, in_shapes[0], node.op)
        return (c,)
    if isinstance(node, DropoutNode):
        if not 0.0 <= node.p < 1.0:
            raise SpecError(f"{where} field 'p' must be in [0, 1), got {node.p}.")
        return in_shapes[0]
    if isinstance(node, FlattenNode):
        n = 1
        for d in in_shapes[0]:
            n *= d
        return (n,)
    if isinstance(node, LinearNode):
        if len(in_shapes[0]) != 1:
            raise SpecError(
                f"{where} (op 'linear') needs a flat input, got {list(in_shapes[0])}; "
                "put a flatten or global_avgpool node before it."
            )
        out = spec.resolve_width(node.out)
        _positive(where, "out", out)
        return (out,)
    if isinstance(node, AddNode):
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
    if isinstance(node, ConcatNode):
        first = in_shapes[0]
        if any(len(s) != len(first) or s[1:] != first[1:] for s in in_shapes):
            raise SpecError(
                f"{where} field 'inputs' has shapes {[list(s) for s in in_shapes]}; "
                "concat needs equal spatial sizes."
            )
        return (sum(s[0] for s in in_shapes), *first[1:])
    raise SpecError(f"{where} has unsupported op {node.op!r}.")  # pragma: no cover


def _check_spatial(where: str, oh: int, ow: int, h: int, w: int, fields: str) -> None:
    if oh < 1 or ow < 1:
        raise SpecError(
            f"{where} shrinks its {h}x{w} input to {oh}x{ow} through fields {fields}; the spatial "
            "size must stay >= 1 (a smaller kernel or stride, fewer pools, or a larger input)."
        )
