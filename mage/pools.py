"""Sample pools: n responses per training prompt from one model, scored by every objective.

One pool from the base model serves every weight vector of a training round (experts and
backbones alike), which makes the Rewarded-Soup vs Bone-Soup comparison fair: same samples, same
budget, only the mixing weights differ. Pools are journaled batch by batch (an interrupted run
resumes where it stopped) and sharded over processes under ``torchrun`` / ``accelerate launch``.
"""

from __future__ import annotations

import logging
import gzip
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .decoding import SamplingConfig, decode_batch, sample_seed
from .io import (
    append_rows,
    open_journal,
    read_journal,
    read_json,
    read_jsonl,
    sha256_text,
    write_bytes_atomic,
    write_json_atomic,
    write_jsonl_atomic,
)
from .models import cache_dir, fingerprint_model
from .objectives import get_objective, score_all
from .parallel import barrier, rank_world
from .tasks import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolConfig:
    samples_per_prompt: int = 8  # best-of-8, as in the RAFT/ReST recipe measured in ENVIRONMENT.md
    split: str = "train"
    max_prompts: int | None = None  # None = the whole split
    temperature: float = 0.9
    top_p: float = 0.95
    batch_size: int = 16  # two prompts' samples per batch keeps left-padding small
    seed: int = 0
    max_new_tokens: int | None = None  # None = the task's cap
    hint: str = ""  # sample with the task's steering hint for this objective (a guided pool; "" = the plain prompt)


def pool_path(task: Task, model, config: PoolConfig, tag: str = "base") -> Path:
    """The cache file of a pool: keyed by everything that changes the *samples* (prompt template,
    cap, pool settings, model weights). Scores are keyed separately (:func:`scorer_signatures`)."""
    settings = asdict(config)
    if settings["hint"]:
        settings["hint_text"] = task.hints[settings["hint"]]
    else:
        del settings["hint"]  # pools sampled before hints existed keep their key
    key = sha256_text(json.dumps([task.name, task.template, task.max_new_tokens, settings, fingerprint_model(model)]))[
        :12
    ]
    return cache_dir() / "pools" / task.name / f"{tag}-{key}.jsonl"


def scorer_signatures(task: Task) -> dict[str, str]:
    return {name: get_objective(name).signature for name in task.objectives}


def signature_versions(scorers: dict[str, str] | None) -> str:
    """What results recorded with these :func:`scorer_signatures` were measured with, e.g. "faithful v3, quality
    v1" ("" when they predate signatures)."""
    return ", ".join(f"{name} v{signature.rsplit('|', 1)[-1]}" for name, signature in (scorers or {}).items())


def _signatures_path(final: Path) -> Path:
    return final.with_suffix(".scorers.json")


def shipped_path(task: Task, final: Path) -> Path:
    """Where a task's training pool ships beside its checkpoints (gzip-compressed JSONL): the data the
    committed models were trained on, and what a fresh machine reads instead of re-sampling it."""
    from .policy import checkpoints_root

    return checkpoints_root() / task.name / "pools" / f"{final.name}.gz"


def ship_pool(task: Task, final: Path) -> Path:
    """Copy a finished pool (and its scorer signatures) beside the task's checkpoints."""
    target = shipped_path(task, final)
    write_bytes_atomic(target, gzip.compress(final.read_bytes(), mtime=0))
    write_json_atomic(_signatures_path(target.with_suffix("")), read_json(_signatures_path(final)))
    return target


def _restore_shipped(task: Task, final: Path) -> bool:
    """Unpack a shipped pool into the cache (its samples are keyed like the cache's; stale scores are redone)."""
    shipped = shipped_path(task, final)
    if not shipped.is_file():
        return False
    write_bytes_atomic(final, gzip.decompress(shipped.read_bytes()))
    signatures = _signatures_path(shipped.with_suffix(""))
    if signatures.is_file():
        write_json_atomic(_signatures_path(final), read_json(signatures))
    log.info(f"mage: pool {final.name} restored from {shipped}")
    return True


def score_rows(task: Task, rows: list[dict]) -> list[dict]:
    """Set every row's ``scores`` (objective → float) by every objective of the task."""
    scores = score_all(task.objectives, [r["input"] for r in rows], [r["response"] for r in rows])
    for k, row in enumerate(rows):
        row["scores"] = {n: scores[n][k] for n in task.objectives}
    return rows


