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


# --- the CLI's defaults come from the config dataclasses (one place) ---

# options whose CLI default differs from their dataclass field's on purpose, by (command, Config.field)
DELIBERATE_DEFAULTS = {
    # SweepConfig's device is the CPU for library callers; the command, like the others, uses a GPU when present
    ("evaluate", "SweepConfig.device"): "auto",
}


def _commands(parser):
    import argparse

    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def _minimal_argv(command, subparser) -> list[str]:
    """The command with only its required arguments, each a value it accepts."""
    argv = [command]
    for action in subparser._actions:
        if action.required:
            value = str(action.choices[0]) if action.choices else "1"
            argv += [action.option_strings[0], value] if action.option_strings else [value]
    return argv


def _field_default(config, name):
    import dataclasses

    field = {f.name: f for f in dataclasses.fields(config)}[name]
    if field.default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default  # MISSING for a required field


def _mapped(parser):
    """(command, its parsed minimal arguments, action, config, field) for every option mapped to a config field."""
    for command, sub in _commands(parser).items():
        args = parser.parse_args(_minimal_argv(command, sub))
        for action in sub._actions:
            if hasattr(action, "config_field"):
                yield command, args, action, *action.config_field


def test_every_cli_default_is_its_config_dataclass_default():
    """Walks every option built from a config field: parsed with no value given, it is the field's default (or
    None, "resolved at run time", which its help must explain), unless listed in DELIBERATE_DEFAULTS."""
    from mage.cli import build_parser, config_args

    parser = build_parser()
    seen, deliberate = set(), set()
    for command, args, action, config, name in _mapped(parser):
        seen.add(config.__name__)
        if action.required:
            continue
        value, default = config_args(args, config)[name], _field_default(config, name)
        where = f"{command} {action.option_strings[0]} ({config.__name__}.{name})"
        if (command, f"{config.__name__}.{name}") in DELIBERATE_DEFAULTS:
            deliberate.add((command, f"{config.__name__}.{name}"))
            assert value == DELIBERATE_DEFAULTS[command, f"{config.__name__}.{name}"], where
        elif value is None and default is not None:
            assert "default" in (action.help or ""), f"{where}: a None default must say in its help what it means"
        else:
            assert value == default and type(value) is type(default), f"{where}: CLI {value!r}, dataclass {default!r}"
    assert deliberate == set(DELIBERATE_DEFAULTS)  # no stale exception
    assert {"TrainConfig", "PoolConfig", "ValueConfig", "SamplingConfig", "SweepConfig"} <= seen


def test_no_option_retypes_a_config_field_by_hand():
    """A command that builds a config takes each of that config's options from config_option: a plain add_argument
    named after one of its fields would carry a second copy of the default."""
    from mage.cli import build_parser

    for command, sub in _commands(build_parser()).items():
        configs = {a.config_field[0] for a in sub._actions if hasattr(a, "config_field")}
        names = {f.name for config in configs for f in __import__("dataclasses").fields(config)}
        by_hand = [a.dest for a in sub._actions if not hasattr(a, "config_field") and a.dest in names]
        assert not by_hand, f"{command}: {by_hand} re-type a config field; use config_option"


def test_the_choices_a_config_declares_are_the_ones_it_accepts():
    """The CLI's choices come from a field's metadata; the dataclass's own validation must agree with them."""
    import dataclasses
    from dataclasses import MISSING

    from mage.cli import build_parser

    configs = {config for *_, config, _ in _mapped(build_parser())}
    checked = 0
    for config in configs:
        # a required field is SweepConfig.task
        required = {f.name: "summary" for f in dataclasses.fields(config) if _field_default(config, f.name) is MISSING}
        for field in dataclasses.fields(config):
            if "choices" not in field.metadata:
                continue
            for choice in field.metadata["choices"]:
                assert getattr(config(**required, **{field.name: choice}), field.name) == choice
            with pytest.raises(ValueError):
                config(**required, **{field.name: f"no-such-{field.name}"})
            checked += 1
    assert checked >= 3  # TrainConfig.trainer, TrainConfig.normalize, ValueConfig.kind


def test_configs_built_from_the_default_arguments_are_the_dataclass_defaults():
    from mage.cli import _sampling, _train_config, build_parser, config_args
    from mage.decoding import SamplingConfig
    from mage.tasks import get_task
    from mage.training import TrainConfig, default_pool
    from mage.values import ValueConfig

    parser, task = build_parser(), get_task("summary")
    args = parser.parse_args(["train", "--task", "summary", "--weights", "1,1", "--out", "x"])
    assert _train_config(args) == TrainConfig(pool=default_pool(task))
    args = parser.parse_args(["train-values", "--task", "summary", "--kind", "implicit"])
    assert ValueConfig(**config_args(args, ValueConfig)) == ValueConfig(kind="implicit")
    args = parser.parse_args(["generate", "--task", "summary", "--weights", "1,1", "--prompt", "x"])
    assert _sampling(args, task) == SamplingConfig(max_new_tokens=task.max_new_tokens)


def test_task_help_lists_the_registered_tasks():
    from mage.cli import build_parser
    from mage.tasks import TASKS

    for command, sub in _commands(build_parser()).items():
        for action in sub._actions:
            if "--task" in action.option_strings:
                assert all(name in action.help for name in TASKS), command
