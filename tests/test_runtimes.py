"""Latency in the runtimes users deploy with: ONNX Runtime and OpenVINO columns in every row, the quiet
re-timing pass, and `toolkit export --format onnx|openvino` checked against PyTorch."""
from __future__ import annotations

import json
import os
import sys
import time

import pytest
import torch

from toolkit.cli import main
from toolkit.results.runtimes import runtimes_on, session_from_file, time_interleaved
from toolkit.runner.grid import load_grid, run_grid, should_retime
from toolkit.runner.stages import recipe, save_model
from toolkit.workbench.models import create_model

OPENVINO_MISSING = "openvino not installed (pip install 'toolkit[openvino]')"


@pytest.fixture
def no_openvino(monkeypatch, tmp_path_factory):
    """OpenVINO as absent as on a machine without it, whether or not it is installed here: in this
    process, and in the worker processes a grid runs its cells in (they inherit the environment)."""
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` then raises ImportError
    shadow = tmp_path_factory.mktemp("no-openvino")
    (shadow / "openvino").mkdir()
    (shadow / "openvino" / "__init__.py").write_text("raise ImportError('openvino hidden by the test')\n")
    monkeypatch.syspath_prepend(str(shadow))  # a spawned worker starts with this process's sys.path
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")])))


def tiny_grid(**overrides):
    run = {"encoder": "resnet18", "image_size": 64, "limit": 16, "epochs_train": 1, "epochs_prune": 1,
           "epochs_finetune": 1, "pruning_steps": 2, "latency_runs": 3, "device": "cpu",
           "latency_runtimes": ["eager", "onnxruntime", "openvino"],  # RunConfig's default (the demo's lacks openvino)
           "train": {"batch_size": 2, "max_steps_per_epoch": 1, "progress": False}}
    return load_grid(None, archs=["fpn"], plugins=["l1"], sparsities=[0.5], datasets=["synthetic"], examples=0,
                     run=run, **overrides)


def test_rows_time_onnxruntime_skip_a_missing_openvino_and_retiming_replaces_the_rough_numbers(tmp_path, no_openvino):
    pytest.importorskip("onnxruntime", reason="the ONNX Runtime column needs the onnx extra (the test extra has it)")
    rows = run_grid(tiny_grid(retime=False), tmp_path)  # in-grid timings only, as on Ray
    (row,) = rows.values()
    assert row["status"] == "ok", row.get("error")
    on_disk = json.loads((tmp_path / "cells" / row["cell"] / "result.json").read_text())
    for r in (row, on_disk):
        assert r["latency_ms_onnxruntime_dense"] > 0 and r["latency_ms_onnxruntime_pruned"] > 0
        assert r["latency_onnxruntime_speedup"] == pytest.approx(
            r["latency_ms_onnxruntime_dense"] / r["latency_ms_onnxruntime_pruned"])
        assert r["latency_onnxruntime_device"].startswith("ONNX Runtime ") and "1 thread(s)" in r["latency_onnxruntime_device"]
        assert r["latency_input"] == "1x3x64x64"
        assert r["latency_openvino_skipped"] == OPENVINO_MISSING and "latency_ms_openvino_pruned" not in r
        assert r["latency_ms_pruned"] > 0, "eager PyTorch's columns stay"
        assert "retimed_rounds" not in r
    assert main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "results.md").read_text()
    assert "ORT (in-grid) ms" in md and "eager (in-grid) ms" in md
    assert f"{row['latency_ms_onnxruntime_pruned']:.1f}" in next(l for l in md.splitlines() if "| l1 |" in l)
    assert OPENVINO_MISSING in (tmp_path / "report.md").read_text()

    # `toolkit report --retime`: every model again, interleaved; the rows get median and spread, the report uses them
    assert main(["report", str(tmp_path), "--retime", "--rounds", "4"]) == 0
    retimed = json.loads((tmp_path / "cells" / row["cell"] / "result.json").read_text())
    assert retimed["retimed_rounds"] == 4
    for runtime in ("eager", "onnxruntime"):
        for which in ("dense", "pruned"):
            assert retimed[f"retimed_ms_{runtime}_{which}"] > 0 and retimed[f"retimed_ms_{runtime}_iqr_{which}"] >= 0
        assert retimed[f"retimed_{runtime}_speedup"] == pytest.approx(
            retimed[f"retimed_ms_{runtime}_dense"] / retimed[f"retimed_ms_{runtime}_pruned"])
    assert retimed["retimed_openvino_skipped"] == OPENVINO_MISSING
    assert {k: v for k, v in retimed.items() if k.startswith("latency_")} == \
           {k: v for k, v in on_disk.items() if k.startswith("latency_")}, "the in-grid columns stay, as they were"
    md = (tmp_path / "results.md").read_text()
    assert "ORT ms [IQR]" in md and "(in-grid)" not in md
    line = next(l for l in md.splitlines() if "| l1 |" in l)
    ms, iqr = retimed["retimed_ms_onnxruntime_pruned"], retimed["retimed_ms_onnxruntime_iqr_pruned"]
    assert f"{ms:.1f} [{iqr:.1f}]" in line and f"{retimed['retimed_onnxruntime_speedup']:.2f}" in line
    assert "4 interleaved rounds" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "latency_vs_flops.png").stat().st_size > 10_000

    # some cells, on named runtimes: a pattern that matches nothing is a one-line error; a re-timed row's
    # columns all come from the one pass (the earlier pass's ONNX Runtime columns go)
    assert main(["report", str(tmp_path), "--retime", "--cells", "*__r999"]) == 2
    assert main(["report", str(tmp_path), "--cells", "l1"]) == 2, "--cells without --retime"
    assert main(["report", str(tmp_path), "--retime", "--rounds", "2", "--cells", "l1", "--runtimes", "eager"]) == 0
    again = json.loads((tmp_path / "cells" / row["cell"] / "result.json").read_text())
    assert again["retimed_rounds"] == 2 and again["retimed_ms_eager_pruned"] > 0
    assert not any(k.startswith("retimed_") and "onnxruntime" in k for k in again)


def test_the_quiet_pass_is_on_for_local_grids_and_off_on_ray_unless_asked():
    grid = tiny_grid()
    done = {"a": {"status": "ok", "retimed_rounds": 3}, "b": {"status": "failed"}}
    assert should_retime(grid, done, ran=True), "local: after cells ran"
    assert not should_retime(grid, done, ran=False), "a resumed grid with nothing new is timed already"
    assert should_retime(grid, {"a": {"status": "ok"}}, ran=False), "a finished cell without quiet timings"
    grid.executor = "ray"
    assert not should_retime(grid, done, ran=True)
    grid.retime = True
    assert should_retime(grid, done, ran=True)
    grid.executor, grid.retime = "local", False
    assert not should_retime(grid, {"a": {"status": "ok"}}, ran=True)


def test_interleaved_timing_goes_round_robin_and_reports_median_and_spread():
    order = []
    calls = {"fast": lambda: (order.append("fast"), time.sleep(0.001)), "slow": lambda: (order.append("slow"), time.sleep(0.005))}
    timings = time_interleaved(calls, runs=5, warmup=1)
    assert order == ["fast", "slow"] * 6, "one pass of each model per round"
    for t in timings.values():
        assert t.runs == 5 and t.min_ms <= t.q1_ms <= t.median_ms <= t.q3_ms <= t.max_ms
        assert t.iqr_ms == pytest.approx(t.q3_ms - t.q1_ms)
    assert timings["fast"].min_ms >= 1.0 and timings["slow"].min_ms >= 5.0
    assert timings["slow"].median_ms > timings["fast"].median_ms


def test_a_gpu_run_times_the_gpu_provider_or_says_why_not(tmp_path):
    assert runtimes_on(["eager", "onnxruntime", "openvino"], "cpu") == ["eager", "onnxruntime", "openvino"]
    assert runtimes_on(["eager", "onnxruntime"], "cuda") == ["eager", "onnxruntime", "onnxruntime_gpu"]
    assert runtimes_on(["onnxruntime_gpu"], "cpu") == []
    ort = pytest.importorskip("onnxruntime")
    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()):
        pytest.skip("this onnxruntime has a GPU provider")
    from toolkit.errors import RuntimeMissing

    with pytest.raises(RuntimeMissing, match="no CUDA or TensorRT provider.*pip install onnxruntime-gpu"):
        session_from_file("onnxruntime_gpu", tmp_path / "model.onnx", torch.zeros(1, 3, 64, 64), threads=1)


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    model = create_model("fpn", "resnet18", None, num_classes=2)
    return save_model(model, recipe("fpn", "resnet18", 2), tmp_path / "dense.pt"), model.eval()


def test_export_openvino_matches_pytorch_and_prints_its_latency(model_file, capsys):
    ov = pytest.importorskip("openvino", reason="OpenVINO export needs openvino (pip install 'toolkit[openvino]')")
    path, model = model_file
    assert main(["export", str(path), "--format", "openvino", "--image-size", "64", "--runs", "3"]) == 0
    out = capsys.readouterr().out
    xml = path.with_suffix(".xml")
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert f"openvino: {xml} (input 1x3x64x64" in out and "(tolerance 0.001)" in out
    assert "latency:" in out and "ms median" in out and "OpenVINO" in out and "1 thread(s)" in out
    diff = float(out.split("within ")[1].split(" ")[0])
    assert 0 <= diff <= 1e-3
    x = torch.randn(2, 3, 64, 64)  # the file keeps a dynamic batch
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    with torch.no_grad():
        assert abs(compiled(x.numpy())[0] - model(x).numpy()).max() < 1e-3


def test_export_fails_loudly_past_the_tolerance_and_names_a_missing_runtime(model_file, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    path, _ = model_file
    assert main(["export", str(path), "--image-size", "64", "--runs", "2", "--tolerance", "1e-12"]) == 1
    err = capsys.readouterr().err.strip()
    assert "outputs differ from PyTorch's by up to" in err and "past the tolerance 1e-12" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert main(["export", str(path), "--format", "openvino", "--image-size", "64"]) == 2
    assert "pip install 'toolkit[openvino]'" in capsys.readouterr().err


def test_a_model_the_exporter_cannot_trace_gets_a_reason_not_a_failed_cell():
    pytest.importorskip("onnxruntime")
    from toolkit.results.runtimes import measure_runtimes

    class Untraceable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return {"a set is no output": {1, 2}, "y": self.conv(x)}

    columns = measure_runtimes(Untraceable(), torch.zeros(1, 3, 8, 8), ["onnxruntime"], threads=1, runs=1)
    assert columns["latency_onnxruntime_skipped"].startswith("ONNX export failed: ")
    assert "latency_ms_onnxruntime" not in columns
