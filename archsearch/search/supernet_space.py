"""A search space as the supernet sees it: the networks at the corners of its box, and a pool of draws.

A bank must be as large, on every axis, as the largest slice any feasible candidate takes. The
widths of the spaces archsearch reads are monotone in each parameter (a wider base, a larger
ratio, one more repeat never makes a bank smaller; a ratio that grows one kernel's share shrinks
another's), so each bank axis is largest at a corner of the parameter box: every numeric
parameter at its low or high end, every categorical at each of its choices. :func:`corner_specs`
visits those corners. Parameters that no single change can move a bank with (dropout, pool
placement) are held at one value, which keeps the fire space at about 2,500 corners (3 s).

Parameters are grouped by their last name component, so the per-module ``fire3.sr`` and
``fire4.sr`` of a template space move together (each module's banks depend only on its own
draws and the shared ones), and so do a graph space's ``by2.present`` and ``by3.present``.

:func:`draw_pool` draws the feasible networks the supernet trains on
(:class:`~archsearch.supernet.pool.CandidatePool`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from archsearch.errors import ConfigError
from archsearch.net.spec import NetSpec
from archsearch.search.space_core import InfeasibleArchitecture, SearchSpace
from archsearch.supernet.pool import CandidatePool
from archsearch.supernet.slots import Slot, Unshareable, candidate_slots

__all__ = ["MAX_CORNERS", "PolicyTrial", "corner_specs", "draw_pool", "random_value"]

#: MACs of a feasible network, or None for one that breaks a cost constraint.
FeasibleMacs = Callable[[NetSpec], float | None]

#: Corners visited at most; a larger box is visited at this many random corners (and both ends).
MAX_CORNERS = 16384

Policy = Callable[[str, BaseDistribution], Any]


class PolicyTrial:
    """A stand-in for an Optuna trial whose ``suggest_*`` answers come from a policy function.

    ``space.sample`` only calls ``suggest_int``, ``suggest_float`` and ``suggest_categorical``, so
    this is enough to draw a corner, or a random point, without a study. ``params`` and
    ``distributions`` record what was drawn, as on a trial.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, BaseDistribution] = {}

    def _draw(self, name: str, dist: BaseDistribution) -> Any:
        if name not in self.params:
            self.params[name] = self.policy(name, dist)
            self.distributions[name] = dist
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return int(self._draw(name, IntDistribution(low, high, step=step, log=log)))

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return float(self._draw(name, FloatDistribution(low, high, step=step, log=log)))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._draw(name, CategoricalDistribution(list(choices)))


def group_of(name: str) -> str:
    """The corner group of a parameter: its name after the last dot (``fire3.sr`` -> ``sr``)."""
    return name.rsplit(".", 1)[-1]


