"""Seconds from process start to the first trial's start, and where they go, fresh and existing dir.

    .venv/bin/python benchmarks/startup.py [repeats]

Each run is ``python -m archsearch +sweep=fire study.n_trials=1`` with a fixed-cost trial of
1 s (``archsearch.testing.FixedCostFit``), started as a new process exactly as a user, a SLURM
array job or a retry would. A "fresh" run works in an empty directory (SQLite storage and
MLflow store created and migrated); an "existing" run reuses the directory of a finished run
(a new study name, so a trial still runs). The process start is taken just before the
subprocess is spawned; the first trial's start is Optuna's ``datetime_start`` of trial 0.
Phases come from timestamps the child records around the functions that do each step.

Targets (issue 13, quiet machine): first trial within 3 s in an existing directory and 5 s in a
fresh one; the one-trial sweep done within 6 s. Report the load average beside the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The child: the CLI's own main(), with timestamps around each phase's function.
CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    marks = {"interpreter": time.time()}
    import archsearch.cli.main as cli
    import archsearch.cli.config as config
    import archsearch.search.opening as opening
    import archsearch.search.preflight as preflight
    import archsearch.results.tracking as tracking
    marks["imports"] = time.time()

    def timed(module, name, label):
        inner = getattr(module, name)
        def wrapper(*args, **kwargs):
            marks.setdefault(label + ":start", time.time())
            try:
                return inner(*args, **kwargs)
            finally:
                marks[label] = time.time()
        setattr(module, name, wrapper)

    timed(config, "sweep_plan", "validate")
    import archsearch.data.datasets as datasets
    timed(datasets, "load_dataset", "data")
    timed(preflight, "check_backends", "backends")
    timed(opening, "open_storage", "storage")
    timed(opening, "open_study", "study")
    start_study = tracking.Tracker.start_study
    def mlflow_start(self, *a, **k):
        try:
            return start_study(self, *a, **k)
        finally:
            marks["mlflow"] = time.time()
    tracking.Tracker.start_study = mlflow_start
    sys.argv = ["archsearch", *sys.argv[1:]]
    try:
        cli.main()
    finally:
        marks["done"] = time.time()
        with open(os.environ["STARTUP_MARKS"], "w") as f:
            json.dump(marks, f)
    """
)

PHASES = (
    ("interpreter", "python start-up"),
    ("imports", "imports (archsearch, torch, optuna, hydra)"),
    ("validate:start", "hydra compose"),
    ("validate", "settings checked (all keys)"),
    ("data", "dataset loaded"),
    ("backends", "storage and MLflow checked"),
    ("storage", "storage opened (tables created/migrated)"),
    ("study", "study created or joined"),
    ("mlflow", "MLflow store and parent run"),
    ("first_trial", "sampler, first trial asked"),
)


def one_run(work: Path, name: str) -> dict[str, float]:
    """Seconds from spawn to each mark of one ``+sweep=fire`` run in ``work``."""
    import optuna

    marks_file = work / f"{name}.marks.json"
    args = [
        "+sweep=fire",
        "study.n_trials=1",
        f"study.name={name}",
        "+sweep.fit._target_=archsearch.testing.FixedCostFit",
        "+sweep.fit.seconds=1.0",
        "export.plots=false",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STARTUP_MARKS": str(marks_file)}
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    ended = time.time()
    if done.returncode != 0:
        raise SystemExit(f"run failed:\n{done.stderr[-2000:]}")
    marks = json.loads(marks_file.read_text())
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{work / 'mlruns' / 'optuna.db'}")
    first = study.trials[0].datetime_start
    assert first is not None
    marks["first_trial"] = first.timestamp()
    out = {key: marks[key] - spawned for key, _ in PHASES}
    out["total"] = ended - spawned
    return out


def summary(label: str, runs: list[dict[str, float]]) -> None:
    def stat(values: list[float]) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):5.2f} +- {spread:4.2f} s"

    first = [r["first_trial"] for r in runs]
    whole = stat([r["total"] for r in runs])
    print(f"\n{label}: first trial starts at {stat(first)}; whole one-trial sweep {whole}")
    previous = [0.0] * len(runs)
    for key, text in PHASES:
        spans = [r[key] - p for r, p in zip(runs, previous, strict=True)]
        share = statistics.mean(spans) / statistics.mean(first)
        print(f"  {text:<44} {statistics.mean(spans):5.2f} s  {100 * share:4.0f}%")
        previous = [r[key] for r in runs]


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    fresh, existing = [], []
    for rep in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            fresh.append(one_run(work, f"fresh{rep}"))
            existing.append(one_run(work, f"again{rep}"))
        a, b = fresh[-1]["first_trial"], existing[-1]["first_trial"]
        print(f"round {rep + 1}: fresh {a:.2f} s, existing {b:.2f} s")
    summary("fresh directory", fresh)
    summary("existing directory", existing)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
