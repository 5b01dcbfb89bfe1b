"""How the calibration times things: one clock, and every case timed in interleaved rounds.

A virtual machine's speed drifts within seconds. Measured on the 2-core build VM: the same
convolution took 1.0 to 1.7 times its fastest time, on the thread's CPU clock too (a
neighbour on the sibling hyperthread, frequency changes), in phases of a second to a few
seconds. A median taken in one go describes the phase it fell in, and a table of kernels
measured one after another mixes phases: two calibrations minutes apart put the same
single-op overheads 1.8x apart. So :func:`time_groups` first builds every case of a
calibration, then times all of them in rounds that each span the whole calibration, every
round in a fresh random order, and keeps each case's least round median: its time in the
machine's fast phase, reproducible to a few percent. ``benchmarks/cost_fidelity.py`` measures
networks the same way, so both describe the same machine.
"""

from __future__ import annotations

import contextvars
import math
import random
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import NamedTuple

__all__ = [
    "ROUNDS",
    "Group",
    "fastest_medians",
    "fastest_times",
    "median_seconds",
    "repeats_for",
    "time_groups",
    "timing_clock",
]

#: Interleaved rounds of a full calibration (a quick one takes 2). Calibrating three times in
#: fresh processes minutes apart on the build VM (2026-12-02), 4 rounds fitted torch's cost per
#: kernel and image at 0.78-1.05 us and its overhead factor at 1.94-2.22; 12 rounds at
#: 0.66-0.73 us and 1.99-2.07, but took 31-33 s. 8 fit the 30 s a first run may spend.
ROUNDS = 8

#: The clock every measurement reads (:func:`timing_clock` sets it for a block).
_NOW: contextvars.ContextVar[Callable[[], float]] = contextvars.ContextVar("now", default=time.perf_counter)


@contextmanager
def timing_clock(clock: str) -> Iterator[None]:
    """Time every measurement in the block with ``clock``.

    Args:
        clock: ``wall`` (elapsed time) or ``cpu`` (the calling thread's CPU time).
    """
    token = _NOW.set(time.thread_time if clock == "cpu" else time.perf_counter)
    try:
        yield
    finally:
        _NOW.reset(token)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    now = _NOW.get()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = now()
        fn()
        times.append(now() - start)
    return statistics.median(times)


def repeats_for(expected_s: float, budget_s: float, low: int = 3, high: int = 50) -> int:
    """How many repeats fit a per-measurement time budget (at least ``low``)."""
    return int(min(high, max(low, budget_s / max(expected_s, 1e-7))))


def fastest_medians(
    fns: Sequence[Callable[[], object]],
    repeats: Sequence[int],
    rounds: int = ROUNDS,
    seed: int = 0,
    warmups: Sequence[int] | None = None,
) -> list[float]:
    """Seconds of each of ``fns``: the least, over ``rounds``, of its median over ``repeats[i]`` calls.

    Each round calls every function in a fresh random order, ``warmups[i]`` times untimed (its
    caches warm after the previous one's; None: once each) and then ``repeats[i]`` times timed,
    so the rounds of one function fall in different phases of the machine's speed.
    """
    best = [math.inf] * len(fns)
    order = list(range(len(fns)))
    rng = random.Random(seed)
    warm = [1] * len(fns) if warmups is None else list(warmups)
    for _ in range(rounds):
        rng.shuffle(order)
        for i in order:
            best[i] = min(best[i], median_seconds(fns[i], repeats[i], warmup=warm[i]))
    return best


class Group(NamedTuple):
    """Cases timed with one budget: ``budget_s`` seconds shared by all their timed calls.

    Each case takes ``low`` to ``high`` repeats a round, as its share of the budget allows,
    after ``warmup`` untimed calls.
    """

    fns: Sequence[Callable[[], object]]
    budget_s: float
    low: int = 3
    high: int = 30
    warmup: int = 1


def time_groups(groups: Mapping[str, Group], rounds: int = ROUNDS, seed: int = 0) -> dict[str, list[float]]:
    """Every group's cases timed together (:func:`fastest_medians`), seconds per case by group.

    One untimed and one timed call of each case first give its expected time, hence its repeats.
    """
    fns: list[Callable[[], object]] = []
    repeats: list[int] = []
    warmups: list[int] = []
    for group in groups.values():
        share = group.budget_s / max(len(group.fns), 1) / rounds
        for fn in group.fns:
            fns.append(fn)
            repeats.append(repeats_for(median_seconds(fn, 1, 1), share, group.low, group.high))
            warmups.append(group.warmup)
    seconds = iter(fastest_medians(fns, repeats, rounds, seed, warmups))
    return {name: [next(seconds) for _ in group.fns] for name, group in groups.items()}


def fastest_times(
    fns: Sequence[Callable[[], object]], budget_s: float, rounds: int = ROUNDS, low: int = 3, high: int = 30
) -> list[float]:
    """:func:`time_groups` of one group: ``fns`` sharing ``budget_s`` seconds."""
    return time_groups({"": Group(fns, budget_s, low, high)}, rounds)[""]
