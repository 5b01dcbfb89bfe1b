"""Reading a graph space: a net YAML whose node fields may be distributions.

The syntax (README "Graph spaces"):

- any node field (not ``name``, ``op`` or ``inputs``) may be a constant, a distribution
  (:mod:`archsearch.search.distributions`) or a reference to a shared parameter, ``$name`` or
  ``{ref: name}``, declared once under top-level ``params:``;
- a ``fire`` node may give its total expand width (``expand: N`` or ``e: N``) and ``sr``,
  ``pct3x3``, ``pct5x5`` instead of ``squeeze`` and a kernel map;
- ``optional:`` (true, or a distribution or reference of booleans) makes the node's presence
  a parameter;
- an entry ``{name: B, repeat: R, block: [nodes]}`` repeats its nodes R times; in a block,
  ``{i}`` in a node name is the repeat index (otherwise ``_r<i>`` is appended), ``{in}`` in
  ``inputs`` is the node the repeat reads, and an int field may be a width rule
  ``{base: b, incr: k, every: f}``: ``b + k * floor(i / f)`` in repeat ``i``.

Every value is checked here, when the file loads, with one sentence naming the file, the node
and the field. :mod:`archsearch.search.graph_space` samples the parsed form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from archsearch.errors import ConfigError
from archsearch.net.nodes import ACTIVATIONS, NUM_CLASSES
from archsearch.net.ops import OPS
from archsearch.search.distributions import KEYS, Key, Value, in_domain, parse_value

__all__ = [
    "BLOCK_INPUT",
    "BOOL",
    "REPEAT",
    "Block",
    "NodeTemplate",
    "ParsedGraph",
    "Ref",
    "WidthRule",
    "field_key",
    "instance_name",
    "parse_graph",
]

#: In a block's ``inputs``: the node the current repeat reads (the previous repeat's last node).
BLOCK_INPUT = "{in}"
#: Native Fire fields, used instead of ``squeeze`` and a kernel map.
FIRE_NATIVE = ("e", "sr", "pct3x3", "pct5x5")
_TOP_KEYS = ("name", "description", "input", "num_classes", "params", "nodes")


def _int(minimum: int, doc: str) -> Key:
    return Key(int, None, f"an integer >= {minimum}", lambda v: v >= minimum, doc)


BOOL = Key(bool, None, "true or false", lambda v: True, "a switch")
REPEAT = _int(0, "how many times a block repeats")
_RULE_PART = {"base": _int(1, "width of repeat 0"), "incr": _int(0, "added"), "every": _int(1, "repeats")}
_FIELD_KEYS: dict[str, Key] = {
    "out": Key(int, None, f"a positive integer (or the constant {NUM_CLASSES})", lambda v: v >= 1, ""),
    "act": Key(str, None, f"one of {', '.join(ACTIVATIONS)}", lambda v: v in ACTIVATIONS, ""),
    "padding": _int(0, "padding"),
    "p": Key(float, None, "a number in [0, 1)", lambda v: 0 <= v < 1, "dropout"),
    "e": _int(2, "total expand channels"),
    **{k: KEYS[k] for k in ("sr", "pct3x3", "pct5x5")},
}


@dataclass(frozen=True)
class Ref:
    """A reference to a shared parameter declared under ``params:``."""

    name: str


@dataclass(frozen=True)
class WidthRule:
    """Per-repeat width ``base + incr * floor(i / every)``; each part a constant or a Ref."""

    base: int | Ref
    incr: int | Ref
    every: int | Ref


@dataclass(frozen=True)
class NodeTemplate:
    """One declared node: fields hold constants, distributions, Refs, WidthRules or kernel maps."""

    name: str
    op: str
    fields: dict[str, Any]
    inputs: tuple[str, ...] | None
    optional: Any


@dataclass(frozen=True)
class Block:
    """Nodes repeated ``repeat`` times (a constant, distribution or Ref); ``most`` is the cap."""

    name: str
    repeat: Any
    nodes: tuple[NodeTemplate, ...]
    most: int


@dataclass(frozen=True)
class ParsedGraph:
    """A validated graph space file."""

    input: tuple[int, int, int]
    num_classes: int
    params: dict[str, Value]
    entries: tuple[NodeTemplate | Block, ...]
    description: str


def instance_name(template: str, i: int) -> str:
    """The name of a block node in repeat ``i``: ``{i}`` replaced, else ``_r<i>`` appended."""
    return template.replace("{i}", str(i)) if "{i}" in template else f"{template}_r{i}"


def field_key(op: str, field: str) -> Key:
    """The type and domain of a node field, for distributions and drawn values."""
    if field in _FIELD_KEYS:
        return _FIELD_KEYS[field]
    ann = str(next(f.type for f in fields(OPS[op].node) if f.name == field))
    if ann.startswith("bool"):
        return BOOL
    if ann.startswith("float"):
        return Key(float, None, "a number", lambda v: True, field)
    return _int(1, field)


def _values(v: Value) -> list[Any]:
    # The values a check must admit: every choice, or both bounds of a range.
    if isinstance(v, CategoricalDistribution):
        return list(v.choices)
    if isinstance(v, IntDistribution | FloatDistribution):
        return [v.low, v.high]
    return [v]


class _Parser:
    """Parses one file; ``source`` starts every error sentence."""

    def __init__(self, source: str, params: dict[str, Value]) -> None:
        self.source = source
        self.params = params
        self.used: set[str] = set()

    def ref(self, where: str, spec: Any) -> Ref | None:
        name = None
        if isinstance(spec, str) and spec.startswith("$"):
            name = spec[1:]
        elif isinstance(spec, Mapping) and set(spec) == {"ref"}:
            name = str(spec["ref"])
        if name is None:
            return None
        if name not in self.params:
            known = ", ".join(self.params) or "none declared"
            raise ConfigError(
                f"{where} refers to parameter {name!r}, which 'params' does not declare ({known})."
            )
        self.used.add(name)
        return Ref(name)

    def value(self, where: str, k: Key, spec: Any) -> Any:
        """A constant, distribution or Ref whose every value lies in ``k``'s domain."""
        ref = self.ref(where, spec)
        if ref is None:
            return parse_value(where, k, spec)
        for v in _values(self.params[ref.name]):
            if not in_domain(k, v):
                raise ConfigError(
                    f"{where} refers to parameter {ref.name!r}, which may be {v!r}; "
                    f"the field takes {k.domain}."
                )
        return ref

    def most(self, where: str, v: Any) -> int:
        """The largest value an int-valued field may take."""
        return max(_values(self.params[v.name] if isinstance(v, Ref) else v))

    def rule(self, where: str, k: Key, spec: Mapping[str, Any], in_block: bool) -> WidthRule:
        if not in_block:
            raise ConfigError(
                f"{where} is a width rule {{base, incr, every}}, which only a repeated block takes."
            )
        if set(spec) - set(_RULE_PART) or "base" not in spec:
            raise ConfigError(
                f"{where} must be {{base: b, incr: k, every: f}} (incr 0 and every 1 by default)."
            )
        parts = {}
        for part, key in _RULE_PART.items():
            v = self.value(f"{where} part {part!r}", key, spec.get(part, {"incr": 0, "every": 1}.get(part)))
            if isinstance(v, BaseDistribution):
                raise ConfigError(
                    f"{where} part {part!r} is a distribution; declare it under 'params' and write ${part}."
                )
            parts[part] = v
        if k.kind is not int:
            raise ConfigError(f"{where} is a width rule, which only integer fields take.")
        return WidthRule(**parts)

    def node(self, index: int, raw: Any, in_block: bool) -> NodeTemplate:
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"{self.source} node #{index} must be a mapping with 'name' and 'op', got {raw!r}."
            )
        name, op = raw.get("name"), raw.get("op")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.source} node #{index} needs a 'name' (a non-empty string).")
        where = f"{self.source} node {name!r}"
        if op not in OPS:
            raise ConfigError(f"{where} field 'op' is {op!r}, not an op; allowed: {', '.join(sorted(OPS))}.")
        inputs = raw.get("inputs")
        if isinstance(inputs, str):
            inputs = [inputs]
        if inputs is not None and (
            not isinstance(inputs, Sequence) or not all(isinstance(v, str) for v in inputs)
        ):
            raise ConfigError(
                f"{where} field 'inputs' must be a list of node names (not searchable), got {inputs!r}."
            )
        optional: Any = False
        if "optional" in raw:
            spec = raw["optional"]
            optional = (
                CategoricalDistribution([True, False])
                if spec is True
                else self.value(f"{where} field 'optional'", BOOL, spec)
            )
        allowed = [f.name for f in fields(OPS[op].node) if f.name not in ("name", "inputs")]
        allowed += list(FIRE_NATIVE) if op == "fire" else []
        out: dict[str, Any] = {}
        for field, spec in raw.items():
            if field in ("name", "op", "inputs", "optional"):
                continue
            if field not in allowed:
                raise ConfigError(
                    f"{where} has unknown field {field!r} for op {op!r}; "
                    f"allowed: {', '.join(sorted(allowed))}, optional."
                )
            out[field] = self.field(f"{where} field {field!r}", op, field, spec, in_block)
        if op == "fire":
            out = self.fire(where, out)
        return NodeTemplate(name, op, out, None if inputs is None else tuple(inputs), optional)

    def field(self, where: str, op: str, field: str, spec: Any, in_block: bool) -> Any:
        if field == "expand" and isinstance(spec, Mapping) and spec and all(isinstance(k, int) for k in spec):
            return {k: self.value(f"{where} kernel {k}", _int(1, "channels"), v) for k, v in spec.items()}
        k = _FIELD_KEYS["e"] if field == "expand" else field_key(op, field)
        if isinstance(spec, Mapping) and "base" in spec:
            return self.rule(where, k, spec, in_block)
        if field == "out" and spec == NUM_CLASSES:
            return spec
        return self.value(where, k, spec)

    def fire(self, where: str, out: dict[str, Any]) -> dict[str, Any]:
        total = "expand" in out and not isinstance(out["expand"], dict)
        if total and "e" in out:
            raise ConfigError(f"{where} gives both 'e' and a total 'expand'; keep one.")
        if total:
            out["e"] = out.pop("expand")
        native = [f for f in FIRE_NATIVE if f in out]
        if not native:
            return out
        if "e" not in out or "squeeze" in out or "expand" in out:
            raise ConfigError(
                f"{where} mixes Fire forms: give 'expand: N' (or 'e') with {', '.join(FIRE_NATIVE[1:])}, "
                "or 'squeeze' with a kernel map 'expand: {1: n, 3: n}'."
            )
        for f in FIRE_NATIVE[1:]:
            out.setdefault(f, KEYS[f].default)
        return out


