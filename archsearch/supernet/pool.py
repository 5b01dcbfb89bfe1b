"""The networks the supernet trains: feasible draws of the space, sampled so that sizes are covered.

Uniform draws of a space favour small networks (most products of widths are small), so a
supernet trained on them neglects the large ones the front is decided among. The pool is drawn
once (:func:`archsearch.search.supernet_space.draw_pool`); each step takes its largest and
smallest member by MACs (the sandwich rule's ends) and members at sizes drawn uniformly in
log-MACs between them.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass

from archsearch.net.spec import NetSpec

__all__ = ["CandidatePool"]


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
