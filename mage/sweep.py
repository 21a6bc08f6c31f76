"""Preference-grid sweeps (SPEC §4): every method × every grid point, scored, written as one results file.

``assets/results/<task>.json`` schema (see docs/RESULTS.md):
  task, objectives (names, in order), reference_point (list), records, plus settings —
  each record: method, weights (objective order), means / stderr (objective → float), n_prompts,
  coefficients, strength, wall_time_s, per_prompt (objective → list, for paired statistics).
Points are journaled as they finish, so an interrupted sweep resumes and an unchanged point costs
nothing on a re-run; the records of the results file being rewritten count as cached too, so a fresh
clone extends the committed sweeps (e.g. adds one method) without regenerating them. Under
``torchrun`` / ``accelerate launch`` the points are shared out over the processes; every point is
generated with the same batches and seeds as in one process, so the results are identical.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .decoding import SamplingConfig
from .evaluation import EVAL_SAMPLING, evaluate_point
from .io import append_rows, open_journal, read_journal, read_json, sha256_file, sha256_text, write_json_atomic
from .merging import DEFAULT_BETA
from .methods import Engine, get_method, strength_source
from . import locations
from .models import DEFAULT_BASE, cache_dir, fingerprint_model
from .parallel import barrier, rank_world
from .pareto import controllability, hypervolume, pareto_front, reference_point
from .tasks import get_task

GRID_3 = [(0, 0, 1), (0, 1, 0), (1, 0, 0), (0.1, 0.1, 0.8), (0.1, 0.8, 0.1), (0.8, 0.1, 0.1), (0.2, 0.2, 0.6), (0.2, 0.6, 0.2),
          (0.6, 0.2, 0.2), (0.2, 0.4, 0.4), (0.4, 0.2, 0.4), (0.4, 0.4, 0.2), (1 / 3, 1 / 3, 1 / 3)]


def preference_grid(n: int) -> list[list[float]]:
    """SPEC §4: 11 points for two objectives, the 13 listed points for three. Four or more objectives (beyond
    the papers): the n corners, n points leaning on one objective (0.55, the rest shared) and the uniform one."""
    if n == 2:
        return [[i / 10, 1 - i / 10] for i in range(11)]
    if n == 3:
        return [list(p) for p in GRID_3]
    if n >= 4:
        corners = [[1.0 if j == i else 0.0 for j in range(n)] for i in range(n)]
        leaning = [[0.55 if j == i else 0.45 / (n - 1) for j in range(n)] for i in range(n)]
        return corners + leaning + [[1.0 / n] * n]
    raise ValueError(f"no preference grid for {n} objective(s); fix: a task needs at least 2 objectives")


@dataclass(frozen=True)
class SweepConfig:
    task: str
    methods: tuple[str, ...] = ("rs", "bone")
    prompts: int | None = None  # first N prompts of the split; None = all
    samples: int = 1
    seed: int = 0
    split: str = "test"
    strength: float = 1.0
    batch_size: int = 16
    base: str = DEFAULT_BASE
    max_new_tokens: int | None = None  # None = the task's cap
    temperature: float = EVAL_SAMPLING["temperature"]
    top_p: float = EVAL_SAMPLING["top_p"]
    grid: tuple[tuple[float, ...], ...] | None = None  # None = SPEC §4's grid
    beta: float = DEFAULT_BETA  # which Bone-Soup backbones (checkpoints/<task>/backbones-b<β>) bone / aba / mage-* use
    method_strengths: tuple[tuple[str, float], ...] = ()  # per-method guidance strength overriding ``strength``
    device: str = "cpu"  # "auto": a GPU when present; not part of a point's key (a sweep resumes on another device)
    dtype: str = "float32"  # the base model's weights: part of a point's key (16-bit folding rounds the merge)

    def strength_for(self, method: str) -> float:
        return dict(self.method_strengths).get(method, self.strength)




def _point_key(config: SweepConfig, method: str, weights, checkpoints: str) -> str:
    """A point's cache key: the settings, the method, μ and the hash of the checkpoints *that method* reads
    (retraining the value models does not invalidate the cached Rewarded-Soup points) and the objectives'
    signatures (a point scored by an earlier version of a scorer is re-measured, never reused)."""
    from .pools import scorer_signatures

    settings = {k: v for k, v in asdict(config).items() if k not in ("methods", "grid", "batch_size", "method_strengths", "device")}
    parts = [settings, method, [round(w, 6) for w in weights], checkpoints, scorer_signatures(get_task(config.task))]
    if method in dict(config.method_strengths):
        parts.append(["strength", config.strength_for(method)])
    return sha256_text(json.dumps(parts))[:16]


def _journal(config: SweepConfig, fingerprint: str, rank: int) -> Path:
    return cache_dir() / "sweeps" / config.task / f"{fingerprint}.part{rank}.jsonl"


def _recorded(config: SweepConfig, fingerprint: str) -> dict[str, dict]:
    """Every point already recorded for this base model, by key, from the journals of *any* rank: a sweep
    resumed with another number of processes reuses them instead of regenerating."""
    folder = _journal(config, fingerprint, 0).parent
    return {r["key"]: r for path in sorted(folder.glob(f"{fingerprint}.part*.jsonl")) for r in read_journal(path)}


def _committed(results: Path | None, fingerprint: str) -> dict[str, dict]:
    """The records, by key, of the results file a sweep will rewrite, if it is of the same base model: a
    fresh clone (no journals) reuses the committed sweeps instead of regenerating them. A key covers the
    settings, μ and the checkpoints' hashes, so only a truly unchanged point is reused."""
    if results is None or not results.is_file():
        return {}
    try:
        previous = read_json(results)
    except (OSError, json.JSONDecodeError):
        return {}  # unreadable: regenerate, and the atomic write replaces it
    if previous.get("hashes", {}).get("base_model") != fingerprint:
        return {}
    return {r["key"]: r for r in previous.get("records", []) if "key" in r}


