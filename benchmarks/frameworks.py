"""Our structured pruning against the frameworks it is built on, called directly.

(a) Torch-Pruning's documented API (``MetaPruner`` + ``MagnitudeImportance(p=1)``,
    head ignored, ``.step()``) against our ``l1`` plugin at the same rate:
    parameters after pruning and wall time (ours / direct).
(b) NNI's own path (``L1NormPruner`` masks, then ``ModelSpeedup``) against our
    ``nni-l1`` plugin (NNI's masks removed through our surgery): which of them
    physically prunes each model.

Every call runs in a fresh process with a time limit, so a hang (Torch-Pruning
1.6 on MA-Net) or a crash is a table cell, not the end of the run; times are
wall times of the pruning call alone, in a cold process, model build excluded.

Run:  .venv/bin/python benchmarks/frameworks.py          (ResNet-18 encoders, 128 px)
      .venv/bin/python benchmarks/frameworks.py --full   (ResNet-101 encoders, 512 px)
"""
from __future__ import annotations

import sys
import time
from typing import Any

import torch
from torch import nn

from common import csv_list, in_subprocess, markdown, parser, setup, stopwatch, write_csv

ARCHS = ["unet", "unetplusplus", "fpn", "linknet", "manet", "resnet50", "resnext50_32x4d"]


# -- the calls, each run in its own process ---------------------------------------------------
def _build(arch: str, encoder: str, side: int) -> tuple[nn.Module, torch.Tensor]:
    from toolkit.workbench.models import create_model

    torch.manual_seed(0)
    return create_model(arch, encoder=encoder, encoder_weights=None, num_classes=2).eval(), torch.randn(1, 3, side, side)


def _runs(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether the pruned model still runs a forward pass."""
    try:
        with torch.no_grad():
            model.eval()(x)
        return True
    except Exception:  # noqa: BLE001
        return False


def _summary(model: nn.Module, x: torch.Tensor, seconds: float) -> dict[str, Any]:
    from toolkit.results.measure import count_parameters

    return {"params": count_parameters(model), "seconds": seconds, "runs": _runs(model, x)}


def direct_tp(arch: str, encoder: str, side: int, rate: float) -> dict[str, Any]:
    """Torch-Pruning as its README shows it."""
    import torch_pruning as tp

    from toolkit.workbench.models import output_layers

    model, x = _build(arch, encoder, side)
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=rate, ignored_layers=output_layers(model))
    pruner.step()
    return _summary(model, x, time.perf_counter() - start)


def ours_plugin(plugin: str, arch: str, encoder: str, side: int, rate: float) -> dict[str, Any]:
    """One of our plugins, whole call (``l1``; ``nni-l1``: NNI chooses the channels, our
    surgery removes them); it also counts FLOPs before and after with thop."""
    from toolkit.contract import PruneRequest
    from toolkit.workbench.models import output_layers
    from toolkit.plugins import create_pruner

    model, x = _build(arch, encoder, side)
    start = time.perf_counter()
    result = create_pruner(plugin).prune(PruneRequest(model=model, example_inputs=x, amount=rate,
                                                      ignored_layers=output_layers(model)))
    return _summary(result.model, x, time.perf_counter() - start)


def ours_surgery(arch: str, encoder: str, side: int, rate: float) -> dict[str, Any]:
    """Our surgery alone (``prune_channels``), without the plugin's FLOP counting."""
    from toolkit.pruning import prune_channels

    model, x = _build(arch, encoder, side)
    start = time.perf_counter()
    prune_channels(model, x, rate, "l1")
    return _summary(model, x, time.perf_counter() - start)


def nni_speedup(arch: str, encoder: str, side: int, rate: float) -> dict[str, Any]:
    """NNI 3.0's documented path: L1NormPruner masks, unwrap, ModelSpeedup."""
    from nni.compression.pruning import L1NormPruner
    from nni.compression.speedup import ModelSpeedup

    from toolkit.workbench.models import output_layers

    model, x = _build(arch, encoder, side)
    heads = {id(m) for layer in output_layers(model) for m in layer.modules()}
    exclude = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) in heads]
    start = time.perf_counter()
    pruner = L1NormPruner(model, [{"op_types": ["Conv2d", "Linear"], "sparse_ratio": rate, "exclude_op_names": exclude}])
    _, masks = pruner.compress()
    pruner.unwrap_model()
    try:
        ModelSpeedup(model, x, masks).speedup_model()
    except Exception as exc:  # say which stage failed: the masks were fine
        raise type(exc)(f"in ModelSpeedup: {exc}") from exc
    return _summary(model, x, time.perf_counter() - start)


