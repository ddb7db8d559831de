"""Recovery table: what each recovery method keeps of the dense IoU at a cost target, at equal budget.

Reads a `toolkit compare` run whose methods are one pruner as it is and its
recovery variants (distillation, sensitivity-aware rates, iterative pruning:
see `grid-recovery.toml`), and writes one row per (method, cost target: FLOPs,
then latency, then parameters; ``target_kind`` says which):
mean ± std over seeds of the test mIoU and of its change against each seed's
dense model *trained for the same total budget* (the `dense` baseline's row
of that seed; without one, the dense checkpoint, and the table says so), the
FLOPs removed, the training steps every row had, and whether the issue's goal
is met (at most 1 point lost at -50% FLOPs, 3 at -75%; FLOP targets only). Rows re-timed by
`toolkit report RUN --retime` also get the mean ONNX Runtime and OpenVINO
speed-ups over the seeds (``onnxruntime_speedup``, ``openvino_speedup``).

    python benchmarks/recovery.py runs/magnetic-tile --methods fpgm,fpgm-distill,fpgm-sensitive,fpgm-iterative

A run with a recovery-budget axis (``recovery_steps``) gives a row per budget; ``--figure`` draws
them as recovery curves (the report's figure, for the methods chosen):

    python benchmarks/recovery.py runs/recovery-budget --methods fpgm,fpgm-byflops \
        --csv benchmarks/results/recovery-budget.csv --figure benchmarks/figures/recovery-budget.png

``--targets 0.5`` keeps one cost target and ``--seeds 0`` one seed (a figure of the levers at -50%, run on seed 0).

A lever of the dense stage (prune-aware training) has a dense model of its own, so its own run:
``--also runs/pa-g1e-2=pa1e-2`` adds that run's methods as ``fpgm-pa1e-2``, judged against this
run's dense control of the same seed and budget.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from common import csv_list, markdown, parser, read_rows, setup, write_csv

from toolkit.results.aggregate import aggregate, mean_std
from toolkit.results.control import VS_CONTROL, is_control, recovery_steps, with_deltas

GOALS = {0.5: 1.0, 0.75: 3.0}  # FLOP target -> most IoU points it may cost
COST_KINDS = ("flops", "latency", "params")  # the table's order
COLUMNS = ["method", "pruner", "target", "target_kind", "recovery_steps", "flops_reduction_pct", "test_miou", "test_miou_std", "delta_pts",
           "delta_pts_std", "dense_miou", "dense_control", "seeds", "steps", "goal_pts", "goal_met"]
# speed-ups of the quiet re-timing pass (`toolkit report RUN --retime`), where the rows have them
RETIMED = {"onnxruntime_speedup": "retimed_onnxruntime_speedup", "openvino_speedup": "retimed_openvino_speedup"}


def main() -> None:
    p = parser("recovery", __doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="folder written by `toolkit compare`")
    p.add_argument("--methods", help="comma list of methods (plugins or variants) to tabulate (default: all)")
    p.add_argument("--targets", type=csv_list(float), help="comma list of cost-target values to keep, e.g. 0.5 (default: all)")
    p.add_argument("--seeds", type=csv_list(int), help="comma list of seeds to keep, e.g. 0 for levers run on one seed (default: all)")
    p.add_argument("--figure", type=Path, help="also draw the recovery curves (IoU and its change against budget)")
    p.add_argument("--also", action="append", default=[], metavar="RUN=LABEL",
                   help="a run whose dense stage differed (e.g. prune-aware training, --sparsity-regularizer): "
                        "its methods are tabulated as METHOD-LABEL against this run's same-budget dense controls")
    p.set_defaults(csv=Path(__file__).parent / "results" / "recovery.csv")
    args = p.parse_args()
    machine_line = setup(args)
    methods = args.methods.split(",") if args.methods else None
    targets = {round(t, 4) for t in args.targets} if args.targets else None
    finished = [*(r for r in read_rows(args.run_dir) if r.get("status") == "ok"), *also_rows(args.also)]
    every = with_deltas([r for r in finished if not args.seeds or int(r["seed"]) in args.seeds])
    rows = [r for r in every if r.get("target_kind") in COST_KINDS and (methods is None or r["method"] in methods)
            and (targets is None or round(float(r["target"]), 4) in targets)]
    if not rows:
        sys.exit(f"error: no finished cost-target cells (flops, latency, params) in {args.run_dir}")
    table = []
    order = methods or sorted({r["method"] for r in rows})
    cells = {(COST_KINDS.index(r["target_kind"]), r["target"], recovery_steps(r)) for r in rows}
    for kind_index, target, budget in sorted(cells):
        kind = COST_KINDS[kind_index]
        for method in order:
            group = [r for r in rows if r["method"] == method and r["target_kind"] == kind
                     and (r["target"], recovery_steps(r)) == (target, budget)]
            if not group:
                continue
            miou, miou_std = mean_std([r["test_iou_pruned"] for r in group])
            # against the same seed's dense control at the same budget, else the dense checkpoint
            reference = [r["test_iou_pruned"] - r["test_iou_delta"] for r in group]
            delta, delta_std = mean_std([100 * r["test_iou_delta"] for r in group])
            same_budget = all(r["delta_reference"] == VS_CONTROL for r in group)
            goal = GOALS.get(round(target, 2)) if kind == "flops" else None  # the goals are FLOP targets
            table.append({
                "method": method, "pruner": group[0]["plugin"], "target": target, "target_kind": kind,
                "recovery_steps": budget,
                "flops_reduction_pct": round(100 * statistics.fmean(r["flops_reduction"] for r in group), 1),
                "test_miou": round(miou, 4), "test_miou_std": round(miou_std, 4),
                "delta_pts": round(delta, 2), "delta_pts_std": round(delta_std, 2),
                "dense_miou": round(statistics.fmean(reference), 4),
                "dense_control": "same budget" if same_budget else "dense checkpoint",
                "seeds": len(group), "steps": "/".join(str(int(s)) for s in sorted({r["budget_steps"] for r in group})),
                "goal_pts": goal, "goal_met": None if goal is None else ("yes" if -delta <= goal else "NO"),
                **{name: round(statistics.fmean(v), 3) for name, key in RETIMED.items()
                   if len(v := [r[key] for r in group if r.get(key) is not None]) == len(group)},
            })
    print(markdown(table, [*COLUMNS, *(c for c in RETIMED if any(c in t for t in table))]))
    write_csv(table, args.csv, machine_line)
    if args.figure:
        from toolkit.results.plots import plot_recovery

        drawn = [r for r in every if r["method"] == "dense" or r in rows]
        print(f"figure: {plot_recovery(aggregate(drawn), args.figure, 'the dense control, same budget')}")


def also_rows(specs: list[str]) -> list[dict]:
    """The finished pruned rows of each ``RUN=LABEL``, their method renamed METHOD-LABEL. Their own dense
    controls are left out: a lever of the dense stage is judged against the ordinary dense model's control."""
    out = []
    for spec in specs:
        run, sep, label = spec.rpartition("=")
        if not sep or not run or not label:
            sys.exit(f"error: --also takes RUN=LABEL (e.g. runs/pa-g1e-2=pa1e-2), got {spec!r}")
        out += [{**r, "method": f"{r['method']}-{label}"} for r in read_rows(Path(run))
                if r.get("status") == "ok" and not is_control(r)]
    return out


if __name__ == "__main__":
    main()
