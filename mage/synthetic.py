"""A synthetic K-objective task whose checkpoints are random LoRA adapters: every method, run by the Engine.

A method's speed and memory depend on the shapes of its adapters, not on what they learned. So the
benchmarks (:mod:`mage.bench`) measure methods on a task with any number of objectives, without training,
by writing random rank-8 adapters where training would put them and letting :class:`mage.methods.Engine`
load them like trained ones:

    <root>/synthetic-k<K>/experts/<objective>/           rows of I        (Rewarded Soup, MOD)
    <root>/synthetic-k<K>/backbones-b<beta>/<j>/         rows of B(beta)  (Bone Soup)
    <root>/synthetic-k<K>/values-explicit/<objective>/   + value_head.safetensors
    <root>/synthetic-k<K>/values-implicit/<objective>/

Each folder is in the format the Engine verifies (:mod:`mage.adapters`): peft's ``adapter_config.json`` and
fp16 ``adapter_model.safetensors``, then ``mage_manifest.json`` with the files' hashes and the base model's
and tokenizer's fingerprints, written last. :func:`synthetic_engine` writes them to a temporary folder, points
``MAGE_CHECKPOINTS`` at it and registers the task for the block, so a benchmark's variants are the method
table's rows (:data:`mage.methods.METHODS`) and nothing is wired by hand.

The task's objectives have no scorers: it decodes, it is never evaluated.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch

if TYPE_CHECKING:
    from .methods import Engine

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")  # what mage's training adapts (ValueConfig, TrainConfig)
RANK = 8
SCALING = 2.0  # lora_alpha / r, as trained adapters have (alpha 16, rank 8)
INIT_SCALE = 0.01  # factor entries ~ N(0, 0.01²): a merge moves the weights a little, as a trained one does


def random_adapters(model, n: int, seed: int = 0, rank: int = RANK):
    """``n`` random LoRA adapters (rank ``rank``, fp32, on the CPU) on every attention projection of ``model``,
    drawn from one generator seeded with ``seed``."""
    from .adapters import LoraAdapter

    gen = torch.Generator().manual_seed(seed)
    modules = {name: m for name, m in model.named_modules() if name.endswith(TARGET_MODULES)}
    return [
        LoraAdapter(
            f"r{j}",
            SCALING,
            {
                name: (
                    INIT_SCALE * torch.randn(rank, m.in_features, generator=gen),
                    INIT_SCALE * torch.randn(m.out_features, rank, generator=gen),
                )
                for name, m in modules.items()
            },
        )
        for j in range(n)
    ]


def synthetic_task(k: int):
    """A task with ``k`` objectives named ``objective-1`` … and a few plain prompts; the template passes them on
    as they are (so ``task.messages(text)`` is one user message holding ``text``)."""
    from .tasks import SPLITS, Example, Task

    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise ValueError(f"a synthetic task needs k >= 2 objectives (Bone Soup's backbones need two), got {k!r}")
    prompts = [f"Tell me something about topic number {i}." for i in range(12)]
    return Task(
        name=f"synthetic-k{k}",
        objectives=tuple(f"objective-{i + 1}" for i in range(k)),
        template="{input}",
        max_new_tokens=48,
        load_examples=lambda: [Example(f"t{i}", p, SPLITS[i % 3]) for i, p in enumerate(prompts)],
        description=f"{k} objectives with random rank-{RANK} checkpoints: for benchmarks, never evaluated.",
    )


def _lora_config(rank: int, base: str) -> dict:
    """peft's ``LoraConfig`` as training saves it (the fields that define the adapter), written without peft:
    importing peft costs a benchmark worker seconds and ~150 MB of its peak memory."""
    return {
        "task_type": "CAUSAL_LM",
        "peft_type": "LORA",
        "base_model_name_or_path": base,
        "r": rank,
        "target_modules": sorted(TARGET_MODULES),
        "lora_alpha": int(SCALING * rank),
        "lora_dropout": 0.0,
        "fan_in_fan_out": False,
        "bias": "none",
        "use_rslora": False,
        "init_lora_weights": True,
        "use_dora": False,
    }


def write_adapter(
    folder: str | Path,
    adapter,
    *,
    base: str,
    base_fingerprint: str,
    tokenizer_fingerprint: str,
    head: torch.nn.Linear | None = None,
    info: dict | None = None,
) -> Path:
    """One adapter (and an explicit value model's head) in the on-disk format training writes
    (:func:`mage.adapters.write_adapter_files`, :func:`mage.values.save_head`): fp16 weights under peft's key
    names, the head before the manifest, the manifest last."""
    from .adapters import write_adapter_files
    from .values import save_head

    folder = Path(folder)
    tensors = {}
    for module, (a, b) in adapter.factors.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = a
        tensors[f"base_model.model.{module}.lora_B.weight"] = b
    if head is not None:
        folder.mkdir(parents=True, exist_ok=True)
        save_head(folder, head)
    return write_adapter_files(
        folder,
        tensors,
        _lora_config(adapter.rank, base),
        base_fingerprint=base_fingerprint,
        tokenizer_fingerprint=tokenizer_fingerprint,
        info=info,
    )


def write_checkpoints(task, model, tokenizer, *, base: str, rank: int = RANK, seed: int = 0, beta: float | None = None):
    """Every checkpoint a method of the table reads, for ``task`` on ``model``, as random adapters in the layout
    of the current checkpoint root (``MAGE_CHECKPOINTS``): experts, backbones (β = ``beta``), explicit value
    models with heads, implicit value models. Each kind draws from its own seed, one adapter at a time (a
    worker's peak memory holds one, not all). Returns the folders written."""
    from .merging import DEFAULT_BETA
    from .models import fingerprint_model, fingerprint_tokenizer
    from .policy import ingredient_dir, ingredient_names
    from .values import new_head, value_dir

    beta = DEFAULT_BETA if beta is None else beta
    fps = dict(base_fingerprint=fingerprint_model(model), tokenizer_fingerprint=fingerprint_tokenizer(tokenizer))
    kinds = [
        ("experts", ingredient_dir(task, "experts", beta), ingredient_names(task, "experts")),
        ("backbones", ingredient_dir(task, "backbones", beta), ingredient_names(task, "backbones")),
        ("explicit", value_dir(task, "explicit"), list(task.objectives)),
        ("implicit", value_dir(task, "implicit"), list(task.objectives)),
    ]
    written = []
    for i, (kind, root, names) in enumerate(kinds):
        for j, name in enumerate(names):
            (adapter,) = random_adapters(model, 1, seed=seed + 1000 * i + j, rank=rank)
            head = new_head(model.config.hidden_size, seed + j) if kind == "explicit" else None
            info = {"task": task.name, "kind": kind, "name": name, "synthetic": f"random rank-{rank} adapter"}
            written.append(write_adapter(root / name, adapter, base=base, head=head, info=info, **fps))
    return written


@contextmanager
def _registered(task) -> Iterator[None]:
    """``task`` in the task table for the block (a task of the same name put back afterwards)."""
    from .tasks import TASKS, register_task

    previous = TASKS.get(task.name)
    register_task(task)
    try:
        yield
    finally:
        if previous is not None:
            register_task(previous)
        else:
            TASKS.pop(task.name, None)


@contextmanager
def _checkpoint_root(root: Path) -> Iterator[None]:
    """``MAGE_CHECKPOINTS`` set to ``root`` for the block, the previous value restored afterwards."""
    previous = os.environ.get("MAGE_CHECKPOINTS")
    os.environ["MAGE_CHECKPOINTS"] = str(root)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MAGE_CHECKPOINTS", None)
        else:
            os.environ["MAGE_CHECKPOINTS"] = previous


@contextmanager
def synthetic_engine(
    k: int,
    model,
    tokenizer,
    *,
    base: str | None = None,
    top_k: int = 10,
    fused: bool = True,
    rank: int = RANK,
    seed: int = 0,
) -> Iterator[Engine]:
    """An :class:`~mage.methods.Engine` for the synthetic ``k``-objective task on ``model`` (loaded from the base
    model named ``base``, default :data:`mage.models.DEFAULT_BASE`; the value-model banks load their own copy
    by that name). Its random checkpoints live in a temporary folder that ``MAGE_CHECKPOINTS`` points at, and
    the task is registered, for the block only: guidance banks and MOD experts load lazily, at the first
    ``prepare`` of a method that needs them, so prepare inside the block. ``fused``, ``top_k``: the Engine's."""
    from .methods import Engine
    from .models import DEFAULT_BASE
    from .policy import PolicyBank

    base = base or DEFAULT_BASE
    task = synthetic_task(k)
    with (
        tempfile.TemporaryDirectory(prefix="mage-synthetic-") as root,
        _checkpoint_root(Path(root)),
        _registered(task),
    ):
        write_checkpoints(task, model, tokenizer, base=base, rank=rank, seed=seed)
        policy = PolicyBank(task, base=base, model=model, tokenizer=tokenizer, strict=True)
        yield Engine(task, base=base, top_k=top_k, policy=policy, fused=fused)
