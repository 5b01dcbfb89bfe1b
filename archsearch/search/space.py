"""Search spaces: YAML files that declare SqueezeNet's metaparameters as distributions.

A search-space file is plain YAML (no Hydra needed). Each top-level key is one metaparameter
of the Fire template below and holds either a constant or a distribution:

- ``depth: 4``: a plain value is a constant and is not a search parameter;
- ``{int: [low, high]}`` with optional ``step: k`` (``high - low`` a multiple of ``k``) or
  ``log: true``;
- ``{float: [low, high]}`` with optional ``step: x`` or ``log: true`` (``low > 0``);
- ``{categorical: [a, b, c]}``: one of the listed values.

``per_module:`` maps per-module keys (``sr``, ``pct3x3``, ``pct5x5``) to distributions that are
drawn once for every Fire module, named ``fire2.sr``, ``fire3.sr``, ...: how many exist depends
on the sampled ``depth`` (define-by-run, so a conditional space needs no special syntax).

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
import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from archsearch.errors import ConfigError, SpecError
from archsearch.net.nodes import NUM_CLASSES
from archsearch.net.spec import NetSpec, _yaml_problem
from archsearch.resources import find_config

__all__ = [
    "KEYS",
    "PER_MODULE_KEYS",
    "InfeasibleArchitecture",
    "SearchSpace",
    "expand_widths",
    "fire_channels",
    "load_space",
    "max_pools",
    "pool_slots",
]

DIST_TYPES = ("int", "float", "categorical")
_DIST_OPTIONS = {"int": {"step", "log"}, "float": {"step", "log"}, "categorical": set()}
_META_KEYS = ("description", "per_module")


class InfeasibleArchitecture(Exception):
    """Sampled parameters that make no valid network (a search outcome, not a user error).

    Args:
        reason: one sentence saying which parameters clash and why.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Key:
    """One template key: its value type, default, and the domain every value must lie in."""

    kind: type
    default: Any
    domain: str
    ok: Callable[[Any], bool]
    doc: str
    odd: bool = False


def _int_key(default: int, minimum: int, doc: str, odd: bool = False) -> _Key:
    if odd:
        return _Key(
            int, default, f"an odd integer >= {minimum}", lambda v: v >= minimum and v % 2 == 1, doc, True
        )
    return _Key(int, default, f"an integer >= {minimum}", lambda v: v >= minimum, doc)


def _float_key(default: float, domain: str, ok: Callable[[float], bool], doc: str) -> _Key:
    return _Key(float, default, f"a number in {domain}", ok, doc)


def _choice_key(default: str, options: tuple[str, ...], doc: str) -> _Key:
    return _Key(str, default, f"one of {', '.join(options)}", lambda v: v in options, doc)


#: Template keys, in sampling order (``depth`` before any per-module key), with defaults.
KEYS: dict[str, _Key] = {
    "stem_width": _int_key(32, 1, "output channels of the stem conv (conv1)"),
    "stem_kernel": _int_key(3, 1, "kernel of the stem conv ('same' padding)", odd=True),
    "stem_stride": _int_key(1, 1, "stride of the stem conv"),
    "depth": _int_key(4, 1, "number of Fire modules"),
    "base_e": _int_key(32, 2, "expand channels of the first Fire module"),
    "incr_e": _int_key(32, 0, "expand channels added every freq modules"),
    "freq": _int_key(2, 1, "modules between expand-width increases"),
    # (0, 1]: a zero squeeze would cut the module in two.
    "sr": _float_key(0.125, "(0, 1]", lambda v: 0 < v <= 1, "squeeze ratio SR: squeeze / expand channels"),
    "pct3x3": _float_key(0.5, "[0, 1]", lambda v: 0 <= v <= 1, "share of 3x3 filters in the expand layer"),
    "pct5x5": _float_key(0.0, "[0, 1]", lambda v: 0 <= v <= 1, "share of 5x5 filters in the expand layer"),
    "pools": _int_key(2, 0, "2x2 stride-2 max pools wanted (capped by the input size)"),
    "pool_layout": _choice_key("even", ("even", "early"), "where the pools go"),
    "min_spatial": _int_key(2, 1, "smallest feature-map side a pool may produce"),
    "bypass": _choice_key("none", ("none", "simple", "complex"), "shortcut connections"),
    "dropout": _float_key(0.5, "[0, 1)", lambda v: 0 <= v < 1, "dropout before the classifier (0: none)"),
    "bn": _Key(bool, False, "true or false", lambda v: True, "batch norm after stem and Fire convs"),
    "act": _choice_key("relu", ("relu", "relu6", "gelu", "silu"), "activation of stem and Fire convs"),
}

