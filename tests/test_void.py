"""Void labels (``ignore_index``): pixels in no loss, no IoU, no class count and no crop centre,
kept void by augmentation, read from ``dataset.toml`` or ``--ignore-index``."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from data_helpers import save_mask, write_toml
from toolkit.cli import main
from toolkit.errors import DataError
from toolkit.workbench.data import SegmentationDataset, load_splits
from toolkit.workbench.data.crops import crop_origin
from toolkit.workbench.losses import LOSSES, count_class_pixels, make_loss
from toolkit.workbench.metrics import iou
from toolkit.workbench.training import TrainConfig

VOID = 255
# one image, 2 classes, 4 pixels in a row; the third is void and its logits say "class 0" loudly
LOGITS = torch.tensor([[[[2.0, 0.0, 5.0, 1.0]], [[0.0, 1.0, -3.0, 0.0]]]])
TARGET = torch.tensor([[[0, 1, VOID, 1]]])


def _softmax(a: float, b: float) -> tuple[float, float]:
    ea, eb = math.exp(a), math.exp(b)
    return ea / (ea + eb), eb / (ea + eb)


def test_cross_entropy_and_dice_leave_void_out_checked_by_hand():
    kept = [(2.0, 0.0, 0), (0.0, 1.0, 1), (1.0, 0.0, 1)]  # (logit 0, logit 1, class) of the labelled pixels
    probs = [(_softmax(a, b), c) for a, b, c in kept]
    ce = sum(-math.log(p[c]) for p, c in probs) / 3
    dice = 0.0
    for cls in (0, 1):
        overlap = sum(p[cls] for p, c in probs if c == cls)
        dice += 1 - 2 * overlap / (sum(p[cls] for p, _ in probs) + sum(c == cls for _, c in probs))
    dice /= 2
    assert float(make_loss(TrainConfig(loss="ce"), ignore_index=VOID)(LOGITS, TARGET)) == pytest.approx(ce, rel=1e-5)
    assert float(make_loss(TrainConfig(loss="dice"), ignore_index=VOID)(LOGITS, TARGET)) == pytest.approx(dice, rel=1e-5)
    counted_as_rust = (3 * ce - math.log(_softmax(5.0, -3.0)[1])) / 4  # had the void pixel been labelled class 1
    assert counted_as_rust > 2 * ce


@pytest.mark.parametrize("loss", [*LOSSES, "dice+ce", "tversky+focal"])
def test_every_loss_ignores_void_pixels(loss):
    """The same value as on the labelled pixels alone, and no gradient reaches a void pixel."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[:, 0, :] = VOID  # a void border row
    target[1, 2, 3] = VOID
    fn = make_loss(TrainConfig(loss=loss, class_weights="1,2,3" if "focal" in loss or "ce" in loss else "none"),
                   ignore_index=VOID, num_classes=3)
    labelled = target != VOID
    alone = fn(logits.permute(1, 0, 2, 3)[:, labelled].reshape(1, 3, 1, -1), target[labelled].reshape(1, 1, -1))
    x = logits.clone().requires_grad_(True)
    value = fn(x, target)
    value.backward()
    value = value.detach()
    assert float(value) == pytest.approx(float(alone), rel=1e-5)
    void_grad = x.grad.permute(1, 0, 2, 3)[:, ~labelled]
    assert float(void_grad.abs().max()) == 0.0 and float(x.grad.abs().max()) > 0
    shifted = logits.clone()
    shifted.permute(1, 0, 2, 3)[:, ~labelled] += 10.0  # whatever the model says about void pixels
    assert float(fn(shifted, target)) == pytest.approx(float(value), rel=1e-5)


def test_iou_leaves_void_out_checked_by_hand():
    target = torch.tensor([[[0, 1, VOID], [1, VOID, 0]]])
    pred = torch.tensor([[[0, 1, 1], [0, 0, 0]]])  # wrong on both void pixels, and on one labelled pixel
    logits = torch.nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).float()
    result = iou(logits, target, num_classes=2, include_background=True, ignore_index=VOID)
    # class 0: tp 2, fp 1 (the class-1 pixel predicted 0), fn 0; class 1: tp 1, fp 0, fn 1
    assert result.per_class == pytest.approx([2 / 3, 1 / 2])
    assert result.mean == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_class_counts_leave_void_out():
    masks = np.array([[[0, 0, 1, VOID], [VOID, VOID, 1, 0]]], np.uint8)
    ds = SegmentationDataset(np.zeros((1, 2, 4, 3), np.uint8), masks, ["a"], (0.5,) * 3, (0.5,) * 3, ignore_index=VOID)
    assert count_class_pixels(ds, 2) == [3, 2]


def test_foreground_crops_never_centre_on_void():
    mask = torch.zeros(64, 64, dtype=torch.long)
    mask[:, :16] = VOID  # a wide void band: drawn as a "class", crops would centre on it half the time
    mask[60, 60] = 1
    torch.manual_seed(0)
    for _ in range(30):
        top, left = crop_origin(mask, 32, foreground_prob=1.0, ignore_index=VOID)
        assert top <= 60 < top + 32 and left <= 60 < left + 32


