"""Grid sweeps: schema, resume from the journal, and one process = two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mage.grid import preference_grid
from mage.sweep import SweepConfig, run_sweep


def test_grids_match_the_spec():
    assert len(preference_grid(2)) == 11 and preference_grid(2)[3] == pytest.approx([0.3, 0.7])
    grid3 = preference_grid(3)
    assert len(grid3) == 13 and all(abs(sum(p) - 1) < 1e-9 for p in grid3)
    grid4 = preference_grid(4)  # beyond the papers: corners, leaning points and the uniform one
    assert len(grid4) == 9 and all(abs(sum(p) - 1) < 1e-9 for p in grid4) and [0.25] * 4 in grid4
    with pytest.raises(ValueError, match="at least 2 objectives"):
        preference_grid(1)


def _config(**kw):
    return SweepConfig(
        task="summary",
        methods=("rs", "bone"),
        prompts=2,
        samples=1,
        max_new_tokens=3,
        grid=((1.0, 0.0), (0.5, 0.5), (0.0, 1.0)),
        **kw,
    )


def test_sweep_writes_the_documented_schema_and_resumes(tiny_checkpoints, tmp_path):
    _, base = tiny_checkpoints
    out = tmp_path / "r.json"
    result = run_sweep(_config(base=str(base)), out)
    on_disk = json.loads(out.read_text())
    assert on_disk["task"] == "summary" and on_disk["objectives"] == ["faithful", "quality"]
    assert len(on_disk["reference_point"]) == 2 and len(on_disk["records"]) == 6
    record = on_disk["records"][0]
    assert {"method", "weights", "means", "stderr", "n_prompts", "coefficients", "strength"} <= set(record)
    assert set(on_disk["summary"]) == {"rs", "bone"} and "hypervolume" in on_disk["summary"]["bone"]
    assert on_disk["hashes"]["base_model"] and on_disk["settings"]["seed"] == 0
    # a re-run reads every point from the journal: nothing is generated again
    again = run_sweep(_config(base=str(base)), tmp_path / "r2.json")
    assert [r["wall_time_s"] for r in again["records"]] == [r["wall_time_s"] for r in result["records"]]


def test_a_point_depends_only_on_the_checkpoints_its_method_reads(tiny_checkpoints):
    """Retraining the explicit value models must not throw away cached Rewarded-Soup or implicit points."""
    from mage.methods import Engine
    from mage.sweep import checkpoint_hash
    from mage.values import value_dir

    _, base = tiny_checkpoints
    engine = Engine("summary", base=str(base))
    methods = ("rs", "bone", "mod", "react", "mage-i", "mage-e", "sft+e")
    before = {m: checkpoint_hash(engine, m) for m in methods}
    assert len(set(before.values())) == len(methods)  # the method is part of the key
    manifest = value_dir(engine.task, "explicit") / "faithful" / "mage_manifest.json"
    original = manifest.read_bytes()
    try:
        manifest.write_bytes(original + b"\n")  # a retrained explicit value model
        after = {m: checkpoint_hash(engine, m) for m in methods}
    finally:
        manifest.write_bytes(original)
    assert [m for m in methods if after[m] != before[m]] == ["mage-e", "sft+e"]


@pytest.mark.slow
def test_two_processes_give_the_same_results_as_one(tiny_checkpoints, tmp_path):
    _, base = tiny_checkpoints
    env = {**os.environ, "MAGE_CACHE_DIR": str(tmp_path / "cache2"), "OMP_NUM_THREADS": "1"}
    one = run_sweep(_config(base=str(base), seed=3), tmp_path / "one.json")
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "mage",
        "evaluate",
        "--task",
        "summary",
        "--methods",
        "rs,bone",
        "--prompts",
        "2",
        "--max-new-tokens",
        "3",
        "--seed",
        "3",
        "--base",
        str(base),
        "--out",
        str(tmp_path / "two.json"),
    ]
    # the CLI sweeps the full 11-point grid; compare the three shared points
    proc = subprocess.run(torchrun, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = json.loads((tmp_path / "two.json").read_text())
    index = {(r["method"], tuple(round(w, 6) for w in r["weights"])): r for r in two["records"]}
    for r in one["records"]:
        other = index[(r["method"], tuple(round(w, 6) for w in r["weights"]))]
        assert other["means"] == r["means"] and other["per_prompt"] == r["per_prompt"]


def test_choose_strength_scores_each_strength_on_validation(tiny_checkpoints, tmp_path):
    from mage.strength import choose_strength

    _, base = tiny_checkpoints
    choice = choose_strength(
        "summary", "mage-i", [2.0, 0.5], prompts=2, base=str(base), max_new_tokens=3, out=tmp_path / "c.json"
    )
    # strength 0 (the unguided policy) is always measured as the reference, never chosen
    assert [r["strength"] for r in choice["rows"]] == [0.0, 0.5, 2.0]
    best = max(choice["rows"][1:], key=lambda r: (r["mean_scalarised"], -r["strength"]))
    assert choice["chosen"] == best["strength"] and (tmp_path / "c.json").is_file()
    assert choice["gain_over_unguided"] == pytest.approx(best["mean_scalarised"] - choice["rows"][0]["mean_scalarised"])
    with pytest.raises(ValueError, match="no positive value"):
        choose_strength("summary", "mage-i", [0.0], prompts=2, base=str(base))


def test_chosen_strengths_follow_the_validation_choice(tmp_path, monkeypatch):
    from mage import strength, sweep

    monkeypatch.setenv("MAGE_RESULTS", str(tmp_path))
    (tmp_path / "summary-strength-mage-i.json").write_text(json.dumps({"chosen": 2.0}))
    (tmp_path / "summary-strength-sft+i.json").write_text(json.dumps({"chosen": 0.5}))
    got = strength.chosen_strengths("summary", ["rs", "mage-i", "ensemble-i", "sft+i", "mage-e"])
    assert got == {"mage-i": 2.0, "ensemble-i": 2.0, "sft+i": 0.5}  # ensemble at MAGE's strength; mage-e has no choice
    config = SweepConfig(task="summary", method_strengths=tuple(sorted(got.items())))
    assert config.strength_for("ensemble-i") == 2.0 and config.strength_for("mage-e") == 1.0
    # an override changes only that method's cache keys
    plain = SweepConfig(task="summary")
    assert sweep._point_key(config, "rs", [0.5, 0.5], "h") == sweep._point_key(plain, "rs", [0.5, 0.5], "h")
    assert sweep._point_key(config, "mage-i", [0.5, 0.5], "h") != sweep._point_key(plain, "mage-i", [0.5, 0.5], "h")


def test_compatibility_sweeps_sft_at_each_strength_and_mage(tiny_checkpoints, tmp_path, monkeypatch):
    from mage.compatibility import compatibility
    from mage.grid import corner_grid

    monkeypatch.setenv("MAGE_RESULTS", str(tmp_path))  # no chosen strength: MAGE runs at 1.0
    _, base = tiny_checkpoints
    assert corner_grid(2) == [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
    result = compatibility(
        "summary", "implicit", [0.0, 2.0], prompts=2, base=str(base), max_new_tokens=3, out=tmp_path / "c.json"
    )
    assert [(r["method"], r["strength"]) for r in result["runs"]] == [("sft+i", 0.0), ("sft+i", 2.0), ("mage-i", 1.0)]
    assert all(
        len(r["points"]) == 3 and set(r["spread"]) == {"faithful", "quality"} and min(r["spread"].values()) >= 0
        for r in result["runs"]
    )
    # strength 0 on a fixed policy: μ changes nothing, so the rewards do not move at all
    assert result["runs"][0]["mean_spread"] == 0.0
    assert json.loads((tmp_path / "c.json").read_text())["kind"] == "implicit"


def test_eval_seeds_are_distinct_and_fixed_by_position():
    from mage.evaluation import eval_seeds

    seeds = eval_seeds(40, 3, 7)
    assert len(seeds) == len(set(seeds)) == 120
    assert eval_seeds(10, 3, 7) == seeds[:30]  # a prefix of the prompts regenerates with the same seeds
    assert eval_seeds(2, 1, 0) == [0, 1000]


def test_a_sweep_resumed_with_another_number_of_processes_regenerates_nothing(tiny_checkpoints, tmp_path, monkeypatch):
    """Points journaled by one process are reused by rank 1 of a two-process re-run (its own journal is empty)."""
    import mage.sweep as sweep

    _, base = tiny_checkpoints
    first = run_sweep(_config(base=str(base)), tmp_path / "one.json")

    def must_not_run(*args, **kwargs):
        raise AssertionError("a recorded point was generated again")

    monkeypatch.setattr(sweep, "evaluate_point", must_not_run)
    monkeypatch.setattr(sweep, "barrier", lambda world: None)
    for rank in (1, 0):
        monkeypatch.setattr(sweep, "rank_world", lambda rank=rank: (rank, 2))
        result = run_sweep(_config(base=str(base)), tmp_path / "two.json")
    assert [r["means"] for r in result["records"]] == [r["means"] for r in first["records"]]


@pytest.mark.parametrize(
    "argv, expected", [([], None), (["--beta", "0.6"], None), (["--beta", "0.6", "--out", "x.json"], "x.json")]
)
def test_evaluate_passes_beta_and_out_through_to_the_sweep(monkeypatch, argv, expected):
    import mage.sweep
    from mage.cli import main

    seen = {}
    monkeypatch.setattr(mage.sweep, "run_sweep", lambda config, out: seen.update(config=config, out=out) or {})
    main(["evaluate", "--task", "summary", "--methods", "bone", *argv])
    assert (seen["out"] and seen["out"].name) == expected
    assert seen["config"].beta == (0.6 if argv else 0.7)


def test_the_beta_ablation_writes_beside_the_main_results_not_over_them(tiny_checkpoints, tmp_path, monkeypatch):
    """A sweep with other backbones than the default β goes to ``<task>-beta<β>.json`` unless told otherwise."""
    from mage.sweep import beta_files, results_file

    _, base = tiny_checkpoints
    monkeypatch.setenv("MAGE_RESULTS", str(tmp_path))
    assert results_file("summary") == tmp_path / "summary.json"
    assert results_file("summary", 0.8) == tmp_path / "summary-beta0.8.json"
    main = tmp_path / "summary.json"
    main.write_text("{}")
    run_sweep(
        SweepConfig(
            task="summary", methods=("rs",), prompts=1, max_new_tokens=2, grid=((1.0, 0.0),), base=str(base), beta=0.6
        )
    )
    assert main.read_text() == "{}"  # untouched
    assert beta_files("summary", tmp_path) == {0.6: tmp_path / "summary-beta0.6.json"}
    assert json.loads((tmp_path / "summary-beta0.6.json").read_text())["settings"]["beta"] == 0.6


def test_a_sweep_with_nothing_to_generate_leaves_the_journal_alone(tiny_checkpoints, tmp_path):
    """Re-summarising a finished sweep while another sweep appends to the same journal must not cut
    that sweep's half-written row (opening a journal for appending trims a torn last line)."""
    from mage.methods import Engine
    from mage.models import fingerprint_model
    from mage.sweep import _journal

    _, base = tiny_checkpoints
    config = _config(base=str(base))
    run_sweep(config, tmp_path / "a.json")
    journal = _journal(config, fingerprint_model(Engine("summary", base=str(base)).policy.model), 0)
    with open(journal, "a", encoding="utf-8") as f:
        f.write('{"key": "in flight", "means": ')  # another sweep, mid-write
    before = journal.read_bytes()
    again = run_sweep(config, tmp_path / "b.json")
    assert journal.read_bytes() == before and len(again["records"]) == 6


