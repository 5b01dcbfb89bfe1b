"""What a search checks before it writes anything, and after its trials ran.

:func:`preflight` runs before the storage, MLflow or the export is touched: the sampler can
serve the search, the export and tracking folders can be written, the warm start's names
exist; rungs inside the learning-rate warm-up are warned of. :func:`check_some_trial_ran`
turns a study whose every trial failed into :class:`~archsearch.errors.SearchFailed` (the CLI
exits 3) instead of an empty front.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from archsearch.checks import check_writable_dir
from archsearch.errors import SearchFailed
from archsearch.search.samplers import SamplerArg, check_sampler
from archsearch.search.settings import SearchSettings
from archsearch.search.space_core import SearchSpace
from archsearch.search.warm_start import warm_start_params

__all__ = ["check_some_trial_ran", "preflight"]


def check_some_trial_ran(study: optuna.Study) -> None:
    """Raise SearchFailed when the study's every finished trial failed (there is no front)."""
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    if finished and all(t.state == optuna.trial.TrialState.FAIL for t in finished):
        reason = next(
            (str(t.user_attrs["fail_reason"]) for t in finished if "fail_reason" in t.user_attrs), ""
        )
        raise SearchFailed(
            f"every one of the study's {len(finished)} trials failed, so there is no front"
            + (f"; the first said: {reason.rstrip('.')}." if reason else ".")
        )


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
