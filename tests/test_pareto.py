"""archsearch.pareto: dominance, non-dominated sorting, crowding and exact hypervolume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from archsearch.pareto import (
    REFERENCE,
    crowding_distances,
    hypervolume,
    loss_hypervolume,
    non_dominated,
    pareto_ranks,
)


def test_non_dominated_keeps_ties_and_honours_directions() -> None:
    points = [[0.9, 10.0], [0.8, 5.0], [0.7, 20.0], [0.9, 10.0], [0.8, 5.0]]
    # (0.7, 20) loses on both counts; the duplicates dominate neither each other nor anyone.
    assert non_dominated(points, ["maximize", "minimize"]) == [0, 1, 3, 4]
    # Flipped directions: now (0.7, 20) is the one point nobody beats.
    assert non_dominated(points, ["minimize", "maximize"]) == [2]
    assert non_dominated([], ["minimize"]) == []


def test_pareto_ranks_peel_fronts_in_turn() -> None:
    points = [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [1.0, 3.0], [3.0, 1.0]]
    assert pareto_ranks(points, ["minimize", "minimize"]) == [0, 1, 2, 1, 1]
    assert pareto_ranks(points, ["maximize", "maximize"]) == [2, 1, 0, 1, 1]


def test_crowding_distance_by_hand() -> None:
    # Sorted on either axis the order is a, b, c, d: ends infinite, inner points add the
    # gap between their neighbours over the range, per objective.
    points = [[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0]]
    d = crowding_distances(points)
    assert d[0] == d[3] == math.inf
    assert d[1] == pytest.approx(3 / 4 + 3 / 4)
    assert d[2] == pytest.approx(3 / 4 + 3 / 4)
    assert crowding_distances([]) == []
    assert crowding_distances([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]) == [0.0, 0.0, 0.0]


def test_two_dimensional_hypervolume_by_hand() -> None:
    # A staircase under (4, 4), column by column: x in [1, 2) has height 1, [2, 3) height 2,
    # [3, 4) height 3.
    front = [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]
    assert loss_hypervolume(front, [4.0, 4.0]) == pytest.approx(6.0)
    assert loss_hypervolume([[0.0, 0.0]], [2.0, 3.0]) == pytest.approx(6.0)


def test_three_dimensional_hypervolume_by_hand() -> None:
    # One box: 1 x 2 x 3.
    assert loss_hypervolume([[0.0, 0.0, 0.0]], [1.0, 2.0, 3.0]) == pytest.approx(6.0)
    # (0, 0, 1) and (1, 0, 0) under (2, 2, 2) dominate 2x2x1 and 1x2x2, overlapping in 1x2x1.
    assert loss_hypervolume([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], [2.0, 2.0, 2.0]) == pytest.approx(6.0)
    # Three boxes of 2x1x1 in a 2-cube, each pair and all three sharing the unit cube at
    # (1, 1, 1): 3 * 2 - 3 * 1 + 1 (inclusion-exclusion).
    corners = [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    assert loss_hypervolume(corners, [2.0, 2.0, 2.0]) == pytest.approx(4.0)


def test_dominated_duplicate_and_outside_points_add_nothing() -> None:
    front = [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]
    noisy = [*front, [2.5, 2.5], [2.0, 2.0], [3.0, 3.9], [5.0, 0.0], [0.5, 4.0]]
    assert loss_hypervolume(noisy, [4.0, 4.0]) == pytest.approx(loss_hypervolume(front, [4.0, 4.0]))
    assert loss_hypervolume([[5.0, 0.0]], [4.0, 4.0]) == 0.0
    assert loss_hypervolume([], [4.0, 4.0]) == 0.0
    with pytest.raises(ValueError, match="objectives"):
        loss_hypervolume([[1.0, 2.0, 3.0]], [4.0, 4.0])


@pytest.mark.parametrize("dims", [2, 3, 4])
def test_agrees_with_optunas_own_hypervolume_on_random_fronts(dims: int) -> None:
    # Optuna's private implementation, as an oracle only: the package never imports it.
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(dims)
    for n in (1, 2, 7, 30):
        for _ in range(10):
            losses = rng.random((n, dims))
            if n > 2:  # also fronts where every point is non-dominated (on a simplex)
                losses[: n // 2] /= losses[: n // 2].sum(axis=1, keepdims=True)
            ref = np.full(dims, 1.1)
            expected = compute_hypervolume(losses, ref)
            assert loss_hypervolume(losses.tolist(), ref.tolist()) == pytest.approx(expected, rel=1e-12)


def test_normalised_hypervolume_flips_maximised_objectives_and_clips() -> None:
    directions = ["maximize", "minimize"]
    # Accuracy 1 (loss 0) at params 0 (loss 0): the whole 1.1 x 1.1 box.
    assert hypervolume([[1.0, 0.0]], directions, [0.0, 0.0], [1.0, 100.0]) == pytest.approx(1.21)
    # Accuracy 0.5, params 50: loss (0.5, 0.5) -> 0.6 x 0.6.
    assert hypervolume([[0.5, 50.0]], directions, [0.0, 0.0], [1.0, 100.0]) == pytest.approx(0.36)
    # Outside [lower, upper] is clipped to the box's edge.
    assert hypervolume([[2.0, -5.0]], directions, [0.0, 0.0], [1.0, 100.0]) == pytest.approx(1.21)
    assert hypervolume([], directions, [0.0, 0.0], [1.0, 100.0]) == 0.0
    # A constant objective (lower == upper) normalises to 0, not a division by zero.
    assert hypervolume([[0.5, 7.0]], directions, [0.0, 7.0], [1.0, 7.0]) == pytest.approx(0.6 * 1.1)


def test_normalised_hypervolume_matches_optuna_on_the_same_losses() -> None:
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(7)
    directions = ["maximize", "minimize", "minimize"]
    lower, upper = [0.0, 1e3, 1e5], [1.0, 1e6, 1e8]
    points = np.column_stack([rng.random(20), rng.uniform(1e3, 1e6, 20), rng.uniform(1e5, 1e8, 20)])
    losses = np.column_stack(
        [1.0 - points[:, 0], (points[:, 1] - 1e3) / (1e6 - 1e3), (points[:, 2] - 1e5) / (1e8 - 1e5)]
    )
    expected = compute_hypervolume(losses, np.full(3, REFERENCE))
    assert hypervolume(points.tolist(), directions, lower, upper) == pytest.approx(expected, rel=1e-12)


def test_non_dominated_matches_the_pairwise_definition_with_ties_infinities_and_nans() -> None:
    import math
    import random

    def brute(points: list[list[float]], directions: list[str]) -> list[int]:
        signs = [1.0 if d == "minimize" else -1.0 for d in directions]
        losses = [[s * v for s, v in zip(signs, p, strict=True)] for p in points]
        return [
            i
            for i, a in enumerate(losses)
            if not any(
                all(y <= x for x, y in zip(a, b, strict=True))
                and any(y < x for x, y in zip(a, b, strict=True))
                for j, b in enumerate(losses)
                if j != i
            )
        ]

    rng = random.Random(0)
    specials = [math.nan, math.inf, -math.inf, 0.5, 1.0]
    for _ in range(200):
        n = rng.choice([0, 1, 2, 7, 40, 300])
        points = [
            [rng.choice(specials) if rng.random() < 0.1 else rng.random(), float(rng.choice([1, 2, 3]))]
            for _ in range(n)
        ]
        assert non_dominated(points, ["maximize", "minimize"]) == brute(points, ["maximize", "minimize"])
