"""MAGE stage-2 value models: explicit (LoRA + scalar head) and implicit (autoregressive reward model).

MAGE (arXiv 2510.03782) confirms one value model per objective, of two kinds, merged by μ into one
guidance model; its recipes are not public. This module implements SPEC §3 [ours]:

- **explicit** ``V_i(x, y_≤t)``: the base model + LoRA + a linear head on the last hidden state,
  trained so that every prefix of a base-model sample regresses to that sample's standardised
  final reward r_i (CD-FUDGE): L = mean_t (V(x, y_≤t) − z_i)². TRL has no trainer for per-prefix
  regression, so this is a short accelerate loop.
- **implicit**: an autoregressive reward model (GenARM): the base model + LoRA whose next-token
  log-probabilities are token rewards, trained on pairs (y_w, y_l) ranked by r_i with
  −log σ(β_r [log π_r(y_w|x) − log π_r(y_l|x)]) — exactly TRL's ``CPOTrainer`` with
  ``loss_type="sigmoid"`` and ``cpo_alpha=0`` (an experimental TRL API).

All value models of one kind start from the same initialisation (LoRA and head drawn from
``init_seed``), so their deltas can be merged: φ(μ) = φ_0 + Σ_i μ_i Δφ_i, heads merged the same way.
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save

from .adapters import CheckpointError, LoraAdapter, load_adapter, save_adapter
from .io import atomic_dir, write_bytes_atomic, write_text_atomic
from .models import DEFAULT_BASE, device_of, fingerprint_model, fingerprint_tokenizer, load_base
from .pools import PoolConfig, sample_pool
from .tasks import Task, get_task
from .training import trainer_args, jsonable, default_pool, git_commit, on_cpu, sft_examples, standardize

log = logging.getLogger(__name__)

KINDS = ("explicit", "implicit")
HEAD_FILE = "value_head.safetensors"


def save_head(folder: Path, head: torch.nn.Linear) -> None:
    """An explicit value model's scalar head (fp32) beside its adapter; written before the adapter's manifest."""
    write_bytes_atomic(
        Path(folder) / HEAD_FILE,
        save({"weight": head.weight.detach().float().contiguous(), "bias": head.bias.detach().float().contiguous()}),
    )


@dataclass(frozen=True)
class ValueConfig:
    kind: str = field(default="explicit", metadata={"choices": KINDS})
    base: str = DEFAULT_BASE
    rank: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = 5e-4
    epochs: int = 1
    batch_size: int = 8
    seed: int = 0
    init_seed: int = 1234  # shared by every value model of a kind: the common initialisation φ_0
    implicit_beta: float = 0.1  # β_r of the implicit (GenARM) loss
    pool: PoolConfig | None = None  # None = the task's default training pool (shared with stage 1)
    train_prompts: int | None = None  # train on the pool's first N prompts only (None = all); the pool is not resampled
    train_samples: int | None = (
        None  # explicit: the first S samples of each prompt (None = all); implicit pairs use all
    )
    device: str = "auto"  # a GPU when present, else the CPU

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"value kind {self.kind!r}; fix: use one of {KINDS}")
        for name in ("train_prompts", "train_samples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive integer or None (all)")


def training_rows(pool: Sequence[dict], config: ValueConfig) -> list[dict]:
    """The pool rows a value model trains on: the first ``train_prompts`` prompts (pool order) and, for
    explicit models, the first ``train_samples`` samples of each."""
    ids = list(dict.fromkeys(r["id"] for r in pool))[: config.train_prompts]
    keep = set(ids)
    rows = [r for r in pool if r["id"] in keep]
    if config.kind == "explicit" and config.train_samples is not None:
        rows = [r for r in rows if r["sample"] < config.train_samples]
    return rows


class ExplicitValueModel(torch.nn.Module):
    """V(x, y_≤t) at every position: the decoder's last hidden state → linear head. (B, T) values."""

    def __init__(self, lm, head: torch.nn.Linear):
        super().__init__()
        device, dtype = device_of(lm)
        self.lm, self.head = (
            lm,
            head.to(device=device, dtype=dtype),
        )  # the head follows the decoder (a GPU, a 16-bit model)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        out = self.lm.get_decoder()(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
        )
        return self.head(out.last_hidden_state).squeeze(-1), out.past_key_values


def value_dir(task: Task, kind: str) -> Path:
    from .policy import checkpoints_root

    if kind not in KINDS:
        raise ValueError(f"value kind {kind!r}; fix: use one of {KINDS}")
    return checkpoints_root() / task.name / f"values-{kind}"


