"""LoRA adapters on disk: peft's format plus a manifest that makes loading safe.

A checkpoint folder holds ``adapter_config.json`` + ``adapter_model.safetensors`` (peft's format,
stored in fp16 to keep committed checkpoints small) and ``mage_manifest.json``: the SHA-256 of
every file, and fingerprints of the base model and tokenizer it was trained on. Loading verifies
all three and refuses — naming the file — a missing, truncated or corrupted file, or an adapter
made for another base model or tokenizer. Only safetensors are read; nothing is unpickled.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .io import sha256_file, write_bytes_atomic, write_json_atomic

MANIFEST = "mage_manifest.json"
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[^.]+)?\.weight$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged or made for another model."""


@dataclass
class LoraAdapter:
    """Low-rank factors per module: ``ΔW = scaling · B @ A`` with A (r, in), B (out, r)."""

    name: str
    scaling: float
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # module name → (A, B), fp32
    meta: dict = field(default_factory=dict)

    def delta(self, module: str) -> torch.Tensor:
        a, b = self.factors[module]
        return self.scaling * (b @ a)  # (out, in)

    @property
    def rank(self) -> int:
        return next(iter(self.factors.values()))[0].shape[0]


def adapter_from_peft(model, adapter_name: str = "default", name: str | None = None) -> LoraAdapter:
    """Read one adapter's factors out of a live peft model (no disk round trip)."""
    factors, scaling = {}, None
    for module_name, module in model.named_modules():
        if hasattr(module, "lora_A") and adapter_name in module.lora_A:
            clean = module_name.removeprefix("base_model.model.")
            factors[clean] = (
                module.lora_A[adapter_name].weight.detach().float().clone(),
                module.lora_B[adapter_name].weight.detach().float().clone(),
            )
            scaling = module.scaling[adapter_name]
    if not factors:
        raise ValueError(f"the model has no LoRA adapter named {adapter_name!r}")
    return LoraAdapter(name or adapter_name, float(scaling), factors)


def save_adapter(
    peft_model,
    folder: str | Path,
    *,
    base_fingerprint: str,
    tokenizer_fingerprint: str,
    info: dict | None = None,
    adapter_name: str = "default",
) -> Path:
    """Save a peft adapter (fp16 weights), then its manifest last: a folder without a manifest is incomplete."""
    state = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    tensors = {key.replace(f".{adapter_name}.weight", ".weight"): value for key, value in state.items()}
    config = peft_model.peft_config[adapter_name].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    return write_adapter_files(
        folder,
        tensors,
        config,
        base_fingerprint=base_fingerprint,
        tokenizer_fingerprint=tokenizer_fingerprint,
        info=info,
    )


def write_adapter_files(
    folder: str | Path,
    tensors: dict[str, torch.Tensor],
    config: dict,
    *,
    base_fingerprint: str,
    tokenizer_fingerprint: str,
    info: dict | None = None,
) -> Path:
    """An adapter folder in mage's format: ``tensors`` (peft's key names) in fp16, peft's ``config``, then the
    manifest last, covering every file already in the folder (an explicit value model's head included)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    half = {key: value.detach().to(torch.float16).contiguous() for key, value in tensors.items()}
    write_bytes_atomic(folder / WEIGHTS, save(half, metadata={"format": "pt"}))
    write_json_atomic(folder / CONFIG, config)
    write_manifest(folder, base_fingerprint=base_fingerprint, tokenizer_fingerprint=tokenizer_fingerprint, info=info)
    return folder


def write_manifest(
    folder: Path, *, base_fingerprint: str, tokenizer_fingerprint: str, info: dict | None = None
) -> None:
    files = sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST and p.suffix in (".json", ".safetensors")
    )
    write_json_atomic(
        folder / MANIFEST,
        {
            "files": {name: sha256_file(folder / name) for name in files},
            "base_fingerprint": base_fingerprint,
            "tokenizer_fingerprint": tokenizer_fingerprint,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **({"info": info} if info else {}),
        },
    )


def verify_checkpoint(
    folder: str | Path, *, base_fingerprint: str | None = None, tokenizer_fingerprint: str | None = None
) -> dict:
    """Check a checkpoint folder against its manifest; return the manifest or raise CheckpointError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"checkpoint folder {folder} does not exist; fix: train it (python -m mage train ...) or check the path"
        )
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{manifest_path} is missing: the checkpoint is incomplete or was not written by mage; fix: retrain it"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{manifest_path} is corrupted ({err}); fix: retrain the checkpoint") from err
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; fix: restore it from version control or retrain the checkpoint")
        if sha256_file(path) != digest:
            raise CheckpointError(
                f"{path} does not match its hash in {MANIFEST} (truncated or corrupted); fix: restore it or retrain"
            )
    for what, expected, key in (
        ("base model", base_fingerprint, "base_fingerprint"),
        ("tokenizer", tokenizer_fingerprint, "tokenizer_fingerprint"),
    ):
        if expected is not None and manifest.get(key) != expected:
            raise CheckpointError(
                f"{folder} was trained on a different {what} (fingerprint {manifest.get(key)}, loaded {expected}); "
                f"fix: load it with the {what} it was trained on, or retrain it on this one"
            )
    return manifest


