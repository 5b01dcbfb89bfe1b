"""Pareto-front export from an Optuna study alone: tables, net YAMLs, plots, hypervolume.

Run at the end of every sweep, and on demand with
``python -m archsearch.export study.name=NAME study.storage=URL``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from archsearch.pareto import REFERENCE, hypervolume, non_dominated
from archsearch.results.commands import Commands, fill_config, relocate_commands
from archsearch.results.front import accuracy_axis, completed_feasible, front_trials, objective_directions
from archsearch.results.front_meta import HypervolumeBox, column_units, hypervolume_box
from archsearch.results.net_files import net_text
from archsearch.results.provenance import PROVENANCE_ATTR, gather_provenance, row_provenance

__all__ = [
    "FINALIZED_PREFIX",
    "SELECTION_ATTR",
    "ExportResult",
    "atomic_write",
    "export_study",
    "file_mode",
    "finalized_front",
    "finalized_results",
    "net_path",
]

ACCURACY_KEYS = ("val_acc", "test_acc")
#: archsearch.search.finalize keeps trial N's retrained results in the study user attr ``finalized:N``
#: (one key per member, so workers finalizing at the same time never overwrite each other).
FINALIZED_PREFIX = "finalized:"
#: The trial numbers finalize was asked to retrain (``finalize.members``); None or absent: the front.
SELECTION_ATTR = "finalize_members"
#: hypervolume.csv's value column, naming its scaling (``k``: the number of objectives).
HYPERVOLUME_COLUMN = f"hypervolume (log10 costs; divided by {REFERENCE:g}^{{k}} so 1 = max)"


@dataclass
class ExportResult:
    """Where an export went and what the front holds."""

    directory: Path
    front: list[FrozenTrial]
    files: dict[str, Path] = field(default_factory=dict)
    #: The study's commands re-rooted where the project is now (retrain with ``{config}``).
    commands: Commands = field(default_factory=lambda: Commands("", ""))


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
    """The front on finalized results, or None unless every member to finalize was finalized.

    The members to finalize are the search's front, or the members finalize chose from it
    (``finalize.members``: the study user attr ``finalize_members``) while all of them are
    still on the front.

    Each member is a copy of its trial whose ``val_acc`` objective and user attrs carry the
    finalized validation accuracy, with ``test_acc``, ``search_val_acc`` (what the search saw)
    and ``finalize_run_id`` added; members whose retraining failed are left out, and the rest
    are filtered to those non-dominated on the finalized values.
    """
    import copy

    results = finalized_results(study)
    members = front_trials(study)
    selection = study.user_attrs.get(SELECTION_ATTR)
    if selection is not None:
        members = [t for t in members if t.number in set(selection)]
        if len(members) != len(selection):
            return None  # the search went on and pushed a chosen member off the front
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
            "model_uri": r.get("model_uri", ""),
            "provenance": r.get("provenance") or {},
            "fidelity": "finalize",
            "search_fidelity": t.user_attrs.get("fidelity", "epochs"),
        }
        finalized.append(c)
    idx = non_dominated([c.values for c in finalized], objective_directions(study))
    return sorted((finalized[i] for i in idx), key=lambda t: t.number)


def file_mode() -> int:
    """The mode ``open`` gives a new file under the current umask (0o666 less the umask)."""
    # The umask can only be read by setting it; it is put back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` through a renamed temporary file, with the mode ``open`` would give.

    ``mkstemp`` creates its file 0600 whatever the umask; without the chmod every export file
    would be private while the plots beside it, written directly, follow the umask.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(content.encode() if isinstance(content, str) else content)
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)


def net_path(directory: str | Path, trial: FrozenTrial) -> Path:
    """Where the export in ``directory`` puts ``trial``'s net YAML (absolute)."""
    name = f"trial_{trial.number:04d}_{trial.user_attrs.get('spec_hash', '')}.yaml"
    return Path(directory).resolve() / "nets" / name


