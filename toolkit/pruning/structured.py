"""The structured pruning algorithm: any channel importance, the toolkit's graph surgery.

Every structured pruner registered through ``register_importances`` (the
built-in fpgm, l1, l2, taylor, lamp, random, and any plugin's) is an
``ImportancePruner`` around its criterion, with the same options:

* ``global_pruning`` (False): rank channels across layers instead of removing
  the same fraction from each, never emptying a layer and honouring
  ``max_rate`` (``toolkit.pruning.allocation``);
* ``round_to`` ("auto"): keep channel counts at the nearest multiple of this (8, 16); ``auto``
  is the measured best of the runtime the model is deployed on (ONNX Runtime's 16 for a
  FLOP or parameter target when none is named; no rounding for a channel rate or eager
  PyTorch), lowered silently where a multiple cannot meet the target
  (``toolkit.pruning.rounding``);
* ``deploy_runtime`` (none): the runtime the model will run on (onnxruntime, openvino, eager),
  which ``round_to=auto`` rounds for;
* ``latency_runtime`` ("eager"): where a latency target is timed; "onnxruntime"
  or "openvino" plans on a cached per-layer latency table of that runtime
  (``toolkit.pruning.latency_table``), and the row's ``reached`` is read on it;
* ``keep_residual`` (False): leave summed (residual) channels unpruned and
  prune only inside blocks, as the FPGM paper does for ResNets;
* ``iterative`` (False): prune ``request.pruning_steps`` increments, each
  followed by ``request.step_interval`` fine-tune steps and an evaluation
  (the steel-plate study's schedule, with short recoveries between steps).
  It stops early when the score falls below the floor and returns the last
  model that met it;
* ``min_score`` / ``max_drop`` (none): the floor, as an absolute score or as
  the largest fall below the score before pruning (0.02 = two IoU points);
* ``taylor_steps`` (8): backward passes that feed a gradient criterion
  before each prune;
* ``protect`` (none): roles of layers kept whole, ``first_conv``, ``stem``,
  ``head`` (``toolkit.pruning.protect``);
* ``sensitivity`` (False): per-layer rates from a sensitivity scan
  (``toolkit.pruning.sensitivity``) that meet the same target, sparing the
  layers whose pruning costs validation IoU; ``sensitivity_rates`` and
  ``sensitivity_images`` set the scan, ``max_rate`` caps any layer's rate;
* ``search`` (0): try this many whole allocations that meet the cost target
  (uniform, and tilts by depth, encoder/decoder and width), each
  BatchNorm-recalibrated and scored on ``search_images`` validation images,
  and keep the best (``toolkit.pruning.search``; minutes, not a scan).

Cost targets (``flops=0.5``, ``params=0.5``, ``latency=0.5``) are met by
searching the rate on copies of the model (``toolkit.pruning.targets.find_rate``)
before pruning the real one. ``prune_channels`` is the same machinery as one
call, for scripts and plugins.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch_pruning as tp
from torch import nn

from toolkit.contract import ImportanceSpec, Option, PruneRequest, PruneResult, PrunerSpec
from toolkit.errors import PruningError, UsageError
from toolkit.pruning.allocation import Allocator, Unreachable, meet_cost, pruned_copy
from toolkit.pruning.latency_table import check_latency_runtime, latency_costs, measured_reduction
from toolkit.pruning.protect import parse_roles, protected_layers
from toolkit.pruning.rounding import (check_deploy_runtime, deployed_on, parse_round_to, resolve_round_to,
                                      with_fallbacks)
from toolkit.pruning.search import NoCandidate, search_allocation
from toolkit.pruning.sensitivity import scan, sensitive_rates
from toolkit.pruning.surgery import ChannelSurgery, channel_counts, channel_sparsity
from toolkit.pruning.targets import TOLERANCE, Target, find_rate, met
from toolkit.results.measure import cost_of, count_flops, count_parameters, reduction

STRUCTURED_OPTIONS: tuple[Option, ...] = (
    Option("global_pruning", bool, False, "rank channels across layers instead of the same rate in each"),
    Option("round_to", str, "auto",
           "keep channel counts multiples of this (8, 16, none); auto: the deploy runtime's measured best "
           "(ONNX Runtime's for a FLOP or parameter target when none is named; a channel rate is not rounded)"),
    Option("deploy_runtime", str, "", "the runtime the model is deployed on, which round_to=auto rounds for "
           "(default: onnxruntime for a cost target)"),
    Option("keep_residual", bool, False, "leave summed (residual) channels whole, prune inside blocks"),
    Option("iterative", bool, False, "prune in pruning_steps increments with fine-tuning between them"),
    Option("min_score", float, None, "iterative: stop when the validation score falls below this"),
    Option("max_drop", float, None, "iterative: stop when it falls this far below the unpruned score"),
    Option("protect", str, "", "layers kept whole by role: first_conv, stem, head (comma list)"),
    Option("sensitivity", bool, False, "per-layer rates from a sensitivity scan, same total target"),
    Option("sensitivity_rates", str, "0.25,0.5,0.75,0.9", "rates each group is scanned at"),
    Option("sensitivity_images", int, 32, "validation images the scan scores on"),
    Option("max_rate", float, None, "no layer loses more than this fraction (sensitivity, global_pruning, search)"),
    Option("search", int, 0, "allocations tried that meet the cost target, each scored on validation images; 0: off"),
    Option("search_images", int, 16, "validation images each searched allocation is scored on"),
    Option("latency_runtime", str, "eager",
           "latency targets timed on: eager (every candidate), onnxruntime or openvino (layer table)"),
)
GRADIENT_OPTIONS: tuple[Option, ...] = (
    Option("taylor_steps", int, 8, "backward passes that feed the criterion before each prune"),
)


def needs_gradients(spec: ImportanceSpec, importance: Any = None) -> bool:
    """Whether the criterion gets backward passes: declared on its ``ImportanceSpec``, or as
    ``needs_gradients = True`` on its class. Given the built ``importance`` (when pruning), one that
    declares it without ``reset()`` and ``accumulate(model)`` is refused with a ``PruningError``."""
    probe = importance if importance is not None else _probe(spec)
    declared = spec.needs_gradients or bool(getattr(probe, "needs_gradients", False))
    missing = [m for m in ("reset", "accumulate") if not callable(getattr(importance, m, None))]
    if declared and importance is not None and missing:
        raise PruningError(f"criterion {spec.name!r} needs gradients but {type(importance).__name__} has no "
                           f"{' or '.join(m + '()' for m in missing)}: implement reset() and accumulate(model)")
    return declared


def _probe(spec: ImportanceSpec) -> Any:
    """The criterion built with default options, to read what its class declares (its options are
    listed before any prune); the factory itself when that fails (it fails again, with its message, then)."""
    try:
        return spec.factory(seed=0, **{o.name: o.default for o in spec.options})
    except Exception:  # noqa: BLE001 - see above
        return spec.factory


def _feed_gradients(importance: Any, train: Callable[..., None], model: nn.Module, steps: int) -> None:
    """Backward passes with a zero learning rate: gradients for the scores, weights unchanged."""
    importance.reset()
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    train(model, steps, optimizer=frozen, after_backward=importance.accumulate)
    model.zero_grad(set_to_none=True)


@dataclass
class RatePlan:
    """How to meet a target: a rate for every layer, and exceptions by layer name.

    ``kept`` is set when the toolkit chose every group's channel count itself
    (rounding, global ranking: ``toolkit.pruning.allocation``); ``rate_dict``
    then names every group and the surgery must apply it as it is.
    ``round_to`` is the multiple used (smaller than asked where the asked one
    could not meet the target), ``warnings`` say why.
    """

    rate: float
    rate_dict: dict[str, float] | None
    reached: float
    trials: list[tuple[float, float]]
    kept: dict[str, int] | None = None
    round_to: int | None = None
    warnings: list[str] = field(default_factory=list)

    def describe(self, target: Target) -> dict[str, Any]:
        described = {"target": str(target), "amount": self.rate, "reached": self.reached, "trials": self.trials}
        if self.kept is not None:
            return {**described, "kept_channels": self.kept}
        return {**described, "held_layers": sorted(self.rate_dict or {})}

    def surgery_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The ``ChannelSurgery`` options that apply this plan: an allocation is exact per layer, so
        Torch-Pruning's own rounding, global ranking and cap are off (the allocation did them)."""
        if self.kept is None:
            return options
        return {**options, "global_pruning": False, "round_to": None, "max_rate": None}


