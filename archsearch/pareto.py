"""Pareto maths on objective vectors: dominance, non-dominated sorting, crowding, hypervolume.

Plain functions on sequences of numbers, with no Optuna or study in sight, so the export, the
successive-halving rule and the benchmarks all rank and measure fronts the same way. A
direction is ``"minimize"`` or ``"maximize"`` per objective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "REFERENCE",
    "crowding_distances",
    "hypervolume",
    "loss_hypervolume",
    "non_dominated",
    "pareto_ranks",
]

#: Reference point of :func:`hypervolume` in every dimension, after normalising to [0, 1]: a
#: little beyond the worst value, so the points at the edge of the box still add volume.
REFERENCE = 1.1


def _losses(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[list[float]]:
    """The points as losses: maximised objectives negated, so smaller is better everywhere."""
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    return [[s * v for s, v in zip(signs, p, strict=True)] for p in points]


def non_dominated(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (ties are all kept).

    Args:
        points: one row of objective values per candidate.
        directions: ``"minimize"`` or ``"maximize"`` per objective.

    Returns:
        The indices, ascending.
    """
    if not points:
        return []
    import numpy as np

    # A search of thousands of trials finds its front after every trial; with a front of
    # hundreds the plain pairwise loop took a second a trial at 1,400 trials. A dominating point
    # has a smaller loss sum, so in order of the sum each point need only be checked against the
    # front found so far; that pass can only keep too many (sums of infinities and NaNs do not
    # order), so its survivors are then checked against every point.
    losses = np.asarray(_losses(points, directions), dtype=float)

    def beaten(rows: Any, by: Any) -> Any:
        return (np.all(by[None] <= rows[:, None], axis=2) & np.any(by[None] < rows[:, None], axis=2)).any(
            axis=1
        )

    front: list[int] = []
    with np.errstate(invalid="ignore"):  # inf - inf: such a sum orders nothing, the check below decides
        order = np.argsort(losses.sum(axis=1), kind="stable")
    for i in order:
        if not front or not beaten(losses[i : i + 1], losses[front])[0]:
            front.append(int(i))
    survivors = sorted(front)
    out = []
    for start in range(0, len(survivors), 256):
        block = survivors[start : start + 256]
        out += [i for i, lost in zip(block, beaten(losses[block], losses), strict=True) if not lost]
    return out


def pareto_ranks(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Non-dominated sorting: 0 for the first front, 1 for the front left after removing it, ..."""
    ranks = [-1] * len(points)
    left = list(range(len(points)))
    rank = 0
    while left:
        front = [left[i] for i in non_dominated([points[j] for j in left], directions)]
        for i in front:
            ranks[i] = rank
        members = set(front)
        left = [i for i in left if i not in members]
        rank += 1
    return ranks


def crowding_distances(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II crowding distance of each point within one front (boundary points are infinite).

    Per objective the points are sorted, the extremes get infinity and every other point adds
    the gap between its neighbours divided by the objective's range; an objective on which all
    points agree adds nothing. Directions do not matter: the distance is symmetric.
    """
    n = len(points)
    distance = [0.0] * n
    if n == 0:
        return distance
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][m])
        lo, hi = points[order[0]][m], points[order[-1]][m]
        if hi == lo:
            continue
        distance[order[0]] = distance[order[-1]] = math.inf
        for k in range(1, n - 1):
            distance[order[k]] += (points[order[k + 1]][m] - points[order[k - 1]][m]) / (hi - lo)
    return distance


def loss_hypervolume(losses: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Exact volume of the region the loss vectors dominate, bounded by ``reference``.

    Every objective is minimised. A point that is not below the reference in every dimension
    dominates nothing inside the box and adds nothing; dominated and duplicate points add
    nothing either, so the input need not be a front.

    Args:
        losses: one row per point, each as long as ``reference``.
        reference: the box's far corner (the worst acceptable value per objective).

    Returns:
        The hypervolume, 0.0 for no point inside the box.
    """
    ref = [float(r) for r in reference]
    inside = []
    for p in losses:
        row = [float(v) for v in p]
        if len(row) != len(ref):
            raise ValueError(f"a point has {len(row)} objectives, the reference point {len(ref)}.")
        if all(v < r for v, r in zip(row, ref, strict=True)):
            inside.append(row)
    if not inside:
        return 0.0
    return _slice_volume(inside, ref)


def _slice_volume(points: list[list[float]], ref: list[float]) -> float:
    """Hypervolume by slicing along the last objective (HSO), the last two dimensions by a sweep.

    Sorted by the last objective, the points below each slice boundary dominate, within that
    slab, exactly what their projections onto the other objectives dominate; exact, and
    O(n^(d-1) log n), which is immediate for the few dozen points of a front in 2-3 dimensions.
    """
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    if len(ref) == 2:
        # Ascending in the first objective, each point that improves on the best second
        # objective so far adds the rectangle between it, that best and the reference.
        volume = 0.0
        best = ref[1]
        for x, y in sorted((p[0], p[1]) for p in points):
            if y < best:
                volume += (ref[0] - x) * (best - y)
                best = y
        return volume
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for i, p in enumerate(ordered):
        top = ordered[i + 1][-1] if i + 1 < len(ordered) else ref[-1]
        if top > p[-1]:
            volume += (top - p[-1]) * _slice_volume([q[:-1] for q in ordered[: i + 1]], ref[:-1])
    return volume


def hypervolume(
    points: Sequence[Sequence[float]],
    directions: Sequence[str],
    lower: Sequence[float],
    upper: Sequence[float],
) -> float:
    """Hypervolume of ``points`` after min-max normalising each objective to [0, 1].

    Every objective is turned into a loss in [0, 1] (values outside ``[lower, upper]`` clipped,
    maximised ones flipped); the reference point is :data:`REFERENCE` (1.1) in every dimension,
    so the value lies in [0, 1.1**d] and is comparable across runs that share ``lower`` and
    ``upper``.

    Args:
        points: one row of objective values per point (dominated ones add nothing).
        directions: ``"minimize"`` or ``"maximize"`` per objective.
        lower: the value normalised to 0 per objective.
        upper: the value normalised to 1 per objective (equal to ``lower``: every value is 0).
    """
    losses = []
    for p in points:
        row = []
        for v, d, lo, hi in zip(p, directions, lower, upper, strict=True):
            span = (hi - lo) or 1.0
            x = min(max((v - lo) / span, 0.0), 1.0)
            row.append(1.0 - x if d == "maximize" else x)
        losses.append(row)
    return loss_hypervolume(losses, [REFERENCE] * len(directions))
