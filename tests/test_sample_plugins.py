"""A third-party package with a structured criterion, a dataset format and an architecture,
pip-installed as a user installs it (``tests/sample_structured_plugin``), used end to end."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from plugin_helpers import installed_plugins  # noqa: F401 - a fixture
from toolkit import PruneRequest, create_model, create_pruner, prune_channels
from toolkit.cli import main
from toolkit.errors import DataError
from toolkit.pruning.serialize import load_model, save_pruned
from toolkit.pruning.surgery import channel_counts, channel_sparsity
from toolkit.results.measure import count_parameters
from toolkit.testing import check_pruner
from toolkit.workbench.data import load_splits, parse_source
from toolkit.workbench.models import DEFAULT_ENCODER, output_layers


def make_pairs(root: Path, count: int = 12, side: int = 64) -> Path:
    """``img_XXX.png`` + ``mask_XXX.png``: noise with a bright square that is the defect."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = rng.integers(0, 120, (side, side, 3), dtype=np.uint8)
        mask = np.zeros((side, side), np.uint8)
        y, x = rng.integers(0, side // 2, 2)
        image[y:y + side // 4, x:x + side // 4] += 120
        mask[y:y + side // 4, x:x + side // 4] = 1
        Image.fromarray(image).save(root / f"img_{i:03d}.png")
        Image.fromarray(mask, mode="L").save(root / f"mask_{i:03d}.png")
    return root


def test_compare_runs_the_plugins_criterion_dataset_and_architecture(installed_plugins, tmp_path):
    data, out = make_pairs(tmp_path / "pairs"), tmp_path / "compare"
    assert main(["compare", "--plugins", "bn_scale,sample_magnitude", "--archs", "small_unet",
                 "--datasets", f"pairs:{data}", "--sparsities", "0.5", "--epochs", "1", "--image-size", "64",
                 "--limit", "12", "--batch-size", "2", "--steps-per-epoch", "2", "--no-progress", "--out", str(out)]) == 0
    rows = {r["plugin"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert {p: r["status"] for p, r in rows.items()} == {"bn_scale": "ok", "sample_magnitude": "ok"}
    structured, unstructured = rows["bn_scale"], rows["sample_magnitude"]
    assert structured["kind"] == "structured" and structured["arch"] == "small_unet"
    assert structured["channel_rate"] == pytest.approx(0.5, abs=0.05) and structured["reached"] == structured["channel_rate"]
    assert structured["params_pruned"] < 0.5 * structured["params_dense"]
    assert unstructured["zero_fraction_pruned"] == pytest.approx(0.5, abs=0.01), "zeros survive fine-tuning"
    assert structured["class_names"] == ["background", "defect"]
    model = load_model(next(out.rglob("*bn_scale*/pruned.pt")))  # rebuilt by name through the plugin's ModelSpec
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    assert (out / "report.md").exists()


@pytest.mark.parametrize("arch, encoder, side", [("manet", DEFAULT_ENCODER, 128), ("resnext50_32x4d", None, 224)])
def test_plugin_criterion_prunes_full_size_manet_and_resnext50_within_a_minute(installed_plugins, arch, encoder, side):
    torch.manual_seed(0)
    model = create_model(arch, encoder or DEFAULT_ENCODER).eval()
    before, params, x = channel_counts(model), count_parameters(model), torch.randn(1, 3, side, side)
    with torch.no_grad():
        shape = model(x).shape
    t0 = time.perf_counter()
    result = create_pruner("bn_scale").prune(PruneRequest(model, x, 0.4, ignored_layers=output_layers(model)))
    seconds = time.perf_counter() - t0
    assert seconds < 60, f"{arch}: {seconds:.0f} s"
    assert channel_sparsity(before, result.model) == pytest.approx(result.sparsity) and result.sparsity > 0.3
    assert count_parameters(result.model) < 0.75 * params
    with torch.no_grad():
        assert result.model(x).shape == shape


def small_unet() -> torch.nn.Module:
    return create_model("small_unet", num_classes=2)


def test_conformance_kit_passes_the_sample_plugins(installed_plugins):
    checked = check_pruner("bn_scale", models=("unet", "fpn", "manet", "resnext", small_unet))
    assert [c.model for c in checked] == ["unet", "fpn", "manet", "resnext", "small_unet"]
    assert all(c.measured > 0.2 for c in checked)
    check_pruner("sample_magnitude", models=("unet", "resnext", small_unet), onnx=False)


def test_plugin_architecture_keeps_its_declared_output_layer(installed_plugins, tmp_path):
    model = create_model("small_unet", num_classes=3).eval()
    assert output_layers(model) == [model.head], "from the plugin's ModelSpec, not smp's names"
    x = torch.randn(2, 3, 32, 32)
    prune_channels(model, x[:1], 0.5, "l1")  # no ignored_layers given: the core keeps the head itself
    assert model.head.out_channels == 3 and model.head.in_channels == 8
    path = save_pruned(model, tmp_path / "pruned.pt", {"arch": "small_unet", "encoder": "resnet18", "num_classes": 3})
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(x), model(x))


@pytest.mark.parametrize("spoil, says", [
    (lambda root: (root / "mask_003.png").unlink(), "mask_003.png: file not found"),
    (lambda root: Image.new("L", (8, 8)).save(root / "mask_003.png"), "mask_003.png: mask is 8x8 but its image img_003.png is 16x16"),
    (lambda root: Image.new("L", (16, 16), 5).save(root / "mask_003.png"), "mask_003.png: class id 5 out of range"),
    (lambda root: (root / "img_003.png").write_bytes(b"not a png"), "img_003.png: cannot read image"),
])
def test_plugin_dataset_obeys_the_core_bad_input_rules(installed_plugins, tmp_path, spoil, says):
    root = make_pairs(tmp_path / "pairs", count=8, side=16)
    assert parse_source(str(root)) == ("pairs", str(root)), "a bare folder is recognised by the plugin"
    assert load_splits(f"pairs:{root}", image_size=16).num_classes == 2
    spoil(root)
    with pytest.raises(DataError, match="pass --skip-bad") as err:
        load_splits(f"pairs:{root}", image_size=16)
    assert says in str(err.value)
    splits = load_splits(f"pairs:{root}", image_size=16, skip_bad=True)
    assert [Path(file).name for file, _ in splits.skipped] == ["img_003.png"]
    assert len(splits.train) + len(splits.val) + len(splits.test) == 7


def test_criterion_declaring_needs_gradients_on_its_class_prunes_with_gradients(installed_plugins):
    """``bn_gradient`` says ``needs_gradients = True`` on its class only: it gets backward passes."""
    import torch.nn.functional as F

    from toolkit.errors import PruningError

    torch.manual_seed(0)
    model, x = small_unet(), torch.randn(4, 3, 32, 32)
    y = (x[:, 0] > 0).long()
    backward_passes = []

    def train(model, steps, *, optimizer=None, after_backward=None, after_step=None):
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            backward_passes.append(after_backward)
            if after_backward:
                after_backward(model)
            optimizer.step()

    with pytest.raises(PruningError, match="needs training data for its gradients"):
        create_pruner("bn_gradient").prune(PruneRequest(model, x[:1], 0.5, ignored_layers=output_layers(model)))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    before = channel_counts(model)
    result = create_pruner("bn_gradient", taylor_steps=3).prune(
        PruneRequest(model, x[:1], 0.5, ignored_layers=output_layers(model), train=train))
    assert len(backward_passes) == 3 and all(callable(a) for a in backward_passes), "accumulate after each pass"
    assert channel_sparsity(before, result.model) == pytest.approx(0.5, abs=0.07)
    assert result.model(x).shape == (4, 2, 32, 32)
    assert torch.equal(result.model.head.bias, weights["head.bias"]), "the zero learning rate kept the weights"