def plan_channels(
    model: nn.Module,
    example_inputs: torch.Tensor,
    target: Target,
    importance: tp.importance.Importance,
    latency_runtime: str = "eager",
    warn_fallback: bool = True,
    **surgery: Any,
) -> RatePlan:
    """How to prune ``model`` to ``target`` (a rate or a cost), decided on copies.

    With ``round_to`` or ``global_pruning``, or a latency target on a runtime
    (``latency_runtime="onnxruntime"`` or ``"openvino"``), the toolkit allocates every group's
    kept count (nearest multiple, floors, cost model: ``toolkit.pruning.allocation``);
    otherwise a cost target searches the uniform rate (``rate_for_target``).
    """
    on_runtime = target.kind == "latency" and latency_runtime != "eager"
    if surgery.get("round_to") or surgery.get("global_pruning") or on_runtime:
        return allocate_channels(model, example_inputs, target, importance,
                                 latency_runtime=latency_runtime if on_runtime else None, warn_fallback=warn_fallback,
                                 **surgery)
    if target.is_cost:
        return rate_for_target(model, example_inputs, target, importance, **surgery)
    return RatePlan(target.value, None, target.value, [])


def allocate_channels(
    model: nn.Module,
    example_inputs: torch.Tensor,
    target: Target,
    importance: tp.importance.Importance,
    *,
    global_pruning: bool = False,
    round_to: int | None = None,
    max_rate: float | None = None,
    ignored_layers: Sequence[nn.Module] = (),
    keep_residual: bool = False,
    latency_runtime: str | None = None,
    warn_fallback: bool = True,
) -> RatePlan:
    """Every group's kept count for a rate or a cost target: rounded to the nearest multiple, or ranked globally.

    A latency target with ``latency_runtime`` is allocated on the runtime's
    per-layer latency table and verified by timing dense and pruned models
    interleaved on it; it counts as met within the timings' spread. A cost
    target that multiples of ``round_to`` cannot meet (one multiple in every
    thin layer may already remove too little) is met with the largest
    multiple that can, halving down to 1, and the plan's warning says so
    (unless ``warn_fallback`` is off: ``round_to=auto`` asked for what suits,
    not for one multiple); only a target no allocation meets stops with an error.
    """
    def attempt(multiple: int | None) -> RatePlan:
        return _allocate(model, example_inputs, target, importance, global_pruning=global_pruning,
                         round_to=multiple, max_rate=max_rate, ignored_layers=ignored_layers,
                         keep_residual=keep_residual, latency_runtime=latency_runtime)

    if not target.is_cost:  # a channel rate is rounded as asked: there is no cost to fall short of
        return attempt(round_to)
    plan, multiple, missed = with_fallbacks(round_to, attempt, Unreachable)
    if isinstance(missed, Unreachable) and warn_fallback:
        plan.warnings.append(f"round_to={round_to} cannot reach {target} on this model (came to "
                             f"{missed.reached:.1%}): rounded to multiples of {multiple} instead")
    return plan


