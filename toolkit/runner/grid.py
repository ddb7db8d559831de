"""The benchmark grid: architecture x dataset x pruner x target x seed; train once, prune many.

``load_grid`` reads and checks the grid (TOML and command line), ``cells``
lists its cells, ``run_grid`` runs the unfinished ones on an executor
(``local`` here, ``ray`` on a cluster) and returns every row. Rows are written
by this process alone (it locks the folder: ``toolkit.runner.lock``), one file
per cell plus ``results.jsonl``, each
atomically, so killing the run (Ctrl-C, kill -9, a lost machine) loses no
finished cell and the same command resumes where it stopped. A cell whose
plugin raises, hangs past ``cell_timeout`` or whose worker dies is recorded
as failed with the reason, and the grid goes on.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from toolkit.atomic import write_json
from toolkit.config import RunConfig, read_toml, update, use_recipe
from toolkit.errors import UsageError
from toolkit.pruning.targets import Target
from toolkit.results.control import CONTROL
from toolkit.results.store import SETTINGS, added_settings_hint, finished, read_settings, write_results
from toolkit.results.tracking import open_tracker
from toolkit.runner.cell import Cell, resolve_pruner
from toolkit.runner.executors import EXECUTORS
from toolkit.runner.grid_config import (  # noqa: F401 - re-exported: their old home
    GridConfig, RayConfig, TrackingConfig, demo_run_config,
)
from toolkit.runner.layout import cell_dir, dense_dir  # noqa: F401 - re-exported: their old home
from toolkit.runner.lock import hold
from toolkit.runner.rows import Recorder, environment, failed_row  # noqa: F401 - re-exported
from toolkit.runner.variants import options_of, settings_of  # noqa: F401 - re-exported


def load_grid(path: str | Path | None = None, **overrides: Any) -> GridConfig:
    """The grid from a TOML file and command-line values, every name and target checked here."""
    grid = GridConfig()
    data = read_toml(path) if path else {}
    run_values = data.pop("run", {})
    tracking = data.get("tracking")
    if isinstance(tracking, dict) and isinstance(tracking.get("mlflow"), bool):  # mlflow = true: the local store
        tracking["mlflow"] = "local" if tracking["mlflow"] else None
    update(grid, data, str(path))
    update(grid.run, run_values, f"{path}: [run]")
    run_overrides = overrides.pop("run", {}) or {}
    run_values, run_overrides = use_recipe(grid.run.train, run_values, run_overrides)
    given = {k: v for k, v in overrides.items() if v is not None}
    update(grid, given, "command line")
    update(grid.run, {k: v for k, v in run_overrides.items() if v is not None}, "command line")
    if ("targets" in data or "targets" in given) and "sparsities" not in data and "sparsities" not in given:
        grid.sparsities = []  # asked for cost targets only
    for name in ("archs", "plugins", "datasets", "seeds"):
        if not getattr(grid, name):
            raise UsageError(f"the grid needs at least one of {name}")
    if not grid.sparsities and not grid.targets and not grid.plugin_sparsities:
        raise UsageError("the grid needs sparsities or targets")
    grid.sparsities = [float(s) for s in grid.sparsities]
    for name, values in grid.plugin_sparsities.items():
        if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values) or not values:
            raise UsageError(f"plugin_sparsities.{name} must be a list of numbers, e.g. [0.5, 0.9]")
    for s in [*grid.sparsities, *(v for vs in grid.plugin_sparsities.values() for v in vs)]:
        if not 0.0 < float(s) < 1.0:
            raise UsageError(f"sparsities must lie in (0, 1), got {s}")
    for name, values in grid.plugin_targets.items():
        if not isinstance(values, list) or not values:
            raise UsageError(f"plugin_targets.{name} must be a list of targets, e.g. [\"flops=0.5\"]")
    for t in grid.targets:
        if Target.parse(t).value <= 0:
            raise UsageError(f"target {t} removes nothing")
    for t in (t for ts in grid.plugin_targets.values() for t in ts):
        Target.parse(t)  # 0 allowed: the dense baseline's
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in grid.recovery_steps):
        raise UsageError(f"recovery_steps must be whole numbers of steps >= 0, e.g. [0, 120, 400], got {grid.recovery_steps}")
    if len(set(grid.recovery_steps)) != len(grid.recovery_steps):
        raise UsageError(f"recovery_steps lists a budget twice: {grid.recovery_steps}")
    EXECUTORS.check(grid.executor)
    if grid.cell_timeout is not None and grid.cell_timeout <= 0:
        raise UsageError(f"cell_timeout must be a positive number of seconds, got {grid.cell_timeout}")
    if grid.executor == "ray":
        from toolkit.runner.ray_executor import require_ray

        require_ray()
        _check_ray(grid.ray)
    grid.run.validate(here=grid.executor == "local")  # on Ray, the nodes' devices count, not the driver's
    _check_names(grid)
    return grid


VARIANT_KEYS = {"plugin", "options", "distill", "run"}


def _check_ray(ray: RayConfig) -> None:
    if ray.cpus_per_cell <= 0:
        raise UsageError(f"cpus_per_cell must be > 0, got {ray.cpus_per_cell:g}")
    if ray.gpus_per_cell < 0:
        raise UsageError(f"gpus_per_cell must be >= 0, got {ray.gpus_per_cell:g}")
    if ray.max_retries < 0:
        raise UsageError(f"max_retries must be >= 0, got {ray.max_retries}")


def _check_names(grid: GridConfig) -> None:
    """Unknown pruners and variants, architectures and datasets, bad options, and targets a pruner
    cannot take fail before any work."""
    from toolkit.plugins import get_registry
    from toolkit.workbench.data import parse_source
    from toolkit.workbench.models import check_segmentation

    for arch in grid.archs:
        check_segmentation(arch)
    for dataset in grid.datasets:
        parse_source(dataset)
    registry = get_registry()
    for name, variant in grid.variants.items():
        if not isinstance(variant, dict) or "plugin" not in variant:
            raise UsageError(f"variants.{name} needs plugin = \"NAME\" (and optionally options = {{...}}, distill = true)")
        unknown = sorted(set(variant) - VARIANT_KEYS)
        if unknown:
            raise UsageError(f"variants.{name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(VARIANT_KEYS))}")
        if name in registry.pruners:
            raise UsageError(f"variants.{name}: a pruner is called {name!r} already; give the variant another name")
        settings_of(grid, name).validate()
    for name in grid.plugins:
        plugin = grid.variants[name]["plugin"] if name in grid.variants else name
        options = options_of(grid, name)
        for target in targets_of(grid, name) or [Target("sparsity", 0.0)]:  # a name without targets is checked too
            resolve_pruner(plugin, target, options)  # targets and options checked against the spec


def targets_of(grid: GridConfig, plugin: str) -> list[Target]:
    """A plugin's (or variant's) targets: its own list, else the grid's sparsities and targets
    (the dense control's: 0, it prunes nothing)."""
    if plugin in grid.plugin_targets:
        return [Target.parse(t) for t in grid.plugin_targets[plugin]]
    if grid.variants.get(plugin, {}).get("plugin", plugin) == CONTROL:
        return [Target("sparsity", 0.0)]
    native = grid.plugin_sparsities.get(plugin, grid.sparsities)
    return [Target("sparsity", float(s)) for s in native] + [Target.parse(t) for t in grid.targets]


def cells(grid: GridConfig) -> list[Cell]:
    """Every cell, grouped by dense model (seed, dataset, arch) so one is in memory at a time."""
    def plugin(name: str) -> tuple[str, str]:
        return (grid.variants[name]["plugin"], name) if name in grid.variants else (name, "")

    return [
        Cell(a, d, plugin(p)[0], t, int(seed), method=plugin(p)[1], recovery_steps=budget)
        for seed in grid.seeds for d in grid.datasets for a in grid.archs for p in grid.plugins
        for t in targets_of(grid, p) for budget in (grid.recovery_steps or [None])
    ]


def run_grid(
    grid: GridConfig,
    out_dir: Path,
    retry_failed: bool = False,
    force: bool = False,
    on_cell: Callable[[Cell, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every unfinished cell on the grid's executor; returns all rows (finished before and now)."""
    with hold(out_dir, "compare"):  # one grid per folder: a second one stops at once (toolkit.runner.lock)
        _check_same_settings(grid, out_dir, force)
        _write_grid(grid, out_dir)
        rows = finished(out_dir)
        with open_tracker(grid, out_dir, rows) as tracker:
            return _run_cells(grid, out_dir, rows, retry_failed, _both(tracker.log_cell if tracker else None, on_cell))


def _run_cells(grid: GridConfig, out_dir: Path, rows: dict[str, dict[str, Any]], retry_failed: bool,
               on_cell: Callable[[Cell, dict[str, Any]], None]) -> dict[str, dict[str, Any]]:
    todo = [c for c in cells(grid) if c.id not in rows or (retry_failed and rows[c.id]["status"] == "failed")]
    recorder = Recorder(grid, out_dir, rows, on_cell)
    if todo:
        EXECUTORS.get(grid.executor)(grid, out_dir, todo, recorder)
    if should_retime(grid, rows, bool(todo)):
        from toolkit.runner.retime import retime_run

        run = grid.run
        rows.update(retime_run(out_dir, run.latency_runtimes, run.latency_threads, run.latency_runs,
                               size=run.latency_size or run.image_size))
    write_results(out_dir, rows)
    return rows


def _both(*hooks: Callable[[Cell, dict[str, Any]], None] | None) -> Callable[[Cell, dict[str, Any]], None]:
    """The tracker's ``on_cell`` and the caller's, in that order."""
    def call(cell: Cell, row: dict[str, Any]) -> None:
        for hook in hooks:
            if hook:
                hook(cell, row)
    return call


def should_retime(grid: GridConfig, rows: dict[str, dict[str, Any]], ran: bool) -> bool:
    """The quiet re-timing pass runs when it is on (by default: a local grid) and a cell ran now
    or a finished one has no quiet timing yet."""
    on = grid.retime if grid.retime is not None else grid.executor == "local"
    ok = [r for r in rows.values() if r.get("status") == "ok"]
    return bool(on and ok and (ran or any(r.get("retimed_rounds") is None for r in ok)))


def _run_settings(grid: GridConfig) -> dict[str, Any]:
    run = dataclasses.asdict(grid.run)
    for table in (run["train"], run.get("prune") or {}, run.get("finetune") or {}):
        for key in ("progress", "val_every"):  # how it reports and how often it looks, not what it computes
            table.pop(key, None)
    for key in ("device", "threads", "latency_runtimes"):  # where it runs and is timed is not what it computes
        run.pop(key, None)
    return json.loads(json.dumps(run))


def _check_same_settings(grid: GridConfig, out_dir: Path, force: bool) -> None:
    """Refuse to mix cells trained with other settings into one table."""
    saved = out_dir / SETTINGS
    now = _run_settings(grid)
    if saved.exists() and not force:
        changed = changed_settings(now, read_settings(out_dir))
        if changed:
            raise UsageError(
                f"{out_dir} holds cells made with other settings ({', '.join(changed)}); "
                f"use another --out, or --force to mix them{added_settings_hint(changed)}"
            )
    if not saved.exists() or force:
        write_json(now, saved)


def changed_settings(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The run settings (top-level names) in which two ``settings.json`` differ. A setting that
    one of them predates counts as its default: a grid started before the toolkit gained a
    setting still resumes and merges, as long as the new setting is left at its default."""
    default = _run_settings(GridConfig(run=RunConfig()))
    a, b = (_computed(_with_defaults(s, default)) for s in (a, b))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _computed(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings without the memory layout: NHWC computes the same model within float tolerance
    (tests/test_step_formats.py), so a grid resumes and merges across it."""
    train = {k: v for k, v in (settings.get("train") or {}).items() if k != "channels_last"}
    return {**settings, "train": train}


def _with_defaults(saved: Any, default: Any) -> Any:
    if isinstance(saved, dict) and isinstance(default, dict):
        return {**default, **{k: _with_defaults(v, default.get(k)) for k, v in saved.items()}}
    return saved


def _write_grid(grid: GridConfig, out_dir: Path) -> None:
    import tomli_w

    from toolkit.config import _drop_none

    (out_dir / "grid.toml").write_text(tomli_w.dumps(_drop_none(dataclasses.asdict(grid))))

