"""The whole plugin contract of the toolkit: a few hooks, each registering named specs.

A plugin is a module (or object) with functions marked ``@hookimpl``, announced in
its package's ``pyproject.toml`` under the entry-point group ``toolkit``::

    [project.entry-points.toolkit]
    my_pruners = "my_package.pruners"

The built-in pruners, criteria, datasets and architectures in ``plugins/`` are
registered exactly this way; the core has no private back door. Every hook
receives a ``register`` callable and calls it once per thing it offers; a
name is the public handle (``--plugins``, ``--data``, ``--arch``), and a name
registered twice is reported as a broken plugin rather than silently replaced.
"""
from __future__ import annotations

from typing import Callable

import pluggy

from toolkit.contract import ImportanceSpec, PrunerSpec

PROJECT = "toolkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_pruners(register: Callable[[PrunerSpec], None]) -> None:
    """Call ``register(PrunerSpec(...))`` once for each whole pruner the plugin offers.

    ``factory(**options)`` must return an object with
    ``prune(PruneRequest) -> PruneResult`` (see ``toolkit.contract``); the core
    checks the options against ``PrunerSpec.options`` first.
    """


@hookspec
def register_importances(register: Callable[[ImportanceSpec], None]) -> None:
    """Call ``register(ImportanceSpec(...))`` once for each channel criterion.

    The toolkit turns each into a structured pruner of the same name with its
    whole structured machinery: dependency graph (MA-Net and grouped-conv
    fixes), rate and cost targets, global or per-layer ranking, round_to,
    keep_residual, iterative mode, measured rate, serialization.
    ``factory(seed=..., **options)`` returns a Torch-Pruning ``Importance``,
    usually a ``toolkit.pruning.ChannelImportance`` subclass.
    """
