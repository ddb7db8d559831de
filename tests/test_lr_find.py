"""The learning-rate range test: a plot and a suggestion, and the probed model left as it was."""
from __future__ import annotations

import json

import pytest
import segmentation_models_pytorch as smp
import torch

from toolkit.errors import UsageError
from toolkit.workbench.data import load_splits
from toolkit.workbench.lr_find import diverging, lr_range_test, smooth, suggest
from toolkit.workbench.training import TrainConfig, Trainer


@pytest.fixture(scope="module")
def thin_lines():
    return load_splits("thin-lines", image_size=64, limit=40, augment=False)


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return smp.Unet("tu-mobilenetv3_small_050", encoder_weights=None, encoder_depth=3,
                    decoder_channels=(32, 16, 8), classes=2)


def test_range_test_writes_plot_and_json_and_leaves_the_model_alone(thin_lines, tmp_path):
    cfg = TrainConfig(loss="dice+ce", optimizer="adamw", batch_size=8, progress=False)
    trainer = Trainer(thin_lines.train, thin_lines.val, 2, cfg)
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = lr_range_test(model, trainer, start_lr=1e-6, end_lr=10.0, steps=60, out_dir=tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the probe trains a copy"
    assert torch.equal(torch.get_rng_state(), rng), "random state put back"
    assert result.lrs[0] == pytest.approx(1e-6) and result.lrs == sorted(result.lrs)
    assert result.smoothed[-1] < 0.8 * result.smoothed[0], "the sweep reached rates that learn"
    assert 1e-4 < result.suggestion < 3e-2 and result.suggestion == result.steepest_lr
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["suggestion"] == result.suggestion and saved["rule"] == "steepest"
    assert len(saved["lrs"]) == len(saved["losses"]) == len(result.lrs)
    assert (tmp_path / "lr_find.png").stat().st_size > 5_000


def test_a_plain_loader_and_loss_work_too(thin_lines):
    loader = torch.utils.data.DataLoader(thin_lines.train, batch_size=4)
    result = lr_range_test(tiny(), loader, torch.nn.CrossEntropyLoss(), steps=10, end_lr=1e-2, rule="min/10")
    assert not result.diverged and len(result.lrs) == 10
    assert result.suggestion == pytest.approx(result.min_loss_lr / 10)


def test_divergence_is_a_blow_up_or_a_bounded_loss_back_above_its_start():
    def check(smoothed: list[float]) -> bool:
        return diverging(smoothed, smoothed, 4.0, settle=3)  # a noiseless curve: raw == smoothed

    assert not check([2.0, 2.0, 9.0]), "too early to tell"
    assert check([2.0, 1.5, 1.0, 0.5, 0.4, 0.5, 1.7])
    assert check([2.0, 1.5, 1.0, 0.9, 0.9, 1.5, 2.1]), "a Dice-type loss cannot grow 4x"
    assert not check([2.0, 2.05, 1.98, 2.02, 1.99, 2.01, 2.06]), "noise on a flat start is not divergence"
    noisy_start = [4.4, 2.2, 4.6, 4.6, 2.3, 3.5, 2.3, 4.1, 2.6, 2.1]  # magnetic tile, rare classes in some batches
    assert not diverging(noisy_start + [3.6], [3.6] * 10 + [3.5, 3.9, 4.4], 4.0), "one high first batch is no start"


def test_suggestions_on_a_known_curve():
    lrs = [10 ** (-6 + i / 4) for i in range(21)]  # 1e-6 .. 1e-1
    loss = [1.0] * 8 + [0.9, 0.7, 0.3, 0.2, 0.15, 0.1] + [0.5, 2, 5, 9, 9, 9, 9]  # steepest from lrs[9], min at lrs[13]
    at_min, steepest = suggest(lrs, loss)
    assert at_min == pytest.approx(lrs[13] / 10) and steepest == pytest.approx(lrs[9])
    assert smooth([2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0]), "bias-corrected: no pull towards 0"


def test_bad_arguments_are_usage_errors(thin_lines):
    with pytest.raises(UsageError, match="unknown rule"):
        lr_range_test(tiny(), [], torch.nn.CrossEntropyLoss(), rule="valley")
    with pytest.raises(UsageError, match="0 < start_lr < end_lr"):
        lr_range_test(tiny(), [], torch.nn.CrossEntropyLoss(), start_lr=1.0, end_lr=0.1)