#: Columns that count things (parameters, multiply-accumulates, bytes, epochs): written as integers.
_COUNTS = (
    "params",
    "macs",
    "flops",
    "bytes",
    "activations",
    "model_bytes",
    "peak_activation_bytes",
    "final_epochs",
)


def _weights_column(stored: Any, out: Path) -> str:
    """A member's weights file as pareto.csv names it, relative to the export directory ("": none kept).

    A path stored relative (to the export directory) is kept; an absolute one under ``out`` is
    made relative; one elsewhere (another export directory, a moved project) is named where this
    export keeps its copy, ``weights/<file>``, which ``python -m archsearch.export`` restores
    from the member's MLflow run.
    """
    if not stored:
        return ""
    path = Path(str(stored))
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return f"weights/{path.name}"


def _row(
    t: FrozenTrial,
    names: list[str],
    net_file: Path | None,
    rerun: str,
    out: Path,
    search: dict[str, Any] | None,
) -> dict[str, Any]:
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
        "search_fidelity",
    ):
        if key in t.user_attrs and key not in row:
            row[key] = t.user_attrs[key]
    # Where val_acc came from: epochs (trained), supernet (scored on shared weights), finalize.
    row["fidelity"] = t.user_attrs.get("fidelity", "epochs")
    for key, value in (t.user_attrs.get("costs") or {}).items():
        row.setdefault(key, value)
    for key in _COUNTS:  # counts read back from the study are floats: 53363, not 53363.0
        if isinstance(row.get(key), float) and row[key].is_integer():
            row[key] = int(row[key])
    row["spec_hash"] = t.user_attrs.get("spec_hash", "")
    row["net_file"] = str(net_file) if net_file is not None else ""
    row["weights"] = _weights_column(t.user_attrs.get("weights"), out)
    row["retrain"] = fill_config(rerun, net_file) if net_file is not None and rerun else ""
    row["mlflow_run_id"] = t.user_attrs.get("mlflow_run_id", "")
    if "model_uri" in t.user_attrs:  # a finalized member's MLflow Model
        row["model_uri"] = t.user_attrs["model_uri"]
    # Who trained it (the finalize, for a finalized member) and the search's latency profile.
    row.update(row_provenance(search, t.user_attrs.get("provenance")))
    return row


