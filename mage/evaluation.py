"""Evaluation: generate for a split with a fixed seed, score every objective, mean ± standard error.

A point's standard error is taken over prompts (each prompt's samples are averaged first), so
prompts, not samples, are the unit of replication.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

from .decoding import SamplingConfig, generate, sample_seed
from .objectives import score_all
from .methods import Engine
from .tasks import Task

EVAL_SAMPLING = dict(temperature=1.0, top_p=0.9, top_k=0)  # the papers' setting (SPEC §4)
QUOTED = 5  # prompts whose first reply a point keeps whole (``quotes``), so reports can quote every method × μ


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def eval_seeds(n_prompts: int, samples: int, seed: int) -> list[int]:
    """The seeds of ``n_prompts`` × ``samples`` rows, prompt-major (see :func:`sample_seed`)."""
    return [sample_seed(seed, p, s) for p in range(n_prompts) for s in range(samples)]


def evaluate_model(
    model,
    tokenizer,
    task: Task,
    *,
    guide=None,
    split: str = "test",
    samples: int = 2,
    seed: int = 0,
    max_prompts: int | None = None,
    sampling: SamplingConfig | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> dict:
    """Scores of the model as it is now on a split: per-objective mean and standard error over prompts."""
    examples = task.examples(split)[:max_prompts]
    sampling = sampling or SamplingConfig(max_new_tokens=task.max_new_tokens, **EVAL_SAMPLING)
    inputs = [ex.input for ex in examples for _ in range(samples)]
    seeds = eval_seeds(len(examples), samples, seed)
    started = time.time()
    gens = generate(
        model,
        tokenizer,
        [task.messages(x) for x in inputs],
        sampling,
        seeds=seeds,
        batch_size=batch_size,
        guide=guide,
        progress=progress,
    )
    texts = [g.text for g in gens]
    scores = score_all(task.objectives, inputs, texts)
    judged = judge_scores(task.objectives, inputs, texts)
    means, stderr, per_prompt = {}, {}, {}
    for name, values in {**scores, **judged}.items():
        per_prompt[name] = [sum(values[p * samples : (p + 1) * samples]) / samples for p in range(len(examples))]
        means[name], stderr[name] = mean_stderr(per_prompt[name])
    lengths = [len(g.token_ids) for g in gens]
    return {
        "means": {n: means[n] for n in task.objectives},
        "stderr": {n: stderr[n] for n in task.objectives},
        "judge_means": {n: means[n] for n in judged},
        "judge_stderr": {n: stderr[n] for n in judged},
        "fluency": fluency(texts),
        "n_prompts": len(examples),
        "samples_per_prompt": samples,
        "mean_tokens": sum(lengths) / len(lengths),
        "finished_fraction": sum(g.finished for g in gens) / len(gens),
        "wall_time_s": round(time.time() - started, 1),
        "per_prompt": per_prompt,
        "examples": [
            {"input": inputs[i][:200], "response": gens[i].text} for i in range(0, len(gens), max(1, len(gens) // 4))
        ][:4],
        "quotes": [
            {"input": inputs[p * samples], "response": gens[p * samples].text}
            for p in range(min(QUOTED, len(examples)))
        ],
    }


def judge_scores(objectives: Sequence[str], inputs: Sequence[str], texts: Sequence[str]) -> dict[str, list[float]]:
    """The independent judges' scores (``judge:<objective>``) for the objectives that have one
    (:mod:`mage.judges`): reported beside the training scorers, never used to train or choose."""
    from .judges import JUDGED, get_judge

    return {f"judge:{n}": get_judge(n)(inputs, texts) for n in objectives if n in JUDGED}


def fluency(texts: Sequence[str]) -> dict[str, float]:
    """The fluency guard's readings: mean loop score, share of degenerate replies (loops or gibberish:
    form gate < 0.5), share of replies that end mid-sentence."""
    from . import textfeatures as tf

    n = max(1, len(texts))
    return {
        "repetition": sum(tf.repetition(t) for t in texts) / n,
        "degenerate": sum(tf.form_gate(t) < 0.5 for t in texts) / n,
        "cut_off": sum(not tf.is_complete(t) for t in texts) / n,
    }


def evaluate_point(engine: Engine, method: str, weights: Sequence[float], *, strength: float = 1.0, **kwargs) -> dict:
    """Prepare ``method`` for μ (merge, guidance) on the engine, then :func:`evaluate_model`."""
    model, guide = engine.prepare(method, weights, strength)
    return {
        "method": method,
        "weights": engine.current.weights,
        "strength": strength if guide is not None and not getattr(guide, "reranks", False) else None,
        "coefficients": engine.current.coefficients or None,
        **evaluate_model(model, engine.policy.tokenizer, engine.task, guide=guide, **kwargs),
    }
