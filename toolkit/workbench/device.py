"""Where a run computes, and in which precision.

``--device auto`` takes CUDA when present (then Apple's MPS, then the CPU);
``--precision 16-mixed`` / ``bf16-mixed`` run forward passes under
``torch.autocast`` (a ``GradScaler`` guards float16 gradients on CUDA).
"""
from __future__ import annotations

import contextlib
import functools
import platform
from typing import ContextManager

import torch

from toolkit.errors import UsageError
from toolkit.named import Names

PRECISIONS: Names[torch.dtype | None] = Names("precision")  # the autocast dtype of each
PRECISIONS.register("32", "full float32 (default)", None)
PRECISIONS.register("16-mixed", "float16 autocast, a GradScaler guarding the gradients on CUDA", torch.float16)
PRECISIONS.register("bf16-mixed", "bfloat16 autocast", torch.bfloat16)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked against this machine."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: this machine has no CUDA GPU that torch can use (use cpu or auto)")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device("cuda", index)
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: Apple's Metal backend is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def check_precision(precision: str) -> str:
    return PRECISIONS.check(str(precision))


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Mixed-precision forward passes, or nothing for full precision."""
    dtype = PRECISIONS.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> "torch.amp.GradScaler | None":
    """Loss scaling for float16 on CUDA, where small gradients would underflow; bf16 needs none."""
    if precision == "16-mixed" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    """The CPU's model name, e.g. 'AMD EPYC 7B13' (for latency columns)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: torch.device) -> str:
    """A human name for a device, for every latency column."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return cpu_name()
