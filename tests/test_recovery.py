"""Recovering accuracy after structured pruning: distillation, sensitivity-aware rates,
protected layers, iterative pruning with short recoveries, per-stage training settings."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from toolkit import PruneRequest, create_pruner
from toolkit.cli import main
from toolkit.config import RunConfig
from toolkit.errors import UsageError
from toolkit.pruning.importances import NormImportance
from toolkit.pruning.protect import protected_layers
from toolkit.pruning.sensitivity import scan
from toolkit.results.measure import count_flops, reduction
from toolkit.workbench.distill import DistillConfig, distillation_objective, kd_loss
from toolkit.workbench.models import create_model, output_layers


# -- distillation ------------------------------------------------------------------------
def test_distillation_loss_is_zero_when_student_equals_teacher():
    logits = torch.randn(2, 4, 8, 8)
    assert kd_loss(logits, logits.clone(), temperature=4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits, torch.randn(2, 4, 8, 8), temperature=4.0).item() > 0.01


def test_distillation_gradient_moves_the_student_toward_the_teacher():
    torch.manual_seed(0)
    teacher = torch.randn(1, 3, 4, 4)
    student = torch.zeros(1, 3, 4, 4, requires_grad=True)
    kd_loss(student, teacher, temperature=2.0).backward()
    step = -student.grad  # gradient descent direction
    # per pixel, the class the teacher favours most gains, the one it favours least loses
    top, bottom = teacher.argmax(1, keepdim=True), teacher.argmin(1, keepdim=True)
    assert (step.gather(1, top) > 0).all() and (step.gather(1, bottom) < 0).all()
    before = kd_loss(student.detach(), teacher, 2.0)
    after = kd_loss(student.detach() + 0.5 * step, teacher, 2.0)
    assert after < before


def test_distillation_objective_adds_the_teachers_terms_to_the_task_loss():
    torch.manual_seed(0)
    teacher = nn.Conv2d(3, 2, 1)
    student = nn.Conv2d(3, 2, 1)
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 2, (2, 4, 4))
    task = nn.CrossEntropyLoss()
    plain = task(student(x), y).item()
    with_kd = distillation_objective(teacher, task, DistillConfig(enabled=True, weight=1.0))(student, x, y).item()
    assert with_kd == pytest.approx(plain + kd_loss(student(x), teacher(x), 4.0).item(), rel=1e-5)
    assert not any(p.requires_grad for p in teacher.parameters()), "the teacher is frozen"


def test_feature_distillation_works_when_pruning_changed_the_student_channels():
    teacher = create_model("unet", "resnet18", num_classes=2)
    student = create_model("unet", "resnet18", num_classes=2)
    from toolkit.pruning import prune_channels

    prune_channels(student, torch.randn(1, 3, 64, 64), 0.5, "l1")
    objective = distillation_objective(teacher, nn.CrossEntropyLoss(), DistillConfig(True, feature_weight=10.0))
    loss = objective(student, torch.randn(2, 3, 64, 64), torch.randint(0, 2, (2, 64, 64)))
    loss.backward()
    assert torch.isfinite(loss) and student.encoder.conv1.weight.grad is not None


# -- sensitivity ------------------------------------------------------------------------------
class TwoPaths(nn.Module):
    """Two parallel 1x1 conv branches summed at the output: ``vital`` carries the signal the
    score reads, ``spare`` only adds a tiny perturbation. Silencing ``vital`` breaks the model."""

    def __init__(self) -> None:
        super().__init__()
        self.vital = nn.Conv2d(2, 8, 1, bias=False)
        self.spare = nn.Conv2d(2, 8, 1, bias=False)
        self.vital_out = nn.Conv2d(8, 1, 1, bias=False)
        self.spare_out = nn.Conv2d(8, 1, 1, bias=False)
        with torch.no_grad():
            self.vital.weight.fill_(1.0)
            self.spare.weight.fill_(1.0)
            self.vital_out.weight.fill_(1.0)
            self.spare_out.weight.fill_(1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vital_out(torch.relu(self.vital(x))) + self.spare_out(torch.relu(self.spare(x)))


def test_sensitivity_scan_ranks_a_vital_layer_above_a_redundant_one():
    model = TwoPaths()
    x = torch.rand(4, 2, 5, 5)
    reference = model(x).detach()

    def score(m: nn.Module) -> float:  # closeness to the unpruned output, 1 = identical
        with torch.no_grad():
            return 1.0 - float((m(x) - reference).abs().mean() / reference.abs().mean())

    result = scan(model, x[:1], NormImportance(p=1), score, rates=(0.25, 0.5),
                  ignored_layers=[model.vital_out, model.spare_out])
    assert result.ranking()[0] == "vital"
    assert result.drops["vital"][1] > 0.3 > 0.01 > result.drops["spare"][1]
    assert torch.equal(model(x), reference), "the scan leaves the model as it was"
    assert result.rate_at("spare", 0.01, max_rate=0.9) > result.rate_at("vital", 0.01, max_rate=0.9)


def _request(model, sparsity=0.5, target=None, steps=1, interval=1, train=None, evaluate=None):
    return PruneRequest(model=model, example_inputs=torch.randn(1, 3, 64, 64), amount=sparsity, target=target,
                        train=train, evaluate=evaluate, ignored_layers=output_layers(model), pruning_steps=steps,
                        step_interval=interval)


def test_sensitivity_aware_rates_meet_a_flops_target_with_uneven_layers():
    from toolkit.pruning.targets import Target

    torch.manual_seed(0)
    model = create_model("linknet", "resnet18", num_classes=2).eval()
    x = torch.randn(2, 3, 64, 64)
    reference = model(x).detach()

    def evaluate(m, limit=None):
        with torch.no_grad():
            return -float((m(x) - reference).pow(2).mean())

    before = count_flops(model, x[:1])
    result = create_pruner("l1", sensitivity=True, sensitivity_rates="0.5,0.9").prune(
        _request(model, target=Target("flops", 0.5), evaluate=evaluate))
    assert reduction(before, count_flops(result.model, x[:1])) == pytest.approx(0.5, abs=0.01)
    rates = result.meta["layer_rates"]
    assert max(rates.values()) - min(rates.values()) > 0.2, "layers are pruned unevenly by their sensitivity"
    assert result.meta["search"]["most_sensitive"]


def test_protected_layers_stay_whole():
    model = create_model("unet", "resnet18", num_classes=2)
    x = torch.randn(1, 3, 64, 64)
    first = model.encoder.conv1
    feeders = protected_layers(model, x, ["head"])
    assert feeders and all(isinstance(m, nn.Conv2d) for m in feeders)
    widths = {id(m): m.out_channels for m in [first, *feeders]}
    create_pruner("l1", protect="first_conv,head").prune(_request(model))
    assert first.out_channels == widths[id(first)] == 64
    assert all(m.out_channels == widths[id(m)] for m in feeders)
    with pytest.raises(UsageError, match="cannot protect neck"):
        create_pruner("l1", protect="neck")


# -- iterative pruning with short recoveries ------------------------------------------------
def test_iterative_schedule_reaches_the_target_rate_in_the_stated_steps():
    model = create_model("fpn", "resnet18", num_classes=2)
    trained = []

    def train(m, steps, **kwargs):
        trained.append(steps)

    result = create_pruner("l2", iterative=True).prune(_request(model, sparsity=0.5, steps=4, interval=7, train=train))
    rates = [h["amount"] for h in result.history]
    assert rates == pytest.approx([0.125, 0.25, 0.375, 0.5])
    assert result.sparsity == pytest.approx(0.5, abs=0.03)
    assert trained == [7, 7, 7, 7], "a short recovery after every pruning step"


# -- per-stage settings and distillation in a run ---------------------------------------------
def test_stage_settings_override_training_for_one_stage():
    run = RunConfig()
    run.finetune = {"lr_max": 0.003, "batch_size": 8}
    run.validate()
    assert run.stage_train("finetune").lr_max == 0.003 and run.stage_train("finetune").batch_size == 8
    assert run.stage_train("prune").lr_max == run.train.lr_max
    run.finetune = {"lr_maxx": 1.0}
    with pytest.raises(UsageError, match="unknown setting 'lr_maxx'"):
        run.validate()


def test_prune_with_distillation_end_to_end(tmp_path):
    out = tmp_path / "run"
    code = main(["prune", "--arch", "linknet", "--plugin", "l1", "--target", "flops=0.5", "--distill",
                 "--encoder", "resnet18", "--image-size", "64", "--limit", "16", "--batch-size", "2",
                 "--steps-per-epoch", "2", "--epochs-train", "1", "--epochs-prune", "0", "--epochs-finetune", "1",
                 "--no-progress", "--device", "cpu", "--out", str(out)])
    assert code == 0
    row = json.loads((out / "result.json").read_text())
    assert row["distill"] is True and row["target_met"]
    assert row["steps_finetune"] == 2


def test_robust_recovery_peaks_at_a_tenth_of_training_and_explicit_rates_win():
    """A restart at the training's peak rate undoes what the dense model learnt (benchmarks/README.md):
    robust's prune and fine-tune stages peak at lr_max x 0.1; research's train as before."""
    from toolkit.config import lay_recipe

    run = RunConfig()
    lay_recipe(run.train, "robust")
    run.validate()
    assert run.stage_train("train").lr_max == pytest.approx(3e-3)
    assert run.stage_train("finetune").lr_max == pytest.approx(3e-4) == run.stage_train("prune").lr_max
    assert run.stage_train("finetune").lr_min <= run.stage_train("finetune").lr_max
    run.finetune = {"lr_max": 1e-3}
    assert run.stage_train("finetune").lr_max == 1e-3, "a stage's own lr_max is taken as it is"
    research = RunConfig()
    assert research.stage_train("finetune").lr_max == research.train.lr_max
    research.train.recovery_lr_scale = 0.0
    with pytest.raises(UsageError, match="recovery_lr_scale"):
        research.validate()


# -- BatchNorm recalibration after channel surgery ---------------------------------------------
def _bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def test_bn_recalibration_changes_running_statistics_but_no_weights_and_repeats_for_a_seed():
    import copy

    from toolkit.pruning import prune_channels
    from toolkit.runner.stages import open_workbench
    from toolkit.workbench.batchnorm import recalibrate_batchnorm

    settings = RunConfig(encoder="resnet18", image_size=64, limit=24)
    settings.train.batch_size = 4
    settings.validate()
    pruned = create_model("unet", "resnet18", num_classes=4)
    prune_channels(pruned, torch.randn(1, 3, 64, 64), 0.5, "l1")
    stale = _bn_state(pruned)
    weights = {k: v.clone() for k, v in pruned.named_parameters()}

    def recalibrated(seed):
        model = copy.deepcopy(pruned).eval()
        used = recalibrate_batchnorm(model, open_workbench(settings, "synthetic", seed).batches("bn-recalibration", 3))
        assert used == 3 and not model.training, "the model's mode is put back"
        return model

    model = recalibrated(0)
    fresh = _bn_state(model)
    changed = [k for k in stale if k.endswith("running_mean") and not torch.allclose(stale[k], fresh[k])]
    assert len(changed) > 0.9 * sum(k.endswith("running_mean") for k in stale), "every BatchNorm re-estimated"
    assert all(int(fresh[k]) == 3 for k in fresh if k.endswith("num_batches_tracked")), "cumulative over 3 batches"
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters()), "no weight moves"
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d)), "momentum put back"
    again, other = _bn_state(recalibrated(0)), _bn_state(recalibrated(1))
    assert all(torch.equal(fresh[k], again[k]) for k in fresh), "same seed, same statistics"
    assert any(not torch.allclose(fresh[k], other[k]) for k in fresh if "running_mean" in k), "another seed, other batches"
    # no batches: nothing is reset
    untouched = copy.deepcopy(pruned)
    assert recalibrate_batchnorm(untouched, iter(())) == 0
    assert all(torch.equal(v, stale[k]) for k, v in _bn_state(untouched).items())