def test_a_fresh_clone_reuses_the_committed_results_file(tiny_checkpoints, tmp_path, monkeypatch):
    """No journals (a fresh machine): the points already in the results file being rewritten are reused,
    so adding a method does not regenerate the others; a file for another base model is not trusted."""
    import shutil

    import mage.sweep
    from mage.models import cache_dir

    _, base = tiny_checkpoints
    out = tmp_path / "r.json"
    first = run_sweep(_config(base=str(base)), out)
    shutil.rmtree(cache_dir() / "sweeps")  # the journals are gone; the committed results file stays
    generated = []
    real = mage.sweep.evaluate_point
    monkeypatch.setattr(
        mage.sweep,
        "evaluate_point",
        lambda engine, method, weights, **kw: generated.append(method) or real(engine, method, weights, **kw),
    )
    again = run_sweep(_config(base=str(base)), out)
    assert generated == [] and [r["key"] for r in again["records"]] == [r["key"] for r in first["records"]]
    assert [r["means"] for r in again["records"]] == [r["means"] for r in first["records"]]
    wider = run_sweep(SweepConfig(**{**_config(base=str(base)).__dict__, "methods": ("rs", "bone", "aba")}), out)
    assert generated == ["aba"] * 3 and len(wider["records"]) == 9  # only the new method's points were generated
    shutil.rmtree(cache_dir() / "sweeps")
    stale = json.loads(out.read_text())
    stale["hashes"]["base_model"] = "another-model"
    out.write_text(json.dumps(stale))
    generated.clear()
    run_sweep(_config(base=str(base)), out)
    assert len(generated) == 6  # a results file from another base model is regenerated, not reused


