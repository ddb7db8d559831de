"""The torch ``Dataset`` every format ends in: decoded arrays, joint augmentation, normalisation.

Images and masks are held in memory as uint8 at the training size (128 px x
1,000 images is 64 MB), so an epoch costs only the model. Augmentation is the
research's: affine (rotation, scaling, shift), flips and a random crop, drawn
once per sample and applied to image and mask together by torchvision's v2
transforms (masks are resampled nearest-neighbour; what rotation and shift
bring in from outside the image is background, or void where the dataset has
a void value: no label was ever given there).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

Triple = tuple[float, float, float]


def paper_augmentation(size: int, mask_fill: int = 0) -> v2.Compose:
    """Affine, flip, rotation, scaling and random crop, for image and mask at once; ``mask_fill`` labels the
    pixels the affine brings in from outside the image."""
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomAffine(degrees=20, translate=(0.1, 0.1), scale=(0.8, 1.2),
                        fill={tv_tensors.Image: 0, tv_tensors.Mask: mask_fill}),
        v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
    ])


class SegmentationDataset(Dataset):
    """(image float 3xHxW normalised, mask long HxW) pairs from uint8 arrays."""

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        names: Sequence[str],
        mean: Triple,
        std: Triple,
        augment: bool = False,
        strata: Sequence[str] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        if len(images) != len(masks) or len(images) != len(names):
            raise ValueError("images, masks and names must have the same length")
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # N,3,H,W uint8
        self.masks = torch.from_numpy(np.ascontiguousarray(masks))
        self.names = list(names)
        self.strata = list(strata) if strata is not None else ["all"] * len(self.names)  # for balanced sampling
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.ignore_index = ignore_index  # void pixels' value: padding is void too, never background
        fill = 0 if ignore_index is None else ignore_index
        self.augment = paper_augmentation(images.shape[1], fill) if augment and len(images) else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = tv_tensors.Image(self.images[index]), tv_tensors.Mask(self.masks[index])
        if self.augment is not None:
            image, mask = self.augment(image, mask)
        x = (image.as_subclass(torch.Tensor).float() / 255.0 - self.mean) / self.std
        return x, mask.as_subclass(torch.Tensor).long()