# -- the table ---------------------------------------------------------------------------------
def attempt(fn: Any, case: tuple, timeout: float, threads: int) -> dict[str, Any]:
    """``{"status": "yes"|"hangs (>Ns)"|error line, "params", "seconds", "runs"}``."""
    status, value = in_subprocess(fn, case, timeout, threads)
    if status == "ok":
        return {"status": "yes" if value["runs"] else "pruned, forward fails", **value}
    if status == "timeout":
        return {"status": f"hangs (>{timeout:.0f}s)"}
    return {"status": value}


def million(result: dict) -> float | None:
    return result["params"] / 1e6 if "params" in result else None


def ratio(a: dict, b: dict) -> float | None:
    return a["seconds"] / b["seconds"] if "seconds" in a and "seconds" in b else None


def bench(arch: str, args: Any) -> dict[str, Any]:
    from toolkit.results.measure import count_parameters

    case = (arch, args.encoder, args.size, args.rate)
    dense = count_parameters(_build(arch, args.encoder, args.size)[0])
    plugin = attempt(ours_plugin, ("l1", *case), args.timeout, args.threads)
    surgery, direct, nni = (attempt(fn, case, args.timeout, args.threads) for fn in (ours_surgery, direct_tp, nni_speedup))
    ours_nni = attempt(ours_plugin, ("nni-l1", *case), args.timeout, args.threads)
    same = None
    if "params" in plugin and "params" in direct:
        same = "equal" if plugin["params"] == direct["params"] else f"{plugin['params'] - direct['params']:+,}"
    return {
        "arch": arch, "encoder": args.encoder if arch not in ("resnet50", "resnext50_32x4d") else "-",
        "input": f"{args.size}x{args.size}", "rate": args.rate, "dense_params_M": dense / 1e6,
        "ours_l1": plugin["status"], "ours_params_M": million(plugin), "direct_tp": direct["status"],
        "direct_params_M": million(direct), "params_ours_minus_direct": same,
        "ours_plugin_s": plugin.get("seconds"), "ours_surgery_s": surgery.get("seconds"), "direct_s": direct.get("seconds"),
        "plugin/direct": ratio(plugin, direct), "surgery/direct": ratio(surgery, direct),
        "nni_speedup": nni["status"], "nni_params_M": million(nni), "nni_s": nni.get("seconds"),
        "ours_nni_l1": ours_nni["status"], "ours_nni_params_M": million(ours_nni), "ours_nni_s": ours_nni.get("seconds"),
    }


def main() -> None:
    p = parser("frameworks", __doc__.split("\n\n")[0])
    p.add_argument("--archs", type=csv_list(str), default=ARCHS)
    p.add_argument("--encoder", default=None, help="smp encoder; default resnet18, --full resnet101")
    p.add_argument("--size", type=int, default=None, help="square input side; default 128, --full 512")
    p.add_argument("--rate", type=float, default=0.5, help="structured pruning rate")
    p.add_argument("--timeout", type=float, default=None, help="seconds per call before it counts as a hang (default 60, --full 600)")
    args = p.parse_args()
    args.encoder = args.encoder or ("resnet101" if args.full else "resnet18")
    args.size = args.size or (512 if args.full else 128)
    args.timeout = args.timeout or (600.0 if args.full else 60.0)
    line = setup(args)
    with stopwatch() as total:
        rows = []
        for arch in args.archs:
            rows.append(bench(arch, args))
            print(f"  {arch}: tp {rows[-1]['direct_tp']}, nni {rows[-1]['nni_speedup']}", flush=True, file=sys.stderr)
    print("(a) Torch-Pruning direct vs our l1 plugin\n")
    print(markdown(rows, ["arch", "encoder", "input", "rate", "dense_params_M", "ours_params_M", "direct_params_M",
                          "params_ours_minus_direct", "direct_tp", "ours_plugin_s", "ours_surgery_s", "direct_s",
                          "plugin/direct", "surgery/direct"]))
    print("\n(b) Physical pruning from NNI L1NormPruner masks: NNI ModelSpeedup vs our nni-l1 plugin\n")
    print(markdown(rows, ["arch", "encoder", "input", "rate", "dense_params_M", "nni_speedup", "nni_params_M", "nni_s",
                          "ours_nni_l1", "ours_nni_params_M", "ours_nni_s"]))
    print(f"\nTimes: wall seconds of the pruning call in a cold process, {args.threads} thread; limit {args.timeout:.0f} s a call. "
          f"ours_plugin_s includes the plugin's two thop FLOP counts; ours_surgery_s is prune_channels alone. "
          f"'yes' = pruned and the pruned model runs a forward pass. Total {total[0]:.0f} s.")
    write_csv(rows, args.csv, line)


if __name__ == "__main__":
    main()
