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
from .merging import normalize_weights
from .methods import Engine
from .tasks import Task

EVAL_SAMPLING = dict(temperature=1.0, top_p=0.9, top_k=0)  # the papers' setting (SPEC §4)


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


def evaluate_model(model, tokenizer, task: Task, *, guide=None, split: str = "test", samples: int = 2, seed: int = 0, max_prompts: int | None = None, sampling: SamplingConfig | None = None, batch_size: int = 16, progress: bool = False) -> dict:
    """Scores of the model as it is now on a split: per-objective mean and standard error over prompts."""
    examples = task.examples(split)[:max_prompts]
    sampling = sampling or SamplingConfig(max_new_tokens=task.max_new_tokens, **EVAL_SAMPLING)
    inputs = [ex.input for ex in examples for _ in range(samples)]
    seeds = eval_seeds(len(examples), samples, seed)
    started = time.time()
    gens = generate(model, tokenizer, [task.messages(x) for x in inputs], sampling, seeds=seeds, batch_size=batch_size, guide=guide, progress=progress)
    scores = score_all(task.objectives, inputs, [g.text for g in gens])
    means, stderr, per_prompt = {}, {}, {}
    for name in task.objectives:
        per_prompt[name] = [sum(scores[name][p * samples:(p + 1) * samples]) / samples for p in range(len(examples))]
        means[name], stderr[name] = mean_stderr(per_prompt[name])
    lengths = [len(g.token_ids) for g in gens]
    return {
        "means": means, "stderr": stderr, "n_prompts": len(examples), "samples_per_prompt": samples,
        "mean_tokens": sum(lengths) / len(lengths), "finished_fraction": sum(g.finished for g in gens) / len(gens),
        "wall_time_s": round(time.time() - started, 1), "per_prompt": per_prompt,
        "examples": [{"input": inputs[i][:200], "response": gens[i].text} for i in range(0, len(gens), max(1, len(gens) // 4))][:4],
    }


def evaluate_point(engine: Engine, method: str, weights: Sequence[float], *, strength: float = 1.0, **kwargs) -> dict:
    """Prepare ``method`` for μ (merge, guidance) on the engine, then :func:`evaluate_model`."""
    model, guide = engine.prepare(method, weights, strength)
    return {"method": method, "weights": engine.current.weights, "strength": strength if guide else None,
            "coefficients": engine.current.coefficients or None,
            **evaluate_model(model, engine.policy.tokenizer, engine.task, guide=guide, **kwargs)}
