"""Adapter checkpoints: peft format, fp16 storage, a manifest that refuses damage and mismatches."""

from __future__ import annotations


import pytest

from mage.adapters import CheckpointError, adapter_from_peft, load_adapter, save_adapter
from mage.models import fingerprint_model, fingerprint_tokenizer, tiny_model

from .conftest import lora_model


@pytest.fixture
def saved(tokenizer, tmp_path):
    peft_model = lora_model(tiny_model(tokenizer, seed=0), 1, seed=2)
    fps = dict(
        base_fingerprint=fingerprint_model(tiny_model(tokenizer, seed=0)),
        tokenizer_fingerprint=fingerprint_tokenizer(tokenizer),
    )
    folder = save_adapter(peft_model, tmp_path / "ad", adapter_name="a0", **fps)
    return folder, adapter_from_peft(peft_model, "a0"), fps


def test_round_trip_in_peft_format(saved):
    folder, live, fps = saved
    assert {p.name for p in folder.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "mage_manifest.json",
    }
    loaded = load_adapter(folder, **fps)
    assert loaded.scaling == live.scaling and sorted(loaded.factors) == sorted(live.factors)
    for name in live.factors:
        rel = (loaded.delta(name) - live.delta(name)).norm() / live.delta(name).norm()
        assert rel < 2e-3  # fp16 storage


def test_peft_can_load_the_saved_adapter(saved, tokenizer):
    from peft import PeftModel

    folder, live, _ = saved
    model = PeftModel.from_pretrained(tiny_model(tokenizer, seed=0), str(folder))
    assert adapter_from_peft(model).factors.keys() == live.factors.keys()


def test_missing_truncated_and_corrupted_files_are_named(saved):
    folder, _, fps = saved
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="adapter_model.safetensors does not match its hash"):
        load_adapter(folder, **fps)
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="adapter_model.safetensors"):
        load_adapter(folder, **fps)
    weights.unlink()
    with pytest.raises(CheckpointError, match="adapter_model.safetensors is missing"):
        load_adapter(folder, **fps)
    (folder / "mage_manifest.json").unlink()
    with pytest.raises(CheckpointError, match="mage_manifest.json is missing"):
        load_adapter(folder, **fps)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_adapter(folder / "nope")


def test_adapter_for_another_base_or_tokenizer_is_refused(saved, tokenizer):
    folder, _, fps = saved
    other = fingerprint_model(tiny_model(tokenizer, seed=9))
    with pytest.raises(CheckpointError, match="different base model"):
        load_adapter(folder, base_fingerprint=other, tokenizer_fingerprint=fps["tokenizer_fingerprint"])
    with pytest.raises(CheckpointError, match="different tokenizer"):
        load_adapter(folder, base_fingerprint=fps["base_fingerprint"], tokenizer_fingerprint="0123456789abcdef")


def test_corrupted_manifest_is_named(saved):
    folder, _, fps = saved
    (folder / "mage_manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="mage_manifest.json is corrupted"):
        load_adapter(folder, **fps)


def test_no_pickle_loading_and_no_remote_code_anywhere():
    """Safetensors only: no torch.load / pickle / joblib in the library or the app; trust_remote_code never set."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sources = [*root.joinpath("mage").rglob("*.py"), root / "app.py"]
    pattern = re.compile(
        r"torch\.load\(|import pickle|pickle\.load|joblib\.load|trust_remote_code\s*=\s*True|weights_only\s*=\s*False"
    )
    offenders = [
        f"{p.relative_to(root)}:{i}"
        for p in sources
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
