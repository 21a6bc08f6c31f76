"""Shared fixtures: tiny models built from a config (no downloads), non-trivial LoRA adapters."""
from __future__ import annotations

import pytest
import torch

from mage.models import tiny_model, tiny_tokenizer

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def base(tokenizer):
    return tiny_model(tokenizer, seed=0)


def lora_model(model, n_adapters: int, *, rank: int = 4, seed: int = 0, targets=("q_proj", "k_proj", "v_proj", "o_proj")):
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


@pytest.fixture
def ids(tokenizer):
    return tokenizer(["Hello there, soup!", "A second prompt."], return_tensors="pt", padding=True)["input_ids"]
