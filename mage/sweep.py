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

from tqdm.auto import tqdm

from .decoding import SamplingConfig
from .evaluation import EVAL_SAMPLING, evaluate_point
from .io import append_rows, open_journal, read_journal, read_json, sha256_text, write_json_atomic
from .merging import DEFAULT_BETA
from .grid import preference_grid
from .methods import Engine, get_method
from . import locations
from .models import DEFAULT_BASE, cache_dir, fingerprint_model
from .parallel import barrier, rank_world
from .pareto import controllability, hypervolume, pareto_front, reference_point
from .tasks import get_task


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

    settings = {
        k: v
        for k, v in asdict(config).items()
        if k not in ("methods", "grid", "batch_size", "method_strengths", "device")
    }
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


def run_sweep(
    config: SweepConfig, out: Path | None = None, *, engine: Engine | None = None, write: bool = True
) -> dict:
    """Sweep and summarise; the results file goes to ``out`` (default :func:`results_file`) unless ``write`` is
    False."""
    for m in config.methods:
        get_method(m)
    task = get_task(config.task)
    grid = [list(p) for p in config.grid] if config.grid else preference_grid(len(task.objectives))
    rank, world = rank_world()
    engine = engine or Engine(task, base=config.base, beta=config.beta, device=config.device, dtype=config.dtype)
    fingerprint = fingerprint_model(engine.policy.model)
    hashes = {m: checkpoint_hash(engine, m) for m in config.methods}
    sampling = SamplingConfig(
        max_new_tokens=config.max_new_tokens or task.max_new_tokens, temperature=config.temperature, top_p=config.top_p
    )
    points = [(m, w) for m in config.methods for w in grid]
    mine = points[rank::world]
    target = (
        (out or results_file(task.name, config.beta)) if write else None
    )  # an unwritten sweep reads only the journals
    committed = _committed(target, fingerprint)  # read once: only this sweep's rank 0 rewrites it, at the end
    done = committed.keys() | _recorded(config, fingerprint).keys()
    todo = [(m, w, key) for m, w in mine if (key := _point_key(config, m, w, hashes[m])) not in done]
    started = time.time()
    if todo:  # a sweep with nothing left to generate only reads the journals (safe beside a running sweep)
        with open_journal(_journal(config, fingerprint, rank)) as f:
            for method, weights, key in tqdm(
                todo, desc=f"sweep {task.name} [{rank}/{world}]", unit="point", disable=rank != 0
            ):
                record = evaluate_point(
                    engine,
                    method,
                    weights,
                    strength=config.strength_for(method),
                    split=config.split,
                    samples=config.samples,
                    seed=config.seed,
                    max_prompts=config.prompts,
                    sampling=sampling,
                    batch_size=config.batch_size,
                )
                append_rows(f, [{"key": key, **record}])
    barrier(world)
    result = None
    if rank == 0:
        by_key = {**committed, **_recorded(config, fingerprint)}
        records = [by_key[_point_key(config, m, w, hashes[m])] for m, w in points]
        result = summarise(
            task.name,
            list(task.objectives),
            records,
            settings={**asdict(config), "grid": grid, "sampling": asdict(sampling)},
            hashes={"base_model": fingerprint, "checkpoints": hashes},
        )
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
        methods[method] = {
            "front": [list(p) for p in pareto_front(pts)],
            "hypervolume": hypervolume(pts, ref),
            "controllability": controllability([r["weights"] for r in rows], pts),
            "mean_scalarised": sum(sum(w * x for w, x in zip(r["weights"], p)) for r, p in zip(rows, pts)) / len(rows),
        }
    from .pools import scorer_signatures

    return {
        "task": task,
        "objectives": objectives,
        "scorers": scorer_signatures(get_task(task)),
        "reference_point": ref,
        "records": records,
        "summary": methods,
        "settings": settings,
        "hashes": hashes,
    }


def results_file(task: str, beta: float = DEFAULT_BETA, results_dir: Path | None = None) -> Path:
    """A sweep's default results file: ``<task>.json`` for the default β, else :func:`beta_file`, so a β ablation
    never overwrites the main results."""
    return (
        (results_dir or locations.results()) / f"{task}.json"
        if beta == DEFAULT_BETA
        else beta_file(task, beta, results_dir)
    )


def beta_file(task: str, beta: float, results_dir: Path | None = None) -> Path:
    """Where ``evaluate --beta`` writes a sweep with other backbones than the default β (the β ablation)."""
    return (results_dir or locations.results()) / f"{task}-beta{beta:g}.json"


def beta_files(task: str, results_dir: Path | None = None) -> dict[float, Path]:
    """The β-ablation sweeps beside ``<task>.json``, by β (other files that merely start with ``<task>-beta`` are
    skipped)."""
    found = {}
    for path in sorted((results_dir or locations.results()).glob(f"{task}-beta*.json")):
        try:
            beta = float(path.stem[len(f"{task}-beta") :])
        except ValueError:
            continue
        if path == beta_file(task, beta, path.parent):
            found[beta] = path
    return found
