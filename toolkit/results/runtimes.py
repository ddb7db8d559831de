"""The runtimes a model is deployed with, and timing them fairly.

Eager PyTorch is a proxy: engineers ship a model on ONNX Runtime (what
``toolkit export`` writes), OpenVINO on Intel CPUs, or a GPU provider of ONNX
Runtime (CUDA, TensorRT). ``open_sessions`` exports a model once, the way
``toolkit export`` does (``toolkit.pruning.serialize``), and builds a session
per runtime with a stated thread count; ``time_interleaved`` times sessions
round-robin, one pass of each per round, so whatever else loads the machine
hits every model alike, and returns the median and the spread. A runtime that
is not installed raises ``RuntimeMissing`` with the reason a row records.

Runtime names are the column names: ``latency_ms_<runtime>`` (eager keeps
the historical ``latency_ms``; see ``column``).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import math
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from toolkit.errors import ExportMismatch, RuntimeMissing, UsageError

RUNTIMES = ("eager", "onnxruntime", "openvino", "onnxruntime_gpu")
GPU_RUNTIMES = ("onnxruntime_gpu",)  # timed on GPU runs only
LABELS = {"eager": "eager PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO",
          "onnxruntime_gpu": "ONNX Runtime GPU"}
K = TypeVar("K", bound=Hashable)


def check_runtimes(names: Sequence[str]) -> list[str]:
    """The runtime names a setting lists, checked where they enter."""
    unknown = [n for n in names if n not in RUNTIMES]
    if unknown:
        raise UsageError(f"unknown latency runtime(s) {', '.join(map(repr, unknown))}; known: {', '.join(RUNTIMES)}")
    return list(dict.fromkeys(names))


def runtimes_on(names: Sequence[str], device_type: str) -> list[str]:
    """The runtimes a run on ``device_type`` times: GPU runtimes on a GPU run only, and a GPU run
    that times ONNX Runtime times its GPU provider too."""
    wanted = [n for n in names if n not in GPU_RUNTIMES or device_type == "cuda"]
    if device_type == "cuda" and "onnxruntime" in wanted and "onnxruntime_gpu" not in wanted:
        wanted.append("onnxruntime_gpu")
    return wanted


def column(runtime: str) -> str:
    """The row column of a runtime's median ms (``_dense`` / ``_pruned`` follow): eager's is the
    historical ``latency_ms``, every other runtime's names it."""
    return "latency_ms" if runtime == "eager" else f"latency_ms_{runtime}"


def speedup_column(runtime: str) -> str:
    return "latency_speedup" if runtime == "eager" else f"latency_{runtime}_speedup"


# -- timing ------------------------------------------------------------------------------
@dataclass
class Timing:
    """Median and spread of one model's timed passes, in ms."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    runs: int

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    @property
    def spread(self) -> float:
        """The interquartile range relative to the median: how far one timing can be trusted."""
        return self.iqr_ms / self.median_ms


def timing_of(times_ms: Sequence[float]) -> Timing:
    if len(times_ms) > 1:
        q1, _, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
    else:
        q1 = q3 = times_ms[0]
    return Timing(statistics.median(times_ms), q1, q3, min(times_ms), max(times_ms), len(times_ms))


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Eager PyTorch's thread count for a block (a process-wide setting, put back after)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_interleaved(calls: Mapping[K, Callable[[], Any]], runs: int, warmup: int = 2,
                     threads: int | None = None) -> dict[K, Timing]:
    """Time every call round-robin: one pass of each per round, ``warmup`` untimed rounds first.

    Background load then falls on every call alike, so their ratios hold
    even where the absolute numbers drift. ``threads`` is eager PyTorch's
    thread count meanwhile (the other runtimes carry their own).
    """
    if runs < 1:
        raise UsageError(f"latency runs must be >= 1, got {runs}")
    times: dict[K, list[float]] = {k: [] for k in calls}
    with torch_threads(threads), torch.inference_mode():
        for round_ in range(warmup + runs):
            for key, call in calls.items():
                start = time.perf_counter()
                call()
                if round_ >= warmup:
                    times[key].append((time.perf_counter() - start) * 1000)
    return {k: timing_of(v) for k, v in times.items()}


# -- sessions ----------------------------------------------------------------------------
@dataclass
class Session:
    """One model loaded in one runtime: ``run(x)`` for outputs, ``timed()`` for one pass on the
    session's own input (synchronised on a GPU), and what it ran on, in words."""

    runtime: str
    run: Callable[[np.ndarray], np.ndarray]
    timed: Callable[[], Any]
    description: str


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "onnxruntime_gpu": ("onnxruntime", "onnx"),
            "openvino": ("openvino", "openvino")}  # runtime -> (module, the extra that installs it)