#: Keys that ``per_module:`` may draw separately for every Fire module.
PER_MODULE_KEYS = ("sr", "pct3x3", "pct5x5")

Value = Any  # a constant, or an optuna distribution to sample


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Read and validate a search-space file.

    Args:
        name_or_path: a space's name (``"fire"`` reads the first ``search_spaces/fire.yaml`` of
            the user's config directories, then the package's; see ``archsearch.resources``) or
            the path of a YAML file.

    Raises:
        ConfigError: one sentence naming the file, the key and what is allowed.
    """
    path = find_config("search_spaces", name_or_path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read search space {path}: {exc.strerror}.") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}.") from None
    return SearchSpace.from_dict(raw, name=path.stem, path=path)


class SearchSpace:
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
        self._values = values
        self._per_module = per_module

    @classmethod
    def from_dict(cls, raw: Any, name: str = "space", path: Path | None = None) -> SearchSpace:
        """Validate a plain mapping (parsed YAML, or an OmegaConf container turned into a dict).

        Keys left out take the template defaults (see :data:`KEYS`).

        Raises:
            ConfigError: naming the source, the key and what is allowed.
        """
        source = str(path) if path is not None else f"search space {name!r}"
        if raw is None:
            raise ConfigError(f"{source} is empty; give at least one key such as 'depth: {{int: [2, 6]}}'.")
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source} must be a mapping of keys to values or distributions.")
        allowed = [*KEYS, *_META_KEYS]
        for key in raw:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(
                    f"{source} has unknown key {key!r}{hint}; allowed keys: {', '.join(allowed)}."
                )
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"{source} key 'description' must be a string.")
        per_raw = raw.get("per_module", {}) or {}
        if not isinstance(per_raw, Mapping):
            raise ConfigError(
                f"{source} key 'per_module' must map {', '.join(PER_MODULE_KEYS)} to distributions."
            )
        per_module: dict[str, Value] = {}
        for key, spec in per_raw.items():
            if key not in PER_MODULE_KEYS:
                raise ConfigError(
                    f"{source} key 'per_module' has {key!r}, which is not drawn per module; "
                    f"allowed: {', '.join(PER_MODULE_KEYS)}."
                )
            if key in raw:
                raise ConfigError(
                    f"{source} sets {key!r} both at the top level and under 'per_module'; keep one."
                )
            per_module[key] = _parse_value(source, f"per_module.{key}", KEYS[key], spec)
        values = {
            key: _parse_value(source, key, k, raw[key]) if key in raw else k.default
            for key, k in KEYS.items()
            if key not in per_module
        }
        space = cls(name, path, values, per_module, description)
        space._check_mix_can_fit(source)
        return space

    def _check_mix_can_fit(self, source: str) -> None:
        lows = {key: _smallest({**self._values, **self._per_module}[key]) for key in ("pct3x3", "pct5x5")}
        if lows["pct3x3"] + lows["pct5x5"] > 1.0 + 1e-9:
            raise ConfigError(
                f"{source} keys 'pct3x3' and 'pct5x5' can never sum to <= 1 "
                f"(their smallest values are {lows['pct3x3']} and {lows['pct5x5']}); lower one of them."
            )

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna distributions of the top-level free parameters (per-module ones are conditional)."""
        return {k: v for k, v in self._values.items() if isinstance(v, BaseDistribution)}

    def to_dict(self) -> dict[str, Any]:
        """Every key with its constant or distribution, in the file syntax (defaults filled in).

        ``SearchSpace.from_dict(space.to_dict())`` is the same space.
        """
        out: dict[str, Any] = {"description": self.description} if self.description else {}
        out.update({key: _dump_value(v) for key, v in self._values.items()})
        if self._per_module:
            out["per_module"] = {key: _dump_value(v) for key, v in self._per_module.items()}
        return out

    def grid(self) -> dict[str, list[Any]]:
        """Every free parameter's values, for ``optuna.samplers.GridSampler``.

        Raises:
            ConfigError: naming a parameter that has no finite set of values (a float without
                ``step``), or per-module parameters whose names depend on a free ``depth``.
        """
        source = str(self.path) if self.path is not None else f"search space {self.name!r}"
        out = {key: _grid_values(source, key, v) for key, v in self.distributions.items()}
        free_per_module = [k for k, v in self._per_module.items() if isinstance(v, BaseDistribution)]
        if free_per_module and "depth" in out:
            raise ConfigError(
                f"{source} key 'per_module.{free_per_module[0]}' names one parameter per Fire module and "
                "'depth' is not fixed, so a grid cannot list them; fix depth to a constant for a grid."
            )
        for i in range(self._values["depth"] if free_per_module else 0):
            for key in free_per_module:
                out[f"fire{i + 2}.{key}"] = _grid_values(source, f"per_module.{key}", self._per_module[key])
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
        p = {key: _suggest(trial, key, v) for key, v in self._values.items()}
        for key, value in p.items():
            _check_domain(key, value)
        modules = []
        for i in range(p["depth"]):
            drawn = {key: _suggest(trial, f"fire{i + 2}.{key}", v) for key, v in self._per_module.items()}
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
        return f"SearchSpace(name={self.name!r}, free={sorted(self.distributions)})"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _type_ok(k: _Key, v: Any) -> bool:
    if k.kind is bool:
        return isinstance(v, bool)
    if k.kind is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if k.kind is float:
        return _is_number(v)
    return isinstance(v, str)


