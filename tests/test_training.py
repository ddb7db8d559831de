"""The workbench's training pieces: models, Tversky loss, IoU, CLR, EMA, checkpoints."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from toolkit.workbench.data import load_splits
from toolkit.workbench.metrics import iou
from toolkit.workbench.models import create_model, list_models
from toolkit.workbench.optim import make_optimizer, make_schedule
from toolkit.workbench.training import TrainConfig, Trainer, ema, run_steps

TINY = dict(encoder="resnet18", num_classes=4)


def fixed_batch(n: int = 4, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the built-in synthetic corrosion images (4 classes)."""
    splits = load_splits("synthetic", image_size=size, limit=12, augment=False)
    pairs = [splits.train[i] for i in range(n)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


@pytest.mark.parametrize("arch", list_models(task="segmentation"))
def test_every_architecture_learns_a_fixed_batch(arch):
    torch.manual_seed(0)
    x, y = fixed_batch()
    ds = TensorDataset(x, y)
    trainer = Trainer(ds, ds, 4, TrainConfig(batch_size=4, lr_min=0.01, momentum=0.9, progress=False))
    model = create_model(arch, **TINY)
    model.train()
    opt = make_optimizer(model, trainer.cfg)
    losses = run_steps(model, opt, 6, lambda m: trainer.batch_loss(m, x, y))
    first, last = losses[0], losses[-1]
    assert last < first, f"{arch}: Tversky loss did not decrease ({first:.4f} -> {last:.4f})"
    assert model(x).shape == (4, 4, 64, 64)


def test_iou_against_hand_checked_masks():
    truth = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [0, 0, 0, 0]]])
    pred = torch.tensor([[[0, 0, 1, 0], [0, 0, 1, 1], [2, 2, 0, 0], [0, 0, 0, 0]]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    result = iou(logits, truth, 3)
    # background: 8 shared of 11 in the union; class 1: 3 of 4; class 2: 2 of 4
    assert result.per_class == pytest.approx([8 / 11, 3 / 4, 2 / 4])
    assert result.mean == pytest.approx((3 / 4 + 2 / 4) / 2), "background is out of the mean by default"
    assert iou(logits, truth, 3, include_background=True).mean == pytest.approx((8 / 11 + 3 / 4 + 2 / 4) / 3)


def test_absent_class_has_no_iou_and_is_left_out_of_the_mean():
    truth = torch.zeros(1, 2, 2, dtype=torch.long)
    truth[0, 0, 0] = 1
    logits = torch.nn.functional.one_hot(truth, 3).permute(0, 3, 1, 2).float()
    result = iou(logits, truth, 3)
    assert math.isnan(result.per_class[2]) and result.mean == 1.0


def test_cyclical_lr_goes_from_min_to_max_in_step_iterations():
    cfg = TrainConfig(clr_step=10)
    opt = make_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = make_schedule(opt, cfg)
    lrs = []
    for _ in range(21):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4) and lrs[10] == pytest.approx(1e-2) and lrs[20] == pytest.approx(1e-4)
    assert opt.param_groups[0]["momentum"] == 0.5


def test_ema_follows_the_papers_alpha():
    assert ema([1.0, 0.0, 0.0], 0.1) == pytest.approx([1.0, 0.9, 0.81])


def test_fit_writes_checkpoints_and_resumes(tmp_path):
    torch.manual_seed(0)
    x, y = fixed_batch(n=4, size=32)
    ds = TensorDataset(x, y)
    cfg = TrainConfig(batch_size=2, progress=False)
    model = create_model("fpn", **TINY)
    history = Trainer(ds, ds, 4, cfg).fit(model, 1, "train", tmp_path)
    assert [h.epoch for h in history] == [1]
    assert (tmp_path / "train_last.pt").exists() and (tmp_path / "train_metrics.csv").exists()
    state = torch.load(tmp_path / "train_last.pt", weights_only=True)
    assert state["epoch"] == 1
    # A second call asking for 2 epochs resumes at epoch 2 instead of starting over.
    again = create_model("fpn", **TINY)
    resumed = Trainer(ds, ds, 4, cfg).fit(again, 2, "train", tmp_path)
    assert [h.epoch for h in resumed] == [1, 2]
    assert resumed[0].val_iou == history[0].val_iou
    # ... and ends exactly where two epochs without a break end: each epoch draws from its own seed.
    torch.manual_seed(0)
    straight = create_model("fpn", **TINY)
    Trainer(ds, ds, 4, cfg).fit(straight, 2, "train", tmp_path / "straight")
    for key, value in straight.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_balanced_sampling_draws_every_stratum_equally_often():
    from collections import Counter

    from toolkit.workbench.data.dataset import SegmentationDataset

    n = 40
    strata = ["free"] * 36 + ["crack"] * 4  # a rare class, as in the magnetic tile set
    ds = SegmentationDataset(
        torch.zeros(n, 64, 64, 3, dtype=torch.uint8).numpy(), torch.zeros(n, 64, 64, dtype=torch.uint8).numpy(),
        [f"im{i}" for i in range(n)], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), strata=strata,
    )
    trainer = Trainer(ds, ds, 2, TrainConfig(batch_size=4, sampling="balanced", progress=False))
    drawn = Counter(strata[i] for _ in range(50) for i in trainer.train_loader.sampler)
    assert 0.4 < drawn["crack"] / sum(drawn.values()) < 0.6, drawn
    uniform = Trainer(ds, ds, 2, TrainConfig(batch_size=4, progress=False))
    assert uniform.train_loader.sampler.__class__.__name__ == "RandomSampler"


