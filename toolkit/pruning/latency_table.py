"""Latency targets on a runtime: a per-layer latency table, measured once and cached.

Timing every candidate width on ONNX Runtime would mean an export and a
session per candidate. Instead each conv/linear layer is exported alone, at
its input size, at a few widths, and timed on the runtime; a fit
``fixed + scaling * f**2`` (``f`` the kept fraction of its channels; ``f`` for
a depthwise conv) gives its latency at any width. The allocator sums the table
over layers to rank candidates (``toolkit.pruning.allocation``), and the chosen
model is then timed for real, dense and pruned interleaved.

The table is cached on disk (``TOOLKIT_CACHE_DIR``, default
``~/.cache/toolkit``, under ``latency/``), keyed by the model's layer shapes
(so its architecture and encoder), the runtime, the input size and the
threads: the second search on the same model times nothing but the result.

Models are exported, loaded and timed by ``toolkit.results.runtimes``, the
same sessions and interleaved timing every results row uses: ``eager``,
``onnxruntime`` or ``openvino``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from toolkit.errors import PruningError, UsageError
from toolkit.pruning.surgery import PRUNABLE, forward_prunable
from toolkit.results.runtimes import Timing, missing, open_sessions, time_interleaved

RUNTIMES = ("eager", "onnxruntime", "openvino")  # the CPU runtimes a latency target can be timed on
WIDTHS = (0.5, 1.0)  # kept fractions each layer is timed at: two points fix the line


# -- timing a model on a runtime --------------------------------------------------------------
def check_latency_runtime(runtime: str) -> None:
    """A ``latency_runtime`` that exists and is installed here, checked when the pruner is built."""
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown latency_runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    why = missing(runtime)
    if why:
        raise UsageError(f"latency_runtime={runtime}: {why}")


def timed_on(runtime: str, models: Sequence[nn.Module], x: torch.Tensor, *, threads: int = 1, runs: int = 15,
             warmup: int = 3) -> list[Timing]:
    """Each model on ``runtime`` (exported as ``toolkit export`` does), timed interleaved, so load hits all alike."""
    calls = _timed_calls(runtime, models, x, threads)
    timings = time_interleaved(calls, runs, warmup, threads)
    return [timings[i] for i in range(len(calls))]


def _timed_calls(runtime: str, models: Sequence[nn.Module], x: torch.Tensor, threads: int) -> dict[int, Callable]:
    """One timed pass of each model on ``runtime``, by position."""
    check_latency_runtime(runtime)
    calls = {}
    for i, model in enumerate(models):
        session = open_sessions(model, x, [runtime], threads)[runtime]
        if isinstance(session, str):
            raise PruningError(f"latency_runtime={runtime} cannot time this model: {session}")
        calls[i] = session.timed
    return calls


# -- the per-layer table ------------------------------------------------------------------------
def _scaled(layer: nn.Module, f: float) -> tuple[nn.Module, int]:
    """A fresh copy of ``layer`` with a fraction ``f`` of its channels; returns it and its input channels."""
    if isinstance(layer, nn.Linear):
        fin, fout = max(1, round(layer.in_features * f)), max(1, round(layer.out_features * f))
        return nn.Linear(fin, fout, bias=layer.bias is not None), fin
    groups = layer.groups
    depthwise = 1 < groups == layer.in_channels
    per_in, per_out = layer.in_channels // groups, layer.out_channels // groups
    if depthwise:
        groups = max(1, round(groups * f))
        cin, cout = groups, per_out * groups
    elif groups > 1:
        cin, cout = groups * max(1, round(per_in * f)), groups * max(1, round(per_out * f))
    else:
        cin, cout = max(1, round(layer.in_channels * f)), max(1, round(layer.out_channels * f))
    conv = type(layer)(cin, cout, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                       dilation=layer.dilation, groups=groups, bias=layer.bias is not None)
    return conv, cin


def _input_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    names = {m: n for n, m in model.named_modules()}
    shapes: dict[str, tuple[int, ...]] = {}

    def record(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        shapes.setdefault(names[m], tuple(inputs[0].shape))

    forward_prunable(model, x, record)
    return shapes


def cache_dir() -> Path:
    return Path(os.environ.get("TOOLKIT_CACHE_DIR") or Path.home() / ".cache" / "toolkit") / "latency"


def table_key(model: nn.Module, x: torch.Tensor, runtime: str, threads: int) -> str:
    """A file name for the table: architecture and encoder (by layer shapes), runtime, input, threads."""
    shapes = _input_shapes(model, x)
    described = [[n, type(m).__name__, str(getattr(m, "weight", torch.empty(0)).shape), getattr(m, "groups", 1),
                  str(getattr(m, "stride", "")), shapes.get(n)] for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    digest = hashlib.sha1(json.dumps(described).encode()).hexdigest()[:12]
    arch = getattr(model, "toolkit_arch", None) or type(model).__name__
    return f"{arch}-{digest}-{runtime}-{'x'.join(map(str, x.shape))}-t{threads}.json"


def latency_table(model: nn.Module, x: torch.Tensor, *, runtime: str = "onnxruntime", threads: int = 1,
                  runs: int = 7) -> dict[str, tuple[float, float]]:
    """Layer name -> (fixed ms, scaling ms) on ``runtime``, measured once and then read from the cache."""
    path = cache_dir() / table_key(model, x, runtime, threads)
    if path.exists():
        return {name: (float(a), float(b)) for name, (a, b) in json.loads(path.read_text()).items()}
    shapes = _input_shapes(model, x)
    table: dict[str, tuple[float, float]] = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, PRUNABLE) or name not in shapes:
            continue
        depthwise = isinstance(layer, nn.Conv2d) and 1 < layer.groups == layer.in_channels
        points = []
        for f in WIDTHS:
            probe, cin = _scaled(layer, f)
            shape = (1, cin, *shapes[name][2:]) if not isinstance(layer, nn.Linear) else (*shapes[name][:-1], cin)
            ms = timed_on(runtime, [probe], torch.randn(shape), threads=threads, runs=runs, warmup=2)[0].min_ms
            points.append((f if depthwise else f * f, ms))
        slope, intercept = np.polyfit([p[0] for p in points], [p[1] for p in points], 1)
        table[name] = (max(0.0, float(intercept)), max(0.0, float(slope)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1))
    return table


def latency_costs(runtime: str, threads: int = 1):
    """The allocator's per-layer costs from the runtime's latency table (``Allocator(costs=...)``)."""

    def costs(model: nn.Module, x: torch.Tensor) -> dict[nn.Module, tuple[float, float]]:
        table = latency_table(model, x, runtime=runtime, threads=threads)
        modules = dict(model.named_modules())
        return {modules[name]: cost for name, cost in table.items() if name in modules}

    return costs


def measured_reduction(dense: nn.Module, pruned: nn.Module, x: torch.Tensor, *, runtime: str,
                       threads: int = 1, runs: int = 15) -> tuple[float, float]:
    """(latency removed, its uncertainty) of ``pruned`` against ``dense``, timed interleaved on ``runtime``.

    Compared on each model's fastest pass: a busy machine stalls passes at
    random, and on a loaded 2-core box the median of a tiny LinkNet's passes
    rose tenfold while its fastest pass held within a few percent (as
    ``timeit`` advises; the per-layer table is timed the same way). The
    passes run in two interleaved halves; the uncertainty is how far the two
    halves' reductions differ, i.e. measured under the load there is.
    """
    calls = _timed_calls(runtime, [dense, pruned], x, threads)
    halves = [time_interleaved(calls, max(1, runs // 2), 2 if half == 0 else 0, threads) for half in (0, 1)]
    removed = [1.0 - h[1].min_ms / h[0].min_ms for h in halves]
    fastest = 1.0 - min(h[1].min_ms for h in halves) / min(h[0].min_ms for h in halves)
    return fastest, abs(removed[0] - removed[1])
