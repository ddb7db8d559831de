"""Where a grid's cells run, by name (``executor = "local"`` or ``--executor ray``).

Each executor is a function ``(grid, out_dir, todo, recorder)`` that runs the
unfinished cells and hands every row to the recorder. Its module loads only
when it runs, so this table (and the CLI's ``--executor`` choices read from it)
costs nothing to import.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from toolkit.named import Names

if TYPE_CHECKING:
    from toolkit.runner.cell import Cell
    from toolkit.runner.grid_config import GridConfig
    from toolkit.runner.rows import Recorder

Executor = Callable[["GridConfig", Path, "list[Cell]", "Recorder"], None]
EXECUTORS: Names[Executor] = Names("executor")


@EXECUTORS.register("local", "the cells one after another on this machine (default)")
def _local(grid: "GridConfig", out_dir: Path, todo: "list[Cell]", recorder: "Recorder") -> None:
    from toolkit.runner.local import run_locally

    run_locally(grid, out_dir, todo, recorder)


@EXECUTORS.register("ray", "a task graph on a Ray cluster (pip install 'toolkit[ray]')")
def _ray(grid: "GridConfig", out_dir: Path, todo: "list[Cell]", recorder: "Recorder") -> None:
    from toolkit.runner.ray_executor import run_on_ray

    run_on_ray(grid, out_dir, todo, recorder)
