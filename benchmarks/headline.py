"""Headline table: every method at every target of a seeded `toolkit compare` run, as a paper shows it.

One row per (method, target): the cost reached (FLOPs and parameters removed,
mean over seeds), test mIoU and its change against each seed's dense model
trained for the same budget (the `dense` row of that seed), and every class's
IoU, each as mean ± std over the seeds, with n and the training steps of every
row. Unlike `recovery.py` it keeps rows whose target is not a FLOP target
(unstructured zero fractions), so a table at FLOP targets shows plainly which
methods reach them.

    python benchmarks/headline.py runs/headline-robust-ft --methods fpgm,random,narrow,agp
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from common import markdown, parser, read_rows, setup, write_csv

from toolkit.results.aggregate import mean_std
from toolkit.results.control import VS_CONTROL, is_control, recovery_steps, with_deltas

LABELS = {"flops": "FLOPs -{:.0%}", "params": "params -{:.0%}", "latency": "latency -{:.0%}", "sparsity": "zeros {:.0%}"}


def pm(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    mean, std = mean_std([scale * v for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def main() -> None:
    p = parser("headline", __doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="folder written by `toolkit compare` (or `toolkit merge`)")
    p.add_argument("--methods", help="comma list of methods to tabulate, in this order (default: all)")
    p.set_defaults(csv=Path(__file__).parent / "results" / "headline.csv")
    args = p.parse_args()
    machine_line = setup(args)
    every = with_deltas(r for r in read_rows(args.run_dir) if r.get("status") == "ok")
    control = [r for r in every if is_control(r)]
    rows = [r for r in every if not is_control(r)]
    methods = args.methods.split(",") if args.methods else sorted({r["method"] for r in rows})
    if not rows or not control:
        sys.exit(f"error: {args.run_dir} needs finished `dense` control rows and pruned rows")
    classes = next(r["class_names"] for r in every if r.get("class_names"))[1:]  # background left out
    budgets = sorted({recovery_steps(r) for r in control})  # a control row per recovery budget
    table = [_row("dense model, before pruning", "-", [r for r in control if recovery_steps(r) == budgets[0]],
                  False, classes, "dense")]
    table += [_row("dense control, same budget", "-", [r for r in control if recovery_steps(r) == b], False,
                   classes) for b in budgets]
    for kind, target, budget in sorted({(r["target_kind"], r["target"], recovery_steps(r)) for r in rows}):
        for method in methods:
            group = [r for r in rows if r["method"] == method
                     and (r["target_kind"], r["target"], recovery_steps(r)) == (kind, target, budget)]
            if group:
                label = LABELS.get(kind, kind + " {:.0%}").format(target)
                table.append(_row(method, label, group, True, classes))
    columns = list(table[0])
    print(markdown(table, columns))
    write_csv(table, args.csv, machine_line)


def _row(method: str, target: str, group: list[dict], delta: bool, classes: list[str], model: str = "pruned") -> dict:
    """One line of the table; Δ is against the same seed's control at the same budget
    (``toolkit.results.control``), so seed-to-seed spread cancels."""
    against = [r["test_iou_delta"] for r in group if r.get("delta_reference") == VS_CONTROL]
    delta = pm(against, 100, 1) if delta and against else ""
    row = {
        "method": method, "target": target,
        "flops_removed_pct": round(100 * statistics.fmean(r["flops_reduction"] for r in group), 1),
        "params_removed_pct": round(100 * statistics.fmean(r["params_reduction"] for r in group), 1),
        "test_miou": pm([r[f"test_iou_{model}"] for r in group]), "delta_vs_control_pts": delta,
    }
    for i, name in enumerate(classes, start=1):
        row[name] = pm([r[f"test_iou_per_class_{model}"][i] for r in group])
    row["n"] = len(group)
    steps = sorted({int(r["steps_train"] if model == "dense" else r["budget_steps"]) for r in group})
    row["steps"] = "/".join(map(str, steps))
    return row


if __name__ == "__main__":
    main()
