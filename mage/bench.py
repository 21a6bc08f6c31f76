"""Benchmarks: ``python -m mage bench [part]`` writes ``assets/bench/<part>.json``.

Each part measures mage's path next to a baseline in the same run and reports medians with
min–max over repeats, plus the ratio. Benchmarks, not tests: this machine is shared and noisy.

The method variants (``decode``, ``guided``, ``profile``, ``app``, ``sweep``, ``devices``) are rows of the method
table prepared by :class:`~mage.methods.Engine`, never re-wired here; where trained checkpoints are not the point,
on a synthetic K-objective task with random rank-8 checkpoints (:mod:`mage.synthetic`). ``merge``, ``react``,
``half`` and ``gpu`` time primitives directly (merge kernels vs peft, W_μ, unfolded 16-bit merges, a 7B-shaped
random model that no base-model name loads).

Parts:
- ``merge``  — re-merge for a new preference with 3 adapters: :class:`~mage.merging.Soup` vs peft
  ``add_weighted_adapter(cat)`` + merge, vs full state-dict averaging (the Bone Soups code's way).
- ``decode`` — per-token decode time of the merged policy vs the untouched base model.
- ``guided`` — per-step time and peak memory of every guided variant vs plain decoding, K = 2, 3, 4.
- ``app``    — slider move → first streamed token and → full response in the app's service.
- ``react``  — ReACT's W_μ for a new μ, calibration vs n, decode overhead of the corrected head.
- ``sweep``  — evaluation-sweep throughput vs plain batched generation of the same merged model.
- ``soak``   — 400 mixed requests (good and bad) from fresh sessions against a real app process: memory curve, bad input
→ outcome.
- ``devices`` — every method on the bench's device in each dtype: does it run, and does it give the same
  greedy tokens as float32 on the CPU (the reference, computed in the same run)?
- ``rows``, ``half``, ``gpu`` — the fast paths: many preferences in one batch, bf16 with unfolded merges, and
  the GPU per-step table (:mod:`mage.bench_fast`).
"""

from __future__ import annotations

import logging
import json
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from . import locations
from .io import write_json_atomic
from .synthetic import random_adapters

log = logging.getLogger(__name__)

TARGET = {"device": "cpu", "dtype": "float32"}  # where the parts run: set by run_bench (the CLI's --device / --dtype)


def load_model(name: str | None = None):
    """The base model on the benchmark's device and dtype."""
    from .models import DEFAULT_BASE, load_base

    return load_base(name or DEFAULT_BASE, device=TARGET["device"], dtype=TARGET["dtype"])


def sync_device() -> None:
    if TARGET["device"].startswith("cuda"):
        torch.cuda.synchronize()  # GPU work is asynchronous: a timing must wait for it


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    sync_device()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync_device()
        times.append(time.perf_counter() - start)
    return summary_stats(times)


def summary_stats(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": len(times)}


def machine() -> dict:
    import os

    gpu = torch.cuda.get_device_name() if TARGET["device"].startswith("cuda") else None
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "device": TARGET["device"],
        "dtype": TARGET["dtype"],
        "gpu": gpu,
    }


def trained_or_random_adapters(model, tokenizer, n: int):
    """The assistant task's trained experts when present, else random rank-8 adapters (stated in the output)."""
    from .models import fingerprint_model, fingerprint_tokenizer
    from .policy import load_ingredients
    from .tasks import get_task

    try:
        adapters = load_ingredients(
            get_task("assistant"),
            "experts",
            base_fingerprint=fingerprint_model(model),
            tokenizer_fingerprint=fingerprint_tokenizer(tokenizer),
        )
        return adapters[:n], "trained assistant experts"
    except ValueError:
        return random_adapters(model, n), "random rank-8 adapters (no trained experts found)"


