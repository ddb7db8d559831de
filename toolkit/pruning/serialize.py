"""Save and load structurally pruned models (ONNX and OpenVINO export: ``toolkit.pruning.export``).

A pruned model no longer matches the shapes its constructor builds, so its
``state_dict`` alone cannot be loaded into ``create_model(...)``. We save a
*recipe* instead: one ``torch.save`` file holding only plain data and tensors,

* ``recipe``: how to build the dense model (``arch``, ``encoder``,
  ``num_classes``, ``in_channels`` for ``toolkit.workbench.models.create_model``);
* ``layers``: each module's channel attributes after pruning (plain ints);
* ``state_dict``: the pruned weights;

and load it with ``torch.load(..., weights_only=True)``: build the dense model,
shrink every layer to the saved shapes, then ``load_state_dict(strict=True)``.

Why not ``torch.save(model)``: loading a pickled module runs code named in the
file (unsafe for files from elsewhere), and with ``weights_only=True`` it needs
an allow-list of every smp/timm/torchvision class in the model, which breaks
whenever those libraries rename a class. The recipe needs neither, and a file
that does not fit the model fails with a message instead of loading wrongly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from toolkit.errors import UsageError
from toolkit.pruning.export import export_onnx, export_openvino  # noqa: F401 - their old home
from toolkit.pruning.surgery import sync_channel_attributes

FORMAT = "toolkit-pruned-model/1"
# Instance attributes that record a layer's width; everything else comes from the tensors.
CHANNEL_ATTRS = (
    "in_channels", "out_channels", "groups", "in_features", "out_features",
    "num_features", "num_channels", "num_parameters", "normalized_shape", "pab_channels",
)


def layer_attributes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Plain-int width attributes of every module, by module name."""
    layers: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        found = {}
        for attr in CHANNEL_ATTRS:
            value = vars(m).get(attr)
            if isinstance(value, int) and not isinstance(value, bool):
                found[attr] = value
            elif isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
                found[attr] = list(value)
        if found:
            layers[name] = found
    return layers


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise UsageError(f"{where}: keys must be strings, got {k!r}")
            _check_plain(v, f"{where}.{k}")
        return
    raise UsageError(f"{where} must be plain data (numbers, strings, lists, dicts), got {type(value).__name__}")


def save_pruned(model: nn.Module, path: str | Path, recipe: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` so ``load_pruned`` can rebuild it from ``recipe`` alone.

    ``recipe`` holds the keyword arguments of ``create_model`` (or of the
    ``build`` function given to ``load_pruned``), e.g.
    ``{"arch": "unet", "encoder": "resnet18", "num_classes": 2}``.
    """
    _check_plain(dict(recipe), "recipe")
    _check_plain(dict(meta or {}), "meta")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "recipe": dict(recipe),
        "meta": dict(meta or {}),
        "layers": layer_attributes(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    torch.save(payload, path)
    return path


def read_pruned(path: str | Path) -> dict[str, Any]:
    """The saved payload, loaded without running any pickled code."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{path} is not a pruned-model file written by toolkit.pruning.serialize.save_pruned")
    return payload


def load_pruned(path: str | Path, build: Callable[..., nn.Module] | None = None) -> nn.Module:
    """Rebuild a model saved by ``save_pruned``: dense model from the recipe, shrunk, weights loaded.

    ``build(**recipe)`` makes the dense model; default ``toolkit.workbench.models.create_model``.
    """
    payload = read_pruned(path)
    if build is None:
        from toolkit.workbench.models import create_model

        build = create_model
    model = build(**payload["recipe"])
    shrink_to(model, payload["layers"], payload["state_dict"])
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise UsageError(f"{path} does not fit the model its recipe builds ({payload['recipe']}): {str(exc).splitlines()[0]}") from None
    return model.eval()


def read_file(path: str | Path, what: str = "model file") -> Any:
    """A file the toolkit wrote, loaded with ``weights_only`` (no pickled code runs); a missing or
    unreadable file is the user's to fix, in one line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UsageError(f"{path} is not a readable {what}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def load_model(path: str | Path) -> nn.Module:
    """Any model file the toolkit writes: a structurally pruned one (``save_pruned``), or a
    dense or unstructured checkpoint (``{"recipe", "model"}``, same shapes as the dense model)."""
    payload = read_file(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        return load_pruned(path)
    if isinstance(payload, dict) and {"recipe", "model"} <= payload.keys():
        from toolkit.workbench.models import create_model

        model = create_model(**payload["recipe"])
        model.load_state_dict(payload["model"])
        return model.eval()
    raise UsageError(f"{path} is not a model file written by toolkit (train, prune or compare)")


def shrink_to(model: nn.Module, layers: Mapping[str, Mapping[str, Any]], state_dict: Mapping[str, torch.Tensor]) -> None:
    """Give ``model``'s layers the saved widths and tensor shapes (values are loaded afterwards)."""
    modules = dict(model.named_modules())
    for name, attrs in layers.items():
        m = modules.get(name)
        if m is None:
            raise UsageError(f"saved layer {name!r} does not exist in the rebuilt model; was it built from the same recipe?")
        for attr, value in attrs.items():
            setattr(m, attr, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state_dict.items():
        owner, _, leaf = key.rpartition(".")
        m = modules.get(owner)
        if m is None:
            continue  # load_state_dict(strict=True) names it
        if leaf in m._parameters and m._parameters[leaf] is not None:
            old = m._parameters[leaf]
            if old.shape != tensor.shape:
                m._parameters[leaf] = nn.Parameter(torch.empty(tensor.shape, dtype=old.dtype), requires_grad=old.requires_grad)
        elif leaf in m._buffers and m._buffers[leaf] is not None:
            old = m._buffers[leaf]
            if old.shape != tensor.shape:
                m._buffers[leaf] = torch.empty(tensor.shape, dtype=old.dtype)
    sync_channel_attributes(model)
