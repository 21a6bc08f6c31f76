"""The service layer the app calls: guardrails with clear messages, per-request merges."""

from __future__ import annotations

import pytest

from mage.service import Service


@pytest.fixture
def service(tiny_checkpoints):
    _, base = tiny_checkpoints
    return Service(base=str(base))


def test_generate_side_by_side_with_scores(service):
    replies, notices = service.generate(
        "summary", "Some news today.", [0.3, 0.7], ["bone", "rs", "base"], max_new_tokens=4, greedy=True
    )
    assert [r.method for r in replies] == ["bone", "rs", "base"] and not notices
    assert all(set(r.scores) == {"faithful", "quality"} for r in replies)
    assert replies[0].coefficients == pytest.approx([0.0, 1.0])  # (0.3, 0.7) is backbone 1's own row
    assert replies[1].coefficients == pytest.approx([0.3, 0.7])


@pytest.mark.parametrize(
    "prompt, sliders, kwargs, message",
    [
        ("   ", [1, 1], {}, "prompt is empty"),
        ("x", [0, 0], {}, "all zero"),
        ("x", [1], {}, "2 objectives"),
        ("x", [1, 1], {"temperature": 0.0}, "temperature"),
        ("x", [1, 1], {"top_p": 2.0}, "top_p"),
        ("x", [1, 1], {"seed": -1}, "seed -1 is out of range"),
    ],
)
def test_guardrails_name_the_problem(service, prompt, sliders, kwargs, message):
    with pytest.raises(ValueError, match=message):
        service.generate("summary", prompt, sliders, ["bone"], max_new_tokens=2, **kwargs)


def test_a_prompt_over_the_token_limit_is_refused_before_any_model_loads(service):
    from mage.limits import PROMPT_CHARS

    for prompt, message in (
        (
            "😀" * 4000,
            r"16,0\d\d tokens .* the limit is 4\d\d tokens .*context of 512 minus 40 new tokens.*fix: shorten it",
        ),
        ("x" * (PROMPT_CHARS + 1), r"32,001 characters; the limit is 32,000 characters"),
    ):
        with pytest.raises(ValueError, match=message):
            service.generate("summary", prompt, [1, 1], ["base"], max_new_tokens=40)
    assert service._engines == {}  # measured with the tokenizer alone
    replies, _ = service.generate(
        "summary", "word " * 60, [1, 1], ["base"], max_new_tokens=2
    )  # a long but allowed prompt runs
    assert replies[0].error == ""


def test_missing_checkpoints_are_reported_per_method(service):
    replies, _ = service.generate("assistant", "Hello", [1, 1, 1], ["rs", "base"], max_new_tokens=2, greedy=True)
    assert "are not trained" in replies[0].error and replies[0].text == ""
    assert replies[1].error == ""


def test_stream_grows_token_by_token_and_ends_with_the_generate_result(service):
    kwargs = dict(max_new_tokens=6, greedy=True)
    snapshots = [
        ([(r.text, r.done) for r in replies])
        for replies, _ in service.stream("summary", "Some news today.", [0.5, 0.5], ["bone", "base"], **kwargs)
    ]
    final, _ = service.generate("summary", "Some news today.", [0.5, 0.5], ["bone", "base"], **kwargs)
    assert snapshots[-1] == [(r.text, True) for r in final]
    first_done = next(i for i, s in enumerate(snapshots) if s[0][1])
    assert first_done >= 1 and all(not s[1][1] for s in snapshots[: first_done + 1])  # methods run in turn
    texts = [s[0][0] for s in snapshots[:first_done]]
    assert all(len(a) <= len(b) for a, b in zip(texts, texts[1:]))  # the first reply only grows while it streams


def test_concurrent_requests_with_different_preferences_equal_the_same_requests_alone(service):
    from concurrent.futures import ThreadPoolExecutor

    requests = [
        ([1.0, 0.0], "bone"),
        ([0.0, 1.0], "bone"),
        ([0.3, 0.7], "rs"),
        ([0.9, 0.1], "rs"),
        ([0.5, 0.5], "bone"),
        ([0.2, 0.8], "base"),
    ]

    def one(req):
        replies, _ = service.generate(
            "summary", "Storms hit the coast overnight.", req[0], [req[1]], max_new_tokens=8, greedy=True
        )
        return replies[0].text, replies[0].coefficients

    alone = [one(r) for r in requests]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(one, requests * 2))
    assert together == alone * 2
    assert len({c for _, c in [(t, tuple(c)) for t, c in alone]}) > 2  # the requests did merge differently


