"""`toolkit merge`: a grid split by seed (or by recovery budget) over two folders (two machines) joins into one report."""
from __future__ import annotations

import csv
import json

import pytest

import toolkit.runner.local as local
from toolkit.cli import main
from toolkit.results.report import write_report
from toolkit.runner.grid import load_grid, run_grid


def seed_grid(seeds, **run_overrides):
    run = {"encoder": "resnet18", "image_size": 64, "limit": 24, "epochs_train": 1, "epochs_prune": 1,
           "epochs_finetune": 1, "latency_runs": 1, "latency_runtimes": ["eager"],
           "train": {"batch_size": 2, "max_steps_per_epoch": 2, "progress": False}, **run_overrides}
    return load_grid(None, archs=["fpn"], plugins=["l1"], sparsities=[0.5], datasets=["synthetic"],
                     seeds=seeds, examples=0, run=run)


def test_merge_joins_seeds_run_apart_into_one_table(tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    run_grid(seed_grid([0]), a)
    run_grid(seed_grid([1]), b)
    started = a / "cells" / "fpn__synthetic__l1__0.5__s1"  # a cell machine A began and never finished
    started.mkdir()
    (started / "prune_metrics.csv").write_text("step\n")

    assert main(["merge", str(b), "--into", str(a)]) == 0
    assert "merged 1 cells and 1 dense models" in capsys.readouterr().out
    rows = [json.loads(line) for line in (a / "results.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in rows) == [0, 1]
    assert (a / "dense" / "fpn__synthetic__s1").is_dir() and (a / "cells" / "fpn__synthetic__l1__0.5__s1").is_dir()
    assert not list(a.rglob("*_last.pt")) and not list(a.rglob("*.partial"))
    assert (started / "result.json").is_file()  # the finished copy took the started one's place

    with open(a / "results.csv") as f:
        l1 = [r for r in csv.DictReader(f) if r["method"] == "l1" and r["seed"] == "all"]
    assert len(l1) == 1 and l1[0]["n"] == "2"
    ious = [r["test_iou_pruned"] for r in rows]
    assert abs(float(l1[0]["test_iou_pruned"]) - sum(ious) / 2) < 1e-6

    # the joined folder is a normal run folder: resuming both seeds runs nothing
    monkeypatch.setattr(local, "run_cell", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-ran a cell")))
    assert len(run_grid(seed_grid([0, 1]), a)) == 2

    # merging again adds nothing and keeps what is there
    assert main(["merge", str(b), "--into", str(a)]) == 0
    assert "merged 0 cells and 0 dense models (1 in both" in capsys.readouterr().out


def test_merge_refuses_folders_made_with_other_settings(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    run_grid(seed_grid([0]), a)
    run_grid(seed_grid([1], latency_runs=2), b)
    assert main(["merge", str(b), "--into", str(a)]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "latency_runs" in err and "Traceback" not in err
    assert main(["merge", str(tmp_path / "nothing"), "--into", str(a)]) == 2
    assert "not a 'toolkit compare' run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_recovery_budgets_split_over_two_folders_merge_resume_and_plot(tmp_path, monkeypatch):
    """Every cell, the dense control included, runs once per recovery budget; the budget is an
    axis like the seed: it is in the cell id, a folder resumes and merges by it, and the report
    draws the recovery curve and tabulates the largest budget against the same-budget control."""
    def budget_grid(budgets):
        run = {"encoder": "resnet18", "image_size": 64, "limit": 24, "epochs_train": 1, "epochs_prune": 1,
               "epochs_finetune": 1, "latency_runs": 1, "latency_runtimes": ["eager"], "bn_recalibration": 2,
               "train": {"batch_size": 2, "max_steps_per_epoch": 2, "progress": False}}
        return load_grid(None, archs=["unet"], plugins=["dense", "l1"], sparsities=[0.5], datasets=["synthetic"],
                         recovery_steps=budgets, examples=0, run=run)

    a, b = tmp_path / "a", tmp_path / "b"
    run_grid(budget_grid([0]), a)
    run_grid(budget_grid([3]), b)
    assert main(["merge", str(b), "--into", str(a)]) == 0
    rows = {r["cell"]: r for r in map(json.loads, (a / "results.jsonl").read_text().splitlines())}
    assert sorted(rows) == ["unet__synthetic__dense__0__s0__r0", "unet__synthetic__dense__0__s0__r3",
                            "unet__synthetic__l1__0.5__s0__r0", "unet__synthetic__l1__0.5__s0__r3"]
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("error") for r in rows.values()]
    for cell, r in rows.items():
        # the budget is the steps after pruning (prune stage + fine-tune), on top of the dense training
        assert r["steps_prune"] + r["steps_finetune"] == r["recovery_steps"], cell
        assert r["budget_steps"] == r["steps_train"] + r["recovery_steps"] == 2 + r["recovery_steps"], cell
    control0, control3 = rows["unet__synthetic__dense__0__s0__r0"], rows["unet__synthetic__dense__0__s0__r3"]
    assert control0["test_iou_pruned"] == control0["test_iou_dense"], "budget 0: the control is the dense model"
    assert control3["steps_finetune"] == 3 and control0["bn_recalibration"] == 0
    pruned0, pruned3 = rows["unet__synthetic__l1__0.5__s0__r0"], rows["unet__synthetic__l1__0.5__s0__r3"]
    assert pruned0["bn_recalibration"] == 2 and pruned0["steps_prune"] == 0 and pruned0["steps_finetune"] == 0
    assert pruned3["steps_prune"] == 0 and pruned3["steps_finetune"] == 3, "a one-shot pruner's budget goes to fine-tuning"

    # resuming the joined folder with both budgets runs nothing
    monkeypatch.setattr(local, "run_cell", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-ran a cell")))
    assert len(run_grid(budget_grid([0, 3]), a)) == 4

    report = write_report(a).read_text()
    assert (a / "recovery.png").stat().st_size > 10_000 and "](recovery.png)" in report
    assert "the largest recovery budget, **3 steps**" in report
    table = (a / "results.md").read_text()
    header = table.splitlines()[0].split(" | ")
    assert "IoU change vs control pts" in header
    line = next(l for l in table.splitlines() if l.startswith("| unet | synthetic | l1 |")).split(" | ")
    assert len([l for l in table.splitlines() if l.startswith("| unet | synthetic | l1 |")]) == 1, "one budget shown"
    expected = 100 * (pruned3["test_iou_pruned"] - control3["test_iou_pruned"])
    assert line[header.index("IoU change vs control pts")] == f"{expected:+.1f}"
    with open(a / "results.csv") as f:
        csv_rows = [r for r in csv.DictReader(f) if r["seed"] == "all"]
    assert sorted((r["method"], r["recovery_steps"]) for r in csv_rows) == [("dense", "0"), ("dense", "3"), ("l1", "0"),
                                                                           ("l1", "3")]
    l1_at_0 = next(r for r in csv_rows if (r["method"], r["recovery_steps"]) == ("l1", "0"))
    assert float(l1_at_0["test_iou_delta"]) == pytest.approx(pruned0["test_iou_pruned"] - control0["test_iou_pruned"])
    assert l1_at_0["delta_reference"] == "same-budget dense control"
