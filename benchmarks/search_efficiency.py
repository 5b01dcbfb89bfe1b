"""Does successive halving find a better front on the same training budget? Hypervolume against epochs.

    .venv/bin/python benchmarks/search_efficiency.py [--epochs-budget 360] [--seeds 5] [--data digits]
        [--epochs 9] [--set trainer.batch_size=32 ...] [--halving sweep.fidelity.rungs=[1,3] ...]
        [--only a,b] [--sequential] [--fake SECONDS] [--out DIR] [--from DIR]

Runs the fire sweep (conf/sweep/fire.yaml: one thread per run, MLflow on) until it has consumed
``--epochs-budget`` training epochs (``study.max_epochs``: every epoch of every trial, pruned ones
included; a running trial finishes, so a run may overshoot by one trial, which the report
leaves out), ``--seeds`` times each, for

    (a) the default sampler (TPE) with successive halving (sweep.fidelity.enabled=true),
    (b) the same without it,
    (c) random search without it.

A budget in epochs is one that machine load cannot move: two runs given the same budget train
the same amount whatever else the machine does. Wall-clock is reported beside it. The three runs
of a seed go side by side, one process each with its own storage; ``--sequential`` runs them one
after another. Candidates train ``--epochs`` epochs with a cosine schedule and 5% warm-up at
``--set``'s batch size and data; (a) adds ``--halving``'s rungs. ``--fake S`` replaces training
by archsearch.testing.FixedCostFit (S seconds per trial, accuracy a fixed function of size): a
check of the script, not a measurement.

Hypervolume (archsearch.pareto.hypervolume) of the front of completed feasible trials, on
accuracy and log10 params and MACs, with one normalisation box shared by every method and
seed (accuracy on [0, 1], log costs on the range of every completed trial of every run). It
prints, per method, the mean and standard deviation over seeds at fractions of the epoch
budget, and the fraction each method needs to reach the target: the best final mean of the
methods other than (a) (per seed, and on the seed-averaged curve), with the wall-clock seconds
at that point. Target for (a): at most 0.5.

``--same-as DIR`` compares this run's trials with DIR's (e.g. one run on a quiet machine, one on a
busy one): with the budget in epochs, each common method and seed must have finished the same
trials with the same values, only their wall-clock differing, so the verdict cannot differ.

``--out DIR`` (default: a new temporary directory) holds the runs and, next to them,
``trials.csv`` (one row per finished trial: method, seed, trial, state, epochs_done,
epochs_cumulative, seconds, val_acc, params, macs) and ``hypervolume_epochs_cumulative.csv``
(mean and standard deviation per method and budget fraction). ``--from DIR`` reports again on DIR's trials.csv
without running anything; benchmarks/halving_replay.py replays the same runs' learning curves.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import optuna

from archsearch.pareto import hypervolume, non_dominated

VARIANTS = {
    "a: tpe + halving": ["sampler=tpe", "sweep.fidelity.enabled=true"],
    "b: tpe": ["sampler=tpe"],  # the fire sweep's sampler is cost_aware now: TPE is named
    "c: random": ["sampler=random"],
}
DIRECTIONS = ["maximize", "minimize", "minimize"]
#: Budget fractions at which the hypervolume curves are taken (and stored in hypervolume_<axis>.csv).
FRACTIONS = [k / 20 for k in range(1, 21)]
PRINTED = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Row:
    """One finished trial of one run, in the order its run finished them (a trials.csv row)."""

    method: str
    seed: int
    trial: int  # 1-based count of finished trials in its run, this one included
    state: str
    epochs_done: int  # epochs this trial trained (0 for a reused or infeasible one)
    epochs_cumulative: int  # epochs its run had consumed when this trial finished
    seconds: float  # since its run's first trial started
    val_acc: float | None = None  # objective values of a completed feasible trial, else None
    params: float | None = None
    macs: float | None = None
    cpu: float | None = None  # process CPU seconds its run had used when this trial finished

    @property
    def point(self) -> list[float] | None:
        """Accuracy and log10 costs, the axes the hypervolume is taken on; None if not evaluated."""
        if self.val_acc is None or self.params is None or self.macs is None:
            return None
        return [self.val_acc, math.log10(max(self.params, 1.0)), math.log10(max(self.macs, 1.0))]


def study_rows(study: optuna.Study, method: str, seed: int) -> list[Row]:
    """The finished trials of ``study`` as rows, in the order they finished."""
    from archsearch.results.front import completed_feasible

    feasible = {t.number for t in completed_feasible(study)}
    finished = [
        (t.datetime_complete, t)
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.datetime_complete is not None
    ]
    starts = [t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    rows: list[Row] = []
    used = 0
    for i, (completed, t) in enumerate(sorted(finished, key=lambda x: x[0]), start=1):
        # A reused result copies another trial's epochs_done but trained nothing here.
        epochs = 0 if "reused_from" in t.user_attrs else int(t.user_attrs.get("epochs_done", 0))
        used += epochs
        values = list(t.values) if t.number in feasible else [None, None, None]
        rows.append(
            Row(
                method,
                seed,
                i,
                t.state.name.lower(),
                epochs,
                used,
                (completed - min(starts)).total_seconds(),
                *values,
            )
        )
    return rows


def write_rows(rows: Sequence[Row], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, [x.name for x in fields(Row)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def read_rows(path: Path) -> list[Row]:
    def number(text: str) -> float | None:
        return float(text) if text else None

    with path.open() as f:
        return [
            Row(
                r["method"],
                int(r["seed"]),
                int(r["trial"]),
                r["state"],
                int(r["epochs_done"]),
                int(r["epochs_cumulative"]),
                float(r["seconds"]),
                number(r["val_acc"]),
                number(r["params"]),
                number(r["macs"]),
                number(r.get("cpu") or ""),
            )
            for r in csv.DictReader(f)
        ]


def shared_box(rows: Sequence[Row]) -> tuple[list[float], list[float]]:
    """One normalisation box for every run: accuracy on [0, 1], log costs on their whole range."""
    points = [p for r in rows if (p := r.point) is not None]
    lower = [0.0] + [min(p[i] for p in points) for i in (1, 2)]
    upper = [1.0] + [max(p[i] for p in points) for i in (1, 2)]
    return lower, upper


def hv(points: Sequence[list[float]], box: tuple[list[float], list[float]]) -> float:
    front = [points[i] for i in non_dominated(points, DIRECTIONS)] if points else []
    return hypervolume(front, DIRECTIONS, *box)


def curve(run: Sequence[Row], axis: str, budget: float, box: tuple[list[float], list[float]]) -> list[float]:
    """Hypervolume of ``run``'s front at each of :data:`FRACTIONS` of ``budget`` on ``axis``."""
    out = []
    for f in FRACTIONS:
        points = [p for r in run if getattr(r, axis) <= f * budget + 1e-9 and (p := r.point) is not None]
        out.append(hv(points, box))
    return out


