"""The service layer the app calls: guardrails with clear messages, per-request merges."""
from __future__ import annotations

import pytest

from mage.service import MAX_PROMPT_CHARS, Service


@pytest.fixture
def service(tiny_checkpoints):
    _, base = tiny_checkpoints
    return Service(base=str(base))


def test_generate_side_by_side_with_scores(service):
    replies, notices = service.generate("summary", "Some news today.", [0.3, 0.7], ["bone", "rs", "base"], max_new_tokens=4, greedy=True)
    assert [r.method for r in replies] == ["bone", "rs", "base"] and not notices
    assert all(set(r.scores) == {"faithful", "concise"} for r in replies)
    assert replies[0].coefficients == pytest.approx([0.0, 1.0])  # (0.3, 0.7) is backbone 1's own row
    assert replies[1].coefficients == pytest.approx([0.3, 0.7])


@pytest.mark.parametrize("prompt, sliders, kwargs, message", [
    ("   ", [1, 1], {}, "prompt is empty"),
    ("x", [0, 0], {}, "all zero"),
    ("x", [1], {}, "2 objectives"),
    ("x", [1, 1], {"temperature": 0.0}, "temperature"),
    ("x", [1, 1], {"top_p": 2.0}, "top_p"),
    ("x", [1, 1], {"seed": -1}, "seed -1 is out of range"),
])
def test_guardrails_name_the_problem(service, prompt, sliders, kwargs, message):
    with pytest.raises(ValueError, match=message):
        service.generate("summary", prompt, sliders, ["bone"], max_new_tokens=2, **kwargs)


def test_long_prompt_is_truncated_with_a_notice(service):
    _, notices = service.generate("summary", "word " * MAX_PROMPT_CHARS, [1, 1], ["base"], max_new_tokens=1)
    assert notices and "truncated" in notices[0]


def test_missing_checkpoints_are_reported_per_method(service):
    replies, _ = service.generate("assistant", "Hello", [1, 1, 1], ["rs", "base"], max_new_tokens=2, greedy=True)
    assert "are not trained" in replies[0].error and replies[0].text == ""
    assert replies[1].error == ""
