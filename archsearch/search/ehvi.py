"""Expected hypervolume improvement when every objective but accuracy is known exactly.

A candidate network's costs (params, MACs, bytes, the latency estimate) are computed before it
is trained; only its accuracy is uncertain. With the costs fixed, the hypervolume it would add
to the current front is a non-decreasing, piecewise-linear function of its accuracy ``a``::

    HVI(a) = sum over cost points s the candidate dominates of  max(0, a - L(s)) * dV

where ``L(s)`` is the highest accuracy among front members whose costs are all at most ``s``
(the accuracy floor when there is none): the part of the accuracy axis above ``s`` that the
front does not cover yet. Under a Gaussian prediction ``a ~ N(mu, sigma^2)`` each term's
expectation has the closed form of expected improvement,
``(mu - L) Phi(z) + sigma phi(z)`` with ``z = (mu - L) / sigma``, so the expected improvement
is exact in accuracy and a quadrature in cost space: the cost box is covered by a scrambled
Sobol point set (fixed seed, so proposals are reproducible), each point carrying ``dV``.

Coordinates follow :func:`archsearch.pareto.hypervolume`, the quantity the benchmarks report:
accuracy linear on [0, 1], each cost ``log10`` min-max scaled to [0, 1] on a fixed box, and the
reference point at :data:`archsearch.pareto.REFERENCE` (1.1) in every loss coordinate, so the
accuracy floor is ``1 - 1.1 = -0.1`` and the cost box is [0, 1.1]^d.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from archsearch.pareto import REFERENCE

__all__ = ["ACC_FLOOR", "CostBox", "expected_improvement", "levels", "scaled_costs"]

#: The accuracy at the hypervolume's reference point (loss 1.1 on an accuracy axis of [0, 1]).
ACC_FLOOR = 1.0 - REFERENCE


class CostBox:
    """The fixed box each log10 cost is scaled on, and the quadrature points covering it.

    Args:
        lower, upper: log10 of each cost objective's bounds (the benchmark's, or the space's).
        points: Sobol points in the cost box (rounded up to a power of two).
        seed: the Sobol scrambling seed.
    """

    def __init__(self, lower: np.ndarray, upper: np.ndarray, points: int = 2048, seed: int = 0) -> None:
        from scipy.stats import qmc

        self.lower = np.asarray(lower, dtype=float)
        self.upper = np.asarray(upper, dtype=float)
        d = len(self.lower)
        sobol = qmc.Sobol(d, scramble=True, rng=np.random.default_rng(seed))
        self.samples = sobol.random_base2(int(np.ceil(np.log2(max(points, 2))))) * REFERENCE
        self.cell = REFERENCE**d / len(self.samples)

    def scale(self, log_costs: np.ndarray) -> np.ndarray:
        """log10 costs (rows) to [0, 1] on the box, clipped (a constant axis maps to 0)."""
        span = np.where(self.upper > self.lower, self.upper - self.lower, 1.0)
        return np.clip((np.asarray(log_costs, dtype=float) - self.lower) / span, 0.0, 1.0)


def scaled_costs(costs: np.ndarray, box: CostBox) -> np.ndarray:
    """Raw costs (rows: candidates, columns: cost objectives) on the box's [0, 1] scale."""
    return box.scale(np.log10(np.maximum(np.asarray(costs, dtype=float), 1e-12)))


def levels(front_acc: np.ndarray, front_costs: np.ndarray, box: CostBox) -> np.ndarray:
    """L(s) at every quadrature point: the front's best accuracy among members costing at most s.

    Args:
        front_acc: accuracy of each member (members need not be mutually non-dominated).
        front_costs: their scaled costs (:func:`scaled_costs`), one row each.
    """
    out = np.full(len(box.samples), ACC_FLOOR)
    for acc, cost in zip(np.asarray(front_acc, float), np.asarray(front_costs, float), strict=True):
        covered = np.all(box.samples >= cost, axis=1)
        np.maximum(out, np.where(covered, max(acc, ACC_FLOOR), ACC_FLOOR), out=out)
    return out


def expected_improvement(
    mu: np.ndarray, sigma: np.ndarray, costs: np.ndarray, level: np.ndarray, box: CostBox
) -> np.ndarray:
    """Expected hypervolume improvement of each candidate (module docstring), in chunks.

    Args:
        mu, sigma: the predicted accuracy's mean and standard deviation per candidate.
        costs: the candidates' scaled costs, one row each.
        level: :func:`levels` of the current front.
    """
    mu = np.asarray(mu, float)
    sigma = np.maximum(np.asarray(sigma, float), 1e-9)
    costs = np.asarray(costs, float)
    out = np.empty(len(mu))
    chunk = max(1, 4_000_000 // max(len(level), 1))
    for start in range(0, len(mu), chunk):
        sl = slice(start, start + chunk)
        dominated = np.all(box.samples[None, :, :] >= costs[sl, None, :], axis=2)
        gap = mu[sl, None] - level[None, :]
        z = gap / sigma[sl, None]
        ei = gap * ndtr(z) + sigma[sl, None] * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
        out[sl] = np.where(dominated, ei, 0.0).sum(axis=1) * box.cell
    return out
