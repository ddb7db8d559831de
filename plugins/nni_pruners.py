"""Built-in unstructured pruners: ``linear`` (LP), ``agp``, ``movement`` and ``level``.

Each runs on one of two backends, and ``PruneResult.backend`` says which did the work:

* ``"toolkit"``: our schedule (``toolkit.pruning.schedules``), criterion
  (``toolkit.pruning.criteria``) and masks (``toolkit.pruning.masking``) driven through the
  ``StepTrainer`` hooks. Default for the gradual pruners.
* ``"nni"``: NNI 3.0's ``LinearPruner``/``AGPPruner`` around ``TaylorPruner``
  or ``LevelPruner``, its ``MovementPruner`` and ``LevelPruner``, trained
  through a ``TorchEvaluator`` whose training function is the request's
  trainer. Default for ``level``.

What NNI 3.0 does on torch 2.14 (probed on a toy net and on smp Unet-resnet18),
and why the gradual pruners default to our own code:

* wrapping, mask generation and ``unwrap_model`` work, but NNI's masks are
  virtual (applied in ``forward``): after unwrapping the weights are dense
  again, so we write the masks into the weights ourselves, and drop the
  ``forward`` attribute and parameter order that unwrapping leaves changed;
* its global ranking (``global_group_id``) pushes every weight through a
  Python heap (``_global_threshold_generate``): about 80 s per mask on a
  Unet-resnet18, minutes on resnet101, where ours takes well under a second;
* ``TaylorPruner`` ranks output channels unless given an element granularity,
  prunes biases too unless told to target only ``weight``, and crashes
  (``KeyError``) when a pruned weight gets no gradient, e.g. the resnet stage
  smp keeps but skips with ``encoder_depth < 5``;
* ``LinearPruner``/``AGPPruner`` always start from sparsity 0 (their
  ``initial_ratio`` is fixed and, for the linear one, would not give
  ``zeta_0 + ...`` anyway), so ``initial_sparsity`` needs our backend;
* ``MovementPruner`` learns its scores with its own Adam (lr 1e-2) through a
  straight-through mask and tightens the mask every step, rather than
  accumulating ``-dL/dW * W`` and pruning every ``step_interval`` as the paper
  and the issue describe;
* ``TorchEvaluator`` needs an ``nni.trace``d optimiser, so the ``nni``
  backend cannot use the trainer's own default optimiser: it builds
  ``SGD(lr, momentum)`` from the ``lr``/``momentum`` options (by default the
  toolkit's ``TrainConfig`` values).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from toolkit.contract import Option, PruneRequest, PruneResult, PrunerSpec
from toolkit.errors import PruningError, UsageError
from toolkit.hookspecs import hookimpl
from toolkit.pruning.criteria import create_criterion
from toolkit.pruning.gradual import (
    check_ran, counting, gradual_masks, unstructured_result, weights_to_prune,
)
from toolkit.pruning.masking import Masks, apply_masks, masks_from_scores
from toolkit.pruning.schedules import Schedule, Shape
from toolkit.results.measure import sparsity

BACKENDS: tuple[str, ...] = ("toolkit", "nni")
GRADUAL_CRITERIA: tuple[str, ...] = ("taylor", "magnitude")


# -- NNI ------------------------------------------------------------------------------------
def _nni_config(weights: dict[str, torch.Tensor], ratio: float, scope: str, element_granularity: bool) -> list[dict]:
    """One NNI config entry: the weights of our prunable modules, element-wise, per layer or in one global group."""
    setting: dict[str, Any] = {"sparse_ratio": ratio}
    if element_granularity:
        setting["granularity"] = [1]  # padded with ones to any rank: one element per block
    if scope == "global":
        setting["global_group_id"] = "all"  # NB: NNI ranks a global group in a Python heap, element by element
    return [{"op_names": [n.removesuffix(".weight") for n in weights], "target_names": ["weight"],
             "target_settings": {"weight": setting}}]


def _nni_masks(pruner: Any) -> Masks:
    return {f"{module}.weight": targets["weight"].bool() for module, targets in pruner.get_masks().items()
            if targets.get("weight") is not None}


def _before_wrapping(model: nn.Module) -> dict[str, tuple[list[str], bool]]:
    """Each module's parameter order and whether it had its own ``forward``, for ``_nni_unwrap``."""
    return {n: (list(m._parameters), "forward" in m.__dict__) for n, m in model.named_modules()}


def _nni_unwrap(pruner: Any, model: nn.Module, before: dict[str, tuple[list[str], bool]]) -> None:
    """Unwrap, then undo what NNI's unwrap leaves behind: a ``forward`` instance
    attribute and weights re-registered after the bias (a different key order).
    The pruned layers get new parameter tensors (same names): optimisers built
    before pruning no longer hold them."""
    pruner.unwrap_model()
    for name, module in model.named_modules():
        order, had_forward = before.get(name, (list(module._parameters), True))
        if "forward" in module.__dict__ and not had_forward:
            del module.__dict__["forward"]
        if list(module._parameters) != order:
            module._parameters = {k: module._parameters[k] for k in order}


