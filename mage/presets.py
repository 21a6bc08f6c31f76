"""Presets: the path to the papers' scale with the same commands as the embedded default.

``paper`` registers the papers' two settings (SPEC §4) as tasks whose objectives are the papers'
reward models, so that every command takes them::

    python -m mage --preset paper train-set --task hh --kind backbones --base meta-llama/Llama-2-7b-hf
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m mage --preset paper \\
        train-set --task hh --kind experts --base meta-llama/Llama-2-7b-hf

- ``hh``: prompts = the first human turn of Anthropic/hh-rlhf dialogues; objectives ``rm-helpful``,
  ``rm-harmless``, ``rm-humor`` (Ray2333 gpt2-large reward models in the HH format, the humour
  classifier's logit 1).
- ``reddit``: posts of openai/summarize_from_feedback (``comparisons``); objectives ``rm-summary``
  (response + post) and ``rm-faithful`` (pair, logit 1).

Data and reward models come from the hub unless ``data`` / ``reward_models`` point at local stand-ins
(a JSONL file in the dataset's own row format; a saved sequence-classification model) — which is
how the whole path is tested here without a hub (``tests/test_presets.py``). See ``docs/SCALE.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .objectives import PAPER_REWARD_MODELS, register_objective, reward_model_objective
from .tasks import Example, Task, register_task


@dataclass(frozen=True)
class PaperTask:
    source: str  # hub dataset id
    config: str | None
    objectives: dict[str, str]  # objective name → key of PAPER_REWARD_MODELS
    extract: Callable[[dict], str]  # dataset row → the task input
    template: str
    max_new_tokens: int


def _first_human_turn(row: dict) -> str:
    text = row["chosen"]
    turn = text.split("\n\nHuman:", 1)[-1]
    return turn.split("\n\nAssistant:", 1)[0].strip()


def _post(row: dict) -> str:
    info = row["info"]
    return (info.get("post") or info.get("article") or "").strip()


PAPER_TASKS = {
    "hh": PaperTask(
        "Anthropic/hh-rlhf",
        None,
        {"rm-helpful": "helpful", "rm-harmless": "harmless", "rm-humor": "humor"},
        _first_human_turn,
        "{input}",
        128,
    ),
    "reddit": PaperTask(
        "openai/summarize_from_feedback",
        "comparisons",
        {"rm-summary": "summary", "rm-faithful": "faithful"},
        _post,
        "Summarize the following post.\n\n{input}",
        64,
    ),
}
SIZES = (2000, 200, 500)  # train / validation / test prompts of each paper task


def _rows(spec: PaperTask, source: str, split: str) -> list[dict]:
    """Rows of a hub split, or of a local JSONL stand-in (whole file, whatever ``split``)."""
    if Path(source).is_file():
        from .io import read_jsonl

        return read_jsonl(source)
    from datasets import load_dataset

    return list(load_dataset(source, spec.config, split=split))


def _loader(name: str, spec: PaperTask, source: str, sizes: tuple[int, int, int]) -> Callable[[], list[Example]]:
    n_train, n_val, n_test = sizes

    def load() -> list[Example]:
        local = Path(source).is_file()
        seen: set[str] = set()

        def unique(rows: list[dict]) -> list[str]:  # comparisons repeat posts; keep each input once
            out = []
            for row in rows:
                text = spec.extract(row)
                if text and text not in seen:
                    seen.add(text)
                    out.append(text)
            return out

        if local:  # one file: train, validation, test in order
            texts = unique(_rows(spec, source, "train"))
            train, val, test = (
                texts[:n_train],
                texts[n_train : n_train + n_val],
                texts[n_train + n_val : n_train + n_val + n_test],
            )
        else:
            first = unique(_rows(spec, source, "train"))
            train, val = first[:n_train], first[n_train : n_train + n_val]
            test = unique(_rows(spec, source, "validation" if spec.config else "test"))[:n_test]
        if not (train and val and test):
            raise ValueError(
                f"task {name!r}: {source} gave {len(train)}/{len(val)}/{len(test)} train/validation/test inputs; fix: "
                "point it at more data"
            )
        return (
            [Example(f"{name}-tr{i}", t, "train") for i, t in enumerate(train)]
            + [Example(f"{name}-va{i}", t, "validation") for i, t in enumerate(val)]
            + [Example(f"{name}-te{i}", t, "test") for i, t in enumerate(test)]
        )

    return load


def install_paper_preset(
    *,
    data: dict[str, str] | None = None,
    reward_models: dict[str, str] | None = None,
    sizes: tuple[int, int, int] = SIZES,
    device: str = "cpu",
) -> list[str]:
    """Register the tasks ``hh`` and ``reddit`` and their reward-model objectives; returns the task names.

    ``data``: task → hub id or local JSONL (default: the papers' datasets); ``reward_models``:
    objective (``rm-helpful`` …) → folder or hub id (default: the papers' models).
    """
    data, reward_models = dict(data or {}), dict(reward_models or {})
    unknown = (set(data) - set(PAPER_TASKS)) | (
        set(reward_models) - {o for t in PAPER_TASKS.values() for o in t.objectives}
    )
    if unknown:
        raise ValueError(
            f"unknown preset task or objective {sorted(unknown)}; fix: use tasks {sorted(PAPER_TASKS)} and objectives "
            f"{sorted(o for t in PAPER_TASKS.values() for o in t.objectives)}"
        )
    for name, spec in PAPER_TASKS.items():
        for objective, key in spec.objectives.items():
            settings = dict(PAPER_REWARD_MODELS[key])
            source = reward_models.get(objective, settings.pop("source"))
            register_objective(reward_model_objective(objective, source, device=device, **settings))
        register_task(
            Task(
                name=name,
                objectives=tuple(spec.objectives),
                template=spec.template,
                max_new_tokens=spec.max_new_tokens,
                load_examples=_loader(name, spec, data.get(name, spec.source), sizes),
                description=f"the papers' setting: {spec.source}",
                pool_samples=8,
                pool_prompts=None,
                pool_batch=16,
            )
        )
    return list(PAPER_TASKS)


PRESETS = {"paper": install_paper_preset}
