"""The conformance kit: every built-in pruner passes it, and it catches pruners that break the contract."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from toolkit import PruneRequest, PruneResult, PrunerSpec, hookimpl, prune_channels
from toolkit.plugins import Registry
from toolkit.pruning.masking import apply_masks, masks_from_scores
from toolkit.pruning.prunable import prunable_weights
from toolkit.testing import ConformanceError, check_pruner

STRUCTURED = ["fpgm", "l1", "l2", "taylor", "lamp", "random", "nni-l1", "nni-l2", "nni-fpgm"]
UNSTRUCTURED = ["linear", "agp", "movement", "level"]
HAS_ORT = all(__import__("importlib").util.find_spec(m) for m in ("onnx", "onnxruntime"))


@pytest.mark.parametrize("name", STRUCTURED + UNSTRUCTURED)
def test_every_builtin_pruner_conforms(name):
    checked = check_pruner(name)
    assert [c.model for c in checked] == ["unet", "fpn", "manet", "resnext"]
    for c in checked:
        assert c.kind == ("structured" if name in STRUCTURED else "unstructured")
        assert c.claimed == pytest.approx(c.measured, abs=0.01) and c.measured > 0.3
    assert checked[0].onnx is (True if HAS_ORT else None) and all(c.onnx is None for c in checked[1:])


def test_keep_residual_claims_the_rate_the_core_measures():
    """Layers kept whole count in the rate (the core's definition), so the claim and the row agree."""
    check_pruner("l1", {"keep_residual": True}, models=("unet",), onnx=False)
    check_pruner("l1", {"protect": "first_conv,head"}, models=("fpn",), onnx=False)


# -- pruners that break the contract, one way each ----------------------------------------------
def _magnitude_masks(request: PruneRequest) -> dict[str, torch.Tensor]:
    weights = prunable_weights(request.model, request.ignored_layers)
    return masks_from_scores({n: w.abs() for n, w in weights.items()}, request.amount)


class Liar:
    """Prunes channels honestly but claims more than it removed."""

    def prune(self, request):
        result = prune_channels(request.model, request.example_inputs, request.amount, "l1",
                                ignored_layers=request.ignored_layers)
        return PruneResult(result.model, "structured", "toy", min(1.0, result.sparsity + 0.1))


class MasksOnly:
    """Returns masks but never writes the zeros into the weights."""

    def prune(self, request):
        masks = _magnitude_masks(request)
        return PruneResult(request.model, "unstructured", "toy", request.amount, masks=masks)


class ForgetsMasks:
    """Zeroes the weights but hands back masks that keep everything, so fine-tuning revives the zeros."""

    def prune(self, request):
        masks = _magnitude_masks(request)
        apply_masks(request.model, masks)
        kept = {n: torch.ones_like(m) for n, m in masks.items()}
        return PruneResult(request.model, "unstructured", "toy", request.amount, masks=kept)


class Breaks:
    """Narrows the first conv without touching what reads it: the model no longer runs."""

    def prune(self, request):
        model = request.model
        old = model.conv1
        model.conv1 = nn.Conv2d(old.in_channels, old.out_channels // 2, old.kernel_size, old.stride, old.padding, bias=False)
        return PruneResult(model, "structured", "toy", 0.0)


class WrongShape:
    """Returns something that is not a PruneResult."""

    def prune(self, request):
        return request.model


class ToyPlugin:
    @hookimpl
    def register_pruners(self, register):
        for name, kind, factory in [("liar", "structured", Liar), ("masks_only", "unstructured", MasksOnly),
                                    ("forgets_masks", "unstructured", ForgetsMasks), ("breaks", "structured", Breaks),
                                    ("wrong_shape", "structured", WrongShape)]:
            register(PrunerSpec(name, kind, "toy", "broken on purpose", factory))


@pytest.fixture(scope="module")
def toys():
    registry = Registry(entry_points=False)
    registry.register(ToyPlugin(), name="toys")
    return registry


@pytest.mark.parametrize("name, check, says", [
    ("liar", "claim", "claims 0.6000, the core measures 0.5000"),
    ("masks_only", "masks", "the zeros must be in the weights"),
    ("forgets_masks", "fine-tune", "the masks do not cover the zeros"),
    ("breaks", "runs", "the pruned model raises RuntimeError"),
    ("wrong_shape", "contract", "a pruner must return PruneResult"),
])
def test_the_kit_fails_a_broken_pruner_naming_the_check_and_model(toys, name, check, says):
    with pytest.raises(ConformanceError) as err:
        check_pruner(name, models=("resnext",), onnx=False, registry=toys)
    assert err.value.check == check and err.value.model == "resnext"
    assert f"pruner {name!r} fails {check!r} on resnext" in str(err.value) and says in str(err.value)
    assert isinstance(err.value, AssertionError), "pytest reports it as a failed assertion"