def _parse_value(source: str, key: str, k: _Key, spec: Any) -> Value:
    where = f"{source} key {key!r}"
    if not isinstance(spec, Mapping):
        if not _type_ok(k, spec) or not k.ok(spec):
            raise ConfigError(f"{where} is {spec!r}; allowed: {k.domain}, or a distribution.")
        return float(spec) if k.kind is float else spec
    kinds = [t for t in DIST_TYPES if t in spec]
    if len(kinds) != 1:
        unknown = [str(t) for t in spec if t not in ("step", "log")]
        if len(kinds) > 1:
            what = f"several distribution types ({', '.join(kinds)})"
        elif unknown:
            what = f"unknown distribution type {unknown[0]!r}"
        else:
            what = "options but no distribution type"
        raise ConfigError(
            f"{where} has {what}; a distribution is one of {{int: [low, high]}}, "
            "{float: [low, high]} or {categorical: [choices]}, and a plain value is a constant."
        )
    kind = kinds[0]
    extra = set(spec) - {kind} - _DIST_OPTIONS[kind]
    if extra:
        raise ConfigError(
            f"{where} has option {sorted(map(str, extra))[0]!r}, which {kind} does not take; "
            f"allowed options: {', '.join(sorted(_DIST_OPTIONS[kind])) or 'none'}."
        )
    if kind == "categorical":
        return _parse_categorical(where, k, spec["categorical"])
    if k.kind not in (int, float):
        raise ConfigError(f"{where} takes {k.domain}; use {{categorical: [...]}} or a constant.")
    if kind == "float" and k.kind is int:
        raise ConfigError(f"{where} takes integers; use {{int: [low, high]}} or {{categorical: [...]}}.")
    if kind == "int" and k.kind is float:
        raise ConfigError(f"{where} takes numbers; use {{float: [low, high]}} or {{categorical: [...]}}.")
    return _parse_range(where, kind, k, spec)


def _parse_categorical(where: str, k: _Key, choices: Any) -> CategoricalDistribution:
    if not isinstance(choices, Sequence) or isinstance(choices, str):
        raise ConfigError(f"{where} must list its choices, e.g. {{categorical: [a, b]}}.")
    if not choices:
        raise ConfigError(f"{where} has no choices; {{categorical: [...]}} needs at least one value.")
    for c in choices:
        if not _type_ok(k, c) or not k.ok(c):
            raise ConfigError(f"{where} has choice {c!r}; every choice must be {k.domain}.")
    values = [float(c) for c in choices] if k.kind is float else list(choices)
    if len(set(values)) != len(values):
        raise ConfigError(f"{where} lists a choice twice in {list(choices)!r}; list each value once.")
    return CategoricalDistribution(values)


def _parse_range(where: str, kind: str, k: _Key, spec: Mapping[str, Any]) -> BaseDistribution:
    bounds = spec[kind]
    ok_type = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if kind == "int" else _is_number
    if isinstance(bounds, str) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise ConfigError(f"{where} must be {{{kind}: [low, high]}}, got {bounds!r}.")
    low, high = bounds
    if not ok_type(low) or not ok_type(high):
        raise ConfigError(f"{where} bounds must be {kind} numbers, got {list(bounds)!r}.")
    if low > high:
        raise ConfigError(
            f"{where} has low {low} > high {high}; write {{{kind}: [low, high]}} with low <= high."
        )
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where} option 'log' must be true or false, got {log!r}.")
    step = spec.get("step")
    if log and step is not None:
        raise ConfigError(f"{where} sets both 'step' and 'log: true'; a log scale cannot have a step.")
    if log and low <= 0:
        raise ConfigError(f"{where} has log: true with low {low}; a log scale needs low > 0.")
    if step is not None:
        if not ok_type(step) or step <= 0:
            raise ConfigError(f"{where} option 'step' must be a positive {kind}, got {step!r}.")
        ratio = (high - low) / step
        if abs(ratio - round(ratio)) > 1e-9 * max(1.0, ratio):
            raise ConfigError(
                f"{where} has step {step}, which does not divide high - low = {high - low}; "
                "high - low must be a multiple of step."
            )
    for bound in (low, high):
        if not k.ok(bound):
            raise ConfigError(f"{where} has bound {bound}, outside what the key allows: {k.domain}.")
    if k.odd and low != high and (step or 1) % 2:
        raise ConfigError(f"{where} would draw even values; use an even step, e.g. step: 2, for {k.domain}.")
    if kind == "int":
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))


