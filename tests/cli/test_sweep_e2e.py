"""End to end: the real CLI, real training, SQLite storage, MLflow (SQLite and a real server)."""

from __future__ import annotations

import csv
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest

from archsearch.net.spec import load_spec

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FAST = ["data=synthetic", "trainer.epochs=1", "data.train_size=256", "data.test_size=64"]


def cli(
    *args: str, cwd: Path, module: str = "archsearch", timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_sweep_writes_storage_mlflow_and_front(tmp_path: Path) -> None:
    out = cli("+sweep=fire", "study.n_trials=4", *FAST, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Pareto front of study fire" in out.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in out.stdout
    for n in range(4):
        assert f"trial {n:>4}" in out.stdout

    results = tmp_path / "results" / "fire"
    for name in (
        "pareto.csv",
        "pareto.json",
        "pareto.png",
        "pareto.html",
        "hypervolume.csv",
        "hypervolume.png",
    ):
        assert (results / name).stat().st_size > 0, name
    payload = json.loads((results / "pareto.json").read_text())
    assert [o["metric"] for o in payload["objectives"]] == ["val_acc", "params", "macs"]
    rows = list(csv.DictReader((results / "pareto.csv").open()))
    assert len(rows) == len(payload["front"]) >= 1
    for row in rows:
        spec = load_spec(row["net_file"])
        assert spec.hash == row["spec_hash"]
        assert shlex.split(row["retrain"])[:4] == [
            sys.executable,
            "-m",
            "archsearch",
            f"model_file={row['net_file']}",
        ]

    study = optuna.load_study(study_name="fire", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")
    assert len(study.trials) == 4

    # An exported member retrains with its one-line command, which carries the data keys too.
    again = cli(*shlex.split(rows[0]["retrain"])[3:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "val" in again.stdout.lower()


def test_export_cli_rebuilds_the_front_from_the_storage_alone(tmp_path: Path) -> None:
    assert cli("+sweep=fire", "study.n_trials=3", "export.plots=false", *FAST, cwd=tmp_path).returncode == 0
    (tmp_path / "results").rename(tmp_path / "first")
    out = cli(
        "study.name=fire",
        "export.dir=again",
        "export.plots=false",
        module="archsearch.export",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    first = (tmp_path / "first" / "fire" / "pareto.csv").read_text()
    again = (tmp_path / "again" / "pareto.csv").read_text()
    assert again == first.replace(str(tmp_path / "results" / "fire"), str(tmp_path / "again"))
    nets = sorted(p.name for p in (tmp_path / "again" / "nets").glob("*.yaml"))
    assert nets and nets == sorted(p.name for p in (tmp_path / "first" / "fire" / "nets").glob("*.yaml"))
    missing = cli("study.name=nope", module="archsearch.export", cwd=tmp_path)
    assert missing.returncode == 2
    storage = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    assert missing.stderr.strip().splitlines() == [
        f"error: study.name 'nope' is not in {storage}; stored studies: fire."
    ]


def test_grid_sampler_runs_the_papers_squeeze_ratio_sweep(tmp_path: Path) -> None:
    out = cli(
        "+sweep=fire",
        "sweep.space=sr_grid",
        "sampler=grid",
        "study.n_trials=5",
        "export.plots=false",
        *FAST,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    study = optuna.load_study(study_name="fire", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")
    srs = sorted(t.params["sr"] for t in study.trials)
    assert srs == [0.125, 0.25, 0.5, 0.75, 1.0]


def test_latency_sweep_measures_and_bounds_latency(tmp_path: Path) -> None:
    out = cli(
        "+sweep=fire_latency",
        "study.n_trials=3",
        "export.plots=false",
        "constraints.latency_ms.max=1000",
        *FAST,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    study = optuna.load_study(
        study_name="fire_latency", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    )
    assert len(study.directions) == 2
    for t in study.trials:
        assert t.user_attrs["costs"]["latency_ms"] > 0
        assert t.constraints["latency_ms"] <= 0
        assert t.values[1] == t.user_attrs["costs"]["latency_ms"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_sweep_logs_to_a_real_mlflow_server(tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--default-artifact-root", str(tmp_path / "server-artifacts"),
            "--workers", "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)
        out = cli(
            "+sweep=fire",
            "study.n_trials=3",
            "export.plots=false",
            f"tracking.uri={base}",
            *FAST,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert f"review the runs at {base}" in out.stdout

        exp = json.loads(
            urllib.request.urlopen(
                f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=archsearch/fire"
            ).read()
        )
        runs = _post(
            f"{base}/api/2.0/mlflow/runs/search",
            {"experiment_ids": [exp["experiment"]["experiment_id"]], "max_results": 100},
        )["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        parents = [r for r, tg in zip(runs, tags, strict=True) if tg.get("archsearch.role") == "parent"]
        children = [(r, tg) for r, tg in zip(runs, tags, strict=True) if tg.get("archsearch.role") == "trial"]
        assert len(parents) == 1 and len(children) == 3
        parent_id = parents[0]["info"]["run_id"]
        for run, tg in children:
            assert tg["mlflow.parentRunId"] == parent_id
            assert run["info"]["status"] == "FINISHED"
            metrics = {m["key"] for m in run["data"]["metrics"]}
            assert {"params", "macs", "val_acc", "train_loss"} <= metrics
            history = json.loads(
                urllib.request.urlopen(
                    f"{base}/api/2.0/mlflow/metrics/get-history?run_id={run['info']['run_id']}&metric_key=val_acc"
                ).read()
            )["metrics"]
            assert len(history) >= 1
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_supernet_sweep_runs_and_its_printed_finalize_command_starts_from_the_supernet(
    tmp_path: Path,
) -> None:
    small = ["sweep.fidelity.supernet.epochs=1", "sweep.fidelity.supernet.pool=40", "hardware=laptop_cpu"]
    out = cli("+sweep=fire_supernet", "study.n_trials=6", *FAST, *small, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "supernet epoch 1/1" in out.stdout and "trial    5" in out.stdout
    rows = list(csv.DictReader((tmp_path / "results" / "fire_supernet" / "pareto.csv").open()))
    assert rows and {r["fidelity"] for r in rows} == {"supernet"}
    assert list((tmp_path / "mlruns" / "supernet").glob("fire_supernet-*.pt"))
    printed = out.stdout.splitlines()
    command = printed[printed.index("retrain the front at full fidelity and score test:") + 1].strip()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    argv = shlex.split(command)
    assert argv[:3] == [sys.executable, "-m", "archsearch.finalize"]
    final = cli(*argv[3:], "finalize.epochs=1", "finalize.init=supernet", module=argv[2], cwd=elsewhere)
    assert final.returncode == 0, final.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "results" / "fire_supernet" / "pareto.csv").open()))
    assert {r["fidelity"] for r in rows} == {"finalize"} and {r["search_fidelity"] for r in rows} == {
        "supernet"
    }


def test_a_supernet_sweep_with_halving_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = cli("+sweep=fire_supernet", "sweep.fidelity.enabled=true", *FAST, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: sweep.fidelity.enabled (successive halving) stops trainings early, and "
        "sweep.fidelity.kind=supernet trains none per trial; set sweep.fidelity.enabled=false."
    ]
    assert list(tmp_path.iterdir()) == []
