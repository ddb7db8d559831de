"""round_to=auto: the deploy runtime's measured best multiple (ONNX Runtime's for a FLOP target when none is
named, none for a channel rate), and a multiple that cannot meet a target lowered to one that can, with a
warning in the row when the multiple was asked for."""
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


def prune(model: torch.nn.Module, target: str | None = "flops=0.5", **options):
    return create_pruner("fpgm", **options).prune(
        PruneRequest(model=model, example_inputs=X, amount=0.5, target=Target.parse(target) if target else None))


def test_auto_is_the_measured_best_of_the_runtime_deployed_on():
    # the table from benchmarks/results/runtime-latency.csv: 16 is fastest on both runtimes
    assert AUTO == {"onnxruntime": 16, "openvino": 16}
    assert all(table[16] == max(table.values()) for table in MEASURED_SPEEDUP.values())
    assert resolve_round_to("auto", "onnxruntime") == 16 and resolve_round_to("auto", "openvino") == 16
    assert resolve_round_to("auto", "eager") is None  # rounding was not faster in eager PyTorch
    assert resolve_round_to("auto", None) is None  # no runtime: no rounding
    assert resolve_round_to("8", "onnxruntime") == 8 and resolve_round_to("none", "onnxruntime") is None
    # which runtime: the one named for deployment, else a latency target's, else ONNX Runtime for a cost
    assert deployed_on("openvino", "onnxruntime", "latency") == "openvino"
    assert deployed_on("", "eager", "latency") == "eager"
    assert deployed_on("", "eager", "flops") == "onnxruntime" and deployed_on("", "eager", "params") == "onnxruntime"
    assert deployed_on("", "eager", None) is None and deployed_on("", "eager", "rate") is None
    with pytest.raises(UsageError, match="round_to must be auto, none or a positive channel count"):
        create_pruner("fpgm", round_to="0")
    with pytest.raises(UsageError, match="unknown deploy_runtime 'tensorrt'; use one of eager, onnxruntime"):
        create_pruner("fpgm", deploy_runtime="tensorrt")


def test_a_flops_target_rounds_for_onnxruntime_by_default_and_a_channel_rate_or_none_does_not():
    before, flops0 = channel_counts(tiny_linknet()), count_flops(tiny_linknet(), X)
    default = prune(tiny_linknet())
    assert create_pruner("fpgm").round_to == "auto" and default.meta["round_to"] == AUTO["onnxruntime"] == 16
    after = channel_counts(default.model)
    changed = [n for n in before if after[n] != before[n]]
    assert changed and all(after[n] % 16 == 0 for n in changed)
    assert reduction(flops0, count_flops(default.model, X)) == pytest.approx(0.5, abs=0.01)
    assert default.meta["warnings"] == []

    unrounded = prune(tiny_linknet(), round_to="none")
    assert unrounded.meta["round_to"] is None
    assert any(channel_counts(unrounded.model)[n] % 16 for n in changed)  # the uniform rate's own counts
    eager = prune(tiny_linknet(), deploy_runtime="eager")
    assert eager.meta["round_to"] is None and channel_counts(eager.model) == channel_counts(unrounded.model)

    by_rate, by_rate_unrounded = prune(tiny_linknet(), target=None), prune(tiny_linknet(), target=None, round_to="none")
    assert by_rate.meta["round_to"] is None  # a channel rate is the user's own statement per layer: not rounded
    assert channel_counts(by_rate.model) == channel_counts(by_rate_unrounded.model)


def test_auto_lowers_a_multiple_that_cannot_meet_the_target_without_a_warning():
    # at -90% FLOPs one multiple of 16 in each layer is already too much: auto uses a smaller one, quietly
    result = prune(tiny_linknet(), target="flops=0.9")
    assert result.meta["round_to"] in (8, 4, 2, 1) and result.meta["warnings"] == []
    asked = prune(tiny_linknet(), target="flops=0.9", round_to=16)
    assert asked.meta["round_to"] == result.meta["round_to"]
    assert asked.meta["warnings"] and asked.meta["warnings"][0].startswith("round_to=16 cannot reach flops=0.9")


def test_a_multiple_that_cannot_meet_the_target_falls_back_with_a_warning():
    # one multiple of 64 in every layer: the 64-channel layers stay whole and only 21% of the FLOPs can go
    flops0 = count_flops(tiny_linknet(), X)
    result = prune(tiny_linknet(), round_to=64)
    assert result.meta["round_to"] == 32
    assert reduction(flops0, count_flops(result.model, X)) == pytest.approx(0.5, abs=0.01)
    warning = "round_to=64 cannot reach flops=0.5 on this model (came to 21.2%): rounded to multiples of 32 instead"
    assert result.meta["warnings"] == [warning]
    assert warning in row_warnings({"target_met": True, "meta": result.meta})
