"""Optimisers (``sgd``, ``adamw``) and learning-rate schedules (``cyclic``, ``onecycle``, ``cosine``) by name.

A schedule is built per stage from that stage's own number of steps, so a
fine-tune of 80 steps warms up and decays within its 80 steps. Every schedule
is a ``torch.optim.lr_scheduler`` class, stepped once per training step.

The optimiser is created at ``lr_min``: that is the rate of steps no schedule
drives (a gradual pruner calling the trainer a few steps at a time), as in the
research. ``onecycle`` and ``cosine`` then take the rate up to ``lr_max``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

import torch
from torch import nn
from torch.optim import lr_scheduler

from toolkit.errors import UsageError
from toolkit.named import Names

if TYPE_CHECKING:
    from toolkit.workbench.settings import TrainConfig

OPTIMIZERS: Names[Callable[..., torch.optim.Optimizer]] = Names("optimizer")
SCHEDULES: Names[Callable[..., lr_scheduler.LRScheduler]] = Names("schedule")

# prune-aware dense training: a penalty's gradient added after backward (toolkit.pruning.regularizers)
REGULARIZERS: Names[None] = Names("sparsity_regularizer")
REGULARIZERS.register("none", "no regularisation (default)", None)
REGULARIZERS.register("group_norm", "Torch-Pruning's GroupNormPruner: L2 on every coupled channel group, weakest pushed hardest", None)
REGULARIZERS.register("bn_l1", "Torch-Pruning's BNScalePruner: L1 on every BatchNorm scale (network slimming)", None)
RECOVERY_LRS: Names[None] = Names("recovery_lr")
RECOVERY_LRS.register("scale", "the fine-tune peaks at lr_max x recovery_lr_scale (default)", None)
RECOVERY_LRS.register("by-flops", "recovery_lr_scale at 50% FLOPs removed or less, rising geometrically to 1 (lr_max) "
                                  "at 75% or more", None)
RECOVERY_LRS.register("lr-find", "a short learning-rate range test on the pruned model, capped at lr_max", None)
# where by-flops' scale starts to rise and where it reaches 1: at -50% FLOPs the headline model recovered
# best at 3e-4 (robust's 0.1 x 3e-3), at -75% at 3e-3 (benchmarks/README.md; issue 21)
BY_FLOPS_LOW, BY_FLOPS_HIGH = 0.5, 0.75


def make_optimizer(
    model: nn.Module | Iterable[nn.Parameter], cfg: "TrainConfig", optimizer_cls: type | None = None
) -> torch.optim.Optimizer:
    """``cfg.optimizer`` at ``lr_min``; ``optimizer_cls`` lets NNI pass its traced class of the same kind."""
    params = model.parameters() if isinstance(model, nn.Module) else model
    return OPTIMIZERS.get(cfg.optimizer)(params, cfg, optimizer_cls)


@OPTIMIZERS.register("sgd", "SGD with momentum (the research's; momentum, weight_decay)")
def _sgd(params: Iterable[nn.Parameter], cfg: "TrainConfig", cls: type | None = None) -> torch.optim.Optimizer:
    return (cls or torch.optim.SGD)(params, lr=cfg.lr_min, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw", "AdamW (weight_decay decoupled from the gradient)")
def _adamw(params: Iterable[nn.Parameter], cfg: "TrainConfig", cls: type | None = None) -> torch.optim.Optimizer:
    return (cls or torch.optim.AdamW)(params, lr=cfg.lr_min, weight_decay=cfg.weight_decay)


def warmup_length(cfg: "TrainConfig", total_steps: int) -> int:
    """``warmup_steps``, but never more than half the stage: a short fine-tune must still decay."""
    return max(0, min(cfg.warmup_steps, total_steps // 2))


def make_schedule(optimizer: torch.optim.Optimizer, cfg: "TrainConfig", total_steps: int = 0) -> lr_scheduler.LRScheduler:
    """The schedule ``cfg.schedule`` names, over ``total_steps`` steps of one stage.

    ``cyclic`` ignores ``warmup_steps`` and ``total_steps`` (its rise from
    lr_min is its warm-up), so the research's runs are unchanged. Where the
    length is unknown (0: steps handed out a few at a time to a gradual
    pruner), ``onecycle`` and ``cosine`` cannot be laid out and the rate stays
    at the optimiser's ``lr_min``.
    """
    return SCHEDULES.get(cfg.schedule)(optimizer, cfg, int(total_steps or 0))


@SCHEDULES.register("cyclic", "CyclicLR, triangular between lr_min and lr_max, clr_step steps a half-cycle "
                              "(the research's)")
def _cyclic(optimizer: torch.optim.Optimizer, cfg: "TrainConfig", total: int) -> lr_scheduler.LRScheduler:
    return lr_scheduler.CyclicLR(
        optimizer, base_lr=cfg.lr_min, max_lr=cfg.lr_max, step_size_up=cfg.clr_step, cycle_momentum=False
    )


@SCHEDULES.register("onecycle", "OneCycleLR: warm-up to lr_max over warmup_steps (30% if 0), then cosine down to "
                                "lr_min / 100")
def _onecycle(optimizer: torch.optim.Optimizer, cfg: "TrainConfig", total: int) -> lr_scheduler.LRScheduler:
    if not total:
        return _constant(optimizer)
    warm = warmup_length(cfg, total)
    return lr_scheduler.OneCycleLR(
        # torch's phases end at pct_start * total_steps - 1 and total_steps - 1: the peak falls on step
        # ``warm`` and the floor on the stage's last step
        optimizer, max_lr=cfg.lr_max, total_steps=total + 1,
        pct_start=(warm + 1) / (total + 1) if warm else 0.3, anneal_strategy="cos",
        div_factor=cfg.lr_max / cfg.lr_min, final_div_factor=100.0, cycle_momentum=False,
    )


@SCHEDULES.register("cosine", "linear warm-up from lr_min to lr_max over warmup_steps, then cosine decay to lr_min")
def _cosine(optimizer: torch.optim.Optimizer, cfg: "TrainConfig", total: int) -> lr_scheduler.LRScheduler:
    if not total:
        return _constant(optimizer)
    warm = warmup_length(cfg, total)
    for group in optimizer.param_groups:  # the schedule scales this peak rate
        group["lr"] = group["initial_lr"] = cfg.lr_max
    decay = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warm), eta_min=cfg.lr_min)
    if not warm:
        return decay
    rise = lr_scheduler.LinearLR(optimizer, start_factor=cfg.lr_min / cfg.lr_max, end_factor=1.0, total_iters=warm)
    return lr_scheduler.SequentialLR(optimizer, [rise, decay], milestones=[warm])


def _constant(optimizer: torch.optim.Optimizer) -> lr_scheduler.LRScheduler:
    """A stage of unknown length: the rate stays at the optimiser's ``lr_min``."""
    return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def scale_for_reduction(scale: float, flops_reduction: float) -> float:
    """``recovery_lr = "by-flops"``: the fraction of the training's peak rate a pruned model recovers at.

    A model that lost a little keeps what it learnt at a gentle rate; one that
    lost most of its FLOPs must relearn, at up to the training's own rate.
    ``scale`` (``recovery_lr_scale``) holds up to ``BY_FLOPS_LOW`` removed, 1
    from ``BY_FLOPS_HIGH``, and between them the rate grows geometrically.
    """
    if not 0 < scale <= 1:
        raise UsageError(f"recovery_lr_scale is a factor in (0, 1], got {scale}")
    t = min(1.0, max(0.0, (flops_reduction - BY_FLOPS_LOW) / (BY_FLOPS_HIGH - BY_FLOPS_LOW)))
    return scale ** (1.0 - t)
