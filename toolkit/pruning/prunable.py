"""What pruning may touch: one definition for structured and unstructured pruning alike.

A prunable layer is every convolution (grouped, depthwise and transposed ones
included) and linear layer of the model, except the layers that produce the
task's classes (``toolkit.workbench.heads.output_layers``) and the layers the
caller keeps (``ignored``, with everything inside them). Structured pruning
removes a prunable layer's output channels; unstructured pruning zeroes
entries of its weight, and the zero fraction is measured over those weights.

A leaf: it asks no registry, and graph surgery, masking, measurement and the
plugins read it.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from toolkit.workbench.heads import output_layers

PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


def prunable_layers(model: nn.Module, ignored: Iterable[nn.Module] = ()) -> dict[str, nn.Module]:
    """Name -> layer, in ``named_modules`` order, for every prunable layer of ``model``."""
    skip = {id(m) for layer in [*output_layers(model), *ignored] for m in layer.modules()}
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE) and id(m) not in skip}


def prunable_weights(model: nn.Module, ignored: Iterable[nn.Module] = ()) -> dict[str, torch.Tensor]:
    """The prunable layers' weights, keyed as ``named_parameters()`` names them (masks' keys):
    ``"encoder.conv1.weight"``, or ``"weight"`` for a model that is one bare layer."""
    return {f"{name}.weight" if name else "weight": m.weight for name, m in prunable_layers(model, ignored).items()}


def out_channels(layer: nn.Module) -> int:
    """Output channels of a prunable layer (a linear layer's features)."""
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
