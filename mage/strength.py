"""Guidance strength: chosen once per guided method on the validation split (the best mean scalarised reward
over the preference grid), recorded in ``assets/results/<task>-strength-<method>.json``, and read back by
every sweep, report and the app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from . import locations
from .io import write_json_atomic
from .methods import Engine, get_method, strength_source
from .models import DEFAULT_BASE
from .sweep import SweepConfig, run_sweep


def strength_file(task: str, method: str, results_dir: Path | None = None) -> Path:
    return (results_dir or locations.results()) / f"{task}-strength-{method}.json"


def chosen_strength(task: str, method: str, results_dir: Path | None = None) -> float:
    """:func:`chosen_strengths` for one method, 1.0 when nothing was chosen."""
    return chosen_strengths(task, [method], results_dir).get(method, 1.0)


def chosen_strengths(task: str, methods: Sequence[str], results_dir: Path | None = None) -> dict[str, float]:
    """Per guided method, the strength ``choose-strength`` picked on the validation split: the method's own
    choice, else the one chosen for ``mage-<kind>`` (ensemble and sft+ are compared at MAGE's strength).
    Methods without a choice are left out (they run at the default strength)."""
    out = {}
    for method in methods:
        spec = get_method(method)
        if spec.guide is None or not spec.guide.uses_strength:
            continue
        for candidate in (method, strength_source(method)):
            path = strength_file(task, candidate, results_dir)
            if path.is_file():
                out[method] = float(json.loads(path.read_text())["chosen"])
                break
    return out


def choose_strength(
    task: str,
    method: str,
    strengths: list[float],
    *,
    prompts: int | None = 30,
    base: str = DEFAULT_BASE,
    seed: int = 0,
    max_new_tokens: int | None = None,
    out: Path | None = None,
    command: str | None = None,
) -> dict:
    """Pick a guidance strength on the validation split: the one with the best mean scalarised reward Σ μ_i r_i
    over the preference grid (ties: the smaller strength), among the positive ``strengths``. Strength 0
    (the unguided policy) is always run too, as the reference the choice is measured against, but is
    never chosen: a method's sweep at strength 0 would only repeat its policy's."""
    if not any(s > 0 for s in strengths):
        raise ValueError(f"strengths {strengths} has no positive value to choose; fix: e.g. --strengths 0.25,0.5,1,2")
    engine = Engine(task, base=base)
    rows = []
    for strength in sorted({0.0, *map(float, strengths)}):
        config = SweepConfig(
            task=task,
            methods=(method,),
            prompts=prompts,
            seed=seed,
            split="validation",
            strength=strength,
            base=base,
            max_new_tokens=max_new_tokens,
        )
        result = run_sweep(
            config,
            out.with_name(f"{out.stem}-w{strength:g}.json") if out else None,
            engine=engine,
            write=out is not None,
        )
        rows.append(
            {"strength": strength, **{k: result["summary"][method][k] for k in ("mean_scalarised", "hypervolume")}}
        )
    best = max((r for r in rows if r["strength"] > 0), key=lambda r: (r["mean_scalarised"], -r["strength"]))
    unguided = rows[0]
    choice = {
        "task": task,
        "method": method,
        "split": "validation",
        "prompts": prompts,
        "rows": rows,
        "chosen": best["strength"],
        "gain_over_unguided": best["mean_scalarised"] - unguided["mean_scalarised"],
        "command": command
        or _choose_command(
            task, method, strengths, prompts=prompts, base=base, seed=seed, max_new_tokens=max_new_tokens
        ),
    }
    if out is not None:
        write_json_atomic(out, choice)
    return choice


def _choose_command(
    task: str,
    method: str,
    strengths: list[float],
    *,
    prompts: int | None,
    base: str,
    seed: int,
    max_new_tokens: int | None,
) -> str:
    """The CLI line that repeats a ``choose_strength`` call made from Python (the CLI records its own argv instead)."""
    parts = [
        "python -m mage choose-strength",
        f"--task {task}",
        f"--method {method}",
        f"--strengths {','.join(f'{s:g}' for s in strengths)}",
        f"--prompts {prompts}" if prompts is not None else "",
        f"--seed {seed}" if seed else "",
        f"--base {base}" if base != DEFAULT_BASE else "",
        f"--max-new-tokens {max_new_tokens}" if max_new_tokens else "",
    ]
    return " ".join(p for p in parts if p)
