"""Finalize a study's front: retrain every Pareto member at full fidelity and score it on test data.

A search ranks candidates on short training runs (sometimes on a data subset, sometimes cut
short by successive halving) and on the validation split. Finalizing retrains each member of
the front from scratch for ``finalize.epochs`` epochs on the full training split, scores the
final weights once on the test split, and logs each as an MLflow run under the study's parent
run (tagged with the trial number and spec hash). The results are kept in the study's user
attrs ``finalized:<trial>`` (finished trials cannot be changed), and :func:`archsearch.results.export.export_study`
then exports the front on finalized validation accuracy, with test accuracy beside it.

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
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from archsearch.errors import ArchsearchError, ConfigError
from archsearch.net.spec import NetSpec
from archsearch.results.export import (
    FINALIZED_PREFIX,
    ExportResult,
    export_study,
    finalized_results,
    front_trials,
)
from archsearch.results.tracking import ROLE_TAG, STUDY_TAG, Tracker, resolve_tracking_uri

__all__ = ["FinalizeResult", "FinalizeSettings", "FinalizedMember", "finalize_study"]


@dataclass(frozen=True)
class FinalizeSettings:
    """The validated ``finalize`` block.

    Attributes:
        epochs: training epochs of every member (the trainer's other keys, ``trainer.dsd``
            included, come from ``trainer``).
        force: retrain members already finalized with the same settings.
    """

    epochs: int = 30
    force: bool = False

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any]) -> FinalizeSettings:
        raw = cfg.get("finalize") or {}
        unknown = set(raw) - {"epochs", "force"}
        if unknown:
            raise ConfigError(
                f"finalize has unknown key(s) {', '.join(sorted(map(str, unknown)))}; allowed: epochs, force."
            )
        epochs = raw.get("epochs", cls.epochs)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"finalize.epochs must be an integer >= 1, got {epochs!r}.")
        force = raw.get("force", False)
        if not isinstance(force, bool):
            raise ConfigError(f"finalize.force must be true or false, got {force!r}.")
        return cls(epochs, force)


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


def _plain(node: Any) -> dict[str, Any]:
    value = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else {}


def finalize_study(
    study: optuna.Study,
    cfg: DictConfig | Mapping[str, Any],
    *,
    data: Any = None,
    fit_fn: Callable[..., Any] | None = None,
    console: Any = None,
) -> FinalizeResult:
    """Retrain every member of the study's front at full fidelity, score it on test, re-export.

    Args:
        study: a study written by a sweep (its storage is all that is needed).
        cfg: a composed config: ``finalize``, ``trainer``, ``data`` (its ``subset`` is ignored:
            members train on the full training split), ``seed``, ``tracking``, ``export``.
        data: the loaded dataset; loaded from ``cfg.data`` (without a subset) when None.
        fit_fn: replaces ``archsearch.train.fit.fit`` (same signature), for tests.
        console: a ``rich.console.Console`` for progress; a quiet one is made if None.

    Returns:
        The finalized members and the export written from them.

    Raises:
        ConfigError: a bad ``finalize`` key, or data that does not fit the study's networks.
    """
    from rich.console import Console

    from archsearch.data.datasets import load_dataset
    from archsearch.train.fit import fit as default_fit

    fit = fit_fn or default_fit
    console = console or Console(quiet=True)
    settings = FinalizeSettings.from_config(cfg)
    seed = int(cfg.get("seed", 0))
    data_cfg = {**_plain(cfg.get("data")), "subset": None}
    if data is None:
        data = load_dataset(data_cfg, seed=seed)
    trainer_cfg = {**_plain(cfg.get("trainer")), "epochs": settings.epochs}
    dsd = bool((trainer_cfg.get("dsd") or {}).get("enabled", False))
    members = front_trials(study)
    specs = {t.number: NetSpec.from_dict(t.user_attrs["spec"]) for t in members}
    for number, spec in specs.items():
        if tuple(spec.input) != tuple(data.shape) or spec.num_classes != data.num_classes:
            raise ConfigError(
                f"data={data.name} ({_shape(data.shape, data.num_classes)}) does not fit trial {number}'s "
                f"network ({_shape(spec.input, spec.num_classes)}); pass the data= the sweep used."
            )
    fingerprint = hashlib.sha256(
        json.dumps(
            {"data": data_cfg, "trainer": trainer_cfg, "seed": seed}, sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:12]

    tracking = _plain(cfg.get("tracking"))
    tracking_dir = Path(str(tracking.get("dir", "mlruns")))
    enabled = bool(tracking.get("enabled", True))
    tracker = Tracker(
        resolve_tracking_uri(tracking.get("uri"), tracking_dir) if enabled else "",
        experiment=f"archsearch/{study.study_name}",
        artifact_dir=tracking_dir / "artifacts",
        enabled=enabled,
    )
    export = _plain(cfg.get("export"))
    export_dir = Path(str(export.get("dir") or f"results/{study.study_name}"))
    log_weights = str(tracking.get("log_weights", "pareto")) != "none"
    parent = tracker.start_study(
        study.study_name,
        {"finalize": {"epochs": settings.epochs, "dsd": dsd}},
        OmegaConf.to_yaml(OmegaConf.create(_plain(cfg)), resolve=True),
    )
    context = _Context(
        study.study_name, data, trainer_cfg, seed, fit, tracker, export_dir, log_weights, fingerprint
    )
    started = time.perf_counter()
    stored = finalized_results(study)
    done: list[FinalizedMember] = []
    console.print(
        f"[bold]finalizing[/bold] {len(members)} front members of study [cyan]{study.study_name}[/cyan]: "
        f"{settings.epochs} epochs on all {len(data.train_y)} training images{', DSD' if dsd else ''}"
    )
    try:
        for t in members:
            previous = stored.get(t.number)
            if previous is not None and previous.get("settings") == fingerprint and not settings.force:
                done.append(FinalizedMember(**previous, trained=False))
                continue
            member = _finalize_member(context, t, specs[t.number])
            # Stored after every member, so an interrupted finalize keeps what it finished.
            study.set_user_attr(f"{FINALIZED_PREFIX}{t.number}", member.stored())
            done.append(member)
            console.print(
                f"  trial {t.number:>4}  val_acc {member.search_val_acc:.4f} -> {member.val_acc:.4f}  "
                f"test_acc {member.test_acc:.4f}  {member.train_seconds:.1f}s"
                + (f"  [red]failed: {member.failed}[/red]" if member.failed else "")
            )
    except BaseException as exc:
        tracker.end_study("KILLED" if isinstance(exc, KeyboardInterrupt) else "FINISHED")
        raise
    exported = export_study(study, export_dir, plots=bool(export.get("plots", True)))
    on_front = {t.number for t in exported.front}
    for member in done:
        tracker.set_tags(member.mlflow_run_id, {"archsearch.pareto": str(member.trial in on_front).lower()})
    for path in exported.files.values():
        tracker.log_artifact(parent, path, "pareto")
    tracker.log_metrics(parent, {"finalized_front_size": float(len(exported.front))})
    tracker.end_study("FINISHED")
    seconds = time.perf_counter() - started
    console.print(
        f"finalized front: {len(exported.front)} of {len(members)} members non-dominated on finalized "
        f"results; export rewritten in [cyan]{exported.directory}[/cyan] ({seconds:.1f}s)"
    )
    return FinalizeResult(done, exported, parent, seconds)


def _shape(input_shape: Any, num_classes: int) -> str:
    return f"{'x'.join(map(str, input_shape))}, {num_classes} classes"


@dataclass(frozen=True)
class _Context:
    """What every member's retraining shares."""

    study_name: str
    data: Any
    trainer_cfg: Mapping[str, Any]
    seed: int
    fit: Callable[..., Any]
    tracker: Tracker
    export_dir: Path
    log_weights: bool
    fingerprint: str


