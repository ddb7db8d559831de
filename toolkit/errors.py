"""Errors a user can cause. The CLI prints each as one line and exits non-zero.

Anything that is *not* a ``ToolkitError`` is a bug in the toolkit or a plugin and
keeps its traceback.
"""
from __future__ import annotations


class ToolkitError(Exception):
    """Base of every user-facing error; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(ToolkitError):
    """Bad command-line or config values (argparse also exits 2)."""

    exit_code = 2


class UnknownNameError(UsageError):
    """A name (pruner, architecture, dataset, loss...) that no registry knows; the known names are
    listed in the order given (plugin registries sort theirs), then ``hint`` if any."""

    def __init__(self, kind: str, name: str, known: list[str], hint: str = ""):
        self.kind, self.name, self.known = kind, name, list(known)
        listed = ", ".join(self.known) if self.known else "(none installed)"
        super().__init__(f"unknown {kind} {name!r}; known: {listed}{' ' + hint if hint else ''}")


class DataError(ToolkitError):
    """A dataset file or folder that cannot be used as it is."""


class WeightsError(ToolkitError):
    """Pretrained weights that cannot be found or do not fit the model."""


class PruningError(ToolkitError):
    """A pruner that cannot do what was asked on this model."""


class RuntimeMissing(ToolkitError):
    """An inference runtime (onnxruntime, openvino, a GPU provider) that is not installed here;
    the message is the reason a results row records, and what to install."""


class ExportMismatch(ToolkitError):
    """An exported model whose outputs differ from PyTorch's by more than the tolerance."""