def _allocate(
    model: nn.Module,
    example_inputs: torch.Tensor,
    target: Target,
    importance: tp.importance.Importance,
    *,
    global_pruning: bool,
    round_to: int | None,
    max_rate: float | None,
    ignored_layers: Sequence[nn.Module],
    keep_residual: bool,
    latency_runtime: str | None,
) -> RatePlan:
    """One allocation at one ``round_to`` (``allocate_channels``); ``Unreachable`` when it misses a counted cost."""
    costs = latency_costs(latency_runtime) if latency_runtime else None
    allocator = Allocator(model, example_inputs, importance, kind=target.kind if target.is_cost else "flops",
                          round_to=round_to, max_rate=max_rate, ignored_layers=list(ignored_layers),
                          keep_residual=keep_residual, costs=costs)
    family = allocator.ranked if global_pruning else allocator.uniform
    if target.is_cost:
        before = cost_of(target.kind, model, example_inputs) if not latency_runtime else 0.0

        def measure(kept: dict[str, int]) -> tuple[float, float]:
            trial = pruned_copy(model, example_inputs, importance, allocator.rate_dict(kept),
                                ignored_layers=ignored_layers, keep_residual=keep_residual)
            if latency_runtime:  # dense and pruned timed interleaved: the reduction and its noise
                return measured_reduction(model, trial, example_inputs, runtime=latency_runtime)
            return reduction(before, cost_of(target.kind, trial, example_inputs)), 0.0

        _, kept, reached, noise, trials = meet_cost(allocator, family, target.value, measure, tolerance=TOLERANCE / 2)
        if abs(reached - target.value) > max(TOLERANCE, 2 * noise):
            how, change = ((f"latency on {latency_runtime}", "time on a quieter machine or lower the target")
                           if latency_runtime else ("global ranking", "prune without global_pruning") if global_pruning
                           else (f"round_to={round_to}", "lower round_to"))
            message = f"{how} came no closer to {target} than {reached:.1%} on this model: {change}"
            if latency_runtime:  # timing noise, not the rounding: a smaller multiple would not help
                raise PruningError(message)
            raise Unreachable(reached, message)
        return RatePlan(allocator.removed(kept), allocator.rate_dict(kept), reached, trials, kept, round_to)
    kept = family(target.value)
    return RatePlan(target.value, allocator.rate_dict(kept), target.value, [], kept, round_to)


