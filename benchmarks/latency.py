"""Re-measure the latency of every model a `toolkit compare` run saved, interleaved, on each runtime.

`compare` times each cell when it finishes, so a cell that ran while the
machine was busy gets a slower number than its neighbours. This script runs
the toolkit's quiet re-timing pass (`toolkit.runner.retime`, the same as
`toolkit report RUN --retime`, which it also writes into the run's rows): the
dense model and every cell's saved model are loaded and timed round-robin on
each runtime, one pass of each per round, `--runs` rounds, median and
interquartile range per model. Background load then hits every model alike and
the speedups are comparable. Run it on a quiet machine.

Run:  .venv/bin/python benchmarks/latency.py runs/magnetic-tile
      (input size defaults to what the run recorded)
"""
from __future__ import annotations

import sys
from pathlib import Path

from common import markdown, parser, setup, write_csv
from toolkit.results.runtimes import RUNTIMES, check_runtimes
from toolkit.runner.retime import retime_run

SHORT = {"eager": "torch", "onnxruntime": "ort", "openvino": "openvino", "onnxruntime_gpu": "ort_gpu"}


def columns(runtimes: list[str]) -> list[str]:
    timed = [f"{SHORT[r]}_{c}" for r in runtimes for c in ("ms", "iqr_ms", "speedup")]
    # torch_ms / speedup keep the names of this script's first tables
    timed = [{"torch_speedup": "speedup"}.get(c, c) for c in timed]
    return ["arch", "dataset", "seed", "pruner", "kind", "target", "input", *timed, "recorded_ms", "recorded_speedup",
            "flop_speedup"]


def measured(row: dict, runtimes: list[str], which: str) -> dict:
    """A table line's timing columns from a re-timed row (``which``: dense or pruned)."""
    out = {}
    for r in runtimes:
        ms = row.get(f"retimed_ms_{r}_{which}")
        out[f"{SHORT[r]}_ms"], out[f"{SHORT[r]}_iqr_ms"] = ms, row.get(f"retimed_ms_{r}_iqr_{which}")
        out["speedup" if r == "eager" else f"{SHORT[r]}_speedup"] = (
            (1.0 if which == "dense" else row.get(f"retimed_{r}_speedup")) if ms is not None else None)
    return out


def main() -> None:
    p = parser("latency", __doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="folder written by `toolkit compare`")
    p.add_argument("--size", type=int, default=None, help="input side in px (default: the run's latency input)")
    p.add_argument("--runtimes", default="eager,onnxruntime,openvino", help=f"comma list of: {', '.join(RUNTIMES)}")
    p.set_defaults(csv=None)
    args = p.parse_args()
    if not (args.run_dir / "cells").is_dir():
        sys.exit(f"error: {args.run_dir} has no cells/: pass the folder a `toolkit compare` run wrote")
    runtimes = check_runtimes([r.strip() for r in args.runtimes.split(",") if r.strip()])
    machine_line = setup(args)
    rows = [r for r in retime_run(args.run_dir, runtimes, args.threads, args.runs or 20, args.warmup or 3,
                                  size=args.size).values() if r.get("status") == "ok"]
    if not rows:
        sys.exit(f"error: no finished cells in {args.run_dir}")
    for r in rows:
        for rt in runtimes:
            if r.get(f"retimed_{rt}_skipped"):
                print(f"{r['cell']}: {rt} skipped: {r[f'retimed_{rt}_skipped']}")

    table = []
    groups = dict.fromkeys((r["arch"], r["dataset"], r.get("seed", 0)) for r in rows)
    for arch, dataset, seed in groups:
        members = sorted((r for r in rows if (r["arch"], r["dataset"], r.get("seed", 0)) == (arch, dataset, seed)),
                         key=lambda r: (r["plugin"], r["target_kind"], r["target"]))
        first = members[0]
        side = first["latency_input"].split("x")[-1] if not args.size else args.size
        table.append({"arch": arch, "dataset": dataset, "seed": seed, "pruner": "(dense)", "target": "",
                      "input": f"{side}x{side}", **measured(first, runtimes, "dense"),
                      "recorded_ms": first["latency_ms_dense"], "recorded_speedup": 1.0, "flop_speedup": 1.0})
        for r in members:
            table.append({
                "arch": arch, "dataset": dataset, "seed": seed, "pruner": r["plugin"], "kind": r["kind"],
                "target": f"{r['target_kind']}={r['target']:g}", "input": f"{side}x{side}",
                **measured(r, runtimes, "pruned"), "recorded_ms": r["latency_ms_pruned"],
                "recorded_speedup": r["latency_speedup"], "flop_speedup": r["flops_dense"] / r["flops_pruned"],
            })
    print(markdown(table, columns(runtimes)))
    write_csv(table, args.csv or Path(__file__).parent / "results" / f"latency-{args.run_dir.name}.csv", machine_line)


if __name__ == "__main__":
    main()
