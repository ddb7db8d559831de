"""Latency targets on ONNX Runtime: a per-layer table, cached, and a target met within the timings' spread."""
from __future__ import annotations

import copy
import statistics
import time

import pytest
import segmentation_models_pytorch as smp
import torch

from toolkit.errors import UsageError
from toolkit.plugins import get_registry
from toolkit.pruning import prune_channels
from toolkit.pruning.latency_table import interleaved_times_ms, latency_table, spread

pytest.importorskip("onnxruntime", reason="latency on ONNX Runtime needs onnxruntime (pip install 'toolkit[onnx]')")

X = torch.randn(1, 3, 64, 64)


def tiny_linknet() -> torch.nn.Module:
    torch.manual_seed(0)
    return smp.Linknet("resnet18", encoder_weights=None, classes=2, encoder_depth=3).eval()


def layers_that_run(model: torch.nn.Module) -> set[str]:
    ran: set[str] = set()
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: ran.add(n)) for n, m in model.named_modules()
             if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))]
    with torch.no_grad():
        model(X)
    for h in hooks:
        h.remove()
    return ran


@pytest.mark.slow
def test_latency_target_on_onnxruntime_is_met_within_the_measured_spread(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path))
    model = tiny_linknet()
    dense = copy.deepcopy(model)
    result = prune_channels(model, X, target="latency=0.5", importance="l1", latency_runtime="onnxruntime")
    assert len(list((tmp_path / "latency").glob("*onnxruntime*-t1.json"))) == 1  # the table is cached
    before, after = interleaved_times_ms([dense, model], X, runtime="onnxruntime", runs=30)
    reached = 1.0 - statistics.median(after) / statistics.median(before)
    tolerance = max(0.01, spread(before), spread(after))  # the timings' interquartile range, relative
    assert abs(reached - 0.5) <= tolerance, (reached, tolerance, result.meta["search"]["trials"])
    with torch.no_grad():
        assert model(X).shape == (1, 2, 64, 64)


def test_the_latency_table_is_measured_once_then_read(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path))
    model = tiny_linknet()
    start = time.perf_counter()
    first = latency_table(model, X, runtime="onnxruntime")
    measured = time.perf_counter() - start
    start = time.perf_counter()
    assert latency_table(model, X, runtime="onnxruntime") == first
    assert time.perf_counter() - start < measured / 5
    assert set(first) == layers_that_run(model)  # every layer, with a non-negative fixed and scaling latency
    assert all(a >= 0 and b >= 0 for a, b in first.values()) and sum(b for _, b in first.values()) > 0
    latency_table(model, X, runtime="onnxruntime", threads=2)  # threads are part of the key
    assert len(list((tmp_path / "latency").glob("*.json"))) == 2


def test_an_unknown_latency_runtime_says_which_exist():
    with pytest.raises(UsageError, match="unknown latency_runtime 'tensorrt'; use one of eager, onnxruntime"):
        get_registry().get("l1").spec.create({"latency_runtime": "tensorrt"})
