"""Measurements of a model: parameters, FLOPs, sparsity, latency, file size.

FLOPs are thop's count of multiply-accumulates (MACs), the convention of thop
and of most pruning papers; reductions are ratios, so the factor 2 between
MACs and FLOPs cancels out.
"""
from __future__ import annotations

import copy
import io
import zipfile
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """thop MACs for one forward pass on ``example_inputs``.

    Profiles a copy: thop adds buffers and hooks that must never reach the
    model that gets saved or pruned.
    """
    import thop

    probe = copy.deepcopy(model).eval()
    with torch.no_grad():
        macs, _ = thop.profile(probe, inputs=(example_inputs,), verbose=False)
    return int(macs)


def sparsity(model: nn.Module, ignored: Iterable[nn.Module] = ()) -> float:
    """Fraction of the prunable weights (``toolkit.pruning.prunable``) outside ``ignored`` that are exactly zero."""
    from toolkit.pruning.prunable import prunable_weights  # here: toolkit.pruning's package imports this module

    weights = prunable_weights(model, ignored)
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / total if total else 0.0


@dataclass
class Latency:
    """What a results row reports of a latency measurement: the median, and under what conditions."""

    median_ms: float
    threads: int
    input_shape: tuple[int, ...]


def measure_latency(
    model: nn.Module,
    example_inputs: torch.Tensor,
    runs: int = 10,
    warmup: int = 3,
    threads: int | None = None,
) -> Latency:
    """Median wall time of a forward pass, after warm-up, with a stated thread count."""
    from toolkit.results.runtimes import eager_session, time_interleaved, torch_threads

    with torch_threads(threads):
        used = torch.get_num_threads()
        session = eager_session(model, example_inputs, used)
        timing = time_interleaved({"model": session.timed}, runs, warmup)["model"]
    return Latency(median_ms=timing.median_ms, threads=used, input_shape=tuple(example_inputs.shape))


def state_dict_bytes(model: nn.Module) -> int:
    """Size of the saved ``state_dict``: what a dense file on disk costs."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def compressed_bytes(model: nn.Module) -> int:
    """Size of the ``state_dict`` file deflated: zeros of unstructured pruning shrink it."""
    raw = io.BytesIO()
    torch.save(model.state_dict(), raw)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr("model.pt", raw.getvalue())
    return packed.getbuffer().nbytes


def reduction(before: float, after: float) -> float:
    """Fraction removed: 0.4 means 40% fewer."""
    return 1.0 - after / before if before else 0.0


def cost_of(kind: str, model: nn.Module, example_inputs: torch.Tensor) -> float:
    """One number for a cost target: thop MACs, parameters, or median latency (ms) on the model's device."""
    if kind == "flops":
        return float(count_flops(model, example_inputs))
    if kind == "params":
        return float(count_parameters(model))
    if kind == "latency":
        return measure_latency(model, example_inputs, runs=7, warmup=2).median_ms
    raise ValueError(f"no cost called {kind!r}")
