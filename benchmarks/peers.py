"""archsearch's default search against its peers: same space, data, trainer and epoch budget.

    .venv/bin/python benchmarks/peers.py [--trials 30] [--epochs-budget 240] [--seeds 3]
        [--data digits] [--epochs 8] [--batch-size 32] [--only default,tpe,gp,nsga2,random,ax]
        [--jobs 1] [--fake SECONDS] [--out DIR] [--from DIR]

Methods, each run through archsearch.run_search on the fire space with MLflow off:

    default     TPE + multi-objective successive halving + learn_from_pruned (FidelitySettings(enabled=True))
    gp_halving  Optuna's GPSampler (sampler=gp) with the same halving and learn_from_pruned

and the peers, the same samplers run bare (as a hand-written Optuna script runs them) and Ax:

    tpe      the same TPE without halving
    gp       Optuna's GPSampler
    nsga2    Optuna's NSGAIISampler (population 10, so it evolves within 30 trials)
    random   Optuna's RandomSampler
    ax       Ax/BoTorch multi-objective Bayesian optimisation (pip install -e '.[peers]'), driven
             through Ax's Client API from an Optuna sampler, so each trial goes through the same
             objective: Ax proposes the parameters -> archsearch costs -> train -> values back to Ax
             (accuracy and log10 params and MACs, the axes the hypervolume is taken on). Skipped,
             with a note, when ax-platform is not installed.

Every run stops at ``--trials`` trials or ``--epochs-budget`` training epochs (``study.max_epochs``),
whichever comes first. The hypervolume (accuracy and log10 params and MACs, one normalisation
box for every method and seed) is reported in two views: against the number of finished trials
(budget ``--trials``) and against wall-clock seconds (budget: the longest run); the epoch view is
printed too. For each view and method, the fraction of the budget at which it reaches the best
peer's final mean hypervolume (the best of ``PEERS``). Target: archsearch's best configuration
gets there within 0.5 of the budget, in trials and in seconds. A run that stops early (its 30
trials done in fewer epochs, as halving's do) keeps its final front for the rest of the axis.
``--jobs 2`` runs two searches side by side (faster, but then wall-clock figures share the 2
cores). ``--fake S`` replaces training by archsearch.testing.FixedCostFit (S seconds per trial):
a check of the script, not a measurement.

Scale: at the defaults (digits, 8 epochs, batch 32, one worker) an Optuna method's run trains
about 3 s per trial, so the five of them over 3 seeds take about half an hour. Ax's Bayesian
step is far slower on 2 CPU cores: in a ``--fake`` check (8 trials, 5 of them Sobol, 2 jobs,
load average ~6) an Ax run took 622 s against 3 s for the others, so at 30 trials Ax alone
may exceed the hour; run it on its own (``--only ax``) or with fewer ``--trials`` if so.

``--out DIR`` holds each run's study and trials.csv (one row per finished trial: method, seed,
trial, state, epochs_done, epochs_cumulative, seconds, val_acc, params, macs) and
hypervolume_<axis>.csv; ``--from DIR [DIR ...]`` reports again on those trials.csv files together
(e.g. a run of the Optuna methods and a separate ``--only ax`` run; give ``default`` first, since it
is the method measured against the rest).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from search_efficiency import Row, read_rows, report, study_rows, summary, write_rows

METHODS = ("default", "gp_halving", "tpe", "gp", "nsga2", "random", "ax")
#: The peers: samplers run bare, as a hand-written Optuna script (or Ax) would run them. The other
#: methods are archsearch's configurations, with its successive halving and learn_from_pruned.
PEERS = ("tpe", "gp", "nsga2", "random", "ax")


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


def sampler_for(method: str, distributions: dict[str, BaseDistribution]) -> Callable[[int], Any] | None:
    """The ``sampler=`` of ``run_search`` for ``method`` (None: archsearch's default TPE)."""
    if method in ("default", "tpe"):
        return None
    if method == "gp_halving":
        return lambda seed: optuna.samplers.GPSampler(seed=seed)
    if method == "ax":
        return lambda seed: AxSampler(distributions, seed)
    makers: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
        "gp": lambda seed: optuna.samplers.GPSampler(seed=seed),
        "nsga2": lambda seed: optuna.samplers.NSGAIISampler(population_size=10, seed=seed),
        "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    }
    return makers[method]


def run(method: str, seed: int, args: argparse.Namespace, out: Path) -> list[Row]:
    """One search of ``method`` (in this process); its finished trials as rows."""
    import warnings

    import archsearch as A
    from archsearch.testing import FixedCostFit

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    space = A.load_space("fire")
    data = A.load_dataset({"name": args.data}, seed=seed)
    name = f"{method}_{seed}"
    settings = A.SearchSettings(
        study=A.StudySettings(name=name, n_trials=args.trials, max_epochs=args.epochs_budget),
        trainer=A.TrainerSettings.from_mapping(
            {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "threads": 1,
                "schedule": {"name": "cosine", "warmup": 0.05},
            }
        ),
        fidelity=A.FidelitySettings(enabled=method in ("default", "gp_halving")),
        tracking=A.TrackingSettings(enabled=False),
        export=A.ExportSettings(dir=out / name / "export", plots=False),
        seed=seed,
    )
    result = A.run_search(
        space,
        data,
        settings,
        sampler=sampler_for(method, space.distributions()),
        storage=f"sqlite:///{out / name / 'optuna.db'}",
        fit_fn=None if args.fake is None else FixedCostFit(seconds=args.fake, epochs=args.epochs),
    )
    return study_rows(result.study, method, seed)


def run_all(args: argparse.Namespace, methods: list[str], out: Path) -> list[Row]:
    rows: list[Row] = []
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(run, method, seed, args, out) for seed in range(args.seeds) for method in methods
        ]
        for future in futures:
            rows += future.result()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=30, help="study.n_trials of every run")
    parser.add_argument("--epochs-budget", type=int, default=240, help="study.max_epochs of every run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=8, help="trainer.epochs of every candidate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--only", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--jobs", type=int, default=1, help="searches side by side")
    parser.add_argument(
        "--fake", type=float, help="FixedCostFit of this many seconds per trial instead of training"
    )
    parser.add_argument(
        "--out", type=Path, help="directory for the runs and CSVs (default: a new temporary one)"
    )
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        nargs="+",
        help="report on the trials.csv of one or more runs (the others, then --only ax) instead of running",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    methods = [m for m in args.only.split(",") if m in METHODS]
    if "ax" in methods and (why := ax_missing()) is not None:
        print(why)
        methods.remove("ax")
    out: Path | None = args.out
    if args.source is not None:
        rows = [row for source in args.source for row in read_rows(source / "trials.csv")]
        if out is not None:  # the runs' rows together, and the hypervolume CSVs beside them
            out.mkdir(parents=True, exist_ok=True)
            write_rows(rows, out / "trials.csv")
    else:
        out = out or Path(tempfile.mkdtemp(prefix="peers_"))
        out.mkdir(parents=True, exist_ok=True)
        rows = run_all(args, methods, out)
        write_rows(rows, out / "trials.csv")
    summary(rows)
    seconds = max(r.seconds for r in rows)
    report(rows, "trial", args.trials, "trials", out, PEERS)
    report(rows, "seconds", seconds, "seconds (the longest run)", out, PEERS)
    report(rows, "epochs_cumulative", args.epochs_budget, "epochs", out, PEERS)
    print(f"\ntotal {time.perf_counter() - started:.0f}s" + (f"; runs and CSVs in {out}" if out else ""))


if __name__ == "__main__":
    main()
