"""Coefficients (RS, Bone Soup, ABA) and exact delta-space LoRA merging, checked with numbers."""

from __future__ import annotations

import dataclasses
import copy

import pytest
import torch

from mage.adapters import adapter_from_peft
from mage.merging import (
    Soup,
    bone_matrix,
    coefficients,
    concat_adapter,
    merged_delta,
    normalize_weights,
    training_weights,
)
from mage.models import tiny_model

from .conftest import lora_model


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_bone_matrix_is_symmetric_circulant_with_unit_rows():
    for n, beta in [(2, 0.7), (3, 0.6), (4, 0.8)]:
        b = bone_matrix(n, beta)
        assert torch.allclose(b, b.T)
        assert torch.allclose(b.sum(1), torch.ones(n, dtype=b.dtype))
        assert torch.allclose(torch.diagonal(b), torch.full((n,), beta, dtype=b.dtype))
        assert torch.allclose(b[0, 1:], torch.full((n - 1,), (1 - beta) / (n - 1), dtype=b.dtype))


def test_bone_coefficients_match_the_paper_example():
    assert coefficients("bone", [1, 0], beta=0.7) == pytest.approx([1.75, -0.75], abs=1e-12)
    assert sum(coefficients("bone", [0.3, 0.2, 0.5])) == pytest.approx(1.0)


def test_backbone_row_preference_gives_one_hot_coefficients():
    for n in (2, 3, 4):
        for j, row in enumerate(training_weights("backbones", n, 0.7)):
            lam = coefficients("bone", row, beta=0.7)
            assert lam == pytest.approx([1.0 if k == j else 0.0 for k in range(n)], abs=1e-12)


def test_bone_coefficients_recover_the_preference_in_reward_space():
    gen = torch.Generator().manual_seed(1)
    for n in (2, 3, 5):
        b = bone_matrix(n, 0.7)
        r = torch.randn(n, dtype=torch.float64, generator=gen)  # per-objective rewards
        h = b @ r  # backbone rewards h_j = Σ_i B_ji r_i
        mu = torch.rand(n, dtype=torch.float64, generator=gen)
        mu = mu / mu.sum()
        lam = torch.tensor(coefficients("bone", mu.tolist(), beta=0.7), dtype=torch.float64)
        assert float(lam @ h) == pytest.approx(float(mu @ r), abs=1e-12)  # Σ_j λ_j h_j = Σ_i μ_i r_i


def test_rs_and_aba_use_the_preference_itself():
    assert coefficients("rs", [2, 6]) == pytest.approx([0.25, 0.75])
    assert coefficients("aba", [0.2, 0.3, 0.5]) == pytest.approx([0.2, 0.3, 0.5])


@pytest.mark.parametrize(
    "weights, match",
    [
        ([0.5], "2 objectives"),
        ([0.5, -0.5], "negative"),
        ([float("nan"), 1.0], "finite"),
        ([float("inf"), 1.0], "finite"),
        ([0.0, 0.0], "all zero"),
        (["a", 1.0], "finite"),
    ],
)
def test_bad_weights_are_refused_with_the_value_and_the_fix(weights, match):
    with pytest.raises(ValueError, match=match) as err:
        normalize_weights(weights, 2)
    assert "fix:" in str(err.value)


def test_weights_not_summing_to_one_are_normalised():
    assert normalize_weights([1, 3], 2) == pytest.approx([0.25, 0.75])


def test_bad_beta_and_unknown_method():
    with pytest.raises(ValueError, match="beta=0.4"):
        bone_matrix(2, 0.4)
    with pytest.raises(ValueError, match="unknown merge method 'soup'"):
        coefficients("soup", [0.5, 0.5])


# --------------------------------------------------------------------------- LoRA merging


@pytest.fixture
def three(tokenizer):
    model = lora_model(tiny_model(tokenizer, seed=0), 3, seed=5)
    adapters = [adapter_from_peft(model, f"a{j}") for j in range(3)]
    return model, adapters


def test_one_hot_coefficients_reproduce_each_ingredient(three, tokenizer, ids):
    peft_model, adapters = three
    soup = Soup(tiny_model(tokenizer, seed=0), adapters)
    for j in range(3):
        peft_model.base_model.set_adapter(f"a{j}")
        soup.apply([1.0 if k == j else 0.0 for k in range(3)])
        expected = logits(peft_model, ids)
        assert torch.allclose(logits(soup.model, ids), expected, atol=1e-5, rtol=1e-5)


