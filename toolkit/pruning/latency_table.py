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

``time_on_onnxruntime`` is a minimal, self-contained ONNX Runtime timer.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from toolkit.errors import UsageError
from toolkit.pruning.surgery import PRUNABLE

RUNTIMES = ("eager", "onnxruntime")
WIDTHS = (0.5, 1.0)  # kept fractions each layer is timed at: two points fix the line


# -- timing a model on a runtime --------------------------------------------------------------
def _onnxruntime_session(model: nn.Module, x: torch.Tensor, threads: int):
    """An ONNX Runtime CPU session of ``model`` exported as ``toolkit export`` does."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("latency_runtime=onnxruntime needs onnxruntime: pip install 'toolkit[onnx]'") from None
    from toolkit.pruning.export import export_onnx

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # smp's shape checks, constant at one input size
        path = export_onnx(model, x, Path(folder) / "model.onnx", dynamic_batch=False)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.detach().cpu().numpy()}
    return lambda: session.run(None, feed)


def _eager_runner(model: nn.Module, x: torch.Tensor, threads: int):
    model = model.eval()

    def run() -> None:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                model(x)
        finally:
            torch.set_num_threads(previous)

    return run


def runner_for(runtime: str) -> Callable[[nn.Module, torch.Tensor, int], Callable[[], object]]:
    """``runtime``'s way to turn (model, input, threads) into a call that runs one forward pass."""
    if runtime == "onnxruntime":
        return _onnxruntime_session
    if runtime == "eager":
        return _eager_runner
    raise UsageError(f"unknown latency_runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")


def interleaved_times_ms(models: Sequence[nn.Module], x: torch.Tensor, *, runtime: str = "onnxruntime",
                         threads: int = 1, runs: int = 15, warmup: int = 3) -> list[list[float]]:
    """Forward times (ms) of each model on ``runtime``, one run of each in turn, so load hits all alike."""
    calls = [runner_for(runtime)(m, x, threads) for m in models]
    times: list[list[float]] = [[] for _ in models]
    for i in range(warmup + runs):
        for call, samples in zip(calls, times):
            start = time.perf_counter()
            call()
            if i >= warmup:
                samples.append((time.perf_counter() - start) * 1000)
    return times


def time_on_onnxruntime(model: nn.Module, x: torch.Tensor, *, threads: int = 1, runs: int = 15,
                        warmup: int = 3) -> list[float]:
    """Forward times (ms) of ``model`` exported to ONNX and run by ONNX Runtime on the CPU."""
    return interleaved_times_ms([model], x, runtime="onnxruntime", threads=threads, runs=runs, warmup=warmup)[0]


def spread(samples: Sequence[float]) -> float:
    """Relative spread of timings: interquartile range over the median."""
    q1, _, q3 = statistics.quantiles(samples, n=4)
    return (q3 - q1) / statistics.median(samples)


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

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, PRUNABLE)]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
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
            ms = statistics.median(interleaved_times_ms([probe], torch.randn(shape), runtime=runtime,
                                                        threads=threads, runs=runs, warmup=2)[0])
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

    The uncertainty is that of a ratio of two medians: a median of ``n`` runs
    varies by about ``0.93 * IQR / sqrt(n)`` (normal timings), relative to it.
    """
    before, after = interleaved_times_ms([dense, pruned], x, runtime=runtime, threads=threads, runs=runs)
    removed = 1.0 - statistics.median(after) / statistics.median(before)
    return removed, 0.93 * math.hypot(spread(before), spread(after)) / math.sqrt(runs)
