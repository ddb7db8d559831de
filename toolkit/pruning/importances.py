"""Channel criteria for structured pruning: how important is each output channel.

The criterion is one of three separate things (criterion, algorithm, graph
surgery; see ``toolkit.pruning.surgery``). Each criterion here is a Torch-Pruning
``Importance``: called with a dependency *group* (every layer that must lose
the same channels), it returns one score per channel of the group's root
layer; the lowest scores are removed.

All criteria look at the same thing, the **output filters** of the conv and
linear layers whose output channels the group removes (a filter is the slice
``weight[c]`` that produces channel ``c``). Coupled layers (a residual sum, a
squeeze-excitation gate) are averaged after each layer's scores are divided by
their mean, so a large layer does not outvote a small one; the result is
divided by its mean again so global ranking can compare groups.

* ``l1`` / ``l2``: the filter's L1 / L2 norm (Li et al., 2017).
* ``fpgm``: the filter's summed Euclidean distance to the other filters of the
  layer (He et al., CVPR 2019); filters near the geometric median are the most
  replaceable, so they score lowest.
* ``taylor``: first-order Taylor estimate of the loss change when the channel is
  removed, ``(sum over the filter of w * dL/dw)**2`` averaged over batches
  (Molchanov et al., CVPR 2019). Needs gradients: see ``TaylorImportance``.
* ``lamp``: squared L2 norm divided by the sum of the larger ones in the same
  layer (Lee et al., ICLR 2021); only differs from ``l2`` under global ranking.
* ``random``: a seeded random baseline.
* ``MaskImportance``: not a criterion of its own; it turns another tool's
  channel masks (NNI's structured pruners) into scores, so our surgery can
  remove those channels physically.

Why our own FPGM: Torch-Pruning 1.6's ``FPGMImportance`` crashes on grouped
convolutions (ResNeXt): for a conv's *input* channels it calls
``local_imp.repeat(layer.groups)`` on a 2-D tensor, which ``torch`` rejects
("Number of dimensions of repeat dims can not be smaller than number of
dimensions of tensor"); and repeating the whole transposed weight across groups
would mix filters of other groups even if it ran. Scoring output filters only
(as the FPGM paper does) never needs that: ``weight[c]`` of a grouped conv is a
well-formed ``(in/groups, k, k)`` filter, and Torch-Pruning's pruner then makes
the removed positions identical in every group.
"""
from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from toolkit.errors import PruningError
from toolkit.pruning.prunable import out_channels

def _removes_outputs(dep) -> bool:
    """The dependency removes output channels of its layer (conv, linear, norm: Torch-Pruning's
    ``prune_out_channels``; a depthwise conv's inputs are its outputs)."""
    return getattr(dep.handler, "__name__", "") == "prune_out_channels"


def output_filters(layer: nn.Module, tensor: torch.Tensor | None = None) -> torch.Tensor:
    """``(out_channels, fan_in)`` view of a conv/linear weight (or of its gradient)."""
    w = layer.weight if tensor is None else tensor
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        groups = layer.groups
        # (in, out/g, k...) -> (out, in/g, k...): output channel o lives in group o // (out/g).
        w = w.unflatten(0, (groups, -1)).transpose(1, 2).flatten(0, 1)
    return w.detach().flatten(1)


