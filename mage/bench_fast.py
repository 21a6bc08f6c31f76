"""Benchmarks of the fast paths (issue 23): ``python -m mage bench rows | half | gpu``.

- ``rows`` — a sweep's preference grid on one prompt as rows of one batch (:meth:`mage.policy.PolicyBank.generate_rows`)
  against re-merging and decoding once per point, for each task; same greedy tokens, throughput ratio.
- ``half`` — bfloat16 with the merge kept unfolded in float32 against float32 folded: logit error against the
  float32 merge (and that of bf16 folding), greedy agreement, and decode time per step.
- ``gpu``  — the per-step table of the GPU issue, through mage's own merge and guides: plain decoding (the
  reference loop and the fast static-cache path), fused MAGE-i, MAGE-e, the implicit ensemble, MOD, a re-merge,
  and slider → first token, for the default model and a random Llama-2-7B-shaped model in bf16. It needs only
  torch, transformers, safetensors, peft and accelerate; on a CPU the tests run it on a tiny model.
"""

from __future__ import annotations

import logging
import statistics
import time

import torch

from .bench import TARGET, load_model, random_adapters, summary_stats, sync_device, timed, trained_or_random_adapters

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- rows: many preferences in one batch


def rows_one_task(task: str, repeats: int = 1, method: str = "bone") -> dict:
    """A sweep's preference grid (SPEC §4: 11 points for two objectives, 13 for three) on one test prompt:
    re-merge and decode per point (the reference loop) vs all points as rows of one batch (greedy, the task's
    reply cap). Per-point and batched runs alternate within each repeat."""
    from .decoding import SamplingConfig
    from .policy import PolicyBank
    from .grid import preference_grid
    from .tasks import get_task

    t = get_task(task)
    bank = PolicyBank(t, device=TARGET["device"], dtype=TARGET["dtype"])
    grid = preference_grid(len(t.objectives))
    text = t.examples("test")[0].input
    sampling = SamplingConfig(max_new_tokens=t.max_new_tokens, greedy=True)
    times, tokens, same = {"per_point": [], "rows": []}, {}, []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        alone = [bank.generate(method, weights, [text], sampling)[0] for weights in grid]
        times["per_point"].append(time.perf_counter() - start)
        start = time.perf_counter()
        together = bank.generate_rows(method, grid, text, sampling)
        times["rows"].append(time.perf_counter() - start)
        same.append([a.token_ids == b.token_ids for a, b in zip(alone, together)])
        tokens = {"per_point": sum(len(g.token_ids) for g in alone), "rows": sum(len(g.token_ids) for g in together)}
    from .decoding import encode_prompts

    out = {
        "task": task,
        "method": method,
        "points": len(grid),
        "prompt_tokens": int(encode_prompts(bank.tokenizer, [t.messages(text)], "cpu")[0].shape[1]),
        "max_new_tokens": sampling.max_new_tokens,
        "tokens": tokens,
        "same_greedy_tokens": f"{sum(same[-1])}/{len(grid)}",
    }
    for name, ts in times.items():
        out[name] = {**summary_stats(ts), "all_s": ts}
    out["throughput_ratio_rows_over_per_point"] = statistics.median(
        [p / r for p, r in zip(times["per_point"], times["rows"])]
    )
    return out


def bench_rows(repeats: int = 1, tasks: tuple[str, ...] = ("assistant", "summary")) -> dict:
    """Many preferences in one batch vs re-merging per point, for each task's grid and prompt length."""
    return {
        "tasks": [rows_one_task(t, repeats) for t in tasks],
        "target": ">= 3x the throughput of re-merging per point, same tokens under greedy decoding",
    }


# --------------------------------------------------------------------------- half: bf16 with unfolded merges


