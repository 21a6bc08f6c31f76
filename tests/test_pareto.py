"""Fronts, hypervolume and controllability on hand-made point sets with known answers."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from mage.pareto import controllability, dominates, hypervolume, pareto_front, reference_point, spearman


def test_front_drops_dominated_points_and_keeps_ties_once():
    pts = [(1, 0), (0, 1), (0.5, 0.5), (0.4, 0.4), (1, 0), (0.5, 0.2)]
    assert pareto_front(pts) == [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)]
    assert dominates((1, 1), (1, 0)) and not dominates((1, 0), (1, 0))
    assert pareto_front([(2, 2), (2, 2)]) == [(2.0, 2.0)]


def test_hypervolume_2d_staircase():
    assert hypervolume([(1, 0), (0, 1), (0.5, 0.5)], (0, 0)) == pytest.approx(0.25)
    assert hypervolume([(3, 1), (1, 3), (2, 2)], (0, 0)) == pytest.approx(6.0)  # columns of height 3, 2, 1
    assert hypervolume([(1, 1), (0.5, 0.5)], (0, 0)) == pytest.approx(1.0)  # dominated point adds nothing
    assert hypervolume([(1, 1), (1, 1)], (0, 0)) == pytest.approx(1.0)  # duplicates count once
    assert hypervolume([(-1, 5)], (0, 0)) == 0.0  # not above the reference point


def test_hypervolume_3d_matches_inclusion_exclusion_and_monte_carlo():
    assert hypervolume([(1, 1, 1)], (0, 0, 0)) == pytest.approx(1.0)
    boxes = [(2, 1, 1), (1, 2, 1), (1, 1, 2)]  # three unit-overlapping boxes: 2+2+2 − 1−1−1 + 1 = 4
    assert hypervolume(boxes, (0, 0, 0)) == pytest.approx(4.0)
    rng = random.Random(0)
    pts = [tuple(rng.random() for _ in range(3)) for _ in range(8)]
    samples = [tuple(rng.random() for _ in range(3)) for _ in range(40000)]
    mc = sum(any(all(s[i] <= p[i] for i in range(3)) for p in pts) for s in samples) / len(samples)
    assert hypervolume(pts, (0, 0, 0)) == pytest.approx(mc, abs=0.01)


def test_hypervolume_is_order_invariant_and_monotone():
    rng = random.Random(1)
    pts = [tuple(rng.random() for _ in range(3)) for _ in range(6)]
    hv = hypervolume(pts, (0, 0, 0))
    for perm in itertools.islice(itertools.permutations(pts), 20):
        assert hypervolume(perm, (0, 0, 0)) == pytest.approx(hv)
    assert hypervolume(pts + [(0.99, 0.99, 0.99)], (0, 0, 0)) >= hv


def test_reference_point_is_min_minus_one_percent_of_range():
    assert reference_point([(0, 10), (1, 20)]) == pytest.approx([-0.01, 9.9])
    assert reference_point([(5, 5), (5, 5)]) == pytest.approx([4.99, 4.99])


def test_controllability_of_perfect_reversed_and_flat_control():
    grid = [(i / 10, 1 - i / 10) for i in range(11)]
    perfect = controllability(grid, grid)
    assert perfect["score"] == pytest.approx(1.0) and perfect["monotone_fraction"] == 1.0
    reversed_ = controllability(grid, [(1 - a, 1 - b) for a, b in grid])
    assert reversed_["score"] == pytest.approx(-1.0) and reversed_["monotone_fraction"] == 0.0
    flat = controllability(grid, [(0.5, 0.5)] * 11)
    assert math.isnan(flat["score"]) and flat["monotone_fraction"] == 0.0


def test_spearman_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 20, 40]) == pytest.approx(0.9486833, abs=1e-6)


def test_monotone_fraction_does_not_depend_on_the_order_of_a_grid_with_repeated_weights():
    import random

    from mage.grid import preference_grid

    grid = preference_grid(3)  # μ_i repeats: 0, 0, 0.1, 0.1, 0.2, 0.2, 0.2, ...
    rng = random.Random(0)
    achieved = [[w + rng.gauss(0, 0.08) for w in mu] for mu in grid]
    first = controllability(grid, achieved)["monotone_fraction"]
    pairs = list(zip(grid, achieved))
    for _ in range(50):
        rng.shuffle(pairs)
        assert controllability([p[0] for p in pairs], [p[1] for p in pairs])["monotone_fraction"] == first
    # each objective has 8 distinct μ_i levels (0, 0.1, 0.2, 1/3, 0.4, 0.6, 0.8, 1), so 7 steps
    levels = len({w[0] for w in grid})
    assert controllability(grid, grid)["monotone_fraction"] == 1.0 and levels == 8


def test_weights_equal_up_to_rounding_are_one_preference():
    exact = [(0.2, 0.8), (0.2, 0.8), (0.6, 0.4)]
    normalised = [(0.19999999999999998, 0.8), (0.2, 0.8000000000000002), (0.6, 0.4)]  # as μ / Σμ leaves them
    achieved = [(0.1, 0.5), (0.3, 0.4), (0.2, 0.3)]
    assert controllability(normalised, achieved) == controllability(exact, achieved)
    assert (
        controllability(normalised, achieved)["monotone_fraction"] == 0.5
    )  # one step per objective: up for x, down for y
