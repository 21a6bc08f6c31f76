"""Guided decoding for MAGE stage 2 and its baselines: guides for :func:`mage.decoding.decode_batch`.

Decoding rules (SPEC §3, [ours] where the MAGE paper is silent), at step t with stage-1 policy p:
- implicit (GenARM-style):  q(v) ∝ p(v) · Π_m π_m(v)^{w·a_m} over the whole vocabulary — one extra
  forward per guidance model. A merged guide has one member (a = 1); the prediction ensemble has n
  members with a_m = μ_m.
- explicit (ARGS / CD-style): the top-k tokens of p are scored log p(v) + w · Σ_m a_m V_m(x, y_<t ∘ v);
  the k candidates of every row go through each value model in ONE forward, as k query tokens that
  attend to the cached prefix and to themselves only (a tree mask); the chosen candidate's keys and
  values are then kept in the cache, so no second forward is needed.
- strength w = 0 returns the policy's scores untouched: plain decoding, token for token.
MOD (Shi et al. 2024, arXiv 2406.18853) is a policy, not a guide: :class:`ProductOfExperts` scores
Σ_i μ_i log π_i(v) over the n experts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Sequence

import torch

from .decoding import DecodeState


def _check_strength(strength: float) -> float:
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength >= 0):
        raise ValueError(f"guidance strength {strength!r} must be a finite number >= 0; fix: use e.g. 0, 0.5, 1, 2")
    return float(strength)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


@dataclass
class Member:
    """One guidance model and its mixing weight a_m (1 for a merged guide, μ_m in an ensemble)."""

    model: torch.nn.Module
    weight: float = 1.0


class ImplicitGuide:
    """q(v) ∝ p(v) · Π_m π_m(v)^{w a_m}: each member is a causal LM whose log-probs are token rewards."""

    def __init__(self, members: Sequence[Member], strength: float):
        self.members, self.strength = list(members), _check_strength(strength)
        self._caches: list = []
        self._logits: list[torch.Tensor] = []

    @torch.no_grad()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        outs = [
            m.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=_positions(attention_mask),
                use_cache=True,
                logits_to_keep=1,
            )
            for m in self.members
        ]
        self._caches = [o.past_key_values for o in outs]
        self._logits = [o.logits[:, -1, :].float() for o in outs]

    def adjust(self, logprobs: torch.Tensor, state: DecodeState) -> torch.Tensor:
        if self.strength == 0.0:
            return logprobs
        reward = sum(m.weight * torch.log_softmax(l, dim=-1) for m, l in zip(self.members, self._logits))  # (B, V)
        return torch.log_softmax(logprobs + self.strength * reward, dim=-1)

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> None:
        positions = (attention_mask.sum(-1, keepdim=True) - 1).clamp(min=0)
        for i, m in enumerate(self.members):
            out = m.model(
                input_ids=tokens[:, None],
                attention_mask=attention_mask,
                position_ids=positions,
                past_key_values=self._caches[i],
                use_cache=True,
                logits_to_keep=1,
            )
            self._caches[i], self._logits[i] = out.past_key_values, out.logits[:, -1, :].float()


def tree_mask(prefix_mask: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, T) prefix mask → (B, 1, k, T + k) additive mask (0 = attend, dtype min = blocked):
    candidate j sees the prefix and itself only. Additive, so eager and SDPA attention read it alike."""
    batch, width = prefix_mask.shape
    prefix = prefix_mask.bool()[:, None, None, :].expand(batch, 1, k, width)
    own = torch.eye(k, dtype=torch.bool, device=prefix_mask.device)[None, None].expand(batch, 1, k, k)
    allowed = torch.cat([prefix, own], dim=-1)
    return torch.zeros(allowed.shape, dtype=dtype, device=prefix_mask.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def keep_candidates(cache, prefix_len: int, chosen: torch.Tensor) -> None:
    """Drop the k candidate positions appended after ``prefix_len`` except row b's ``chosen[b]``."""
    rows = torch.arange(chosen.shape[0], device=chosen.device)
    for layer in cache.layers:
        if type(layer).__name__ != "DynamicLayer":
            raise NotImplementedError(
                f"explicit guidance needs full-attention dynamic KV caches, got {type(layer).__name__}"
            )
        for name in ("keys", "values"):
            full = getattr(layer, name)  # (B, H, T + k, D)
            kept = full[rows, :, prefix_len + chosen, :]  # (B, H, D)
            setattr(layer, name, torch.cat([full[:, :, :prefix_len, :], kept[:, :, None, :]], dim=2))


class ExplicitGuide:
    """Top-k candidates of p re-scored by log p(v) + w · Σ_m a_m V_m(x, y_<t ∘ v) (explicit value models)."""

    def __init__(self, members: Sequence[Member], strength: float, top_k: int = 10):
        if top_k < 1:
            raise ValueError(f"top_k={top_k} must be >= 1")
        self.members, self.strength, self.top_k = list(members), _check_strength(strength), top_k
        self._caches: list = []
        self._candidates: torch.Tensor | None = None  # (B, k) token ids scored at this step

    @torch.no_grad()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self._caches = [
            m.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=_positions(attention_mask),
                use_cache=True,
            )[1]
            for m in self.members
        ]
        self._candidates = None

    @torch.no_grad()
    def adjust(self, logprobs: torch.Tensor, state: DecodeState) -> torch.Tensor:
        if self.strength == 0.0:
            self._candidates = None
            return logprobs
        # 1. candidates: the top-k tokens of the policy
        top = torch.topk(logprobs, min(self.top_k, logprobs.shape[-1]), dim=-1)
        k = top.indices.shape[1]
        # 2. one forward per value model scores all k candidates of every row (tree mask)
        mask4 = tree_mask(state.attention_mask, k, next(self.members[0].model.parameters()).dtype)
        positions = state.attention_mask.sum(-1, keepdim=True).expand(-1, k)
        values = torch.zeros_like(top.values)
        for m, cache in zip(self.members, self._caches):
            v, _ = m.model(
                input_ids=top.indices,
                attention_mask=mask4,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
            values += m.weight * v.float()  # (B, k)
        self._candidates = top.indices
        # 3. candidates keep log p + w·V; every other token is ruled out
        scores = torch.full_like(logprobs, -math.inf)
        return scores.scatter(1, top.indices, top.values + self.strength * values)

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> None:
        if self._candidates is None:  # strength 0: plain one-token forward
            positions = (attention_mask.sum(-1, keepdim=True) - 1).clamp(min=0)
            self._caches = [
                m.model(
                    input_ids=tokens[:, None],
                    attention_mask=attention_mask,
                    position_ids=positions,
                    past_key_values=c,
                    use_cache=True,
                )[1]
                for m, c in zip(self.members, self._caches)
            ]
            return
        hit = self._candidates == tokens[:, None]  # finished rows (pad) match nothing: keep candidate 0, masked anyway
        chosen = torch.where(hit.any(-1), hit.float().argmax(-1), torch.zeros_like(tokens))
        prefix_len = attention_mask.shape[1] - 1
        for cache in self._caches:
            keep_candidates(cache, prefix_len, chosen)
        self._candidates = None


class ProductOfExperts(torch.nn.Module):
    """MOD: a policy whose next-token logits are Σ_i μ_i log π_i over n expert models (own KV caches)."""

    def __init__(self, experts: Sequence[torch.nn.Module], weights: Sequence[float]):
        super().__init__()
        if len(experts) != len(weights):
            raise ValueError(f"{len(experts)} experts but {len(weights)} weights")
        active = [(e, float(w)) for e, w in zip(experts, weights) if w != 0]  # weight 0: never needed, never run
        if not active:
            raise ValueError("MOD needs at least one expert with a non-zero weight")
        self.experts, self.weights = torch.nn.ModuleList([e for e, _ in active]), [w for _, w in active]

    def forward(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        use_cache=True,
        logits_to_keep: int = 0,
        **kwargs,
    ):
        caches = past_key_values or [None] * len(self.experts)
        outs = [
            e(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=c,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
            )
            for e, c in zip(self.experts, caches)
        ]
        logits = sum(w * torch.log_softmax(o.logits.float(), dim=-1) for w, o in zip(self.weights, outs))
        return SimpleNamespace(logits=logits, past_key_values=[o.past_key_values for o in outs])