def bench_merge(repeats: int = 20) -> dict:
    """Re-merge latency for a new μ with 3 adapters on the default model."""
    from peft import LoraConfig, get_peft_model

    from .merging import Soup, coefficients

    model, tokenizer = load_model()
    adapters, source = trained_or_random_adapters(model, tokenizer, 3)
    prefs = [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.8, 0.1]]
    merges = [coefficients("bone", p) for p in prefs]  # λ of each μ
    counter = iter(range(10**9))
    next_merge = lambda: merges[next(counter) % len(merges)]
    results = {"adapters": source}
    # 1. mage: fold Σ λ_j ΔW_j into the weights in place
    soup = Soup(model, adapters)
    results["soup_fold"] = timed(lambda: soup.apply(next_merge()), 4 * repeats)

    def copy_floor():  # the bytes any merge must move: read W_0, write W, for every target matrix
        with torch.no_grad():
            for weight, w0, _, _ in soup._targets:
                weight.copy_(w0)

    results["floor_copy_w0"] = timed(copy_floor, 4 * repeats)
    results["floor_bytes"] = 2 * sum(w0.numel() * w0.element_size() for _, w0, _, _ in soup._targets)
    results["ratio_soup_over_floor"] = results["soup_fold"]["median_s"] / results["floor_copy_w0"]["median_s"]
    soup.restore()
    # 2. full state-dict averaging over the ingredients' full weights (Bone Soups code)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    fulls = []
    for j in range(3):
        soup.apply([1.0 if k == j else 0.0 for k in range(3)])
        fulls.append({k: v.clone() for k, v in model.state_dict().items()})
    soup.restore()

    def average(fulls=fulls):  # bound now: the list is deleted once timed
        merge = next_merge()
        merged = {k: sum(l * f[k] for l, f in zip(merge, fulls)) for k in base_state}
        model.load_state_dict(merged, strict=False)

    results["state_dict_average"] = timed(average, max(3, repeats // 4))
    model.load_state_dict(base_state)
    del fulls
    # 3. peft: three adapters loaded, add_weighted_adapter(cat) + merge into the weights
    config = LoraConfig(
        r=adapters[0].rank,
        lora_alpha=adapters[0].rank * adapters[0].scaling,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    peft_model = get_peft_model(model, config, adapter_name="e0")
    for j in range(1, 3):
        peft_model.add_adapter(f"e{j}", config)
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            clean = name.removeprefix("base_model.model.")
            for j, adapter in enumerate(adapters):
                if clean in adapter.factors and hasattr(module, "lora_A"):
                    module.lora_A[f"e{j}"].weight.copy_(adapter.factors[clean][0])
                    module.lora_B[f"e{j}"].weight.copy_(adapter.factors[clean][1])

    def peft_merge():
        merge = next_merge()
        peft_model.add_weighted_adapter([f"e{j}" for j in range(3)], merge, "soup", combination_type="cat")
        peft_model.set_adapter("soup")
        peft_model.merge_adapter()
        peft_model.unmerge_adapter()
        peft_model.delete_adapter("soup")

    results["peft_add_weighted_cat_merge"] = timed(peft_merge, max(3, repeats // 4))
    soup_median = results["soup_fold"]["median_s"]
    results["ratio_peft_over_soup"] = results["peft_add_weighted_cat_merge"]["median_s"] / soup_median
    results["ratio_state_dict_over_soup"] = results["state_dict_average"]["median_s"] / soup_median
    return results


@contextmanager
def stage1_engine(k: int = 3):
    """(Engine, what its checkpoints are) for decoding the stage-1 methods: the assistant task's trained experts and
    backbones when they load, else the synthetic K-objective task's random rank-8 adapters (:mod:`mage.synthetic`)."""
    from .methods import Engine
    from .policy import PolicyBank
    from .tasks import get_task

    model, tokenizer = load_model()
    try:
        policy = PolicyBank(get_task("assistant"), model=model, tokenizer=tokenizer, strict=True)
    except ValueError:  # a CheckpointError: missing, damaged or made for another model
        policy = None
    if policy is not None:
        yield Engine(policy.task, policy=policy), "trained assistant experts and backbones"
        return
    from .synthetic import synthetic_engine

    with synthetic_engine(k, model, tokenizer) as engine:
        yield engine, "random rank-8 adapters (no trained checkpoints found)"


def bench_decode(repeats: int = 5, new_tokens: int = 48) -> dict:  # repeats: whole generations
    """Per-token decode time of the merged policy (Bone Soup, folded weights) vs the untouched base model, batch 1
    and 8: the Engine's ``bone`` and ``base`` methods on one model."""
    from .decoding import SamplingConfig, generate

    with stage1_engine(3) as (engine, source):
        tokenizer = engine.policy.tokenizer
        prompts = [engine.task.messages(f"Tell me about topic number {i}.") for i in range(8)]
        config = SamplingConfig(max_new_tokens=new_tokens, greedy=True)
        results = {"adapters": source, "new_tokens": new_tokens}
        for batch in (1, 8):
            variants = (("base", "base"), ("merged", "bone"))
            times: dict[str, list[float]] = {label: [] for label, _ in variants}
            steps = {}
            for r in range(repeats + 1):  # interleaved (base, merged, base, …): drift hits both alike; round 0 warms up
                for label, method in variants:
                    model, _ = engine.prepare(method, [0.2, 0.3, 0.5])
                    start = time.perf_counter()
                    gens = generate(model, tokenizer, prompts[:batch], config, batch_size=batch)
                    if r:
                        times[label].append(time.perf_counter() - start)
                    steps[label] = max(
                        len(g.token_ids) + g.finished for g in gens
                    )  # steps run (a batch runs until its longest row stops)
            for label, _ in variants:
                t = summary_stats(times[label])
                results[f"{label}_b{batch}"] = {
                    **t,
                    "steps": steps[label],
                    "s_per_step": t["median_s"] / max(1, steps[label]),
                }
            # per step, not per generation: greedy outputs of the two models may stop at different lengths
            results[f"ratio_merged_over_base_b{batch}"] = (
                results[f"merged_b{batch}"]["s_per_step"] / results[f"base_b{batch}"]["s_per_step"]
            )
    return results


def run_bench(part: str = "all", repeats: int = 20, *, device: str = "cpu", dtype: str = "float32") -> list[dict]:
    """Run benchmark parts on ``device`` in ``dtype``; the CPU in float32 writes ``<part>.json``, anything
    else ``<part>-<device>-<dtype>.json`` beside it (so a GPU run never overwrites the CPU's numbers).
    Returns each part's result, in order."""
    from .models import pick_device, pick_dtype

    names = list(PARTS) if part == "all" else [part]
    for name in names:
        if name not in PARTS:
            raise ValueError(f"unknown bench part {name!r}; fix: use one of {sorted(PARTS)} or 'all'")
    pick_dtype(dtype)
    TARGET.update(device=str(pick_device(device)), dtype=dtype)
    default = TARGET == {"device": "cpu", "dtype": "float32"}
    flags = "" if default else f" --device {TARGET['device']} --dtype {dtype}"
    results = []
    for name in names:
        torch.set_num_threads(2)
        result = {
            "part": name,
            "machine": machine(),
            "command": f"python -m mage bench {name} --repeats {repeats}{flags}",
            **PARTS[name](repeats=repeats),
        }
        write_json_atomic(
            locations.bench()
            / (f"{name}.json" if default else f"{name}-{TARGET['device'].replace(':', '')}-{dtype}.json"),
            result,
        )
        results.append(result)
    return results


# --------------------------------------------------------------------------- guided decoding

# variant → (method of the table mage.methods.METHODS, Engine(fused=...)): every variant is the Engine preparing a
# method on the synthetic K-objective task (mage.synthetic), nothing wired by hand. "plain" is the stage-1 policy
# the guided methods decode (Bone Soup, no guide); "mage-i" is the Engine's default, the merged implicit guide fused
# into the policy's forward (mage.fused); "mage-i-separate" the same method with Engine(fused=False), the merged
# guide as a second model (the unfused baseline).
GUIDED_METHODS: dict[str, tuple[str, bool]] = {
    "plain": ("bone", True),
    "mage-i": ("mage-i", True),
    "mage-i-separate": ("mage-i", False),
    "mage-e": ("mage-e", True),
    "ensemble-i": ("ensemble-i", True),
    "ensemble-e": ("ensemble-e", True),
    "mod": ("mod", True),
}
GUIDED_VARIANTS = tuple(GUIDED_METHODS)


def guided_worker(
    variant: str,
    k_objectives: int,
    batch: int = 1,
    new_tokens: int = 48,
    repeats: int = 3,
    top_k: int = 10,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    base: str | None = None,
) -> dict:
    """One (variant, K) measurement in a fresh process, so peak RSS belongs to it alone.

    The variant's method is prepared by the Engine for the synthetic K-objective task (:mod:`mage.synthetic`),
    whose experts, backbones and value models are random rank-8 adapters on ``base`` (default: the default
    model): speed and memory do not depend on training. Preparing (merges, loading value models, building
    guides) is done once, outside the timings; the timings decode with exactly the model and guide
    :meth:`~mage.methods.Engine.prepare` returned, at uniform μ and strength 1.
    """
    import resource

    from .decoding import SamplingConfig, generate
    from .synthetic import synthetic_engine

    if variant not in GUIDED_METHODS:
        raise ValueError(f"unknown guided variant {variant!r}; fix: use one of {list(GUIDED_METHODS)}")
    method, fused = GUIDED_METHODS[variant]
    torch.set_num_threads(2)
    TARGET.update(device=device, dtype=dtype)
    weights = [1.0 / k_objectives] * k_objectives
    policy, tokenizer = load_model(base)
    with synthetic_engine(k_objectives, policy, tokenizer, base=base, top_k=top_k, fused=fused) as engine:
        model, guide = engine.prepare(method, weights, strength=1.0)
        prompts = [engine.task.messages(f"Tell me something about topic number {i}.") for i in range(batch)]
    config = SamplingConfig(max_new_tokens=new_tokens, temperature=1.0, top_p=0.9)
    tokens = []

    def run():
        gens = generate(model, tokenizer, prompts, config, seed=len(tokens), batch_size=batch, guide=guide)
        tokens.append(max(len(g.token_ids) for g in gens))

    result = timed(run, repeats)
    steps = sum(tokens[1:]) / max(1, len(tokens) - 1)  # decoding steps of the timed runs (the warm-up excluded)
    return {
        "variant": variant,
        "k": k_objectives,
        "batch": batch,
        "steps": steps,
        "s_per_step": result["median_s"] / max(1.0, steps),
        "timing": result,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def bench_guided(repeats: int = 3) -> dict:
    """Per-step decode time of every guided variant relative to plain decoding of the same merged policy, K = 2, 3,
    4."""
    import subprocess
    import sys

    rows = []
    for k in (2, 3, 4):
        for variant in GUIDED_VARIANTS:
            code = (
                f"import json; from mage.bench import guided_worker; print('RESULT' + "
                f"json.dumps(guided_worker({variant!r}, {k}, repeats={repeats}, "
                f"device={TARGET['device']!r}, dtype={TARGET['dtype']!r})))"
            )
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            row = json.loads(out.split("RESULT", 1)[1])
            rows.append(row)
            log.info(
                f"mage bench guided: K={k} {variant}: {row['s_per_step'] * 1000:.1f} ms/step, peak RSS "
                f"{row['peak_rss_mb']:.0f} MB"
            )
    plain = {r["k"]: r["s_per_step"] for r in rows if r["variant"] == "plain"}
    for r in rows:
        r["ratio_vs_plain"] = r["s_per_step"] / plain[r["k"]]
    by = {(r["variant"], r["k"]): r for r in rows}
    flat = {v: by[(v, 4)]["s_per_step"] / by[(v, 2)]["s_per_step"] - 1.0 for v in GUIDED_VARIANTS}
    # the same change measured against plain decoding at each K, which cancels the machine's drift between runs
    flat_ratio = {v: by[(v, 4)]["ratio_vs_plain"] / by[(v, 2)]["ratio_vs_plain"] - 1.0 for v in GUIDED_VARIANTS}
    return {
        "rows": rows,
        "change_k2_to_k4": flat,
        "change_k2_to_k4_of_ratio_vs_plain": flat_ratio,
        "targets": {
            "mage-i": "<= 2.0x plain",
            "mage-e (k=10)": "<= 2.5x plain",
            "mage flat in K": "<= 10 % change K=2..4",
        },
    }


def _on_fresh_thread(fn):
    import threading

    def run():
        with torch.no_grad():
            fn()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()


def _first_token_parts(engine, prompt: str, repeats: int) -> dict:
    """The pieces of a slider move → first token, timed one by one (medians): merge, building the fused
    guide (the Engine's own :meth:`~mage.methods.Engine.guided`), and the prompt pass of the policy alone and
    of policy + guide fused."""
    from .decoding import encode_prompts

    if not engine.fused:
        raise ValueError("the first-token parts time the fused implicit guide; fix: pass an Engine(fused=True)")
    n = len(engine.task.objectives)
    prefs = iter([[(i + j) % n + 1.0 for j in range(n)] for i in range(10**6)])
    ids, mask = encode_prompts(engine.policy.tokenizer, [engine.task.messages(prompt)], engine.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    fused, _ = engine.guided("implicit", [1.0 / n] * n, 1.0)
    with torch.no_grad():
        parts = {
            "merge_bone_s": timed(lambda: engine.policy.merge("bone", next(prefs)), repeats),
            "build_fused_guide_s": timed(lambda: engine.guided("implicit", next(prefs), 1.0), repeats),
            "prompt_pass_policy_s": timed(
                lambda: engine.policy.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
                ),
                repeats,
            ),
            "prompt_pass_fused_s": timed(
                lambda: fused(ids, mask, positions, use_cache=True, logits_to_keep=1), repeats
            ),
            # the same pass on a fresh thread per call (what the service did before it had one compute thread)
            "prompt_pass_fused_fresh_thread_s": timed(
                lambda: _on_fresh_thread(lambda: fused(ids, mask, positions, use_cache=True, logits_to_keep=1)), repeats
            ),
        }
    medians = {k: v["median_s"] for k, v in parts.items()}
    return {
        "prompt_tokens": int(ids.shape[1]),
        **medians,
        "fresh_thread_over_compute_thread": medians["prompt_pass_fused_fresh_thread_s"]
        / medians["prompt_pass_fused_s"],
    }


def bench_app(repeats: int = 5, task: str = "assistant", new_tokens: int = 48) -> dict:
    """What a user feels after a slider move: the app's service from request (a new μ) to the first
    streamed token and to the full response, for MAGE (implicit) and Rewarded Soup, median over μs."""
    from .service import Service

    service = Service(device=TARGET["device"], dtype=TARGET["dtype"])
    service.engine(task)  # loading is a one-off start-up cost, not per slider move
    n = len(service.objectives(task))
    prefs = [[(i + j) % n + 1.0 for j in range(n)] for i in range(repeats + 1)]  # a different μ every request
    results = {"task": task, "new_tokens": new_tokens, "goal": "first token <= 0.3 s after a slider move"}
    results["first_token_parts"] = service.run(
        _first_token_parts, service.engine(task), "Write a short poem about the sea.", repeats
    )  # on the thread that decodes
    for method in ("mage-i", "rs"):
        firsts, totals, error = [], [], ""
        for i, sliders in enumerate(prefs):
            start = time.perf_counter()
            first = None
            for replies, _ in service.stream(
                task, "Write a short poem about the sea.", sliders, [method], max_new_tokens=new_tokens, seed=i
            ):
                if first is None and replies[0].text:
                    first = time.perf_counter() - start
            error = replies[0].error
            if error:
                break
            if i > 0:  # the first request warms caches (guidance bank load)
                firsts.append(first if first is not None else float("nan"))
                totals.append(time.perf_counter() - start)
        results[method] = (
            {"error": error}
            if error
            else {
                "first_token_s": {"median": statistics.median(firsts), "min": min(firsts), "max": max(firsts)},
                "full_response_s": {"median": statistics.median(totals), "min": min(totals), "max": max(totals)},
                "repeats": len(firsts),
            }
        )
    return results


def bench_react(repeats: int = 20, hidden: int = 576, tokens: int = 1500) -> dict:
    """ReACT: W_μ for a new μ (n = 3, D = 576), the closed-form calibration step vs n (linear), and the
    decode overhead of the corrected head vs the plain merged model (the uniform soup)."""
    from .decoding import SamplingConfig, generate
    from .merging import Soup
    from .react import CorrectedHead, ReactState, correction

    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(hidden, hidden, generator=gen, dtype=torch.float64) / hidden**0.5
    states = [
        (z, z + 0.1 * mix @ z)
        for z in (torch.randn(hidden, tokens, generator=gen, dtype=torch.float64) for _ in range(4))
    ]
    results = {
        "hidden": hidden,
        "calibration_tokens_per_objective": tokens,
        "goal": "W_mu for a new mu <= 10 ms (D = 576, n = 3)",
    }
    calib = {}
    for n in (1, 2, 3, 4):
        calib[n] = timed(lambda: [correction(zm, z) for zm, z in states[:n]], max(3, repeats // 5))
    results["calibration_closed_form"] = {str(n): t for n, t in calib.items()}
    results["calibration_ratio_n4_over_n1"] = calib[4]["median_s"] / calib[1]["median_s"]
    pairs = [correction(zm, z) for zm, z in states[:3]]
    state = ReactState(["a", "b", "c"], torch.stack([w for w, _ in pairs]), torch.stack([c for _, c in pairs]), {})
    prefs = iter([[0.2 + 0.01 * (i % 50), 0.3, 0.5] for i in range(10**6)])
    results["w_mu_new_preference_explicit"] = timed(
        lambda: state.for_preference(next(prefs)), 4 * repeats
    )  # W_μ formed: a solve with D right-hand sides
    results["w_mu_new_preference"] = timed(
        lambda: state.factored(next(prefs)), 4 * repeats
    )  # what decoding uses: one Cholesky
    results["ratio_explicit_over_factored"] = (
        results["w_mu_new_preference_explicit"]["median_s"] / results["w_mu_new_preference"]["median_s"]
    )
    # decode overhead: the corrected head on the merged model vs the plain merged model
    model, tokenizer = load_model()
    adapters, source = trained_or_random_adapters(model, tokenizer, 3)
    Soup(model, adapters).apply([1 / 3] * 3)
    head = model.lm_head
    corrected = CorrectedHead(head, state.factored([1 / 3] * 3))
    prompts = [[{"role": "user", "content": "Tell me about the sea."}]]
    config = SamplingConfig(max_new_tokens=48, greedy=True)
    for label, h in (("merged", head), ("react", corrected)):
        model.lm_head = h
        steps = len(generate(model, tokenizer, prompts, config)[0].token_ids)
        t = timed(lambda: generate(model, tokenizer, prompts, config), max(3, repeats // 4))
        results[f"decode_{label}"] = {**t, "tokens": steps, "s_per_token": t["median_s"] / max(1, steps)}
    model.lm_head = head
    results["adapters"] = source
    results["decode_ratio_react_over_merged"] = (
        results["decode_react"]["s_per_token"] / results["decode_merged"]["s_per_token"]
    )
    return results


def bench_sweep(repeats: int = 1, task: str = "summary", prompts: int = 16) -> dict:
    """Evaluation-sweep throughput (generation + scoring + journaling, one grid point per method call)
    relative to plain batched ``generate`` of the same merged model on the same prompts with the same
    seeds -- so both generate the same tokens and the only difference is the sweep's own work. Plain and
    sweep alternate within each repeat (machine drift hits both); scoring the plain run's responses is
    timed on its own: plain + scoring is the floor a sweep that must score cannot beat."""
    import os
    import tempfile
    from unittest import mock

    from .decoding import SamplingConfig, generate
    from .evaluation import EVAL_SAMPLING, eval_seeds
    from .methods import Engine
    from .objectives import score_all
    from .sweep import SweepConfig, run_sweep
    from .tasks import get_task

    t = get_task(task)
    engine = Engine(t, device=TARGET["device"], dtype=TARGET["dtype"])
    grid = ((0.2, 0.8), (0.8, 0.2)) if len(t.objectives) == 2 else ((0.6, 0.2, 0.2), (0.2, 0.2, 0.6))
    config = SweepConfig(task=task, methods=("bone",), prompts=prompts, grid=grid)
    sampling = SamplingConfig(max_new_tokens=t.max_new_tokens, **EVAL_SAMPLING)
    inputs = [ex.input for ex in t.examples(config.split)[:prompts]]
    seeds = eval_seeds(len(inputs), config.samples, config.seed)
    results = {"task": task, "prompts": prompts, "grid_points": len(grid)}
    tokens = {"plain": [], "sweep": []}
    texts: list[list[str]] = []

    def plain():
        texts.clear()
        for weights in grid:
            model, _ = engine.prepare("bone", weights)
            gens = generate(
                model,
                engine.policy.tokenizer,
                [t.messages(x) for x in inputs],
                sampling,
                seeds=seeds,
                batch_size=config.batch_size,
            )
            texts.append([g.text for g in gens])
            tokens["plain"].append(sum(len(g.token_ids) for g in gens))

    def scoring():
        for responses in texts:
            score_all(t.objectives, inputs, responses)

    def sweep():
        with (
            tempfile.TemporaryDirectory() as cache,
            mock.patch.dict(os.environ, {"MAGE_CACHE_DIR": cache}),
        ):  # nothing cached: every point generated
            out = run_sweep(config, engine=engine, write=False)
        tokens["sweep"] += [round(r["mean_tokens"] * r["n_prompts"] * r["samples_per_prompt"]) for r in out["records"]]

    score_all(t.objectives, inputs[:1], ["warm-up"])  # load the scorers outside the timings
    times = {"plain_generate": [], "scoring": [], "sweep": []}
    for _ in range(max(1, repeats)):
        for name, fn in (("plain_generate", plain), ("scoring", scoring), ("sweep", sweep)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    for name, ts in times.items():
        results[name] = {**summary_stats(ts), "all_s": ts}
    results["same_tokens"] = tokens["plain"] == tokens["sweep"]
    results["tokens_per_repeat"] = sum(tokens["plain"]) // max(1, repeats)
    ratios = [p / s for p, s in zip(times["plain_generate"], times["sweep"])]
    floors = [p / (p + c) for p, c in zip(times["plain_generate"], times["scoring"])]
    results["throughput_ratio_sweep_over_plain"] = statistics.median(ratios)
    results["throughput_ratio_per_repeat"] = ratios
    results["floor_ratio_plain_over_plain_plus_scoring"] = statistics.median(floors)
    results["sweep_over_floor"] = statistics.median(
        [(p + c) / s for p, c, s in zip(times["plain_generate"], times["scoring"], times["sweep"])]
    )
    results["goal"] = "sweep throughput >= 0.9x plain batched generate"
    return results


def bench_profile(repeats: int = 1, new_tokens: int = 24, top: int = 12) -> dict:
    """torch.profiler over batch-1 decoding of the merged policy, plain and with fused implicit guidance (the
    Engine's ``bone`` and ``mage-i`` on the synthetic 3-objective task, :mod:`mage.synthetic`): where a step's
    time goes (top operators by self CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    from .decoding import SamplingConfig, generate
    from .synthetic import synthetic_engine

    model, tokenizer = load_model()
    weights = [1 / 3] * 3
    with synthetic_engine(3, model, tokenizer) as engine:
        prepared = {"plain": engine.prepare("bone", weights), "mage-i-fused": engine.prepare("mage-i", weights)}
    prompts = [engine.task.messages("Tell me about the sea.")]
    config = SamplingConfig(max_new_tokens=new_tokens, greedy=True)
    results = {"new_tokens": new_tokens}
    for label, (m, g) in prepared.items():
        generate(m, tokenizer, prompts, config, guide=g)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(max(1, repeats)):
                generate(m, tokenizer, prompts, config, guide=g)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        results[label] = {
            "total_self_cpu_ms": total / 1000,
            "top": [
                {
                    "op": e.key,
                    "self_cpu_ms": e.self_cpu_time_total / 1000,
                    "share": e.self_cpu_time_total / total,
                    "calls": e.count,
                }
                for e in events[:top]
            ],
        }
    return results


@contextmanager
def serving_app(env: dict | None = None, timeout: float = 900.0, log_path: Path | None = None):
    """Start ``app.py`` on a free port (``env`` added to the environment) and yield (url, process, seconds
    until the page served); the process is killed on exit. ``log_path``: where its output goes (else nowhere)."""
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(root / "app.py"), "--port", str(port)],
        env={**os.environ, **(env or {})},
        cwd=root,
        stdout=open(log_path, "w") if log_path else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log_path else subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - start > timeout:
                    raise RuntimeError(f"the app did not start (exit code {proc.poll()})")
                time.sleep(0.2)
        yield url, proc, time.perf_counter() - start
    finally:
        proc.kill()
        proc.wait()


def _start_app(cache: Path, timeout: float = 900.0) -> dict:
    """Time until the page serves and until the first reply (Rewarded Soup, 8 greedy tokens) arrives through the API."""
    from gradio_client import Client

    start = time.perf_counter()
    with serving_app({"MAGE_CACHE_DIR": str(cache)}, timeout) as (url, _, serving):
        Client(url, verbose=False).predict(
            "assistant", "Say hello.", [1.0, 1.0, 1.0], ["rs"], 1.0, 8, 1.0, 0.9, 0, True, api_name="/generate"
        )
        return {"serving_s": serving, "first_reply_s": time.perf_counter() - start}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# bad requests of the soak: (what, task, prompt, weights, methods, strength, max new tokens, temperature, top-p, seed,
# greedy)
BAD_REQUESTS = [
    ("empty prompt", "assistant", "   ", [1, 1, 1], ["rs"], 1.0, 8, 1.0, 0.9, 0, True),
    ("all-zero preference", "assistant", "Hi", [0, 0, 0], ["rs"], 1.0, 8, 1.0, 0.9, 0, True),
    ("negative weight", "assistant", "Hi", [1, -1, 1], ["rs"], 1.0, 8, 1.0, 0.9, 0, True),
    ("too few weights", "assistant", "Hi", [1], ["rs"], 1.0, 8, 1.0, 0.9, 0, True),
    ("unknown method", "assistant", "Hi", [1, 1, 1], ["gpt-9"], 1.0, 8, 1.0, 0.9, 0, True),
    ("no method", "assistant", "Hi", [1, 1, 1], [], 1.0, 8, 1.0, 0.9, 0, True),
    ("unknown task", "poetry", "Hi", [1, 1], ["rs"], 1.0, 8, 1.0, 0.9, 0, True),
    ("12,000-token prompt (4,000 emoji)", "assistant", "😀" * 4000, [1, 1, 1], ["rs"], 1.0, 8, 1.0, 0.9, 0, True),
    ("100,000-character prompt", "assistant", "x" * 100_000, [1, 1, 1], ["rs"], 1.0, 8, 1.0, 0.9, 0, True),
    ("max new tokens 0", "assistant", "Hi", [1, 1, 1], ["rs"], 1.0, 0, 1.0, 0.9, 0, True),
    ("temperature 0", "assistant", "Hi", [1, 1, 1], ["rs"], 1.0, 8, 0.0, 0.9, 0, False),
    ("top-p 2", "assistant", "Hi", [1, 1, 1], ["rs"], 1.0, 8, 1.0, 2.0, 0, False),
    ("negative seed", "assistant", "Hi", [1, 1, 1], ["rs"], 1.0, 8, 1.0, 0.9, -1, True),
    ("strength 99", "assistant", "Hi", [1, 1, 1], ["mage-i"], 99.0, 8, 1.0, 0.9, 0, True),
    ("NaN strength", "assistant", "Hi", [1, 1, 1], ["mage-i"], float("nan"), 8, 1.0, 0.9, 0, True),
]


def bench_soak(repeats: int = 1, requests: int = 800, every: int = 20, new_tokens: int = 6) -> dict:
    """Many mixed requests (two good to one bad) from fresh sessions against a real app process on the
    default model: the server's resident memory every ``every`` requests (does it level off?) and, for
    every kind of bad request, what the client got back (a clear message, never a crash)."""
    import math

    from gradio_client import Client

    prompts = [
        "Tell me a joke about soup.",
        "How do I fix a flat bike tyre?",
        "Write a brutal roast of my friend who is always late.",
        "Explain rain to a child.",
    ]
    import tempfile

    methods = [["rs"], ["bone", "rs"], ["mage-i"], ["bone"], ["react"], ["aba", "mod"]]
    curve, outcomes, failures = [], {}, []
    server_log = Path(tempfile.mkdtemp(prefix="mage-soak-")) / "app.log"
    with serving_app(log_path=server_log) as (url, proc, _):
        curve.append({"requests": 0, "rss_mb": _rss_mb(proc.pid)})
        for k in range(requests):
            client = Client(url, verbose=False)  # a fresh session every request
            if k % 3 == 2:
                what, *args = BAD_REQUESTS[(k // 3) % len(BAD_REQUESTS)]
                try:
                    client.predict(*args, api_name="/generate")
                    outcomes.setdefault(what, "ACCEPTED")
                except Exception as err:  # gradio_client raises the server's message
                    outcomes[what] = str(err).splitlines()[-1][:300]
            else:
                weights = [1.0 + (k % 5), 1.0 + (k % 3), 1.0 + (k % 2)]
                try:
                    out = client.predict(
                        "assistant",
                        prompts[k % len(prompts)],
                        weights,
                        methods[k % len(methods)],
                        1.0,
                        new_tokens,
                        1.0,
                        0.9,
                        k,
                        False,
                        api_name="/generate",
                    )
                    failures += [f"request {k}: {r['error']}" for r in out["replies"] if r["error"]]
                except Exception as err:
                    failures.append(f"request {k} ({methods[k % len(methods)]}): {type(err).__name__}: {err}"[:300])
            if (k + 1) % every == 0:
                curve.append({"requests": k + 1, "rss_mb": _rss_mb(proc.pid)})
                log.info(f"mage bench soak: {k + 1} requests, server RSS {curve[-1]['rss_mb']:.0f} MB")
    half = len(curve) // 2
    growth_first = curve[half]["rss_mb"] - curve[1]["rss_mb"]
    errors = server_errors(server_log.read_text(errors="replace"))
    growth_second = curve[-1]["rss_mb"] - curve[half]["rss_mb"]
    return {
        "requests": requests,
        "bad_share": 1 / 3,
        "new_tokens": new_tokens,
        "curve": curve,
        "bad_request_outcomes": outcomes,
        "good_request_failures": failures[:20],
        "n_good_request_failures": len(failures),
        "growth_mb_first_half": growth_first,
        "growth_mb_second_half": growth_second,
        "levels_off": bool(math.isfinite(growth_second) and growth_second <= max(8.0, 0.5 * growth_first)),
        "server_errors": errors,  # what the server logged for requests that failed (a traceback's last line)
    }


def server_errors(log_text: str, keep: int = 10) -> list[str]:
    """Each traceback's last line in a server log, and each ERROR line, first ``keep`` distinct ones."""
    found, lines = [], log_text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j] and not lines[j][0].isspace()), None)
            if end is not None:
                found.append(lines[end][:300])
        elif "ERROR" in line:
            found.append(line[:300])
    return list(dict.fromkeys(found))[:keep]


def bench_start(repeats: int = 1) -> dict:
    """Cold start (an empty model cache: the GGUF → transformers build included) vs warm start (the cache
    built), each to the page serving and to the first reply. Installing packages is not included."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="mage-start-"))
    try:
        cold = _start_app(root / "cache")
        warm = [_start_app(root / "cache") for _ in range(max(1, repeats))]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    warm_first = statistics.median(w["first_reply_s"] for w in warm)
    return {
        "cold": cold,
        "warm": warm,
        "warm_first_reply_median_s": warm_first,
        "ratio_cold_over_warm_first_reply": cold["first_reply_s"] / warm_first,
        "note": "fresh clone → serving also needs `make setup` (package installs, network-bound), not timed here",
    }


def bench_devices(repeats: int = 1, task: str = "assistant", prompts: int = 3, new_tokens: int = 16) -> dict:
    """The method × dtype matrix on the bench's device against float32 on the CPU: runs, and the share of
    prompts whose greedy tokens are identical (the default model and the task's committed checkpoints)."""
    from .decoding import SamplingConfig
    from .methods import METHODS, Engine
    from .tasks import get_task

    t = get_task(task)
    inputs = [ex.input for ex in t.examples("test")[:prompts]]
    config = SamplingConfig(max_new_tokens=new_tokens, greedy=True)
    weights = [1.0 / len(t.objectives)] * len(t.objectives)

    def tokens(engine):
        out = {}
        for method in METHODS:
            try:
                out[method] = [g.token_ids for g in engine.generate(method, weights, inputs, config)]
            except Exception as err:  # a benchmark records a crash as a result (the point of this part)
                out[method] = f"{type(err).__name__}: {err}"[:300]
        return out

    reference = tokens(Engine(t, device="cpu", dtype="float32"))
    dtypes = ("float32", "bfloat16", "float64") if TARGET["device"] != "cpu" else ("bfloat16", "float64")
    matrix = {}
    for dtype in dtypes:
        got = tokens(Engine(t, device=TARGET["device"], dtype=dtype))
        matrix[dtype] = {
            m: {
                "runs": isinstance(v, list),
                **(
                    {"same_greedy_tokens": sum(a == b for a, b in zip(v, reference[m])) / len(inputs)}
                    if isinstance(v, list) and isinstance(reference[m], list)
                    else {"error": v if isinstance(v, str) else reference[m]}
                ),
            }
            for m, v in got.items()
        }
    return {
        "task": task,
        "prompts": prompts,
        "new_tokens": new_tokens,
        "weights": weights,
        "reference": "float32 on the CPU",
        "device": TARGET["device"],
        "matrix": matrix,
    }


PARTS: dict[str, Callable[..., dict]] = {
    "merge": bench_merge,
    "decode": bench_decode,
    "guided": bench_guided,
    "app": bench_app,
    "react": bench_react,
    "sweep": bench_sweep,
    "start": bench_start,
    "profile": bench_profile,
    "devices": bench_devices,
    "soak": bench_soak,
}


def _fast_part(name: str) -> Callable[..., dict]:
    def run(**kwargs) -> dict:
        from . import bench_fast  # the fast paths' benchmarks (issue 23) import this module

        return getattr(bench_fast, f"bench_{name}")(**kwargs)

    run.__doc__ = f"mage.bench_fast.bench_{name}"
    return run


PARTS.update({name: _fast_part(name) for name in ("rows", "half", "gpu")})