def missing(runtime: str) -> str | None:
    """Why ``runtime`` cannot run here (its package is not installed), or None; imports nothing."""
    if runtime not in PACKAGES:
        return None
    module, extra = PACKAGES[runtime]
    try:
        found = importlib.util.find_spec(module) is not None
    except ValueError:  # a module set to None in sys.modules (as a test hides one)
        found = False
    return None if found else f"{module} not installed (pip install 'toolkit[{extra}]')"


def _import(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeMissing(f"{module} not installed (pip install 'toolkit[{extra}]')") from None


def eager_session(model: nn.Module, example: torch.Tensor, threads: int) -> Session:
    """Eager PyTorch on the model's own device."""
    from toolkit.workbench.device import device_name

    model = model.eval()
    device = next(model.parameters()).device
    x = example.to(device)

    def timed() -> Any:
        out = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    def run(inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch_threads(threads):
            return model(torch.from_numpy(inputs).to(device)).float().cpu().numpy()

    where = device_name(device) + (f", {threads} thread(s)" if device.type == "cpu" else "")
    return Session("eager", run, timed, f"eager PyTorch {torch.__version__} on {where}")


def onnxruntime_session(path: str | Path, example: np.ndarray, threads: int, gpu: bool = False) -> Session:
    """An ONNX Runtime session on the CPU with ``threads`` intra-op threads, or on the GPU through
    its TensorRT provider where it starts, else its CUDA one."""
    from toolkit.workbench.device import cpu_name

    ort = _import("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if gpu:
        wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in ort.get_available_providers()]
        if not wanted:
            raise RuntimeMissing("onnxruntime has no CUDA or TensorRT provider here (pip install onnxruntime-gpu)")
        session = ort.InferenceSession(str(path), options, providers=[*wanted, "CPUExecutionProvider"])
        provider = session.get_providers()[0]
        if provider not in wanted:
            raise RuntimeMissing(f"onnxruntime's {' and '.join(wanted)} did not start here (no usable GPU libraries)")
        where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "GPU"
    else:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        provider, where = "CPUExecutionProvider", f"{cpu_name()}, {threads} thread(s)"
    name = session.get_inputs()[0].name

    def run(inputs: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(inputs, dtype=np.float32)})[0]

    feed = {name: np.ascontiguousarray(example, dtype=np.float32)}
    return Session("onnxruntime_gpu" if gpu else "onnxruntime", run, lambda: session.run(None, feed),
                   f"ONNX Runtime {ort.__version__} ({provider}) on {where}")


def openvino_session(path: str | Path, example: np.ndarray, threads: int) -> Session:
    """OpenVINO's CPU plugin at f32 (its default on CPUs with bf16 units is bf16, which would move
    the outputs), latency hint, ``threads`` threads, the input shape fixed to the example's."""
    from toolkit.workbench.device import cpu_name

    ov = _import("openvino", "openvino")
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0].get_any_name(): list(example.shape)})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def run(inputs: np.ndarray) -> np.ndarray:
        return np.array(request.infer({0: np.ascontiguousarray(inputs, dtype=np.float32)})[output])

    feed = {0: np.ascontiguousarray(example, dtype=np.float32)}
    return Session("openvino", run, lambda: request.infer(feed),
                   f"OpenVINO {_version('openvino')} (CPU, f32) on {cpu_name()}, {threads} thread(s)")


def session_from_file(runtime: str, path: str | Path, example: torch.Tensor, threads: int) -> Session:
    """A session of an exported file (ONNX for ONNX Runtime; ONNX or IR .xml for OpenVINO)."""
    x = example.detach().cpu().numpy()
    if runtime in ("onnxruntime", "onnxruntime_gpu"):
        return onnxruntime_session(path, x, threads, gpu=runtime == "onnxruntime_gpu")
    if runtime == "openvino":
        return openvino_session(path, x, threads)
    raise UsageError(f"no exported-file session for runtime {runtime!r}")


def open_sessions(model: nn.Module, example: torch.Tensor, runtimes: Sequence[str],
                  threads: int) -> dict[str, Session | str]:
    """A session per runtime, or the reason there is none; the model is exported to ONNX once
    (as ``toolkit export`` does) for all runtimes that read it. Eager runs on the model's device."""
    sessions: dict[str, Session | str] = {}
    with tempfile.TemporaryDirectory(prefix="toolkit-runtime-") as tmp:
        path: Path | str | None = None  # the ONNX file, or why there is none
        for runtime in runtimes:
            try:
                if runtime == "eager":
                    sessions[runtime] = eager_session(model, example, threads)
                    continue
                if path is None:
                    path = _export_for_runtimes(model, example, Path(tmp) / "model.onnx")
                sessions[runtime] = path if isinstance(path, str) else session_from_file(runtime, path, example, threads)
            except RuntimeMissing as missing:
                sessions[runtime] = str(missing)
            except Exception as exc:  # noqa: BLE001 - a runtime that cannot load this model is a reason in the row
                sessions[runtime] = f"{LABELS[runtime]} failed: {type(exc).__name__}: {str(exc).strip()[:200]}".splitlines()[0]
    return sessions


