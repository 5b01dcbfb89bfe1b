"""The accuracy model of the cost-aware sampler: a Gaussian process on parameters, exact costs, fidelity.

Inputs are the encoded parameters (numbers scaled to [0, 1] on their range, log ones in log,
categoricals one-hot), the log10 of the exact cost objectives (min-max over the observations:
size alone ranks networks well, so the model starts from what it knows) and the fidelity (1 for
a full training, ``rung / epochs`` for a trial successive halving pruned). Predictions are at
full fidelity. scikit-learn's GP (a dependency already) fits a few hundred points in tenths of
a second on one core: a Matern-5/2 kernel with one length scale per input, plus white noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution

__all__ = ["AccuracyModel", "Encoder"]

#: One observation: (params, cost metrics by name, fidelity in (0, 1], accuracy).
Observation = tuple[Any, ...]


class Encoder:
    """Parameters to [0, 1] features: numbers on their (log) range, categoricals one-hot."""

    def __init__(self, distributions: Mapping[str, BaseDistribution]) -> None:
        self.distributions = dict(distributions)

    def width(self) -> int:
        return sum(
            len(d.choices) if isinstance(d, CategoricalDistribution) else 1
            for d in self.distributions.values()
        )

    def encode(self, params: Mapping[str, Any]) -> list[float]:
        row: list[float] = []
        for name, d in self.distributions.items():
            value = params.get(name)
            if isinstance(d, CategoricalDistribution):
                row.extend(1.0 if value == c else 0.0 for c in d.choices)
                continue
            low, high = float(d.low), float(d.high)  # type: ignore[attr-defined]
            if value is None or high <= low:
                row.append(0.5)
            elif getattr(d, "log", False):
                row.append((math.log(float(value)) - math.log(low)) / (math.log(high) - math.log(low)))
            else:
                row.append((float(value) - low) / (high - low))
        return row


class AccuracyModel:
    """A GP on [encoded params, scaled log costs, fidelity] -> accuracy."""

    def __init__(self, cost_names: Sequence[str], encoder: Encoder, rng: np.random.Generator) -> None:
        self.cost_names = list(cost_names)
        self.encoder = encoder
        self.rng = rng
        self.gp: Any = None
        self.lo: np.ndarray | None = None
        self.span: np.ndarray | None = None

    def _features(
        self, params: Sequence[Mapping[str, Any]], costs: np.ndarray, fidelity: Sequence[float]
    ) -> Any:
        logs = np.log10(np.maximum(costs, 1e-12))
        assert self.lo is not None and self.span is not None
        scaled = (logs - self.lo) / self.span
        encoded = np.asarray([self.encoder.encode(p) for p in params], float).reshape(len(params), -1)
        return np.hstack([encoded, scaled, np.asarray(fidelity, float)[:, None]])

    def fit(self, observed: list[tuple[Any, ...]], limit: int) -> None:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        if len(observed) > limit:
            order = sorted(range(len(observed)), key=lambda i: (-observed[i][2], -observed[i][3]))
            best = order[: limit // 3]
            recent = [i for i in range(len(observed) - 1, -1, -1) if i not in set(best)][: limit - len(best)]
            observed = [observed[i] for i in sorted(best + recent)]
        names = self.cost_names
        costs = np.asarray([[o[1][n] for n in names] for o in observed], float)
        logs = np.log10(np.maximum(costs, 1e-12))
        self.lo = logs.min(axis=0)
        self.span = np.where(logs.max(axis=0) > self.lo, logs.max(axis=0) - self.lo, 1.0)
        x = self._features([o[0] for o in observed], costs, [o[2] for o in observed])
        y = np.asarray([o[3] for o in observed], float)
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * Matern(
            length_scale=np.ones(x.shape[1]), length_scale_bounds=(5e-2, 1e2), nu=2.5
        ) + WhiteKernel(1e-3, (1e-6, 1e-1))
        self.gp = GaussianProcessRegressor(
            kernel, normalize_y=True, n_restarts_optimizer=1, random_state=int(self.rng.integers(2**31))
        )
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings on a handful of points
            self.gp.fit(x, y)

    def predict(
        self, params: Sequence[Mapping[str, Any]], costs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        x = self._features(params, costs, [1.0] * len(params))
        mu, sigma = self.gp.predict(x, return_std=True)
        return np.asarray(mu, float), np.asarray(sigma, float)
