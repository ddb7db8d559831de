"""What half the FLOPs buy on the runtimes users deploy with, by channel rounding (issue 23).

For each smp architecture with the EfficientNet-Lite0 encoder: the dense model
and ``fpgm`` pruned to ``--target`` (default ``flops=0.5``) with ``round_to``
none / 8 / 16 / 32 (the toolkit's allocation: nearest multiple, the FLOP
target met within a point; ``toolkit.pruning.allocation``). Every model of an
architecture is exported as ``toolkit export`` does and timed on ONNX Runtime
and OpenVINO (CPU), batch 1, interleaved (one pass of each model per round),
so background load falls on all alike. Columns match
``benchmarks/results/runtime-latency.csv``: arch, runtime, round_to,
flops_reduction_pct, latency_ms_dense, latency_ms_pruned, speedup (plus the
interquartile ranges). ``test_miou`` comes from a trained grid, not from
this timing script: ``--miou RUN`` reads a ``toolkit compare`` run (the
recovery-budget grid of issue 21, with ``fpgm`` and its ``round_to`` variants
at the same FLOP target) and fills ``test_miou``, its std, seeds and recovery
budget for every (arch, round_to) the run trained at ``--miou-budget`` steps,
and where the run has the dense control at that budget, ``control_miou`` and
``delta_pts`` (each seed against its own control);
``--no-timing`` fills an existing CSV without timing again.

Weights are random: a latency depends on the shapes, and the shapes come from
the FLOP target and the rounding (fpgm's choice of which channels only moves
the IoU). Measure on a quiet machine: nothing else computing.

Run:  .venv/bin/python benchmarks/runtime_latency.py
      .venv/bin/python benchmarks/runtime_latency.py --archs fpn --round-to none,16 --runs 10
      .venv/bin/python benchmarks/runtime_latency.py --no-timing --miou runs/rb-s0 --miou-budget 800
      .venv/bin/python benchmarks/runtime_latency.py --no-timing --miou runs/rb-s0 runs/arch-unet --miou-budget 800
"""
from __future__ import annotations

import copy
import csv
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from common import csv_list, markdown, parser, pct, read_rows, setup, stopwatch, write_csv
from toolkit.errors import PruningError
from toolkit.pruning.rounding import parse_round_to
from toolkit.pruning.structured import prune_channels
from toolkit.results.measure import count_flops
from toolkit.results.runtimes import LABELS, open_sessions, time_interleaved
from toolkit.workbench.models import create_model, output_layers

ARCHS = ["unet", "unetplusplus", "fpn", "linknet", "manet"]
RUNTIMES = ["onnxruntime", "openvino"]
COLUMNS = ["arch", "runtime", "round_to", "flops_reduction_pct", "latency_ms_dense", "latency_ms_pruned", "speedup",
           "flop_speedup", "iqr_ms_dense", "iqr_ms_pruned", "test_miou"]


def round_to(text: str) -> int | None:
    return None if text.lower() in ("none", "0", "1") else int(text)


def arguments() -> Any:
    p = parser("runtime-latency", __doc__.split("\n\n")[0])
    p.add_argument("--archs", type=csv_list(str), default=ARCHS)
    p.add_argument("--encoder", default="tu-tf_efficientnet_lite0")
    p.add_argument("--size", type=int, default=256, help="image side (default 256, the headline's)")
    p.add_argument("--classes", type=int, default=2,
                   help="output classes (default 2); the head's FLOPs move an unrounded allocation's counts a hair, "
                        "which ONNX Runtime notices (magnetic tile has 6)")
    p.add_argument("--target", default="flops=0.5")
    p.add_argument("--round-to", type=csv_list(round_to), default=[None, 8, 16, 32])
    p.add_argument("--runtimes", type=csv_list(str), default=RUNTIMES)
    p.add_argument("--miou", type=Path, nargs="+", metavar="RUN",
                   help="toolkit compare runs whose fpgm rows give test_miou per (arch, round_to); "
                        "several runs (one per architecture) are read together")
    p.add_argument("--miou-budget", type=int, default=800, help="the recovery steps whose IoU is shown (default 800)")
    p.add_argument("--miou-methods", type=csv_list(str), default=["fpgm", "fpgm-r8", "fpgm-r16", "fpgm-r32"],
                   help="the run's methods that are fpgm with at most round_to set (default fpgm,fpgm-r8,fpgm-r16,fpgm-r32)")
    p.add_argument("--no-timing", action="store_true", help="fill test_miou into the existing --csv, time nothing")
    args = p.parse_args()
    args.runs = args.runs or 20
    args.warmup = args.warmup if args.warmup is not None else 3
    return args


