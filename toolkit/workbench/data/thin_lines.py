"""A generated binary dataset of thin cracks: dark polylines 1-2 px wide on noise (not real data).

It stands in for the hard case of defect inspection that the corrosion-style
data never shows: a foreground of about 1.5% of the pixels, one or two pixels
wide, visible against the noise only along its length. A model that predicts
background everywhere already scores 98.5% pixel accuracy, which is what the
research recipe settles for; ``tests/test_recipes.py`` and
``benchmarks/recipes.py`` use it to choose the robust recipe. Image ``i`` of
seed ``s`` is always the same picture.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from toolkit.contract import DataRequest, Listing
from toolkit.workbench.data import synthetic

CLASS_NAMES = ["background", "crack"]
DEFAULT_COUNT = 200
DESCRIPTION = "thin lines (generated cracks 1-2 px wide on noise, binary; not real data)"


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point (K x 2) to the segment a-b."""
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def _crack(rng: np.random.Generator, size: int) -> list[np.ndarray]:
    """A random walk of 2-4 straight pieces, each turning up to 35 degrees."""
    point = rng.uniform(0.1 * size, 0.9 * size, 2)
    angle = rng.uniform(0, 2 * np.pi)
    vertices = [point]
    for _ in range(int(rng.integers(2, 5))):
        angle += rng.uniform(-0.6, 0.6)
        point = point + rng.uniform(size / 10, size / 5) * np.array([np.cos(angle), np.sin(angle)])
        vertices.append(point)
    return vertices


def make_sample(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of generator ``seed``: (size x size x 3 uint8, size x size ids 0/1)."""
    rng = np.random.default_rng([seed, index, 15])
    coarse = rng.normal(0, 1, (4, 4)).astype(np.float32)
    shading = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    image = rng.uniform(110, 150) + 8 * shading + rng.normal(0, rng.uniform(10, 16), (size, size))
    ys, xs = np.mgrid[0:size, 0:size]
    points = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1).astype(np.float64)
    mask = np.zeros(size * size, bool)
    cracks = 0 if rng.random() < 0.15 else int(rng.integers(1, 3))  # some plates are clean
    for _ in range(cracks):
        vertices = _crack(rng, size)
        half_width = 0.5 if rng.random() < 0.5 else 1.0  # 1 or 2 px wide
        near = np.full(size * size, np.inf)
        for a, b in zip(vertices[:-1], vertices[1:]):
            near = np.minimum(near, _segment_distance(points, a, b))
        line = near <= half_width
        image.ravel()[line] -= rng.uniform(30, 45)  # cracks are dark
        mask |= line
    grey = np.clip(image, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), mask.reshape(size, size).astype(np.uint8)


def list_thin_lines(request: DataRequest) -> Listing:
    """``limit`` (default 200) generated thin-crack images."""
    return synthetic.generated_listing(request, make_sample, "thin-lines", DEFAULT_COUNT, CLASS_NAMES, DESCRIPTION)
