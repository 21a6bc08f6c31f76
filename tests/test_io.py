"""Atomic writes and journals: nothing half-written is ever read, a torn journal heals."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from mage.io import append_rows, atomic_dir, open_journal, read_journal, recover_dir, write_json_atomic


def test_atomic_write_has_the_usual_mode_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "r.json"
    write_json_atomic(target, {"x": 1})
    write_json_atomic(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_a_torn_journal_line_is_skipped_and_appending_goes_on(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"key": 1}\n{"key": 2}\n{"key": 3, "half')  # killed mid-write
    assert [r["key"] for r in read_journal(path)] == [1, 2]
    with open_journal(path) as f:
        append_rows(f, [{"key": 4}])
    assert [r["key"] for r in read_journal(path)] == [1, 2, 4]


def test_a_line_torn_by_another_writer_stays_on_its_own(tmp_path):
    """A process killed mid-row while this one has the journal open: the next row starts on a new line."""
    path = tmp_path / "j.jsonl"
    with open_journal(path) as f:
        append_rows(f, [{"key": 1}])
        with open(path, "ab") as other:
            other.write(b'{"key": 2, "ha')  # the other writer dies here
        append_rows(f, [{"key": 3}, {"key": 4}])
    assert [r["key"] for r in read_journal(path)] == [1, 3, 4]


_WRITER = """
import sys
from mage.io import append_rows, open_journal
with open_journal(sys.argv[1]) as f:
    for i in range(int(sys.argv[3])):
        append_rows(f, [{"writer": sys.argv[2], "i": i, "pad": "x" * 20000}])  # rows larger than any write buffer
"""


def test_two_processes_appending_to_one_journal_never_interleave_rows(tmp_path):
    path = tmp_path / "j.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, "150"]) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    lines = path.read_bytes().splitlines()
    rows = read_journal(path)
    assert len(lines) == len(rows) == 300  # every line is one whole row
    for name in ("a", "b"):
        assert [r["i"] for r in rows if r["writer"] == name] == list(range(150))


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

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = tmp_path / f".ckpt.tmp-{dead}"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x")
    alive = tmp_path / f".ckpt.tmp-{os.getppid()}"  # a live process's scratch is left alone
    alive.mkdir()
    with atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "a.txt").write_text("new")
    assert not stale.exists() and alive.exists() and (tmp_path / "ckpt" / "a.txt").read_text() == "new"
