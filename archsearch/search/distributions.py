"""The search-space file syntax: the Fire template's keys, their domains and their distributions.

Each top-level key of a search-space file is one metaparameter of the Fire template (see
:data:`KEYS`) and holds either a constant or a distribution:

- ``depth: 4``: a plain value is a constant and is not a search parameter;
- ``{int: [low, high]}`` with optional ``step: k`` (``high - low`` a multiple of ``k``) or
  ``log: true``;
- ``{float: [low, high]}`` with optional ``step: x`` or ``log: true`` (``low > 0``);
- ``{categorical: [a, b, c]}``: one of the listed values.

``per_module:`` maps per-module keys (``sr``, ``pct3x3``, ``pct5x5``) to distributions that are
drawn once for every Fire module, named ``fire2.sr``, ``fire3.sr``, ...: how many exist depends
on the sampled ``depth`` (define-by-run, so a conditional space needs no special syntax).

This module turns that syntax into Optuna distributions and back, and checks every value
against its key's domain; :mod:`archsearch.search.space` reads the files and samples them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from archsearch.checks import check_flag
from archsearch.errors import ConfigError

__all__ = [
    "DIST_TYPES",
    "KEYS",
    "META_KEYS",
    "PER_MODULE_KEYS",
    "Key",
    "ParsedSpace",
    "Value",
    "dump_value",
    "grid_values",
    "in_domain",
    "parse_space",
    "parse_value",
    "suggest",
]

DIST_TYPES = ("int", "float", "categorical")
_DIST_OPTIONS = {"int": {"step", "log"}, "float": {"step", "log"}, "categorical": set()}
#: Top-level keys that are not template metaparameters.
META_KEYS = ("description", "per_module")

Value = Any  # a constant, or an optuna distribution to sample


@dataclass(frozen=True)
class Key:
    """One template key: its value type, default, and the domain every value must lie in."""

    kind: type
    default: Any
    domain: str
    ok: Callable[[Any], bool]
    doc: str
    odd: bool = False


def _int_key(default: int, minimum: int, doc: str, odd: bool = False, maximum: int = 4096) -> Key:
    # A bound above: `depth: 1000000` sampled a network that took hours to build and cost.
    if odd:
        return Key(
            int,
            default,
            f"an odd integer in [{minimum}, {maximum}]",
            lambda v: minimum <= v <= maximum and v % 2 == 1,
            doc,
            True,
        )
    return Key(int, default, f"an integer in [{minimum}, {maximum}]", lambda v: minimum <= v <= maximum, doc)


def _float_key(default: float, domain: str, ok: Callable[[float], bool], doc: str) -> Key:
    return Key(float, default, f"a number in {domain}", ok, doc)


def _choice_key(default: str, options: tuple[str, ...], doc: str) -> Key:
    return Key(str, default, f"one of {', '.join(options)}", lambda v: v in options, doc)


#: Template keys, in sampling order (``depth`` before any per-module key), with defaults.
KEYS: dict[str, Key] = {
    "stem_width": _int_key(32, 1, "output channels of the stem conv (conv1)"),
    "stem_kernel": _int_key(3, 1, "kernel of the stem conv ('same' padding)", odd=True, maximum=31),
    "stem_stride": _int_key(1, 1, "stride of the stem conv", maximum=8),
    "depth": _int_key(4, 1, "number of Fire modules", maximum=64),
    "base_e": _int_key(32, 2, "expand channels of the first Fire module"),
    "incr_e": _int_key(32, 0, "expand channels added every freq modules"),
    "freq": _int_key(2, 1, "modules between expand-width increases", maximum=64),
    # (0, 1]: a zero squeeze would cut the module in two.
    "sr": _float_key(0.125, "(0, 1]", lambda v: 0 < v <= 1, "squeeze ratio SR: squeeze / expand channels"),
    "pct3x3": _float_key(0.5, "[0, 1]", lambda v: 0 <= v <= 1, "share of 3x3 filters in the expand layer"),
    "pct5x5": _float_key(0.0, "[0, 1]", lambda v: 0 <= v <= 1, "share of 5x5 filters in the expand layer"),
    "pools": _int_key(2, 0, "2x2 stride-2 max pools wanted (capped by the input size)", maximum=16),
    "pool_layout": _choice_key("even", ("even", "early"), "where the pools go"),
    "min_spatial": _int_key(2, 1, "smallest feature-map side a pool may produce", maximum=1024),
    "bypass": _choice_key("none", ("none", "simple", "complex"), "shortcut connections"),
    "dropout": _float_key(0.5, "[0, 1)", lambda v: 0 <= v < 1, "dropout before the classifier (0: none)"),
    "bn": Key(bool, False, "true or false", lambda v: True, "batch norm after stem and Fire convs"),
    "act": _choice_key("relu", ("relu", "relu6", "gelu", "silu"), "activation of stem and Fire convs"),
}

#: Keys that ``per_module:`` may draw separately for every Fire module.
PER_MODULE_KEYS = ("sr", "pct3x3", "pct5x5")


@dataclass(frozen=True)
class ParsedSpace:
    """A validated search-space mapping.

    Attributes:
        values: every template key not drawn per module, with its constant or distribution.
        per_module: the keys drawn once per Fire module, with their constant or distribution.
        description: the file's free-text description ("" if none).
    """

    values: dict[str, Value]
    per_module: dict[str, Value]
    description: str


def parse_space(raw: Any, source: str) -> ParsedSpace:
    """Validate a plain mapping in the file syntax; keys left out take their :data:`KEYS` default.

    Args:
        raw: parsed YAML (or an OmegaConf container turned into a dict).
        source: what to call the mapping in messages (a path, or ``search space 'name'``).

    Raises:
        ConfigError: naming the source, the key and what is allowed.
    """
    if raw is None:
        raise ConfigError(f"{source} is empty; give at least one key such as 'depth: {{int: [2, 6]}}'.")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source} must be a mapping of keys to values or distributions.")
    allowed = [*KEYS, *META_KEYS]
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source} has unknown key {key!r}{hint}; allowed keys: {', '.join(allowed)}.")
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
        per_module[key] = parse_value(f"{source} key 'per_module.{key}'", KEYS[key], spec)
    values = {
        key: parse_value(f"{source} key {key!r}", k, raw[key]) if key in raw else k.default
        for key, k in KEYS.items()
        if key not in per_module
    }
    _check_mix_can_fit(source, {**values, **per_module})
    return ParsedSpace(values, per_module, description)


def _check_mix_can_fit(source: str, merged: dict[str, Value]) -> None:
    lows = {key: _smallest(merged[key]) for key in ("pct3x3", "pct5x5")}
    if lows["pct3x3"] + lows["pct5x5"] > 1.0 + 1e-9:
        raise ConfigError(
            f"{source} keys 'pct3x3' and 'pct5x5' can never sum to <= 1 "
            f"(their smallest values are {lows['pct3x3']} and {lows['pct5x5']}); lower one of them."
        )


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _type_ok(k: Key, v: Any) -> bool:
    if k.kind is object:
        return True
    if k.kind is bool:
        return isinstance(v, bool)
    if k.kind is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if k.kind is float:
        return _is_number(v)
    return isinstance(v, str)


def in_domain(k: Key, value: Any) -> bool:
    """Whether ``value`` has ``k``'s type and lies in its domain."""
    return _type_ok(k, value) and k.ok(value)