def run_sweep(config: SweepConfig, out: Path | None = None, *, engine: Engine | None = None, write: bool = True) -> dict:
    """Sweep and summarise; the results file goes to ``out`` (default :func:`results_file`) unless ``write`` is False."""
    for m in config.methods:
        get_method(m)
    task = get_task(config.task)
    grid = [list(p) for p in config.grid] if config.grid else preference_grid(len(task.objectives))
    rank, world = rank_world()
    engine = engine or Engine(task, base=config.base, beta=config.beta, device=config.device, dtype=config.dtype)
    fingerprint = fingerprint_model(engine.policy.model)
    hashes = {m: checkpoint_hash(engine, m) for m in config.methods}
    sampling = SamplingConfig(max_new_tokens=config.max_new_tokens or task.max_new_tokens, temperature=config.temperature, top_p=config.top_p)
    points = [(m, w) for m in config.methods for w in grid]
    mine = points[rank::world]
    target = (out or results_file(task.name, config.beta)) if write else None  # an unwritten sweep reads only the journals
    committed = _committed(target, fingerprint)  # read once: only this sweep's rank 0 rewrites it, at the end
    done = committed.keys() | _recorded(config, fingerprint).keys()
    todo = [(m, w, key) for m, w in mine if (key := _point_key(config, m, w, hashes[m])) not in done]
    started = time.time()
    if todo:  # a sweep with nothing left to generate only reads the journals (safe beside a running sweep)
        with open_journal(_journal(config, fingerprint, rank)) as f:
            for method, weights, key in tqdm(todo, desc=f"sweep {task.name} [{rank}/{world}]", unit="point", disable=rank != 0):
                record = evaluate_point(engine, method, weights, strength=config.strength_for(method), split=config.split, samples=config.samples,
                                        seed=config.seed, max_prompts=config.prompts, sampling=sampling, batch_size=config.batch_size)
                append_rows(f, [{"key": key, **record}])
    barrier(world)
    result = None
    if rank == 0:
        by_key = {**committed, **_recorded(config, fingerprint)}
        records = [by_key[_point_key(config, m, w, hashes[m])] for m, w in points]
        result = summarise(task.name, list(task.objectives), records, settings={**asdict(config), "grid": grid, "sampling": asdict(sampling)},
                           hashes={"base_model": fingerprint, "checkpoints": hashes})
        result["wall_time_s"] = round(time.time() - started, 1)
        if write:
            write_json_atomic(target, result)
    barrier(world)
    return result or {}


