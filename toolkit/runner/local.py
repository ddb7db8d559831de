"""The local executor: the grid's cells one after another on this machine.

Dense models are trained here, in this process; cells run here too, or, with
``cell_timeout``, each in a fresh process that is stopped when it runs past
its limit (``toolkit.runner.isolate``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from toolkit.runner.cell import Cell, run_cell
from toolkit.runner.dense import train_dense
from toolkit.runner.isolate import call_isolated

if TYPE_CHECKING:
    from toolkit.runner.grid import GridConfig, Recorder


def run_locally(grid: "GridConfig", out_dir: Path, todo: list[Cell], recorder: "Recorder") -> None:
    from toolkit.runner.grid import cell_dir, dense_dir, failed_row, options_of, settings_of

    dense: dict[str, Any] = {}  # dense_id -> stats, or the exception that stopped it
    bar = tqdm(todo, desc="cells", unit="cell", disable=not grid.run.train.progress)
    for cell in bar:
        bar.set_postfix_str(cell.id)
        t0 = time.perf_counter()
        try:
            if cell.dense_id not in dense:
                try:
                    dense[cell.dense_id] = train_dense(cell.arch, cell.dataset, cell.seed, grid.run,
                                                       dense_dir(out_dir, cell), examples=grid.examples)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - every cell of this dense model fails with its reason
                    dense[cell.dense_id] = exc
            stats = dense[cell.dense_id]
            if isinstance(stats, BaseException):
                raise stats
            args = (cell, settings_of(grid, cell.name), stats, cell_dir(out_dir, cell))
            kwargs = {"options": options_of(grid, cell.name), "examples": grid.examples}
            if grid.cell_timeout:
                columns = call_isolated(run_cell, *args, timeout=grid.cell_timeout, **kwargs)
            else:
                columns = run_cell(*args, **kwargs)
            columns = {"status": "ok", "error": None, **columns}
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin that raises fails its own row, not the run
            columns = failed_row(exc, with_traceback=True)
        recorder.record(cell, columns, time.perf_counter() - t0)