def _nni_training(request: PruneRequest, after_step: Callable[[nn.Module, int], None]) -> tuple[list[int], Callable[..., None]]:
    """A ``TorchEvaluator`` training function that runs the request's trainer with NNI's patched optimiser."""
    count, counted = counting(after_step)

    def training_func(model: nn.Module, optimizers: Any, training_step: Any, lr_schedulers: Any = None,
                      max_steps: int | None = None, max_epochs: int | None = None) -> None:
        request.train(model, max_steps, optimizer=optimizers, after_step=counted)

    return count, training_func


def _unused_training_step(batch: Any, model: nn.Module) -> torch.Tensor:
    raise RuntimeError("the toolkit's StepTrainer computes the loss; NNI's training_step is never called")


def _nni_evaluator(request: PruneRequest, training_func: Callable[..., None], lr: float, momentum: float) -> Any:
    import nni
    from nni.compression.utils import TorchEvaluator

    optimizer = nni.trace(torch.optim.SGD)(request.model.parameters(), lr=lr, momentum=momentum)
    return TorchEvaluator(training_func, optimizer, _unused_training_step, dummy_input=request.example_inputs)


def _target_of(pruner: Any) -> float:
    """NNI's current sparse ratio (all our targets share it)."""
    for targets in pruner._target_spaces.values():
        for space in targets.values():
            if space.sparse_ratio is not None:
                return float(space.sparse_ratio)
    return 0.0


def _nni_gradual(
    request: PruneRequest, schedule: Schedule, method: str, criterion_name: str, scope: str,
    cooldown: int, lr: float, momentum: float,
) -> tuple[Masks, list[dict[str, Any]]]:
    from nni.compression.pruning import AGPPruner, LevelPruner, LinearPruner, MovementPruner, TaylorPruner

    if schedule.initial > 0:
        raise PruningError("NNI's schedules always start from sparsity 0; use backend='toolkit' for initial_sparsity > 0")
    model = request.model
    weights = weights_to_prune(request)
    before = _before_wrapping(model)
    total_prunable = sum(w.numel() for w in weights.values())
    holder: dict[str, Any] = {}
    prune_at = set(schedule.prune_iterations())
    history: list[dict[str, Any]] = []

    def after_step(model: nn.Module, t: int) -> None:
        if t in prune_at:
            masks = _nni_masks(holder["pruner"])
            zeros = sum(int((~m).sum()) for m in masks.values())
            history.append({"iteration": t, "amount": _target_of(holder["pruner"]), "reached": zeros / total_prunable})

    count, training_func = _nni_training(request, after_step)
    evaluator = _nni_evaluator(request, training_func, lr, momentum)
    if method == "movement":
        config = _nni_config(weights, request.amount, scope, element_granularity=True)
        pruner = MovementPruner(model, config, evaluator, warmup_step=schedule.start, cooldown_begin_step=schedule.end)
    else:
        if criterion_name == "taylor":
            config = _nni_config(weights, request.amount, scope, element_granularity=True)
            inner = TaylorPruner(model, config, evaluator, training_steps=schedule.interval)
        else:
            inner = LevelPruner(model, _nni_config(weights, request.amount, scope, element_granularity=False), evaluator)
        combo = LinearPruner if schedule.shape == "linear" else AGPPruner
        pruner = combo(inner, interval_steps=schedule.interval, total_times=schedule.steps)
    holder["pruner"] = pruner
    total = schedule.end + cooldown
    try:
        pruner.compress(max_steps=total, max_epochs=None)
    except KeyError as exc:
        # NNI's TaylorPruner collects scores in gradient hooks; a weight that gets
        # no gradient (a frozen or unused layer, e.g. the resnet stages smp keeps
        # but skips when encoder_depth < 5) leaves no score and mask generation
        # fails with a bare KeyError.
        raise PruningError(f"NNI's {type(pruner).__name__} failed ({exc!r} missing), as it does when a pruned "
                           "weight gets no gradient (an unused or frozen layer); use backend='toolkit'") from exc
    check_ran(count[0], total)
    masks = _nni_masks(pruner)
    _nni_unwrap(pruner, model, before)
    apply_masks(model, masks)
    return masks, history