def load_adapter(
    folder: str | Path,
    *,
    base_fingerprint: str | None = None,
    tokenizer_fingerprint: str | None = None,
    name: str | None = None,
) -> LoraAdapter:
    """Verify and read an adapter folder into fp32 factors."""
    folder = Path(folder)
    manifest = verify_checkpoint(folder, base_fingerprint=base_fingerprint, tokenizer_fingerprint=tokenizer_fingerprint)
    config = json.loads((folder / CONFIG).read_text())
    try:
        tensors = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{folder / WEIGHTS} cannot be read ({err}); fix: restore or retrain the checkpoint"
        ) from err
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        match = _KEY.match(key)
        if match:
            parts.setdefault(match["module"], {})[match["part"]] = value.float()
    factors = {m: (p["A"], p["B"]) for m, p in sorted(parts.items()) if "A" in p and "B" in p}
    if not factors:
        raise CheckpointError(f"{folder / WEIGHTS} holds no LoRA factors; fix: point at a peft LoRA adapter folder")
    bad = [m for m, (a, b) in factors.items() if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all()))]
    if bad:
        raise CheckpointError(
            f"{folder / WEIGHTS} holds NaN or infinite values (in {bad[0]}{' and others' if len(bad) > 1 else ''}); "
            "fix: retrain the checkpoint"
        )
    ranks = {m: (a.shape[0], b.shape[1]) for m, (a, b) in factors.items()}
    if any(ra != rb for ra, rb in ranks.values()) or len({ra for ra, _ in ranks.values()}) != 1:
        raise CheckpointError(
            f"{folder / WEIGHTS} has LoRA factors of inconsistent ranks {sorted(set(ranks.values()))}; fix: retrain "
            "the checkpoint"
        )
    r, alpha = config["r"], config["lora_alpha"]
    scaling = alpha / (r**0.5) if config.get("use_rslora") else alpha / r
    return LoraAdapter(name or folder.name, float(scaling), factors, meta={**manifest, "folder": str(folder)})


def check_fits(model: torch.nn.Module, adapter: LoraAdapter) -> None:
    """Refuse, naming the adapter's folder, an adapter whose modules or shapes the model does not have."""
    modules = dict(model.named_modules())
    where = adapter.meta.get("folder", adapter.name)
    for name, (a, b) in adapter.factors.items():
        module = modules.get(name)
        if module is None or not hasattr(module, "weight"):
            raise CheckpointError(
                f"{where}: adapter module {name!r} is not in the model; fix: load it onto the base model it was "
                "trained on, or retrain it"
            )
        if tuple(module.weight.shape) != (b.shape[0], a.shape[1]):
            raise CheckpointError(
                f"{where}: the factors for {name!r} make a {b.shape[0]}x{a.shape[1]} delta, the model's weight is "
                f"{tuple(module.weight.shape)[0]}x{tuple(module.weight.shape)[1]}; fix: use the base model it was "
                "trained on, or retrain it"
            )
