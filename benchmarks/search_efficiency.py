"""Does successive halving find a better front in the same time? Hypervolume against wall clock.

    .venv/bin/python benchmarks/search_efficiency.py [--budget 200] [--seeds 3] [--data digits]
        [--epochs 9] [--set trainer.batch_size=32 ...] [--halving sweep.fidelity.rungs=[1,3] ...]
        [--only a,b] [--sequential] [--from DIR]

Runs the fire sweep (conf/sweep/fire.yaml: one thread per run, MLflow on) for ``--budget``
seconds per run, ``--seeds`` times each, for

    (a) the default sampler (TPE) with successive halving (sweep.fidelity.enabled=true),
    (b) the same without it,
    (c) random search without it.

The three runs of a seed go side by side, one process each with its own storage, so the
machine's load (and on 2 cores, the sharing of them) hits all three alike; ``--sequential``
runs them one after another instead. Candidates train ``--epochs`` epochs with a cosine
schedule and 5% warm-up (under the shipped one-cycle schedule the first quarter of training is
warm-up, where no rung can rank anything) at ``--set``'s batch size and data; (a) adds
``--halving``'s rungs. The defaults train digits at batch 32 for 9 epochs with rungs at epochs
1 and 3 (eta 3): at the shipped batch 128 one digits epoch is 11 steps.

It prints how well each epoch's validation accuracy ranks the final one among (b)'s and (c)'s
completed trials (what a rung there can know), then the hypervolume of the front of completed
trials each run has found at the end of the budget and at half of it, through
archsearch.pareto.hypervolume with shared bounds (accuracy on [0, 1], params and MACs on the
range of every completed trial of every run): once on params and MACs as they are (the scale
of the export's hypervolume.csv) and once on log10 of them (which weighs every decade of size
alike). Then the time (a) needs to reach (b)'s final hypervolume, per seed and on the
seed-averaged curves. Target: at most half the budget. It also prints how much of (b)'s
hypervolume its smallest completed net holds alone (the cheapest point dominates most of the
cost box on either scale).

``--from DIR`` reports again on the runs an earlier invocation left in DIR (it prints where),
without running anything; benchmarks/halving_replay.py replays the same runs' learning curves
through the halving rule alone.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import optuna
from hydra import compose, initialize_config_dir

from archsearch.cli.main import run_sweep
from archsearch.pareto import hypervolume, non_dominated
from archsearch.resources import CONF_DIR
from archsearch.results.front import completed_feasible

VARIANTS = {
    "a: tpe + halving": ["sweep.fidelity.enabled=true"],
    "b: tpe": [],
    "c: random": ["sampler=random"],
}
DIRECTIONS = ["maximize", "minimize", "minimize"]
#: (seconds since the study's first trial started, objective values) per completed feasible trial.
Timeline = list[tuple[float, list[float]]]


def run(name: str, seed: int, budget: float, work: Path, extra: list[str]) -> dict[str, Any]:
    """Run one search for ``budget`` seconds (in this process); what the report needs of it.

    Each run has its own storage and MLflow database, so runs side by side never wait on one
    another's locks.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    overrides = [
        "+sweep=fire",
        f"seed={seed}",
        f"study.name={name}",
        "study.n_trials=100000",
        f"study.timeout={budget}",
        f"tracking.dir={work / name / 'mlruns'}",
        f"export.dir={work / name / 'export'}",
        "export.plots=false",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    tick = time.perf_counter()
    study = run_sweep(cfg).study
    return summarize(study, work / name, time.perf_counter() - tick)


def summarize(study: optuna.Study, run_dir: Path, wall: float) -> dict[str, Any]:
    """What the report needs of one finished run (its study, and its MLflow database in ``run_dir``)."""
    states = [t.state for t in study.trials]
    return {
        "timeline": timeline(study),
        "trials": len(states),
        "complete": states.count(optuna.trial.TrialState.COMPLETE),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "wall": wall,
        "rung_rho": rung_correlations(study, run_dir / "mlruns" / "mlflow.db"),
    }


