"""Guided decoding: strength 0 is plain decoding, the tree-masked candidate scoring is exact, MOD."""

from __future__ import annotations

import pytest
import torch

from mage.decoding import SamplingConfig, generate
from mage.guidance import ExplicitGuide, ImplicitGuide, Member, ProductOfExperts, keep_candidates, tree_mask
from mage.models import tiny_model
from mage.values import ExplicitValueModel, new_head

from .conftest import biased

PROMPTS = [[{"role": "user", "content": "Tell me about soup."}], [{"role": "user", "content": "Hi"}], "raw text prompt"]


def value_model(tokenizer, seed):
    return ExplicitValueModel(tiny_model(tokenizer, seed=seed), new_head(32, seed)).eval()


@pytest.mark.parametrize("greedy", [False, True])
def test_strength_zero_reproduces_plain_decoding_token_for_token(base, tokenizer, greedy):
    config = SamplingConfig(max_new_tokens=12, greedy=greedy)
    plain = generate(base, tokenizer, PROMPTS, config, seed=3, batch_size=3)
    guides = [
        ImplicitGuide([Member(tiny_model(tokenizer, seed=4))], 0.0),
        ExplicitGuide([Member(value_model(tokenizer, 5))], 0.0, top_k=3),
    ]
    for guide in guides:
        guided = generate(base, tokenizer, PROMPTS, config, seed=3, batch_size=3, guide=guide)
        assert [g.token_ids for g in guided] == [g.token_ids for g in plain]


def test_guidance_changes_the_text(base, tokenizer):
    config = SamplingConfig(max_new_tokens=12, greedy=True)
    plain = generate(base, tokenizer, PROMPTS, config)
    token = tokenizer.convert_tokens_to_ids("z")
    guided = generate(
        base,
        tokenizer,
        PROMPTS,
        config,
        guide=ImplicitGuide([Member(biased(tiny_model(tokenizer, seed=4), token, 3.0))], 1.0),
    )
    assert all(g.token_ids[0] == token for g in guided) and all(g.token_ids[0] != token for g in plain)


def test_tree_masked_candidates_equal_separate_forwards_and_the_kept_cache_is_exact(tokenizer):
    value = value_model(tokenizer, 1)
    enc = tokenizer(["Hello there", "Hi"], return_tensors="pt", padding=True, padding_side="left")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cands = torch.tensor([[5, 6, 7], [9, 10, 11]])
    with torch.no_grad():
        _, cache = value(ids, mask, positions, use_cache=True)
        tree, _ = value(
            cands, tree_mask(mask, 3), mask.sum(-1, keepdim=True).expand(-1, 3), cache, use_cache=True
        )  # (B, 3)
        grown = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
        for j in range(3):
            _, fresh = value(ids, mask, positions, use_cache=True)
            single, _ = value(cands[:, j : j + 1], grown, mask.sum(-1, keepdim=True), fresh, use_cache=True)
            assert torch.allclose(single[:, 0], tree[:, j], atol=1e-5)
        # keep candidate (2, 0) of each row, then one more token: same value as the plain path
        keep_candidates(cache, ids.shape[1], torch.tensor([2, 0]))
        _, plain = value(ids, mask, positions, use_cache=True)
        value(torch.tensor([[7], [9]]), grown, mask.sum(-1, keepdim=True), plain, use_cache=True)
        nxt = torch.tensor([[3], [4]])
        grown2 = torch.cat([grown, torch.ones(2, 1, dtype=mask.dtype)], 1)
        a, _ = value(nxt, grown2, grown.sum(-1, keepdim=True), cache, use_cache=True)
        b, _ = value(nxt, grown2, grown.sum(-1, keepdim=True), plain, use_cache=True)
        assert torch.allclose(a, b, atol=1e-5)


def test_explicit_guide_with_large_strength_picks_the_best_valued_candidate(base, tokenizer):
    value = value_model(tokenizer, 2)
    guide = ExplicitGuide([Member(value)], strength=1e4, top_k=4)
    gens = generate(base, tokenizer, PROMPTS[:1], SamplingConfig(max_new_tokens=1, greedy=True), guide=guide)
    text = tokenizer.apply_chat_template(PROMPTS[0], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        top = torch.topk(base(input_ids=ids).logits[0, -1], 4).indices
        values = [value(torch.cat([ids, t.view(1, 1)], 1))[0][0, -1].item() for t in top]
    assert gens[0].token_ids[0] == top[int(torch.tensor(values).argmax())].item()


def test_implicit_guide_step_is_the_product_distribution(base, tokenizer):
    reward_lm = tiny_model(tokenizer, seed=6)
    guide = ImplicitGuide([Member(reward_lm, 0.5), Member(tiny_model(tokenizer, seed=7), 0.5)], strength=2.0)
    ids = tokenizer(["soup"], return_tensors="pt")["input_ids"]
    mask = torch.ones_like(ids)
    guide.start(ids, mask)
    with torch.no_grad():
        p = torch.log_softmax(base(input_ids=ids).logits[:, -1], -1)
        r = sum(
            0.5 * torch.log_softmax(m(input_ids=ids).logits[:, -1], -1)
            for m in (reward_lm, tiny_model(tokenizer, seed=7))
        )
    q = guide.adjust(p, None)
    assert torch.allclose(q, torch.log_softmax(p + 2.0 * r, -1), atol=1e-5)
    assert torch.allclose(q.exp().sum(-1), torch.ones(1), atol=1e-5)


def test_mod_with_one_hot_weights_is_that_expert(tokenizer):
    experts = [tiny_model(tokenizer, seed=s) for s in (1, 2)]
    config = SamplingConfig(max_new_tokens=8)
    mod = generate(ProductOfExperts(experts, [0.0, 1.0]), tokenizer, PROMPTS, config, seed=1)
    alone = generate(experts[1], tokenizer, PROMPTS, config, seed=1)
    assert [g.token_ids for g in mod] == [g.token_ids for g in alone]
    mixed = generate(
        ProductOfExperts(experts, [0.5, 0.5]), tokenizer, PROMPTS, SamplingConfig(max_new_tokens=8, greedy=True)
    )
    assert all(len(g.token_ids) <= 8 for g in mixed)


@pytest.mark.parametrize("strength", [-1.0, float("nan"), float("inf")])
def test_bad_strength_is_refused(tokenizer, strength):
    with pytest.raises(ValueError, match="guidance strength"):
        ImplicitGuide([Member(tiny_model(tokenizer))], strength)
