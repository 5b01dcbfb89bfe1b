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

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from archsearch.checks import check_choice, check_flag, check_int, known_fields
from archsearch.errors import ArchsearchError, ConfigError
from archsearch.net.spec import NetSpec
from archsearch.results.export import FINALIZED_PREFIX, SELECTION_ATTR, export_study, finalized_results
from archsearch.results.front import front_trials, spread_over_sizes
from archsearch.results.tracking import ROLE_TAG, STUDY_TAG, Tracker
from archsearch.search.settings import ExportSettings, TrackingSettings
from archsearch.search.supernet_fidelity import inherited_weights
from archsearch.train.settings import TrainerSettings

if TYPE_CHECKING:
    from archsearch.results.export import ExportResult

#: Where a finalized member's weights start (``finalize.init``).
FINALIZE_INITS = ("scratch", "supernet")

__all__ = ["FinalizeResult", "FinalizeSettings", "FinalizedMember", "finalize_study"]


@dataclass(frozen=True)
class FinalizeSettings:
    """The validated ``finalize`` block.

    Attributes:
        epochs: training epochs of every member (the trainer's other keys, ``trainer.dsd``
            included, come from ``trainer``).
        force: retrain members already finalized with the same settings.
        init: ``scratch`` (fresh weights) or ``supernet``: each member starts from its slice of
            the study's supernet (a study searched with ``sweep.fidelity.kind=supernet``).
        members: retrain at most this many members, chosen on validation accuracy and spread
            over the front's sizes (:func:`archsearch.results.front.spread_over_sizes`); None
            retrains the whole front.
    """

    epochs: int = 30
    force: bool = False
    init: str = "scratch"
    members: int | None = None

    def __post_init__(self) -> None:
        check_int("finalize.epochs", self.epochs, 1)
        check_flag("finalize.force", self.force)
        check_choice("finalize.init", self.init, FINALIZE_INITS)
        if self.members is not None:
            check_int("finalize.members", self.members, 1)

    @classmethod
    def from_mapping(cls, raw: Any) -> FinalizeSettings:
        """Read the ``finalize`` block (a plain mapping, or None for the defaults)."""
        return cls(**known_fields(raw, "finalize", cls))


@dataclass(frozen=True)
class FinalizedMember:
    """One retrained front member, as stored in the study's ``finalized:<trial>`` user attr.

    ``failed`` holds the reason training failed (the accuracies are then NaN); ``trained`` is
    False when the member was finalized earlier with the same settings and not trained again.
    """

    trial: int
    spec_hash: str
    search_val_acc: float
    val_acc: float
    val_acc_best: float
    test_acc: float
    epochs: int
    train_seconds: float
    dsd: bool
    mlflow_run_id: str
    weights: str
    settings: str
    failed: str = ""
    trained: bool = True

    def stored(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        del out["trained"]
        return out


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
    data: Any,
    *,
    settings: FinalizeSettings | None = None,
    trainer: TrainerSettings | None = None,
    tracking: TrackingSettings | None = None,
    export: ExportSettings | None = None,
    seed: int = 0,
    fit_fn: Callable[..., Any] | None = None,
    console: Any = None,
    config_yaml: str = "",
) -> FinalizeResult:
    """Retrain every member of the study's front at full fidelity, score it on test, re-export.

    Args:
        study: a study written by a search (its storage is all that is needed).
        data: the dataset the search used, without a subset: members train on all of it.
        settings, trainer, tracking, export: finalize epochs and force; the trainer (its
            epochs become ``settings.epochs``); where runs are logged; where the export goes.
        seed, fit_fn, console, config_yaml: as for :func:`archsearch.search.sweep.run_search`.

    Returns the finalized members and the export written from them; data that does not fit
    the study's networks is a ConfigError.
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
    members = front_trials(study)
    if settings.members is not None:
        members = spread_over_sizes(members, settings.members)
    specs = _member_specs(members, data)
    tracker = _tracker(study, tracking)
    parent = tracker.start_study(
        study.study_name, {"finalize": {"epochs": settings.epochs, "dsd": dsd}}, config_yaml
    )
    context = _Context(
        study.study_name,
        data,
        trainer,
        seed,
        fit,
        tracker,
        export.dir if export.dir is not None else Path("results") / study.study_name,
        tracking.log_weights != "none",
        _fingerprint(data, trainer, seed, settings.init),
        inherited_weights(study) if settings.init == "supernet" else None,
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
    exported = export_study(study, context.export_dir, plots=export.plots)
    _publish(tracker, parent, done, exported)
    seconds = time.perf_counter() - started
    console.print(
        f"finalized front: {len(exported.front)} of {len(members)} members non-dominated on finalized "
        f"results; export rewritten in [cyan]{exported.directory}[/cyan] ({seconds:.1f}s)"
    )
    return FinalizeResult(done, exported, parent, seconds)


def _tracker(study: optuna.Study, tracking: TrackingSettings) -> Tracker:
    return Tracker(
        tracking.resolved_uri,
        experiment=f"archsearch/{study.study_name}",
        artifact_dir=tracking.dir / "artifacts",
        enabled=tracking.enabled,
    )


def _publish(tracker: Tracker, parent: str, done: list[FinalizedMember], exported: ExportResult) -> None:
    """Tag each member's run on or off the finalized front and put the export on the parent run."""
    on_front = {t.number for t in exported.front}
    for member in done:
        tracker.set_tags(member.mlflow_run_id, {"archsearch.pareto": str(member.trial in on_front).lower()})
    for path in exported.files.values():
        tracker.log_artifact(parent, path, "pareto")
    tracker.log_metrics(parent, {"finalized_front_size": float(len(exported.front))})
    tracker.end_study("FINISHED")


