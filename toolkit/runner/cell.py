"""One cell: prune a dense model, fine-tune it, measure it, save it. The one path every
command and executor takes (``toolkit prune``, the local grid, the Ray grid).

**Budget.** Every cell of a run trains the same number of steps: the prune
stage's steps that a pruner does not use (a one-shot pruner uses none) go to
fine-tuning, and a baseline trained from scratch (``narrow``) gets the dense
training steps as well. ``budget_steps`` in the row is that total, so a table
compares methods at equal training cost.

**Recovery budget.** ``recovery_steps`` is what a cell trains after the dense
model: the prune stage's steps plus the fine-tune steps. By default it is the
run's prune and fine-tune epochs; a grid's ``recovery_steps`` axis sets it per
cell (0 = prune and measure, no training). The prune stage gets at most that
budget and the fine-tune the rest, so ``budget_steps = steps_train +
recovery_steps`` for every cell; a gradual pruner needs at least one step per
pruning step, and its row says how many it took (``steps_prune``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.config import RunConfig, write_config
from toolkit.contract import PrunerSpec
from toolkit.pruning.surgery import channel_counts, channel_sparsity
from toolkit.pruning.targets import Target, met
from toolkit.results.alerts import row_warnings
from toolkit.runner.stages import (
    Checkpoint, compare_rows, describe, drop_resume_checkpoints, finetune_stage, load_dense, open_workbench, prune_stage,
    reached, recipe, recovery_trainer, reinitialise, save_examples, save_model, targeted_runtime, time_dense_on,
)
from toolkit.workbench.training import write_history


def _slug(text: str) -> str:
    return text.replace("/", "_").replace(":", "_").replace("\\", "_").strip("._")


def dense_id(arch: str, dataset: str, seed: int) -> str:
    """The folder name of the dense model every cell of (arch, dataset, seed) prunes."""
    return f"{arch}__{_slug(dataset)}__s{seed}"


@dataclass(frozen=True)
class Cell:
    """What varies between the cells of a grid; everything else is the run's ``RunConfig``.

    ``method`` names a variant of a pruner (the same plugin with other options
    or with distillation, a grid's ``[variants]``); it is the plugin's name
    when the cell uses the plugin as it is.
    """

    arch: str
    dataset: str
    plugin: str
    target: Target
    seed: int = 0
    method: str = ""
    recovery_steps: int | None = None  # None: the run's prune + fine-tune epochs (a grid without the axis)

    @property
    def name(self) -> str:
        return self.method or self.plugin

    @property
    def id(self) -> str:
        budget = "" if self.recovery_steps is None else f"__r{self.recovery_steps}"
        return f"{self.arch}__{_slug(self.dataset)}__{self.name}__{self.target.slug}__s{self.seed}{budget}"

    @property
    def dense_id(self) -> str:
        return dense_id(self.arch, self.dataset, self.seed)

    def as_row(self) -> dict[str, Any]:
        """The cell's identity columns, named as in every results row."""
        return {"cell": self.id, "arch": self.arch, "dataset": self.dataset, "method": self.name, "plugin": self.plugin,
                "target_kind": self.target.kind, "target": self.target.value, "seed": self.seed,
                **({} if self.recovery_steps is None else {"recovery_steps": self.recovery_steps})}


def resolve_pruner(plugin: str, target: Target, options: dict[str, Any] | None = None) -> tuple[PrunerSpec, Target]:
    """The pruner's spec and ``target`` in the pruner's measure (``rate`` for a structured pruner,
    ``sparsity`` for an unstructured one); with ``options``, they are checked against the spec. The one
    place a pruner is looked up by name: the CLI and the grid call it to fail before any work, a cell
    to run, and the stages receive what it returns."""
    from toolkit.plugins import get_registry

    spec = get_registry().get(plugin).spec
    resolved = target.for_pruner(spec.kind)
    if options is not None:
        spec.create(options)  # bad options: one line, before any work
    return spec, resolved


def run_cell(
    cell: Cell,
    settings: RunConfig,
    dense: dict[str, Any],
    folder: Path,
    *,
    options: dict[str, Any] | None = None,
    examples: int = 0,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """prune -> fine-tune -> measure -> save; returns the cell's measured columns (raises on failure).

    ``dense`` is the dense stage's stats (``toolkit.runner.dense``): its
    ``checkpoint`` is loaded (or ``checkpoint``, the same file already read),
    its measurements are the "before" of every column.
    """
    options = dict(options or {})
    wb = open_workbench(settings, cell.dataset, cell.seed)
    spec, target = resolve_pruner(cell.plugin, cell.target)
    folder.mkdir(parents=True, exist_ok=True)
    write_config({**cell.as_row(), "target_kind": target.kind, "plugin_options": options, "run": settings},
                 folder / "config.toml")
    dense_model = load_dense(checkpoint or dense["checkpoint"], wb.splits.num_classes).to(wb.device)
    channels_before = channel_counts(dense_model)

    teacher = dense_model if settings.distill.enabled else None
    recovery_steps = cell.recovery_steps
    if recovery_steps is None:
        recovery_steps = wb.prune_steps + settings.epochs_finetune * wb.steps_per_epoch
    prune_steps = min(wb.prune_steps, recovery_steps)
    pruned = prune_stage(wb, dense_model, spec, options, target, teacher=teacher, steps=prune_steps)
    write_history(pruned.history, folder / "prune_metrics.csv")
    result = pruned.result
    finetune_steps = recovery_steps - prune_steps + max(0, prune_steps - pruned.steps)
    # a model re-initialised from scratch is trained like the dense one (its recipe, its peak rate), for the
    # dense training's steps as well; only a pruned model recovers at the fine-tune stage's settings
    recovery = "finetune"
    if result.from_scratch:
        reinitialise(result.model, cell.seed)
        finetune_steps += int(dense.get("steps_train", 0))
        recovery = "train"
    recoverer = recovery_trainer(wb, recovery, result.model, dense["flops"], teacher)
    ft_history, ft_seconds = finetune_stage(recoverer, result, finetune_steps, folder)
    runtime = targeted_runtime(target, options)  # a latency target is judged on the runtime the pruner met it on
    dense = time_dense_on(dense, dense_model, wb, runtime)
    del dense_model, teacher

    stats = describe(result.model, wb, also=[runtime])
    row: dict[str, Any] = {
        "kind": result.kind,
        "backend": result.backend,
        "target_kind": target.kind,
        "channel_rate": channel_sparsity(channels_before, result.model),
        **compare_rows(dense, stats),
        "pruner_claimed": float(result.sparsity),
        "from_scratch": result.from_scratch,
        "class_names": dense.get("class_names"),
        "steps_train": int(dense.get("steps_train", 0)),
        "steps_prune": pruned.steps,
        "steps_finetune": finetune_steps,
        "recovery_steps": recovery_steps,
        "bn_recalibration": pruned.bn_recalibration,
        "time_train_s": float(dense.get("time_train_s", 0.0)),
        "time_prune_s": pruned.seconds,
        "time_finetune_s": ft_seconds,
        "device": str(wb.device),
        "precision": settings.precision,
        "distill": settings.distill.enabled,
        "recovery_lr_max": recoverer.cfg.lr_max,  # the fine-tune's peak rate (recovery_lr chooses it)
        "curves": [h.__dict__ for h in pruned.history + ft_history],
        "prune_history": result.history,
        "meta": result.meta,
    }
    # what the final weights were trained for: a model re-initialised from scratch has not seen the dense training
    row["budget_steps"] = (0 if result.from_scratch else row["steps_train"]) + row["steps_prune"] + row["steps_finetune"]
    row["reached"] = reached(target, row, runtime)
    row["target_met"] = met(target, row["reached"])
    empty = [name for name, n in channel_counts(result.model).items() if n == 0 and name in channels_before]
    row["warnings"] = row_warnings({**cell.as_row(), **row}, empty)

    rebuild = recipe(cell.arch, settings.encoder, wb.splits.num_classes)
    save_model(result.model, rebuild, folder / "pruned.pt", structured=result.kind == "structured",
               meta={"backend": result.backend, "plugin": cell.plugin})
    save_examples(result.model, wb, examples, folder / "examples.npz")
    from toolkit.results.plots import plot_curves

    plot_curves(list(dense.get("history") or []) + row["curves"], folder / "curves.png",
                title=f"{cell.arch} / {cell.name} @ {target}")
    drop_resume_checkpoints(folder)  # a re-run after a lost row repeats the short fine-tune
    return row
