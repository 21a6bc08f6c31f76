"""Atomic writes and journals: nothing half-written is ever read, a torn journal heals."""
from __future__ import annotations

import json
import os
import stat

import pytest

from mage.io import atomic_dir, open_journal, read_journal, recover_dir, write_json_atomic


def test_atomic_write_has_the_usual_mode_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "r.json"
    write_json_atomic(target, {"x": 1})
    write_json_atomic(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_torn_journal_line_is_cut_before_appending(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"key": 1}\n{"key": 2}\n{"key": 3, "half')  # killed mid-write
    assert [r["key"] for r in read_journal(path)] == [1, 2]
    with open_journal(path) as f:
        f.write(json.dumps({"key": 4}) + "\n")
    assert [r["key"] for r in read_journal(path)] == [1, 2, 4]


def test_atomic_dir_replaces_whole_and_keeps_the_old_version_on_error(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("v2")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_crash_between_the_renames_is_recovered(tmp_path):
    target = tmp_path / "ckpt"
    old = tmp_path / ".ckpt.old-123"
    old.mkdir()
    (old / "a.txt").write_text("v1")
    recover_dir(target)
    assert (target / "a.txt").read_text() == "v1" and not old.exists()


def test_scratch_folders_of_dead_processes_are_cleaned_up(tmp_path):
    import subprocess
    import sys

    from mage.io import atomic_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".ckpt.tmp-{dead}"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x")
    alive = tmp_path / f".ckpt.tmp-{os.getppid()}"  # a live process's scratch is left alone
    alive.mkdir()
    with atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "a.txt").write_text("new")
    assert not stale.exists() and alive.exists() and (tmp_path / "ckpt" / "a.txt").read_text() == "new"
