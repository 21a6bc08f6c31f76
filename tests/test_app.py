"""The app end to end on tiny checkpoints: handlers, the gradio_client API, concurrency, a real browser."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results_dir(tiny_checkpoints, tmp_path_factory):
    """A real (tiny) sweep of the summary task, so the app has cached results to plot."""
    from mage.sweep import SweepConfig, run_sweep

    _, base = tiny_checkpoints
    out = tmp_path_factory.mktemp("results")
    run_sweep(
        SweepConfig(task="summary", methods=("rs", "bone"), prompts=2, base=str(base), max_new_tokens=3),
        out / "summary.json",
    )
    return out


def _start_app(args: list[str], env: dict, port: int, log_path: Path) -> subprocess.Popen:
    """Start ``app.py`` and wait until it serves on ``port`` (raising with the log's tail if it does not)."""
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), *args], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=5)
            return proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("the app did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(1)


def _listening_hosts(port: int) -> set[str]:
    """The IPv4 addresses a socket listens on at ``port`` (Linux /proc/net/tcp: state 0A = LISTEN)."""
    hosts = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            hosts.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))  # little-endian hex
    return hosts


@pytest.fixture(scope="module")
def app_process(tiny_checkpoints, results_dir):
    _, base = tiny_checkpoints
    port = _free_port()
    env = {
        **os.environ,
        "MAGE_BASE": str(base),
        "MAGE_RESULTS": str(results_dir),
        "MAGE_CONCURRENCY": "4",
    }  # sessions really overlap
    for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        env.pop(name, None)
    proc = _start_app(["--port", str(port)], env, port, results_dir / "app.log")
    yield f"http://127.0.0.1:{port}", proc
    proc.terminate()
    proc.wait(timeout=30)


def test_the_app_serves_where_gradio_server_variables_say(app_process, tiny_checkpoints, results_dir):
    """A Space sets GRADIO_SERVER_NAME=0.0.0.0 (and may set the port): the app must listen there; without
    them it listens on 127.0.0.1 only (this machine)."""
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("reads the listening sockets from Linux's /proc/net/tcp")
    url, _ = app_process
    assert _listening_hosts(int(url.rsplit(":", 1)[1])) == {"127.0.0.1"}
    _, base = tiny_checkpoints
    port = _free_port()
    env = {
        **os.environ,
        "MAGE_BASE": str(base),
        "MAGE_RESULTS": str(results_dir),
        "GRADIO_SERVER_NAME": "0.0.0.0",
        "GRADIO_SERVER_PORT": str(port),
    }
    proc = _start_app([], env, port, results_dir / "app-space.log")
    try:
        assert _listening_hosts(port) == {"0.0.0.0"}
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=10).read().decode()
        assert "float32" in page  # the page states the device and dtype it runs in
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(app_process):
    return app_process[0]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _request(client, sliders, *, methods=("bone", "rs"), prompt="Storms hit the coast overnight.", tokens=6):
    """One /generate call on the summary task (greedy): the plain replies."""
    return client.predict(
        "summary", prompt, list(sliders), list(methods), 1.0, tokens, 1.0, 0.9, 0, True, api_name="/generate"
    )["replies"]


def _submit(client, sliders, methods, tokens, seed=0, greedy=True):
    return client.submit(
        "summary",
        "Storms hit the coast overnight.",
        list(sliders),
        list(methods),
        1.0,
        tokens,
        1.0,
        0.9,
        seed,
        greedy,
        api_name="/generate",
    )


def test_api_generates_side_by_side_in_plain_values(server):
    from gradio_client import Client

    client = Client(server, verbose=False)
    out = client.predict(
        "summary",
        "Storms hit the coast overnight.",
        [0.3, 0.7],
        ["bone", "rs"],
        1.0,
        6,
        1.0,
        0.9,
        0,
        True,
        api_name="/generate",
    )
    assert out["preference"] == pytest.approx([0.3, 0.7])
    bone, rs = out["replies"]
    assert (bone["label"], rs["label"]) == ("Bone Soup", "Rewarded Soup") and bone["done"] and not bone["error"]
    assert set(bone["scores"]) == {"faithful", "quality"} and rs["coefficients"] == pytest.approx(
        [0.3, 0.7]
    )  # plain values, not update dicts
    with pytest.raises(Exception, match="prompt is empty"):
        client.predict("summary", "  ", [1.0, 1.0], ["bone"], 1.0, 4, 1.0, 0.9, 0, True, api_name="/generate")
    with pytest.raises(Exception, match="all zero"):
        client.predict("summary", "x", [0.0, 0.0], ["bone"], 1.0, 4, 1.0, 0.9, 0, True, api_name="/generate")


