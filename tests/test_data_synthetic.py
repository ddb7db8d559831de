"""The built-in synthetic dataset: deterministic by seed, four classes, and called synthetic."""
from __future__ import annotations

import numpy as np
import torch

from toolkit.contract import DataRequest
from toolkit.workbench.data import list_datasets, load_splits
from toolkit.workbench.data import synthetic


def test_same_seed_same_pixels_different_seed_different():
    a_img, a_mask = synthetic.make_sample(7, 3, 32)
    b_img, b_mask = synthetic.make_sample(7, 3, 32)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_img, _ = synthetic.make_sample(8, 3, 32)
    d_img, _ = synthetic.make_sample(7, 4, 32)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_img, d_img)
    assert a_img.shape == (32, 32, 3) and a_img.dtype == np.uint8
    assert a_mask.shape == (32, 32) and a_mask.dtype == np.uint8


def test_image_i_does_not_depend_on_how_many_are_made():
    few = synthetic.list_synthetic(DataRequest(None, seed=0, image_size=32, limit=3)).train
    more = synthetic.list_synthetic(DataRequest(None, seed=0, image_size=32, limit=6)).train
    assert [r.image.name for r in few] == [r.image.name for r in more[:3]]
    for a, b in zip(few, more):
        np.testing.assert_array_equal(np.asarray(a.read_image()), np.asarray(b.read_image()))
        np.testing.assert_array_equal(a.mask((32, 32)), b.mask((32, 32)))


def test_load_splits_is_reproducible_by_seed():
    a = load_splits("synthetic", image_size=32, seed=5, limit=20)
    b = load_splits("synthetic", image_size=32, seed=5, limit=20)
    for part in ("train", "val", "test"):
        assert getattr(a, part).names == getattr(b, part).names
        assert torch.equal(getattr(a, part).images, getattr(b, part).images)
        assert torch.equal(getattr(a, part).masks, getattr(b, part).masks)
    c = load_splits("synthetic", image_size=32, seed=6, limit=20)
    assert not torch.equal(a.test.images, c.test.images)


def test_four_classes_all_present_and_named_synthetic():
    splits = load_splits("synthetic", image_size=32, limit=12)
    assert splits.num_classes == 4
    assert splits.class_names == ["background", "fair", "poor", "severe"]
    assert "synthetic" in splits.description and "not real data" in splits.description
    assert "not real data" in list_datasets()["synthetic"]
    masks = torch.cat([splits.train.masks, splits.val.masks, splits.test.masks])
    assert set(torch.unique(masks).tolist()) == {0, 1, 2, 3}
    assert len(masks) == 12


def test_rust_is_drawn_where_the_mask_says():
    """Class pixels are rust-coloured (red above blue); background is blue-grey steel (blue at least red)."""
    image, mask = synthetic.make_sample(0, 0, 64)
    image = image.astype(int)
    assert (mask > 0).any() and (mask == 0).any()
    redness = image[..., 0] - image[..., 2]
    assert redness[mask == 1].mean() > 20
    assert redness[mask == 0].mean() < 5


def test_default_is_400_images():
    splits = load_splits("synthetic", image_size=32)
    assert len(splits.train) + len(splits.val) + len(splits.test) == synthetic.DEFAULT_COUNT == 400
    assert (len(splits.train), len(splits.val), len(splits.test)) == (256, 64, 80)
    names = splits.train.names + splits.val.names + splits.test.names
    assert len(set(names)) == 400


def test_reading_bar_shows_unless_progress_is_off(capsys):
    """A long read shows a bar on stderr; --no-progress (progress=False) keeps logs free of it."""
    load_splits("synthetic", image_size=16, limit=220)
    assert "reading synthetic" in capsys.readouterr().err
    load_splits("synthetic", image_size=16, limit=220, progress=False)
    assert "reading synthetic" not in capsys.readouterr().err
