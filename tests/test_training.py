"""Best-of-n selection fine-tuning: selection, EOS handling, and a tiny end-to-end run through TRL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mage.pools import PoolConfig
from mage.tasks import get_task
from mage.training import TrainConfig, select_best, sft_examples, standardize, train_adapter

POOL = [
    {"id": "p1", "sample": 0, "scores": {"a": 1.0, "b": 0.0}},
    {"id": "p1", "sample": 1, "scores": {"a": 0.0, "b": 3.0}},
    {"id": "p2", "sample": 0, "scores": {"a": 0.5, "b": 1.0}},
    {"id": "p2", "sample": 1, "scores": {"a": 0.6, "b": 0.0}},
]


def test_select_best_maximises_the_mixed_standardised_reward():
    pick = lambda w, norm="zscore": sorted((r["id"], r["sample"]) for r in select_best(POOL, ["a", "b"], w, norm))
    assert pick([1, 0]) == [("p1", 0), ("p2", 1)]
    assert pick([0, 1]) == [("p1", 1), ("p2", 0)]
    # raw rewards: objective b's larger scale dominates an even mix; standardised, it does not
    assert pick([0.5, 0.5], "none") == [("p1", 1), ("p2", 0)]
    mean_a, std_a = standardize(POOL, ["a"], "zscore")["a"]
    assert mean_a == pytest.approx(0.525) and std_a > 0


def test_cut_responses_are_trained_without_an_end_of_turn_token(tokenizer):
    task = get_task("assistant")
    rows = [
        {"input": "Hi", "token_ids": [10, 11], "finished": False},
        {"input": "Hi", "token_ids": [10, 11], "finished": True},
    ]
    cut, ended = sft_examples(task, tokenizer, rows)
    assert cut["input_ids"][-2:] == [10, 11]
    assert ended["input_ids"][-3:] == [10, 11, tokenizer.eos_token_id]
    assert sum(cut["completion_mask"]) == 2 and sum(ended["completion_mask"]) == 3
    assert cut["completion_mask"][: len(cut["input_ids"]) - 2] == [0] * (len(cut["input_ids"]) - 2)


def test_train_writes_a_verified_peft_adapter_with_its_recipe(tiny_checkpoints):
    root, base = tiny_checkpoints
    folder = root / "checkpoints" / "summary" / "backbones-b0.7" / "0"
    manifest = json.loads((folder / "mage_manifest.json").read_text())
    assert manifest["info"]["weights"] == pytest.approx([0.7, 0.3])
    assert manifest["info"]["n_pool"] == 8 and manifest["info"]["n_selected"] == 4
    assert "command: `test`" in (folder / "README.md").read_text()


def test_policy_bank_merges_every_stage1_method(tiny_checkpoints):
    from mage.decoding import SamplingConfig
    from mage.policy import PolicyBank

    _, base = tiny_checkpoints
    bank = PolicyBank("summary", base=str(base))
    assert bank.merge("bone", [1, 0]).coefficients == pytest.approx([1.75, -0.75])
    assert bank.merge("rs", [0.25, 0.75]).coefficients == pytest.approx([0.25, 0.75])
    assert bank.merge("aba", [0.25, 0.75]).coefficients == pytest.approx([0.25, 0.75])
    greedy = SamplingConfig(max_new_tokens=5, greedy=True)
    base_text = bank.generate("base", [1, 1], ["An article."], greedy)[0].token_ids
    assert bank.generate("bone", [0.7, 0.3], ["An article."], greedy)[0].token_ids is not None
    assert bank.generate("base", [0.5, 0.5], ["An article."], greedy)[0].token_ids == base_text  # restore is exact
    with pytest.raises(ValueError, match="unknown method 'mage-x'"):
        bank.merge("mage-x", [0.5, 0.5])


def test_cli_generate_json_and_errors(tiny_checkpoints):
    root, base = tiny_checkpoints
    env = {
        **__import__("os").environ,
        "MAGE_CACHE_DIR": str(root / "cache"),
        "MAGE_CHECKPOINTS": str(root / "checkpoints"),
    }
    run = lambda *a: subprocess.run([sys.executable, "-m", "mage", *a], capture_output=True, text=True, env=env)
    ok = run(
        "generate",
        "--task",
        "summary",
        "--method",
        "bone",
        "--weights",
        "0.2,0.8",
        "--prompt",
        "Some news.",
        "--base",
        str(base),
        "--max-new-tokens",
        "4",
        "--json",
    )
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["coefficients"] == pytest.approx([-0.25, 1.25])  # B⁻¹(0.2, 0.8) with beta 0.7
    assert set(out["scores"]) == {"faithful", "quality"}
    cases = {
        ("--weights", "0.2"): "2 objectives",
        ("--weights", "a,b"): "comma-separated",
        ("--weights", "-1,2"): "negative",
        ("--weights", "0,0"): "all zero",
        ("--weights", "nan,1"): "finite",
        ("--method", "soup"): "unknown method",
    }
    for (flag, value), message in cases.items():
        args = {"--weights": "0.5,0.5", "--method": "bone"} | {flag: value}
        bad = run(
            "generate",
            "--task",
            "summary",
            "--prompt",
            "x",
            "--base",
            str(base),
            "--max-new-tokens",
            "2",
            *[f"{k}={v}" for k, v in args.items()],
        )
        assert bad.returncode != 0 and message in bad.stderr, (flag, value, bad.stderr[-300:])
    unknown = run("generate", "--task", "poetry", "--weights", "1", "--prompt", "x")
    assert "unknown task 'poetry'" in unknown.stderr
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "mage",
            "generate",
            "--task",
            "assistant",
            "--weights",
            "1,1,1",
            "--prompt",
            "x",
            "--base",
            str(base),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "are not trained" in missing.stderr and "python -m mage train-set" in missing.stderr


def test_grpo_trainer_runs_through_trl_and_saves_the_same_format(tiny_checkpoints, tmp_path):
    from mage.adapters import load_adapter

    _, base = tiny_checkpoints
    config = TrainConfig(
        base=str(base),
        trainer="grpo",
        grpo_steps=1,
        batch_size=4,
        pool=PoolConfig(samples_per_prompt=4, max_prompts=2, max_new_tokens=6),
    )
    folder = train_adapter("summary", [0.5, 0.5], tmp_path / "grpo", config, command="test")
    adapter = load_adapter(folder)
    assert adapter.meta["info"]["trainer"] == "grpo" and adapter.meta["info"]["steps"] == 1
    with pytest.raises(ValueError, match="trainer='ppo'"):
        TrainConfig(trainer="ppo")


def test_ingredient_table_pairs_every_ingredient_with_the_base(tiny_checkpoints, tmp_path):
    from mage.decoding import SamplingConfig
    from mage.reports import ingredient_table, markdown_table

    _, base = tiny_checkpoints
    result = ingredient_table(
        "summary",
        base=str(base),
        max_prompts=3,
        samples=1,
        out=tmp_path / "t.json",
        sampling=SamplingConfig(max_new_tokens=3),
    )
    assert list(result["rows"]) == ["base", "expert:faithful", "expert:quality", "backbone:0", "backbone:1"]
    base_row = result["rows"]["base"]
    assert base_row["gain_over_base"]["quality"] == {"mean": 0.0, "stderr": 0.0}
    for label, row in result["rows"].items():
        diff = [a - b for a, b in zip(row["per_prompt"]["faithful"], base_row["per_prompt"]["faithful"])]
        assert row["gain_over_base"]["faithful"]["mean"] == pytest.approx(sum(diff) / 3)
    assert (tmp_path / "t.json").is_file() and markdown_table(result).count("\n") == 6


def test_the_ingredient_table_resumes_from_its_journal(tiny_checkpoints, tmp_path, monkeypatch):
    """A killed table keeps the models it finished: run again, it measures only the rest (and the same
    settings give the same rows); other settings measure again."""
    from mage import reports
    from mage.decoding import SamplingConfig

    _, base = tiny_checkpoints
    settings = dict(base=str(base), max_prompts=2, samples=1, sampling=SamplingConfig(max_new_tokens=2))
    measured, real = [], reports.evaluate_model

    def counted(*args, **kwargs):
        measured.append(1)
        if len(measured) == 3:
            raise KeyboardInterrupt  # killed while measuring the third model
        return real(*args, **kwargs)

    monkeypatch.setattr(reports, "evaluate_model", counted)
    with pytest.raises(KeyboardInterrupt):
        reports.ingredient_table("summary", out=tmp_path / "t.json", **settings)
    measured.clear()
    monkeypatch.setattr(reports, "evaluate_model", lambda *a, **k: (measured.append(1), real(*a, **k))[1])
    first = reports.ingredient_table("summary", out=tmp_path / "t.json", **settings)
    assert len(measured) == 3  # base and the first expert came from the journal
    again = reports.ingredient_table("summary", out=tmp_path / "t.json", **settings)
    assert len(measured) == 3 and again["rows"] == first["rows"]
    reports.ingredient_table("summary", out=tmp_path / "t.json", **{**settings, "seed": 1})
    assert len(measured) == 8  # other settings: every model measured again


def test_a_changed_scorer_rescores_the_cached_pool_without_resampling(tiny_checkpoints, monkeypatch):
    import dataclasses

    from mage import objectives
    from mage.models import load_base
    from mage.pools import pool_path, sample_pool

    _, base = tiny_checkpoints
    task = get_task("summary")
    model, tokenizer = load_base(str(base))
    config = PoolConfig(
        samples_per_prompt=2, max_prompts=4, batch_size=8, max_new_tokens=6
    )  # the fixture's pool: cached
    before = sample_pool(task, model, tokenizer, config, progress=False)
    stamp = pool_path(task, model, config).stat().st_mtime_ns
    assert (
        sample_pool(task, model, tokenizer, config, progress=False) == before
        and pool_path(task, model, config).stat().st_mtime_ns == stamp
    )
    changed = dataclasses.replace(
        objectives.OBJECTIVES["quality"], score_fn=lambda xs, ys: [7.0] * len(ys), version="test"
    )
    monkeypatch.setitem(objectives.OBJECTIVES, "quality", changed)
    after = sample_pool(task, model, tokenizer, config, progress=False)
    assert [r["response"] for r in after] == [r["response"] for r in before]  # same samples
    assert all(r["scores"]["quality"] == 7.0 for r in after) and [r["scores"]["faithful"] for r in after] == [
        r["scores"]["faithful"] for r in before
    ]
    monkeypatch.undo()
    assert all(
        r["scores"]["quality"] < 7.0 for r in sample_pool(task, model, tokenizer, config, progress=False)
    )  # and back


def test_a_shipped_pool_is_restored_on_a_fresh_machine_instead_of_resampled(tiny_checkpoints, monkeypatch, tmp_path):
    from mage import pools
    from mage.models import load_base

    _, base = tiny_checkpoints
    task = get_task("summary")
    model, tokenizer = load_base(str(base))
    config = PoolConfig(
        samples_per_prompt=2, max_prompts=4, batch_size=8, max_new_tokens=6
    )  # the fixture's pool: cached
    before = pools.sample_pool(task, model, tokenizer, config, progress=False)
    monkeypatch.setenv("MAGE_CHECKPOINTS", str(tmp_path / "ckpt"))
    shipped = pools.ship_pool(task, pools.pool_path(task, model, config))
    assert (
        shipped.parent == tmp_path / "ckpt" / "summary" / "pools"
        and shipped.stat().st_size < pools.pool_path(task, model, config).stat().st_size
    )
    monkeypatch.setenv("MAGE_CACHE_DIR", str(tmp_path / "fresh-cache"))  # a fresh machine: nothing cached
    monkeypatch.setattr(pools, "decode_batch", lambda *a, **k: pytest.fail("a shipped pool must not be re-sampled"))
    assert pools.sample_pool(task, model, tokenizer, config, progress=False) == before
    assert pools.pool_path(task, model, config).is_file()


def test_iterated_best_of_n_journals_each_round_and_resumes(tiny_checkpoints, tmp_path, caplog):
    """rounds = 2: round 2 samples its own pool from the round-1 model; a rerun with rounds = 3 resumes
    after round 2 (only round 3 is trained), and each round's adapter is kept in the cache."""
    from mage.training import round_dir

    _, base = tiny_checkpoints
    task = get_task("summary")
    config = TrainConfig(
        base=str(base),
        epochs=1,
        rounds=2,
        pool=PoolConfig(samples_per_prompt=2, max_prompts=3, batch_size=8, max_new_tokens=5),
    )
    out = train_adapter("summary", [1, 0], tmp_path / "two", config, command="test")
    info = json.loads((out / "mage_manifest.json").read_text())["info"]
    assert [r["round"] for r in info["rounds"]] == [1, 2] and "2 round(s)" in (out / "README.md").read_text()
    assert all((round_dir(task, [1.0, 0.0], config, k) / "adapter_config.json").is_file() for k in (1, 2))
    caplog.clear()
    caplog.set_level("INFO", logger="mage")
    three = TrainConfig(**{**config.__dict__, "rounds": 3})
    # a run with another round count is another run (its key differs): copy the journal of rounds 1-2 over to resume it
    import shutil

    for k in (1, 2):
        shutil.copytree(round_dir(task, [1.0, 0.0], config, k), round_dir(task, [1.0, 0.0], three, k))
    out3 = train_adapter("summary", [1, 0], tmp_path / "three", three, command="test")
    assert "resuming after round 2 of 3" in caplog.text
    assert [r["round"] for r in json.loads((out3 / "mage_manifest.json").read_text())["info"]["rounds"]] == [3]


