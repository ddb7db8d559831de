"""Pruning: the structured machinery (graph surgery, channel importances, the importance
pruner, cost targets) and the unstructured one (criteria, schedules, masks, gradual
pruning). Plugins build on ``ChannelImportance`` and ``prune_channels``."""
from toolkit.pruning.importances import ChannelImportance
from toolkit.pruning.structured import prune_channels
from toolkit.pruning.targets import Target

__all__ = ["ChannelImportance", "Target", "prune_channels"]
