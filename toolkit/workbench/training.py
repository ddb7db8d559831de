"""Training with the corrosion study's settings: Tversky loss, SGD with momentum,
cyclical learning rate, validation IoU every epoch with an EMA for the curves.

Other losses, optimisers and schedules (``losses.py``, ``optim.py``), named
presets of them (``recipes.py``), crops at full resolution
(``data/crops.py``) and the stuck-class warning (``sanity.py``) live in their
own modules; this one only calls them.

``Trainer`` is also the toolkit's ``StepTrainer``: gradual pruners call
``trainer(model, steps, after_backward=..., after_step=...)`` to interleave
their scoring and masking with real optimisation steps.
"""
from __future__ import annotations

import csv
import json
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm.auto import tqdm

from toolkit.errors import UsageError
from toolkit.workbench import optim
from toolkit.workbench.data.crops import RandomCrops
from toolkit.workbench.losses import count_class_pixels, make_loss, needs_pixel_counts
from toolkit.workbench.metrics import IoU, IoUMeter
from toolkit.workbench.sanity import warn_stuck
from toolkit.workbench.sliding_window import sliding_window_logits


@dataclass
class TrainConfig:
    """Defaults are the research's; tests and the demo shrink epochs and steps."""

    batch_size: int = 4
    momentum: float = 0.5
    lr_min: float = 1e-4
    lr_max: float = 1e-2
    clr_step: int = 2000  # iterations from lr_min to lr_max (half a cycle)
    tversky_alpha: float = 0.5
    tversky_beta: float = 0.5
    ema_alpha: float = 0.1
    include_background: bool = False  # in the mean IoU
    max_steps_per_epoch: int | None = None  # cap for quick runs
    sampling: str = "shuffle"  # or "balanced": every stratum (class folder) drawn equally often
    workers: int = 0
    seed: int = 0
    progress: bool = True
    # method settings beyond the research's; recipes.py presets them by name
    recipe: str = "research"  # research | robust: sets the values below, explicit settings override
    loss: str = "tversky"  # tversky, dice, focal, lovasz, ce, or a sum such as "dice+ce"
    loss_weights: dict[str, float] = field(default_factory=dict)  # per term, e.g. {dice = 1.0, ce = 0.5}
    class_weights: list[float] | str = "none"  # for ce/focal: none, auto (inverse-sqrt frequency) or one a class
    optimizer: str = "sgd"  # sgd | adamw
    weight_decay: float = 0.0
    schedule: str = "cyclic"  # cyclic | onecycle | cosine
    warmup_steps: int = 0  # onecycle/cosine: linear rise from lr_min to lr_max
    crop_size: int = 0  # train on random crops of this side (images held at image_size); 0 = whole images
    foreground_crop: float = 0.0  # probability that a crop is centred on a defect pixel
    eval_window: int = 0  # evaluate in overlapping windows of this side; 0 = whole images
    zero_iou_patience: int = 5  # warn when a defect class has 0 validation IoU this many epochs; 0 = never


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def balanced_sampler(dataset: Dataset, generator: torch.Generator) -> WeightedRandomSampler:
    """Draw each stratum (e.g. magnetic tile's class folders) equally often.

    Where 71% of the images are defect-free and defects cover 1% of a defect
    image, uniform batches rarely show a rare class and the loss is content
    to predict background; balancing the draws fixes that without touching
    validation or test, which keep the data's own proportions.
    """
    strata = getattr(dataset, "strata", None)
    if not strata:
        raise UsageError("sampling = 'balanced' needs a dataset that knows its strata (class folders)")
    counts = Counter(strata)
    weights = torch.tensor([1.0 / counts[s] for s in strata], dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples=len(strata), replacement=True, generator=generator)


def make_optimizer(model: nn.Module, cfg: TrainConfig, optimizer_cls: type | None = None) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (SGD with momentum by default); ``optimizer_cls`` lets NNI pass its traced SGD."""
    return optim.make_optimizer(model, cfg, optimizer_cls)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int = 0
) -> torch.optim.lr_scheduler.LRScheduler:
    """``cfg.schedule`` over a stage of ``total_steps`` steps (0: unknown, as for a gradual pruner's steps)."""
    return optim.make_schedule(optimizer, cfg, total_steps)


def ema(values: list[float], alpha: float) -> list[float]:
    """Exponential moving average, ``s_t = alpha * x_t + (1 - alpha) * s_{t-1}``; NaNs are carried over."""
    out: list[float] = []
    for v in values:
        if not out or math.isnan(out[-1]):
            out.append(v)
        elif math.isnan(v):
            out.append(out[-1])
        else:
            out.append(alpha * v + (1 - alpha) * out[-1])
    return out


@dataclass
class EpochRecord:
    stage: str
    epoch: int
    loss: float
    val_iou: float
    val_iou_ema: float
    lr: float
    seconds: float
    val_iou_per_class: list[float] = field(default_factory=list)  # background first; NaN = absent


def run_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    steps: int,
    loss_of: Callable[[nn.Module], torch.Tensor],
    after_backward: Callable[[nn.Module], None] | None = None,
    after_step: Callable[[nn.Module, int], None] | None = None,
) -> None:
    """The StepTrainer loop: where the two callbacks fall relative to backward and step
    (``toolkit.contract.StepTrainer``), for any loss."""
    model.train()
    for i in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_of(model).backward()
        if after_backward:
            after_backward(model)
        optimizer.step()
        if after_step:
            after_step(model, i)


