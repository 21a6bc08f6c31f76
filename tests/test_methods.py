"""Every SPEC §3 method runs end to end on tiny trained checkpoints; guidance obeys its contracts."""

from __future__ import annotations


import pytest
import torch

from mage.decoding import SamplingConfig
from mage.methods import METHODS, Engine
from mage.values import preference_pairs

GREEDY = SamplingConfig(max_new_tokens=4, greedy=True)


@pytest.fixture(scope="module")
def engine(tiny_checkpoints):
    _, base = tiny_checkpoints
    return Engine("summary", base=str(base), top_k=3)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_generates(engine, method):
    gens = engine.generate(method, [0.3, 0.7], ["A news article.", "Another one."], GREEDY, strength=1.0)
    assert len(gens) == 2 and all(len(g.token_ids) <= 4 for g in gens)


@pytest.mark.parametrize("method", ["mage-e", "mage-i", "ensemble-e", "ensemble-i", "sft+e", "sft+i"])
def test_strength_zero_is_the_unguided_policy(engine, method):
    sampling = SamplingConfig(max_new_tokens=6)
    plain_method = "base" if method.startswith("sft") else "bone"
    plain = engine.generate(plain_method, [0.4, 0.6], ["Some article text."] * 3, sampling, seed=5)
    guided = engine.generate(method, [0.4, 0.6], ["Some article text."] * 3, sampling, seed=5, strength=0.0)
    assert [g.token_ids for g in guided] == [g.token_ids for g in plain]


