"""NNI's structured pruners, with the channels removed physically by our graph surgery.

NNI 3.0's ``L1NormPruner``, ``L2NormPruner`` and ``FPGMPruner`` choose output
channels per layer and return masks; NNI's own ``ModelSpeedup``, which should
turn masks into a smaller model, crashes on torch 2.14 (its concrete tracer
reads ``func.__module__``, which is ``None`` for some torch functions). So NNI
chooses and ``toolkit.pruning.surgery`` removes: the masks become channel scores
(``MaskImportance``) and the dependency graph removes the lowest ones at the
requested rate, keeping residual sums, concatenations and depthwise convs
consistent. Where NNI masked coupled layers differently, the channels most of
them dropped go first.

Options: ``round_to`` and ``keep_residual`` as for the torch-pruning pruners.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

from torch import nn

from toolkit.contract import Option, PruneRequest, PruneResult, PrunerSpec
from toolkit.hookspecs import hookimpl
from toolkit.results.measure import count_flops, count_parameters
from toolkit.workbench.heads import output_layers
from toolkit.pruning.importances import MaskImportance, channel_mask
from toolkit.pruning.prunable import PRUNABLE
from toolkit.pruning.surgery import ChannelSurgery

BACKEND = "nni+torch-pruning"
METHODS = {
    "nni-l1": ("L1NormPruner", "NNI's L1-norm filter choice, removed physically"),
    "nni-l2": ("L2NormPruner", "NNI's L2-norm filter choice, removed physically"),
    "nni-fpgm": ("FPGMPruner", "NNI's geometric-median filter choice, removed physically"),
}


def nni_channel_masks(model: nn.Module, rate: float, pruner: str, exclude: list[str]) -> dict:
    """Per-layer output-channel keep masks chosen by an NNI norm pruner (the model is left unchanged)."""
    from nni.compression import pruning

    config = [{"op_types": ["Conv2d", "Linear"], "sparse_ratio": rate, "exclude_op_names": exclude}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nni_pruner = getattr(pruning, pruner)(model, config)
        try:
            _, masks = nni_pruner.compress()
        finally:
            nni_pruner.unwrap_model()
    return {name: channel_mask(m["weight"]) for name, m in masks.items() if m.get("weight") is not None}


@dataclass
class NNIChannelPruner:
    method: str
    round_to: int | None = None
    keep_residual: bool = False

    def prune(self, request: PruneRequest) -> PruneResult:
        model, x = request.model, request.example_inputs
        keep = {id(m) for layer in [*output_layers(model), *request.ignored_layers] for m in layer.modules()}
        exclude = [n for n, m in model.named_modules() if isinstance(m, PRUNABLE) and id(m) in keep]
        params0, flops0 = count_parameters(model), count_flops(model, x)
        masks = nni_channel_masks(model, request.amount, METHODS[self.method][0], exclude)
        surgery = ChannelSurgery(
            model, x, request.amount, MaskImportance(model, masks),
            ignored_layers=list(request.ignored_layers), round_to=self.round_to, keep_residual=self.keep_residual,
        )
        reached = surgery.step()
        params, flops = count_parameters(model), count_flops(model, x)
        return PruneResult(
            model=model,
            kind="structured",
            backend=BACKEND,
            sparsity=reached,
            history=[{"step": 1, "amount": request.amount, "reached": reached, "params": params, "flops": flops, "score": None}],
            meta={
                "nni_pruner": METHODS[self.method][0],
                "amount": request.amount,
                "round_to": self.round_to,
                "keep_residual": self.keep_residual,
                "masked_layers": len(masks),
                "params_before": params0,
                "params_after": params,
                "flops_before": flops0,
                "flops_after": flops,
            },
        )


OPTIONS = (
    Option("round_to", int, None, "keep channel counts multiples of this (e.g. 8)"),
    Option("keep_residual", bool, False, "leave summed (residual) channels whole, prune inside blocks"),
)


@hookimpl
def register_pruners(register: Callable[[PrunerSpec], None]) -> None:
    for name, (_, description) in METHODS.items():
        register(PrunerSpec(name=name, kind="structured", backend=BACKEND, description=description,
                            factory=lambda method=name, **o: NNIChannelPruner(method, **o), options=OPTIONS))
