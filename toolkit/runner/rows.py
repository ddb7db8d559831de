"""A grid row: the columns every row shares (the environment a reader needs to reproduce it, a failed
cell's reason) and the ``Recorder`` that writes rows. Executors import this, never the grid module;
``toolkit prune`` builds its ``result.json`` with ``cell_row`` too, so its columns are a grid row's."""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from toolkit.atomic import write_json
from toolkit.errors import ToolkitError
from toolkit.results.store import write_results
from toolkit.runner.cell import Cell
from toolkit.runner.layout import cell_dir
from toolkit.runner.variants import options_of

if TYPE_CHECKING:
    from toolkit.config import RunConfig
    from toolkit.runner.grid_config import GridConfig


def environment() -> dict[str, Any]:
    """Versions and machine facts that a reader needs to reproduce a row."""
    import segmentation_models_pytorch as smp

    import toolkit
    from toolkit.workbench.device import cpu_name

    versions = {"toolkit": toolkit.__version__, "torch": torch.__version__, "smp": smp.__version__,
                "python": platform.python_version(), "machine": platform.machine(), "cpu": cpu_name(),
                "cpu_threads": torch.get_num_threads(), "host": platform.node()}
    # torch picks CPU kernels by instruction set, timm builds the encoders and Pillow decodes the
    # images: each can move a seed's numbers between machines whose torch and smp agree
    versions["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    # the installed distribution's version: Torch-Pruning 1.6.1's module still says 1.6.0
    versions.update(installed_versions({"torch_pruning": "torch-pruning", "nni": "nni", "thop": "thop", "timm": "timm",
                                        "numpy": "numpy", "pillow": "pillow"}))
    try:
        versions["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        versions["git_commit"] = None
    return versions


def installed_versions(distributions: Mapping[str, str], missing: str = "not installed") -> dict[str, str]:
    """``{key: version}`` of each installed distribution (``{"smp": "segmentation_models_pytorch"}``);
    a missing optional backend is a fact (``missing``), not an error."""
    found = {}
    for key, dist in distributions.items():
        try:
            found[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[key] = missing
    return found


def cell_row(cell: Cell, run: "RunConfig", options: Mapping[str, Any], executor: str, env: Mapping[str, Any],
             columns: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """A cell's whole row: its identity, the run's settings and environment, then what it measured
    (``columns``: ``ok_columns`` or ``failed_row``) and its own time. Every row is made here."""
    return {**cell.as_row(), "options": dict(options), "encoder": run.encoder, "image_size": run.image_size,
            "epochs": [run.epochs_train, run.epochs_prune, run.epochs_finetune], "executor": executor, **env,
            **columns, "time_cell_s": seconds}


def ok_columns(columns: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a finished cell: ``run_cell``'s measurements, status ok."""
    return {"status": "ok", "error": None, **columns}


def failed_row(error: BaseException | str, with_traceback: bool = False) -> dict[str, Any]:
    """The columns of a failed cell: the reason in one line (and the traceback of a bug)."""
    from toolkit.runner.isolate import CellError

    if isinstance(error, str):
        return {"status": "failed", "error": error}
    name = error.type_name if isinstance(error, CellError) else type(error).__name__
    row = {"status": "failed", "error": f"{name}: {error}".splitlines()[0]}
    if with_traceback and isinstance(error, CellError) and not error.user_error:
        row["traceback"] = error.detail
    elif with_traceback and not isinstance(error, (ToolkitError, CellError)):
        row["traceback"] = "".join(traceback.format_exception(error, limit=-8))
    return row


class Recorder:
    """The only writer of a run folder's rows: a cell's file, then ``results.jsonl``, both atomic."""

    def __init__(self, grid: "GridConfig", out_dir: Path, rows: dict[str, dict[str, Any]],
                 on_cell: Callable[[Cell, dict[str, Any]], None] | None = None) -> None:
        self.grid, self.out_dir, self.rows, self.on_cell = grid, out_dir, rows, on_cell
        self.env = environment()

    def record(self, cell: Cell, columns: dict[str, Any], seconds: float) -> dict[str, Any]:
        row = cell_row(cell, self.grid.run, options_of(self.grid, cell.name), self.grid.executor, self.env, columns,
                       seconds)
        folder = cell_dir(self.out_dir, cell)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(row, folder / "result.json")
        self.rows[cell.id] = row
        write_results(self.out_dir, self.rows)
        if self.on_cell:
            self.on_cell(cell, row)
        return row
