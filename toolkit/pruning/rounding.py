"""Which multiple channel counts are rounded to: ``round_to=auto`` picks the runtime's measured best.

A runtime's kernels run fastest on channel counts that are multiples of its
vector width; eager PyTorch did not get faster from rounding
(``benchmarks/results/speedup-round-to.csv``), ONNX Runtime and OpenVINO did,
by much (``benchmarks/results/runtime-latency.csv``). ``round_to=auto`` (the
default) therefore rounds for the runtime a model is deployed on: the
pruner's ``deploy_runtime`` option, else the runtime a latency target is timed
on (``latency_runtime``), else, for a FLOP or parameter target, ONNX Runtime:
``toolkit export`` writes ONNX unless told otherwise. Unrounded counts are a
lottery there: the headline model at -50% FLOPs landed on 63, 95, 159 ...
channels (x1.22 on ONNX Runtime) or, with a 2-class head moving the search a
hair, on 64, 96, 160 ... (x1.50); at multiples of 16 it is x1.79 with the same
IoU (0.390 against 0.389, 3 seeds, benchmarks/README.md). A channel-rate
target (``--sparsities``) and eager PyTorch are not rounded; ``round_to=none``
turns rounding off.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from toolkit.errors import UsageError
from toolkit.results.runtimes import RUNTIMES

# Median ONNX Runtime / OpenVINO speed-up over the five smp architectures (EfficientNet-Lite0, 256 px,
# 1 thread, fpgm at -50% FLOPs, quiet machine) per round_to: benchmarks/results/runtime-latency.csv,
# re-timed 2026-12-01 with every architecture at every multiple (U-Net++ at 32 falls back to 16).
MEASURED_SPEEDUP: dict[str, dict[int, float]] = {
    "onnxruntime": {1: 1.24, 8: 1.54, 16: 1.88, 32: 1.86},
    "openvino": {1: 1.58, 8: 1.69, 16: 1.86, 32: 1.82},
}
# a runtime not in the table is not rounded: eager PyTorch was not faster rounded, a GPU runtime is unmeasured
AUTO: dict[str, int] = {runtime: max(table, key=table.get) for runtime, table in MEASURED_SPEEDUP.items()}


def parse_round_to(value: int | str | None) -> int | str | None:
    """``round_to`` as given: ``"auto"``, None (``"none"``: no rounding) or a positive channel count."""
    if value is None or str(value).strip().lower() in ("none", ""):
        return None
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(f"round_to must be auto, none or a positive channel count (e.g. 8), got {value!r}")
    return number


def check_deploy_runtime(runtime: str) -> str:
    """A ``deploy_runtime`` the toolkit knows (empty: none named); it need not be installed to round for it."""
    if runtime and runtime not in RUNTIMES:
        raise UsageError(f"unknown deploy_runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    return runtime


def resolve_round_to(value: int | str | None, runtime: str | None) -> int | None:
    """The multiple to round to: ``auto`` becomes ``runtime``'s measured best (None: no rounding)."""
    parsed = parse_round_to(value)
    if parsed == "auto":
        return AUTO.get(runtime or "")
    return parsed  # type: ignore[return-value]


# the runtime a cost target is rounded for when none is named: ONNX is what `toolkit export` writes by default
DEFAULT_DEPLOY_RUNTIME = "onnxruntime"


def deployed_on(deploy_runtime: str, latency_runtime: str, target_kind: str | None) -> str | None:
    """The runtime a pruned model is rounded for: the one named for deployment, else a latency target's,
    else ONNX Runtime for a FLOP or parameter target; a channel rate (``target_kind`` None or "rate") is not rounded."""
    if deploy_runtime:
        return deploy_runtime
    if target_kind == "latency":
        return latency_runtime
    return DEFAULT_DEPLOY_RUNTIME if target_kind in ("flops", "params") else None


def fallbacks(multiple: int) -> list[int]:
    """The multiples tried when ``multiple`` cannot meet a target, largest first: halved down to 1."""
    out = [multiple]
    while out[-1] > 1:
        out.append(out[-1] // 2)
    return out


T = TypeVar("T")


def with_fallbacks(multiple: int | None, attempt: Callable[[int | None], T],
                   misses: type[Exception] | tuple[type[Exception], ...]) -> tuple[T, int | None, Exception | None]:
    """``attempt(m)`` with the largest of ``fallbacks(multiple)`` that does not raise ``misses`` (one attempt
    when ``multiple`` is None): what it returned, the multiple it used, and the first miss (None when
    ``multiple`` itself did). The smallest multiple's miss is raised: no rounding meets the target either."""
    *larger, last = fallbacks(multiple) if multiple else [multiple]
    first: Exception | None = None
    for tried in larger:
        try:
            return attempt(tried), tried, first
        except misses as error:
            first = first or error
    return attempt(last), last, first
