"""Validation of the default objectives on hand-labelled (better, worse) pairs written for mage.

``resources/objective_checks/<objective>.jsonl`` holds pairs where a person judged one response
better for that objective. Pairwise accuracy = fraction of pairs the scorer orders the same way
(ties count as wrong). Below 80 % a scorer is not fit to be a reward.
"""
from __future__ import annotations

from typing import Sequence

from .io import read_jsonl, write_json_atomic
from .objectives import get_objective
from .tasks import ARTICLE_WORDS, RESOURCES, lee_corpus_path, truncate_words

CHECKS = RESOURCES / "objective_checks"
MIN_ACCURACY = 0.8


def load_pairs(name: str) -> list[dict]:
    rows = read_jsonl(CHECKS / f"{name}.jsonl")
    if rows and "article_index" in rows[0]:
        articles = lee_corpus_path().read_text(encoding="utf-8").splitlines()
        rows = [{**r, "prompt": truncate_words(articles[r["article_index"]], ARTICLE_WORDS)} for r in rows]
    return rows


def pairwise_accuracy(name: str) -> dict:
    pairs = load_pairs(name)
    objective = get_objective(name)
    inputs = [p["prompt"] for p in pairs]
    better = objective(inputs, [p["better"] for p in pairs])
    worse = objective(inputs, [p["worse"] for p in pairs])
    wins = [b > w for b, w in zip(better, worse)]
    return {"objective": name, "pairs": len(pairs), "accuracy": sum(wins) / len(pairs),
            "mean_margin": sum(b - w for b, w in zip(better, worse)) / len(pairs),
            "misordered": [p["note"] for p, ok in zip(pairs, wins) if not ok]}


def check_objectives(names: Sequence[str] | None = None) -> list[dict]:
    names = names or sorted(p.stem for p in CHECKS.glob("*.jsonl"))
    return [pairwise_accuracy(n) for n in names]


def write_report(results: list[dict], path="assets/objective_checks.json") -> None:
    write_json_atomic(path, {"min_accuracy": MIN_ACCURACY, "results": results})
