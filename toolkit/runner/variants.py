"""What a grid's plugin or variant name runs with: its options and its run settings.

Executors import this, never the grid module; ``grid`` is any object with the
``GridConfig`` fields used here (``variants``, ``plugin_options``, ``run``).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from toolkit.config import RunConfig, update
from toolkit.errors import UsageError

if TYPE_CHECKING:
    from toolkit.runner.grid_config import GridConfig


def options_of(grid: GridConfig, name: str) -> dict[str, Any]:
    """A plugin's or variant's options."""
    if name in grid.variants:
        options = grid.variants[name].get("options", {})
        if not isinstance(options, dict):
            raise UsageError(f"variants.{name}.options must be a table")
        return dict(options)
    return dict(grid.plugin_options.get(name, {}))


# what a variant may set in its ``run`` table: how a pruned model recovers, never what the dense
# model (shared by every cell of an architecture, dataset and seed) is trained with
RECOVERY_SETTINGS = ("bn_recalibration", "pruning_steps", "prune", "finetune")
RECOVERY_TRAIN_SETTINGS = ("recovery_lr", "recovery_lr_scale")


def settings_of(grid: GridConfig, name: str) -> RunConfig:
    """The run settings a plugin's or variant's cells use: the grid's, with a variant's distillation
    and recovery settings (``run = {bn_recalibration = 0, recovery_lr = "by-flops"}``)."""
    variant = grid.variants.get(name, {})
    distill, run = variant.get("distill"), variant.get("run")
    if distill is None and run is None:
        return grid.run
    settings = dataclasses.replace(grid.run, distill=dataclasses.replace(grid.run.distill),
                                   train=dataclasses.replace(grid.run.train),
                                   prune=dict(grid.run.prune), finetune=dict(grid.run.finetune))
    if distill is not None:
        update(settings.distill, {"enabled": distill} if isinstance(distill, bool) else distill, f"variants.{name}.distill")
    if run is not None:
        if not isinstance(run, dict):
            raise UsageError(f"variants.{name}.run must be a table")
        allowed = RECOVERY_SETTINGS + RECOVERY_TRAIN_SETTINGS
        unknown = sorted(set(run) - set(allowed))
        if unknown:
            raise UsageError(f"variants.{name}.run: {', '.join(unknown)} cannot differ between cells sharing a dense "
                             f"model; a variant may set {', '.join(allowed)}")
        update(settings, {k: v for k, v in run.items() if k in RECOVERY_SETTINGS}, f"variants.{name}.run")
        update(settings.train, {k: v for k, v in run.items() if k in RECOVERY_TRAIN_SETTINGS}, f"variants.{name}.run")
    return settings
