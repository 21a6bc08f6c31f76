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

import logging
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from .adapters import save_adapter
from .decoding import encode_prompts
from .io import atomic_dir, write_text_atomic
from .merging import normalize_weights
from .models import DEFAULT_BASE, fingerprint_model, fingerprint_tokenizer, load_base, pick_device
from .pools import PoolConfig, proposal_rows, sample_pool
from .tasks import Task, get_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    base: str = DEFAULT_BASE
    # [ours]: standardise each objective over the pool before mixing
    normalize: str = field(default="zscore", metadata={"choices": ("zscore", "none")})
    rank: int = 8  # r = 8 on q/k/v/o keeps every committed adapter under 2 MB in fp16
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 1e-3  # LoRA on 135M: 1e-3 moved held-out rewards (ENVIRONMENT.md); 5e-5 did not
    epochs: int = 3
    batch_size: int = 8
    seed: int = 0
    pool: PoolConfig = field(
        default_factory=PoolConfig
    )  # bon-sft: the sample pool; grpo: prompts, generations, sampling
    # best-of-n selection SFT, or online GRPO (see docs/TRAINING.md for the measured comparison)
    trainer: str = field(default="bon-sft", metadata={"choices": ("bon-sft", "grpo")})
    grpo_steps: int = 15
    grpo_beta: float = 0.0  # KL penalty; TRL's default is 0
    rounds: int = (
        1  # bon-sft: round 1 selects from the shared base pool; round k > 1 from the round-(k-1) model's own samples
    )
    device: str = (
        "auto"  # sampling and training: a GPU when present (bf16 mixed precision where it has it), else the CPU
    )
    # bon-sft round 1: also select from this many samples per prompt *per objective* drawn with the task's steering
    # hint for that objective (context distillation: the SFT prompt is the plain one); 0 = the base pool alone
    guide_samples: int = 0

    def __post_init__(self):
        if self.trainer not in ("bon-sft", "grpo"):
            raise ValueError(f"trainer={self.trainer!r}; fix: use 'bon-sft' or 'grpo'")
        if self.normalize not in ("zscore", "none"):
            raise ValueError(f"normalize={self.normalize!r}; fix: use 'zscore' or 'none'")
        if self.rank < 1 or self.epochs < 1 or self.batch_size < 1 or self.rounds < 1 or not self.learning_rate > 0:
            raise ValueError(f"rank, epochs, batch_size must be >= 1 and learning_rate > 0; got {self}")
        if self.guide_samples < 0:
            raise ValueError(f"guide_samples={self.guide_samples} must be >= 0 (0 = no guided samples)")


def default_pool(task: Task, **overrides) -> PoolConfig:
    """The task's default best-of-n pool (what the committed checkpoints used), with overrides."""
    settings = dict(samples_per_prompt=task.pool_samples, max_prompts=task.pool_prompts, batch_size=task.pool_batch)
    return PoolConfig(**{**settings, **{k: v for k, v in overrides.items() if v is not None}})


GUIDED_TAG = "guided"  # the cache and shipped file names of the hinted pools: guided-<key>.jsonl


def guided_pools(task: Task, config: "TrainConfig") -> list[PoolConfig]:
    """The hinted pools ``config.guide_samples`` adds: one per objective the task has a steering hint for."""
    if not config.guide_samples:
        return []
    return [
        replace(config.pool, samples_per_prompt=config.guide_samples, hint=objective)
        for objective in task.objectives
        if objective in task.hints
    ]


