"""A grid's settings as plain dataclasses: the cells' axes, the executor and its resources, tracking
and the per-cell run settings. A leaf: executors, the tracker and the row builder read it without
importing the grid module that loads, checks and runs it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolkit.config import RunConfig


@dataclass
class RayConfig:
    """Where and how big: ``address`` none = start a local Ray, ``auto`` = the running cluster."""

    address: str | None = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0
    max_retries: int = 2  # a cell whose worker died is run again this many times, then fails


@dataclass
class TrackingConfig:
    """``mlflow``: none = no tracking, ``local`` = a store in the run folder, else a tracking URI."""

    mlflow: str | None = None
    models: bool = False  # log pruned.pt and dense.pt too: large
    experiment: str = "toolkit"


@dataclass
class GridConfig:
    """The grid and the per-cell settings. The defaults are the demo: a few minutes on 2 CPU cores."""

    archs: list[str] = field(default_factory=lambda: ["fpn", "unet"])
    # the dense control first: every "IoU change" is then against the dense model trained for the same steps
    plugins: list[str] = field(default_factory=lambda: ["dense", "fpgm", "l1", "agp"])
    sparsities: list[float] = field(default_factory=lambda: [0.5, 0.75])  # each pruner's own measure
    targets: list[str] = field(default_factory=list)  # cost targets, e.g. ["flops=0.5"]
    datasets: list[str] = field(default_factory=lambda: ["synthetic"])
    seeds: list[int] = field(default_factory=lambda: [0])
    # steps trained after pruning (prune stage + fine-tune), one cell per value; empty = the run's epochs
    recovery_steps: list[int] = field(default_factory=list)
    plugin_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per plugin name
    plugin_sparsities: dict[str, list[float]] = field(default_factory=dict)  # per plugin name, instead of sparsities
    plugin_targets: dict[str, list[str]] = field(default_factory=dict)  # per plugin name, instead of sparsities + targets
    # a pruner under another name with its own options or distillation, usable in `plugins`:
    # [variants.fpgm-distill] plugin = "fpgm", options = {...}, distill = true, run = {recovery settings}
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    examples: int = 3  # test images drawn per cell in the report
    executor: str = "local"
    cell_timeout: float | None = None  # seconds; a cell running longer fails as "timed out"
    # time every model again once the cells are done, in one process, interleaved (toolkit.runner.retime);
    # unset: on for the local executor (the machine is then quiet), off on Ray (toolkit report --retime)
    retime: bool | None = None
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # [tracking] mlflow = "URI"
    run: RunConfig = field(default_factory=lambda: demo_run_config())


def demo_run_config() -> RunConfig:
    """Tiny settings of the demo: small images, a small encoder, a few steps per stage."""
    # timed on eager PyTorch and ONNX Runtime (the `onnx` extra the demo installs); a grid of its own
    # adds OpenVINO with latency_runtimes = ["eager", "onnxruntime", "openvino"] (RunConfig's default)
    cfg = RunConfig(encoder="resnet18", image_size=64, limit=120, epochs_train=3, epochs_prune=1,
                    epochs_finetune=2, pruning_steps=4, latency_runs=5, latency_runtimes=["eager", "onnxruntime"])
    cfg.train.max_steps_per_epoch = 12
    return cfg