def load(work: Path, label: str, seed: int) -> dict[str, Any]:
    """The summary of a run an earlier invocation left in ``work`` (--from)."""
    name = f"{label[0]}_{seed}"
    url = f"sqlite:///{work / name / 'mlruns' / 'optuna.db'}"
    study = optuna.load_study(study_name=name, storage=url)
    return summarize(study, work / name, math.nan)


def rung_correlations(study: optuna.Study, mlflow_db: Path) -> dict[int, float]:
    """Spearman correlation of validation accuracy after epoch k with the final one, per epoch k.

    From the per-epoch metric steps of the completed trials' MLflow runs: how well a rung at
    epoch k could rank the candidates of this run.
    """
    from mlflow import MlflowClient
    from scipy.stats import spearmanr

    client = MlflowClient(tracking_uri=f"sqlite:///{mlflow_db}")
    curves = []
    for t in completed_feasible(study):
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id and "reused_from" not in t.user_attrs:
            history = {m.step: m.value for m in client.get_metric_history(run_id, "val_acc")}
            curves.append(history)
    if len(curves) < 4:
        return {}
    last = max(max(c, default=0) for c in curves)
    full = [c for c in curves if last in c]
    out = {}
    for k in range(1, last):
        pairs = [(c[k], c[last]) for c in full if k in c]
        if len(pairs) >= 4:
            rho = spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
            out[k] = float(rho)
    return out


def timeline(study: optuna.Study) -> Timeline:
    """When each completed feasible trial of ``study`` finished, and its objective values."""
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    if not starts:
        return []
    t0 = min(starts)
    done = [
        ((t.datetime_complete - t0).total_seconds(), list(t.values))
        for t in completed_feasible(study)
        if t.datetime_complete is not None
    ]
    return sorted(done)


def hv_at(points: Timeline, t: float, lower: list[float], upper: list[float]) -> float:
    front = [v for s, v in points if s <= t]
    front = [front[i] for i in non_dominated(front, DIRECTIONS)]
    return hypervolume(front, DIRECTIONS, lower, upper)


def first_time(curve: list[tuple[float, float]], target: float) -> float:
    """The first time on ``curve`` (time, value) at which the value reaches ``target``; inf if never."""
    return next((t for t, v in curve if v >= target - 1e-12), math.inf)


