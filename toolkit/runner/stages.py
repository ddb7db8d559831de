"""The pieces every run is made of: the workbench (data, device, trainers), loading and
saving models, the prune and fine-tune stages, and measuring a model.

Each takes plain values and returns plain values; ``toolkit.runner.dense`` and
``toolkit.runner.cell`` put them in order, and every command and executor
calls those two.
"""
from __future__ import annotations

import copy
import itertools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from toolkit.atomic import write_json  # noqa: F401 - re-exported: its old home
from toolkit.config import RunConfig
from toolkit.contract import PruneRequest, PruneResult, PrunerSpec, check_result
from toolkit.errors import UsageError
from toolkit.pruning.targets import Target
from toolkit.results.measure import (
    compressed_bytes, count_flops, count_parameters, measure_latency, reduction, sparsity, state_dict_bytes,
)
from toolkit.results.runtimes import column, measure_runtimes, runtime_columns, runtimes_on
from toolkit.workbench.batchnorm import recalibrate_batchnorm
from toolkit.workbench.data import DatasetSplits, load_splits
from toolkit.workbench.device import device_name, resolve_device
from toolkit.workbench.models import create_model, output_layers
from toolkit.workbench.seeding import derive, seed_everything, use_deterministic_algorithms
from toolkit.workbench.training import EpochRecord, Trainer, atomic_save, ema


