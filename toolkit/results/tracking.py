"""Experiment tracking with MLflow: a grid is one parent run, each dense model and each cell a
run nested under it, with its settings as params, its measurements as metrics and its files.

The run folder stays the source of truth: the tracker reads rows after they are on disk and
never changes them. Only the process that writes rows logs (the driver, on Ray).
``RUN/mlflow.json`` remembers what was logged where, so a resumed grid logs no cell twice and
catches up on the cells a lost server missed. A server that does not answer is one warning:
the grid goes on, untracked, and the next run of the same command logs what is missing.
mlflow is imported only when tracking is asked for (``pip install 'toolkit[mlflow]'``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from toolkit.atomic import write_text
from toolkit.errors import UsageError
from toolkit.runner.grid_config import TrackingConfig  # noqa: F401 - re-exported: its old home

if TYPE_CHECKING:
    from toolkit.runner.cell import Cell
    from toolkit.runner.grid_config import GridConfig

LOCAL = "local"  # the store inside the run folder
STATE = "mlflow.json"
# a lost server costs seconds, not the minutes of mlflow's defaults (7 retries, 120 s timeout);
# values the user set in the environment win
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
MEASURED = ("test_iou", "params", "flops", "latency", "file_bytes", "zip_bytes", "zero_fraction", "reached",
            "channel_rate", "pruner_claimed", "time_", "steps_")
PARAMS = ("arch", "encoder", "dataset", "method", "plugin", "target_kind", "target", "seed", "budget_steps",
          "image_size", "epochs", "distill", "executor")
VERSIONS = ("toolkit", "torch", "smp", "timm", "torch_pruning", "nni", "thop", "numpy", "pillow", "python",
            "git_commit", "cpu_capability")
FILES = ("config.toml", "result.json", "stats.json", "curves.png", "*_metrics.csv", "examples.npz")
MODELS = ("pruned.pt", "dense.pt")


def store_uri(mlflow: str, out_dir: Path) -> str:
    """The tracking URI; ``local`` is a SQLite store in the run folder, mlflow's embedded backend
    since its file store was deprecated (3.7): no server needed."""
    if mlflow in ("", LOCAL):
        return f"sqlite:///{(out_dir / 'mlflow.db').resolve()}"
    return mlflow


@contextlib.contextmanager
def open_tracker(grid: "GridConfig", out_dir: Path, rows: dict[str, dict[str, Any]]) -> Iterator["Tracker | None"]:
    """A tracker for this grid (None when not asked for) that has logged the finished rows it had not."""
    if grid.tracking.mlflow is None:
        yield None
        return
    tracker = Tracker(grid, out_dir)
    tracker.start()
    for row in list(rows.values()):
        tracker.log_row(row)
    status = "FINISHED"
    try:
        yield tracker
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        tracker.close(status)


class Tracker:
    """Logs a grid's rows to MLflow; after the first error it warns once and logs nothing more."""

    def __init__(self, grid: "GridConfig", out_dir: Path) -> None:
        self.grid, self.out_dir = grid, out_dir
        self.uri = store_uri(grid.tracking.mlflow or "", out_dir)
        self.key = grid.tracking.mlflow or LOCAL
        self.client: Any = None
        self.parent: str | None = None
        self.broken = False
        self.state = _read_state(out_dir / STATE)
        self.logged: dict[str, str] = self.state.setdefault(self.key, {}).setdefault("runs", {})

    # -- the grid's run -------------------------------------------------------------------
    def start(self) -> None:
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UsageError("--mlflow needs mlflow: pip install 'toolkit[mlflow]'") from None
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..."
        self.client = MlflowClient(tracking_uri=self.uri)
        self._guard(self._open_parent)

    def _open_parent(self) -> None:
        mine = self.state[self.key]
        experiment = self.client.get_experiment_by_name(self.grid.tracking.experiment)
        if experiment is None:
            location = (self.out_dir / "mlartifacts").resolve().as_uri() if self.key == LOCAL else None
            experiment_id = self.client.create_experiment(self.grid.tracking.experiment, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        self.experiment_id = experiment_id
        if mine.get("parent") and mine.get("experiment_id") == experiment_id and self._reopen(mine["parent"]):
            return
        self.logged.clear()  # another experiment, or a store that lost the grid's runs: log them all again
        run = self.client.create_run(experiment_id, run_name=self.out_dir.resolve().name,
                                     tags={"toolkit.kind": "grid", "toolkit.run_dir": str(self.out_dir.resolve())})
        self.parent = run.info.run_id
        mine.update(experiment_id=experiment_id, parent=self.parent)
        self._save()
        grid = self.grid
        self._log(self.parent, params={
            "archs": grid.archs, "plugins": grid.plugins, "datasets": grid.datasets, "seeds": grid.seeds,
            "targets": [*map(str, grid.sparsities), *grid.targets], "encoder": grid.run.encoder,
            "recipe": grid.run.train.recipe, "executor": grid.executor,
        }, files=[self.out_dir / "grid.toml", self.out_dir / "settings.json"])

    def _reopen(self, parent: str) -> bool:
        """The parent run of an earlier run of this grid, running again; False if the store lost it."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.update_run(parent, status="RUNNING")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return False
        self.parent = parent
        return True

    def close(self, status: str) -> None:
        if self.parent and not self.broken:
            self._guard(lambda: self.client.set_terminated(self.parent, status))

    # -- rows -----------------------------------------------------------------------------
    def log_cell(self, cell: "Cell", row: dict[str, Any]) -> None:
        """A row the grid has just written (a retried cell is a new run)."""
        self.log_row(row, again=True)

    def log_row(self, row: dict[str, Any], again: bool = False) -> None:
        """The row's cell, and its dense model the first time one of its cells is logged."""
        if self.broken or not self.parent:
            return
        dense_id = _dense_id(row)
        dense = self.out_dir / "dense" / dense_id
        if f"dense:{dense_id}" not in self.logged and (dense / "stats.json").is_file():
            self._guard(lambda: self._log_dense(dense_id, dense))
        if again or f"cell:{row['cell']}" not in self.logged:
            self._guard(lambda: self._log_cell(row))

    def _log_cell(self, row: dict[str, Any]) -> None:
        folder = self.out_dir / "cells" / row["cell"]
        params = {**{k: row.get(k) for k in PARAMS}, "options": row.get("options") or {},
                  "recipe": self.grid.run.train.recipe,
                  **{f"version.{k}": row.get(k) for k in VERSIONS}}
        tags = {"toolkit.kind": "cell", "toolkit.cell": row["cell"], "toolkit.status": row["status"]}
        if row.get("error"):
            tags["toolkit.error"] = str(row["error"])
        self._new_run(f"cell:{row['cell']}", row["cell"], params=params, metrics=metrics_of(row, row.get("curves")),
                      tags=tags, files=self._files(folder), ok=row["status"] == "ok")

    def _log_dense(self, dense_id: str, folder: Path) -> None:
        stats = json.loads((folder / "stats.json").read_text())
        params = {**{k: stats.get(k) for k in ("arch", "encoder", "dataset", "seed")},
                  "recipe": self.grid.run.train.recipe, "image_size": self.grid.run.image_size}
        self._new_run(f"dense:{dense_id}", f"dense {dense_id}", params=params,
                      metrics=metrics_of(stats, stats.get("history")), tags={"toolkit.kind": "dense"},
                      files=self._files(folder), ok=True)

    def _new_run(self, key: str, name: str, *, params: dict, metrics: list, tags: dict, files: list[Path],
                 ok: bool) -> None:
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"mlflow.parentRunId": self.parent, **tags})
        run_id = run.info.run_id
        self._log(run_id, params=params, metrics=metrics, files=files)
        self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")
        self.logged[key] = run_id
        self._save()

    def _log(self, run_id: str, *, params: dict, metrics: list | None = None, files: list[Path] = ()) -> None:
        from mlflow.entities import Metric, Param

        texts = [Param(k, _text(v)) for k, v in params.items() if v is not None]
        for i in range(0, len(texts), 100):  # mlflow's batch limits: 100 params, 1000 metrics
            self.client.log_batch(run_id, params=texts[i:i + 100])
        values = [Metric(k, v, 0, step) for k, v, step in metrics or []]
        for i in range(0, len(values), 1000):
            self.client.log_batch(run_id, metrics=values[i:i + 1000])
        for path in files:
            if path.is_file():
                self.client.log_artifact(run_id, str(path))

    def _files(self, folder: Path) -> list[Path]:
        names = FILES + (MODELS if self.grid.tracking.models else ())
        return sorted({p for pattern in names for p in folder.glob(pattern)})

    def _guard(self, step: Any) -> None:
        """Run one logging step; the first failure is one warning and the end of tracking for this run."""
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - tracking must never cost the grid
            self.broken = True
            first = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            print(f"toolkit: warning: MLflow at {self.uri} failed ({first}); the grid goes on untracked, "
                  "its files are intact; run the same command again to log what is missing", file=sys.stderr)

    def _save(self) -> None:
        write_text(self.out_dir / STATE, json.dumps(self.state, indent=1))


