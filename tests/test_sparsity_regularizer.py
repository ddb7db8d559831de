"""Prune-aware dense training: Torch-Pruning's regularisers weaken channel groups during training."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from toolkit.config import RunConfig
from toolkit.errors import UsageError
from toolkit.pruning.regularizers import sparsity_regularizer
from toolkit.workbench.models import create_model
from toolkit.workbench.training import TrainConfig, Trainer, run_steps


class ToyNet(nn.Module):
    """conv-BN-ReLU twice, then a 1x1 head named as smp names it (the output layer, never pruned)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.segmentation_head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.segmentation_head(torch.relu(self.bn2(self.conv2(x))))


def group_norm(model: ToyNet) -> float:
    """The L2 norm of the group rooted at conv1: its filters and the BatchNorm scales that go with them."""
    return float(torch.cat([model.conv1.weight.flatten(), model.bn1.weight]).detach().norm())


def bn1_scales(model: ToyNet) -> float:
    """The L1 norm of conv1's BatchNorm scales: what network slimming penalises."""
    return float(model.bn1.weight.detach().abs().sum())


def train_toy(regularizer: str, strength: float = 0.3, steps: int = 30) -> ToyNet:
    torch.manual_seed(0)
    model = ToyNet()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 2, (4, 16, 16))
    regularize = sparsity_regularizer(regularizer, model, x[:1], strength)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run_steps(model, optimizer, steps, lambda m: nn.functional.cross_entropy(m(x), y), after_backward=regularize)
    return model


@pytest.mark.parametrize("name, norm", [("group_norm", group_norm), ("bn_l1", bn1_scales)])
def test_regularizer_drives_a_groups_norm_down(name, norm):
    plain, regularised = train_toy("none"), train_toy(name)
    assert norm(regularised) < 0.5 * norm(plain), (norm(regularised), norm(plain))


def test_group_norm_regulariser_leaves_the_output_layers_outputs_alone():
    """With no task gradient, the penalty's gradient falls on the prunable groups; the head's
    bias (its output channels, the classes) is never pushed."""
    torch.manual_seed(0)
    model = ToyNet()
    regularize = sparsity_regularizer("group_norm", model, torch.randn(1, 3, 16, 16), 1.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    regularize(model)
    assert model.conv1.weight.grad.abs().sum() > 0 and model.bn2.weight.grad.abs().sum() > 0
    assert model.segmentation_head.bias.grad.abs().sum() == 0


def test_group_norm_penalty_stays_finite_where_a_layer_has_one_channel():
    """MA-Net on EfficientNet-Lite0 squeezes to one channel in its decoder's SE blocks: Torch-Pruning's
    scaling is 0 / 0 there (NaN gradients, measured before the layer was left out)."""
    torch.manual_seed(0)
    model = create_model("manet", "tu-tf_efficientnet_lite0", num_classes=2)
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    sparsity_regularizer("group_norm", model, torch.zeros(1, 3, 64, 64), 1e-4)(model)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.decoder.blocks[2].SE_ll[1].weight.grad.abs().sum() > 0, "the SE layer still learns"


def fit_smp(regularizer: str, stage: str) -> nn.Module:
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 2, (4, 64, 64))
    data = TensorDataset(x, y)
    cfg = TrainConfig(batch_size=2, optimizer="sgd", momentum=0.0, schedule="cosine", lr_min=0.05, lr_max=0.05,
                      loss="ce", progress=False, sparsity_regularizer=regularizer, regularizer_strength=0.1)
    model = create_model("fpn", "resnet18", num_classes=2)
    history = Trainer(data, data, 2, cfg, seed=0).fit(model, epochs=1, stage=stage)
    assert all(torch.isfinite(torch.tensor(h.loss)) for h in history)
    return model


def bn_scale_l1(model: nn.Module) -> float:
    return float(sum(m.weight.detach().abs().sum() for m in model.modules() if isinstance(m, nn.BatchNorm2d)))


def test_trainer_regularises_an_smp_model_in_the_dense_stage_only():
    # every BatchNorm scale loses 0.1 x lr 0.05 x 2 steps to the penalty: 0.01 each, over a thousand scales
    assert bn_scale_l1(fit_smp("bn_l1", "train")) < bn_scale_l1(fit_smp("none", "train")) - 5.0
    recovered, plain = fit_smp("bn_l1", "finetune"), fit_smp("none", "finetune")  # pruned models recover unpenalised
    assert all(torch.equal(a, b) for a, b in zip(recovered.state_dict().values(), plain.state_dict().values()))


def test_unknown_regulariser_is_a_usage_error():
    run = RunConfig()
    run.train.sparsity_regularizer = "l2"
    with pytest.raises(UsageError, match="group_norm"):
        run.validate()
    run.train.sparsity_regularizer, run.train.regularizer_strength = "bn_l1", -1.0
    with pytest.raises(UsageError, match="regularizer_strength"):
        run.validate()
