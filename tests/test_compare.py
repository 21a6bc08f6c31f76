"""Paired comparisons with bootstrap intervals on hand-made results files with known answers."""

from __future__ import annotations

import pytest

from mage.compare import compare, markdown
from mage.pareto import reference_point


def _record(method, weights, per_prompt, strength=None):
    means = {o: sum(v) / len(v) for o, v in per_prompt.items()}
    return {"method": method, "weights": weights, "per_prompt": per_prompt, "means": means, "strength": strength}


def _result(shift_b=0.0, prompts=6):
    grid = [[i / 4, 1 - i / 4] for i in range(5)]
    records = []
    for w in grid:
        a = {"x": [w[0] + 0.01 * p for p in range(prompts)], "y": [w[1] + 0.02 * p for p in range(prompts)]}
        records.append(_record("rs", w, a))
        records.append(_record("bone", w, {o: [v + shift_b for v in vs] for o, vs in a.items()}))
    ref = reference_point([[r["means"]["x"], r["means"]["y"]] for r in records])
    return {"task": "t", "objectives": ["x", "y"], "reference_point": ref, "records": records}


def test_a_constant_gain_is_found_with_certainty():
    summary = compare(_result(shift_b=0.1), resamples=200)
    (pair,) = summary["comparisons"]
    assert (pair["a"], pair["b"]) == ("bone", "rs")
    assert pair["mean_scalarised_diff"] == pytest.approx(0.1) and pair["mean_scalarised_diff_se"] == pytest.approx(
        0.0, abs=1e-12
    )
    assert (
        pair["hypervolume_diff"] > 0 and pair["hypervolume_diff_ci"][0] > 0 and pair["p_hypervolume_a_greater"] == 1.0
    )
    # both methods follow μ perfectly: controllability 1, no difference
    assert summary["methods"]["rs"]["controllability"] == pytest.approx(1.0) and pair[
        "controllability_diff_ci"
    ] == pytest.approx([0.0, 0.0])
    assert summary["methods"]["rs"]["spread"]["x"] == pytest.approx(1.0)
    lo, hi = summary["methods"]["rs"]["hypervolume_ci"]
    assert lo <= summary["methods"]["rs"]["hypervolume"] <= hi
    assert "bone vs rs" in markdown(summary)


def test_identical_methods_differ_by_nothing():
    pair = compare(_result(shift_b=0.0), resamples=100)["comparisons"][0]
    assert (
        pair["hypervolume_diff"] == 0.0
        and pair["hypervolume_diff_ci"] == [0.0, 0.0]
        and pair["mean_scalarised_diff"] == 0.0
    )


def test_unequal_prompt_counts_are_refused():
    result = _result()
    result["records"][0]["per_prompt"] = {o: v[:3] for o, v in result["records"][0]["per_prompt"].items()}
    with pytest.raises(ValueError, match="different numbers of prompts"):
        compare(result)


def test_a_beta_ablation_is_compared_against_one_shared_reference_point():
    from mage.compare import ablation

    settings = {
        "prompts": None,
        "samples": 1,
        "seed": 0,
        "split": "test",
        "grid": [[i / 4, 1 - i / 4] for i in range(5)],
    }
    main = {**_result(), "settings": settings}
    worse = {
        **_result(shift_b=-0.1),
        "settings": {**settings, "beta": 0.6},
    }  # its bone lies 0.1 below the main file's on both objectives
    merged, pairs = ablation(main, {"b0.6": worse}, keep=("rs",))
    assert sorted({r["method"] for r in merged["records"]}) == ["bone", "bone-b0.6", "rs"]
    assert pairs == [("bone", "rs"), ("bone", "bone-b0.6"), ("bone-b0.6", "rs")]
    # the corner moves down to the worse variant's points: 0.1 below the main file's minimum, minus 1 % of the range
    assert merged["reference_point"] == pytest.approx(
        reference_point([[r["means"]["x"], r["means"]["y"]] for r in merged["records"]])
    )
    assert merged["reference_point"][0] < main["reference_point"][0] - 0.09
    summary = compare(merged, resamples=100, pairs=pairs)
    by = {(c["a"], c["b"]): c for c in summary["comparisons"]}
    assert (
        by[("bone", "bone-b0.6")]["mean_scalarised_diff"] == pytest.approx(0.1)
        and by[("bone", "bone-b0.6")]["p_hypervolume_a_greater"] == 1.0
    )
    assert by[("bone", "rs")]["mean_scalarised_diff"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"settings \['seed'\] differ"):
        ablation(main, {"b0.8": {**worse, "settings": {**settings, "seed": 1}}})
    with pytest.raises(ValueError, match="no 'bone' records in the main"):
        ablation({**main, "records": [r for r in main["records"] if r["method"] == "rs"]}, {"b0.6": worse})