def rate_for_target(
    model: nn.Module,
    example_inputs: torch.Tensor,
    target: Target,
    importance: tp.importance.Importance,
    **surgery: Any,
) -> RatePlan:
    """The channel rate that removes ``target.value`` of the target's cost, found on copies.

    Where channels come in groups (GroupNorm, grouped convs) the uniform rate
    makes the cost jump (FPN's 4-channel GroupNorm groups lose a quarter at
    once), so when the first search straddles a jump, those layers are held
    just below it and the rate of the others is searched again. The importance
    is copied together with the model, so criteria that hold per-layer state
    (Taylor sums keyed by layer) stay attached to the copy.
    """
    before = cost_of(target.kind, model, example_inputs)

    def reduction_at(rate: float, held: dict[str, float] | None = None) -> float:
        trial, imp = copy.deepcopy((model, importance))
        ChannelSurgery(trial, example_inputs, rate, imp, rate_dict=held, **surgery).step()
        return reduction(before, cost_of(target.kind, trial, example_inputs))

    rate, reached, trials = find_rate(reduction_at, target.value)
    plan = RatePlan(rate, None, reached, trials)
    below = [t for t in trials if t[1] < target.value]
    if met(target, reached) or not below:
        return plan
    lo = max(below)
    probe = ChannelSurgery(copy.deepcopy(model), example_inputs, lo[0], copy.deepcopy(importance), **surgery)
    held = {name: lo[0] for name in probe.coarse_layers()}
    if not held:
        return plan
    rate2, reached2, trials2 = find_rate(lambda r: reduction_at(r, held), target.value, known_below=lo)
    if abs(reached2 - target.value) < abs(reached - target.value):
        return RatePlan(rate2, held, reached2, trials + trials2)
    return plan


