"""Interleaved timing rounds: each case's least round median, and budgets split by group."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from archsearch.hardware import timing
from archsearch.hardware.timing import Group, fastest_medians, time_groups


class SlowPhases:
    """A fake clock on which every call takes its case's cost times the machine's current speed.

    The speed follows ``phases`` (one entry per call of any case, repeating): a machine that
    runs at full speed only now and then.
    """

    def __init__(self, phases: list[float]) -> None:
        self.now = 0.0
        self.calls = 0
        self.phases = phases

    def call(self, cost: float) -> None:
        self.now += cost * self.phases[self.calls % len(self.phases)]
        self.calls += 1


@contextmanager
def fake_clock(clock: SlowPhases) -> Iterator[None]:
    token = timing._NOW.set(lambda: clock.now)
    try:
        yield
    finally:
        timing._NOW.reset(token)


def test_each_case_gets_its_least_round_median_even_when_most_rounds_run_slow() -> None:
    # Eleven calls in twelve run 1.6x slow, in blocks: one round's median of each case is fast.
    clock = SlowPhases([1.6] * 11 + [1.0] * 12)
    costs = [1.0, 2.0, 3.0]
    fns = [lambda c=c: clock.call(c) for c in costs]
    with fake_clock(clock):
        seconds = fastest_medians(fns, [3, 3, 3], rounds=6, seed=1)
    assert seconds == pytest.approx(costs)
    with fake_clock(clock):  # a single round is at the mercy of its phase
        once = fastest_medians(fns, [3, 3, 3], rounds=1)
        assert max(s / c for s, c in zip(once, costs, strict=True)) > 1.5


def test_time_groups_returns_each_groups_cases_in_order_with_repeats_from_its_budget() -> None:
    clock = SlowPhases([1.0])
    calls = {"a": 0, "b": 0}

    def case(name: str, cost: float) -> object:
        calls[name] += 1
        clock.call(cost)
        return None

    groups = {
        "cheap": Group([lambda: case("a", 0.001)], budget_s=0.02, low=1, high=100),
        "dear": Group([lambda: case("b", 0.01), lambda: case("b", 0.02)], budget_s=0.02, low=2, high=100),
    }
    with fake_clock(clock):
        seconds = time_groups(groups, rounds=2)
    assert seconds == {"cheap": [pytest.approx(0.001)], "dear": [pytest.approx(0.01), pytest.approx(0.02)]}
    # cheap: 2 probe calls, then 2 rounds of (1 untimed + 0.02 / 2 / 0.001 = 10 timed) calls
    assert calls["a"] == 2 + 2 * (1 + 10)
    # dear: each case's share (0.005 s a round) is below its cost, so it takes ``low`` repeats
    assert calls["b"] == 2 * 2 + 2 * 2 * (1 + 2)


def test_a_group_can_warm_each_case_up_more_than_once_a_round() -> None:
    clock = SlowPhases([1.0])
    calls = {"once": 0, "twice": 0}

    def case(name: str) -> object:
        calls[name] += 1
        clock.call(1.0)
        return None

    groups = {
        "once": Group([lambda: case("once")], 3.0, low=3, high=3),
        "twice": Group([lambda: case("twice")], 3.0, low=3, high=3, warmup=2),
    }
    with fake_clock(clock):
        time_groups(groups, rounds=2)
    # Two calls to guess each case's time, then per round its warm-ups and three timed calls.
    assert calls == {"once": 2 + 2 * (1 + 3), "twice": 2 + 2 * (2 + 3)}