def checkpoint_hash(engine: Engine, method: str) -> str:
    """A hash over the checkpoints ``method`` reads (:meth:`mage.methods.Method.reads`): its policy's ingredients
    (experts or backbones), its value models, and the ReACT file for ReACT."""
    return sha256_text(json.dumps([method, get_method(method).reads(engine)]))[:16]


def summarise(task: str, objectives: list[str], records: list[dict], *, settings: dict, hashes: dict) -> dict:
    """The results file: records, the shared reference point, and per-method front / HV / controllability."""
    means = [[r["means"][o] for o in objectives] for r in records]
    ref = reference_point(means)
    methods = {}
    for method in dict.fromkeys(r["method"] for r in records):
        rows = [r for r in records if r["method"] == method]
        pts = [[r["means"][o] for o in objectives] for r in rows]
        methods[method] = {"front": [list(p) for p in pareto_front(pts)], "hypervolume": hypervolume(pts, ref),
                           "controllability": controllability([r["weights"] for r in rows], pts),
                           "mean_scalarised": sum(sum(w * x for w, x in zip(r["weights"], p)) for r, p in zip(rows, pts)) / len(rows)}
    from .pools import scorer_signatures

    return {"task": task, "objectives": objectives, "scorers": scorer_signatures(get_task(task)), "reference_point": ref, "records": records, "summary": methods,
            "settings": settings, "hashes": hashes}


def results_file(task: str, beta: float = DEFAULT_BETA, results_dir: Path | None = None) -> Path:
    """A sweep's default results file: ``<task>.json`` for the default β, else :func:`beta_file`, so a β ablation
    never overwrites the main results."""
    return (results_dir or locations.results()) / f"{task}.json" if beta == DEFAULT_BETA else beta_file(task, beta, results_dir)


def beta_file(task: str, beta: float, results_dir: Path | None = None) -> Path:
    """Where ``evaluate --beta`` writes a sweep with other backbones than the default β (the β ablation)."""
    return (results_dir or locations.results()) / f"{task}-beta{beta:g}.json"


def beta_files(task: str, results_dir: Path | None = None) -> dict[float, Path]:
    """The β-ablation sweeps beside ``<task>.json``, by β (other files that merely start with ``<task>-beta`` are skipped)."""
    found = {}
    for path in sorted((results_dir or locations.results()).glob(f"{task}-beta*.json")):
        try:
            beta = float(path.stem[len(f"{task}-beta"):])
        except ValueError:
            continue
        if path == beta_file(task, beta, path.parent):
            found[beta] = path
    return found


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
        if spec.guide is None:
            continue
        for candidate in (method, strength_source(method)):
            path = strength_file(task, candidate, results_dir)
            if path.is_file():
                out[method] = float(json.loads(path.read_text())["chosen"])
                break
    return out


