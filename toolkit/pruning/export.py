"""Export a model (pruned or not) to ONNX and OpenVINO IR for the runtimes it is deployed with.

A leaf: it takes the model as it is and asks no registry, so the cost tables
and runtime timings can export without depending on the model factory.
"""
from __future__ import annotations

import importlib.util
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from toolkit.errors import UsageError


def export_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor,
    path: str | Path,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` (pruned or not) to ONNX with the TorchScript exporter.

    ``dynamo=False``: torch's default (dynamo) exporter needs the ``onnxscript``
    package, which the ``onnx`` extra does not install; the TorchScript
    exporter needs only ``onnx`` and handles smp and torchvision models (the
    tests compare onnxruntime's output with PyTorch's). Its deprecation
    warnings are silenced here because choosing it is deliberate.
    """
    if importlib.util.find_spec("onnx") is None:
        raise UsageError("ONNX export needs the onnx package: pip install 'toolkit[onnx]'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export.*", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            torch.onnx.export(
                model,
                (example_inputs,),
                str(path),
                input_names=["input"],
                output_names=["output"],
                opset_version=opset,
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
                dynamo=False,
            )
    finally:
        model.train(was_training)
    return path


def export_openvino(model: nn.Module, example_inputs: torch.Tensor, path: str | Path) -> Path:
    """Export ``model`` to OpenVINO IR (``.xml`` + ``.bin``), converted from the ONNX export
    above so both formats hold the same graph. Weights stay f32 (``save_model`` would halve them
    to f16 by default, which moves the outputs)."""
    try:
        import openvino as ov
    except ImportError:
        raise UsageError("OpenVINO export needs the openvino package: pip install 'toolkit[openvino]'") from None
    path = Path(path).with_suffix(".xml")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="toolkit-export-") as tmp:
        onnx_file = export_onnx(model, example_inputs, Path(tmp) / "model.onnx")
        ov.save_model(ov.convert_model(str(onnx_file)), str(path), compress_to_fp16=False)
    return path
