"""The claims table: each claim the papers make (and the baselines we add), against what ``compare`` measured.

One row per claim × task: the paper's result, our MIP difference on the training scorers and on the independent
judges, its split into level (better on average) and steering (following μ), and the verdict after Holm's
correction across the task's whole comparison table. Built from the ``<task>-compare.json`` files, so
``docs/RESULTS.md`` is regenerated, never hand-copied: ``python -m mage claims``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .pools import signature_versions


@dataclass(frozen=True)
class Claim:
    text: str  # what is claimed, as a reader would say it
    a: str  # the method claimed better (or equal, for "matches" claims)
    b: str
    paper: str  # what the paper reports, in a few words ("[ours]" for a baseline the papers do not run)
    expects: str = "A > B"  # the verdict that supports the claim; "no difference shown" for a "matches" claim


def _per_guide() -> list[Claim]:
    """MAGE's claims, once per kind of value model (the methods found in the method table)."""
    from .methods import Guidance, Merge, find_method

    claims = []
    for kind in ("implicit", "explicit"):
        mage = find_method(Merge("bone"), Guidance(kind))
        claims += [
            Claim(f"MAGE ({kind}) improves on its stage 1", mage, "bone", "MAGE: guidance improves Bone Soup"),
            Claim(
                f"A merged {kind} value model matches the ensemble",
                mage,
                find_method(Merge("bone"), Guidance(kind, "ensemble")),
                "MAGE: the merged value model tracks the prediction ensemble at 1/n the cost",
                "no difference shown",
            ),
            Claim(
                f"Guidance needs a μ-dependent base ({kind})",
                mage,
                find_method(Merge("base"), Guidance(kind)),
                "MAGE: guiding a fixed SFT base stays in a small cluster",
            ),
        ]
    return claims


CLAIMS = [
    Claim("Bone Soup beats Rewarded Soup", "bone", "rs", "Bone Soups: larger hypervolume on HH and Reddit; Theorem 1"),
    Claim("The inverse λ = B⁻¹μ matters", "bone", "aba", "Bone Soups ablation: λ = μ (ABA) is worse"),
    *_per_guide(),
    Claim("MAGE (implicit) beats MOD", "mage-i", "mod", "MAGE: MOD is a weaker baseline"),
    Claim("ReACT beats Rewarded Soup", "react", "rs", "ReACT (image classifiers, not LMs): 88.9 % vs 83.6 %"),
    Claim("Merging beats the best single fixed model", "bone", "fixed-best", "[ours] what sliders must be worth"),
    Claim(
        "Step-wise guidance beats best-of-k at equal value-model calls",
        "mage-e",
        "bon-e",
        "[ours] compute-matched baseline",
    ),
]


def _cell(c: dict, prefix: str, part: str) -> str:
    key = f"{prefix}{part}"
    if f"{key}_diff" not in c:
        return "—"
    return f"{c[f'{key}_diff']:+.4f} ± {c[f'{key}_diff_se']:.4f}"


def _verdict(c: dict, claim: Claim, judged: bool) -> str:
    """The scorer's Holm verdict on MIP, whether it supports the claim, and whether the judge agrees."""
    scorer = c["mip_verdict"]
    supports = "supports" if scorer == claim.expects else "does not support"
    if not judged:
        return f"{scorer} ({supports}; no judge)"
    judge = c["judge_mip_verdict"]
    return f"{scorer} ({supports}); judge: {judge}"


def claim_rows(task: str, summary: dict, claims: Sequence[Claim] = CLAIMS) -> list[dict]:
    """The claims ``summary`` (a ``compare`` result) can answer, one row each; a claim whose methods were not
    both swept is left out."""
    by_pair = {(c["a"], c["b"]): c for c in summary["comparisons"]}
    judged = bool(summary.get("judges"))
    rows = []
    for claim in claims:
        c = by_pair.get((claim.a, claim.b))
        if c is None:
            continue
        rows.append(
            {
                "claim": claim.text,
                "paper": claim.paper,
                "task": task,
                "scorer": _cell(c, "", "mip"),
                "judge": _cell(c, "judge_", "mip") if judged else "—",
                "level": _cell(c, "", "level") + f" ({c['level_verdict']})",
                "steering": _cell(c, "", "steering") + f" ({c['steering_verdict']})",
                "verdict": _verdict(c, claim, judged),
            }
        )
    return rows


def claims_markdown(summaries: dict[str, dict], versions: dict[str, str] | None = None) -> str:
    """The claims table over tasks (``{task: compare result}``), with what each task's numbers stand on."""
    lines = [
        "| claim | paper's result | task | ours on scorer: Δ MIP ± se | ours on judge | level (Holm verdict) | "
        "steering (Holm verdict) | verdict after correction |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, summary in summaries.items():
        for r in claim_rows(task, summary):
            lines.append(
                "| "
                + " | ".join(
                    r[k] for k in ("claim", "paper", "task", "scorer", "judge", "level", "steering", "verdict")
                )
                + " |"
            )
    notes = [
        f"- {task}: {s['n_prompts']} test prompts, {s.get('resamples', '?')} bootstrap resamples"
        + f"; objectives: {(versions or {}).get(task) or 'measured before scorer versions were recorded'}"
        + f" (`{s.get('command', 'python -m mage compare --task ' + task)}`)"
        for task, s in summaries.items()
    ]
    return "\n".join(lines + [""] + notes) + "\n"


def load_claims(tasks: Sequence[str], results: Path) -> str:
    """The claims table for ``tasks`` from ``<results>/<task>-compare.json`` (and the sweep file beside it)."""
    summaries, versions = {}, {}
    for task in tasks:
        path = results / f"{task}-compare.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; fix: python -m mage compare --task {task}")
        summaries[task] = json.loads(path.read_text())
        sweep = results / f"{task}.json"
        if sweep.is_file():
            versions[task] = signature_versions(json.loads(sweep.read_text()).get("scorers"))
    return claims_markdown(summaries, versions)
