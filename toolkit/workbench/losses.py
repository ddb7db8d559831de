"""Segmentation losses by name, alone or summed: ``"tversky"``, ``"dice+ce"``, ``"dice+focal"``...

Every term comes from segmentation-models-pytorch (``tversky``, ``dice``,
``focal``, ``lovasz``) or torch (``ce``), takes logits N,C,H,W and class ids
N,H,W, and is weighted by ``loss_weights`` (1.0 where a term is not named).

Region losses (tversky, dice, lovasz) already weigh every class alike, however
few its pixels; pixel losses (ce, focal) average over pixels, where a crack of
1% of the image is 1% of the signal. ``class_weights`` therefore applies to
``ce`` and ``focal`` only: ``"auto"`` computes them from the training masks'
pixel counts, or give one number a class.

Void pixels (a dataset's ``ignore_index``, e.g. VOC's 255) count in no term:
each is built with the dataset's void value, which smp's losses and torch's
cross-entropy leave out of the sums and the averages.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import segmentation_models_pytorch as smp
import torch
from torch import nn

from toolkit.errors import UsageError
from toolkit.named import Names

if TYPE_CHECKING:
    from toolkit.workbench.settings import TrainConfig

LOSSES: Names[Callable[..., nn.Module]] = Names("loss", hint="(combine with '+', e.g. dice+ce)")
WEIGHTED_TERMS = ("ce", "focal")  # the pixel losses, where class weights matter
WEIGHT_RULES = ("auto", "inverse-sqrt", "median-frequency", "none")
MAX_CLASS_WEIGHT = 50.0  # a class with a handful of pixels must not turn the loss into noise


def parse_loss(spec: str) -> list[str]:
    """``"dice+ce"`` -> ``["dice", "ce"]``, or a ``UsageError`` naming the known terms."""
    names = [n.strip().lower() for n in str(spec).split("+")]
    for name in names:
        LOSSES.check(name or spec)
    if len(set(names)) != len(names):
        raise UsageError(f"loss {spec!r} names a term twice; give its weight in loss_weights instead")
    return names


def check_loss_weights(names: Sequence[str], weights: dict[str, float]) -> dict[str, float]:
    """A weight for every term (1.0 unless named); a weight for a term not in the loss is a mistake."""
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise UsageError(f"loss_weights names {', '.join(unknown)}, which the loss {'+'.join(names)!r} does not use")
    out = {n: float(weights.get(n, 1.0)) for n in names}
    if any(w < 0 for w in out.values()) or not any(w > 0 for w in out.values()):
        raise UsageError(f"loss_weights must be >= 0 with at least one > 0, got {out}")
    return out


def class_weights_from_counts(counts: Sequence[int], rule: str = "inverse-sqrt") -> list[float]:
    """Weights a class from its pixel count, scaled so that the average pixel weighs 1.

    ``inverse-sqrt`` (the ``auto`` rule): w_c ~ 1/sqrt(f_c). A crack at 1.4% of
    the pixels weighs 8x the background, enough for the gradient to notice it.
    ``median-frequency`` (Eigen & Fergus 2015): w_c ~ median(f)/f_c, 70x for the
    same crack: false positives cost little, and the crack is over-painted. On
    thin lines (dice+ce, 300 steps, 3 seeds; benchmarks/recipes.py) crack IoU
    was 0.52 with inverse-sqrt, 0.43 unweighted and 0.38 with median-frequency.
    Weights are capped at ``MAX_CLASS_WEIGHT``; a class with no pixel gets the
    largest weight of the others (it cannot be learnt from these masks, and
    must not make the loss blow up).
    """
    c = torch.as_tensor(list(counts), dtype=torch.float64)
    if c.numel() < 2 or c.sum() <= 0:
        raise UsageError("class weights need pixel counts of at least two classes, with some pixels")
    f = c / c.sum()
    present = f > 0
    if rule in ("auto", "inverse-sqrt"):
        raw = torch.where(present, f.clamp(min=1e-12).rsqrt(), torch.zeros_like(f))
    elif rule == "median-frequency":
        raw = torch.where(present, f[present].median() / f.clamp(min=1e-12), torch.zeros_like(f))
    else:
        raise UsageError(f"unknown class-weight rule {rule!r}; known: {', '.join(WEIGHT_RULES)} or a list of numbers")
    w = raw / (f * raw).sum()  # the pixel-weighted mean weight is 1: the loss keeps its scale
    w = w.clamp(max=MAX_CLASS_WEIGHT)
    w[~present] = w[present].max()
    return [float(v) for v in w]


def resolve_class_weights(
    setting: str | Sequence[float] | None, counts: Sequence[int] | None, num_classes: int | None = None
) -> list[float] | None:
    """``"none"`` -> None; ``"auto"``/a rule -> from ``counts``; numbers (or "1,8") -> themselves."""
    if setting is None or (isinstance(setting, str) and setting.strip().lower() in ("", "none")):
        return None
    if isinstance(setting, str) and setting.strip().lower() in WEIGHT_RULES:
        if counts is None:
            raise UsageError(f"class_weights = {setting!r} needs the training masks' class pixel counts")
        return class_weights_from_counts(counts, setting.strip().lower())
    try:
        values = [float(v) for v in (setting.split(",") if isinstance(setting, str) else setting)]
    except ValueError:
        raise UsageError(
            f"class_weights must be {', '.join(WEIGHT_RULES)} or numbers (one a class), got {setting!r}"
        ) from None
    expected = num_classes if num_classes is not None else (len(counts) if counts is not None else None)
    if expected is not None and len(values) != expected:
        raise UsageError(f"class_weights has {len(values)} numbers but the dataset has {expected} classes")
    if any(v < 0 for v in values):
        raise UsageError(f"class_weights must be >= 0, got {values}")
    return values


def count_class_pixels(dataset: torch.utils.data.Dataset, num_classes: int) -> list[int]:
    """Pixels of each class in a dataset's masks (its held masks if it has them, else item by item).

    Only ids ``0..num_classes-1`` are counted: void pixels (a value past the classes) weigh no class."""
    masks = getattr(dataset, "masks", None)
    if isinstance(masks, torch.Tensor):
        return [int(v) for v in torch.bincount(masks.reshape(-1).long(), minlength=num_classes)[:num_classes]]
    total = torch.zeros(num_classes, dtype=torch.long)
    for i in range(len(dataset)):  # type: ignore[arg-type]
        total += torch.bincount(dataset[i][1].reshape(-1).long(), minlength=num_classes)[:num_classes]
    return [int(v) for v in total]


def make_term(
    name: str, cfg: "TrainConfig", class_weights: list[float] | None = None, ignore_index: int | None = None
) -> nn.Module:
    """One loss term by name, multiclass, from logits; pixels whose target is ``ignore_index`` count in none."""
    return LOSSES.get(name)(cfg, class_weights, ignore_index)


@LOSSES.register("tversky", "Tversky (smp): alpha weighs false positives, beta false negatives; 0.5/0.5 is Dice")
def _tversky(cfg: "TrainConfig", class_weights: list[float] | None, ignore_index: int | None) -> nn.Module:
    return smp.losses.TverskyLoss(mode="multiclass", alpha=cfg.tversky_alpha, beta=cfg.tversky_beta,
                                  ignore_index=ignore_index)


@LOSSES.register("dice", "Dice (smp), one score a class over the batch")
def _dice(cfg: "TrainConfig", class_weights: list[float] | None, ignore_index: int | None) -> nn.Module:
    return smp.losses.DiceLoss(mode="multiclass", ignore_index=ignore_index)


@LOSSES.register("focal", "focal (smp), gamma 2: pixel loss that ignores the easy pixels")
def _focal(cfg: "TrainConfig", class_weights: list[float] | None, ignore_index: int | None) -> nn.Module:
    return smp.losses.FocalLoss(mode="multiclass", class_weights=class_weights, ignore_index=ignore_index)


@LOSSES.register("lovasz", "Lovasz-softmax (smp): a smooth surrogate of IoU itself")
def _lovasz(cfg: "TrainConfig", class_weights: list[float] | None, ignore_index: int | None) -> nn.Module:
    return smp.losses.LovaszLoss(mode="multiclass", ignore_index=ignore_index)


@LOSSES.register("ce", "cross-entropy (torch)")
def _ce(cfg: "TrainConfig", class_weights: list[float] | None, ignore_index: int | None) -> nn.Module:
    return nn.CrossEntropyLoss(weight=torch.tensor(class_weights, dtype=torch.float32) if class_weights else None,
                               ignore_index=-100 if ignore_index is None else ignore_index)


class WeightedSum(nn.Module):
    """sum_i weight_i * term_i(logits, target); ``terms`` keeps each one for inspection."""

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(self.weights[n] * term(logits, target) for n, term in self.terms.items())  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g}*{n}" for n, w in self.weights.items())


def make_loss(
    cfg: "TrainConfig", class_pixel_counts: Sequence[int] | None = None, num_classes: int | None = None,
    ignore_index: int | None = None,
) -> nn.Module:
    """The loss ``cfg.loss`` names; a single term with weight 1 is returned bare (the research's Tversky).
    Pixels whose target is ``ignore_index`` (void) count in no term."""
    names = parse_loss(cfg.loss)
    weights = check_loss_weights(names, dict(cfg.loss_weights or {}))
    class_weights = resolve_class_weights(cfg.class_weights, class_pixel_counts, num_classes)
    terms = {n: make_term(n, cfg, class_weights if n in WEIGHTED_TERMS else None, ignore_index) for n in names}
    if len(terms) == 1 and weights[names[0]] == 1.0:
        return terms[names[0]]
    return WeightedSum(terms, weights)


def needs_pixel_counts(cfg: "TrainConfig") -> bool:
    """Whether ``make_loss`` will want the training masks counted (class weights from data)."""
    setting = cfg.class_weights
    return (isinstance(setting, str) and setting.strip().lower() in WEIGHT_RULES[:-1]
            and any(n in WEIGHTED_TERMS for n in parse_loss(cfg.loss)))