def end_value(dist: BaseDistribution, index: int) -> Any:
    """Corner value ``index`` of a distribution: 0 low, 1 high; a categorical's choice ``index``."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[index % len(dist.choices)]
    if isinstance(dist, IntDistribution | FloatDistribution):
        return dist.high if index else dist.low
    raise TypeError(f"unsupported distribution {dist!r}")


def random_value(rng: random.Random, dist: BaseDistribution) -> Any:
    """A uniform draw from a distribution (log-uniform for log ones), on its step grid."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[rng.randrange(len(dist.choices))]
    if isinstance(dist, IntDistribution):
        return dist.low + dist.step * rng.randrange((dist.high - dist.low) // dist.step + 1)
    if isinstance(dist, FloatDistribution):
        if dist.step is not None:
            n = round((dist.high - dist.low) / dist.step)
            return min(dist.high, dist.low + dist.step * rng.randrange(n + 1))
        if dist.log:
            return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
        return rng.uniform(dist.low, dist.high)
    raise TypeError(f"unsupported distribution {dist!r}")


def _sample(space: SearchSpace, policy: Policy, shape: Sequence[int], classes: int) -> NetSpec | None:
    try:
        return space.sample(PolicyTrial(policy), shape, classes)  # type: ignore[arg-type]
    except InfeasibleArchitecture:
        return None


def _sizes(slots: Mapping[str, Slot]) -> dict[tuple[str, int], Any]:
    """What a candidate asks of the banks: per bank axis the channels of each segment, and kernels."""
    out: dict[tuple[str, int], Any] = {}
    for slot in slots.values():
        for i, axis in enumerate(slot.axes):
            out[(slot.bank, i)] = axis
        out[(slot.bank, -1)] = slot.kernel
    return out


def _signature(spec: NetSpec) -> tuple[dict[tuple[str, int], Any], dict[str, tuple[str, str]]]:
    nodes = {n.name: (n.op, str(getattr(n, "act", ""))) for n in spec.nodes}
    return _sizes(candidate_slots(spec)), nodes


def corner_specs(
    space: SearchSpace, input_shape: Sequence[int], num_classes: int, seed: int = 0
) -> list[NetSpec]:
    """The feasible networks at the corners of ``space``'s box that can move a bank (see module doc).

    An integer parameter with a few values (a depth, a repeat count) also visits each value that
    brings in banks or inputs neither end has: the classifier of a depth-4 template network is
    ``conv6``, which only depth 4 has, and a stage repeated twice feeds the next from its second
    module.

    Raises:
        ConfigError: a parameter changes a node's op or activation (one set of weights cannot
            serve both), or a node has an op the supernet cannot slice; naming both.
    """
    source = str(space.path) if space.path is not None else f"search space {space.name!r}"
    groups = _discover(space, input_shape, num_classes, seed)

    def visit(values: Mapping[str, Any]) -> tuple[NetSpec, Any] | None:
        spec = _sample(space, lambda name, dist: values[group_of(name)], input_shape, num_classes)
        if spec is None:
            return None
        try:
            return spec, _signature(spec)
        except Unshareable as exc:
            raise ConfigError(
                f"{source} cannot be searched with sweep.fidelity.kind=supernet: {exc}; "
                "use sweep.fidelity.kind=epochs."
            ) from None

    ends = {g: _ends(d) for g, d in groups.items()}
    bases = [{g: v[0] for g, v in ends.items()}, {g: v[-1] for g, v in ends.items()}]
    at_bases = [visit(b) for b in bases]
    corner_values: dict[str, list[Any]] = {}
    for g, dist in groups.items():
        banks_at_ends: set[tuple[str, int, str]] = set()
        moves = False
        for base, at_base in zip(bases, at_bases, strict=True):
            if at_base is None:
                continue
            for value in ends[g]:
                moved = visit({**base, g: value})
                if moved is None:
                    continue
                _check_nodes(source, g, at_base[1][1], moved[1][1])
                moves = moves or moved[1][0] != at_base[1][0]
                banks_at_ends.update(_segments(moved[1][0]))
        if not moves:
            continue
        corner_values[g] = list(ends[g])
        for value in _inner(dist):
            for base in bases:
                moved = visit({**base, g: value})
                if moved is not None and _segments(moved[1][0]) - banks_at_ends:
                    corner_values[g].append(value)
                    break
    fixed = {g: v[0] for g, v in ends.items()}
    specs: dict[str, NetSpec] = {}
    nodes: dict[str, tuple[str, str]] = {}
    for values in _corners(corner_values, seed):
        found = visit({**fixed, **values})
        if found is None:
            continue
        spec, (_, kinds) = found
        _check_nodes(source, None, nodes, kinds)
        nodes.update(kinds)
        specs.setdefault(spec.hash, spec)
    return list(specs.values())


def _segments(sizes: Mapping[tuple[str, int], Any]) -> set[tuple[str, int, str]]:
    """Every (bank, axis, segment) a candidate's sizes name, and each bank (as axis -1)."""
    out = {(bank, axis, "") for bank, axis in sizes if axis < 0}
    out.update((bank, axis, seg) for (bank, axis), layout in sizes.items() if axis >= 0 for seg, _ in layout)
    return out


def _ends(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [end_value(dist, 0), end_value(dist, 1)]


def _inner(dist: BaseDistribution) -> list[int]:
    """An integer distribution's values between its ends, when it has at most 16."""
    if not isinstance(dist, IntDistribution) or (dist.high - dist.low) // dist.step > 16:
        return []
    return list(range(dist.low + dist.step, dist.high, dist.step))


def _discover(
    space: SearchSpace, input_shape: Sequence[int], num_classes: int, seed: int
) -> dict[str, BaseDistribution]:
    """Every parameter group a draw can reach, with one of its distributions (random draws and both ends)."""
    rng = random.Random(seed)
    found: dict[str, BaseDistribution] = {}
    policies: list[Policy] = [
        lambda name, dist: end_value(dist, 0),
        lambda name, dist: end_value(dist, 1),
        *[lambda name, dist: random_value(rng, dist)] * 64,
    ]
    for policy in policies:
        trial = PolicyTrial(policy)
        with contextlib.suppress(InfeasibleArchitecture):
            space.sample(trial, input_shape, num_classes)  # type: ignore[arg-type]
        for name, dist in trial.distributions.items():
            found.setdefault(group_of(name), dist)
    return found


def _corners(values: Mapping[str, Sequence[Any]], seed: int) -> Iterator[dict[str, Any]]:
    names = list(values)
    total = math.prod(len(values[g]) for g in names)
    if total <= MAX_CORNERS:
        for combo in itertools.product(*(values[g] for g in names)):
            yield dict(zip(names, combo, strict=True))
        return
    rng = random.Random(seed)
    yield {g: values[g][0] for g in names}
    yield {g: values[g][-1] for g in names}
    for _ in range(MAX_CORNERS - 2):
        yield {g: values[g][rng.randrange(len(values[g]))] for g in names}


def _check_nodes(
    source: str,
    group: str | None,
    before: Mapping[str, tuple[str, str]],
    after: Mapping[str, tuple[str, str]],
) -> None:
    for name, (op, act) in after.items():
        if name not in before or before[name] == (op, act):
            continue
        was_op, was_act = before[name]
        what = f"op ({was_op}, {op})" if was_op != op else f"activation ({was_act}, {act})"
        by = f"parameter {group!r} changes" if group else "the parameters change"
        raise ConfigError(
            f"{source} cannot be searched with sweep.fidelity.kind=supernet: {by} node {name!r}'s "
            f"{what}, and one set of weights cannot serve both; fix it or use sweep.fidelity.kind=epochs."
        )


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
