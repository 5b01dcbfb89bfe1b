"""Does successive halving find a better front in the same time? Hypervolume against wall clock.

    .venv/bin/python benchmarks/search_efficiency.py [--budget 100] [--seeds 3] [--epochs 27]
        [--set data=fashion_mnist data.subset=5000 ...] [--halving sweep.fidelity.eta=2 ...] [--only a,b]

Runs the fire sweep on digits (conf/sweep/fire.yaml: one thread, MLflow on) for ``--budget``
seconds per run, ``--seeds`` times each, for

    (a) the default sampler (TPE) with successive halving (sweep.fidelity.enabled=true),
    (b) the same without it,
    (c) random search without it,

one after another (seeds interleaved, so drifting load on a shared machine hits all three).
Candidates train for ``--epochs`` epochs (27 by default; the shipped sweep trains 8) with a
cosine schedule and 5% warm-up, so that the rungs of conf/sweep/fire.yaml (eta 3 from
min_epochs 3: epochs 3 and 9) fall where the learning rate is already high; under the shipped
one-cycle schedule the first quarter of training is warm-up.

It prints the hypervolume of the front each run has found at the end of the budget and at half
of it, through archsearch.export.hypervolume with shared bounds (accuracy on [0, 1], params and
MACs on the range of every completed trial of every run): once on params and MACs as they are
(the scale of the export's hypervolume.csv, where the small nets all crowd into one corner), and
once on log10 of them (which weighs every decade of size alike). Then the time (a) needs to reach
(b)'s final hypervolume, per seed and on the seed-averaged curves. Target: at most half the budget.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import optuna
from hydra import compose, initialize_config_dir

from archsearch.export import completed_feasible, hypervolume, non_dominated
from archsearch.paths import CONF_DIR
from archsearch.search import run_sweep

VARIANTS = {
    "a: tpe + halving": ["sweep.fidelity.enabled=true"],
    "b: tpe": [],
    "c: random": ["sampler=random"],
}
DIRECTIONS = ["maximize", "minimize", "minimize"]
#: (seconds since the study's first trial started, objective values) per completed feasible trial.
Timeline = list[tuple[float, list[float]]]


def run(name: str, seed: int, budget: float, work: Path, extra: list[str]) -> optuna.Study:
    overrides = [
        "+sweep=fire",
        f"seed={seed}",
        f"study.name={name}",
        "study.n_trials=100000",
        f"study.timeout={budget}",
        f"tracking.dir={work / 'mlruns'}",
        f"export.dir={work / name}",
        "export.plots=false",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return run_sweep(cfg).study


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
    parser.add_argument("--budget", type=float, default=100.0, help="seconds of search per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=27, help="trainer.epochs of every candidate")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every run")
    parser.add_argument("--halving", nargs="*", default=[], help="extra overrides for (a), e.g. rungs")
    parser.add_argument("--only", default="a,b,c", help="which of the variants to run")
    args = parser.parse_args()
    common = [
        "data=digits",
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

    work = Path(tempfile.mkdtemp(prefix="search_efficiency_"))
    started = time.perf_counter()
    studies: dict[tuple[str, int], optuna.Study] = {}
    seeds = range(args.seeds)
    for seed in seeds:
        for label, overrides in variants.items():
            tick = time.perf_counter()
            studies[label, seed] = study = run(f"{label[0]}_{seed}", seed, args.budget, work, overrides)
            states = [t.state for t in study.trials]
            print(
                f"seed {seed} {label:<16} {len(states):>4} trials: "
                f"{states.count(optuna.trial.TrialState.COMPLETE):>3} complete, "
                f"{states.count(optuna.trial.TrialState.PRUNED):>3} pruned "
                f"({time.perf_counter() - tick:.0f}s wall)",
                flush=True,
            )

    timelines = {key: timeline(s) for key, s in studies.items()}
    report("params and MACs as they are", timelines, list(variants), seeds, args.budget)
    logged = {
        key: [(t, [v[0], math.log10(v[1]), math.log10(v[2])]) for t, v in tl] for key, tl in timelines.items()
    }
    report("log10 params and MACs", logged, list(variants), seeds, args.budget)
    print(f"\ntotal {time.perf_counter() - started:.0f}s; studies and MLflow runs in {work}")


if __name__ == "__main__":
    main()
