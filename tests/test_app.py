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
    run_sweep(SweepConfig(task="summary", methods=("rs", "bone"), prompts=2, base=str(base), max_new_tokens=3), out / "summary.json")
    return out


@pytest.fixture(scope="module")
def server(tiny_checkpoints, results_dir):
    _, base = tiny_checkpoints
    port = _free_port()
    env = {**os.environ, "MAGE_BASE": str(base), "MAGE_RESULTS": str(results_dir), "MAGE_CONCURRENCY": "4"}  # sessions really overlap
    log = open(results_dir / "app.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("the app did not start:\n" + (results_dir / "app.log").read_text()[-3000:])
            time.sleep(1)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _request(client, sliders, *, methods=("bone", "rs"), prompt="Storms hit the coast overnight.", tokens=6):
    """One /generate call on the summary task (greedy): the final texts and heads of the shown slots."""
    out = client.predict("summary", prompt, list(methods), 1.0, tokens, 1.0, 0.9, 0, True, *sliders, 1.0, api_name="/generate")
    plot, status, *slots = out
    return [(slots[3 * i]["value"] if isinstance(slots[3 * i], dict) else slots[3 * i], slots[3 * i + 1]["value"] if isinstance(slots[3 * i + 1], dict) else slots[3 * i + 1])
            for i in range(len(methods))]


def test_api_generates_side_by_side(server):
    from gradio_client import Client

    client = Client(server, verbose=False)
    shown = _request(client, [0.3, 0.7])
    heads = [h for h, _ in shown]
    assert "Bone Soup" in heads[0] and "Rewarded Soup" in heads[1]
    assert "faithful" in heads[0] and "concise" in heads[0] and "λ = (" in heads[1]  # scores and coefficients shown
    with pytest.raises(Exception, match="prompt is empty"):
        client.predict("summary", "  ", ["bone"], 1.0, 4, 1.0, 0.9, 0, True, 1.0, 1.0, 1.0, api_name="/generate")
    with pytest.raises(Exception, match="all zero"):
        client.predict("summary", "x", ["bone"], 1.0, 4, 1.0, 0.9, 0, True, 0.0, 0.0, 1.0, api_name="/generate")


def test_concurrent_sessions_never_see_each_others_merges(server):
    from gradio_client import Client

    prefs = [[1.0, 0.0], [0.0, 1.0], [0.4, 0.6], [0.8, 0.2]]
    alone = [_request(Client(server, verbose=False), p) for p in prefs]
    clients = [Client(server, verbose=False) for _ in prefs]
    jobs = [c.submit("summary", "Storms hit the coast overnight.", ["bone", "rs"], 1.0, 6, 1.0, 0.9, 0, True, *p, 1.0, api_name="/generate")
            for c, p in zip(clients, prefs)]
    together = []
    for job in jobs:
        _, _, *slots = job.result(timeout=300)
        together.append([(s["value"] if isinstance(s, dict) else s) for s in slots[1:6:3]])
    assert together == [[text for _, text in a] for a in alone]


def test_browser_moves_a_slider_generates_and_updates_the_plot(server, tmp_path):
    from .browser import drive

    out = Path(os.environ.get("MAGE_SCREENSHOTS", tmp_path))
    seen = drive(server, out, task="summary", slider=0.2)
    assert "faithful" in seen["weights"] and seen["weights"] != seen["weights_before"]
    assert seen["grid_point"].startswith("faithful") and seen["slider_after_grid"] == float(seen["grid_point"].split(",")[0].split()[-1])
    assert seen["heads"][:3] == ["MAGE (implicit guidance)", "Bone Soup", "Rewarded Soup"]
    assert len(seen["texts"]) == 3 and seen["plot_changed"] and seen["live_in_plot"]
    assert all(Path(p).stat().st_size > 10_000 for p in seen["screenshots"])
