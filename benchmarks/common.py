"""Shared pieces of the benchmark scripts: machine description, tables, CSV, timing, a toy trainer.

Benchmarks measure; they are not tests. Every table states the machine and the
thread count it was measured with, because CPU latencies mean nothing without them.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import platform
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn


RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("torch", "segmentation_models_pytorch", "torch-pruning", "nni", "onnxruntime", "thop")
SHORT = {"segmentation_models_pytorch": "smp", "torch-pruning": "torch_pruning"}

warnings.filterwarnings("ignore")  # TP/NNI/thop warn about every traced op; the tables are the output


# -- machine ---------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's marketing name: latencies are only comparable on the same one."""
    from toolkit.workbench.device import cpu_name

    return cpu_name()


def versions() -> dict[str, str]:
    from toolkit.runner.rows import installed_versions

    return installed_versions({SHORT.get(name, name): name for name in PACKAGES}, missing="absent")


def machine(threads: int) -> str:
    """One line naming CPU, cores, torch threads and library versions."""
    libs = " ".join(f"{k} {v}" for k, v in versions().items())
    return (f"{cpu_model()}, {os.cpu_count()} cores, torch threads {threads}, "
            f"Python {platform.python_version()}; {libs}")


def read_rows(run_dir: Path) -> list[dict]:
    """The rows of a `toolkit compare` run folder; a folder without them ends the script with one line."""
    from toolkit.errors import ToolkitError
    from toolkit.results.store import iter_rows

    try:
        return list(iter_rows(run_dir))
    except ToolkitError as exc:
        sys.exit(f"error: {exc}")


# -- command line ------------------------------------------------------------------------
def parser(script: str, description: str) -> argparse.ArgumentParser:
    """The options every script shares: --full, --threads, --csv, --runs, --warmup."""
    p = argparse.ArgumentParser(prog=f"benchmarks/{script}.py", description=description)
    p.add_argument("--full", action="store_true", help="research scale (hours on a laptop CPU)")
    p.add_argument("--threads", type=int, default=1, help="torch (and onnxruntime) intra-op threads (default 1)")
    p.add_argument("--runs", type=int, default=None, help="timed forward passes per latency (median reported)")
    p.add_argument("--warmup", type=int, default=None, help="untimed forward passes before timing")
    p.add_argument("--csv", type=Path, default=RESULTS / f"{script}.csv", help="where the CSV goes")
    return p


def csv_list(kind: Callable[[str], Any]) -> Callable[[str], list]:
    """argparse type for a comma list (``"0.25,0.5"``)."""
    return lambda text: [kind(t.strip()) for t in text.split(",") if t.strip()]


def setup(args: argparse.Namespace) -> str:
    """Fix the thread count and seed; return the machine line to print."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    line = machine(args.threads)
    print(f"Machine: {line}\n", flush=True)
    return line


# -- output ------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts), floats to 3 significant digits."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(rows: Sequence[dict], path: Path, machine_line: str) -> None:
    """All columns of all rows, plus the machine line, so a CSV stands on its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*columns, "machine"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "machine": machine_line})
    print(f"\nCSV: {path}", file=sys.stderr)


def pct(fraction: float) -> float:
    return round(100.0 * fraction, 2)


# -- timing ------------------------------------------------------------------------------
@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    elapsed = [0.0]
    start = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed[0] = time.perf_counter() - start


def has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def ort_latency_ms(model: nn.Module, x: torch.Tensor, threads: int, runs: int, warmup: int) -> float:
    """Median onnxruntime CPU latency of ``model`` exported with the toolkit's exporter
    (``toolkit.results.runtimes``, as every results row's ``latency_ms_onnxruntime``)."""
    from toolkit.results.runtimes import open_sessions, time_interleaved

    session = open_sessions(model, x, ["onnxruntime"], threads)["onnxruntime"]
    if isinstance(session, str):
        raise RuntimeError(session)
    return time_interleaved({"model": session.timed}, runs, warmup)["model"].median_ms


def _with_threads(fn: Callable[..., Any], args: tuple, threads: int) -> Any:
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    return fn(*args)


def in_subprocess(fn: Callable[..., Any], args: tuple, timeout: float, threads: int = 1) -> tuple[str, Any]:
    """Run ``fn(*args)`` in a fresh process: ``("ok", value)``, ``("error", line)`` or ``("timeout", seconds)``.

    A library call that may hang (Torch-Pruning on MA-Net) or crash the
    interpreter must not take the benchmark with it. ``fn`` must be importable.
    """
    from toolkit.runner.isolate import CellError, CellTimeout, call_isolated

    try:
        return "ok", call_isolated(_with_threads, fn, args, threads, timeout=timeout)
    except CellTimeout:
        return "timeout", timeout
    except CellError as exc:  # the error is the measurement
        return "error", f"{exc.type_name}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    except Exception as exc:  # noqa: BLE001 - WorkerDied: the process crashed
        return "error", str(exc)

