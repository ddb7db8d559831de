"""A pruned model saved to a file comes back identical, without pickled code; ONNX agrees with PyTorch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from toolkit.errors import UsageError
from toolkit.results.measure import count_parameters
from toolkit.workbench.models import create_model
from toolkit.pruning.serialize import export_onnx, load_pruned, read_pruned, save_pruned
from toolkit.pruning import prune_channels

X = torch.randn(2, 3, 64, 64)



def pruned(arch: str, encoder: str) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(arch, encoder, num_classes=3).eval()
    return prune_channels(model, X[:1], 0.4, "fpgm").model


@pytest.mark.parametrize(("arch", "encoder"), [
    ("manet", "resnet18"),  # attention block with a width attribute in its forward
    ("unet", "tu-tf_efficientnet_lite0"),  # depthwise convs: groups change with the width
])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, arch, encoder):
    model = pruned(arch, encoder)
    path = save_pruned(model, tmp_path / "pruned.pt", recipe={"arch": arch, "encoder": encoder, "num_classes": 3},
                       meta={"pruner": "fpgm", "rate": 0.4})

    # the file is plain data and tensors: the safe loader reads it
    payload = torch.load(path, weights_only=True)
    assert payload["recipe"] == {"arch": arch, "encoder": encoder, "num_classes": 3}
    assert read_pruned(path)["meta"] == {"pruner": "fpgm", "rate": 0.4}

    loaded = load_pruned(path)
    assert count_parameters(loaded) == count_parameters(model) < count_parameters(create_model(arch, encoder, num_classes=3))
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))


def test_a_custom_builder_rebuilds_a_grouped_conv_model(tmp_path):
    def build(width: int, groups: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, width, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, groups=groups), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2, 1),
        )

    torch.manual_seed(0)
    model = build(64, 8).eval()
    prune_channels(model, X[:1], 0.5, "fpgm", ignored_layers=[model[-1]])
    path = save_pruned(model, tmp_path / "grouped.pt", recipe={"width": 64, "groups": 8})
    loaded = load_pruned(path, build=build)
    assert (loaded[3].in_channels, loaded[3].out_channels, loaded[3].groups) == (32, 32, 8)
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))


def test_recipe_must_be_plain_data(tmp_path):
    with pytest.raises(UsageError, match="recipe.build must be plain data"):
        save_pruned(nn.Conv2d(1, 1, 1), tmp_path / "x.pt", recipe={"build": create_model})


def test_a_file_from_elsewhere_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(nn.Conv2d(1, 1, 1).state_dict(), path)
    with pytest.raises(UsageError, match="not a pruned-model file"):
        load_pruned(path)


def test_a_file_that_does_not_fit_its_recipe_says_so(tmp_path):
    path = save_pruned(pruned("unet", "resnet18"), tmp_path / "p.pt", recipe={"arch": "fpn", "encoder": "resnet18", "num_classes": 3})
    with pytest.raises(UsageError, match="does not exist in the rebuilt model|does not fit"):
        load_pruned(path)


def test_onnx_export_of_a_pruned_model_matches_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = pruned("manet", "resnet18")
    path = export_onnx(model, X[:1], tmp_path / "pruned.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": X.numpy()})[0]  # batch 2 through the dynamic batch axis
    with torch.no_grad():
        want = model(X).numpy()
    assert got.shape == want.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
