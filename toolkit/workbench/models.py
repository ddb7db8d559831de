"""Model factory in the style of timm: ``create_model(name, ...)`` and ``list_models()``.

Architectures are registered through the ``register_models`` hook, the
built-ins too (``plugins/smp_models.py``: smp's U-Net, U-Net++, FPN, LinkNet,
MA-Net; ``plugins/torchvision_models.py``: the plain classifiers of the
steel-plate study), so an installed plugin's architecture is built, pruned,
saved and reloaded exactly like ours.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from toolkit.errors import UsageError
from toolkit.plugins import get_registry, matching

DEFAULT_ENCODER = "resnet101"  # as in the corrosion study
ARCH_ATTRIBUTE = "toolkit_arch"  # set on every model create_model builds: which spec it came from


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Registered architecture names, optionally matching a glob and of one task (``segmentation``)."""
    models = get_registry().models
    return matching([n for n, reg in models.items() if task is None or reg.spec.task == task], pattern)


def check_segmentation(arch: str) -> None:
    """A registered segmentation architecture, what train, prune and compare need; else a ``UsageError``."""
    spec = get_registry().model(arch)
    if spec.task != "segmentation":
        raise UsageError(f"{arch} is a {spec.task} model (for the pruners' cost tables); train, prune and compare "
                         f"need a segmentation architecture: {', '.join(list_models(task='segmentation'))}")


def create_model(
    arch: str,
    encoder: str = DEFAULT_ENCODER,
    encoder_weights: str | None = None,
    num_classes: int = 2,
    in_channels: int = 3,
) -> nn.Module:
    """Build a registered architecture by name (an unknown one lists the known ones).

    ``encoder_weights`` is ``None``/``"none"`` (random init), ``"imagenet"``
    (loaded offline where the toolkit knows a local source, else a clear
    ``WeightsError``) or a path to a local encoder ``state_dict`` file.
    """
    spec = get_registry().model(arch)
    if num_classes < 1:
        raise UsageError(f"num_classes must be at least 1, got {num_classes}")
    weights = None if encoder_weights in (None, "none") else encoder_weights
    model = spec.build(encoder=encoder, encoder_weights=weights, num_classes=num_classes, in_channels=in_channels)
    if not isinstance(model, nn.Module):
        raise TypeError(f"architecture {arch!r}: build() must return a torch.nn.Module, got {type(model).__name__}")
    setattr(model, ARCH_ATTRIBUTE, arch)
    return model


def smp_model(
    architecture: Callable[..., nn.Module],
    encoder: str,
    encoder_weights: str | None,
    num_classes: int,
    in_channels: int,
    **kwargs: Any,
) -> nn.Module:
    """An smp model (``smp.Unet``, ...) with its encoder weights loaded the toolkit's way: offline.

    For ``ModelSpec.build`` functions of smp architectures; ``kwargs`` go to
    the constructor (``encoder_depth=3``, ``decoder_channels=...``).
    """
    try:
        model = architecture(encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
                             classes=num_classes, **kwargs)
    except KeyError as exc:
        raise UsageError(f"unknown encoder {encoder!r} for smp: {exc}") from None
    if encoder_weights is not None:
        from toolkit.workbench.weights import load_encoder_weights

        load_encoder_weights(model.encoder, encoder, encoder_weights)
    return model


def output_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose outputs are the task's classes: never pruned.

    What the model's ``ModelSpec.output_layers`` says for a model built by
    ``create_model``; otherwise (and when a spec leaves it ``None``) smp's
    ``segmentation_head`` / ``classification_head``, or a classifier's final
    ``fc`` (torchvision).
    """
    arch = getattr(model, ARCH_ATTRIBUTE, None)
    if arch is not None:
        own = get_registry().model(arch).output_layers
        if own is not None:
            return list(own(model))
    layers = [m for name in ("segmentation_head", "classification_head") if (m := getattr(model, name, None)) is not None]
    if not layers and isinstance(getattr(model, "fc", None), nn.Linear):
        layers.append(model.fc)
    return layers
