"""The generated thin-lines data: deterministic, binary, thin and rare foreground."""
from __future__ import annotations

import numpy as np
import torch

from toolkit.workbench.data import list_datasets, load_splits
from toolkit.workbench.data.thin_lines import make_sample


def test_same_seed_same_picture_and_named_as_generated():
    a, b = make_sample(3, 7, 64), make_sample(3, 7, 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], make_sample(4, 7, 64)[0])
    assert "not real data" in list_datasets()["thin-lines"]


def test_cracks_are_rare_thin_and_darker_than_the_plate():
    images, masks = map(np.stack, zip(*(make_sample(0, i, 64) for i in range(100))))
    assert set(np.unique(masks)) == {0, 1}
    assert 0.005 < masks.mean() < 0.03, "about 1.5% crack pixels"
    m = torch.from_numpy(masks).float()[:, None]
    inner = torch.nn.functional.max_pool2d(-m, 3, stride=1, padding=1).neg()  # erosion by 3x3
    assert inner.sum() < 0.05 * m.sum(), "almost no crack pixel has a 3x3 neighbourhood of crack: 1-2 px wide"
    grey = images[..., 0].astype(float)
    assert grey[masks == 1].mean() < grey[masks == 0].mean() - 20


def test_load_splits_reads_it_as_binary_segmentation():
    splits = load_splits("thin-lines", image_size=64, limit=20)
    assert splits.class_names == ["background", "crack"] and splits.num_classes == 2
    x, y = splits.train[0]
    assert x.shape == (3, 64, 64) and y.shape == (64, 64)
