"""Validation of the objectives (and of their independent judges) on three test-split sets.

``resources/validation/`` holds, for the *test* split of each task (never used to fit anything):
- ``<objective>/pairs.jsonl`` — a better and a worse response for the same prompt (``kind`` clear or
  subtle). Pairwise accuracy = share ordered like the label (ties count as wrong).
- ``<objective>/adversarial.jsonl`` — responses that try to game that objective (echoes, filler,
  gibberish, loops, laughter stuffing, invented facts, telegraphic summaries, …; ``attack`` names it).
- ``<objective>/good.jsonl`` (``summary/good.jsonl`` for both summary objectives) — genuinely good
  responses written for the same prompts.

The bar (issue 19): pairwise accuracy ≥ 90 % and no adversarial response above the 25th percentile
of the good responses' scores on the objective it targets. ``python -m mage objectives check --write``
writes ``assets/objective_checks.json``; docs/OBJECTIVES.md quotes it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from . import locations
from .io import write_json_atomic
from .objectives import get_objective
from .tasks import RESOURCES, split_rows

VALIDATION = RESOURCES / "validation"
TASK_OF = {
    "helpful": "assistant",
    "harmless": "assistant",
    "humorous": "assistant",
    "faithful": "summary",
    "quality": "summary",
}
MIN_ACCURACY = 0.9
MAX_ADVERSARIAL_PERCENTILE = 25.0


def load_set(objective: str, kind: str) -> list[dict]:
    """One validation set of an objective, each row with its prompt (``input``) attached."""
    if kind not in ("pairs", "adversarial", "good"):
        raise ValueError(f"unknown validation set {kind!r}; fix: use pairs, adversarial or good")
    folder = "summary" if kind == "good" and TASK_OF.get(objective) == "summary" else objective
    if objective not in TASK_OF:
        raise ValueError(f"no validation sets for objective {objective!r}; fix: use one of {sorted(TASK_OF)}")
    return split_rows(VALIDATION / folder / f"{kind}.jsonl", TASK_OF[objective], "test")


Scorer = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


def percentile_of(value: float, reference: Sequence[float]) -> float:
    """Percentile rank (0–100) of ``value`` among ``reference``: the share of reference scores below it."""
    ref = np.asarray(reference, dtype=float)
    return float(100.0 * (ref < value).mean()) if ref.size else float("nan")


def validate(objective: str, scorer: Scorer | None = None) -> dict:
    """Pair accuracy (all / clear / subtle), the good responses' quartiles and every adversarial attack's
    highest percentile among the good responses, for one objective's scorer (default: the registered one)."""
    scorer = scorer or get_objective(objective)
    pairs, adversarial, good = (load_set(objective, k) for k in ("pairs", "adversarial", "good"))
    better = np.array(scorer([p["input"] for p in pairs], [p["better"] for p in pairs]))
    worse = np.array(scorer([p["input"] for p in pairs], [p["worse"] for p in pairs]))
    wins = better > worse
    kinds = np.array([p.get("kind", "clear") for p in pairs])
    good_scores = np.array(scorer([g["input"] for g in good], [g["response"] for g in good]))
    adv_scores = np.array(scorer([a["input"] for a in adversarial], [a["response"] for a in adversarial]))
    p25 = float(np.percentile(good_scores, 25))
    attacks = {}
    for attack in sorted({a["attack"] for a in adversarial}):
        idx = [i for i, a in enumerate(adversarial) if a["attack"] == attack]
        top = max(idx, key=lambda i: adv_scores[i])
        attacks[attack] = {
            "n": len(idx),
            "mean": round(float(adv_scores[idx].mean()), 4),
            "max": round(float(adv_scores[top]), 4),
            "max_percentile": round(percentile_of(adv_scores[top], good_scores), 1),
            "above_p25": int((adv_scores[idx] > p25).sum()),
            "worst": adversarial[top]["response"][:160],
        }
    max_pct = max(a["max_percentile"] for a in attacks.values()) if attacks else 0.0
    accuracy = float(wins.mean())
    return {
        "objective": objective,
        "pairs": {
            "n": len(pairs),
            "accuracy": round(accuracy, 4),
            **{
                f"accuracy_{k}": round(float(wins[kinds == k].mean()), 4)
                for k in ("clear", "subtle")
                if (kinds == k).any()
            },
            "mean_margin": round(float((better - worse).mean()), 4),
            "misordered": [f"{p['id']}: {p.get('note', '')}" for p, ok in zip(pairs, wins) if not ok][:20],
        },
        "good": {
            "n": len(good),
            "p25": round(p25, 4),
            "median": round(float(np.median(good_scores)), 4),
            "mean": round(float(good_scores.mean()), 4),
        },
        "adversarial": {
            "n": len(adversarial),
            "max_percentile": max_pct,
            "above_p25": int((adv_scores > p25).sum()),
            "attacks": attacks,
        },
        "passes": bool(accuracy >= MIN_ACCURACY and max_pct <= MAX_ADVERSARIAL_PERCENTILE),
        "_scores": {"better": better, "worse": worse, "good": good_scores, "adversarial": adv_scores},
    }


def agreement(scorer_result: dict, judge_result: dict) -> dict:
    """How often the judge agrees with the scorer: Spearman over every scored response of the three
    sets, and the share of pairs both order the same way."""
    from scipy.stats import spearmanr

    a, b = scorer_result["_scores"], judge_result["_scores"]
    flat = lambda s: np.concatenate([s["better"], s["worse"], s["good"], s["adversarial"]])  # noqa: E731
    same = ((a["better"] > a["worse"]) == (b["better"] > b["worse"])).mean()
    return {"spearman": round(float(spearmanr(flat(a), flat(b)).statistic), 4), "pair_agreement": round(float(same), 4)}


def check_objectives(names: Sequence[str] | None = None, *, judges: bool = True) -> list[dict]:
    """Validate each objective's scorer and, with ``judges``, its independent judge and their agreement."""
    from .judges import get_judge

    results = []
    for name in names or list(TASK_OF):
        scorer = validate(name)
        row = {k: v for k, v in scorer.items() if k != "_scores"}
        if judges:
            judge = validate(name, get_judge(name))
            row["judge"] = {k: v for k, v in judge.items() if k not in ("_scores", "objective")}
            row["judge_agreement"] = agreement(scorer, judge)
        results.append(row)
    return results


def write_report(results: list[dict], path=None) -> None:
    from .objectives import OBJECTIVES

    path = path or locations.assets() / "objective_checks.json"
    write_json_atomic(
        path,
        {
            "min_accuracy": MIN_ACCURACY,
            "max_adversarial_percentile": MAX_ADVERSARIAL_PERCENTILE,
            "signatures": {r["objective"]: OBJECTIVES[r["objective"]].signature for r in results},
            "results": results,
        },
    )
