"""The sampling loop: seeds, caps, stopping, greedy equal to transformers' greedy search."""

from __future__ import annotations

import pytest
import torch

from mage.decoding import (
    SamplingConfig,
    apply_repetition_penalty,
    filter_top_k_top_p,
    generate,
    sample_rows,
    stop_token_ids,
)
from mage.models import tiny_model

from .conftest import biased

PROMPTS = [[{"role": "user", "content": "Tell me about soup."}], [{"role": "user", "content": "Hi"}], "raw text prompt"]


def test_seed_reproducibility_and_batch_independence(base, tokenizer):
    config = SamplingConfig(max_new_tokens=12)
    a = generate(base, tokenizer, PROMPTS, config, seed=7, batch_size=3)
    b = generate(base, tokenizer, PROMPTS, config, seed=7, batch_size=3)
    c = generate(base, tokenizer, PROMPTS, config, seed=8, batch_size=3)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    one = generate(base, tokenizer, PROMPTS[1:2], config, seeds=[8])  # row 1 of seed 7 has seed 8
    assert one[0].token_ids == a[1].token_ids


def test_max_tokens_respected(base, tokenizer):
    for n in (1, 5, 9):
        gens = generate(base, tokenizer, PROMPTS, SamplingConfig(max_new_tokens=n), seed=0)
        assert all(len(g.token_ids) <= n for g in gens)
        assert all(g.finished or len(g.token_ids) == n for g in gens)


def test_greedy_matches_transformers_generate(base, tokenizer):
    gens = generate(base, tokenizer, PROMPTS[:1], SamplingConfig(max_new_tokens=10, greedy=True))
    text = tokenizer.apply_chat_template(PROMPTS[0], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = base.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=-1, pad_token_id=tokenizer.pad_token_id)
    assert gens[0].token_ids == out[0, ids.shape[1] :].tolist()[: len(gens[0].token_ids)]


def test_stops_at_end_of_turn(tokenizer):
    model = biased(tiny_model(tokenizer, seed=0), tokenizer.eos_token_id, 50.0)  # <|im_end|> overwhelmingly likely
    gens = generate(model, tokenizer, PROMPTS[:2], SamplingConfig(max_new_tokens=8), seed=0)
    assert all(g.finished and g.token_ids == [] for g in gens)


def test_filters_and_penalty_on_hand_built_scores():
    lp = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_top_k_top_p(lp, 0, 0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.7
    assert torch.isfinite(filter_top_k_top_p(lp, 3, 1.0)).tolist() == [[True, True, True, False]]
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]] and logits.tolist() == [[2.0, -2.0, 1.0]]  # input untouched


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_new_tokens=0),
        dict(temperature=0),
        dict(top_p=1.5),
        dict(top_k=-1),
        dict(repetition_penalty=0.5),
        dict(temperature=float("nan")),
    ],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="bad sampling setting"):
        SamplingConfig(**kwargs)


def test_sampling_never_picks_a_filtered_token(monkeypatch):
    lp = torch.log(torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0]]))
    gens = [torch.Generator().manual_seed(0)] * 2
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: real_rand(*a, **k) * 0)  # u = 0 exactly
    assert sample_rows(lp, gens).tolist() == [1, 2]
    monkeypatch.setattr(torch, "rand", lambda *a, **k: real_rand(*a, **k) * 0 + 1)  # u at the very top
    assert sample_rows(lp, gens).tolist() == [2, 2]


def test_repetition_penalty_ignores_padding():
    logits = torch.tensor([[2.0, 2.0, 2.0]])
    ids = torch.tensor([[0, 0, 1]])  # two pad columns (token 0), then token 1
    mask = torch.tensor([[0, 0, 1]])
    assert apply_repetition_penalty(logits, ids, 2.0, mask).tolist() == [[2.0, 1.0, 2.0]]


def test_end_of_text_stops_even_when_it_is_the_unknown_token(tokenizer):
    assert tokenizer.eos_token_id in stop_token_ids(tokenizer)
