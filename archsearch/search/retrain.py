"""Retraining one front member at full fidelity: train, score on test, log its MLflow run.

:func:`archsearch.search.finalize.finalize_study` runs :func:`finalize_member` for each member
it retrains, sharing a :class:`MemberContext`; :class:`FinalizedMember` is what it stores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from archsearch.errors import ArchsearchError, ConfigError
from archsearch.net.spec import NetSpec
from archsearch.results.net_files import TrialTexts
from archsearch.results.provenance import Provenance, gather_provenance
from archsearch.results.tracking import ROLE_TAG, STUDY_TAG, TRIAL_TAG

if TYPE_CHECKING:
    from archsearch.data.base import DatasetLike
    from archsearch.results.tracking import TrialTracker
    from archsearch.search.settings import FinalizeSettings, TrackingSettings
    from archsearch.train.fit import FitFn
    from archsearch.train.settings import TrainerSettings

__all__ = [
    "FinalizedMember",
    "MemberContext",
    "finalize_member",
    "fingerprint",
    "member_context",
    "member_specs",
]


@dataclass(frozen=True)
class FinalizedMember:
    """One retrained front member, as stored in the study's ``finalized:<trial>`` user attr.

    ``failed`` holds the reason training failed (the accuracies are then NaN); ``trained`` is
    False when the member was finalized earlier with the same settings and not trained again.
    ``model_uri`` is the member's MLflow Model (``runs:/<run id>/model``; "" when tracking is
    off or logging it failed, ``model_error`` saying why); ``provenance`` is the finalizing
    process's (:class:`~archsearch.results.provenance.Provenance`).
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
    model_uri: str = ""
    model_error: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    def stored(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        del out["trained"]
        return out


def member_specs(members: list[optuna.trial.FrozenTrial], data: DatasetLike) -> dict[int, NetSpec]:
    """Each member's network; one that ``data`` cannot feed is a ConfigError before any training."""
    specs = {t.number: NetSpec.from_dict(t.user_attrs["spec"]) for t in members}
    for number, spec in specs.items():
        if tuple(spec.input) != tuple(data.shape) or spec.num_classes != data.num_classes:
            raise ConfigError(
                f"data={data.name} ({_shape(data.shape, data.num_classes)}) does not fit trial {number}'s "
                f"network ({_shape(spec.input, spec.num_classes)}); pass the data= the sweep used."
            )
    return specs


def fingerprint(data: DatasetLike, trainer: TrainerSettings, seed: int, init: str = "scratch") -> str:
    """What makes two finalize runs of a member the same (a member is not retrained for nothing)."""
    described = {"name": data.name, "train": len(data.train_y), "val": len(data.val_y)}
    body: dict[str, Any] = {"data": described, "trainer": trainer.to_mapping(), "seed": seed}
    if init != "scratch":  # fingerprints of scratch runs stay what they were before finalize.init existed
        body["init"] = init
    text = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _shape(input_shape: Any, num_classes: int) -> str:
    return f"{'x'.join(map(str, input_shape))}, {num_classes} classes"


@dataclass(frozen=True)
class MemberContext:
    """What every member's retraining shares."""

    study_name: str
    data: DatasetLike
    trainer: TrainerSettings
    seed: int
    fit: FitFn
    tracker: TrialTracker
    export_dir: Path
    log_weights: bool
    fingerprint: str
    inherit: Callable[[NetSpec, Any], None] | None = None
    #: MLflow's URI, for the members' MLflow Models ("" logs none).
    tracking_uri: str = ""
    #: ``finalize.register_as``: the registered model every member becomes a version of.
    register_as: str | None = None
    provenance: Provenance | None = None
    #: Each member's ``config.yaml`` (the finalize's config, its model the member's net) and ``net.yaml``.
    texts: TrialTexts | None = None


def member_context(
    study: optuna.Study,
    data: DatasetLike,
    trainer: TrainerSettings,
    seed: int,
    fit: FitFn,
    tracker: TrialTracker,
    export_dir: Path,
    *,
    settings: FinalizeSettings,
    tracking: TrackingSettings,
    config_yaml: str,
) -> MemberContext:
    """What every member's retraining shares, this process's provenance included."""
    inherit = None
    if settings.init == "supernet":
        from archsearch.search.supernet_fidelity import inherited_weights

        inherit = inherited_weights(study, tracking.dir)
    return MemberContext(
        study.study_name,
        data,
        trainer,
        seed,
        fit,
        tracker,
        export_dir,
        tracking.log_weights != "none",
        fingerprint(data, trainer, seed, settings.init),
        inherit,
        tracking_uri=tracking.resolved_uri if tracking.enabled else "",
        register_as=settings.register_as,
        provenance=gather_provenance(None, trainer.device),
        texts=TrialTexts(
            study.study_name, config_yaml, str(study.user_attrs.get("retrain_command", "")), export_dir
        ),
    )


def finalize_member(ctx: MemberContext, trial: optuna.trial.FrozenTrial, spec: NetSpec) -> FinalizedMember:
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
            **(ctx.provenance.tags() if ctx.provenance is not None else {}),
        },
    )
    ctx.tracker.set_tags(run_id, {"mlflow.runName": f"finalize-{trial.number}"})
    ctx.tracker.log_params(
        run_id, {"finalize": {"epochs": ctx.trainer.epochs, "dsd": dsd, "data": ctx.data.name}}
    )
    _log_texts(ctx, run_id, trial, spec)
    nan = float("nan")
    common: dict[str, Any] = {
        "trial": trial.number,
        "spec_hash": spec.hash,
        "search_val_acc": float(trial.user_attrs.get("val_acc", nan)),
        "dsd": dsd,
        "mlflow_run_id": run_id,
        "settings": ctx.fingerprint,
        "provenance": ctx.provenance.to_dict() if ctx.provenance is not None else {},
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
    weights = _save_weights(ctx, run_id, trial.number, model)
    model_uri, model_error = _log_model(ctx, run_id, trial.number, spec, model)
    member = FinalizedMember(
        **common,
        val_acc=float(result.val_acc_last),
        val_acc_best=float(result.val_acc_best),
        # evaluate_test=True was asked; a stand-in trainer that skipped it scores NaN, not a guess.
        test_acc=nan if result.test_acc is None else float(result.test_acc),
        epochs=int(result.epochs_done),
        train_seconds=float(result.seconds),
        weights=weights,
        model_uri=model_uri,
        model_error=model_error,
    )
    logged = ("val_acc", "val_acc_best", "test_acc", "search_val_acc", "train_seconds")
    ctx.tracker.log_metrics(run_id, {k: getattr(member, k) for k in logged})
    ctx.tracker.set_tags(run_id, {"archsearch.state": "finalized"})
    ctx.tracker.end_trial(run_id, "FINISHED")
    return member


def _log_texts(ctx: MemberContext, run_id: str, trial: optuna.trial.FrozenTrial, spec: NetSpec) -> None:
    """The member's ``net.yaml`` (the exported file's text, header included) and ``config.yaml``."""
    if run_id and ctx.texts is not None:
        ctx.tracker.log_texts(run_id, ctx.texts(trial.number, spec.to_dict(), spec.hash))
    elif run_id:
        ctx.tracker.log_text(run_id, spec.to_yaml(), "net.yaml")


def _log_model(ctx: MemberContext, run_id: str, number: int, spec: NetSpec, model: Any) -> tuple[str, str]:
    """Log the trained member as its run's MLflow Model (raw images in, logits out): (URI, error).

    The member stays finalized whatever MLflow makes of its model: a failure is tagged on the run
    (``archsearch.model_error``) and returned, not raised.
    """
    if not (run_id and ctx.tracking_uri and ctx.tracker.enabled):
        return "", ""
    mean, std = getattr(ctx.data, "mean", None), getattr(ctx.data, "std", None)
    if mean is None or std is None:
        error = f"data {ctx.data.name!r} has no per-channel mean and std to normalise raw images with"
        ctx.tracker.set_tags(run_id, {"archsearch.model_error": error})
        return "", error
    from archsearch.results.mlflow_model import log_member_model, raw_examples

    described = {STUDY_TAG: ctx.study_name, TRIAL_TAG: str(number), "archsearch.spec_hash": spec.hash}
    try:
        logged = log_member_model(
            ctx.tracking_uri,
            ctx.tracker.experiment_id,
            run_id,
            model,
            mean=mean,
            std=std,
            example=raw_examples(ctx.data),
            register_as=ctx.register_as,
            tags=described,
            metadata={
                "archsearch": {
                    "study": ctx.study_name,
                    "trial": number,
                    "spec_hash": spec.hash,
                    "data": ctx.data.name,
                    "input": "raw images, N x C x H x W float32, normalised inside with mean and std",
                    "mean": list(mean),
                    "std": list(std),
                    "output": f"logits, N x {spec.num_classes}",
                }
            },
        )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        ctx.tracker.set_tags(run_id, {"archsearch.model_error": error})
        return "", error
    tags = {"archsearch.model_uri": logged.uri}
    if logged.registered:
        tags["archsearch.registered_model"] = logged.registered
    ctx.tracker.set_tags(run_id, tags)
    return logged.uri, ""


def _initial_model(ctx: MemberContext, spec: NetSpec) -> Any:
    """The member's network, freshly initialised from the seed, or with its supernet slice's weights."""
    import torch

    from archsearch.net.model import build

    torch.manual_seed(ctx.seed)
    model = build(spec)
    if ctx.inherit is not None:
        ctx.inherit(spec, model)
    return model


def _save_weights(ctx: MemberContext, run_id: str, number: int, model: Any) -> str:
    """The finalized weights' path as stored ("" when weights are not kept), logged to the member's run."""
    if not ctx.log_weights:
        return ""
    import torch

    from archsearch.results.relocate import stored_path

    path = ctx.export_dir / "weights" / f"final_trial_{number:04d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    ctx.tracker.log_artifact(run_id, path, "weights")
    return stored_path(path, ctx.export_dir)  # relative to the export directory, which may move