def training_pool(task: Task, model, tokenizer, config: "TrainConfig") -> tuple[list[dict], list[dict]]:
    """(the base pool, the pool round 1 selects from). With ``config.guide_samples`` the second adds, for each
    objective the task has a steering hint for, that many samples per prompt from the base model asked for that
    objective (:attr:`Task.hints`), and the task's rule-based candidates (:attr:`Task.proposals`); each such row
    carries ``hint`` (the objective, or ``"proposal"``). Every weight vector selects from the same rows, so experts
    and backbones still share pool and budget."""
    base = sample_pool(task, model, tokenizer, config.pool)
    if not config.guide_samples:
        return base, base
    if not task.hints and task.proposals is None:
        raise ValueError(
            f"guide_samples={config.guide_samples} but task {task.name!r} has no sampling hints or proposals; fix: "
            "use --guide-samples 0 or add hints to the task"
        )
    guided = [
        {**row, "hint": pool.hint}
        for pool in guided_pools(task, config)
        for row in sample_pool(task, model, tokenizer, pool, tag=GUIDED_TAG)
    ]
    guided += [{**row, "hint": "proposal"} for row in proposal_rows(task, tokenizer, config.pool)]
    return base, base + guided


def standardize(pool: Sequence[dict], objectives: Sequence[str], normalize: str) -> dict[str, tuple[float, float]]:
    """Per-objective (mean, std) over the pool; (0, 1) when ``normalize == "none"``."""
    stats = {}
    for name in objectives:
        values = torch.tensor([row["scores"][name] for row in pool], dtype=torch.float64)
        std = float(values.std()) if len(values) > 1 else 1.0
        stats[name] = (float(values.mean()), std if std > 1e-12 else 1.0) if normalize == "zscore" else (0.0, 1.0)
    return stats


def select_best(
    pool: Sequence[dict],
    objectives: Sequence[str],
    weights: Sequence[float],
    normalize: str = "zscore",
    stats: dict[str, tuple[float, float]] | None = None,
) -> list[dict]:
    """Per prompt, the pool row with the highest mixed reward Σ_i w_i (r_i − m_i)/s_i (ties: lowest sample);
    (m_i, s_i) are the pool's own unless ``stats`` gives them."""
    stats = stats or standardize(pool, objectives, normalize)
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
        out.append(
            {"input_ids": prompt_ids + completion, "completion_mask": [0] * len(prompt_ids) + [1] * len(completion)}
        )
    return out


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _lora(config: "TrainConfig"):
    from peft import LoraConfig

    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=0.0,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )


def on_cpu(config) -> bool:
    """Does this run train on the CPU? (``config.device``: auto = a GPU when present)."""
    return pick_device(config.device).type == "cpu"


def use_bf16(config) -> bool:
    """bf16 mixed precision where it is fast (a GPU that supports it, e.g. the papers' scale); fp32 on a CPU."""
    return not on_cpu(config) and torch.cuda.is_bf16_supported()


def trainer_args(config, scratch: str) -> dict:  # config: anything with learning_rate, batch_size, seed, device
    """Trainer arguments right for the device: fp32 on a CPU (TRL's defaults assume bf16 on a GPU), bf16 on a GPU that
    has it."""
    return dict(
        output_dir=scratch,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        seed=config.seed,
        bf16=use_bf16(config),
        fp16=False,
        gradient_checkpointing=use_bf16(config),
        use_cpu=on_cpu(config),
        dataloader_num_workers=0,
    )


def round_dir(task: Task, weights: Sequence[float], config: "TrainConfig", k: int) -> Path:
    """Where round ``k`` of an iterated best-of-n run keeps its adapter (peft format, in the cache): the
    journal that lets the same command resume after a stop. Keyed by everything that shapes the run."""
    from .io import sha256_text
    from .models import cache_dir

    settings = {k: v for k, v in jsonable(asdict(config)).items() if k != "device"}  # a run resumes on another device
    if not settings["guide_samples"]:  # runs journaled before guided pools existed keep their key
        del settings["guide_samples"]
    if not settings["pool"]["hint"]:
        del settings["pool"]["hint"]
    key = sha256_text(json.dumps([task.name, task.template, [round(w, 6) for w in weights], settings], sort_keys=True))[
        :12
    ]
    return cache_dir() / "rounds" / task.name / key / f"round{k}"