def parse_graph(raw: Mapping[str, Any], source: str) -> ParsedGraph:
    """Validate a graph space mapping (parsed YAML with a ``nodes:`` key).

    Raises:
        ConfigError: one sentence naming the source, the node and the field.
    """
    unknown = [str(k) for k in raw if k not in _TOP_KEYS]
    if unknown:
        raise ConfigError(
            f"{source} has unknown key {unknown[0]!r}; a graph space has {', '.join(_TOP_KEYS)}."
        )
    shape, classes = raw.get("input"), raw.get("num_classes")
    if (
        not isinstance(shape, Sequence)
        or len(shape) != 3
        or not all(isinstance(d, int) and d > 0 for d in shape)
    ):
        raise ConfigError(f"{source} key 'input' must be [channels, height, width], got {shape!r}.")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ConfigError(f"{source} key 'num_classes' must be a positive integer, got {classes!r}.")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, Mapping):
        raise ConfigError(f"{source} key 'params' must map parameter names to distributions.")
    params = {
        str(n): parse_value(f"{source} parameter {n!r}", _param_key(spec), spec)
        for n, spec in params_raw.items()
    }
    p = _Parser(source, params)
    nodes = raw.get("nodes")
    if not isinstance(nodes, Sequence) or isinstance(nodes, str) or not nodes:
        raise ConfigError(f"{source} key 'nodes' must be a non-empty list of nodes.")
    entries = tuple(
        _block(p, i, n) if isinstance(n, Mapping) and "block" in n else p.node(i, n, False)
        for i, n in enumerate(nodes)
    )
    unused = [n for n in params if n not in p.used]
    if unused:
        raise ConfigError(
            f"{source} parameter {unused[0]!r} is declared but no node refers to it (write ${unused[0]})."
        )
    _check_names(source, entries)
    description = raw.get("description", "")
    return ParsedGraph((shape[0], shape[1], shape[2]), classes, params, entries, str(description or ""))


