"""Built-in plain classifiers from torchvision, so the steel-plate study's FLOP and
parameter tables (ResNet-50, ResNeXt-50) can be reproduced with the same pruners.

Built without pretrained weights; ``--encoder`` does not apply. With the
default ``num_classes=2`` they keep ImageNet's 1,000 outputs, the shape the
published tables count. Their output layer is ``fc``.
"""
from __future__ import annotations

from typing import Callable

import torchvision
from torch import nn

from toolkit.contract import ModelSpec
from toolkit.errors import UsageError
from toolkit.hookspecs import hookimpl

CLASSIFIERS = {
    "resnet18": (torchvision.models.resnet18, "ResNet-18 classifier (He et al. 2016), torchvision"),
    "resnet50": (torchvision.models.resnet50, "ResNet-50 classifier (He et al. 2016), torchvision"),
    "resnext50_32x4d": (torchvision.models.resnext50_32x4d,
                        "ResNeXt-50 32x4d classifier, grouped convolutions (Xie et al. 2017), torchvision"),
}


def _builder(constructor: Callable[..., nn.Module], name: str) -> Callable[..., nn.Module]:
    def build(encoder: str, encoder_weights: str | None, num_classes: int, in_channels: int) -> nn.Module:
        if encoder_weights is not None:
            raise UsageError(f"{name} is built without pretrained weights; drop --encoder-weights")
        if in_channels != 3:
            raise UsageError(f"{name} takes 3-channel images, not {in_channels}")
        return constructor(weights=None, num_classes=1000 if num_classes == 2 else num_classes)

    return build


@hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    for name, (constructor, description) in CLASSIFIERS.items():
        register(ModelSpec(name, description, _builder(constructor, name), output_layers=lambda m: [m.fc],
                           task="classification"))
