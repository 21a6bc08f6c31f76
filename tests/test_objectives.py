"""Objectives: validated on hand-labelled pairs, batched, usable as TRL reward functions."""
from __future__ import annotations

import pytest
import torch

from mage.objective_checks import MIN_ACCURACY, pairwise_accuracy
from mage.objectives import OBJECTIVES, Objective, get_objective, reward_model_objective, score_all


@pytest.mark.parametrize("name", ["helpful", "harmless", "humorous", "faithful", "concise"])
def test_default_objective_orders_hand_labelled_pairs(name):
    result = pairwise_accuracy(name)
    assert result["pairs"] >= 30
    assert result["accuracy"] >= MIN_ACCURACY, result


def test_objectives_are_batched_and_higher_is_better():
    inputs = ["How do I boil an egg?"] * 2
    responses = ["Put the egg in boiling water for eight minutes, then cool it in cold water.", "You stupid idiot, figure it out yourself, damn it."]
    scores = score_all(["helpful", "harmless"], inputs, responses)
    assert scores["harmless"][0] > scores["harmless"][1] + 0.5
    assert scores["helpful"][0] > scores["helpful"][1]
    assert get_objective("concise")(["x"], [""]) == [1.0]
    assert get_objective("helpful")(["x"], ["   "]) == [0.0]  # empty response: no relevance


def test_direction_flips_a_lower_is_better_scorer():
    words = Objective("short", lambda xs, ys: [len(y.split()) for y in ys], direction=-1)
    assert words(["a", "b"], ["one two three", "one"]) == [-3.0, -1.0]


def test_trl_reward_function_accepts_plain_and_conversational_inputs():
    reward = get_objective("concise").as_reward_fn()
    assert reward.__name__ == "concise"
    plain = reward(prompts=["p", "p"], completions=["one two", "one"])
    chat = reward(prompts=[[{"role": "user", "content": "p"}]] * 2, completions=[[{"role": "assistant", "content": "one two"}], [{"role": "assistant", "content": "one"}]])
    assert plain == chat == pytest.approx([0.98, 0.99])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="2 inputs but 1 responses"):
        get_objective("concise")(["a", "b"], ["x"])
    with pytest.raises(ValueError, match="unknown objective 'funny'.*fix"):
        get_objective("funny")
    with pytest.raises(ValueError, match="unknown input_format"):
        reward_model_objective("x", "nowhere", input_format="chat")
    bad = Objective("nan", lambda xs, ys: [float("nan")] * len(ys))
    with pytest.raises(FloatingPointError):
        bad(["a"], ["b"])


@pytest.mark.parametrize("fmt, logit_index", [("hh", 0), ("pair", 1), ("response+post", 0), ("response", 1)])
def test_reward_model_objective_uses_the_papers_input_conventions(tiny_reward_model, fmt, logit_index):
    folder, model, tok = tiny_reward_model
    objective = reward_model_objective("rm", str(folder), input_format=fmt, logit_index=logit_index)
    prompt, response = "Is soup good?", "Yes, very."
    got = objective([prompt], [response])[0]
    text = {"hh": (f"\n\nHuman: {prompt} \n\nAssistant: {response}",), "pair": (prompt, response),
            "response+post": (f"{response} {prompt}",), "response": (response,)}[fmt]
    with torch.no_grad():
        expected = model(**tok(*text, return_tensors="pt")).logits[0, logit_index].item()
    assert got == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="logit_index 5"):
        reward_model_objective("rm", str(folder), logit_index=5)(["a"], ["b"])


def test_registry_holds_the_five_defaults():
    assert {"helpful", "harmless", "humorous", "faithful", "concise"} <= set(OBJECTIVES)
