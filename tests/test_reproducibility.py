"""--seed makes a run repeat byte for byte; --seeds gives mean ± std over repeats."""
from __future__ import annotations

import csv
import json
import statistics

import pytest
import torch

from toolkit.cli import main
from toolkit.runner.grid import load_grid, run_grid
from toolkit.results.report import write_report

TINY = ["--arch", "fpn", "--encoder", "resnet18", "--data", "synthetic", "--image-size", "64", "--limit", "24",
        "--batch-size", "2", "--steps-per-epoch", "3", "--no-progress", "--device", "cpu"]


def train(tmp_path, name: str, seed: int) -> tuple[dict, dict]:
    out = tmp_path / name
    assert main(["train", *TINY, "--epochs", "1", "--seed", str(seed), "--out", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    return torch.load(out / "dense.pt", weights_only=True)["model"], stats


def test_same_seed_gives_identical_weights_and_metrics(tmp_path):
    first, stats1 = train(tmp_path, "a", 0)
    again, stats2 = train(tmp_path, "b", 0)
    assert first.keys() == again.keys()
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert stats1["test_iou_per_class"] == stats2["test_iou_per_class"]
    assert [h["loss"] for h in stats1["history"]] == [h["loss"] for h in stats2["history"]]
    other, _ = train(tmp_path, "c", 1)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


def test_a_pruned_cell_repeats_exactly(tmp_path):
    """Prune and fine-tune twice from the same dense model and seed: the same weights, the same row."""
    train_dir = tmp_path / "train"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(train_dir)]) == 0
    rows = []
    for name in ("p1", "p2"):
        out = tmp_path / name
        assert main(["prune", *TINY, "--plugin", "random", "--sparsity", "0.5", "--checkpoint",
                     str(train_dir / "dense.pt"), "--epochs-prune", "1", "--epochs-finetune", "1", "--out", str(out)]) == 0
        rows.append(json.loads((out / "result.json").read_text()))
    for key in ("params_pruned", "flops_pruned", "test_iou_pruned", "test_iou_per_class_pruned"):
        assert rows[0][key] == rows[1][key], key
    untimed = [[{k: v for k, v in c.items() if k != "seconds"} for c in r["curves"]] for r in rows]
    assert untimed[0] == untimed[1], "the same loss and validation IoU, epoch by epoch"
    a = torch.load(tmp_path / "p1" / "pruned.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "p2" / "pruned.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_seeds_give_mean_std_and_n(tmp_path):
    run = {"encoder": "resnet18", "image_size": 64, "limit": 24, "epochs_train": 1, "epochs_prune": 1,
           "epochs_finetune": 1, "pruning_steps": 2, "latency_runs": 2, "latency_runtimes": ["eager"], "device": "cpu",
           "train": {"batch_size": 2, "max_steps_per_epoch": 2, "progress": False}}
    grid = load_grid(None, archs=["linknet"], plugins=["l1"], sparsities=[0.5], datasets=["synthetic"],
                     seeds=[0, 1], examples=0, run=run)
    rows = run_grid(grid, tmp_path)
    assert sorted(rows) == ["linknet__synthetic__l1__0.5__s0", "linknet__synthetic__l1__0.5__s1"]
    assert all(r["status"] == "ok" for r in rows.values())
    assert sorted(p.name for p in (tmp_path / "dense").iterdir()) == ["linknet__synthetic__s0", "linknet__synthetic__s1"]
    ious = [rows[c]["test_iou_pruned"] for c in sorted(rows)]
    assert ious[0] != ious[1], "each seed trains and prunes its own model"
    write_report(tmp_path)

    with (tmp_path / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert sorted(r["seed"] for r in table) == ["0", "1", "all"]
    agg = next(r for r in table if r["seed"] == "all")
    assert int(agg["n"]) == 2
    assert float(agg["test_iou_pruned"]) == pytest.approx(statistics.fmean(ious))
    assert float(agg["test_iou_pruned_std"]) == pytest.approx(statistics.stdev(ious))
    assert float(agg["params_pruned_std"]) == 0.0, "a fixed rate gives the same shape for every seed"

    md = (tmp_path / "results.md").read_text()
    line = next(l for l in md.splitlines() if l.startswith("| linknet | synthetic | l1 |"))
    mean, std = statistics.fmean(ious), statistics.stdev(ious)
    assert f"{mean:.4f} ± {std:.4f}" in line and line.rstrip(" |").endswith("| 2 | ok")
    params = float(agg["params_pruned"]) / 1e6
    assert f"| {params:.2f} |" in line, "a column that does not vary is shown once"
    tex = (tmp_path / "results.tex").read_text()
    assert rf"${mean:.4f} \pm {std:.4f}$" in tex
