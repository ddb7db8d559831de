"""What a "pruning rate" removes from ResNet-50, under the definitions papers use.

Prints the table (``pytest -s``) that the README compares with the steel-plate
study (40% on ResNet-50: 48.81% fewer FLOPs, 48.43% fewer parameters).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from toolkit.results.measure import count_flops, count_parameters, reduction
from toolkit.workbench.models import create_model
from toolkit.pruning.importances import GeometricMedianImportance
from toolkit.pruning.surgery import ChannelSurgery, channel_counts, channel_sparsity

X = torch.randn(1, 3, 64, 64)
RATES = (0.1, 0.2, 0.3, 0.4, 0.5)
STUDY_AT_40 = {"flops": 0.4881, "params": 0.4843}



def blocks(model: nn.Module) -> list[nn.Module]:
    return [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]


def kept_layers(model: nn.Module, definition: str) -> dict:
    """How a definition is asked for: layers it never prunes (the fc is never pruned), or keep_residual."""
    return {
        "every conv": {},
        "every conv but the stem": {"ignored_layers": [model.conv1]},
        "bottleneck inner convs + stem": {"keep_residual": True},
        "bottleneck inner convs only": {"keep_residual": True, "ignored_layers": [model.conv1]},
    }[definition]


DEFINITIONS = ["every conv", "every conv but the stem", "bottleneck inner convs + stem", "bottleneck inner convs only"]


def test_resnet50_reductions_by_rate_and_definition():
    rows = {}
    for definition in DEFINITIONS:
        model = create_model("resnet50").eval()
        params0, flops0 = count_parameters(model), count_flops(model, X)
        # one graph, five equal steps: after step k the rate is k * 10%, exactly as one-shot
        surgery = ChannelSurgery(model, X, max(RATES), GeometricMedianImportance(), steps=len(RATES), **kept_layers(model, definition))
        if "keep_residual" in kept_layers(model, definition):  # exactly ResNet's residual stream is kept
            residual = {b.conv3 for b in blocks(model)} | {b.downsample[0] for b in blocks(model) if b.downsample is not None}
            assert residual <= set(surgery.ignored) and not {b.conv1 for b in blocks(model)} & set(surgery.ignored)
        pruned_only = channel_counts(model, surgery.ignored)  # the layers this definition may prune
        for rate in RATES:
            reached = surgery.step()
            assert channel_sparsity(pruned_only, model) == pytest.approx(rate, abs=0.01)
            # the reported rate counts every layer but the classifier, the ones kept whole too
            assert reached <= channel_sparsity(pruned_only, model) + 1e-9
            if definition == "every conv":
                assert reached == pytest.approx(rate, abs=0.01)
            rows[definition, rate] = (reduction(flops0, count_flops(model, X)), reduction(params0, count_parameters(model)))
        with torch.no_grad():
            assert model(X).shape == (1, 1000)

    print("\nResNet-50, 3x64x64, FPGM, per-layer rate: fewer FLOPs / fewer parameters")
    print(f"{'definition':32s}" + "".join(f"{r:>16.0%}" for r in RATES))
    for definition in DEFINITIONS:
        cells = "".join(f"{rows[definition, r][0]:>8.2%}/{rows[definition, r][1]:<7.2%}" for r in RATES)
        print(f"{definition:32s}{cells}")
    print(f"{'steel-plate study':32s}{'':48s}{STUDY_AT_40['flops']:>8.2%}/{STUDY_AT_40['params']:<7.2%}")

    for definition in DEFINITIONS:
        flops = [rows[definition, r][0] for r in RATES]
        assert flops == sorted(flops) and flops[0] > 0.05
    # pruning the residual channels too removes far more than the rate itself suggests
    assert rows["every conv", 0.4][1] == pytest.approx(1 - 0.6**2, abs=0.03)
    assert rows["bottleneck inner convs only", 0.4][1] < rows["every conv", 0.4][1] - 0.1
