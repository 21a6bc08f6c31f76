"""Independent judges: a second instrument per objective, built differently from the training scorer.

A policy trained against a scorer can learn the scorer's blind spots (reward over-optimisation). The
evaluation therefore reports every objective twice: on the scorer that was optimised
(:mod:`mage.objectives`) and on a judge that was **never used for training or for choosing a
strength**. The judges differ from the scorers in both data and features:

- **data**: each judge is fitted on ratings written for the *validation*-split prompts and articles
  (``resources/judge_data/``: 7 rated replies per request plus extra harmful / hard-harmless / joke /
  hard-non-joke replies, 6 rated summaries per article); the scorers'
  learned parts are fitted on *train*-split data, and both are validated on *test*-split sets
  (``resources/validation/``).
- **features**: no MiniLM embedding, no scorer probe, no scorer gate. The assistant judges read
  hashed TF-IDF word and character n-grams of the reply and lexical overlap with the request;
  the summary judges read character-n-gram containment, unsupported numbers and names, readability
  (textstat), sentence shape and TF-IDF coverage of the article.

Each judge is a ridge regression onto the rating (scaled to [0, 1]), stored as safetensors
(``resources/judges/<objective>.safetensors``); ``python -m mage objectives fit-judges`` refits them.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Sequence

import numpy as np

from .objectives import Objective
from .tasks import RESOURCES, split_rows

JUDGE_DIR = RESOURCES / "judges"
JUDGE_DATA = {
    "assistant": [
        RESOURCES / "judge_data" / "assistant_validation.jsonl",
        RESOURCES / "judge_data" / "assistant_validation_extra.jsonl",
    ],
    "summary": [RESOURCES / "judge_data" / "summary_validation.jsonl"],
}
JUDGED = {
    "helpful": "assistant",
    "harmless": "assistant",
    "humorous": "assistant",
    "faithful": "summary",
    "quality": "summary",
}
RATING_MAX = {"helpful": 2, "harmless": 1, "humorous": 2, "faithful": 2, "quality": 2}
HASH_FEATURES = 2**14
TOKEN = re.compile(r"[A-Za-z]+|\d+")


def _hasher(kind: str):
    from sklearn.feature_extraction.text import HashingVectorizer

    if kind == "word":
        return HashingVectorizer(
            n_features=HASH_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm=None, lowercase=True
        )
    return HashingVectorizer(
        n_features=HASH_FEATURES,
        analyzer="char_wb",
        ngram_range=(3, 5),
        alternate_sign=False,
        norm=None,
        lowercase=True,
    )


def _lexical(request: str, reply: str) -> list[float]:
    """Overlap and shape of a reply, as bins (so the ridge can learn that both too little and too much
    overlap with the request are bad)."""
    req = {t.lower() for t in TOKEN.findall(request)}
    toks = [t.lower() for t in TOKEN.findall(reply)]
    n = len(toks)
    overlap = sum(t in req for t in toks) / n if n else 0.0
    distinct = len(set(toks)) / n if n else 0.0
    ends = float(bool(re.search(r"[.!?]['\")]*\s*$", reply.strip())))
    bins = [float(lo <= overlap < hi) for lo, hi in ((0, 0.1), (0.1, 0.3), (0.3, 0.5), (0.5, 0.8), (0.8, 1.01))]
    lengths = [float(lo <= n < hi) for lo, hi in ((0, 3), (3, 8), (8, 20), (20, 45), (45, 10**6))]
    return (
        bins
        + lengths
        + [distinct, float(distinct < 0.5), ends, reply.count("?") / max(1, n), reply.count("!") / max(1, n)]
    )


def _assistant_features(
    inputs: Sequence[str], responses: Sequence[str], idf: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(features, idf): hashed word and char n-gram TF-IDF of the reply (l2-normalised) + lexical bins."""
    counts = np.hstack(
        [_hasher("word").transform(responses).toarray(), _hasher("char").transform(responses).toarray()]
    ).astype(np.float32)
    if idf is None:
        df = (counts > 0).sum(axis=0)
        idf = (np.log((1 + len(responses)) / (1 + df)) + 1.0).astype(np.float32)
    tfidf = np.log1p(counts) * idf
    tfidf /= np.maximum(np.linalg.norm(tfidf, axis=1, keepdims=True), 1e-9)
    lex = np.array([_lexical(x, y) for x, y in zip(inputs, responses)], dtype=np.float32)
    return np.hstack([tfidf, lex]), idf


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def _char_grams(text: str, n: int = 4) -> set[str]:
    t = re.sub(r"\s+", " ", text.lower())
    return {t[i : i + n] for i in range(max(0, len(t) - n + 1))}


def _summary_features(article: str, summary: str) -> list[float]:
    """Hand-built summary features: containment, unsupported specifics, shape, readability, coverage."""
    grams = _char_grams(article)
    sents = _sentences(summary) or [summary]
    contain = [len(_char_grams(s) & grams) / max(1, len(_char_grams(s))) for s in sents]
    art_tokens = set(TOKEN.findall(article))
    art_lower = {t.lower() for t in art_tokens}
    toks = TOKEN.findall(summary)
    n = len(toks)
    numbers = [t for t in toks if t.isdigit()]
    names = [t for i, t in enumerate(toks) if t[0].isupper() and i > 0]
    bad_numbers = sum(t not in art_tokens for t in numbers)
    bad_names = sum(t.lower() not in art_lower for t in names)
    novel_words = sum(t.lower() not in art_lower for t in toks) / max(1, n)
    art_words = article.lower().split()
    copy8 = _copy(art_words, summary.lower().split(), 8)
    stops = sum(
        t.lower()
        in {
            "the",
            "a",
            "an",
            "of",
            "to",
            "in",
            "and",
            "is",
            "was",
            "were",
            "has",
            "have",
            "that",
            "for",
            "on",
            "by",
            "with",
        }
        for t in toks
    ) / max(1, n)
    ease = flesch_reading_ease(summary) / 100.0 if n else 0.0
    coverage = _tfidf_cosine(article, summary)
    length_bins = [float(lo <= n < hi) for lo, hi in ((0, 5), (5, 15), (15, 35), (35, 60), (60, 10**6))]
    return [
        min(contain),
        sum(contain) / len(contain),
        float(bad_numbers > 0),
        bad_numbers / max(1, len(numbers)),
        float(bad_names > 0),
        bad_names / max(1, len(names)),
        novel_words,
        copy8,
        stops,
        max(-1.0, min(1.2, ease)),
        coverage,
        math.log1p(n) / 5,
        len(sents) / 5.0,
        float(bool(re.search(r"[.!?]['\")]*\s*$", summary.strip()))),
        summary.count(",") / max(1, n),
        *length_bins,
    ]


