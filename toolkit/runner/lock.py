"""One writer per run folder: ``compare`` and ``merge`` hold ``RUN/.lock`` while they write.

Two processes on one folder would train the same dense model twice and interleave
their rows. The lock is an ``fcntl.flock`` on the file, so the kernel drops it the
moment its holder dies, however it dies (kill -9 included): a lock left behind is
never stale, and no pid that the system reused can pass for the holder. The file
also names the holder (host, pid, start time, command) for the one line a second
process prints; a file whose holder is gone is taken over, and said so.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import platform
import sys
import threading
from pathlib import Path
from typing import Iterator

from toolkit.errors import ToolkitError, UsageError

LOCK = ".lock"
_held: dict[tuple[int, Path], int] = {}  # (thread, folder) -> depth: a call that holds a folder may enter it again


class FolderLocked(ToolkitError):
    """Another process is writing this run folder."""


def run_folder(path: Path, option: str = "--out") -> Path:
    """``path`` as a run folder, made if missing; a file there is the user's mistake, not a crash."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file; name a folder (a new one, or a run folder to resume)")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def hold(folder: Path, command: str, option: str = "--out") -> Iterator[dict]:
    """Hold ``folder``'s lock for this block; yields what the previous holder left, if it died holding it."""
    folder = run_folder(Path(folder), option).resolve()
    key = (threading.get_ident(), folder)
    if key in _held:
        _held[key] += 1
        try:
            yield {}
        finally:
            _held[key] -= 1
        return
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLocked(f"{folder} is in use by {describe(_read(fd))}; wait for it to end "
                               "or use another folder") from None
        left = _read(fd)  # a holder that died: its record stays, its lock went with it
        if left:
            print(f"toolkit: {folder}: taking over from {describe(left)}, which ended without releasing it",
                  file=sys.stderr)
        _write(fd, {"host": platform.node(), "pid": os.getpid(), "started": _started(),
                    "command": command})
        _held[key] = 1
        try:
            yield left
        finally:
            del _held[key]
            os.ftruncate(fd, 0)  # an empty file: released cleanly (removing it would race a newcomer's open)
    finally:
        os.close(fd)  # closing drops the flock


def describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return (f"'toolkit {holder.get('command', '?')}' (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"since {holder.get('started', '?')})")


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode(errors="replace")
    try:
        holder = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _write(fd: int, holder: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder) + "\n").encode())
    os.fsync(fd)


def _started() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