def test_soup_weights_equal_sum_of_scaled_deltas(three, tokenizer):
    _, adapters = three
    base = tiny_model(tokenizer, seed=0)
    w0 = {n: m.weight.detach().clone() for n, m in base.named_modules() if n in adapters[0].factors}
    soup = Soup(base, adapters)
    lam = [1.75, -0.5, -0.25]
    soup.apply(lam)
    modules = dict(base.named_modules())
    for name, original in w0.items():
        expected = original + merged_delta(adapters, lam, name)
        err = (modules[name].weight - expected).norm() / expected.norm()
        assert err < 1e-6


def test_fold_concat_and_multi_active_forms_give_the_same_logits(three, tokenizer, ids):
    from peft import LoraConfig, get_peft_model

    peft_model, adapters = three
    lam = [0.6, 1.2, -0.8]
    # (1) folded into the weights
    soup = Soup(tiny_model(tokenizer, seed=0), adapters)
    soup.apply(lam)
    folded = logits(soup.model, ids)
    # (2) one rank-concatenated adapter (rank 12, scaling 1)
    cat = concat_adapter(adapters, lam)
    host = get_peft_model(
        tiny_model(tokenizer, seed=0),
        LoraConfig(r=12, lora_alpha=12, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
    )
    with torch.no_grad():
        for name, module in host.named_modules():
            clean = name.removeprefix("base_model.model.")
            if clean in cat.factors:
                module.lora_A["default"].weight.copy_(cat.factors[clean][0])
                module.lora_B["default"].weight.copy_(cat.factors[clean][1])
    concatenated = logits(host.eval(), ids)
    # (3) three active adapters with per-adapter scales
    peft_model.base_model.set_adapter(["a0", "a1", "a2"])
    for module in peft_model.modules():
        if hasattr(module, "set_scale") and hasattr(module, "lora_A"):
            for j, c in enumerate(lam):
                module.set_scale(f"a{j}", c)
    multi = logits(peft_model, ids)
    scale = folded.abs().max()
    assert (folded - concatenated).abs().max() / scale < 1e-5
    assert (folded - multi).abs().max() / scale < 1e-5
    assert (folded - logits(tiny_model(tokenizer, seed=0), ids)).abs().max() / scale > 1e-3  # the merge did something


def test_negative_coefficient_extrapolates_and_opposite_copies_cancel(three, tokenizer, ids):
    _, adapters = three
    base_logits = logits(tiny_model(tokenizer, seed=0), ids)
    soup = Soup(tiny_model(tokenizer, seed=0), [adapters[0], copy.deepcopy(adapters[0])])
    soup.apply([1.0, -1.0])
    assert torch.allclose(logits(soup.model, ids), base_logits, atol=1e-6)
    soup.apply([-1.0, 0.0])  # weight −1 negates: W0 − ΔW
    modules = dict(soup.model.named_modules())
    name = sorted(adapters[0].factors)[0]
    w0 = dict(tiny_model(tokenizer, seed=0).named_modules())[name].weight
    assert torch.allclose(modules[name].weight, w0 - adapters[0].delta(name), atol=1e-6)
    soup.restore()
    assert torch.allclose(logits(soup.model, ids), base_logits, atol=1e-6)


def test_soup_refuses_an_adapter_for_another_architecture(three, tokenizer):
    _, adapters = three
    with pytest.raises(ValueError, match="do not fit"):
        Soup(tiny_model(tokenizer, seed=0, hidden=64), adapters)
    with pytest.raises(ValueError, match="2 coefficients for 3 adapters"):
        Soup(tiny_model(tokenizer, seed=0), adapters).apply([0.5, 0.5])


# --------------------------------------------------------------------------- unfolded and per-row merges


def test_unfolded_merge_gives_the_folded_logits_and_never_writes_the_weights(three, tokenizer, ids):
    _, adapters = three
    lam = [0.6, 1.2, -0.8]
    folded = Soup(tiny_model(tokenizer, seed=0).double(), adapters)
    folded.apply(lam)
    model = tiny_model(tokenizer, seed=0).double()
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    unfolded = Soup(model, adapters, unfolded=True)
    unfolded.apply(lam)
    assert (logits(unfolded.model, ids) - logits(folded.model, ids)).abs().max() < 1e-10
    assert all(torch.equal(p, w0[n.replace(".base.", ".")]) for n, p in model.named_parameters())  # W_0 untouched
    unfolded.restore()
    assert (logits(model, ids) - logits(tiny_model(tokenizer, seed=0).double(), ids)).abs().max() < 1e-12


def test_a_16_bit_model_keeps_the_merge_unrounded(three, tokenizer, ids):
    """Folding a small delta into bf16 weights rounds most of it away; unfolded, the delta is kept exactly
    (float32 factors) and the merged model's logits err against float64 no more than the bf16 base's own do."""
    _, adapters = three
    small = [dataclasses.replace(a, scaling=a.scaling * 1e-4) for a in adapters]  # deltas ~1e-3 of the weights
    lam = [0.6, 1.2, -0.8]
    name = sorted(adapters[0].factors)[0]
    want = sum(c * a.delta(name) for c, a in zip(lam, small))
    folded = Soup(tiny_model(tokenizer, seed=0).bfloat16(), small, unfolded=False)
    w0 = dict(folded.model.named_modules())[name].weight.detach().float().clone()
    folded.apply(lam)
    kept = dict(folded.model.named_modules())[name].weight.detach().float() - w0
    assert (kept - want).norm() / want.norm() > 0.5  # folding lost most of the delta
    soup = Soup(tiny_model(tokenizer, seed=0).bfloat16(), small)
    assert soup.unfolded  # the default for 16-bit weights
    soup.apply(lam)
    wrapper = dict(soup.model.named_modules())[name]
    assert (wrapper.b_act @ wrapper.a_act - want).abs().max() < 1e-6 * want.abs().max()  # the delta, unrounded
    exact = Soup(tiny_model(tokenizer, seed=0).double(), small)
    exact.apply(lam)
    err_merged = (logits(soup.model, ids).double() - logits(exact.model, ids)).abs().max()
    err_base = (
        (
            logits(tiny_model(tokenizer, seed=0).bfloat16(), ids).double()
            - logits(tiny_model(tokenizer, seed=0).double(), ids)
        )
        .abs()
        .max()
    )
    assert err_merged < 1.5 * err_base, (err_merged, err_base)


def test_each_batch_row_carries_its_own_preference(three, tokenizer):
    """apply_rows: row b of one batch gives the logits of the model merged for λ_b alone (fp64: exactly)."""
    _, adapters = three
    rows = [[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [-0.5, 1.0, 0.5]]
    ids = torch.tensor([[5, 9, 13, 2, 7]] * len(rows))
    soup = Soup(
        tiny_model(tokenizer, seed=0).double(), adapters
    )  # folded by default: rows switch it to the unfolded form
    soup.apply([0.3, 0.3, 0.4])
    soup.apply_rows(rows)
    together = logits(soup.model, ids)
    assert soup.coefficients is None and soup.rows == rows
    for b, lam in enumerate(rows):
        soup.apply(lam)  # back to the folded form for one preference
        assert (together[b] - logits(soup.model, ids[b : b + 1])[0]).abs().max() < 1e-10
    soup.apply_rows(rows[:2])
    with pytest.raises(ValueError, match="a batch of 3 rows for 2 per-row preferences"):
        logits(soup.model, ids)
    assert (
        logits(soup.model, ids[:1].repeat(4, 1))[2] - together[0]
    ).abs().max() < 1e-10  # a multiple of the rows is tiled


def test_a_copy_of_an_unfolded_model_keeps_its_own_merge(three, tokenizer, ids):
    """MOD's experts and the value ensemble deep-copy a merged model: the copy must not follow later merges."""
    _, adapters = three
    soup = Soup(tiny_model(tokenizer, seed=0), adapters, unfolded=True)
    soup.apply([1.0, 0.0, 0.0])
    expert = copy.deepcopy(soup.model)
    first = logits(expert, ids)
    soup.apply([0.0, 1.0, 0.0])
    assert torch.equal(logits(expert, ids), first)
    assert (logits(soup.model, ids) - first).abs().max() > 1e-3
