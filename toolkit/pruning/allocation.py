"""How many channels each layer keeps: rounding and global ranking that meet a cost target.

Torch-Pruning decides a layer's kept count itself, in two ways that hurt us:

* ``round_to`` rounds every kept count *down* (``BasePruner._round_to``), in
  units that mix channel groups and channels, so a thin layer at 14 channels
  drops to 8 (and one below a multiple is emptied or left whole), and the rate
  search then lowers the rate of every other layer to make up for it;
* global ranking (one importance threshold over all layers) has no notion of
  cost: the FLOPs it removes are not monotone in its rate (a layer that would
  be emptied is left whole), it can leave a layer with one channel, and it
  ignores ``max_rate``.

Here the toolkit chooses every group's kept count (``Allocator``) and hands it
to Torch-Pruning as exact per-layer rates (its ``pruning_ratio_dict``); local
ranking inside each group then picks *which* channels go, by the criterion.

* **Rounding** keeps the *nearest* multiple of ``round_to`` (at least one
  multiple, at most the layer's width; a layer whose width is not a multiple
  stays whole or takes a multiple), so no layer is rounded more than half a
  multiple away from its share.
* **Global ranking** keeps the channels above one importance threshold, with
  a floor per layer: one multiple (one channel per channel group), and
  ``1 - max_rate`` of its width.
* **Cost targets** are met on a cost model: each conv/linear layer's cost is
  its dense cost times the kept fractions of its output and input channels
  (exact for FLOPs and weights). The threshold (or rate) is bisected on that
  model; the last step between two allocations is spent on the groups where a
  step removes the least importance per unit of cost, and where coarse groups
  make that step jump over the goal, the rest is spent one multiple at a time
  the same way (``Allocator.fill``). The allocation is then
  pruned on a copy and measured for real (thop, parameters, or whatever
  ``measure`` does), and the goal given to the model is corrected until the
  real reduction meets the target.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from toolkit.errors import PruningError
from toolkit.pruning.surgery import PRUNABLE, ChannelSurgery, forward_prunable

Allocation = dict[str, int]  # group root layer name -> kept output channels
PRECISION = 0.001  # a modelled reduction this near its goal needs no finer allocation


@dataclass
class ChannelGroup:
    """Coupled layers that lose the same channels, named by their root layer."""

    root: str
    channels: int
    unit: int  # channel groups (GroupNorm, grouped conv): every group keeps the same count
    scores: np.ndarray  # the criterion's score per channel of one channel group
    quantum: int  # kept counts are multiples of this (or the whole width)
    floor: int  # the fewest channels it may keep

    def snap(self, want: float) -> int:
        """The allowed count nearest to ``want``: a multiple of the quantum in [floor, channels], or all."""
        if self.floor >= self.channels:
            return self.channels
        kept = math.floor(want / self.quantum + 0.5) * self.quantum
        return int(min(self.channels, max(self.floor, kept)))

    def loss(self, kept_from: int, kept_to: int) -> float:
        """Share of the group's importance lost going from ``kept_from`` to ``kept_to`` channels."""
        order = np.sort(self.scores)[::-1]  # most important first: those are kept
        total = float(order.sum()) or 1.0
        return float(order[kept_to // self.unit: kept_from // self.unit].sum()) / total


@dataclass
class CostModel:
    """Cost of the prunable layers as a function of each group's kept fraction (one array per layer)."""

    dense: np.ndarray  # each layer's dense cost that scales with its channels
    fixed: np.ndarray  # each layer's cost that does not (a runtime's per-op overhead)
    outs: np.ndarray  # layers x groups: output channels a group provides
    ins: np.ndarray  # layers x groups: input channels a group provides
    out_total: np.ndarray
    in_total: np.ndarray
    depthwise: np.ndarray  # bool: cost follows the output fraction only

    def cost(self, fractions: np.ndarray) -> float:
        fo = (self.out_total - self.outs.sum(1) + self.outs @ fractions) / self.out_total
        fi = (self.in_total - self.ins.sum(1) + self.ins @ fractions) / self.in_total
        return float((self.fixed + self.dense * fo * np.where(self.depthwise, 1.0, fi)).sum())

    def reduction(self, fractions: np.ndarray) -> float:
        return 1.0 - self.cost(fractions) / self.cost(np.ones_like(fractions))


LayerCosts = Callable[[nn.Module, torch.Tensor], dict[nn.Module, tuple[float, float]]]


def layer_costs(model: nn.Module, x: torch.Tensor, kind: str) -> dict[nn.Module, tuple[float, float]]:
    """(fixed, scaling) cost of each conv/linear: thop's multiply-accumulates, or its weights for ``params``."""
    if kind == "params":
        return {m: (0.0, float(m.weight.numel())) for m in model.modules() if isinstance(m, PRUNABLE)}
    return {m: (0.0, macs) for m, macs in layer_macs(model, x).items()}


def layer_macs(model: nn.Module, x: torch.Tensor) -> dict[nn.Module, float]:
    """thop's multiply-accumulates of each conv/linear for one forward pass on ``x``."""
    costs: dict[nn.Module, float] = {}

    def hook(m: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        per_output = m.in_features if isinstance(m, nn.Linear) else m.in_channels // m.groups * math.prod(m.kernel_size)
        costs[m] = costs.get(m, 0.0) + float(out.numel() // out.shape[0]) * per_output

    forward_prunable(model, x, hook)
    return costs


class Allocator:
    """The groups of one model and what keeping channels in each costs; allocations by rate or threshold.

    ``round_to`` and ``max_rate`` set each group's quantum and floor. Built on a
    copy of the model (and of the importance, so per-layer state stays attached).
    ``costs`` replaces the cost of each layer (default: ``layer_costs`` of ``kind``),
    e.g. a table of latencies measured on a runtime (``toolkit.pruning.latency_table``).
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, importance: tp.importance.Importance, *,
                 kind: str = "flops", round_to: int | None = None, max_rate: float | None = None,
                 ignored_layers: list[nn.Module] | tuple = (), keep_residual: bool = False,
                 costs: LayerCosts | None = None) -> None:
        probe, imp, probe_ignored = copy.deepcopy((model, importance, list(ignored_layers)))
        surgery = ChannelSurgery(probe, example_inputs, 0.0, imp, ignored_layers=probe_ignored,
                                 keep_residual=keep_residual)
        pruner, graph = surgery.pruner, surgery.pruner.DG
        names = {m: n for n, m in probe.named_modules()}
        layers = [m for m in probe.modules() if isinstance(m, PRUNABLE)]
        row = {m: i for i, m in enumerate(layers)}
        self.groups: list[ChannelGroup] = []
        outs: list[dict[int, int]] = [{} for _ in layers]
        ins: list[dict[int, int]] = [{} for _ in layers]
        for group in graph.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types):
            if not pruner._check_pruning_ratio(group):
                continue
            unit = pruner._get_channel_groups(group)
            scores = pruner.estimate_importance(group)
            if scores is None:
                continue
            scores = scores.detach().double().cpu().view(unit, -1).mean(0).numpy()
            channels = len(scores) * unit
            quantum = math.lcm(unit, round_to or 1)
            floor = min(channels, max(quantum, math.ceil(channels * (1.0 - (max_rate or 1.0)) / quantum) * quantum))
            g = len(self.groups)
            self.groups.append(ChannelGroup(names[group[0].dep.target.module], channels, unit, scores, quantum, floor))
            for dep, idxs in group:
                target = dep.target.module
                if target not in row:
                    continue
                side = outs if graph.is_out_channel_pruning_fn(dep.handler) else ins if graph.is_in_channel_pruning_fn(dep.handler) else None
                if side is not None:
                    side[row[target]][g] = max(side[row[target]].get(g, 0), len(idxs))
        per_layer = (costs or (lambda m, x: layer_costs(m, x, kind)))(probe, example_inputs)
        n = len(self.groups)

        def matrix(sides: list[dict[int, int]]) -> np.ndarray:
            out = np.zeros((len(layers), n))
            for i, side in enumerate(sides):
                for g, c in side.items():
                    out[i, g] = c
            return out

        self.model = CostModel(
            dense=np.array([per_layer.get(m, (0.0, 0.0))[1] for m in layers]),
            fixed=np.array([per_layer.get(m, (0.0, 0.0))[0] for m in layers]),
            outs=matrix(outs), ins=matrix(ins),
            out_total=np.array([float(m.out_features if isinstance(m, nn.Linear) else m.out_channels) for m in layers]),
            in_total=np.array([float(m.in_features if isinstance(m, nn.Linear) else m.in_channels) for m in layers]),
            depthwise=np.array([isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels for m in layers]),
        )
        # global ranking: every channel's score once, so a rate t means "the lowest t of all channels"
        self._ranked = np.sort(np.concatenate([np.repeat(g.scores, g.unit) for g in self.groups])) if n else np.zeros(0)

    # -- allocations -------------------------------------------------------------------------------
    def uniform(self, rate: float) -> Allocation:
        """Every group keeps its nearest allowed count to ``(1 - rate)`` of its width."""
        return {g.root: g.snap(g.channels * (1.0 - rate)) for g in self.groups}

    def ranked(self, rate: float) -> Allocation:
        """Global ranking: channels scored above the threshold that removes ``rate`` of all channels."""
        if not len(self._ranked):
            return {}
        position = min(len(self._ranked) - 1, max(0, int(rate * len(self._ranked)) - 1))
        threshold = self._ranked[position] if rate > 0 else -math.inf
        return {g.root: g.snap(float((g.scores > threshold).sum()) * g.unit) for g in self.groups}

    def removed(self, allocation: Allocation) -> float:
        """Fraction of the groups' channels an allocation removes (a group's channels counted once)."""
        total = sum(g.channels for g in self.groups)
        return 1.0 - sum(allocation.values()) / total if total else 0.0

    def smallest(self) -> Allocation:
        return {g.root: g.floor for g in self.groups}

    def fractions(self, allocation: Allocation) -> np.ndarray:
        return np.array([allocation[g.root] / g.channels for g in self.groups])

    def reduction(self, allocation: Allocation) -> float:
        """The cost model's reduction for an allocation."""
        return self.model.reduction(self.fractions(allocation)) if self.groups else 0.0

    def rate_dict(self, allocation: Allocation) -> dict[str, float]:
        """Per-layer rates that make Torch-Pruning keep exactly ``allocation``'s counts.

        Torch-Pruning keeps ``int(width * (1 - rate))`` per channel group, so the
        rate aims half a channel above the count to survive float rounding.
        """
        rates = {}
        for g in self.groups:
            per_unit, kept = g.channels // g.unit, allocation[g.root] // g.unit
            rates[g.root] = 0.0 if kept >= per_unit else 1.0 - (kept + 0.5) / per_unit
        return rates

    # -- meeting a goal on the cost model ------------------------------------------------------------
    def closest(self, family: Callable[[float], Allocation], goal: float) -> tuple[float, Allocation]:
        """The allocation of ``family`` (monotone in its rate) whose modelled reduction is nearest ``goal``.

        Bisects the rate to the two allocations either side of the goal, then
        walks from the lower to the higher one group at a time, cheapest in
        importance per unit of cost saved first, and keeps the nearest step.
        """
        lo, hi = 0.0, 1.0
        for _ in range(48):
            mid = (lo + hi) / 2
            if self.reduction(family(mid)) < goal:
                lo = mid
            else:
                hi = mid
        below, above = family(lo), family(hi)
        base = self.fractions(below)
        cost0 = self.model.cost(base)

        def efficiency(g: int, group: ChannelGroup) -> float:
            step = base.copy()
            step[g] = above[group.root] / group.channels
            saved = cost0 - self.model.cost(step)
            return group.loss(below[group.root], above[group.root]) / max(saved, 1e-12)

        moves = sorted((efficiency(i, g), g.root) for i, g in enumerate(self.groups) if below[g.root] != above[g.root])
        best, current, short = below, dict(below), below
        for _, root in moves:
            current = {**current, root: above[root]}
            if self.reduction(current) < goal:
                short = current
            if abs(self.reduction(current) - goal) < abs(self.reduction(best) - goal):
                best = current
        if abs(self.reduction(best) - goal) > PRECISION:  # coarse groups: the walk jumped over the goal
            filled = self.fill(short, goal)
            if abs(self.reduction(filled) - goal) < abs(self.reduction(best) - goal):
                best = filled
        return hi, best

    def lower(self, group: ChannelGroup, kept: int) -> int | None:
        """The next allowed count below ``kept`` (one multiple less), or None at the group's floor."""
        step = (kept - 1) // group.quantum * group.quantum  # from a width that is not a multiple: the one below
        return step if group.floor < group.channels and step >= group.floor else None

    def fill(self, start: Allocation, goal: float) -> Allocation:
        """From ``start`` (short of ``goal``), remove one multiple at a time where it costs least.

        Rounding makes neighbouring allocations of a family far apart where a
        group is coarse (FPN's summed GroupNorm blocks at ``round_to=16`` keep
        32, 64, 96 or 128 channels: 1.8 points of FLOPs a step). Like a
        knapsack filled greedily, each step takes the move that loses the
        least importance per unit of cost saved among those that stay short
        of the goal, so the budget goes where a multiple is cheapest (wide
        layers; a thin layer loses much of its importance per multiple). When
        no move stays short, the nearest of the last allocation and the moves
        that cross the goal is kept.
        """
        current = dict(start)
        while True:
            fractions = self.fractions(current)
            cost0, dense = self.model.cost(fractions), self.model.cost(np.ones_like(fractions))
            short, crossing = [], []
            for i, g in enumerate(self.groups):
                to = self.lower(g, current[g.root])
                if to is None:
                    continue
                step = fractions.copy()
                step[i] = to / g.channels
                cost = self.model.cost(step)
                if cost >= cost0:
                    continue
                move = (g.loss(current[g.root], to) / (cost0 - cost), g.root, to, 1.0 - cost / dense)
                (short if move[3] < goal else crossing).append(move)
            if not short:
                ends = [current, *({**current, root: to} for _, root, to, _ in crossing)]
                return min(ends, key=lambda a: abs(self.reduction(a) - goal))
            _, root, to, _ = min(short)
            current = {**current, root: to}


def pruned_copy(model: nn.Module, example_inputs: torch.Tensor, importance: tp.importance.Importance,
                rate_dict: dict[str, float], *, ignored_layers: list[nn.Module] | tuple = (),
                keep_residual: bool = False) -> nn.Module:
    """A copy of ``model`` pruned to ``rate_dict``; the importance and ignored layers are copied with it,
    so per-layer state (Taylor sums keyed by layer) stays attached to the copy. ``model`` is untouched."""
    trial, imp, ignored = copy.deepcopy((model, importance, list(ignored_layers)))
    ChannelSurgery(trial, example_inputs, 0.0, imp, ignored_layers=ignored, keep_residual=keep_residual,
                   rate_dict=rate_dict).step()
    return trial


class Unreachable(PruningError):
    """A cost target the allowed widths cannot meet; ``reached`` is the nearest they came."""

    def __init__(self, reached: float, message: str) -> None:
        super().__init__(message)
        self.reached = reached


def meet_cost(
    allocator: Allocator,
    family: Callable[[float], Allocation],
    goal: float,
    measure: Callable[[Allocation], tuple[float, float]],
    *,
    tolerance: float,
    max_trials: int = 5,
) -> tuple[float, Allocation, float, float, list[tuple[float, float]]]:
    """The allocation whose *measured* reduction meets ``goal``, correcting the cost model's goal.

    ``measure(allocation)`` prunes a copy and returns the real reduction and
    its uncertainty (0 for counted costs, the timing noise for a latency). The
    model ignores costs outside conv/linear layers (normalisation, upsampling),
    so its goal is moved by the measured miss until the real one is within
    ``tolerance`` (or its uncertainty, if larger). Returns ``(rate, allocation,
    reached, uncertainty, trials)``; trials are ``(channels removed, reached)``
    pairs, one per allocation measured. Raises ``Unreachable`` when even the smallest allowed
    widths do not reach the goal.
    """
    trials: list[tuple[float, float]] = []
    measured: dict[tuple[int, ...], tuple[float, float]] = {}
    aim, best = goal, None
    for _ in range(max_trials):
        rate, allocation = allocator.closest(family, min(aim, 0.999))
        key = tuple(allocation.values())
        if key not in measured:
            reached, noise = measure(allocation)
            measured[key] = float(reached), float(noise)
            trials.append((allocator.removed(allocation), float(reached)))
        reached, noise = measured[key]
        if best is None or abs(reached - goal) < abs(best[2] - goal):
            best = (rate, allocation, reached, noise)
        if abs(reached - goal) <= max(tolerance, noise):
            break
        if reached < goal and allocation == allocator.smallest():
            raise Unreachable(reached,
                              f"the target cannot be met: with every layer at its smallest allowed width the model loses only "
                              f"{reached:.1%} (asked {goal:.0%}); lower the target, or raise max_rate / lower round_to")
        aim = min(0.999, max(1e-4, aim + (goal - reached)))
    assert best is not None
    return (*best, trials)
