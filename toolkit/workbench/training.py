"""Training with the corrosion study's settings: Tversky loss, SGD with momentum,
cyclical learning rate, validation IoU every epoch (or every ``val_every``) with an EMA for the curves.

``Trainer`` is also the toolkit's ``StepTrainer``: gradual pruners call
``trainer(model, steps, after_backward=..., after_step=...)`` to interleave
their scoring and masking with real optimisation steps.

Other losses, optimisers and schedules (``losses.py``, ``optim.py``), named
presets of them (``recipes.py``), crops at full resolution
(``data/crops.py``) and the stuck-class warning (``sanity.py``) live in their
own modules; this one only calls them.
"""
from __future__ import annotations

import csv
import json
import math
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm.auto import tqdm

from toolkit.atomic import atomic_write
from toolkit.errors import UsageError
from toolkit.workbench.data.crops import RandomCrops
from toolkit.workbench.device import autocast, grad_scaler
from toolkit.workbench.losses import count_class_pixels, make_loss, needs_pixel_counts
from toolkit.workbench.metrics import IoU, IoUMeter
from toolkit.workbench.optim import make_optimizer, make_schedule
from toolkit.workbench.sanity import warn_stuck
from toolkit.workbench.settings import TrainConfig  # noqa: F401 - re-exported: its old home
from toolkit.workbench.sliding_window import sliding_window_logits
from toolkit.workbench.seeding import derive, seed_worker


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


