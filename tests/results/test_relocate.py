"""A moved or copied project: stored commands and weights re-rooted, MLflow's store re-rooted."""

from __future__ import annotations

import shlex
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from archsearch.errors import ConfigError
from archsearch.results.commands import Commands, fill_config, relocate_commands
from archsearch.results.relocate import (
    artifact_root,
    locate_artifacts,
    reroot_store,
    stored_path,
    weights_file,
)
from archsearch.results.tracking import Tracker, resolve_tracking_uri


def _stored(root: Path) -> Commands:
    """Commands as a sweep in ``root`` stored them (absolute paths, shell- and Hydra-quoted)."""
    python = shlex.quote(str(root / ".venv" / "bin" / "python"))
    retrain = (
        f"{python} -m archsearch model_file={{config}} data=arrays "
        f"data.path={root}/data/x.npz 'data.dir=/elsewhere/my data' seed=0"
    )
    finalize = (
        f"{python} -m archsearch.finalize study.name=fire study.storage=sqlite:///{root}/mlruns/optuna.db "
        f"tracking.dir={root}/mlruns export.dir={root}/results/fire data=digits seed=0"
    )
    return Commands(retrain, finalize)


def _project(root: Path) -> Path:
    for sub in ("mlruns", "results/fire", "data", ".venv/bin"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "data" / "x.npz").write_bytes(b"")
    return root


def test_stored_commands_name_the_project_where_it_is_now(tmp_path: Path) -> None:
    a, b = tmp_path / "a", _project(tmp_path / "b")
    moved = relocate_commands(_stored(a), tracking_dir=b / "mlruns", export_dir=b / "results" / "fire")
    words = shlex.split(moved.finalize)
    assert f"tracking.dir={b / 'mlruns'}" in words and f"export.dir={b / 'results' / 'fire'}" in words
    assert f"study.storage=sqlite:///{b / 'mlruns' / 'optuna.db'}" in words
    retrain = shlex.split(fill_config(moved.retrain, b / "results" / "fire" / "nets" / "t.yaml"))
    assert f"data.path={b / 'data' / 'x.npz'}" in retrain  # inside the project: it moved with it
    assert "data.dir=/elsewhere/my data" in retrain  # outside: left alone, quoting intact
    assert f"model_file={b / 'results' / 'fire' / 'nets' / 't.yaml'}" in retrain
    # The old interpreter is gone and b has none: this one runs the command.
    assert retrain[0] == words[0] == sys.executable
    assert str(a) not in moved.retrain + moved.finalize


def test_a_copy_names_its_own_files_even_while_the_original_exists(tmp_path: Path) -> None:
    a, b = _project(tmp_path / "a"), _project(tmp_path / "b")
    (b / ".venv" / "bin" / "python").write_text("")
    (a / ".venv" / "bin" / "python").write_text("")
    copied = relocate_commands(_stored(a), tracking_dir=b / "mlruns", export_dir=b / "results" / "fire")
    assert str(a) not in copied.retrain + copied.finalize
    assert shlex.split(copied.finalize)[0] == str(b / ".venv" / "bin" / "python")


def test_commands_of_a_project_that_did_not_move_are_unchanged(tmp_path: Path) -> None:
    a = _project(tmp_path / "a")
    (a / ".venv" / "bin" / "python").write_text("")
    stored = _stored(a)
    assert relocate_commands(stored, tracking_dir=a / "mlruns", export_dir=a / "results" / "fire") == stored
    assert relocate_commands(stored) == stored
    assert relocate_commands(Commands("", "")) == Commands("", "")


def test_the_export_directory_alone_locates_a_moved_tracking_directory(tmp_path: Path) -> None:
    a, b = tmp_path / "a", _project(tmp_path / "b")
    (b / "mlruns" / "optuna.db").write_bytes(b"")
    moved = relocate_commands(_stored(a), export_dir=b / "results" / "fire")
    assert str(a) not in moved.finalize and f"tracking.dir={b / 'mlruns'}" in moved.finalize


def test_weights_are_stored_relative_to_the_export_directory(tmp_path: Path) -> None:
    export = tmp_path / "results" / "fire"
    assert stored_path(export / "weights" / "trial_0003.pt", export) == "weights/trial_0003.pt"
    assert stored_path(tmp_path / "w.pt", export) == str((tmp_path / "w.pt").resolve())
    assert weights_file("weights/trial_0003.pt", export) == export / "weights" / "trial_0003.pt"
    assert weights_file("", export) is None and weights_file(None, export) is None
    # An absolute path from before (or from another place) is taken from here when it is here.
    old = "/gone/results/fire/weights/trial_0003.pt"
    assert weights_file(old, export) == Path(old)
    (export / "weights").mkdir(parents=True)
    (export / "weights" / "trial_0003.pt").write_bytes(b"")
    assert weights_file(old, export) == export / "weights" / "trial_0003.pt"


