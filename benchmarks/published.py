"""FLOP and parameter reductions of FPGM on ResNet-50 / ResNeXt-50 / FPN-ResNeSt50, per definition of "pruning rate".

The steel-plate study prunes three models (its Table 5): ResNet-50, ResNeXt-50
(torchvision classifiers) and FPN-ResNeSt50 (smp FPN on timm's ``resnest50d``,
``--arch fpn --encoder tu-resnest50d``; 5 classes, Severstal's background + 4
defects). It reports, for FPGM at 40% on ResNet-50 (input 1x3x64x64),
48.81% fewer FLOPs and 48.43% fewer parameters. A rate can mean several things;
this script measures each definition the toolkit offers and says which one
comes closest to the published pair:

* ``every-conv``: every conv and linear layer loses ``rate`` of its output
  channels (``fc``'s class outputs kept) -- the toolkit's default;
* ``keep-residual``: the residual stream is kept, only channels inside blocks are
  pruned (the FPGM paper's convention);
* ``global``: ``rate`` of all channels, ranked across layers;
* ``global+keep-residual``: both;
* ``fc-input-kept``: every conv except the last stage's residual stream, which
  feeds ``fc`` (so ``fc``'s input is not pruned); classifiers only.

``channels_removed_%`` is the rate reached: under ``every-conv`` it is the
request on ResNet-50 but about two thirds of it on FPN-ResNeSt50, whose
split-attention convs (channels laid out by radix) keep their outputs.

Run:  .venv/bin/python benchmarks/published.py          (rates 0.1..0.5, 64 px; the two classifiers take
                                                         about a minute, FPN-ResNeSt50 about a minute a cell)
      .venv/bin/python benchmarks/published.py --full   (rates 0.05..0.6, also 224 px)
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import torch
from torch import nn

from common import csv_list, markdown, parser, pct, setup, stopwatch, write_csv
from toolkit.contract import PruneRequest
from toolkit.workbench.models import create_model, output_layers
from toolkit.plugins import create_pruner

PAPER = {"model": "resnet50", "rate": 0.4, "flops_red_%": 48.81, "params_red_%": 48.43}
MODELS = ["resnet50", "resnext50_32x4d", "fpn+tu-resnest50d"]
STEEL_CLASSES = 5  # Severstal: background + 4 defects; the segmentation head is never pruned
CLASSIFIER_ONLY = {"fc-input-kept"}  # definitions that name a classifier's layers


def build(name: str) -> nn.Module:
    """A classifier by its torchvision name, or ``ARCH+ENCODER`` for a segmentation model."""
    if "+" in name:
        arch, encoder = name.split("+", 1)
        return create_model(arch, encoder, num_classes=STEEL_CLASSES)
    return create_model(name, num_classes=1000)


def _fc_input(model: nn.Module) -> list[nn.Module]:
    """The last residual stage's output conv: ignoring it keeps its whole summed group, i.e. fc's input."""
    return [model.layer4[-1].conv3]


# definition -> (pruner options, extra ignored layers)
DEFINITIONS: dict[str, tuple[dict[str, Any], Callable[[nn.Module], list[nn.Module]]]] = {
    "every-conv": ({}, lambda m: []),
    "keep-residual": ({"keep_residual": True}, lambda m: []),
    "global": ({"global_pruning": True}, lambda m: []),
    "global+keep-residual": ({"global_pruning": True, "keep_residual": True}, lambda m: []),
    "fc-input-kept": ({}, _fc_input),
}


def measure(arch: str, definition: str, rate: float, side: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build(arch)
    options, extra = DEFINITIONS[definition]
    request = PruneRequest(model=model, example_inputs=torch.randn(1, 3, side, side), amount=rate,
                           ignored_layers=[*output_layers(model), *extra(model)])
    result = create_pruner("fpgm", **options).prune(request)
    m = result.meta
    return {"model": arch, "input": f"{side}x{side}", "definition": definition, "rate": rate,
            "channels_removed_%": pct(result.sparsity),
            "flops_red_%": pct(1 - m["flops_after"] / m["flops_before"]),
            "params_red_%": pct(1 - m["params_after"] / m["params_before"])}


def pivot(rows: list[dict]) -> list[dict]:
    """One line per model/input/definition; a cell per rate: 'FLOPs% / params%'."""
    table: dict[tuple, dict] = {}
    for r in rows:
        key = (r["model"], r["input"], r["definition"])
        line = table.setdefault(key, {"model": key[0], "input": key[1], "definition": key[2]})
        line[f"r={r['rate']:g}"] = f"{r['flops_red_%']:.2f} / {r['params_red_%']:.2f}"
    return list(table.values())


def matching_rate(rows: list[dict], model: str, side: str, definition: str) -> tuple[float | None, float | None]:
    """The rate (linearly interpolated) at which ``definition`` removes the published FLOP share, and the params removed there.

    Tells apart "the rate means something else" (a definition matches the pair at
    another rate) from "the counting differs" (no rate gives both numbers).
    """
    points = sorted((r["rate"], r["flops_red_%"], r["params_red_%"]) for r in rows
                    if (r["model"], r["input"], r["definition"]) == (model, side, definition))
    target = PAPER["flops_red_%"]
    for (r0, f0, p0), (r1, f1, p1) in zip(points, points[1:]):
        if f0 <= target <= f1 and f1 > f0:
            t = (target - f0) / (f1 - f0)
            return round(r0 + t * (r1 - r0), 3), round(p0 + t * (p1 - p0), 2)
    return None, None


def closest(rows: list[dict]) -> list[dict]:
    """Each definition's gap to the published pair (ResNet-50, rate 0.4), closest first."""
    found = []
    for r in rows:
        if r["model"] == PAPER["model"] and abs(r["rate"] - PAPER["rate"]) < 1e-9:
            df, dp = r["flops_red_%"] - PAPER["flops_red_%"], r["params_red_%"] - PAPER["params_red_%"]
            rate, params = matching_rate(rows, r["model"], r["input"], r["definition"])
            found.append({"input": r["input"], "definition": r["definition"], "flops_red_%": r["flops_red_%"],
                          "params_red_%": r["params_red_%"], "flops_gap": round(df, 2), "params_gap": round(dp, 2),
                          "max_abs_gap": round(max(abs(df), abs(dp)), 2),
                          f"rate_for_{PAPER['flops_red_%']}%_flops": rate, "params_red_%_there": params})
    return sorted(found, key=lambda f: f["max_abs_gap"])


