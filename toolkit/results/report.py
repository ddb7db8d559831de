"""Tables (Markdown, CSV, LaTeX booktabs) and plots from a compare run folder.

Every number comes from the per-cell rows of ``results.jsonl``; nothing is
recomputed here, so a table can always be traced back to its cell.
"""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from toolkit.runner.grid import dense_dir, iter_rows
from toolkit.results.plots import (
    STAGE_COLORS, _panel_grid, _save, plot_examples, plot_iou_vs_sparsity, plot_latency_vs_flops,
)

NOT_IN_CSV = {"curves", "examples", "traceback", "prune_history", "meta"}


@dataclass(frozen=True)
class Column:
    header: str
    latex: str
    value: Callable[[dict[str, Any]], str]


def _pct(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * float(x):.1f}"


def _num(x: Any, fmt: str = ".3f", scale: float = 1.0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return format(float(x) / scale, fmt)


def _signed(x: Any) -> str:
    return "" if x is None else f"{100 * float(x):+.1f}"


COLUMNS: list[Column] = [
    Column("arch", "Arch.", lambda r: r["arch"]),
    Column("dataset", "Dataset", lambda r: r["dataset"]),
    Column("pruner", "Pruner", lambda r: r["plugin"]),
    Column("kind", "Kind", lambda r: r.get("kind", "")),
    Column("target %", r"Target (\%)", lambda r: _pct(r["target_sparsity"])),
    Column("sparsity %", r"Sparsity (\%)", lambda r: _pct(r.get("achieved_sparsity"))),
    Column("params M", "Params (M)", lambda r: _num(r.get("params_pruned"), ".2f", 1e6)),
    Column("params -%", r"$\Delta$Params (\%)", lambda r: _pct(r.get("params_reduction"))),
    Column("GMACs", "GMACs", lambda r: _num(r.get("flops_pruned"), ".3f", 1e9)),
    Column("FLOPs -%", r"$\Delta$FLOPs (\%)", lambda r: _pct(r.get("flops_reduction"))),
    Column("latency ms", "Latency (ms)", lambda r: _num(r.get("latency_ms_pruned"), ".1f")),
    Column("speedup x", "Speed-up", lambda r: _num(r.get("latency_speedup"), ".2f")),
    Column("file MB", "File (MB)", lambda r: _num(r.get("file_bytes_pruned"), ".2f", 1e6)),
    Column("zip MB", "Zipped (MB)", lambda r: _num(r.get("zip_bytes_pruned"), ".2f", 1e6)),
    Column("test IoU", "IoU", lambda r: _num(r.get("test_iou_pruned"), ".4f")),
    Column("IoU change pts", r"$\Delta$IoU (pts)", lambda r: _signed(r.get("test_iou_change"))),
    Column("status", "Status", lambda r: r["status"] if r["status"] == "ok" else f"failed: {r.get('error', '')}"),
]


def dense_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One reference row per (arch, dataset): the dense model every cell started from."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r["status"] == "ok" and (r["arch"], r["dataset"]) not in seen:
            seen[(r["arch"], r["dataset"])] = {
                "arch": r["arch"], "dataset": r["dataset"], "plugin": "(dense)", "kind": "", "target_sparsity": 0.0,
                "achieved_sparsity": r["sparsity_dense"], "params_pruned": r["params_dense"], "params_reduction": 0.0,
                "flops_pruned": r["flops_dense"], "flops_reduction": 0.0, "latency_ms_pruned": r["latency_ms_dense"],
                "latency_speedup": 1.0, "file_bytes_pruned": r["file_bytes_dense"], "zip_bytes_pruned": r["zip_bytes_dense"],
                "test_iou_pruned": r["test_iou_dense"], "test_iou_change": 0.0, "status": "ok",
            }
    return list(seen.values())


def table_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    ordered = sorted(rows, key=lambda r: (r["dataset"], r["arch"], r["plugin"], float(r["target_sparsity"])))
    out: list[dict[str, Any]] = []
    for ref in sorted(dense_rows(rows), key=lambda r: (r["dataset"], r["arch"])):
        out.append(ref)
        out.extend(r for r in ordered if (r["arch"], r["dataset"]) == (ref["arch"], ref["dataset"]))
    listed = {id(r) for r in out}
    out.extend(r for r in ordered if id(r) not in listed)  # groups whose every cell failed
    return out


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(c.header for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in table_rows(rows):
        lines.append("| " + " | ".join(c.value(r).replace("|", "/") for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def per_class_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Test IoU of every class (background included), dense first: where the pruned model lost."""
    ok = [r for r in table_rows(rows) if r["status"] == "ok"]
    if not ok:
        return ""
    source = {id(r): r for r in rows}
    out: list[str] = []
    for (arch, dataset), group in _groups(ok):
        cell = next(r for r in rows if r["status"] == "ok" and (r["arch"], r["dataset"]) == (arch, dataset))
        names = cell.get("class_names") or [f"class {i}" for i in range(len(cell["test_iou_per_class_dense"]))]
        out += [f"**{arch} on {dataset}**", "", "| pruner | target % | " + " | ".join(names) + " |",
                "|" + "---|" * (len(names) + 2)]
        for r in group:
            per_class = source[id(r)]["test_iou_per_class_pruned"] if id(r) in source else cell["test_iou_per_class_dense"]
            out.append(f"| {r['plugin']} | {_pct(r['target_sparsity'])} | " + " | ".join(_num(v, ".3f") for v in per_class) + " |")
        out.append("")
    return "\n".join(out)


def _groups(rows: Sequence[dict[str, Any]]) -> list[tuple[tuple[str, str], list[dict[str, Any]]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["arch"], r["dataset"]), []).append(r)
    return list(groups.items())


def _tex(s: str) -> str:
    return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("#", r"\#")


def latex_table(rows: Sequence[dict[str, Any]], caption: str = "Pruning results") -> str:
    cols = [c for c in COLUMNS if c.header != "status"]
    body = []
    for r in table_rows(rows):
        if r["status"] != "ok":
            continue
        body.append(" & ".join(_tex(c.value(r)) for c in cols) + r" \\")
    return "\n".join([
        r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}",
        r"\begin{tabular}{" + "l" * 4 + "r" * (len(cols) - 4) + "}", r"\toprule",
        " & ".join(c.latex for c in cols) + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", "",
    ])


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in NOT_IN_CSV and k not in keys)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items() if k in keys})
    return path


def plot_stage_curves(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Validation IoU (EMA) over the prune and fine-tune stages, a panel per (arch, dataset)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok" and r.get("curves"):
            groups[(r["arch"], r["dataset"])].append(r)
    fig, axes = _panel_grid(max(1, len(groups)))
    for ax, (key, group) in zip(axes, sorted(groups.items())):
        n_prune = max((sum(c["stage"] == "prune" for c in r["curves"]) for r in group), default=0)
        # colour = pruner, line style = sparsity: 15 lines stay tellable apart
        colours = {p: f"C{i % 10}" for i, p in enumerate(sorted({r["plugin"] for r in group}))}
        styles = {t: ["-", "--", ":", "-."][i % 4] for i, t in enumerate(sorted({r["target_sparsity"] for r in group}))}
        for r in sorted(group, key=lambda r: (r["plugin"], r["target_sparsity"])):
            pruning = [c for c in r["curves"] if c["stage"] == "prune"]
            tuning = [c for c in r["curves"] if c["stage"] != "prune"]
            # fine-tune starts after the prune stage for every cell, one-shot pruners included
            xs = [*range(1, len(pruning) + 1), *range(n_prune + 1, n_prune + len(tuning) + 1)]
            curve = pruning + tuning
            colour = colours[r["plugin"]]
            ax.plot(xs, [c["val_iou_ema"] for c in curve], styles[r["target_sparsity"]], lw=1.2, color=colour,
                    label=f"{r['plugin']} {float(r['target_sparsity']):.0%}")
            ax.plot(xs, [c["val_iou"] for c in curve], "o", ms=2, alpha=0.3, color=colour)
        if n_prune:
            ax.axvline(n_prune + 0.5, color=STAGE_COLORS["finetune"], lw=0.8, ls=":")
        ax.set_title(f"{key[0]} on {key[1]}: prune | fine-tune", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val IoU (EMA line, raw dots)")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    return _save(fig, path)


def plot_report_examples(rows: Sequence[dict[str, Any]], run_dir: Path, path: Path, max_panels: int = 5) -> Path | None:
    """Test images with ground truth and predictions of the dense model and each pruned one,
    for the first (arch, dataset) and pruner of the grid, at every sparsity."""
    ok = [r for r in rows if r["status"] == "ok" and (run_dir / "cells" / r["cell"] / "examples.npz").exists()]
    if not ok:
        return None
    first = ok[0]
    group = sorted([r for r in ok if (r["arch"], r["dataset"], r["plugin"]) == (first["arch"], first["dataset"], first["plugin"])],
                   key=lambda r: float(r["target_sparsity"]))
    dense_file = dense_dir(run_dir, first["arch"], first["dataset"]) / "examples.npz"
    if not dense_file.exists():
        return None
    dense = np.load(dense_file)
    num_classes = len(first.get("class_names") or []) or int(dense["truth"].max()) + 1
    panels = [("dense", dense["pred"])]
    panels += [(f"{r['plugin']} {float(r['target_sparsity']):.0%}", np.load(run_dir / "cells" / r["cell"] / "examples.npz")["pred"])
               for r in group[:max_panels]]
    examples = []
    for i in range(min(2, dense["truth"].shape[0])):
        for label, preds in panels:
            examples.append((f"{first['arch']} img {i}\n{label}", dense["image"][i], dense["truth"][i], preds[i]))
    return plot_examples(examples, path, num_classes)


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` with tables and plots beside it; returns its path."""
    run_dir = Path(run_dir)
    rows = list(iter_rows(run_dir))
    ok = [r for r in rows if r["status"] == "ok"]
    md = markdown_table(rows)
    (run_dir / "results.md").write_text(md)
    (run_dir / "results.tex").write_text(latex_table(rows))
    write_csv(rows, run_dir / "results.csv")
    figures = []
    if ok:
        figures.append(plot_iou_vs_sparsity(ok, run_dir / "iou_vs_sparsity.png"))
        figures.append(plot_latency_vs_flops(ok, run_dir / "latency_vs_flops.png"))
        figures.append(plot_stage_curves(ok, run_dir / "curves.png"))
        ex = plot_report_examples(ok, run_dir, run_dir / "examples.png")
        if ex:
            figures.append(ex)
    env = rows[0] if rows else {}
    lines = [
        f"# Pruning comparison: {run_dir.name}", "",
        f"{len(ok)} of {len(rows)} cells finished; {len(rows) - len(ok)} failed.", "",
        "Sparsity: unstructured = fraction of prunable conv/linear weights that are zero; "
        "structured = fraction of prunable output channels removed. FLOPs are thop MACs for one "
        f"{env.get('image_size', '?')}px image; latency is the median CPU forward time over several runs after warm-up "
        f"(input {ok[0]['latency_input'] if ok else '?'}, {ok[0]['latency_threads'] if ok else '?'} thread(s)). "
        "IoU is the test-split mean over the defect classes (background excluded). "
        "Unstructured pruning keeps dense kernels: its latency does not drop, its zipped file does.", "",
        md, "",
        "Per-class test IoU (background included; blank = class absent from the test split):", "",
        per_class_markdown(rows), "",
        *[f"![{f.stem}]({f.name})" for f in figures], "",
        "Versions: " + ", ".join(f"{k} {env.get(k)}" for k in ("toolkit", "torch", "smp", "torch_pruning", "nni", "python", "git_commit")),
        f"Settings: encoder {env.get('encoder')}, seed {env.get('seed')}, epochs train/prune/fine-tune {env.get('epochs')}.", "",
        "Files: results.jsonl (one row per cell, every setting), results.csv, results.tex (booktabs), cells/<id>/ (curves, checkpoints).",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
