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
from toolkit.workbench.heads import attach_output_layers, output_layers  # noqa: F401 - re-exported
from toolkit.registry import get_collector, matching

DEFAULT_ENCODER = "resnet101"  # as in the corrosion study
ARCH_ATTRIBUTE = "toolkit_arch"  # set on every model create_model builds: which spec it came from


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Registered architecture names, optionally matching a glob and of one task (``segmentation``)."""
    models = get_collector().models
    return matching([n for n, reg in models.items() if task is None or reg.spec.task == task], pattern)


def check_segmentation(arch: str) -> None:
    """A registered segmentation architecture, what train, prune and compare need; else a ``UsageError``."""
    spec = get_collector().model(arch)
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
    spec = get_collector().model(arch)
    if num_classes < 1:
        raise UsageError(f"num_classes must be at least 1, got {num_classes}")
    weights = None if encoder_weights in (None, "none") else encoder_weights
    model = spec.build(encoder=encoder, encoder_weights=weights, num_classes=num_classes, in_channels=in_channels)
    if not isinstance(model, nn.Module):
        raise TypeError(f"architecture {arch!r}: build() must return a torch.nn.Module, got {type(model).__name__}")
    setattr(model, ARCH_ATTRIBUTE, arch)
    attach_output_layers(model, spec.output_layers)
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
