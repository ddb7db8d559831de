"""One typed config for a run, readable from TOML and overridable from the CLI.

Every run writes the config it used (``config.toml``) into its folder, so a
result can always be traced back to its settings. TOML is parsed with
``tomllib``: config text is data, never code.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from toolkit.errors import UsageError
from toolkit.workbench.data.records import check_void_value
from toolkit.workbench.device import check_precision, resolve_device
from toolkit.workbench.losses import WEIGHT_RULES, check_loss_weights, parse_loss, resolve_class_weights
from toolkit.workbench.optim import OPTIMIZERS, RECOVERY_LRS, REGULARIZERS, SCHEDULES, scale_for_reduction
from toolkit.workbench.recipes import apply_recipe
from toolkit.workbench.settings import DistillConfig, TrainConfig

DEFAULT_RECIPE = "robust"  # a new dataset's (chosen from measurements); the research's is recipe = "research"


@dataclass
class RunConfig:
    """Settings every cell of a run shares: data, model size, stage lengths, training, device.

    What differs between cells (architecture, dataset, pruner, target, seed)
    is not here: it is passed to the stage functions as plain arguments
    (``toolkit.runner``), so no stage changes a copied config to pass it on.
    """

    encoder: str = "resnet101"  # the corrosion study's encoder
    encoder_weights: str = "none"  # none | imagenet | PATH
    image_size: int = 128
    limit: int | None = None  # cap on images read, for quick runs; 0 = all
    binary: bool = False
    skip_bad: bool = False
    ignore_index: int | None = None  # void mask value (VOC: 255), over the dataset's own (dataset.toml)
    epochs_train: int = 100
    epochs_prune: int = 50
    epochs_finetune: int = 100
    pruning_steps: int = 10  # n_p
    # training batches run forward after channel surgery to re-estimate BatchNorm statistics (0 = off): 10 took
    # the headline's pruned model from 0.000 to 0.219 test IoU in seconds, with no training
    bn_recalibration: int = 10
    latency_runs: int = 10
    latency_threads: int = 1
    latency_size: int | None = None  # input side for latency; None = image_size
    # runtimes timed beside eager PyTorch (whose latency_ms columns every row has); on a GPU run
    # onnxruntime brings onnxruntime_gpu (CUDA / TensorRT provider) too. toolkit.results.runtimes.RUNTIMES
    latency_runtimes: list[str] = field(default_factory=lambda: ["eager", "onnxruntime", "openvino"])
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "32"  # 32 | 16-mixed | bf16-mixed
    deterministic: bool = False  # torch's deterministic algorithms (GPU; slower)
    threads: int | None = None  # torch CPU threads per process (None: torch's default)
    train: TrainConfig = field(default_factory=TrainConfig)
    # training settings that differ in one stage, e.g. [run.finetune] lr_max = 0.005
    prune: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def stage_train(self, stage: str, flops_reduction: float | None = None) -> TrainConfig:
        """The training settings of one stage: ``train`` with the stage's own overrides.

        ``flops_reduction`` (what pruning removed) sets the fine-tune's peak
        rate under ``recovery_lr = "by-flops"``."""
        overrides = {"prune": self.prune, "finetune": self.finetune}.get(stage) or {}
        cfg = update(dataclasses.replace(self.train), dict(overrides), f"[run.{stage}]")
        if stage in ("prune", "finetune") and "lr_max" not in overrides:
            # recovering a trained model: a restart at the training's peak rate undoes what it learnt
            scale = cfg.recovery_lr_scale
            if stage == "finetune" and cfg.recovery_lr == "by-flops" and flops_reduction is not None:
                scale = scale_for_reduction(scale, flops_reduction)
            cfg.lr_max *= scale
            cfg.lr_min = min(cfg.lr_min, cfg.lr_max)
        return cfg

    def validate(self, here: bool = True) -> "RunConfig":
        """Check every value; ``here=False`` leaves the device to the machines that will run it (Ray)."""
        if self.limit == 0:
            self.limit = None  # TOML has no null: 0 means every image
        if self.image_size < 64 or self.image_size % 32:
            # encoders downsample by 32; at 32 px the deepest features are 1x1, where a pruned
            # GroupNorm group (FPN) holds a single value and cannot be normalised
            raise UsageError(f"image size must be a multiple of 32 and at least 64, got {self.image_size}")
        for name in ("epochs_train", "epochs_prune", "epochs_finetune"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', '-')} must be >= 0")
        if self.pruning_steps < 1:
            raise UsageError("pruning-steps must be >= 1")
        if self.bn_recalibration < 0:
            raise UsageError(f"bn-recalibration is a number of batches >= 0 (0 = off), got {self.bn_recalibration}")
        if self.train.sampling not in ("shuffle", "balanced"):
            raise UsageError(f"sampling must be shuffle or balanced, got {self.train.sampling!r}")
        if self.train.batch_size < 1:
            raise UsageError("batch-size must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"threads must be >= 1, got {self.threads}")
        if self.train.workers < 0:
            raise UsageError(f"workers must be >= 0, got {self.train.workers}")
        check_void_value(self.ignore_index)
        check_train(self.train, self.image_size)
        for stage in ("prune", "finetune"):
            check_train(self.stage_train(stage), self.image_size)  # unknown or mistyped keys fail here
        self.distill.validate()
        check_precision(self.precision)
        from toolkit.results.runtimes import check_runtimes

        if isinstance(self.latency_runtimes, str):
            self.latency_runtimes = [t.strip() for t in self.latency_runtimes.split(",") if t.strip()]
        self.latency_runtimes = check_runtimes(self.latency_runtimes)
        if here:
            resolve_device(self.device)  # a CUDA request on a machine without one fails here, before any work
        return self


def _check_side(name: str, value: int, image_size: int) -> None:
    if value and (value < 64 or value % 32 or value > image_size):
        raise UsageError(f"{name} must be 0 (whole images) or a multiple of 32 from 64 to image-size ({image_size}), got {value}")


def check_train(t: TrainConfig, image_size: int) -> None:
    """The method settings (loss, optimiser, schedule, crops) named and ranged right, before any work."""
    if not isinstance(t.loss_weights, dict):
        raise UsageError(f"loss_weights must be a table of term = weight, e.g. {{dice = 1.0, ce = 0.5}}, got {t.loss_weights!r}")
    check_loss_weights(parse_loss(t.loss), t.loss_weights)
    if not (isinstance(t.class_weights, str) and t.class_weights.strip().lower() in WEIGHT_RULES):
        resolve_class_weights(t.class_weights, None)
    OPTIMIZERS.check(t.optimizer)
    SCHEDULES.check(t.schedule)
    if not 0 < t.lr_min <= t.lr_max:
        raise UsageError(f"learning rates must satisfy 0 < lr-min <= lr-max, got {t.lr_min} and {t.lr_max}")
    if not 0 < t.recovery_lr_scale <= 1:
        raise UsageError(f"recovery_lr_scale is a factor in (0, 1], got {t.recovery_lr_scale}")
    RECOVERY_LRS.check(t.recovery_lr)
    REGULARIZERS.check(t.sparsity_regularizer)
    if not t.regularizer_strength >= 0:
        raise UsageError(f"regularizer_strength must be >= 0, got {t.regularizer_strength}")
    if t.warmup_steps < 0 or t.weight_decay < 0 or t.zero_iou_patience < 0:
        raise UsageError("warmup-steps, weight-decay and zero-iou-patience must be >= 0")
    if isinstance(t.val_every, bool) or not isinstance(t.val_every, int) or t.val_every < 1:
        raise UsageError(f"val-every is a whole number of epochs >= 1, got {t.val_every!r}")
    if not 0.0 <= t.foreground_crop <= 1.0:
        raise UsageError(f"foreground-crop is a probability in [0, 1], got {t.foreground_crop}")
    _check_side("crop-size", t.crop_size, image_size)
    _check_side("eval-window", t.eval_window, image_size)


def lay_recipe(train: TrainConfig, name: str) -> TrainConfig:
    """Set every value recipe ``name`` presets (``recipes.apply_recipe``)."""
    for key, value in apply_recipe(name).items():
        setattr(train, key, value)
    train.recipe = name
    return train


def use_recipe(train: TrainConfig, *layers: dict[str, Any]) -> list[dict[str, Any]]:
    """Lay the recipe the last of ``layers`` (run-settings tables: a TOML's, then the
    command line's) names under ``train``, else ``DEFAULT_RECIPE``, and return the
    layers without it: their explicit values then win over the recipe's, whichever
    layer gives them."""
    named = [layer["train"]["recipe"] for layer in layers if isinstance(layer.get("train"), dict) and "recipe" in layer["train"]]
    lay_recipe(train, str(named[-1]) if named else DEFAULT_RECIPE)
    return [{**layer, "train": {k: v for k, v in layer["train"].items() if k != "recipe"}}
            if isinstance(layer.get("train"), dict) else layer for layer in layers]


@dataclass
class JobConfig:
    """One ``toolkit train`` / ``toolkit prune`` run: what to build, prune and with which seed."""

    arch: str = "fpn"
    data: str = "synthetic"
    seed: int = 0
    plugin: str | None = None
    target: str = "0.5"  # 0.5 | sparsity=0.5 | rate=0.5 | flops=0.5 | params=0.5 | latency=0.5
    checkpoint: str | None = None  # a trained dense checkpoint: skip training
    plugin_options: dict[str, Any] = field(default_factory=dict)
    run: RunConfig = field(default_factory=RunConfig)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if value is None:
        return None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        return _coerce(value, args[0], where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UsageError(f"{where}: expected true/false, got {value!r}")
    if hint in (int, float, str):
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: expected {hint.__name__}, got {value!r}") from None
    return value


def update(obj: Any, values: dict[str, Any], where: str = "config") -> Any:
    """Set dataclass fields from plain values, checking names and types."""
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    if isinstance(obj, TrainConfig) and "recipe" in values:  # the preset first, the table's own values over it
        values = dict(values)
        lay_recipe(obj, str(values.pop("recipe")))
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in names:
            raise UsageError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(names))}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UsageError(f"{where}.{key}: expected a table")
            update(current, value, f"{where}.{key}")
        elif name in ("plugin_options", "prune", "finetune") and isinstance(current, dict):
            if not isinstance(value, dict):
                raise UsageError(f"{where}.{key}: expected a table")
            current.update(value)
        else:
            setattr(obj, name, _coerce(value, hints[name], f"{where}.{key}"))
    return obj


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None


JOB_KEYS = {f.name for f in dataclasses.fields(JobConfig)} - {"run"}


def load_config(path: str | Path | None = None, **overrides: Any) -> JobConfig:
    """A job from a flat TOML file (job keys and run settings side by side) and command-line values."""
    job = JobConfig()
    values = read_toml(path) if path else {}
    if "sparsity" in values and "target" not in values:
        values["target"] = str(values.pop("sparsity"))
    given = {k: v for k, v in overrides.items() if v is not None}
    values, given = use_recipe(job.run.train, values, given)
    for source, where in ((values, str(path)), (given, "command line")):
        update(job, {k: v for k, v in source.items() if k.replace("-", "_") in JOB_KEYS}, where)
        update(job.run, {k: v for k, v in source.items() if k.replace("-", "_") not in JOB_KEYS}, where)
    from toolkit.pruning.targets import Target
    from toolkit.workbench.models import check_segmentation

    Target.parse(job.target)  # checked once, here
    check_segmentation(job.arch)
    job.run.validate()
    return job


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config (or a dict holding configs) as plain data."""
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return {k: to_dict(v) if isinstance(v, dict) or dataclasses.is_dataclass(v) else v for k, v in cfg.items()}


def write_config(cfg: Any, path: Path) -> None:
    data = _drop_none(to_dict(cfg))
    path.write_text(tomli_w.dumps(data))


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: a missing key reads back as the default None."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}