def main() -> None:
    p = parser("published", __doc__.split("\n\n")[0])
    p.add_argument("--models", type=csv_list(str), default=MODELS)
    p.add_argument("--definitions", type=csv_list(str), default=list(DEFINITIONS))
    p.add_argument("--rates", type=csv_list(float), default=None, help="default 0.1..0.5; --full 0.05..0.6")
    p.add_argument("--sizes", type=csv_list(int), default=None, help="square input sides; default 64; --full 64,224")
    args = p.parse_args()
    args.rates = args.rates or ([round(0.05 * i, 2) for i in range(1, 13)] if args.full else [0.1, 0.2, 0.3, 0.4, 0.5])
    args.sizes = args.sizes or ([64, 224] if args.full else [64])
    line = setup(args)
    rows = []
    with stopwatch() as total:
        for side in args.sizes:
            for arch in args.models:
                for definition in args.definitions:
                    if "+" in arch and definition in CLASSIFIER_ONLY:
                        continue
                    for rate in args.rates:
                        rows.append(measure(arch, definition, rate, side))
                    print(f"  {arch} {side}px {definition} done", file=sys.stderr, flush=True)
    print("FPGM: FLOP reduction % / parameter reduction % (thop MACs; fc's class outputs never pruned)\n")
    print(markdown(pivot(rows)))
    gaps = closest(rows)
    if gaps:
        print(f"\nAgainst the published ResNet-50 at rate 0.4: {PAPER['flops_red_%']}% FLOPs, {PAPER['params_red_%']}% params fewer\n")
        print(markdown(gaps))
        best = gaps[0]
        print(f"\nClosest: {best['definition']} ({best['input']}): {best['flops_red_%']:.2f}% / {best['params_red_%']:.2f}%, "
              f"gap {best['flops_gap']:+.2f} / {best['params_gap']:+.2f} points. The last two columns: the rate at which "
              f"each definition removes {PAPER['flops_red_%']}% of the FLOPs (interpolated) and the params it removes there.")
    print(f"\nTotal {total[0]:.0f} s.")
    write_csv(rows, args.csv, line)


if __name__ == "__main__":
    main()