def test_settings_out_of_range_and_caps_are_explained(service):
    with pytest.raises(ValueError, match="guidance strength 9.0 is out of range"):
        service.generate("summary", "x", [1, 1], ["bone"], max_new_tokens=2, strength=9.0)
    with pytest.raises(ValueError, match="max new tokens 0 is out of range"):
        service.generate("summary", "x", [1, 1], ["bone"], max_new_tokens=0)
    replies, notices = service.generate(
        "summary", "x", [1, 1], ["base", "rs", "bone", "aba", "base"], max_new_tokens=2, greedy=True
    )
    assert len(replies) == 4 and any("first 4 of the 5" in n for n in notices)
    req = service.validate("summary", "x", [1, 1], ["base"], max_new_tokens=10_000)
    assert req.sampling.max_new_tokens == 256 and any("capped at 256" in n for n in req.notices)


def test_a_consumer_that_leaves_frees_the_compute_thread(service, monkeypatch):
    import threading
    import time

    engine = service.engine("summary")
    steps = []
    original = engine.generate

    def counting(*args, on_token=None, **kwargs):
        def count(ids):
            steps.append(ids)
            on_token(ids)

        return original(*args, on_token=count, **kwargs)

    monkeypatch.setattr(engine, "generate", counting)
    stream = service.stream("summary", "Storms hit the coast overnight.", [1, 1], ["base"], max_new_tokens=256)
    next(stream)  # decoding has started on the compute thread
    stream.close()  # the user went away
    start = time.time()
    assert service.run(threading.current_thread).name.startswith(
        "mage-compute"
    )  # queued behind the decode: runs once it stopped
    assert time.time() - start < 30
    assert len(steps) < 50  # the decode stopped at the next token, not at the 256-token cap


def test_all_torch_work_runs_on_one_thread(service, monkeypatch):
    """Loading, merging, decoding and scoring all run on the one compute thread (one OpenMP team)."""
    import threading

    from mage import service as service_module

    seen = set()
    engine = service.engine("summary")
    original_generate, original_score = engine.generate, service_module.score_all

    def generate(*args, **kwargs):
        seen.add(("generate", threading.current_thread().name))
        return original_generate(*args, **kwargs)

    def score_all(*args, **kwargs):
        seen.add(("score", threading.current_thread().name))
        return original_score(*args, **kwargs)

    monkeypatch.setattr(engine, "generate", generate)
    monkeypatch.setattr(service_module, "score_all", score_all)
    for method in ("base", "bone"):
        replies, _ = service.generate(
            "summary", "Storms hit the coast overnight.", [1, 2], [method], max_new_tokens=3, greedy=True
        )
        assert replies[0].scores and not replies[0].error
    names = {name for _, name in seen}
    assert (
        {kind for kind, _ in seen} == {"generate", "score"}
        and len(names) == 1
        and names.pop().startswith("mage-compute")
    )


def test_plot_without_cached_results_still_shows_live_points(service, monkeypatch, tmp_path):
    monkeypatch.setenv("MAGE_RESULTS", str(tmp_path))  # nothing cached
    live = [
        {"task": "summary", "method": "bone", "scores": {"faithful": 0.5, "quality": 0.7}},
        {"task": "assistant", "method": "rs", "scores": {"helpful": 0.5, "harmless": 0.9, "humorous": 0.1}},
    ]  # another task's point is skipped
    fig = service.pareto_figure("summary", [1, 1], live)
    assert "mage evaluate --task summary" in fig.layout.title.text
    assert [t.name for t in fig.data] == ["your sample: Bone Soup"]


def test_default_strength_is_the_validation_choice(service, monkeypatch, tmp_path):
    import json

    monkeypatch.setenv("MAGE_RESULTS", str(tmp_path))
    assert service.default_strength("summary") == 1.0  # nothing chosen yet
    (tmp_path / "summary-strength-mage-i.json").write_text(json.dumps({"chosen": 2.0}))
    assert service.default_strength("summary") == 2.0 and service.default_strength("assistant") == 1.0


def test_fronts_measured_with_other_scorers_are_labelled_and_never_mixed_with_live_points(
    service, monkeypatch, tmp_path
):
    """Issue 19: a results file from earlier objectives (no signatures, other objectives, or an older
    version of a scorer) is named as such, and today's samples are not drawn beside it."""
    import json

    from mage.objectives import get_objective
    from mage.pools import scorer_signatures
    from mage.tasks import get_task

    monkeypatch.setenv("MAGE_RESULTS", str(tmp_path))
    record = {"method": "bone", "weights": [0.5, 0.5], "means": {"faithful": 0.6, "quality": 0.4}}
    live = [{"task": "summary", "method": "bone", "scores": {"faithful": 0.5, "quality": 0.7}}]
    current = {
        "task": "summary",
        "objectives": ["faithful", "quality"],
        "scorers": scorer_signatures(get_task("summary")),
        "records": [record],
    }
    for stale, why in [
        ({**current, "scorers": None}, "earlier versions of faithful, quality"),
        ({**current, "scorers": {**current["scorers"], "quality": "quality|old|1|0"}}, "earlier versions of quality"),
        (
            {
                **current,
                "objectives": ["faithful", "concise"],
                "records": [{**record, "means": {"faithful": 0.6, "concise": 0.4}}],
            },
            "other objectives (faithful, concise)",
        ),
    ]:
        (tmp_path / "summary.json").write_text(json.dumps(stale))
        assert why in service.stale_fronts("summary")
        fig = service.pareto_figure("summary", [1, 1], live)
        assert why in fig.layout.title.text and "python -m mage evaluate --task summary" in fig.layout.title.text
        assert (
            not [t for t in fig.data if t.name == "your sample: Bone Soup"] or "other objectives" in why
        )  # never beside old fronts
    (tmp_path / "summary.json").write_text(json.dumps(current))
    assert service.stale_fronts("summary") is None
    fig = service.pareto_figure("summary", [1, 1], live)
    assert "your sample: Bone Soup" in [t.name for t in fig.data]
    versions = [get_objective(n).version for n in ("faithful", "quality")]
    assert f"scored by faithful v{versions[0]}, quality v{versions[1]}" in fig.layout.title.text  # the version shown
    sized = {**current, "records": [{**record, "n_prompts": 60, "samples_per_prompt": 2}]}
    (tmp_path / "summary.json").write_text(json.dumps(sized))
    assert "60 prompts × 2 sample(s)" in service.pareto_figure("summary", [1, 1], live).layout.title.text


