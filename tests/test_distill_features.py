"""Feature-level distillation: the decoder's position-pair similarities, for any channel count."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from toolkit.errors import UsageError
from toolkit.pruning import prune_channels
from toolkit.workbench.distill import DistillConfig, affinity, distillation_objective, kd_loss, pairwise_loss
from toolkit.workbench.models import create_model


def test_affinity_ignores_how_many_channels_carry_the_features():
    torch.manual_seed(0)
    f = torch.randn(2, 8, 6, 6)
    assert affinity(f).shape == (2, 36, 36)
    assert torch.allclose(affinity(f), affinity(torch.cat([f, f], dim=1)), atol=1e-5)  # same directions, 16 channels
    assert torch.allclose(torch.diagonal(affinity(f), dim1=1, dim2=2), torch.ones(2, 36), atol=1e-5)
    assert pairwise_loss(f, torch.cat([f, f], dim=1)).item() == pytest.approx(0.0, abs=1e-8)
    assert pairwise_loss(f, torch.randn(2, 3, 6, 6)).item() > 0.01
    assert affinity(torch.randn(1, 4, 64, 64)).shape == (1, 32 * 32, 32 * 32), "large maps are pooled first"


def pruned_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher = create_model("fpn", "resnet18", num_classes=2)
    student = copy.deepcopy(teacher)
    prune_channels(student, torch.randn(1, 3, 64, 64), 0.5, "l1")
    assert student.segmentation_head[0].in_channels < teacher.segmentation_head[0].in_channels
    return teacher, student


def test_feature_kind_matches_decoder_features_of_a_pruned_student_and_leaves_the_logits_free():
    teacher, student = pruned_pair()
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 2, (2, 64, 64))
    task = nn.CrossEntropyLoss()
    features = distillation_objective(teacher, task, DistillConfig(True, kind="features"))
    both = distillation_objective(teacher, task, DistillConfig(True, kind="both"))
    logits = distillation_objective(teacher, task, DistillConfig(True, kind="logits"))
    student.eval()  # no dropout: every call sees the same student
    with torch.no_grad():
        plain = task(student(x), y).item()
        kd = kd_loss(student(x), teacher(x), 4.0).item()
        term = features(student, x, y).item() - plain
        assert term > 1e-4, "the pruned student's decoder relates positions differently"
        assert both(student, x, y).item() == pytest.approx(plain + kd + term, rel=1e-4)
        assert logits(student, x, y).item() == pytest.approx(plain + kd, rel=1e-4)
    loss = features(student, x, y)
    loss.backward()
    assert torch.isfinite(loss) and student.decoder.seg_blocks[0].block[0].block[0].weight.grad.abs().sum() > 0


def test_feature_distillation_trains_the_student_towards_the_teachers_decoder():
    teacher, student = pruned_pair()
    x = torch.randn(2, 3, 64, 64)
    no_task = lambda logits, y: logits.sum() * 0.0  # noqa: E731: only the teacher's term trains
    objective = distillation_objective(teacher, no_task, DistillConfig(True, kind="features"))
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)

    def term() -> float:  # without dropout, so before and after compare the weights alone
        student.eval()
        with torch.no_grad():
            return objective(student, x, None).item()

    before = term()
    for _ in range(10):
        student.train()
        optimizer.zero_grad()
        objective(student, x, None).backward()
        optimizer.step()
    assert term() < 0.7 * before, (before, term())  # measured: 0.0021 -> 0.0011


def test_distill_kind_is_checked_and_a_grid_variant_can_use_it(tmp_path):
    with pytest.raises(UsageError, match="distill.kind"):
        DistillConfig(True, kind="decoder").validate()
    from toolkit.runner.grid import load_grid, settings_of

    config = tmp_path / "grid.toml"
    config.write_text("""
plugins = ["l1", "l1-features"]
[variants.l1-features]
plugin = "l1"
distill = {enabled = true, kind = "features", decoder_weight = 2.0}
""")
    grid = load_grid(config)
    distill = settings_of(grid, "l1-features").distill
    assert (distill.enabled, distill.kind, distill.decoder_weight) == (True, "features", 2.0)
    assert not settings_of(grid, "l1").distill.enabled
