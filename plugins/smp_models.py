"""Built-in segmentation architectures from segmentation-models-pytorch.

Registered through ``register_models`` exactly as a third-party architecture
would be. Every one takes any smp encoder (``--encoder``, default
``resnet101`` as in the corrosion study) with its weights loaded offline
(``toolkit.workbench.models.smp_model``); their output layer is smp's
``segmentation_head``, the default, so no spec names it.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import segmentation_models_pytorch as smp

from toolkit.contract import ModelSpec
from toolkit.hookspecs import hookimpl
from toolkit.workbench.models import smp_model

ARCHITECTURES = {
    "unet": (smp.Unet, "U-Net (Ronneberger et al. 2015), smp"),
    "unetplusplus": (smp.UnetPlusPlus, "U-Net++ with nested skip paths (Zhou et al. 2018), smp"),
    "fpn": (smp.FPN, "feature pyramid network (Lin et al. 2017), smp; GroupNorm seg blocks"),
    "linknet": (smp.Linknet, "LinkNet, additive skips (Chaurasia & Culurciello 2017), smp"),
    "manet": (smp.MAnet, "MA-Net, position and multi-scale attention (Fan et al. 2020), smp"),
}


@hookimpl
def register_models(register: Callable[[ModelSpec], None]) -> None:
    for name, (architecture, description) in ARCHITECTURES.items():
        register(ModelSpec(name, description, partial(smp_model, architecture)))
