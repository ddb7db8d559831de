"""Bad input: every error is a ``DataError`` (or ``UsageError``) that names the file at fault.

With ``skip_bad`` a bad image is left out *and* listed in ``splits.skipped``;
without it the first one stops the load and the message points at ``--skip-bad``.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_helpers import all_samples, make_folder, make_severstal, save_mask, write_toml
from toolkit.workbench.data import list_datasets, load_splits
from toolkit.workbench.data.folder import list_folder
from toolkit.workbench.data.records import open_image
from toolkit.workbench.data.severstal import list_severstal
from toolkit.errors import DataError, UsageError


def _noise_image(path: Path, size=(32, 32)) -> None:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# Each maker spoils image "img5" of a good 6-image folder (classes: background, a, b) and returns
# (the image that is left out, the file the message must name, what the message must say).
def _truncated_png(root: Path):
    image = root / "images" / "img5.png"
    _truncate(image)
    return image, image, "cannot read image"


def _truncated_jpeg(root: Path):
    (root / "images" / "img5.png").unlink()
    image = root / "images" / "img5.jpg"
    _noise_image(image, (16, 16))
    _truncate(image)
    return image, image, "cannot read image"


def _garbage(root: Path):
    image = root / "images" / "img5.png"
    image.write_bytes(b"this is not a png at all" * 10)
    return image, image, "cannot read image"


def _mask_size(root: Path):
    mask = root / "masks" / "img5.png"
    save_mask(mask, np.zeros((10, 12), np.uint8))
    return root / "images" / "img5.png", mask, "mask is 12x10 but its image img5.png is 16x16"


def _class_out_of_range(root: Path):
    mask = root / "masks" / "img5.png"
    ids = np.zeros((16, 16), np.uint8)
    ids[3, 4] = 3
    save_mask(mask, ids)
    return root / "images" / "img5.png", mask, "class id 3 out of range (this dataset has 3 classes, ids 0..2)"


def _missing_mask(root: Path):
    (root / "masks" / "img5.png").unlink()
    image = root / "images" / "img5.png"
    return image, image, "no mask"


def _colour_not_in_palette(root: Path):
    mask = root / "masks" / "img5.png"
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[2:5, 2:5] = (12, 34, 56)
    Image.fromarray(rgb).save(mask)
    return root / "images" / "img5.png", mask, "colour (12, 34, 56) is not in the palette"


BAD = {
    "truncated-png": _truncated_png,
    "truncated-jpeg": _truncated_jpeg,
    "garbage-bytes": _garbage,
    "mask-size": _mask_size,
    "class-out-of-range": _class_out_of_range,
    "missing-mask": _missing_mask,
    "colour-not-in-palette": _colour_not_in_palette,
}


def _spoiled(tmp_path: Path, kind: str):
    root = tmp_path / "ds"
    make_folder(root, count=6, size=(16, 16), num_classes=3)
    write_toml(root, 'classes = ["background", "a", "b"]\n')
    return root, *BAD[kind](root)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_file_stops_the_load_with_a_message_naming_it(tmp_path, kind):
    root, _image, named, says = _spoiled(tmp_path, kind)
    with pytest.raises(DataError) as info:
        load_splits(f"folder:{root}", image_size=16)
    message = str(info.value)
    assert str(named) in message
    assert says in message
    assert "--skip-bad" in message


@pytest.mark.parametrize("kind", sorted(BAD))
def test_skip_bad_leaves_the_file_out_and_lists_it(tmp_path, kind):
    root, image, named, says = _spoiled(tmp_path, kind)
    splits = load_splits(f"folder:{root}", image_size=16, skip_bad=True)
    assert len(splits.skipped) == 1
    file, why = splits.skipped[0]
    assert file == str(image)
    assert str(named) in why and says in why
    assert sorted(all_samples(splits)) == ["img0", "img1", "img2", "img3", "img4"]


def test_open_image_reads_a_whole_file_and_rejects_truncated_ones(tmp_path):
    good, cut = tmp_path / "good.jpg", tmp_path / "cut.jpg"
    _noise_image(good)
    _noise_image(cut)
    _truncate(cut)
    assert open_image(good, "RGB").size == (32, 32)
    with pytest.raises(DataError, match=re.escape(str(cut))):
        open_image(cut, "RGB")
    with pytest.raises(DataError, match="file not found"):
        open_image(tmp_path / "absent.png")


def test_empty_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path))}: empty dataset"):
        load_splits(f"folder:{tmp_path}", image_size=16)


def test_every_image_bad_with_skip_bad_is_an_empty_dataset_not_a_silent_success(tmp_path):
    make_folder(tmp_path, count=3)
    for image in (tmp_path / "images").iterdir():
        image.write_bytes(b"garbage")
    with pytest.raises(DataError, match="empty dataset, every image was bad"):
        load_splits(f"folder:{tmp_path}", image_size=16, skip_bad=True)


def test_too_few_images_to_split(tmp_path):
    make_folder(tmp_path, count=2)
    with pytest.raises(DataError, match="too few images to split"):
        load_splits(f"folder:{tmp_path}", image_size=16)


def test_folder_without_images_and_masks_subfolders(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(DataError, match="expected folders images/ and masks/ inside .*pictures"):
        list_folder(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        load_splits(f"folder:{tmp_path / 'absent'}", image_size=16)


def test_bad_dataset_toml(tmp_path):
    make_folder(tmp_path, count=1)
    write_toml(tmp_path, "classes = [\n")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "dataset.toml")) + ": not valid TOML"):
        list_folder(tmp_path)
    write_toml(tmp_path, "classes = [1, 2]\n")
    with pytest.raises(DataError, match="'classes' must be a list of names"):
        list_folder(tmp_path)
    write_toml(tmp_path, "palette = [[0, 0]]\n")
    with pytest.raises(DataError, match="'palette' must be a list of"):
        list_folder(tmp_path)


# -- names and options --------------------------------------------------------------------------

def test_unknown_dataset_name_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown dataset 'no-such-dataset'") as info:
        load_splits("no-such-dataset")
    for name in list_datasets():
        assert name in str(info.value)


def test_format_without_its_path_is_a_usage_error():
    with pytest.raises(UsageError, match="needs its folder: --data sscs:PATH"):
        load_splits("sscs")


def test_limit_below_three_is_a_usage_error():
    with pytest.raises(UsageError, match="--limit must be at least 3"):
        load_splits("synthetic", image_size=16, limit=2)


# -- Severstal CSV -------------------------------------------------------------------------------

@pytest.mark.parametrize("row, says", [
    ("a.jpg,2,1 2 3", "run-length code has an odd number of values (3)"),
    ("a.jpg,2,630 12", "run 630 12 lies outside a 16x40 image"),
])
def test_severstal_bad_rle_names_the_csv_line(tmp_path, row, says):
    make_severstal(tmp_path, "new", extra_rows=[row])  # header + 4 rows: the extra row is line 6
    where = f"{tmp_path / 'train.csv'}:6"
    record = {r.image.name: r for r in list_severstal(tmp_path).train}["a.jpg"]
    with pytest.raises(DataError, match=re.escape(where)) as info:
        record.mask((40, 16))
    assert says in str(info.value)

    with pytest.raises(DataError, match=re.escape(where)) as info:
        load_splits(f"severstal:{tmp_path}", image_size=16)
    assert "--skip-bad" in str(info.value)
    splits = load_splits(f"severstal:{tmp_path}", image_size=16, skip_bad=True)
    assert [file for file, _ in splits.skipped] == [str(tmp_path / "train_images" / "a.jpg")]
    assert sorted(all_samples(splits)) == ["b", "c", "d", "e", "f"]


def test_severstal_bad_rle_in_the_old_layout_names_the_csv_line(tmp_path):
    make_severstal(tmp_path, "old", extra_rows=["d.jpg_1,7"])  # 1 + 12 rows before it: line 14
    record = {r.image.name: r for r in list_severstal(tmp_path).train}["d.jpg"]
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'train.csv'}:14")):
        record.mask((40, 16))


@pytest.mark.parametrize("rows, says", [
    (["c.jpg,5,1 1"], r"train.csv:6: class id 5 out of range \(defect classes are 1..4\)"),
    (["c.jpg,x,1 1"], r"train.csv:6: class id 'x' is not an integer"),
    (["zzz.jpg,1,1 1"], r"train.csv: lists zzz.jpg, which is not in .*train_images"),
])
def test_severstal_bad_rows(tmp_path, rows, says):
    make_severstal(tmp_path, "new", extra_rows=rows)
    with pytest.raises(DataError, match=says):
        load_splits(f"severstal:{tmp_path}", image_size=16)


def test_severstal_bad_layout(tmp_path):
    make_severstal(tmp_path)
    (tmp_path / "train.csv").write_text("Image,Pixels\na.jpg,1 1\n")
    with pytest.raises(DataError, match="expected columns ImageId,ClassId,EncodedPixels"):
        list_severstal(tmp_path)
    (tmp_path / "train.csv").unlink()
    with pytest.raises(DataError, match="no train.csv"):
        list_severstal(tmp_path)


def test_masks_saved_as_0_255_without_a_class_list_are_refused(tmp_path):
    """A binary mask stored as 0/255 would silently read as 256 classes: say what to do instead."""
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(6):
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "images" / f"im{i}.png")
        mask = np.zeros((16, 16), np.uint8)
        mask[4:9, 4:9] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"im{i}.png")
    with pytest.raises(DataError, match="masks hold values up to 255.*dataset.toml"):
        load_splits(f"folder:{tmp_path}", image_size=32)
