"""The papers' scale, exercised end to end with tiny local stand-ins (no hub): data, reward models, training, CLI."""

from __future__ import annotations

import json

import pytest

from mage import objectives, tasks


@pytest.fixture
def paper_preset(tiny_checkpoints, tiny_reward_model, tmp_path):
    from mage.presets import install_paper_preset

    hh, reddit = tmp_path / "hh.jsonl", tmp_path / "reddit.jsonl"
    hh.write_text(
        "".join(
            json.dumps({"chosen": f"\n\nHuman: How do I fix problem {i}?\n\nAssistant: Try this.", "rejected": "..."})
            + "\n"
            for i in range(10)
        )
    )
    reddit.write_text(
        "".join(
            json.dumps({"info": {"id": str(i), "post": f"My roommate and I argued about chore number {i} today."}})
            + "\n"
            for i in range(10)
        )
    )
    folder = str(tiny_reward_model[0])
    saved_tasks, saved_objectives = dict(tasks.TASKS), dict(objectives.OBJECTIVES)
    rms = {o: folder for o in ("rm-helpful", "rm-harmless", "rm-humor", "rm-summary", "rm-faithful")}
    names = install_paper_preset(data={"hh": str(hh), "reddit": str(reddit)}, reward_models=rms, sizes=(4, 2, 2))
    yield names, {"hh": hh, "reddit": reddit}, rms
    tasks.TASKS.clear()
    tasks.TASKS.update(saved_tasks)
    tasks._examples.cache_clear()
    objectives.OBJECTIVES.clear()
    objectives.OBJECTIVES.update(saved_objectives)


def test_preset_tasks_read_the_datasets_row_format_with_fixed_splits(paper_preset):
    names, _, _ = paper_preset
    assert names == ["hh", "reddit"]
    hh = tasks.get_task("hh")
    assert hh.objectives == ("rm-helpful", "rm-harmless", "rm-humor")
    assert [len(hh.examples(s)) for s in ("train", "validation", "test")] == [4, 2, 2]
    assert hh.examples("train")[0].input == "How do I fix problem 0?"  # the first human turn
    assert (
        tasks.get_task("reddit").examples("test")[0].input.startswith("My roommate and I argued about chore number 6")
    )
    scores = objectives.score_all(hh.objectives, ["How?"], ["Like this."])
    assert all(len(v) == 1 for v in scores.values())  # the reward models score through the papers' input formats


def test_preset_trains_and_generates_through_the_same_commands(paper_preset, tiny_checkpoints, tmp_path, capsys):
    from mage.adapters import load_adapter
    from mage.cli import main
    from mage.pools import PoolConfig
    from mage.training import TrainConfig, train_adapter

    _, data, rms = paper_preset
    _, base = tiny_checkpoints
    out = train_adapter(
        "hh",
        [0.7, 0.15, 0.15],
        tmp_path / "backbone",
        TrainConfig(
            base=str(base),
            epochs=1,
            pool=PoolConfig(samples_per_prompt=2, max_prompts=4, batch_size=8, max_new_tokens=4),
        ),
        command="test",
    )
    assert load_adapter(out).rank == 8
    argv = [
        "--preset",
        "paper",
        "--preset-data",
        f"reddit={data['reddit']}",
        "--preset-data",
        f"hh={data['hh']}",
        "--preset-sizes",
        "4,2,2",
        *[x for o, f in rms.items() for x in ("--preset-rm", f"{o}={f}")],
        "generate",
        "--task",
        "reddit",
        "--method",
        "base",
        "--weights",
        "1,1",
        "--prompt",
        "A long post.",
        "--base",
        str(base),
        "--max-new-tokens",
        "3",
        "--json",
    ]
    main(argv)
    reply = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert reply["task"] == "reddit" and set(reply["scores"]) == {"rm-summary", "rm-faithful"}
    with pytest.raises(SystemExit, match="not name=source"):
        main(
            [
                "--preset",
                "paper",
                "--preset-rm",
                "rm-helpful",
                "generate",
                "--task",
                "hh",
                "--weights",
                "1,1,1",
                "--prompt",
                "x",
            ]
        )


def test_accelerate_config_files_parse():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    root = Path(__file__).resolve().parent.parent / "configs" / "accelerate"
    kinds = {p.stem: str(load_config_from_file(str(p)).distributed_type) for p in root.glob("*.yaml")}
    # multi_cpu.yaml is MULTI_GPU without CUDA: accelerate's MULTI_CPU type starts a single process (below)
    assert kinds == {
        "multi_cpu": "DistributedType.MULTI_GPU",
        "multi_gpu": "DistributedType.MULTI_GPU",
        "deepspeed_zero2": "DistributedType.DEEPSPEED",
        "fsdp": "DistributedType.FSDP",
    }


def test_the_multi_cpu_config_really_starts_two_processes(tmp_path):
    """`accelerate launch --config_file configs/accelerate/multi_cpu.yaml` on this CPU-only machine: two ranks."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    config = Path(__file__).resolve().parent.parent / "configs" / "accelerate" / "multi_cpu.yaml"
    script = tmp_path / "rank.py"
    # each rank leaves a file (stdout of two children through the launcher's pipe is not a reliable witness)
    script.write_text(
        "import os, pathlib, sys\n"
        "rank, world = os.environ.get('RANK'), os.environ.get('WORLD_SIZE')\n"
        "pathlib.Path(sys.argv[1], f'rank-{rank}').write_text(str(world))\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--main_process_port",
        str(port),
        str(script),
        str(tmp_path),
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    proc = subprocess.run(launcher, capture_output=True, text=True, timeout=300, env={**env, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranks = {p.name: p.read_text() for p in tmp_path.glob("rank-*")}
    assert ranks == {"rank-0": "2", "rank-1": "2"}, (ranks, proc.stdout[-1000:], proc.stderr[-2000:])