def test_the_basic_interval_reflects_the_bootstrap_distribution_about_the_estimate():
    from mage.compare import basic_interval

    samples = [1.0 + 0.01 * k for k in range(101)]  # resamples sit above the estimate: 1.0 … 2.0
    lo, hi = basic_interval(1.2, samples)
    assert lo == pytest.approx(2 * 1.2 - 1.975) and hi == pytest.approx(2 * 1.2 - 1.025)
    assert basic_interval(1.2, samples, (0.5, 1.0)) == pytest.approx([0.5, 1.0])  # clipped to the statistic's range


def test_hypervolume_intervals_cover_a_known_front_at_about_their_level():
    """A simulated sweep (11 points on a known linear front, 60 prompts, per-prompt noise 0.15): noise
    inflates the hypervolume estimate, and the basic bootstrap interval still covers the true one."""
    import numpy as np

    from mage.pareto import hypervolume

    rng = np.random.default_rng(1)
    grid = [[i / 10, 1 - i / 10] for i in range(11)]
    truth = [[0.5 + 0.06 * w[0], 0.5 + 0.06 * w[1]] for w in grid]
    ref = [0.45, 0.45]
    true_hv = hypervolume(truth, ref)
    covered, percentile_covered, runs = 0, 0, 30
    for _ in range(runs):
        records = [
            _record("bone", w, {o: list(t[k] + rng.normal(0, 0.15, 60)) for k, o in enumerate("xy")})
            for w, t in zip(grid, truth)
        ]
        summary = compare(
            {"task": "t", "objectives": ["x", "y"], "reference_point": ref, "records": records},
            resamples=200,
            seed=int(rng.integers(1 << 30)),
        )
        s = summary["methods"]["bone"]
        covered += s["hypervolume_ci"][0] <= true_hv <= s["hypervolume_ci"][1]
        # the plain percentile interval is the basic one reflected about the estimate
        plo, phi = 2 * s["hypervolume"] - s["hypervolume_ci"][1], 2 * s["hypervolume"] - s["hypervolume_ci"][0]
        percentile_covered += plo <= true_hv <= phi
        assert s["hypervolume_bias"] > 0  # noise inflates a max-like statistic
    assert covered / runs >= 0.8 and percentile_covered / runs <= 0.6


def test_the_mip_splits_exactly_into_level_and_steering():
    """A method that follows μ steers; one shifted up by a constant gains level only; one that ignores μ
    has no steering at all."""
    base = _result(shift_b=0.1)
    flat = [
        _record("flat", r["weights"], {"x": [0.6] * 6, "y": [0.3 + 0.01 * p for p in range(6)]})
        for r in base["records"]
        if r["method"] == "rs"
    ]
    summary = compare({**base, "records": base["records"] + flat}, resamples=50)
    for m in ("rs", "bone", "flat"):
        s = summary["methods"][m]
        assert s["mip"] == pytest.approx(s["mean_scalarised"]) and s["level"] + s["steering"] == pytest.approx(s["mip"])
    assert summary["methods"]["flat"]["steering"] == pytest.approx(0.0, abs=1e-12) and summary["methods"]["flat"][
        "level"
    ] == pytest.approx((0.6 + 0.325) / 2)
    # rs: r_i = μ_i + prompt offsets on the 5-point grid μ_x ∈ {0, ¼, ½, ¾, 1}: Cov(μ_x, r_x) = Var(μ_x) = 0.125, twice
    assert summary["methods"]["rs"]["steering"] == pytest.approx(0.25)
    (pair,) = [c for c in summary["comparisons"] if (c["a"], c["b"]) == ("bone", "rs")]
    assert pair["level_diff"] == pytest.approx(0.1) and pair["steering_diff"] == pytest.approx(0.0, abs=1e-12)
    assert pair["level_verdict"] == "A > B" and pair["steering_verdict"] == "no difference shown"
    assert "| bone vs rs | scorer |" in markdown(summary)


def test_holm_adjusts_step_down_and_stays_monotone():
    from mage.compare import holm, z_test

    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.6, 0.6]) == [1.0, 1.0]
    assert z_test(0.0, 0.0) == 1.0 and z_test(0.1, 0.0) == 0.0 and z_test(1.96, 1.0) == pytest.approx(0.05, abs=1e-3)


def test_an_interval_never_excludes_its_own_estimate():
    """At a bounded statistic's edge the basic interval can exclude its estimate (controllability 0.99
    with every resample below it: reflected above 1, clipped to [1, 1]); then the percentile interval
    widened to the estimate is reported instead."""
    import numpy as np

    from mage.compare import basic_interval, interval

    samples = [0.9 + 0.001 * k for k in range(50)]
    assert basic_interval(0.99, samples, (-1.0, 1.0)) == [1.0, 1.0]
    ci, how = interval(0.99, samples, (-1.0, 1.0))
    assert ci == pytest.approx([float(np.percentile(samples, 2.5)), 0.99]) and how.startswith("percentile")
    ci, how = interval(0.93, samples, (-1.0, 1.0))  # inside the resamples: the basic interval, unchanged
    assert ci == basic_interval(0.93, samples, (-1.0, 1.0)) and ci[0] <= 0.93 <= ci[1] and how == "basic"


