"""Search spaces: :func:`load_space` reads either kind; this module holds the Fire template kind.

A search space is anything with the :class:`SearchSpace` interface (``sample``, ``grid``,
``distributions``, ``to_dict``, ``name``, ``path``, ``hash``). Two kinds ship: template spaces
(below) and graph spaces (:mod:`archsearch.search.graph_space`: a net YAML whose fields may be
distributions), told apart by a graph space's ``nodes:`` key.

A template search-space file is plain YAML (no Hydra needed). Each top-level key is one metaparameter
of the Fire template below and holds a constant or a distribution; ``per_module:`` draws some
keys once for every Fire module. :mod:`archsearch.search.distributions` has the syntax, the
keys and their domains.

The template (Iandola et al. 2016, section 5): a stem conv, ``depth`` Fire modules, dropout, a
1x1 conv to ``num_classes`` and global average pooling. Fire module ``i`` (0-based, named
``fire{i+2}`` as in the paper) has ``e_i = base_e + incr_e * floor(i / freq)`` expand channels,
``round(pct3x3 * e_i)`` of them 3x3, ``round(pct5x5 * e_i)`` 5x5 and the rest 1x1, and
``s_i = round(sr * e_i)`` squeeze channels, kept in ``[1, e_i - 1]``. ``pools`` 2x2 max pools are
placed after the stem and between modules, never more than the input size allows.

Sampling calls ``trial.suggest_*`` for every distribution, so an ``optuna.trial.FixedTrial``
with the same names pins one network exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from archsearch.errors import ConfigError, SpecError
from archsearch.net.nodes import NUM_CLASSES
from archsearch.net.spec import NetSpec
from archsearch.resources import find_config
from archsearch.search.distributions import (
    KEYS,
    PER_MODULE_KEYS,
    Key,
    Value,
    dump_value,
    grid_values,
    in_domain,
    parse_space,
    suggest,
)
from archsearch.search.graph_space import GraphSpace
from archsearch.search.space_core import (
    InfeasibleArchitecture,
    SearchSpace,
    content_hash,
    fire_channels,
    parse_points,
    read_space_file,
)

__all__ = [
    "GraphSpace",
    "InfeasibleArchitecture",
    "SearchSpace",
    "TemplateSpace",
    "expand_widths",
    "fire_channels",
    "load_space",
    "max_pools",
    "pool_slots",
    "space_from_dict",
]


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Read and validate a search-space file of either kind.

    A file with a ``nodes:`` key is a graph space (:class:`GraphSpace`, a net YAML with
    distributions); any other is a template space (:class:`TemplateSpace`). Both satisfy
    :class:`SearchSpace`, which is all the search uses.

    Args:
        name_or_path: a space's name (``"fire"`` reads the first ``search_spaces/fire.yaml`` of
            the user's config directories, then the package's; see ``archsearch.resources``) or
            the path of a YAML file.

    Raises:
        ConfigError: one sentence naming the file, the key (or node and field) and what is allowed.
    """
    path = find_config("search_spaces", name_or_path)
    return space_from_dict(read_space_file(path), name=path.stem, path=path)


def space_from_dict(raw: Any, name: str = "space", path: Path | None = None) -> SearchSpace:
    """A space of the kind ``raw`` declares: a graph space if it has ``nodes:``, else a template space.

    A ``points:`` key names parameter sets a study can start from (``warm_start.points``); they
    are not part of the space (nor of its hash).

    Raises:
        ConfigError: naming the source, the key and what is allowed.
    """
    points = None
    if isinstance(raw, Mapping) and "points" in raw:
        points = raw["points"]
        raw = {k: v for k, v in raw.items() if k != "points"}
    space: TemplateSpace | GraphSpace
    if isinstance(raw, Mapping) and "nodes" in raw:
        space = GraphSpace.from_dict(raw, name=name, path=path)
    else:
        space = TemplateSpace.from_dict(raw, name=name, path=path)
    source = str(path) if path is not None else f"search space {name!r}"
    space.points = parse_points(points, space.distributions(), source)
    return space


