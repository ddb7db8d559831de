"""The three stages, train -> prune -> fine-tune, as plain functions.

Each stage takes plain values and returns plain values, so it can be tested
alone; ``toolkit train``/``prune``/``compare`` are thin shells around them.
A run folder holds the config, per-stage metrics CSVs and checkpoints, and a
``result.json`` with every measurement.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.config import RunConfig
from toolkit.contract import PruneRequest, PruneResult, check_result
from toolkit.workbench.data import DatasetSplits, load_splits
from toolkit.errors import UsageError
from toolkit.results.measure import (
    compressed_bytes, count_flops, count_parameters, measure_latency, reduction, sparsity, state_dict_bytes,
)
from toolkit.workbench.models import create_model, output_layers
from toolkit.workbench.training import EpochRecord, Trainer, atomic_save, ema, write_history


@dataclass
class Workbench:
    """Data, trainer and example input shared by every stage of one (arch, dataset)."""

    cfg: RunConfig
    splits: DatasetSplits
    trainer: Trainer
    example: torch.Tensor

    @property
    def steps_per_epoch(self) -> int:
        n = len(self.trainer.train_loader)
        cap = self.cfg.train.max_steps_per_epoch
        return max(1, min(n, cap) if cap else n)


def build_workbench(cfg: RunConfig) -> Workbench:
    from toolkit.workbench.weights import normalization

    mean, std = normalization(cfg.encoder, cfg.encoder_weights)
    splits = load_splits(
        cfg.data, image_size=cfg.image_size, seed=cfg.seed, augment=True, skip_bad=cfg.skip_bad,
        mean=mean, std=std, limit=cfg.limit, binary=cfg.binary,
    )
    for file, why in splits.skipped:  # --skip-bad: left out, but never silently
        print(f"skipped bad file {file}: {why}", file=sys.stderr)
    trainer = Trainer(splits.train, splits.val, splits.num_classes, cfg.train, class_names=splits.class_names)
    example = splits.test[0][0].unsqueeze(0) if len(splits.test) else torch.randn(1, 3, cfg.image_size, cfg.image_size)
    return Workbench(cfg, splits, trainer, example)


def recipe(cfg: RunConfig, num_classes: int) -> dict[str, Any]:
    """What it takes to rebuild the dense model: plain data, no code."""
    return {"arch": cfg.arch, "encoder": cfg.encoder, "num_classes": num_classes}


# -- stage 1: train --------------------------------------------------------------
@dataclass
class Dense:
    model: nn.Module
    history: list[EpochRecord]
    seconds: float
    checkpoint: Path | None


def train_dense(wb: Workbench, out_dir: Path | None) -> Dense:
    """Train the dense model, or load it from ``cfg.checkpoint``."""
    cfg = wb.cfg
    t0 = time.perf_counter()
    if cfg.checkpoint:
        model = load_dense(cfg.checkpoint, wb.splits.num_classes)
        return Dense(model, [], 0.0, Path(cfg.checkpoint))
    weights = cfg.encoder_weights if cfg.encoder_weights not in ("none", "") else None
    model = create_model(cfg.arch, cfg.encoder, weights, num_classes=wb.splits.num_classes)
    history = wb.trainer.fit(model, cfg.epochs_train, "train", out_dir)
    path = None
    if out_dir:
        path = out_dir / "dense.pt"
        atomic_save({"recipe": recipe(cfg, wb.splits.num_classes), "model": model.state_dict()}, path)
    return Dense(model, history, time.perf_counter() - t0, path)


def _read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UsageError(f"{path} is not a readable checkpoint: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or "recipe" not in state:
        raise UsageError(f"{path} is not a toolkit dense checkpoint (no 'recipe'); train one with 'toolkit train'")
    return state


def read_recipe(path: str | Path) -> dict[str, Any]:
    return dict(_read_checkpoint(path)["recipe"])


def load_dense(path: str | Path, num_classes: int | None = None) -> nn.Module:
    """Load a dense checkpoint written by ``train_dense`` (``weights_only``: no code is unpickled)."""
    state = _read_checkpoint(path)
    r = state["recipe"]
    if num_classes is not None and r["num_classes"] != num_classes:
        raise UsageError(f"{path} predicts {r['num_classes']} classes but the dataset has {num_classes}")
    model = create_model(r["arch"], r["encoder"], None, num_classes=r["num_classes"])
    model.load_state_dict(state["model"])
    return model


# -- stage 2: prune ---------------------------------------------------------------
class EpochLoggingTrainer:
    """Wraps the trainer for gradual pruners: validates once per epoch of steps,
    so the prune stage has validation curves like the others."""

    def __init__(self, wb: Workbench, stage: str) -> None:
        self.wb, self.stage = wb, stage
        self.history: list[EpochRecord] = []
        self._steps = 0
        self._t0 = time.perf_counter()

    def __call__(self, model: nn.Module, steps: int, **kwargs: Any) -> None:
        per_epoch = self.wb.steps_per_epoch
        while steps > 0:
            chunk = min(steps, per_epoch - self._steps % per_epoch)
            self.wb.trainer(model, chunk, **kwargs)
            steps -= chunk
            self._steps += chunk
            if self._steps % per_epoch == 0:
                val = self.wb.trainer.score(model)
                values = [h.val_iou for h in self.history] + [val]
                self.history.append(EpochRecord(
                    self.stage, len(self.history) + 1, float("nan"), val,
                    ema(values, self.wb.cfg.train.ema_alpha)[-1], float("nan"), time.perf_counter() - self._t0,
                ))
                self._t0 = time.perf_counter()
                model.train()


@dataclass
class Pruned:
    result: PruneResult
    history: list[EpochRecord]
    seconds: float


def prune(wb: Workbench, dense: nn.Module, plugin: str, options: dict[str, Any] | None = None) -> Pruned:
    """Run one pruner plugin on a copy of the dense model."""
    from toolkit.plugins import create_pruner

    cfg = wb.cfg
    pruner = create_pruner(plugin, **(options if options is not None else cfg.plugin_options))
    model = copy.deepcopy(dense)
    total_iters = max(1, cfg.epochs_prune * wb.steps_per_epoch)
    logger = EpochLoggingTrainer(wb, "prune")
    request = PruneRequest(
        model=model, example_inputs=wb.example, sparsity=cfg.sparsity, train=logger,
        evaluate=wb.trainer.score, ignored_layers=output_layers(model),
        pruning_steps=cfg.pruning_steps, step_interval=max(1, total_iters // cfg.pruning_steps),
    )
    t0 = time.perf_counter()
    result = check_result(request, pruner.prune(request))
    return Pruned(result, logger.history, time.perf_counter() - t0)


# -- stage 3: fine-tune -------------------------------------------------------------
def finetune(wb: Workbench, pruned: PruneResult, out_dir: Path | None) -> tuple[list[EpochRecord], float]:
    """Fine-tune the pruned model; unstructured masks are kept so the zeros stay zero."""
    t0 = time.perf_counter()
    keeper = None
    if pruned.masks:
        from toolkit.pruning.masking import keep_masks

        keeper = keep_masks(pruned.model, pruned.masks)
    try:
        history = wb.trainer.fit(pruned.model, wb.cfg.epochs_finetune, "finetune", out_dir)
    finally:
        if keeper is not None:
            keeper.remove()
    return history, time.perf_counter() - t0


# -- measurements ---------------------------------------------------------------------
def describe(model: nn.Module, wb: Workbench, ignored: list[nn.Module] | None = None) -> dict[str, Any]:
    """Size, cost, speed and accuracy of one model, as plain numbers."""
    cfg = wb.cfg
    side = cfg.latency_size or cfg.image_size
    x = torch.randn(1, 3, side, side)
    lat = measure_latency(model, x, runs=cfg.latency_runs, threads=cfg.latency_threads)
    test = wb.trainer.evaluate(model, torch.utils.data.DataLoader(wb.splits.test, batch_size=cfg.train.batch_size))
    return {
        "params": count_parameters(model),
        "flops": count_flops(model, wb.example),
        "sparsity": sparsity(model, output_layers(model) if ignored is None else ignored),
        "file_bytes": state_dict_bytes(model),
        "zip_bytes": compressed_bytes(model),
        "latency_ms": lat.median_ms,
        "latency_threads": lat.threads,
        "latency_input": "x".join(map(str, lat.input_shape)),
        "test_iou": test.mean,
        "test_iou_per_class": test.per_class,
    }


def compare_rows(dense: dict[str, Any], pruned: dict[str, Any]) -> dict[str, Any]:
    """Before/after columns and the reductions people report."""
    row: dict[str, Any] = {}
    for key in ("params", "flops", "file_bytes", "zip_bytes", "latency_ms", "test_iou", "sparsity"):
        row[f"{key}_dense"] = dense[key]
        row[f"{key}_pruned"] = pruned[key]
    row["params_reduction"] = reduction(dense["params"], pruned["params"])
    row["flops_reduction"] = reduction(dense["flops"], pruned["flops"])
    row["latency_speedup"] = dense["latency_ms"] / pruned["latency_ms"] if pruned["latency_ms"] else math.nan
    row["test_iou_change"] = pruned["test_iou"] - dense["test_iou"]
    row["test_iou_per_class_dense"] = dense["test_iou_per_class"]
    row["test_iou_per_class_pruned"] = pruned["test_iou_per_class"]
    row["latency_threads"] = pruned["latency_threads"]
    row["latency_input"] = pruned["latency_input"]
    return row


def save_pruned(result: PruneResult, wb: Workbench, out_dir: Path) -> Path:
    """Save the pruned model so it loads back without this code path."""
    if result.kind == "structured":
        from toolkit.pruning.serialize import save_pruned as save_structured

        path = out_dir / "pruned.pt"  # recipe + layer widths + weights: loads with weights_only
        return save_structured(result.model, path, recipe(wb.cfg, wb.splits.num_classes), meta={"backend": result.backend})
    path = out_dir / "pruned.pt"  # same keys as dense: the zeros are real weights
    atomic_save({"recipe": recipe(wb.cfg, wb.splits.num_classes), "model": result.model.state_dict()}, path)
    return path


def achieved_sparsity(result: PruneResult, stats: dict[str, Any]) -> float:
    """Structured: channels removed (the pruner measured them). Unstructured: the zeros
    still there after fine-tuning, measured on the final weights."""
    return float(result.sparsity) if result.kind == "structured" else float(stats["sparsity"])


def write_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def run_prune_pipeline(cfg: RunConfig, out_dir: Path, dense: Dense | None = None, wb: Workbench | None = None) -> dict[str, Any]:
    """train (or load) -> prune -> fine-tune -> measure; writes ``result.json``."""
    from toolkit.config import write_config
    from toolkit.results.plots import plot_curves

    if not cfg.plugin:
        raise UsageError("no pruner given: pass --plugin NAME (see 'toolkit plugins')")
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.checkpoint and dense is None:
        r = read_recipe(cfg.checkpoint)
        cfg.arch, cfg.encoder = r["arch"], r["encoder"]  # the checkpoint says what model it is
    write_config(cfg, out_dir / "config.toml")
    wb = wb or build_workbench(cfg)
    dense = dense or train_dense(wb, out_dir)
    dense_stats = describe(dense.model, wb)
    pruned = prune(wb, dense.model, cfg.plugin)
    write_history(pruned.history, out_dir / "prune_metrics.csv")
    ft_history, ft_seconds = finetune(wb, pruned.result, out_dir)
    pruned_stats = describe(pruned.result.model, wb)
    save_pruned(pruned.result, wb, out_dir)
    result = {
        "arch": cfg.arch, "encoder": cfg.encoder, "dataset": cfg.data, "plugin": cfg.plugin,
        "kind": pruned.result.kind, "backend": pruned.result.backend,
        "target_sparsity": cfg.sparsity, "achieved_sparsity": achieved_sparsity(pruned.result, pruned_stats),
        "sparsity_of": "output channels" if pruned.result.kind == "structured" else "prunable weights",
        **compare_rows(dense_stats, pruned_stats),
        "time_train_s": dense.seconds, "time_prune_s": pruned.seconds, "time_finetune_s": ft_seconds,
        "prune_history": pruned.result.history, "meta": pruned.result.meta,
    }
    write_json(result, out_dir / "result.json")
    plot_curves(dense.history + pruned.history + ft_history, out_dir / "curves.png", title=f"{cfg.arch} / {cfg.plugin} @ {cfg.sparsity:.0%}")
    return result
