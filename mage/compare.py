"""Comparing methods on a sweep's results file, with uncertainty (SPEC §4).

The unit of replication is the prompt: every point of a sweep was generated on the same prompts
with the same seeds, so methods are compared *paired by prompt*.

- Hypervolume and controllability get *basic* (reverse-percentile) bootstrap intervals: prompts are
  resampled with replacement (one resample shared by every method and grid point), each point's
  means are recomputed, the statistic is recomputed against the results file's fixed reference
  point, and the interval is [2θ̂ − q₉₇.₅, 2θ̂ − q₂.₅]. Both statistics are biased by the noise in the
  point means (hypervolume is max-like, so noise inflates it; noise pulls a rank correlation to 0),
  and a resample adds the same noise again, so the plain percentile interval is shifted the wrong
  way (simulated: it covered a known hypervolume 32 % of the time, the basic interval 97 %;
  ``tests/test_compare.py``). The bootstrap bias (mean over resamples − θ̂) is reported beside each.
- Mean scalarised reward (Σ_i μ_i r_i averaged over the grid) gets a standard error over prompts.
- Pairwise comparisons (A vs B): the difference of each statistic, with its bootstrap interval
  (hypervolume, controllability) or paired standard error (scalarised reward).
- Spread: per objective, max − min of the point means across the grid — how far a method moves
  when μ moves (the compatibility analysis compares sft+ and MAGE on it).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .evaluation import mean_stderr
from .pareto import controllability, hypervolume, reference_point

# (A, B): the comparisons the papers make, run when both methods are in the file
COMPARISONS = [("bone", "rs"), ("bone", "aba"), ("mage-i", "bone"), ("mage-e", "bone"), ("mage-i", "ensemble-i"), ("mage-e", "ensemble-e"),
               ("mage-i", "sft+i"), ("mage-e", "sft+e"), ("mage-i", "mod"), ("mage-e", "mod"), ("react", "rs"), ("react", "bone"), ("mod", "rs")]


def _method_rows(result: dict) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for r in result["records"]:
        rows.setdefault(r["method"], []).append(r)
    return rows


def spread(records: Sequence[dict], objectives: Sequence[str]) -> dict[str, float]:
    """Per objective, max − min of the point means over the records: how far the rewards move with μ."""
    return {o: max(r["means"][o] for r in records) - min(r["means"][o] for r in records) for o in objectives}


def _scalarised_per_prompt(rows: Sequence[dict], objectives: Sequence[str]) -> np.ndarray:
    """(n_prompts,): Σ_i μ_i r_i per prompt, averaged over the method's grid points."""
    per = [sum(w * np.asarray(r["per_prompt"][o]) for w, o in zip(r["weights"], objectives)) for r in rows]
    return np.mean(per, axis=0)


def _stats(rows: Sequence[dict], objectives: Sequence[str], ref: Sequence[float], idx: np.ndarray | None = None) -> tuple[float, float]:
    """(hypervolume, controllability score) of one method, prompts resampled by ``idx`` (None = as is)."""
    points = []
    for r in rows:
        if idx is None:
            points.append([r["means"][o] for o in objectives])
        else:
            points.append([float(np.asarray(r["per_prompt"][o])[idx].mean()) for o in objectives])
    return hypervolume(points, ref), controllability([r["weights"] for r in rows], points)["score"]


def basic_interval(estimate: float, samples: Sequence[float], bounds: tuple[float, float] = (-math.inf, math.inf)) -> list[float]:
    """The basic bootstrap 95 % interval [2θ̂ − q₉₇.₅, 2θ̂ − q₂.₅] (NaN resamples dropped), clipped to the
    statistic's range ``bounds``."""
    finite = _finite(samples)
    if not finite or math.isnan(estimate):
        return [math.nan, math.nan]
    lo, hi = 2 * estimate - float(np.percentile(finite, 97.5)), 2 * estimate - float(np.percentile(finite, 2.5))
    return [min(max(lo, bounds[0]), bounds[1]), min(max(hi, bounds[0]), bounds[1])]


def _finite(samples: Sequence[float]) -> list[float]:
    return [s for s in samples if not math.isnan(s)]  # a resample can make a statistic undefined (e.g. a flat objective's Spearman)


def _bias(estimate: float, samples: Sequence[float]) -> float:
    finite = _finite(samples)
    return float(np.mean(finite)) - estimate if finite else math.nan


