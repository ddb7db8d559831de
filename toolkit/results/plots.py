"""Figures for papers: curves, IoU vs sparsity, latency vs FLOPs, example masks.

Matplotlib with the Agg backend, so plots render on machines with no screen.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from toolkit.workbench.training import EpochRecord  # noqa: E402

STAGE_COLORS = {"train": "tab:blue", "prune": "tab:red", "finetune": "tab:green"}


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(history: Sequence[EpochRecord | dict], path: Path, title: str = "") -> Path:
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


def plot_iou_vs_sparsity(rows: Iterable[dict[str, Any]], path: Path) -> Path:
    """Test IoU against target sparsity, a line per pruner, a panel per (arch, dataset)."""
    groups: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    dense: dict[tuple[str, str], float] = {}
    for r in rows:
        key = (r["arch"], r["dataset"])
        groups[key][r["plugin"]].append((float(r["target_sparsity"]), float(r["test_iou_pruned"])))
        dense[key] = float(r["test_iou_dense"])
    fig, axes = _panel_grid(max(1, len(groups)))
    for ax, (key, by_plugin) in zip(axes, sorted(groups.items())):
        for plugin, pts in sorted(by_plugin.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=plugin)
        ax.axhline(dense[key], color="black", ls="--", lw=1, label="dense")
        ax.set_title(f"{key[0]} on {key[1]}", fontsize=9)
        ax.set_xlabel("target sparsity")
        ax.set_ylabel("test mean IoU")
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_latency_vs_flops(rows: Iterable[dict[str, Any]], path: Path) -> Path:
    """Measured CPU latency against thop FLOPs: do fewer FLOPs really run faster?"""
    fig, ax = plt.subplots(figsize=(6, 4))
    seen_dense: set[tuple[str, str]] = set()
    markers = {"structured": "o", "unstructured": "x"}
    for r in rows:
        key = (r["arch"], r["dataset"])
        if key not in seen_dense:
            ax.plot(r["flops_dense"] / 1e9, r["latency_ms_dense"], "k*", ms=10)
            ax.annotate(f"{r['arch']} dense", (r["flops_dense"] / 1e9, r["latency_ms_dense"]), fontsize=7)
            seen_dense.add(key)
        ax.plot(r["flops_pruned"] / 1e9, r["latency_ms_pruned"], markers.get(r["kind"], "o"), alpha=0.8)
        ax.annotate(f"{r['plugin']} {float(r['target_sparsity']):.0%}", (r["flops_pruned"] / 1e9, r["latency_ms_pruned"]), fontsize=6)
    ax.set_xlabel("GMACs (thop)")
    ax.set_ylabel("CPU latency, median ms")
    ax.set_title("latency vs FLOPs (o structured, x unstructured, * dense)", fontsize=9)
    return _save(fig, path)


def plot_examples(examples: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path, num_classes: int) -> Path:
    """Rows of (label, image HxWx3 in [0,1], ground truth, prediction)."""
    n = max(1, len(examples))
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for row, (label, image, truth, pred) in zip(axes, examples):
        row[0].imshow(image)
        row[1].imshow(truth, vmin=0, vmax=max(1, num_classes - 1), cmap="magma", interpolation="nearest")
        row[2].imshow(pred, vmin=0, vmax=max(1, num_classes - 1), cmap="magma", interpolation="nearest")
        row[0].set_ylabel(label, fontsize=7)
        for ax, t in zip(row, ("image", "ground truth", "prediction")):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(t, fontsize=8)
    return _save(fig, path)