def proposal_rows(task: Task, tokenizer, config: PoolConfig) -> list[dict]:
    """The task's rule-based candidates (:attr:`Task.proposals`) for the pool's prompts, as pool rows: tokenised by
    the policy's tokenizer, ``finished``, scored; one longer than the pool's token cap is left out (the model could
    not have written it)."""
    cap = config.max_new_tokens or task.max_new_tokens
    rows = []
    for ex in task.examples(config.split)[: config.max_prompts]:
        for s, text in enumerate(task.proposals(ex.input) if task.proposals else []):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= cap:
                row = {"id": ex.id, "sample": 1000 + s, "input": ex.input, "response": text, "token_ids": ids}
                rows.append({**row, "finished": True})
    return score_rows(task, rows)


def score_pool(task: Task, final: Path, rows: list[dict]) -> list[dict]:
    """Score every row by every objective of the task and write the pool (and its scorer signatures) atomically."""
    score_rows(task, rows)
    write_jsonl_atomic(final, rows)
    write_json_atomic(_signatures_path(final), scorer_signatures(task))
    return rows


def _rescore_if_stale(task: Task, final: Path) -> None:
    """A finished pool scored by other scorers (a changed objective) is re-scored, not re-sampled."""
    sig_path = _signatures_path(final)
    if sig_path.is_file() and read_json(sig_path) == scorer_signatures(task):
        return
    log.info(f"mage: the scorers of {final.name} changed; re-scoring its samples")
    score_pool(task, final, read_jsonl(final))


def sample_pool(
    task: Task, model, tokenizer, config: PoolConfig = PoolConfig(), *, tag: str = "base", progress: bool = True
) -> list[dict]:
    """Sample, score and return the pool (cached: a finished pool is read back, not re-sampled).

    Each row: ``id``, ``sample`` (index), ``input``, ``response``, ``token_ids``, ``finished``,
    ``scores`` (objective → float). Row (prompt p, sample s) is seeded ``seed + 1000·p + s``.
    """
    final = pool_path(task, model, config, tag)
    rank, world = rank_world()
    if rank == 0 and not final.is_file():
        _restore_shipped(task, final)
    barrier(world)
    if final.is_file():
        if rank == 0:
            _rescore_if_stale(task, final)
        barrier(world)
        return read_jsonl(final)
    examples = task.examples(config.split)[: config.max_prompts]
    jobs = [(p, s, ex) for p, ex in enumerate(examples) for s in range(config.samples_per_prompt)]
    batches = [jobs[i : i + config.batch_size] for i in range(0, len(jobs), config.batch_size)][rank::world]
    journal = final.with_suffix(f".part{rank}")
    done = {(r["id"], r["sample"]) for r in read_journal(journal)}
    sampling = SamplingConfig(
        max_new_tokens=config.max_new_tokens or task.max_new_tokens, temperature=config.temperature, top_p=config.top_p
    )
    start = time.time()
    with open_journal(journal) as out:
        for batch in tqdm(batches, desc=f"pool {task.name} [{rank}/{world}]", disable=not progress or rank != 0):
            if all((ex.id, s) in done for _, s, ex in batch):
                continue
            batch = [
                (p, s, ex) for p, s, ex in batch if (ex.id, s) not in done
            ]  # a partly written batch: only the rest
            gens = decode_batch(
                model,
                tokenizer,
                [task.messages(ex, config.hint) for _, _, ex in batch],
                sampling,
                [sample_seed(config.seed, p, s) for p, s, _ in batch],
            )
            append_rows(
                out,
                [
                    {
                        "id": ex.id,
                        "sample": s,
                        "input": ex.input,
                        "response": g.text,
                        "token_ids": g.token_ids,
                        "finished": g.finished,
                    }
                    for (p, s, ex), g in zip(batch, gens)
                ],
            )
    barrier(world)
    if rank == 0:
        unique = {(r["id"], r["sample"]): r for k in range(world) for r in read_journal(final.with_suffix(f".part{k}"))}
        rows = list(unique.values())
        order = {ex.id: i for i, ex in enumerate(examples)}
        rows.sort(key=lambda r: (order[r["id"]], r["sample"]))
        score_pool(task, final, rows)
        for k in range(world):
            final.with_suffix(f".part{k}").unlink(missing_ok=True)
        log.info(f"mage: pool of {len(rows)} samples written to {final} in {time.time() - start:.0f} s")
    barrier(world)
    return read_jsonl(final)
