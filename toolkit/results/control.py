"""IoU change against the dense control that had the same training.

A pruned model fine-tuned for N steps is compared with the dense model trained
on for the same N steps (the ``dense`` baseline cell of the same architecture,
dataset, seed and recovery budget), not with the dense model before pruning:
otherwise extra training counts as the method's gain. Where a row has no such
control, its change is against the dense model before pruning, and the row
says so (``delta_reference``).
"""
from __future__ import annotations

from typing import Any, Iterable

CONTROL = "dense"  # the baseline plugin that prunes nothing and trains on for the same budget
VS_CONTROL = "same-budget dense control"
VS_DENSE = "dense before pruning"


def recovery_steps(row: dict[str, Any]) -> int | None:
    """A row's recovery budget, the steps trained after pruning; a row written before the column
    existed has it as its total budget less the dense training (``toolkit.runner.cell``)."""
    if row.get("recovery_steps") is not None:
        return int(row["recovery_steps"])
    if row.get("budget_steps") is None:
        return None
    return int(row["budget_steps"]) - int(row.get("steps_train") or 0)


def control_key(row: dict[str, Any]) -> tuple:
    """What a row and its control share: architecture, dataset, seed and recovery budget."""
    return row.get("arch"), row.get("dataset"), row.get("seed"), recovery_steps(row)


def is_control(row: dict[str, Any]) -> bool:
    return row.get("plugin") == CONTROL and float(row.get("target", 0) or 0) == 0.0


def controls(rows: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """The finished control of each (arch, dataset, seed, recovery budget)."""
    return {control_key(r): r for r in rows if r.get("status") == "ok" and is_control(r)}


def with_deltas(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows, each finished one with ``test_iou_delta`` (test IoU minus its reference's) and
    ``delta_reference`` (against which: ``VS_CONTROL`` where a control exists, else ``VS_DENSE``)."""
    rows = list(rows)
    found = controls(rows)
    out = []
    for r in rows:
        if r.get("status") != "ok" or r.get("test_iou_pruned") is None:
            out.append(r)
            continue
        control = found.get(control_key(r))
        if control is not None:
            delta, reference = r["test_iou_pruned"] - control["test_iou_pruned"], VS_CONTROL
        else:
            delta, reference = r.get("test_iou_change"), VS_DENSE
        out.append({**r, "test_iou_delta": delta, "delta_reference": reference})
    return out