def test_merged_value_model_with_one_hot_weights_is_that_value_model(engine, tiny_checkpoints):
    bank = engine.guidance("explicit")
    ids = engine.policy.tokenizer(["hello"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        merged = bank.merged([0.0, 1.0])[0].model(ids)[0]
        alone = [m.model(ids)[0] for m in bank.ensemble([0.5, 0.5])]
        assert torch.allclose(merged, alone[1], atol=1e-5)
        # heads and adapters merge linearly: μ-merged head on the μ-merged model
        mixed = bank.merged([0.5, 0.5])[0].model(ids)[0]
    assert not torch.allclose(mixed, merged)


def test_value_models_of_a_kind_share_their_initialisation(tokenizer):
    from mage.models import tiny_model
    from mage.values import ValueConfig, _lora_model, new_head

    def a_matrices(init_seed):
        model = _lora_model(tiny_model(tokenizer), ValueConfig(init_seed=init_seed))
        return [p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n]

    first, again, other = a_matrices(7), a_matrices(7), a_matrices(8)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not all(torch.equal(x, y) for x, y in zip(first, other))
    assert torch.equal(new_head(32, 7).weight, new_head(32, 7).weight)


def test_preference_pairs_rank_by_the_objective():
    pool = [{"id": "p", "sample": s, "scores": {"x": v}} for s, v in enumerate([0.1, 0.9, 0.5])] + [
        {"id": "q", "sample": 0, "scores": {"x": 1.0}},
        {"id": "q", "sample": 1, "scores": {"x": 1.0}},
    ]
    pairs = preference_pairs(pool, "x")
    assert [(w["sample"], l["sample"]) for w, l in pairs] == [(1, 0)]  # q ties everywhere: skipped


def test_guidance_with_another_tokenizer_is_refused(tiny_checkpoints):
    from mage.methods import GuidanceBank
    from mage.models import tiny_tokenizer
    from mage.tasks import get_task

    _, base = tiny_checkpoints
    other = tiny_tokenizer()
    other.add_tokens(["<extra>"])
    with pytest.raises(ValueError, match="different tokenizer"):
        GuidanceBank(get_task("summary"), "implicit", base=str(base), policy_tokenizer=other)


def test_implicit_value_models_start_from_init_seed_whatever_the_training_seed(tokenizer, monkeypatch, tmp_path):
    from types import SimpleNamespace

    from trl.experimental.cpo import CPOTrainer

    from mage.models import tiny_model
    from mage.tasks import get_task
    from mage.values import ValueConfig, _lora_model, fit_implicit

    monkeypatch.setattr(CPOTrainer, "train", lambda self: SimpleNamespace(training_loss=0.0))
    pool = [
        {"id": "p", "sample": s, "input": "news", "response": r, "scores": {"quality": v}}
        for s, (r, v) in enumerate([("long answer here", 0.2), ("short", 0.9)])
    ]
    a_of = lambda m: [p.detach().clone() for n, p in m.named_parameters() if "lora_A" in n]
    reference = a_of(_lora_model(tiny_model(tokenizer), ValueConfig(init_seed=11)))
    for seed in (0, 5):
        model, _ = fit_implicit(
            get_task("summary"),
            "quality",
            tiny_model(tokenizer),
            tokenizer,
            pool,
            ValueConfig(kind="implicit", seed=seed, init_seed=11),
            str(tmp_path),
        )
        assert all(torch.equal(x, y) for x, y in zip(a_of(model), reference))


def test_mod_reports_the_preference_not_a_leftover_merge(engine):
    engine.prepare("mod", [0.3, 0.7])
    assert engine.current.method == "mod" and engine.current.weights == pytest.approx([0.3, 0.7])


def _fused_and_separate(engine, policy_method: str, mu: list[float]):
    """Last-position logits for the merged policy, the fused model's policy and guide rows, and the separately merged
    guide."""
    from mage.fused import FusedImplicit, row_corrections

    engine.policy.merge(policy_method, mu)
    bank = engine.guidance("implicit")
    fused = FusedImplicit(
        engine.policy.model, row_corrections(engine.policy.soup, [v.adapter for v in bank.values], mu), 1.0
    )
    ids = engine.policy.tokenizer(["hello there", "a news article"], return_tensors="pt", padding=True)
    with torch.no_grad():
        policy_logits = engine.policy.model(**ids).logits[:, -1].float()
        fused_logits = fused(ids["input_ids"], ids["attention_mask"]).logits[:, -1].float()
        guide_logits = bank.merged(mu)[0].model(**ids).logits[:, -1].float()
    return policy_logits, fused_logits, fused._logits[0], guide_logits


@pytest.mark.parametrize("policy_method", ["bone", "base"])
def test_fused_implicit_guidance_equals_the_separate_guide_model(engine, tiny_checkpoints, policy_method):
    """mage.fused runs the guide through the policy's weights plus (Δ_φ − Δ_π): the guide rows must give
    the separately merged value model's logits, the policy rows the policy's own."""
    policy_logits, fused_logits, fused_guide, guide_logits = _fused_and_separate(engine, policy_method, [0.3, 0.7])
    assert torch.allclose(fused_logits, policy_logits, atol=1e-5)
    assert torch.allclose(fused_guide, guide_logits, atol=1e-5)
    assert (guide_logits - policy_logits).abs().max() > 1e-3  # the correction is not a no-op


def test_fused_and_separate_mage_i_decode_the_same_tokens(tiny_checkpoints):
    _, base = tiny_checkpoints
    sampling = SamplingConfig(max_new_tokens=6)
    runs = {}
    for fused in (True, False):
        e = Engine("summary", base=str(base), fused=fused)
        runs[fused] = [
            [
                g.token_ids
                for g in e.generate(
                    m, [0.6, 0.4], ["Some article text.", "Other text."], sampling, seed=3, strength=2.0
                )
            ]
            for m in ("mage-i", "sft+i")
        ]
    assert runs[True] == runs[False]


@pytest.mark.parametrize("method", ["bone", "rs", "base"])
def test_many_preferences_in_one_batch_give_each_preferences_own_tokens(tiny_checkpoints, method):
    """PolicyBank.generate_rows: a sweep's grid points as rows of one batch, each row decoding exactly as the
    model merged for its preference alone (greedy, float64). The ingredients are distinct random adapters
    (the tiny trained ones are near-identical, so they could not show a mix-up of rows)."""
    import copy

    from mage.adapters import adapter_from_peft
    from mage.merging import Soup
    from mage.policy import PolicyBank

    from .conftest import lora_model

    bank = PolicyBank("summary", base=str(tiny_checkpoints[1]), dtype="float64")
    peft_model = lora_model(copy.deepcopy(bank.model), 4, seed=3)
    bank.soup = Soup(
        bank.model, [adapter_from_peft(peft_model, f"a{j}") for j in range(4)]
    )  # experts = 0, 1; backbones = 2, 3
    grid = [[w, 1 - w] for w in (0.0, 0.3, 0.5, 0.8, 1.0)]
    sampling = SamplingConfig(max_new_tokens=6, greedy=True)
    together = [g.token_ids for g in bank.generate_rows(method, grid, "Some article text.", sampling)]
    alone = [bank.generate(method, mu, ["Some article text."], sampling)[0].token_ids for mu in grid]
    assert together == alone
    assert (len({tuple(t) for t in together}) > 1) == (method != "base")  # the preferences did change the tokens
    with pytest.raises(ValueError, match="no preference given"):
        bank.generate_rows(method, [], "x")


def test_a_16_bit_policy_merges_unfolded_and_its_fused_guide_matches_the_separate_one(tiny_checkpoints):
    """bfloat16: the policy's deltas stay unfolded (the weights are never written), and the fused implicit
    guide still gives the separately merged value model's logits."""
    _, base = tiny_checkpoints
    engine = Engine("summary", base=str(base), dtype="bfloat16")
    weights = {n: p.detach().clone() for n, p in engine.policy.model.named_parameters()}
    policy_logits, fused_logits, fused_guide, guide_logits = _fused_and_separate(engine, "bone", [0.3, 0.7])
    assert engine.policy.soup.unfolded and all(
        torch.equal(p, weights[n.replace(".base.", ".")]) for n, p in engine.policy.model.named_parameters()
    )
    scale = guide_logits.abs().max()
    assert (fused_logits - policy_logits).abs().max() < 0.02 * scale
    assert (fused_guide - guide_logits).abs().max() < 0.02 * scale
    assert (guide_logits - policy_logits).abs().max() > 0.05 * scale  # the correction is not a no-op


def test_the_fast_decode_path_gives_the_reference_loops_tokens(engine):
    """Static KV cache (+ CUDA graphs where there is a GPU), stop checked every few steps: same tokens as the
    narrated dynamic-cache loop for every method, greedy and sampled; MOD falls back to the loop."""
    for method in METHODS:
        for sampling in (GREEDY, SamplingConfig(max_new_tokens=9)):
            reference = [
                g.token_ids
                for g in engine.generate(
                    method, [0.3, 0.7], ["Some article text.", "A much longer article text here."], sampling, seed=4
                )
            ]
            fast = [
                g.token_ids
                for g in engine.generate(
                    method,
                    [0.3, 0.7],
                    ["Some article text.", "A much longer article text here."],
                    sampling,
                    seed=4,
                    fast=True,
                )
            ]
            assert fast == reference, method
    from mage.decoding import FastStep

    with pytest.raises(ValueError, match="needs one model with a transformers config"):
        FastStep(torch.nn.Linear(2, 2), 8)


def test_a_new_guided_method_needs_one_row_of_the_method_table(tiny_checkpoints, tmp_path, monkeypatch):
    """ABA + merged implicit guidance, added as one row: the Engine, the service (label, scores), a sweep
    (checkpoint hash, records) and the figures' colours all take it from the table, no other file touched."""
    from mage import methods
    from mage.plots import method_color
    from mage.service import Service
    from mage.sweep import SweepConfig, checkpoint_hash, run_sweep

    _, base = tiny_checkpoints
    row = methods.Method(
        "aba+i",
        methods.Merge("aba"),
        methods.Guidance("implicit"),
        "ABA + implicit guidance",
        "#123456",
        "a method added in a test",
    )
    monkeypatch.setitem(methods.METHODS, "aba+i", row)
    engine = Engine("summary", base=str(base), top_k=3)
    model, guide = engine.prepare("aba+i", [0.3, 0.7])
    assert guide is not None and engine.current.coefficients == engine.policy.merge("aba", [0.3, 0.7]).coefficients
    assert checkpoint_hash(engine, "aba+i") != checkpoint_hash(engine, "aba")  # it reads the implicit value models too
    assert methods.strength_source("aba+i") == "mage-i"
    replies, _ = Service(base=str(base), device="cpu").generate(
        "summary", "Some news today.", [0.3, 0.7], ["aba+i"], max_new_tokens=3, greedy=True
    )
    assert (
        replies[0].label == "ABA + implicit guidance"
        and set(replies[0].scores) == {"faithful", "quality"}
        and not replies[0].error
    )
    result = run_sweep(
        SweepConfig(
            task="summary",
            methods=("aba+i",),
            prompts=1,
            max_new_tokens=3,
            grid=((1.0, 0.0), (0.0, 1.0)),
            base=str(base),
        ),
        tmp_path / "r.json",
    )
    assert [r["method"] for r in result["records"]] == ["aba+i", "aba+i"]
    assert method_color("aba+i") == "#123456"


def test_best_of_k_keeps_the_reply_the_merged_value_model_scores_highest(engine):
    """bon-e (the compute-matched baseline): k Bone Soup replies per prompt, seeded by position, and the one the
    merged explicit value model V_μ scores highest at its last token is kept; padding never moves a value."""
    from mage.decoding import generate
    from mage.rerank import BestOfN, candidate_seed

    sampling = SamplingConfig(max_new_tokens=5)
    inputs, seeds, mu = ["Storms hit the coast overnight.", "A bridge opened."], [3, 1003], [0.3, 0.7]
    chosen = engine.generate("bon-e", mu, inputs, sampling, seeds=seeds)
    model, guide = engine.prepare("bon-e", mu)
    assert isinstance(guide, BestOfN) and guide.n == engine.top_k == 3 and model is engine.policy.model
    tok, k = engine.policy.tokenizer, guide.n
    rows = [engine.task.messages(x) for x in inputs for _ in range(k)]
    candidates = generate(model, tok, rows, sampling, seeds=[candidate_seed(s, j) for s in seeds for j in range(k)])
    assert candidate_seed(3, 0) == 3 and len({candidate_seed(3, j) for j in range(k)}) == k
    values = guide.values(tok, rows, candidates)
    alone = [guide.values(tok, [r], [c])[0] for r, c in zip(rows, candidates)]
    assert values == pytest.approx(alone, abs=1e-4)  # left-padded prompts, right-padded replies: same values
    for i in range(len(inputs)):
        block = values[i * k : (i + 1) * k]
        assert chosen[i].token_ids == candidates[i * k + block.index(max(block))].token_ids
    assert len({tuple(c.token_ids) for c in candidates}) > 2  # the candidates differ: the choice is a real one
    assert METHODS["bon-e"].guide.uses_strength is False
    from mage.strength import chosen_strengths

    assert "bon-e" not in chosen_strengths("summary", ["bon-e"])  # no strength to choose or record
