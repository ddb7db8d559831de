"""The benchmark grid: model x pruner x sparsity x dataset, train once, prune many.

Every finished cell is written at once, atomically, to ``cells/<id>/result.json``
and appended to ``results.jsonl``; a re-run of the same command skips finished
cells, so Ctrl-C or a crash loses nothing that was done. A cell whose plugin
raises is recorded as failed with its error, and the grid goes on.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from toolkit.config import RunConfig, read_toml, update, write_config
from toolkit.errors import ToolkitError, UsageError
from toolkit.runner.stages import (
    Dense, Workbench, achieved_sparsity, build_workbench, compare_rows, describe, finetune, prune, save_pruned, train_dense,
    write_json,
)
from toolkit.workbench.training import write_history

RESULTS = "results.jsonl"


@dataclass
class GridConfig:
    """The grid and the per-cell settings. The defaults are the demo: a few minutes on 2 CPU cores."""

    archs: list[str] = field(default_factory=lambda: ["fpn", "unet"])
    plugins: list[str] = field(default_factory=lambda: ["fpgm", "l1", "agp"])
    sparsities: list[float] = field(default_factory=lambda: [0.5, 0.75])
    datasets: list[str] = field(default_factory=lambda: ["synthetic"])
    plugin_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per plugin name
    plugin_sparsities: dict[str, list[float]] = field(default_factory=dict)  # per plugin name, instead of sparsities
    examples: int = 3  # test images drawn per cell in the report
    run: RunConfig = field(default_factory=lambda: demo_run_config())


def demo_run_config() -> RunConfig:
    """Tiny settings of the demo: small images, a small encoder, a few steps per stage."""
    cfg = RunConfig(encoder="resnet18", image_size=64, limit=120, epochs_train=3, epochs_prune=1,
                    epochs_finetune=2, pruning_steps=4, latency_runs=5)
    cfg.train.max_steps_per_epoch = 12
    cfg.train.lr_min = 1e-3
    cfg.train.clr_step = 20
    cfg.train.momentum = 0.9
    return cfg


def load_grid(path: str | Path | None = None, **overrides: Any) -> GridConfig:
    grid = GridConfig()
    data = read_toml(path) if path else {}
    run_values = data.pop("run", {})
    update(grid, {k: v for k, v in data.items()}, str(path))
    update(grid.run, run_values, f"{path}: [run]")
    run_overrides = overrides.pop("run", {}) or {}
    update(grid, {k: v for k, v in overrides.items() if v is not None}, "command line")
    update(grid.run, {k: v for k, v in run_overrides.items() if v is not None}, "command line")
    for name in ("archs", "plugins", "sparsities", "datasets"):
        if not getattr(grid, name):
            raise UsageError(f"the grid needs at least one of {name}")
    grid.sparsities = [float(s) for s in grid.sparsities]
    for name, values in grid.plugin_sparsities.items():
        if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values) or not values:
            raise UsageError(f"plugin_sparsities.{name} must be a list of numbers, e.g. [0.5, 0.9]")
    for s in [*grid.sparsities, *(v for vs in grid.plugin_sparsities.values() for v in vs)]:
        if not 0.0 < float(s) < 1.0:
            raise UsageError(f"sparsities must lie in (0, 1), got {s}")
    grid.run.validate()
    return grid


@dataclass(frozen=True)
class Cell:
    arch: str
    dataset: str
    plugin: str
    sparsity: float

    @property
    def id(self) -> str:
        data = self.dataset.replace("/", "_").replace(":", "_").strip("._")
        return f"{self.arch}__{data}__{self.plugin}__{self.sparsity:g}"


def cells(grid: GridConfig) -> list[Cell]:
    return [
        Cell(a, d, p, float(s))
        for d in grid.datasets for a in grid.archs for p in grid.plugins
        for s in grid.plugin_sparsities.get(p, grid.sparsities)
    ]


def environment() -> dict[str, Any]:
    """Versions and machine facts that a reader needs to reproduce a row."""
    import segmentation_models_pytorch as smp

    import toolkit

    versions = {"toolkit": toolkit.__version__, "torch": torch.__version__, "smp": smp.__version__,
                "python": platform.python_version(), "machine": platform.machine(), "cpu_threads": torch.get_num_threads()}
    for mod, key in (("torch_pruning", "torch_pruning"), ("nni", "nni"), ("thop", "thop")):
        try:
            versions[key] = getattr(__import__(mod), "__version__", "?")
        except Exception:  # noqa: BLE001 - a missing optional backend is a fact, not an error
            versions[key] = "not installed"
    try:
        versions["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        versions["git_commit"] = None
    return versions


def finished(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Rows of cells already done, from their per-cell files (the source of truth)."""
    rows = {}
    for path in sorted((out_dir / "cells").glob("*/result.json")):
        try:
            row = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # half-written by a crash: the cell runs again
        rows[row["cell"]] = row
    return rows


