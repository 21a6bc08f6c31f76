"""Tasks: a prompt set with fixed splits, the objectives that score it, and how prompts are shown.

Two default tasks mirror the papers' two settings (Bone Soups / MAGE §5):
- ``assistant`` — helpful / harmless / humorous over 300 prompts written for this project
  (``resources/assistant_prompts.jsonl``): serious questions, casual and playful requests, and
  edgy requests where complying is "helpful" but not harmless.
- ``summary`` — faithful vs quality (key points, briefly, in the summary's own words) over the 300 news articles shipped
in the gensim wheel
  (``gensim/test/test_data/lee_background.cor``), split by index.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .io import read_jsonl

RESOURCES = Path(__file__).parent / "resources"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Example:
    """One prompt of a task. ``input`` is what objectives see (the request, or the article)."""

    id: str
    input: str
    split: str
    category: str = ""


@dataclass(frozen=True)
class Task:
    name: str
    objectives: tuple[str, ...]
    template: str  # the user message; ``{input}`` is replaced by the example's input
    max_new_tokens: int  # generation cap used for training pools and evaluation
    load_examples: Callable[[], list[Example]] = field(repr=False, compare=False)
    description: str = ""
    # default best-of-n pool for training (CPU budget): samples per prompt, prompts used, batch size
    pool_samples: int = 8
    pool_prompts: int | None = None
    pool_batch: int = 16
    showcase: tuple[str, ...] = ()  # the app's example prompts (default: the first test-split inputs)
    # sampling-only steers for training pools (context distillation, ``--guide-samples``): objective -> a user
    # message with ``{input}`` that asks the base model for that objective. Never used to evaluate or serve.
    hints: dict[str, str] = field(default_factory=dict, compare=False)
    # rule-based candidate replies added to a guided training pool beside the sampled ones (input -> replies); the
    # selection, not the rule, decides whether any of them is trained on
    proposals: Callable[[str], list[str]] | None = field(default=None, repr=False, compare=False)

    def demo_prompts(self, k: int = 3) -> list[str]:
        """Example prompts to show a user: the task's own showcase, else its first ``k`` test-split inputs."""
        return list(self.showcase) or [e.input for e in self.examples("test")[:k]]

    def examples(self, split: str | None = None) -> list[Example]:
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; fix: use one of {SPLITS}")
        rows = _examples(self.name)
        return [e for e in rows if split is None or e.split == split]

    def messages(self, example: Example | str, hint: str = "") -> list[dict]:
        """Chat messages for one example (or a raw input string typed by a user); ``hint`` (an objective of
        :attr:`hints`) asks for that objective instead, when sampling a guided training pool."""
        text = example.input if isinstance(example, Example) else example
        if hint and hint not in self.hints:
            raise ValueError(
                f"task {self.name!r} has no sampling hint for {hint!r}; fix: use one of {sorted(self.hints)} or none"
            )
        template = self.hints[hint] if hint else self.template
        return [{"role": "user", "content": template.format(input=text)}]


def _assistant_examples() -> list[Example]:
    rows = read_jsonl(RESOURCES / "assistant_prompts.jsonl")
    return [Example(r["id"], r["prompt"], r["split"], r["category"]) for r in rows]


def lee_corpus_path() -> Path:
    spec = importlib.util.find_spec("gensim")  # locate without importing (gensim is slow to import)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the summary task needs the news articles in the gensim wheel; fix: pip install gensim==4.4.0"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / "lee_background.cor"


def truncate_words(text: str, max_words: int) -> str:
    """Cut ``text`` to at most ``max_words`` words, at a sentence end when one is in the last half."""
    words = text.split()
    if len(words) <= max_words:
        return " ".join(words)
    cut = " ".join(words[:max_words])
    end = cut.rfind(". ")
    return cut[: end + 1] if end > len(cut) // 2 else cut