def _param_key(spec: Any) -> Key:
    # A shared parameter's type is its distribution's; each use checks it against the field.
    kind: type = object
    if isinstance(spec, Mapping):
        kind = int if "int" in spec else float if "float" in spec else object
    return Key(kind, None, "any value", lambda v: True, "shared parameter")


def _block(p: _Parser, index: int, raw: Mapping[str, Any]) -> Block:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{p.source} block #{index} needs a 'name' (a non-empty string).")
    where = f"{p.source} block {name!r}"
    extra = set(raw) - {"name", "repeat", "block"}
    if extra:
        raise ConfigError(
            f"{where} has unknown key {sorted(map(str, extra))[0]!r}; a block has name, repeat, block."
        )
    body = raw["block"]
    if not isinstance(body, Sequence) or isinstance(body, str) or not body:
        raise ConfigError(f"{where} key 'block' must be a non-empty list of nodes.")
    if any(isinstance(n, Mapping) and "block" in n for n in body):
        raise ConfigError(f"{where} nests a block; blocks do not nest.")
    repeat = p.value(f"{where} field 'repeat'", REPEAT, raw.get("repeat", 1))
    nodes = tuple(p.node(i, n, True) for i, n in enumerate(body))
    return Block(name, repeat, nodes, int(p.most(where, repeat)))


def _check_names(source: str, entries: Sequence[NodeTemplate | Block]) -> None:
    # Every name any draw can produce must be unique, and inputs must name earlier nodes.
    seen = {"input"}

    def add(name: str, where: str) -> None:
        if name in seen:
            raise ConfigError(
                f"{source} {where} is named {name!r}, which an earlier node (or 'input') already is."
            )
        seen.add(name)

    def check_inputs(t: NodeTemplate, local: set[str]) -> None:
        for ref in t.inputs or ():
            if ref not in seen and ref not in local:
                raise ConfigError(
                    f"{source} node {t.name!r} field 'inputs' names {ref!r}, "
                    "which is not an earlier node or block"
                    + (f" (in a block: a node of the block, or {BLOCK_INPUT})." if local else ".")
                )

    for entry in entries:
        if isinstance(entry, NodeTemplate):
            check_inputs(entry, set())
            add(entry.name, f"node {entry.name!r}")
            continue
        local = {BLOCK_INPUT}
        for t in entry.nodes:
            check_inputs(t, local)
            local.add(t.name)
            for i in range(max(entry.most, 1)):
                add(instance_name(t.name, i), f"block {entry.name!r} node {t.name!r} (repeat {i})")
        add(entry.name, f"block {entry.name!r}")