def _smallest(v: Value) -> float:
    if isinstance(v, CategoricalDistribution):
        # Only number keys reach here, and their choices were checked to be numbers.
        return float(min(cast(Sequence[float], v.choices)))
    if isinstance(v, IntDistribution | FloatDistribution):
        return float(v.low)
    return float(v)


def _dump_value(v: Value) -> Any:
    if isinstance(v, CategoricalDistribution):
        return {"categorical": list(v.choices)}
    if isinstance(v, IntDistribution | FloatDistribution):
        out: dict[str, Any] = {"int" if isinstance(v, IntDistribution) else "float": [v.low, v.high]}
        if v.step is not None and not (isinstance(v, IntDistribution) and v.step == 1):
            out["step"] = v.step
        if v.log:
            out["log"] = True
        return out
    return v


def _grid_values(source: str, key: str, v: BaseDistribution) -> list[Any]:
    if isinstance(v, CategoricalDistribution):
        return list(v.choices)
    if isinstance(v, IntDistribution):
        return list(range(v.low, v.high + 1, v.step))
    assert isinstance(v, FloatDistribution)
    if v.step is None:
        raise ConfigError(
            f"{source} key {key!r} is a continuous float, which a grid cannot list; "
            "give it a 'step' or make it categorical."
        )
    n = round((v.high - v.low) / v.step)
    # Rounded so that e.g. 0.1 * 3 is the 0.3 a user wrote, not 0.30000000000000004.
    return [round(v.low + i * v.step, 12) for i in range(n + 1)]


def _suggest(trial: optuna.trial.BaseTrial, name: str, v: Value) -> Any:
    if isinstance(v, IntDistribution):
        return trial.suggest_int(name, v.low, v.high, step=v.step, log=v.log)
    if isinstance(v, FloatDistribution):
        return trial.suggest_float(name, v.low, v.high, step=v.step, log=v.log)
    if isinstance(v, CategoricalDistribution):
        return trial.suggest_categorical(name, v.choices)
    return v


def _check_domain(name: str, value: Any, k: _Key | None = None) -> None:
    # Distributions are checked when the file loads; this catches FixedTrial and enqueued values.
    k = k or KEYS[name]
    if not _type_ok(k, value) or not k.ok(value):
        raise InfeasibleArchitecture(f"parameter {name!r} = {value!r} is outside its domain: {k.domain}.")


def _half_up(x: float) -> int:
    # Python's round() rounds halves to even; a width of 2.5 channels should become 3, like 1.5 -> 2.
    return math.floor(x + 0.5)


def expand_widths(depth: int, base_e: int, incr_e: int, freq: int) -> list[int]:
    """The paper's expand widths: ``e_i = base_e + incr_e * floor(i / freq)`` for ``i < depth``."""
    return [base_e + incr_e * (i // freq) for i in range(depth)]


def fire_channels(e: int, sr: float, pct3x3: float, pct5x5: float) -> tuple[int, dict[int, int]]:
    """Squeeze width and kernel mix of a Fire module with ``e`` expand channels.

    ``s = round(sr * e)`` clamped to ``[1, e - 1]`` (squeeze < expand; ``sr = 1.0`` gives
    ``e - 1``); ``round(pct3x3 * e)`` 3x3 and ``round(pct5x5 * e)`` 5x5 filters, the rest 1x1;
    kernels with no channels are left out of the mix.

    Raises:
        InfeasibleArchitecture: ``pct3x3 + pct5x5 > 1``.
    """
    if pct3x3 + pct5x5 > 1.0 + 1e-9:
        raise InfeasibleArchitecture(
            f"pct3x3 ({pct3x3}) + pct5x5 ({pct5x5}) exceeds 1, leaving no room for the 1x1 share."
        )
    e5 = _half_up(pct5x5 * e)
    e3 = min(_half_up(pct3x3 * e), e - e5)
    mix = {k: c for k, c in ((1, e - e3 - e5), (3, e3), (5, e5)) if c > 0}
    squeeze = min(max(1, _half_up(sr * e)), e - 1)
    return squeeze, mix


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