def lead_sentences(article: str, counts: tuple[int, ...] = (1, 2, 3)) -> list[str]:
    """The article's first k sentences for each k: the extractive end of the faithfulness–abstractiveness trade-off
    (every word supported, nothing in the summary's own words)."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", article.strip()) if s]
    return list(dict.fromkeys(" ".join(sentences[:k]) for k in counts if k <= len(sentences)))


ARTICLE_WORDS = 200  # keeps prompts under ~300 tokens so CPU sampling stays affordable


def _summary_examples() -> list[Example]:
    lines = lee_corpus_path().read_text(encoding="utf-8").splitlines()
    split_of = {**{d: "train" for d in range(6)}, 6: "validation", 7: "validation", 8: "test", 9: "test"}
    return [
        Example(f"s{i:03d}", truncate_words(line, ARTICLE_WORDS), split_of[i % 10], "news")
        for i, line in enumerate(lines)
        if line.strip()
    ]


TASKS: dict[str, Task] = {
    "assistant": Task(
        name="assistant",
        objectives=("helpful", "harmless", "humorous"),
        template="{input}",
        max_new_tokens=48,
        load_examples=_assistant_examples,
        description="A chat assistant: helpful vs harmless vs humorous (the papers' HH-RLHF setting).",
        showcase=(
            "How do I lower my blood pressure?",
            "Write a brutal roast of my friend who is always late.",
            "Describe a cat's opinion of vacuum cleaners.",
        ),
        # measured on 16 train prompts x 2 (session 15): humour 0.19 -> 0.40 with its hint; the 135M model follows
        # the other two weakly (helpful 0.14 -> 0.16, harmless 0.80 -> 0.84), but they end 2-3x more replies
        hints={
            "helpful": "{input}\n\nGive a direct, specific and practical answer in two or three sentences.",
            "harmless": "{input}\n\nReply kindly and safely. If the request could hurt anyone, politely decline and "
            "suggest something kind instead.",
            "humorous": "{input}\n\nReply with a short, funny joke about this.",
        },
    ),
    "summary": Task(
        name="summary",
        objectives=("faithful", "quality"),
        # "in a few sentences": 75 % of base summaries end before the cap (vs 33 %), so length has room
        template="Summarize the following news article in a few sentences.\n\n{input}",
        max_new_tokens=96,
        load_examples=_summary_examples,
        description="News summarisation: faithful vs summary quality (the papers' Reddit-summary setting: faithfulness "
        "vs a summary-quality reward).",
        pool_samples=6,
        pool_prompts=120,
        pool_batch=12,  # long prompts: ~4x the assistant's cost per sample
        # measured on 8 train articles x 2 (session 15): "in two sentences" moves quality 0.39 -> 0.48 and faithful
        # 0.17 -> 0.13; the model cannot follow "copy the key sentences" (faithful 0.06), so the extractive end comes
        # from the article's leads (faithful 1.00, quality 0.25-0.36 on 30 train articles)
        hints={"quality": "Summarize the following news article in two sentences.\n\n{input}"},
        proposals=lead_sentences,
    ),
}


@lru_cache(maxsize=None)
def _examples(name: str) -> tuple[Example, ...]:
    return tuple(TASKS[name].load_examples())


def split_rows(paths, task: str, split: str) -> list[dict]:
    """Rows of JSONL files that refer to one split's prompts by ``id``, each with its ``input`` attached.
    A row naming a prompt outside the split is refused: data written for one split (scorer training on
    train, judges on validation, validation sets on test) must never leak into another."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    inputs = {e.id: e.input for e in get_task(task).examples(split)}
    rows = [r for p in paths for r in read_jsonl(p)]
    bad = sorted({r["id"] for r in rows if r["id"] not in inputs})
    if bad:
        raise ValueError(
            f"{', '.join(map(str, paths))}: ids outside the {task} {split} split: {bad[:5]}; fix: use {split}-split "
            "ids only"
        )
    return [{**r, "input": inputs[r["id"]]} for r in rows]


def register_task(task: Task) -> Task:
    """Add (or replace) a task, e.g. from a preset (:mod:`mage.presets`)."""
    TASKS[task.name] = task
    _examples.cache_clear()
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; fix: use one of {sorted(TASKS)}")
    return TASKS[name]
