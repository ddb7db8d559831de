"""Masks for unstructured pruning: compute them from scores, write them into the
weights, and keep the zeros zero while the model trains on.

Masks are plain boolean tensors keyed by parameter name (``"encoder.conv1.weight"``,
``True`` = keep). Applying one multiplies the weight in place, so the zeros are
real values of an ordinary ``nn.Module``: no wrapper or parametrization is left
to strip before saving, and the ``state_dict`` keeps its keys.
"""
from __future__ import annotations

from typing import Any, Iterable, Literal, Mapping

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from toolkit.errors import PruningError, UsageError
from toolkit.pruning.prunable import prunable_weights

Scope = Literal["global", "layer"]
SCOPES: tuple[str, ...] = ("global", "layer")
Masks = dict[str, torch.Tensor]


def _prune_smallest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask dropping exactly the ``k`` lowest scores.

    Ties at the threshold are broken by position, so the count is exact even
    when many scores are equal (zeros of already-pruned weights, dead units):
    a plain ``score > threshold`` would overshoot the target there.
    """
    n = flat.numel()
    if k <= 0:
        return torch.ones(n, dtype=torch.bool, device=flat.device)
    if k >= n:
        return torch.zeros(n, dtype=torch.bool, device=flat.device)
    threshold = flat.kthvalue(k).values
    drop = flat < threshold
    ties = (flat == threshold).nonzero().flatten()
    drop[ties[: k - int(drop.sum())]] = True
    return ~drop


def masks_from_scores(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    scope: Scope = "layer",
    keep_pruned: Mapping[str, torch.Tensor] | None = None,
) -> Masks:
    """Boolean keep-masks that drop the lowest-scoring ``sparsity`` of the weights.

    ``scope="layer"`` drops that fraction from every tensor (no layer can be
    emptied); ``"global"`` ranks all tensors together (scores must then be
    comparable across layers). ``keep_pruned`` (previous masks) makes the
    masks monotone: what was dropped stays dropped.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise UsageError(f"sparsity must lie in [0, 1], got {sparsity}")
    if scope not in SCOPES:
        raise UsageError(f"scope must be one of {SCOPES}, not {scope!r}")
    ranked = {n: s.detach().float().flatten() for n, s in scores.items()}
    if keep_pruned is not None:
        ranked = {n: s.masked_fill(~keep_pruned[n].flatten().bool(), float("-inf")) for n, s in ranked.items()}
    if scope == "layer":
        keep = {n: _prune_smallest(s, round(s.numel() * sparsity)) for n, s in ranked.items()}
    else:
        flat = torch.cat(list(ranked.values())) if ranked else torch.empty(0)
        split = _prune_smallest(flat, round(flat.numel() * sparsity)).split([s.numel() for s in ranked.values()])
        keep = dict(zip(ranked, split))
    return {n: keep[n].view_as(scores[n]) for n in scores}


def _resolve(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pair each mask with its parameter, checking they belong together."""
    params = dict(model.named_parameters())
    pairs = []
    for name, mask in masks.items():
        if name not in params:
            raise PruningError(f"mask {name!r} names no parameter of this {type(model).__name__}; "
                               "masks must come from a pruning result of the same model")
        p = params[name]
        if mask.shape != p.shape:
            raise PruningError(f"mask {name!r} has shape {tuple(mask.shape)} but the weight is {tuple(p.shape)}")
        pairs.append((p, mask.to(device=p.device, dtype=torch.bool)))
    return pairs


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the masked weights in place: the zeros become real values, ready to save."""
    for p, mask in _resolve(model, masks):
        p.mul_(mask)


def masks_from_zeros(model: nn.Module, ignored: Iterable[nn.Module] = ()) -> Masks:
    """Masks of the weights that are exactly zero now, e.g. after loading a pruned checkpoint."""
    return {n: w.detach() != 0 for n, w in prunable_weights(model, ignored).items()}


def mask_sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of masked-out entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    return sum(int((~m.bool()).sum()) for m in masks.values()) / total if total else 0.0


class MaskKeeper:
    """Keeps masked weights at zero through further training; ``remove()`` stops it.

    It re-applies the masks after every ``optimizer.step()`` of any optimiser
    that holds one of the masked weights (a global post-step hook, so the
    training loop needs no change). Zeroing the gradients instead would not be
    enough: momentum or Adam state gathered before the prune keeps moving a
    freshly pruned weight. The keeper is also an ``after_step(model, i)``
    callable for loops that prefer to call it explicitly.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
        self.pairs = _resolve(model, masks)
        self._ids = {id(p) for p, _ in self.pairs}
        self.apply()
        self._handle = register_optimizer_step_post_hook(self._after_optimizer_step)

    @torch.no_grad()
    def apply(self) -> None:
        for p, mask in self.pairs:
            p.mul_(mask)

    def _after_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if any(id(p) in self._ids for group in optimizer.param_groups for p in group["params"]):
            self.apply()

    def __call__(self, model: nn.Module | None = None, step: int | None = None) -> None:
        self.apply()

    def remove(self) -> None:
        """Stop keeping the masks (the weights keep their current zeros)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> "MaskKeeper":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def keep_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> MaskKeeper:
    """Zero the masked weights now and after every optimiser step until ``.remove()``.

    The fine-tuning loop needs nothing else::

        keeper = keep_masks(result.model, result.masks)
        try:
            trainer.fit(result.model, epochs, "finetune")
        finally:
            keeper.remove()
    """
    return MaskKeeper(model, masks)