def metrics_of(row: dict[str, Any], curves: list[dict[str, Any]] | None) -> list[tuple[str, float, int]]:
    """``(name, value, step)``: the measured columns, per-class test IoU, and the validation IoU
    and loss of each stage per epoch (step = epoch)."""
    found = [(k, float(v), 0) for k, v in row.items() if k.startswith(MEASURED) and _number(v)]
    names = row.get("class_names") or []
    for key, values in row.items():
        if key.startswith("test_iou_per_class") and isinstance(values, list):
            which = key[len("test_iou_per_class"):]
            found += [(f"test_iou_{_slug(str(names[i]) if i < len(names) else str(i))}{which}", float(v), 0)
                      for i, v in enumerate(values) if _number(v)]
    for record in curves or []:
        for name in ("val_iou", "loss"):
            if _number(record.get(name)):
                found.append((f"{name}_{record['stage']}", float(record[name]), int(record["epoch"])))
    return found


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # mlflow's longest param value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", text).strip("._")


def _dense_id(row: dict[str, Any]) -> str:
    """The folder name of a row's dense model, named where the grid names it (the target plays no part)."""
    from toolkit.pruning.targets import Target
    from toolkit.runner.cell import Cell

    return Cell(row["arch"], row["dataset"], row["plugin"], Target("sparsity", 0.0), int(row["seed"])).dense_id


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}