def test_every_operation_has_a_named_endpoint(server):
    from gradio_client import Client

    client = Client(server, verbose=False)
    named = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/generate", "/task_objectives", "/weights", "/pareto", "/grid_point"} <= named
    shown = client.predict("summary", 0.2, 0.6, 0.0, api_name="/weights")  # sliders → the normalised preference
    assert "0.25" in shown and "0.75" in shown


def test_sixteen_concurrent_sessions_no_errors_no_cross_talk_bounded_memory(app_process):
    """16 gradio_client sessions with distinct preferences at once (4 handled at a time, the rest queued;
    decoded one after another on the service's compute thread): every reply equals the same request
    made alone, and the server's memory stays bounded."""
    from gradio_client import Client

    url, proc = app_process
    prefs = [[i / 15, 1 - i / 15] for i in range(16)]
    alone = {}
    for p in (prefs[0], prefs[5], prefs[10], prefs[15]):
        alone[tuple(p)] = [r["text"] for r in _request(Client(url, verbose=False), p)]
    clients = [Client(url, verbose=False) for _ in prefs]
    started = time.time()
    jobs = [_submit(c, p, ["bone", "rs"], 6) for c, p in zip(clients, prefs)]
    together = {}
    for job, p in zip(jobs, prefs):
        replies = job.result(timeout=600)["replies"]
        together[tuple(p)] = [r["text"] for r in replies]
        assert not [r for r in replies if r["error"]]  # no errors
    elapsed = time.time() - started
    assert {p: together[p] for p in alone} == alone  # no cross-talk
    rss = _peak_rss_mb(proc.pid)
    print(f"\n16 sessions: {elapsed:.1f} s wall, server peak RSS {rss:.0f} MB")
    assert rss < 4096


def test_a_burst_beyond_the_queue_is_refused_clearly(app_process):
    """The queue holds 16 waiting requests: a burst of 28 is served in part and refused in part with a
    'queue is full' message, and what is served is right."""
    from gradio_client import Client

    url, _ = app_process
    client = Client(url, verbose=False)
    jobs = [
        _submit(client, [0.5, 0.5], ["bone", "rs", "aba", "base"], 80, seed=i, greedy=False) for i in range(28)
    ]  # long sampled replies: the queue fills up
    served, refused = 0, []
    for job in jobs:
        try:
            replies = job.result(timeout=900)["replies"]
            assert len(replies) == 4 and all(r["text"] and not r["error"] for r in replies)  # four replies, none empty
            served += 1
        except AssertionError:
            raise
        except Exception as err:  # gradio_client raises for a refused job
            refused.append(str(err))
    assert served >= 16 and refused and served + len(refused) == 28
    assert all("queue" in msg.lower() or "full" in msg.lower() for msg in refused), refused[:3]
    print(f"\nburst of 28: {served} served, {len(refused)} refused")


def test_browser_moves_a_slider_generates_and_updates_the_plot(server, tmp_path):
    from .browser import drive

    out = Path(os.environ.get("MAGE_SCREENSHOTS", tmp_path))
    seen = drive(server, out, task="summary", slider=0.2)
    assert (
        "faithful 0.17, quality 0.83" in seen["weights"] and seen["weights"] != seen["weights_before"]
    )  # slider 0.2 and 1.0, normalised
    assert seen["grid_point"].startswith("faithful") and seen["slider_after_grid"] == float(
        seen["grid_point"].split(",")[0].split()[-1]
    )
    assert seen["heads"][:3] == ["MAGE (implicit guidance)", "Bone Soup", "Rewarded Soup"]
    assert len(seen["texts"]) == 3 and seen["plot_changed"] and seen["live_in_plot"]
    # letting go of the slider regenerated: Bone Soup's λ = B⁻¹μ changed with μ
    assert "λ" in seen["lambda_after_release"] and seen["lambda_after_release"] != seen["lambda_before_release"]
    assert all(Path(p).stat().st_size > 10_000 for p in seen["screenshots"])