def _lora_model(model, config: ValueConfig):
    """Wrap in peft with a LoRA initialised from ``init_seed`` (same φ_0 for every objective)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=0.0,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)
        return get_peft_model(model, lora)


def new_head(hidden: int, init_seed: int) -> torch.nn.Linear:
    head = torch.nn.Linear(hidden, 1)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(init_seed)
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) / math.sqrt(hidden) * 0.1)
        head.bias.zero_()
    return head


def fit_explicit(
    task: Task, objective: str, model, tokenizer, pool: Sequence[dict], config: ValueConfig
) -> tuple[object, torch.nn.Linear, dict]:
    """Per-prefix regression to the standardised final reward (a small accelerate loop)."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    mean, std = standardize(pool, [objective], "zscore")[objective]
    rows = sft_examples(task, tokenizer, pool)
    targets = [(r["scores"][objective] - mean) / std for r in pool]
    peft_model = _lora_model(model, config)
    head = new_head(model.config.hidden_size, config.init_seed)
    value = ExplicitValueModel(peft_model, head)
    params = [p for p in value.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    accelerator = Accelerator(cpu=on_cpu(config))
    value, optimizer = accelerator.prepare(value, optimizer)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(config.seed)).tolist()
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    usable = len(batches) - len(batches) % accelerator.num_processes or len(
        batches
    )  # equal shards: DDP steps in lockstep
    batches = batches[:usable][accelerator.process_index :: accelerator.num_processes]
    losses = []
    value.train()
    for epoch in range(config.epochs):
        for batch in tqdm(
            batches, desc=f"value {objective} epoch {epoch + 1}", disable=not accelerator.is_main_process
        ):
            width = max(len(rows[i]["input_ids"]) for i in batch)
            ids = torch.tensor(
                [rows[i]["input_ids"] + [tokenizer.pad_token_id] * (width - len(rows[i]["input_ids"])) for i in batch]
            )
            attn = torch.tensor(
                [[1] * len(rows[i]["input_ids"]) + [0] * (width - len(rows[i]["input_ids"])) for i in batch]
            )
            # every completion position t carries V(x, y_≤t); the EOS position too when present
            mask = torch.tensor(
                [rows[i]["completion_mask"] + [0] * (width - len(rows[i]["input_ids"])) for i in batch],
                dtype=torch.float32,
            )
            z = torch.tensor([targets[i] for i in batch])[:, None]  # (B, 1)
            values, _ = value(
                input_ids=ids.to(accelerator.device), attention_mask=attn.to(accelerator.device)
            )  # (B, T)
            loss = (((values - z.to(values)) ** 2) * mask.to(values)).sum() / mask.sum().clamp(min=1)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    value = accelerator.unwrap_model(value)
    stats_main = accelerator.is_main_process
    return (
        value.lm,
        value.head,
        {
            "main_process": stats_main,
            "train_loss_first": losses[0],
            "train_loss_last": sum(losses[-10:]) / len(losses[-10:]),
            "reward_mean": mean,
            "reward_std": std,
            "steps": len(losses),
        },
    )


def preference_pairs(pool: Sequence[dict], objective: str) -> list[tuple[dict, dict]]:
    """Per prompt, (best, worst) sample by the objective; prompts whose samples all tie are skipped."""
    by_prompt: dict[str, list[dict]] = {}
    for row in pool:
        by_prompt.setdefault(row["id"], []).append(row)
    pairs = []
    for rows in by_prompt.values():
        ranked = sorted(rows, key=lambda r: (r["scores"][objective], -r["sample"]))
        if ranked[-1]["scores"][objective] > ranked[0]["scores"][objective]:
            pairs.append((ranked[-1], ranked[0]))
    return pairs


def fit_implicit(task: Task, objective: str, model, tokenizer, pool: Sequence[dict], config: ValueConfig, scratch: str):
    """GenARM's reference-free pairwise loss through TRL's CPOTrainer (sigmoid loss, no SFT term)."""
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    pairs = preference_pairs(pool, objective)
    if not pairs:
        raise ValueError(
            f"no prompt of the pool has two samples that {objective!r} scores differently, so there is nothing to "
            "learn from; "
            "fix: sample more per prompt (--samples) or check that the scorer varies on this model's outputs"
        )
    data = Dataset.from_list(
        [
            {
                "prompt": task.messages(w["input"]),
                "chosen": [{"role": "assistant", "content": w["response"]}],
                "rejected": [{"role": "assistant", "content": l["response"]}],
            }
            for w, l in pairs
        ]
    )
    args = CPOConfig(
        **trainer_args(config, scratch),
        loss_type="sigmoid",
        cpo_alpha=0.0,
        beta=config.implicit_beta,
        num_train_epochs=config.epochs,
        max_length=1024,
    )
    # wrap in LoRA ourselves: CPOTrainer reseeds with args.seed before it would draw the A matrices
    trainer = CPOTrainer(model=_lora_model(model, config), args=args, train_dataset=data, processing_class=tokenizer)
    result = trainer.train()
    return trainer.model, {
        "main_process": trainer.accelerator.is_main_process,
        "train_loss": float(result.training_loss),
        "n_pairs": len(pairs),
    }


