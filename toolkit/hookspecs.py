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

from toolkit.contract import DatasetSpec, ImportanceSpec, ModelSpec, PrunerSpec

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


@hookspec
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Call ``register(DatasetSpec(...))`` once for each dataset format (``--data NAME:PATH``).

    ``listing(DataRequest) -> Listing`` lists ``Record``s (image file plus mask
    file or mask reader); the core reads them, so every format gets the same
    bad-input rules (unreadable image, missing mask, size mismatch, class id
    out of range: one ``DataError`` naming the file, or skipped with
    ``--skip-bad``), stratified seeded splits, ``--limit`` and ``--binary``.
    """


@hookspec
def register_models(register: Callable[[ModelSpec], None]) -> None:
    """Call ``register(ModelSpec(...))`` once for each architecture (``--arch NAME``).

    ``build(encoder=, encoder_weights=, num_classes=, in_channels=)`` returns
    the dense model; ``create_model`` calls it and the saved pruned model is
    rebuilt from the same name. ``output_layers(model)`` names the layers that
    give the classes when they are not smp's heads: the core passes them to
    every pruner as ``ignored_layers`` and its own surgery never prunes them.
    """