# -- the pruners ------------------------------------------------------------------------------
class GradualPruner:
    """Train and prune together, tightening the mask on a schedule (LP, AGP, movement)."""

    def __init__(
        self, method: str, shape: Shape, criterion: str, scope: str = "layer", backend: str = "toolkit",
        initial_sparsity: float = 0.0, warmup_steps: int = 0, cooldown_steps: int = 0,
        lr: float | None = None, momentum: float | None = None,
    ) -> None:
        self.method, self.shape, self.criterion, self.scope, self.backend = method, shape, criterion, scope, backend
        self.initial, self.warmup, self.cooldown = float(initial_sparsity), int(warmup_steps), int(cooldown_steps)
        if self.warmup < 0 or self.cooldown < 0:
            raise UsageError(f"warmup_steps and cooldown_steps must be >= 0, got {warmup_steps} and {cooldown_steps}")
        self.lr = None if lr is None else float(lr)
        self.momentum = None if momentum is None else float(momentum)

    def _optimizer_settings(self) -> tuple[float, float]:
        from toolkit.workbench.training import TrainConfig

        defaults = TrainConfig()
        return (self.lr if self.lr is not None else defaults.lr_min,
                self.momentum if self.momentum is not None else defaults.momentum)

    def prune(self, request: PruneRequest) -> PruneResult:
        if request.train is None:
            raise PruningError(f"{self.method} prunes while training: give the PruneRequest a StepTrainer (train=...)")
        schedule = Schedule(self.shape, request.amount, request.pruning_steps, request.step_interval,
                            self.initial, start=self.warmup)
        meta: dict[str, Any] = {
            "method": self.method, "criterion": self.criterion, "scope": self.scope, "schedule": self.shape,
            "initial_sparsity": self.initial, "warmup_steps": self.warmup, "cooldown_steps": self.cooldown,
            "iterations": schedule.end + self.cooldown,
        }
        if self.backend == "nni":
            lr, momentum = self._optimizer_settings()
            meta["optimizer"] = f"SGD(lr={lr}, momentum={momentum})"
            masks, history = _nni_gradual(request, schedule, self.method, self.criterion, self.scope,
                                          self.cooldown, lr, momentum)
        else:
            optimizer = None
            meta["optimizer"] = "trainer default"
            if self.lr is not None or self.momentum is not None:
                lr, momentum = self._optimizer_settings()
                optimizer = torch.optim.SGD(request.model.parameters(), lr=lr, momentum=momentum)
                meta["optimizer"] = f"SGD(lr={lr}, momentum={momentum})"
            masks, history = gradual_masks(request, schedule, self.criterion, self.scope, self.cooldown, optimizer)
        return unstructured_result(request, self.backend, masks, history, meta)


class OneShotLevel:
    """One-shot magnitude pruning: the cheap baseline, no training."""

    def __init__(self, scope: str = "layer", backend: str = "nni") -> None:
        self.scope, self.backend = scope, backend

    def prune(self, request: PruneRequest) -> PruneResult:
        weights = weights_to_prune(request)
        if self.backend == "nni":
            from nni.compression.pruning import LevelPruner as NNILevel

            before = _before_wrapping(request.model)
            pruner = NNILevel(request.model, _nni_config(weights, request.amount, self.scope, element_granularity=False))
            pruner.compress()
            masks = _nni_masks(pruner)
            _nni_unwrap(pruner, request.model, before)
        else:
            masks = masks_from_scores(create_criterion("magnitude", weights).scores(), request.amount, self.scope)
        apply_masks(request.model, masks)
        history = [{"iteration": 0, "amount": request.amount, "reached": sparsity(request.model, request.ignored_layers)}]
        return unstructured_result(request, self.backend, masks, history, {"method": "level", "criterion": "magnitude", "scope": self.scope})


# -- registration --------------------------------------------------------------------------------
_COMMON = (
    Option("scope", str, "layer", "rank weights per layer or across all layers", ("layer", "global")),
    Option("backend", str, "toolkit", "toolkit (our schedule and masks) or nni (NNI 3.0's pruners)", BACKENDS),
    Option("lr", float, None, "own SGD learning rate during pruning (default: the trainer's optimiser)"),
    Option("momentum", float, None, "own SGD momentum during pruning"),
)
_INITIAL = Option("initial_sparsity", float, 0.0, "zeta_0, the sparsity the schedule starts from")
_CRITERION = Option("criterion", str, "taylor", "weight scores: taylor (g*w)^2 or magnitude |w|", GRADUAL_CRITERIA)


@hookimpl
def register_pruners(register: Callable[[PrunerSpec], None]) -> None:
    register(PrunerSpec(
        "linear", "unstructured", "toolkit",
        "gradual, sparsity rising linearly every step_interval iterations; Taylor (g*w)^2 or magnitude scores",
        lambda criterion, **o: GradualPruner("linear", "linear", criterion, **o),
        options=(_CRITERION, _INITIAL, *_COMMON),
    ))
    register(PrunerSpec(
        "agp", "unstructured", "toolkit",
        "automated gradual pruning, cubic schedule (Zhu & Gupta); Taylor (g*w)^2 or magnitude scores",
        lambda criterion, **o: GradualPruner("agp", "cubic", criterion, **o),
        options=(_CRITERION, _INITIAL, *_COMMON),
    ))
    register(PrunerSpec(
        "movement", "unstructured", "toolkit",
        "movement pruning (Sanh et al.): scores -dL/dW*W accumulated in training, cubic schedule",
        lambda **o: GradualPruner("movement", "cubic", "movement", **o),
        options=(Option("warmup_steps", int, 0, "steps before the first prune"),
                 Option("cooldown_steps", int, 0, "steps after the last prune, masks fixed"), _INITIAL, *_COMMON),
    ))
    register(PrunerSpec(
        "level", "unstructured", "nni",
        "one-shot magnitude |w| pruning, NNI LevelPruner",
        OneShotLevel,
        options=(Option("scope", str, "layer", "per layer or global", ("layer", "global")),
                 Option("backend", str, "nni", "nni or toolkit", BACKENDS)),
    ))