def test_augmentation_keeps_void_void_and_brings_in_no_background():
    """Rotation and shift fill with void: a class-1 image gains no background pixel, an all-void one no label."""
    images = np.full((2, 64, 64, 3), 128, np.uint8)
    masks = np.stack([np.ones((64, 64), np.uint8), np.full((64, 64), VOID, np.uint8)])
    ds = SegmentationDataset(images, masks, ["class", "void"], (0.5,) * 3, (0.5,) * 3, augment=True, ignore_index=VOID)
    torch.manual_seed(0)
    filled = 0
    for _ in range(10):
        _, labelled = ds[0]
        _, void = ds[1]
        assert set(labelled.unique().tolist()) <= {1, VOID}
        assert void.unique().tolist() == [VOID]
        filled += int((labelled == VOID).sum())
    assert filled > 0, "some draw rotated or shifted the image"


# -- a folder dataset with void borders --------------------------------------------------
def make_void_folder(root, count=10, size=64, border=4, rgb_void=None):
    """``count`` noise images with a bright square of class 1, masks with a ``border``-px void frame."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        image = rng.integers(0, 100, (size, size, 3), dtype=np.uint8)
        ids = np.zeros((size, size), np.uint8)
        top, left = rng.integers(border, size - border - 16, 2)
        ids[top:top + 16, left:left + 16] = 1
        image[ids == 1] += 120
        ids[:border], ids[-border:], ids[:, :border], ids[:, -border:] = VOID, VOID, VOID, VOID
        Image.fromarray(image).save(root / "images" / f"im{i}.png")
        if rgb_void is None:
            save_mask(root / "masks" / f"im{i}.png", ids)
        else:
            colours = np.zeros((256, 3), np.uint8)
            colours[1], colours[VOID] = (128, 0, 0), rgb_void
            Image.fromarray(colours[ids]).save(root / "masks" / f"im{i}.png")
    return root


def test_folder_reads_void_from_dataset_toml(tmp_path):
    root = make_void_folder(tmp_path / "voc")
    write_toml(root, 'classes = ["background", "rust"]\nignore_index = 255\n')
    splits = load_splits(str(root), image_size=64, augment=False, progress=False)
    assert splits.ignore_index == VOID and splits.num_classes == 2
    masks = torch.cat([splits.train.masks, splits.val.masks, splits.test.masks])
    assert set(masks.unique().tolist()) == {0, 1, VOID}
    assert bool((masks[:, :4] == VOID).all()) and bool((masks[:, 4:-4, 4:-4] != VOID).all())
    binary = load_splits(str(root), image_size=64, augment=False, progress=False, binary=True)
    assert set(binary.train.masks.unique().tolist()) == {0, 1, VOID}, "--binary merges classes, not void"


def test_palette_masks_map_the_void_colour(tmp_path):
    root = make_void_folder(tmp_path / "colour", count=6, rgb_void=(224, 224, 192))
    write_toml(root, 'classes = ["background", "rust"]\npalette = [[0, 0, 0], [128, 0, 0]]\nvoid = [224, 224, 192]\n')
    splits = load_splits(str(root), image_size=64, augment=False, progress=False)
    assert splits.ignore_index == VOID
    assert bool((splits.train.masks[:, :, :4] == VOID).all())
    assert set(splits.train.masks.unique().tolist()) == {0, 1, VOID}


def test_a_value_neither_class_nor_void_is_still_one_error(tmp_path):
    root = make_void_folder(tmp_path / "bad", count=4)
    ids = np.asarray(Image.open(root / "masks" / "im2.png")).copy()
    ids[10, 10] = 7
    save_mask(root / "masks" / "im2.png", ids)
    write_toml(root, 'classes = ["background", "rust"]\nignore_index = 255\n')
    with pytest.raises(DataError, match=r"im2.png: class id 7 out of range \(this dataset has 2 classes, ids 0..1, void 255\)"):
        load_splits(str(root), image_size=64, progress=False)
    write_toml(root, 'classes = ["background", "rust"]\nignore_index = 1\n')
    with pytest.raises(DataError, match="ignore_index 1 is the id of class 'rust'"):
        load_splits(str(root), image_size=64, progress=False)


def test_void_folder_trains_from_the_command_line(tmp_path, capsys):
    """Without a void value the VOC convention stops with a hint; --ignore-index 255 then trains, crops and windows included."""
    root = make_void_folder(tmp_path / "voc")
    tiny = ["--arch", "fpn", "--encoder", "resnet18", "--image-size", "64", "--batch-size", "2", "--epochs", "1",
            "--steps-per-epoch", "2", "--no-progress", "--data", f"folder:{root}"]
    assert main(["train", *tiny, "--out", str(tmp_path / "no")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "masks hold values up to 255" in err[0] and "--ignore-index 255" in err[0]
    out = tmp_path / "run"
    assert main(["train", *tiny, "--ignore-index", "255", "--loss", "dice+ce", "--class-weights", "auto",
                 "--crop-size", "64", "--foreground-crop", "1", "--eval-window", "64", "--out", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert 0.0 <= stats["test_iou"] <= 1.0 and len(stats["test_iou_per_class"]) == 2
    assert math.isfinite(stats["history"][-1]["loss"])
    assert "ignore_index = 255" in (out / "config.toml").read_text()


def test_ignore_index_is_a_run_setting_of_grids_and_commands(tmp_path, capsys):
    from toolkit.runner.grid import load_grid

    (tmp_path / "grid.toml").write_text('datasets = ["synthetic"]\n[run]\nignore_index = 255\n')
    assert load_grid(tmp_path / "grid.toml").run.ignore_index == VOID
    assert load_grid(tmp_path / "grid.toml", run={"ignore_index": 0}).run.ignore_index == 0, "the command line wins"
    assert main(["train", "--ignore-index", "300", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ignore_index must be a mask value from 0 to 255" in err[0]