class BoundedSchedule:
    """Steps a schedule at most ``total`` times (0: without end), then holds its last rate.

    Step-wise training (a gradual or iterative pruner calling the trainer a few
    steps at a time) may take a few more steps than the stage was laid out
    for; one-cycle refuses those and cosine would climb again."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler, total: int) -> None:
        self.scheduler, self.total, self.done = scheduler, total, 0

    def step(self) -> None:
        if not self.total or self.done < self.total:
            self.scheduler.step()
            self.done += 1

    def fast_forward(self, steps: int) -> None:
        """Skip ``steps`` steps (no optimiser step between them: torch's order warning is moot)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(steps):
                self.step()


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
    scaler: "torch.amp.GradScaler | None" = None,
    scheduler: "torch.optim.lr_scheduler.LRScheduler | None" = None,
) -> list[float]:
    """The one training loop: where the callbacks fall relative to backward and step
    (``toolkit.contract.StepTrainer``), for any loss. Returns the losses.

    With a ``GradScaler`` the gradients are unscaled before ``after_backward``
    so criteria see true gradients."""
    model.train()
    losses: list[float] = []
    for i in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if after_backward:
            after_backward(model)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
        if after_step:
            after_step(model, i)
    return losses


Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class Trainer:
    """Owns the data loaders, loss, optimiser settings, device and seed of one stage.

    Randomness is derived from ``seed`` alone: epoch ``e`` of stage ``s``
    draws its batches and augmentation from ``derive(seed, s, e)``, so a
    resumed stage repeats exactly what an uninterrupted one would have done.
    ``objective(model, x, y)`` is the loss of one batch; by default the task
    loss, and distillation swaps in its own (``with_objective``).
    ``stage_steps`` lays one-cycle and cosine schedules out over a stage that
    is trained step by step (the prune stage); ``fit`` knows its own length.
    ``cfg.sparsity_regularizer`` acts in ``fit(stage="train")`` alone: the
    dense training, never a recovery.
    ``ignore_index`` is the dataset's void value: in no loss, crop centre or IoU.
    """

    def __init__(
        self,
        train_set: Dataset,
        val_set: Dataset,
        num_classes: int,
        cfg: TrainConfig,
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
        precision: str = "32",
        objective: Objective | None = None,
        class_names: list[str] | None = None,
        stage_steps: int = 0,
        loss_fn: nn.Module | None = None,
        ignore_index: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self.class_names = class_names
        self.seed = seed
        self.device = torch.device(device)
        self.precision = precision
        self.stage_steps = stage_steps
        if loss_fn is None:
            counts = count_class_pixels(train_set, num_classes) if needs_pixel_counts(cfg) else None
            loss_fn = make_loss(cfg, counts, num_classes, ignore_index)
        self.loss_fn = loss_fn.to(self.device)
        self.objective: Objective = objective or (lambda model, x, y: self.loss_fn(model(x), y))
        self.train_set, self.val_set = train_set, val_set
        if cfg.crop_size:
            train_set = RandomCrops(train_set, cfg.crop_size, cfg.foreground_crop, ignore_index)
        self._generator = torch.Generator()
        sampler = balanced_sampler(train_set, self._generator) if cfg.sampling == "balanced" else None
        pin = cfg.pin_memory and self.device.type == "cuda"
        self.train_loader = DataLoader(
            train_set, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler, generator=self._generator,
            drop_last=len(train_set) > cfg.batch_size, num_workers=cfg.workers, pin_memory=pin,
            worker_init_fn=seed_worker, persistent_workers=False,
        )
        self.val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                                     pin_memory=pin)
        self._stream: Iterator | None = None
        self._stream_epoch = 0
        self._optimizer: tuple[nn.Module, tuple, torch.optim.Optimizer, Any] | None = None

    def with_objective(self, objective: Objective) -> "Trainer":
        """The same data and settings with another loss (e.g. distillation from a teacher)."""
        return self._derived(self.cfg, objective)

    def with_lr_max(self, lr_max: float) -> "Trainer":
        """The same trainer peaking at another rate (a recovery rate chosen for the pruned model)."""
        return self._derived(replace(self.cfg, lr_max=lr_max, lr_min=min(self.cfg.lr_min, lr_max)), self.objective)

    def _derived(self, cfg: TrainConfig, objective: Objective) -> "Trainer":
        return Trainer(self.train_set, self.val_set, self.num_classes, cfg, seed=self.seed, device=self.device,
                       precision=self.precision, objective=objective, class_names=self.class_names,
                       stage_steps=self.stage_steps, loss_fn=self.loss_fn, ignore_index=self.ignore_index)

    @property
    def steps_per_epoch(self) -> int:
        n = len(self.train_loader)
        cap = self.cfg.max_steps_per_epoch
        return max(1, min(n, cap) if cap else n)

    # -- data ------------------------------------------------------------------------
    def _epoch_batches(self, stage: str, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch, drawn from the epoch's own seed."""
        seed = derive(self.seed, stage, epoch)
        self._generator.manual_seed(seed)
        torch.manual_seed(seed)  # augmentation and dropout in this process
        return iter(self.train_loader)

    def epoch_batches(self, stage: str, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The training batches of one epoch of ``stage`` (crops, augmentation), seeded as training draws them."""
        return self._epoch_batches(stage, epoch)

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A continuing stream for step-wise training (gradual pruners), reshuffled every pass."""
        if self._stream is None:
            self._stream = self._epoch_batches("steps", self._stream_epoch)
        try:
            return next(self._stream)
        except StopIteration:
            self._stream_epoch += 1
            self._stream = self._epoch_batches("steps", self._stream_epoch)
            return next(self._stream)

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._input(x), y.to(self.device, non_blocking=self.device.type == "cuda")

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device, in the model's memory format."""
        x = x.to(self.device, non_blocking=self.device.type == "cuda")
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last and x.dim() == 4 else x

    def _place(self, model: nn.Module) -> nn.Module:
        """On the device, and in NHWC layout with ``channels_last`` (again after surgery made new weights)."""
        model.to(self.device)
        if self.cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def _release(self, model: nn.Module) -> None:
        """Back to the usual layout once a call is done, so what is measured, pruned or saved
        afterwards (latency above all) is the model as it would be without ``channels_last``."""
        if self.cfg.channels_last:
            model.to(memory_format=torch.contiguous_format)

    def _regularizer(self, model: nn.Module, stage: str) -> Callable[[nn.Module], None] | None:
        """The sparsity regulariser of prune-aware training: the dense training stage only."""
        if stage != "train" or self.cfg.sparsity_regularizer == "none":
            return None
        from toolkit.pruning.regularizers import sparsity_regularizer

        # a fixed input of the data's shape: tracing needs shapes, and drawing a sample would use randomness
        example = torch.zeros_like((self.val_set if len(self.val_set) else self.train_set)[0][0]).unsqueeze(0)
        return sparsity_regularizer(self.cfg.sparsity_regularizer, model, self._input(example),
                                    self.cfg.regularizer_strength)

    def batch_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = self._to_device(x, y)
        with autocast(self.device, self.precision):
            return self.objective(model, x, y)

    # -- one step at a time (the StepTrainer protocol) -------------------------
    def __call__(
        self,
        model: nn.Module,
        steps: int,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        after_backward: Callable[[nn.Module], None] | None = None,
        after_step: Callable[[nn.Module, int], None] | None = None,
    ) -> None:
        self._place(model)
        scheduler = None
        if optimizer is None:
            optimizer, scheduler = self._optimizer_for(model)
        run_steps(model, optimizer, steps, lambda m: self.batch_loss(m, *self._next_batch()), after_backward,
                  after_step, scaler=grad_scaler(self.device, self.precision), scheduler=scheduler)
        self._release(model)

    def _optimizer_for(self, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        """One optimiser and schedule across calls on the same parameters, so a gradual
        pruner calling us step by step keeps SGD's momentum and the cyclical learning
        rate goes on; a new pair once channel surgery has replaced the parameters."""
        key = tuple((id(p), p.shape) for p in model.parameters())
        if self._optimizer is None or self._optimizer[0] is not model or self._optimizer[1] != key:
            # after surgery on the same model the stage's schedule goes on where it was, not from its warm-up
            done = self._optimizer[3].done if self._optimizer is not None and self._optimizer[0] is model else 0
            optimizer = make_optimizer(model, self.cfg)
            schedule = BoundedSchedule(make_schedule(optimizer, self.cfg, self.stage_steps), self.stage_steps)
            schedule.fast_forward(done)
            self._optimizer = (model, key, optimizer, schedule)
        return self._optimizer[2], self._optimizer[3]

    # -- evaluation --------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader | None = None, limit: int | None = None) -> IoU:
        """IoU on ``loader`` (default: the validation split, or ``limit`` images spread evenly over it)."""
        if loader is None and limit is not None and limit < len(self.val_set):
            picks = np.linspace(0, len(self.val_set) - 1, max(1, limit)).round().astype(int).tolist()
            loader = DataLoader(torch.utils.data.Subset(self.val_set, sorted(set(picks))), batch_size=self.cfg.batch_size)
        was_training = model.training
        model.eval()
        self._place(model)
        meter = IoUMeter(self.num_classes, self.cfg.include_background, self.ignore_index)
        for x, y in loader or self.val_loader:
            x, y = self._to_device(x, y)
            with autocast(self.device, self.precision):
                logits = sliding_window_logits(model, x, self.cfg.eval_window) if self.cfg.eval_window else model(x)
            meter.update(logits.float(), y)
        model.train(was_training)
        self._release(model)
        return meter.compute()

    def score(self, model: nn.Module, limit: int | None = None) -> float:
        """Validation mean IoU (on ``limit`` images spread over the split): the evaluator pruners use."""
        return self.evaluate(model, limit=limit).mean

    # -- whole epochs, with checkpoints ------------------------------------------
    def fit(
        self,
        model: nn.Module,
        epochs: int = 0,
        stage: str = "train",
        out_dir: Path | None = None,
        after_step: Callable[[nn.Module, int], None] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        steps: int | None = None,
    ) -> list[EpochRecord]:
        """Train ``epochs`` epochs (or ``steps`` steps, the last epoch shorter), validating
        after every ``val_every``-th and the last; resumable from ``out_dir``.

        Writes ``{stage}_last.pt`` (model, optimiser, scheduler, history) every
        epoch and ``{stage}_best.pt`` when validation IoU improves, so an
        interrupted stage restarts from its last finished epoch and, since each
        epoch draws from its own seed, ends exactly as an uninterrupted one.
        """
        cfg = self.cfg
        self._place(model)
        optimizer = optimizer or make_optimizer(model, cfg)
        per_epoch = self.steps_per_epoch
        scheduler = make_schedule(optimizer, cfg, steps if steps is not None else epochs * per_epoch)
        scaler = grad_scaler(self.device, self.precision)
        history: list[EpochRecord] = []
        best = -math.inf
        start = 0
        last_path = out_dir / f"{stage}_last.pt" if out_dir else None
        if last_path and last_path.exists():
            state = torch.load(last_path, map_location=self.device, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            history = [EpochRecord(**h) for h in json.loads(state["history"])]
            best, start = state["best"], state["epoch"]
        if steps is not None:
            epochs = math.ceil(steps / per_epoch)
        regularize = self._regularizer(model, stage)
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            steps_per_epoch = per_epoch if steps is None else min(per_epoch, steps - epoch * per_epoch)
            batches = self._epoch_batches(stage, epoch)
            self._place(model)  # validation put the usual layout back
            bar = tqdm(total=steps_per_epoch, desc=f"{stage} {epoch + 1}/{epochs}", leave=False, disable=not cfg.progress)

            def one_batch(m: nn.Module) -> torch.Tensor:
                return self.batch_loss(m, *next(batches))

            def step_done(m: nn.Module, i: int) -> None:
                bar.update()
                if after_step:
                    after_step(m, i)

            losses = run_steps(model, optimizer, steps_per_epoch, one_batch, after_backward=regularize,
                               after_step=step_done, scaler=scaler, scheduler=scheduler)
            bar.close()
            # validation draws no randomness and leaves the weights alone, so skipping it
            # (val_every) changes the curves' resolution and the time, not the model
            validate = (epoch + 1) % cfg.val_every == 0 or epoch + 1 == epochs
            result = self.evaluate(model) if validate else None
            val = result.mean if result is not None else float("nan")
            previous = [h.val_iou for h in history] + [val]
            record = EpochRecord(
                stage, epoch + 1, float(np.mean(losses)) if losses else float("nan"), val,
                ema(previous, cfg.ema_alpha)[-1], optimizer.param_groups[0]["lr"], time.perf_counter() - t0,
                list(result.per_class) if result is not None else [],
            )
            history.append(record)
            if result is not None:
                warn_stuck([h.val_iou_per_class for h in history if h.val_iou_per_class], cfg.zero_iou_patience,
                           self.class_names, stage, cfg.recipe)
            if out_dir:
                out_dir.mkdir(parents=True, exist_ok=True)
                if not math.isnan(val) and val > best:
                    best = val
                    atomic_save({"model": model.state_dict(), "epoch": epoch + 1, "val_iou": val}, out_dir / f"{stage}_best.pt")
                atomic_save(
                    {
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "best": best,
                        "history": json.dumps([asdict(h) for h in history]),
                    },
                    last_path,
                )
                write_history(history, out_dir / f"{stage}_metrics.csv")
        self._release(model)
        return history


def atomic_save(obj: object, path: Path) -> None:
    """Write to a temporary file and rename, so an interrupted save never leaves half a file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_history(history: list[EpochRecord], path: Path) -> None:
    rows = [asdict(h) for h in history]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["stage"])
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
