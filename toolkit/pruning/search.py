"""Allocation search: per-layer widths that meet a cost target and keep the most accuracy, in minutes.

A uniform rate takes the same share of every layer, although some layers
cost much accuracy per FLOP and others little. The sensitivity scan
(``toolkit.pruning.sensitivity``) measures that layer by layer, hundreds of
evaluations: it did not finish one cell of the headline model in 9 minutes.
Here a few *whole* allocations are tried instead. Each candidate tilts the
uniform allocation by three knobs, each in ``[-1, 1]``:

* **depth**: late layers pruned harder than early ones (or the reverse);
* **side**: the encoder pruned harder than the decoder (or the reverse);
* **width**: wide layers pruned harder than thin ones (or the reverse).

A group's kept fraction is ``(1 - t) ** w`` with ``w = exp(depth*d + side*s + width*c)``
for its position ``d``, side ``s`` and log-width ``c``; ``t`` is found by the
allocator so the candidate meets the target (``toolkit.pruning.allocation``:
rounding, floors, measured cost). Each candidate is pruned on a copy, its
BatchNorm statistics re-estimated on training batches (``request.recalibrate``)
and scored on a few validation images; the best is kept. Candidate 0 is the
uniform allocation, so the search keeps uniform unless a tilt scores higher.
Knobs come from a scrambled Sobol sequence seeded by the run's seed.

A latency target on a runtime (``latency_runtime="onnxruntime"`` or
``"openvino"``) is planned on that runtime's per-layer latency table
(``toolkit.pruning.latency_table``), so candidates are not timed one by one:
the uniform candidate is timed against the dense model (interleaved) to learn
how far the table's reduction overstates the runtime's (the table leaves out
resizes, adds, normalisation), every candidate is planned on the table with
that correction, and only the chosen one is timed again and corrected until
it meets the target within the timings' spread.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from tqdm.auto import tqdm

from toolkit.errors import PruningError
from toolkit.pruning.allocation import Allocation, Allocator, meet_cost, pruned_copy
from toolkit.pruning.latency_table import latency_costs, measured_reduction
from toolkit.pruning.targets import TOLERANCE, Target
from toolkit.results.measure import cost_of, reduction

KNOBS = ("depth", "side", "width")
SPAN = 1.0  # each knob in [-SPAN, SPAN]: at the corners a group's exponent is up to e**3 apart from another's


class NoCandidate(PruningError):
    """No knob setting gave an allocation that meets the target (a smaller ``round_to`` may)."""


@dataclass
class Candidate:
    """One allocation tried: its knobs, the cost it reached, and its validation score."""

    knobs: tuple[float, float, float]
    kept: Allocation
    reached: float
    score: float

    def describe(self) -> dict[str, Any]:
        return {**{k: round(v, 3) for k, v in zip(KNOBS, self.knobs)}, "reached": self.reached, "score": self.score}


def knob_grid(n: int, seed: int) -> list[tuple[float, float, float]]:
    """``n`` knob settings: uniform first, then a scrambled Sobol sequence over ``[-SPAN, SPAN]^3``."""
    if n < 1:
        return []
    sobol = torch.quasirandom.SobolEngine(len(KNOBS), scramble=True, seed=seed).draw(max(0, n - 1)).double()
    points = [tuple(float(v) for v in (2 * p - 1) * SPAN) for p in sobol]
    return [(0.0, 0.0, 0.0), *points]


def group_features(allocator: Allocator, model: nn.Module) -> np.ndarray:
    """Each group's (position, side, log-width), centred: position in forward order in [-1, 1],
    side +1 for the encoder's layers and -1 for the rest (0 where no layer is named ``encoder``),
    log2 width over the median, clipped to [-1, 1]."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    groups = allocator.groups
    ranks = np.argsort(np.argsort([order.get(g.root, 0) for g in groups])).astype(float)
    position = 2 * ranks / max(1, len(groups) - 1) - 1
    encoder = np.array([g.root.split(".")[0] == "encoder" for g in groups])
    side = np.where(encoder, 1.0, -1.0) if encoder.any() and not encoder.all() else np.zeros(len(groups))
    widths = np.log2(np.array([g.channels for g in groups], dtype=float))
    width = np.clip(widths - np.median(widths), -1.0, 1.0)
    return np.stack([position, side, width], axis=1)


def tilted(allocator: Allocator, features: np.ndarray, knobs: Sequence[float]) -> Callable[[float], Allocation]:
    """The family of allocations one knob setting gives, monotone in ``t`` (0: dense, 1: every floor)."""
    exponents = np.exp(features @ np.asarray(knobs, dtype=float))

    def family(t: float) -> Allocation:
        keep = (1.0 - min(max(t, 0.0), 1.0)) ** exponents
        return {g.root: g.snap(g.channels * k) for g, k in zip(allocator.groups, keep)}

    return family