# -- the workbench ---------------------------------------------------------------------
@dataclass
class Workbench:
    """One dataset at one seed with the run's settings: what every stage of a cell reads."""

    settings: RunConfig
    dataset: str
    seed: int
    splits: DatasetSplits
    device: torch.device
    example: torch.Tensor  # one test image (CPU), for FLOP counts and tracing

    def trainer(self, stage: str, teacher: nn.Module | None = None, flops_reduction: float | None = None,
                steps: int | None = None) -> Trainer:
        """A fresh trainer for one stage, with the stage's settings; its randomness is
        ``derive(seed, stage)``, the same for every cell of the seed. With a ``teacher`` and
        ``distill.enabled`` its loss distils the teacher into the model it trains;
        ``flops_reduction`` is for ``recovery_lr = "by-flops"`` (``RunConfig.stage_train``). ``steps`` is
        the prune stage's length when a recovery budget shortens it (default: its epochs)."""
        if steps is None:
            steps = self.prune_steps
        stage_steps = max(1, steps) if stage == "prune" else 0
        settings = self.settings.stage_train(stage, flops_reduction)
        trainer = Trainer(self.splits.train, self.splits.val, self.splits.num_classes, settings,
                          seed=derive(self.seed, stage), device=self.device, precision=self.settings.precision,
                          class_names=self.splits.class_names, stage_steps=stage_steps,
                          ignore_index=self.splits.ignore_index)
        if teacher is not None and self.settings.distill.enabled:
            from toolkit.workbench.distill import distillation_objective

            trainer = trainer.with_objective(distillation_objective(teacher, trainer.loss_fn, self.settings.distill))
        return trainer

    @property
    def steps_per_epoch(self) -> int:
        n = max(1, len(self.splits.train) // self.settings.train.batch_size)
        cap = self.settings.train.max_steps_per_epoch
        return max(1, min(n, cap) if cap else n)

    @property
    def prune_steps(self) -> int:
        """The prune stage's steps at the run's epochs."""
        return self.settings.epochs_prune * self.steps_per_epoch

    def batches(self, stage: str, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` training batches (the training's crops and augmentation), drawn from ``derive(seed, stage)``:
        the same for every cell of the seed."""
        if n <= 0:
            return
        trainer = self.trainer(stage)
        yield from itertools.islice((b for epoch in itertools.count() for b in trainer.epoch_batches(stage, epoch)), n)

    def test_loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.splits.test, batch_size=self.settings.train.batch_size)


_SPLITS: dict[tuple, DatasetSplits] = {}


def open_workbench(settings: RunConfig, dataset: str, seed: int) -> Workbench:
    """Read (once per process) and split a dataset, and set the process up for the run:
    thread count, deterministic algorithms, device."""
    from toolkit.workbench.weights import normalization

    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    use_deterministic_algorithms(settings.deterministic)
    mean, std = normalization(settings.encoder, settings.encoder_weights)
    key = (dataset, settings.image_size, seed, settings.skip_bad, mean, std, settings.limit, settings.binary,
           settings.ignore_index)
    if key not in _SPLITS:
        _SPLITS.clear()  # one dataset in memory at a time
        splits = load_splits(dataset, image_size=settings.image_size, seed=seed, augment=True, skip_bad=settings.skip_bad,
                             mean=mean, std=std, limit=settings.limit, binary=settings.binary,
                             progress=settings.train.progress, ignore_index=settings.ignore_index)
        for file, why in splits.skipped:  # --skip-bad: left out, but never silently
            print(f"skipped bad file {file}: {why}", file=sys.stderr)
        _SPLITS[key] = splits
    splits = _SPLITS[key]
    example = splits.test[0][0].unsqueeze(0) if len(splits.test) else torch.randn(1, 3, settings.image_size, settings.image_size)
    return Workbench(settings, dataset, seed, splits, device, example)


# -- models on disk ----------------------------------------------------------------------
def recipe(arch: str, encoder: str, num_classes: int) -> dict[str, Any]:
    """What it takes to rebuild the dense model: plain data, no code."""
    return {"arch": arch, "encoder": encoder, "num_classes": num_classes}


def build_model(arch: str, settings: RunConfig, num_classes: int, seed: int) -> nn.Module:
    """A new dense model; its random initialisation comes from the run's seed."""
    seed_everything(derive(seed, "init"))
    weights = settings.encoder_weights if settings.encoder_weights not in ("none", "") else None
    return create_model(arch, settings.encoder, weights, num_classes=num_classes)


@dataclass(frozen=True)
class Checkpoint:
    """A dense checkpoint read from disk once (``weights_only``: no code is unpickled): its
    ``recipe`` says what model it is, ``model()`` builds a fresh copy as often as it is needed."""

    path: Path
    state: dict[str, Any]

    @classmethod
    def read(cls, path: "str | Path | Checkpoint") -> "Checkpoint":
        if isinstance(path, Checkpoint):
            return path
        from toolkit.pruning.serialize import read_file

        state = read_file(path, "checkpoint")
        if not isinstance(state, dict) or "recipe" not in state:
            raise UsageError(f"{path} is not a toolkit dense checkpoint (no 'recipe'); train one with 'toolkit train'")
        return cls(Path(path), state)

    @property
    def recipe(self) -> dict[str, Any]:
        return dict(self.state["recipe"])

    def model(self, num_classes: int | None = None) -> nn.Module:
        r = self.state["recipe"]
        if num_classes is not None and r["num_classes"] != num_classes:
            raise UsageError(f"{self.path} predicts {r['num_classes']} classes but the dataset has {num_classes}")
        model = create_model(r["arch"], r["encoder"], None, num_classes=r["num_classes"])
        model.load_state_dict(self.state["model"])
        return model


def read_recipe(path: str | Path) -> dict[str, Any]:
    return Checkpoint.read(path).recipe


def load_dense(path: "str | Path | Checkpoint", num_classes: int | None = None) -> nn.Module:
    """A dense model from its checkpoint file (read now) or from a ``Checkpoint`` already read."""
    return Checkpoint.read(path).model(num_classes)


def save_model(model: nn.Module, rebuild: dict[str, Any], path: Path, structured: bool = False,
               meta: dict[str, Any] | None = None) -> Path:
    """A model file that loads back without this code path (``toolkit.pruning.serialize.load_model``)."""
    if structured:
        from toolkit.pruning.serialize import save_pruned

        return save_pruned(model, path, rebuild, meta=meta)  # recipe + layer widths + weights
    atomic_save({"recipe": rebuild, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)
    return path


def drop_resume_checkpoints(folder: Path) -> None:
    """Delete a finished stage's ``*_last.pt``: they only resume an interrupted training and
    hold the optimiser's state too (AdamW: three times the model), so a grid that kept one
    per stage would fill the disk. Call it once the stage's own "finished" mark is written."""
    for path in folder.glob("*_last.pt"):
        path.unlink(missing_ok=True)


# -- the prune stage ---------------------------------------------------------------------
class StageTrainer:
    """The prune stage's ``StepTrainer``: counts the training steps pruners take and
    validates once per epoch of steps, so the prune stage has curves like the others."""

    def __init__(self, wb: Workbench, trainer: Trainer, stage: str = "prune") -> None:
        self.wb, self.trainer, self.stage = wb, trainer, stage
        self.history: list[EpochRecord] = []
        self.steps = 0  # steps that updated weights (a zero-lr gradient pass does not count)
        self._logged = 0
        self._t0 = time.perf_counter()

    def __call__(self, model: nn.Module, steps: int, **kwargs: Any) -> None:
        optimizer = kwargs.get("optimizer")
        trains = optimizer is None or any(g.get("lr", 0) > 0 for g in optimizer.param_groups)
        per_epoch = self.wb.steps_per_epoch
        while steps > 0:
            chunk = min(steps, per_epoch - self._logged % per_epoch) if trains else steps
            self.trainer(model, chunk, **kwargs)
            steps -= chunk
            if not trains:
                continue
            self.steps += chunk
            self._logged += chunk
            if self._logged % per_epoch == 0:
                val = self.trainer.score(model)
                values = [h.val_iou for h in self.history] + [val]
                self.history.append(EpochRecord(
                    self.stage, len(self.history) + 1, float("nan"), val,
                    ema(values, self.wb.settings.train.ema_alpha)[-1], float("nan"), time.perf_counter() - self._t0,
                ))
                self._t0 = time.perf_counter()
                model.train()


@dataclass
class Pruned:
    result: PruneResult
    history: list[EpochRecord]
    seconds: float
    steps: int  # training steps the pruner took
    bn_recalibration: int = 0  # batches the BatchNorm statistics were recalibrated on (0: not done)


def prune_stage(
    wb: Workbench,
    dense: nn.Module,
    spec: PrunerSpec,
    options: dict[str, Any],
    target: Target,
    teacher: nn.Module | None = None,
    steps: int | None = None,
) -> Pruned:
    """Run one pruner (``spec``, looked up by ``toolkit.runner.cell.resolve_pruner``) on a copy of the
    dense model at ``target`` (already in the pruner's measure), in at most ``steps`` training steps
    (default: the prune stage's epochs; see ``toolkit.runner.cell`` on budgets).

    A cost target goes to pruners that handle it themselves; any other
    structured pruner gets the amount (channel rate) that meets it, searched on copies of
    the model; an unstructured one (dense kernels cut no cost) runs at a zero
    fraction equal to the target's value and its row says what it reached.
    A structured result then has its BatchNorm statistics recalibrated
    (``bn_recalibration`` batches), whichever pruner made it.
    """
    pruner = spec.create(options)
    model = copy.deepcopy(dense).to(wb.device)
    steps = wb.prune_steps if steps is None else steps
    total_iters = max(1, steps)
    logger = StageTrainer(wb, wb.trainer("prune", teacher, steps=steps))
    example = wb.example.to(wb.device)

    def recalibrate(pruned: nn.Module, batches: int = wb.settings.bn_recalibration or 10) -> int:
        """The result's recalibration below; a pruner's candidates get it too (10 batches where it is off)."""
        return recalibrate_batchnorm(pruned, wb.batches("bn-recalibration", batches))

    def request(model: nn.Module, amount: float, cost: Target | None, train: StageTrainer = logger) -> PruneRequest:
        return PruneRequest(
            model=model, example_inputs=example, amount=amount, target=cost, train=train,
            evaluate=train.trainer.score, ignored_layers=output_layers(model), recalibrate=recalibrate,
            pruning_steps=wb.settings.pruning_steps, step_interval=max(1, total_iters // wb.settings.pruning_steps),
            seed=wb.seed,
        )

    t0 = time.perf_counter()
    if target.is_cost and spec.kind == "structured" and not spec.cost_targets:
        trials = StageTrainer(wb, wb.trainer("search", teacher))  # trials' training stays out of the curves
        amount, search = _search_black_box(pruner, model, example, target, lambda m, a: request(m, a, None, trials))
        result = check_result(pruner.prune(request(model, amount, None)))
        result.meta = {**result.meta, "search": search}
    else:
        cost = target if (target.is_cost and spec.cost_targets) else None
        result = check_result(pruner.prune(request(model, target.value, cost)))
    recalibrated = 0
    if result.kind == "structured" and not result.from_scratch:  # a model trained from scratch has no stale statistics
        recalibrated = recalibrate(result.model, wb.settings.bn_recalibration)
    return Pruned(result, logger.history, time.perf_counter() - t0, logger.steps, recalibrated)


def _search_black_box(pruner: Any, model: nn.Module, example: torch.Tensor, target: Target,
                      make_request: Callable[[nn.Module, float], PruneRequest]) -> tuple[float, dict[str, Any]]:
    """The amount (channel rate) at which a structured pruner that knows nothing of costs meets a cost target."""
    from toolkit.pruning.targets import find_rate
    from toolkit.results.measure import cost_of

    before = cost_of(target.kind, model, example)

    def reduction_at(amount: float) -> float:
        trial = copy.deepcopy(model)
        pruned = check_result(pruner.prune(make_request(trial, amount))).model
        return reduction(before, cost_of(target.kind, pruned, example))

    amount, reached, trials = find_rate(reduction_at, target.value, max_trials=8)
    return amount, {"target": str(target), "amount": amount, "reached": reached, "trials": trials}


# -- the fine-tune stage ---------------------------------------------------------------------
def recovery_trainer(wb: Workbench, stage: str, model: nn.Module, dense_flops: float,
                     teacher: nn.Module | None = None) -> Trainer:
    """The trainer that recovers a pruned ``model``: the fine-tune's, its peak rate fitted to
    what pruning removed as ``recovery_lr`` says (``by-flops``, ``lr-find``); a ``stage`` other
    than ``finetune`` (a model re-initialised from scratch trains as the dense one did) or a
    ``[run.finetune] lr_max`` takes the stage's settings as they are."""
    rule = wb.settings.train.recovery_lr
    if stage != "finetune" or rule == "scale" or "lr_max" in wb.settings.finetune:
        return wb.trainer(stage, teacher)
    if rule == "by-flops":
        return wb.trainer(stage, teacher, reduction(dense_flops, count_flops(copy.deepcopy(model).cpu(), wb.example)))
    from toolkit.workbench.lr_find import recovery_rate

    trainer = wb.trainer(stage, teacher)
    return trainer.with_lr_max(recovery_rate(model, trainer, wb.settings.train.lr_max))


def finetune_stage(trainer: Trainer, pruned: PruneResult, steps: int, out_dir: Path | None) -> tuple[list[EpochRecord], float]:
    """Fine-tune for ``steps`` steps; unstructured masks are kept so the zeros stay zero."""
    if steps <= 0:  # a recovery budget of 0: measure the pruned model as it is
        return [], 0.0
    t0 = time.perf_counter()
    keeper = None
    if pruned.masks:
        from toolkit.pruning.masking import keep_masks

        keeper = keep_masks(pruned.model, pruned.masks)
    try:
        history = trainer.fit(pruned.model, stage="finetune", out_dir=out_dir, steps=steps)
    finally:
        if keeper is not None:
            keeper.remove()
    return history, time.perf_counter() - t0


def reinitialise(model: nn.Module, seed: int) -> None:
    """Fresh weights for a baseline trained from scratch (every layer's own ``reset_parameters``)."""
    seed_everything(derive(seed, "reinit"))
    for m in model.modules():
        if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            m.reset_parameters()


# -- measurements -----------------------------------------------------------------------------
def describe(model: nn.Module, wb: Workbench, also: Sequence[str] = ()) -> dict[str, Any]:
    """Size, cost, speed and accuracy of one model, as plain numbers.

    Latency is measured on the CPU always (the edge devices this is for) and,
    when the run's device is a GPU, on it too; each is labelled with the
    device's name. Beside eager PyTorch, each of ``latency_runtimes`` (ONNX
    Runtime, OpenVINO; a GPU provider on a GPU run) and of ``also`` (the
    runtime a latency target was met on) gets its own column, or the reason it
    was skipped (``toolkit.results.runtimes``).
    """
    settings = wb.settings
    side = settings.latency_size or settings.image_size
    x = torch.randn(1, 3, side, side)
    on_cpu = copy.deepcopy(model).cpu()
    cpu = measure_latency(on_cpu, x, runs=settings.latency_runs, threads=settings.latency_threads)
    stats: dict[str, Any] = {
        "params": count_parameters(model),
        "flops": count_flops(on_cpu, wb.example),
        "zero_fraction": sparsity(model, output_layers(model)),
        "file_bytes": state_dict_bytes(on_cpu),
        "zip_bytes": compressed_bytes(on_cpu),
        "latency_ms": cpu.median_ms,
        "latency_device": f"{device_name(torch.device('cpu'))}, {cpu.threads} thread(s)",
        "latency_input": "x".join(map(str, cpu.input_shape)),
    }
    stats.update(runtime_stats(on_cpu, x, wb, [*settings.latency_runtimes, *also]))
    del on_cpu
    if wb.device.type != "cpu":
        gpu = measure_latency(model.to(wb.device), x, runs=settings.latency_runs)
        stats.update(latency_gpu_ms=gpu.median_ms, latency_gpu_device=device_name(wb.device))
    test = wb.trainer("test").evaluate(model, wb.test_loader())
    stats.update(test_iou=test.mean, test_iou_per_class=test.per_class)
    return stats


def runtime_stats(model: nn.Module, x: torch.Tensor, wb: Workbench, runtimes: Sequence[str]) -> dict[str, Any]:
    """``model``'s (on the CPU) columns on each of ``runtimes`` that runs on the run's device."""
    settings = wb.settings
    wanted = runtimes_on(list(dict.fromkeys(runtimes)), wb.device.type)
    return measure_runtimes(model, x, wanted, settings.latency_threads, settings.latency_runs)


def targeted_runtime(target: Target, options: dict[str, Any]) -> str:
    """The runtime a latency target is met on: the pruner's ``latency_runtime`` option, else eager."""
    return str(options.get("latency_runtime") or "eager") if target.kind == "latency" else "eager"


def time_dense_on(dense: dict[str, Any], model: nn.Module, wb: Workbench, runtime: str) -> dict[str, Any]:
    """The dense stats with ``runtime``'s columns, timed now where the dense stage did not time it
    (a cell's latency target on a runtime the run's ``latency_runtimes`` leaves out)."""
    if runtime == "eager" or column(runtime) in dense or dense.get(f"latency_{runtime}_skipped"):
        return dense
    side = wb.settings.latency_size or wb.settings.image_size
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))  # leaves the global generator alone
    return {**dense, **runtime_stats(copy.deepcopy(model).cpu(), x, wb, [runtime])}


MEASURED = ("params", "flops", "file_bytes", "zip_bytes", "latency_ms", "latency_gpu_ms", "test_iou", "zero_fraction")


def compare_rows(dense: dict[str, Any], pruned: dict[str, Any]) -> dict[str, Any]:
    """Before/after columns and the reductions people report."""
    row: dict[str, Any] = {}
    for key in MEASURED:
        if key in pruned:
            row[f"{key}_dense"] = dense.get(key)
            row[f"{key}_pruned"] = pruned[key]
    row["params_reduction"] = reduction(dense["params"], pruned["params"])
    row["flops_reduction"] = reduction(dense["flops"], pruned["flops"])
    row["latency_speedup"] = dense["latency_ms"] / pruned["latency_ms"] if pruned["latency_ms"] else math.nan
    if pruned.get("latency_gpu_ms") and dense.get("latency_gpu_ms"):
        row["latency_gpu_speedup"] = dense["latency_gpu_ms"] / pruned["latency_gpu_ms"]
        row["latency_gpu_device"] = pruned["latency_gpu_device"]
    row.update(runtime_columns(dense, pruned))
    row["test_iou_change"] = pruned["test_iou"] - dense["test_iou"]
    row["test_iou_per_class_dense"] = dense["test_iou_per_class"]
    row["test_iou_per_class_pruned"] = pruned["test_iou_per_class"]
    row["latency_device"] = pruned["latency_device"]
    row["latency_input"] = pruned["latency_input"]
    return row


def reached(target: Target, row: dict[str, Any], runtime: str = "eager") -> float:
    """What the measured model reached, in the target's own kind; a latency target on ``runtime``
    (the pruner's ``latency_runtime``) on that runtime's columns, NaN where it was not timed."""
    if target.kind == "rate":
        return float(row["channel_rate"])
    if target.kind == "sparsity":
        return float(row["zero_fraction_pruned"])
    if target.kind == "latency" and runtime != "eager":
        before, after = row.get(f"{column(runtime)}_dense"), row.get(f"{column(runtime)}_pruned")
        return reduction(before, after) if before and after else math.nan
    if target.kind == "latency":
        gpu = row.get("latency_gpu_ms_pruned")
        if gpu is not None and row.get("latency_gpu_ms_dense"):
            return reduction(row["latency_gpu_ms_dense"], gpu)
        return reduction(row["latency_ms_dense"], row["latency_ms_pruned"])
    return float(row[f"{target.kind}_reduction"])


def save_examples(model: nn.Module, wb: Workbench, n: int, path: Path) -> None:
    """A few test images, their ground truth and this model's prediction, for the report."""
    if n <= 0 or not len(wb.splits.test):
        return
    items = [wb.splits.test[i] for i in range(min(n, len(wb.splits.test)))]
    x = torch.stack([i[0] for i in items])
    model.eval()
    with torch.no_grad():
        pred = model.to(wb.device)(x.to(wb.device)).argmax(1).cpu()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    image = ((x - lo) / (hi - lo).clamp(min=1e-6) * 255).permute(0, 2, 3, 1).to(torch.uint8)
    np.savez_compressed(path, image=image.numpy(), truth=torch.stack([i[1] for i in items]).numpy().astype(np.uint8),
                        pred=pred.numpy().astype(np.uint8))
