"""Best-of-n reranked by the merged value model: the compute-matched baseline for MAGE's guided decoding.

MAGE (explicit) scores k candidate next tokens with the merged value model at every step, k value-model
calls per token. This baseline spends the same value-model budget differently: it samples n = k whole
replies from the same merged policy (Bone Soup at μ) and keeps the one the same merged value model
V_μ scores highest at its last token. If MAGE's step-wise guidance beats it, the gain comes from *where*
the value model is consulted, not from consulting it more.

Candidate j of row i is sampled with seed :func:`candidate_seed` (seeds[i], j), so a reranked sweep is as
reproducible as a plain one; candidate 0 is exactly what the plain policy would have sampled.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .decoding import Generation, SamplingConfig, encode_prompts, generate


def candidate_seed(seed: int, candidate: int) -> int:
    """The sampling seed of candidate ``candidate`` of a row whose own seed is ``seed`` (candidate 0 = the row)."""
    return (seed + 1_000_003 * candidate) % (2**31)


class BestOfN:
    """A guide that decodes differently: :func:`mage.decoding.generate` hands it the whole batch."""

    reranks = True

    def __init__(self, value_model: torch.nn.Module, n: int):
        if n < 1:
            raise ValueError(f"best-of-n needs n >= 1 candidates, got {n}")
        self.value_model, self.n = value_model, n

    def generate(
        self,
        model,
        tokenizer,
        prompts: Sequence[list[dict] | str],
        config: SamplingConfig,
        *,
        seeds: Sequence[int],
        batch_size: int = 8,
        progress: bool = False,
        on_token: Callable[[list[int]], None] | None = None,
    ) -> list[Generation]:
        rows = [p for p in prompts for _ in range(self.n)]
        row_seeds = [candidate_seed(s, j) for s in seeds for j in range(self.n)]
        # candidates are not streamed (the reply is the one chosen at the end); on_token still sees every step,
        # so a consumer can stop the decode, but gets no token (-1: "nothing to show")
        quiet = (lambda ids: on_token([-1] * len(ids))) if on_token is not None else None
        candidates = generate(
            model, tokenizer, rows, config, seeds=row_seeds, batch_size=batch_size, progress=progress, on_token=quiet
        )
        values = self.values(tokenizer, rows, candidates, batch_size=batch_size)
        chosen = []
        for i in range(len(prompts)):
            block = range(i * self.n, (i + 1) * self.n)
            chosen.append(candidates[max(block, key=lambda k: (values[k], -k))])  # ties: the earliest candidate
        return chosen

    @torch.no_grad()
    def values(
        self, tokenizer, prompts: Sequence[list[dict] | str], gens: Sequence[Generation], *, batch_size: int = 8
    ) -> list[float]:
        """V_μ(x, y) at each reply's last token (at the last prompt token for an empty reply), teacher-forced."""
        device = next(self.value_model.parameters()).device
        out: list[float] = []
        for start in range(0, len(prompts), batch_size):
            ids, mask = encode_prompts(tokenizer, prompts[start : start + batch_size], device)
            replies = [g.token_ids for g in gens[start : start + batch_size]]
            width = max(len(r) for r in replies)
            pad = tokenizer.pad_token_id
            reply_ids = torch.tensor([r + [pad] * (width - len(r)) for r in replies], dtype=ids.dtype, device=device)
            reply_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in replies], device=device)
            full_mask = torch.cat([mask, reply_mask], 1)  # prompts left-padded, replies right-padded
            positions = (full_mask.cumsum(-1) - 1).clamp(min=0)  # as in decoding: padding never shifts a position
            per_position, _ = self.value_model(
                input_ids=torch.cat([ids, reply_ids], 1), attention_mask=full_mask, position_ids=positions
            )
            last = ids.shape[1] - 1 + torch.tensor([len(r) for r in replies], device=device)
            out += per_position[torch.arange(len(replies), device=device), last].float().tolist()
        return out
