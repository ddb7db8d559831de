"""Logits of a large image from overlapping windows, for when the whole image does not fit.

A model trained on crops can be evaluated on the whole image (convolutions do
not care about the size); ``eval_window`` is for images too large for memory.
Overlapping windows' logits are averaged, so a pixel near a window's border,
which saw less context, is also judged from a window where it sits inside.
"""
from __future__ import annotations

import torch
from torch import nn


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Starts that cover ``0..length`` with ``window``-long pieces, the last flush with the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


@torch.no_grad()
def sliding_window_logits(model: nn.Module, x: torch.Tensor, window: int, overlap: float = 0.25) -> torch.Tensor:
    """Logits N,C,H,W of ``x`` from ``window`` x ``window`` tiles overlapping by ``overlap``."""
    height, width = x.shape[-2:]
    stride = max(1, int(window * (1 - overlap)))
    total: torch.Tensor | None = None
    count = torch.zeros(1, 1, height, width, dtype=x.dtype, device=x.device)
    for top in window_starts(height, window, stride):
        for left in window_starts(width, window, stride):
            logits = model(x[..., top:top + window, left:left + window])
            if total is None:
                total = torch.zeros(x.shape[0], logits.shape[1], height, width, dtype=logits.dtype, device=x.device)
            total[..., top:top + window, left:left + window] += logits
            count[..., top:top + window, left:left + window] += 1
    assert total is not None
    return total / count