class TemplateSpace:
    """A validated search space over the Fire template; sample it with an Optuna trial.

    Build one with :func:`load_space` or :meth:`from_dict`.
    """

    def __init__(
        self,
        name: str,
        path: Path | None,
        values: dict[str, Value],
        per_module: dict[str, Value],
        description: str,
    ) -> None:
        self.name = name
        self.path = path
        self.description = description
        self.points: dict[str, dict[str, Any]] = {}  # the file's named points (space_from_dict)
        self._values = values
        self._per_module = per_module

    @classmethod
    def from_dict(cls, raw: Any, name: str = "space", path: Path | None = None) -> TemplateSpace:
        """Validate a plain mapping (parsed YAML, or an OmegaConf container turned into a dict).

        Keys left out take the template defaults (see :data:`archsearch.search.distributions.KEYS`).

        Raises:
            ConfigError: naming the source, the key and what is allowed.
        """
        source = str(path) if path is not None else f"search space {name!r}"
        parsed = parse_space(raw, source)
        return cls(name, path, parsed.values, parsed.per_module, parsed.description)

    @property
    def hash(self) -> str:
        """12 hex digits of the space's keys and values, defaults filled in (not its description)."""
        return content_hash(self.to_dict())

    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna distributions of the top-level free parameters (per-module ones are conditional)."""
        return {k: v for k, v in self._values.items() if isinstance(v, BaseDistribution)}

    def to_dict(self) -> dict[str, Any]:
        """Every key with its constant or distribution, in the file syntax (defaults filled in).

        ``SearchSpace.from_dict(space.to_dict())`` is the same space.
        """
        out: dict[str, Any] = {"description": self.description} if self.description else {}
        out.update({key: dump_value(v) for key, v in self._values.items()})
        if self._per_module:
            out["per_module"] = {key: dump_value(v) for key, v in self._per_module.items()}
        return out

    def grid(self) -> dict[str, list[Any]]:
        """Every free parameter's values, for ``optuna.samplers.GridSampler``.

        Raises:
            ConfigError: naming a parameter that has no finite set of values (a float without
                ``step``), or per-module parameters whose names depend on a free ``depth``.
        """
        source = str(self.path) if self.path is not None else f"search space {self.name!r}"
        out = {key: grid_values(source, key, v) for key, v in self.distributions().items()}
        free_per_module = [k for k, v in self._per_module.items() if isinstance(v, BaseDistribution)]
        if free_per_module and "depth" in out:
            raise ConfigError(
                f"{source} key 'per_module.{free_per_module[0]}' names one parameter per Fire module and "
                "'depth' is not fixed, so a grid cannot list them; fix depth to a constant for a grid."
            )
        for i in range(self._values["depth"] if free_per_module else 0):
            for key in free_per_module:
                out[f"fire{i + 2}.{key}"] = grid_values(source, f"per_module.{key}", self._per_module[key])
        return out

    def sample(self, trial: optuna.trial.BaseTrial, input_shape: Sequence[int], num_classes: int) -> NetSpec:
        """Draw one network (define-by-run: ``trial.suggest_*`` for every distribution).

        Args:
            trial: an Optuna trial; a ``FixedTrial`` pins the network.
            input_shape: (channels, height, width) of the data.
            num_classes: width of the classifier output.

        Returns:
            A validated NetSpec named ``<space name>-<spec hash>``.

        Raises:
            InfeasibleArchitecture: the drawn values make no valid network (for instance
                ``pct3x3 + pct5x5 > 1``, or a FixedTrial value outside a key's domain).
        """
        p = {key: suggest(trial, key, v) for key, v in self._values.items()}
        for key, value in p.items():
            _check_domain(key, value)
        modules = []
        for i in range(p["depth"]):
            drawn = {key: suggest(trial, f"fire{i + 2}.{key}", v) for key, v in self._per_module.items()}
            for key, value in drawn.items():
                _check_domain(f"fire{i + 2}.{key}", value, KEYS[key])
            modules.append({**{key: p[key] for key in PER_MODULE_KEYS if key in p}, **drawn})
        nodes = _build_nodes(p, modules, (int(input_shape[1]), int(input_shape[2])))
        raw = {"name": self.name, "input": list(input_shape), "num_classes": num_classes, "nodes": nodes}
        try:
            spec = NetSpec.from_dict(raw, source=f"sample of {self.name}")
        except SpecError as exc:
            raise InfeasibleArchitecture(str(exc)) from None
        return dataclasses.replace(spec, name=f"{self.name}-{spec.hash}")

    def __repr__(self) -> str:
        return f"TemplateSpace(name={self.name!r}, free={sorted(self.distributions())})"


def _check_domain(name: str, value: Any, k: Key | None = None) -> None:
    # Distributions are checked when the file loads; this catches FixedTrial and enqueued values.
    k = k or KEYS[name]
    if not in_domain(k, value):
        raise InfeasibleArchitecture(f"parameter {name!r} = {value!r} is outside its domain: {k.domain}.")


def expand_widths(depth: int, base_e: int, incr_e: int, freq: int) -> list[int]:
    """The paper's expand widths: ``e_i = base_e + incr_e * floor(i / freq)`` for ``i < depth``."""
    return [base_e + incr_e * (i // freq) for i in range(depth)]


def pool_slots(pools: int, depth: int, layout: str) -> list[int]:
    """Where ``pools`` max pools go: slot 0 is after the stem, slot j after the j-th Fire module.

    No pool follows the last module. ``even`` spreads them from the stem to the last gap
    (SqueezeNet 1.0: after conv1, fire4, fire8 of 8 modules); ``early`` puts them after the stem
    and every second module (SqueezeNet 1.1: conv1, fire3, fire5), which is cheaper because the
    later, wider modules run on smaller maps. ``pools`` must be at most ``depth``.
    """
    if pools <= 1:
        return list(range(pools))
    if layout == "even":
        return [j * (depth - 1) // (pools - 1) for j in range(pools)]
    step = min(2, (depth - 1) // (pools - 1))
    return [j * step for j in range(pools)]


def max_pools(height: int, width: int, min_spatial: int) -> int:
    """How many 2x2 stride-2 pools a ``height x width`` map takes with no side below ``min_spatial``."""
    n, side = 0, min(height, width)
    while side // 2 >= min_spatial:
        side //= 2
        n += 1
    return n


def _build_nodes(
    p: dict[str, Any], modules: list[dict[str, float]], hw: tuple[int, int]
) -> list[dict[str, Any]]:
    depth = p["depth"]
    stem_pad = (p["stem_kernel"] - 1) // 2
    stem_hw = [(s + 2 * stem_pad - p["stem_kernel"]) // p["stem_stride"] + 1 for s in hw]
    # The pool count adapts to the input so one space serves 8x8 digits and 32x32 images alike.
    n_pools = min(p["pools"], depth, max_pools(stem_hw[0], stem_hw[1], p["min_spatial"]))
    slots = set(pool_slots(n_pools, depth, p["pool_layout"]))
    conv = {"op": "conv", "bn": p["bn"], "act": p["act"]}
    nodes: list[dict[str, Any]] = [
        {
            "name": "conv1",
            **conv,
            "out": p["stem_width"],
            "kernel": p["stem_kernel"],
            "stride": p["stem_stride"],
        }
    ]
    if 0 in slots:
        nodes.append({"name": "pool1", "op": "maxpool", "kernel": 2})
    prev, prev_c = nodes[-1]["name"], p["stem_width"]
    widths = expand_widths(depth, p["base_e"], p["incr_e"], p["freq"])
    for i, (e, m) in enumerate(zip(widths, modules, strict=True)):
        n = i + 2
        squeeze, mix = fire_channels(e, m["sr"], m["pct3x3"], m["pct5x5"])
        nodes.append(
            {
                "name": f"fire{n}",
                "op": "fire",
                "squeeze": squeeze,
                "expand": mix,
                "bn": p["bn"],
                "act": p["act"],
            }
        )
        if p["bypass"] == "complex" or (p["bypass"] == "simple" and prev_c == e):
            add: dict[str, Any] = {"name": f"by{n}", "op": "add", "inputs": [prev, f"fire{n}"]}
            if prev_c != e:
                add["project"] = True
            nodes.append(add)
        if i + 1 in slots:
            nodes.append({"name": f"pool{n}", "op": "maxpool", "kernel": 2})
        prev, prev_c = nodes[-1]["name"], e
    last = depth + 1
    if p["dropout"] > 0:
        nodes.append({"name": f"drop{last}", "op": "dropout", "p": p["dropout"]})
    nodes.append({"name": f"conv{last + 1}", "op": "conv", "out": NUM_CLASSES, "kernel": 1, "act": "none"})
    nodes.append({"name": "gap", "op": "global_avgpool"})
    return nodes