def bench_half(repeats: int = 3, new_tokens: int = 32) -> dict:
    """bf16 (merge unfolded, float32 deltas) vs float32 (merge folded), same trained adapters and μ; bf16 with the
    merge folded (rounded into the weights) beside them for the logit error."""
    from .decoding import SamplingConfig, encode_prompts, generate
    from .merging import Soup, coefficients
    from .models import DEFAULT_BASE, load_base

    prompts = [
        [{"role": "user", "content": p}]
        for p in (
            "Write a brutal roast of my friend who is always late.",
            "How do I lower my blood pressure?",
            "Describe a cat's opinion of vacuum cleaners.",
        )
    ]
    merge = coefficients("rs", [0.2, 0.3, 0.5])
    config = SamplingConfig(max_new_tokens=new_tokens, greedy=True)
    runs, models, source = {}, {}, ""
    for label, dtype, unfolded in (
        ("float32", "float32", False),
        ("bfloat16-unfolded", "bfloat16", True),
        ("bfloat16-folded", "bfloat16", False),
    ):
        model, tokenizer = load_base(DEFAULT_BASE, device=TARGET["device"], dtype=dtype)
        adapters, source = trained_or_random_adapters(model, tokenizer, 3)
        soup = Soup(model, adapters, unfolded=unfolded)
        soup.apply(merge)
        ids, mask = encode_prompts(tokenizer, prompts, model.device)
        with torch.no_grad():
            merged = model(input_ids=ids, attention_mask=mask).logits[:, -1].double()
            soup.restore()
            base = model(input_ids=ids, attention_mask=mask).logits[:, -1].double()
            soup.apply(merge)
        gens = generate(model, tokenizer, prompts, config, batch_size=1)  # warm-up and the tokens
        runs[label] = {
            "merged": merged,
            "effect": merged - base,
            "tokens": [g.token_ids for g in gens],
            "steps": sum(len(g.token_ids) for g in gens),
            "remerge": timed(lambda: soup.apply(merge), 10),
            "times": [],
        }
        models[label] = (model, tokenizer)
    for _ in range(repeats):  # interleaved: the machine's drift hits every variant alike
        for label, (model, tokenizer) in models.items():
            start = time.perf_counter()
            generate(model, tokenizer, prompts, config, batch_size=1)
            sync_device()
            runs[label]["times"].append(time.perf_counter() - start)
    for r in runs.values():
        r["timing"] = summary_stats(r["times"])
        r["s_per_step"] = r["timing"]["median_s"] / max(1, r["steps"])
    ref = runs["float32"]
    out = {"adapters": source, "coefficients": merge, "new_tokens": new_tokens, "rows": {}}
    for label, r in runs.items():
        out["rows"][label] = {
            "ms_per_step": 1000 * r["s_per_step"],
            "speedup_vs_float32": ref["s_per_step"] / r["s_per_step"],
            "remerge_ms": 1000 * r["remerge"]["median_s"],
            "max_abs_logit_error_vs_float32_merge": float((r["merged"] - ref["merged"]).abs().max()),
            "merge_effect_relative_error": float((r["effect"] - ref["effect"]).norm() / ref["effect"].norm()),
            "same_greedy_tokens_as_float32": f"{sum(a == b for a, b in zip(r['tokens'], ref['tokens']))}"
            f"/{len(prompts)}",
        }
    out["target"] = "bf16 with unrounded merges >= 1.3x float32 per step"
    return out


# --------------------------------------------------------------------------- gpu: the per-step table


