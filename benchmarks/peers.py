"""archsearch's default search against its peers: same space, data, trainer and budget.

    .venv/bin/python benchmarks/peers.py --data fashion_mnist [--subset 5000] [--epochs 2]
        [--trials 30] [--seeds 0,1,2,3,4] [--only default,tpe,gp,nsga2,random,ax] [--jobs 2]
        [--fake SECONDS] [--out DIR] [--from DIR [DIR ...]]
    .venv/bin/python benchmarks/peers.py --data digits ...        # trainer.epochs 8 (the sweep's)

Every method runs exactly what a user gets: the config ``python -m archsearch +sweep=fire`` composes
(objectives val_acc, params, MACs; the sweep's trainer: one-cycle SGD, batch 128, one thread),
with ``data=``, ``data.subset`` and ``trainer.epochs`` set as above and MLflow on. Methods:

    default     +sweep=fire as shipped (its sampler is whatever conf/sampler/ the sweep names)
    cost_aware  sampler=cost_aware (archsearch.search.cost_aware)
    tpe         sampler=tpe: archsearch's multivariate, constraint-aware TPE
    gp          sampler=gp: Optuna's GPSampler
    nsga2       sampler=nsga2 with population 10 (so that it evolves within 30 trials)
    random      sampler=random
    ax          Ax/BoTorch multi-objective Bayesian optimisation through Ax's Client API
                (pip install -e '.[peers]'), proposing every trial of the same objective (it
                models accuracy and log10 params and MACs, the hypervolume's axes); skipped with a
                note when ax-platform is not installed

Each run stops at ``--trials`` trials. Per finished trial it records the epochs trained, wall-clock
and the process CPU seconds used so far (every method pinned to one thread: the trainer by
``trainer.threads=1``, torch, BLAS and BoTorch by ``torch.set_num_threads(1)`` and the
``*_NUM_THREADS`` variables set before the worker processes start), so neither load nor thread
counts move the CPU figure. Hypervolume is taken on the fixed box :data:`BOX` (accuracy linear on
[0, 1], log10 params and log10 MACs on fixed ranges; stored as box.json beside the results so
that new rows compare with old ones), which is the quantity ``sampler=cost_aware`` maximises.

The report gives, at equal trials, equal epochs and equal CPU seconds, each method's mean and
standard deviation over seeds, and its paired difference from ``default`` over the seeds both
ran (mean and 95% t interval), then the targets: at equal trials ``default`` at or above Ax's
mean and above every Optuna sampler; ``default`` reaching the best peer's final mean
hypervolume within 0.5 of that peer's mean CPU seconds.

``--out DIR`` holds each run's study and trials.csv (one row per finished trial: method, seed,
trial, state, epochs_done, epochs_cumulative, seconds, val_acc, params, macs, cpu);
``--from DIR [DIR ...]`` reports again on those trials.csv files together (runs split over several
invocations merge). ``--fake S`` replaces training by archsearch.testing.FixedCostFit: a check
of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from search_efficiency import Row, hv, read_rows, report, study_rows, summary, write_rows

METHODS = ("default", "cost_aware", "tpe", "gp", "nsga2", "random", "ax")
#: The peers: samplers as a hand-written Optuna script (or Ax) runs them.
PEERS = ("tpe", "gp", "nsga2", "random", "ax")
OPTUNA_PEERS = ("tpe", "gp", "nsga2", "random")
OVERRIDES = {
    "default": [],
    "cost_aware": ["sampler=cost_aware"],
    "tpe": ["sampler=tpe"],
    "gp": ["sampler=gp"],
    "nsga2": ["sampler=nsga2", "sampler.population_size=10"],
    "random": ["sampler=random"],
    "ax": [],
}
#: The hypervolume's fixed box: (lower, upper) of accuracy, log10 params, log10 MACs.
BOX: tuple[list[float], list[float]] = ([0.0, 2.5, 3.5], [1.0, 6.0, 8.5])
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class AxSampler(optuna.samplers.BaseSampler):
    """An Optuna sampler whose every trial is proposed by an Ax ``Client`` and reported back to it.

    Args:
        distributions: the search space's parameters (``SearchSpace.distributions()``).
        seed: Ax's random seed.
    """

    def __init__(self, distributions: dict[str, BaseDistribution], seed: int) -> None:
        from ax import Client

        self.distributions = distributions
        self.client = Client(random_seed=seed)
        self.client.configure_experiment(parameters=[ax_parameter(n, d) for n, d in distributions.items()])
        # Ax minimises the log costs as the hypervolume measures them: a decade counts alike everywhere.
        self.client.configure_optimization(objective="val_acc, -log10_params, -log10_macs")
        self.indices: dict[int, int] = {}
        self.fallback = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self.distributions)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        ((index, params),) = self.client.get_next_trials(max_trials=1).items()
        self.indices[trial.number] = index
        return dict(params)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, name: str, distribution: BaseDistribution
    ) -> Any:
        return self.fallback.sample_independent(study, trial, name, distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        index = self.indices.pop(trial.number, None)
        if index is None:
            return
        if state != TrialState.COMPLETE or values is None or not all(map(math.isfinite, values)):
            # Infeasible (worst values) or failed: nothing Ax can model as an outcome.
            self.client.mark_trial_failed(index)
            return
        acc, params, macs = values
        raw = {
            "val_acc": acc,
            "log10_params": math.log10(max(params, 1.0)),
            "log10_macs": math.log10(max(macs, 1.0)),
        }
        self.client.complete_trial(index, raw_data=raw)


def ax_parameter(name: str, d: BaseDistribution) -> Any:
    """The Ax parameter config of one Optuna distribution."""
    from ax import ChoiceParameterConfig, RangeParameterConfig

    if isinstance(d, CategoricalDistribution):
        values: Any = list(d.choices)
        kind: Any = (
            "str" if isinstance(values[0], str) else "float" if isinstance(values[0], float) else "int"
        )
        return ChoiceParameterConfig(name, values, kind, is_ordered=kind != "str")
    if isinstance(d, IntDistribution | FloatDistribution):
        kind = "int" if isinstance(d, IntDistribution) else "float"
        return RangeParameterConfig(
            name, (d.low, d.high), kind, step_size=d.step, scaling="log" if d.log else "linear"
        )
    raise TypeError(f"no Ax parameter for {name}: {d!r}")


def ax_missing() -> str | None:
    """Why Ax cannot run here, or None."""
    try:
        import ax  # noqa: F401
    except ImportError:
        return "ax-platform is not installed (pip install -e '.[peers]'); skipping ax"
    return None


def run(method: str, seed: int, args: argparse.Namespace, out: Path) -> list[Row]:
    """One search of ``method`` (in this process, one thread); its finished trials as rows."""
    import dataclasses
    import warnings

    import torch
    from hydra import compose, initialize_config_dir

    from archsearch.cli.config import sweep_plan
    from archsearch.data.datasets import load_dataset
    from archsearch.resources import CONF_DIR
    from archsearch.search.sweep import run_search
    from archsearch.testing import FixedCostFit

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    name = f"{method}_{seed}"
    overrides = [
        "+sweep=fire",
        *OVERRIDES[method],
        f"data={args.data}",
        f"seed={seed}",
        f"study.name={name}",
        f"study.n_trials={args.trials}",
        f"study.storage=sqlite:///{out / name / 'optuna.db'}",
        f"tracking.dir={out / name / 'mlruns'}",
        f"export.dir={out / name / 'export'}",
        "export.plots=false",
        "trainer.threads=1",
        "hardware=laptop_cpu",  # no latency objective: the profile only fills latency_est_ms
    ]
    if args.subset:
        overrides.append(f"data.subset={args.subset}")
    if args.epochs:
        overrides.append(f"trainer.epochs={args.epochs}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plan = sweep_plan(compose("config", overrides=overrides))
    data = load_dataset(plan.data, seed=seed)
    sampler: Any = plan.sampler
    if method == "ax":
        sampler = lambda s: AxSampler(plan.space.distributions(), s)  # noqa: E731
    cpu0 = time.process_time()
    used: list[float] = []
    result = run_search(
        plan.space,
        data,
        plan.settings,
        sampler=sampler,
        hardware=plan.hardware,
        fit_fn=None
        if args.fake is None
        else FixedCostFit(seconds=args.fake, epochs=plan.settings.trainer.epochs),
        config_yaml=plan.config_yaml,
        data_settings=plan.data,
        callbacks=[lambda _study, _trial: used.append(time.process_time() - cpu0)],
    )
    rows = study_rows(result.study, method, seed)
    return [dataclasses.replace(r, cpu=used[i] if i < len(used) else None) for i, r in enumerate(rows)]


def run_all(args: argparse.Namespace, methods: list[str], seeds: list[int], out: Path) -> list[Row]:
    for variable in THREAD_VARIABLES:  # inherited by the spawned workers before torch loads
        os.environ[variable] = "1"
    rows: list[Row] = []
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run, m, s, args, out) for s in seeds for m in methods]
        for future in futures:
            got = future.result()
            rows += got
            write_rows(rows, out / "trials.csv")  # after every run: an interrupted batch keeps its runs
            if got:
                print(
                    f"done {got[0].method} seed {got[0].seed}: {len(got)} trials, "
                    f"{got[-1].cpu or 0:.0f} CPU s",
                    flush=True,
                )
    return rows


def _final(run: Sequence[Row], axis: str, budget: float) -> float:
    points = [p for r in run if (getattr(r, axis) or 0) <= budget + 1e-9 and (p := r.point) is not None]
    return hv(points, BOX)


def paired(rows: Sequence[Row], axis: str, budget: float, unit: str, reference: str = "default") -> None:
    """Each method's hypervolume at ``budget`` minus ``reference``'s, paired by seed: mean, 95% interval."""
    from scipy.stats import t as student

    methods = list(dict.fromkeys(r.method for r in rows))
    runs = {(r.method, r.seed) for r in rows}
    if reference not in methods:
        return
    print(
        f"\npaired difference from {reference} at {budget:g} {unit} "
        f"(hypervolume; > 0: better than {reference}):"
    )
    for m in methods:
        if m == reference:
            continue
        seeds = sorted(s for (mm, s) in runs if mm == m and (reference, s) in runs)
        diffs = [
            _final([r for r in rows if (r.method, r.seed) == (m, s)], axis, budget)
            - _final([r for r in rows if (r.method, r.seed) == (reference, s)], axis, budget)
            for s in seeds
        ]
        if not diffs:
            continue
        mean = statistics.mean(diffs)
        if len(diffs) > 1:
            half = student.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
            interval = f"[{mean - half:+.4f}, {mean + half:+.4f}]"
        else:
            interval = "(one seed: no interval)"
        print(f"  {m:<12} {mean:+.4f}  95% {interval}  ({len(diffs)} seeds)")


def targets(rows: Sequence[Row], trials: int) -> None:
    """The issue's targets, met or not, on these rows."""
    methods = list(dict.fromkeys(r.method for r in rows))
    seeds = {m: sorted({r.seed for r in rows if r.method == m}) for m in methods}

    def final(m: str, axis: str = "trial", budget: float = trials) -> list[float]:
        return [_final([r for r in rows if (r.method, r.seed) == (m, s)], axis, budget) for s in seeds[m]]

    if "default" not in methods:
        return
    base = statistics.mean(final("default"))
    print(f"\ntargets (equal trials: {trials}; default's mean {base:.4f}):")
    for m in [m for m in methods if m in PEERS]:
        mean = statistics.mean(final(m))
        rule = "at or above" if m == "ax" else "above"
        met = base >= mean if m == "ax" else base > mean
        print(f"  default {rule} {m} ({mean:.4f}): {'met' if met else 'MISSED'}")
    peers = [m for m in methods if m in PEERS]
    if not peers:
        return
    best = max(peers, key=lambda m: statistics.mean(final(m)))
    goal = statistics.mean(final(best))
    peer_cpu = statistics.mean(
        max(r.cpu or 0.0 for r in rows if (r.method, r.seed) == (best, s)) for s in seeds[best]
    )
    reached = []
    for s in seeds["default"]:
        run = [r for r in rows if (r.method, r.seed) == ("default", s)]
        points: list[list[float]] = []
        at = math.inf
        for r in run:
            if (p := r.point) is not None:
                points.append(p)
                if hv(points, BOX) >= goal - 1e-12:
                    at = r.cpu or math.inf
                    break
        reached.append(at / peer_cpu)
    share = statistics.mean(reached) if all(math.isfinite(x) for x in reached) else math.inf
    print(
        f"  default reaches {best}'s final mean ({goal:.4f}) at {share:.2f} of {best}'s CPU seconds "
        f"({peer_cpu:.0f} s; per seed {', '.join(f'{x:.2f}' for x in reached)}): "
        f"{'met' if share <= 0.5 else 'MISSED'} (target <= 0.5)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--subset", type=int, default=None, help="data.subset (fashion_mnist: 5000)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="trainer.epochs (fashion_mnist: 2; digits: the sweep's 8)"
    )
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--only", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--jobs", type=int, default=2, help="searches side by side (one thread each)")
    parser.add_argument(
        "--fake", type=float, help="FixedCostFit of this many seconds per trial instead of training"
    )
    parser.add_argument(
        "--out", type=Path, help="directory for the runs and CSVs (default: a new temporary one)"
    )
    parser.add_argument(
        "--from", dest="source", type=Path, nargs="+", help="report on these runs' trials.csv"
    )
    args = parser.parse_args()
    if args.data == "fashion_mnist":
        args.subset = args.subset or 5000
        args.epochs = args.epochs or 2
    started = time.perf_counter()
    methods = [m for m in args.only.split(",") if m in METHODS]
    if "ax" in methods and (why := ax_missing()) is not None:
        print(why)
        methods.remove("ax")
    out: Path | None = args.out
    if args.source is not None:
        rows = [row for source in args.source for row in read_rows(source / "trials.csv")]
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_rows(rows, out / "trials.csv")
    else:
        out = out or Path(tempfile.mkdtemp(prefix="peers_"))
        out.mkdir(parents=True, exist_ok=True)
        print(f"load average {os.getloadavg()[0]:.2f} at the start", flush=True)
        rows = run_all(args, methods, [int(s) for s in args.seeds.split(",")], out)
        write_rows(rows, out / "trials.csv")
    if out is not None:
        (out / "box.json").write_text(
            json.dumps({"axes": ["val_acc", "log10 params", "log10 macs"], "lower": BOX[0], "upper": BOX[1]})
        )
    summary(rows)
    trials = max(r.trial for r in rows)
    epochs = min(
        max(r.epochs_cumulative for r in rows if (r.method, r.seed) == k)
        for k in {(r.method, r.seed) for r in rows}
    )
    cpu = min(
        max(r.cpu or 0.0 for r in rows if (r.method, r.seed) == k) for k in {(r.method, r.seed) for r in rows}
    )
    report(rows, "trial", trials, "trials", out, PEERS, box=BOX)
    paired(rows, "trial", trials, "trials")
    report(rows, "epochs_cumulative", epochs, "epochs (the shortest run's)", out, PEERS, box=BOX)
    paired(rows, "epochs_cumulative", epochs, "epochs")
    if cpu > 0:
        report(rows, "cpu", cpu, "CPU seconds (the shortest run's)", out, PEERS, box=BOX)
        paired(rows, "cpu", cpu, "CPU seconds")
    targets(rows, trials)
    print(
        f"\ntotal {time.perf_counter() - started:.0f}s; load average {os.getloadavg()[0]:.2f}"
        + (f"; runs and CSVs in {out}" if out else "")
    )


if __name__ == "__main__":
    main()
