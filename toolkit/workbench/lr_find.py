"""The learning-rate range test (Smith 2015, "Cyclical learning rates for training neural networks").

Train a copy of the model for ``steps`` steps while the learning rate grows
exponentially from ``start_lr`` to ``end_lr``; record the loss, smooth it
(an EMA with bias correction, as fastai does), stop once it diverges (four
times the best smoothed loss, or, for bounded losses such as Dice that cannot
grow fourfold, back above where it started after having fallen), and suggest
a rate. Suggestions are read from a centred smoothing (the EMA run forwards
and then backwards): a causal EMA lags by about 1/(1 - beta) steps, which in
a 100-step sweep over 7 decades is a decade of rate, too late by 10x.

Two rules are computed and both are written; ``suggestion`` is the one
``rule`` names:

- ``steepest`` (default): where the smoothed loss falls fastest per decade of
  rate, up to its minimum: the largest rate at which the model still learns
  in an orderly way.
- ``min/10``: the rate at the smoothed loss's minimum, divided by ten. It
  assumes the loss blows up right after its minimum. With a bounded loss
  (dice+ce) and a normalised network it often plateaus instead, far to the
  right: on thin lines (a tiny U-Net, AdamW) the minimum lay at 0.4 and
  ``min/10`` said 0.04, where training fails, while ``steepest`` said 5e-3,
  close to the 3e-3 that trained best (benchmarks/README.md, "Training recipes").

The probe never touches the model it is given (it trains a deep copy) and puts
torch's random state and the loader's generator back, so the training that
follows is the one it would have been without the probe.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import torch
from torch import nn
from torch.optim.lr_scheduler import ExponentialLR

from toolkit.errors import UsageError
from toolkit.workbench.optim import make_optimizer

if TYPE_CHECKING:
    from toolkit.workbench.training import TrainConfig, Trainer

RULES = ("min/10", "steepest")


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    rule: str
    min_loss_lr: float
    steepest_lr: float
    diverged: bool  # stopped before end_lr because the loss blew up
    optimizer: str
    files: dict[str, str] = field(default_factory=dict)  # plot / json written


def smooth(losses: list[float], beta: float) -> list[float]:
    """EMA with bias correction, so the first values are not pulled towards 0."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def centred(losses: list[float], beta: float) -> list[float]:
    """The EMA forwards then backwards: smooth like the EMA, without its lag."""
    return smooth(smooth(losses, beta)[::-1], beta)[::-1]


def diverging(losses: list[float], smoothed: list[float], factor: float, settle: int = 10) -> bool:
    """Four times the best smoothed loss, or back above the start once it has clearly (by a
    quarter) fallen. The start is the mean of the first ``settle`` raw losses, not the first
    one: with rare classes one batch's loss can be twice the next one's."""
    if len(smoothed) <= settle:
        return False
    best, start, now = min(smoothed), sum(losses[:settle]) / settle, smoothed[-1]
    return now > factor * best or (best < 0.75 * start and now > start)


def suggest(lrs: list[float], smoothed: list[float], skip: int = 3) -> tuple[float, float]:
    """(rate at the minimum / 10, rate of steepest descent before the minimum)."""
    if len(lrs) < 2:
        raise UsageError("the range test needs at least two steps before the loss diverges: lower start_lr or raise steps")
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    logs = [math.log10(v) for v in lrs]
    slopes = [(smoothed[i + 1] - smoothed[i]) / (logs[i + 1] - logs[i]) for i in range(len(lrs) - 1)]
    window = range(min(skip, max(0, best - 1)), max(1, best))
    steepest = min(window, key=slopes.__getitem__) if len(window) else 0
    return lrs[best] / 10, lrs[steepest]


