"""Per-class validation IoU in the history, and a warning for a defect class stuck at 0."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.utils.data import TensorDataset

from toolkit.workbench.sanity import StuckClassWarning, newly_stuck, warn_stuck, zero_streak
from toolkit.workbench.training import TrainConfig, Trainer


def test_zero_streak_counts_trailing_zeros_and_nan_breaks_it():
    assert zero_streak([0.2, 0.0, 0.0]) == 2
    assert zero_streak([0.0, math.nan, 0.0]) == 1
    assert zero_streak([]) == 0


def test_a_class_warns_once_when_its_streak_reaches_patience():
    history = [[0.9, 0.0, 0.3], [0.9, 0.0, 0.0], [0.9, 0.0, 0.0]]  # class 1 stuck from the start, class 2 fell
    assert newly_stuck(history[:2], 3) == []
    assert newly_stuck(history, 3) == [1]
    assert newly_stuck(history + [[0.9, 0.0, 0.0]], 3) == [2], "class 1 warned already; class 2 reaches 3 now"
    assert newly_stuck([[0.0, 0.5]] * 5, 3) == [], "background is never reported"
    assert newly_stuck(history, 0) == [], "patience 0 turns the warning off"


def test_the_warning_names_the_class_and_what_to_try():
    with pytest.warns(StuckClassWarning, match=r"train: validation IoU of 'crack' has been 0 for 2 epochs.*recipe = 'robust'"):
        warn_stuck([[1.0, 0.0]] * 2, 2, ["background", "crack"], "train", "research")
    with pytest.warns(StuckClassWarning, match="crop_size"):
        warn_stuck([[1.0, 0.0]] * 2, 2, None, "train", "robust")


def test_fit_records_per_class_iou_and_warns_for_a_class_never_found():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    y = torch.zeros(4, 32, 32, dtype=torch.long)
    y[:, 5, :] = 1  # a thin line no model learns from noise in two steps
    ds = TensorDataset(x, y)
    model = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        model.bias.copy_(torch.tensor([5.0, -5.0]))  # predicts background everywhere
    cfg = TrainConfig(batch_size=4, max_steps_per_epoch=1, zero_iou_patience=2, progress=False)
    trainer = Trainer(ds, ds, 2, cfg, class_names=["background", "crack"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.fit(model, 3, "train")
    assert [len(h.val_iou_per_class) for h in history] == [2, 2, 2]
    assert history[-1].val_iou_per_class[1] == 0.0 and history[-1].val_iou_per_class[0] > 0.9
    stuck = [w for w in caught if issubclass(w.category, StuckClassWarning)]
    assert len(stuck) == 1 and "'crack' has been 0 for 2 epochs" in str(stuck[0].message)
