"""Graph spaces: search any declared network by writing distributions into its net YAML.

The syntax is in :mod:`archsearch.search.graph_parse` and README "Graph spaces". Sampling is
define-by-run and names every parameter by its node path: ``fire3.sr``, ``conv1.stride``,
``by3.present`` (an optional node), ``stage2.repeat`` (a block), ``stage2_fire1.sr`` (a node
of repeat 1) and a shared parameter by its own name, drawn the first time a present node uses
it. Parameters of absent nodes are never drawn, so ``optuna.trial.FixedTrial`` with the names a
network uses pins it exactly.

An absent node (``present`` false, or a block repeated 0 times) is read through: its consumers
read its last input instead, except an ``add`` or ``concat``, which drops it; a merge left with
one input passes that input through.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from archsearch.errors import ConfigError, SpecError
from archsearch.net.spec import NetSpec
from archsearch.search.distributions import Key, Value, grid_values, in_domain, suggest
from archsearch.search.graph_parse import (
    BLOCK_INPUT,
    BOOL,
    REPEAT,
    Block,
    NodeTemplate,
    ParsedGraph,
    Ref,
    WidthRule,
    field_key,
    instance_name,
    parse_graph,
)
from archsearch.search.space_core import InfeasibleArchitecture, content_hash, fire_channels

__all__ = ["FEASIBILITY_DRAWS", "GraphSpace"]

#: Random draws a file gets, when it loads, to produce one valid network at its declared input.
FEASIBILITY_DRAWS = 48
_MERGES = ("add", "concat")


class _Draw:
    """One trial's draws: suggests each named parameter once, shared ones on first use."""

    def __init__(self, trial: optuna.trial.BaseTrial, params: Mapping[str, Value]) -> None:
        self.trial = trial
        self.params = params
        self.shared: dict[str, Any] = {}

    def value(self, name: str, v: Any, k: Key) -> Any:
        if isinstance(v, Ref):
            name = v.name
            if name not in self.shared:
                self.shared[name] = suggest(self.trial, name, self.params[name])
            value = self.shared[name]
        else:
            value = suggest(self.trial, name, v)
        # Distributions were checked when the file loaded; this catches FixedTrial and enqueued values.
        if not in_domain(k, value):
            raise InfeasibleArchitecture(f"parameter {name!r} = {value!r} is outside its domain: {k.domain}.")
        return value


@dataclasses.dataclass
class _Graph:
    """The network being drawn: emitted nodes, and what absent or merged-away names read."""

    nodes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    alias: dict[str, str] = dataclasses.field(default_factory=dict)
    absent: set[str] = dataclasses.field(default_factory=set)
    prev: str = "input"

    def last(self) -> str:
        return self.nodes[-1]["name"] if self.nodes else "input"

    def skip(self, name: str, to: str, absent: bool) -> None:
        self.alias[name] = to
        if absent:
            self.absent.add(name)
        self.prev = to