def test_guided_samples_are_asked_for_one_objective_and_trained_on_the_plain_prompt(
    tiny_checkpoints, tmp_path, monkeypatch
):
    """--guide-samples: round 1 selects from the base pool plus samples drawn with each objective's steering hint
    (their own cache files; the base pool's key is unchanged), and the SFT rows use the plain prompt."""
    from dataclasses import replace

    from mage import tasks
    from mage.models import load_base
    from mage.pools import pool_path
    from mage.training import training_pool

    _, base = tiny_checkpoints
    plain = replace(tasks.TASKS["summary"], hints={}, proposals=None)
    hinted = replace(plain, hints={"quality": "In one line: {input}"})
    monkeypatch.setitem(tasks.TASKS, "summary", hinted)
    pool = PoolConfig(samples_per_prompt=2, max_prompts=3, batch_size=8, max_new_tokens=5)
    config = TrainConfig(base=str(base), epochs=1, guide_samples=1, pool=pool)
    model, tokenizer = load_base(str(base))
    assert hinted.messages("An article.", "quality")[0]["content"] == "In one line: An article."
    with pytest.raises(ValueError, match="no sampling hint for 'faithful'"):
        hinted.messages("An article.", "faithful")
    base_rows, union = training_pool(hinted, model, tokenizer, config)
    guided = union[len(base_rows) :]
    assert len(base_rows) == 6 and len(guided) == 3 and {r["hint"] for r in guided} == {"quality"}
    assert pool_path(hinted, model, pool) == pool_path(plain, model, pool)  # hints do not move the base pool
    assert pool_path(hinted, model, replace(pool, hint="quality")) != pool_path(hinted, model, pool)
    assert sft_examples(hinted, tokenizer, guided[:1]) == sft_examples(
        hinted, tokenizer, [{k: v for k, v in guided[0].items() if k != "hint"}]
    )
    out = train_adapter("summary", [0, 1], tmp_path / "guided", config, command="test")
    info = json.loads((out / "mage_manifest.json").read_text())["info"]
    assert info["n_pool"] == 6 and info["n_guided"] == 3
    assert "+ 3 guided (asked for one objective, or proposed)" in (out / "README.md").read_text()
    monkeypatch.setitem(tasks.TASKS, "summary", plain)
    with pytest.raises(ValueError, match="has no sampling hints or proposals; fix: use --guide-samples 0"):
        training_pool(plain, model, tokenizer, config)


