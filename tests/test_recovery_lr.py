"""A recovery learning rate that fits the amount pruned: the by-flops rule and the range test."""
from __future__ import annotations

import json

import pytest
import segmentation_models_pytorch as smp
import torch

from toolkit.cli import main
from toolkit.config import RunConfig, lay_recipe
from toolkit.errors import UsageError
from toolkit.workbench.data import load_splits
from toolkit.workbench.lr_find import lr_range_test, recovery_rate
from toolkit.workbench.optim import scale_for_reduction
from toolkit.workbench.training import TrainConfig, Trainer


def test_by_flops_scale_rises_from_the_recovery_scale_to_one():
    assert scale_for_reduction(0.1, 0.25) == pytest.approx(0.1) == scale_for_reduction(0.1, 0.5)
    assert scale_for_reduction(0.1, 0.75) == pytest.approx(1.0) == scale_for_reduction(0.1, 0.9)
    assert scale_for_reduction(0.1, 0.625) == pytest.approx(0.1 ** 0.5)  # geometric: halfway in decades
    steps = [scale_for_reduction(0.1, r / 100) for r in range(0, 101, 5)]
    assert steps == sorted(steps)
    assert scale_for_reduction(1.0, 0.6) == 1.0, "the research recipe (scale 1) is unchanged"


def robust_run(recovery_lr: str) -> RunConfig:
    run = RunConfig()
    lay_recipe(run.train, "robust")
    run.train.recovery_lr = recovery_lr
    return run.validate()


def test_by_flops_sets_the_fine_tunes_peak_from_what_pruning_removed():
    run = robust_run("by-flops")  # training peaks at 3e-3, recovery at a tenth
    assert run.stage_train("finetune", 0.5).lr_max == pytest.approx(3e-4)
    assert run.stage_train("finetune", 0.75).lr_max == pytest.approx(3e-3)
    assert 3e-4 < run.stage_train("finetune", 0.6).lr_max < 3e-3
    assert run.stage_train("finetune", 0.75).lr_min <= 1e-5
    assert run.stage_train("prune", 0.75).lr_max == pytest.approx(3e-4), "the prune stage keeps the fixed scale"
    assert robust_run("scale").stage_train("finetune", 0.75).lr_max == pytest.approx(3e-4), "default unchanged"
    run.finetune = {"lr_max": 1e-3}
    assert run.stage_train("finetune", 0.75).lr_max == 1e-3, "a stage's own lr_max is taken as it is"
    with pytest.raises(UsageError, match="by-flops"):
        robust_run("auto")


@pytest.fixture(scope="module")
def thin_lines():
    return load_splits("thin-lines", image_size=64, limit=24, augment=False)


def test_lr_find_recovery_rate_is_the_range_tests_suggestion_within_bounds(thin_lines, monkeypatch):
    monkeypatch.setattr("toolkit.workbench.lr_find.RECOVERY_SWEEP", (1e-4, 10.0, 12))  # a shorter sweep, same logic
    cfg = TrainConfig(loss="dice+ce", optimizer="adamw", batch_size=8, lr_min=1e-5, progress=False)
    trainer = Trainer(thin_lines.train, thin_lines.val, 2, cfg)
    torch.manual_seed(0)
    model = smp.Unet("tu-mobilenetv3_small_050", encoder_weights=None, encoder_depth=3,
                     decoder_channels=(32, 16, 8), classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = lr_range_test(model, trainer, start_lr=1e-4, end_lr=10.0, steps=12).suggestion
    assert recovery_rate(model, trainer, ceiling=1.0) == pytest.approx(min(1.0, max(1e-5, found)))
    assert recovery_rate(model, trainer, ceiling=found / 2) == pytest.approx(found / 2), "never above the ceiling"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the probe trains a copy"


@pytest.mark.slow
def test_prune_with_recovery_lr_by_flops_records_the_rate_it_chose(tmp_path):
    """End to end, in NHWC memory format too (channel surgery on channels_last weights)."""
    out = tmp_path / "run"
    code = main(["prune", "--arch", "linknet", "--plugin", "l1", "--target", "flops=0.7", "--recovery-lr", "by-flops",
                 "--channels-last",
                 "--encoder", "resnet18", "--image-size", "64", "--limit", "16", "--batch-size", "2",
                 "--steps-per-epoch", "1", "--epochs-train", "1", "--epochs-prune", "0", "--epochs-finetune", "1",
                 "--no-progress", "--device", "cpu", "--out", str(out)])
    assert code == 0
    row = json.loads((out / "result.json").read_text())
    assert row["flops_reduction"] > 0.55 and row["test_iou_pruned"] == row["test_iou_pruned"]  # not NaN
    assert row["recovery_lr_max"] == pytest.approx(3e-3 * scale_for_reduction(0.1, row["flops_reduction"]), rel=1e-6)
