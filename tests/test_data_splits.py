"""Splits: seeded, stratified, subsampled in proportion; binary mode; augmentation and normalisation."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from data_helpers import all_samples, make_fake_tile, make_folder, names_of
from toolkit.workbench.data import SegmentationDataset, load_splits
from toolkit.workbench.data.splits import split_indices, subsample

COUNTS = {"Free": 24, "Crack": 6, "Fray": 4}


@pytest.fixture(scope="module")
def tile(tmp_path_factory):
    """A magnetic-tile-shaped folder with one big and two rare classes (stems are ``<class>-<i>``)."""
    root = tmp_path_factory.mktemp("tile")
    make_fake_tile(root, COUNTS)
    return f"magnetic-tile:{root}"


def _classes(names) -> Counter:
    return Counter(n.split("-")[0] for n in names)


# -- the split functions themselves --------------------------------------------------------------

def test_split_indices_takes_a_fraction_of_each_stratum():
    strata = ["x"] * 10 + ["y"] * 3 + ["z"] * 1 + ["w"] * 2
    kept, taken = split_indices(strata, 0.2, np.random.default_rng(0))
    assert sorted(kept + taken) == list(range(len(strata)))
    # y and w: at least one of any stratum of 2 or more; z: a single image stays in the kept part
    assert Counter(strata[i] for i in taken) == {"x": 2, "y": 1, "w": 1}
    assert Counter(strata[i] for i in kept) == {"x": 8, "y": 2, "z": 1, "w": 1}
    assert kept == sorted(kept) and taken == sorted(taken)


def test_split_indices_never_takes_a_whole_stratum():
    kept, taken = split_indices(["a"] * 4, 0.99, np.random.default_rng(0))
    assert len(kept) == 1 and len(taken) == 3


def test_subsample_is_proportional_and_keeps_rare_strata():
    strata = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    chosen = subsample(strata, 20, np.random.default_rng(0))
    assert len(chosen) == len(set(chosen)) == 20
    assert Counter(strata[i] for i in chosen) == {"a": 12, "b": 6, "c": 2}

    strata = ["a"] * 90 + ["b"] * 9 + ["c"]
    chosen = subsample(strata, 10, np.random.default_rng(0))
    assert Counter(strata[i] for i in chosen) == {"a": 8, "b": 1, "c": 1}  # the single c still gets in


# -- load_splits ---------------------------------------------------------------------------------

def test_same_seed_same_splits_different_seed_different(tile):
    first = load_splits(tile, image_size=16, seed=3)
    again = load_splits(tile, image_size=16, seed=3)
    other = load_splits(tile, image_size=16, seed=4)
    for part in ("train", "val", "test"):
        a, b = getattr(first, part), getattr(again, part)
        assert a.names == b.names
        assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert names_of(first.test) != names_of(other.test)
    assert names_of(first.val) != names_of(other.val)
    # a different seed reshuffles, it does not lose or duplicate anything
    assert sorted(all_samples(first)) == sorted(all_samples(other))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_splits_are_stratified_so_rare_classes_reach_test_and_val(tile, seed):
    splits = load_splits(tile, image_size=16, seed=seed)
    # 20% of each class to test, then 20% of the rest to validation (at least one of a class of 3+)
    assert _classes(splits.test.names) == {"free": 5, "crack": 1, "fray": 1}
    assert _classes(splits.val.names) == {"free": 4, "crack": 1, "fray": 1}
    assert _classes(splits.train.names) == {"free": 15, "crack": 4, "fray": 2}


def test_limit_subsamples_each_class_in_proportion(tile):
    splits = load_splits(tile, image_size=16, limit=17, seed=0)
    names = splits.train.names + splits.val.names + splits.test.names
    assert len(names) == 17
    assert _classes(names) == {"free": 12, "crack": 3, "fray": 2}  # half of 24 / 6 / 4
    assert load_splits(tile, image_size=16, limit=17, seed=0).test.names == splits.test.names


def test_binary_mode_has_two_classes_and_keeps_every_defect_pixel(tile):
    multi = load_splits(tile, image_size=16, seed=0)
    binary = load_splits(tile, image_size=16, seed=0, binary=True)
    assert multi.num_classes == 6
    assert binary.num_classes == 2
    assert binary.class_names == ["background", "defect"]
    assert binary.description.endswith("; binary")
    for part in ("train", "val", "test"):
        m, b = getattr(multi, part), getattr(binary, part)
        assert m.names == b.names
        assert torch.equal(b.masks, (m.masks > 0).to(b.masks.dtype))
    assert any(s.masks.max() == 1 for s in (binary.train, binary.val, binary.test))


def test_binary_corrosion_datasets_name_the_class_corrosion(tmp_path):
    make_folder(tmp_path, count=6, num_classes=4, mask_mode="RGB")
    splits = load_splits(f"sscs:{tmp_path}", image_size=16, binary=True)
    assert splits.class_names == ["background", "corrosion"]
    assert set(np.unique(splits.train.masks.numpy())) == {0, 1}


# -- augmentation --------------------------------------------------------------------------------

def test_train_split_augments_and_val_and_test_do_not(tile):
    torch.manual_seed(0)
    splits = load_splits(tile, image_size=16, seed=0)
    draws = [splits.train[0] for _ in range(4)]
    assert any(not torch.equal(draws[0][0], x) for x, _ in draws[1:])
    for part in (splits.val, splits.test):
        (x1, m1), (x2, m2) = part[0], part[0]
        assert torch.equal(x1, x2) and torch.equal(m1, m2)
        assert torch.equal(m1, part.masks[0].long())  # unaugmented: the stored mask itself

    plain = load_splits(tile, image_size=16, seed=0, augment=False)
    (x1, _), (x2, _) = plain.train[0], plain.train[0]
    assert torch.equal(x1, x2)


def _blobs(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dark images with a few bright rectangles; the mask is the image thresholded (1 where bright)."""
    images = np.full((n, size, size, 3), 30, np.uint8)
    for image in images:
        for _ in range(3):
            top, left = rng.integers(0, size - 10, 2)
            h, w = rng.integers(6, 14, 2)
            image[top : top + h, left : left + w] = 220
    masks = (images[..., 0] > 128).astype(np.uint8)
    return images, masks


