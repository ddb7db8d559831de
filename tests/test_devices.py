"""--device and --precision: checked where they are read, and used by training, evaluation and latency."""
from __future__ import annotations

import json

import pytest
import torch

from toolkit.cli import main
from toolkit.errors import UsageError
from toolkit.workbench.device import autocast, grad_scaler, resolve_device
from toolkit.workbench.models import create_model
from toolkit.workbench.training import TrainConfig, Trainer

CUDA = torch.cuda.is_available()
TINY = ["--arch", "linknet", "--encoder", "resnet18", "--data", "synthetic", "--image-size", "64", "--limit", "16",
        "--batch-size", "2", "--steps-per-epoch", "2", "--no-progress"]


def test_auto_is_cuda_when_present_else_cpu():
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu") or resolve_device("auto").type == "mps"
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(CUDA, reason="this machine has a GPU")
def test_asking_for_a_gpu_that_is_not_there_is_one_line(tmp_path, capsys):
    with pytest.raises(UsageError, match="no CUDA GPU"):
        resolve_device("cuda:0")
    code = main(["train", *TINY, "--device", "cuda", "--epochs", "1", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "no CUDA GPU" in err and err.count("\n") == 1


def test_bad_device_and_precision_names(capsys):
    with pytest.raises(UsageError, match="unknown device 'tpu0'"):
        resolve_device("tpu0")
    with pytest.raises(SystemExit):
        main(["train", *TINY, "--precision", "8-mixed"])


def test_bf16_mixed_precision_trains_on_the_cpu():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 2, (2, 64, 64))
    ds = torch.utils.data.TensorDataset(x, y)
    trainer = Trainer(ds, ds, 2, TrainConfig(batch_size=2, progress=False), precision="bf16-mixed")
    model = create_model("linknet", "resnet18", num_classes=2)
    with autocast(torch.device("cpu"), "bf16-mixed"):
        assert model(x).dtype == torch.bfloat16
    history = trainer.fit(model, 1, "train")
    assert history[0].loss == history[0].loss  # not NaN
    assert grad_scaler(torch.device("cpu"), "16-mixed") is None, "loss scaling is for float16 on CUDA only"


def test_rows_name_the_device_their_latency_was_measured_on(tmp_path):
    out = tmp_path / "p"
    assert main(["prune", *TINY, "--plugin", "l1", "--sparsity", "0.5", "--device", "cpu", "--epochs-train", "1",
                 "--epochs-prune", "0", "--epochs-finetune", "1", "--out", str(out)]) == 0
    row = json.loads((out / "result.json").read_text())
    assert row["device"] == "cpu" and "thread" in row["latency_device"]
    assert "latency_gpu_ms_pruned" not in row, "no GPU column for a CPU run"
    assert "latency_ms_onnxruntime_gpu_pruned" not in row and "latency_onnxruntime_gpu_skipped" not in row


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (none on this machine)")
def test_a_cuda_run_measures_gpu_latency_too(tmp_path):  # pragma: no cover - runs where a GPU is
    out = tmp_path / "p"
    assert main(["prune", *TINY, "--plugin", "taylor", "--sparsity", "0.5", "--device", "cuda",
                 "--precision", "16-mixed", "--epochs-train", "1", "--epochs-prune", "1", "--epochs-finetune", "1",
                 "--out", str(out)]) == 0
    row = json.loads((out / "result.json").read_text())
    assert row["device"].startswith("cuda") and row["latency_gpu_ms_pruned"] > 0
    assert row["latency_gpu_device"] == torch.cuda.get_device_name(0)
    # and ONNX Runtime's GPU provider, or the reason it could not run (CPU-only onnxruntime)
    assert row.get("latency_ms_onnxruntime_gpu_pruned", 0) > 0 or "onnxruntime" in row["latency_onnxruntime_gpu_skipped"]


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (none on this machine)")
def test_lr_find_runs_on_the_gpu_it_is_asked_for(tmp_path):  # pragma: no cover - runs where a GPU is
    out = tmp_path / "lr"
    torch.cuda.reset_peak_memory_stats()
    assert main(["lr-find", *TINY, "--device", "cuda", "--steps", "8", "--out", str(out)]) == 0
    assert json.loads((out / "lr_find.json").read_text())["suggestion"] > 0
    assert torch.cuda.max_memory_allocated() > 0, "the probe trained on the GPU"

