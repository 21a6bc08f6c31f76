"""A closed-form toy of Bone Soups' Theorem 1, run through mage's own merge path.

Two objectives with quadratic rewards r_i(θ) = −(c_i/2)‖θ − θ_i*‖² (identity-proportional Hessians,
distinct curvatures c_1 ≠ c_2). The expert for r_i is θ_i*; the backbone for h_j = Σ_i B_ji r_i is
θ_hj = Σ_i B_ji c_i θ_i* / Σ_i B_ji c_i. Each model is represented as a rank-1 "LoRA" delta on a
1×d weight, merged by :func:`mage.merging.coefficients` and :func:`mage.merging.merged_delta`.
The theorem: Bone Soup's scalarised reward Σ μ_i r_i beats Rewarded Soup's for every μ_1 in
((1 − s)/2, (1 + s)/2), s = √(2β² − 2β + 1).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .adapters import LoraAdapter
from .merging import coefficients, merged_delta


def theorem1_interval(beta: float) -> tuple[float, float]:
    s = math.sqrt(2 * beta**2 - 2 * beta + 1)
    return (1 - s) / 2, (1 + s) / 2


def _as_adapter(theta: torch.Tensor, name: str) -> LoraAdapter:
    """θ (d,) as a rank-1 delta on a (1, d) weight: B = [[1]], A = θ."""
    return LoraAdapter(name, 1.0, {"w": (theta[None, :].double(), torch.ones(1, 1, dtype=torch.float64))})


def scalarised_rewards(beta: float, curvatures: Sequence[float], optima: torch.Tensor, mu1: float) -> dict[str, float]:
    """Σ_i μ_i r_i(θ) at the Rewarded-Soup and the Bone-Soup merge for μ = (μ_1, 1 − μ_1)."""
    c = torch.tensor(curvatures, dtype=torch.float64)  # (2,)
    optima = optima.double()  # (2, d)
    b = torch.tensor([[beta, 1 - beta], [1 - beta, beta]], dtype=torch.float64)
    backbones = [(b[j, :, None] * c[:, None] * optima).sum(0) / (b[j] * c).sum() for j in range(2)]
    weights = [mu1, 1 - mu1]

    def reward(theta: torch.Tensor) -> float:
        return float(sum(weights[i] * -c[i] / 2 * ((theta - optima[i]) ** 2).sum() for i in range(2)))

    experts = [_as_adapter(optima[i], f"expert{i}") for i in range(2)]
    bones = [_as_adapter(backbones[j], f"backbone{j}") for j in range(2)]
    rs = merged_delta(experts, coefficients("rs", weights), "w")[0]
    bone = merged_delta(bones, coefficients("bone", weights, beta=beta), "w")[0]
    return {"rs": reward(rs), "bone": reward(bone)}
