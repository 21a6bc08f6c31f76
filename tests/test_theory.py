"""Bone Soups' Theorem 1 reproduced on its closed-form toy, through mage's merge path."""

from __future__ import annotations

import torch

from mage.theory import scalarised_rewards, theorem1_interval


def test_bone_soup_beats_rewarded_soup_inside_the_theorem_interval():
    gen = torch.Generator().manual_seed(0)
    for beta in (0.6, 0.7, 0.8):
        lo, hi = theorem1_interval(beta)
        assert hi - lo >= 0.707 - 1e-3  # "at least ~71 % of the preference range"
        for _ in range(20):
            c = (0.2 + 3 * torch.rand(2, generator=gen)).tolist()
            if abs(c[0] - c[1]) < 0.05:
                continue
            optima = torch.randn(2, 4, generator=gen)
            for k in range(1, 20):
                mu1 = lo + (hi - lo) * k / 20
                r = scalarised_rewards(beta, c, optima, mu1)
                assert r["bone"] > r["rs"], (beta, c, mu1, r)


def test_rewarded_soup_is_optimal_at_the_corners():
    optima = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for mu1 in (0.0, 1.0):  # one objective only: its expert is the optimum, Bone Soup cannot beat it
        r = scalarised_rewards(0.7, [1.0, 3.0], optima, mu1)
        assert r["rs"] == 0.0 and r["bone"] < 0.0


def test_equal_curvatures_make_both_soups_equal():
    optima = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = scalarised_rewards(0.7, [2.0, 2.0], optima, 0.3)
    assert abs(r["rs"] - r["bone"]) < 1e-12
