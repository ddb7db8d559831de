"""Built-in channel criteria; the toolkit makes each a structured pruner of the same name.

Registered through ``register_importances`` exactly as a third-party criterion
would be, so ``fpgm``, ``l1``, ``l2``, ``taylor``, ``lamp`` and ``random`` get
the core's structured machinery (Torch-Pruning's dependency graph with the
toolkit's fixes, rates and cost targets, iterative mode; see
``toolkit.pruning.structured``). The criteria themselves live in
``toolkit.pruning.importances``.
"""
from __future__ import annotations

from typing import Callable

from toolkit.contract import ImportanceSpec
from toolkit.hookspecs import hookimpl
from toolkit.pruning.importances import (
    GeometricMedianImportance, LAMPImportance, NormImportance, RandomImportance, TaylorImportance,
)


@hookimpl
def register_importances(register: Callable[[ImportanceSpec], None]) -> None:
    register(ImportanceSpec("fpgm", "filters nearest the layer's geometric median removed (He et al. 2019)",
                            lambda seed=0: GeometricMedianImportance()))
    register(ImportanceSpec("l1", "filters with the smallest L1 norm removed (Li et al. 2017)",
                            lambda seed=0: NormImportance(p=1)))
    register(ImportanceSpec("l2", "filters with the smallest L2 norm removed",
                            lambda seed=0: NormImportance(p=2)))
    register(ImportanceSpec("taylor", "first-order Taylor estimate of the loss change (Molchanov et al. 2019); needs a trainer",
                            lambda seed=0: TaylorImportance(), needs_gradients=True))
    register(ImportanceSpec("lamp", "layer-adaptive magnitude scores (Lee et al. 2021); differs from l2 with global_pruning",
                            lambda seed=0: LAMPImportance()))
    register(ImportanceSpec("random", "random channels removed (seeded by the run): the baseline every criterion should beat",
                            lambda seed=0: RandomImportance(seed=seed)))