def parse_value(where: str, k: Key, spec: Any) -> Value:
    """A constant or a distribution in the file syntax, checked against ``k``'s type and domain.

    Args:
        where: the start of every error sentence, naming the file and the key (or node and field).
        k: the key's type and domain; every bound and choice must lie in it.
        spec: the value as written.

    Raises:
        ConfigError: one sentence starting with ``where``.
    """
    if not isinstance(spec, Mapping):
        if not in_domain(k, spec):
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


def _parse_categorical(where: str, k: Key, choices: Any) -> CategoricalDistribution:
    if not isinstance(choices, Sequence) or isinstance(choices, str):
        raise ConfigError(f"{where} must list its choices, e.g. {{categorical: [a, b]}}.")
    if not choices:
        raise ConfigError(f"{where} has no choices; {{categorical: [...]}} needs at least one value.")
    for c in choices:
        if not in_domain(k, c):
            raise ConfigError(f"{where} has choice {c!r}; every choice must be {k.domain}.")
    values = [float(c) for c in choices] if k.kind is float else list(choices)
    if len(set(values)) != len(values):
        raise ConfigError(f"{where} lists a choice twice in {list(choices)!r}; list each value once.")
    return CategoricalDistribution(values)


def _parse_range(where: str, kind: str, k: Key, spec: Mapping[str, Any]) -> BaseDistribution:
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
    log = check_flag(f"{where} option 'log'", spec.get("log", False))
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


def dump_value(v: Value) -> Any:
    """A constant or distribution in the file syntax (``parse_space`` reads it back the same)."""
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


def grid_values(source: str, key: str, v: BaseDistribution) -> list[Any]:
    """Every value ``v`` can take, for a grid search.

    Raises:
        ConfigError: ``v`` is a float without ``step``, which has no finite set of values.
    """
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


def suggest(trial: optuna.trial.BaseTrial, name: str, v: Value) -> Any:
    """Draw parameter ``name`` from ``v`` through ``trial``; a constant is returned as it is."""
    if isinstance(v, IntDistribution):
        return trial.suggest_int(name, v.low, v.high, step=v.step, log=v.log)
    if isinstance(v, FloatDistribution):
        return trial.suggest_float(name, v.low, v.high, step=v.step, log=v.log)
    if isinstance(v, CategoricalDistribution):
        return trial.suggest_categorical(name, v.choices)
    return v
