"""Gradual unstructured pruning, the toolkit's own algorithm: train, and on a schedule
rank the weights by a criterion and zero the lowest ones.

The three pieces stay separate (``toolkit.pruning.schedules`` says how much,
``toolkit.pruning.criteria`` which weights, ``toolkit.pruning.masking`` zeroes
them); this module drives them through the ``StepTrainer`` callbacks of a
``PruneRequest``. The ``linear``, ``agp`` and ``movement`` plugins use it as
their default backend (``plugins/nni_pruners.py`` holds NNI's alternative).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from toolkit.contract import PruneRequest, PruneResult
from toolkit.errors import PruningError
from toolkit.pruning.criteria import create_criterion
from toolkit.pruning.masking import Masks, apply_masks, mask_sparsity, masks_from_scores
from toolkit.pruning.prunable import prunable_weights
from toolkit.pruning.schedules import Schedule
from toolkit.results.measure import sparsity


def weights_to_prune(request: PruneRequest) -> dict[str, torch.Tensor]:
    """The request's prunable weights (``toolkit.pruning.prunable``: never the output layers) outside
    its ``ignored_layers``, or a ``PruningError`` when there are none."""
    weights = prunable_weights(request.model, request.ignored_layers)
    if not weights:
        raise PruningError(f"{type(request.model).__name__} has no conv or linear weights outside the ignored layers to prune")
    return weights


def counting(after_step: Callable[[nn.Module, int], None] | None = None) -> tuple[list[int], Callable[[nn.Module, int], None]]:
    """An ``after_step`` that counts optimiser steps itself: trainers may restart ``i`` per chunk."""
    count = [0]

    def step(model: nn.Module, i: int) -> None:
        count[0] += 1
        if after_step:
            after_step(model, count[0])

    return count, step


def check_ran(count: int, expected: int) -> None:
    if count != expected:
        raise PruningError(f"the trainer ran {count} of the {expected} steps the schedule needs; "
                           "a StepTrainer must run exactly `steps` steps and call after_step after each")


def unstructured_result(request: PruneRequest, backend: str, masks: Masks, history: list[dict[str, Any]],
                        meta: dict[str, Any]) -> PruneResult:
    achieved = sparsity(request.model, request.ignored_layers)
    meta = {**meta, "amount": request.amount, "mask_zero_fraction": mask_sparsity(masks)}
    return PruneResult(request.model, "unstructured", backend, achieved, masks, history, meta)


def gradual_masks(
    request: PruneRequest, schedule: Schedule, criterion_name: str, scope: str, cooldown: int,
    optimizer: torch.optim.Optimizer | None,
) -> tuple[Masks, list[dict[str, Any]]]:
    """Train, and at every prune iteration rank the weights and zero the lowest ones.

    Masks are re-applied after every optimiser step (momentum would otherwise
    move a pruned weight off zero), and they are monotone: a pruned weight
    stays pruned. For movement this differs from the paper's straight-through
    masks, which keep the dense weights and let a weight come back: here a
    pruned weight is zero, its score stops moving, and bringing it back would
    only revive a zero (which still counts as sparse). NNI's backend has the
    paper's revivable masks.
    """
    model, ignored = request.model, request.ignored_layers
    weights = weights_to_prune(request)
    criterion = create_criterion(criterion_name, weights)
    masks: Masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    prune_at = set(schedule.prune_iterations())
    history: list[dict[str, Any]] = []

    def after_step(model: nn.Module, t: int) -> None:
        apply_masks(model, masks)
        if t in prune_at:
            target = schedule.at(t)
            masks.update(masks_from_scores(criterion.scores(), target, scope, keep_pruned=masks))
            apply_masks(model, masks)
            criterion.after_prune()
            history.append({"iteration": t, "amount": target, "reached": sparsity(model, ignored)})

    total = schedule.end + cooldown
    count, counted = counting(after_step)
    request.train(model, total, optimizer=optimizer, after_backward=lambda m: criterion.observe(), after_step=counted)
    check_ran(count[0], total)
    return masks, history
