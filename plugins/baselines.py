"""Baselines every pruning table needs (Blalock et al. 2020; Liu et al. 2019).

``dense`` prunes nothing: the core then trains the dense model on for the
prune and fine-tune steps every other cell gets, so the table has the
unpruned model at the *same total budget* (give it the target 0:
``plugin_targets = {dense = ["0"]}``).

``random`` (a channel criterion) lives with the other criteria. ``narrow`` is
the same architecture made narrower to the pruned shape and trained from
scratch: it finds the per-layer widths a structured pruner would leave at the
requested rate or cost, then the core re-initialises every weight and trains
the model for the whole budget (dense training + prune + fine-tune steps), so
it has exactly the training the pruned models had. If it matches them, the
criterion bought nothing ("Rethinking the Value of Network Pruning").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from toolkit.contract import Option, PruneRequest, PruneResult, PrunerSpec
from toolkit.hookspecs import hookimpl
from toolkit.pruning.importances import RandomImportance
from toolkit.pruning.structured import prune_channels


@dataclass
class NarrowBaseline:
    """The pruned shape at the request's rate or cost, for training from scratch."""

    keep_residual: bool = False
    round_to: int | None = None

    def prune(self, request: PruneRequest) -> PruneResult:
        cost = request.target if request.target is not None and request.target.is_cost else None
        result = prune_channels(  # the structured pruners' own surgery, so the shape is theirs
            request.model, request.example_inputs, None if cost else request.amount,
            RandomImportance(seed=request.seed),  # which channels go does not matter: all weights restart
            target=cost, ignored_layers=request.ignored_layers, keep_residual=self.keep_residual,
            round_to=self.round_to)
        return PruneResult(result.model, "structured", "toolkit", result.sparsity, from_scratch=True,
                           meta={**result.meta, "baseline": "narrow: pruned shape, trained from scratch"})


class KeepDense:
    """The dense model as it is: trained on by the core for the same budget as the pruned ones."""

    def prune(self, request: PruneRequest) -> PruneResult:
        return PruneResult(request.model, "unstructured", "toolkit", 0.0, meta={"baseline": "dense, same budget"})


@hookimpl
def register_pruners(register: Callable[[PrunerSpec], None]) -> None:
    register(PrunerSpec(
        "dense", "unstructured", "toolkit",
        "baseline: nothing pruned, the dense model trained on for the same total budget as every pruned cell "
        "(use with target 0)",
        KeepDense,
    ))
    register(PrunerSpec(
        "narrow", "structured", "toolkit",
        "baseline: the architecture narrowed to the pruned shape, re-initialised and trained from scratch for the "
        "whole budget (Liu et al. 2019)",
        NarrowBaseline,
        options=(Option("keep_residual", bool, False, "keep summed channels whole, as the pruned model would"),
                 Option("round_to", int, None, "channel counts multiples of this")),
        cost_targets=True,
    ))