def test_proposed_replies_join_the_guided_pool_scored_and_within_the_cap(tokenizer):
    """The summary task proposes the article's leads (the extractive end: faithful, not in its own words); they are
    pool rows like sampled ones, and one longer than the token cap is left out."""
    from mage.pools import proposal_rows
    from mage.tasks import lead_sentences

    article = "A fire burned 20 homes in Hill Top. Winds pushed it north. Police closed the highway. More rain is due."
    assert lead_sentences(article) == [
        "A fire burned 20 homes in Hill Top.",
        "A fire burned 20 homes in Hill Top. Winds pushed it north.",
        "A fire burned 20 homes in Hill Top. Winds pushed it north. Police closed the highway.",
    ]
    assert lead_sentences("One sentence only.") == ["One sentence only."]
    task = get_task("summary")
    rows = proposal_rows(task, tokenizer, PoolConfig(max_prompts=4, max_new_tokens=400))  # byte-level: long ids
    assert {r["id"] for r in rows} == {e.id for e in task.examples("train")[:4]} and len(rows) <= 12
    assert any(len(r["token_ids"]) > task.max_new_tokens for r in rows)  # so the default cap would cut some
    for row in rows:
        assert row["finished"] and len(row["token_ids"]) <= 400
        assert row["response"] in lead_sentences(row["input"]) and tokenizer.decode(row["token_ids"]) == row["response"]
        assert row["scores"]["faithful"] > 0.8  # the article's own sentences: every word supported
    assert proposal_rows(task, tokenizer, PoolConfig(max_prompts=4, max_new_tokens=5)) == []


