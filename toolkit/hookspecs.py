"""The whole plugin contract of the toolkit: one hook.

A plugin is a module (or object) with functions marked ``@hookimpl``, announced in
its package's ``pyproject.toml`` under the entry-point group ``toolkit``::

    [project.entry-points.toolkit]
    my_pruners = "my_package.pruners"

The built-in pruners in ``plugins/`` are registered exactly this way.
"""
from __future__ import annotations

from typing import Callable

import pluggy

from toolkit.contract import PrunerSpec

PROJECT = "toolkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_pruners(register: Callable[[PrunerSpec], None]) -> None:
    """Call ``register(PrunerSpec(...))`` once for each pruner the plugin offers.

    The spec's ``factory(**options)`` must return an object with
    ``prune(PruneRequest) -> PruneResult`` (see ``toolkit.contract``).
    """