def _batches(data: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches forever from a Trainer's training loader or any iterable of (x, y)."""
    loader: Iterable = data.train_loader if hasattr(data, "train_loader") else data
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise UsageError("the range test got no training batches")


def lr_range_test(
    model: nn.Module,
    trainer_or_loader: "Trainer | Iterable[tuple[torch.Tensor, torch.Tensor]]",
    loss: nn.Module | None = None,
    *,
    cfg: "TrainConfig | None" = None,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    steps: int = 100,
    beta: float = 0.9,
    diverge: float = 4.0,
    rule: str = "steepest",
    out_dir: Path | None = None,
) -> LRFinderResult:
    """Probe a copy of ``model``; the optimiser is ``cfg.optimizer`` (the trainer's config by default).
    The probe runs on the trainer's device (``--device``), else where ``model`` is."""
    from toolkit.workbench.training import TrainConfig

    if rule not in RULES:
        raise UsageError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    if not 0 < start_lr < end_lr or steps < 2:
        raise UsageError(f"need 0 < start_lr < end_lr and steps >= 2, got {start_lr}, {end_lr}, {steps}")
    cfg = cfg or getattr(trainer_or_loader, "cfg", None) or TrainConfig()
    loss = loss or getattr(trainer_or_loader, "loss_fn", None)
    if loss is None:
        raise UsageError("lr_range_test needs a loss (or a Trainer, whose loss it uses)")
    loader = getattr(trainer_or_loader, "train_loader", trainer_or_loader)
    generator = getattr(loader, "generator", None)
    saved = (torch.get_rng_state(), generator.get_state() if generator is not None else None)
    device = getattr(trainer_or_loader, "device", None) or next(model.parameters()).device
    probe = copy.deepcopy(model).to(device).train()
    optimizer = make_optimizer(probe, cfg)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = start_lr
    schedule = ExponentialLR(optimizer, gamma=(end_lr / start_lr) ** (1 / (steps - 1)))
    lrs: list[float] = []
    losses: list[float] = []
    diverged = False
    try:
        batches = _batches(trainer_or_loader)
        for _ in range(steps):
            x, y = (t.to(device) for t in next(batches))
            optimizer.zero_grad(set_to_none=True)
            value = loss(probe(x), y)
            value.backward()
            optimizer.step()
            lrs.append(optimizer.param_groups[0]["lr"])
            losses.append(float(value.detach()))
            if not math.isfinite(losses[-1]) or diverging(losses, smooth(losses, beta), diverge):
                diverged = True
                break
            schedule.step()
    finally:
        torch.set_rng_state(saved[0])
        if generator is not None:
            generator.set_state(saved[1])
    keep = [i for i, v in enumerate(losses) if math.isfinite(v)]
    lrs, losses = [lrs[i] for i in keep], [losses[i] for i in keep]
    smoothed = centred(losses, beta)
    at_min, steepest = suggest(lrs, smoothed)
    result = LRFinderResult(lrs, losses, smoothed, at_min if rule == "min/10" else steepest, rule, at_min * 10,
                            steepest, diverged, cfg.optimizer)
    if out_dir is not None:
        write_result(result, Path(out_dir))
    return result


def write_result(result: LRFinderResult, out_dir: Path) -> None:
    """``lr_find.json`` (every point and both suggestions) and ``lr_find.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    png, js = out_dir / "lr_find.png", out_dir / "lr_find.json"
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(result.lrs, result.losses, color="tab:blue", alpha=0.3, lw=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", label="smoothed")
    ax.axvline(result.suggestion, color="tab:red", label=f"suggestion {result.suggestion:.2g} ({result.rule})")
    other = result.steepest_lr if result.rule == "min/10" else result.min_loss_lr / 10
    ax.axvline(other, color="tab:grey", ls=":", label=f"{'steepest' if result.rule == 'min/10' else 'min/10'} {other:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate ({result.optimizer})")
    ax.set_ylabel("training loss")
    low, high = min(result.smoothed), max(result.smoothed[: max(1, len(result.smoothed) // 2)] + [min(result.smoothed)])
    ax.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.3 * (high - low + 1e-9))
    ax.legend(fontsize=8)
    ax.set_title("learning-rate range test")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    result.files = {"plot": str(png), "json": str(js)}
    js.write_text(json.dumps(asdict(result), indent=2))


RECOVERY_SWEEP = (1e-4, 10.0, 50)  # start and end as fractions of the ceiling, steps: 5 decades, 10 steps each


def recovery_rate(model: nn.Module, trainer: "Trainer", ceiling: float) -> float:
    """``recovery_lr = "lr-find"``: the peak rate a pruned ``model`` recovers at, from a short range test.

    The sweep runs from ``ceiling / 1e4`` to ``10 x ceiling`` so a divergence
    past the cap is seen; the suggestion (``steepest``) is then held within
    ``[trainer.cfg.lr_min, ceiling]``: a pruned model is recovered, never
    trained harder than the dense one was (``ceiling`` is its ``lr_max``).
    """
    low, high, steps = RECOVERY_SWEEP
    found = lr_range_test(model, trainer, start_lr=ceiling * low, end_lr=ceiling * high, steps=steps).suggestion
    return min(ceiling, max(trainer.cfg.lr_min, found))
