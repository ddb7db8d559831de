"""IoU per class and mean, accumulated over a whole split with smp's metrics.

Counts (tp, fp, fn) are summed over every pixel of the split before dividing,
so a small image weighs as much as its pixels. A class that appears neither in
the ground truth nor in the predictions has no IoU (NaN) and is left out of the
mean. Whether background counts in the mean is a setting: corrosion papers
usually report the mean over the damage classes only. Void pixels (the
dataset's ``ignore_index``) are in no count: neither a hit nor a miss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import segmentation_models_pytorch as smp
import torch


@dataclass
class IoU:
    per_class: list[float]
    include_background: bool

    @property
    def mean(self) -> float:
        values = self.per_class if self.include_background else self.per_class[1:]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) / len(values) if values else float("nan")


@dataclass
class IoUMeter:
    """Sums smp's confusion counts batch by batch."""

    num_classes: int
    include_background: bool = False
    ignore_index: int | None = None
    _tp: torch.Tensor = field(init=False)
    _fp: torch.Tensor = field(init=False)
    _fn: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self._tp = torch.zeros(self.num_classes, dtype=torch.long)
        self._fp = torch.zeros_like(self._tp)
        self._fn = torch.zeros_like(self._tp)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        pred = logits.argmax(dim=1)
        tp, fp, fn, _ = smp.metrics.get_stats(pred, target, mode="multiclass", num_classes=self.num_classes,
                                              ignore_index=self.ignore_index)
        self._tp += tp.sum(0).cpu()
        self._fp += fp.sum(0).cpu()
        self._fn += fn.sum(0).cpu()

    def compute(self) -> IoU:
        union = (self._tp + self._fp + self._fn).double()
        per_class = torch.where(union > 0, self._tp.double() / union.clamp(min=1), torch.nan)
        return IoU([float(v) for v in per_class], self.include_background)


def iou(
    logits: torch.Tensor, target: torch.Tensor, num_classes: int, include_background: bool = False,
    ignore_index: int | None = None,
) -> IoU:
    meter = IoUMeter(num_classes, include_background, ignore_index)
    meter.update(logits, target)
    return meter.compute()
