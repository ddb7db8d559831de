"""Real CPU speedup of structured pruning against its theoretical (FLOP) speedup.

For each architecture, encoder and input size: the dense model, then fpgm / l1 /
taylor at each pruning rate (the fraction of output channels removed from every
prunable layer, see ``toolkit.pruning.surgery``). Columns:

* ``flop_speedup`` = dense MACs / pruned MACs (what FLOP counts promise);
* ``speedup`` = dense median latency / pruned median latency (PyTorch eager, CPU);
* ``ratio`` = speedup / flop_speedup: 1 means latency fell as much as FLOPs,
  below 1 means less real speedup than promised;
* ``ort_*``: the same with onnxruntime on the exported models (same thread count).

Run:  .venv/bin/python benchmarks/speedup.py            (a few minutes on 2 cores)
      .venv/bin/python benchmarks/speedup.py --full     (resnet18+resnet101, 512x512 and 256x1600)
      .venv/bin/python benchmarks/speedup.py --round-to none,8,16 --archs unet --methods l1
"""
from __future__ import annotations

import copy
import sys
from typing import Any

import torch
from torch import nn

from common import csv_list, has_onnxruntime, markdown, ort_latency_ms, parser, pct, setup, stopwatch, write_csv
from toolkit.contract import PruneRequest
from toolkit.results.measure import count_flops, count_parameters, measure_latency
from toolkit.workbench.models import create_model, output_layers
from toolkit.plugins import create_pruner
from toolkit.testing import SyntheticTrainer

ARCHS = ["unet", "unetplusplus", "fpn", "linknet", "manet"]
COLUMNS = ["arch", "encoder", "input", "method", "rate", "round_to", "channels_removed_%", "params_M", "params_red_%",
           "GMACs", "flops_red_%", "torch_ms", "flop_speedup", "speedup", "ratio", "ort_ms", "ort_speedup", "ort_ratio"]


def size(text: str) -> tuple[int, int]:
    """``"256x1600"`` -> (256, 1600): height x width."""
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def round_to(text: str) -> int | None:
    return None if text.lower() in ("none", "0", "1") else int(text)


def arguments() -> Any:
    p = parser("speedup", __doc__.split("\n\n")[0])
    p.add_argument("--archs", type=csv_list(str), default=ARCHS)
    p.add_argument("--encoders", type=csv_list(str), default=None, help="default resnet18; --full: resnet18,resnet101")
    p.add_argument("--sizes", type=csv_list(size), default=None, help="HxW list; default 256x256; --full: 512x512,256x1600")
    p.add_argument("--methods", type=csv_list(str), default=["fpgm", "l1", "taylor"])
    p.add_argument("--rates", type=csv_list(float), default=[0.25, 0.5, 0.75])
    p.add_argument("--round-to", type=csv_list(round_to), default=[None],
                   help="passed to the pruners; a list compares them (e.g. none,8,16)")
    p.add_argument("--no-onnx", action="store_true", help="skip onnxruntime latencies")
    p.add_argument("--taylor-size", type=int, default=64, help="image side of the batch that feeds taylor's gradients")
    args = p.parse_args()
    args.encoders = args.encoders or (["resnet18", "resnet101"] if args.full else ["resnet18"])
    args.sizes = args.sizes or ([(512, 512), (256, 1600)] if args.full else [(256, 256)])
    args.runs = args.runs or (20 if args.full else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if args.full else 2)
    args.onnx = not args.no_onnx and has_onnxruntime()
    return args


def latencies(model: nn.Module, x: torch.Tensor, args: Any) -> dict[str, float | None]:
    """Median PyTorch eager and onnxruntime latencies at the stated thread count."""
    torch_ms = measure_latency(model, x, runs=args.runs, warmup=args.warmup, threads=args.threads).median_ms
    ort_ms = ort_latency_ms(model, x, args.threads, args.runs, args.warmup) if args.onnx else None
    return {"torch_ms": torch_ms, "ort_ms": ort_ms}


def prune(model: nn.Module, x: torch.Tensor, method: str, rate: float, rounding: int | None, args: Any) -> Any:
    """Our plugin, as a user calls it; taylor gets gradients from a small synthetic batch."""
    pruner = create_pruner(method, round_to=rounding)
    request = PruneRequest(model=model, example_inputs=x, amount=rate, ignored_layers=output_layers(model),
                           train=SyntheticTrainer(size=args.taylor_size) if method == "taylor" else None)
    return pruner.prune(request)


def row(dense: dict, **values: Any) -> dict:
    """Reductions and speedups of one pruned model against its dense row."""
    r = {**values}
    r["params_red_%"] = pct(1 - r["params_M"] / dense["params_M"])
    r["flops_red_%"] = pct(1 - r["GMACs"] / dense["GMACs"])
    r["flop_speedup"] = dense["GMACs"] / r["GMACs"]
    r["speedup"] = dense["torch_ms"] / r["torch_ms"]
    r["ratio"] = r["speedup"] / r["flop_speedup"]
    if r.get("ort_ms"):
        r["ort_speedup"] = dense["ort_ms"] / r["ort_ms"]
        r["ort_ratio"] = r["ort_speedup"] / r["flop_speedup"]
    return r


def bench_model(arch: str, encoder: str, hw: tuple[int, int], args: Any) -> list[dict]:
    torch.manual_seed(0)
    dense_model = create_model(arch, encoder=encoder, encoder_weights=None, num_classes=2).eval()
    x = torch.randn(1, 3, *hw)
    where = {"arch": arch, "encoder": encoder, "input": f"{hw[0]}x{hw[1]}"}
    dense = {**where, "method": "dense", "rate": 0.0, "channels_removed_%": 0.0,
             "params_M": count_parameters(dense_model) / 1e6, "GMACs": count_flops(dense_model, x) / 1e9,
             **latencies(dense_model, x, args)}
    rows = [dense]
    for rounding in args.round_to:
        for method in args.methods:
            for rate in args.rates:
                model = copy.deepcopy(dense_model)
                with stopwatch() as t:
                    result = prune(model, x, method, rate, rounding, args)
                pruned = result.model.eval()
                rows.append(row(dense, **where, method=method, rate=rate, round_to=rounding,
                                **{"channels_removed_%": pct(result.sparsity)},
                                params_M=result.meta["params_after"] / 1e6, GMACs=result.meta["flops_after"] / 1e9,
                                **latencies(pruned, x, args)))
                r = rows[-1]
                print(f"  {arch}/{encoder} {where['input']} {method}@{rate} round_to={rounding}: prune {t[0]:.1f}s, "
                      f"flop x{r['flop_speedup']:.2f}, torch x{r['speedup']:.2f}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    args = arguments()
    line = setup(args)
    rows: list[dict] = []
    with stopwatch() as total:
        for encoder in args.encoders:
            for hw in args.sizes:
                for arch in args.archs:
                    rows += bench_model(arch, encoder, hw, args)
    columns = [c for c in COLUMNS if args.onnx or not c.startswith("ort")]
    if args.round_to == [None]:
        columns.remove("round_to")
    print(markdown(rows, columns))
    print(f"\nLatency: median of {args.runs} runs after {args.warmup} warm-up, batch 1, {args.threads} thread(s). "
          f"flop_speedup = dense/pruned MACs; speedup = dense/pruned latency; ratio = speedup / flop_speedup. "
          f"Total {total[0]:.0f} s.")
    write_csv(rows, args.csv, line)


if __name__ == "__main__":
    main()
