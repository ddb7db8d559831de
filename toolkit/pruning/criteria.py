"""Unstructured importance criteria: one score per weight, higher means keep.

A criterion only ranks weights; the schedule (``toolkit.pruning.schedules``) says how
many to drop and ``toolkit.pruning.masking`` drops them. Criteria that need gradients
``observe`` them once per training step, after ``backward`` and before the
optimiser step (the ``after_backward`` hook of the ``StepTrainer``).
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from toolkit.named import Names

Weights = Mapping[str, torch.Tensor]


class Criterion:
    """Base: scores for every weight in ``weights`` (parameter name -> tensor)."""

    name = ""

    def __init__(self, weights: Weights) -> None:
        self.weights = dict(weights)

    def observe(self) -> None:
        """Accumulate what this step's gradients say; a no-op for weight-only criteria."""

    def scores(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_prune(self) -> None:
        """Called once a mask has been computed from the scores; each method says what it keeps."""


class Magnitude(Criterion):
    """``|w|``: the classic baseline, needs no training."""

    name = "magnitude"

    def scores(self) -> dict[str, torch.Tensor]:
        return {n: w.detach().abs() for n, w in self.weights.items()}


class _Accumulating(Criterion):
    """Sums a per-step quantity of weight and gradient between resets."""

    def __init__(self, weights: Weights) -> None:
        super().__init__(weights)
        self.sums = {n: torch.zeros_like(w, dtype=torch.float32) for n, w in self.weights.items()}
        self.observed = 0

    def step_score(self, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def observe(self) -> None:
        for n, w in self.weights.items():
            if w.grad is not None:
                self.sums[n] += self.step_score(w.detach(), w.grad.detach()).float()
        self.observed += 1

    def scores(self) -> dict[str, torch.Tensor]:
        return {n: s.clone() for n, s in self.sums.items()}

    def after_prune(self) -> None:
        """Start a fresh sum: each prune is judged on the steps since the previous one."""
        for s in self.sums.values():
            s.zero_()
        self.observed = 0


class Taylor(_Accumulating):
    """First-order Taylor importance ``(g * w)**2`` (Molchanov et al. 2019), summed over the steps since the last prune.

    It estimates the loss change if the weight were removed, so unlike ``|w|``
    it keeps small weights the loss is sensitive to. A pruned (zero) weight
    scores 0 and stays pruned.
    """

    name = "taylor"

    def step_score(self, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (g * w).pow(2)


class Movement(_Accumulating):
    """Movement score ``S = -sum_t dL/dW * W`` (Sanh et al. 2020), accumulated over all of training.

    Positive when a weight moves away from zero, negative when SGD pulls it
    towards zero: it ranks what fine-tuning is doing, not what pre-training left.
    The paper scales the sum by the learning rate; a constant factor does not
    change the ranking, so it is left out.
    """

    name = "movement"

    def step_score(self, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return -(g * w)

    def after_prune(self) -> None:
        """Movement scores are a running total over training: keep them."""


CRITERIA: Names[Callable[[Weights], Criterion]] = Names("criterion")
for _criterion in (Magnitude, Movement, Taylor):
    CRITERIA.register(_criterion.name, (_criterion.__doc__ or "").split("\n")[0], _criterion)


def create_criterion(name: str, weights: Weights) -> Criterion:
    """Build a criterion by name over ``weights`` (parameter name -> weight tensor)."""
    return CRITERIA.get(name)(weights)