def reached(run: Sequence[Row], axis: str, target: float, box: tuple[list[float], list[float]]) -> Row | None:
    """The first trial of ``run`` after which its front's hypervolume is at least ``target``."""
    points: list[list[float]] = []
    for r in run:
        if (p := r.point) is not None:
            points.append(p)
            if hv(points, box) >= target - 1e-12:
                return r
    return None


def report(
    rows: Sequence[Row],
    axis: str,
    budget: float,
    unit: str,
    out: Path | None,
    targets: Sequence[str] | None = None,
    box: tuple[list[float], list[float]] | None = None,
) -> None:
    """Print hypervolume mean ± sd per method at fractions of ``budget`` on ``axis``, and the
    fraction each method needs to reach the best final mean of the ``targets`` methods (by
    default every method after the first), on ``box`` (default: :func:`shared_box`)."""
    box = box or shared_box(rows)
    methods = list(dict.fromkeys(r.method for r in rows))
    # Each method's own seeds: a slow peer may have been run on fewer of them.
    seeds_of = {m: sorted({r.seed for r in rows if r.method == m}) for m in methods}
    runs = {(m, s): [r for r in rows if r.method == m and r.seed == s] for m in methods for s in seeds_of[m]}
    curves = {key: curve(run, axis, budget, box) for key, run in runs.items()}
    mean = {
        m: [statistics.mean(curves[m, s][i] for s in seeds_of[m]) for i in range(len(FRACTIONS))]
        for m in methods
    }
    sd = {
        m: [
            statistics.stdev(curves[m, s][i] for s in seeds_of[m]) if len(seeds_of[m]) > 1 else 0.0
            for i in range(len(FRACTIONS))
        ]
        for m in methods
    }
    peers = [m for m in methods if m in targets] if targets else (methods[1:] or methods)
    target = max(mean[m][-1] for m in peers)
    best = max(peers, key=lambda m: mean[m][-1])
    counts = sorted({len(v) for v in seeds_of.values()})
    shown = f"{counts[0]} seeds" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} seeds (n per method)"
    print(f"\nhypervolume by fraction of the budget in {unit} ({budget:g}), log10 costs, {shown}:")
    print(f"  {'method':<18}" + "".join(f"{f:>17.2f}" for f in PRINTED) + "      n")
    for m in methods:
        cells = [f"{mean[m][FRACTIONS.index(f)]:.4f} ± {sd[m][FRACTIONS.index(f)]:.4f}" for f in PRINTED]
        print(f"  {m:<18}" + "".join(f"{c:>17}" for c in cells) + f"{len(seeds_of[m]):>7}")
    print(f"fraction of the budget needed to reach {target:.4f} ({best}'s final mean):")
    for m in methods:
        hits = [reached(runs[m, s], axis, target, box) for s in seeds_of[m]]
        per_seed = [f"{getattr(h, axis) / budget:.2f}" if h else "never" for h in hits]
        on_mean = next((f for f, v in zip(FRACTIONS, mean[m], strict=True) if v >= target - 1e-12), math.inf)
        seconds = [h.seconds for h in hits if h]
        wall = f"{statistics.mean(seconds):.0f}s wall" if seconds else "-"
        walls = [runs[m, s][-1].seconds for s in seeds_of[m] if runs[m, s]]
        print(
            f"  {m:<18} mean curve {on_mean:.2f}"
            if math.isfinite(on_mean)
            else f"  {m:<18} mean curve never",
            f"| per seed {', '.join(per_seed)} | at {wall} (reaching seeds) "
            f"| run {statistics.mean(walls):.0f}s wall",
        )
    if out is not None:
        with (out / f"hypervolume_{axis}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["method", "axis", "fraction", "budget", "mean", "sd", "seeds"])
            for m in methods:
                for i, frac in enumerate(FRACTIONS):
                    writer.writerow(
                        [m, axis, frac, budget, f"{mean[m][i]:.6f}", f"{sd[m][i]:.6f}", len(seeds_of[m])]
                    )


def same_trials(rows: Sequence[Row], other: Sequence[Row]) -> str:
    """Whether two runs' common (method, seed) pairs finished the same trials, wall-clock aside.

    With a budget in epochs, a seeded sampler and one worker, a run's trials (their order,
    states, epochs and objective values) do not depend on the machine's load; only their
    seconds do. Equal trials give equal hypervolume curves on the epoch axis, hence the same
    verdict, whatever the load was in either run.
    """

    def key(r: Row) -> tuple[object, ...]:
        return (r.trial, r.state, r.epochs_done, r.epochs_cumulative, r.val_acc, r.params, r.macs)

    pairs = sorted({(r.method, r.seed) for r in rows} & {(r.method, r.seed) for r in other})
    lines = [f"same trials as the other run ({len(pairs)} method/seed pairs in common):"]
    for m, s in pairs:
        mine = [key(r) for r in rows if (r.method, r.seed) == (m, s)]
        theirs = [key(r) for r in other if (r.method, r.seed) == (m, s)]
        differ = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
        if differ is None and len(mine) == len(theirs):
            verdict = f"identical ({len(mine)} trials)"
        else:
            at = differ + 1 if differ is not None else min(len(mine), len(theirs)) + 1
            verdict = f"DIFFERENT from trial {at} ({len(mine)} against {len(theirs)} trials)"
        walls = [r.seconds for r in rows if (r.method, r.seed) == (m, s)][-1:]
        other_walls = [r.seconds for r in other if (r.method, r.seed) == (m, s)][-1:]
        lines.append(f"  seed {s} {m:<18} {verdict}; wall {walls[0]:.0f}s here, {other_walls[0]:.0f}s there")
    return "\n".join(lines)


def summary(rows: Sequence[Row]) -> None:
    """Trials, completions, prunes and epochs per run."""
    for m, s in dict.fromkeys((r.method, r.seed) for r in rows):
        run = [r for r in rows if r.method == m and r.seed == s]
        states = [r.state for r in run]
        print(
            f"seed {s} {m:<18} {len(run):>4} trials: {states.count('complete'):>3} complete, "
            f"{states.count('pruned'):>3} pruned, {run[-1].epochs_cumulative:>5} epochs, "
            f"{run[-1].seconds:.0f}s",
            flush=True,
        )


def run(label: str, seed: int, budget: int, work: Path, extra: list[str]) -> list[Row]:
    """Run one search until it has consumed ``budget`` epochs (in this process); its rows.

    Each run has its own storage and MLflow database, so runs side by side never wait on one
    another's locks.
    """
    from hydra import compose, initialize_config_dir

    from archsearch.cli.main import run_sweep
    from archsearch.resources import CONF_DIR

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"{label[0]}_{seed}"
    overrides = [
        "+sweep=fire",
        f"seed={seed}",
        f"study.name={name}",
        "study.n_trials=100000",
        f"study.max_epochs={budget}",
        f"tracking.dir={work / name / 'mlruns'}",
        f"export.dir={work / name / 'export'}",
        "export.plots=false",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return study_rows(run_sweep(cfg).study, label, seed)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs-budget", type=int, default=360, help="training epochs per run")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--data", default="digits", help="data= of every run")
    parser.add_argument("--epochs", type=int, default=9, help="trainer.epochs of every candidate")
    parser.add_argument("--set", nargs="*", default=["trainer.batch_size=32"], help="overrides for every run")
    parser.add_argument(
        "--halving", nargs="*", default=["sweep.fidelity.rungs=[1,3]"], help="overrides for (a)"
    )
    parser.add_argument("--only", default="a,b,c", help="which of the variants to run")
    parser.add_argument("--sequential", action="store_true", help="run the variants one after another")
    parser.add_argument(
        "--fake", type=float, help="FixedCostFit of this many seconds per trial instead of training"
    )
    parser.add_argument(
        "--out", type=Path, help="directory for the runs and CSVs (default: a new temporary one)"
    )
    parser.add_argument(
        "--from", dest="source", type=Path, help="report on DIR/trials.csv instead of running"
    )
    parser.add_argument(
        "--same-as",
        type=Path,
        help="check that DIR/trials.csv (another run, e.g. under another load) holds the same trials",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    if args.source is not None:
        rows = read_rows(args.source / "trials.csv")
        out = None
    else:
        out = args.out or Path(tempfile.mkdtemp(prefix="search_efficiency_"))
        out.mkdir(parents=True, exist_ok=True)
        rows = run_all(args, out)
        write_rows(rows, out / "trials.csv")
    summary(rows)
    report(rows, "epochs_cumulative", args.epochs_budget, "epochs", out)
    if args.same_as is not None:
        print("\n" + same_trials(rows, read_rows(args.same_as / "trials.csv")))
    print(f"\ntotal {time.perf_counter() - started:.0f}s" + (f"; runs and CSVs in {out}" if out else ""))


def run_all(args: argparse.Namespace, out: Path) -> list[Row]:
    """Every variant of every seed, the variants of a seed side by side (or --sequential)."""
    common = [
        f"data={args.data}",
        f"trainer.epochs={args.epochs}",
        "trainer.schedule.name=cosine",
        "trainer.schedule.warmup=0.05",
        *args.set,
    ]
    if args.fake is not None:
        fit = "+sweep.fit._target_=archsearch.testing.FixedCostFit"
        common += [fit, f"+sweep.fit.seconds={args.fake}", f"+sweep.fit.epochs={args.epochs}"]
    variants = {
        label: [*common, *extra, *(args.halving if label.startswith("a") else [])]
        for label, extra in VARIANTS.items()
        if label[0] in args.only.split(",")
    }
    rows: list[Row] = []
    # Side by side, the machine's load (and, on 2 cores, the sharing of them) hits every variant alike.
    width = 1 if args.sequential else len(variants)
    with ProcessPoolExecutor(width, mp_context=multiprocessing.get_context("spawn")) as pool:
        for seed in range(args.seeds):
            batch = [
                pool.submit(run, label, seed, args.epochs_budget, out, overrides)
                for label, overrides in variants.items()
            ]
            for future in batch:
                rows += future.result()
    return rows


if __name__ == "__main__":
    main()
