"""Unstructured pruning: what it buys (a smaller compressed file) and what it does not (latency).

linear / agp / movement at each target sparsity, trained on a synthetic batch
(this measures sparsity, size and latency, not accuracy). Zeroed weights keep
their place in dense tensors, so PyTorch's dense kernels still multiply them:
latency is expected to stay as it was, and the table shows the measured change
rather than leaving the column out. The saving is on disk once the file is
compressed (``toolkit.results.measure.compressed_bytes``: the state_dict deflated).

Run:  .venv/bin/python benchmarks/unstructured.py          (fpn, linknet; resnet18; 128 px; 8 training steps)
      .venv/bin/python benchmarks/unstructured.py --full   (five archs, resnet101, 512 px, 10 x 10 steps)
"""
from __future__ import annotations

import copy
import sys
from typing import Any

import torch

from common import csv_list, markdown, parser, pct, setup, stopwatch, write_csv
from toolkit.contract import PruneRequest
from toolkit.results.measure import compressed_bytes, count_parameters, measure_latency, state_dict_bytes
from toolkit.workbench.models import create_model, output_layers
from toolkit.plugins import create_pruner
from toolkit.testing import SyntheticTrainer

MB = 1e6
COLUMNS = ["arch", "encoder", "input", "method", "target", "sparsity_%", "params_M", "file_MB", "zip_MB",
           "zip_saving_%", "torch_ms", "latency_change_%", "latency"]


def latency_note(change: float, noise: float) -> str:
    """Plain words for the latency column: dense kernels do not skip zeros."""
    if abs(change) <= noise:
        return "unchanged (dense kernels)"
    return f"{change:+.0f}% measured, beyond ±{noise:.0f}%: dense kernels do the same work, so timing noise"


def bench_arch(arch: str, args: Any) -> list[dict]:
    torch.manual_seed(0)
    dense = create_model(arch, encoder=args.encoder, encoder_weights=None, num_classes=2)
    x = torch.randn(1, 3, args.size, args.size)
    where = {"arch": arch, "encoder": args.encoder, "input": f"{args.size}x{args.size}"}
    dense_ms = measure_latency(dense, x, runs=args.runs, warmup=args.warmup, threads=args.threads).median_ms
    file_mb, dense_zip = state_dict_bytes(dense) / MB, compressed_bytes(dense) / MB
    rows = [{**where, "method": "dense", "target": 0.0, "sparsity_%": 0.0, "params_M": count_parameters(dense) / MB,
             "file_MB": file_mb, "zip_MB": dense_zip, "zip_saving_%": pct(1 - dense_zip / file_mb), "torch_ms": dense_ms}]
    for method in args.methods:
        for target in args.sparsities:
            model = copy.deepcopy(dense)
            request = PruneRequest(model=model, example_inputs=x, amount=target, ignored_layers=output_layers(model),
                                   train=SyntheticTrainer(size=args.size, batch=args.batch),
                                   pruning_steps=args.pruning_steps, step_interval=args.step_interval)
            with stopwatch() as t:
                result = create_pruner(method).prune(request)
            ms = measure_latency(result.model, x, runs=args.runs, warmup=args.warmup, threads=args.threads).median_ms
            zipped = compressed_bytes(result.model) / MB
            change = 100.0 * (ms / dense_ms - 1)
            rows.append({**where, "method": method, "target": target, "sparsity_%": pct(result.sparsity),
                         "params_M": count_parameters(result.model) / MB, "file_MB": state_dict_bytes(result.model) / MB,
                         "zip_MB": zipped, "zip_saving_%": pct(1 - zipped / file_mb), "torch_ms": ms,
                         "latency_change_%": round(change, 1), "latency": latency_note(change, args.noise)})
            print(f"  {arch} {method}@{target}: {t[0]:.1f}s, sparsity {result.sparsity:.3f}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    p = parser("unstructured", __doc__.split("\n\n")[0])
    p.add_argument("--archs", type=csv_list(str), default=None, help="default fpn,linknet; --full all five")
    p.add_argument("--encoder", default=None, help="default resnet18; --full resnet101")
    p.add_argument("--size", type=int, default=None, help="square input side; default 128, --full 512")
    p.add_argument("--methods", type=csv_list(str), default=["linear", "agp", "movement"])
    p.add_argument("--sparsities", type=csv_list(float), default=[0.2, 0.5, 0.9])
    p.add_argument("--pruning-steps", type=int, default=None, help="mask tightenings (default 4, --full 10)")
    p.add_argument("--step-interval", type=int, default=None, help="training steps between them (default 2, --full 10)")
    p.add_argument("--batch", type=int, default=2, help="synthetic training batch")
    p.add_argument("--noise", type=float, default=10.0, help="latency change (%%) still called unchanged")
    args = p.parse_args()
    args.archs = args.archs or (["unet", "unetplusplus", "fpn", "linknet", "manet"] if args.full else ["fpn", "linknet"])
    args.encoder = args.encoder or ("resnet101" if args.full else "resnet18")
    args.size = args.size or (512 if args.full else 128)
    args.pruning_steps = args.pruning_steps or (10 if args.full else 4)
    args.step_interval = args.step_interval or (10 if args.full else 2)
    args.runs = args.runs or (20 if args.full else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if args.full else 2)
    line = setup(args)
    with stopwatch() as total:
        rows = [r for arch in args.archs for r in bench_arch(arch, args)]
    print(markdown(rows, COLUMNS))
    print(f"\nsparsity_% = zero fraction of prunable conv/linear weights (head excluded); file_MB = saved state_dict "
          f"(dense storage, same for every row); zip_MB = that file deflated; zip_saving_% = 1 - zip_MB / dense file_MB. "
          f"Latency: median of {args.runs} runs after {args.warmup} warm-up, batch 1, {args.threads} thread(s); "
          f"changes within {args.noise:.0f}% are called unchanged. Training: {args.pruning_steps} x {args.step_interval} "
          f"SGD steps on a synthetic batch of {args.batch}. Total {total[0]:.0f} s.")
    write_csv(rows, args.csv, line)


if __name__ == "__main__":
    main()
