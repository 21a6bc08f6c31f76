"""Atomic file writing and hashing: every file mage writes goes through here.

A reader never sees a half-written file: content goes to a temporary file in the same
folder, is flushed and fsynced, then renamed over the target (``os.replace`` is atomic on
POSIX). Folders are published the same way (build in ``<name>.tmp-<pid>``, then rename).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either the old or the new bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def clean_text(text: str) -> str:
    """Text safe to tokenise: bytes that were not UTF-8 (a command line's surrogate escapes) become
    U+FFFD; lone surrogates from a client become "?"."""
    return text.encode("utf-8", "surrogateescape" if _has_escapes(text) else "replace").decode("utf-8", "replace")


def _has_escapes(text: str) -> bool:
    return any(0xDC80 <= ord(c) <= 0xDCFF for c in text)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_journal(path: str | Path) -> list[dict]:
    """Rows of an append-only JSONL journal; torn lines (a run killed mid-write) are skipped."""
    rows = []
    path = Path(path)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_rows(f, rows: list[dict]) -> None:
    """Append rows to a journal opened with :func:`open_journal`, one JSON line each, and make them durable
    (fsync) before returning: a row a run reports as done survives a crash. Several processes may append
    to one journal: each call writes its rows in one ``write`` under an exclusive lock, first ending a
    line torn by a process killed mid-write, so rows never interleave and a torn line stays on its own
    (where :func:`read_journal` skips it)."""
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    fd = f.fileno()
    with _locked(fd):
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            payload = b"\n" + payload
        view = memoryview(payload)
        while view:  # O_APPEND: every write lands at the end
            view = view[os.write(fd, view) :]
        os.fsync(fd)


@contextmanager
def _locked(fd: int) -> Iterator[None]:
    """An exclusive advisory lock on an open file, held for the block (every journal writer takes it)."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def open_journal(path: str | Path):
    """Open a journal for :func:`append_rows` (binary, ``O_APPEND``, readable so it can check the last byte).
    A torn last line is left where it is: the next append starts a fresh line after it and
    :func:`read_journal` skips it, so opening never rewrites a file another process may be appending to."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a+b")


def write_jsonl_atomic(path: str | Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a scratch folder; on success it replaces ``path`` whole, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists() and not path.exists():
                os.replace(old, path)  # roll back: the previous version stays
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_dir(path: str | Path) -> None:
    """After a crash: if it fell between the two renames of :func:`atomic_dir`, put the previous
    version back; remove scratch folders that dead processes left behind."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    if not path.exists():
        for old in sorted(path.parent.glob(f".{path.name}.old-*")):
            os.replace(old, path)
            break
    for scratch in path.parent.glob(f".{path.name}.tmp-*"):
        pid = scratch.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(scratch, ignore_errors=True)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
