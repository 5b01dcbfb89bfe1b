"""What every search space shares: the interface, the infeasible outcome, the Fire width rule.

Two kinds of space implement :class:`SearchSpace`: the Fire template
(:class:`archsearch.search.space.TemplateSpace`) and graph spaces
(:class:`archsearch.search.graph_space.GraphSpace`). The search, the exports and the Python API
only use this protocol, so they run either kind alike. This module sits below both, so neither
imports the other.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import optuna
import yaml
from optuna.distributions import BaseDistribution

from archsearch.errors import ConfigError
from archsearch.net.spec import NetSpec, _yaml_problem

__all__ = [
    "InfeasibleArchitecture",
    "SearchSpace",
    "allows",
    "content_hash",
    "fire_channels",
    "half_up",
    "parse_points",
    "read_space_file",
]


class InfeasibleArchitecture(Exception):
    """Sampled parameters that make no valid network (a search outcome, not a user error).

    Args:
        reason: one sentence saying which parameters clash and why.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class SearchSpace(Protocol):
    """What the search needs of a space: sample a trial into a NetSpec, list its parameters.

    Attributes:
        name: the space's name (its file name without ``.yaml``), recorded on the study.
        path: the file it was read from, or None for a space built from a mapping.
    """

    name: str
    path: Path | None

    @property
    def hash(self) -> str:
        """12 hex digits of the space's content (not its name or description)."""
        ...

    def sample(self, trial: optuna.trial.BaseTrial, input_shape: Sequence[int], num_classes: int) -> NetSpec:
        """Draw one network define-by-run; raises ``InfeasibleArchitecture`` for an invalid draw."""
        ...

    def grid(self) -> dict[str, list[Any]]:
        """Every parameter's values, for ``optuna.samplers.GridSampler``; ``ConfigError`` if none."""
        ...

    def distributions(self) -> dict[str, BaseDistribution]:
        """Optuna distributions of the parameters a trial may draw, by parameter name."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The space in its file syntax; reading it back gives the same space."""
        ...


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


def read_space_file(path: Path) -> Any:
    """The parsed YAML of a space file.

    Raises:
        ConfigError: the file cannot be read or is not valid YAML (with line and column).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read search space {path}: {exc.strerror}.") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}.") from None


def allows(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``dist`` can draw ``value`` (a choice; a number in range and on the step grid)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(dist, IntDistribution):
        return (
            isinstance(value, int) and dist.low <= value <= dist.high and (value - dist.low) % dist.step == 0
        )
    if isinstance(dist, FloatDistribution):
        if not dist.low <= value <= dist.high:
            return False
        return (
            dist.step is None
            or abs(round((value - dist.low) / dist.step) * dist.step - (value - dist.low)) < 1e-9
        )
    return False


def parse_points(
    raw: Any, distributions: Mapping[str, BaseDistribution], source: str
) -> dict[str, dict[str, Any]]:
    """A space file's ``points:``: named parameter sets a study can start from (``warm_start.points``).

    Each point names some of the space's parameters with a value each distribution allows;
    parameters it leaves out are drawn by the sampler.

    Raises:
        ConfigError: naming the file, the point and the parameter that is unknown or out of range.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: key 'points' must map point names to parameter values.")
    out: dict[str, dict[str, Any]] = {}
    for name, params in raw.items():
        if not isinstance(params, Mapping) or not params:
            raise ConfigError(f"{source}: points.{name} must map parameter names to values.")
        for key, value in params.items():
            dist = distributions.get(str(key))
            if dist is None:
                raise ConfigError(
                    f"{source}: points.{name}.{key} is not a parameter of the space; "
                    f"allowed: {', '.join(distributions)}."
                )
            if not allows(dist, value):
                raise ConfigError(f"{source}: points.{name}.{key} = {value!r} is outside the space's {dist}.")
        out[str(name)] = {str(k): v for k, v in params.items()}
    return out


def _plain(value: Any) -> Any:
    # JSON keys must be strings; a kernel map has int keys, which sort_keys could not mix with str.
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def content_hash(content: Mapping[str, Any]) -> str:
    """12 hex digits of ``content`` less ``name``, ``description`` and ``points`` (key order ignored)."""
    body = {k: v for k, v in content.items() if k not in ("name", "description", "points")}
    canon = json.dumps(_plain(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:12]


def half_up(x: float) -> int:
    """``x`` rounded half up (Python's round() takes halves to even: 2.5 channels should be 3)."""
    return math.floor(x + 0.5)


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
    e5 = half_up(pct5x5 * e)
    e3 = min(half_up(pct3x3 * e), e - e5)
    mix = {k: c for k, c in ((1, e - e3 - e5), (3, e3), (5, e5)) if c > 0}
    squeeze = min(max(1, half_up(sr * e)), e - 1)
    return squeeze, mix
