"""Kill -9 at a random moment: every file is old or new, never broken, and the run resumes to the same result."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _start(code: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float = 240) -> bool:
    """SIGKILL ``delay`` seconds after ``ready()`` holds; False if the process finished first."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.time() < deadline, "the run never got going"
        time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


SWEEP = """
from pathlib import Path
from mage.sweep import SweepConfig, run_sweep
run_sweep(SweepConfig(task="summary", methods=("rs", "bone"), prompts=2, max_new_tokens=4, base={base!r},
                      grid=((1.0, 0.0), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7), (0.0, 1.0))), Path({out!r}))
"""


@pytest.mark.parametrize("seed", [0, 1])
def test_killed_sweep_leaves_no_broken_file_and_resumes_to_the_same_result(tiny_checkpoints, tmp_path, seed):
    _, base = tiny_checkpoints
    env = {**os.environ, "MAGE_CACHE_DIR": str(tmp_path / "cache")}
    reference = tmp_path / "reference.json"
    ref = _start(
        SWEEP.format(base=str(base), out=str(reference)), {**env, "MAGE_CACHE_DIR": str(tmp_path / "cache-ref")}
    )
    assert ref.wait(timeout=600) == 0, ref.stderr.read()[-2000:]
    out = tmp_path / "results.json"
    out.write_text('{"old": true}')  # a previous results file must survive or be replaced whole
    journals = tmp_path / "cache" / "sweeps" / "summary"
    proc = _start(SWEEP.format(base=str(base), out=str(out)), env)
    killed = _kill_when(
        proc, lambda: any(p.stat().st_size > 0 for p in journals.glob("*.jsonl")), random.Random(seed).uniform(0, 1.5)
    )
    json.loads(out.read_text())  # old or new, never torn
    again = _start(SWEEP.format(base=str(base), out=str(out)), env)
    assert again.wait(timeout=600) == 0, again.stderr.read()[-2000:]
    got, want = json.loads(out.read_text()), json.loads(reference.read_text())
    assert [(r["method"], r["weights"], r["means"]) for r in got["records"]] == [
        (r["method"], r["weights"], r["means"]) for r in want["records"]
    ]
    assert killed or proc.returncode == 0


TRAIN = """
from mage.pools import PoolConfig
from mage.training import TrainConfig, train_adapter
train_adapter("summary", [0.5, 0.5], {out!r}, TrainConfig(base={base!r}, epochs=3,
              pool=PoolConfig(samples_per_prompt=2, max_prompts=4, batch_size=8, max_new_tokens=6)),
              command="kill test")
"""


def test_killed_training_keeps_the_old_checkpoint_whole_and_reruns(tiny_checkpoints, tmp_path):
    import shutil

    from mage.adapters import load_adapter
    from mage.models import fingerprint_model, fingerprint_tokenizer, load_base
    from mage.policy import ingredient_dir
    from mage.tasks import get_task

    _, base = tiny_checkpoints
    model, tokenizer = load_base(str(base))
    fps = dict(base_fingerprint=fingerprint_model(model), tokenizer_fingerprint=fingerprint_tokenizer(tokenizer))
    out = tmp_path / "adapter"
    shutil.copytree(ingredient_dir(get_task("summary"), "experts") / "faithful", out)  # the old checkpoint
    old = json.loads((out / "mage_manifest.json").read_text())["files"]
    for delay in (0.5, 3.0, 6.0):
        proc = _start(TRAIN.format(base=str(base), out=str(out)), dict(os.environ))
        _kill_when(proc, lambda: True, delay)
        load_adapter(out, **fps)  # verified: old or new, never broken
    proc = _start(TRAIN.format(base=str(base), out=str(out)), dict(os.environ))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    assert json.loads((out / "mage_manifest.json").read_text())["files"] != old
    load_adapter(out, **fps)
    assert not list(tmp_path.glob(".adapter.*"))  # no scratch left behind once a run completes
