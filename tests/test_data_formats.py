"""Each real dataset format on a tiny fixture, with masks decoded and checked pixel for pixel.

Square fixtures are loaded at their own size (``image_size`` = the fixture's),
so the loaded arrays equal the files; non-square ones are checked through the
format's records, whose ``mask((w, h))`` gives the mask at native size.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data_helpers import (
    SEVERSTAL_H, SEVERSTAL_IMAGES, SEVERSTAL_W, all_samples, make_fake_tile, make_folder, make_severstal,
    names_of, save_mask, severstal_expected, write_toml,
)
from toolkit.workbench.data import load_splits, parse_source, rle_decode, rle_encode
from toolkit.workbench.data.folder import NEA, SSCS, VOC_PALETTE, list_folder, read_mask
from toolkit.workbench.data.severstal import list_severstal
from toolkit.errors import DataError


# -- folder ------------------------------------------------------------------------------------

def test_folder_grey_masks_decode_exactly_and_class_names_are_inferred(tmp_path):
    root = tmp_path / "ds"
    expected = make_folder(root, count=6, size=(16, 16), num_classes=4, mask_mode="L")
    splits = load_splits(f"folder:{root}", image_size=16, seed=0)

    assert splits.class_names == ["background", "class-1", "class-2", "class-3"]
    assert splits.num_classes == 4
    samples = all_samples(splits)
    assert sorted(samples) == sorted(expected)
    for stem, ids in expected.items():
        np.testing.assert_array_equal(samples[stem][1], ids, err_msg=stem)
        image = np.asarray(Image.open(root / "images" / f"{stem}.png").convert("RGB"))
        np.testing.assert_array_equal(samples[stem][0], image, err_msg=stem)
    assert "folder dataset ds" in splits.description


def test_folder_indexed_masks_read_as_class_ids_with_names_from_dataset_toml(tmp_path):
    root = tmp_path / "ds"
    expected = make_folder(root, count=6, size=(16, 16), num_classes=3, mask_mode="P")
    write_toml(root, 'classes = ["background", "rust", "paint"]\n')
    assert Image.open(root / "masks" / "img0.png").mode == "P"

    splits = load_splits(f"folder:{root}", image_size=16)
    assert splits.class_names == ["background", "rust", "paint"]
    assert splits.num_classes == 3
    samples = all_samples(splits)
    for stem, ids in expected.items():
        np.testing.assert_array_equal(samples[stem][1], ids, err_msg=stem)


@pytest.mark.parametrize("mode", ["L", "P"])
def test_folder_records_give_native_size_masks_for_non_square_images(tmp_path, mode):
    root = tmp_path / "ds"
    expected = make_folder(root, count=3, size=(20, 16), num_classes=4, mask_mode=mode, mask_suffix="_mask")
    listing = list_folder(root)
    assert listing.test is None
    assert [r.image.stem for r in listing.train] == sorted(expected)
    for record in listing.train:
        mask = record.mask((20, 16))
        assert mask.shape == (16, 20)
        np.testing.assert_array_equal(mask, expected[record.image.stem])
        assert record.mask_source.endswith(f"{record.image.stem}_mask.png")


def test_folder_colour_masks_map_through_the_dataset_toml_palette(tmp_path):
    root = tmp_path / "ds"
    palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
    expected = make_folder(root, count=6, size=(16, 16), num_classes=4, mask_mode="RGB", palette=palette)
    write_toml(root, 'classes = ["bg", "red", "green", "blue"]\n'
                     'palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]\n')
    assert Image.open(root / "masks" / "img0.png").mode == "RGB"

    splits = load_splits(f"folder:{root}", image_size=16)
    assert splits.class_names == ["bg", "red", "green", "blue"]
    samples = all_samples(splits)
    for stem, ids in expected.items():
        np.testing.assert_array_equal(samples[stem][1], ids, err_msg=stem)


def test_colour_mask_whose_palette_colours_are_grey_goes_through_the_palette(tmp_path):
    """White-on-black masks saved as RGB with palette [[0,0,0],[255,255,255]] are classes 0 and 1, not 0 and 255."""
    ids = np.zeros((4, 5), np.uint8)
    ids[1:3, 2:] = 1
    save_mask(tmp_path / "m.png", ids, "RGB", palette=[(0, 0, 0), (255, 255, 255)])
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", [(0, 0, 0), (255, 255, 255)]), ids)


def test_grey_mask_saved_as_rgb_holds_class_ids(tmp_path):
    ids = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    Image.fromarray(np.repeat(ids[..., None], 3, axis=2)).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", list(VOC_PALETTE)), ids)


def test_folder_train_and_test_subfolders_become_the_given_test_split(tmp_path):
    root = tmp_path / "ds"
    train = make_folder(root / "train", count=6, size=(16, 16), prefix="tr", images_dir="Images", masks_dir="Masks")
    test = make_folder(root / "test", count=2, size=(16, 16), prefix="te", seed=1)

    listing = list_folder(root)
    assert {r.stratum for r in listing.train} == {"train"}
    assert [r.image.stem for r in listing.test] == ["te0", "te1"]

    for seed in (0, 1, 2):
        splits = load_splits(f"folder:{root}", image_size=16, seed=seed)
        assert names_of(splits.test) == ["te0", "te1"]
        assert sorted(splits.train.names + splits.val.names) == sorted(train)
        assert len(splits.val) == 1  # 20% of the 6 training images
    samples = all_samples(splits)
    for stem, ids in {**train, **test}.items():
        np.testing.assert_array_equal(samples[stem][1], ids, err_msg=stem)


# -- SSCS and NEA (folder layout with fixed classes) -------------------------------------------

def test_sscs_colour_masks_with_the_default_voc_palette(tmp_path):
    root = tmp_path / "sscs"
    expected = make_folder(root, count=6, size=(16, 16), num_classes=4, mask_mode="RGB")  # VOC colours
    # spot-check the colours written: class 1 is VOC dark red, 3 is olive
    rgb = np.asarray(Image.open(root / "masks" / "img0.png"))
    assert tuple(rgb[expected["img0"] == 1][0]) == (128, 0, 0)
    assert tuple(rgb[expected["img0"] == 3][0]) == (128, 128, 0)

    splits = load_splits(f"sscs:{root}", image_size=16)
    assert splits.class_names == ["background", "fair", "poor", "severe"] == SSCS.class_names
    assert splits.num_classes == 4
    assert "SSCS" in splits.description
    samples = all_samples(splits)
    for stem, ids in expected.items():
        np.testing.assert_array_equal(samples[stem][1], ids, err_msg=stem)


def test_nea_has_three_classes(tmp_path):
    root = tmp_path / "nea"
    expected = make_folder(root, count=6, size=(16, 16), num_classes=3, mask_mode="L")
    splits = load_splits(f"nea:{root}", image_size=16)
    assert splits.num_classes == 3
    assert splits.class_names == ["background", "corrosion-light", "corrosion-heavy"] == NEA.class_names
    assert "NEA" in splits.description
    samples = all_samples(splits)
    for stem, ids in expected.items():
        np.testing.assert_array_equal(samples[stem][1], ids, err_msg=stem)


# -- bare folders: the format is recognised from the files -------------------------------------

def test_bare_folder_format_is_recognised(tmp_path):
    make_folder(tmp_path / "plain", count=1)
    make_severstal(tmp_path / "steel")
    make_fake_tile(tmp_path / "tile", {"Free": 1})
    assert parse_source(str(tmp_path / "plain")) == ("folder", str(tmp_path / "plain"))
    assert parse_source(str(tmp_path / "steel")) == ("severstal", str(tmp_path / "steel"))
    assert parse_source(str(tmp_path / "tile")) == ("magnetic-tile", str(tmp_path / "tile"))
    assert parse_source(f"nea:{tmp_path}") == ("nea", str(tmp_path))
    assert parse_source("synthetic") == ("synthetic", None)


# -- Severstal ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["new", "old"])
def test_severstal_records_decode_class_ids_pixel_exact(tmp_path, layout):
    make_severstal(tmp_path, layout)
    listing = list_severstal(tmp_path)
    assert listing.class_names == ["background", "defect-1", "defect-2", "defect-3", "defect-4"]
    assert listing.test is None
    expected = severstal_expected()
    records = {r.image.name: r for r in listing.train}
    assert sorted(records) == SEVERSTAL_IMAGES
    for name, record in records.items():
        mask = record.mask((SEVERSTAL_W, SEVERSTAL_H))
        np.testing.assert_array_equal(mask, expected[name], err_msg=name)
    # images without rows (or with only empty EncodedPixels) are all background
    for name in ("c.jpg", "d.jpg", "e.jpg", "f.jpg"):
        assert not records[name].mask((SEVERSTAL_W, SEVERSTAL_H)).any()
    assert {n: r.stratum for n, r in records.items()} == {
        "a.jpg": "1+3", "b.jpg": "2+4", "c.jpg": "none", "d.jpg": "none", "e.jpg": "none", "f.jpg": "none",
    }
    assert "train.csv:" in records["a.jpg"].mask_source


@pytest.mark.parametrize("layout", ["new", "old"])
def test_severstal_load_splits(tmp_path, layout):
    make_severstal(tmp_path, layout)
    splits = load_splits(f"severstal:{tmp_path}", image_size=32)
    assert splits.num_classes == 5
    assert "Severstal" in splits.description
    samples = all_samples(splits)
    assert sorted(samples) == sorted(n[:-4] for n in SEVERSTAL_IMAGES)
    for name, ids in severstal_expected().items():
        resized = np.asarray(Image.fromarray(ids).resize((32, 32), Image.Resampling.NEAREST))
        np.testing.assert_array_equal(samples[name[:-4]][1], resized, err_msg=name)
    assert set(np.unique(samples["a"][1])) == {0, 1, 3}
    assert not samples["c"][1].any()


# -- RLE ---------------------------------------------------------------------------------------

def test_rle_hand_computed_small_example():
    # 3 rows x 2 columns; pixels are numbered down the columns from 1:  1 4
    #                                                                  2 5
    #                                                                  3 6
    # "1 2 5 1" sets pixels 1, 2 and 5: (row 0, col 0), (row 1, col 0), (row 1, col 1)
    expected = np.array([[1, 0], [1, 1], [0, 0]], np.uint8)
    np.testing.assert_array_equal(rle_decode("1 2 5 1", (3, 2)), expected)
    assert rle_encode(expected) == "1 2 5 1"


def test_rle_run_wraps_into_the_next_column():
    # 3 x 4: "2 3" covers pixels 2, 3 (column 0 rows 1-2) and 4 (column 1 row 0); "10 2" is column 3 rows 0-1
    expected = np.array([[0, 1, 0, 1], [1, 0, 0, 1], [1, 0, 0, 0]], np.uint8)
    np.testing.assert_array_equal(rle_decode("2 3 10 2", (3, 4)), expected)
    assert rle_encode(expected) == "2 3 10 2"


def test_rle_edge_cases():
    assert rle_encode(np.zeros((4, 3))) == ""
    assert not rle_decode("", (4, 3)).any()
    assert rle_encode(np.ones((4, 3))) == "1 12"
    assert rle_decode("1 12", (4, 3)).all()
    assert rle_encode(np.array([[0, 0], [0, 7]])) == "4 1"  # any nonzero value counts


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (7, 5), (16, 40), (256, 16)])
@pytest.mark.parametrize("density", [0.05, 0.5, 0.95])
def test_rle_round_trip_on_random_masks(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    mask = (rng.random(shape) < density).astype(np.uint8)
    code = rle_encode(mask)
    np.testing.assert_array_equal(rle_decode(code, shape), mask)
    if code:  # runs are in increasing order, disjoint and not touching (else they would be one run)
        values = np.array(code.split(), int).reshape(-1, 2)
        assert (values[:, 1] > 0).all()
        assert (values[1:, 0] > values[:-1, 0] + values[:-1, 1]).all()


@pytest.mark.parametrize("code, message", [
    ("1 2 5", "odd number of values (3)"),
    ("5 3", "run 5 3 lies outside a 3x2 image"),
    ("0 1", "run 0 1 lies outside"),
    ("1 x", "must be integers"),
])
def test_rle_decode_errors_name_where(code, message):
    with pytest.raises(DataError, match="train.csv:7") as info:
        rle_decode(code, (3, 2), where="train.csv:7")
    assert message in str(info.value)