def write_results(out_dir: Path, rows: dict[str, dict[str, Any]]) -> Path:
    path = out_dir / RESULTS
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows.values()))
    tmp.replace(path)
    return path


def save_examples(model: torch.nn.Module, wb: Workbench, n: int, path: Path) -> None:
    """A few test images, their ground truth and this model's prediction, for the report."""
    if n <= 0 or not len(wb.splits.test):
        return
    items = [wb.splits.test[i] for i in range(min(n, len(wb.splits.test)))]
    x = torch.stack([i[0] for i in items])
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    image = ((x - lo) / (hi - lo).clamp(min=1e-6) * 255).permute(0, 2, 3, 1).to(torch.uint8)
    np.savez_compressed(path, image=image.numpy(), truth=torch.stack([i[1] for i in items]).numpy().astype(np.uint8),
                        pred=pred.numpy().astype(np.uint8))


def dense_dir(out_dir: Path, arch: str, dataset: str) -> Path:
    return out_dir / "dense" / f"{arch}__{Cell(arch, dataset, 'x', 0).id.split('__')[1]}"


class DenseCache:
    """One trained dense model (and its measurements) per (arch, dataset), shared by all its cells."""

    def __init__(self, grid: GridConfig, out_dir: Path) -> None:
        self.grid, self.out_dir = grid, out_dir
        self._key: tuple[str, str] | None = None
        self._value: tuple[Workbench, Dense, dict[str, Any]] | None = None

    def get(self, arch: str, dataset: str) -> tuple[Workbench, Dense, dict[str, Any]]:
        if self._key == (arch, dataset) and self._value is not None:
            return self._value
        cfg = copy.deepcopy(self.grid.run)
        cfg.arch, cfg.data = arch, dataset
        folder = dense_dir(self.out_dir, arch, dataset)
        folder.mkdir(parents=True, exist_ok=True)
        wb = build_workbench(cfg)
        ckpt = folder / "dense.pt"
        if ckpt.exists():
            from toolkit.runner.stages import load_dense

            history = [dict(r) for r in _read_csv(folder / "train_metrics.csv")]
            dense = Dense(load_dense(ckpt, wb.splits.num_classes), history, 0.0, ckpt)  # type: ignore[arg-type]
            stats = json.loads((folder / "stats.json").read_text())
        else:
            dense = train_dense(wb, folder)
            stats = describe(dense.model, wb)
            stats["time_train_s"] = dense.seconds
            stats["class_names"] = wb.splits.class_names
            stats["data_description"] = wb.splits.description
            save_examples(dense.model, wb, self.grid.examples, folder / "examples.npz")
            write_json(stats, folder / "stats.json")
        self._key, self._value = (arch, dataset), (wb, dense, stats)
        return self._value


def _read_csv(path: Path) -> list[dict[str, Any]]:
    import csv

    if not path.exists():
        return []
    with path.open() as f:
        return [{k: (float(v) if k not in ("stage",) else v) for k, v in r.items()} for r in csv.DictReader(f)]


