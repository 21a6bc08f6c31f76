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
- Level and steering: the mean scalarised reward (PARM's MIP, the mean over the grid of μ · r) splits
  exactly into *level* Σ_i mean_g(μ_i) mean_g(r_i) (better on average; 1/n × the mean reward on a
  symmetric grid) and *steering* Σ_i Cov_g(μ_i, r_i) (following μ; 0 for a model that ignores μ),
  each per prompt, so every part gets a paired standard error.
- Judges: where the records carry the independent judges' scores (``judge:<o>``), the same statistics
  are computed on them: a gain that exists only on the scorer that was optimised shows up.
- A controllability interval is the basic one unless that excludes its own estimate (it can, at the
  bound 1); then the percentile interval widened to the estimate (``controllability_ci_method``).
  The bootstrap is hand-rolled rather than ``scipy.stats.bootstrap`` because one resample of prompts is
  shared by every method and grid point, which the paired comparisons need.
- Multiplicity: every comparison's level, steering and MIP differences get a two-sided z-test p-value,
  Holm-adjusted across the whole family (the claims table), with the verdict at 5 %.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .evaluation import mean_stderr
from .pareto import controllability, hypervolume, reference_point

# (A, B): the comparisons the papers make, run when both methods are in the file
COMPARISONS = [
    ("bone", "rs"),
    ("bone", "aba"),
    ("mage-i", "bone"),
    ("mage-e", "bone"),
    ("mage-i", "ensemble-i"),
    ("mage-e", "ensemble-e"),
    ("mage-i", "sft+i"),
    ("mage-e", "sft+e"),
    ("mage-i", "mod"),
    ("mage-e", "mod"),
    ("react", "rs"),
    ("react", "bone"),
    ("mod", "rs"),
    ("rs", "fixed-best"),
    ("bone", "fixed-best"),
    ("mage-i", "fixed-best"),
    ("mage-e", "fixed-best"),
    ("mage-e", "bon-e"),  # step-wise guidance vs the same value-model budget spent on whole replies
]


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


def _split_per_prompt(rows: Sequence[dict], objectives: Sequence[str]) -> dict[str, np.ndarray]:
    """Per prompt, the mean scalarised reward (MIP) over the method's grid and its exact split into level
    Σ_i mean_g(μ_i) mean_g(r_i) and steering Σ_i Cov_g(μ_i, r_i) (population covariance over the grid)."""
    weights = np.asarray([r["weights"] for r in rows], dtype=float)  # (G, n)
    r = np.stack(
        [np.stack([np.asarray(row["per_prompt"][o], dtype=float) for o in objectives], axis=1) for row in rows]
    )  # (G, P, n)
    weights_mean, r_mean = weights.mean(axis=0), r.mean(axis=0)  # (n,), (P, n)
    level = r_mean @ weights_mean
    steering = np.einsum("gn,gpn->p", weights - weights_mean, r - r_mean) / len(rows)
    return {"mip": level + steering, "level": level, "steering": steering}


def _judged(result: dict) -> list[str]:
    """The judges every record carries (``judge:<o>`` per objective), or none when any is missing."""
    names = [f"judge:{o}" for o in result["objectives"]]
    return names if all(n in r["per_prompt"] for r in result["records"] for n in names) else []


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the adjusted p-values, in the input's order (monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def z_test(diff: float, se: float) -> float:
    """Two-sided p-value of a paired mean difference against 0 (normal approximation; 1 when both are 0)."""
    if se == 0:
        return 1.0 if diff == 0 else 0.0
    return math.erfc(abs(diff / se) / math.sqrt(2))


def interval(
    estimate: float, samples: Sequence[float], bounds: tuple[float, float] = (-math.inf, math.inf)
) -> tuple[list[float], str]:
    """The basic interval, or — where it excludes its own estimate, as it can at a bounded statistic's edge —
    the percentile interval widened to contain the estimate. Returns (interval, method)."""
    basic = basic_interval(estimate, samples, bounds)
    if math.isnan(basic[0]) or basic[0] <= estimate <= basic[1]:
        return basic, "basic"
    finite = _finite(samples)
    lo, hi = float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))
    return [min(lo, estimate), max(hi, estimate)], "percentile, widened to the estimate"


