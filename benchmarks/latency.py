"""Re-measure the latency of every model a `toolkit compare` run saved, interleaved.

`compare` times each cell when it finishes, so a cell that ran while the
machine was busy gets a slower number than its neighbours. This script loads
the dense model and every cell's saved model (`toolkit.pruning.serialize.load_model`:
nothing but tensors is unpickled) and times them round-robin: one forward pass
of each model per round, `--runs` rounds, median per model. Background load
then hits every model alike and the speedups are comparable. Run it on a quiet
machine.

Run:  .venv/bin/python benchmarks/latency.py runs/magnetic-tile
      (input size and threads default to what the run recorded)
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from common import markdown, parser, setup, write_csv
from toolkit.pruning.serialize import load_model

COLUMNS = ["arch", "dataset", "seed", "pruner", "kind", "target", "input", "torch_ms", "speedup", "recorded_ms",
           "recorded_speedup", "flop_speedup"]


def read_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "results.jsonl"
    if not path.is_file():
        sys.exit(f"error: {path} not found: pass the folder a `toolkit compare` run wrote")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def interleaved_ms(models: dict[str, torch.nn.Module], x: torch.Tensor, runs: int, warmup: int) -> dict[str, float]:
    """Median ms per model, timing one pass of each model per round."""
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for round_ in range(warmup + runs):
            for key, model in models.items():
                start = time.perf_counter()
                model(x)
                if round_ >= warmup:
                    times[key].append((time.perf_counter() - start) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def dense_of(row: dict) -> str:
    """The dense folder a cell started from (``toolkit.runner.cell.Cell.dense_id``)."""
    from toolkit.pruning.targets import Target
    from toolkit.runner.cell import Cell

    return Cell(row["arch"], row["dataset"], row["plugin"], Target("sparsity", 0.5), row.get("seed", 0)).dense_id


def main() -> None:
    p = parser("latency", __doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="folder written by `toolkit compare`")
    p.add_argument("--size", type=int, default=None, help="input side in px (default: the run's latency input)")
    p.set_defaults(csv=None)
    args = p.parse_args()
    rows = [r for r in read_rows(args.run_dir) if r.get("status") == "ok"]
    if not rows:
        sys.exit(f"error: no finished cells in {args.run_dir}")
    machine_line = setup(args)
    side = args.size or int(str(rows[0]["latency_input"]).split("x")[-1])
    runs, warmup = args.runs or 20, args.warmup or 3

    models: dict[str, torch.nn.Module] = {}
    for r in rows:
        dense_key = dense_of(r)
        if dense_key not in models:
            models[dense_key] = load_model(args.run_dir / "dense" / dense_key / "dense.pt").eval()
        models[r["cell"]] = load_model(args.run_dir / "cells" / r["cell"] / "pruned.pt").eval()
    x = torch.randn(1, 3, side, side)
    print(f"{len(models)} models, input 1x3x{side}x{side}, {warmup} + {runs} interleaved rounds", flush=True)
    ms = interleaved_ms(models, x, runs, warmup)

    table = []
    for dense_key in dict.fromkeys(dense_of(r) for r in rows):
        first = next(r for r in rows if dense_of(r) == dense_key)
        table.append({"arch": first["arch"], "dataset": first["dataset"], "seed": first.get("seed", 0),
                      "pruner": "(dense)", "target": "",
                      "input": f"{side}x{side}", "torch_ms": ms[dense_key], "speedup": 1.0,
                      "recorded_ms": first["latency_ms_dense"], "recorded_speedup": 1.0, "flop_speedup": 1.0})
        for r in sorted((r for r in rows if dense_of(r) == dense_key),
                        key=lambda r: (r["plugin"], r["target_kind"], r["target"])):
            table.append({
                "arch": r["arch"], "dataset": r["dataset"], "seed": r.get("seed", 0), "pruner": r["plugin"],
                "kind": r["kind"], "target": f"{r['target_kind']}={r['target']:g}", "input": f"{side}x{side}", "torch_ms": ms[r["cell"]],
                "speedup": ms[dense_key] / ms[r["cell"]], "recorded_ms": r["latency_ms_pruned"],
                "recorded_speedup": r["latency_speedup"], "flop_speedup": r["flops_dense"] / r["flops_pruned"],
            })
    print(markdown(table, COLUMNS))
    write_csv(table, args.csv or Path(__file__).parent / "results" / f"latency-{args.run_dir.name}.csv", machine_line)


if __name__ == "__main__":
    main()
