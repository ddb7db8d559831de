"""What plugins hand the toolkit and what the toolkit hands them: one spec a hook.

Kept small on purpose, so one shape fits gradual pruners that need training
steps (linear, AGP, movement) and one-shot ones (FPGM, L1):

* ``PrunerSpec``: a whole pruner (``factory(**options).prune(request)``);
* ``ImportanceSpec``: only a channel criterion; the core wraps it in its
  structured machinery (dependency graph, rates, cost targets, iterative
  mode, serialization), so a structured method is a few lines;
* ``DatasetSpec``: a dataset format; it only *lists* ``Record``s (an image
  and its mask), the core reads them, so every format obeys the same
  bad-input rules, splits and ``--skip-bad``;
* ``ModelSpec``: an architecture, built by name; it says which layers give
  the classes when they are not smp's heads, and the core never prunes them;
* ``Option``: a typed option with a default. The core checks options against
  the spec before building anything, so plugins do not validate their own.

What a pruner returns is checked and *measured* by the core: the reached
rate or zero fraction in a results row is the core's measurement, never the
plugin's claim (``toolkit.testing.check_pruner`` fails a pruner whose claim
differs).
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

import torch
from torch import nn

from toolkit.errors import UsageError

if TYPE_CHECKING:
    from toolkit.pruning.targets import Target

Kind = Literal["structured", "unstructured"]
KINDS: tuple[str, ...] = ("structured", "unstructured")
OPTION_TYPES = (bool, int, float, str)


class StepTrainer(Protocol):
    """Runs ``steps`` optimisation steps of the task's loss on ``model``.

    Gradual pruners use the two callbacks: ``after_backward`` sees gradients
    (Taylor and movement scores), ``after_step`` runs after the optimiser step
    (re-applying masks, advancing a schedule). ``optimizer`` lets a backend pass
    its own wrapped optimiser (NNI patches ``step``); ``None`` means the
    trainer's own, with its learning-rate schedule.
    """

    def __call__(
        self,
        model: nn.Module,
        steps: int,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        after_backward: Callable[[nn.Module], None] | None = None,
        after_step: Callable[[nn.Module, int], None] | None = None,
    ) -> None: ...


@dataclass
class PruneRequest:
    """Everything a pruner may use. Only ``model``, ``example_inputs`` and
    ``amount`` are always set; a pruner that needs more says so with a
    ``PruningError`` when it is missing.

    ``amount`` is how much to prune in the pruner's own measure: the channel
    **rate** (fraction of each prunable layer's output channels removed) for a
    structured pruner, the **zero fraction** of the prunable weights for an
    unstructured one; the word is ``torch.nn.utils.prune``'s, which means the
    same by it for its structured and unstructured methods. (It was called
    ``sparsity``, which a structured pruner's is not; ``request.sparsity`` and
    ``PruneRequest(sparsity=...)`` still work for one release, with a
    ``DeprecationWarning``.) ``target`` is set when the run asked for a cost
    (``flops=0.5``); only pruners whose spec says ``cost_targets=True`` see
    one, the core handles it for the others. ``evaluate(model, limit=None)``
    scores a model on the validation split (higher is better), or on
    ``limit`` images spread evenly over it for quick checks.
    ``recalibrate(model)`` re-estimates a pruned copy's BatchNorm statistics on
    the run's training batches, as the core does to the pruner's result, so a
    pruner can score a candidate as it will be after pruning.
    """

    model: nn.Module
    example_inputs: torch.Tensor
    amount: float
    target: "Target | None" = None
    train: StepTrainer | None = None
    evaluate: Callable[[nn.Module], float] | None = None
    recalibrate: Callable[[nn.Module], Any] | None = None
    ignored_layers: Sequence[nn.Module] = ()
    pruning_steps: int = 10  # n_p: how many times the mask is tightened
    step_interval: int = 10  # dt: training iterations between two prunes
    seed: int = 0  # for any randomness of the pruner (random scores, sampled batches)

    @property
    def sparsity(self) -> float:
        """Deprecated name of ``amount`` (a structured pruner's is a channel rate, not a sparsity)."""
        _deprecated_sparsity()
        return self.amount

    @sparsity.setter
    def sparsity(self, value: float) -> None:
        _deprecated_sparsity()
        self.amount = value


_WARNED: set[str] = set()


def _deprecated_sparsity() -> None:
    """One ``DeprecationWarning`` a process, not one a cell: a grid's plugin reads it in every cell."""
    if "sparsity" not in _WARNED:
        _WARNED.add("sparsity")
        warnings.warn("PruneRequest.sparsity is deprecated and goes in the next release: use PruneRequest.amount "
                      "(the same value: the pruner's own measure)", DeprecationWarning, stacklevel=3)


def _accept_sparsity_keyword(init: Callable[..., None]) -> Callable[..., None]:
    """``PruneRequest(..., sparsity=0.5)``, as plugins built before ``amount`` write it."""
    @functools.wraps(init)
    def __init__(self: PruneRequest, *args: Any, **kwargs: Any) -> None:
        if "sparsity" in kwargs:
            _deprecated_sparsity()
            if "amount" in kwargs or len(args) >= 3:
                raise TypeError("PruneRequest takes amount or its old name sparsity, not both")
            kwargs["amount"] = kwargs.pop("sparsity")
        init(self, *args, **kwargs)
    return __init__


PruneRequest.__init__ = _accept_sparsity_keyword(PruneRequest.__init__)  # type: ignore[method-assign]


@dataclass
class PruneResult:
    """What a pruner hands back. ``model`` is pruned in place or replaced.

    ``masks`` maps parameter names to 0/1 tensors for unstructured pruners (the
    zeros are already in the weights); structured pruners return a physically
    smaller model and no masks. ``sparsity`` is what the pruner believes it
    reached: a results row keeps it as ``pruner_claimed`` beside the core's own
    measurement, which is what every table reports.
    ``from_scratch`` says the weights were re-initialised (a baseline such as
    ``narrow``): the core then trains the model for the whole budget.
    """

    model: nn.Module
    kind: Kind
    backend: str
    sparsity: float
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    from_scratch: bool = False


@runtime_checkable
class Pruner(Protocol):
    def prune(self, request: PruneRequest) -> PruneResult: ...


@dataclass(frozen=True)
class Option:
    """One option of a pruner or importance: ``-o name=value`` / ``plugin_options``."""

    name: str
    type: type
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name!r}: type must be one of bool, int, float, str")

    def coerce(self, value: Any, owner: str) -> Any:
        """The value in this option's type, or a ``UsageError`` that says what is expected."""
        where = f"option {self.name!r} of {owner}"
        if value is None:
            return None
        if self.type is bool:
            if isinstance(value, bool):
                out: Any = value
            elif isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                out = value.lower() in ("true", "1", "yes")
            else:
                raise UsageError(f"{where}: expected true or false, got {value!r}")
        elif self.type in (int, float):
            if isinstance(value, bool):
                raise UsageError(f"{where}: expected a number, got {value!r}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise UsageError(f"{where}: expected {self.type.__name__}, got {value!r}") from None
            if self.type is int and (math.isnan(number) or number != int(number)):
                raise UsageError(f"{where}: expected a whole number, got {value!r}")
            out = int(number) if self.type is int else number
        else:
            out = str(value)
        if self.choices is not None and out not in self.choices:
            raise UsageError(f"{where} must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        return out

    def describe(self) -> str:
        kind = "|".join(map(str, self.choices)) if self.choices else self.type.__name__
        return f"{self.name}={self.default!r} ({kind}){': ' + self.help if self.help else ''}"


def resolve_options(options: Sequence[Option], given: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Every declared option, given values coerced and checked, defaults for the rest."""
    known = {o.name: o for o in options}
    unknown = sorted(set(given) - set(known))
    if unknown:
        listed = ", ".join(known) if known else "(none)"
        raise UsageError(f"unknown option(s) {', '.join(unknown)} for {owner}; options: {listed}")
    return {name: (opt.coerce(given[name], owner) if name in given else opt.default) for name, opt in known.items()}


def _check_name(what: str, name: str) -> None:
    if not name or not name.replace("-", "_").isidentifier():
        raise ValueError(f"{what} name {name!r} must be a plain identifier")


@dataclass(frozen=True)
class PrunerSpec:
    """A pruner as a plugin registers it: its public name and how to build it.

    ``options`` declares every option ``factory`` accepts (checked by the core);
    ``cost_targets`` says the pruner reads ``PruneRequest.target`` itself,
    otherwise the core finds the sparsity that meets a cost target.
    """

    name: str
    kind: Kind
    backend: str
    description: str
    factory: Callable[..., Pruner]
    options: tuple[Option, ...] = ()
    cost_targets: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"pruner {self.name!r}: kind must be one of {KINDS}, not {self.kind!r}")
        _check_name("pruner", self.name)
        object.__setattr__(self, "options", tuple(self.options))

    def create(self, options: Mapping[str, Any] | None = None) -> Pruner:
        return self.factory(**resolve_options(self.options, options or {}, f"pruner {self.name!r}"))


@dataclass(frozen=True)
class ImportanceSpec:
    """A channel criterion: ``factory(seed=..., **options)`` returns a Torch-Pruning
    ``Importance`` (usually a ``toolkit.pruning.ChannelImportance``).

    The toolkit registers a structured pruner of the same name around it, with
    every option of its structured machinery (``toolkit plugins --verbose``).
    ``needs_gradients``: the core feeds it backward passes before each prune.
    """

    name: str
    description: str
    factory: Callable[..., Any]
    needs_gradients: bool = False
    options: tuple[Option, ...] = ()
    backend: str = "torch-pruning"

    def __post_init__(self) -> None:
        _check_name("importance", self.name)
        object.__setattr__(self, "options", tuple(self.options))


# -- datasets ---------------------------------------------------------------------------
MaskReader = Callable[[tuple[int, int]], np.ndarray]  # (width, height) of the image -> H x W class ids
PathUse = Literal["required", "optional", "none"]


@dataclass(frozen=True)
class DataRequest:
    """What a dataset format is asked for: ``--data NAME:PATH`` and the run's settings.

    ``path`` is ``None`` when none was given (only for formats whose spec says
    ``path="optional"`` or ``"none"``). A format that generates its images
    (``synthetic``) reads ``seed``, ``image_size`` and ``limit``; one that
    lists files ignores them, the core subsamples and resizes.
    """

    path: Path | None
    seed: int = 0
    image_size: int = 128
    limit: int | None = None


@dataclass(frozen=True)
class Record:
    """One image and its class-id mask, as a format lists it; the core reads and checks it.

    ``mask`` is the mask file (a grey or indexed PNG of class ids) or a reader
    ``(width, height) -> class ids`` for any other encoding (run-length codes,
    colour palettes). ``mask_source`` is what error messages name for the mask
    (default: the mask file). ``stratum`` is what stratified splits balance
    (a class folder, a given split: ``"train"``/``"test"``). ``read_image``
    is for generated data: it returns the picture (a PIL image) and ``image``
    is then only its name.
    """

    image: Path
    mask: Path | MaskReader
    mask_source: str = ""
    stratum: str = "all"
    read_image: Callable[[], Any] | None = None

    @property
    def where(self) -> str:
        """The mask as error messages name it."""
        if self.mask_source:
            return self.mask_source
        return str(self.mask) if isinstance(self.mask, Path) else f"mask of {self.image}"


@dataclass
class Listing:
    """What a format found: records (with a given test split or not), class names, a description.

    ``test`` is the dataset's own test split, or ``None`` for a seeded one.
    ``class_names`` may be empty: the core then names ids ``class-1``... up to
    the largest id it reads. ``ignore_index`` is the mask value of void pixels
    (boundaries, unlabelled: 255 in the VOC convention), which count in no loss
    and no metric; ``None`` when every pixel has a class.
    """

    train: list[Record]
    test: list[Record] | None
    class_names: list[str]
    description: str
    ignore_index: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset format: ``--data NAME`` / ``--data NAME:PATH``.

    ``listing(DataRequest) -> Listing``: the records, not the pixels; raise
    ``toolkit.errors.DataError`` naming the file for anything the listing
    itself finds wrong. ``path`` says whether a path is ``required``,
    ``optional`` (the format knows where to look) or unused (``none``).
    ``recognise(folder) -> bool`` lets a bare ``--data PATH`` pick this
    format. ``binary_class`` names the one foreground class under ``--binary``.
    """

    name: str
    description: str
    listing: Callable[[DataRequest], Listing]
    path: PathUse = "required"
    recognise: Callable[[Path], bool] | None = None
    binary_class: str = "defect"

    def __post_init__(self) -> None:
        _check_name("dataset", self.name)
        if self.path not in ("required", "optional", "none"):
            raise ValueError(f"dataset {self.name!r}: path must be required, optional or none, not {self.path!r}")


# -- architectures ------------------------------------------------------------------------
Task = Literal["segmentation", "classification"]


@dataclass(frozen=True)
class ModelSpec:
    """An architecture: ``--arch NAME``, ``toolkit.workbench.models.create_model(NAME, ...)``.

    ``build(encoder=..., encoder_weights=..., num_classes=..., in_channels=...)``
    returns a new ``nn.Module``; ``encoder_weights`` is ``None`` (random
    init), ``"imagenet"`` or a path (``toolkit.workbench.models.smp_model``
    loads them offline for smp models). ``output_layers(model)`` returns the
    layers that produce the classes, which no pruner may touch; ``None``
    means smp's ``segmentation_head`` / ``classification_head`` (or a
    classifier's ``fc``). ``task`` is what the model predicts.
    """

    name: str
    description: str
    build: Callable[..., nn.Module]
    output_layers: Callable[[nn.Module], Sequence[nn.Module]] | None = None
    task: Task = "segmentation"

    def __post_init__(self) -> None:
        _check_name("architecture", self.name)
        if self.task not in ("segmentation", "classification"):
            raise ValueError(f"architecture {self.name!r}: task must be segmentation or classification")


def check_result(result: object) -> PruneResult:
    """Check a plugin kept the contract, so a broken one fails its own row."""
    if not isinstance(result, PruneResult):
        raise TypeError(f"a pruner must return PruneResult, got {type(result).__name__}")
    if result.kind not in KINDS:
        raise TypeError(f"PruneResult.kind must be one of {KINDS}, got {result.kind!r}")
    if not isinstance(result.model, nn.Module):
        raise TypeError("PruneResult.model must be a torch.nn.Module")
    if not 0.0 <= float(result.sparsity) <= 1.0:
        raise TypeError(f"PruneResult.sparsity must lie in [0, 1], got {result.sparsity}")
    return result