def _stats(
    rows: Sequence[dict], objectives: Sequence[str], ref: Sequence[float], idx: np.ndarray | None = None
) -> tuple[float, float]:
    """(hypervolume, controllability score) of one method, prompts resampled by ``idx`` (None = as is)."""
    points = []
    for r in rows:
        if idx is None:
            points.append([r["means"][o] for o in objectives])
        else:
            points.append([float(np.asarray(r["per_prompt"][o])[idx].mean()) for o in objectives])
    return hypervolume(points, ref), controllability([r["weights"] for r in rows], points)["score"]


def basic_interval(
    estimate: float, samples: Sequence[float], bounds: tuple[float, float] = (-math.inf, math.inf)
) -> list[float]:
    """The basic bootstrap 95 % interval [2θ̂ − q₉₇.₅, 2θ̂ − q₂.₅] (NaN resamples dropped), clipped to the
    statistic's range ``bounds``."""
    finite = _finite(samples)
    if not finite or math.isnan(estimate):
        return [math.nan, math.nan]
    lo, hi = 2 * estimate - float(np.percentile(finite, 97.5)), 2 * estimate - float(np.percentile(finite, 2.5))
    return [min(max(lo, bounds[0]), bounds[1]), min(max(hi, bounds[0]), bounds[1])]


def _finite(samples: Sequence[float]) -> list[float]:
    return [
        s for s in samples if not math.isnan(s)
    ]  # a resample can make a statistic undefined (e.g. a flat objective's Spearman)


def _bias(estimate: float, samples: Sequence[float]) -> float:
    finite = _finite(samples)
    return float(np.mean(finite)) - estimate if finite else math.nan


def compare(
    result: dict, *, resamples: int = 1000, seed: int = 0, pairs: Sequence[tuple[str, str]] | None = None
) -> dict:
    """Per-method statistics with intervals, and the pairwise comparisons ``pairs`` (default :data:`COMPARISONS`)
    that have both methods in the file."""
    objectives, ref = list(result["objectives"]), list(result["reference_point"])
    rows = _method_rows(result)
    sizes = {len(r["per_prompt"][objectives[0]]) for r in result["records"]}
    if len(sizes) != 1:
        raise ValueError(
            f"records were evaluated on different numbers of prompts {sorted(sizes)}; fix: re-run the sweep with one "
            "--prompts for every method"
        )
    n = sizes.pop()
    judges = _judged(result)
    judge_ref = reference_point(_judge_points(result["records"], judges)) if judges else None
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, n, n) for _ in range(resamples)]
    boot = {m: [_stats(rs, objectives, ref, idx) for idx in draws] for m, rs in rows.items()}
    methods = {}
    for m, rs in rows.items():
        hv, ctrl = _stats(rs, objectives, ref)
        mean, se = mean_stderr(_scalarised_per_prompt(rs, objectives).tolist())
        hvs, ctrls = [b[0] for b in boot[m]], [b[1] for b in boot[m]]
        ctrl_ci, ctrl_method = interval(ctrl, ctrls, (-1.0, 1.0))
        methods[m] = {
            "hypervolume": hv,
            "hypervolume_ci": basic_interval(hv, hvs, (0.0, math.inf)),
            "hypervolume_bias": _bias(hv, hvs),
            "controllability": ctrl,
            "controllability_ci": ctrl_ci,
            "controllability_ci_method": ctrl_method,
            "controllability_bias": _bias(ctrl, ctrls),
            "mean_scalarised": mean,
            "mean_scalarised_se": se,
            **{
                f"{k}{suffix}": v
                for k, values in _split_per_prompt(rs, objectives).items()
                for suffix, v in zip(("", "_se"), mean_stderr(values.tolist()))
            },
            "spread": spread(rs, objectives),
            "strength": rs[0].get("strength"),
            "points": len(rs),
        }
        if judges:
            methods[m]["judge"] = _judge_stats(rs, judges, judge_ref)
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
        comparisons.append(
            {
                "a": a,
                "b": b,
                "hypervolume_diff": hv_diff,
                "hypervolume_diff_ci": basic_interval(hv_diff, d_hv),
                "p_hypervolume_a_greater": float(
                    np.mean([d > 0 for d in d_hv])
                ),  # a share of resamples, not a probability
                "controllability_diff": ctrl_diff,
                "controllability_diff_ci": basic_interval(ctrl_diff, d_ctrl, (-2.0, 2.0)),
                "mean_scalarised_diff": d_mean,
                "mean_scalarised_diff_se": d_se,
                **_paired_split(rows[a], rows[b], objectives, ""),
            }
        )
        if judges:
            comparisons[-1] |= _paired_split(rows[a], rows[b], judges, "judge_")
    _adjust(comparisons, ["", "judge_"] if judges else [""])
    return {
        "task": result["task"],
        "objectives": objectives,
        "reference_point": ref,
        "n_prompts": n,
        "resamples": resamples,
        "seed": seed,
        "judges": judges,
        "judge_reference_point": judge_ref,
        "methods": methods,
        "comparisons": comparisons,
    }