def export_study(
    study: optuna.Study,
    out_dir: str | Path,
    *,
    plots: bool = True,
    tracking_dir: str | Path | None = None,
) -> ExportResult:
    """Write the study's front: pareto.csv/json, one net YAML per member, plots, hypervolume.

    Once every member of the search's front has been finalized (archsearch.search.finalize), the
    exported front is the front on finalized results, with test accuracy beside validation
    accuracy; until then it is the search's front.

    Args:
        study: any study written by a sweep (only its storage is needed).
        out_dir: directory to write into (created).
        plots: write the PNG and HTML plots (off for very fast overhead measurements).
        tracking_dir: where the study's tracking directory is now (None: where it was, or
            found beside ``out_dir`` when the project moved). The stored retrain and finalize
            commands are written re-rooted on it and on ``out_dir``
            (:func:`~archsearch.results.commands.relocate_commands`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = objective_names(study)
    directions = objective_directions(study)
    finalized = finalized_front(study)
    front = finalized if finalized is not None else front_trials(study)
    stored = Commands(
        str(study.user_attrs.get("retrain_command") or ""),
        str(study.user_attrs.get("finalize_command") or ""),
    )
    relocated = relocate_commands(stored, tracking_dir=tracking_dir, export_dir=out)
    rerun = relocated.retrain
    files: dict[str, Path] = {}

    search = study.user_attrs.get(PROVENANCE_ATTR)
    rows = []
    for t in front:
        spec = t.user_attrs.get("spec")
        net_file = None
        if isinstance(spec, dict):
            net_file = net_path(out, t)
            atomic_write(net_file, net_text(study.study_name, t.number, spec, rerun, net_file))
        rows.append(_row(t, names, net_file, rerun, out, search))

    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    if not columns:
        columns = ["trial", *names, "spec_hash", "net_file", "weights"]
    csv_path = out / "pareto.csv"
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(csv_path, table.getvalue())
    files["csv"] = csv_path
    json_path = out / "pareto.json"
    history = hypervolume_history(study)
    box = study_box(study)
    definition = study.user_attrs.get("definition") or {}
    hardware = (search or {}).get("hardware")
    payload = {
        "study": study.study_name,
        "objectives": [{"metric": n, "direction": d} for n, d in zip(names, directions, strict=True)],
        "finalized": finalized is not None,
        "finalize_command": relocated.finalize,
        # The search's (the study's latest worker), and this export's; each row has its own columns.
        "provenance": {"search": search, "export": gather_provenance().to_dict()},
        "units": column_units(columns, definition.get("cost"), hardware),
        "hypervolume": {
            "value": history[-1][1] if history else None,
            "normalisation": box.describe() if box is not None else "",
            **(box.to_dict() if box is not None else {}),
        },
        "front": rows,
    }
    atomic_write(json_path, json.dumps(payload, indent=2, default=str))
    files["json"] = json_path

    hv_path = out / "hypervolume.csv"
    atomic_write(
        hv_path,
        f"trial,{HYPERVOLUME_COLUMN.format(k=len(names))}\n"
        + "".join(f"{n},{hv:.6g}\n" for n, hv in history),
    )
    files["hypervolume_csv"] = hv_path
    if plots:
        from archsearch.results import plots as P

        commands = {r["trial"]: r["retrain"] for r in rows}
        files.update(P.plot_front(study, front, names, directions, out, commands=commands))
        note = box.describe() if box is not None else ""
        files.update(P.plot_hypervolume(history, out, len(names), note))
    return ExportResult(directory=out, front=front, files=files, commands=relocated)


def hypervolume_history(study: optuna.Study) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the feasible front so far) as a fraction of its maximum.

    Measured on the front plot's axes, in :func:`study_box`: the accuracy objective on its
    natural 0-1 scale (fixed, not the range the study reached), every cost objective as log10
    (when all its values are positive) min-max normalised over the study's completed, feasible
    trials. The reference point is :data:`~archsearch.pareto.REFERENCE` per axis, so the raw
    value reaches ``REFERENCE ** k`` for ``k`` objectives; it is divided by that, so 1 is the
    whole box.
    """
    box = study_box(study)
    if box is None:
        return []
    trials = sorted(completed_feasible(study), key=lambda t: t.number)
    directions = list(box.directions)
    points = [box.point(t.values) for t in trials]
    lower, upper = list(box.lower), list(box.upper)
    history = []
    front: list[Sequence[float]] = []
    scale = REFERENCE ** len(directions)
    for t, p in zip(trials, points, strict=True):
        candidates = [*front, p]
        front = [candidates[i] for i in non_dominated(candidates, directions)]
        history.append((t.number, hypervolume(front, directions, lower, upper) / scale))
    return history


def study_box(study: optuna.Study) -> HypervolumeBox | None:
    """The hypervolume's normalisation box over the study's completed, feasible trials (None: none)."""
    names = objective_names(study)
    trials = completed_feasible(study)
    return hypervolume_box(trials, names, objective_directions(study), accuracy_axis(names))


def load_stored_study(name: str, storage: str | None, tracking_dir: str | Path = "mlruns") -> optuna.Study:
    """Open an existing study by name; a missing study or storage is a one-sentence ConfigError."""
    from archsearch.errors import ConfigError
    from archsearch.storage.database import stored_study_names

    url = storage or f"sqlite:///{(Path(tracking_dir) / 'optuna.db').resolve()}"
    names = stored_study_names(url)
    if name not in names:
        raise ConfigError(
            f"study.name {name!r} is not in {url}; stored studies: {', '.join(sorted(names)) or 'none'}."
        )
    return optuna.load_study(study_name=name, storage=url)
