"""Start a new study from what is already known: another study's front, or named points of the space.

A warm start enqueues parameter sets (``study.enqueue_trial``) before a new study's first trial,
so the sampler's first observations are networks worth having rather than random draws:

- ``warm_start.study=NAME``: the front of another study (in this study's storage, or in
  ``warm_start.storage``), at most ``warm_start.members`` of it, chosen on validation accuracy
  and spread over sizes. Parameters this space does not have are dropped and ones it adds are
  drawn by the sampler; a value this space cannot draw is left to the sampler too.
- ``warm_start.points=[NAME, ...]``: named points of the space file's ``points:`` (the fire
  space names its nearest points to SqueezeNet 1.0 and 1.1).

It is not a resume: it applies only while the study has no trials (rerunning the command to
resume a warm-started study enqueues nothing again). Every name is checked before anything is
written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from archsearch.checks import check_int, known_fields
from archsearch.errors import ConfigError
from archsearch.search.space_core import SearchSpace, allows

__all__ = ["WarmStartSettings", "enqueue_warm_start", "warm_start_params"]

#: The trial user attr naming where an enqueued trial came from (``study:NAME#trial`` or ``point:NAME``).
SOURCE_ATTR = "warm_start"


@dataclass(frozen=True)
class WarmStartSettings:
    """The ``warm_start`` block: what a new study is seeded with (module docstring)."""

    study: str | None = None  # another study whose front seeds this one
    storage: str | None = None  # where that study is stored (None: this study's storage)
    members: int | None = None  # at most this many of its front, spread over sizes (None: all)
    points: tuple[str, ...] = ()  # named points of the space file's `points:`

    def __post_init__(self) -> None:
        if self.study is not None and (not isinstance(self.study, str) or not self.study.strip()):
            raise ConfigError(f"warm_start.study must be a study name or null, got {self.study!r}.")
        if self.storage is not None and not isinstance(self.storage, str):
            raise ConfigError(f"warm_start.storage must be a database URL or null, got {self.storage!r}.")
        if self.members is not None:
            check_int("warm_start.members", self.members, 1, " or null")
        points = self.points
        if isinstance(points, str) or not all(isinstance(p, str) for p in points):
            raise ConfigError(f"warm_start.points must be a list of point names, got {points!r}.")
        object.__setattr__(self, "points", tuple(points))

    @classmethod
    def from_mapping(cls, raw: Any) -> WarmStartSettings:
        values = known_fields(raw, "warm_start", cls)
        if values.get("points") is None:
            values.pop("points", None)
        return cls(**values)

    @property
    def enabled(self) -> bool:
        return self.study is not None or bool(self.points)


def warm_start_params(
    settings: WarmStartSettings, space: SearchSpace, storage: str, this_study: str
) -> list[tuple[str, dict[str, Any]]]:
    """(source, params) of every trial to enqueue; reads the other study, writes nothing.

    Raises:
        ConfigError: a point the space does not name, or a study that does not exist.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    named = getattr(space, "points", {}) or {}
    for name in settings.points:
        if name not in named:
            where = str(space.path) if space.path is not None else f"search space {space.name!r}"
            allowed = ", ".join(named) or "none (add a points: block to the space file)"
            raise ConfigError(f"warm_start.points: {where} names no point {name!r}; allowed: {allowed}.")
        out.append((f"point:{name}", dict(named[name])))
    if settings.study is not None:
        out.extend(_front_params(settings, space, settings.storage or storage, this_study))
    return out


def _front_params(
    settings: WarmStartSettings, space: SearchSpace, url: str, this_study: str
) -> list[tuple[str, dict[str, Any]]]:
    from archsearch.results.front import front_trials, spread_over_sizes
    from archsearch.storage.database import stored_study_names

    name = str(settings.study)
    if name == this_study and not settings.storage:
        raise ConfigError(
            f"warm_start.study={name!r} is this study: a warm start seeds a new study from another one."
        )
    names = stored_study_names(url, "warm_start.storage" if settings.storage else "study.storage")
    if name not in names:
        raise ConfigError(
            f"warm_start.study={name!r} is not in the storage; it holds: {', '.join(names) or 'no study'}."
        )
    source = optuna.load_study(study_name=name, storage=url)
    front = front_trials(source)
    if settings.members is not None:
        front = spread_over_sizes(front, settings.members)
    distributions = space.distributions()
    out = []
    for t in front:
        params = {k: v for k, v in t.params.items() if k in distributions and allows(distributions[k], v)}
        out.append((f"study:{name}#{t.number}", params))
    return out


def enqueue_warm_start(
    study: optuna.Study, seeds: list[tuple[str, dict[str, Any]]], log: Callable[[str], Any]
) -> int:
    """Enqueue ``seeds`` on a study with no trials yet (else nothing); how many were enqueued."""
    if not seeds:
        return 0
    if study.get_trials(deepcopy=False):
        log("warm start: nothing enqueued, the study has trials (a resume, or another worker seeded it)")
        return 0
    for source, params in seeds:
        study.enqueue_trial(params, user_attrs={SOURCE_ATTR: source}, skip_if_exists=True)
    log(f"warm start: {len(seeds)} trial{'s' if len(seeds) != 1 else ''} enqueued ({_sources(seeds)})")
    return len(seeds)


def _sources(seeds: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    kinds = sorted({source.split("#")[0] for source, _ in seeds})
    return ", ".join(kinds)
