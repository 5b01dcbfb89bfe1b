"""A project moved to another directory exports with its weights, re-roots for MLflow, and its
printed commands run there."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The CLI as a subprocess with this checkout on the path, and the sweep's stored study.
from tests.cli.test_reproduce import _run, _study

SWEEP = [
    "+sweep=fire",
    "data=synthetic",
    "data.subset=200",
    "data.train_size=256",
    "data.test_size=64",
    "trainer.epochs=1",
    "trainer.threads=1",
    "study.n_trials=3",
    "export.plots=false",
    "+sweep.fit._target_=archsearch.testing.FixedCostFit",
    "+sweep.fit.seconds=0",
]


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sweep run from the CLI in its own project directory (tracking and exports inside)."""
    where = tmp_path_factory.mktemp("travel") / "a"
    where.mkdir()
    out = _run([sys.executable, "-m", "archsearch", *SWEEP], cwd=where)
    assert out.returncode == 0, out.stderr[-2000:]
    return where


@pytest.fixture
def moved(original: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The project copied to ``tmp_path/b`` while the original is gone: (old place, new place)."""
    new = tmp_path / "b"
    shutil.copytree(original, new)
    away = original.with_name("a.away")
    original.rename(away)
    try:
        yield original, new
    finally:
        away.rename(original)


def _printed(stdout: str, header: str) -> list[str]:
    lines = stdout.splitlines()
    return shlex.split(lines[next(i for i, line in enumerate(lines) if line.startswith(header)) + 1])


@pytest.mark.slow
def test_a_moved_project_exports_its_weights_and_prints_commands_that_run(
    moved: tuple[Path, Path], tmp_path: Path
) -> None:
    old, new = moved
    shutil.rmtree(new / "results")
    out = _export(new)
    export = new / "results" / "fire"
    assert sorted(p.name for p in (export / "weights").glob("*.pt"))
    assert "restored from MLflow" in out.stdout and "not restored" not in out.stdout
    assert f"python -m archsearch.reroot tracking.dir={new / 'mlruns'}" in out.stdout
    # Weights are stored relative to the export directory.
    members = [t for t in _study(new).trials if "weights" in t.user_attrs]
    assert members and all(t.user_attrs["weights"].startswith("weights/") for t in members)
    # Nothing the export wrote or printed names the old place.
    written = [export / "pareto.csv", export / "pareto.json", *sorted((export / "nets").glob("*.yaml"))]
    assert all(str(old) not in p.read_text() for p in written)
    printed = [line for line in out.stdout.splitlines() if "old place" not in line]  # the re-root note
    assert all(str(old) not in line for line in printed)
    finalize = json.loads((export / "pareto.json").read_text())["finalize_command"]
    assert f"tracking.dir={new / 'mlruns'}" in finalize and f"export.dir={export}" in finalize
    assert f"sqlite:///{new / 'mlruns' / 'optuna.db'}" in finalize

    retrain = _printed(out.stdout, "retrain trial ")
    net = [w for w in retrain if w.startswith("model_file=")]
    assert len(net) == 1 and net[0].startswith(f"model_file={export / 'nets'}/")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = _run(retrain, cwd=elsewhere)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "val accuracy" in again.stdout


@pytest.mark.slow
def test_a_moved_project_is_rerooted_for_mlflow_and_finalizes_there(
    moved: tuple[Path, Path], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    old, new = moved
    client = MlflowClient(tracking_uri=f"sqlite:///{new / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("archsearch/fire")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert runs and all(client.list_artifacts(r.info.run_id) == [] for r in runs)  # what the UI showed

    finalize = [*_printed(_export(new).stdout, "retrain the front at full fidelity"), "finalize.epochs=1"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = _run(finalize, cwd=elsewhere)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and str(old / "mlruns" / "artifacts") in refused.stderr
    assert "python -m archsearch.reroot" in refused.stderr
    # A resumed sweep is refused before it writes anything: the study is as it was.
    before = _study(new).user_attrs, len(_study(new).trials)
    resumed = _run([sys.executable, "-m", "archsearch", *SWEEP, "study.n_trials=4"], cwd=new)
    assert resumed.returncode == 2 and "python -m archsearch.reroot" in resumed.stderr
    assert (_study(new).user_attrs, len(_study(new).trials)) == before

    rerooted = _run([sys.executable, "-m", "archsearch.reroot"], cwd=new)
    assert rerooted.returncode == 0, rerooted.stderr[-2000:]
    assert f"re-rooted the MLflow store {new / 'mlruns' / 'mlflow.db'}" in rerooted.stdout
    for r in runs:
        listed = {f.path for f in client.list_artifacts(r.info.run_id)}
        assert listed and ("net.yaml" in listed or "config.yaml" in listed), r.info.run_name
    assert "nothing to re-root" in _run([sys.executable, "-m", "archsearch.reroot"], cwd=new).stdout
    assert "archsearch.reroot" not in _export(new).stdout

    done = _run(finalize, cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-2000:]
    runs_now = client.search_runs([experiment.experiment_id], "tags.`archsearch.role` = 'finalize'")
    assert runs_now and all(r.info.artifact_uri.startswith((new / "mlruns").as_uri()) for r in runs_now)


EXPORT = [sys.executable, "-m", "archsearch.export", "study.name=fire", "export.plots=false"]


def _export(where: Path) -> subprocess.CompletedProcess[str]:
    out = _run(EXPORT, cwd=where)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


@pytest.mark.slow
def test_an_export_whose_artifacts_are_nowhere_names_the_stale_path_and_writes_nothing(
    moved: tuple[Path, Path],
) -> None:
    old, new = moved
    shutil.rmtree(new / "results")
    shutil.rmtree(new / "mlruns" / "artifacts")
    out = _run([sys.executable, "-m", "archsearch.export", "study.name=fire"], cwd=new)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and str(old / "mlruns" / "artifacts") in out.stderr
    assert "tracking.enabled=false" in out.stderr
    assert not (new / "results").exists()