def test_step_calls_keep_one_optimizer_until_the_parameters_change():
    """Gradual pruners train a few steps at a time: SGD momentum must carry over."""
    import copy

    x, y = fixed_batch(n=2, size=32)
    ds = TensorDataset(x, y)
    trainer = Trainer(ds, ds, 4, TrainConfig(batch_size=2, momentum=0.9, progress=False))
    model = create_model("linknet", **TINY)
    trainer(model, 1)
    first, schedule = trainer._optimizer_for(model)
    assert first.state, "no momentum buffers after a step"
    trainer(model, 1)
    assert trainer._optimizer_for(model)[0] is first
    assert schedule.scheduler.last_epoch == 2, "the learning-rate schedule goes on across calls"
    other = copy.deepcopy(model)  # new parameters, as after channel surgery
    assert trainer._optimizer_for(other)[0] is not first


def test_schedule_goes_on_across_channel_surgery():
    """A pruner that calls the trainer step by step and replaces layers (channel removal) gets a new
    optimiser, but the stage's cosine schedule continues where it was instead of warming up again."""
    x, y = fixed_batch(n=4, size=32)
    ds = TensorDataset(x, y)
    cfg = TrainConfig(batch_size=4, optimizer="adamw", schedule="cosine", lr_min=1e-5, lr_max=1e-3, warmup_steps=2,
                      progress=False)

    def lr_after(surgery_at: int | None) -> list[float]:
        torch.manual_seed(0)
        model = create_model("fpn", **TINY)
        trainer = Trainer(ds, ds, 4, cfg, stage_steps=8)
        seen = []
        for step in range(6):
            if step == surgery_at:  # a layer replaced by one of another width, as surgery does
                model.segmentation_head[0] = torch.nn.Conv2d(model.segmentation_head[0].in_channels, 4, 1)
            trainer(model, 1, after_step=lambda m, i: seen.append(trainer._optimizer[2].param_groups[0]["lr"]))
        return seen

    straight, cut = lr_after(None), lr_after(3)
    assert cut == pytest.approx(straight), "the learning rate follows one schedule over the whole stage"
    assert max(straight) == pytest.approx(1e-3, rel=0.2) and straight[-1] < straight[2]


def test_val_every_skips_validation_but_not_a_single_weight(tmp_path):
    """Validating every 3rd epoch (and the last) gives the same model as validating every epoch."""
    x, y = fixed_batch(n=4, size=32)
    ds = TensorDataset(x, y)
    runs = {}
    for every in (1, 3):
        torch.manual_seed(0)
        model = create_model("fpn", **TINY)
        cfg = TrainConfig(batch_size=2, progress=False, val_every=every)
        runs[every] = (model, Trainer(ds, ds, 4, cfg).fit(model, 4, "train", tmp_path / str(every)))
    (dense, each), (sparse, thinned) = runs[1], runs[3]
    for key, value in dense.state_dict().items():
        assert torch.equal(value, sparse.state_dict()[key]), key
    assert [math.isnan(h.val_iou) for h in thinned] == [True, True, False, False], "epoch 3 and the last"
    assert thinned[2].val_iou == each[2].val_iou and thinned[3].val_iou == each[3].val_iou
    assert thinned[0].val_iou_per_class == [] and not math.isnan(thinned[3].val_iou_ema)
    assert [h.loss for h in thinned] == [h.loss for h in each]


def test_val_every_must_be_a_positive_whole_number():
    from toolkit.config import check_train
    from toolkit.errors import UsageError

    for bad in (0, -2, 1.5):
        with pytest.raises(UsageError, match="val-every"):
            check_train(TrainConfig(val_every=bad), 64)
