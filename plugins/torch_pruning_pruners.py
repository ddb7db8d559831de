"""Built-in structured pruners: channels physically removed through Torch-Pruning.

One pruner per criterion (``fpgm``, ``l1``, ``l2``, ``taylor``, ``lamp``,
``random``; see ``toolkit.pruning.importances``), all with the same
algorithm and options:

* ``global_pruning`` (False): rank channels across layers instead of removing
  the same fraction from each (see "pruning rate" in ``toolkit.pruning.surgery``);
* ``round_to`` (None): keep channel counts multiples of this (8, 16);
* ``keep_residual`` (False): leave summed (residual) channels unpruned and
  prune only inside blocks, as the FPGM paper does for ResNets;
* ``iterative`` (False): the steel-plate study's schedule. ``request.pruning_steps``
  times: prune another ``sparsity / pruning_steps``, fine-tune
  ``request.step_interval`` steps with ``request.train``, score with
  ``request.evaluate`` (higher is better). It stops early when the score falls
  below the floor and returns the last model that met it;
* ``min_score`` (None): the floor as an absolute score;
* ``max_drop`` (None): the floor as the largest fall below the score before
  pruning, in the score's own units (0.02 = two points of a [0, 1] IoU);
  with both, the higher floor applies;
* ``taylor_steps`` (8): backward passes that feed ``taylor`` before each prune;
* ``seed`` (0): for ``random``.

The request's ``sparsity`` is the pruning rate; ``PruneResult.sparsity`` is the
measured fraction of prunable output channels removed.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from toolkit.contract import PruneRequest, PruneResult, PrunerSpec
from toolkit.errors import PruningError, UsageError
from toolkit.hookspecs import hookimpl
from toolkit.results.measure import count_flops, count_parameters
from toolkit.pruning.importances import NEEDS_GRADIENTS, TaylorImportance
from toolkit.pruning.surgery import ChannelSurgery, channel_sparsity

BACKEND = "torch-pruning"
DESCRIPTIONS = {
    "fpgm": "filters nearest the layer's geometric median removed (He et al. 2019)",
    "l1": "filters with the smallest L1 norm removed (Li et al. 2017)",
    "l2": "filters with the smallest L2 norm removed",
    "taylor": "first-order Taylor estimate of the loss change (Molchanov et al. 2019); needs a trainer",
    "lamp": "layer-adaptive magnitude scores (Lee et al. 2021); differs from l2 with global_pruning",
    "random": "random channels removed: the baseline",
}


@dataclass
class ChannelPruner:
    """Prunes output channels by one criterion, in one shot or iteratively with fine-tuning."""

    importance: str
    global_pruning: bool = False
    round_to: int | None = None
    keep_residual: bool = False
    iterative: bool = False
    min_score: float | None = None
    max_drop: float | None = None
    taylor_steps: int = 8
    seed: int = 0

    def prune(self, request: PruneRequest) -> PruneResult:
        model, x = request.model, request.example_inputs
        self._check(request)
        steps = max(1, request.pruning_steps) if self.iterative else 1
        params0, flops0 = count_parameters(model), count_flops(model, x)
        surgery = ChannelSurgery(
            model, x, request.sparsity, self.importance,
            ignored_layers=list(request.ignored_layers), global_pruning=self.global_pruning,
            round_to=self.round_to, keep_residual=self.keep_residual, steps=steps, seed=self.seed,
        )
        history: list[dict[str, Any]] = []
        score0 = floor = None
        if self.iterative and request.evaluate is not None:
            score0 = float(request.evaluate(model))
            floor = self._floor(score0)
            if floor is not None and score0 < floor:
                raise PruningError(
                    f"the model scores {score0:.4g} before pruning, already below the floor {floor:.4g}: lower min_score"
                )
            history.append(self._record(0, 0.0, 0.0, model, x, score0))
        keep = copy.deepcopy(model) if floor is not None else None
        stopped = "target"
        for step in range(1, steps + 1):
            if self.importance in NEEDS_GRADIENTS:
                self._feed_gradients(surgery.importance, request, model)
            reached = surgery.step()
            score = None
            if self.iterative:
                if request.train is not None:
                    request.train(model, request.step_interval)
                if request.evaluate is not None:
                    score = float(request.evaluate(model))
            history.append(self._record(step, surgery.target_rate, reached, model, x, score))
            if floor is not None and score is not None and score < floor:
                stopped = "floor"
                break
            if keep is not None and step < steps:
                keep = copy.deepcopy(model)
        result_model = keep if stopped == "floor" else model
        kept = history[-2] if stopped == "floor" else history[-1]
        return PruneResult(
            model=result_model,
            kind="structured",
            backend=BACKEND,
            sparsity=channel_sparsity(surgery.before, result_model),
            history=history,
            meta={
                "importance": self.importance,
                "target_rate": request.sparsity,
                "global_pruning": self.global_pruning,
                "round_to": self.round_to,
                "keep_residual": self.keep_residual,
                "iterative": self.iterative,
                "steps_planned": steps,
                "steps_kept": kept["step"],
                "stopped_by": stopped,
                "score_before": score0,
                "score_floor": floor,
                "params_before": params0,
                "params_after": kept["params"],
                "flops_before": flops0,
                "flops_after": kept["flops"],
            },
        )

    # -- pieces ---------------------------------------------------------------------
    def _check(self, request: PruneRequest) -> None:
        if self.importance in NEEDS_GRADIENTS and request.train is None:
            raise PruningError(
                f"{self.importance} needs training data for its gradients: give the request a trainer (request.train)"
            )
        if (self.min_score is not None or self.max_drop is not None) and not self.iterative:
            raise UsageError("min_score / max_drop only apply with iterative=True")
        if self.iterative and (self.min_score is not None or self.max_drop is not None) and request.evaluate is None:
            raise PruningError("a score floor (min_score / max_drop) needs an evaluator: give the request evaluate=")
        if self.max_drop is not None and self.max_drop < 0:
            raise UsageError(f"max_drop must be >= 0, got {self.max_drop}")

    def _floor(self, score0: float) -> float | None:
        floors = [f for f in (self.min_score, None if self.max_drop is None else score0 - self.max_drop) if f is not None]
        return max(floors) if floors else None

    def _feed_gradients(self, importance: TaylorImportance, request: PruneRequest, model: nn.Module) -> None:
        """Backward passes with a zero learning rate: gradients for the scores, weights unchanged."""
        importance.reset()
        frozen = torch.optim.SGD(model.parameters(), lr=0.0)
        request.train(model, self.taylor_steps, optimizer=frozen, after_backward=importance.accumulate)
        model.zero_grad(set_to_none=True)

    @staticmethod
    def _record(step: int, rate: float, sparsity: float, model: nn.Module, x: torch.Tensor, score: float | None) -> dict[str, Any]:
        return {
            "step": step,
            "rate": rate,
            "sparsity": sparsity,
            "params": count_parameters(model),
            "flops": count_flops(model, x),
            "score": score,
        }


def options_factory(cls: type, name: str) -> Callable[..., Any]:
    """``PrunerSpec.factory`` for a dataclass pruner whose first field is bound to ``name``.

    Options are the other fields; a misspelt one is a ``UsageError`` that lists them.
    """
    known = [f.name for f in dataclasses.fields(cls)][1:]

    def build(**options: Any) -> Any:
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise UsageError(f"unknown option(s) {', '.join(unknown)} for pruner {name!r}; known: {', '.join(known)}")
        return cls(name, **options)

    return build


@hookimpl
def register_pruners(register: Callable[[PrunerSpec], None]) -> None:
    for name, description in DESCRIPTIONS.items():
        register(PrunerSpec(name=name, kind="structured", backend=BACKEND, description=description,
                            factory=options_factory(ChannelPruner, name)))