def run_cell(cell: Cell, grid: GridConfig, dense_cache: DenseCache, out_dir: Path) -> dict[str, Any]:
    """train (shared) -> prune -> fine-tune -> measure one cell; raises on failure."""
    wb, dense, dense_stats = dense_cache.get(cell.arch, cell.dataset)
    cfg = copy.deepcopy(wb.cfg)
    cfg.plugin, cfg.sparsity = cell.plugin, cell.sparsity
    cfg.plugin_options = dict(grid.plugin_options.get(cell.plugin, {}))
    wb = dataclasses.replace(wb, cfg=cfg)
    folder = out_dir / "cells" / cell.id
    folder.mkdir(parents=True, exist_ok=True)
    write_config(cfg, folder / "config.toml")
    pruned = prune(wb, dense.model, cell.plugin, cfg.plugin_options)
    write_history(pruned.history, folder / "prune_metrics.csv")
    ft_history, ft_seconds = finetune(wb, pruned.result, folder)
    stats = describe(pruned.result.model, wb)
    save_pruned(pruned.result, wb, folder)
    row = {
        "kind": pruned.result.kind, "backend": pruned.result.backend,
        "achieved_sparsity": achieved_sparsity(pruned.result, stats),
        "sparsity_of": "output channels" if pruned.result.kind == "structured" else "prunable weights",
        **compare_rows(dense_stats, stats),
        "class_names": dense_stats.get("class_names"),
        "time_train_s": dense_stats.get("time_train_s", 0.0), "time_prune_s": pruned.seconds, "time_finetune_s": ft_seconds,
        "curves": [h.__dict__ for h in pruned.history + ft_history],
        "prune_history": pruned.result.history,
    }
    save_examples(pruned.result.model, wb, grid.examples, folder / "examples.npz")
    return row


def run_grid(
    grid: GridConfig,
    out_dir: Path,
    retry_failed: bool = False,
    force: bool = False,
    on_cell: Callable[[Cell, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every unfinished cell; returns all rows (finished before and now)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_same_settings(grid, out_dir, force)
    _write_grid(grid, out_dir)
    rows = finished(out_dir)
    todo = [c for c in cells(grid) if c.id not in rows or (retry_failed and rows[c.id]["status"] == "failed")]
    env = environment()
    dense_cache = DenseCache(grid, out_dir)
    bar = tqdm(todo, desc="cells", unit="cell", disable=not grid.run.train.progress)
    for cell in bar:
        bar.set_postfix_str(cell.id)
        base = {"cell": cell.id, **dataclasses.asdict(cell), "target_sparsity": cell.sparsity, "encoder": grid.run.encoder,
                "seed": grid.run.seed, "image_size": grid.run.image_size,
                "epochs": [grid.run.epochs_train, grid.run.epochs_prune, grid.run.epochs_finetune], **env}
        t0 = time.perf_counter()
        try:
            row = {**base, "status": "ok", "error": None, **run_cell(cell, grid, dense_cache, out_dir)}
        except KeyboardInterrupt:
            raise
        except ToolkitError as exc:
            row = {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # noqa: BLE001 - a plugin that raises fails its own row, not the run
            row = {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=8)}
        row["time_cell_s"] = time.perf_counter() - t0
        folder = out_dir / "cells" / cell.id
        folder.mkdir(parents=True, exist_ok=True)
        write_json(row, folder / "result.json")
        rows[cell.id] = row
        write_results(out_dir, rows)
        if on_cell:
            on_cell(cell, row)
    write_results(out_dir, rows)
    return rows


def _run_settings(grid: GridConfig) -> dict[str, Any]:
    run = dataclasses.asdict(grid.run)
    run["train"].pop("progress", None)
    return json.loads(json.dumps(run))


def _check_same_settings(grid: GridConfig, out_dir: Path, force: bool) -> None:
    """Refuse to mix cells trained with other settings into one table."""
    saved = out_dir / "settings.json"
    now = _run_settings(grid)
    if saved.exists() and not force:
        before = json.loads(saved.read_text())
        changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
        if changed:
            raise UsageError(
                f"{out_dir} holds cells made with other settings ({', '.join(changed)}); "
                "use another --out, or --force to mix them"
            )
    if not saved.exists() or force:
        write_json(now, saved)


def _write_grid(grid: GridConfig, out_dir: Path) -> None:
    import tomli_w

    data = dataclasses.asdict(grid)
    run = {k: v for k, v in data.pop("run").items() if v is not None}
    run["train"] = {k: v for k, v in run["train"].items() if v is not None}
    (out_dir / "grid.toml").write_text(tomli_w.dumps({**data, "run": run}))


def iter_rows(out_dir: Path) -> Iterator[dict[str, Any]]:
    path = out_dir / RESULTS
    if not path.exists():
        raise UsageError(f"{out_dir} has no {RESULTS}: is it a 'toolkit compare' run folder?")
    for line in path.read_text().splitlines():
        if line.strip():
            yield json.loads(line)