class Trainer:
    """Owns the data loaders, loss and optimiser settings of one run."""

    def __init__(
        self, train_set: Dataset, val_set: Dataset, num_classes: int, cfg: TrainConfig, *,
        class_names: list[str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.class_names = class_names
        counts = count_class_pixels(train_set, num_classes) if needs_pixel_counts(cfg) else None
        self.loss_fn = make_loss(cfg, counts, num_classes)
        if cfg.crop_size:
            train_set = RandomCrops(train_set, cfg.crop_size, cfg.foreground_crop)
        g = torch.Generator().manual_seed(cfg.seed)
        sampler = balanced_sampler(train_set, g) if cfg.sampling == "balanced" else None
        self.train_loader = DataLoader(
            train_set, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler, generator=g,
            drop_last=len(train_set) > cfg.batch_size, num_workers=cfg.workers,
        )
        self.val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers)
        self._batches: Iterator | None = None
        self._optimizer: tuple[nn.Module, tuple, torch.optim.Optimizer] | None = None

    # -- one step at a time (the StepTrainer protocol) -------------------------
    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._batches is None:
            self._batches = iter(self.train_loader)
        try:
            return next(self._batches)
        except StopIteration:
            self._batches = iter(self.train_loader)
            return next(self._batches)

    def __call__(
        self,
        model: nn.Module,
        steps: int,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        after_backward: Callable[[nn.Module], None] | None = None,
        after_step: Callable[[nn.Module, int], None] | None = None,
    ) -> None:
        def loss_of(m: nn.Module) -> torch.Tensor:
            x, y = self._next_batch()
            return self.loss_fn(m(x), y)

        run_steps(model, optimizer or self._optimizer_for(model), steps, loss_of, after_backward, after_step)

    def _optimizer_for(self, model: nn.Module) -> torch.optim.Optimizer:
        """One optimiser across calls on the same parameters, so a gradual pruner
        calling us step by step keeps SGD's momentum; a new one once channel
        surgery has replaced the parameters."""
        key = tuple((id(p), p.shape) for p in model.parameters())
        if self._optimizer is None or self._optimizer[0] is not model or self._optimizer[1] != key:
            self._optimizer = (model, key, make_optimizer(model, self.cfg))
        return self._optimizer[2]

    def train_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
        after_backward: Callable[[nn.Module], None] | None = None,
    ) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(model(x), y)
        loss.backward()
        if after_backward:
            after_backward(model)
        optimizer.step()
        return float(loss.detach())

    # -- evaluation --------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader | None = None) -> IoU:
        model.eval()
        meter = IoUMeter(self.num_classes, self.cfg.include_background)
        for x, y in loader or self.val_loader:
            meter.update(sliding_window_logits(model, x, self.cfg.eval_window) if self.cfg.eval_window else model(x), y)
        return meter.compute()

    def score(self, model: nn.Module) -> float:
        """Validation mean IoU: the evaluator pruners use to decide when to stop."""
        return self.evaluate(model).mean

    # -- whole epochs, with checkpoints ------------------------------------------
    def fit(
        self,
        model: nn.Module,
        epochs: int,
        stage: str,
        out_dir: Path | None = None,
        after_step: Callable[[nn.Module, int], None] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> list[EpochRecord]:
        """Train ``epochs`` epochs, validating after each; resumable from ``out_dir``.

        Writes ``{stage}_last.pt`` (model, optimiser, scheduler, history) every
        epoch and ``{stage}_best.pt`` when validation IoU improves, so an
        interrupted stage restarts from its last finished epoch.
        """
        cfg = self.cfg
        optimizer = optimizer or make_optimizer(model, cfg)
        steps_per_epoch = len(self.train_loader)
        if cfg.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
        scheduler = make_scheduler(optimizer, cfg, epochs * steps_per_epoch)
        history: list[EpochRecord] = []
        best = -math.inf
        start = 0
        last_path = out_dir / f"{stage}_last.pt" if out_dir else None
        if last_path and last_path.exists():
            state = torch.load(last_path, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history = [EpochRecord(**h) for h in json.loads(state["history"])]
            best, start = state["best"], state["epoch"]
            torch.set_rng_state(state["rng"])
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            model.train()
            losses = []
            bar = tqdm(range(steps_per_epoch), desc=f"{stage} {epoch + 1}/{epochs}", leave=False, disable=not cfg.progress)
            for i in bar:
                x, y = self._next_batch()
                losses.append(self.train_step(model, optimizer, x, y))
                scheduler.step()
                if after_step:
                    after_step(model, i)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            result = self.evaluate(model)
            val = result.mean
            previous = [h.val_iou for h in history] + [val]
            record = EpochRecord(
                stage, epoch + 1, float(np.mean(losses)) if losses else float("nan"), val,
                ema(previous, cfg.ema_alpha)[-1], optimizer.param_groups[0]["lr"], time.perf_counter() - t0,
                result.per_class,
            )
            history.append(record)
            warn_stuck([h.val_iou_per_class for h in history], cfg.zero_iou_patience, self.class_names, stage, cfg.recipe)
            if out_dir:
                out_dir.mkdir(parents=True, exist_ok=True)
                if not math.isnan(val) and val > best:
                    best = val
                    atomic_save({"model": model.state_dict(), "epoch": epoch + 1, "val_iou": val}, out_dir / f"{stage}_best.pt")
                atomic_save(
                    {
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "best": best,
                        "history": json.dumps([asdict(h) for h in history]), "rng": torch.get_rng_state(),
                    },
                    last_path,
                )
                write_history(history, out_dir / f"{stage}_metrics.csv")
        return history


def atomic_save(obj: object, path: Path) -> None:
    """Write to a temporary file and rename, so an interrupted save never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def write_history(history: list[EpochRecord], path: Path) -> None:
    rows = [asdict(h) for h in history]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["stage"])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
