"""Damaged or mismatched checkpoints are refused by name, and a bad ingredient fails only its own methods."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mage.adapters import MANIFEST, WEIGHTS, CheckpointError, write_manifest
from mage.decoding import SamplingConfig

GREEDY = SamplingConfig(max_new_tokens=3, greedy=True)


@pytest.fixture
def checkpoints(tiny_checkpoints, tmp_path, monkeypatch):
    """A private copy of the tiny task's checkpoints, to damage."""
    root, base = tiny_checkpoints
    copy = tmp_path / "checkpoints"
    shutil.copytree(root / "checkpoints", copy)
    monkeypatch.setenv("MAGE_CHECKPOINTS", str(copy))
    return copy / "summary", str(base)


def _rewrite(folder, change) -> None:
    """Change an adapter's tensors and re-stamp its manifest: damage the hashes cannot see."""
    manifest = json.loads((folder / MANIFEST).read_text())
    tensors = {k: change(k, v) for k, v in load_file(str(folder / WEIGHTS)).items()}
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    write_manifest(
        folder, base_fingerprint=manifest["base_fingerprint"], tokenizer_fingerprint=manifest["tokenizer_fingerprint"]
    )


@pytest.mark.parametrize("damage", ["flipped", "truncated", "no manifest"])
def test_damaged_react_corrections_are_refused_by_name(checkpoints, damage):
    from mage.methods import Engine

    task_dir, base = checkpoints
    path = task_dir / "react" / "react.safetensors"
    data = bytearray(path.read_bytes())
    if damage == "flipped":
        data[-100] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        (task_dir / "react" / MANIFEST).unlink()
    engine = Engine("summary", base=base)
    with pytest.raises(CheckpointError, match="react"):
        engine.generate("react", [0.5, 0.5], ["An article."], GREEDY)
    engine.generate("rs", [0.5, 0.5], ["An article."], GREEDY)  # the other methods are unaffected


def test_an_adapter_full_of_nan_is_refused_by_name(checkpoints):
    from mage.methods import Engine

    task_dir, base = checkpoints
    _rewrite(task_dir / "experts" / "faithful", lambda k, v: torch.full_like(v, float("nan")) if "lora_B" in k else v)
    engine = Engine("summary", base=base)
    with pytest.raises(CheckpointError, match=r"experts/faithful.*NaN"):
        engine.generate("rs", [0.5, 0.5], ["An article."], GREEDY)
    assert engine.generate("bone", [0.5, 0.5], ["An article."], GREEDY)  # the backbones still serve


def test_a_wrong_shape_backbone_fails_its_own_methods_only(checkpoints):
    from mage.methods import Engine

    task_dir, base = checkpoints
    _rewrite(
        task_dir / "backbones-b0.7" / "1", lambda k, v: torch.cat([v, v], dim=1) if "q_proj.lora_A" in k else v
    )  # A: (r, 2·in)
    engine = Engine("summary", base=base)
    with pytest.raises(CheckpointError, match=r"backbones-b0.7/1.*q_proj.*fix"):
        engine.generate("bone", [0.5, 0.5], ["An article."], GREEDY)
    assert engine.generate("rs", [0.5, 0.5], ["An article."], GREEDY)  # Rewarded Soup's experts are fine


def test_a_value_model_that_does_not_fit_is_refused_by_name(checkpoints):
    from mage.methods import Engine

    task_dir, base = checkpoints
    _rewrite(
        task_dir / "values-implicit" / "quality", lambda k, v: torch.cat([v, v], dim=0) if "v_proj.lora_B" in k else v
    )  # B: (2·out, r)
    engine = Engine("summary", base=base)
    with pytest.raises(CheckpointError, match=r"values-implicit/quality.*v_proj"):
        engine.generate("mage-i", [0.5, 0.5], ["An article."], GREEDY)
