"""Scaling: a small grid's wall time on the local executor and on Ray with 1 and 2 worker
processes, and the per-step training cost of the research model, from which the research
grid's cost is estimated.

The grid part runs `toolkit compare` as a user would, in a fresh process each time
(its imports included); a Ray run gets a one-node cluster started beforehand with
`ray start --head --num-cpus N` (N worker processes at one CPU per cell), whose start
is timed apart, since a cluster is started once for many grids. The step part times
forward + backward + SGD step of the research model on random 512x512 batches (the
data loader is not in it), and evaluation forward passes for the validation epochs.

Run:  .venv/bin/python benchmarks/scaling.py                  # both parts, ~9 min on 2 cores
      .venv/bin/python benchmarks/scaling.py --part step --step-threads 1,2
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import csv_list, markdown, parser, setup, write_csv

GRID = ["--archs", "fpn,linknet", "--plugins", "l1,level", "--sparsities", "0.3,0.6", "--datasets", "synthetic",
        "--encoder", "resnet18", "--image-size", "64", "--limit", "24", "--epochs", "1", "--batch-size", "2",
        "--steps-per-epoch", "2", "--threads", "1", "--device", "cpu", "--no-progress"]
GRID_TOML = "examples = 0\n[run]\nlatency_runs = 2\npruning_steps = 2\n"

# The research grid (benchmarks/grid-research.toml on SSCS and NEA) and the data it trains on.
RESEARCH = {"archs": 5, "pruners": 3, "sparsities": 3, "datasets": 2, "epochs": (100, 50, 100), "batch": 4}
IMAGES = 440  # SSCS; NEA is assumed the same size (its count is not in this repository)
TRAIN_IMAGES = int(IMAGES * 0.8 * 0.8)  # 20% test, then 80/20 train/validation (toolkit.workbench.data.splits)
VAL_IMAGES = int(IMAGES * 0.8) - TRAIN_IMAGES


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


# -- the grid on each executor ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(cpus: int, folder: Path, env: dict) -> tuple[subprocess.Popen, str, float]:
    """A one-node cluster of ``cpus`` CPUs in its own process group; (process, address, seconds to start)."""
    port = free_port()
    t0 = time.perf_counter()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus", str(cpus),
         "--port", str(port), "--node-ip-address", "127.0.0.1", "--temp-dir", str(folder), "--include-dashboard",
         "false", "--dashboard-port", str(free_port()), "--disable-usage-stats"],
        env=env, stdout=(folder / "head.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    status = [str(Path(sys.executable).with_name("ray")), "status", "--address", address]
    while subprocess.run(status, env=env, capture_output=True).returncode != 0:
        if process.poll() is not None or time.perf_counter() - t0 > 180:
            raise SystemExit(f"error: ray start failed; see {folder / 'head.log'}")
        time.sleep(1)
    return process, address, time.perf_counter() - t0


def compare(out: Path, config: Path, env: dict, *extra: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "toolkit.cli", "compare", "--config", str(config), *GRID,
                           "--out", str(out), *extra], env=env, capture_output=True, text=True)
    if done.returncode != 0 or "8 cells ok, 0 failed" not in done.stdout:
        raise SystemExit(f"error: compare failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def grid_rows(workers: list[int]) -> list[dict]:
    rows = []
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    with tempfile.TemporaryDirectory(prefix="tkscale-") as tmp:
        config = Path(tmp) / "grid.toml"
        config.write_text(GRID_TOML)
        before = load()
        seconds = compare(Path(tmp) / "local", config, env)
        rows.append({"executor": "local", "workers": 1, "cells": 8, "wall_s": seconds, "cluster_start_s": None,
                     "load_before": before, "load_after": load()})
        print(markdown(rows[-1:]), flush=True)
        for n in workers:
            folder = Path(tempfile.mkdtemp(prefix="tkray-"))
            process, address, started = start_ray(n, folder, env)
            try:
                before = load()
                seconds = compare(Path(tmp) / f"ray{n}", config, env, "--executor", "ray", "--ray-address", address)
            finally:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                shutil.rmtree(folder, ignore_errors=True)
            rows.append({"executor": "ray", "workers": n, "cells": 8, "wall_s": seconds, "cluster_start_s": started,
                         "load_before": before, "load_after": load()})
            print(markdown(rows[-1:]), flush=True)
    for r in rows:
        r["speedup_vs_local"] = rows[0]["wall_s"] / r["wall_s"]
    return rows


# -- one training step of the research model ---------------------------------------------------
def step_rows(arch: str, encoder: str, size: int, batch: int, threads_list: list[int], steps: int, warmup: int) -> list[dict]:
    from toolkit.workbench.models import create_model
    from toolkit.workbench.losses import make_loss
    from toolkit.workbench.optim import make_optimizer
    from toolkit.workbench.training import TrainConfig, run_steps

    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = create_model(arch, encoder, None, num_classes=4)
        cfg = TrainConfig(batch_size=batch)
        optimizer, loss_fn = make_optimizer(model, cfg), make_loss(cfg)
        x, y = torch.randn(batch, 3, size, size), torch.randint(0, 4, (batch, size, size))
        run_steps(model, optimizer, warmup, lambda m: loss_fn(m(x), y))
        t0 = time.perf_counter()
        run_steps(model, optimizer, steps, lambda m: loss_fn(m(x), y))
        train_s = (time.perf_counter() - t0) / steps
        model.eval()
        with torch.no_grad():
            model(x)
            t0 = time.perf_counter()
            for _ in range(steps):
                model(x)
        eval_s = (time.perf_counter() - t0) / steps
        rows.append({"arch": arch, "encoder": encoder, "input": f"{batch}x3x{size}x{size}", "threads": threads,
                     "train_step_s": train_s, "eval_batch_s": eval_s, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                     "load": load()})
        print(markdown(rows[-1:]), flush=True)
    return rows


def research_estimate(step: dict) -> str:
    """The research grid's training cost at the measured per-step time, as a labelled estimate."""
    r = RESEARCH
    per_epoch, val_batches = TRAIN_IMAGES // r["batch"], -(-VAL_IMAGES // r["batch"])
    epoch_s = per_epoch * step["train_step_s"] + val_batches * step["eval_batch_s"]
    dense_models = r["archs"] * r["datasets"]
    cells = dense_models * r["pruners"] * r["sparsities"]
    train_epochs, prune_epochs, finetune_epochs = r["epochs"]
    epochs = dense_models * train_epochs + cells * (prune_epochs + finetune_epochs)
    critical = (train_epochs + prune_epochs + finetune_epochs) * epoch_s  # a dense model, then one of its cells
    return (
        f"ESTIMATE (not measured): {cells} cells + {dense_models} dense models = {epochs:,} epochs of "
        f"{per_epoch} training steps ({TRAIN_IMAGES} of ~{IMAGES} images per dataset, batch {r['batch']}) and "
        f"{val_batches} validation batches; at {step['train_step_s']:.1f} s a step and {step['eval_batch_s']:.1f} s "
        f"a validation batch ({step['arch']} {step['encoder']}, {step['threads']} thread(s)) that is "
        f"{epochs * epoch_s / 3600:,.0f} h = {epochs * epoch_s / 86400:,.0f} days in one process; no number of "
        f"workers makes it shorter than a dense model and then one of its cells, {critical / 86400:,.1f} days. "
        f"The pruners are unstructured, so pruned steps cost as much as dense ones; UNet++ and MA-Net steps cost "
        f"more than FPN's."
    )


def main() -> None:
    p = parser("scaling", __doc__.splitlines()[0])
    p.add_argument("--part", choices=["grid", "step", "both"], default="both")
    p.add_argument("--workers", type=csv_list(int), default=[1, 2], help="Ray worker processes to try (default 1,2)")
    p.add_argument("--arch", default="fpn")
    p.add_argument("--encoder", default="resnet101")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=2, help="timed training steps (default 2)")
    p.add_argument("--step-threads", type=csv_list(int), default=[1], help="torch threads for the step, e.g. 1,2 (default 1)")
    args = p.parse_args()
    line = setup(args)
    rows: list[dict] = []
    if args.part in ("grid", "both"):
        grid = grid_rows(args.workers)
        print("\n" + markdown(grid), flush=True)
        rows += grid
    if args.part in ("step", "both"):
        steps = step_rows(args.arch, args.encoder, args.image_size, args.batch, args.step_threads, args.steps,
                          args.warmup if args.warmup is not None else 1)
        print("\n" + markdown(steps))
        for step in steps:
            print("\n" + research_estimate(step))
        rows += steps
    write_csv(rows, args.csv, line)


if __name__ == "__main__":
    main()
