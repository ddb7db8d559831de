"""Pruning toolkit for defect and corrosion segmentation models.

Public handles, in the style of timm: ``list_pruners`` / ``create_pruner``.
"""
from toolkit.contract import PruneRequest, PruneResult, PrunerSpec
from toolkit.hookspecs import hookimpl
from toolkit.plugins import create_pruner, get_registry, list_pruners

__version__ = "0.1.0"
__all__ = [
    "PruneRequest",
    "PruneResult",
    "PrunerSpec",
    "create_pruner",
    "get_registry",
    "hookimpl",
    "list_pruners",
]
