"""Training on random crops of images held at full resolution.

A crack one or two pixels wide vanishes when a 350 px tile is shrunk to
128 px. Holding images at a larger ``image_size`` and training on
``crop_size`` crops keeps the cost of a step at the crop's size while the
defect keeps its width; evaluation then runs on the whole image (or in
windows, see ``sliding_window.py``).

Where defects cover 0.5% of an image, most uniform crops hold none. As in
nnU-Net (Isensee et al. 2021), a crop is centred on a foreground pixel with
probability ``foreground_prob``: first a foreground class present in the mask
is drawn uniformly, then one of its pixels, so a rare class is not outvoted by
a large one in the same image; void pixels (``ignore_index``) are no defect to
centre on. The crop is cut from the already augmented sample, so image and
mask stay aligned and the augmentation sees the whole image.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset


def crop_origin(
    mask: torch.Tensor, size: int, foreground_prob: float = 0.0, ignore_index: int | None = None
) -> tuple[int, int]:
    """Top-left corner of a ``size`` crop of ``mask`` (H x W class ids), from torch's global RNG."""
    height, width = mask.shape[-2:]
    top_max, left_max = max(0, height - size), max(0, width - size)
    if foreground_prob > 0 and float(torch.rand(())) < foreground_prob:
        classes = torch.unique(mask)
        classes = classes[(classes > 0) & (classes != (-1 if ignore_index is None else ignore_index))]
        if len(classes):
            cls = classes[torch.randint(len(classes), ())]
            rows, cols = torch.nonzero(mask == cls, as_tuple=True)
            k = int(torch.randint(len(rows), ()))
            top = min(max(0, int(rows[k]) - size // 2), top_max)
            left = min(max(0, int(cols[k]) - size // 2), left_max)
            return top, left
    return int(torch.randint(top_max + 1, ())), int(torch.randint(left_max + 1, ()))


class RandomCrops(Dataset):
    """``base``'s (image, mask) pairs, each cut to a random ``size`` x ``size`` crop."""

    def __init__(self, base: Dataset, size: int, foreground_prob: float = 0.0, ignore_index: int | None = None) -> None:
        self.base, self.size, self.foreground_prob = base, int(size), float(foreground_prob)
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.base[index]
        top, left = crop_origin(y, self.size, self.foreground_prob, self.ignore_index)
        return x[..., top:top + self.size, left:left + self.size], y[..., top:top + self.size, left:left + self.size]

    @property
    def strata(self) -> list[str] | None:
        """The base's strata, so balanced sampling still sees the class folders."""
        return getattr(self.base, "strata", None)

    @property
    def masks(self) -> torch.Tensor | None:
        """The base's full-size masks, for counting class pixels."""
        return getattr(self.base, "masks", None)
