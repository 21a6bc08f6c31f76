"""The CLI hands ``--out`` and the command line it was given to the library, for every command that writes a results file."""
from __future__ import annotations

from pathlib import Path

import pytest

import mage.reports
import mage.sweep
from mage.cli import main

CASES = [
    (["value-check", "--task", "summary", "--kind", "implicit"], mage.reports, "value_check"),
    (["lmc", "--task", "summary", "--kind", "explicit"], mage.reports, "lmc_curve"),
    (["table", "--task", "summary"], mage.reports, "ingredient_table"),
    (["choose-strength", "--task", "summary", "--method", "mage-i", "--prompts", "16"], mage.sweep, "choose_strength"),
]


@pytest.mark.parametrize("argv, module, name", CASES, ids=[c[0][0] for c in CASES])
def test_out_reaches_the_library_as_a_path(monkeypatch, tmp_path, argv, module, name):
    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        return {"rows": [], "chosen": 1.0}

    monkeypatch.setattr(module, name, fake)
    main([*argv, "--out", str(tmp_path / "x.json")])
    assert seen["out"] == Path(tmp_path / "x.json")
    if "command" in seen:  # the recorded command is the one that was run, flags included
        assert seen["command"].startswith("python -m mage " + argv[0]) and all(a in seen["command"] for a in argv[1:])


def test_choose_strength_records_a_command_that_repeats_it():
    from mage.sweep import _choose_command

    line = _choose_command("summary", "mage-e", [1.0, 2.0], prompts=16, base="smollm2-135m-instruct", seed=0, max_new_tokens=None)
    assert line == "python -m mage choose-strength --task summary --method mage-e --strengths 1,2 --prompts 16"
    assert "--base /tmp/b --max-new-tokens 3" in _choose_command("summary", "mage-e", [1.0], prompts=2, base="/tmp/b", seed=0, max_new_tokens=3)
