"""magnetic-tile: the loader on a look-alike fixture (always), and on the real data (skipped when absent).

The real set (``shared/data/magnetic-tile``, see shared/data/README.md) is
checked by hand against a few files: masks are thresholded independently here
with PIL and numpy and compared with what the loader gives.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_helpers import all_samples, make_fake_tile
from toolkit.workbench.data import load_splits
from toolkit.workbench.data.magnetic_tile import CLASS_NAMES, list_magnetic_tile, locate
from toolkit.errors import DataError

README_COUNTS = {"Blowhole": 115, "Break": 85, "Crack": 57, "Fray": 32, "Uneven": 103, "Free": 952}


def _threshold(png: Path) -> np.ndarray:
    """The README's rule, done here independently of the loader: grey level > 127 is defect."""
    return np.asarray(Image.open(png).convert("L")).astype(np.int64) > 127


# -- look-alike fixture: runs everywhere -----------------------------------------------------------

def test_fixture_masks_are_thresholded_and_take_the_folder_class(tmp_path):
    greys = make_fake_tile(tmp_path, {"Crack": 2, "Free": 2, "Uneven": 1})
    listing = list_magnetic_tile(tmp_path)
    assert listing.class_names == ["background", "blowhole", "break", "crack", "fray", "uneven"]
    assert [r.image.stem for r in listing.train] == ["crack-0", "crack-1", "free-0", "free-1", "uneven-0"]
    ids = {"Crack": 3, "Free": 0, "Uneven": 5}
    for record in listing.train:
        grey = greys[record.image.stem]
        mask = record.mask((20, 16))
        expected = np.where(grey > 127, ids[record.stratum], 0)
        np.testing.assert_array_equal(mask, expected)
        assert (mask > 0).sum() == (16 if record.stratum != "Free" else 0)  # the 4x4 core above 127, not the 6x6 edge


def test_fixture_unknown_class_folder_and_missing_mask(tmp_path):
    make_fake_tile(tmp_path, {"Crack": 1, "Free": 5})
    (tmp_path / "MT_Crack" / "Imgs" / "crack-0.png").unlink()
    with pytest.raises(DataError, match=r"crack-0.jpg: no mask \(looked for .*crack-0.png\)"):
        load_splits(f"magnetic-tile:{tmp_path}", image_size=16)
    splits = load_splits(f"magnetic-tile:{tmp_path}", image_size=16, skip_bad=True)
    assert [Path(f).name for f, _ in splits.skipped] == ["crack-0.jpg"]

    (tmp_path / "MT_Scratch" / "Imgs").mkdir(parents=True)
    with pytest.raises(DataError, match="MT_Scratch: unknown class folder"):
        list_magnetic_tile(tmp_path)


def test_locate_prefers_a_given_path_then_toolkit_data_dir(tmp_path, monkeypatch):
    make_fake_tile(tmp_path / "magnetic-tile", {"Free": 1})
    assert locate(str(tmp_path / "x")) == tmp_path / "x"
    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(tmp_path))
    assert locate() == tmp_path / "magnetic-tile"


# -- the real data ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def root() -> Path:
    try:
        return locate()
    except DataError as exc:
        pytest.skip(f"magnetic-tile data not available (see shared/data/README.md): {exc}")


@pytest.fixture(scope="module")
def records(root):
    return {r.image.stem: r for r in list_magnetic_tile(root).train}


def test_real_listing_has_every_file_of_every_class(root, records):
    assert len(records) == 1344
    assert Counter(r.stratum for r in records.values()) == README_COUNTS


@pytest.mark.parametrize("folder, stem, class_name, defect_pixels", [
    ("MT_Crack", "exp1_num_249594", "crack", 1064),  # counted by hand with PIL: (mask > 127).sum()
    ("MT_Fray", "exp0_num_797", "fray", 169),
])
def test_real_known_file_class_and_defect_pixel_count(root, records, folder, stem, class_name, defect_pixels):
    record = records[stem]
    assert record.image == root / folder / "Imgs" / f"{stem}.jpg"
    assert record.stratum == folder[3:]
    png = root / folder / "Imgs" / f"{stem}.png"
    truth = _threshold(png)
    assert truth.sum() == defect_pixels

    size = Image.open(record.image).size
    mask = record.mask(size)
    class_id = CLASS_NAMES.index(class_name)
    assert mask.shape == truth.shape == (size[1], size[0])
    assert set(np.unique(mask).tolist()) == {0, class_id}
    np.testing.assert_array_equal(mask == class_id, truth)


def test_real_defect_free_images_have_no_defect_pixels(root, records):
    free = [r for r in records.values() if r.stratum == "Free"][:25]
    assert records["exp0_num_743"].stratum == "Free"
    for record in [records["exp0_num_743"], *free]:
        assert not _threshold(record.image.with_suffix(".png")).any()
        assert not record.mask(Image.open(record.image).size).any()


def test_real_limited_split_is_stratified_with_six_classes(root, records):
    splits = load_splits("magnetic-tile", image_size=32, limit=120, seed=0)
    assert splits.num_classes == 6
    assert splits.class_names == CLASS_NAMES
    assert "magnetic-tile" in splits.description and "Huang" in splits.description
    assert len(all_samples(splits)) == 120
    for part in (splits.train, splits.test):
        assert {records[n].stratum for n in part.names} == set(README_COUNTS), part.names
    # the subsample follows the class sizes: Free is 952/1344 of the set
    everything = Counter(records[n].stratum for n in all_samples(splits))
    assert 83 <= everything["Free"] <= 86
    assert everything["Fray"] >= 2


def test_real_binary_mode(root):
    splits = load_splits(f"magnetic-tile:{root}", image_size=32, limit=30, seed=1, binary=True)
    assert splits.num_classes == 2
    assert splits.class_names == ["background", "defect"]
    masks = np.concatenate([s.masks.numpy().ravel() for s in (splits.train, splits.val, splits.test)])
    assert set(np.unique(masks).tolist()) == {0, 1}
