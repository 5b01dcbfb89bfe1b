"""Scale-out: the same fixed-cost sweep with 1, 2 and 4 worker processes on one PostgreSQL study.

    .venv/bin/python benchmarks/scale_out.py [--storage URL] [--trials N] [--seconds S]
                                             [--workers 1,2,4]

Every trial sleeps ``S`` seconds instead of training (``archsearch.testing.FixedCostFit``),
so the work is the same whatever the machine, and anything above ``S`` per trial is what the
search machinery costs: sampling, the cost model, the PostgreSQL storage (heartbeats, the
lock that hands out trials) and MLflow tracking (SQLite, in a temporary directory). Workers
are separate ``python -m archsearch`` processes, started together, as on a cluster.

Throughput is measured from the trials' own timestamps over the window in which every worker
was running trials (from the moment the last worker started its first trial to the moment the
first worker finished its last), so process start-up does not count. Prints trials per
minute, the speed-up over one worker and the overhead per trial. Target: >= 3.5x at 4 workers
with 1 s trials, i.e. storage and tracking are not the bottleneck.

The storage defaults to ``$ARCHSEARCH_TEST_POSTGRES`` (what .ci/run starts).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import optuna
from optuna.trial import TrialState


def run_workers(storage: str, workers: int, trials: int, seconds: float, cwd: Path) -> optuna.Study:
    """Start ``workers`` processes on a fresh study; return it once all have finished."""
    name = f"scale_out_{workers}_{uuid.uuid4().hex[:8]}"
    args = [
        sys.executable,
        "-m",
        "archsearch",
        "+sweep=fire",
        "sampler=tpe",  # the storage's scaling, not a sampler's model fits
        "data=synthetic",
        "export.plots=false",
        "trainer.threads=1",
        f"study.storage={storage}",
        f"study.name={name}",
        f"study.n_trials={trials}",
        "+sweep.fit._target_=archsearch.testing.FixedCostFit",
        f"+sweep.fit.seconds={seconds}",
    ]
    procs = [
        subprocess.Popen(
            args,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed (exit {proc.returncode}):\n{err[-2000:]}")
    return optuna.load_study(study_name=name, storage=storage)


def steady_throughput(study: optuna.Study) -> tuple[int, float, int]:
    """(trials completed, seconds, workers seen) in the window where every worker ran trials."""
    by_worker: dict[str, list[optuna.trial.FrozenTrial]] = defaultdict(list)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        by_worker[t.user_attrs["worker"]].append(t)
    starts = [min(t.datetime_start for t in ts if t.datetime_start) for ts in by_worker.values()]
    ends = [max(t.datetime_complete for t in ts if t.datetime_complete) for ts in by_worker.values()]
    begin, end = max(starts), min(ends)
    done = [
        t
        for ts in by_worker.values()
        for t in ts
        if t.datetime_complete is not None and begin < t.datetime_complete <= end
    ]
    return len(done), (end - begin).total_seconds(), len(by_worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=os.environ.get("ARCHSEARCH_TEST_POSTGRES"))
    parser.add_argument("--trials", type=int, default=48, help="trials per study (every worker count)")
    parser.add_argument("--seconds", type=float, default=1.0, help="fixed cost of one trial")
    parser.add_argument("--workers", default="1,2,4", help="worker counts to compare, first = baseline")
    opts = parser.parse_args()
    if not opts.storage:
        raise SystemExit("no PostgreSQL URL: pass --storage or set ARCHSEARCH_TEST_POSTGRES (.ci/run does)")
    counts = [int(w) for w in opts.workers.split(",")]
    print(f"{opts.trials} trials of {opts.seconds:g} s each, storage PostgreSQL, MLflow on SQLite")
    columns = ("workers", "trials", "window s", "trials/min", "speed-up", "overhead/trial")
    print("  ".join(f"{c:>{w}}" for c, w in zip(columns, (7, 6, 8, 10, 8, 14), strict=True)))
    baseline = None
    with tempfile.TemporaryDirectory() as tmp:
        for workers in counts:
            cwd = Path(tmp) / f"w{workers}"
            cwd.mkdir()
            started = time.perf_counter()
            study = run_workers(opts.storage, workers, opts.trials, opts.seconds, cwd)
            wall = time.perf_counter() - started
            done, seconds, seen = steady_throughput(study)
            per_min = 60.0 * done / seconds
            baseline = baseline or per_min
            # Each worker spends 60 * workers / per_min seconds per trial, of which `seconds` is the sleep.
            overhead_ms = 1e3 * (60.0 * seen / per_min - opts.seconds)
            print(
                f"{workers:>7}  {done:>6}  {seconds:>8.1f}  {per_min:>10.1f}  {per_min / baseline:>7.2f}x"
                f"  {overhead_ms:>11.0f} ms   ({seen} workers ran trials; {wall:.0f} s with start-up)"
            )


if __name__ == "__main__":
    main()