def test_every_location_is_package_relative_or_set_by_the_environment(monkeypatch, tmp_path):
    """Results written from another working directory land where the app reads them."""
    from mage import locations

    monkeypatch.chdir(tmp_path)
    for name in ("MAGE_RESULTS", "MAGE_BENCH", "MAGE_FIGURES", "MAGE_ASSETS", "MAGE_CHECKPOINTS"):
        monkeypatch.delenv(name, raising=False)
    root = locations.ROOT
    assert locations.results() == root / "assets" / "results" and locations.bench() == root / "assets" / "bench"
    assert locations.figures() == root / "assets" / "figures" and locations.checkpoints() == root / "checkpoints"
    monkeypatch.setenv("MAGE_RESULTS", str(tmp_path / "r"))
    from mage.sweep import results_file

    assert results_file("summary") == tmp_path / "r" / "summary.json"  # read at call time


def test_a_four_objective_task_runs_through_grid_sweep_service_and_plots(tiny_checkpoints, toy4, tmp_path, monkeypatch):
    """Any number of objectives works end to end: a toy task with four objectives, registered through the
    task and objective tables alone, gets a grid, a sweep, the service's replies and plot, and the figures."""
    from mage import tasks
    from mage.plots import all_figures
    from mage.service import Service

    _, base = tiny_checkpoints
    toy, names, summary = toy4, toy4.objectives, tasks.get_task("summary")
    monkeypatch.setenv("MAGE_RESULTS", str(tmp_path / "results"))
    assert toy.demo_prompts() == [
        e.input for e in summary.examples("test")[:3]
    ]  # examples of its own, no table to extend
    result = run_sweep(
        SweepConfig(task="toy4", methods=("base",), prompts=2, max_new_tokens=3, base=str(base)),
        tmp_path / "results" / "toy4.json",
    )
    assert len(result["records"]) == len(preference_grid(4)) == 9 and all(
        set(r["means"]) == set(names) for r in result["records"]
    )
    assert len(result["reference_point"]) == 4 and result["summary"]["base"]["hypervolume"] >= 0
    service = Service(base=str(base), device="cpu")
    replies, _ = service.generate("toy4", "A short text.", [1, 2, 3, 4], ["base"], max_new_tokens=3, greedy=True)
    assert set(replies[0].scores) == set(names)
    assert len(service.axis_pairs("toy4")) == 6  # every pair of the four objectives can be plotted
    figure = service.pareto_figure(
        "toy4",
        [1, 2, 3, 4],
        [replies[0].point("toy4", service.preference("toy4", [1, 2, 3, 4]), "A short text.")],
        axes=(2, 3),
    )
    assert figure.layout.xaxis.title.text == "gamma" and figure.layout.yaxis.title.text == "delta"
    written = all_figures(tmp_path / "results", tmp_path / "figures", png=False, bench_dir=tmp_path / "no-bench")
    assert len([p for p in written if "toy4-front-" in str(p)]) == 6


