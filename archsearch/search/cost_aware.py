"""A sampler that models accuracy only: the costs of a candidate are computed, not learned.

Every cost objective and cost constraint of a search (params, MACs, bytes, the latency estimate,
model bytes, peak activations) is an exact function of the network, known before training
(:func:`archsearch.net.cost.analyze`). Ax and Optuna's GP model them as black boxes and spend
trials learning them; :class:`CostAwareSampler` does not. For each trial it

1. keeps a pool of candidate networks: random feasible draws from the space (drawn once and
   topped up) and neighbours of the current front (one or two parameters changed), each with
   its exact costs; a candidate breaking a cost constraint never enters the pool, and networks
   already tried (or running in another worker) leave it;
2. fits a Gaussian process (scikit-learn's, a dependency already: it fits a few hundred points
   in tenths of a second on one core; Optuna's GP tools are private and BoTorch is an optional
   multi-gigabyte stack) to validation accuracy. Its inputs are the encoded parameters, the
   exact log costs (size alone ranks networks well, so the model starts from what it knows) and
   the fidelity: a trial successive halving pruned is an observation at ``rung / epochs``, and
   predictions are made at full fidelity;
3. proposes the candidate with the largest expected hypervolume improvement given its exact
   costs (:mod:`archsearch.search.ehvi`); running trials count as done at their predicted
   accuracy, so parallel workers spread out.

The first ``n_startup_trials`` proposals spread over the cost space instead: each is the pool
candidate farthest, in scaled log costs, from everything tried so far. With thousands of trials
(a supernet search) the GP sees at most ``max_observations`` of them (the front, then the most
recent), so a proposal stays within a second or two. Every proposal draws from a generator
seeded by ``seed`` and the trial number, so a resumed study does not repeat earlier draws.

From the CLI: ``sampler=cost_aware``; from Python: ``run_search(..., sampler=CostAwareSampler())``
(:func:`archsearch.search.sweep.run_search` binds it to the search's space and costs).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from archsearch.errors import ConfigError
from archsearch.net.spec import NetSpec
from archsearch.pareto import non_dominated
from archsearch.search import ehvi
from archsearch.search.accuracy_model import AccuracyModel, Encoder
from archsearch.search.space_core import InfeasibleArchitecture, SearchSpace, allows
from archsearch.search.supernet_space import PolicyTrial, random_value

__all__ = ["PROPOSAL_ATTR", "CostAwareSampler", "CostProblem", "check_objectives"]

#: Random candidates drawn for the start-up proposals (and the cost box); the model's pool is larger.
STARTUP_POOL = 256
#: Attribute of a trial's proposal time (seconds), recorded by the objective.
PROPOSAL_ATTR = "proposal_seconds"


@dataclass(frozen=True)
class CostProblem:
    """What the sampler needs of a search; :func:`~archsearch.search.sweep.run_search` builds it.

    Attributes:
        space, input_shape, num_classes: what networks are drawn from, for which data.
        objectives: (metric, direction) in study order; exactly one is not a cost (``val_acc``).
        costs: a network's exact cost metrics (``analyze(spec).metrics()`` at the search's settings).
        feasible: whether cost metrics satisfy every cost constraint.
        epochs: a full training's epochs (a rung at epoch ``e`` is fidelity ``e / epochs``).
    """

    space: SearchSpace
    input_shape: tuple[int, ...]
    num_classes: int
    objectives: tuple[tuple[str, str], ...]
    costs: Callable[[NetSpec], Mapping[str, float]]
    feasible: Callable[[Mapping[str, float]], bool]
    epochs: int

    @property
    def unknown(self) -> str:
        return next(m for m, _ in self.objectives if m not in self.cost_names)

    @property
    def cost_names(self) -> list[str]:
        return [m for m, _ in self.objectives if m not in ("val_acc", "latency_ms")]


def check_objectives(objectives: Sequence[tuple[str, str]]) -> None:
    """Refuse objectives the sampler cannot serve: it needs val_acc, and every other one a cost."""
    names = [m for m, _ in objectives]
    if "val_acc" not in names or "latency_ms" in names:
        raise ConfigError(
            "sampler=cost_aware models validation accuracy and computes every other objective; "
            f"objectives {', '.join(names)} need val_acc and no measured latency_ms "
            "(use sampler=tpe or gp for those)."
        )


@dataclass
class _Candidate:
    params: dict[str, Any]
    spec_hash: str
    costs: dict[str, float]


class CostAwareSampler(optuna.samplers.BaseSampler):
    """Expected hypervolume improvement over exactly-costed candidates (module docstring).

    Args:
        seed: seeds every proposal together with its trial number (None: random).
        n_startup_trials: proposals that spread over the cost space before the GP is used.
        pool_size: random feasible candidates kept in the pool.
        neighbours: front neighbours added to the pool per proposal.
        max_observations: trials the GP is fitted on at most.
        box: log10 bounds of each cost objective (lower, upper) for the hypervolume; None: the
            range of the first pool's costs.
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        n_startup_trials: int = 8,
        pool_size: int = 1500,
        neighbours: int = 200,
        max_observations: int = 300,
        box: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        for name, value, low in (
            ("n_startup_trials", n_startup_trials, 1),
            ("pool_size", pool_size, 10),
            ("neighbours", neighbours, 0),
            ("max_observations", max_observations, 10),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"sampler.{name} must be an integer >= {low}, got {value!r}.")
        self.seed = _fresh_seed() if seed is None else int(seed)
        self.n_startup_trials = n_startup_trials
        self.pool_size = pool_size
        self.neighbours = neighbours
        self.max_observations = max_observations
        self._box_arg = box
        self._problem: CostProblem | None = None
        self._box: ehvi.CostBox | None = None
        self._pool: dict[str, _Candidate] = {}
        self._costed: dict[str, dict[str, float] | None] = {}  # spec hash -> feasible costs or None
        self._proposals: dict[int, dict[str, Any]] = {}
        self.proposal_seconds: dict[int, float] = {}
        self._fallback = np.random.default_rng(self.seed)

    # -- binding --------------------------------------------------------------------------------

    def bind(self, problem: CostProblem) -> None:
        """Attach the search's space and costs (run_search does this); refuses what it cannot model."""
        check_objectives(problem.objectives)
        self._problem = problem
        self._pool = {}
        # The start-up proposals need only a spread of sizes: the full pool is drawn when the model starts.
        self._top_up(np.random.default_rng([self.seed, 1 << 20]), STARTUP_POOL)
        if self._box_arg is not None:
            lower, upper = np.asarray(self._box_arg[0], float), np.asarray(self._box_arg[1], float)
        elif self._pool:
            costs = np.log10(np.maximum(self._cost_matrix(self._pool.values()), 1e-12))
            lower, upper = costs.min(axis=0), costs.max(axis=0)
        else:
            # Constraints no draw meets: proposals stay empty, so Optuna draws at random and each
            # trial is recorded infeasible, as with any other sampler; the box is never used.
            lower, upper = np.zeros(len(problem.cost_names)), np.ones(len(problem.cost_names))
        self._box = ehvi.CostBox(lower, upper, seed=self.seed)

    def reseed_rng(self) -> None:
        self.seed = _fresh_seed()
        self._fallback = np.random.default_rng(self.seed)

    # -- Optuna's sampler interface -------------------------------------------------------------

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self._problem is None:
            raise ConfigError(
                "CostAwareSampler needs the search's space and costs: pass it to archsearch's "
                "run_search (or call .bind(CostProblem(...)) before study.optimize)."
            )
        started = time.perf_counter()
        self._proposals[trial.number] = self._propose(study, trial.number)
        self.proposal_seconds[trial.number] = time.perf_counter() - started

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        proposal = self._proposals.get(trial.number, {})
        if param_name in proposal and allows(param_distribution, proposal[param_name]):
            return proposal[param_name]
        import random

        return random_value(random.Random(int(self._fallback.integers(2**31))), param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._proposals.pop(trial.number, None)

    # -- proposals ------------------------------------------------------------------------------

    def _propose(self, study: optuna.Study, number: int) -> dict[str, Any]:
        problem, box = self._problem, self._box
        assert problem is not None and box is not None
        rng = np.random.default_rng([self.seed, number])
        trials = study.get_trials(deepcopy=False)
        tried = {str(t.user_attrs.get("spec_hash")) for t in trials if t.user_attrs.get("spec_hash")}
        observed = _observations(trials, problem)
        done = [o for o in observed if o[2] >= 1.0]
        for spec_hash in tried & self._pool.keys():
            del self._pool[spec_hash]
        modelled = len(done) >= self.n_startup_trials
        self._top_up(rng, self.pool_size if modelled else STARTUP_POOL)
        near = self._neighbours(rng, done) if modelled else {}
        pool = [c for h, c in {**self._pool, **near}.items() if h not in tried]
        if not pool:
            return {}
        costs = ehvi.scaled_costs(self._cost_matrix(pool), box)
        if len(done) < self.n_startup_trials:
            seen = [t.user_attrs["costs"] for t in trials if isinstance(t.user_attrs.get("costs"), dict)]
            return pool[_farthest(costs, self._scaled(seen), rng)].params
        pending = [t for t in trials if t.state == TrialState.RUNNING and t.number != number]
        model = AccuracyModel(problem.cost_names, self._encoder(), rng)
        model.fit(observed, self.max_observations)
        mu, sigma = model.predict([c.params for c in pool], self._cost_matrix(pool))
        front_acc = [o[3] for o in done]
        front_costs = [o[1] for o in done]
        believed = [t for t in pending if isinstance(t.user_attrs.get("costs"), dict) and t.params]
        if believed:
            b_costs = self._cost_matrix_of([t.user_attrs["costs"] for t in believed])
            b_mu, _ = model.predict([t.params for t in believed], b_costs)
            front_acc += list(b_mu)
            front_costs += [dict(t.user_attrs["costs"]) for t in believed]
        level = ehvi.levels(np.asarray(front_acc), self._scaled(front_costs), box)
        gain = ehvi.expected_improvement(mu, sigma, costs, level, box)
        return pool[int(np.argmax(gain + 1e-12 * sigma))].params

    def _scaled(self, costs: Sequence[Mapping[str, float]]) -> np.ndarray:
        assert self._box is not None
        return ehvi.scaled_costs(self._cost_matrix_of(costs), self._box)

    def _cost_matrix(self, pool: Sequence[_Candidate] | Any) -> np.ndarray:
        return self._cost_matrix_of([c.costs for c in pool])

    def _cost_matrix_of(self, costs: Sequence[Mapping[str, float]]) -> np.ndarray:
        assert self._problem is not None
        names = self._problem.cost_names
        return np.asarray([[float(c[n]) for n in names] for c in costs], float).reshape(
            len(costs), len(names)
        )

    def _encoder(self) -> Encoder:
        assert self._problem is not None
        return Encoder(self._problem.space.distributions())

    def _candidate(self, policy: Callable[[str, BaseDistribution], Any]) -> _Candidate | None:
        """The network a policy draws, costed, or None when it is infeasible (costing is cached)."""
        problem = self._problem
        assert problem is not None
        drawn = PolicyTrial(policy)
        try:
            spec = problem.space.sample(drawn, problem.input_shape, problem.num_classes)  # type: ignore[arg-type]
        except (InfeasibleArchitecture, ConfigError, ValueError):
            return None
        if spec.hash not in self._costed:
            try:
                costs: dict[str, float] | None = dict(problem.costs(spec))
            except (ConfigError, ValueError):
                costs = None
            if len(self._costed) > 50_000:
                self._costed.clear()
            self._costed[spec.hash] = costs if costs is not None and problem.feasible(costs) else None
        found = self._costed[spec.hash]
        return None if found is None else _Candidate(dict(drawn.params), spec.hash, found)

    def _top_up(self, rng: np.random.Generator, size: int) -> None:
        """Draw random feasible networks until the pool holds ``size`` (4 tries per place)."""
        import random

        size = min(size, self.pool_size)
        draw = random.Random(int(rng.integers(2**31)))
        for _ in range(4 * max(size - len(self._pool), 0)):
            found = self._candidate(lambda _name, dist: random_value(draw, dist))
            if found is not None:
                self._pool.setdefault(found.spec_hash, found)
            if len(self._pool) >= size:
                break

    def _neighbours(self, rng: np.random.Generator, done: list[tuple[Any, ...]]) -> dict[str, _Candidate]:
        """Networks one or two parameter changes away from the front's members (costed, feasible)."""
        import random

        draw = random.Random(int(rng.integers(2**31)))
        points = [[o[3], *(math.log10(max(v, 1e-12)) for v in o[1].values())] for o in done]
        directions = ["maximize"] + ["minimize"] * (len(points[0]) - 1)
        front = [done[i] for i in non_dominated(points, directions)]
        names = list(self._encoder().distributions)
        out: dict[str, _Candidate] = {}
        for k in range(self.neighbours):
            base = front[k % len(front)][0]
            changed = set(draw.sample(names, min(len(names), 1 + (draw.random() < 0.5))))

            def policy(
                name: str, dist: BaseDistribution, base: Mapping[str, Any] = base, changed: set[str] = changed
            ) -> Any:
                if name in changed or name not in base or not allows(dist, base[name]):
                    return _step(draw, dist, base.get(name))
                return base[name]

            found = self._candidate(policy)
            if found is not None:
                out.setdefault(found.spec_hash, found)
        return out


def _fresh_seed() -> int:
    return int(np.random.default_rng().integers(2**31))


def _observations(trials: Sequence[FrozenTrial], problem: CostProblem) -> list[tuple[Any, ...]]:
    """(params, cost metrics, fidelity, accuracy) of every trained or rung-measured trial."""
    index = [m for m, _ in problem.objectives].index("val_acc")
    names = problem.cost_names
    out: list[tuple[Any, ...]] = []
    for t in trials:
        costs = t.user_attrs.get("costs")
        if not isinstance(costs, dict) or any(n not in costs for n in names):
            continue
        kept = {n: float(costs[n]) for n in names}
        if t.state == TrialState.COMPLETE and t.values is not None:
            acc = float(t.values[index])
            if math.isfinite(acc) and "val_acc" in t.user_attrs:
                out.append((t.params, kept, 1.0, acc))
        elif t.state == TrialState.PRUNED:
            rungs = [
                (int(k[5:]), v) for k, v in t.user_attrs.items() if k.startswith("rung_") and k[5:].isdigit()
            ]
            if rungs:
                epoch, values = max(rungs)
                out.append((t.params, kept, min(epoch / problem.epochs, 1.0), float(values[index])))
    return out


def _farthest(costs: np.ndarray, seen: np.ndarray, rng: np.random.Generator) -> int:
    """The candidate farthest from every tried one in scaled log costs (random among ties)."""
    if len(seen) == 0:
        return int(rng.integers(len(costs)))
    gaps = np.min(np.linalg.norm(costs[:, None, :] - seen[None, :, :], axis=2), axis=1)
    best = np.flatnonzero(gaps >= gaps.max() - 1e-12)
    return int(rng.choice(best))


def _step(draw: Any, dist: BaseDistribution, value: Any) -> Any:
    """A neighbouring value: a categorical's other choice, a number moved by about a tenth of its range."""
    if isinstance(dist, CategoricalDistribution) or value is None:
        return random_value(draw, dist)
    low, high = float(dist.low), float(dist.high)  # type: ignore[attr-defined]
    step = getattr(dist, "step", None)
    moved = float(value) + draw.gauss(0.0, 0.15) * (high - low)
    moved = min(max(moved, low), high)
    if step:
        moved = low + round((moved - low) / step) * step
        if moved == float(value):
            moved = min(max(float(value) + step * draw.choice((-1, 1)), low), high)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return round(moved)
    return float(moved)
