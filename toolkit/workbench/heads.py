"""Which layers of a model produce the task's classes: never pruned.

A leaf that asks no registry: ``create_model`` resolves the architecture's
``ModelSpec.output_layers`` when it builds the model and leaves their names on
it, so graph surgery, protection and gradual pruning read them from the model.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

OUTPUT_LAYERS_ATTRIBUTE = "toolkit_output_layers"  # names of the output layers, set by create_model


def attach_output_layers(model: nn.Module, own: Callable[[nn.Module], Sequence[nn.Module]] | None) -> None:
    """Record on ``model`` the layers ``own(model)`` names (nothing when the spec leaves it ``None``)."""
    if own is None:
        return
    names = {id(module): name for name, module in model.named_modules()}
    layers = list(own(model))
    missing = [type(layer).__name__ for layer in layers if id(layer) not in names]
    if missing:
        raise TypeError(f"output_layers() must return layers of the model, got {', '.join(missing)}")
    setattr(model, OUTPUT_LAYERS_ATTRIBUTE, [names[id(layer)] for layer in layers])


def output_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose outputs are the task's classes: never pruned.

    What the model's ``ModelSpec.output_layers`` said for a model built by
    ``create_model``; otherwise (and when a spec leaves it ``None``) smp's
    ``segmentation_head`` / ``classification_head``, or a classifier's final
    ``fc`` (torchvision).
    """
    names = getattr(model, OUTPUT_LAYERS_ATTRIBUTE, None)
    if names is not None:
        return [model.get_submodule(name) for name in names]
    layers = [m for name in ("segmentation_head", "classification_head") if (m := getattr(model, name, None)) is not None]
    if not layers and isinstance(getattr(model, "fc", None), nn.Linear):
        layers.append(model.fc)
    return layers