def _finalize_member(ctx: _Context, trial: optuna.trial.FrozenTrial, spec: NetSpec) -> FinalizedMember:
    """Train one member from scratch, score it on test and log it as its own MLflow run.

    A member whose training fails (diverges, say) is recorded as failed and left off the
    finalized front; a user error (a bad trainer key) or an interrupt ends the whole finalize.
    """
    import torch

    from archsearch.net.model import build

    dsd = bool((ctx.trainer_cfg.get("dsd") or {}).get("enabled", False))
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
        run_id, {"finalize": {"epochs": ctx.trainer_cfg["epochs"], "dsd": dsd, "data": ctx.data.name}}
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
        torch.manual_seed(ctx.seed)
        model = build(spec)
        result = ctx.fit(
            model,
            ctx.data,
            ctx.trainer_cfg,
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
    weights = ""
    if ctx.log_weights:
        path = ctx.export_dir / "weights" / f"final_trial_{trial.number:04d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
        weights = str(path.resolve())
        ctx.tracker.log_artifact(run_id, path, "weights")
    member = FinalizedMember(
        **common,
        val_acc=float(result.val_acc_last),
        val_acc_best=float(result.val_acc_best),
        test_acc=float(result.test_acc),
        epochs=int(result.epochs_done),
        train_seconds=float(result.seconds),
        weights=weights,
    )
    ctx.tracker.log_metrics(
        run_id,
        {
            "val_acc": member.val_acc,
            "val_acc_best": member.val_acc_best,
            "test_acc": member.test_acc,
            "search_val_acc": member.search_val_acc,
            "train_seconds": member.train_seconds,
        },
    )
    ctx.tracker.set_tags(run_id, {"archsearch.state": "finalized"})
    ctx.tracker.end_trial(run_id, "FINISHED")
    return member
