"""Decoding: one narrated sampling loop with a KV cache, batched over prompts.

Randomness is explicit: each prompt row owns a ``torch.Generator`` seeded from ``(seed, row)``,
so a row's text depends only on its seed and prompt, not on the global RNG. Guidance (MAGE stage 2)
plugs in through :class:`Guide`, whose ``adjust`` re-weights the policy's next-token scores; with no
guide (or strength 0) the loop is plain decoding of the policy.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from .models import stop_token_ids


def sample_seed(seed: int, prompt: int, sample: int) -> int:
    """The sampling seed of one (prompt index, sample index) row: fixed by position, so any subset or order
    of rows (a resumed pool, one grid point of a sweep) regenerates identically."""
    return seed + 1000 * prompt + sample


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 0.9  # the papers' setting: nucleus 0.9, top-k off
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # > 1 discourages repeats (CTRL-style, as in transformers)
    greedy: bool = False

    def __post_init__(self):
        for name in ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise ValueError(
                    f"bad sampling setting: {name}={value!r} is not a number; fix: e.g. temperature=1.0, top_p=0.9, "
                    "max_new_tokens=48"
                )
        if not isinstance(self.greedy, bool):
            raise ValueError(f"bad sampling setting: greedy={self.greedy!r}; fix: True or False")
        checks = [
            (1 <= self.max_new_tokens <= 4096, f"max_new_tokens={self.max_new_tokens} must be in [1, 4096]"),
            (math.isfinite(self.temperature) and self.temperature > 0, f"temperature={self.temperature} must be > 0"),
            (0 < self.top_p <= 1, f"top_p={self.top_p} must be in (0, 1]"),
            (self.top_k >= 0, f"top_k={self.top_k} must be >= 0 (0 turns it off)"),
            (
                math.isfinite(self.repetition_penalty) and self.repetition_penalty >= 1,
                f"repetition_penalty={self.repetition_penalty} must be >= 1",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"bad sampling setting: {message}")


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    finished: bool  # True when the model ended the turn itself, False when cut at max_new_tokens


class Guide(Protocol):
    """Re-weights next-token scores. Implementations keep their own KV caches."""

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None: ...

    def adjust(self, logprobs: torch.Tensor, state: "DecodeState") -> torch.Tensor: ...

    def advance(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> None: ...


@dataclass
class DecodeState:
    input_ids: torch.Tensor  # (B, T) prompt + generated so far
    attention_mask: torch.Tensor  # (B, T)
    step: int


def encode_prompts(tokenizer, prompts: Sequence[list[dict] | str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-format and left-pad prompts → ``input_ids``, ``attention_mask``, both (B, T)."""
    texts = [
        p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    return input_ids, mask


def apply_repetition_penalty(
    logits: torch.Tensor, input_ids: torch.Tensor, penalty: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, V) logits; tokens present in ``input_ids`` get logit/penalty (>0) or logit*penalty (<0).
    Padding (``mask`` == 0) does not count: it is replaced by the row's last token."""
    if penalty == 1.0:
        return logits
    if mask is not None:
        input_ids = torch.where(mask.bool(), input_ids, input_ids[:, -1:])
    seen = torch.gather(logits, 1, input_ids)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, input_ids, seen)


