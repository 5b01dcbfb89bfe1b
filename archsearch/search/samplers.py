"""Which sampler a search runs, made per worker and fitted to the search before its first trial.

One home for sampler construction: the default (:data:`DEFAULT_TPE`), a grid shared by workers,
the checks made before anything is written (a sampler that cannot serve these objectives, a
population larger than the trial budget), and binding :class:`~archsearch.search.cost_aware.
CostAwareSampler` to the search's space and exact costs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Union

import optuna

from archsearch.errors import ConfigError
from archsearch.search.cost_aware import CostAwareSampler, CostProblem, check_objectives
from archsearch.search.fidelity import RungInformedSampler
from archsearch.search.settings import DEFAULT_TPE
from archsearch.search.workers import WorkerGridSampler
from archsearch.storage import optuna_compat

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike
    from archsearch.hardware.profile import HardwareProfile
    from archsearch.search.fidelity import SuccessiveHalving
    from archsearch.search.settings import SearchSettings
    from archsearch.search.space import SearchSpace

__all__ = [
    "DEFAULT_TPE",
    "SamplerArg",
    "SamplerFactory",
    "bind_sampler",
    "check_sampler",
    "default_sampler",
    "grid_sampler",
    "make_sampler",
]

#: Makes the study's sampler from this worker's seed (each worker of a study gets its own).
SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]
SamplerArg = Union[optuna.samplers.BaseSampler, SamplerFactory, None]  # noqa: UP007


def default_sampler(
    seed: int, objectives: Sequence[tuple[str, str]] | None = None
) -> optuna.samplers.BaseSampler:
    """archsearch's default: :class:`CostAwareSampler` (what ``+sweep=fire`` runs, the winner of
    benchmarks/peers.py) when ``objectives`` have ``val_acc`` and no measured ``latency_ms``;
    otherwise multivariate, constraint-aware TPE (:data:`DEFAULT_TPE`). Seeded either way."""
    if objectives is not None and _cost_aware_serves(objectives):
        return CostAwareSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, **DEFAULT_TPE)


def _cost_aware_serves(objectives: Sequence[tuple[str, str]]) -> bool:
    try:
        check_objectives(objectives)
    except ConfigError:
        return False
    return True


def grid_sampler(space: SearchSpace) -> SamplerFactory:
    """A grid over ``space`` that several workers share (each point is run once)."""
    return lambda seed: WorkerGridSampler(space.grid(), seed=seed)


def make_sampler(
    sampler: SamplerArg, seed: int, objectives: Sequence[tuple[str, str]] | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler itself, or the factory's for ``seed``, or :func:`default_sampler` for ``objectives``."""
    if sampler is None:
        return default_sampler(seed, objectives)
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    made = sampler(seed)
    if not isinstance(made, optuna.samplers.BaseSampler):
        raise ConfigError(f"sampler must make an Optuna sampler, got {type(made).__name__}.")
    return made


def check_sampler(sampler: SamplerArg, settings: SearchSettings, log: Callable[[str], Any]) -> None:
    """Refuse a sampler that cannot serve the search, and warn of one that will not learn in it.

    Called before anything is written. An evolutionary sampler whose population is larger than
    the study's trials never gets past its random first generation: that is a warning.
    """
    probe = make_sampler(sampler, settings.seed, settings.objectives)
    if isinstance(probe, CostAwareSampler):
        check_objectives(settings.objectives)
    population = optuna_compat.population_size(probe)
    if population is not None and population >= settings.study.n_trials:
        log(
            f"[yellow]warning[/yellow]: the sampler's population ({population}) is not smaller than "
            f"study.n_trials ({settings.study.n_trials}): every trial is a random draw of its first "
            "generation; lower sampler.population_size or use sampler=tpe or cost_aware."
        )


def bind_sampler(
    sampler: optuna.samplers.BaseSampler,
    settings: SearchSettings,
    space: SearchSpace,
    data: DatasetLike,
    hardware: HardwareProfile,
    *,
    resumed: bool,
) -> optuna.samplers.BaseSampler:
    """Fit the study's sampler to this search before its first trial.

    A :class:`CostAwareSampler` gets the space and the search's exact costs. A sampler instance
    passed in by the caller (not made from the worker's seed) is reseeded when the study already
    has trials: seeded again from the same seed it would repeat the draws it made before.
    """
    if isinstance(sampler, CostAwareSampler):
        sampler.bind(cost_problem(settings, space, data, hardware))
    elif resumed:
        sampler.reseed_rng()
    return sampler


def search_sampler(
    sampler: SamplerArg,
    seed: int,
    settings: SearchSettings,
    space: SearchSpace,
    data: DatasetLike,
    hardware: HardwareProfile,
    *,
    fidelity: SuccessiveHalving | None,
    resumed: bool,
) -> optuna.samplers.BaseSampler:
    """The sampler one worker of a search runs: made from its ``seed``, bound to the search, and
    wrapped to learn from pruned trials when halving is on (:class:`RungInformedSampler`)."""
    made = bind_sampler(
        make_sampler(sampler, seed, settings.objectives),
        settings,
        space,
        data,
        hardware,
        resumed=isinstance(sampler, optuna.samplers.BaseSampler) and resumed,
    )
    if (
        fidelity is not None
        and fidelity.settings.learn_from_pruned
        # A grid learns nothing; the cost-aware sampler reads pruned trials' rungs itself.
        and not isinstance(made, optuna.samplers.GridSampler | CostAwareSampler)
    ):
        return RungInformedSampler(made)
    return made


def cost_problem(
    settings: SearchSettings, space: SearchSpace, data: DatasetLike, hardware: HardwareProfile
) -> CostProblem:
    """What :class:`CostAwareSampler` needs: the space, the data's shape, exact costs, cost bounds."""
    from archsearch.net.cost import analyze

    constraints = [c for c in settings.constraints if c.metric not in ("val_acc", "latency_ms")]

    def costs(spec: Any) -> dict[str, float]:
        report = analyze(
            spec,
            hardware,
            batch_size=settings.cost.batch_size,
            bytes_per_element=settings.cost.bytes_per_element,
        )
        return report.metrics()

    return CostProblem(
        space=space,
        input_shape=tuple(data.shape),
        num_classes=int(data.num_classes),
        objectives=tuple(settings.objectives),
        costs=costs,
        feasible=lambda metrics: all(c.violation(metrics[c.metric]) <= 0 for c in constraints),
        epochs=settings.trainer.epochs,
    )