def _member_specs(members: list[optuna.trial.FrozenTrial], data: Any) -> dict[int, NetSpec]:
    """Each member's network; one that ``data`` cannot feed is a ConfigError before any training."""
    specs = {t.number: NetSpec.from_dict(t.user_attrs["spec"]) for t in members}
    for number, spec in specs.items():
        if tuple(spec.input) != tuple(data.shape) or spec.num_classes != data.num_classes:
            raise ConfigError(
                f"data={data.name} ({_shape(data.shape, data.num_classes)}) does not fit trial {number}'s "
                f"network ({_shape(spec.input, spec.num_classes)}); pass the data= the sweep used."
            )
    return specs


def _fingerprint(data: Any, trainer: TrainerSettings, seed: int, init: str = "scratch") -> str:
    """What makes two finalize runs of a member the same (a member is not retrained for nothing)."""
    described = {"name": data.name, "train": len(data.train_y), "val": len(data.val_y)}
    body: dict[str, Any] = {"data": described, "trainer": trainer.to_mapping(), "seed": seed}
    if init != "scratch":  # fingerprints of scratch runs stay what they were before finalize.init existed
        body["init"] = init
    text = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _retrain(
    study: optuna.Study,
    members: list[optuna.trial.FrozenTrial],
    specs: Mapping[int, NetSpec],
    ctx: _Context,
    force: bool,
    console: Any,
) -> list[FinalizedMember]:
    stored = finalized_results(study)
    done: list[FinalizedMember] = []
    for t in members:
        previous = stored.get(t.number)
        if previous is not None and previous.get("settings") == ctx.fingerprint and not force:
            done.append(FinalizedMember(**previous, trained=False))
            continue
        member = _finalize_member(ctx, t, specs[t.number])
        # Stored after every member, so an interrupted finalize keeps what it finished.
        study.set_user_attr(f"{FINALIZED_PREFIX}{t.number}", member.stored())
        done.append(member)
        console.print(
            f"  trial {t.number:>4}  val_acc {member.search_val_acc:.4f} -> {member.val_acc:.4f}  "
            f"test_acc {member.test_acc:.4f}  {member.train_seconds:.1f}s"
            + (f"  [red]failed: {member.failed}[/red]" if member.failed else "")
        )
    return done


def _shape(input_shape: Any, num_classes: int) -> str:
    return f"{'x'.join(map(str, input_shape))}, {num_classes} classes"


