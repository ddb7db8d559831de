"""The built-in default: a procedurally generated, *synthetic* corrosion dataset.

Not real data, and named so everywhere: it exists so the demo and the tests run
offline. Each image is brushed steel (grey, streaked along one direction, with
grain noise and a lighting gradient); rust grows from a smooth random field
whose level sets give nested regions of graded severity, the classes of the
corrosion condition-state datasets: 0 background, 1 fair (thin orange
staining), 2 poor (brown scale), 3 severe (dark pitted rust). Image ``i`` of
seed ``s`` is always the same picture.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from toolkit.contract import DataRequest, Listing, Record

CLASS_NAMES = ["background", "fair", "poor", "severe"]
DEFAULT_COUNT = 400
DESCRIPTION = "synthetic corrosion (procedurally generated steel with rust of graded severity; not real data)"

# rust colours (RGB) and how strongly each severity covers the steel
_RUST = {1: ((196, 120, 60), 0.45), 2: ((140, 70, 30), 0.8), 3: ((70, 35, 20), 0.95)}


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Values in [0, 1] varying smoothly over ``cells`` blobs a side."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))


def _steel(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brushed steel: streaks along a random axis, grain, a soft lighting gradient."""
    streaks = rng.normal(0, 1, (size, 1)).repeat(size, axis=1)
    streaks = np.convolve(streaks[:, 0], np.ones(3) / 3, mode="same")[:, None].repeat(size, axis=1)
    if rng.random() < 0.5:
        streaks = streaks.T
    grain = rng.normal(0, 1, (size, size))
    ramp = np.linspace(-1, 1, size)[None, :] * rng.uniform(-15, 15) + np.linspace(-1, 1, size)[:, None] * rng.uniform(-15, 15)
    grey = rng.uniform(120, 175) + 9 * streaks + 5 * grain + ramp
    tint = np.array([1.0, 1.0, rng.uniform(1.0, 1.06)])  # cold blue-grey to neutral
    return grey[..., None] * tint


def make_sample(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of generator ``seed``: (size x size x 3 uint8, size x size class ids)."""
    rng = np.random.default_rng([seed, index])
    image = _steel(rng, size)
    field = _smooth_field(rng, size, int(rng.integers(3, 7)))
    coverage = rng.uniform(0.0, 0.6)  # share of the plate touched by rust; some plates are clean
    t1 = np.quantile(field, 1 - coverage) if coverage > 0.02 else np.inf
    mask = np.zeros((size, size), np.uint8)
    mask[field >= t1] = 1
    if np.isfinite(t1):
        spread = field.max() - t1
        mask[field >= t1 + spread * rng.uniform(0.3, 0.5)] = 2
        mask[field >= t1 + spread * rng.uniform(0.65, 0.85)] = 3
    texture = rng.normal(0, 1, (size, size, 1))
    for cls, (colour, strength) in _RUST.items():
        where = mask == cls
        if not where.any():
            continue
        rust = np.array(colour, np.float64) + 18 * texture[where]
        if cls == 3:  # pits: darker specks
            rust = rust * np.where(rng.random((int(where.sum()), 1)) < 0.15, 0.5, 1.0)
        image[where] = (1 - strength) * image[where] + strength * rust
    return np.clip(image, 0, 255).astype(np.uint8), mask


Sampler = Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]  # (seed, index, size) -> image, mask


class _Sample:
    """Image ``index`` of ``seed``, generated once for its picture and its mask."""

    def __init__(self, make: Sampler, seed: int, index: int, size: int) -> None:
        self.make, self.seed, self.index, self.size = make, seed, index, size
        self._mask: np.ndarray | None = None

    def image(self) -> Image.Image:
        image, self._mask = self.make(self.seed, self.index, self.size)
        return Image.fromarray(image)

    def mask(self, size: tuple[int, int]) -> np.ndarray:
        mask, self._mask = self._mask, None
        return mask if mask is not None else self.make(self.seed, self.index, self.size)[1]


def generated_listing(request: DataRequest, make: Sampler, prefix: str, count: int,
                      class_names: list[str], description: str) -> Listing:
    """``request.limit`` (default ``count``) generated records at the training size, read like any format's."""
    records = []
    for i in range(request.limit or count):
        sample = _Sample(make, request.seed, i, request.image_size)
        records.append(Record(Path(f"{prefix}-{i:04d}"), sample.mask, "generated mask", "all", read_image=sample.image))
    return Listing(records, None, list(class_names), description)


def list_synthetic(request: DataRequest) -> Listing:
    """``limit`` (default 400) generated corrosion images."""
    return generated_listing(request, make_sample, "synthetic", DEFAULT_COUNT, CLASS_NAMES, DESCRIPTION)