def _seven_b_shaped(tokenizer, device: str, dtype: torch.dtype):
    """A randomly initialised model of Llama-2-7B's shape (4096 hidden, 32 layers, 11008 MLP) over the default
    tokenizer's vocabulary: speed does not depend on the weights' values."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    return model.eval()


def _model(name: str):
    from .models import pick_dtype, tiny_model, tiny_tokenizer

    dtype = pick_dtype(TARGET["dtype"])
    if name == "tiny":
        tokenizer = tiny_tokenizer()
        return tiny_model(tokenizer).to(device=TARGET["device"], dtype=dtype).eval(), tokenizer
    if name == "default":
        return load_model()
    if name == "7b-shaped":
        _, tokenizer = load_model()
        return _seven_b_shaped(tokenizer, TARGET["device"], dtype), tokenizer
    raise ValueError(f"unknown model {name!r}; fix: use tiny, default or 7b-shaped")


def gpu_rows(name: str, *, k: int = 3, new_tokens: int = 48, repeats: int = 3, top_k: int = 10) -> list[dict]:
    """Per-step time of each variant on one model (batch 1), as ratios to plain decoding in the same run."""
    import copy

    from .decoding import SamplingConfig, generate
    from .fused import FusedImplicit, row_corrections
    from .guidance import ExplicitGuide, ImplicitGuide, Member, ProductOfExperts
    from .merging import Soup
    from .values import ExplicitValueModel, new_head

    policy, tokenizer = _model(name)
    weights = [1.0 / k] * k
    soup = Soup(policy, random_adapters(policy, k, seed=1))
    values = random_adapters(policy, k, seed=2)
    soup.apply(weights)
    prompt = [[{"role": "user", "content": "Tell me something about the sea."}]]
    config = SamplingConfig(max_new_tokens=new_tokens, greedy=True)

    def value_model(weights, explicit: bool):
        copy_ = copy.deepcopy(policy)
        Soup(copy_, values).apply(weights)  # a copy carries its own merge (folded, or unfolded in 16-bit)
        return (
            ExplicitValueModel(copy_, new_head(policy.config.hidden_size, 0).to(policy.device)) if explicit else copy_
        )

    def variants():
        yield "plain", policy, None, False
        yield "plain-fast", policy, None, True
        fused = FusedImplicit(policy, row_corrections(soup, values, weights), 1.0)
        yield "mage-i", fused, fused, False
        yield "mage-i-fast", fused, fused, True
        yield "mage-e", policy, ExplicitGuide([Member(value_model(weights, True), 1.0)], 1.0, top_k), False
        yield (
            "ensemble-i",
            policy,
            ImplicitGuide(
                [Member(value_model([1.0 if i == j else 0.0 for i in range(k)], False), weights[j]) for j in range(k)],
                1.0,
            ),
            False,
        )
        experts = []
        for j in range(k):
            soup.apply([1.0 if i == j else 0.0 for i in range(k)])
            experts.append(copy.deepcopy(policy))
        soup.apply(weights)
        yield "mod", ProductOfExperts(experts, weights), None, False

    rows = []
    for label, model, guide, fast in variants():
        steps = []

        def run(model=model, guide=guide, fast=fast):  # bound now: the loop deletes model and guide after timing
            gens = generate(model, tokenizer, prompt, config, batch_size=1, guide=guide, fast=fast)
            steps.append(max(len(g.token_ids) + g.finished for g in gens))

        t = timed(run, repeats, warmup=2 if fast else 1)  # a compiled step is captured during the warm-ups
        rows.append(
            {
                "model": name,
                "variant": label,
                "ms_per_step": 1000 * t["median_s"] / max(1, statistics.median(steps)),
                "timing": t,
            }
        )
        del model, guide
    plain = rows[0]["ms_per_step"]
    for r in rows:
        r["ratio_vs_plain"] = r["ms_per_step"] / plain
    remerge = timed(lambda: soup.apply(list(reversed(weights))) or soup.apply(weights), 10)
    rows.append({"model": name, "variant": "re-merge", "ms": 1000 * remerge["median_s"] / 2, "timing": remerge})
    for label, kind in (("slider → first token, bone", None), ("slider → first token, mage-i", "fused")):
        one = SamplingConfig(max_new_tokens=1, greedy=True)

        def first():
            soup.apply([0.5, 0.3, 0.2][:k] if k == 3 else weights)
            model = FusedImplicit(policy, row_corrections(soup, values, weights), 1.0) if kind else policy
            generate(model, tokenizer, prompt, one, batch_size=1, guide=model if kind else None)
            sync_device()

        t = timed(first, repeats)
        rows.append({"model": name, "variant": label, "ms": 1000 * t["median_s"], "timing": t})
    return rows


def bench_gpu(repeats: int = 3, models: tuple[str, ...] | None = None) -> dict:
    """The GPU table: every variant's per-step time relative to plain decoding, per model (the 7B-shaped model
    only on a GPU: it needs 13.5 GB in bf16, and several copies for the ensemble and MOD)."""
    models = models or (("default", "7b-shaped") if TARGET["device"].startswith("cuda") else ("default",))
    rows = []
    for name in models:
        rows += gpu_rows(name, repeats=repeats)
        log.info(
            "mage bench gpu: %s %s",
            name,
            ", ".join(f"{r['variant']} {r.get('ms_per_step', r.get('ms')):.1f} ms" for r in rows if r["model"] == name),
        )
        if TARGET["device"].startswith("cuda"):
            torch.cuda.empty_cache()
    return {
        "rows": rows,
        "batch": 1,
        "new_tokens": 48,
        "targets": {
            "7b-shaped plain-fast": "<= 6 ms/step",
            "mage-i-fast": "<= 1.25x plain",
            "mage-e": "<= 1.6x plain",
            "default model": ">= 5x faster per token than 23.7 ms",
            "slider → first token, mage-i": "<= 30 ms",
        },
    }
