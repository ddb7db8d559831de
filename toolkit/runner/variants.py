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


def settings_of(grid: GridConfig, name: str) -> RunConfig:
    """The run settings a plugin's or variant's cells use: the grid's, with a variant's distillation."""
    distill = grid.variants.get(name, {}).get("distill")
    if distill is None:
        return grid.run
    settings = dataclasses.replace(grid.run, distill=dataclasses.replace(grid.run.distill))
    update(settings.distill, {"enabled": distill} if isinstance(distill, bool) else distill, f"variants.{name}.distill")
    return settings
