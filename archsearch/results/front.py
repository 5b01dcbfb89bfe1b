"""Which trials of a study form its Pareto front.

The bottom of ``archsearch.results``: the export and the plots both select trials here, so
neither has to import the other for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from archsearch.pareto import non_dominated

__all__ = ["accuracy_axis", "completed_feasible", "front_trials", "objective_directions", "spread_over_sizes"]


def accuracy_axis(names: Sequence[str]) -> str:
    """The accuracy-like objective plotted on a linear y axis; every other one is a cost on a log axis."""
    return "val_acc" if "val_acc" in names else names[0]


def objective_directions(study: optuna.Study) -> list[str]:
    """``"minimize"`` or ``"maximize"`` per objective of ``study``, as ``archsearch.pareto`` takes them."""
    return ["maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize" for d in study.directions]


def completed_feasible(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that satisfy every constraint and were actually evaluated."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if any(v > 0 for v in t.constraints.values()):
            continue
        if t.values is None or any(not math.isfinite(v) for v in t.values):
            continue
        out.append(t)
    return out


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto front: non-dominated completed feasible trials, one per architecture.

    A trial that reused an earlier trial's result (same spec hash) is left out in favour of
    the trial that trained it.
    """
    trials = [t for t in completed_feasible(study) if "reused_from" not in t.user_attrs]
    idx = non_dominated([t.values for t in trials], objective_directions(study))
    return sorted((trials[i] for i in idx), key=lambda t: t.number)


def spread_over_sizes(front: Sequence[FrozenTrial], count: int) -> list[FrozenTrial]:
    """At most ``count`` members of ``front``, chosen on validation accuracy and spread over sizes.

    Members dominated on validation accuracy and parameter count alone go first (a larger
    network that is no more accurate is never chosen, whatever its other costs); of the rest,
    for ``count`` sizes evenly spaced in log(params) from the smallest to the largest, the
    nearest member not yet chosen is taken. Returned in trial order.
    """

    def key(t: FrozenTrial) -> tuple[float, float]:
        return float(t.user_attrs.get("val_acc", float("nan"))), float(t.user_attrs["costs"]["params"])

    points = [key(t) for t in front]
    kept = [front[i] for i in non_dominated(points, ["maximize", "minimize"])]
    if len(kept) <= count:
        return sorted(kept, key=lambda t: t.number)
    sizes = [math.log(key(t)[1]) for t in kept]
    low, high = min(sizes), max(sizes)
    chosen: list[int] = []
    for k in range(count):
        target = low + (high - low) * (k / (count - 1) if count > 1 else 1.0)
        free = [i for i in range(len(kept)) if i not in chosen]
        chosen.append(min(free, key=lambda i: (abs(sizes[i] - target), -key(kept[i])[0])))
    return sorted((kept[i] for i in chosen), key=lambda t: t.number)
