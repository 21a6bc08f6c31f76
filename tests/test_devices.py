"""Every method on every device present and in non-default dtypes: nothing a method builds stays behind.

A component left in float32 on the CPU (a value head, a guide, MOD's experts, ReACT's correction) fails
in bfloat16 or float64 exactly as it would on a GPU, so the CPU run catches it; where CUDA exists the
same test runs there too. Greedy tokens are compared with the float32 CPU run: float32 and float64 must
agree token for token; bfloat16 must run, and its agreement is reported (16-bit rounds the merge).
"""

from __future__ import annotations

import pytest
import torch

from mage.decoding import SamplingConfig
from mage.methods import METHODS, Engine

GREEDY = SamplingConfig(max_new_tokens=5, greedy=True)
PROMPTS = ["A news article about storms.", "Another one, about trains."]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CASES = [(d, t) for d in DEVICES for t in ("float32", "bfloat16", "float64") if (d, t) != ("cpu", "float32")]


def _floating_dtypes(
    *modules,
) -> set:  # parameters: transformers keeps the rotary inv_freq buffer in float32 on purpose
    return {p.dtype for m in modules if isinstance(m, torch.nn.Module) for p in m.parameters() if p.is_floating_point()}


def _devices(*modules) -> set:
    return {p.device.type for m in modules if isinstance(m, torch.nn.Module) for p in [*m.parameters(), *m.buffers()]}


@pytest.fixture(scope="module")
def reference(tiny_checkpoints):
    _, base = tiny_checkpoints
    engine = Engine("summary", base=str(base), top_k=3)
    return {m: [g.token_ids for g in engine.generate(m, [0.3, 0.7], PROMPTS, GREEDY)] for m in METHODS}


@pytest.mark.parametrize("device,dtype", CASES, ids=[f"{d}-{t}" for d, t in CASES])
def test_every_method_runs_on_any_device_and_dtype(tiny_checkpoints, reference, device, dtype):
    _, base = tiny_checkpoints
    engine = Engine("summary", base=str(base), top_k=3, device=device, dtype=dtype)
    want = getattr(torch, dtype)
    same = {}
    for method in METHODS:
        model, guide = engine.prepare(method, [0.3, 0.7])
        members = [m.model for m in getattr(guide, "members", [])]
        assert _floating_dtypes(model, *members) == {want}, f"{method}: a component is not in {dtype}"
        assert _devices(model, *members) == {device}, f"{method}: a component is not on {device}"
        gens = engine.generate(method, [0.3, 0.7], PROMPTS, GREEDY)
        assert all(len(g.token_ids) <= GREEDY.max_new_tokens for g in gens)
        same[method] = [g.token_ids for g in gens] == reference[method]
    print(
        f"\n{device} {dtype}: same greedy tokens as float32 CPU for {sum(same.values())}/{len(same)} methods "
        f"({', '.join(m for m, ok in same.items() if not ok) or 'all'}{' differ' if not all(same.values()) else ''})"
    )
    if dtype != "bfloat16":
        assert all(same.values()), (
            f"{device} {dtype} changed the greedy tokens of {[m for m, ok in same.items() if not ok]}"
        )


def test_a_device_this_machine_lacks_is_refused_clearly(tiny_checkpoints):
    from mage.models import pick_device, pick_dtype

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU.*fix: use --device cpu"):
            pick_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        pick_device("gpu0")
    with pytest.raises(ValueError, match="unknown dtype 'fp8'.*float32"):
        pick_dtype("fp8")


def test_the_gpu_benchmark_runs_every_variant_on_the_devices_present():
    """``bench gpu`` must run unattended on a CUDA machine: here it runs on a tiny model on every device present,
    every variant measured and each ratio taken against plain decoding in the same run."""
    from mage import bench
    from mage.bench_fast import gpu_rows

    for device in DEVICES:
        bench.TARGET.update(device=device, dtype="float32")
        try:
            rows = gpu_rows("tiny", new_tokens=4, repeats=1)
        finally:
            bench.TARGET.update(device="cpu", dtype="float32")
        by = {r["variant"]: r for r in rows}
        assert set(by) == {
            "plain",
            "plain-fast",
            "mage-i",
            "mage-i-fast",
            "mage-e",
            "ensemble-i",
            "mod",
            "re-merge",
            "slider → first token, bone",
            "slider → first token, mage-i",
        }
        assert by["plain"]["ratio_vs_plain"] == 1.0
        assert all(r.get("ms_per_step", r.get("ms")) > 0 for r in rows)