@dataclass(frozen=True)
class _Context:
    """What every member's retraining shares."""

    study_name: str
    data: Any
    trainer: TrainerSettings
    seed: int
    fit: Callable[..., Any]
    tracker: Tracker
    export_dir: Path
    log_weights: bool
    fingerprint: str
    inherit: Callable[[NetSpec, Any], None] | None = None


def _finalize_member(ctx: _Context, trial: optuna.trial.FrozenTrial, spec: NetSpec) -> FinalizedMember:
    """Train one member (from scratch or its supernet slice), score it on test, log it as an MLflow run.

    A member whose training fails (diverges, say) is recorded as failed and left off the
    finalized front; a user error (a bad trainer key) or an interrupt ends the whole finalize.
    """
    dsd = ctx.trainer.dsd.enabled
    run_id = ctx.tracker.start_trial(
        trial.number,
        trial.params,
        {
            STUDY_TAG: ctx.study_name,
            ROLE_TAG: "finalize",
            "archsearch.spec_hash": spec.hash,
            "archsearch.search_run_id": str(trial.user_attrs.get("mlflow_run_id", "")),
        },
    )
    ctx.tracker.set_tags(run_id, {"mlflow.runName": f"finalize-{trial.number}"})
    ctx.tracker.log_params(
        run_id, {"finalize": {"epochs": ctx.trainer.epochs, "dsd": dsd, "data": ctx.data.name}}
    )
    ctx.tracker.log_text(run_id, spec.to_yaml(), "net.yaml")
    nan = float("nan")
    common: dict[str, Any] = {
        "trial": trial.number,
        "spec_hash": spec.hash,
        "search_val_acc": float(trial.user_attrs.get("val_acc", nan)),
        "dsd": dsd,
        "mlflow_run_id": run_id,
        "settings": ctx.fingerprint,
    }
    try:
        model = _initial_model(ctx, spec)
        result = ctx.fit(
            model,
            ctx.data,
            ctx.trainer,
            seed=ctx.seed,
            on_epoch_end=lambda epoch, m: ctx.tracker.log_metrics(
                run_id, {k: v for k, v in m.items() if isinstance(v, int | float)}, step=epoch
            ),
            evaluate_test=True,
        )
    except (ArchsearchError, KeyboardInterrupt):
        ctx.tracker.end_trial(run_id, "KILLED")
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        ctx.tracker.set_tags(run_id, {"archsearch.state": "failed", "archsearch.fail_reason": reason})
        ctx.tracker.end_trial(run_id, "FAILED")
        return FinalizedMember(
            **common,
            val_acc=nan,
            val_acc_best=nan,
            test_acc=nan,
            epochs=0,
            train_seconds=nan,
            weights="",
            failed=reason,
        )
    member = FinalizedMember(
        **common,
        val_acc=float(result.val_acc_last),
        val_acc_best=float(result.val_acc_best),
        test_acc=float(result.test_acc),
        epochs=int(result.epochs_done),
        train_seconds=float(result.seconds),
        weights=_save_weights(ctx, run_id, trial.number, model),
    )
    logged = ("val_acc", "val_acc_best", "test_acc", "search_val_acc", "train_seconds")
    ctx.tracker.log_metrics(run_id, {k: getattr(member, k) for k in logged})
    ctx.tracker.set_tags(run_id, {"archsearch.state": "finalized"})
    ctx.tracker.end_trial(run_id, "FINISHED")
    return member


def _initial_model(ctx: _Context, spec: NetSpec) -> Any:
    """The member's network, freshly initialised from the seed, or with its supernet slice's weights."""
    import torch

    from archsearch.net.model import build

    torch.manual_seed(ctx.seed)
    model = build(spec)
    if ctx.inherit is not None:
        ctx.inherit(spec, model)
    return model


def _save_weights(ctx: _Context, run_id: str, number: int, model: Any) -> str:
    """The finalized weights' path ("" when weights are not kept), logged to the member's run."""
    if not ctx.log_weights:
        return ""
    import torch

    path = ctx.export_dir / "weights" / f"final_trial_{number:04d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    ctx.tracker.log_artifact(run_id, path, "weights")
    return str(path.resolve())