def train_value(
    task_name: str,
    objective: str,
    out_dir: str | Path,
    config: ValueConfig = ValueConfig(),
    *,
    command: str | None = None,
) -> Path:
    """Train one value model (explicit or implicit) for one objective and save it with its manifest."""
    task = get_task(task_name)
    if objective not in task.objectives:
        raise ValueError(f"objective {objective!r} is not one of task {task.name!r}'s {list(task.objectives)}")
    started, commit = time.time(), git_commit()  # the code this run runs, not what HEAD is when it saves
    model, tokenizer = load_base(config.base, device=config.device)
    fps = dict(base_fingerprint=fingerprint_model(model), tokenizer_fingerprint=fingerprint_tokenizer(tokenizer))
    pool = training_rows(sample_pool(task, model, tokenizer, config.pool or default_pool(task)), config)
    head = None
    if config.kind == "explicit":
        peft_model, head, stats = fit_explicit(task, objective, model, tokenizer, pool, config)
    else:
        with tempfile.TemporaryDirectory() as scratch:
            peft_model, stats = fit_implicit(task, objective, model, tokenizer, pool, config, scratch)
    if not stats.pop("main_process", True):
        return Path(out_dir)  # under several processes only rank 0 writes
    info = {
        "task": task.name,
        "objective": objective,
        "kind": config.kind,
        "config": jsonable(asdict(config)),
        **stats,
        "n_pool": len(pool),
        "wall_time_s": round(time.time() - started, 1),
        "commit": commit,
        "command": command or " ".join(sys.argv),
    }
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        if head is not None:
            save_head(tmp, head)
        save_adapter(peft_model, tmp, info=info, **fps)  # manifest last, covering the head too
        write_text_atomic(
            tmp / "README.md",
            f"# {config.kind} value model — {task.name} / {objective}\n\n- command: `{info['command']}`\n- commit: "
            f"{info['commit']}\n"
            f"- wall time: {info['wall_time_s']} s\n- data: the task's train split, base-model pool of {len(pool)} "
            "samples\n"
            f"- stats: {jsonable(stats)}\n",
        )
    log.info(f"mage: {config.kind} value model for {objective} saved to {out_dir} ({info['wall_time_s']} s)")
    return out_dir


@dataclass
class ValueIngredient:
    adapter: LoraAdapter
    head: tuple[torch.Tensor, torch.Tensor] | None  # (weight (1, D), bias (1,)) for explicit models


def load_values(
    task: Task, kind: str, *, base_fingerprint: str | None = None, tokenizer_fingerprint: str | None = None
) -> list[ValueIngredient]:
    """A task's value models of one kind, in objective order (verified against their manifests)."""
    root = value_dir(task, kind)
    out = []
    for objective in task.objectives:
        folder = root / objective
        if not folder.is_dir():
            raise CheckpointError(
                f"{folder} is missing: the {kind} value models of task {task.name!r} are not trained; "
                f"fix: python -m mage train-values --task {task.name} --kind {kind}"
            )
        adapter = load_adapter(
            folder,
            base_fingerprint=base_fingerprint,
            tokenizer_fingerprint=tokenizer_fingerprint,
            name=f"{kind}/{objective}",
        )
        head = None
        if kind == "explicit":
            tensors = load_file(str(folder / HEAD_FILE))
            head = (tensors["weight"], tensors["bias"])
        out.append(ValueIngredient(adapter, head))
    return out


def merge_heads(heads: Sequence[tuple[torch.Tensor, torch.Tensor]], weights: Sequence[float]) -> torch.nn.Linear:
    """Σ_i w_i head_i as one linear head (heads are linear, so this is the merged model's head)."""
    weight = sum(w * h[0] for w, h in zip(weights, heads))
    bias = sum(w * h[1] for w, h in zip(weights, heads))
    head = torch.nn.Linear(weight.shape[1], 1)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head.eval()


@torch.no_grad()
def value_scores(model, kind: str, rows: Sequence[dict], *, batch_size: int = 8) -> list[dict[str, float]]:
    """A value model's judgement of complete and half-finished responses, teacher-forced.

    ``rows`` are :func:`mage.training.sft_examples` rows (prompt ids, completion ids, completion
    mask). Per row: ``end`` and ``half`` — for an explicit model V(x, y_≤t) at the last completion
    token and at token ⌈L/2⌉; for an implicit model the partial reward Σ_{s≤t} log π_r(y_s | x, y_<s)
    (GenARM's reward of a prefix; β_r only rescales it).
    """
    out = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = max(len(r["input_ids"]) for r in batch)
        device = next(model.parameters()).device
        ids = torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in batch], device=device)
        attn = torch.tensor(
            [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch], device=device
        )
        if kind == "explicit":
            per_position, _ = model(input_ids=ids, attention_mask=attn)  # (B, T): V after reading token t
        else:
            logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits[:, :-1].float(), -1)
            token_lp = logprobs.gather(-1, ids[:, 1:, None]).squeeze(-1)  # log π(token t+1 | ≤ t)
            per_position = torch.nn.functional.pad(token_lp, (1, 0))  # aligned: position t holds log π(y_t | < t)
        for k, r in enumerate(batch):
            positions = [t for t, m in enumerate(r["completion_mask"]) if m]
            half = positions[: max(1, math.ceil(len(positions) / 2))]
            if kind == "explicit":
                out.append({"end": float(per_position[k, positions[-1]]), "half": float(per_position[k, half[-1]])})
            else:
                out.append({"end": float(per_position[k, positions].sum()), "half": float(per_position[k, half].sum())})
    return out
