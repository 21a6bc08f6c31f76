"""The benchmark drives the Engine: its guided variants are the method table's rows on a synthetic K-objective task
whose random checkpoints the Engine loads like trained ones (tiny model: seconds)."""

from __future__ import annotations

import os

import pytest
import torch

from mage import bench, decoding
from mage.fused import FusedImplicit
from mage.guidance import ExplicitGuide, ImplicitGuide, ProductOfExperts
from mage.methods import METHODS
from mage.models import load_base, save_tiny_base
from mage.synthetic import synthetic_engine
from mage.tasks import TASKS

ROW_KEYS = {"variant", "k", "batch", "steps", "s_per_step", "timing", "peak_rss_mb"}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return str(save_tiny_base(tmp_path_factory.mktemp("bench") / "tiny"))


def test_every_guided_variant_is_a_method_of_the_table():
    assert set(bench.GUIDED_VARIANTS) == set(bench.GUIDED_METHODS)
    assert all(method in METHODS for method, _ in bench.GUIDED_METHODS.values())
    assert bench.GUIDED_METHODS["mage-i-separate"] == ("mage-i", False)  # the unfused baseline: Engine(fused=False)


@pytest.mark.parametrize("k", [2, 4])
def test_the_synthetic_engine_loads_k_random_checkpoints_of_each_kind_and_decodes_every_method(tiny_base, k):
    before = os.environ.get("MAGE_CHECKPOINTS")
    model, tokenizer = load_base(tiny_base)
    config = decoding.SamplingConfig(max_new_tokens=5, greedy=True)
    mu = [1.0 / k] * k
    with synthetic_engine(k, model, tokenizer, base=tiny_base) as engine:
        assert TASKS[engine.task.name] is engine.task and len(engine.task.objectives) == k
        groups = engine.policy.groups
        assert groups["experts"].stop - groups["experts"].start == k
        assert groups["backbones"].stop - groups["backbones"].start == k
        assert all(a.rank == 8 and a.scaling == 2.0 for a in engine.policy.soup.adapters)
        explicit = engine.guidance("explicit").values
        assert len(explicit) == k and all(v.head[0].shape == (1, model.config.hidden_size) for v in explicit)
        assert len(engine.guidance("implicit").values) == k
        # the checkpoints are not zero: a Bone Soup merge moves the logits
        ids = tokenizer(["a prompt"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            base_logits = engine.prepare("base", mu)[0](input_ids=ids).logits
            bone_logits = engine.prepare("bone", mu)[0](input_ids=ids).logits
        assert float((bone_logits - base_logits).abs().max()) > 1e-4
        for method in ("mage-e", "mod"):
            gens = engine.generate(method, mu, ["Say hi.", "Say bye."], config)
            assert len(gens) == 2 and all(len(g.token_ids) + g.finished >= 1 for g in gens)
            assert max(len(g.token_ids) for g in gens) <= 5
        model_mod, _ = engine.prepare("mod", mu)
        assert isinstance(model_mod, ProductOfExperts) and len(model_mod.experts) == k
    assert engine.task.name not in TASKS and os.environ.get("MAGE_CHECKPOINTS") == before  # undone on exit


EXPECTED = {  # variant → (type of the model decoded, type of the guide), as Engine.prepare returns them
    "plain": ("LlamaForCausalLM", type(None)),
    "mage-i": (FusedImplicit, FusedImplicit),
    "mage-i-separate": ("LlamaForCausalLM", ImplicitGuide),
    "mage-e": ("LlamaForCausalLM", ExplicitGuide),
    "ensemble-i": ("LlamaForCausalLM", ImplicitGuide),
    "ensemble-e": ("LlamaForCausalLM", ExplicitGuide),
    "mod": (ProductOfExperts, type(None)),
}


def test_the_guided_worker_decodes_what_engine_prepare_returns_and_keeps_its_row_schema(tiny_base, monkeypatch):
    seen = []
    real = decoding.generate

    def spy(model, tokenizer, prompts, config, **kwargs):
        seen.append((model, kwargs.get("guide")))
        return real(model, tokenizer, prompts, config, **kwargs)

    monkeypatch.setattr(decoding, "generate", spy)
    k, new_tokens = 3, 4
    for variant in bench.GUIDED_VARIANTS:
        seen.clear()
        row = bench.guided_worker(variant, k, batch=2, new_tokens=new_tokens, repeats=1, base=tiny_base)
        assert set(row) == ROW_KEYS and row["variant"] == variant and row["k"] == k and row["batch"] == 2
        assert 1 <= row["steps"] <= new_tokens and row["s_per_step"] > 0 and row["peak_rss_mb"] > 0
        assert row["timing"]["repeats"] == 1 and len(seen) == 2  # the warm-up and one timed run
        model, guide = seen[-1]
        model_type, guide_type = EXPECTED[variant]
        assert type(model).__name__ == model_type if isinstance(model_type, str) else type(model) is model_type
        assert type(guide) is guide_type, variant
        if variant == "mage-i":
            assert guide is model  # fused: the policy and its guide are one model
        if variant in ("ensemble-i", "ensemble-e"):
            assert len(guide.members) == k and all(m.weight == pytest.approx(1 / k) for m in guide.members)
        if variant in ("mage-i-separate", "mage-e"):
            assert len(guide.members) == 1 and guide.members[0].model is not model  # a second model, merged
        if variant == "mod":
            assert len(model.experts) == k
    assert not [name for name in TASKS if name.startswith("synthetic-")]


def test_an_unknown_guided_variant_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown guided variant 'mage-x'.*mage-i-separate"):
        bench.guided_worker("mage-x", 2)


def test_the_first_token_parts_build_the_fused_guide_through_the_engine(tiny_base):
    model, tokenizer = load_base(tiny_base)
    with synthetic_engine(3, model, tokenizer, base=tiny_base) as engine:
        parts = bench._first_token_parts(engine, "Write a short poem about the sea.", 2)
    assert parts["prompt_tokens"] > 5
    assert all(parts[k] > 0 for k in ("merge_bone_s", "build_fused_guide_s", "prompt_pass_fused_s"))
    with synthetic_engine(2, model, tokenizer, base=tiny_base, fused=False) as engine:
        with pytest.raises(ValueError, match="fused implicit guide; fix: pass an Engine"):
            bench._first_token_parts(engine, "Hi.", 1)


def test_the_soak_reports_what_the_server_logged_for_failures():
    """Each traceback's last line and each ERROR line, once each, in order: what a failed request was."""
    from mage.bench import server_errors

    log = "\n".join(
        [
            "* Running on local URL:  http://127.0.0.1:7860",
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in <module>',
            "    raise KeyError('session')",
            "KeyError: 'session'",
            "ERROR:    Exception in ASGI application",
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in <module>',
            "KeyError: 'session'",
        ]
    )
    assert server_errors(log) == ["KeyError: 'session'", "ERROR:    Exception in ASGI application"]
    assert server_errors("all fine\n") == []