def _interior(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    """Pixels whose whole (2r+1)^2 neighbourhood has their label: away from edges and interpolation."""
    h, w = mask.shape
    padded = np.pad(mask, radius, mode="edge")
    same = np.ones_like(mask, bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            same &= padded[dy : dy + h, dx : dx + w] == mask
    return same


def test_augmentation_moves_image_and_mask_together():
    torch.manual_seed(0)
    images, masks = _blobs(4, 48, np.random.default_rng(0))
    data = SegmentationDataset(images, masks, [f"b{i}" for i in range(4)], (0, 0, 0), (1, 1, 1), augment=True)
    changed = 0
    for _ in range(10):
        for i in range(len(data)):
            x, m = data[i]
            grey, m = x[0].numpy() * 255, m.numpy()
            assert set(np.unique(m)) <= {0, 1}  # nearest-neighbour: no new ids
            changed += not np.array_equal(m, masks[i])
            inside = _interior(m)
            defect, clear = inside & (m == 1), inside & (m == 0)
            # away from edges, the mask says "bright" exactly where the transformed image is bright
            assert (grey[defect] > 128).all()
            assert (grey[clear] < 128).all()
            assert defect.sum() > 0 or m.sum() == 0
    assert changed >= 35  # of 40 draws, (almost) all moved


# -- normalisation -------------------------------------------------------------------------------

def test_normalisation_uses_the_given_mean_and_std(tmp_path):
    make_folder(tmp_path, count=6)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    splits = load_splits(f"folder:{tmp_path}", image_size=16, mean=mean, std=std, augment=False)
    for part in (splits.train, splits.val):
        x, _ = part[0]
        raw = np.asarray(Image.open(tmp_path / "images" / f"{part.names[0]}.png").convert("RGB"), np.float64) / 255
        expected = (raw - np.array(mean)) / np.array(std)
        np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)
        assert x.dtype == torch.float32 and x.shape == (3, 16, 16)


def test_default_normalisation_is_imagenet():
    images = np.full((1, 4, 4, 3), 255, np.uint8)
    data = SegmentationDataset(images, np.zeros((1, 4, 4), np.uint8), ["w"], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    x, m = data[0]
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225], rtol=1e-6)
    assert m.dtype == torch.long
    splits_default = load_splits.__kwdefaults__
    assert splits_default["mean"] == (0.485, 0.456, 0.406) and splits_default["std"] == (0.229, 0.224, 0.225)
