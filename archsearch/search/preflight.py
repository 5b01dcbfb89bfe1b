"""What a search checks and builds before it writes anything.

:func:`prepare` runs before the storage, MLflow or the export is touched: both backends answer,
the sampler can serve the search, the export and tracking folders can be written, the warm
start's names exist (rungs inside the learning-rate warm-up are warned of); then it resolves
the hardware profile and builds the fidelity (successive halving, or the supernet, which
refuses a space it cannot share here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archsearch.checks import check_writable_dir
from archsearch.hardware.auto import auto_profile_for
from archsearch.search.fidelity import SuccessiveHalving
from archsearch.search.samplers import SamplerArg, check_sampler
from archsearch.search.study import check_backends
from archsearch.search.supernet_fidelity import SupernetFidelity
from archsearch.search.warm_start import warm_start_params

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike
    from archsearch.hardware.profile import HardwareProfile
    from archsearch.search.settings import SearchSettings
    from archsearch.search.space_core import SearchSpace

__all__ = ["Prepared", "preflight", "prepare"]


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` checked and built for one search."""

    seeds: list[tuple[str, dict[str, Any]]]  # the warm start's trials to enqueue (a new study only)
    hardware: HardwareProfile
    fidelity: SuccessiveHalving | None
    supernet: SupernetFidelity | None


def prepare(
    settings: SearchSettings,
    space: SearchSpace,
    data: DatasetLike,
    sampler: SamplerArg,
    hardware: HardwareProfile | None,
    log: Callable[[str], Any],
) -> Prepared:
    """Every check a search makes before its first write, and the parts they vouch for.

    Args:
        hardware: the profile ``latency_est_ms`` is estimated on; None: ``hardware=auto``.
        log: prints warnings (and the supernet's progress).

    Raises:
        ConfigError: a backend does not answer, or a setting cannot serve this search.
    """
    check_backends(settings)
    seeds = preflight(settings, space, sampler, log)
    hardware = hardware or auto_profile_for(settings.latency)
    fidelity = SuccessiveHalving.from_settings(
        settings.fidelity, settings.trainer.epochs, settings.objectives
    )
    supernet = SupernetFidelity.for_search(settings, space, data, hardware, log=log)
    return Prepared(seeds, hardware, fidelity, supernet)


def preflight(
    settings: SearchSettings, space: SearchSpace, sampler: SamplerArg, log: Callable[[str], Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Checks and warnings before anything is written; the warm start's trials to enqueue."""
    check_sampler(sampler, settings, log)
    check_writable_dir("export.dir", settings.export_dir)
    if settings.tracking.enabled or not settings.study.storage:
        check_writable_dir("tracking.dir", settings.tracking.dir)
    early = settings.fidelity.rungs_in_warmup(settings.trainer)
    if early:
        warmup = settings.trainer.schedule.warmup * settings.trainer.epochs
        log(
            f"[yellow]warning[/yellow]: rung{'s' if len(early) > 1 else ''} at epoch "
            f"{', '.join(map(str, early))} fall{'' if len(early) > 1 else 's'} inside the learning-rate "
            f"warm-up (the first {warmup:g} of {settings.trainer.epochs} epochs), where accuracy barely "
            "ranks networks; move sweep.fidelity.rungs later or shorten trainer.schedule.warmup."
        )
    return warm_start_params(settings.warm_start, space, settings.storage_url, settings.study.name)
