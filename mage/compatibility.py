"""The compatibility problem (MAGE §3): guidance on a *fixed* policy at several strengths vs MAGE (merged
policy + merged guide), each swept over the corner grid — how far each moves with μ."""

from __future__ import annotations

from pathlib import Path

from . import locations
from .grid import corner_grid
from .io import write_json_atomic
from .methods import Engine
from .models import DEFAULT_BASE
from .strength import chosen_strength
from .sweep import SweepConfig, run_sweep
from .tasks import get_task


def compatibility(
    task: str,
    kind: str,
    strengths: list[float],
    *,
    prompts: int | None = None,
    split: str = "test",
    base: str = DEFAULT_BASE,
    seed: int = 0,
    max_new_tokens: int | None = None,
    out: Path | None = None,
    command: str = "",
) -> dict:
    """The compatibility problem (MAGE §3): guidance on a *fixed* policy (``sft+<kind>``) at several strengths vs
    MAGE (``mage-<kind>``, merged policy + merged guide at its chosen strength), each swept over the
    corner grid (one-hot μ + uniform). Reports, per run, how far the achieved rewards move with μ
    (per-objective spread, max − min over the grid) and the points themselves."""
    from .compare import spread

    t = get_task(task)
    from .methods import Guidance, Merge, find_method

    sft, mage = find_method(Merge("base"), Guidance(kind)), find_method(Merge("bone"), Guidance(kind))
    engine = Engine(t, base=base)
    grid = tuple(tuple(p) for p in corner_grid(len(t.objectives)))
    common = dict(
        task=task, prompts=prompts, seed=seed, split=split, base=base, max_new_tokens=max_new_tokens, grid=grid
    )
    runs = []
    for method, strength in [(sft, s) for s in strengths] + [(mage, chosen_strength(task, mage))]:
        config = SweepConfig(methods=(method,), method_strengths=((method, strength),), **common)
        result = run_sweep(config, engine=engine, write=False)
        records = result["records"]
        moved = spread(records, t.objectives)
        runs.append(
            {
                "method": method,
                "strength": strength,
                "spread": moved,
                "mean_spread": sum(moved.values()) / len(moved),
                "points": [{"weights": r["weights"], "means": r["means"], "stderr": r["stderr"]} for r in records],
            }
        )
    summary = {
        "task": task,
        "kind": kind,
        "objectives": list(t.objectives),
        "split": split,
        "prompts": prompts,
        "grid": [list(p) for p in grid],
        "runs": runs,
        "command": command,
    }
    write_json_atomic(out or locations.results() / f"{task}-compat-{kind}.json", summary)
    return summary