def test_a_newer_run_of_the_same_session_stops_the_older_one_at_its_next_token(service):
    """A slider let go mid-run: the new run must not wait behind the old one on the compute thread."""
    older = service.stream(
        "summary", "Some news today.", [1, 1], ["base"], session="s1", max_new_tokens=256, greedy=True
    )
    next(older)  # the older run is decoding on the compute thread
    newer, _ = service.generate("summary", "Other news.", [1, 3], ["base"], session="s1", max_new_tokens=3, greedy=True)
    assert newer[0].done and not newer[0].error
    *_, (replies, _) = older
    assert replies[0].error == "cancelled"  # stopped, not run to its 256 tokens
    other = service.stream("summary", "Some news today.", [1, 1], ["base"], session="s2", max_new_tokens=4, greedy=True)
    service.generate(
        "summary", "Other news.", [1, 1], ["base"], session="s3", max_new_tokens=2, greedy=True
    )  # another session: no effect
    *_, (replies, _) = other
    assert not replies[0].error


def test_stop_cancels_only_the_sessions_run(service):
    run = service.stream(
        "summary", "Some news today.", [1, 1], ["base", "rs"], session="s4", max_new_tokens=256, greedy=True
    )
    next(run)
    assert service.cancel("s4") and not service.cancel("nobody")
    assert service.settle("s4", 10.0) and service.settle("nobody", 0.0)  # its decode stops at the next token
    rest = list(run)
    assert len(rest) == 1  # a stopped run streams no more tokens: only its final, cancelled state
    replies, _ = rest[0]
    assert [r.error for r in replies] == ["cancelled", "cancelled"]  # the method in flight and the one still to come
    assert not service.cancel("s4")  # nothing left to stop


def test_the_page_belongs_to_the_newest_run_of_the_task_it_shows(service):
    """Who may draw on a session's page: the newest run, and never a run of a task the page no longer shows
    (a click submitted just before a task switch that starts after it)."""
    first = service.claim("p1", "summary")
    assert service.owns("p1", first)
    second = service.claim("p1", "summary")
    assert service.owns("p1", second) and not service.owns(
        "p1", first
    )  # a newer run supersedes the older one's drawing
    run = service.stream("summary", "Some news today.", [1, 1], ["base"], session="p1", max_new_tokens=256, greedy=True)
    next(run)
    service.show("p1", "assistant")  # the task switch: the run in flight stops and loses the page
    assert not service.owns("p1", second) and service.settle("p1", 10.0)
    assert list(run)[-1][0][0].error == "cancelled"
    assert service.claim("p1", "summary") is None  # a summary run starting after the switch draws nothing
    third = service.claim("p1", "assistant")
    assert service.owns("p1", third) and not service.owns("p1", None)
    assert service.owns("p2", service.claim("p2", "summary"))  # a session never switched: any task may take its page
    service.show("p2", "summary")
    assert service.owns("p2", service.claim("p2", "summary"))


def test_a_new_service_resolves_transformers_before_any_thread_does():
    """transformers' lazy module is not safe to initialise from two threads (the soak's first request failed
    with "cannot import name 'AutoTokenizer'" while the app preloaded models): a fresh service resolves the
    classes on the thread that creates it, before its compute or preload threads exist."""
    import subprocess
    import sys

    code = (
        "import sys, threading\n"
        "from mage.service import Service\n"
        "lazy = 'transformers' in sys.modules and 'AutoTokenizer' in vars(sys.modules['transformers'])\n"
        "Service(device='cpu')\n"
        "t = vars(sys.modules['transformers'])\n"
        "print(lazy, all(n in t for n in ('AutoTokenizer', 'AutoModelForCausalLM', 'PreTrainedTokenizerFast')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]  # unresolved on import; resolved once the service exists
