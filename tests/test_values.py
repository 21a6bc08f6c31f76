"""Value models judged teacher-forced: padding-free reference values, and the held-out check report."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mage.models import tiny_model
from mage.values import ExplicitValueModel, new_head, value_scores

ROWS = [  # prompt ids (no loss) + completion ids (loss), of different lengths: the batch is padded
    {"input_ids": [5, 6, 7, 8, 9, 10, 11], "completion_mask": [0, 0, 0, 1, 1, 1, 1]},
    {"input_ids": [12, 13, 14, 15, 16], "completion_mask": [0, 0, 1, 1, 1]},
    {"input_ids": [17, 18, 19], "completion_mask": [0, 0, 1]},
]


def reference(model, kind, row):
    """One row alone, no padding, position by position."""
    ids = torch.tensor([row["input_ids"]])
    positions = [t for t, m in enumerate(row["completion_mask"]) if m]
    half = positions[: max(1, math.ceil(len(positions) / 2))]
    with torch.no_grad():
        if kind == "explicit":
            values, _ = model(input_ids=ids)
            return {"end": float(values[0, positions[-1]]), "half": float(values[0, half[-1]])}
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        token = lambda t: float(logprobs[t - 1, row["input_ids"][t]])  # noqa: E731
        return {"end": sum(token(t) for t in positions), "half": sum(token(t) for t in half)}


@pytest.mark.parametrize("kind", ["explicit", "implicit"])
def test_value_scores_equal_one_row_at_a_time(tokenizer, kind):
    lm = tiny_model(tokenizer, seed=3)
    model = ExplicitValueModel(lm, new_head(32, 3)).eval() if kind == "explicit" else lm.eval()
    got = value_scores(model, kind, ROWS, batch_size=3)
    for row, value in zip(ROWS, got):
        want = reference(model, kind, row)
        assert value["end"] == pytest.approx(want["end"], abs=1e-4)
        assert value["half"] == pytest.approx(want["half"], abs=1e-4)
    if kind == "implicit":  # a prefix's reward sums fewer (negative) log-probs
        assert all(v["half"] >= v["end"] for v in got)
    assert got[2]["end"] == pytest.approx(got[2]["half"])  # one completion token: half is the end


def test_value_check_writes_correlations_for_every_objective_and_the_grid(tiny_checkpoints, tmp_path):
    from mage.reports import value_check

    _, base = tiny_checkpoints
    out = tmp_path / "vc.json"
    result = value_check("summary", "explicit", samples=2, max_prompts=3, base=str(base), out=out)
    saved = json.loads(out.read_text())
    assert saved["n_samples"] == 6 and saved["objectives"] == ["faithful", "quality"]
    for corr in [*saved["spearman"].values(), *saved["merged"]]:
        for at in ("end", "half"):
            assert math.isnan(corr[at]) or -1.0 <= corr[at] <= 1.0
    assert [m["weights"] for m in result["merged"]][0] == [0.0, 1.0] and len(result["merged"]) == 11


def test_lmc_curve_interpolates_between_two_value_models(tiny_checkpoints, tmp_path):
    from mage.reports import lmc_curve

    _, base = tiny_checkpoints
    result = lmc_curve(
        "summary", "implicit", steps=3, strength=2.0, prompts=2, base=str(base), out=tmp_path / "lmc.json"
    )
    assert [r["t"] for r in result["rows"]] == [0.0, 0.5, 1.0] and result["pair"] == ["faithful", "quality"]
    for o in ("faithful", "quality"):
        first, mid, last = (r["means"][o] for r in result["rows"])
        assert result["chord_gap"][o]["mean_gap"] == pytest.approx(mid - (first + last) / 2)
    with pytest.raises(ValueError, match="two different objectives"):
        lmc_curve("summary", "implicit", pair=(1, 1), base=str(base))


def test_the_chord_gap_is_paired_over_prompts():
    from mage.reports import chord_gap

    # two prompts; prompt 0 lies 0.2 above its chord at t = 0.5, prompt 1 lies 0.4 above it
    per_prompt = [[0.0, 1.0], [0.7, 1.4], [1.0, 1.0]]
    rows = [{"t": t, "means": {"r": sum(v) / 2}, "per_prompt": {"r": v}} for t, v in zip((0.0, 0.5, 1.0), per_prompt)]
    gap = chord_gap(rows, "r")
    assert gap["mean_gap"] == pytest.approx(0.3) and gap["fraction_above"] == 1.0
    assert gap["stderr"] == pytest.approx(0.1)  # sample sd of (0.2, 0.4) is 0.1414; over √2 prompts
    flat = chord_gap([{**r, "per_prompt": {"r": [r["means"]["r"]] * 2}} for r in rows], "r")
    assert flat["mean_gap"] == pytest.approx(0.3) and flat["stderr"] == pytest.approx(0.0)


def test_an_lmc_run_resumes_from_its_journal(tiny_checkpoints, tmp_path, monkeypatch):
    import mage.reports as reports

    _, base = tiny_checkpoints
    first = reports.lmc_curve(
        "summary", "explicit", steps=3, strength=1.5, prompts=2, base=str(base), out=tmp_path / "a.json"
    )

    def must_not_run(*args, **kwargs):
        raise AssertionError("a journaled LMC point was generated again")

    monkeypatch.setattr(reports, "evaluate_model", must_not_run)
    again = reports.lmc_curve(
        "summary", "explicit", steps=3, strength=1.5, prompts=2, base=str(base), out=tmp_path / "b.json"
    )
    assert again["rows"] == first["rows"] and again["strength"] == 1.5
    with pytest.raises(AssertionError, match="generated again"):  # other settings are other points
        reports.lmc_curve(
            "summary", "explicit", steps=3, strength=0.5, prompts=2, base=str(base), out=tmp_path / "c.json"
        )


def test_training_rows_take_a_prefix_of_the_shared_pool_without_resampling():
    from mage.values import ValueConfig, training_rows

    pool = [{"id": f"p{i}", "sample": s} for i in range(5) for s in range(4)]
    assert training_rows(pool, ValueConfig()) == pool
    rows = training_rows(pool, ValueConfig(kind="explicit", train_prompts=2, train_samples=3))
    assert [(r["id"], r["sample"]) for r in rows] == [(f"p{i}", s) for i in range(2) for s in range(3)]
    # implicit models pick (best, worst) among all of a prompt's samples
    assert len(training_rows(pool, ValueConfig(kind="implicit", train_prompts=2, train_samples=3))) == 8
    with pytest.raises(ValueError, match="train_prompts=0"):
        ValueConfig(train_prompts=0)


def test_implicit_value_check_also_reports_the_learned_part(tiny_checkpoints, tmp_path):
    from mage.reports import value_check

    _, base = tiny_checkpoints
    saved = value_check("summary", "implicit", samples=2, max_prompts=3, base=str(base), out=tmp_path / "vc.json")
    for corr in saved["spearman"].values():
        assert {"end", "half", "end_minus_base", "half_minus_base"} <= set(corr)
        assert all(math.isnan(corr[k]) or -1.0 <= corr[k] <= 1.0 for k in corr)
