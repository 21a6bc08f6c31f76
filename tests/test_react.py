"""ReACT's closed form, checked as a minimiser and at its limits."""

from __future__ import annotations

import pytest
import torch

from mage.react import CorrectedHead, ReactState, correction, preference_correction, procrustes

D, N = 6, 40


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    zm = torch.randn(D, N, generator=gen, dtype=torch.float64)
    mix = torch.eye(D, dtype=torch.float64) + 0.3 * torch.randn(D, D, generator=gen, dtype=torch.float64)
    z = mix @ zm + 0.05 * torch.randn(D, N, generator=gen, dtype=torch.float64)
    return zm, z


def objective(w, zm, z, beta, o):
    return ((w @ zm - z) ** 2).sum() + beta * ((w - o) ** 2).sum()


def test_closed_form_is_the_minimiser(data):
    zm, z = data
    w, _ = correction(zm, z, beta=0.1)
    o = procrustes(z @ zm.T)
    w = w.clone().requires_grad_(True)
    objective(w, zm, z, 0.1, o).backward()
    assert w.grad.abs().max() < 1e-8


def test_beta_zero_is_least_squares(data):
    zm, z = data
    w, _ = correction(zm, z, beta=0.0)
    lstsq = torch.linalg.lstsq(zm.T, z.T).solution.T  # W Zm ≈ Z
    assert torch.allclose(w, lstsq, atol=1e-8)


def test_large_beta_approaches_the_rotation(data):
    zm, z = data
    o = procrustes(z @ zm.T)
    assert torch.allclose(o @ o.T, torch.eye(D, dtype=torch.float64), atol=1e-10)
    w, _ = correction(zm, z, beta=1e9)
    assert (w - o).abs().max() < 1e-5


def test_expert_equal_to_merged_gives_identity(data):
    zm, _ = data
    w, _ = correction(zm, zm, beta=0.1)
    assert torch.allclose(w, torch.eye(D, dtype=torch.float64), atol=1e-8)


def test_preference_correction_one_hot_and_minimiser(data):
    zm, z = data
    gen = torch.Generator().manual_seed(1)
    zm2 = torch.randn(D, N, generator=gen, dtype=torch.float64)
    z2 = 0.5 * zm2
    (w1, c1), (w2, c2) = correction(zm, z, 0.1), correction(zm2, z2, 0.1)
    assert torch.allclose(preference_correction([w1, w2], [c1, c2], [1.0, 0.0]), w1, atol=1e-8)
    assert torch.allclose(preference_correction([w1, w2], [c1, c2], [0.0, 1.0]), w2, atol=1e-8)
    mu = [0.3, 0.7]
    wm = preference_correction([w1, w2], [c1, c2], mu).clone().requires_grad_(True)
    o1, o2 = procrustes(z @ zm.T), procrustes(z2 @ zm2.T)
    (mu[0] * objective(wm, zm, z, 0.1, o1) + mu[1] * objective(wm, zm2, z2, 0.1, o2)).backward()
    assert wm.grad.abs().max() < 1e-7  # W_μ minimises the μ-weighted sum of the objectives


def test_corrected_head_applies_w_before_the_head():
    head = torch.nn.Linear(D, 3, bias=False)
    w = torch.randn(D, D)
    h = torch.randn(2, 5, D)
    out = CorrectedHead(head, w)(h)
    assert torch.allclose(out, head((w @ h.unsqueeze(-1)).squeeze(-1)), atol=1e-5)
    assert torch.allclose(CorrectedHead(head, torch.eye(D))(h), head(h))


def test_react_method_with_one_hot_preference_corrects_toward_that_expert(tiny_checkpoints):
    from mage.decoding import SamplingConfig
    from mage.methods import Engine
    from mage.react import ReactState, react_path
    from mage.tasks import get_task

    _, base = tiny_checkpoints
    engine = Engine("summary", base=str(base))
    state = ReactState.load(react_path(get_task("summary")))
    assert state.objectives == ["faithful", "quality"] and state.ws.shape[1:] == (32, 32)
    assert torch.allclose(state.for_preference([1.0, 0.0]).double(), state.ws[0], atol=1e-4)
    gens = engine.generate("react", [0.5, 0.5], ["Some news."], SamplingConfig(max_new_tokens=3, greedy=True))
    assert len(gens[0].token_ids) <= 3
    plain = engine.generate(
        "rs", [0.5, 0.5], ["Some news."], SamplingConfig(max_new_tokens=3, greedy=True)
    )  # head restored
    assert engine.policy.model.lm_head is engine._head and plain[0].token_ids is not None


def test_factored_correction_equals_the_explicit_w_mu_and_decodes_the_same():
    gen = torch.Generator().manual_seed(7)
    D, N = 12, 40
    pairs = []
    for _ in range(3):
        zm = torch.randn(D, N, generator=gen, dtype=torch.float64)
        pairs.append(correction(zm, zm + 0.2 * torch.randn(D, N, generator=gen, dtype=torch.float64)))
    state = ReactState(["a", "b", "c"], torch.stack([w for w, _ in pairs]), torch.stack([c for _, c in pairs]), {})
    for mu in ([0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]):
        explicit = preference_correction([w for w, _ in pairs], [c for _, c in pairs], mu)
        factored = state.factored(mu)
        assert torch.allclose(factored.matrix(), explicit, atol=1e-9)
        h = torch.randn(2, 5, D, generator=gen)
        head = torch.nn.Linear(D, 9, bias=False)
        assert torch.allclose(CorrectedHead(head, factored)(h), CorrectedHead(head, explicit.float())(h), atol=1e-5)