def filter_top_k_top_p(logprobs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """(B, V) → same shape with tokens outside top-k / the top-p nucleus set to −inf."""
    out = logprobs
    if top_k > 0:
        kth = torch.topk(out, min(top_k, out.shape[-1]), dim=-1).values[:, -1:]
        out = out.masked_fill(out < kth, -math.inf)
    if top_p < 1.0:
        sorted_lp, order = torch.sort(out, dim=-1, descending=True)
        probs = torch.softmax(sorted_lp, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass strictly before each token
        drop_sorted = before >= top_p  # always keeps the most likely token
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        out = out.masked_fill(drop, -math.inf)
    return out


def sample_rows(logprobs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Inverse-CDF sampling, one uniform draw per row from that row's generator. (B, V) → (B,).

    The first token whose cumulative mass exceeds u; never a token of probability 0 (u = 0 and
    rounding at the top end included)."""
    probs = torch.softmax(logprobs.double(), dim=-1)
    cdf = torch.cumsum(probs, dim=-1)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators]).to(cdf.device) * cdf[:, -1]
    picked = torch.searchsorted(cdf, u.unsqueeze(1), right=True).squeeze(1)
    last = probs.shape[-1] - 1 - torch.argmax(torch.flip(probs > 0, dims=[-1]).int(), dim=-1)  # last token with mass
    return torch.minimum(picked, last)


def row_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


CHECK_EVERY = 8  # the fast path asks the device whether every row has stopped only every few steps (a host sync)


def _hf_config(model):
    """The transformers config of a decoding model (a fused model wraps one); None for a mix of models (MOD)."""
    return getattr(model, "config", None) or getattr(getattr(model, "model", None), "config", None)


class FastStep:
    """The fast decode path's model call: a static KV cache (fixed shapes, allocated once) and, on CUDA, the
    step compiled with CUDA graphs (``torch.compile(mode="reduce-overhead")``), so a step is replayed instead of
    launched kernel by kernel from Python. Same tokens as the dynamic-cache loop under greedy decoding."""

    def __init__(self, model, max_len: int, *, compile: bool | None = None):
        from transformers import StaticCache

        config = _hf_config(model)
        if config is None:
            raise ValueError(
                "the fast decode path needs one model with a transformers config (not MOD's mix of experts); fix: "
                "fast=False"
            )
        self.model, self.cache = model, StaticCache(config=config, max_cache_len=max_len)
        device = next(model.parameters()).device
        self.compiled = device.type == "cuda" if compile is None else compile
        self._step = torch.compile(model, mode="reduce-overhead", dynamic=False) if self.compiled else model

    def prefill(self, **kwargs):
        return self.model(past_key_values=self.cache, **kwargs)  # variable length: never compiled

    def step(self, **kwargs):
        if self.compiled and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs may be overwritten by this replay
        return self._step(past_key_values=self.cache, use_cache=True, **kwargs)


@torch.no_grad()
def decode_batch(
    model,
    tokenizer,
    prompts: Sequence[list[dict] | str],
    config: SamplingConfig,
    seeds: Sequence[int],
    guide: Guide | None = None,
    on_token: Callable[[list[int]], None] | None = None,
    fast: bool = False,
) -> list[Generation]:
    """Generate one response per prompt in a single batch (the narrated loop).

    ``on_token`` (streaming) is called after every step with each row's new token id, −1 for a row
    that stopped (its stop token included) or had stopped before. ``fast``: a static KV cache, CUDA graphs
    on a GPU (:class:`FastStep`) and a stop check every :data:`CHECK_EVERY` steps; same tokens.
    """
    device = next(model.parameters()).device
    # 1. encode: left-padded prompts, positions counted from each row's first real token
    input_ids, mask = encode_prompts(tokenizer, prompts, device)
    generators = row_generators(seeds)
    stops = torch.tensor(stop_token_ids(tokenizer), device=device)
    batch = input_ids.shape[0]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    ended = torch.zeros(batch, dtype=torch.bool, device=device)
    new_tokens: list[torch.Tensor] = []
    # 2. prefill the policy (and the guide's own caches)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    fast_step = FastStep(model, input_ids.shape[1] + config.max_new_tokens) if fast else None
    prefill = fast_step.prefill if fast else model
    out = prefill(
        input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
    )  # the head runs on the last position only
    cache, logits = out.past_key_values, out.logits[:, -1, :].float()  # (B, V)
    if guide is not None:
        guide.start(input_ids, mask)
    for step in range(config.max_new_tokens):
        # 3. policy scores → repetition penalty → temperature → log-probabilities
        logits = apply_repetition_penalty(logits, input_ids, config.repetition_penalty, mask)
        logprobs = torch.log_softmax(logits / config.temperature, dim=-1)  # (B, V)
        # 4. guidance re-weights the scores (MAGE stage 2); plain decoding skips this
        if guide is not None:
            logprobs = guide.adjust(logprobs, DecodeState(input_ids, mask, step))
        # 5. choose: argmax, or sample within top-k / top-p from each row's own generator
        if config.greedy:
            token = logprobs.argmax(dim=-1)
        else:
            token = sample_rows(filter_top_k_top_p(logprobs, config.top_k, config.top_p), generators)
        token = torch.where(done, torch.full_like(token, tokenizer.pad_token_id), token)  # (B,)
        is_stop = torch.isin(token, stops) & ~done
        ended |= is_stop
        new_tokens.append(torch.where(done | is_stop, -1, token))
        if on_token is not None:
            on_token(new_tokens[-1].tolist())
        done |= is_stop
        if step == config.max_new_tokens - 1 or (
            (not fast or step % CHECK_EVERY == CHECK_EVERY - 1 or on_token is not None) and bool(done.all())
        ):
            break  # no forward pass for a token that will not be sampled
        # 6. append and advance the caches by one token
        input_ids = torch.cat([input_ids, token[:, None]], dim=1)
        mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
        positions = (mask.sum(-1, keepdim=True) - 1).clamp(min=0)
        if fast:
            out = fast_step.step(
                input_ids=token[:, None], attention_mask=mask, position_ids=positions, logits_to_keep=1
            )
        else:
            out = model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        cache, logits = out.past_key_values, out.logits[:, -1, :].float()
        if guide is not None:
            guide.advance(token, mask)
    # 7. strip stop/pad markers and detokenise
    steps = torch.stack(new_tokens, dim=1) if new_tokens else torch.empty(batch, 0, dtype=torch.long)
    results = []
    for row in range(batch):
        ids = [t for t in steps[row].tolist() if t >= 0]
        results.append(Generation(tokenizer.decode(ids, skip_special_tokens=True).strip(), ids, bool(ended[row])))
    return results


def generate(
    model,
    tokenizer,
    prompts: Sequence[list[dict] | str],
    config: SamplingConfig = SamplingConfig(),
    *,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    batch_size: int = 8,
    guide: Guide | None = None,
    progress: bool = False,
    on_token: Callable[[list[int]], None] | None = None,
    fast: bool = False,
) -> list[Generation]:
    """Generate for many prompts in batches. Row ``i`` uses seed ``seeds[i]`` (default ``seed + i``);
    ``fast``: the static-cache path (:func:`decode_batch`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    seeds = list(seeds) if seeds is not None else [seed + i for i in range(len(prompts))]
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts; fix: pass one seed per prompt")
    if getattr(guide, "reranks", False):  # best-of-n (mage.rerank.BestOfN) samples and chooses whole replies itself
        return guide.generate(
            model, tokenizer, prompts, config, seeds=seeds, batch_size=batch_size, progress=progress, on_token=on_token
        )
    results: list[Generation] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generating", unit="batch", disable=not progress):
        results += decode_batch(
            model,
            tokenizer,
            prompts[start : start + batch_size],
            config,
            seeds[start : start + batch_size],
            guide,
            on_token,
            fast,
        )
    return results
