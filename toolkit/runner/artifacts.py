"""A stage's folder as plain bytes, so a worker that does not share the driver's disk can
send its files back and the driver writes them where the local executor would have.

Everything a stage leaves is kept except the resume checkpoints (``*_last.pt``):
they resume an interrupted training on the machine where it ran, and that
scratch folder is gone once the task returns.
"""
from __future__ import annotations

from pathlib import Path

from toolkit.atomic import write_bytes

LEFT_BEHIND = ("*_last.pt", "*.tmp")


def pack(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """``{relative path: bytes}`` of the files worth keeping under ``folder``."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not any(path.match(p) for p in (*LEFT_BEHIND, *skip))
    }


def unpack(files: dict[str, bytes], folder: Path) -> None:
    """Write each file under ``folder``, atomically (a killed driver never leaves half a file)."""
    for name, data in files.items():
        path = folder / name
        if folder.resolve() not in path.resolve().parents:
            raise ValueError(f"{name!r} lies outside {folder}")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)