def report(
    title: str, timelines: dict[tuple[str, int], Timeline], labels: list[str], seeds: range, budget: float
) -> None:
    """Print final and half-budget hypervolume per variant, then (a)'s time to reach (b)'s final value."""
    everything = [v for tl in timelines.values() for _, v in tl]
    lower = [0.0] + [min(v[i] for v in everything) for i in (1, 2)]
    upper = [1.0] + [max(v[i] for v in everything) for i in (1, 2)]
    grid = [budget * k / 200 for k in range(1, 201)]
    curves = {key: [(t, hv_at(tl, t, lower, upper)) for t in grid] for key, tl in timelines.items()}
    print(f"\nhypervolume, {title} (reference 1.1 after normalising; at most 1.331):")
    for label in labels:
        finals = [curves[label, s][-1][1] for s in seeds]
        halves = [curves[label, s][99][1] for s in seeds]
        spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
        print(
            f"  {label:<16} at {budget:.0f}s {statistics.mean(finals):.4f} ± {spread:.4f}, "
            f"at {budget / 2:.0f}s {statistics.mean(halves):.4f};  per seed: "
            + " ".join(f"{f:.4f}" for f in finals)
        )
    a, b = list(VARIANTS)[:2]
    if b in labels:
        # How much of the hypervolume one point holds: the smallest net (fewest params) of (b)'s run.
        shares = []
        for s in seeds:
            points = [v for _, v in timelines[b, s]]
            if points:
                smallest = min(points, key=lambda v: (v[1], v[2], -v[0]))
                shares.append(hv_at([(0.0, smallest)], 0.0, lower, upper) / curves[b, s][-1][1])
        if shares:
            print(
                f"  (b)'s smallest completed net alone holds {statistics.mean(shares):.0%} of its hypervolume"
            )
    if a not in labels or b not in labels:
        return
    per_seed = [first_time(curves[a, s], curves[b, s][-1][1]) for s in seeds]
    mean_a = [(t, statistics.mean(curves[a, s][i][1] for s in seeds)) for i, t in enumerate(grid)]
    t = first_time(mean_a, statistics.mean(curves[b, s][-1][1] for s in seeds))
    verdict = "meets" if t <= budget / 2 else "misses"
    print(
        "  time (a) needs to reach (b)'s final hypervolume: per seed "
        + ", ".join(f"{x / budget:.2f}" if math.isfinite(x) else "never" for x in per_seed)
        + "; seed-averaged curves "
        + (f"{t:.1f}s = {t / budget:.2f} of the budget" if math.isfinite(t) else "never")
        + f" ({verdict} the target of at most 0.50)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=200.0, help="seconds of search per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", default="digits", help="data= of every run")
    parser.add_argument("--epochs", type=int, default=9, help="trainer.epochs of every candidate")
    parser.add_argument("--set", nargs="*", default=["trainer.batch_size=32"], help="overrides for every run")
    parser.add_argument(
        "--halving", nargs="*", default=["sweep.fidelity.rungs=[1,3]"], help="overrides for (a)"
    )
    parser.add_argument("--only", default="a,b,c", help="which of the variants to run")
    parser.add_argument("--sequential", action="store_true", help="run the variants one after another")
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="report on the runs an earlier invocation left in this directory (same --budget) instead",
    )
    args = parser.parse_args()
    common = [
        f"data={args.data}",
        f"trainer.epochs={args.epochs}",
        "trainer.schedule.name=cosine",
        "trainer.schedule.warmup=0.05",
        *args.set,
    ]
    variants = {
        label: [*common, *extra, *(args.halving if label.startswith("a") else [])]
        for label, extra in VARIANTS.items()
        if label[0] in args.only.split(",")
    }

    started = time.perf_counter()
    results: dict[tuple[str, int], dict[str, Any]] = {}
    seeds = range(args.seeds)
    if args.source is not None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        work = args.source
        results = {(label, seed): load(work, label, seed) for seed in seeds for label in variants}
        for (label, seed), r in results.items():
            print(
                f"seed {seed} {label:<16} {r['trials']:>4} trials: {r['complete']:>3} complete, "
                f"{r['pruned']:>3} pruned"
            )
    else:
        work = Path(tempfile.mkdtemp(prefix="search_efficiency_"))
        # Side by side: the variants of one seed run at once, one process each, so the machine's load
        # (and, on 2 cores, the sharing of them) hits all of them alike. --sequential: one at a time.
        width = 1 if args.sequential else len(variants)
        with ProcessPoolExecutor(width, mp_context=multiprocessing.get_context("spawn")) as pool:
            for seed in seeds:
                batch = {
                    label: pool.submit(run, f"{label[0]}_{seed}", seed, args.budget, work, overrides)
                    for label, overrides in variants.items()
                }
                for label, future in batch.items():
                    results[label, seed] = r = future.result()
                    print(
                        f"seed {seed} {label:<16} {r['trials']:>4} trials: {r['complete']:>3} complete, "
                        f"{r['pruned']:>3} pruned ({r['wall']:.0f}s wall)",
                        flush=True,
                    )

    rho = [r["rung_rho"] for (label, _), r in results.items() if not label.startswith("a")]
    epochs = sorted({k for d in rho for k in d})
    if epochs:
        print(
            "\nhow well accuracy after epoch k ranks the final one (Spearman, completed trials of (b), (c)): "
            + ", ".join(f"k={k} {statistics.mean(d[k] for d in rho if k in d):.2f}" for k in epochs)
        )
    timelines = {key: r["timeline"] for key, r in results.items()}
    report("params and MACs as they are", timelines, list(variants), seeds, args.budget)
    logged = {
        key: [(t, [v[0], math.log10(v[1]), math.log10(v[2])]) for t, v in tl] for key, tl in timelines.items()
    }
    report("log10 params and MACs", logged, list(variants), seeds, args.budget)
    print(f"\ntotal {time.perf_counter() - started:.0f}s; studies and MLflow runs in {work}")


if __name__ == "__main__":
    main()
