"""Figures for papers: curves, Pareto fronts of IoU against measured cost, latency vs FLOPs, example masks.

Matplotlib with the Agg backend, so plots render on machines with no screen.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


STAGE_COLORS = {"train": "tab:blue", "prune": "tab:red", "finetune": "tab:green"}


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(history: Sequence[Any], path: Path, title: str = "") -> Path:
    """Validation IoU per epoch (points) and its EMA (line), stages one after another."""
    rows = [h if isinstance(h, dict) else h.__dict__ for h in history]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = 0
    for stage in ("train", "prune", "finetune"):
        part = [r for r in rows if r["stage"] == stage]
        if not part:
            continue
        xs = np.arange(x + 1, x + len(part) + 1)
        color = STAGE_COLORS[stage]
        ax.plot(xs, [r["val_iou"] for r in part], "o", color=color, alpha=0.35, ms=3)
        ax.plot(xs, [r["val_iou_ema"] for r in part], "-", color=color, label=f"{stage} (EMA)")
        x += len(part)
        ax.axvline(x + 0.5, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("epoch (train, prune, fine-tune in sequence)")
    ax.set_ylabel("validation mean IoU")
    ax.set_title(title)
    if rows:
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _panel_grid(n: int) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, 3)
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.4 * rows_), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


COSTS = (
    ("flops_pruned", "GMACs (thop)", 1e9),
    ("params_pruned", "parameters (M)", 1e6),
    ("latency_ms_pruned", "CPU latency (ms)", 1.0),
    ("zip_bytes_pruned", "zipped file (MB)", 1e6),
)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and IoU (higher), by cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _label(r: dict[str, Any]) -> str:
    kind, value = r.get("target_kind", ""), float(r.get("target", 0))
    return f"{kind} {value:.0%}" if kind in ("rate", "sparsity") else f"{kind} -{value:.0%}"


def plot_pareto(rows: Sequence[dict[str, Any]], dense: Sequence[dict[str, Any]], path: Path,
                latency: tuple[str, str] = ("latency_ms_pruned", "CPU latency (ms)")) -> Path:
    """Test IoU against each *measured* cost (FLOPs, parameters, latency, zipped size): a row
    per cost, a column per (arch, dataset) (one pair: the four costs in a 2 x 2 grid); error bars
    are the std over seeds, the dense model is the black star, the grey line the Pareto front of
    the pruned models. The legend names each method once, whatever its number of targets.
    ``latency`` is the column and axis label of the latency shown (the report picks the
    deployment runtime's, re-timed where it was)."""
    costs = [c if c[0] != "latency_ms_pruned" else (latency[0], latency[1], 1.0) for c in COSTS]
    keys = sorted({(r["arch"], r["dataset"]) for r in [*rows, *dense]})
    cols = max(1, len(keys))
    if cols == 1:
        fig, grid = plt.subplots(2, 2, figsize=(10.4, 6.6), squeeze=False)
        axes = [[ax] for ax in grid.ravel()]
    else:
        fig, axes = plt.subplots(len(costs), cols, figsize=(4.4 * cols + 1.6, 3.1 * len(costs)), squeeze=False)
    plugins = sorted({r["method"] for r in rows})
    colours = {p: f"C{i % 10}" for i, p in enumerate(plugins)}
    markers = {"structured": "o", "unstructured": "s"}
    legend: dict[str, Any] = {}
    for j, key in enumerate(keys):
        group = [r for r in rows if (r["arch"], r["dataset"]) == key]
        ref = next((d for d in dense if (d["arch"], d["dataset"]) == key), None)
        for i, (cost, label, scale) in enumerate(costs):
            ax = axes[i][j]
            pts = []
            for r in group:
                if r.get(cost) is None or r.get("test_iou_pruned") is None:
                    continue
                x, y = float(r[cost]) / scale, float(r["test_iou_pruned"])
                xerr = float(r.get(f"{cost}_std") or 0) / scale
                yerr = float(r.get("test_iou_pruned_std") or 0)
                drawn = ax.errorbar(x, y, xerr=xerr or None, yerr=yerr or None, fmt=markers.get(r.get("kind"), "o"),
                                    ms=4, color=colours[r["method"]], capsize=2, lw=0.8)
                legend.setdefault(r["method"], drawn)
                pts.append((x, y))
            if ref is not None and ref.get(cost) is not None:
                drawn = ax.errorbar(float(ref[cost]) / scale, float(ref["test_iou_pruned"]),
                                    yerr=float(ref.get("test_iou_pruned_std") or 0) or None, fmt="k*", ms=10, capsize=2)
                legend.setdefault("dense model (before pruning)", drawn)
            front = pareto_front(pts)
            if len(front) > 1:
                ax.plot([p[0] for p in front], [p[1] for p in front], color="grey", lw=0.8, ls="--", zorder=0)
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel("test mean IoU", fontsize=8)
            if i == 0 or cols == 1:
                ax.set_title(f"{key[0]} on {key[1]}", fontsize=9)
    width = fig.get_size_inches()[0]
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="upper right", fontsize=7,
                   title="o structured, s unstructured", title_fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / width, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency_vs_flops(rows: Sequence[dict[str, Any]], dense: Sequence[dict[str, Any]], path: Path,
                          latencies: Sequence[tuple[str, str]] = (("latency_ms_pruned", "CPU latency, median ms"),)) -> Path:
    """Measured latency against thop FLOPs, a panel per runtime (``latencies``: column, axis
    label): do fewer FLOPs really run faster, and in the runtime deployed?"""
    fig, axes = _panel_grid(max(1, len(latencies)))
    markers = {"structured": "o", "unstructured": "x"}
    for ax, (key, label) in zip(axes, latencies):
        for d in (d for d in dense if d.get(key) is not None):
            ax.plot(d["flops_pruned"] / 1e9, d[key], "k*", ms=10)
            ax.annotate(f"{d['arch']} dense", (d["flops_pruned"] / 1e9, d[key]), fontsize=7)
        for r in (r for r in rows if r.get(key) is not None):
            ax.plot(r["flops_pruned"] / 1e9, r[key], markers.get(r.get("kind"), "o"), alpha=0.8)
            ax.annotate(f"{r['plugin']} {_label(r)}", (r["flops_pruned"] / 1e9, r[key]), fontsize=6)
        ax.set_xlabel("GMACs (thop)")
        ax.set_ylabel(label, fontsize=8)
        ax.set_title("latency vs FLOPs (o structured, x unstructured, * dense)", fontsize=8)
    return _save(fig, path)


def plot_examples(examples: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path, num_classes: int) -> Path:
    """Rows of (label, image HxWx3 in [0,1], ground truth, prediction)."""
    n = max(1, len(examples))
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for row, (label, image, truth, pred) in zip(axes, examples):
        row[0].imshow(image)
        void = np.ma.masked_greater_equal(truth, num_classes)  # void pixels (ignore_index) left blank
        row[1].imshow(void, vmin=0, vmax=max(1, num_classes - 1), cmap="magma", interpolation="nearest")
        row[2].imshow(pred, vmin=0, vmax=max(1, num_classes - 1), cmap="magma", interpolation="nearest")
        row[0].set_ylabel(label, fontsize=7)
        for ax, t in zip(row, ("image", "ground truth", "prediction")):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(t, fontsize=8)
    return _save(fig, path)


def plot_recovery(rows: Sequence[dict[str, Any]], path: Path, delta_label: str) -> Path:
    """Test IoU and IoU change against the recovery budget (steps trained after pruning): a line per
    method and target, error bars the std over seeds (``rows`` are aggregates), a row of two panels per
    (arch, dataset). Where the lines flatten, more training no longer buys accuracy."""
    budgeted = [r for r in rows if r.get("recovery_steps") is not None and r.get("test_iou_pruned") is not None]
    keys = sorted({(r["arch"], r["dataset"]) for r in budgeted})
    fig, axes = plt.subplots(max(1, len(keys)), 2, figsize=(11, 3.6 * max(1, len(keys))), squeeze=False)
    colours = {m: f"C{i % 10}" for i, m in enumerate(sorted({r["method"] for r in budgeted}))}
    targets = sorted({(r.get("target_kind", ""), float(r.get("target", 0))) for r in budgeted})
    styles = {t: ["-", "--", ":", "-."][i % 4] for i, t in enumerate(targets)}
    for (iou_ax, delta_ax), key in zip(axes, keys):
        lines: dict[tuple, list[dict[str, Any]]] = {}
        for r in budgeted:
            if (r["arch"], r["dataset"]) == key:
                lines.setdefault((r["method"], r.get("target_kind", ""), float(r.get("target", 0))), []).append(r)
        for (method, kind, value), line in sorted(lines.items()):
            line.sort(key=lambda r: r["recovery_steps"])
            xs = [r["recovery_steps"] for r in line]
            label = method if method == "dense" else f"{method} {_label(line[0])}"
            for ax, key_name, scale in ((iou_ax, "test_iou_pruned", 1.0), (delta_ax, "test_iou_delta", 100.0)):
                ys = [scale * float(r.get(key_name, math.nan)) for r in line]
                errs = [scale * float(r.get(f"{key_name}_std") or 0) for r in line]
                ax.errorbar(xs, ys, yerr=errs if any(errs) else None, fmt=styles[(kind, value)], marker="o", ms=3,
                            color="k" if method == "dense" else colours[method], capsize=2, lw=1.1, label=label)
        iou_ax.set_ylabel("test mean IoU", fontsize=8)
        delta_ax.set_ylabel(f"IoU change (pts) vs {delta_label}", fontsize=8)
        delta_ax.axhline(0, color="grey", lw=0.6)
        for ax in (iou_ax, delta_ax):
            ax.set_xlabel("recovery steps (prune stage + fine-tune)", fontsize=8)
            ax.set_title(f"{key[0]} on {key[1]}", fontsize=9)
        delta_ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    return _save(fig, path)
