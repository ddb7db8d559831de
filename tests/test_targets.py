"""Cost-matched targets: 'remove half the FLOPs' means that, measured, for every method."""
from __future__ import annotations

import time

import pytest
import torch

from toolkit.errors import UsageError
from toolkit.pruning import prune_channels
from toolkit.pruning.targets import Target, find_rate, met
from toolkit.results.measure import count_flops, count_parameters, reduction
from toolkit.runner.grid import load_grid, run_grid
from toolkit.workbench.models import create_model


@pytest.mark.parametrize("text,kind,value", [
    ("0.5", "sparsity", 0.5), (0.25, "sparsity", 0.25), ("rate=0.3", "rate", 0.3), ("flops=0.5", "flops", 0.5),
    ("FLOPS = 50%", "flops", 0.5), ("params=0.75", "params", 0.75), ("latency=0.4", "latency", 0.4),
])
def test_targets_read_as_written(text, kind, value):
    target = Target.parse(text)
    assert (target.kind, target.value) == (kind, pytest.approx(value))


@pytest.mark.parametrize("text,message", [
    ("energy=0.5", "unknown target kind .energy."), ("flops=1.2", "fraction to remove in .0, 1."),
    ("flops=half", "cannot read target"), ("-0.1", "fraction to remove"),
])
def test_bad_targets_say_what_to_write(text, message):
    with pytest.raises(UsageError, match=message):
        Target.parse(text)


def test_a_rate_is_only_for_structured_pruners():
    assert Target.parse("0.5").for_pruner("structured") == Target("rate", 0.5)
    assert Target.parse("0.5").for_pruner("unstructured") == Target("sparsity", 0.5)
    with pytest.raises(UsageError, match="structured pruning rate"):
        Target.parse("rate=0.5").for_pruner("unstructured")


def test_find_rate_meets_a_monotone_cost_within_half_a_point():
    calls = []

    def quadratic(rate):  # what uniform channel pruning does to a chain of convs
        calls.append(rate)
        return 1 - (1 - rate) ** 2 * 0.97 - 0.03 * (1 - rate)

    rate, reached, trials = find_rate(quadratic, 0.6)
    assert abs(reached - 0.6) <= 0.005 and met(Target("flops", 0.6), reached)
    assert len(calls) <= 6


MODELS = ["unet", "unetplusplus", "fpn", "linknet", "manet", "resnet50", "resnext50_32x4d"]


@pytest.mark.parametrize("arch", MODELS)
def test_flops_target_is_met_within_one_point_on_every_architecture(arch):
    torch.manual_seed(0)
    model = create_model(arch, "resnet18", num_classes=2).eval()
    x = torch.randn(1, 3, 64, 64)
    before = count_flops(model, x)
    start = time.perf_counter()
    result = prune_channels(model, x, target="flops=0.5", importance="l1")
    reached = reduction(before, count_flops(model, x))
    assert reached == pytest.approx(0.5, abs=0.01), f"{arch}: {reached:.4f} after {result.meta['search']['trials']}"
    assert result.meta["search"]["reached"] == pytest.approx(reached)
    assert time.perf_counter() - start < 120
    with torch.no_grad():
        assert model(x).shape[0] == 1


def test_params_target(tmp_path):
    model = create_model("linknet", "resnet18", num_classes=2)
    x = torch.randn(1, 3, 64, 64)
    before = count_parameters(model)
    prune_channels(model, x, target="params=0.6", importance="fpgm")
    assert reduction(before, count_parameters(model)) == pytest.approx(0.6, abs=0.01)


def test_a_grid_at_a_flops_target_says_which_methods_reach_it(tmp_path, monkeypatch):
    """Structured pruners and the narrow baseline reach it; an unstructured pruner keeps dense
    kernels and its row says plainly that it removed no FLOPs. Every cell has the same budget.
    The narrow model, trained from scratch, trains at the dense training's rate, not the recovery rate."""
    import toolkit.runner.cell as cell_module

    run = {"encoder": "resnet18", "image_size": 64, "limit": 16, "epochs_train": 1, "epochs_prune": 1,
           "epochs_finetune": 1, "pruning_steps": 2, "latency_runs": 2, "latency_runtimes": ["eager"], "device": "cpu",
           "train": {"batch_size": 2, "max_steps_per_epoch": 2, "progress": False, "lr_max": 0.01},
           "finetune": {"lr_max": 1e-4}}
    grid = load_grid(None, archs=["fpn"], plugins=["l1", "narrow", "level", "dense"], targets=["flops=0.5"],
                     plugin_targets={"dense": ["0"]}, datasets=["synthetic"], examples=0, run=run)
    peak_rate = {}
    real_stage = cell_module.finetune_stage

    def spy(trainer, result, steps, folder):
        peak_rate[folder.name.split("__")[2]] = trainer.cfg.lr_max
        return real_stage(trainer, result, steps, folder)

    monkeypatch.setattr(cell_module, "finetune_stage", spy)
    rows = {r["plugin"]: r for r in run_grid(grid, tmp_path).values()}
    assert peak_rate == {"l1": 1e-4, "narrow": 0.01, "level": 1e-4, "dense": 1e-4}
    assert all(r["status"] == "ok" for r in rows.values()), {p: r.get("error") for p, r in rows.items()}
    assert rows["l1"]["flops_reduction"] == pytest.approx(0.5, abs=0.01) and rows["l1"]["target_met"]
    assert rows["narrow"]["flops_reduction"] == pytest.approx(0.5, abs=0.05) and rows["narrow"]["from_scratch"]
    assert rows["level"]["target_kind"] == "flops" and rows["level"]["reached"] == 0.0
    assert not rows["level"]["target_met"] and rows["level"]["zero_fraction_pruned"] == pytest.approx(0.5, abs=0.01)
    assert len({r["budget_steps"] for r in rows.values()}) == 1, {p: r["budget_steps"] for p, r in rows.items()}
    assert rows["narrow"]["steps_finetune"] == rows["l1"]["steps_finetune"] + rows["l1"]["steps_train"]
    dense = rows["dense"]  # the unpruned model trained on for the same budget: the fair control
    assert dense["params_pruned"] == dense["params_dense"] and dense["target"] == 0.0 and dense["target_met"]