def _export_for_runtimes(model: nn.Module, example: torch.Tensor, path: Path) -> Path | str:
    """The model as ONNX (``toolkit export``'s exporter), or why it could not be exported: a model
    the exporter cannot trace gets its reason in the row, not a failed cell."""
    from toolkit.pruning.export import export_onnx

    _import("onnx", "onnx")
    on_cpu = model if next(model.parameters()).device.type == "cpu" else _cpu_copy(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # smp's shape checks, constant at one input size
            return export_onnx(on_cpu, example.cpu(), path)
    except Exception as exc:  # noqa: BLE001 - see above
        return f"ONNX export failed: {type(exc).__name__}: {str(exc).strip()[:200]}".splitlines()[0]


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu()


def max_abs_diff(session: Session, model: nn.Module, example: torch.Tensor) -> float:
    """Largest difference between the session's outputs and PyTorch's on ``example``."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        expected = model.eval()(example.to(device)).float().cpu().numpy()
    got = session.run(example.detach().cpu().numpy())
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got - expected).max())


def measure_runtimes(model: nn.Module, example: torch.Tensor, runtimes: Sequence[str], threads: int,
                     runs: int, warmup: int = 3) -> dict[str, Any]:
    """Row columns of one model on each runtime: ``latency_ms_<runtime>`` and
    ``latency_<runtime>_device``, or ``latency_<runtime>_skipped`` with the reason. Eager is left
    to the caller (its columns predate the others)."""
    columns: dict[str, Any] = {}
    wanted = [r for r in runtimes if r != "eager"]
    sessions = open_sessions(model, example, wanted, threads)
    ready = {r: s for r, s in sessions.items() if isinstance(s, Session)}
    timings = time_interleaved({r: s.timed for r, s in ready.items()}, runs, warmup) if ready else {}
    for runtime, session in sessions.items():
        if isinstance(session, Session):
            columns[column(runtime)] = timings[runtime].median_ms
            columns[f"latency_{runtime}_device"] = session.description
        else:
            columns[f"latency_{runtime}_skipped"] = session
    return columns


def runtime_columns(dense: Mapping[str, Any], pruned: Mapping[str, Any]) -> dict[str, Any]:
    """A row's before/after columns of every runtime but eager (``compare_rows`` has eager's):
    ``latency_ms_<runtime>_dense/_pruned``, ``latency_<runtime>_speedup`` and the device, or the
    reason a runtime was skipped."""
    row: dict[str, Any] = {}
    for runtime in RUNTIMES[1:]:
        col = column(runtime)
        if col in pruned:
            before, after = dense.get(col), pruned[col]
            row[f"{col}_dense"], row[f"{col}_pruned"] = before, after
            row[speedup_column(runtime)] = before / after if before and after else math.nan
            row[f"latency_{runtime}_device"] = pruned[f"latency_{runtime}_device"]
        if pruned.get(f"latency_{runtime}_skipped"):
            row[f"latency_{runtime}_skipped"] = pruned[f"latency_{runtime}_skipped"]
    return row


# -- export for deployment ---------------------------------------------------------------------
FORMATS = {"onnx": "onnxruntime", "openvino": "openvino"}  # file format -> the runtime that checks it


@dataclass
class Exported:
    """An exported file, checked against PyTorch and timed in its runtime."""

    path: Path
    max_abs_diff: float
    timing: Timing
    description: str
    input_shape: tuple[int, ...]


def export_checked(model: nn.Module, example: torch.Tensor, out: str | Path, fmt: str, tolerance: float = 1e-3,
                   threads: int = 1, runs: int = 20, warmup: int = 3) -> Exported:
    """Export ``model`` to ``fmt`` (onnx, openvino), run the file in its runtime on ``example`` and
    compare with PyTorch: a difference past ``tolerance`` raises ``ExportMismatch`` (the file is
    kept to inspect); then time the file as deployed."""
    from toolkit.pruning.export import export_onnx, export_openvino

    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    exporter = export_onnx if fmt == "onnx" else export_openvino
    path = exporter(model, example, out)
    session = session_from_file(FORMATS[fmt], path, example, threads)
    diff = max_abs_diff(session, model, example)
    if not diff <= tolerance:
        raise ExportMismatch(f"{path}: {fmt} outputs differ from PyTorch's by up to {diff:.3g}, past the tolerance "
                             f"{tolerance:g}; the file is kept to inspect (--tolerance to accept it)")
    timing = time_interleaved({fmt: session.timed}, runs, warmup)[fmt]
    return Exported(Path(path), diff, timing, session.description, tuple(example.shape))