class GraphSpace:
    """A validated graph space; sample it with an Optuna trial. Build one with :meth:`from_dict`."""

    def __init__(self, name: str, path: Path | None, graph: ParsedGraph, raw: Mapping[str, Any]) -> None:
        self.name = name
        self.path = path
        self.description = graph.description
        self.points: dict[str, dict[str, Any]] = {}  # the file's named points (space_from_dict)
        self._graph = graph
        self._raw = copy.deepcopy(dict(raw))

    @classmethod
    def from_dict(cls, raw: Any, name: str | None = None, path: Path | None = None) -> GraphSpace:
        """Validate a graph space mapping, then check it can produce a network at its ``input``.

        Args:
            raw: parsed YAML with ``input``, ``num_classes``, ``nodes`` and optionally ``params``.
            name: the space's name; by default the file's stem, else the mapping's ``name``.
            path: the file it came from, named in every error.

        Raises:
            ConfigError: naming the file, the node and the field; or saying that
                :data:`FEASIBILITY_DRAWS` random draws gave no valid network, with the first reason.
        """
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path or 'graph space'} must be a mapping with input, num_classes and nodes.")
        name = name or (path.stem if path is not None else str(raw.get("name", "graph")))
        source = str(path) if path is not None else f"graph space {name!r}"
        space = cls(name, path, parse_graph(raw, source), raw)
        space._check_feasible(source)
        return space

    def _check_feasible(self, source: str) -> None:
        # Optuna announces every new study at INFO; this throwaway one would show on every load.
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        finally:
            optuna.logging.set_verbosity(verbosity)
        first = ""
        for _ in range(FEASIBILITY_DRAWS):
            try:
                self.sample(study.ask(), self._graph.input, self._graph.num_classes)
                return
            except InfeasibleArchitecture as exc:
                first = first or exc.reason
        raise ConfigError(
            f"{source} gave no valid network in {FEASIBILITY_DRAWS} random draws at input "
            f"{list(self._graph.input)}; the first reason: {first}"
        )

    @property
    def hash(self) -> str:
        """12 hex digits of the file's content (not its name or description)."""
        return content_hash(self._raw)

    def to_dict(self) -> dict[str, Any]:
        """The space as written (``GraphSpace.from_dict(space.to_dict())`` is the same space)."""
        return copy.deepcopy(self._raw)

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every parameter a trial may draw, by name, blocks at their most repeats.

        Which of them a trial draws depends on what it drew before (absent nodes draw nothing).
        """
        out: dict[str, BaseDistribution] = {}

        def add(name: str, v: Any) -> None:
            if isinstance(v, Ref):
                out[v.name] = self._graph.params[v.name]
            elif isinstance(v, WidthRule):
                for part in (v.base, v.incr, v.every):
                    add(name, part)
            elif isinstance(v, dict):
                for k, sub in v.items():
                    add(f"{name}.{k}", sub)
            elif isinstance(v, BaseDistribution):
                out[name] = v

        def add_node(t: NodeTemplate, name: str) -> None:
            add(f"{name}.present", t.optional)
            for field, v in t.fields.items():
                add(f"{name}.{field}", v)

        for entry in self._graph.entries:
            if isinstance(entry, NodeTemplate):
                add_node(entry, entry.name)
                continue
            add(f"{entry.name}.repeat", entry.repeat)
            for i in range(entry.most):
                for t in entry.nodes:
                    add_node(t, instance_name(t.name, i))
        return out

    def grid(self) -> dict[str, list[Any]]:
        """Every parameter's values, for ``optuna.samplers.GridSampler``.

        The grid is the product over all parameters, also those a point's other values leave
        undrawn (an absent node's fields, repeats beyond the drawn count): such points give
        the same network, which the search scores again from its stored result.

        Raises:
            ConfigError: naming a parameter with no finite set of values (a float without step).
        """
        source = str(self.path) if self.path is not None else f"graph space {self.name!r}"
        return {name: grid_values(source, name, v) for name, v in self.distributions().items()}

    def sample(self, trial: optuna.trial.BaseTrial, input_shape: Sequence[int], num_classes: int) -> NetSpec:
        """Draw one network (define-by-run, parameters named by node path).

        Args:
            trial: an Optuna trial; a ``FixedTrial`` pins the network.
            input_shape: (channels, height, width) of the data.
            num_classes: width of the classifier output.

        Returns:
            A validated NetSpec named ``<space name>-<spec hash>``.

        Raises:
            InfeasibleArchitecture: the draw makes no valid network (the validator's sentence).
        """
        draw = _Draw(trial, self._graph.params)
        g = _Graph()
        for entry in self._graph.entries:
            if isinstance(entry, Block):
                _repeat(entry, draw, g)
            else:
                _node(entry, draw, g, {}, 0)
        raw = {"name": self.name, "input": list(input_shape), "num_classes": num_classes, "nodes": g.nodes}
        try:
            spec = NetSpec.from_dict(raw, source=f"sample of {self.name}")
        except SpecError as exc:
            raise InfeasibleArchitecture(str(exc)) from None
        return dataclasses.replace(spec, name=f"{self.name}-{spec.hash}")

    def __repr__(self) -> str:
        return f"GraphSpace(name={self.name!r}, free={sorted(self.distributions())})"


def _repeat(block: Block, draw: _Draw, g: _Graph) -> None:
    n = draw.value(f"{block.name}.repeat", block.repeat, REPEAT)
    for i in range(n):
        local = {t.name: instance_name(t.name, i) for t in block.nodes}
        local[BLOCK_INPUT] = g.prev
        for t in block.nodes:
            _node(t, draw, g, local, i)
    g.skip(block.name, g.prev, absent=n == 0)


def _node(t: NodeTemplate, draw: _Draw, g: _Graph, local: Mapping[str, str], i: int) -> None:
    name = local.get(t.name, t.name)
    wanted = [local.get(x, x) for x in t.inputs] if t.inputs is not None else [g.prev]
    if t.op in _MERGES:
        wanted = [x for x in wanted if x not in g.absent]
    inputs = [g.alias.get(x, x) for x in wanted]
    present = t.optional is False or draw.value(f"{name}.present", t.optional, BOOL)
    if not inputs:
        if present:
            raise InfeasibleArchitecture(
                f"node {name!r} ({t.op}) has no input left: every node it adds is absent."
            )
        g.skip(name, g.prev, absent=True)
        return
    if not present or (t.op in _MERGES and len(inputs) == 1):
        g.skip(name, inputs[-1], absent=not present)
        return
    out: dict[str, Any] = {"name": name, "op": t.op}
    if inputs != [g.last()]:
        out["inputs"] = inputs
    out.update(_fields(t, name, draw, i))
    g.nodes.append(out)
    g.prev = name


def _fields(t: NodeTemplate, name: str, draw: _Draw, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, v in t.fields.items():
        k = field_key(t.op, field)
        if isinstance(v, WidthRule):
            base, incr, every = (draw.value(name, part, REPEAT) for part in (v.base, v.incr, v.every))
            out[field] = base + incr * (i // every)
        elif isinstance(v, dict):
            out[field] = {kernel: draw.value(f"{name}.{field}.{kernel}", c, k) for kernel, c in v.items()}
        elif isinstance(v, BaseDistribution | Ref):
            out[field] = draw.value(f"{name}.{field}", v, k)
        else:
            out[field] = v
    if "e" in out:
        if out["e"] < 2:
            raise InfeasibleArchitecture(
                f"node {name!r} field 'expand' is {out['e']}; a Fire module needs >= 2."
            )
        out["squeeze"], out["expand"] = fire_channels(
            out.pop("e"), *(out.pop(f) for f in ("sr", "pct3x3", "pct5x5"))
        )
    return out
