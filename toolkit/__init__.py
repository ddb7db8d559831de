"""Pruning toolkit for defect and corrosion segmentation models.

Public handles, in the style of timm: ``list_pruners`` / ``create_pruner``,
``list_models`` / ``create_model``, ``list_datasets``; for plugin authors the
contract (``PrunerSpec``, ``ImportanceSpec``, ``DatasetSpec``, ``ModelSpec``,
``Option``, ``PruneRequest``, ``PruneResult``, ``DataRequest``, ``Listing``,
``Record``, ``hookimpl``), the structured machinery (``ChannelImportance``,
``prune_channels``) and the conformance kit (``toolkit.testing``).
"""
from typing import Any

from toolkit.contract import (
    DataRequest, DatasetSpec, ImportanceSpec, Listing, ModelSpec, Option, PruneRequest, PruneResult, PrunerSpec, Record,
)
from toolkit.hookspecs import hookimpl
from toolkit.plugins import create_pruner, get_registry, list_pruners

__version__ = "0.2.0"
__all__ = [
    "ChannelImportance",
    "DataRequest",
    "DatasetSpec",
    "ImportanceSpec",
    "Listing",
    "ModelSpec",
    "Option",
    "PruneRequest",
    "PruneResult",
    "PrunerSpec",
    "Record",
    "Target",
    "create_model",
    "create_pruner",
    "get_registry",
    "hookimpl",
    "list_datasets",
    "list_models",
    "list_pruners",
    "prune_channels",
]

_LAZY = {
    "ChannelImportance": "toolkit.pruning.importances",
    "prune_channels": "toolkit.pruning.structured",
    "Target": "toolkit.pruning.targets",
    "create_model": "toolkit.workbench.models",
    "list_models": "toolkit.workbench.models",
    "list_datasets": "toolkit.workbench.data",
}


def __getattr__(name: str) -> Any:
    """Torch-Pruning, thop, smp and the data layer load only when used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