SPLIT_PARTS = ("mip", "level", "steering")


def _paired_split(a: Sequence[dict], b: Sequence[dict], objectives: Sequence[str], prefix: str) -> dict:
    """A − B on MIP, level and steering, each with its paired standard error and z-test p-value."""
    sa, sb = _split_per_prompt(a, objectives), _split_per_prompt(b, objectives)
    out = {}
    for part in SPLIT_PARTS:
        d, se = mean_stderr((sa[part] - sb[part]).tolist())
        out |= {f"{prefix}{part}_diff": d, f"{prefix}{part}_diff_se": se, f"{prefix}{part}_p": z_test(d, se)}
    return out


def _adjust(comparisons: list[dict], prefixes: Sequence[str], alpha: float = 0.05) -> None:
    """Holm across every comparison × part × (scorer, judge) in the file: adjusted p-values and verdicts."""
    keys = [(c, f"{prefix}{part}") for c in comparisons for prefix in prefixes for part in SPLIT_PARTS]
    for (c, key), p in zip(keys, holm([c[f"{key}_p"] for c, key in keys])):
        c[f"{key}_p_holm"] = p
        c[f"{key}_verdict"] = ("A > B" if c[f"{key}_diff"] > 0 else "A < B") if p < alpha else "no difference shown"


def _judge_points(rows: Sequence[dict], judges: Sequence[str]) -> list[list[float]]:
    """Each record's point on the judges, from its per-prompt scores (every record carries them)."""
    return [[float(np.mean(r["per_prompt"][j])) for j in judges] for r in rows]


def _judge_stats(rows: Sequence[dict], judges: Sequence[str], ref: Sequence[float]) -> dict:
    """A method's statistics on the independent judges (point estimates with standard errors)."""
    points = _judge_points(rows, judges)
    split = {k: mean_stderr(v.tolist()) for k, v in _split_per_prompt(rows, judges).items()}
    return {
        "hypervolume": hypervolume(points, ref),
        "controllability": controllability([r["weights"] for r in rows], points)["score"],
        **{f"{k}{suffix}": v for k, ms in split.items() for suffix, v in zip(("", "_se"), ms)},
    }


def fixed_baselines(result: dict, table: dict) -> dict:
    """Add, from an expert × objective table of the same prompts and seeds (``table``), each ingredient as a
    *single fixed model* — the same replies at every μ of the grid (``fixed:<label>``) — and the best of them
    by MIP as ``fixed-best``: the baseline a merging method must beat to be worth its sliders."""
    objectives = list(result["objectives"])
    grid = [r["weights"] for r in result["records"] if r["method"] == result["records"][0]["method"]]
    n = len(result["records"][0]["per_prompt"][objectives[0]])
    records, best = [], None
    for label, row in table["rows"].items():
        if label == "base":
            continue
        if len(row["per_prompt"][objectives[0]]) != n:
            raise ValueError(
                f"the table's {label} has {len(row['per_prompt'][objectives[0]])} prompts, the sweep {n}; fix: run "
                "`table` with the sweep's split, "
                f"--samples and --max-prompts so the replies are paired by prompt"
            )
        fixed = [
            {
                "method": f"fixed:{label}",
                "weights": w,
                "per_prompt": row["per_prompt"],
                "means": row["means"],
                "strength": None,
            }
            for w in grid
        ]
        records += fixed
        mip = float(_split_per_prompt(fixed, objectives)["mip"].mean())
        if best is None or mip > best[0]:
            best = (mip, fixed)
    if best is not None:
        records += [{**r, "method": "fixed-best", "of": r["method"]} for r in best[1]]
    return {**result, "records": result["records"] + records}


# the settings two results files must share for their points to be compared prompt by prompt
PAIRED_SETTINGS = ("prompts", "samples", "seed", "split", "base", "max_new_tokens", "temperature", "top_p", "grid")