def flesch_reading_ease(text: str) -> float:
    """Flesch reading ease with syllables estimated as vowel groups (no dictionary)."""
    toks = [t for t in TOKEN.findall(text) if t[0].isalpha()]
    if not toks:
        return 0.0
    syllables = sum(
        max(1, len(re.findall(r"[aeiouy]+", t.lower())) - (t.lower().endswith("e") and len(t) > 3)) for t in toks
    )
    return 206.835 - 1.015 * len(toks) / max(1, len(_sentences(text))) - 84.6 * syllables / len(toks)


def _copy(source: list[str], text: list[str], n: int) -> float:
    grams = [tuple(text[i : i + n]) for i in range(len(text) - n + 1)]
    if not grams:
        return 0.0
    have = {tuple(source[i : i + n]) for i in range(len(source) - n + 1)}
    return sum(g in have for g in grams) / len(grams)


def _tfidf_cosine(a: str, b: str) -> float:
    va, vb = _hasher("word").transform([a, b]).toarray()
    den = np.linalg.norm(va) * np.linalg.norm(vb)
    return float(va @ vb / den) if den else 0.0


def _design(
    objective: str, inputs: Sequence[str], responses: Sequence[str], idf: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    if JUDGED[objective] == "assistant":
        return _assistant_features(inputs, responses, idf)
    return np.array([_summary_features(x, y) for x, y in zip(inputs, responses)], dtype=np.float32), None


def _rows(objective: str) -> tuple[list[str], list[str], np.ndarray]:
    rows = split_rows(JUDGE_DATA[JUDGED[objective]], JUDGED[objective], "validation")
    return (
        [r["input"] for r in rows],
        [r["response"] for r in rows],
        np.array([r[objective] / RATING_MAX[objective] for r in rows], dtype=np.float32),
    )


JUDGE_L2 = {"assistant": 1.0, "summary": 1.0}


def fit_judge(objective: str) -> dict:
    """Fit one judge (ridge regression onto the scaled rating), save it, return its 5-fold
    cross-validated Spearman correlation with the ratings (folds grouped by prompt)."""
    import safetensors.numpy
    from scipy.stats import spearmanr
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GroupKFold

    from .io import write_bytes_atomic

    if objective not in JUDGED:
        raise ValueError(f"no judge for {objective!r}; fix: use one of {sorted(JUDGED)}")
    inputs, responses, target = _rows(objective)
    groups = np.unique(inputs, return_inverse=True)[1]
    alpha = JUDGE_L2[JUDGED[objective]]
    predicted = np.zeros_like(target)
    for train, test in GroupKFold(5).split(target, target, groups):
        x_train, idf = _design(objective, [inputs[i] for i in train], [responses[i] for i in train])
        x_test, _ = _design(objective, [inputs[i] for i in test], [responses[i] for i in test], idf)
        predicted[test] = Ridge(alpha=alpha).fit(x_train, target[train]).predict(x_test)
    rho = float(spearmanr(predicted, target).statistic)
    x, idf = _design(objective, inputs, responses)
    ridge = Ridge(alpha=alpha).fit(x, target)
    tensors = {"weight": ridge.coef_.astype(np.float32), "bias": np.array([ridge.intercept_], dtype=np.float32)}
    if idf is not None:
        tensors["idf"] = idf
    JUDGE_DIR.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(
        JUDGE_DIR / f"{objective}.safetensors",
        safetensors.numpy.save(tensors, metadata={"cv_spearman": f"{rho:.4f}", "n": str(len(target))}),
    )
    _load.cache_clear()
    return {"judge": objective, "cv_spearman": round(rho, 4), "n_rated": len(target)}


@lru_cache(maxsize=None)
def _load(objective: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    path = JUDGE_DIR / f"{objective}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; fix: python -m mage objectives fit-judges")
    return load_file(str(path))


def judge_scores(objective: str, inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
    """The judge's rating of each response in [0, 1] (an empty response scores 0)."""
    params = _load(objective)
    x, _ = _design(objective, list(inputs), list(responses), params.get("idf"))
    raw = x @ params["weight"] + params["bias"][0]
    return [0.0 if not y.strip() else float(min(1.0, max(0.0, r))) for r, y in zip(raw, responses)]


def get_judge(objective: str) -> Objective:
    """The independent judge of an objective, as an :class:`Objective` (for evaluation only)."""
    if objective not in JUDGED:
        raise ValueError(f"no judge for {objective!r}; fix: use one of {sorted(JUDGED)}")
    return Objective(
        objective,
        lambda xs, ys: judge_scores(objective, xs, ys),
        f"judge: ridge on {'TF-IDF + lexical' if JUDGED[objective] == 'assistant' else 'containment/readability'} "
        "features, validation-split ratings",
    )
