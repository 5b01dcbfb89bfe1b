"""A sweep's outputs reproduce its trials: retrain commands, restored weights, export files and plots."""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch

from archsearch.data.settings import DataSettings
from archsearch.net.model import build
from archsearch.net.spec import load_spec
from archsearch.results.commands import retrain_command
from archsearch.results.export import export_study, hypervolume_history
from archsearch.search.settings import SearchSettings

ROOT = Path(__file__).resolve().parents[2]
SWEEP = [
    "+sweep=fire",
    "data=synthetic",
    "data.subset=200",
    "data.train_size=256",
    "data.test_size=64",
    "trainer.epochs=2",
    "trainer.threads=1",
    "study.n_trials=2",
    "export.plots=false",
]


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A tiny real sweep run from the CLI: its directory and what it printed."""
    where = tmp_path_factory.mktemp("sweep")
    out = _run([sys.executable, "-m", "archsearch", *SWEEP], cwd=where)
    assert out.returncode == 0, out.stderr[-2000:]
    yield where, out.stdout


def _study(where: Path) -> optuna.Study:
    return optuna.load_study(study_name="fire", storage=f"sqlite:///{where / 'mlruns' / 'optuna.db'}")


@pytest.mark.slow
def test_printed_retrain_command_reproduces_the_trial_from_another_directory(
    swept: tuple[Path, str], tmp_path: Path
) -> None:
    import mlflow

    where, printed = swept
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("retrain trial "))
    number = int(lines[header].split()[2])
    command = shlex.split(lines[header + 1])
    assert command[0] == sys.executable
    assert "trainer.threads=1" in command and "data.subset=200" in command

    again = _run(command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    curve = re.findall(r"epoch \d+: .*?val_acc (\d\.\d{4})", again.stdout)

    trial = _study(where).trials[number]
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{where / 'mlruns' / 'mlflow.db'}")
    history = sorted(
        client.get_metric_history(trial.user_attrs["mlflow_run_id"], "val_acc"), key=lambda m: m.step
    )
    # 51 validation images: accuracies differ by at least 1/51, so four printed decimals are exact.
    assert curve == [f"{m.value:.4f}" for m in history]
    assert len(curve) == 2
    assert curve[-1] == f"{trial.user_attrs['val_acc']:.4f}"


@pytest.mark.slow
def test_printed_finalize_command_composes_from_another_directory(
    swept: tuple[Path, str], tmp_path: Path
) -> None:
    where, printed = swept
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("retrain the front at full fidelity"))
    command = shlex.split(lines[header + 1])
    assert command[1:3] == ["-m", "archsearch.finalize"]
    out = _run([*command, "--cfg", "job"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"dir: {where / 'mlruns'}" in out.stdout
    assert "name: synthetic" in out.stdout and "train_size: 256" in out.stdout and "threads: 1" in out.stdout


@pytest.mark.slow
def test_export_cli_restores_front_weights_from_mlflow(swept: tuple[Path, str], tmp_path: Path) -> None:
    where = tmp_path / "copy"
    shutil.copytree(swept[0], where)
    shutil.rmtree(where / "results")
    old = os.umask(0o027)  # the child inherits it: restored weights must follow it too
    try:
        out = _run(
            [sys.executable, "-m", "archsearch.export", "study.name=fire", "export.plots=false"], cwd=where
        )
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr[-2000:]
    weights = sorted((where / "results" / "fire" / "weights").glob("*.pt"))
    assert weights and {oct(stat.S_IMODE(w.stat().st_mode)) for w in weights} == {"0o640"}
    assert "restored from MLflow" in out.stdout
    front = export_study(_study(where), tmp_path / "scratch", plots=False).front
    assert front
    for t in front:
        path = where / "results" / "fire" / "weights" / f"trial_{t.number:04d}.pt"
        model = build(
            load_spec(
                where / "results" / "fire" / "nets" / f"trial_{t.number:04d}_{t.user_attrs['spec_hash']}.yaml"
            )
        )
        model.load_state_dict(torch.load(path, weights_only=True))


@pytest.fixture(scope="module")
def exported(swept: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep's study exported again, plots included, under umask 027."""
    out = tmp_path_factory.mktemp("export")
    old = os.umask(0o027)
    try:
        export_study(_study(swept[0]), out, plots=True)
    finally:
        os.umask(old)
    return out


@pytest.mark.slow
def test_every_export_file_follows_the_umask(exported: Path) -> None:
    files = [p for p in exported.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {
        "pareto.csv",
        "pareto.json",
        "hypervolume.csv",
        "pareto.png",
        "pareto.html",
    }
    assert any(p.parent.name == "nets" for p in files)
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: "0o640" for p in files}


@pytest.mark.slow
def test_plot_hover_shows_objectives_hash_and_retrain_command(
    swept: tuple[Path, str], exported: Path
) -> None:
    # plotly's JSON writes "/" as "\\u002f".
    html = (exported / "pareto.html").read_text().replace("\\u002f", "/")
    member = export_study(_study(swept[0]), exported / "again", plots=False).front[0]
    assert f"spec hash {member.user_attrs['spec_hash']}" in html
    for name in ("val_acc = ", "params = ", "macs = ", "retrain: ", sys.executable):
        assert name in html


def test_hypervolume_is_a_fraction_of_the_box_on_log_cost_axes(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["val_acc", "params"])
    for acc, params in ((0.0, 100_000.0), (1.0, 1_000.0), (0.5, 10.0)):
        study.add_trial(optuna.trial.create_trial(values=[acc, params]))
    history = hypervolume_history(study)
    # On log10(params) in [1, 5]: losses (0, 0.5) and (0.5, 0) cover 0.66 + 0.30 of the 1.1^2 box.
    assert history[-1][1] == pytest.approx(0.96 / 1.21)
    assert all(0.0 <= hv <= 1.0 for _, hv in history)
    export_study(study, tmp_path, plots=False)
    header = (tmp_path / "hypervolume.csv").read_text().splitlines()[0]
    assert header == "trial,hypervolume (log10 costs; divided by 1.1^2 so 1 = max)"


def test_a_front_that_dominates_everything_fills_the_whole_box() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", ["val_acc", "params", "macs"])
    for values in ((0.5, 1000.0, 1e6), (1.0, 10.0, 1e3)):
        study.add_trial(optuna.trial.create_trial(values=list(values)))
    assert math.isclose(hypervolume_history(study)[-1][1], 1.0)


def test_no_retrain_command_without_the_data_config() -> None:
    # A dataset passed as an object (built from arrays, say) has no split the CLI could rebuild,
    # nor have settings naming a config file that no config folder holds.
    assert retrain_command(SearchSettings(), None) == ""
    assert retrain_command(SearchSettings(), DataSettings(config="arrays_from_memory")) == ""


def test_the_retrain_command_names_a_profile_file_the_search_estimated_on() -> None:
    """Retrained as printed, a net's latency_est_ms is priced on the same profile as in the search."""
    data = DataSettings.from_config("digits")
    assert "hardware=laptop_cpu" in retrain_command(SearchSettings(), data, "laptop_cpu").split()
    assert "hardware=" not in retrain_command(SearchSettings(), data, "auto")  # the default
    assert "hardware=" not in retrain_command(SearchSettings(), data, "a-profile-built-in-python")
