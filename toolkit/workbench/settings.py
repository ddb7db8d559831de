"""Training and distillation settings: plain dataclasses, a leaf that imports nothing of the toolkit
but its errors, so the loss, optimiser and training modules all read them without importing each other."""
from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.errors import UsageError

KINDS = ("logits", "features", "both")


@dataclass
class DistillConfig:
    """``distill = {enabled = true, temperature = 4, weight = 1}`` in TOML, ``--distill`` on the command line."""

    enabled: bool = False
    kind: str = "logits"  # logits | features | both: which of the teacher's outputs the student matches
    temperature: float = 4.0
    weight: float = 1.0  # the logit KL term's
    decoder_weight: float = 1.0  # the decoder features' pair-wise term's (kind = features or both)
    feature_weight: float = 0.0  # attention transfer on the encoder's stages, with any kind

    def validate(self) -> "DistillConfig":
        if self.kind not in KINDS:
            raise UsageError(f"distill.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.temperature <= 0:
            raise UsageError(f"distill.temperature must be > 0, got {self.temperature}")
        if self.weight < 0 or self.feature_weight < 0 or self.decoder_weight < 0:
            raise UsageError("distill weights must be >= 0")
        return self

    @property
    def logits(self) -> bool:
        return self.kind in ("logits", "both")

    @property
    def decoder(self) -> bool:
        return self.kind in ("features", "both")


@dataclass
class TrainConfig:
    """Defaults are the research's; tests and the demo shrink epochs and steps."""

    batch_size: int = 4
    momentum: float = 0.5
    lr_min: float = 1e-4
    lr_max: float = 1e-2
    clr_step: int = 2000  # iterations from lr_min to lr_max (half a cycle)
    tversky_alpha: float = 0.5
    tversky_beta: float = 0.5
    ema_alpha: float = 0.1
    include_background: bool = False  # in the mean IoU
    max_steps_per_epoch: int | None = None  # cap for quick runs
    sampling: str = "shuffle"  # or "balanced": every stratum (class folder) drawn equally often
    workers: int = 0  # DataLoader worker processes
    pin_memory: bool = False  # page-locked batches, faster copies to a GPU
    progress: bool = True
    # method settings beyond the research's; recipes.py presets them by name
    recipe: str = "research"  # research | robust: sets the values below, explicit settings override
    loss: str = "tversky"  # tversky, dice, focal, lovasz, ce, or a sum such as "dice+ce"
    loss_weights: dict[str, float] = field(default_factory=dict)  # per term, e.g. {dice = 1.0, ce = 0.5}
    class_weights: list[float] | str = "none"  # for ce/focal: none, auto (inverse-sqrt frequency) or one a class
    optimizer: str = "sgd"  # sgd | adamw
    weight_decay: float = 0.0
    schedule: str = "cyclic"  # cyclic | onecycle | cosine
    warmup_steps: int = 0  # onecycle/cosine: linear rise from lr_min to lr_max
    recovery_lr_scale: float = 1.0  # the prune and fine-tune stages peak at lr_max x this (unless they set lr_max)
    crop_size: int = 0  # train on random crops of this side (images held at image_size); 0 = whole images
    foreground_crop: float = 0.0  # probability that a crop is centred on a defect pixel
    eval_window: int = 0  # evaluate in overlapping windows of this side; 0 = whole images
    zero_iou_patience: int = 5  # warn when a defect class has 0 validation IoU this many validations; 0 = never
    val_every: int = 1  # validate every N epochs and after the last; the weights do not depend on it
    # prune-aware dense training (toolkit.pruning.regularizers): none | group_norm | bn_l1, in the train stage only
    sparsity_regularizer: str = "none"
    regularizer_strength: float = 1e-4  # the regulariser's coefficient (Torch-Pruning's ``reg``)
    recovery_lr: str = "scale"  # the fine-tune's peak: scale (lr_max x recovery_lr_scale) | by-flops | lr-find
    # model and batches in NHWC memory format: x1.23 per step of the headline model (EfficientNet-Lite0, batch 8 of
    # 128 px crops) at the same IoU, but slower for ResNet-18 at 64 px (benchmarks/README.md, "Cheaper steps"): off
    # by default, on in the headline's grids
    channels_last: bool = False
