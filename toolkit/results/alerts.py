"""Loud failures: the results a reader must not take for ordinary ones.

A cost target missed by more than a point, a layer left with no output
channels, a model at zero test IoU, a cell that trained past its recovery
budget (not comparable with the others): each becomes a short sentence in the row's
``warnings`` list, which the CLI prints on the cell's line and ``report.md``
lists, so it is read where the number is read.
"""
from __future__ import annotations

from typing import Any, Iterable

ZERO_IOU = 0.0005  # below this the IoU prints as 0.000: the model finds no defect


def row_warnings(row: dict[str, Any], empty_layers: Iterable[str] = ()) -> list[str]:
    """The warnings of one finished row (``reached``, ``target_met``, ``test_iou_pruned`` columns, and the
    pruner's ``meta["warnings"]``)."""
    out = []
    if row.get("target_met") is False:
        wanted, got = float(row["target"]), float(row["reached"])
        out.append(f"target {row['target_kind']}={wanted:g} missed by {100 * abs(got - wanted):.1f} points "
                   f"(reached {got:.3f})")
    out.extend((row.get("meta") or {}).get("warnings") or [])  # the pruner's own, e.g. a rounding it had to lower
    empty = list(empty_layers)
    if empty:
        more = f" and {len(empty) - 3} more" if len(empty) > 3 else ""
        out.append(f"{len(empty)} layer(s) left with no channels: {', '.join(empty[:3])}{more}")
    budget, took = row.get("recovery_steps"), (row.get("steps_prune") or 0) + (row.get("steps_finetune") or 0)
    if budget is not None and took > budget and not row.get("from_scratch"):
        out.append(f"trained {took} steps after pruning, over its recovery budget of {budget} "
                   "(a gradual pruner takes a step per pruning step at least)")
    iou = row.get("test_iou_pruned")
    if iou is not None and iou < ZERO_IOU:
        out.append(f"test IoU {iou:.3f}: the model finds no defect")
    return out


def warning_text(row: dict[str, Any]) -> str:
    """``"; WARNING: ..."`` for a line the user reads, or nothing."""
    warnings = row.get("warnings") or []
    return f"; WARNING: {'; '.join(warnings)}" if warnings else ""
