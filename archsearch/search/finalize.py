"""Finalize a study's front: retrain every Pareto member at full fidelity and score it on test data.

A search ranks candidates on short training runs (sometimes on a data subset, sometimes cut
short by successive halving) and on the validation split. Finalizing retrains each member of
the front from scratch for ``finalize.epochs`` epochs on the full training split, scores the
final weights once on the test split, and logs each as an MLflow run under the study's parent
run (tagged with the trial number and spec hash). The results are kept in the study's user
attrs ``finalized:<trial>`` (finished trials cannot be changed), and
:func:`archsearch.results.export.export_study` then exports the front on finalized validation
accuracy, with test accuracy beside it.

From the command line::

    python -m archsearch.finalize study.name=fire [data=...] [finalize.epochs=30] [trainer.dsd.enabled=true]

or at the end of a sweep with ``sweep.finalize=true``; from a notebook, :func:`finalize_study`.
Members already finalized with the same settings are not trained again, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from archsearch.errors import ConfigError
from archsearch.results.export import FINALIZED_PREFIX, SELECTION_ATTR, finalized_results
from archsearch.results.front import front_trials, spread_over_sizes
from archsearch.results.publish import publish_finalized
from archsearch.results.tracking import TrialTracker, open_tracker
from archsearch.search.retrain import (
    FinalizedMember,
    MemberContext,
    finalize_member,
    member_context,
    member_specs,
)
from archsearch.search.settings import ExportSettings, FinalizeSettings, TrackingSettings
from archsearch.train.settings import TrainerSettings

if TYPE_CHECKING:
    from rich.console import Console

    from archsearch.data.base import DatasetLike
    from archsearch.net.spec import NetSpec
    from archsearch.train.fit import FitFn

if TYPE_CHECKING:
    from archsearch.results.export import ExportResult

__all__ = ["FinalizeResult", "FinalizeSettings", "FinalizedMember", "finalize_study"]


@dataclass
class FinalizeResult:
    """What finalizing did: one entry per search-front member and the rewritten export."""

    members: list[FinalizedMember]
    export: ExportResult
    parent_run_id: str
    seconds: float

    @property
    def front(self) -> list[optuna.trial.FrozenTrial]:
        """The front on finalized results (copies of the trials with finalized values)."""
        return self.export.front


def finalize_study(
    study: optuna.Study,
    data: DatasetLike,
    *,
    settings: FinalizeSettings | None = None,
    trainer: TrainerSettings | None = None,
    tracking: TrackingSettings | None = None,
    export: ExportSettings | None = None,
    seed: int = 0,
    fit_fn: FitFn | None = None,
    console: Console | None = None,
    config_yaml: str = "",
) -> FinalizeResult:
    """Retrain every member of the study's front at full fidelity, score it on test, re-export.

    Args:
        study: a study written by a search (its storage is all that is needed).
        data: the dataset the search used, without a subset: members train on all of it.
        settings, trainer, tracking, export: finalize epochs and force; the trainer (its
            epochs become ``settings.epochs``); where runs are logged; where the export goes.
        seed, fit_fn, console, config_yaml: as for :func:`archsearch.search.sweep.run_search`.

    Each finalized member's MLflow run gets its ``net.yaml``, its ``config.yaml`` (``config_yaml``
    with the member's network as ``model``), this process's provenance as tags, and the trained
    network as an MLflow Model (``runs:/<run id>/model``; :mod:`archsearch.results.mlflow_model`),
    registered under ``settings.register_as`` when that is set.

    Returns the finalized members and the export written from them; data that does not fit
    the study's networks is a ConfigError, and so is ``register_as`` with tracking off.
    """
    import dataclasses

    from rich.console import Console

    from archsearch.train.fit import fit as default_fit

    fit = fit_fn or default_fit
    console = console or Console(quiet=True)
    settings = settings or FinalizeSettings()
    trainer = dataclasses.replace(trainer or TrainerSettings(), epochs=settings.epochs)
    tracking = tracking or TrackingSettings()
    export = export or ExportSettings()
    dsd = trainer.dsd.enabled
    if settings.register_as is not None and not tracking.enabled:
        raise ConfigError(
            "finalize.register_as needs tracking.enabled true: models are registered in MLflow's registry."
        )
    members = front_trials(study)
    if settings.members is not None:
        members = spread_over_sizes(members, settings.members)
    specs = member_specs(members, data)
    context = member_context(
        study,
        data,
        trainer,
        seed,
        fit,
        _tracker(study, tracking),
        export.dir if export.dir is not None else Path("results") / study.study_name,
        settings=settings,
        tracking=tracking,
        config_yaml=config_yaml,
    )
    tracker = context.tracker
    parent = tracker.start_study(
        study.study_name, {"finalize": {"epochs": settings.epochs, "dsd": dsd}}, config_yaml
    )
    started = time.perf_counter()
    console.print(
        f"[bold]finalizing[/bold] {len(members)} front member{'' if len(members) == 1 else 's'} "
        f"of study [cyan]{study.study_name}[/cyan]: "
        f"{settings.epochs} epochs on all {len(data.train_y)} training images{', DSD' if dsd else ''}"
    )
    # Which members the export's finalized front is made of (None: the whole search front).
    study.set_user_attr(SELECTION_ATTR, None if settings.members is None else [t.number for t in members])
    try:
        done = _retrain(study, members, specs, context, settings.force, console)
    except BaseException as exc:
        tracker.end_study("KILLED" if isinstance(exc, KeyboardInterrupt) else "FINISHED")
        raise
    runs = {member.trial: member.mlflow_run_id for member in done}
    exported = publish_finalized(
        study,
        context.export_dir,
        tracker=tracker,
        parent=parent,
        runs=runs,
        plots=export.plots,
        tracking_dir=tracking.dir,
    )
    seconds = time.perf_counter() - started
    console.print(
        f"finalized front: {len(exported.front)} of {len(members)} members non-dominated on finalized "
        f"results; export rewritten in [cyan]{exported.directory}[/cyan] ({seconds:.1f}s)"
    )
    return FinalizeResult(done, exported, parent, seconds)


def _tracker(study: optuna.Study, tracking: TrackingSettings) -> TrialTracker:
    return open_tracker(
        tracking.resolved_uri,
        f"archsearch/{study.study_name}",
        tracking.dir / "artifacts",
        enabled=tracking.enabled,
    )


def _retrain(
    study: optuna.Study,
    members: list[optuna.trial.FrozenTrial],
    specs: Mapping[int, NetSpec],
    ctx: MemberContext,
    force: bool,
    console: Console,
) -> list[FinalizedMember]:
    stored = finalized_results(study)
    done: list[FinalizedMember] = []
    for t in members:
        previous = stored.get(t.number)
        if previous is not None and previous.get("settings") == ctx.fingerprint and not force:
            done.append(FinalizedMember(**previous, trained=False))
            continue
        member = finalize_member(ctx, t, specs[t.number])
        # Stored after every member, so an interrupted finalize keeps what it finished.
        study.set_user_attr(f"{FINALIZED_PREFIX}{t.number}", member.stored())
        done.append(member)
        console.print(
            f"  trial {t.number:>4}  val_acc {member.search_val_acc:.4f} -> {member.val_acc:.4f}  "
            f"test_acc {member.test_acc:.4f}  {member.train_seconds:.1f}s"
            + (f"  [red]failed: {member.failed}[/red]" if member.failed else "")
            + (f"  [yellow]no MLflow model: {member.model_error}[/yellow]" if member.model_error else "")
        )
    return done
