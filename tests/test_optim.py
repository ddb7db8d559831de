"""Optimisers and schedules by name: the learning rate at a few steps of a stage."""
from __future__ import annotations

import pytest
import torch

from toolkit.errors import UsageError
from toolkit.workbench.optim import make_optimizer, make_schedule
from toolkit.workbench.training import TrainConfig


def lrs(cfg: TrainConfig, total: int) -> list[float]:
    """The rate of each of ``total`` steps of a stage, and the one after its last."""
    opt = make_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = make_schedule(opt, cfg, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out + [opt.param_groups[0]["lr"]]


def test_cosine_warms_up_linearly_then_decays_to_lr_min():
    cfg = TrainConfig(schedule="cosine", optimizer="adamw", lr_min=1e-5, lr_max=1e-3, warmup_steps=10)
    r = lrs(cfg, 110)
    assert r[0] == pytest.approx(1e-5)
    assert r[5] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))  # halfway up
    assert r[10] == pytest.approx(1e-3) and max(r) == pytest.approx(1e-3)
    assert r[60] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))  # halfway down the cosine
    assert r[110] == pytest.approx(1e-5)
    assert all(a >= b for a, b in zip(r[10:], r[11:])), "no rise after the warm-up"


def test_onecycle_peaks_at_the_end_of_warmup_and_ends_below_lr_min():
    cfg = TrainConfig(schedule="onecycle", lr_min=1e-4, lr_max=1e-2, warmup_steps=20)
    r = lrs(cfg, 100)
    assert r[0] == pytest.approx(1e-4) and r[20] == pytest.approx(1e-2)
    assert r[100] == pytest.approx(1e-6)


def test_warmup_never_takes_more_than_half_a_short_stage():
    r = lrs(TrainConfig(schedule="cosine", lr_min=1e-4, lr_max=1e-2, warmup_steps=500), 40)
    assert r[20] == pytest.approx(1e-2) and r[40] == pytest.approx(1e-4)


def test_cyclic_is_the_research_schedule_whatever_the_stage_length():
    r = lrs(TrainConfig(clr_step=10, warmup_steps=5), 20)
    assert r[0] == pytest.approx(1e-4) and r[10] == pytest.approx(1e-2) and r[20] == pytest.approx(1e-4)


def test_optimizers_carry_their_settings():
    sgd = make_optimizer(torch.nn.Linear(2, 2), TrainConfig(momentum=0.9, weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 1e-4
    adamw = make_optimizer(torch.nn.Linear(2, 2), TrainConfig(optimizer="adamw", weight_decay=0.05, lr_min=3e-5))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.05
    assert adamw.param_groups[0]["lr"] == 3e-5, "unscheduled steps (gradual pruners) run at lr_min"


@pytest.mark.parametrize("field, value, message", [
    ("optimizer", "adam", "unknown optimizer 'adam'; known: sgd, adamw"),
    ("schedule", "step", "unknown schedule 'step'; known: cyclic, onecycle, cosine"),
])
def test_unknown_names_are_usage_errors(field, value, message):
    cfg = TrainConfig(**{field: value})
    with pytest.raises(UsageError, match=message):
        make_schedule(make_optimizer(torch.nn.Linear(2, 2), cfg), cfg, 10)


def test_an_unknown_stage_length_keeps_lr_min_for_onecycle_and_cosine():
    """Gradual pruners take steps a few at a time: no length to lay a cosine over."""
    for schedule in ("onecycle", "cosine"):
        cfg = TrainConfig(schedule=schedule, lr_min=1e-4, lr_max=1e-2)
        opt = make_optimizer(torch.nn.Linear(2, 2), cfg)
        sched = make_schedule(opt, cfg, 0)
        for _ in range(5):
            opt.step()
            sched.step()
        assert opt.param_groups[0]["lr"] == 1e-4
