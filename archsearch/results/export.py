"""Pareto-front export from an Optuna study alone: tables, net YAMLs, plots, hypervolume.

Run at the end of every sweep, and on demand with
``python -m archsearch.export study.name=NAME study.storage=URL``.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from archsearch.pareto import hypervolume, non_dominated
from archsearch.results.front import completed_feasible, front_trials, objective_directions

__all__ = [
    "FINALIZED_PREFIX",
    "ExportResult",
    "export_study",
    "finalized_front",
    "finalized_results",
]

ACCURACY_KEYS = ("val_acc", "test_acc")
#: archsearch.search.finalize keeps trial N's retrained results in the study user attr ``finalized:N``
#: (one key per member, so workers finalizing at the same time never overwrite each other).
FINALIZED_PREFIX = "finalized:"


@dataclass
class ExportResult:
    """Where an export went and what the front holds."""

    directory: Path
    front: list[FrozenTrial]
    files: dict[str, Path] = field(default_factory=dict)


def objective_names(study: optuna.Study) -> list[str]:
    """Objective metric names as the sweep stored them (``values_0``... if unknown)."""
    names = study.user_attrs.get("objectives")
    if isinstance(names, list) and len(names) == len(study.directions):
        return [str(n) for n in names]
    return [f"values_{i}" for i in range(len(study.directions))]


def finalized_results(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """Trial number -> what archsearch.search.finalize stored for it (see FinalizedMember)."""
    return {
        int(key[len(FINALIZED_PREFIX) :]): dict(value)
        for key, value in study.user_attrs.items()
        if key.startswith(FINALIZED_PREFIX)
    }


def finalized_front(study: optuna.Study) -> list[FrozenTrial] | None:
    """The front on finalized results, or None unless every search-front member was finalized.

    Each member is a copy of its trial whose ``val_acc`` objective and user attrs carry the
    finalized validation accuracy, with ``test_acc``, ``search_val_acc`` (what the search saw)
    and ``finalize_run_id`` added; members whose retraining failed are left out, and the rest
    are filtered to those non-dominated on the finalized values.
    """
    import copy

    results = finalized_results(study)
    members = front_trials(study)
    if not members or any(t.number not in results for t in members):
        return None
    names = objective_names(study)
    finalized = []
    for t in members:
        r = results[t.number]
        if r.get("failed"):
            continue
        c = copy.deepcopy(t)
        c.values = [r["val_acc"] if n == "val_acc" else v for n, v in zip(names, t.values, strict=True)]
        c.user_attrs = {
            **t.user_attrs,
            "search_val_acc": t.user_attrs.get("val_acc"),
            "val_acc": r["val_acc"],
            "val_acc_best": r["val_acc_best"],
            "test_acc": r["test_acc"],
            "train_seconds": r["train_seconds"],
            "final_epochs": r["epochs"],
            "dsd": r["dsd"],
            "finalize_run_id": r["mlflow_run_id"],
            "weights": r["weights"],
        }
        finalized.append(c)
    idx = non_dominated([c.values for c in finalized], objective_directions(study))
    return sorted((finalized[i] for i in idx), key=lambda t: t.number)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _row(t: FrozenTrial, names: list[str], net_path: Path | None, rerun: str) -> dict[str, Any]:
    row: dict[str, Any] = {"trial": t.number}
    values = t.values or []
    for name, value in zip(names, values, strict=False):
        row[name] = value
        if name == "val_acc" and "test_acc" in t.user_attrs:
            row["test_acc"] = t.user_attrs["test_acc"]
    for key in (
        "val_acc",
        "test_acc",
        "search_val_acc",
        "val_acc_best",
        "train_seconds",
        "final_epochs",
        "dsd",
        "finalize_run_id",
    ):
        if key in t.user_attrs and key not in row:
            row[key] = t.user_attrs[key]
    for key, value in (t.user_attrs.get("costs") or {}).items():
        row.setdefault(key, value)
    row["spec_hash"] = t.user_attrs.get("spec_hash", "")
    row["config"] = str(net_path) if net_path is not None else ""
    row["retrain"] = rerun.format(config=net_path) if net_path is not None and rerun else ""
    row["mlflow_run_id"] = t.user_attrs.get("mlflow_run_id", "")
    return row


def export_study(
    study: optuna.Study,
    out_dir: str | Path,
    *,
    plots: bool = True,
) -> ExportResult:
    """Write the study's front: pareto.csv/json, one net YAML per member, plots, hypervolume.

    Once every member of the search's front has been finalized (archsearch.search.finalize), the
    exported front is the front on finalized results, with test accuracy beside validation
    accuracy; until then it is the search's front.

    Args:
        study: any study written by a sweep (only its storage is needed).
        out_dir: directory to write into (created).
        plots: write the PNG and HTML plots (off for very fast overhead measurements).
    """
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = objective_names(study)
    directions = objective_directions(study)
    finalized = finalized_front(study)
    front = finalized if finalized is not None else front_trials(study)
    rerun = str(study.user_attrs.get("retrain_command", ""))
    files: dict[str, Path] = {}

    nets = out.resolve() / "nets"
    rows = []
    for t in front:
        spec = t.user_attrs.get("spec")
        net_path = None
        if isinstance(spec, dict):
            net_path = nets / f"trial_{t.number:04d}_{t.user_attrs.get('spec_hash', '')}.yaml"
            header = f"# archsearch study {study.study_name!r}, trial {t.number}\n"
            if rerun:
                header += f"# retrain: {rerun.format(config=net_path)}\n"
            _atomic_write(net_path, header + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None))
        rows.append(_row(t, names, net_path, rerun))

    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    if not columns:
        columns = ["trial", *names, "spec_hash", "config"]
    csv_path = out / "pareto.csv"
    with tempfile.NamedTemporaryFile("w", dir=out, delete=False, newline="", suffix=".tmp") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(fh.name, csv_path)
    files["csv"] = csv_path
    json_path = out / "pareto.json"
    payload = {
        "study": study.study_name,
        "objectives": [{"metric": n, "direction": d} for n, d in zip(names, directions, strict=True)],
        "finalized": finalized is not None,
        "front": rows,
    }
    _atomic_write(json_path, json.dumps(payload, indent=2, default=str))
    files["json"] = json_path

    history = hypervolume_history(study)
    hv_path = out / "hypervolume.csv"
    _atomic_write(
        hv_path,
        "trial,hypervolume\n" + "".join(f"{n},{hv:.6g}\n" for n, hv in history),
    )
    files["hypervolume_csv"] = hv_path
    if plots:
        from archsearch.results import plots as P

        files.update(P.plot_front(study, front, names, directions, out))
        files.update(P.plot_hypervolume(history, out))
    return ExportResult(directory=out, front=front, files=files)


def hypervolume_history(study: optuna.Study) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the feasible front so far), normalised over the whole study."""
    trials = sorted(completed_feasible(study), key=lambda t: t.number)
    if not trials:
        return []
    directions = objective_directions(study)
    cols = list(zip(*(t.values for t in trials), strict=True))
    lower = [min(c) for c in cols]
    upper = [max(c) for c in cols]
    for i, d in enumerate(directions):
        # Accuracy-like objectives are normalised on their natural [0, 1] scale.
        if d == "maximize" and lower[i] >= 0.0 and upper[i] <= 1.0:
            lower[i], upper[i] = 0.0, 1.0
    history = []
    front: list[Sequence[float]] = []
    for t in trials:
        candidates = [*front, t.values]
        front = [candidates[i] for i in non_dominated(candidates, directions)]
        history.append((t.number, hypervolume(front, directions, lower, upper)))
    return history


def load_stored_study(name: str, storage: str | None, tracking_dir: str | Path = "mlruns") -> optuna.Study:
    """Open an existing study by name; a missing study or storage is a one-sentence ConfigError."""
    from archsearch.errors import ConfigError

    url = storage or f"sqlite:///{(Path(tracking_dir) / 'optuna.db').resolve()}"
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        raise ConfigError(f"study.storage {url!r} does not exist; run a sweep first or fix study.storage.")
    try:
        names = optuna.get_all_study_names(storage=url)
    except Exception as exc:
        raise ConfigError(f"study.storage {url!r} cannot be opened ({type(exc).__name__}).") from None
    if name not in names:
        raise ConfigError(
            f"study.name {name!r} is not in {url}; stored studies: {', '.join(sorted(names)) or 'none'}."
        )
    return optuna.load_study(study_name=name, storage=url)