def test_browser_interrupting_a_run_never_mixes_runs_or_tasks(server, tmp_path):
    """Letting go of a slider mid-run stops the old run: only the new run's three replies reach the plot;
    switching task mid-run leaves nothing of the old task on the page."""
    from .browser import interrupt

    out = Path(os.environ.get("MAGE_SCREENSHOTS", tmp_path))
    seen = interrupt(server, out)
    assert "Generating" in seen["status_at_release"]  # the slider was let go while the first run streamed
    assert seen["stars_after_release"] == seen["stars_before"] + 3, (
        seen
    )  # the new run's 3 replies; the stopped run added none
    assert "faithful 0.17, quality 0.83" in seen["weights_after_release"]
    after = seen["after_switch"]
    # the page's event stream: the clicked run was stopped by the release (no plot), the released run drew its
    # plot, and the run clicked before the switch was stopped too, by the switch
    clicked, released, switched = seen["runs"]
    assert [r["plotted"] for r in (clicked, released, switched)] == [False, True, False], seen["runs"]
    assert clicked["end"] < released["end"] and switched["end"] < seen["switched_at"] + 3000, seen["runs"]
    trace = {"after": after, "messages": seen["messages_since_switch"]}  # the page's event stream, ms from the switch
    assert after["prompt"] == "" and after["visible_replies"] == 0 and after["stars"] == 0, trace
    assert (
        after["plot_title"].startswith("assistant")
        and "Generating" not in after["status"]
        and "Error" not in after["status"]
    ), trace
    assert all(Path(p).stat().st_size > 10_000 for p in seen["screenshots"])


def test_every_handler_that_needs_the_session_gets_the_request(tiny_checkpoints, monkeypatch):
    """Gradio passes the caller's request only to a parameter before any ``*args``: every event whose handler
    needs the session (to supersede a run, stop it, switch task, clear the page) must get it as gradio calls it,
    or the service cannot tell one session's runs apart and a release or a task switch never stops a run."""
    import importlib

    from gradio.helpers import special_args

    _, base = tiny_checkpoints
    monkeypatch.setenv("MAGE_BASE", str(base))
    sys.path.insert(0, str(ROOT))
    app = importlib.import_module("app")
    marker, reached = object(), {}
    for block_fn in app.demo.fns.values():
        name = getattr(block_fn.fn, "__name__", None)
        if name in ("run", "on_release", "stop", "switch_task", "clear_page"):
            inputs, *_ = special_args(block_fn.fn, [None] * len(block_fn.inputs), request=marker)
            reached.setdefault(name, []).append(any(x is marker for x in inputs))
    assert reached == {
        "run": [True, True],  # the Generate button and Enter in the prompt box
        "on_release": [True] * app.MAX_OBJECTIVES,
        "stop": [True],
        "switch_task": [True],
        "clear_page": [True],
    }


def test_plot_axes_handlers_choose_the_projection(tiny_checkpoints, monkeypatch):
    """The handlers called directly: the axes radio maps to objective pairs and the plot follows it."""
    import importlib

    _, base = tiny_checkpoints
    monkeypatch.setenv("MAGE_BASE", str(base))
    sys.path.insert(0, str(ROOT))
    app = importlib.import_module("app")
    assert app.choose_axes("assistant", "helpful × humorous") == [0, 2]
    assert app.choose_axes("assistant", "not a pair") == [0, 1]
    assert app.axis_choices("summary")["visible"] is False and app.axis_choices("assistant")["visible"] is True
    fig = app.pareto("assistant", [], [1, 2], None, 1.0, 1.0, 1.0)
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("harmless", "humorous")
    # a pair left over from a three-objective task falls back to the first pair on a two-objective task
    fig = app.pareto("summary", [], [1, 2], None, 1.0, 1.0, 1.0)
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("faithful", "quality")


def test_a_huge_request_body_is_refused_at_the_door(server):
    import json
    import urllib.error

    body = json.dumps({"data": ["summary", "x" * (2 << 20)], "fn_index": 0, "session_hash": "huge"}).encode()
    request = urllib.request.Request(
        f"{server}/gradio_api/queue/join", data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.URLError) as err:  # 413, or the connection closed while the client still sends
        urllib.request.urlopen(request, timeout=30)
    assert getattr(err.value, "code", None) == 413 or isinstance(
        err.value.reason, (BrokenPipeError, ConnectionResetError)
    )


def test_handlers_keep_order_caps_and_the_plot(tiny_checkpoints, monkeypatch):
    """Score bars in the task's objective order whatever the values; the reply cap follows the task; a bad
    request leaves the plot alone and says why (no exception, so no error badge and no traceback)."""
    import importlib

    _, base = tiny_checkpoints
    monkeypatch.setenv("MAGE_BASE", str(base))
    sys.path.insert(0, str(ROOT))
    app = importlib.import_module("app")
    bars = app.score_bars(["helpful", "harmless", "humorous"], {"humorous": 0.9, "helpful": 0.1, "harmless": 0.5})
    assert [bars.index(n) for n in ("helpful", "harmless", "humorous")] == sorted(
        bars.index(n) for n in ("helpful", "harmless", "humorous")
    )
    updates = app.switch_task("summary")
    assert (
        updates[app.MAX_OBJECTIVES + 4]["value"] == 96
    )  # max new tokens: the summary task's own cap, not the assistant's 48
    out = list(app.run("summary", "   ", ["bone"], 1.0, 8, 1.0, 0.9, 0, True, [], [0, 1], 1.0, 1.0, 1.0))
    assert len(out) == 1 and "Not started" in out[0][1] and "prompt is empty" in out[0][1]
    assert isinstance(out[0][0], type(app.gr.skip()))  # the plot is not replaced