def test_pool_stats_reports_and_ships_the_guided_pools(tiny_checkpoints, tmp_path, monkeypatch):
    """pool-stats --guide-samples: the hinted pools' means, what selection from the union can teach, and every pool
    shipped beside the checkpoints (a fresh machine restores them instead of sampling)."""
    from mage import training
    from mage.reports import pool_stats

    _, base = tiny_checkpoints
    small = PoolConfig(samples_per_prompt=2, max_prompts=3, batch_size=8, max_new_tokens=5)
    monkeypatch.setattr(training, "default_pool", lambda task: small)
    monkeypatch.setenv("MAGE_CHECKPOINTS", str(tmp_path / "ckpt"))
    result = pool_stats(
        "summary", base=str(base), guide_samples=1, normalize="none", ship=True, out=tmp_path / "p.json"
    )
    guided = result["guided"]
    assert guided["n_samples"] == 3 and set(guided["hints"]) == {"quality"} and guided["normalize"] == "none"
    assert set(guided["selection"]["separation"]) == {"faithful", "quality"}
    assert result["command"].endswith("--ship --guide-samples 1 --normalize none")
    shipped = sorted(p.name.split("-")[0] for p in (tmp_path / "ckpt" / "summary" / "pools").glob("*.jsonl.gz"))
    assert shipped == ["base", "guided"]
    assert json.loads((tmp_path / "p.json").read_text())["guided"]["n_samples"] == 3