@dataclass
class ImportancePruner:
    """Prunes output channels by one criterion, in one shot or iteratively with fine-tuning."""

    spec: ImportanceSpec
    importance_options: dict[str, Any] = field(default_factory=dict)
    global_pruning: bool = False
    round_to: int | str | None = "auto"
    keep_residual: bool = False
    iterative: bool = False
    min_score: float | None = None
    max_drop: float | None = None
    taylor_steps: int = 8
    protect: str = ""
    sensitivity: bool = False
    sensitivity_rates: str = "0.25,0.5,0.75,0.9"
    sensitivity_images: int = 32
    max_rate: float | None = None
    latency_runtime: str = "eager"
    deploy_runtime: str = ""
    search: int = 0
    search_images: int = 16

    def __post_init__(self) -> None:
        """Option values that are wrong whatever the model: fail when the pruner is built."""
        parse_roles(self.protect)
        self._scan_rates()
        if (self.min_score is not None or self.max_drop is not None) and not self.iterative:
            raise UsageError("min_score / max_drop only apply with iterative=true")
        if self.max_drop is not None and self.max_drop < 0:
            raise UsageError(f"max_drop must be >= 0, got {self.max_drop}")
        parse_round_to(self.round_to)
        check_deploy_runtime(self.deploy_runtime)
        if self.sensitivity and self.global_pruning:
            raise UsageError("sensitivity sets per-layer rates itself: drop global_pruning")
        if self.search < 0 or self.search_images < 1:
            raise UsageError(f"search must be >= 0 allocations and search_images >= 1, got {self.search} and {self.search_images}")
        if self.search and (self.sensitivity or self.global_pruning):
            raise UsageError("search chooses per-layer widths itself: drop sensitivity and global_pruning")
        check_latency_runtime(self.latency_runtime)  # an unknown or uninstalled runtime fails here
        if self.max_rate is not None and not 0.0 < self.max_rate <= 1.0:
            raise UsageError(f"max_rate must lie in (0, 1], got {self.max_rate}")

    @property
    def rounds_as_suits(self) -> bool:
        """``round_to=auto``: the multiple is the toolkit's choice, so falling back to a smaller one is no news."""
        return parse_round_to(self.round_to) == "auto"

    def _scan_rates(self) -> tuple[float, ...]:
        try:
            rates = tuple(float(r) for r in self.sensitivity_rates.split(",") if r.strip())
        except ValueError:
            rates = ()
        if not rates or not all(0.0 < r < 1.0 for r in rates):
            raise UsageError(f"sensitivity_rates must be a comma list of rates in (0, 1), got {self.sensitivity_rates!r}")
        return rates

    def prune(self, request: PruneRequest) -> PruneResult:
        model, x = request.model, request.example_inputs
        importance = self.spec.factory(seed=request.seed, **self.importance_options)
        gradients = needs_gradients(self.spec, importance)
        self._check(request, gradients)
        ignored = [*request.ignored_layers, *protected_layers(model, x, parse_roles(self.protect))]
        cost = request.target if request.target is not None and request.target.is_cost else None
        round_to = resolve_round_to(self.round_to, deployed_on(self.deploy_runtime, self.latency_runtime,
                                                               cost.kind if cost is not None else None))
        if self.sensitivity and self.rounds_as_suits:
            round_to = None  # the scan rounds with Torch-Pruning's round-down, not the allocator's nearest multiple
        surgery_options = dict(ignored_layers=ignored, global_pruning=self.global_pruning, round_to=round_to,
                               keep_residual=self.keep_residual, max_rate=self.max_rate)
        rate, rate_dict, search, warnings = request.amount, None, None, []
        planned = cost is not None or bool(round_to) or self.global_pruning  # decided on scores before pruning
        if gradients and (planned or self.sensitivity):
            _feed_gradients(importance, request.train, model, self.taylor_steps)
        if self.sensitivity:
            rate, rate_dict, search = 0.0, *self._sensitive(request, importance, cost, surgery_options)
        elif self.search:
            plan, search = self._search(request, importance, cost, surgery_options)
            rate, rate_dict, surgery_options = plan.rate, plan.rate_dict, plan.surgery_options(surgery_options)
            round_to, warnings = plan.round_to, plan.warnings
        elif planned:
            plan = plan_channels(model, x, cost or Target("rate", request.amount), importance,
                                 latency_runtime=self.latency_runtime,
                                 warn_fallback=not self.rounds_as_suits, **surgery_options)
            rate, rate_dict, search = plan.rate, plan.rate_dict, plan.describe(cost) if cost is not None else None
            round_to, warnings = plan.round_to if plan.kept is not None else round_to, plan.warnings
            surgery_options = plan.surgery_options(surgery_options)
        steps = max(1, request.pruning_steps) if self.iterative else 1
        params0, flops0 = count_parameters(model), count_flops(model, x)
        surgery = ChannelSurgery(model, x, rate, importance, steps=steps, rate_dict=rate_dict, **surgery_options)
        history: list[dict[str, Any]] = []
        score0 = floor = None
        if self.iterative and request.evaluate is not None:
            score0 = float(request.evaluate(model))
            floor = self._floor(score0)
            if floor is not None and score0 < floor:
                raise PruningError(
                    f"the model scores {score0:.4g} before pruning, already below the floor {floor:.4g}: lower min_score"
                )
            history.append(_record(0, 0.0, 0.0, model, x, score0))
        keep = copy.deepcopy(model) if floor is not None else None
        stopped = "target"
        for step in range(1, steps + 1):
            if gradients:
                _feed_gradients(importance, request.train, model, self.taylor_steps)
            reached = surgery.step()
            score = None
            if self.iterative:
                if request.train is not None:
                    request.train(model, request.step_interval)
                if request.evaluate is not None:
                    score = float(request.evaluate(model))
            history.append(_record(step, surgery.target_rate, reached, model, x, score))
            if floor is not None and score is not None and score < floor:
                stopped = "floor"
                break
            if keep is not None and step < steps:
                keep = copy.deepcopy(model)
        result_model = keep if stopped == "floor" else model
        kept = history[-2] if stopped == "floor" else history[-1]
        return PruneResult(
            model=result_model,
            kind="structured",
            backend=self.spec.backend,
            sparsity=channel_sparsity(surgery.before, result_model),
            history=history,
            meta={
                "importance": self.spec.name,
                "amount": rate,
                "layer_rates": rate_dict,
                "protected": [n for n, m in model.named_modules() if any(m is p for p in ignored[len(request.ignored_layers):])],
                "search": search,
                "global_pruning": self.global_pruning,
                "round_to": round_to,
                "warnings": warnings,
                "keep_residual": self.keep_residual,
                "iterative": self.iterative,
                "steps_planned": steps,
                "steps_kept": kept["step"],
                "stopped_by": stopped,
                "score_before": score0,
                "score_floor": floor,
                "params_before": params0,
                "params_after": kept["params"],
                "flops_before": flops0,
                "flops_after": kept["flops"],
            },
        )

    def _sensitive(self, request: PruneRequest, importance: Any, cost: Target | None,
                   surgery_options: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
        """Per-layer rates from a sensitivity scan that meet the request's rate or cost."""
        model, x = request.model, request.example_inputs
        rates = self._scan_rates()
        scanned = scan(model, x, importance, lambda m: request.evaluate(m, limit=self.sensitivity_images), rates,
                       **{k: v for k, v in surgery_options.items() if k != "max_rate"})
        goal = cost or Target("rate", request.amount)
        if goal.kind == "rate":
            before = channel_counts(model)

            def measure(dense: nn.Module, pruned: nn.Module) -> float:
                return channel_sparsity(before, pruned)
        else:
            cost_before = cost_of(goal.kind, model, x)

            def measure(dense: nn.Module, pruned: nn.Module) -> float:
                return reduction(cost_before, cost_of(goal.kind, pruned, x))

        layer_rates, reached, trials = sensitive_rates(
            model, x, goal, scanned, importance, measure, max_rate=self.max_rate or 0.95,
            **{k: v for k, v in surgery_options.items() if k != "max_rate"})
        return layer_rates, {"target": str(goal), "reached": reached, "trials": trials, "baseline": scanned.baseline,
                             "scanned_rates": list(rates), "drops": scanned.drops,
                             "most_sensitive": scanned.ranking()[:10]}

    def _search(self, request: PruneRequest, importance: Any, cost: Target | None,
                surgery_options: dict[str, Any]) -> tuple[RatePlan, dict[str, Any]]:
        """The best-scoring of ``search`` allocations that meet the request's cost target, as a plan
        (exact per-layer counts, like every allocation) and what the search tried."""
        if cost is None:
            raise UsageError("search needs a cost target (--target flops=0.5, params=0.5, or latency=0.5 with "
                             "latency_runtime=onnxruntime), not a channel rate")
        asked = surgery_options["round_to"]

        def attempt(multiple: int | None) -> Any:  # like allocate_channels: the largest multiple that can meet it
            return search_allocation(
                request.model, request.example_inputs, cost, importance,
                lambda m: request.evaluate(m, limit=self.search_images), candidates=self.search,
                recalibrate=request.recalibrate, seed=request.seed, round_to=multiple, max_rate=self.max_rate,
                ignored_layers=surgery_options["ignored_layers"], keep_residual=self.keep_residual,
                latency_runtime=self.latency_runtime)

        (allocator, best, tried, seconds), multiple, _ = with_fallbacks(asked, attempt, NoCandidate)
        warnings = ([f"round_to={asked} cannot reach {cost} on this model: the search rounded to multiples of "
                     f"{multiple} instead"] if multiple != asked and not self.rounds_as_suits else [])
        plan = RatePlan(allocator.removed(best.kept), allocator.rate_dict(best.kept), best.reached, [], best.kept,
                        multiple, warnings)
        return plan, {
            "target": str(cost), "reached": best.reached, "chosen": best.describe(), "kept_channels": best.kept,
            "candidates": [c.describe() for c in tried], "seconds": seconds, "images": self.search_images}

    def _check(self, request: PruneRequest, gradients: bool) -> None:
        if gradients and request.train is None:
            raise PruningError(
                f"{self.spec.name} needs training data for its gradients: give the request a trainer (request.train)"
            )
        if self.iterative and (self.min_score is not None or self.max_drop is not None) and request.evaluate is None:
            raise PruningError("a score floor (min_score / max_drop) needs an evaluator: give the request evaluate=")
        if self.sensitivity and request.evaluate is None:
            raise PruningError("a sensitivity scan needs an evaluator: give the request evaluate=")
        if self.search and request.evaluate is None:
            raise PruningError("the allocation search scores candidates: give the request evaluate=")

    def _floor(self, score0: float) -> float | None:
        floors = [f for f in (self.min_score, None if self.max_drop is None else score0 - self.max_drop) if f is not None]
        return max(floors) if floors else None


def _record(step: int, amount: float, reached: float, model: nn.Module, x: torch.Tensor, score: float | None) -> dict[str, Any]:
    """One step of ``history``: the channel rate asked for by then (``amount``) and the one measured (``reached``)."""
    return {"step": step, "amount": amount, "reached": reached, "params": count_parameters(model),
            "flops": count_flops(model, x), "score": score}


def importance_pruner_spec(spec: ImportanceSpec) -> PrunerSpec:
    """The structured pruner the core builds around a registered importance."""
    own = {o.name for o in spec.options}
    machinery = tuple(o for o in (*STRUCTURED_OPTIONS, *(GRADIENT_OPTIONS if needs_gradients(spec) else ())) if o.name not in own)
    machinery_names = {o.name for o in machinery}

    def factory(**options: Any) -> ImportancePruner:
        mine = {k: v for k, v in options.items() if k in machinery_names}
        theirs = {k: v for k, v in options.items() if k not in machinery_names}
        return ImportancePruner(spec, theirs, **mine)

    return PrunerSpec(name=spec.name, kind="structured", backend=spec.backend, description=spec.description,
                      factory=factory, options=(*spec.options, *machinery), cost_targets=True)


def prune_channels(
    model: nn.Module,
    example_inputs: torch.Tensor,
    rate: float | None = None,
    importance: str | tp.importance.Importance = "fpgm",
    *,
    target: str | Target | None = None,
    ignored_layers: Sequence[nn.Module] = (),
    global_pruning: bool = False,
    round_to: int | str | None = "auto",
    keep_residual: bool = False,
    max_rate: float | None = None,
    latency_runtime: str = "eager",
    deploy_runtime: str = "",
    seed: int = 0,
) -> PruneResult:
    """Remove output channels of every prunable layer, in place, in one shot.

    ``importance`` is a registered criterion name (``fpgm``, ``l1``, ... or a
    plugin's) or a Torch-Pruning ``Importance``. Give either ``rate`` (the
    fraction of each layer's channels) or ``target`` (``"flops=0.5"``: the
    rate is searched). The segmentation head and classifier are never pruned;
    MA-Net and grouped convolutions work (see ``toolkit.pruning.surgery``).
    ``round_to="auto"`` rounds for ``deploy_runtime`` (or a latency target's
    ``latency_runtime``; ONNX Runtime for a FLOP or parameter target; not a
    ``rate``: ``toolkit.pruning.rounding``).
    A gradient criterion (taylor) must be given as an object already fed with
    backward passes. Returns a ``PruneResult`` whose ``sparsity`` is the
    measured channel rate.
    """
    if (rate is None) == (target is None):
        raise UsageError("give exactly one of rate= or target=")
    if isinstance(importance, str):
        from toolkit.registry import get_collector

        spec = get_collector().importance(importance)
        built = spec.factory(seed=seed)
        if needs_gradients(spec, built):
            raise UsageError(f"{importance} needs gradients: build it, feed it backward passes, and pass the object")
        importance = built
    chosen = Target.parse(target) if target is not None else Target("rate", float(rate))
    check_deploy_runtime(deploy_runtime)
    asked, round_to = round_to, resolve_round_to(round_to, deployed_on(deploy_runtime, latency_runtime, chosen.kind))
    surgery_options = dict(ignored_layers=list(ignored_layers), global_pruning=global_pruning,
                           round_to=round_to, keep_residual=keep_residual, max_rate=max_rate)
    plan = plan_channels(model, example_inputs, chosen, importance, latency_runtime=latency_runtime,
                         warn_fallback=parse_round_to(asked) != "auto", **surgery_options)
    search = plan.describe(chosen) if chosen.is_cost else None
    surgery = ChannelSurgery(model, example_inputs, plan.rate, importance, rate_dict=plan.rate_dict,
                             **plan.surgery_options(surgery_options))
    reached_rate = surgery.step()
    used = plan.round_to if plan.kept is not None else round_to
    return PruneResult(model, "structured", "torch-pruning", reached_rate,
                       meta={"amount": plan.rate, "search": search, "round_to": used, "warnings": plan.warnings})
