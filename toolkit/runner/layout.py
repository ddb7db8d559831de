"""The run folder's layout: where a grid keeps each dense model and each cell."""
from __future__ import annotations

from pathlib import Path

from toolkit.runner.cell import Cell


def dense_dir(out_dir: Path, cell: Cell) -> Path:
    return out_dir / "dense" / cell.dense_id


def cell_dir(out_dir: Path, cell: Cell) -> Path:
    return out_dir / "cells" / cell.id