def _sft(task: Task, model, tokenizer, chosen: Sequence[dict], config: "TrainConfig", scratch: str, peft: bool):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **trainer_args(config, scratch),
        num_train_epochs=config.epochs,
        lr_scheduler_type="cosine",
        warmup_steps=2,
        completion_only_loss=True,
        max_length=1024,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(sft_examples(task, tokenizer, chosen)),
        processing_class=tokenizer,
        peft_config=_lora(config) if peft else None,
    )
    return trainer, float(trainer.train().training_loss)


def fit_bon_sft(task: Task, weights: list[float], model, tokenizer, config: "TrainConfig", scratch: str):
    """Iterated best-of-n selection fine-tuning (RAFT / ReST): round 1 selects from the shared base pool,
    round k > 1 from a pool the round-(k−1) model samples itself, each time SFT of the same LoRA adapter
    with TRL. Every round's adapter is kept in the cache (:func:`round_dir`), so a stopped run resumes at
    the first unfinished round. The mixed reward is standardised with the base pool's statistics in every
    round, so a weight vector means the same trade-off throughout."""
    from peft import PeftModel

    base_pool, first_pool = training_pool(task, model, tokenizer, config)
    stats = standardize(base_pool, task.objectives, config.normalize)
    history, trainer, loss = [], None, float("nan")
    done = max(
        (
            k
            for k in range(1, config.rounds + 1)
            if (round_dir(task, weights, config, k) / "adapter_config.json").is_file()
        ),
        default=0,
    )
    if done:
        model = PeftModel.from_pretrained(model, str(round_dir(task, weights, config, done)), is_trainable=True)
        log.info(f"mage: resuming after round {done} of {config.rounds} ({round_dir(task, weights, config, done)})")
    for k in range(done + 1, config.rounds + 1):
        model.eval()
        pool = (
            first_pool
            if k == 1
            else sample_pool(
                task, model, tokenizer, config.pool, tag=f"round{k}-{round_dir(task, weights, config, k).parent.name}"
            )
        )
        chosen = select_best(pool, task.objectives, weights, config.normalize, stats=stats)
        means = {n: sum(r["scores"][n] for r in chosen) / len(chosen) for n in task.objectives}
        pool_means = {n: sum(r["scores"][n] for r in pool) / len(pool) for n in task.objectives}
        log.info(
            f"mage: round {k}/{config.rounds}: selected {len(chosen)} of {len(pool)} samples for weights {weights}; "
            f"pool means {pool_means}; selected {means}"
        )
        trainer, loss = _sft(task, model, tokenizer, chosen, config, scratch, peft=k == 1 and not done)
        model = trainer.model
        if trainer.accelerator.is_main_process:
            with atomic_dir(round_dir(task, weights, config, k)) as tmp:
                model.save_pretrained(str(tmp))
        history.append({"round": k, "pool_means": pool_means, "selected_means": means, "train_loss": loss})
    if trainer is None:  # every round was done before: rebuild a trainer-free result from the last round
        return _Finished(model), {
            "train_loss": float("nan"),
            "rounds": config.rounds,
            "resumed_complete": True,
            "n_pool": len(base_pool),
        }
    return trainer, {
        "train_loss": loss,
        "selected_means": history[-1]["selected_means"],
        "n_pool": len(base_pool),
        "n_guided": len(first_pool) - len(base_pool),
        "n_selected": len(chosen),
        "rounds": history,
    }


class _Finished:
    """Stands in for a trainer when every round was already journaled: what ``train_adapter`` reads."""

    def __init__(self, model):
        from accelerate import PartialState

        self.model = model
        self.accelerator = type("Acc", (), {"is_main_process": PartialState().is_main_process})()