def ablation(
    result: dict, variants: dict[str, dict], *, method: str = "bone", keep: Sequence[str] = ("rs", "aba")
) -> tuple[dict, list[tuple[str, str]]]:
    """One results file for an ablation of ``method`` (e.g. Bone Soup's β): ``method`` and the ``keep``
    methods from ``result``, plus ``method``'s records of each variant file relabelled ``<method>-<label>``,
    with the reference point recomputed over all of their points (so every hypervolume is measured
    against the same corner). Returns the merged result and the pairs to compare: ``method`` against
    each variant, and each variant against the kept baselines."""
    objectives = list(result["objectives"])
    records = [r for r in result["records"] if r["method"] in (method, *keep)]
    if not any(r["method"] == method for r in records):
        raise ValueError(
            f"{result['task']}: no {method!r} records in the main results file; fix: python -m mage evaluate --task "
            f"{result['task']} --methods {method}"
        )
    kept = [k for k in keep if any(r["method"] == k for r in records)]
    pairs = [(method, k) for k in kept]
    for label, variant in variants.items():
        if list(variant["objectives"]) != objectives:
            raise ValueError(f"variant {label}: objectives {variant['objectives']} differ from {objectives}")
        differ = [k for k in PAIRED_SETTINGS if variant["settings"].get(k) != result["settings"].get(k)]
        if differ:
            raise ValueError(
                f"variant {label}: settings {differ} differ from the main results file, so its points are not paired "
                "by prompt; "
                f"fix: re-run it with the main file's --prompts/--samples/--seed/--split"
            )
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
    lines = [
        "| method | hypervolume [95 % CI] | controllability [95 % CI] | mean Σ μ_i r_i ± se | strength |",
        "|---|---|---|---|---|",
    ]
    for m, s in summary["methods"].items():
        lo, hi = s["hypervolume_ci"]
        clo, chi = s["controllability_ci"]
        strength = "—" if s["strength"] is None else f"{s['strength']:g}"
        lines.append(
            f"| {m} | {h(s['hypervolume'])} [{h(lo)}, {h(hi)}] | {s['controllability']:.3f} [{clo:.3f}, {chi:.3f}] | "
            f"{f(s['mean_scalarised'])} ± {f(s['mean_scalarised_se'])} | {strength} |"
        )
    if summary["comparisons"]:
        lines += [
            "",
            "| A vs B | Δ hypervolume [95 % CI] | resamples with HV_A > HV_B | Δ controllability [95 % CI] | Δ mean Σ "
            "μ_i r_i ± paired se |",
            "|---|---|---|---|---|",
        ]
        for c in summary["comparisons"]:
            lo, hi = c["hypervolume_diff_ci"]
            clo, chi = c["controllability_diff_ci"]
            lines.append(
                f"| {c['a']} vs {c['b']} | {c['hypervolume_diff']:+.3g} [{lo:+.3g}, {hi:+.3g}] | "
                f"{c['p_hypervolume_a_greater']:.2f} | "
                f"{c['controllability_diff']:+.3f} [{clo:+.3f}, {chi:+.3f}] | {c['mean_scalarised_diff']:+.4f} ± "
                f"{c['mean_scalarised_diff_se']:.4f} |"
            )
        lines += ["", split_markdown(summary)]
    return "\n".join(lines)


def split_markdown(summary: dict) -> str:
    """Level vs steering: each comparison's MIP difference split into its two parts, on the scorers and (where
    measured) the judges, with Holm-adjusted p-values and the verdict at 5 % across the whole table."""
    prefixes = [("", "scorer")] + ([("judge_", "judge")] if summary.get("judges") else [])
    lines = [
        "| A vs B | on | Δ MIP ± se (Holm p) | Δ level ± se (Holm p) | Δ steering ± se (Holm p) | verdict: level · "
        "steering |",
        "|---|---|---|---|---|---|",
    ]
    for c in summary["comparisons"]:
        for prefix, on in prefixes:
            cells = [
                f"{c[f'{prefix}{k}_diff']:+.4f} ± {c[f'{prefix}{k}_diff_se']:.4f} ({c[f'{prefix}{k}_p_holm']:.2g})"
                for k in SPLIT_PARTS
            ]
            lines.append(
                f"| {c['a']} vs {c['b']} | {on} | "
                + " | ".join(cells)
                + f" | {c[f'{prefix}level_verdict']} · {c[f'{prefix}steering_verdict']} |"
            )
    return "\n".join(lines)
