"""The networks the supernet trains: feasible draws of the space, sampled so that sizes are covered.

Uniform draws of a space favour small networks (most products of widths are small), so a
supernet trained on them neglects the large ones the front is decided among. The pool is drawn
once; each step takes its largest and smallest member by MACs (the sandwich rule's ends) and
members at sizes drawn uniformly in log-MACs between them.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from archsearch.errors import ConfigError
from archsearch.net.spec import NetSpec
from archsearch.search.space_core import InfeasibleArchitecture, SearchSpace
from archsearch.supernet.plan import PolicyTrial, random_value

__all__ = ["CandidatePool", "draw_pool"]

#: MACs of a feasible network, or None for one that breaks a cost constraint.
FeasibleMacs = Callable[[NetSpec], float | None]


@dataclass(frozen=True)
class CandidatePool:
    """Feasible networks sorted by MACs (ascending), with their MACs."""

    specs: tuple[NetSpec, ...]
    macs: tuple[float, ...]

    @property
    def largest(self) -> NetSpec:
        return self.specs[-1]

    @property
    def smallest(self) -> NetSpec:
        return self.specs[0]

    def by_size(self, rng: random.Random) -> NetSpec:
        """A member near a size drawn uniformly in log-MACs over the pool's range (ties at random)."""
        lo, hi = math.log(max(self.macs[0], 1.0)), math.log(max(self.macs[-1], 1.0))
        target = math.exp(rng.uniform(lo, hi))
        i = bisect.bisect_left(self.macs, target)
        near = [j for j in (i - 1, i) if 0 <= j < len(self.specs)]
        j = min(near, key=lambda k: (abs(math.log(max(self.macs[k], 1.0)) - math.log(target)), rng.random()))
        return self.specs[j]


def draw_pool(
    space: SearchSpace,
    input_shape: Sequence[int],
    num_classes: int,
    feasible: FeasibleMacs,
    *,
    size: int,
    extra: Sequence[NetSpec] = (),
    seed: int = 0,
) -> CandidatePool:
    """``size`` random draws of ``space`` and the ``extra`` networks, those ``feasible`` keeps.

    Args:
        feasible: a network's MACs, or None when it breaks a cost constraint of the study.
        extra: networks to consider too (the space's corners, so that the largest feasible
            network is in the pool even where random draws rarely reach it).

    Raises:
        ConfigError: no draw is feasible (the constraints leave nothing to train).
    """
    rng = random.Random(seed)
    found: dict[str, tuple[float, NetSpec]] = {}
    for spec in extra:
        macs = feasible(spec)
        if macs is not None:
            found[spec.hash] = (macs, spec)
    for _ in range(size):
        try:
            spec = space.sample(PolicyTrial(lambda _n, d: random_value(rng, d)), input_shape, num_classes)  # type: ignore[arg-type]
        except InfeasibleArchitecture:
            continue
        if spec.hash in found:
            continue
        macs = feasible(spec)
        if macs is not None:
            found[spec.hash] = (macs, spec)
    if not found:
        raise ConfigError(
            f"no network of search space {space.name!r} meets the constraints in {size} draws, so the "
            "supernet has nothing to train; loosen constraints.* or sweep.fidelity.supernet.pool."
        )
    ordered = sorted(found.values(), key=lambda m: (m[0], m[1].hash))
    return CandidatePool(tuple(s for _, s in ordered), tuple(m for m, _ in ordered))
