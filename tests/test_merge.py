"""`toolkit merge`: a grid split by seed over two folders (two machines) joins into one report."""
from __future__ import annotations

import csv
import json

import toolkit.runner.local as local
from toolkit.cli import main
from toolkit.runner.grid import load_grid, run_grid


def seed_grid(seeds, **run_overrides):
    run = {"encoder": "resnet18", "image_size": 64, "limit": 24, "epochs_train": 1, "epochs_prune": 1,
           "epochs_finetune": 1, "latency_runs": 1,
           "train": {"batch_size": 2, "max_steps_per_epoch": 2, "progress": False}, **run_overrides}
    return load_grid(None, archs=["fpn"], plugins=["l1"], sparsities=[0.5], datasets=["synthetic"],
                     seeds=seeds, examples=0, run=run)


def test_merge_joins_seeds_run_apart_into_one_table(tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    run_grid(seed_grid([0]), a)
    run_grid(seed_grid([1]), b)

    assert main(["merge", str(b), "--into", str(a)]) == 0
    assert "merged 1 cells and 1 dense models" in capsys.readouterr().out
    rows = [json.loads(line) for line in (a / "results.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in rows) == [0, 1]
    assert (a / "dense" / "fpn__synthetic__s1").is_dir() and (a / "cells" / "fpn__synthetic__l1__0.5__s1").is_dir()
    assert not list(a.rglob("*_last.pt")) and not list(a.rglob("*.partial"))

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
