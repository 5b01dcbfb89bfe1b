"""Networks as plain data: a NetSpec is a graph of nodes, validated before anything is built.

This module has no torch import on purpose: specs are sampled, hashed, costed and written
to YAML without ever constructing a model.

A node's input is the previous node unless ``inputs`` names others. Node types live in
:mod:`archsearch.net.nodes`; :func:`infer_shapes` checks the graph and infers channel counts
and spatial sizes with each op's shape rule from :data:`archsearch.net.ops.OPS`. An output
width may be the literal string ``"num_classes"``, resolved against the spec's class count,
so one declared network can be retargeted to any dataset with :meth:`NetSpec.retarget`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from archsearch.errors import SpecError
from archsearch.net.nodes import ACTIVATIONS, NUM_CLASSES, Node, Shape
from archsearch.net.ops import OPS

#: libyaml's emitter where PyYAML was built with it (several times faster), else the pure-Python one.
_SafeDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

__all__ = ["NetSpec", "infer_shapes", "load_spec", "node_from_dict"]


def _where(index: int, raw: Mapping[str, Any]) -> str:
    name = raw.get("name")
    return f"node {name!r}" if isinstance(name, str) and name else f"node #{index}"


def node_from_dict(raw: Mapping[str, Any], index: int = 0) -> Node:
    """Build a node from a plain mapping, rejecting unknown ops, unknown fields and bad types."""
    if not isinstance(raw, Mapping):
        raise SpecError(f"node #{index} must be a mapping with 'name' and 'op', got {raw!r}.")
    where = _where(index, raw)
    op = raw.get("op")
    if op not in OPS:
        raise SpecError(f"{where} field 'op' is {op!r}, not an op; allowed: {', '.join(sorted(OPS))}.")
    cls = OPS[op].node
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
        body["nodes"] = []
        previous = "input"
        for node in self.nodes:
            raw = node.canonical_dict()
            if raw.get("inputs") == [previous]:
                del raw["inputs"]
            body["nodes"].append(raw)
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


def infer_shapes(spec: NetSpec) -> dict[str, Shape]:
    """Infer every node's output shape, checking the graph as it goes.

    Raises:
        SpecError: one sentence naming the node and the field that is wrong.
    """
    shapes: dict[str, Shape] = {"input": spec.input}
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
        op = OPS[node.op]
        if not op.multi_input and len(srcs) != 1:
            raise SpecError(f"{where} field 'inputs' must name exactly one node for op {node.op!r}.")
        if op.multi_input and len(srcs) < 2:
            raise SpecError(f"{where} field 'inputs' must name at least two nodes for op {node.op!r}.")
        shapes[node.name] = op.shape(node, [shapes[s] for s in srcs], spec.num_classes, where)
    last = shapes[spec.nodes[-1].name]
    del shapes["input"]
    if last != (spec.num_classes,):
        raise SpecError(
            f"node {spec.nodes[-1].name!r} (the last) outputs shape {list(last)}, but the network "
            f"must end in a flat vector of num_classes={spec.num_classes} "
            "(add global_avgpool or flatten + linear with out: num_classes)."
        )
    return shapes