def bench_arch(arch: str, args: Any) -> list[dict]:
    """The dense model and one pruned model per rounding, all timed together on each runtime."""
    torch.manual_seed(0)
    dense = create_model(arch, encoder=args.encoder, encoder_weights=None, num_classes=args.classes).eval()
    x = torch.randn(1, 3, args.size, args.size)
    dense_flops = count_flops(dense, x)
    models = {"dense": dense}
    flops = {}
    for rounding in args.round_to:
        model = copy.deepcopy(dense)
        try:
            with stopwatch() as t:
                prune_channels(model, x, target=args.target, importance="fpgm", round_to=rounding,
                               ignored_layers=output_layers(model))
        except PruningError as unreachable:  # e.g. one multiple of 32 in every thin layer is already too much
            print(f"  {arch} round_to={rounding}: not timed: {unreachable}", file=sys.stderr, flush=True)
            continue
        models[rounding] = model.eval()
        flops[rounding] = 1 - count_flops(model, x) / dense_flops
        print(f"  {arch} round_to={rounding}: FLOPs -{pct(flops[rounding]):.1f}% in {t[0]:.0f} s",
              file=sys.stderr, flush=True)
    rows = []
    for runtime in args.runtimes:
        sessions = {key: open_sessions(m, x, [runtime], args.threads)[runtime] for key, m in models.items()}
        broken = {k: s for k, s in sessions.items() if isinstance(s, str)}
        if broken:
            print(f"  {arch} on {runtime}: skipped ({next(iter(broken.values()))})", file=sys.stderr)
            continue
        timings = time_interleaved({k: s.timed for k, s in sessions.items()}, runs=args.runs, warmup=args.warmup)
        base = timings["dense"]
        for rounding in flops:
            t = timings[rounding]
            rows.append({"arch": arch, "runtime": runtime, "round_to": rounding or 1,
                         "flops_reduction_pct": pct(flops[rounding]), "latency_ms_dense": base.median_ms,
                         "latency_ms_pruned": t.median_ms, "speedup": base.median_ms / t.median_ms,
                         "flop_speedup": 1 / (1 - flops[rounding]), "iqr_ms_dense": base.iqr_ms,
                         "iqr_ms_pruned": t.iqr_ms, "test_miou": None})
        print(f"  {arch} on {LABELS[runtime]}: dense {base.median_ms:.1f} ms; "
              + ", ".join(f"round_to={r}: x{base.median_ms / timings[r].median_ms:.2f}" for r in flops),
              file=sys.stderr, flush=True)
    return rows


def trained_miou(run_dir: Path, target: str, encoder: str, budget: int, methods: list[str]) -> dict[tuple[str, int], dict]:
    """Test mIoU (mean, std, seeds) of a grid's cells of ``methods`` (fpgm and its variants that only set
    ``round_to``) by (arch, round_to) at ``target`` after ``budget`` recovery steps; ``round_to`` is the
    cell's option (``auto`` without a deploy runtime: none, 1). Where the run has the dense control at the
    same budget, also its mIoU and the change against it (each seed against its own control), in points."""
    kind, _, value = target.partition("=")
    groups: dict[tuple[str, int], list[tuple[int, float]]] = {}
    control: dict[tuple[str, int], float] = {}
    for r in read_rows(run_dir):
        if (r.get("status") != "ok" or r.get("seed") == "all" or r.get("encoder") != encoder
                or r.get("recovery_steps") != budget or r.get("test_iou_pruned") is None):
            continue
        if r.get("method") == "dense":
            control[(r["arch"], r["seed"])] = float(r["test_iou_pruned"])
            continue
        if (r.get("method") not in methods or r.get("target_kind") != kind
                or abs(float(r["target"]) - float(value)) > 1e-9):
            continue
        options = r.get("options") or {}
        if set(options) - {"round_to"}:  # another lever changed the model: not the rounding alone
            continue
        rounding = parse_round_to(options.get("round_to", "auto"))
        key = (r["arch"], rounding if isinstance(rounding, int) else 1)
        groups.setdefault(key, []).append((r["seed"], float(r["test_iou_pruned"])))
    out = {}
    for (arch, rounding), seeded in groups.items():
        v = [iou for _, iou in seeded]
        out[(arch, rounding)] = {"test_miou": statistics.fmean(v), "test_miou_std": statistics.stdev(v) if len(v) > 1 else 0.0,
                                 "miou_seeds": len(v), "miou_recovery_steps": budget}
        paired = [(iou, control[(arch, seed)]) for seed, iou in seeded if (arch, seed) in control]
        if len(paired) == len(seeded):
            out[(arch, rounding)].update(control_miou=statistics.fmean(c for _, c in paired),
                                         delta_pts=100 * statistics.fmean(i - c for i, c in paired))
    return out


def fill_miou(rows: list[dict], args: Any) -> list[dict]:
    known: dict[tuple[str, int], dict] = {}
    for run in args.miou:
        for key, miou in trained_miou(run, args.target, args.encoder, args.miou_budget, args.miou_methods).items():
            if key in known:
                sys.exit(f"error: {key[0]} round_to={key[1]} is in more than one --miou run: merge them first (toolkit merge)")
            known[key] = miou
    print(f"test mIoU from {', '.join(map(str, args.miou))} at {args.miou_budget} recovery steps: "
          + (", ".join(f"{a} round_to={r}: {m['test_miou']:.3f} ({m['miou_seeds']} seeds)" for (a, r), m in sorted(known.items()))
             or "none"), file=sys.stderr)
    return [{**r, **known.get((r["arch"], int(r["round_to"])), {})} for r in rows]


def main() -> None:
    args = arguments()
    line = setup(args)
    rows: list[dict] = []
    if args.no_timing:
        if not args.miou:
            sys.exit("error: --no-timing only fills test_miou: give --miou RUN")
        with args.csv.open() as f:
            read = list(csv.DictReader(f))
        line = read[0].get("machine") or line if read else line  # the machine the timings were taken on
        rows = [{k: v for k, v in r.items() if k != "machine"} for r in read]
    else:
        with stopwatch() as total:
            for arch in args.archs:
                rows += bench_arch(arch, args)
        print(f"\n{args.encoder}, random weights, {args.classes} classes, {args.size}x{args.size}, batch 1, {args.threads} thread(s); "
              f"fpgm at {args.target}; median of {args.runs} interleaved rounds after {args.warmup} warm-up. "
              f"Total {total[0]:.0f} s.")
    if args.miou:
        rows = fill_miou(rows, args)
    print(markdown(rows, [*COLUMNS, "test_miou_std", "miou_seeds", "control_miou", "delta_pts"]))
    write_csv(rows, args.csv, line)


if __name__ == "__main__":
    main()
