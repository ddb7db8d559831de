"""The Ray executor: the grid as a task graph on a Ray cluster.

One task per dense model (architecture, dataset, seed) and one per cell that
takes its dense task's result, so the cells of a finished dense model start
while other dense models still train. Every task reserves ``cpus_per_cell`` /
``gpus_per_cell`` and Ray spreads them over the nodes.

**Artifacts travel with the results.** A task works in a scratch folder on its
node and returns its columns with the files worth keeping as bytes
(``toolkit.runner.artifacts``); the driver writes them under ``--out`` where the
local executor would, and a cell gets its dense checkpoint through Ray's object
store. So no shared filesystem is needed, and nothing but the driver writes the
run folder. Datasets are read by the workers: they must exist at the same path
on every node (or be ``synthetic``).

**Failures.** The driver records each row as its cell ends (``Recorder``), so
killing it loses no finished cell, and a re-run resumes like the local executor,
sending the dense models already on its disk instead of training them again. A
plugin that raises fails its row with its message (not retried); a task whose
worker or node died is run again by Ray up to ``max_retries`` times, then its
row fails naming the cause; ``cell_timeout`` stops a cell in a child process of
its worker, the same mechanism as the local executor (``toolkit.runner.isolate``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import ToolkitError, UsageError
from toolkit.runner.artifacts import pack, unpack

if TYPE_CHECKING:
    from toolkit.config import RunConfig
    from toolkit.runner.cell import Cell
    from toolkit.runner.grid_config import GridConfig
    from toolkit.runner.rows import Recorder

CHECKPOINT = "dense.pt"


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray on this machine and every node: pip install 'toolkit[ray]'") from None
    return ray


# -- on the workers ------------------------------------------------------------------------
def attempts_counter(ray: Any) -> Any:
    """An actor counting how often each cell has started: Ray re-runs a task whose worker died,
    and the row says so. Defined in here so Ray ships the class by value and its process
    imports neither torch nor the toolkit."""

    class Attempts:
        def __init__(self) -> None:
            self.counts: dict[str, int] = {}

        def start(self, key: str) -> int:
            self.counts[key] = self.counts.get(key, 0) + 1
            return self.counts[key]

        def count(self, key: str) -> int:
            return self.counts.get(key, 0)

    return ray.remote(num_cpus=0)(Attempts)


def dense_task(arch: str, dataset: str, seed: int, settings: "RunConfig", examples: int) -> tuple[dict, dict]:
    """Train a dense model in a scratch folder. Returns what its cells load (stats and the
    checkpoint's bytes) apart from the other files, which only the driver needs."""
    from toolkit.runner.dense import STATS, train_dense

    with tempfile.TemporaryDirectory(prefix="toolkit-dense-") as scratch:
        folder = Path(scratch)
        stats = train_dense(arch, dataset, seed, settings, folder, examples=examples)
        model = {"stats": stats, CHECKPOINT: (folder / CHECKPOINT).read_bytes()}
        return model, pack(folder, skip=(CHECKPOINT, STATS))


def cell_task(cell: "Cell", settings: "RunConfig", dense: dict, options: dict, examples: int,
              timeout: float | None, attempts: Any) -> tuple[dict, dict, float]:
    """One cell in a scratch folder; returns its columns (with where it ran), its files and its seconds."""
    from toolkit.runner.local import run_cell_guarded

    t0 = time.perf_counter()
    where = _where(cell, settings, attempts)
    with tempfile.TemporaryDirectory(prefix="toolkit-cell-") as scratch:
        stats = dict(dense["stats"])
        if dense.get(CHECKPOINT) is not None:
            (Path(scratch) / CHECKPOINT).write_bytes(dense[CHECKPOINT])
            stats["checkpoint"] = str(Path(scratch) / CHECKPOINT)
        folder = Path(scratch) / "cell"
        columns = run_cell_guarded(cell, settings, stats, folder, options=options, examples=examples, timeout=timeout)
        files = pack(folder) if folder.exists() else {}
    return {**columns, **where}, files, time.perf_counter() - t0


def _where(cell: "Cell", settings: "RunConfig", attempts: Any) -> dict[str, Any]:
    """The node, machine and attempt of this run of the cell (the driver's own facts would be wrong)."""
    import ray
    import torch

    from toolkit.workbench.device import cpu_name

    try:
        attempt = ray.get(attempts.start.remote(cell.id), timeout=60)
    except Exception:  # noqa: BLE001 - a lost counter costs the column, not the cell
        attempt = None
    return {"node": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "host": platform.node(), "cpu": cpu_name(), "cpu_threads": settings.threads or torch.get_num_threads(),
            "attempts": attempt}


# -- on the driver -------------------------------------------------------------------------
def run_on_ray(grid: "GridConfig", out_dir: Path, todo: list["Cell"], recorder: "Recorder") -> None:
    ray = require_ray()
    own = _connect(ray, grid.ray.address)
    pending: dict[Any, tuple] = {}  # ObjectRef -> what to do when it is ready
    try:
        _check_cluster(ray, grid)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        attempts = attempts_counter(ray).options(scheduling_strategy=here).remote()
        pending.update(_submit(ray, grid, out_dir, todo, attempts))
        _collect(ray, grid, out_dir, pending, recorder, attempts)
    except BaseException:
        for ref in pending:  # Ctrl-C: in a session we do not own, nothing else would stop them
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    finally:
        if own:
            ray.shutdown()


def _submit(ray: Any, grid: "GridConfig", out_dir: Path, todo: list["Cell"], attempts: Any) -> dict[Any, tuple]:
    """The task graph: a dense task per model not yet on disk, a cell task per cell taking its result."""
    from toolkit.runner.layout import dense_dir
    from toolkit.runner.variants import options_of, settings_of

    reserve = {"num_cpus": grid.ray.cpus_per_cell, "num_gpus": grid.ray.gpus_per_cell,
               "max_retries": grid.ray.max_retries, "scheduling_strategy": "SPREAD"}
    train = ray.remote(dense_task).options(num_returns=2, **reserve)
    run = ray.remote(cell_task).options(**reserve)
    # bars of remote workers would interleave on this terminal; where it runs is not what it computes
    def quiet(run: "RunConfig") -> "RunConfig":
        return dataclasses.replace(run, train=dataclasses.replace(run.train, progress=False))

    settings = quiet(grid.run)
    models: dict[str, Any] = {}  # dense_id -> the object its cells load
    pending: dict[Any, tuple] = {}
    for cell in todo:
        if cell.dense_id not in models:
            folder = dense_dir(out_dir, cell)
            models[cell.dense_id] = _saved_dense(ray, folder)
            if models[cell.dense_id] is None:
                model, files = train.remote(cell.arch, cell.dataset, cell.seed, settings, grid.examples)
                models[cell.dense_id] = model
                pending[model] = ("dense", folder, files)
        ref = run.remote(cell, quiet(settings_of(grid, cell.name)), models[cell.dense_id], options_of(grid, cell.name),
                         grid.examples, grid.cell_timeout, attempts)
        pending[ref] = ("cell", cell, time.perf_counter())
    return pending  # the cells hold their dense models: once they are done, a model can leave the store


def _collect(ray: Any, grid: "GridConfig", out_dir: Path, pending: dict[Any, tuple], recorder: "Recorder",
             attempts: Any) -> None:
    """Write each result as it arrives: a dense model's files, a cell's files and then its row."""
    from tqdm.auto import tqdm

    from toolkit.runner.layout import cell_dir

    cells = sum(what == "cell" for what, *_ in pending.values())
    with tqdm(total=cells, desc="cells", unit="cell", disable=not grid.run.train.progress) as bar:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            what, *job = pending.pop(ref)
            if what == "dense":
                _write_dense(ray, ref, *job)
                continue
            cell, submitted = job
            try:
                columns, files, seconds = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - no answer: a lost worker past its retries, or a failed dense model
                columns, files, seconds = _lost(ray, exc, cell, attempts), {}, time.perf_counter() - submitted
            unpack(files, cell_dir(out_dir, cell))
            recorder.record(cell, columns, seconds)
            bar.update()
            bar.set_postfix_str(cell.id)


def _connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at ``address`` (``auto``: the running one) or start a local Ray; True if we own it."""
    if ray.is_initialized():
        return False  # the caller's session (a notebook, a test): use it and leave it running
    hint = "start one with 'ray start --head', or leave --ray-address out for a local Ray"
    _check_listening(address, hint)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None:
        kwargs["include_dashboard"] = False
    elif address != "auto" and "://" not in address:
        _send_token_if_here()
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        if _refused_token(ray, exc):
            raise UsageError(f"the Ray cluster at {address} wants its authentication token: {TOKEN_FIX}") from None
        raise UsageError(f"cannot join a Ray cluster at {address!r}: {str(exc).splitlines()[0]} ({hint})") from None
    return True


TOKEN_FIX = ("copy the head's ~/.ray/auth_token to ~/.ray/auth_token here (or set RAY_AUTH_TOKEN to it) "
             "and leave RAY_AUTH_MODE unset or 'token'")


def _send_token_if_here() -> None:
    """Ray (2.59+) authenticates a driver that joins with ``auto`` when a token is on this machine
    (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``) and ``RAY_AUTH_MODE`` is unset,
    but one that names ``HOST:PORT`` only under ``RAY_AUTH_MODE=token``: it would be refused by the
    cluster it belongs to. The same rule for both, through Ray's own function; a cluster without
    authentication ignores the token. Older Rays have no token authentication: nothing to do."""
    try:
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:
        return
    if not hasattr(setup, "maybe_enable_token_auth_if_token_available"):
        return
    said = setup.logger.level
    setup.logger.setLevel(logging.ERROR)  # its warning speaks of starting a cluster, which a driver does not
    try:
        setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        setup.logger.setLevel(said)


def _refused_token(ray: Any, exc: BaseException | None) -> bool:
    """Whether the cluster turned us away for a missing or wrong token: Ray raises its
    ``AuthenticationError`` as the cause, or (connecting with retries) quotes it in the cause's text."""
    refused = getattr(ray.exceptions, "AuthenticationError", None)
    for _ in range(8):  # the chain is short; a bound keeps a cyclic one from looping
        if refused is None or exc is None:
            return False
        if isinstance(exc, refused) or refused.__name__ in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _check_listening(address: str | None, hint: str) -> None:
    """Ray waits minutes for a HOST:PORT where nothing listens; a plain TCP connect says so at once."""
    import socket

    host, sep, port = (address or "").rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # none, auto, ray://: Ray's own checks answer quickly
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UsageError(f"no Ray cluster answers at {address}: {exc.strerror or exc} ({hint})") from None


def _check_cluster(ray: Any, grid: "GridConfig") -> None:
    """Refuse what would wait forever: a cell no node can hold, a GPU run that reserves no GPU."""
    import torch

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    for key, need, flag in (("CPU", grid.ray.cpus_per_cell, "--cpus-per-cell"),
                            ("GPU", grid.ray.gpus_per_cell, "--gpus-per-cell")):
        most = max((n["Resources"].get(key, 0.0) for n in nodes), default=0.0)
        if need > most:
            raise UsageError(f"{flag} {need:g}: no node of the Ray cluster has that many {key}s (the largest has {most:g})")
    name = (grid.run.device or "auto").strip().lower()
    if name == "auto":
        return
    try:
        kind = torch.device(name).type
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda or mps") from None
    if kind == "cuda" and not grid.ray.gpus_per_cell:
        raise UsageError(f"--device {name} on Ray needs --gpus-per-cell (e.g. 1): a task sees only the GPUs it reserves")


def _saved_dense(ray: Any, folder: Path) -> Any:
    """A dense model finished by an earlier run, put into the object store; None if there is none."""
    from toolkit.runner.dense import finished_dense

    stats = finished_dense(folder)
    if stats is None:
        return None
    checkpoint = Path(stats["checkpoint"])
    # a missing file fails the cells with the local executor's reason ("checkpoint not found")
    return ray.put({"stats": stats, CHECKPOINT: checkpoint.read_bytes() if checkpoint.is_file() else None})


def _write_dense(ray: Any, model_ref: Any, folder: Path, files_ref: Any) -> None:
    """A trained dense model's files, ``stats.json`` last: a folder with it is finished."""
    from toolkit.runner.dense import STATS
    from toolkit.runner.stages import write_json

    try:
        model, files = ray.get([model_ref, files_ref])
    except Exception:  # noqa: BLE001 - its cells fail with the reason, each in its row
        return
    unpack({**files, CHECKPOINT: model[CHECKPOINT]}, folder)
    write_json({**model["stats"], "checkpoint": str(folder / CHECKPOINT)}, folder / STATS)


def _lost(ray: Any, exc: BaseException, cell: "Cell", attempts: Any) -> dict[str, Any]:
    """The failed row of a cell that never answered, naming why."""
    from toolkit.runner.rows import failed_row

    if isinstance(exc, ray.exceptions.RayTaskError):  # its dense model raised: the local executor's reason
        cause = exc.cause
        row = failed_row(cause)
        if not isinstance(cause, ToolkitError):
            row["traceback"] = exc.traceback_str
        return row
    row = failed_row(exc)
    try:
        row["attempts"] = ray.get(attempts.count.remote(cell.id), timeout=10)
    except Exception:  # noqa: BLE001 - the count is a detail of the row
        pass
    return row
