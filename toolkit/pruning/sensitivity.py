"""Sensitivity-aware pruning rates: prune each layer group alone, see what it costs, and
spend a global budget where it hurts least.

**Scan.** For every group of coupled layers (one root conv and everything that
must lose the same channels), the channels the criterion ranks lowest are
silenced at a few rates (25/50/75/90% by default) and the validation score on
a small fixed subset is measured; the drop from the unpruned score is the
group's sensitivity at that rate. Silencing (a forward hook that zeroes those
output channels of every layer in the group, the norm layers included) gives
what removing them gives to everything downstream, without rebuilding the
graph for each trial (GroupNorm statistics differ slightly).

**Allocation.** For a threshold ``lam``, each group gets the largest rate
whose (monotone, interpolated) drop stays within ``lam``, capped by
``max_rate``; ``lam`` is searched until the pruned model meets the target
(a channel rate overall, or a cost such as FLOPs). Insensitive groups are thus
pruned hard and sensitive ones spared, at the same total cost as a uniform rate.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch_pruning as tp
from torch import nn

from toolkit.pruning.importances import _removes_outputs
from toolkit.pruning.surgery import ChannelSurgery
from toolkit.pruning.targets import Target, find_rate

DEFAULT_RATES = (0.25, 0.5, 0.75, 0.9)
FLOOR = 1e-4  # the smallest drop per unit of rate a group is credited with


@dataclass
class Sensitivity:
    """Score drop of each group (by its root layer's name) at each scanned rate."""

    rates: tuple[float, ...]
    baseline: float
    drops: dict[str, list[float]] = field(default_factory=dict)

    def ranking(self) -> list[str]:
        """Group names, most sensitive first (largest drop summed over the rates)."""
        return sorted(self.drops, key=lambda n: -sum(self.drops[n]))

    def rate_at(self, name: str, lam: float, max_rate: float) -> float:
        """The largest rate whose interpolated drop is at most ``lam``.

        Drops are made monotone (removing more cannot help; a smaller drop is
        noise) and at least ``FLOOR * rate``, so groups that showed no drop are
        pruned gradually as ``lam`` rises from 0 rather than all at once.
        """
        points = [(0.0, 0.0)]
        worst = 0.0
        for rate, drop in zip(self.rates, self.drops[name]):
            worst = max(worst, drop, FLOOR * rate)
            points.append((rate, worst))
        best = 0.0
        for (r0, d0), (r1, d1) in zip(points, points[1:]):
            if d1 <= lam:
                best = r1
                continue
            if d0 <= lam < d1:
                best = r0 + (r1 - r0) * (lam - d0) / (d1 - d0)
            break
        return min(best, max_rate)

    def allocate(self, lam: float, max_rate: float) -> dict[str, float]:
        return {name: self.rate_at(name, lam, max_rate) for name in self.drops}


def _silencer(idxs: Sequence[int]) -> Callable[[nn.Module, Any, Any], Any]:
    index = torch.as_tensor(list(idxs), dtype=torch.long)

    def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            return output
        output = output.clone()
        output[:, index.to(output.device)] = 0
        return output

    return hook


def scan(
    model: nn.Module,
    example_inputs: torch.Tensor,
    importance: tp.importance.Importance,
    evaluate: Callable[[nn.Module], float],
    rates: Sequence[float] = DEFAULT_RATES,
    **surgery: Any,
) -> Sensitivity:
    """Measure every group's sensitivity; ``model`` is left as it was (hooks only)."""
    probe = ChannelSurgery(model, example_inputs, 0.0, importance, **surgery)
    graph = probe.pruner.DG
    names = {m: n for n, m in model.named_modules()}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        result = Sensitivity(tuple(rates), float(evaluate(model)))
        _scan_groups(model, graph, probe, importance, evaluate, rates, names, result)
    model.train(was_training)
    return result


def _scan_groups(model: nn.Module, graph: Any, probe: ChannelSurgery, importance: Any,
                 evaluate: Callable[[nn.Module], float], rates: Sequence[float], names: dict, result: Sensitivity) -> None:
    for group in graph.get_all_groups(ignored_layers=probe.pruner.ignored_layers,
                                      root_module_types=probe.pruner.root_module_types):
        root, handler = group[0].dep.target.module, group[0].dep.handler
        scores = importance(group)
        if scores is None or root not in names:
            continue
        order = torch.argsort(scores.detach().cpu()).tolist()
        drops = []
        for rate in rates:
            k = int(rate * len(order))
            if k <= 0:
                drops.append(0.0)
                continue
            k = min(k, len(order) - 1)
            silenced = graph.get_pruning_group(root, handler, order[:k])
            handles = [
                item.dep.target.module.register_forward_hook(_silencer(item.idxs))
                for item in silenced
                if _removes_outputs(item.dep) and isinstance(item.dep.target.module, nn.Module) and item.idxs
            ]
            try:
                drops.append(result.baseline - float(evaluate(model)))
            finally:
                for h in handles:
                    h.remove()
        result.drops[names[root]] = drops


def sensitive_rates(
    model: nn.Module,
    example_inputs: torch.Tensor,
    target: Target,
    sensitivity: Sensitivity,
    importance: tp.importance.Importance,
    measure: Callable[[nn.Module, nn.Module], float],
    max_rate: float = 0.95,
    **surgery: Any,
) -> tuple[dict[str, float], float, list[tuple[float, float]]]:
    """Per-group rates that meet ``target``: the threshold ``lam`` is searched on copies.

    ``measure(before, after)`` says how much of the target's quantity a copy
    pruned with some rates removed. Returns (rates by layer name, reached, trials).
    """
    top = max((max(d) for d in sensitivity.drops.values() if d), default=0.0)
    span = max(top, 1e-6) * 1.001

    def reached_at(t: float) -> float:
        rates = sensitivity.allocate(t * span, max_rate)
        trial, imp = copy.deepcopy((model, importance))
        ChannelSurgery(trial, example_inputs, 0.0, imp, rate_dict=rates, **surgery).step()
        return measure(model, trial)

    t, reached, trials = find_rate(reached_at, target.value, highest=1.0)
    return sensitivity.allocate(t * span, max_rate), reached, trials
