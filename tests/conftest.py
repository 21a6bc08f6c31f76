"""Shared fixtures: tiny models built from a config (no downloads), non-trivial LoRA adapters."""

from __future__ import annotations

import pytest
import torch

from mage.merging import training_weights
from mage.models import save_tiny_base, tiny_model, tiny_tokenizer
from mage.pools import PoolConfig
from mage.tasks import get_task
from mage.training import TrainConfig, train_adapter

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def base(tokenizer):
    return tiny_model(tokenizer, seed=0)


def lora_model(
    model, n_adapters: int, *, rank: int = 4, seed: int = 0, targets=("q_proj", "k_proj", "v_proj", "o_proj")
):
    """Wrap ``model`` in peft with ``n_adapters`` random (non-zero B) adapters named a0, a1, ..."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), init_lora_weights=False)
    gen = torch.Generator().manual_seed(seed)
    peft_model = get_peft_model(model, config, adapter_name="a0")
    for j in range(1, n_adapters):
        peft_model.add_adapter(f"a{j}", config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=gen))
    return peft_model.eval()


class Biased(torch.nn.Module):
    """A causal LM whose logits get a fixed bias: a model with known token preferences."""

    def __init__(self, model, bias: torch.Tensor):
        super().__init__()
        self.model, self.bias = model, bias

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        out.logits = out.logits + self.bias
        return out


def biased(model, token: int, amount: float):
    bias = torch.zeros(model.config.vocab_size)
    bias[token] = amount
    return Biased(model, bias)


@pytest.fixture
def ids(tokenizer):
    return tokenizer(["Hello there, soup!", "A second prompt."], return_tensors="pt", padding=True)["input_ids"]


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Experts and backbones of the summary task trained on a tiny base (pool of 4 prompts × 2)."""
    import os

    root = tmp_path_factory.mktemp("run")
    os.environ["MAGE_CACHE_DIR"] = str(root / "cache")
    os.environ["MAGE_CHECKPOINTS"] = str(root / "checkpoints")
    base = save_tiny_base(root / "tiny")
    # 4 selected samples, 2 per step, 2 epochs: 4 optimiser steps, so the 2 warm-up steps (learning rate 0, then
    # half) are not
    # all there is — with 1 step every stage-1 adapter stayed exactly zero and merging tests compared the base
    # with itself
    config = TrainConfig(
        base=str(base),
        epochs=2,
        batch_size=2,
        learning_rate=1e-2,
        pool=PoolConfig(samples_per_prompt=2, max_prompts=4, batch_size=8, max_new_tokens=6),
    )
    from mage.policy import ingredient_dir, ingredient_names

    task = get_task("summary")
    # the real scorers give a tiny random model's gibberish 0 everywhere (their gates): toy scorers that vary
    from mage import objectives

    real = {n: objectives.OBJECTIVES[n] for n in task.objectives}
    toy = {
        "faithful": lambda xs, ys: [len(set(y) & set(x)) / (1 + len(set(y))) for x, y in zip(xs, ys)],
        "quality": lambda xs, ys: [1.0 / (1 + len(y.split())) + 0.01 * len(set(y)) for y in ys],
    }
    for n in task.objectives:
        objectives.OBJECTIVES[n] = objectives.Objective(n, toy[n], "toy scorer for tiny-model tests", version="toy")
    for kind in ("experts", "backbones"):
        for name, w in zip(ingredient_names(task, kind), training_weights(kind, 2)):
            train_adapter("summary", w, ingredient_dir(task, kind) / name, config, command="test")
    from mage.values import ValueConfig, train_value, value_dir

    for kind in ("explicit", "implicit"):
        for objective in task.objectives:
            train_value(
                "summary",
                objective,
                value_dir(task, kind) / objective,
                ValueConfig(kind=kind, base=str(base), pool=config.pool, batch_size=4),
                command="test",
            )
    from mage.methods import Engine
    from mage.react import calibrate, react_path

    from mage.models import fingerprint_model, fingerprint_tokenizer

    engine = Engine("summary", base=str(base))
    calibrate(engine, prompts_per_objective=3, max_new_tokens=5, progress=False).save_checkpoint(
        react_path(task).parent,
        base_fingerprint=fingerprint_model(engine.policy.model),
        tokenizer_fingerprint=fingerprint_tokenizer(engine.policy.tokenizer),
        readme="test",
    )
    objectives.OBJECTIVES.update(real)
    yield root, base
    os.environ.pop("MAGE_CACHE_DIR")
    os.environ.pop("MAGE_CHECKPOINTS")


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory):
    """A 2-label sequence classifier saved to a folder: the stand-in for a hub reward model."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from mage.models import tiny_tokenizer

    folder = tmp_path_factory.mktemp("rm")
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            num_labels=2,
            pad_token_id=tok.pad_token_id,
        )
    )
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model.eval(), tok


@pytest.fixture
def toy4(monkeypatch):
    """A four-objective toy task, registered through the task and objective tables alone (each toy scorer counts
    something else in the reply); summary's articles are its examples. Unregistered after the test."""
    from mage import objectives, tasks

    names = ("alpha", "beta", "gamma", "delta")
    for i, name in enumerate(names):
        monkeypatch.setitem(
            objectives.OBJECTIVES,
            name,
            objectives.Objective(
                name, lambda xs, ys, i=i: [(len(y) % (i + 3)) / (i + 3) for y in ys], "toy", version="toy"
            ),
        )
    summary = tasks.get_task("summary")
    toy = tasks.Task("toy4", names, "Say something about: {input}", 3, summary.load_examples, "four toy objectives")
    monkeypatch.setitem(tasks.TASKS, "toy4", toy)
    return toy
