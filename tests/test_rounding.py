"""round_to=auto: the deploy runtime's measured best multiple, no rounding without a runtime (as before),
and a multiple that cannot meet a target lowered to one that can, with a warning in the row."""
from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch

from toolkit.contract import PruneRequest
from toolkit.errors import UsageError
from toolkit.plugins import create_pruner
from toolkit.pruning.rounding import AUTO, MEASURED_SPEEDUP, deployed_on, resolve_round_to
from toolkit.pruning.surgery import channel_counts
from toolkit.pruning.targets import Target
from toolkit.results.alerts import row_warnings
from toolkit.results.measure import count_flops, reduction

X = torch.randn(1, 3, 64, 64)


def tiny_linknet() -> torch.nn.Module:
    torch.manual_seed(0)
    return smp.Linknet("resnet18", encoder_weights=None, classes=2, encoder_depth=3).eval()


def prune(model: torch.nn.Module, target: str = "flops=0.5", **options):
    return create_pruner("fpgm", **options).prune(
        PruneRequest(model=model, example_inputs=X, amount=0.5, target=Target.parse(target)))


def test_auto_is_the_measured_best_of_the_runtime_deployed_on():
    # the table from benchmarks/results/runtime-latency.csv: 16 is fastest on both runtimes
    assert AUTO == {"onnxruntime": 16, "openvino": 16}
    assert all(table[16] == max(table.values()) for table in MEASURED_SPEEDUP.values())
    assert resolve_round_to("auto", "onnxruntime") == 16 and resolve_round_to("auto", "openvino") == 16
    assert resolve_round_to("auto", "eager") is None  # rounding was not faster in eager PyTorch
    assert resolve_round_to("auto", None) is None  # no runtime named: no rounding, as before auto
    assert resolve_round_to("8", "onnxruntime") == 8 and resolve_round_to("none", "onnxruntime") is None
    # which runtime: the one named for deployment, else a latency target's, never a FLOP target's
    assert deployed_on("openvino", "onnxruntime", "latency") == "openvino"
    assert deployed_on("", "onnxruntime", "latency") == "onnxruntime"
    assert deployed_on("", "onnxruntime", "flops") is None
    with pytest.raises(UsageError, match="round_to must be auto, none or a positive channel count"):
        create_pruner("fpgm", round_to="0")
    with pytest.raises(UsageError, match="unknown deploy_runtime 'tensorrt'; use one of eager, onnxruntime"):
        create_pruner("fpgm", deploy_runtime="tensorrt")


def test_a_plain_flops_target_prunes_as_without_rounding_and_a_deploy_runtime_rounds():
    default, unrounded = prune(tiny_linknet()), prune(tiny_linknet(), round_to="none")
    assert create_pruner("fpgm").round_to == "auto" and default.meta["round_to"] is None
    assert default.meta["search"] == unrounded.meta["search"]  # the same uniform-rate search, same weights
    same = zip(default.model.state_dict().items(), unrounded.model.state_dict().items())
    assert all(a == b and torch.equal(x, y) for (a, x), (b, y) in same)

    before, flops0 = channel_counts(tiny_linknet()), count_flops(tiny_linknet(), X)
    deployed = prune(tiny_linknet(), deploy_runtime="openvino")
    after = channel_counts(deployed.model)
    assert deployed.meta["round_to"] == 16
    assert reduction(flops0, count_flops(deployed.model, X)) == pytest.approx(0.5, abs=0.01)
    changed = [n for n in before if after[n] != before[n]]
    assert changed and all(after[n] % 16 == 0 for n in changed)


def test_a_multiple_that_cannot_meet_the_target_falls_back_with_a_warning():
    # one multiple of 64 in every layer: the 64-channel layers stay whole and only 21% of the FLOPs can go
    flops0 = count_flops(tiny_linknet(), X)
    result = prune(tiny_linknet(), round_to=64)
    assert result.meta["round_to"] == 32
    assert reduction(flops0, count_flops(result.model, X)) == pytest.approx(0.5, abs=0.01)
    warning = "round_to=64 cannot reach flops=0.5 on this model (came to 21.2%): rounded to multiples of 32 instead"
    assert result.meta["warnings"] == [warning]
    assert warning in row_warnings({"target_met": True, "meta": result.meta})