def test_corner_separation_is_the_own_corner_minus_the_others_paired_by_prompt():
    from mage.reports import corner_separation

    def record(method, weights, faithful, quality):
        return {
            "method": method,
            "weights": weights,
            "per_prompt": {"faithful": faithful, "quality": quality, "judge:faithful": faithful},
        }

    records = [
        record("still", [1.0, 0.0], [0.5, 0.7], [0.2, 0.4]),
        record("still", [0.0, 1.0], [0.5, 0.7], [0.2, 0.4]),
        record("moves", [1.0, 0.0], [0.9, 0.8], [0.1, 0.3]),
        record("moves", [0.0, 1.0], [0.4, 0.5], [0.6, 0.5]),
        record("half", [1.0, 0.0], [0.9, 0.8], [0.1, 0.3]),
    ]  # one corner only: not reported
    sep = corner_separation(records, ["faithful", "quality"])
    assert set(sep) == {"still", "moves"}
    assert (
        sep["still"]["faithful"] == {"mean": 0.0, "stderr": 0.0} and sep["still"]["quality"]["mean"] == 0.0
    )  # ignores μ: no separation
    assert sep["moves"]["faithful"]["mean"] == pytest.approx(0.4) and sep["moves"]["faithful"][
        "stderr"
    ] == pytest.approx(0.1)  # diffs 0.5, 0.3
    assert sep["moves"]["quality"]["mean"] == pytest.approx(0.35) and sep["moves"]["judge:faithful"][
        "mean"
    ] == pytest.approx(0.4)
    assert "judge:quality" not in sep["moves"]  # no judge measured, none reported


