"""Training a LoRA model for any reward-weight vector: best-of-n selection fine-tuning with TRL.

The trainer (measured and chosen in ``docs/TRAINING.md``) is RAFT / ReST-style selection
fine-tuning: sample a pool from the base model (:mod:`mage.pools`), keep per prompt the response
with the highest mixed reward h = Σ_i w_i r̃_i, then supervised-fine-tune a LoRA adapter on those
with TRL's ``SFTTrainer`` + peft. One call trains an expert (w = a row of I) or a Bone-Soup backbone
(w = a row of B) with the same pool, budget and seed. ``r̃`` is the reward standardised over the
pool ([ours]; ``normalize="none"`` uses raw rewards as the paper's PPO did).

A response that was cut at the token cap is trained *without* an end-of-turn token, so the model
does not learn to stop early where it never chose to stop.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .adapters import save_adapter
from .decoding import encode_prompts
from .io import atomic_dir, write_text_atomic
from .merging import normalize_weights
from .models import DEFAULT_BASE, fingerprint_model, fingerprint_tokenizer, load_base
from .pools import PoolConfig, sample_pool
from .tasks import Task, get_task


@dataclass(frozen=True)
class TrainConfig:
    base: str = DEFAULT_BASE
    normalize: str = "zscore"  # [ours]: standardise each objective over the pool before mixing
    rank: int = 8  # r = 8 on q/k/v/o keeps every committed adapter under 2 MB in fp16
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 1e-3  # LoRA on 135M: 1e-3 moved held-out rewards (ENVIRONMENT.md); 5e-5 did not
    epochs: int = 3
    batch_size: int = 8
    seed: int = 0
    pool: PoolConfig = field(default_factory=PoolConfig)

    def __post_init__(self):
        if self.normalize not in ("zscore", "none"):
            raise ValueError(f"normalize={self.normalize!r}; fix: use 'zscore' or 'none'")
        if self.rank < 1 or self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError(f"rank, epochs, batch_size must be >= 1 and learning_rate > 0; got {self}")


def standardize(pool: Sequence[dict], objectives: Sequence[str], normalize: str) -> dict[str, tuple[float, float]]:
    """Per-objective (mean, std) over the pool; (0, 1) when ``normalize == "none"``."""
    stats = {}
    for name in objectives:
        values = torch.tensor([row["scores"][name] for row in pool], dtype=torch.float64)
        std = float(values.std()) if len(values) > 1 else 1.0
        stats[name] = (float(values.mean()), std if std > 1e-12 else 1.0) if normalize == "zscore" else (0.0, 1.0)
    return stats


def select_best(pool: Sequence[dict], objectives: Sequence[str], weights: Sequence[float], normalize: str = "zscore") -> list[dict]:
    """Per prompt, the pool row with the highest mixed reward Σ_i w_i (r_i − m_i)/s_i (ties: lowest sample)."""
    stats = standardize(pool, objectives, normalize)
    best: dict[str, tuple[float, dict]] = {}
    for row in pool:
        h = sum(w * (row["scores"][n] - stats[n][0]) / stats[n][1] for n, w in zip(objectives, weights))
        if row["id"] not in best or h > best[row["id"]][0]:
            best[row["id"]] = (h, row)
    return [row for _, row in best.values()]


def sft_examples(task: Task, tokenizer, rows: Sequence[dict]) -> list[dict]:
    """Pre-tokenised SFT rows: prompt ids (no loss) + the sampled token ids (loss), EOS only if the
    model ended the turn itself."""
    out = []
    for row in rows:
        prompt_ids = encode_prompts(tokenizer, [task.messages(row["input"])], "cpu")[0][0].tolist()
        completion = list(row["token_ids"]) + ([tokenizer.eos_token_id] if row["finished"] else [])
        out.append({"input_ids": prompt_ids + completion, "completion_mask": [0] * len(prompt_ids) + [1] * len(completion)})
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_adapter(task_name: str, weights: Sequence[float], out_dir: str | Path, config: TrainConfig = TrainConfig(), *, command: str | None = None) -> Path:
    """Train one LoRA adapter for the reward weights ``weights`` and save it (with manifest, README)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    task = get_task(task_name)
    weights = normalize_weights(weights, len(task.objectives))
    started = time.time()
    # 1. the shared pool of base-model samples (cached across weight vectors)
    model, tokenizer = load_base(config.base)
    base_fp, tok_fp = fingerprint_model(model), fingerprint_tokenizer(tokenizer)
    pool = sample_pool(task, model, tokenizer, config.pool)
    # 2. best-of-n selection by the mixed reward
    chosen = select_best(pool, task.objectives, weights, config.normalize)
    means = {n: sum(r["scores"][n] for r in chosen) / len(chosen) for n in task.objectives}
    print(f"mage: selected {len(chosen)} of {len(pool)} samples for weights {weights}; their mean rewards {means}", flush=True)
    dataset = Dataset.from_list(sft_examples(task, tokenizer, chosen))
    # 3. supervised fine-tuning of a LoRA adapter with TRL
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=0.0, target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch, num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate, lr_scheduler_type="cosine", warmup_steps=2, logging_steps=5,
            save_strategy="no", report_to=[], seed=config.seed, bf16=False, fp16=False, gradient_checkpointing=False,
            use_cpu=not torch.cuda.is_available(), completion_only_loss=True, max_length=1024, dataloader_num_workers=0,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
        result = trainer.train()
    # 4. save atomically: adapter (fp16) + manifest + README with the exact recipe
    out_dir = Path(out_dir)
    info = {
        "task": task.name, "objectives": list(task.objectives), "weights": weights, "config": _jsonable(asdict(config)),
        "train_loss": float(result.training_loss), "selected_means": means, "n_pool": len(pool), "n_selected": len(chosen),
        "wall_time_s": round(time.time() - started, 1), "commit": git_commit(), "command": command or " ".join(sys.argv),
    }
    if trainer.accelerator.is_main_process:
        with atomic_dir(out_dir) as tmp:
            save_adapter(trainer.model, tmp, base_fingerprint=base_fp, tokenizer_fingerprint=tok_fp, info=info)
            write_text_atomic(tmp / "README.md", checkpoint_readme(info))
        print(f"mage: adapter saved to {out_dir} ({info['wall_time_s']} s)", flush=True)
    return out_dir


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=list))


def checkpoint_readme(info: dict) -> str:
    weights = ", ".join(f"{n}={w:.3g}" for n, w in zip(info["objectives"], info["weights"]))
    return (
        f"# {info['task']} adapter — reward weights {weights}\n\n"
        f"Trained by mage (best-of-n selection fine-tuning, TRL SFTTrainer + peft LoRA).\n\n"
        f"- command: `{info['command']}`\n- commit: {info['commit']}\n- wall time: {info['wall_time_s']} s\n"
        f"- data: the task's `{info['config']['pool']['split']}` split; pool of {info['n_pool']} base-model samples, "
        f"{info['n_selected']} selected (best per prompt)\n- mean rewards of the selected samples: "
        + ", ".join(f"{k}={v:.3f}" for k, v in info["selected_means"].items())
        + f"\n- final train loss: {info['train_loss']:.4f}\n\n## Config\n\n```json\n{json.dumps(info['config'], indent=2)}\n```\n"
    )
