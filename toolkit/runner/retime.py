"""The quiet re-timing pass: every model of a run timed again, in one process, interleaved.

A cell's own latency is measured while the grid's other work runs, so the same
pruned shape can read x1.5 in one run and x2.0 in another. Once a grid's cells
have finished, this pass loads each dense model and every model pruned from it
(``toolkit.pruning.serialize.load_model``: nothing but tensors is unpickled),
opens each in every runtime, and times them round-robin
(``toolkit.results.runtimes.time_interleaved``): background load then falls
on all of them alike. A group of one dense model and its cells is timed
together (the speed-ups compare within it) and then released, so a large grid
needs the memory of one group. Each row gets ``retimed_*`` columns: median,
interquartile range and speed-up per runtime; the in-grid ``latency_*``
columns stay as they were, the rough numbers.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Sequence

import torch

from toolkit.errors import ToolkitError, UsageError
from toolkit.results.runtimes import (
    RUNTIMES, Session, Timing, open_sessions, runtimes_on, time_interleaved,
)
from toolkit.results.store import finished, write_results
from toolkit.runner.cell import dense_id
from toolkit.runner.stages import write_json


def _side(row: dict[str, Any], default: int) -> int:
    shape = str(row.get("latency_input") or "")
    return int(shape.split("x")[-1]) if shape else default


def _group_columns(sessions: dict[str, dict[str, Session | str]], timings: dict[tuple[str, str], Timing],
                   dense_key: str, cell_key: str, rounds: int) -> dict[str, Any]:
    """One row's ``retimed_*`` columns from its group's timings."""
    columns: dict[str, Any] = {"retimed_rounds": rounds}
    for runtime, session in sessions[cell_key].items():
        dense_session = sessions[dense_key].get(runtime)
        if not isinstance(session, Session) or not isinstance(dense_session, Session):
            reason = session if isinstance(session, str) else dense_session
            columns[f"retimed_{runtime}_skipped"] = reason
            continue
        before, after = timings[(dense_key, runtime)], timings[(cell_key, runtime)]
        columns.update({
            f"retimed_ms_{runtime}_dense": before.median_ms, f"retimed_ms_{runtime}_pruned": after.median_ms,
            f"retimed_ms_{runtime}_iqr_dense": before.iqr_ms, f"retimed_ms_{runtime}_iqr_pruned": after.iqr_ms,
            f"retimed_{runtime}_speedup": before.median_ms / after.median_ms,
            f"retimed_{runtime}_device": session.description,
        })
    return columns


def retime_run(
    out_dir: Path,
    runtimes: Sequence[str] = ("eager", "onnxruntime", "openvino"),
    threads: int = 1,
    rounds: int = 10,
    warmup: int = 3,
    size: int | None = None,
    cells: Sequence[str] = (),
) -> dict[str, dict[str, Any]]:
    """Time every finished model of the run folder again and write ``retimed_*`` columns into each
    row (its ``result.json`` and ``results.jsonl``); returns every row. ``size`` defaults to the
    input side the cells were timed at. ``cells`` (shell patterns on the cell id or the method)
    times only the matching cells, with their dense models; a re-timed row loses the
    ``retimed_*`` columns of an earlier pass, so its columns come from one pass."""
    from toolkit.pruning.serialize import load_model

    out_dir = Path(out_dir)
    rows = finished(out_dir)
    ok = [r for r in rows.values() if r.get("status") == "ok" and _chosen(r, cells)]
    if cells and not ok:
        raise UsageError(f"no finished cell of {out_dir} matches {', '.join(cells)} (patterns on the cell id or the "
                         f"method, e.g. 'fpgm*' or '*__r800')")
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in ok:
        groups.setdefault(dense_id(r["arch"], r["dataset"], r.get("seed", 0)), []).append(r)
    for dense_key, members in groups.items():
        device = "cuda" if str(members[0].get("device", "cpu")).startswith("cuda") else "cpu"
        wanted = runtimes_on(runtimes, device)
        side = size or _side(members[0], 128)
        torch.manual_seed(0)
        x = torch.randn(1, 3, side, side)
        sessions: dict[str, dict[str, Session | str]] = {}
        for key, path in [(dense_key, out_dir / "dense" / dense_key / "dense.pt"),
                          *((r["cell"], out_dir / "cells" / r["cell"] / "pruned.pt") for r in members)]:
            try:
                sessions[key] = open_sessions(load_model(path), x, wanted, threads)
            except ToolkitError as exc:  # a missing or unreadable file: that row says so, the others are timed
                sessions[key] = {rt: str(exc) for rt in wanted}
        calls = {(key, rt): s.timed for key, by_runtime in sessions.items()
                 for rt, s in by_runtime.items() if isinstance(s, Session)}
        timings = time_interleaved(calls, rounds, warmup, threads) if calls else {}
        for r in members:
            for stale in [k for k in r if k.startswith("retimed_")]:
                del r[stale]
            r.update(_group_columns(sessions, timings, dense_key, r["cell"], rounds))
            write_json(r, out_dir / "cells" / r["cell"] / "result.json")
        del sessions, calls
    write_results(out_dir, rows)
    return rows


def _chosen(row: dict[str, Any], patterns: Sequence[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(str(row.get(key, "")), p) for p in patterns for key in ("cell", "method"))


def runtimes_of(run_dir: Path) -> dict[str, Any]:
    """The latency settings a run folder was made with (``grid.toml``'s ``[run]``), for
    ``toolkit report --retime``; a folder without one gets the defaults."""
    from toolkit.config import RunConfig, read_toml

    defaults = RunConfig()
    path = Path(run_dir) / "grid.toml"
    run = read_toml(path).get("run", {}) if path.is_file() else {}
    names = run.get("latency_runtimes", defaults.latency_runtimes)
    return {"runtimes": [n for n in names if n in RUNTIMES], "threads": run.get("latency_threads", defaults.latency_threads),
            "rounds": max(10, run.get("latency_runs", defaults.latency_runs)), "size": run.get("latency_size")}