def search_allocation(
    model: nn.Module,
    example_inputs: torch.Tensor,
    target: Target,
    importance: tp.importance.Importance,
    evaluate: Callable[[nn.Module], float],
    *,
    candidates: int = 16,
    recalibrate: Callable[[nn.Module], Any] | None = None,
    seed: int = 0,
    round_to: int | None = None,
    max_rate: float | None = None,
    ignored_layers: Sequence[nn.Module] = (),
    keep_residual: bool = False,
    latency_runtime: str | None = None,
) -> tuple[Allocator, Candidate, list[Candidate], float]:
    """Try ``candidates`` allocations that meet ``target`` (a cost) and return the best by ``evaluate``.

    A latency target needs ``latency_runtime`` (onnxruntime, openvino): it is
    planned on that runtime's latency table and only the uniform candidate and
    the chosen one are timed. Returns ``(allocator, best, every candidate, seconds)``;
    ``allocator.rate_dict(best.kept)`` prunes the real model. A knob setting
    that cannot meet the target is skipped; when none can, ``PruningError``.
    """
    if not target.is_cost:
        raise PruningError(f"the allocation search needs a cost target (flops=0.5, params=0.5), got {target}")
    on_runtime = target.kind == "latency"
    if on_runtime and latency_runtime in (None, "", "eager"):
        raise PruningError("the allocation search plans a latency target on a runtime's latency table: "
                           "set latency_runtime=onnxruntime or openvino, or give a flops target")
    t0 = time.perf_counter()
    allocator = Allocator(model, example_inputs, importance, kind="flops" if on_runtime else target.kind,
                          round_to=round_to, max_rate=max_rate, ignored_layers=list(ignored_layers),
                          keep_residual=keep_residual, costs=latency_costs(latency_runtime) if on_runtime else None)
    if not allocator.groups:
        raise PruningError("the allocation search found no prunable layer group in this model")
    features = group_features(allocator, model)
    before = 0.0 if on_runtime else cost_of(target.kind, model, example_inputs)
    pruned: dict[tuple[int, ...], nn.Module] = {}

    def copy_with(kept: Allocation) -> nn.Module:
        """The model pruned to ``kept`` on a copy, made once per allocation."""
        key = tuple(kept.values())
        if key not in pruned:
            pruned[key] = pruned_copy(model, example_inputs, importance, allocator.rate_dict(kept),
                                      ignored_layers=ignored_layers, keep_residual=keep_residual)
        return pruned[key]

    def measure(kept: Allocation) -> tuple[float, float]:
        """The real reduction of a pruned copy: counted, or timed against the dense model on the runtime."""
        trial = copy_with(kept)
        if on_runtime:
            return measured_reduction(model, trial, example_inputs, runtime=latency_runtime)
        return reduction(before, cost_of(target.kind, trial, example_inputs)), 0.0

    overstated = 0.0  # how far the latency table's reduction exceeds the runtime's, learnt on the uniform candidate
    if on_runtime:
        _, kept, reached, _, _ = meet_cost(allocator, tilted(allocator, features, (0.0, 0.0, 0.0)), target.value,
                                           measure, tolerance=TOLERANCE / 2)
        overstated = allocator.reduction(kept) - reached
    tried: list[Candidate] = []
    settings = knob_grid(candidates, seed)
    # a bar on a terminal (a cell takes about a minute on the headline model), silent in logs
    for knobs in tqdm(settings, desc=f"allocation search ({target})", unit="candidate", leave=False, disable=None):
        family = tilted(allocator, features, knobs)
        try:
            if on_runtime:  # planned on the table, corrected by what the uniform candidate's timing taught
                _, kept = allocator.closest(family, min(0.999, target.value + overstated))
                reached = allocator.reduction(kept) - overstated
            else:
                _, kept, reached, _, _ = meet_cost(allocator, family, target.value, measure, tolerance=TOLERANCE / 2)
        except PruningError:
            continue
        if abs(reached - target.value) <= TOLERANCE:
            trial = copy_with(kept)
            if recalibrate is not None:
                recalibrate(trial)
            with torch.no_grad():
                score = float(evaluate(trial))
            tried.append(Candidate(knobs, kept, float(reached), score))
        pruned.clear()
    if not tried:
        raise NoCandidate(f"no allocation the search tried meets {target} on this model: lower the target or round_to")
    best = max(tried, key=lambda c: c.score)  # the first of equals: uniform wins ties
    if on_runtime:  # the chosen one timed, and corrected until the runtime says it meets the target
        _, kept, reached, noise, _ = meet_cost(allocator, tilted(allocator, features, best.knobs), target.value,
                                               measure, tolerance=TOLERANCE / 2)
        pruned.clear()
        if abs(reached - target.value) > max(TOLERANCE, 2 * noise):
            raise PruningError(f"latency on {latency_runtime} came no closer to {target} than {reached:.1%} with the "
                               f"chosen allocation: time on a quieter machine or lower the target")
        best = Candidate(best.knobs, kept, float(reached), best.score)
    return allocator, best, tried, time.perf_counter() - t0
