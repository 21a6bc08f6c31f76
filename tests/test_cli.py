"""The CLI hands ``--out`` and the command line it was given to the library, for every command that writes a results
file."""

from __future__ import annotations

from pathlib import Path

import pytest

import mage.reports
import mage.strength
from mage.cli import main

CASES = [
    (["value-check", "--task", "summary", "--kind", "implicit"], mage.reports, "value_check"),
    (["lmc", "--task", "summary", "--kind", "explicit"], mage.reports, "lmc_curve"),
    (["table", "--task", "summary"], mage.reports, "ingredient_table"),
    (
        ["choose-strength", "--task", "summary", "--method", "mage-i", "--prompts", "16"],
        mage.strength,
        "choose_strength",
    ),
]


@pytest.mark.parametrize("argv, module, name", CASES, ids=[c[0][0] for c in CASES])
def test_out_reaches_the_library_as_a_path(monkeypatch, tmp_path, argv, module, name):
    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        return {"rows": {}, "chosen": 1.0}  # the shape the CLI prints from: no rows

    monkeypatch.setattr(module, name, fake)
    main([*argv, "--out", str(tmp_path / "x.json")])
    assert seen["out"] == Path(tmp_path / "x.json")
    if "command" in seen:  # the recorded command is the one that was run, flags included
        assert seen["command"].startswith("python -m mage " + argv[0]) and all(a in seen["command"] for a in argv[1:])


def test_choose_strength_records_a_command_that_repeats_it():
    from mage.strength import _choose_command

    line = _choose_command(
        "summary", "mage-e", [1.0, 2.0], prompts=16, base="smollm2-135m-instruct", seed=0, max_new_tokens=None
    )
    assert line == "python -m mage choose-strength --task summary --method mage-e --strengths 1,2 --prompts 16"
    assert "--base /tmp/b --max-new-tokens 3" in _choose_command(
        "summary", "mage-e", [1.0], prompts=2, base="/tmp/b", seed=0, max_new_tokens=3
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-new-tokens", "0"], "0 must be at least 1"),
        (["--weights", "1,2,3"], "3 weights .* 2 objectives|2 objectives"),
        (["--prompt", "😀" * 4000], r"tokens .* the limit is"),
    ],
)
def test_generate_refuses_bad_arguments_before_any_model_loads(tiny_checkpoints, monkeypatch, capsys, argv, message):
    import mage.methods

    _, base = tiny_checkpoints
    monkeypatch.setattr(
        mage.methods.Engine,
        "__init__",
        lambda *a, **k: pytest.fail("a model was loaded before the arguments were checked"),
    )
    args = {"--task": "summary", "--weights": "1,1", "--prompt": "An article.", "--base": str(base)}
    for flag, value in zip(argv[::2], argv[1::2]):
        args[flag] = value
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", *[x for kv in args.items() for x in kv]])
    assert exit_info.value.code != 0
    assert __import__("re").search(message, f"{exit_info.value.code}{capsys.readouterr().err}")


def test_a_broken_base_folder_is_named_not_a_traceback(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{ not json")
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(SystemExit, match=r"the base model .*broken.* cannot be loaded.*fix: point --base"):
        main(["generate", "--task", "summary", "--weights", "1,1", "--prompt", "x", "--base", str(folder)])


def test_strength_is_reported_only_for_guided_methods(tiny_checkpoints, capsys):
    import json

    _, base = tiny_checkpoints
    main(
        [
            "generate",
            "--task",
            "summary",
            "--method",
            "bone",
            "--weights",
            "1,1",
            "--prompt",
            "An article.",
            "--base",
            str(base),
            "--strength",
            "2",
            "--max-new-tokens",
            "2",
            "--json",
        ]
    )
    out = capsys.readouterr()
    assert json.loads(out.out)["strength"] is None and "--strength is ignored" in out.err
