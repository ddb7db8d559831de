"""The `toolkit` command as a user types it: run folders, one-line errors, exit codes."""
from __future__ import annotations

import json

import pytest
import torch

from toolkit.cli import main
from toolkit.pruning.serialize import load_model
from toolkit.runner.grid import load_grid, run_grid

TINY = ["--encoder", "resnet18", "--image-size", "64", "--limit", "16", "--batch-size", "2",
        "--steps-per-epoch", "2", "--no-progress"]


def test_train_writes_a_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--arch", "fpn", "--data", "synthetic", "--epochs", "2", "--out", str(out), *TINY]) == 0
    for name in ("config.toml", "train_metrics.csv", "stats.json", "dense.pt", "train_best.pt", "curves.png"):
        assert (out / name).exists(), name
    assert not (out / "train_last.pt").exists(), "a finished stage drops its resume checkpoint"
    metrics = json.loads((out / "stats.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert 0.0 <= metrics["test_iou"] <= 1.0
    assert "synthetic" in capsys.readouterr().out
    state = torch.load(out / "dense.pt", weights_only=True)
    assert state["recipe"] == {"arch": "fpn", "encoder": "resnet18", "num_classes": 4}


@pytest.mark.parametrize("plugin,kind", [("agp", "unstructured"), ("fpgm", "structured")])
def test_prune_runs_the_three_stages(tmp_path, plugin, kind):
    out = tmp_path / plugin
    code = main(["prune", "--arch", "fpn", "--plugin", plugin, "--sparsity", "0.5", "--data", "synthetic",
                 "--epochs-train", "1", "--epochs-prune", "1", "--epochs-finetune", "1", "--pruning-steps", "2",
                 "--out", str(out), *TINY])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["kind"] == kind
    if kind == "structured":
        assert result["params_pruned"] < result["params_dense"] and result["flops_reduction"] > 0.3
    else:
        assert result["params_pruned"] == result["params_dense"]
        assert result["zero_fraction_pruned"] == pytest.approx(0.5, abs=0.01), "zeros survive fine-tuning"
    assert result["target_kind"] == ("rate" if kind == "structured" else "sparsity") and result["target"] == 0.5
    assert result["reached"] == pytest.approx(0.5, abs=0.01) and result["target_met"]
    assert (out / "pruned.pt").exists() and (out / "curves.png").exists()
    assert_exports_to_onnx(out / "pruned.pt")


def assert_exports_to_onnx(model_file):
    """``toolkit export`` turns the saved model into ONNX that computes what the loaded model does."""
    ort = pytest.importorskip("onnxruntime")
    assert main(["export", str(model_file), "--image-size", "64"]) == 0
    onnx_file = model_file.with_suffix(".onnx")
    model = load_model(model_file)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x).numpy()
    got = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert got.shape == expected.shape
    assert abs(got - expected).max() < 1e-3


def test_prune_from_a_trained_checkpoint(tmp_path, monkeypatch):
    train = tmp_path / "train"
    assert main(["train", "--arch", "linknet", "--epochs", "1", "--out", str(train), *TINY]) == 0
    out = tmp_path / "prune"
    loads = []
    real_load = torch.load

    def counting_load(path, *args, **kwargs):
        loads.append(str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    assert main(["prune", "--plugin", "l1", "--checkpoint", str(train / "dense.pt"), "--epochs-prune", "1",
                 "--epochs-finetune", "1", "--out", str(out), *TINY]) == 0
    assert loads.count(str(train / "dense.pt")) == 1, "the checkpoint is read once and handed to every stage"
    result = json.loads((out / "result.json").read_text())
    assert result["arch"] == "linknet", "the checkpoint's recipe says which model it is"
    assert result["params_pruned"] < result["params_dense"]
    assert result["time_train_s"] == 0.0, "a given checkpoint is not trained again"


def test_prune_writes_the_row_a_grid_writes_for_the_same_cell(tmp_path):
    """``toolkit prune`` and ``toolkit compare`` build their rows with one builder: same columns, and for the
    same seed the same dense model and the same pruned model."""
    grid = load_grid(None, archs=["fpn"], plugins=["l1"], sparsities=[0.5], datasets=["synthetic"], seeds=[0],
                     retime=False, run={"encoder": "resnet18", "image_size": 64, "limit": 16, "latency_runs": 2,
                                        "latency_runtimes": ["eager"], "epochs_train": 1, "epochs_prune": 0,
                                        "epochs_finetune": 1,
                                        "train": {"batch_size": 2, "max_steps_per_epoch": 2, "progress": False}})
    (grid_row,) = run_grid(grid, tmp_path / "grid").values()
    out, config = tmp_path / "prune", tmp_path / "prune.toml"
    config.write_text("latency_runs = 2\n")
    assert main(["prune", "--arch", "fpn", "--plugin", "l1", "--sparsity", "0.5", "--data", "synthetic", "--seed", "0",
                 "--epochs-train", "1", "--epochs-prune", "0", "--epochs-finetune", "1", "--latency-runtimes", "eager",
                 "--config", str(config), "--out", str(out), *TINY]) == 0
    row = json.loads((out / "result.json").read_text())
    assert grid_row["status"] == "ok" and sorted(row) == sorted(grid_row)
    assert row["cell"] == grid_row["cell"] and row["executor"] == "local" and row["git_commit"] == grid_row["git_commit"]
    for column in ("params_dense", "flops_dense", "params_pruned", "flops_pruned", "channel_rate", "target_kind"):
        assert row[column] == grid_row[column], column
    assert row["test_iou_dense"] == pytest.approx(grid_row["test_iou_dense"])
    assert row["params_pruned"] < row["params_dense"]


@pytest.mark.parametrize("argv,message", [
    (["prune", "--plugin", "fpgn"], "unknown pruner 'fpgn'; known:"),
    (["train", "--arch", "segnet", "--encoder", "resnet18", "--epochs", "0"], "unknown architecture 'segnet'"),
    (["train", "--image-size", "100"], "multiple of 32"),
    (["prune", "--plugin", "l1", "--checkpoint", "/nonexistent/dense.pt", *TINY], "checkpoint not found"),
    (["train", "--data", "/nonexistent/folder", *TINY], "/nonexistent/folder"),
    (["compare", "--config", "/nonexistent/grid.toml"], "config file not found"),
    (["export", "/nonexistent/pruned.pt"], "model file not found"),
])
def test_user_mistakes_are_one_line(argv, message, capsys, tmp_path):
    code = main([*argv, "--out", str(tmp_path / "x")] if argv[0] not in ("compare", "export") else argv)
    err = capsys.readouterr().err
    assert code != 0
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
