"""Training on crops of full-resolution images, evaluating whole images or in windows."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from toolkit.workbench.data.crops import RandomCrops, crop_origin
from toolkit.workbench.sliding_window import sliding_window_logits, window_starts
from toolkit.workbench.training import TrainConfig, Trainer


def one_defect(size: int = 128) -> torch.Tensor:
    """A mask with a single 2x2 defect near a corner: 4 pixels in 16,384."""
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[100:102, 10:12] = 3
    return mask


def test_crops_have_the_crop_size_and_cut_image_and_mask_alike():
    torch.manual_seed(0)
    image = torch.arange(128 * 128, dtype=torch.float32).view(1, 128, 128).expand(3, -1, -1)
    mask = torch.arange(128 * 128).view(128, 128)
    crops = RandomCrops(TensorDataset(image[None], mask[None]), 64)
    for _ in range(20):
        x, y = crops[0]
        assert x.shape == (3, 64, 64) and y.shape == (64, 64)
        assert torch.equal(x[0].long(), y), "image and mask come from the same place"


def test_foreground_bias_puts_the_defect_in_the_crop():
    torch.manual_seed(0)
    mask = one_defect()

    def hits(p: float) -> float:
        found = 0
        for _ in range(400):
            top, left = crop_origin(mask, 32, p)
            found += bool((mask[top:top + 32, left:left + 32] > 0).any())
        return found / 400

    uniform, biased, always = hits(0.0), hits(0.5), hits(1.0)
    assert always == 1.0
    assert uniform < 0.1  # a 32 px crop of a 128 px image rarely holds a 2 px defect
    assert 0.4 < biased < 0.65


def test_crop_origin_stays_inside_the_image_and_handles_masks_without_defects():
    torch.manual_seed(0)
    for _ in range(50):
        top, left = crop_origin(one_defect(), 64, 1.0)
        assert 0 <= top <= 64 and 0 <= left <= 64
    assert crop_origin(torch.zeros(64, 64, dtype=torch.long), 64, 1.0) == (0, 0)


def test_trainer_trains_on_crops_and_evaluates_whole_images():
    x, y = torch.randn(4, 3, 128, 128), torch.stack([one_defect()] * 4)
    ds = TensorDataset(x, y)
    trainer = Trainer(ds, ds, 4, TrainConfig(batch_size=2, crop_size=64, foreground_crop=0.5, progress=False))
    xb, yb = next(iter(trainer.train_loader))
    assert xb.shape == (2, 3, 64, 64) and yb.shape == (2, 64, 64)
    xv, _ = next(iter(trainer.val_loader))
    assert xv.shape == (2, 3, 128, 128)


def test_window_starts_cover_the_side_with_the_last_window_flush():
    assert window_starts(128, 64, 48) == [0, 48, 64]
    assert window_starts(64, 64, 48) == [0]


def test_sliding_window_matches_a_whole_image_pass_for_a_pointwise_model():
    model = torch.nn.Conv2d(3, 2, 1)
    x = torch.randn(2, 3, 96, 160)
    assert torch.allclose(sliding_window_logits(model, x, 64, overlap=0.5), model(x), atol=1e-6)


def test_evaluation_in_windows_is_a_setting():
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 128, 128), torch.stack([one_defect()] * 2)
    ds = TensorDataset(x, y)
    model = torch.nn.Conv2d(3, 4, 1)
    whole = Trainer(ds, ds, 4, TrainConfig(progress=False)).evaluate(model)
    windows = Trainer(ds, ds, 4, TrainConfig(eval_window=64, progress=False)).evaluate(model)
    assert windows.per_class == pytest.approx(whole.per_class, nan_ok=True)