def test_the_corner_report_sweeps_every_corner_and_quotes_replies(tiny_checkpoints, tmp_path, monkeypatch):
    from mage.cli import main

    monkeypatch.setenv("MAGE_RESULTS", str(tmp_path))
    _, base = tiny_checkpoints
    main(
        [
            "corners",
            "--task",
            "summary",
            "--methods",
            "rs,bone",
            "--prompts",
            "2",
            "--samples",
            "1",
            "--base",
            str(base),
            "--device",
            "cpu",
        ]
    )
    report = json.loads((tmp_path / "summary-corners.json").read_text())
    assert [(c["method"], c["weights"]) for c in report["corners"]] == [
        (m, w) for m in ("rs", "bone") for w in ([1.0, 0.0], [0.0, 1.0])
    ]
    assert set(report["separation"]) == {"rs", "bone"} and set(report["separation"]["rs"]) >= {"faithful", "quality"}
    assert all(
        len(c["quotes"]) == 2 and set(c["fluency"]) == {"repetition", "degenerate", "cut_off"}
        for c in report["corners"]
    )
    assert report["command"].startswith("python -m mage corners --task summary") and report["scorers"]


def test_selection_separation_bounds_what_best_of_n_can_teach():
    """Objectives that trade off within a prompt give each expert different samples (separation 1); objectives
    that rise together give every expert the same samples (separation 0), however good they are."""
    from mage.reports import selection_report

    def pool(pairs):
        return [
            {"id": f"p{p}", "sample": s, "scores": {"a": a, "b": b}} for p in range(3) for s, (a, b) in enumerate(pairs)
        ]

    traded = selection_report(pool([(1.0, 0.0), (0.0, 1.0)]), ["a", "b"])
    assert traded["separation"] == {"a": 1.0, "b": 1.0}
    assert traded["experts"]["a"] == {"a": 1.0, "b": 0.0} and len(traded["backbones"]) == 2
    together = selection_report(pool([(1.0, 1.0), (0.0, 0.0)]), ["a", "b"])
    assert together["separation"] == {"a": 0.0, "b": 0.0} and together["experts"]["b"] == {"a": 1.0, "b": 1.0}