def test_judges_are_compared_beside_the_scorers_and_a_fixed_model_never_steers():
    from mage.compare import fixed_baselines

    result = _result(shift_b=0.05)
    for r in result["records"]:  # a judge that sees bone's gain only half as large
        r["per_prompt"] |= {
            f"judge:{o}": [v - (0.025 if r["method"] == "bone" else 0.0) for v in r["per_prompt"][o]]
            for o in ("x", "y")
        }
    table = {
        "rows": {
            "base": {},
            "expert:x": {
                "per_prompt": {"x": [0.9] * 6, "y": [0.1] * 6, "judge:x": [0.9] * 6, "judge:y": [0.1] * 6},
                "means": {"x": 0.9, "y": 0.1},
            },
            "backbone:0": {
                "per_prompt": {"x": [0.55] * 6, "y": [0.55] * 6, "judge:x": [0.5] * 6, "judge:y": [0.5] * 6},
                "means": {"x": 0.55, "y": 0.55},
            },
        }
    }
    summary = compare(fixed_baselines(result, table), resamples=50)
    assert summary["judges"] == ["judge:x", "judge:y"]
    (pair,) = [c for c in summary["comparisons"] if (c["a"], c["b"]) == ("bone", "rs")]
    assert pair["level_diff"] == pytest.approx(0.05) and pair["judge_level_diff"] == pytest.approx(0.025)
    fixed = summary["methods"]["fixed-best"]
    assert fixed["mip"] == pytest.approx(0.55) and fixed["steering"] == pytest.approx(
        0.0, abs=1e-12
    )  # the backbone beats the expert's 0.5
    assert summary["methods"]["fixed:expert:x"]["mip"] == pytest.approx(0.5)
    (vs_fixed,) = [c for c in summary["comparisons"] if (c["a"], c["b"]) == ("bone", "fixed-best")]
    assert vs_fixed["steering_diff"] == pytest.approx(summary["methods"]["bone"]["steering"])
    table["rows"]["expert:x"]["per_prompt"] = {o: v[:3] for o, v in table["rows"]["expert:x"]["per_prompt"].items()}
    with pytest.raises(ValueError, match="paired by prompt"):
        fixed_baselines(result, table)


def test_the_claims_table_reads_each_claim_from_the_compare_results(tmp_path):
    """A claim is a row when both its methods were compared: its scorer and judge differences, the level and
    steering split, and a verdict that says whether the corrected test supports it and whether the judge
    agrees; a "matches" claim is supported by no difference; versions come from the sweep's signatures."""
    import json

    from mage.claims import claim_rows, load_claims

    def comparison(a, b, mip, verdict, judge_verdict=None):
        c = {"a": a, "b": b, "mip_verdict": verdict}
        for part, d in (("mip", mip), ("level", mip - 0.001), ("steering", 0.001)):
            c |= {f"{part}_diff": d, f"{part}_diff_se": 0.002, f"{part}_verdict": verdict}
            if judge_verdict:
                c |= {f"judge_{part}_diff": d / 2, f"judge_{part}_diff_se": 0.003}
        if judge_verdict:
            c["judge_mip_verdict"] = judge_verdict
        return c

    summary = {
        "n_prompts": 60,
        "resamples": 1000,
        "judges": ["judge:faithful"],
        "comparisons": [
            comparison("bone", "rs", 0.02, "A > B", "A > B"),
            comparison("mage-e", "ensemble-e", 0.0005, "no difference shown", "no difference shown"),
            comparison("mage-i", "bone", -0.01, "A < B", "no difference shown"),
        ],
    }
    rows = {r["claim"]: r for r in claim_rows("summary", summary)}
    assert len(rows) == 3  # claims whose methods were not compared are left out
    bone = rows["Bone Soup beats Rewarded Soup"]
    assert bone["scorer"] == "+0.0200 ± 0.0020" and bone["judge"] == "+0.0100 ± 0.0030"
    assert bone["level"] == "+0.0190 ± 0.0020 (A > B)" and bone["verdict"] == "A > B (supports); judge: A > B"
    assert rows["A merged explicit value model matches the ensemble"]["verdict"].startswith(
        "no difference shown (supports)"
    )
    assert rows["MAGE (implicit) improves on its stage 1"]["verdict"] == (
        "A < B (does not support); judge: no difference shown"
    )
    (tmp_path / "summary-compare.json").write_text(json.dumps({**summary, "judges": []}))
    sweep = {"scorers": {"faithful": "faithful|d|1|3", "quality": "quality|d|1|1"}}
    (tmp_path / "summary.json").write_text(json.dumps(sweep))
    table = load_claims(["summary"], tmp_path)
    assert "| — |" in table and "(supports; no judge)" in table  # no judge measured: said, not invented
    assert "60 test prompts" in table and "objectives: faithful v3, quality v1" in table
    with pytest.raises(FileNotFoundError, match="python -m mage compare --task assistant"):
        load_claims(["assistant"], tmp_path)
