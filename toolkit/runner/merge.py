"""Join run folders that ran parts of one grid (other seeds, other pruners, other machines)
into one, so a single report holds them all.

A grid split by hand (``--seeds 0`` here, ``--seeds 1`` there) is the simplest way to
use two machines without a Ray cluster. Cells are only joined when the folders were made
with the same settings (``settings.json``), as ``compare`` refuses to resume otherwise;
a cell both folders finished is kept from the destination, one the destination only started
is replaced by the finished one. Resume checkpoints (``*_last.pt``)
are left behind: they only restart an interrupted stage.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import UsageError
from toolkit.results.store import SETTINGS, finished, read_settings, write_results
from toolkit.runner.grid import changed_settings
from toolkit.runner.lock import hold

RESUME_FILES = "*_last.pt"


@dataclass
class Merged:
    """What a merge did, for the one line the CLI prints."""

    cells: list[str] = field(default_factory=list)
    dense: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # in both: the destination's row stays


def _settings(folder: Path) -> dict:
    path = folder / SETTINGS
    if not path.is_file() or not (folder / "cells").is_dir():
        raise UsageError(f"{folder} is not a 'toolkit compare' run folder (no {SETTINGS} or cells/)")
    return read_settings(folder)


def _check_same(dest: Path, src: Path, force: bool) -> None:
    if not (dest / SETTINGS).exists():
        return
    changed = changed_settings(_settings(dest), _settings(src))
    if changed and not force:
        raise UsageError(f"{src} was made with other settings than {dest} ({', '.join(changed)}); "
                         "its rows would not be comparable (--force joins them anyway)")


def _copy(src: Path, dest: Path) -> None:
    """Copy under a temporary name, then rename: an interrupted merge leaves no half cell.
    A destination folder without a finished row (a cell stopped half-way) gives way to the finished copy."""
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src.resolve(), tmp, ignore=shutil.ignore_patterns(RESUME_FILES))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)


def merge_runs(dest: Path, sources: list[Path], force: bool = False) -> Merged:
    """Copy every finished cell and dense model of ``sources`` missing from ``dest``; rewrite its rows."""
    if not sources:
        raise UsageError("name at least one run folder to merge into the destination")
    for src in sources:
        _settings(src)
        if src.resolve() == dest.resolve():
            raise UsageError(f"{src} is the destination itself")
        _check_same(dest, src, force)
    with hold(dest, "merge", option="--into"):  # a grid running on it would interleave its rows with ours
        return _merge(dest, sources)


def _merge(dest: Path, sources: list[Path]) -> Merged:
    done = Merged()
    for src in sources:
        for name in (SETTINGS, "grid.toml"):
            if (src / name).is_file() and not (dest / name).exists():
                shutil.copy2(src / name, dest / name)
        have = finished(dest)
        for cell, row in finished(src).items():
            if cell in have:
                done.kept.append(cell)
                continue
            _copy(src / "cells" / cell, dest / "cells" / cell)
            have[cell] = row
            done.cells.append(cell)
        for model in sorted((src / "dense").glob("*")) if (src / "dense").is_dir() else []:
            target = dest / "dense" / model.name
            if target.exists() or not model.is_dir():
                continue
            _copy(model, target)
            done.dense.append(model.name)
    write_results(dest, finished(dest))
    return done