def test_a_run_draws_nothing_once_the_page_switched_task(tiny_checkpoints, monkeypatch):
    """The handlers called directly, in the orders the browser race produced: a run clicked just before a
    task switch that starts after it draws nothing, and a run whose page switches task mid-stream stops
    drawing at once (its final replies and plot never land on the new task's page)."""
    import importlib
    from types import SimpleNamespace

    _, base = tiny_checkpoints
    monkeypatch.setenv("MAGE_BASE", str(base))
    sys.path.insert(0, str(ROOT))
    app = importlib.import_module("app")
    args = (
        "summary",
        "Storms hit the coast overnight.",
        ["base", "rs"],
        1.0,
        64,
        1.0,
        0.9,
        0,
        True,
        [],
        [0, 1],
        1.0,
        1.0,
        1.0,
    )
    request = SimpleNamespace(session_hash="race-1")
    app.switch_task("assistant", request)
    late = list(app.run(*args, request=request))  # clicked on the summary page, started after the switch
    assert len(late) == 1 and all(isinstance(x, type(app.gr.skip())) for x in late[0])
    request = SimpleNamespace(session_hash="race-2")
    run = app.run(*args, request=request)
    first = next(run)
    assert "Generating" in first[1] or first[1].startswith("Loading")
    app.switch_task("assistant", request)
    assert list(run) == []  # nothing more is drawn: no replies, no status, no summary plot
    own = list(
        app.run(*args, request=SimpleNamespace(session_hash="race-3"))
    )  # an undisturbed run still ends with its plot and replies
    assert own[-1][0].layout.title.text.startswith("summary") and own[-1][1] == ""


def test_tasks_and_methods_registered_after_import_run_through_the_handlers(tiny_checkpoints, monkeypatch, request):
    """The app is built before a four-objective task and a new guided method exist; registered through the
    tables alone, they reach the page's menus at load, get their sliders, weights and replies from the
    handlers, and a run ends with the plot and a score bar per objective."""
    import importlib

    from mage import methods

    _, base = tiny_checkpoints
    monkeypatch.setenv("MAGE_BASE", str(base))
    sys.path.insert(0, str(ROOT))
    app = importlib.import_module("app")
    names = request.getfixturevalue("toy4").objectives  # registered after the app was built
    row = methods.Method("aba+i", methods.Merge("aba"), methods.Guidance("implicit"), "ABA + implicit guidance")
    monkeypatch.setitem(methods.METHODS, "aba+i", row)
    task_menu, method_menu = app.registered_choices()
    assert "toy4" in task_menu["choices"] and ("ABA + implicit guidance", "aba+i") in method_menu["choices"]
    updates = app.switch_task("toy4")
    sliders = updates[: app.MAX_OBJECTIVES]
    assert [s["label"] for s in sliders if s["visible"]] == list(names)  # four sliders, in the task's order
    weights = [1.0, 1.0, 2.0, 0.0] + [1.0] * (app.MAX_OBJECTIVES - 4)  # hidden sliders are ignored
    assert app.show_weights("toy4", *weights) == (
        "Preference μ (normalised): **alpha** 0.25, **beta** 0.25, **gamma** 0.50, **delta** 0.00"
    )
    settings = (8, 1.0, 0.9, 0, True, [], [2, 3])
    out = list(app.run("toy4", "A short text.", ["base"], 1.0, *settings, *weights))
    plot, status, live = out[-1][:3]
    assert status == "" and len(live) == 1 and live[0]["scores"].keys() == set(names)
    assert (plot.layout.xaxis.title.text, plot.layout.yaxis.title.text) == ("gamma", "delta")
    assert all(f'score-name">{n}<' in out[-1][5]["value"] for n in names)  # one bar per objective
    out = list(app.run("summary", "Storms hit the coast.", ["aba+i"], 1.0, *settings[:-1], [0, 1], 0.3, 0.7))
    head = out[-1][3]["value"]  # its label, its merge coefficients λ and its scores: a reply, not an error
    assert head.startswith("### ABA + implicit guidance\nλ = (+0.30, +0.70)") and "quality **" in head
    assert out[-1][1] == ""  # no notice
