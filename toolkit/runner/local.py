"""The local executor: the grid's cells one after another on this machine.

Dense models are trained here, in this process; cells run here too, or, with
``cell_timeout``, each in a fresh process that is stopped when it runs past
its limit (``toolkit.runner.isolate``). ``run_cell_guarded`` is those rules for
one cell; the Ray executor's workers call it too.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from toolkit.runner.cell import Cell, run_cell
from toolkit.runner.dense import train_dense
from toolkit.runner.isolate import call_isolated
from toolkit.runner.layout import cell_dir, dense_dir
from toolkit.runner.rows import failed_row, ok_columns
from toolkit.runner.variants import options_of, settings_of

if TYPE_CHECKING:
    from toolkit.config import RunConfig
    from toolkit.runner.grid_config import GridConfig
    from toolkit.runner.rows import Recorder


def run_locally(grid: "GridConfig", out_dir: Path, todo: list[Cell], recorder: "Recorder") -> None:
    dense: dict[str, Any] = {}  # dense_id -> stats, or the exception that stopped it
    bar = tqdm(todo, desc="cells", unit="cell", disable=not grid.run.train.progress)
    for cell in bar:
        bar.set_postfix_str(cell.id)
        if cell.dense_id not in dense:
            try:
                dense[cell.dense_id] = train_dense(cell.arch, cell.dataset, cell.seed, grid.run,
                                                   dense_dir(out_dir, cell), examples=grid.examples)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - every cell of this dense model fails with its reason
                dense[cell.dense_id] = exc
        stats = dense[cell.dense_id]
        t0 = time.perf_counter()  # the cell's own time, as on Ray: the dense model's is in its stats
        if isinstance(stats, BaseException):
            columns = failed_row(stats, with_traceback=True)
        else:
            columns = run_cell_guarded(cell, settings_of(grid, cell.name), stats, cell_dir(out_dir, cell),
                                       options=options_of(grid, cell.name), examples=grid.examples,
                                       timeout=grid.cell_timeout)
        recorder.record(cell, columns, time.perf_counter() - t0)


def run_cell_guarded(cell: Cell, settings: "RunConfig", dense: dict[str, Any], folder: Path, *,
                     options: dict[str, Any], examples: int, timeout: float | None) -> dict[str, Any]:
    """A cell's row columns under the grid's rules, on any executor: with ``timeout`` it runs in a
    child process that is stopped past it; a plugin that raises fails its own row, not the run."""
    try:
        if timeout:
            columns = call_isolated(run_cell, cell, settings, dense, folder, timeout=timeout, options=options,
                                    examples=examples)
        else:
            columns = run_cell(cell, settings, dense, folder, options=options, examples=examples)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - the reason goes in the row
        return failed_row(exc, with_traceback=True)
    return ok_columns(columns)
