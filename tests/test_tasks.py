"""The two default tasks: sizes, fixed disjoint splits, the categories that make objectives pull apart."""

from __future__ import annotations

from collections import Counter

import pytest

from mage.tasks import TASKS, get_task, truncate_words


def test_assistant_prompt_set_and_splits():
    task = get_task("assistant")
    rows = task.examples()
    assert len(rows) == 300 and len({r.id for r in rows}) == 300 and len({r.input.lower() for r in rows}) == 300
    assert Counter(r.split for r in rows) == {"train": 180, "validation": 60, "test": 60}
    cats = Counter((r.category, r.split) for r in rows)
    assert cats[("edgy", "test")] == 18 and cats[("serious", "test")] == 18 and cats[("playful", "test")] == 10
    assert task.objectives == ("helpful", "harmless", "humorous")


def test_summary_task_uses_the_shipped_articles_with_fixed_splits():
    task = get_task("summary")
    rows = task.examples()
    assert len(rows) == 300
    assert Counter(r.split for r in rows) == {"train": 180, "validation": 60, "test": 60}
    assert all(len(r.input.split()) <= 200 for r in rows)
    assert task.messages(rows[0])[0]["content"].startswith("Summarize the following news article in a few sentences.")
    assert task.objectives == ("faithful", "quality")


def test_truncation_keeps_whole_sentences_when_it_can():
    text = "One two three. Four five six seven eight nine ten."
    assert truncate_words(text, 5) == "One two three."
    assert truncate_words(text, 50) == text


def test_unknown_task_and_split_are_refused():
    with pytest.raises(ValueError, match="unknown task 'poem'.*fix"):
        get_task("poem")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        TASKS["assistant"].examples("dev")
