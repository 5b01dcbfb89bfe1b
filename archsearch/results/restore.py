"""Bring a front's weights back from MLflow into an export directory.

A sweep keeps each front member's weights in ``<export dir>/weights/`` and logs them as the
``weights/`` artifact of the member's MLflow run (the finalize run's for a finalized member).
``python -m archsearch.export`` rebuilds tables, nets and plots from the study storage alone;
this restores the weights too, from the tracking backend, when it can be reached. A moved or
copied project's store still names the old artifact directory:
:func:`archsearch.results.relocate.locate_artifacts` finds where the artifacts are now, and the
weights are copied from there.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial

from archsearch.results.relocate import ArtifactRoot

if TYPE_CHECKING:
    import optuna

    from archsearch.results.export import ExportResult

__all__ = ["ExportedProject", "RestoredWeights", "export_project", "restore_weights"]


@dataclass
class RestoredWeights:
    """What :func:`restore_weights` did: files written, and one reason per member it could not."""

    restored: dict[int, Path] = field(default_factory=dict)
    missing: dict[int, str] = field(default_factory=dict)


@dataclass
class ExportedProject:
    """What :func:`export_project` did: the export, the weights restored, where the artifacts are."""

    export: ExportResult
    weights: RestoredWeights
    artifacts: ArtifactRoot | None  # None: nothing local (tracking off, a server, no store yet)


def export_project(
    study: optuna.Study,
    out_dir: str | Path,
    *,
    tracking_uri: str,
    tracking_dir: str | Path,
    plots: bool = True,
) -> ExportedProject:
    """What ``python -m archsearch.export`` does: export the study's front and restore its
    members' weights from MLflow (:func:`~archsearch.results.export.export_study` writes the
    files only).

    Args:
        tracking_uri: the MLflow tracking URI the weights are restored from ("" when tracking
            is off: nothing is restored).
        tracking_dir: the project's tracking directory now (``tracking.dir``): a moved or
            copied project's artifacts are read there, and its commands re-rooted on it.

    Raises:
        ConfigError: the store names artifacts that are nowhere (checked before any write).
    """
    from archsearch.results.export import export_study
    from archsearch.results.relocate import locate_artifacts

    # Before anything is written: where the weights are now (a moved store names the old place).
    artifacts = locate_artifacts(
        tracking_uri, f"archsearch/{study.study_name}", Path(tracking_dir) / "artifacts"
    )
    result = export_study(study, out_dir, plots=plots, tracking_dir=tracking_dir)
    weights = restore_weights(result.front, result.directory, tracking_uri, artifacts=artifacts)
    return ExportedProject(result, weights, artifacts)


def restore_weights(
    front: Sequence[FrozenTrial],
    out_dir: str | Path,
    tracking_uri: str,
    *,
    artifacts: ArtifactRoot | None = None,
) -> RestoredWeights:
    """Download each front member's weights artifact into ``out_dir/weights/``.

    Args:
        front: the exported front (its trials' ``weights`` path names the file; the run is
            ``finalize_run_id`` for a finalized member, else ``mlflow_run_id``).
        out_dir: the export directory.
        tracking_uri: the MLflow tracking URI ("" when tracking is off).
        artifacts: where the experiment's artifacts are now (``relocate.locate_artifacts``); when
            the project moved, the files are copied from there instead of where MLflow's store
            still says they are.

    Returns:
        The files restored and, per member left out, why.
    """
    result = RestoredWeights()
    unreachable = _unreachable(tracking_uri)
    target = Path(out_dir) / "weights"
    for t in front:
        name = Path(str(t.user_attrs.get("weights") or "")).name
        run_id = str(t.user_attrs.get("finalize_run_id") or t.user_attrs.get("mlflow_run_id") or "")
        if not name:
            result.missing[t.number] = "its weights were not kept (tracking.log_weights=none)"
        elif not run_id:
            result.missing[t.number] = "it has no MLflow run"
        elif unreachable:
            result.missing[t.number] = unreachable
        else:
            reason = _download(tracking_uri, run_id, name, target, artifacts)
            if reason:
                result.missing[t.number] = reason
            else:
                result.restored[t.number] = target / name
    return result


def _unreachable(tracking_uri: str) -> str:
    """Why the backend cannot be asked ("" when it may be)."""
    if not tracking_uri:
        return "tracking is off, so there is no MLflow run to restore it from"
    from archsearch.storage.database import missing_sqlite_file

    if missing_sqlite_file(tracking_uri):
        return f"the MLflow store {tracking_uri} does not exist (set tracking.dir or tracking.uri)"
    return ""


def _download(tracking_uri: str, run_id: str, name: str, target: Path, artifacts: ArtifactRoot | None) -> str:
    """Fetch ``weights/<name>`` of ``run_id`` into ``target``; "" on success, else why not."""
    import shutil

    import mlflow

    from archsearch.results.export import file_mode

    target.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Downloaded beside the target and renamed, so a reader never sees half a file.
    with tempfile.TemporaryDirectory(dir=target, prefix=".restore.") as tmp:
        try:
            if artifacts is not None and artifacts.moved:
                # MLflow would look where its store says: the place the project was moved from.
                run = mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
                where = artifacts.run_dir(str(run.info.artifact_uri))
                source = None if where is None else where / "weights" / name
                if source is None or not source.is_file():
                    return f"run {run_id} has no weights/{name} artifact (not in {where})"
                local = str(shutil.copyfile(source, Path(tmp) / name))
            else:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=f"weights/{name}", dst_path=tmp, tracking_uri=tracking_uri
                )
        except Exception as exc:  # MLflow raises many kinds; each is reported, not fatal
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return f"run {run_id} has no weights/{name} artifact ({first})"
        # MLflow copies the stored file's mode; a restored file gets what the umask gives, like
        # every other export file.
        os.chmod(local, file_mode())
        os.replace(local, target / name)
    return ""
