"""One typed config for a run, readable from TOML and overridable from the CLI.

Every run writes the config it used (``config.toml``) into its folder, so a
result can always be traced back to its settings. TOML is parsed with
``tomllib``: config text is data, never code.

Training settings start from a recipe (``recipes.py``): the one a TOML or the
command line names, else ``DEFAULT_RECIPE`` for runs configured here (``toolkit
train``/``prune``); every setting given explicitly overrides the recipe's,
whichever layer gives it.
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
from toolkit.workbench.losses import WEIGHT_RULES, check_loss_weights, parse_loss, resolve_class_weights
from toolkit.workbench.optim import OPTIMIZERS, SCHEDULES, check_choice
from toolkit.workbench.recipes import apply_recipe
from toolkit.workbench.training import TrainConfig

DEFAULT_RECIPE = "robust"  # a new dataset's; configs that reproduce the research say recipe = "research"


@dataclass
class RunConfig:
    """train -> prune -> fine-tune of one model on one dataset with one pruner."""

    arch: str = "fpn"
    encoder: str = "resnet101"  # the corrosion study's encoder
    encoder_weights: str = "none"  # none | imagenet | PATH
    data: str = "synthetic"
    image_size: int = 128
    limit: int | None = None  # cap on images read, for quick runs; 0 = all
    binary: bool = False
    skip_bad: bool = False
    seed: int = 0
    epochs_train: int = 100
    epochs_prune: int = 50
    epochs_finetune: int = 100
    checkpoint: str | None = None  # a trained dense checkpoint: skip training
    plugin: str | None = None
    sparsity: float = 0.5
    pruning_steps: int = 10  # n_p
    plugin_options: dict[str, Any] = field(default_factory=dict)
    latency_runs: int = 10
    latency_threads: int = 1
    latency_size: int | None = None  # input side for latency; None = image_size
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "RunConfig":
        if self.limit == 0:
            self.limit = None  # TOML has no null: 0 means every image
        if not 0.0 <= self.sparsity < 1.0:
            raise UsageError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.image_size < 64 or self.image_size % 32:
            # encoders downsample by 32; at 32 px the deepest features are 1x1, where a pruned
            # GroupNorm group (FPN) holds a single value and cannot be normalised
            raise UsageError(f"image size must be a multiple of 32 and at least 64, got {self.image_size}")
        for name in ("epochs_train", "epochs_prune", "epochs_finetune"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', '-')} must be >= 0")
        if self.pruning_steps < 1:
            raise UsageError("pruning-steps must be >= 1")
        if self.train.sampling not in ("shuffle", "balanced"):
            raise UsageError(f"sampling must be shuffle or balanced, got {self.train.sampling!r}")
        if self.train.batch_size < 1:
            raise UsageError("batch-size must be >= 1")
        check_train(self.train, self.image_size)
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
    check_choice("optimizer", t.optimizer, OPTIMIZERS)
    check_choice("schedule", t.schedule, SCHEDULES)
    if not 0 < t.lr_min <= t.lr_max:
        raise UsageError(f"learning rates must satisfy 0 < lr-min <= lr-max, got {t.lr_min} and {t.lr_max}")
    if t.warmup_steps < 0 or t.weight_decay < 0 or t.zero_iou_patience < 0:
        raise UsageError("warmup-steps, weight-decay and zero-iou-patience must be >= 0")
    if not 0.0 <= t.foreground_crop <= 1.0:
        raise UsageError(f"foreground-crop is a probability in [0, 1], got {t.foreground_crop}")
    _check_side("crop-size", t.crop_size, image_size)
    _check_side("eval-window", t.eval_window, image_size)


def use_recipe(train: TrainConfig, name: str) -> TrainConfig:
    """Set every value recipe ``name`` presets (``recipes.apply_recipe``)."""
    for key, value in apply_recipe(str(name)).items():
        setattr(train, key, value)
    train.recipe = str(name)
    return train


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
        use_recipe(obj, values.pop("recipe"))
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in names:
            raise UsageError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(names))}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UsageError(f"{where}.{key}: expected a table")
            update(current, value, f"{where}.{key}")
        elif name == "plugin_options":
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


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Defaults, then the recipe (named by the command line, else the TOML, else ``DEFAULT_RECIPE``),
    then the TOML's values, then the command line's."""
    cfg = RunConfig()
    data = read_toml(path) if path else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    layers = [(data, str(path)), (given, "command line")]
    named = [layer["train"]["recipe"] for layer, _ in layers if isinstance(layer.get("train"), dict) and "recipe" in layer["train"]]
    use_recipe(cfg.train, named[-1] if named else DEFAULT_RECIPE)
    for layer, where in layers:
        if isinstance(layer.get("train"), dict):
            layer = {**layer, "train": {k: v for k, v in layer["train"].items() if k != "recipe"}}
        update(cfg, layer, where)
    return cfg.validate()


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def write_config(cfg: Any, path: Path) -> None:
    data = _drop_none(to_dict(cfg))
    path.write_text(tomli_w.dumps(data))


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: a missing key reads back as the default None."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}
