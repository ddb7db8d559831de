"""Layers a structured pruner should leave whole, by role rather than by name.

* ``first_conv``: the first convolution the input meets (3 input channels; it
  costs little and every feature depends on it);
* ``stem``: every convolution that runs at the input's full or half
  resolution, before the encoder's first real downsampling stage;
* ``head``: the layers whose outputs the output layer reads (the decoder's
  last block), whose channels are what the classes are made of.

Found from one forward pass (order and resolution) and the dependency graph
(what feeds the head), so they work on any architecture the toolkit builds.
"""
from __future__ import annotations

import warnings
from typing import Iterable

import torch
import torch_pruning as tp
from torch import nn

from toolkit.errors import UsageError
from toolkit.workbench.heads import output_layers

ROLES = ("first_conv", "stem", "head")


def parse_roles(text: str | Iterable[str] | None) -> list[str]:
    roles = [r.strip() for r in (text.split(",") if isinstance(text, str) else (text or [])) if r.strip()]
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise UsageError(f"cannot protect {', '.join(unknown)}: choose from {', '.join(ROLES)}")
    return roles


def _convs_in_order(model: nn.Module, example_inputs: torch.Tensor) -> list[tuple[nn.Module, tuple[int, ...]]]:
    seen: list[tuple[nn.Module, tuple[int, ...]]] = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append((m, tuple(o.shape))))
               for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return seen


def _head_feeders(model: nn.Module, example_inputs: torch.Tensor) -> list[nn.Module]:
    from toolkit.pruning.surgery import traceable

    heads = [m for layer in output_layers(model) for m in layer.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not heads:
        return []
    head = heads[0]
    was_training = model.training
    try:
        with traceable(model) as forward_fn, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = tp.DependencyGraph().build_dependency(model, example_inputs, forward_fn=forward_fn)
    finally:
        model.train(was_training)
    in_fn = tp.prune_linear_in_channels if isinstance(head, nn.Linear) else tp.prune_conv_in_channels
    group = graph.get_pruning_group(head, in_fn, idxs=[0])
    return [item.dep.target.module for item in group
            if isinstance(item.dep.target.module, (nn.Conv2d, nn.Linear)) and item.dep.target.module is not head]


def protected_layers(model: nn.Module, example_inputs: torch.Tensor, roles: Iterable[str]) -> list[nn.Module]:
    """The layers of ``model`` that play the given roles."""
    roles = parse_roles(roles)
    if not roles:
        return []
    found: list[nn.Module] = []
    convs = _convs_in_order(model, example_inputs) if {"first_conv", "stem"} & set(roles) else []
    if "first_conv" in roles and convs:
        found.append(convs[0][0])
    if "stem" in roles:
        side = example_inputs.shape[-1]
        for m, shape in convs:  # the prefix of the forward pass that runs at full or half resolution
            if len(shape) != 4 or shape[-1] < side // 2:
                break
            found.append(m)
    if "head" in roles:
        found += _head_feeders(model, example_inputs)
    unique: list[nn.Module] = []
    for m in found:
        if all(m is not u for u in unique):
            unique.append(m)
    return unique
