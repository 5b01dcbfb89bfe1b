"""What could successive halving gain here at best? Replays measured learning curves through the rule.

    .venv/bin/python benchmarks/halving_replay.py WORK [--rungs 1 3] [--eta 3] [--budget 200]
        [--orders 200] [--seed 0]

WORK is the directory benchmarks/search_efficiency.py prints at its end. The script takes every
completed trial that trained fully in its runs without halving ((b) and (c), every seed): its
costs, its validation accuracy after each epoch (from the MLflow run's metric history), its
seconds per epoch and its fixed per-trial overhead (duration minus training). Then, for many
random orders of those trials, one sequential worker runs them

    without halving:  every trial trains fully;
    with halving:     archsearch.search.fidelity.promote decides at each rung, on the entries so far,
                      exactly as a sweep does; a pruned trial costs its overhead plus the epochs
                      it trained,

until ``--budget`` seconds are spent, and it measures when the halving run's front of completed
trials first reaches the hypervolume of the other's at the end (same bounds as
search_efficiency.py). Both replays see the same architectures in the same order, so the only
difference is the rule: no sampler adapting, no machine noise. What it prints is a ceiling for
what the rule can do on these candidates, not a measurement of a live search.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna

from archsearch.pareto import hypervolume, non_dominated
from archsearch.search.fidelity import promote

DIRECTIONS = ["maximize", "minimize", "minimize"]


@dataclass(frozen=True)
class Curve:
    """One fully trained trial: costs, validation accuracy after each epoch, and what it cost."""

    costs: tuple[float, float]
    accuracy: tuple[float, ...]
    seconds_per_epoch: float
    overhead: float


def load_curves(work: Path, variants: str = "bc") -> list[Curve]:
    """The fully trained, non-reused trials of the runs in ``work`` whose names start with ``variants``."""
    from mlflow import MlflowClient

    curves = []
    for run in sorted(p for p in work.iterdir() if p.is_dir() and p.name[0] in variants):
        study = optuna.load_study(study_name=run.name, storage=f"sqlite:///{run / 'mlruns' / 'optuna.db'}")
        client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlruns' / 'mlflow.db'}")
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            attrs = t.user_attrs
            if "reused_from" in attrs or "mlflow_run_id" not in attrs or t.datetime_complete is None:
                continue
            epochs = int(attrs["epochs_done"])
            history = {m.step: m.value for m in client.get_metric_history(attrs["mlflow_run_id"], "val_acc")}
            if any(k not in history for k in range(1, epochs + 1)):
                continue
            assert t.datetime_start is not None
            total = (t.datetime_complete - t.datetime_start).total_seconds()
            train = float(attrs["train_seconds"])
            curves.append(
                Curve(
                    costs=(float(t.values[1]), float(t.values[2])),
                    accuracy=tuple(history[k] for k in range(1, epochs + 1)),
                    seconds_per_epoch=train / epochs,
                    overhead=max(total - train, 0.0),
                )
            )
    return curves


def replay(
    order: Sequence[Curve], rungs: Sequence[int], eta: int, budget: float
) -> list[tuple[float, list[float]]]:
    """(finish time, objective values) of each trial that completes within ``budget`` on one worker."""
    entries: dict[int, dict[int, list[float]]] = {r: {} for r in rungs}
    now = 0.0
    done = []
    for i, c in enumerate(order):
        stop = len(c.accuracy)
        for r in rungs:
            entries[r][i] = [c.accuracy[r - 1], *c.costs]
            if i not in promote(entries[r], DIRECTIONS, eta):
                stop = r
                break
        now += c.overhead + stop * c.seconds_per_epoch
        if now > budget:
            break
        if stop == len(c.accuracy):
            done.append((now, [c.accuracy[-1], *c.costs]))
    return done


def transform(values: list[float], log: bool) -> list[float]:
    return [values[0], math.log10(values[1]), math.log10(values[2])] if log else values


def hv_steps(
    done: list[tuple[float, list[float]]], lower: list[float], upper: list[float], log: bool
) -> list[tuple[float, float]]:
    """(time, hypervolume of the front so far) after each completion in ``done``."""
    front: list[list[float]] = []
    steps = []
    for t, values in done:
        front.append(transform(values, log))
        front = [front[i] for i in non_dominated(front, DIRECTIONS)]
        steps.append((t, hypervolume(front, DIRECTIONS, lower, upper)))
    return steps


def report(
    curves: list[Curve], rungs: Sequence[int], eta: int, budget: float, orders: int, seed: int
) -> None:
    """Print, on raw and log10 costs, when halving reaches the final hypervolume of full training."""
    full = statistics.mean(c.overhead + len(c.accuracy) * c.seconds_per_epoch for c in curves)
    print(
        f"replay of {len(curves)} fully trained trials (a full trial {full:.1f}s on average, so about "
        f"{budget / full:.0f} per {budget:.0f}s run), rungs {list(rungs)}, eta {eta}, {orders} orders:"
    )
    for log in (False, True):
        points = [transform([c.accuracy[-1], *c.costs], log) for c in curves]
        lower = [0.0, min(p[1] for p in points), min(p[2] for p in points)]
        upper = [1.0, max(p[1] for p in points), max(p[2] for p in points)]
        rng = random.Random(seed)
        ratios, hv_a, hv_b, n_a, n_b = [], [], [], [], []
        for _ in range(orders):
            order = rng.sample(curves, len(curves))
            plain, halved = replay(order, (), eta, budget), replay(order, rungs, eta, budget)
            plain_hv = hv_steps(plain, lower, upper, log)
            halved_hv = hv_steps(halved, lower, upper, log)
            target = plain_hv[-1][1] if plain_hv else 0.0
            reached = next((t for t, v in halved_hv if v >= target - 1e-12), math.inf)
            ratios.append(reached / budget)
            hv_a.append(halved_hv[-1][1] if halved_hv else 0.0)
            hv_b.append(target)
            n_a.append(len(halved))
            n_b.append(len(plain))
        q1, median, q3 = statistics.quantiles(ratios, n=4)
        share = sum(r <= 0.5 for r in ratios) / orders
        print(
            f"  {'log10 costs' if log else 'costs as they are'}: hypervolume with halving "
            f"{statistics.mean(hv_a):.4f} ({statistics.mean(n_a):.0f} complete), without "
            f"{statistics.mean(hv_b):.4f} ({statistics.mean(n_b):.0f} complete); time to reach it: median "
            f"{median:.2f} of the budget (quartiles {q1:.2f}-{q3:.2f}), at most 0.50 in {share:.0%} of orders"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("work", type=Path, help="the directory search_efficiency.py printed")
    parser.add_argument("--rungs", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--budget", type=float, default=200.0, help="seconds of one replayed run")
    parser.add_argument("--orders", type=int, default=200, help="random orders of the trials to replay")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curves = load_curves(args.work)
    if len(curves) < 8:
        raise SystemExit(
            f"{args.work} holds {len(curves)} fully trained trials of runs (b) and (c); need 8 or more."
        )
    report(curves, args.rungs, args.eta, args.budget, args.orders, args.seed)


if __name__ == "__main__":
    main()