def fit_grpo(task: Task, weights: list[float], model, tokenizer, config: "TrainConfig", scratch: str):
    """Online GRPO (TRL ``GRPOTrainer``) with one reward function per objective and ``reward_weights`` = w.

    Each objective is standardised within its group before weighting (``normalize_then_sum``), the
    online counterpart of the z-scored mixing of :func:`fit_bon_sft`.
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from .objectives import get_objective

    examples = task.examples(config.pool.split)[: config.pool.max_prompts]
    dataset = Dataset.from_list([{"prompt": task.messages(ex), "input": ex.input} for ex in examples])
    args = GRPOConfig(
        **trainer_args(config, scratch),
        max_steps=config.grpo_steps,
        num_generations=config.pool.samples_per_prompt,
        max_completion_length=config.pool.max_new_tokens or task.max_new_tokens,
        temperature=config.pool.temperature,
        top_p=config.pool.top_p,
        beta=config.grpo_beta,
        reward_weights=list(weights),
        multi_objective_aggregation="normalize_then_sum",
        lr_scheduler_type="constant",
    )
    reward_funcs = [get_objective(n).as_reward_fn() for n in task.objectives]
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=_lora(config),
    )
    result = trainer.train()
    return trainer, {"train_loss": float(result.training_loss), "n_prompts": len(examples), "steps": config.grpo_steps}


TRAINERS = {"bon-sft": fit_bon_sft, "grpo": fit_grpo}


def train_adapter(
    task_name: str,
    weights: Sequence[float],
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    *,
    command: str | None = None,
) -> Path:
    """Train one LoRA adapter for the reward weights ``weights`` and save it (with manifest, README)."""
    task = get_task(task_name)
    weights = normalize_weights(weights, len(task.objectives))
    started, commit = time.time(), git_commit()  # the code this run runs, not what HEAD is when it saves
    model, tokenizer = load_base(config.base, device=config.device)
    base_fp, tok_fp = fingerprint_model(model), fingerprint_tokenizer(tokenizer)
    with tempfile.TemporaryDirectory() as scratch:
        trainer, stats = TRAINERS[config.trainer](task, weights, model, tokenizer, config, scratch)
    info = {
        "task": task.name,
        "objectives": list(task.objectives),
        "weights": weights,
        "trainer": config.trainer,
        "config": jsonable(asdict(config)),
        **stats,
        "wall_time_s": round(time.time() - started, 1),
        "commit": commit,
        "command": command or " ".join(sys.argv),
    }
    out_dir = Path(out_dir)
    if trainer.accelerator.is_main_process:  # save atomically: adapter (fp16) + manifest + README with the recipe
        with atomic_dir(out_dir) as tmp:
            save_adapter(trainer.model, tmp, base_fingerprint=base_fp, tokenizer_fingerprint=tok_fp, info=info)
            write_text_atomic(tmp / "README.md", checkpoint_readme(info))
        log.info(f"mage: adapter saved to {out_dir} ({info['wall_time_s']} s)")
    return out_dir


def _n_rounds(info: dict) -> int:
    rounds = info.get("rounds", 1)
    return len(rounds) if isinstance(rounds, list) else int(rounds)


def jsonable(obj):
    return json.loads(json.dumps(obj, default=list))


def checkpoint_readme(info: dict) -> str:
    weights = ", ".join(f"{n}={w:.3g}" for n, w in zip(info["objectives"], info["weights"]))
    return (
        f"# {info['task']} adapter — reward weights {weights}\n\n"
        f"Trained by mage ({info['trainer']}: TRL + peft LoRA).\n\n"
        f"- command: `{info['command']}`\n- commit: {info['commit']}\n- wall time: {info['wall_time_s']} s\n"
        f"- data: the task's `{info['config']['pool']['split']}` split"
        + (
            f"; pool of {info['n_pool']} base-model samples"
            + (f" + {info['n_guided']} guided (asked for one objective, or proposed)" if info.get("n_guided") else "")
            + f", best per prompt selected in each of {_n_rounds(info)} "
            "round(s)\n- mean rewards of the last round's selected samples: "
            + ", ".join(f"{k}={v:.3f}" for k, v in info.get("selected_means", {}).items())
            if "n_pool" in info
            else f"; {info.get('steps')} GRPO steps"
        )
        + f"\n- final train loss: {info['train_loss']:.4f}\n\n## "
        f"Config\n\n```json\n{json.dumps(info['config'], indent=2)}\n```\n"
    )
