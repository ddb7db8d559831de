"""--mlflow: a grid's dense models and cells as MLflow runs under one parent, read back with
MlflowClient from the store in the run folder and from a real ``mlflow server``."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import tomli_w

from conftest import _free_port
from toolkit.cli import main
from toolkit.runner.grid import load_grid, run_grid

mlflow = pytest.importorskip("mlflow", reason="the tracking tests need mlflow (the test extra has it)")
from mlflow.tracking import MlflowClient  # noqa: E402

CELL = "fpn__synthetic__l1__0.5__s0"
DENSE = "fpn__synthetic__s0"


TINY = {"archs": ["fpn"], "plugins": ["l1"], "sparsities": [0.5], "examples": 1,
        "run": {"encoder": "resnet18", "image_size": 64, "limit": 24, "epochs_train": 1, "epochs_prune": 1,
                "epochs_finetune": 1, "pruning_steps": 2, "latency_runs": 2,
                "train": {"batch_size": 2, "max_steps_per_epoch": 2, "progress": False}}}


def config(folder: Path, **tracking) -> Path:
    """The tiny grid as a user writes it, with a [tracking] table."""
    path = folder / "grid.toml"
    path.write_text(tomli_w.dumps({**TINY, **({"tracking": tracking} if tracking else {})}))
    return path


def grid(folder: Path, **tracking):
    return load_grid(config(folder, **tracking))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One dense model and one cell, computed once without tracking; each test tracks a copy."""
    folder = tmp_path_factory.mktemp("tracked")
    out = folder / "run"
    rows = run_grid(grid(folder), out)
    assert rows[CELL]["status"] == "ok", rows[CELL].get("error")
    return out


def copy_of(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def runs_by_name(client: MlflowClient) -> dict[str, object]:
    experiment = client.get_experiment_by_name("toolkit")
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}


def check_runs_equal_rows(client: MlflowClient, out: Path) -> dict:
    runs = runs_by_name(client)
    assert set(runs) == {"run", CELL, f"dense {DENSE}"}
    parent = runs["run"].info.run_id
    assert runs[CELL].data.tags["mlflow.parentRunId"] == parent == runs[f"dense {DENSE}"].data.tags["mlflow.parentRunId"]
    row = json.loads((out / "cells" / CELL / "result.json").read_text())
    cell = runs[CELL]
    params, metrics = cell.data.params, cell.data.metrics
    for key in ("arch", "encoder", "dataset", "plugin", "method", "target_kind", "executor"):
        assert params[key] == row[key]
    assert float(params["target"]) == row["target"] and int(params["seed"]) == row["seed"]
    assert int(params["budget_steps"]) == row["budget_steps"] and json.loads(params["options"]) == row["options"]
    assert params["recipe"] == "robust" and params["version.torch"] == row["torch"]
    latency = [k for k in row if k.startswith("latency_") and isinstance(row[k], float)]
    assert "latency_ms_pruned" in latency
    for key in ("params_pruned", "params_dense", "flops_pruned", "flops_reduction", "test_iou_pruned", *latency):
        assert metrics[key] == pytest.approx(row[key], rel=1e-12), key
    for i, name in enumerate(row["class_names"]):
        if not math.isnan(row["test_iou_per_class_pruned"][i]):
            assert metrics[f"test_iou_{name}_pruned"] == pytest.approx(row["test_iou_per_class_pruned"][i])
    for stage in {c["stage"] for c in row["curves"]}:
        history = client.get_metric_history(cell.info.run_id, f"val_iou_{stage}")
        assert [(m.step, m.value) for m in history] == [
            (c["epoch"], pytest.approx(c["val_iou"])) for c in row["curves"] if c["stage"] == stage]
    stats = json.loads((out / "dense" / DENSE / "stats.json").read_text())
    dense = runs[f"dense {DENSE}"].data
    assert dense.metrics["params"] == stats["params"] and dense.metrics["test_iou"] == pytest.approx(stats["test_iou"])
    assert len(client.get_metric_history(runs[f"dense {DENSE}"].info.run_id, "val_iou_train")) == len(stats["history"])
    return runs


def test_grid_logs_to_the_store_in_its_folder_once(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    run_grid(grid(tmp_path, mlflow=True), out)  # nothing to compute: the finished rows are logged
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = check_runs_equal_rows(client, out)
    artifacts = {a.path for a in client.list_artifacts(runs[CELL].info.run_id)}
    assert {"config.toml", "result.json", "curves.png", "examples.npz"} <= artifacts
    assert "pruned.pt" not in artifacts, "models only with --mlflow-models"
    assert (out / "mlartifacts").is_dir(), "the artifacts stay in the run folder"
    run_grid(grid(tmp_path, mlflow="local"), out)  # resumed: nothing logged twice
    assert len(runs_by_name(client)) == 3
    assert runs_by_name(client)["run"].info.status == "FINISHED"
    (out / "mlflow.db").unlink()
    run_grid(grid(tmp_path, mlflow=True), out)  # a store that lost the grid's runs gets them again
    check_runs_equal_rows(MlflowClient(f"sqlite:///{out / 'mlflow.db'}"), out)


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` on a free port of 127.0.0.1, its store in tmp_path; stopped after the test."""
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                    break
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.5)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.mark.slow  # mlflow server takes 5-30 s to start
def test_grid_logs_to_a_tracking_server_as_cells_finish(finished, tmp_path, mlflow_server):
    out = copy_of(finished, tmp_path)
    shutil.rmtree(out / "cells" / CELL)  # computed again, so logged as it finishes
    assert main(["compare", "--config", str(config(tmp_path)), "--out", str(out),
                 "--mlflow", mlflow_server, "--mlflow-models"]) == 0
    client = MlflowClient(mlflow_server)
    runs = check_runs_equal_rows(client, out)
    assert "pruned.pt" in {a.path for a in client.list_artifacts(runs[CELL].info.run_id)}
    assert not (out / "mlflow.db").exists(), "a server URI logs there only"


def test_unreachable_server_is_one_warning_and_the_grid_goes_on(finished, tmp_path, capsys):
    out = copy_of(finished, tmp_path)
    shutil.rmtree(out / "cells" / CELL)
    t0 = time.monotonic()
    rows = run_grid(grid(tmp_path, mlflow=f"http://127.0.0.1:{_free_port()}"), out)  # nothing listens there
    assert rows[CELL]["status"] == "ok" and (out / "cells" / CELL / "result.json").is_file()
    err = capsys.readouterr().err
    assert err.count("warning: MLflow at http://127.0.0.1:") == 1, err
    assert "the grid goes on" in err
    assert not (out / "mlflow.json").exists(), "nothing was logged, so the next run logs it all"
    assert time.monotonic() - t0 < 120, "mlflow's retries must not stall the grid"
