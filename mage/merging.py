"""Preference → merging coefficients, and exact delta-space LoRA merging.

Methods (SPEC §1–2):
- ``rs``   Rewarded Soups (Ramé et al. 2023, arXiv 2306.04488): λ = μ over the n experts.
- ``bone`` Bone Soups (Xie et al. 2025, arXiv 2502.10762): λ = B⁻¹ μ over the n backbones, where
           backbone j was trained on h_j = Σ_i B_ji r_i. Exact — λ may be negative (extrapolation).
           Optional per-objective extrapolation factors k (paper code): λ = B⁻¹ (μ ⊙ k).
- ``aba``  the paper's ablation: λ = μ over the backbones (no inverse).

Merging is in delta space: θ(λ) = θ_0 + Σ_j λ_j ΔW_j with ΔW_j = s_j B_j A_j. :class:`Soup`
folds that into the base weights (decode cost = the base model's); :func:`concat_adapter` builds the
same update as one rank-Σr adapter. Factor-space averaging (averaging A and B separately, as
peft's ``combination_type="linear"`` does) adds cross terms B_i A_j and is *not* this.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .adapters import CheckpointError, LoraAdapter

DEFAULT_BETA = 0.7  # the paper's choice, from {0.6, 0.7, 0.8} by hypervolume


def normalize_weights(weights: Sequence[float], n: int) -> list[float]:
    """Validate a preference μ and scale it onto the simplex (sum 1). Non-negative, finite, not all zero."""
    values = list(weights)
    if len(values) != n:
        raise ValueError(
            f"weights {values} have {len(values)} entries but the task has {n} objectives; fix: give one weight per "
            "objective"
        )
    for w in values:
        if not isinstance(w, numbers.Real) or isinstance(w, bool) or not math.isfinite(w):
            raise ValueError(f"weight {w!r} in {values} is not a finite number; fix: use numbers like 0.2,0.8")
        if w < 0:
            raise ValueError(f"weight {w} in {values} is negative; fix: weights are preferences, use values >= 0")
    largest = max((float(w) for w in values), default=0.0)
    if largest <= 0:
        raise ValueError(f"weights {values} are all zero; fix: give at least one objective a positive weight")
    scaled = [float(w) / largest for w in values]  # first into [0, 1]: a sum of huge weights would overflow
    total = sum(scaled)
    return [w / total for w in scaled]


def bone_matrix(n: int, beta: float = DEFAULT_BETA) -> torch.Tensor:
    """B = βI + (1−β)/(n−1)(J−I): symmetric circulant, rows sum to 1. (n, n) float64."""
    if n < 2:
        raise ValueError(f"Bone Soup needs n >= 2 objectives, got {n}")
    if not 0.5 < beta < 1.0:
        raise ValueError(f"beta={beta} must lie in (0.5, 1) (the paper uses 0.7); fix: pick e.g. 0.6, 0.7 or 0.8")
    off = (1.0 - beta) / (n - 1)
    return torch.full((n, n), off, dtype=torch.float64) + (beta - off) * torch.eye(n, dtype=torch.float64)


def training_weights(kind: str, n: int, beta: float = DEFAULT_BETA) -> list[list[float]]:
    """The reward-weight vectors to train: rows of I for ``experts``, rows of B for ``backbones``."""
    if kind == "experts":
        return torch.eye(n, dtype=torch.float64).tolist()
    if kind == "backbones":
        return bone_matrix(n, beta).tolist()
    raise ValueError(f"unknown kind {kind!r}; fix: use 'experts' or 'backbones'")


@dataclass(frozen=True)
class MergeMethod:
    name: str
    ingredients: str  # "experts" or "backbones": which trained models it merges
    coefficients: Callable[[list[float], float, Sequence[float] | None], list[float]]
    paper: str


def _rs(weights, beta, k):
    return list(weights)


def _bone(weights, beta, k):
    scaled = torch.tensor(weights, dtype=torch.float64) * (
        torch.tensor(k, dtype=torch.float64) if k is not None else 1.0
    )
    return torch.linalg.solve(bone_matrix(len(weights), beta), scaled).tolist()


MERGE_METHODS: dict[str, MergeMethod] = {
    "rs": MergeMethod("rs", "experts", _rs, "https://arxiv.org/abs/2306.04488"),
    "bone": MergeMethod("bone", "backbones", _bone, "https://arxiv.org/abs/2502.10762"),
    "aba": MergeMethod("aba", "backbones", _rs, "https://arxiv.org/abs/2502.10762 (ablation)"),
}


def get_merge_method(name: str) -> MergeMethod:
    if name not in MERGE_METHODS:
        raise ValueError(f"unknown merge method {name!r}; fix: use one of {sorted(MERGE_METHODS)}")
    return MERGE_METHODS[name]


def coefficients(
    method: str, weights: Sequence[float], *, beta: float = DEFAULT_BETA, extrapolation: Sequence[float] | None = None
) -> list[float]:
    """λ for a preference μ (normalised onto the simplex first)."""
    weights = normalize_weights(weights, len(weights))
    if extrapolation is not None and len(extrapolation) != len(weights):
        raise ValueError(f"extrapolation factors {list(extrapolation)} need one entry per objective ({len(weights)})")
    return get_merge_method(method).coefficients(weights, beta, extrapolation)


# --------------------------------------------------------------------------- delta-space merging


def check_compatible(adapters: Sequence[LoraAdapter]) -> list[str]:
    """The target modules all ``adapters`` share; refuses (naming their folders) adapters that target others."""
    if not adapters:
        raise ValueError("merging needs at least one adapter")
    modules = sorted(adapters[0].factors)
    for adapter in adapters[1:]:
        if sorted(adapter.factors) != modules:
            raise CheckpointError(
                f"adapter {adapter.meta.get('folder', adapter.name)!r} targets other modules than "
                f"{adapters[0].meta.get('folder', adapters[0].name)!r}; "
                f"fix: train all ingredients with the same LoRA target_modules"
            )
    return modules


def merged_delta(adapters: Sequence[LoraAdapter], coefficients: Sequence[float], module: str) -> torch.Tensor:
    """Σ_j λ_j ΔW_j for one module, (out, in) — the reference the fast paths are tested against."""
    return sum(c * a.delta(module) for c, a in zip(coefficients, adapters))


def concat_adapter(adapters: Sequence[LoraAdapter], coefficients: Sequence[float], name: str = "soup") -> LoraAdapter:
    """One rank-Σr adapter equal to Σ_j λ_j ΔW_j: A stacked, B blocks scaled by λ_j s_j; scaling 1."""
    modules = check_compatible(adapters)
    factors = {}
    for m in modules:
        a_cat = torch.cat([a.factors[m][0] for a in adapters], dim=0)  # (Σr, in)
        b_cat = torch.cat([c * a.scaling * a.factors[m][1] for c, a in zip(coefficients, adapters)], dim=1)  # (out, Σr)
        factors[m] = (a_cat, b_cat)
    return LoraAdapter(name, 1.0, factors)


class LowRankLinear(torch.nn.Module):
    """A target linear whose ingredients' deltas stay unfolded: ``y = W₀ x + B diag(s_row) A x``.

    A (Σr, in) and B (out, Σr) are the ingredients' stacked factors (scalings in B); ``s_row`` holds each
    ingredient's coefficient repeated over its rank, one row per batch row (or one row for the whole batch).
    The correction runs in ``a.dtype`` — float32 for a 16-bit model, so a merge is never rounded into the
    16-bit weights — and is added to the base output. The shared product A x is computed once per row.
    """

    def __init__(self, base: torch.nn.Module, a_cat: torch.Tensor, b_cat: torch.Tensor):
        super().__init__()
        self.base, self.a, self.b = base, a_cat, b_cat
        self.a_act = self.b_act = self.scale = None  # None: the base alone (all coefficients zero)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    def set(self, scale: torch.Tensor | None) -> None:
        """Per-row scales (rows, Σr), or None for the base alone; columns zero in every row cost nothing."""
        if scale is None or not bool((scale != 0).any()):
            self.a_act = self.b_act = self.scale = None
            return
        active = (scale != 0).any(dim=0)
        index = None if bool(active.all()) else active.nonzero().squeeze(1).to(self.a.device)
        self.a_act = self.a if index is None else self.a.index_select(0, index)
        b = self.b if index is None else self.b.index_select(1, index)
        scale = (scale if index is None else scale.index_select(1, index.to(scale.device))).to(b)
        if scale.shape[0] == 1:  # one preference for every row: fold the scale into B once
            self.b_act, self.scale = b * scale, None
        else:
            self.b_act, self.scale = b, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.a_act is None:
            return y
        h = torch.nn.functional.linear(x.to(self.a_act.dtype), self.a_act)  # (rows, ..., r)
        if self.scale is not None:
            rows, scale = h.shape[0], self.scale
            if rows != scale.shape[0]:
                if rows % scale.shape[0]:
                    raise ValueError(
                        f"a batch of {rows} rows for {scale.shape[0]} per-row preferences; fix: one batch row per "
                        "preference (or a multiple)"
                    )
                scale = scale.repeat(rows // scale.shape[0], 1)  # e.g. the fused guide's doubled batch
            h = h * scale.view(rows, *([1] * (h.dim() - 2)), -1)
        return y + torch.nn.functional.linear(h, self.b_act).to(y.dtype)


def delta_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision low-rank deltas run in beside weights of ``dtype``: float32 for 16-bit weights (never rounded
    to 8 mantissa bits), the weights' own dtype otherwise."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def _parent(model: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    parent, _, child = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), child


class Soup:
    """A base model whose target weights carry Σ_j λ_j ΔW_j for a coefficient vector, re-set in place.

    Two forms, same model:
    - **folded** (float32 / float64 weights, the default there): :meth:`apply` writes W_0 + Σ λ_j ΔW_j into
      the weights from a kept copy of W_0 — one (out × Σr) @ (Σr × in) product per module, no disk
      reads, and decoding costs exactly the base model's;
    - **unfolded** (16-bit weights, the default there; or ``unfolded=True``): the weights stay W_0 and each
      target linear adds its low-rank correction in float32 (:class:`LowRankLinear`), so a 16-bit model
      never rounds a merge away and keeps no second copy of W_0.
    :meth:`apply_rows` gives every batch row its own coefficients (several preferences in one batch; the
    unfolded form, whatever the dtype).
    """

    def __init__(self, model: torch.nn.Module, adapters: Sequence[LoraAdapter], *, unfolded: bool | None = None):
        self.model, self.adapters = model, list(adapters)
        modules = dict(model.named_modules())
        first = next(model.parameters())
        self.unfolded = first.dtype in (torch.bfloat16, torch.float16) if unfolded is None else bool(unfolded)
        self._names, self._targets = check_compatible(self.adapters), []
        for name in self._names:
            if name not in modules:
                raise ValueError(
                    f"adapter module {name!r} is not in the model; fix: load the adapter onto the base model it was "
                    "trained on"
                )
            weight = modules[name].weight
            exact = delta_dtype(weight.dtype)
            a_cat = torch.cat([a.factors[name][0] for a in self.adapters], dim=0).to(
                device=weight.device, dtype=exact
            )  # (Σr, in)
            b_cat = torch.cat([a.scaling * a.factors[name][1] for a in self.adapters], dim=1).to(
                device=weight.device, dtype=exact
            )  # (out, Σr)
            if tuple(weight.shape) != (b_cat.shape[0], a_cat.shape[1]):
                raise ValueError(
                    f"adapter shapes for {name!r} do not fit the model weight {tuple(weight.shape)}; fix: use the base "
                    "model the adapter was trained on"
                )
            w0 = None if self.unfolded else weight.detach().clone()  # the unfolded form never writes the weights
            self._targets.append((weight, w0, a_cat, b_cat))
        self._ranks = torch.tensor([a.rank for a in self.adapters])
        self._wrapped: list[LowRankLinear] = []
        self._folded = False  # whether the weights currently differ from W_0
        self.coefficients: list[float] | None = [0.0] * len(self.adapters)
        self.rows: list[list[float]] | None = None  # per-row coefficients after apply_rows

    def _scale(self, coefficients: Sequence[float]) -> torch.Tensor:
        if len(coefficients) != len(self.adapters):
            raise ValueError(f"{len(coefficients)} coefficients for {len(self.adapters)} adapters")
        return torch.repeat_interleave(
            torch.tensor([float(c) for c in coefficients], dtype=torch.float64), self._ranks
        )  # (Σr,)

    def _wrap(self) -> list[LowRankLinear]:
        """Swap each target linear for its :class:`LowRankLinear` (once)."""
        if not self._wrapped:
            for name, (_, _, a_cat, b_cat) in zip(self._names, self._targets):
                parent, child = _parent(self.model, name)
                linear = getattr(parent, child)
                wrapper = linear if isinstance(linear, LowRankLinear) else LowRankLinear(linear, a_cat, b_cat)
                setattr(parent, child, wrapper)
                self._wrapped.append(wrapper)
        return self._wrapped

    @torch.no_grad()
    def _unfold(self, scale: torch.Tensor) -> None:
        if self._folded:
            self._fold(torch.zeros_like(scale[0]))  # the weights back to W_0 first
        for wrapper in self._wrap():
            wrapper.set(scale)

    @torch.no_grad()
    def _fold(self, scale: torch.Tensor) -> None:
        for wrapper in self._wrapped:
            wrapper.set(None)
        active = scale != 0  # adapters at λ = 0 (e.g. the experts while Bone Soup merges the backbones) cost nothing
        rows = None if bool(active.all()) else active.nonzero().squeeze(1)
        if rows is not None:
            scale = scale[rows]
        for weight, w0, a_cat, b_cat in self._targets:
            if rows is not None:
                index = rows.to(a_cat.device)
                a_cat, b_cat = a_cat.index_select(0, index), b_cat.index_select(1, index)
            if w0.dtype == a_cat.dtype:
                torch.addmm(w0, b_cat * scale.to(b_cat), a_cat, out=weight.data)
            else:  # 16-bit weights folded on request: the sum in float32, then rounded into the weights
                weight.data.copy_(torch.addmm(w0.to(a_cat.dtype), b_cat * scale.to(b_cat), a_cat))
        self._folded = bool(active.any())

    def apply(self, coefficients: Sequence[float]) -> None:
        """Set the model to W_0 + Σ_j λ_j ΔW_j for every row."""
        scale = self._scale(coefficients)
        if self.unfolded:
            self._unfold(scale[None])
        else:
            self._fold(scale)
        self.coefficients, self.rows = [float(c) for c in coefficients], None

    def apply_rows(self, rows: Sequence[Sequence[float]]) -> None:
        """Batch row b gets W_0 + Σ_j λ_bj ΔW_j (a batch of B rows takes B coefficient vectors, or a multiple
        of them tiled): several preferences decode in one forward, the shared A x computed once."""
        if not rows:
            raise ValueError("apply_rows needs at least one coefficient vector")
        self._unfold(torch.stack([self._scale(r) for r in rows]))
        self.coefficients, self.rows = None, [[float(c) for c in r] for r in rows]

    def restore(self) -> None:
        """Back to the untouched base weights."""
        self.apply([0.0] * len(self.adapters))
