"""Model factory in the style of timm: ``create_model(name, ...)`` and ``list_models()``.

Segmentation models come from segmentation-models-pytorch; the plain
classifiers of the steel-plate study (ResNet-50, ResNeXt-50) from torchvision,
so FLOP/parameter tables can be reproduced on them.
"""
from __future__ import annotations

from typing import Callable

import segmentation_models_pytorch as smp
import torchvision
from torch import nn

from toolkit.errors import UnknownNameError, UsageError

SEGMENTATION_ARCHS: dict[str, Callable[..., nn.Module]] = {
    "unet": smp.Unet,
    "unetplusplus": smp.UnetPlusPlus,
    "fpn": smp.FPN,
    "linknet": smp.Linknet,
    "manet": smp.MAnet,
}
CLASSIFIERS: dict[str, Callable[..., nn.Module]] = {
    "resnet50": torchvision.models.resnet50,
    "resnext50_32x4d": torchvision.models.resnext50_32x4d,
    "resnet18": torchvision.models.resnet18,
}
DEFAULT_ENCODER = "resnet101"  # as in the corrosion study


def list_models() -> list[str]:
    return sorted(SEGMENTATION_ARCHS) + sorted(CLASSIFIERS)


def create_model(
    arch: str,
    encoder: str = DEFAULT_ENCODER,
    encoder_weights: str | None = None,
    num_classes: int = 2,
    in_channels: int = 3,
) -> nn.Module:
    """Build a model by name.

    ``encoder_weights`` is ``None``/``"none"`` (random init), ``"imagenet"``
    (loaded offline where the toolkit knows a local source, else a clear
    ``WeightsError``) or a path to a local encoder ``state_dict`` file.
    """
    if arch in CLASSIFIERS:
        if encoder_weights not in (None, "none"):
            raise UsageError(f"{arch} is built without pretrained weights; drop --encoder-weights")
        return CLASSIFIERS[arch](weights=None, num_classes=1000 if num_classes == 2 else num_classes)
    if arch not in SEGMENTATION_ARCHS:
        raise UnknownNameError("architecture", arch, list_models())
    if num_classes < 1:
        raise UsageError(f"num_classes must be at least 1, got {num_classes}")
    try:
        model = SEGMENTATION_ARCHS[arch](
            encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=num_classes
        )
    except KeyError as exc:
        raise UsageError(f"unknown encoder {encoder!r} for smp: {exc}") from None
    if encoder_weights not in (None, "none"):
        from toolkit.workbench.weights import load_encoder_weights

        load_encoder_weights(model.encoder, encoder, encoder_weights)
    return model


def output_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose outputs are the task's classes: never pruned."""
    layers = [m for name in ("segmentation_head", "classification_head") if (m := getattr(model, name, None)) is not None]
    if not layers and isinstance(getattr(model, "fc", None), nn.Linear):
        layers.append(model.fc)
    return layers
