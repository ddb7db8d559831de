"""`toolkit compare --executor ray` on a real two-node Ray cluster (tests/conftest.py):
both nodes work, the rows are the local executor's, a killed worker is retried or
fails its row with the reason, and a re-run finishes the rest."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import tomli_w
import torch

from toolkit.cli import main

# one xdist worker runs every test that starts a Ray cluster: one cluster at a time on a small machine
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

TINY = ["--datasets", "synthetic", "--sparsities", "0.5", "--encoder", "resnet18", "--image-size", "64",
        "--limit", "16", "--epochs", "1", "--batch-size", "2", "--steps-per-epoch", "1", "--threads", "1",
        "--device", "cpu", "--no-progress"]
# what differs between two runs of the same cell: when, where and how it ran
UNTIMED = {"node", "node_ip", "host", "cpu", "cpu_threads", "attempts", "executor", "traceback", "latency_speedup"}


def grid_file(folder: Path, **values) -> Path:
    """The tiny settings no flag reaches (latency runs, examples), plus ``values``."""
    path = folder / "grid.toml"
    path.write_text(tomli_w.dumps({"examples": 0, **values, "run": {"latency_runs": 2, "latency_runtimes": ["eager"]}}))
    return path


def rows(out: Path) -> dict[str, dict]:
    return {r["cell"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def untimed(row: dict) -> dict:
    # timings (every runtime's; the local grid's quiet re-timing pass, which Ray leaves to `report --retime`)
    kept = {k: v for k, v in row.items() if k not in UNTIMED and not k.startswith(("time_", "latency_ms", "retimed_"))
            and not k.endswith("_speedup")}
    kept["curves"] = [{k: v for k, v in c.items() if k != "seconds"} for c in row["curves"]]
    return kept


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_ray_rows_match_local_rows_and_both_nodes_work(tmp_path, ray_cluster):
    # one dense model, then a structured (Torch-Pruning) and an unstructured (NNI) cell at once: one a node
    args = ["compare", "--config", str(grid_file(tmp_path)), "--archs", "fpn", "--plugins", "l1,level", *TINY]
    assert main([*args, "--executor", "ray", "--ray-address", ray_cluster, "--out", str(tmp_path / "ray")]) == 0
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    on_ray, here = rows(tmp_path / "ray"), rows(tmp_path / "local")

    assert sorted(on_ray) == sorted(here) and len(on_ray) == 2
    assert all(r["status"] == "ok" for r in on_ray.values()), [r.get("error") for r in on_ray.values()]
    assert len({r["node"] for r in on_ray.values()}) == 2, "cells spread over both nodes"
    assert {r["attempts"] for r in on_ray.values()} == {1} and {r["executor"] for r in on_ray.values()} == {"ray"}
    for cell, row in on_ray.items():
        for key in ("params_pruned", "flops_pruned", "test_iou_pruned", "test_iou_per_class_pruned", "reached"):
            assert row[key] == here[cell][key], (cell, key)
        assert untimed(row) == untimed(here[cell]), cell

    # The driver wrote every file the local executor keeps, but the resume checkpoints of the workers.
    for folder in ("dense/fpn__synthetic__s0", "cells/fpn__synthetic__l1__0.5__s0"):
        assert files(tmp_path / "ray" / folder) == {f for f in files(tmp_path / "local" / folder) if not f.endswith("_last.pt")}
    a = torch.load(tmp_path / "ray/cells/fpn__synthetic__l1__0.5__s0/pruned.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "local/cells/fpn__synthetic__l1__0.5__s0/pruned.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b), "the same weights, bit for bit"
    dense = json.loads((tmp_path / "ray/dense/fpn__synthetic__s0/stats.json").read_text())
    assert dense["checkpoint"] == str(tmp_path / "ray/dense/fpn__synthetic__s0/dense.pt"), "points at the driver's copy"


class Killer(threading.Thread):
    """kill -9 the first process that writes its id into ``folder`` (the slow plugin's prune())."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder, self.killed, self.stop = folder, None, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            for path in self.folder.iterdir():
                self.killed = int(path.name)
                os.kill(self.killed, signal.SIGKILL)
                return


def run_killing_one_worker(tmp_path: Path, address: str, max_retries: int, *extra: str) -> Killer:
    pids = tmp_path / f"pids-{max_retries}"
    pids.mkdir()
    config = grid_file(tmp_path, ray={"max_retries": max_retries},
                       plugin_options={"sleepy": {"seconds": 3.0, "pid_dir": str(pids)}})
    killer = Killer(pids)
    killer.start()
    try:
        assert main(["compare", "--config", str(config), "--archs", "fpn", "--plugins", "sleepy,level", *TINY,
                     "--executor", "ray", "--ray-address", address, "--out", str(tmp_path / "run"),
                     "--allow-failed", *extra]) == 0
    finally:
        killer.stop.set()
    assert killer.killed, "the slow pruner never started"
    return killer


def test_killed_worker_fails_its_row_or_is_retried_and_a_rerun_finishes(tmp_path, ray_cluster, slow_plugin):
    sleepy, level = "fpn__synthetic__sleepy__0.5__s0", "fpn__synthetic__level__0.5__s0"
    run_killing_one_worker(tmp_path, ray_cluster, max_retries=0)
    first = rows(tmp_path / "run")
    assert first[level]["status"] == "ok", first[level].get("error")
    assert first[sleepy]["status"] == "failed" and first[sleepy]["attempts"] == 1
    assert "WorkerCrashedError" in first[sleepy]["error"] or "died" in first[sleepy]["error"], first[sleepy]["error"]
    kept = {p: (tmp_path / "run" / p).read_bytes() for p in (f"cells/{level}/result.json", "dense/fpn__synthetic__s0/stats.json")}

    # Again with one retry allowed: the first attempt is killed too, the second finishes.
    killer = run_killing_one_worker(tmp_path, ray_cluster, 1, "--retry-failed")
    again = rows(tmp_path / "run")
    assert again[sleepy]["status"] == "ok" and again[sleepy]["attempts"] == 2, again[sleepy].get("error")
    assert len(list((tmp_path / "pids-1").iterdir())) == 2 and killer.killed
    assert again[sleepy]["reached"] == pytest.approx(0.5, abs=0.01)
    assert all((tmp_path / "run" / p).read_bytes() == data for p, data in kept.items()), \
        "the finished cell and the dense model on the driver's disk are not computed again"


def test_unreachable_cluster_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    code = main(["compare", "--archs", "fpn", "--plugins", "l1", "--executor", "ray", "--ray-address", "127.0.0.1:9",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no Ray cluster answers at 127.0.0.1:9" in err


def test_ray_not_installed_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what Python does when ray is not installed
    code = main(["compare", "--executor", "ray", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install 'toolkit[ray]'" in err
    assert not (tmp_path / "grid.toml").exists(), "refused before any work"
