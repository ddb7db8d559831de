"""Pruning toolkit for defect and corrosion segmentation models.

Public handles, in the style of timm: ``list_pruners`` / ``create_pruner``;
for plugin authors the contract (``PrunerSpec``, ``ImportanceSpec``,
``Option``, ``PruneRequest``, ``PruneResult``, ``hookimpl``) and the
structured machinery (``ChannelImportance``, ``prune_channels``).
"""
from typing import Any

from toolkit.contract import ImportanceSpec, Option, PruneRequest, PruneResult, PrunerSpec
from toolkit.hookspecs import hookimpl
from toolkit.plugins import create_pruner, get_registry, list_pruners

__version__ = "0.2.0"
__all__ = [
    "ChannelImportance",
    "ImportanceSpec",
    "Option",
    "PruneRequest",
    "PruneResult",
    "PrunerSpec",
    "Target",
    "create_pruner",
    "get_registry",
    "hookimpl",
    "list_pruners",
    "prune_channels",
]

_LAZY = {
    "ChannelImportance": "toolkit.pruning.importances",
    "prune_channels": "toolkit.pruning.structured",
    "Target": "toolkit.pruning.targets",
}


def __getattr__(name: str) -> Any:
    """Torch-Pruning and thop load only when the structured API is used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
