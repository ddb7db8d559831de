"""Losses by name: every term builds and trains, sums weigh their terms, class weights come from pixel counts."""
from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

from toolkit.errors import UsageError
from toolkit.workbench.losses import (
    LOSSES, WeightedSum, class_weights_from_counts, count_class_pixels, make_loss, resolve_class_weights,
)
from toolkit.workbench.training import TrainConfig


def batch(classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(2, classes, 8, 8, requires_grad=True), torch.randint(0, classes, (2, 8, 8))


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_builds_and_gives_a_gradient(name):
    logits, target = batch()
    loss = make_loss(TrainConfig(loss=name))
    value = loss(logits, target)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and logits.grad.abs().sum() > 0


def test_research_default_is_smps_tversky_with_the_configs_alpha_beta():
    loss = make_loss(TrainConfig(tversky_alpha=0.3, tversky_beta=0.7))
    assert isinstance(loss, smp.losses.TverskyLoss) and (loss.alpha, loss.beta) == (0.3, 0.7)


def test_a_sum_weighs_each_term():
    logits, target = batch()
    dice = smp.losses.DiceLoss(mode="multiclass")(logits, target)
    ce = nn.functional.cross_entropy(logits, target)
    combo = make_loss(TrainConfig(loss="dice+ce", loss_weights={"dice": 1.0, "ce": 0.5}))
    assert isinstance(combo, WeightedSum) and list(combo.terms) == ["dice", "ce"]
    assert combo(logits, target).item() == pytest.approx((dice + 0.5 * ce).item(), rel=1e-6)
    unweighted = make_loss(TrainConfig(loss=" Dice + CE "))
    assert unweighted(logits, target).item() == pytest.approx((dice + ce).item(), rel=1e-6)


@pytest.mark.parametrize("spec, message", [
    ("dice+bce", "unknown loss 'bce'; known: tversky, dice, focal, lovasz, ce"),
    ("dice+dice", "names a term twice"),
])
def test_bad_loss_names_are_usage_errors_listing_the_known_ones(spec, message):
    with pytest.raises(UsageError, match=message):
        make_loss(TrainConfig(loss=spec))


def test_a_weight_for_a_term_not_in_the_loss_is_a_usage_error():
    with pytest.raises(UsageError, match="loss_weights names focal"):
        make_loss(TrainConfig(loss="dice+ce", loss_weights={"focal": 1.0}))


def test_auto_class_weights_are_inverse_sqrt_frequency_with_mean_pixel_weight_one():
    counts = [986, 14]  # a thin crack: 1.4% of the pixels
    w = class_weights_from_counts(counts)
    assert w[1] / w[0] == pytest.approx((986 / 14) ** 0.5)
    assert (986 * w[0] + 14 * w[1]) / 1000 == pytest.approx(1.0)
    median = class_weights_from_counts(counts, "median-frequency")
    assert median[1] / median[0] == pytest.approx(986 / 14)


def test_class_weights_are_capped_and_an_absent_class_gets_the_largest():
    w = class_weights_from_counts([10_000_000, 1, 0])
    assert max(w) == pytest.approx(50.0) and w[2] == w[1]


def test_auto_weights_reach_cross_entropy_from_the_counts():
    logits, target = batch(2)
    loss = make_loss(TrainConfig(loss="ce", class_weights="auto"), class_pixel_counts=[99, 1])
    expected = nn.functional.cross_entropy(logits, target, weight=torch.tensor(class_weights_from_counts([99, 1])))
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    focal = make_loss(TrainConfig(loss="dice+focal", class_weights=[1.0, 4.0]))
    assert focal.terms["focal"].class_weights.tolist() == [1.0, 4.0]
    assert focal.terms["dice"].class_weights is None, "region losses are not class-weighted"


@pytest.mark.parametrize("setting, message", [
    ("auto", "needs the training masks' class pixel counts"),
    ("1,x", "class_weights must be"),
    ([1.0, 2.0, 3.0], "has 3 numbers but the dataset has 2 classes"),
])
def test_bad_class_weights_are_usage_errors(setting, message):
    counts = None if setting == "auto" else [5, 5]
    with pytest.raises(UsageError, match=message):
        resolve_class_weights(setting, counts)


def test_class_pixels_are_counted_from_held_masks_or_item_by_item():
    from torch.utils.data import TensorDataset

    masks = torch.tensor([[[0, 1], [1, 2]], [[0, 0], [0, 2]]])
    held = type("Held", (), {"masks": masks})()
    assert count_class_pixels(held, 3) == [4, 2, 2]
    items = TensorDataset(torch.zeros(2, 3, 2, 2), masks)
    assert count_class_pixels(items, 4) == [4, 2, 2, 0]