def _store(root: Path) -> tuple[str, str]:
    """A project's MLflow store with one experiment, a parent run and a trial run with an artifact."""
    uri = resolve_tracking_uri(None, root / "mlruns")
    tracker = Tracker(uri, "archsearch/fire", root / "mlruns" / "artifacts")
    parent = tracker.start_study("fire", {"n_trials": 1}, "study: {name: fire}\n")
    run = tracker.start_trial(0, {"depth": 2}, {"archsearch.study": "fire"})
    tracker.log_text(run, "nodes: []\n", "net.yaml")
    tracker.end_trial(run, "FINISHED")
    tracker.end_study()
    return parent, run


def _locations(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT artifact_location FROM experiments WHERE name = 'archsearch/fire' "
            "UNION ALL SELECT artifact_uri FROM runs"
        )
        return [str(r[0]) for r in rows]


def test_reroot_points_a_copied_store_at_its_own_artifacts(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    a, b = tmp_path / "a", tmp_path / "b"
    _, run = _store(a)
    shutil.copytree(a, b)
    uri = resolve_tracking_uri(None, b / "mlruns")
    artifacts = b / "mlruns" / "artifacts"
    # The copy's store still names a's artifacts: MLflow would show and extend the original.
    assert all(str(a) in loc for loc in _locations(b / "mlruns" / "mlflow.db"))
    where = locate_artifacts(uri, "archsearch/fire", artifacts)
    assert where is not None and where.moved and where.path == artifacts.resolve()
    with pytest.raises(ConfigError, match=r"was moved or copied.*python -m archsearch.reroot"):
        Tracker(uri, "archsearch/fire", artifacts)

    done = reroot_store(b / "mlruns")
    assert done.old_roots == [str((a / "mlruns" / "artifacts").resolve())]
    assert (done.experiments, done.runs, done.missing) == (1, 2, 0)
    assert all(loc.startswith(artifacts.resolve().as_uri()) for loc in _locations(b / "mlruns" / "mlflow.db"))
    assert all(str(a) in loc for loc in _locations(a / "mlruns" / "mlflow.db"))  # the original untouched
    assert [f.path for f in MlflowClient(tracking_uri=uri).list_artifacts(run)] == ["net.yaml"]
    Tracker(uri, "archsearch/fire", artifacts)  # new runs may be logged here now
    again = reroot_store(b / "mlruns")
    assert again.old_roots == [] and again.runs == 0


def test_reroot_refuses_a_store_whose_artifacts_are_nowhere_and_changes_nothing(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _store(a)
    shutil.copytree(a, b)
    shutil.rmtree(a)
    shutil.rmtree(b / "mlruns" / "artifacts")
    before = _locations(b / "mlruns" / "mlflow.db")
    stale = str((a / "mlruns" / "artifacts").resolve())
    with pytest.raises(ConfigError, match=rf"keeps its artifacts in {stale}.*copy the project's artifacts"):
        reroot_store(b / "mlruns")
    assert _locations(b / "mlruns" / "mlflow.db") == before
    uri = resolve_tracking_uri(None, b / "mlruns")
    with pytest.raises(ConfigError, match=rf"{stale}, which does not exist.*python -m archsearch.reroot"):
        locate_artifacts(uri, "archsearch/fire", b / "mlruns" / "artifacts")
    with pytest.raises(ConfigError, match=r"holds no MLflow store"):
        reroot_store(tmp_path / "nowhere")


def test_artifact_root_leaves_servers_and_unmoved_stores_alone(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    here = tmp_path / "mlruns" / "artifacts"
    assert artifact_root(store, "mlflow-artifacts:/1", here) is None
    root = artifact_root(store, here.resolve().as_uri(), here)
    assert root is not None and not root.moved
    assert root.run_dir(f"{here.resolve().as_uri()}/abc/artifacts") == here.resolve() / "abc" / "artifacts"
    # A store kept elsewhere (tracking.uri) that names an existing directory is used as it says.
    other = tmp_path / "shared" / "artifacts"
    other.mkdir(parents=True)
    root = artifact_root(f"sqlite:///{tmp_path / 'shared.db'}", other.as_uri(), here)
    assert root is not None and not root.moved
