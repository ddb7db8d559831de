"""NNI chooses the channels, our dependency graph removes them (NNI's ModelSpeedup crashes on torch 2.14)."""
from __future__ import annotations

import copy

import pytest
import torch

import toolkit_plugins.nni_structured as nni_structured
from toolkit import PruneRequest
from toolkit.contract import check_result
from toolkit.results.measure import count_flops, count_parameters
from toolkit.workbench.models import create_model, output_layers
from toolkit.plugins import Registry

X = torch.randn(1, 3, 64, 64)



@pytest.fixture
def registry():
    reg = Registry(entry_points=False)
    reg.register(nni_structured, name="nni_structured")
    yield reg
    reg.unregister("nni_structured")


def test_nni_pruners_register_as_structured(registry):
    assert registry.list("nni-*") == ["nni-fpgm", "nni-l1", "nni-l2"]
    assert {registry.get(n).spec.kind for n in registry.list("nni-*")} == {"structured"}


@pytest.mark.parametrize("arch", ["unet", "manet"])
def test_nni_masks_become_a_physically_smaller_model(registry, arch):
    torch.manual_seed(0)
    model = create_model(arch, "resnet18").eval()
    dense = copy.deepcopy(model)
    params0, flops0 = count_parameters(model), count_flops(model, X)
    request = PruneRequest(model=model, example_inputs=X, amount=0.3, ignored_layers=output_layers(model))
    result = check_result(registry.create("nni-l1").prune(request))

    assert result.sparsity == pytest.approx(0.3, abs=0.01)
    assert count_parameters(result.model) < 0.6 * params0 and count_flops(result.model, X) < 0.6 * flops0
    with torch.no_grad():
        assert result.model(X).shape == (1, 2, 64, 64)

    # a layer coupled to no other loses every filter NNI masked (NNI masks int(64 * 0.3) = 19,
    # our rate removes 64 - int(64 * 0.7) = 20: one more, from the ones NNI kept)
    masks = nni_structured.nni_channel_masks(dense, 0.3, "L1NormPruner", exclude=["segmentation_head.0"])
    name = "encoder.layer1.0.conv1"
    stem, pruned_stem = dense.encoder.conv1.weight, result.model.encoder.conv1.weight
    kept_inputs = [i for i, f in enumerate(stem) if any(torch.equal(f, g) for g in pruned_stem)]
    nni_kept = dense.get_submodule(name).weight[masks[name]][:, kept_inputs]
    ours = result.model.get_submodule(name).weight
    assert (int(masks[name].sum()), ours.shape[0]) == (45, 44)
    assert all(any(torch.equal(f, g) for g in nni_kept) for f in ours)
