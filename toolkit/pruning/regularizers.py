"""Prune-aware dense training: sparsity regularisers that weaken channels before they are removed.

Torch-Pruning's regularisers act on gradients: after ``loss.backward()``
``regularize(model)`` adds a penalty's gradient to the parameters' ``.grad``,
so any optimiser then shrinks the penalised weights.

* ``group_norm``: ``GroupNormPruner`` (DepGraph, Fang et al. CVPR 2023): an L2
  push on every coupled channel group (the convs, BatchNorms and consumers
  that lose a channel together), strongest on the groups that are already weakest.
* ``bn_l1``: ``BNScalePruner`` (network slimming, Liu et al. ICCV 2017): an L1
  push on every BatchNorm scale. GroupNorm layers (smp FPN's decoder) are not
  BatchNorms and are left alone.

The layers whose outputs are the classes (``output_layers``) are ignored as
every pruner ignores them, so the penalty never weakens what no pruner may remove;
so are layers with a single output channel (nothing to remove there either).
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn

from toolkit.pruning.prunable import PRUNABLE, out_channels
from toolkit.pruning.surgery import traceable
from toolkit.workbench.heads import output_layers
from toolkit.workbench.optim import REGULARIZERS

_PRUNERS = {  # the Torch-Pruning pruner whose ``regularize`` each name stands for, with the criterion it ranks by
    "group_norm": (tp.pruner.GroupNormPruner, tp.importance.GroupMagnitudeImportance(p=2)),
    "bn_l1": (tp.pruner.BNScalePruner, tp.importance.BNScaleImportance()),
}


def sparsity_regularizer(
    name: str, model: nn.Module, example_inputs: torch.Tensor, strength: float
) -> Callable[[nn.Module], None] | None:
    """A callback for after ``backward`` that adds regulariser ``name``'s gradient; ``None`` for ``"none"``.

    Built on ``model`` as it is (one dependency graph); a model whose layers
    were replaced by channel surgery needs a new one.
    """
    if REGULARIZERS.check(name) == "none":
        return None
    cls, importance = _PRUNERS[name]
    was_training = model.training
    try:
        with traceable(model) as forward_fn, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Torch-Pruning warns about every op it treats as element-wise
            pruner = cls(model, example_inputs, importance=importance, reg=strength,
                         ignored_layers=[*output_layers(model), *_single_channel_layers(model)], forward_fn=forward_fn)
    finally:
        model.train(was_training)
    return pruner.regularize


def _single_channel_layers(model: nn.Module) -> list[nn.Module]:
    """Layers with one output channel (MA-Net's squeeze-excitation on EfficientNet-Lite0): no pruner can
    remove it, and ``GroupNormPruner`` scales its penalty by (max - imp) / (max - min) over the group's
    channels, which is 0 / 0 for one channel and would put NaN into the gradients."""
    return [m for m in model.modules() if isinstance(m, PRUNABLE) and out_channels(m) == 1]
