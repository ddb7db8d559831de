"""Repeats over seeds: one aggregate row per (arch, dataset, pruner, target, recovery budget) with mean, std and n.

Every numeric column is averaged; ``<column>_std`` is the sample standard
deviation (n - 1 in the denominator, 0 for a single seed). A column whose
values are identical across seeds (parameters and FLOPs of a structured
pruner at a fixed rate) has std 0 and the tables print it once, without ±.
Lists of numbers (per-class IoU) are averaged element by element.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any, Iterable, Sequence

from toolkit.results.control import VS_DENSE

GROUP = ("arch", "dataset", "method", "target_kind", "target", "recovery_steps")
IDENTITY = (*GROUP, "plugin", "kind", "backend", "class_names", "latency_device", "latency_gpu_device", "latency_input", "encoder",
            "image_size", "delta_reference")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(float(value)) else float(value)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def group_key(row: dict[str, Any]) -> tuple:
    return tuple(row.get(k) for k in GROUP)


def combine(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One aggregate of rows that differ only in their seed."""
    first = rows[0]
    out: dict[str, Any] = {k: first[k] for k in IDENTITY if k in first}
    out["n"] = len(rows)
    out["seeds"] = sorted({r.get("seed") for r in rows}, key=str)
    out["seed"] = "all"
    out["status"] = "ok"
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys and k not in out)
    for key in keys:
        values = [r.get(key) for r in rows]
        numbers = [n for n in map(_number, values) if n is not None]
        if numbers and len(numbers) == sum(v is not None for v in values):
            out[key], out[f"{key}_std"] = mean_std(numbers)
        elif all(isinstance(v, bool) for v in values):
            out[key] = all(values)  # e.g. target_met: met by every seed
        elif all(isinstance(v, list) and v and all(_number(x) is not None or x is None for x in v) for v in values):
            columns = list(zip(*values))
            stats = [mean_std([x for x in col if _number(x) is not None]) for col in columns]
            out[key] = [m for m, _ in stats]
            out[f"{key}_std"] = [s for _, s in stats]
        elif all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in values):
            out[key] = list(dict.fromkeys(x for v in values for x in v))  # e.g. warnings: any seed's
    return out


def aggregate(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregates of the finished rows, one per (arch, dataset, pruner, target), in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok":
            groups[group_key(r)].append(r)
    return [combine(members) for members in groups.values()]


def dense_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dense model of every (arch, dataset, seed), read off its cells' ``*_dense`` columns, aggregated over seeds."""
    per_seed: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["arch"], r["dataset"], r.get("seed"))
        if r.get("status") != "ok" or key in per_seed:
            continue
        dense = {"arch": r["arch"], "dataset": r["dataset"], "seed": r.get("seed"), "method": "(dense)", "plugin": "(dense)", "kind": "",
                 "target_kind": "", "target": 0.0, "status": "ok", "class_names": r.get("class_names"),
                 "budget_steps": r.get("steps_train"), "latency_device": r.get("latency_device"),
                 "latency_gpu_device": r.get("latency_gpu_device"), "reached": 0.0, "channel_rate": 0.0}
        for key_name, value in r.items():
            if key_name.endswith("_dense"):
                dense[key_name.removesuffix("_dense") + "_pruned"] = value
        dense.update(params_reduction=0.0, flops_reduction=0.0, latency_speedup=1.0, test_iou_change=0.0,
                     recovery_steps=0, test_iou_delta=0.0, delta_reference=VS_DENSE)
        dense.update({k: 1.0 for k in r if k.endswith("_speedup")})  # every runtime's, in-grid and re-timed
        if "latency_gpu_ms_pruned" in dense:
            dense["latency_gpu_speedup"] = 1.0
        per_seed[key] = dense
    return aggregate(per_seed.values())
