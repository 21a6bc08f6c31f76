"""Policy and merged implicit guidance in ONE forward through the shared base weights [ours].

Decoding a small batch on a CPU is bound by reading the weights. The stage-1 policy and the merged
implicit value model are the same base model with different low-rank deltas on the same modules:

    policy:  W_0 + Δ_π            (Δ_π = Σ_j λ_j B_j A_j, already folded into the weights by the Soup)
    guide:   W_0 + Δ_φ(μ)         (Δ_φ(μ) = Σ_i μ_i B'_i A'_i, the merged value adapters)

so the guide's rows can run through the policy's folded weights plus a per-row correction
Δ_φ(μ) − Δ_π, itself low rank (its factors are the two stacks side by side). :class:`FusedImplicit`
duplicates the batch (rows ``[0, B)`` policy, ``[B, 2B)`` guide), adds the correction to the guide
rows of each target linear through a forward hook, and hands the decoding loop the policy's logits
while keeping the guide's for :meth:`FusedImplicit.adjust`. The base weights are read once per step
for both models, and no second copy of the model is held in memory. The decoding rule is exactly
:class:`mage.guidance.ImplicitGuide`'s (tested to agree with it).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .adapters import LoraAdapter
from .guidance import ImplicitGuide, Member
from .merging import Soup, concat_adapter, delta_dtype


def row_corrections(
    policy: Soup | None, values: Sequence[LoraAdapter], weights: Sequence[float]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per target module, low-rank factors (A, B) of Δ_φ(μ) − Δ_π: what turns the policy's folded
    weights into the merged value model's — one concatenated adapter (:func:`mage.merging.concat_adapter`)
    over the value adapters at μ and the policy's adapters at −λ, those at weight 0 left out."""
    if policy is not None and policy.coefficients is None:
        raise ValueError(
            "the policy carries one preference per batch row (Soup.apply_rows); the fused guide needs one preference: "
            "apply() it first"
        )
    pairs = list(zip(values, weights)) + (
        [(a, -c) for a, c in zip(policy.adapters, policy.coefficients)] if policy is not None else []
    )
    active = [(a, c) for a, c in pairs if c != 0]
    if not active:
        return {}
    return concat_adapter([a for a, _ in active], [c for _, c in active], name="guide-minus-policy").factors


class FusedImplicit(torch.nn.Module, ImplicitGuide):
    """A policy model and its merged implicit guide as one model (for the loop) and one guide (for ``adjust``).

    Pass it to :func:`mage.decoding.generate` as both ``model`` and ``guide``.
    """

    def __init__(
        self, model: torch.nn.Module, corrections: dict[str, tuple[torch.Tensor, torch.Tensor]], strength: float
    ):
        torch.nn.Module.__init__(self)
        ImplicitGuide.__init__(self, [Member(model, 1.0)], strength)
        self.model = model
        modules = dict(model.named_modules())
        missing = sorted(set(corrections) - set(modules))
        if missing:
            raise ValueError(
                f"guidance adapters target modules {missing[:3]} that the policy model lacks; fix: train value models "
                "on the policy's base model"
            )
        weight = next(model.parameters())
        exact = delta_dtype(weight.dtype)  # a 16-bit model's correction runs in float32
        self._targets = [
            (modules[name], a.to(device=weight.device, dtype=exact), b.to(device=weight.device, dtype=exact))
            for name, (a, b) in corrections.items()
        ]  # A (r, in), B (out, r)

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
        batch = input_ids.shape[0]

        def correct(module, args, output, a=None, b=None):
            # the guide's rows: W x + (Δ_φ − Δ_π) x, with Δ_φ − Δ_π = B A (A and B used as stored: b.t()
            # is a view, not a copy)
            guide_out = output[batch:].view(
                -1, output.shape[-1]
            )  # rows [B, 2B) are contiguous: a view, updated in place
            x = args[0][batch:].reshape(-1, a.shape[1])
            if x.dtype == a.dtype:
                guide_out.addmm_(torch.nn.functional.linear(x, a), b.t())
            else:
                guide_out.add_(
                    torch.nn.functional.linear(torch.nn.functional.linear(x.to(a.dtype), a), b).to(guide_out.dtype)
                )
            return output

        def twice(t):
            return None if t is None else torch.cat([t, t], dim=0)

        handles = [
            m.register_forward_hook(lambda mod, args, out, a=a, b=b: correct(mod, args, out, a, b))
            for m, a, b in self._targets
        ]
        try:
            out = self.model(
                input_ids=twice(input_ids),
                attention_mask=twice(attention_mask),
                position_ids=twice(position_ids),
                past_key_values=past_key_values,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
            )
        finally:
            for h in handles:
                h.remove()
        self._logits = [out.logits[batch:, -1, :].float()]
        out.logits = out.logits[:batch]
        return out

    # the loop already ran the guide's rows inside forward(): nothing left to do here
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        pass

    def advance(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> None:
        pass
