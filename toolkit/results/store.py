"""A run folder's rows on disk: one ``cells/<id>/result.json`` per cell (the source of
truth) and ``results.jsonl`` with all of them, each written atomically."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from toolkit.atomic import write_text
from toolkit.errors import UsageError

RESULTS = "results.jsonl"
SETTINGS = "settings.json"  # the run settings its cells were made with: a folder resumes or merges only under them
# settings added since a run folder may have been made, with the value its cells were made with
ADDED_SETTINGS = {"bn_recalibration": 0}


def read_settings(out_dir: Path) -> dict[str, Any]:
    """A run folder's ``settings.json``, with the settings added since at the value they stand for there."""
    return {**ADDED_SETTINGS, **json.loads((Path(out_dir) / SETTINGS).read_text())}


def added_settings_hint(changed: list[str]) -> str:
    """How to resume a folder made before a setting existed, when that setting is what differs."""
    added = [k for k in changed if k in ADDED_SETTINGS]
    return "".join(f"; it was made without {k}: add --{k.replace('_', '-')} {ADDED_SETTINGS[k]}" for k in added)


def finished(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Rows of cells already done, from their per-cell files."""
    rows = {}
    for path in sorted((out_dir / "cells").glob("*/result.json")):
        try:
            row = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # half-written by a crash: the cell runs again
        if isinstance(row, dict) and "cell" in row and "status" in row:
            rows[row["cell"]] = row
    return rows


def write_results(out_dir: Path, rows: dict[str, dict[str, Any]]) -> Path:
    path = out_dir / RESULTS
    return write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows.values()))


def iter_rows(out_dir: Path) -> Iterator[dict[str, Any]]:
    path = Path(out_dir) / RESULTS
    if not path.exists():
        raise UsageError(f"{out_dir} has no {RESULTS}: is it a 'toolkit compare' run folder?")
    for line in path.read_text().splitlines():
        if line.strip():
            yield json.loads(line)