def choose_strength(task: str, method: str, strengths: list[float], *, prompts: int | None = 30, base: str = DEFAULT_BASE, seed: int = 0,
                    max_new_tokens: int | None = None, out: Path | None = None, command: str | None = None) -> dict:
    """Pick a guidance strength on the validation split: the one with the best mean scalarised reward Σ μ_i r_i
    over the preference grid (ties: the smaller strength), among the positive ``strengths``. Strength 0
    (the unguided policy) is always run too, as the reference the choice is measured against, but is
    never chosen: a method's sweep at strength 0 would only repeat its policy's."""
    if not any(s > 0 for s in strengths):
        raise ValueError(f"strengths {strengths} has no positive value to choose; fix: e.g. --strengths 0.25,0.5,1,2")
    engine = Engine(task, base=base)
    rows = []
    for strength in sorted({0.0, *map(float, strengths)}):
        config = SweepConfig(task=task, methods=(method,), prompts=prompts, seed=seed, split="validation", strength=strength, base=base, max_new_tokens=max_new_tokens)
        result = run_sweep(config, out.with_name(f"{out.stem}-w{strength:g}.json") if out else None, engine=engine, write=out is not None)
        rows.append({"strength": strength, **{k: result["summary"][method][k] for k in ("mean_scalarised", "hypervolume")}})
    best = max((r for r in rows if r["strength"] > 0), key=lambda r: (r["mean_scalarised"], -r["strength"]))
    unguided = rows[0]
    choice = {"task": task, "method": method, "split": "validation", "prompts": prompts, "rows": rows, "chosen": best["strength"],
              "gain_over_unguided": best["mean_scalarised"] - unguided["mean_scalarised"],
              "command": command or _choose_command(task, method, strengths, prompts=prompts, base=base, seed=seed, max_new_tokens=max_new_tokens)}
    if out is not None:
        write_json_atomic(out, choice)
    return choice


def _choose_command(task: str, method: str, strengths: list[float], *, prompts: int | None, base: str, seed: int, max_new_tokens: int | None) -> str:
    """The CLI line that repeats a ``choose_strength`` call made from Python (the CLI records its own argv instead)."""
    parts = ["python -m mage choose-strength", f"--task {task}", f"--method {method}", f"--strengths {','.join(f'{s:g}' for s in strengths)}",
             f"--prompts {prompts}" if prompts is not None else "", f"--seed {seed}" if seed else "",
             f"--base {base}" if base != DEFAULT_BASE else "", f"--max-new-tokens {max_new_tokens}" if max_new_tokens else ""]
    return " ".join(p for p in parts if p)


def corner_grid(n: int) -> list[list[float]]:
    """The one-hot preferences and the uniform one: the cheap sub-grid of the compatibility analysis."""
    return [[1.0 if i == j else 0.0 for i in range(n)] for j in range(n)] + [[1.0 / n] * n]


def compatibility(task: str, kind: str, strengths: list[float], *, prompts: int | None = None, split: str = "test", base: str = DEFAULT_BASE, seed: int = 0,
                  max_new_tokens: int | None = None, out: Path | None = None, command: str = "") -> dict:
    """The compatibility problem (MAGE §3): guidance on a *fixed* policy (``sft+<kind>``) at several strengths vs
    MAGE (``mage-<kind>``, merged policy + merged guide at its chosen strength), each swept over the
    corner grid (one-hot μ + uniform). Reports, per run, how far the achieved rewards move with μ
    (per-objective spread, max − min over the grid) and the points themselves."""
    from .compare import spread

    t = get_task(task)
    sft, mage = f"sft+{kind[0]}", f"mage-{kind[0]}"
    engine = Engine(t, base=base)
    grid = tuple(tuple(p) for p in corner_grid(len(t.objectives)))
    common = dict(task=task, prompts=prompts, seed=seed, split=split, base=base, max_new_tokens=max_new_tokens, grid=grid)
    runs = []
    for method, strength in [(sft, s) for s in strengths] + [(mage, chosen_strength(task, mage))]:
        config = SweepConfig(methods=(method,), method_strengths=((method, strength),), **common)
        result = run_sweep(config, engine=engine, write=False)
        records = result["records"]
        moved = spread(records, t.objectives)
        runs.append({"method": method, "strength": strength, "spread": moved, "mean_spread": sum(moved.values()) / len(moved),
                     "points": [{"weights": r["weights"], "means": r["means"], "stderr": r["stderr"]} for r in records]})
    summary = {"task": task, "kind": kind, "objectives": list(t.objectives), "split": split, "prompts": prompts, "grid": [list(p) for p in grid],
               "runs": runs, "command": command}
    write_json_atomic(out or locations.results() / f"{task}-compat-{kind}.json", summary)
    return summary
