"""Run a function in a fresh process with a time limit: how a hanging plugin fails its own
cell instead of blocking the grid (a Python thread cannot be stopped; a process can).

The child is started with ``spawn`` (no state inherited but ``sys.path``), so it
finds the same installed plugins through their entry points; what it returns
or raises comes back through a pipe.
"""
from __future__ import annotations

import multiprocessing as mp
import traceback
from typing import Any, Callable

from toolkit.errors import ToolkitError


class CellTimeout(ToolkitError):
    """The cell ran past its time limit and was stopped."""


class WorkerDied(ToolkitError):
    """The process running the cell ended without an answer (killed, out of memory, crashed)."""


class CellError(Exception):
    """An exception raised in the child, re-raised here with its type name and message."""

    def __init__(self, type_name: str, message: str, detail: str, user_error: bool) -> None:
        super().__init__(message)
        self.type_name, self.detail, self.user_error = type_name, detail, user_error

    def __str__(self) -> str:
        return self.args[0]


def _child(conn: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        conn.send(("error", type(exc).__name__, str(exc), traceback.format_exc(), isinstance(exc, ToolkitError)))
    else:
        conn.send(("ok", result))
    finally:
        conn.close()


def call_isolated(fn: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a child process; ``CellTimeout`` after ``timeout`` seconds."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(child, fn, args, kwargs), daemon=True)
    process.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise CellTimeout(f"timed out after {timeout:g} s")
        try:
            message = parent.recv()
        except EOFError:
            process.join(5)
            raise WorkerDied(f"worker process died (exit code {process.exitcode})") from None
    finally:
        if process.is_alive():
            process.kill()
        process.join(5)
        parent.close()
    if message[0] == "ok":
        return message[1]
    _, type_name, text, detail, user_error = message
    raise CellError(type_name, text, detail, user_error)
