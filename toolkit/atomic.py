"""Atomic file writes: a run killed mid-write (Ctrl-C, kill -9, a lost machine) leaves the old
file or the new one, never half of one. Every writer of a run folder goes through here."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` fills ``PATH.tmp`` (the whole name kept, so ``a.json`` and ``a.csv`` never
    share one), which then replaces ``path``; a failed write leaves no ``.tmp`` behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(obj: Any, path: str | Path) -> Path:
    """``obj`` as indented JSON (what JSON cannot hold written as its ``str``)."""
    return write_text(path, json.dumps(obj, indent=2, default=str))
