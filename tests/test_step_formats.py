"""Cheaper training steps: channels_last memory format and bf16 autocast on the CPU."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from toolkit.workbench.models import create_model
from toolkit.workbench.training import TrainConfig, Trainer

LAYOUTS: list[tuple[bool, bool]] = []  # (input, weight) in NHWC, at every forward pass of the first conv


def train(channels_last: bool, precision: str, epochs: int = 2) -> tuple[torch.nn.Module, list[float], float]:
    torch.manual_seed(0)
    model = create_model("fpn", "resnet18", num_classes=2)
    conv = model.encoder.conv1
    conv.register_forward_pre_hook(lambda m, inputs: LAYOUTS.append(
        (inputs[0].is_contiguous(memory_format=torch.channels_last), m.weight.is_contiguous(memory_format=torch.channels_last))))
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 2, (4, 64, 64))
    y[:, 16:48, 16:48] = 1
    data = TensorDataset(x, y)
    cfg = TrainConfig(batch_size=2, optimizer="sgd", momentum=0.9, schedule="cosine", lr_min=1e-3, lr_max=1e-3,
                      loss="dice+ce",
                      progress=False, channels_last=channels_last)
    trainer = Trainer(data, data, 2, cfg, seed=0, precision=precision)
    history = trainer.fit(model, epochs=epochs, stage="train")
    return model, [h.loss for h in history], trainer.evaluate(model).mean


@pytest.mark.parametrize("channels_last, precision", [(True, "32"), (False, "bf16-mixed"), (True, "bf16-mixed")])
def test_channels_last_and_bf16_train_with_finite_loss(channels_last, precision):
    LAYOUTS.clear()
    model, losses, iou = train(channels_last, precision)
    assert len(LAYOUTS) >= 4 and set(LAYOUTS) == {(channels_last, channels_last)}, "training and validation in NHWC"
    assert all(math.isfinite(v) for v in losses) and math.isfinite(iou)
    assert model.encoder.conv1.weight.is_contiguous(), "the usual layout again once training is done"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_channels_last_gives_the_same_model_within_float_tolerance():
    """Measured after 2 steps: losses equal to 1e-6, IoU to 4e-6, weights 0.8% of the way they moved apart.
    (Batches of 2 under BatchNorm amplify the last bits: after 4 steps the losses differ by 0.1%.)"""
    plain, plain_losses, plain_iou = train(False, "32", epochs=1)
    nhwc, nhwc_losses, nhwc_iou = train(True, "32", epochs=1)
    assert nhwc_losses == pytest.approx(plain_losses, rel=1e-5)
    assert nhwc_iou == pytest.approx(plain_iou, abs=1e-4)
    torch.manual_seed(0)
    start = create_model("fpn", "resnet18", num_classes=2).state_dict()
    # convolutions sum in another order in NHWC: the runs differ in the last bits, far less than training moved them
    weights = [k for k, v in start.items() if v.is_floating_point() and "running" not in k]
    moved = torch.cat([(plain.state_dict()[k] - start[k]).flatten() for k in weights]).norm()
    apart = torch.cat([(plain.state_dict()[k] - nhwc.state_dict()[k]).flatten() for k in weights]).norm()
    assert apart < 0.03 * moved, (float(apart), float(moved))