class ChannelImportance(tp.importance.Importance):
    """Base of channel criteria: score each layer of a group that loses output channels.

    A subclass implements ``layer_scores(layer, idxs)`` for the layer types in
    ``layer_types`` (conv and linear by default; a BN-scale criterion would
    set ``(nn.BatchNorm2d,)``). Scores of coupled layers are averaged after
    each is divided by its mean (``normalize``), so a big layer does not
    outvote a small one and global ranking can compare groups. A layer that
    returns NaN abstains; a group no layer scores stays whole.

    A criterion that reads gradients sets ``needs_gradients = True`` and
    implements ``reset()`` (forget what was gathered) and ``accumulate(model)``
    (called after each backward pass, the weights' ``.grad`` filled): before
    each prune the core calls ``reset()`` then runs ``taylor_steps`` backward
    passes with a zero learning rate.
    """

    normalize = True
    needs_gradients = False
    layer_types: tuple[type, ...] = (nn.modules.conv._ConvNd, nn.Linear)

    def layer_scores(self, layer: nn.Module, idxs: list[int]) -> torch.Tensor:
        """One score per channel in ``idxs`` of ``layer`` (higher = keep)."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        n = len(group[0].idxs)
        total = torch.zeros(n, dtype=torch.float64)
        count = torch.zeros(n, dtype=torch.float64)
        for item in group:
            dep, idxs = item.dep, list(item.idxs)
            layer = dep.target.module
            if not _removes_outputs(dep) or not isinstance(layer, self.layer_types):
                continue
            root = item.root_idxs
            if not idxs or root is None or any(r is None for r in root):
                continue
            scores = self.layer_scores(layer, idxs).to(torch.float64).cpu()
            if bool(scores.isnan().any()):
                continue  # this layer has no say
            if self.normalize:
                scores = scores / scores.mean().clamp_min(1e-12)
            at = torch.as_tensor(list(root), dtype=torch.long)
            total.scatter_add_(0, at, scores)
            count.scatter_add_(0, at, torch.ones_like(scores))
        covered = count > 0
        if not bool(covered.any()):
            return None
        imp = total / count.clamp_min(1.0)
        imp[~covered] = imp[covered].max()  # no layer scored these: no reason to remove them first
        if self.normalize:
            imp = imp / imp.mean().clamp_min(1e-12)
        return imp.float()


class NormImportance(ChannelImportance):
    """``l1`` / ``l2``: the Lp norm of each output filter."""

    def __init__(self, p: int = 2) -> None:
        self.p = p

    def layer_scores(self, layer: nn.Module, idxs: list[int]) -> torch.Tensor:
        return output_filters(layer)[idxs].norm(p=self.p, dim=1)


class GeometricMedianImportance(ChannelImportance):
    """``fpgm``: summed distance of each filter to the layer's other filters.

    Distances are taken among the filters in ``idxs`` (all channels when the
    pruner scores a group), on the raw weights as in the paper.
    """

    def layer_scores(self, layer: nn.Module, idxs: list[int]) -> torch.Tensor:
        w = output_filters(layer)[idxs].float()
        # the matrix-product form is much faster than the exact one; float rounding only matters for near-ties
        return torch.cdist(w, w, compute_mode="use_mm_for_euclid_dist").sum(1)


class LAMPImportance(ChannelImportance):
    """``lamp``: layer-adaptive magnitude scores, comparable across layers by construction."""

    normalize = False

    def layer_scores(self, layer: nn.Module, idxs: list[int]) -> torch.Tensor:
        s = output_filters(layer)[idxs].double().pow(2).sum(1)
        order = torch.argsort(s)
        sorted_s = s[order]
        # sum of the scores >= each one: reverse cumulative sum over the ascending order
        tail = torch.flip(torch.cumsum(torch.flip(sorted_s, [0]), 0), [0])
        lamp = torch.empty_like(s)
        lamp[order] = sorted_s / tail.clamp_min(1e-12)
        return lamp


class RandomImportance(ChannelImportance):
    """``random``: a baseline any criterion should beat; seeded, so runs repeat."""

    normalize = False

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def layer_scores(self, layer: nn.Module, idxs: list[int]) -> torch.Tensor:
        return torch.rand(len(idxs), generator=self.generator)


class TaylorImportance(ChannelImportance):
    """``taylor``: needs gradients, so it is fed before each pruning step.

    Call ``reset()``, then ``accumulate(model)`` after each backward pass (it is
    the ``after_backward`` callback of a ``StepTrainer``); scores are the mean
    over those batches of ``(sum over filter of w * grad)**2``.
    """

    needs_gradients = True

    def __init__(self) -> None:
        self._sums: dict[nn.Module, torch.Tensor] = {}
        self.batches = 0

    def reset(self) -> None:
        self._sums = {}
        self.batches = 0

    @torch.no_grad()
    def accumulate(self, model: nn.Module) -> None:
        for m in model.modules():
            if not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) or m.weight.grad is None:
                continue
            contrib = (output_filters(m) * output_filters(m, m.weight.grad)).sum(1)
            if m.bias is not None and m.bias.grad is not None:
                contrib = contrib + m.bias.detach() * m.bias.grad
            contrib = contrib.double().pow(2).cpu()
            previous = self._sums.get(m)
            self._sums[m] = contrib if previous is None or previous.shape != contrib.shape else previous + contrib
        self.batches += 1

    def layer_scores(self, layer: nn.Module, idxs: list[int]) -> torch.Tensor:
        if self.batches == 0:
            raise PruningError("taylor needs gradients: give the request a trainer (request.train) so a few backward passes can run")
        sums = self._sums.get(layer)
        if sums is None or sums.numel() != out_channels(layer):
            return torch.zeros(len(idxs))  # no gradient reached this layer: it does not affect the loss
        return sums[idxs] / self.batches


class MaskImportance(ChannelImportance):
    """Scores from another tool's channel masks (1 = keep, 0 = prune), e.g. NNI's structured pruners.

    Lets our graph surgery physically remove what that tool chose: a layer's
    masked channels score 0 and go first. Where coupled layers disagree (NNI
    masks each layer of a residual sum on its own) the score is the fraction
    of coupled layers that keep the channel, so channels most of them drop go
    first. Groups without any masked layer score ``None`` and stay whole.
    """

    normalize = False

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        modules = dict(model.named_modules())
        unknown = sorted(set(masks) - set(modules))
        if unknown:
            raise PruningError(f"masks name layers the model does not have: {', '.join(unknown[:5])}")
        self.keep = {modules[name]: mask.detach().float().cpu() for name, mask in masks.items()}

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        if not any(dep.target.module in self.keep for dep, _ in group):
            return None
        return super().__call__(group)

    def layer_scores(self, layer: nn.Module, idxs: list[int]) -> torch.Tensor:
        keep = self.keep.get(layer)
        if keep is None or keep.numel() != out_channels(layer):
            return torch.full((len(idxs),), float("nan"))  # no say: left out of the average
        return keep[idxs]


def channel_mask(weight_mask: torch.Tensor) -> torch.Tensor:
    """Output-channel keep mask from a weight mask: a channel lives if any of its weights does."""
    return weight_mask.detach().flatten(1).ne(0).any(1)