def compare(result: dict, *, resamples: int = 1000, seed: int = 0, pairs: Sequence[tuple[str, str]] | None = None) -> dict:
    """Per-method statistics with intervals, and the pairwise comparisons ``pairs`` (default :data:`COMPARISONS`)
    that have both methods in the file."""
    objectives, ref = list(result["objectives"]), list(result["reference_point"])
    rows = _method_rows(result)
    sizes = {len(r["per_prompt"][objectives[0]]) for r in result["records"]}
    if len(sizes) != 1:
        raise ValueError(f"records were evaluated on different numbers of prompts {sorted(sizes)}; fix: re-run the sweep with one --prompts for every method")
    n = sizes.pop()
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, n, n) for _ in range(resamples)]
    boot = {m: [_stats(rs, objectives, ref, idx) for idx in draws] for m, rs in rows.items()}
    methods = {}
    for m, rs in rows.items():
        hv, ctrl = _stats(rs, objectives, ref)
        mean, se = mean_stderr(_scalarised_per_prompt(rs, objectives).tolist())
        hvs, ctrls = [b[0] for b in boot[m]], [b[1] for b in boot[m]]
        methods[m] = {"hypervolume": hv, "hypervolume_ci": basic_interval(hv, hvs, (0.0, math.inf)), "hypervolume_bias": _bias(hv, hvs),
                      "controllability": ctrl, "controllability_ci": basic_interval(ctrl, ctrls, (-1.0, 1.0)), "controllability_bias": _bias(ctrl, ctrls),
                      "mean_scalarised": mean, "mean_scalarised_se": se,
                      "spread": spread(rs, objectives), "strength": rs[0].get("strength"), "points": len(rs)}
    comparisons = []
    for a, b in COMPARISONS if pairs is None else pairs:
        if a not in rows or b not in rows:
            continue
        d_hv = [x[0] - y[0] for x, y in zip(boot[a], boot[b])]
        d_ctrl = [x[1] - y[1] for x, y in zip(boot[a], boot[b])]
        diff = _scalarised_per_prompt(rows[a], objectives) - _scalarised_per_prompt(rows[b], objectives)
        d_mean, d_se = mean_stderr(diff.tolist())
        hv_diff = methods[a]["hypervolume"] - methods[b]["hypervolume"]
        ctrl_diff = methods[a]["controllability"] - methods[b]["controllability"]
        comparisons.append({"a": a, "b": b, "hypervolume_diff": hv_diff, "hypervolume_diff_ci": basic_interval(hv_diff, d_hv),
                            "p_hypervolume_a_greater": float(np.mean([d > 0 for d in d_hv])),  # a share of resamples, not a probability
                            "controllability_diff": ctrl_diff, "controllability_diff_ci": basic_interval(ctrl_diff, d_ctrl, (-2.0, 2.0)),
                            "mean_scalarised_diff": d_mean, "mean_scalarised_diff_se": d_se})
    return {"task": result["task"], "objectives": objectives, "reference_point": ref, "n_prompts": n, "resamples": resamples, "seed": seed,
            "methods": methods, "comparisons": comparisons}


# the settings two results files must share for their points to be compared prompt by prompt
PAIRED_SETTINGS = ("prompts", "samples", "seed", "split", "base", "max_new_tokens", "temperature", "top_p", "grid")


def ablation(result: dict, variants: dict[str, dict], *, method: str = "bone", keep: Sequence[str] = ("rs", "aba")) -> tuple[dict, list[tuple[str, str]]]:
    """One results file for an ablation of ``method`` (e.g. Bone Soup's β): ``method`` and the ``keep``
    methods from ``result``, plus ``method``'s records of each variant file relabelled ``<method>-<label>``,
    with the reference point recomputed over all of their points (so every hypervolume is measured
    against the same corner). Returns the merged result and the pairs to compare: ``method`` against
    each variant, and each variant against the kept baselines."""
    objectives = list(result["objectives"])
    records = [r for r in result["records"] if r["method"] in (method, *keep)]
    if not any(r["method"] == method for r in records):
        raise ValueError(f"{result['task']}: no {method!r} records in the main results file; fix: python -m mage evaluate --task {result['task']} --methods {method}")
    kept = [k for k in keep if any(r["method"] == k for r in records)]
    pairs = [(method, k) for k in kept]
    for label, variant in variants.items():
        if list(variant["objectives"]) != objectives:
            raise ValueError(f"variant {label}: objectives {variant['objectives']} differ from {objectives}")
        differ = [k for k in PAIRED_SETTINGS if variant["settings"].get(k) != result["settings"].get(k)]
        if differ:
            raise ValueError(f"variant {label}: settings {differ} differ from the main results file, so its points are not paired by prompt; "
                             f"fix: re-run it with the main file's --prompts/--samples/--seed/--split")
        name = f"{method}-{label}"
        found = [{**r, "method": name} for r in variant["records"] if r["method"] == method]
        if not found:
            raise ValueError(f"variant {label}: no {method!r} records")
        records += found
        pairs += [(method, name), *((name, k) for k in kept)]
    ref = reference_point([[r["means"][o] for o in objectives] for r in records])
    return {**result, "records": records, "reference_point": ref, "summary": {}}, pairs


def markdown(summary: dict) -> str:
    """The two tables docs/RESULTS.md shows: per method, and the pairwise comparisons."""
    f = "{:.4f}".format
    h = "{:.3g}".format  # hypervolumes are products of small ranges: significant digits, not decimals
    lines = ["| method | hypervolume [95 % CI] | controllability [95 % CI] | mean Σ μ_i r_i ± se | strength |", "|---|---|---|---|---|"]
    for m, s in summary["methods"].items():
        lo, hi = s["hypervolume_ci"]
        clo, chi = s["controllability_ci"]
        strength = "—" if s["strength"] is None else f"{s['strength']:g}"
        lines.append(f"| {m} | {h(s['hypervolume'])} [{h(lo)}, {h(hi)}] | {s['controllability']:.3f} [{clo:.3f}, {chi:.3f}] | "
                     f"{f(s['mean_scalarised'])} ± {f(s['mean_scalarised_se'])} | {strength} |")
    if summary["comparisons"]:
        lines += ["", "| A vs B | Δ hypervolume [95 % CI] | resamples with HV_A > HV_B | Δ controllability [95 % CI] | Δ mean Σ μ_i r_i ± paired se |", "|---|---|---|---|---|"]
        for c in summary["comparisons"]:
            lo, hi = c["hypervolume_diff_ci"]
            clo, chi = c["controllability_diff_ci"]
            lines.append(f"| {c['a']} vs {c['b']} | {c['hypervolume_diff']:+.3g} [{lo:+.3g}, {hi:+.3g}] | {c['p_hypervolume_a_greater']:.2f} | "
                         f"{c['controllability_diff']:+.3f} [{clo:+.3f}, {chi:+.3f}] | {c['mean_scalarised_diff']:+.4f} ± {c['mean_scalarised_diff_se']:.4f} |")
    return "\n".join(lines)
