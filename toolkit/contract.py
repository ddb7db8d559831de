"""The pruner contract: what a pruner plugin receives and what it returns.

Kept small on purpose, so one shape fits gradual pruners that need training steps
(linear, AGP, movement) and one-shot ones (FPGM, L1). A pruner is any object with
``prune(request) -> PruneResult``; a plugin hands the toolkit a ``PrunerSpec``
whose ``factory(**options)`` builds one.

Sparsity means different things for the two kinds, and both are measured, never
assumed:

* unstructured: the fraction of *prunable weights* (conv and linear weights,
  segmentation head excluded) that are exactly zero;
* structured: the fraction of *output channels* removed from each prunable
  layer (the "pruning rate" of Torch-Pruning and of the FPGM literature), which
  removes roughly ``1 - (1 - rate)**2`` of those layers' parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

Kind = Literal["structured", "unstructured"]
KINDS: tuple[str, ...] = ("structured", "unstructured")


class StepTrainer(Protocol):
    """Runs ``steps`` optimisation steps of the task's loss on ``model``.

    Gradual pruners use the two callbacks: ``after_backward`` sees gradients
    (Taylor and movement scores), ``after_step`` runs after the optimiser step
    (re-applying masks, advancing a schedule). ``optimizer`` lets a backend pass
    its own wrapped optimiser (NNI patches ``step``); ``None`` means the
    trainer's default (SGD with momentum).
    """

    def __call__(
        self,
        model: nn.Module,
        steps: int,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        after_backward: Callable[[nn.Module], None] | None = None,
        after_step: Callable[[nn.Module, int], None] | None = None,
    ) -> None: ...


@dataclass
class PruneRequest:
    """Everything a pruner may use. Only ``model``, ``example_inputs`` and
    ``sparsity`` are always set; a pruner that needs more says so with a
    ``PruningError`` when it is missing."""

    model: nn.Module
    example_inputs: torch.Tensor
    sparsity: float
    train: StepTrainer | None = None
    evaluate: Callable[[nn.Module], float] | None = None
    ignored_layers: Sequence[nn.Module] = ()
    pruning_steps: int = 10  # n_p: how many times the mask is tightened
    step_interval: int = 10  # dt: training iterations between two prunes
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class PruneResult:
    """What a pruner hands back. ``model`` is pruned in place or replaced.

    ``masks`` maps parameter names to 0/1 tensors for unstructured pruners (the
    zeros are already in the weights); structured pruners return a physically
    smaller model and no masks. ``history`` holds one dict per pruning step.
    """

    model: nn.Module
    kind: Kind
    backend: str
    sparsity: float
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Pruner(Protocol):
    def prune(self, request: PruneRequest) -> PruneResult: ...


@dataclass(frozen=True)
class PrunerSpec:
    """A pruner as a plugin registers it: its public name and how to build it."""

    name: str
    kind: Kind
    backend: str
    description: str
    factory: Callable[..., Pruner]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"pruner {self.name!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if not self.name or not self.name.replace("-", "_").isidentifier():
            raise ValueError(f"pruner name {self.name!r} must be a plain identifier")


def check_result(request: PruneRequest, result: object) -> PruneResult:
    """Check a plugin kept the contract, so a broken one fails its own row."""
    if not isinstance(result, PruneResult):
        raise TypeError(f"a pruner must return PruneResult, got {type(result).__name__}")
    if result.kind not in KINDS:
        raise TypeError(f"PruneResult.kind must be one of {KINDS}, got {result.kind!r}")
    if not isinstance(result.model, nn.Module):
        raise TypeError("PruneResult.model must be a torch.nn.Module")
    if not 0.0 <= float(result.sparsity) <= 1.0:
        raise TypeError(f"PruneResult.sparsity must lie in [0, 1], got {result.sparsity}")
    return result
