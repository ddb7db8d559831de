"""The ``toolkit`` command: a thin shell over the library.

Each subcommand parses plain values, calls one library function and prints its
result. A ``ToolkitError`` becomes one line on stderr and its exit code; Ctrl-C
exits 130 after whatever finished has been written.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from toolkit.errors import ToolkitError
from toolkit.runner.executors import EXECUTORS
from toolkit.workbench.device import PRECISIONS
from toolkit.workbench.settings import KINDS as DISTILL_KINDS

# -- plugins ----------------------------------------------------------------------------
class RegistryHelp(argparse.HelpFormatter):
    """Fills ``{pruners}``, ``{losses}``, ``{recovery_lrs}``... in help texts with the names the
    registries hold (``help_lists``), loading them only when help is printed."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text and "{" in text:
            for key, phrase in help_lists().items():
                if f"{{{key}}}" in text:
                    text = text.replace(f"{{{key}}}", phrase().replace("%", "%%"))  # argparse %-formats help
        return text


def help_lists() -> dict[str, Callable[[], str]]:
    """Help-text placeholder -> the phrase that lists what is registered under it, read when help is printed."""
    def plugins(what: str) -> str:
        from toolkit.plugins import get_registry
        from toolkit.workbench.models import list_models

        registry = get_registry()
        found = {"pruners": registry.list, "architectures": lambda: list_models(task="segmentation"),
                 "datasets": lambda: list(registry.datasets)}[what]()
        return ", ".join(found)

    def named(module: str, table: str, style: str = "or") -> str:
        import importlib

        names = getattr(importlib.import_module(module), table)
        if style == "described":  # each name with its one-line help
            return "; ".join(f"{n}: {h}" for n, h in names.describe().items())
        return names.listing() if style == "or" else ", ".join(names)

    return {
        **{what: functools.partial(plugins, what) for what in ("pruners", "architectures", "datasets")},
        "losses": functools.partial(named, "toolkit.workbench.losses", "LOSSES", "comma"),
        "recipes": functools.partial(named, "toolkit.workbench.recipes", "RECIPES"),
        "optimizers": functools.partial(named, "toolkit.workbench.optim", "OPTIMIZERS"),
        "schedules": functools.partial(named, "toolkit.workbench.optim", "SCHEDULES"),
        "regularizers": functools.partial(named, "toolkit.workbench.optim", "REGULARIZERS"),
        "recovery_lrs": functools.partial(named, "toolkit.workbench.optim", "RECOVERY_LRS", "described"),
        "precisions": functools.partial(named, "toolkit.workbench.device", "PRECISIONS", "described"),
        "executors": functools.partial(named, "toolkit.runner.executors", "EXECUTORS", "described"),
        "runtimes": functools.partial(named, "toolkit.results.runtimes", "RUNTIMES", "comma"),
    }


def _registered(name: str, reg: Any) -> dict[str, Any]:
    from toolkit.plugins import summary

    return {"name": name, "plugin": reg.plugin, "distribution": reg.distribution, "version": reg.version,
            **summary(reg.spec)}


def _cmd_plugins(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from toolkit.plugins import get_registry, matching

    registry = get_registry()
    plugins = registry.plugins()  # loads every hook: broken plugins are known from here on
    shown = {
        "pruners": {n: registry.pruners[n] for n in matching(registry.pruners, args.pattern)},
        "datasets": {n: registry.datasets[n] for n in matching(registry.datasets, args.pattern)},
        "architectures": {n: registry.models[n] for n in matching(registry.models, args.pattern)},
    }
    if args.json:
        payload: dict[str, Any] = {what: [_registered(n, r) for n, r in found.items()] for what, found in shown.items()}
        for entry in payload["pruners"]:
            entry["options"] = [{"name": o.name, "type": o.type.__name__, "default": o.default, "help": o.help,
                                 "choices": list(o.choices) if o.choices else None}
                                for o in registry.pruners[entry["name"]].spec.options]
        payload.update(
            plugins=plugins,
            broken=[{"name": b.plugin, "distribution": b.distribution, "error": b.error,
                     **({"traceback": b.detail} if args.verbose else {})} for b in registry.broken],
            disabled=sorted(registry.disabled),
        )
        print(json.dumps(payload, indent=2, default=str))
        return 0
    console = Console(width=max(120, Console().width))
    columns = {"pruners": ("backend", "kind"), "datasets": ("path",), "architectures": ("task",)}
    for what, found in shown.items():
        table = Table(title=what, title_justify="left")
        for col in ("name", *columns[what], "distribution"):
            table.add_column(col, no_wrap=True)  # names must stay whole to be copied
        table.add_column("description")
        for name, reg in found.items():
            description = reg.spec.description
            options = getattr(reg.spec, "options", ())
            if args.verbose and options:
                description += "\noptions: " + "; ".join(o.describe() for o in options)
            table.add_row(name, *(str(getattr(reg.spec, c)) for c in columns[what]), reg.distribution, description)
        console.print(table)
    for broken in registry.broken:
        console.print(f"[red]broken plugin[/red] {broken.plugin} ({broken.distribution}): {broken.error}", markup=True)
        if args.verbose and broken.detail:
            console.print(broken.detail, markup=False)
    if registry.disabled:
        console.print(f"disabled by TOOLKIT_DISABLE_PLUGINS: {', '.join(sorted(registry.disabled))}")
    return 0


def _add_plugins(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list installed plugins: pruners, datasets, architectures",
                       description="List every pruner, dataset format and architecture that installed plugins offer "
                                   "(built-ins included), and plugins that failed to load. "
                                   "TOOLKIT_DISABLE_PLUGINS=name1,name2 skips plugins by entry-point name.")
    p.add_argument("pattern", nargs="?", help="only names matching this glob, e.g. 'l*'")
    p.add_argument("-v", "--verbose", action="store_true", help="each pruner's options; tracebacks of broken plugins")
    p.add_argument("--json", action="store_true",
                   help="machine-readable: pruners, datasets, architectures, plugins (hooks, distribution, version), broken")
    p.set_defaults(func=_cmd_plugins)


# -- options shared by train / prune / compare -------------------------------------------
def _add_settings(p: argparse.ArgumentParser) -> None:
    """Run settings; unset ones keep the config's value."""
    p.add_argument("--encoder", help="smp encoder name (default resnet101, as in the research)")
    p.add_argument("--encoder-weights", help="none (default), imagenet, or PATH to an encoder state_dict")
    p.add_argument("--image-size", type=int, help="training size in pixels, a multiple of 32, at least 64 (default 128)")
    p.add_argument("--limit", type=int, help="read at most this many images (quick runs; 0 = all)")
    p.add_argument("--binary", action="store_true", default=None, help="defect / no-defect instead of one class per defect")
    p.add_argument("--skip-bad", action="store_true", default=None, help="skip (and report) unreadable files instead of stopping")
    p.add_argument("--ignore-index", type=int, help="mask value of void pixels, in no loss or IoU (VOC: 255); "
                                                    "default: the dataset's own (dataset.toml ignore_index)")
    p.add_argument("--batch-size", type=int, help="default 4")
    p.add_argument("--steps-per-epoch", type=int, help="cap on training steps per epoch (quick runs)")
    p.add_argument("--sampling", choices=["shuffle", "balanced"],
                   help="training draws: shuffle (default) or balanced (each class folder equally often)")
    p.add_argument("--device", help="auto (default: CUDA when present), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=PRECISIONS.names(), help="training precision: {precisions}")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="torch's deterministic algorithms: GPU runs repeat exactly (slower)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 0)")
    p.add_argument("--pin-memory", action="store_true", default=None, help="page-locked batches for faster GPU copies")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--pruning-steps", type=int, help="n_p: pruning steps of gradual and iterative pruners (default 10)")
    p.add_argument("--bn-recalibration", type=int, metavar="BATCHES",
                   help="after channel surgery, re-estimate BatchNorm statistics on this many training batches, "
                        "no training (default 10; 0 = off)")
    p.add_argument("--latency-runtimes", help="comma list of runtimes to time every model on: {runtimes} "
                                              "(default eager,onnxruntime,openvino)")
    p.add_argument("--distill", action="store_true", default=None,
                   help="distil the dense model into the pruned one while it trains (settings: [run.distill])")
    p.add_argument("--distill-kind", choices=DISTILL_KINDS,
                   help="what the pruned model matches (implies --distill): the teacher's logits (default), "
                        "its decoder features (pair-wise, any channel count) or both")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="train with model and batches in NHWC memory format (x1.23 per step of the headline model "
                        "on a CPU; slower for small ResNets at small inputs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    for name, (kind, text) in METHOD_OPTIONS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)


METHOD_OPTIONS = {  # training method settings: (type, help); each overrides the recipe's value
    "recipe": (str, "{recipes} (default robust; see toolkit/workbench/recipes.py)"),
    "loss": (str, "{losses}, or a sum such as dice+ce"),
    "class_weights": (str, "for ce/focal: none, auto (inverse-sqrt frequency) or one number a class, e.g. 1,8"),
    "optimizer": (str, "{optimizers}"),
    "schedule": (str, "{schedules}"),
    "lr_min": (float, "lowest learning rate"),
    "lr_max": (float, "peak learning rate"),
    "warmup_steps": (int, "onecycle/cosine: steps of linear warm-up"),
    "crop_size": (int, "train on random crops of this side of images held at --image-size (0 = whole images)"),
    "foreground_crop": (float, "probability that a crop is centred on a defect pixel"),
    "eval_window": (int, "evaluate in overlapping windows of this side (0 = whole images)"),
    "val_every": (int, "validate every N epochs and after the last (default 1): on a CPU validation can cost as "
                       "much as training; the weights do not depend on it"),
    "sparsity_regularizer": (str, "prune-aware dense training: {regularizers} (default none; "
                                  "Torch-Pruning's regularisers, dense training stage only)"),
    "regularizer_strength": (float, "the sparsity regulariser's coefficient (default 1e-4)"),
    "recovery_lr": (str, "the fine-tune's peak rate: {recovery_lrs}"),
}


def _settings(args: argparse.Namespace, epochs: dict[str, int | None] | None = None) -> dict[str, Any]:
    """The run-settings overrides the command line gives (None = not given)."""
    train = {k: v for k, v in {
        "batch_size": args.batch_size, "max_steps_per_epoch": args.steps_per_epoch, "sampling": args.sampling,
        "workers": args.workers, "pin_memory": args.pin_memory, "progress": False if args.no_progress else None,
        "channels_last": args.channels_last,
        **{name: getattr(args, name, None) for name in METHOD_OPTIONS},
    }.items() if v is not None}
    run = {name: getattr(args, name, None) for name in (
        "encoder", "encoder_weights", "image_size", "limit", "binary", "skip_bad", "ignore_index", "device", "precision",
        "deterministic", "threads", "pruning_steps", "bn_recalibration",
    )}
    run["latency_runtimes"] = _split(args.latency_runtimes)
    run.update(epochs or {})
    if args.distill or args.distill_kind:
        run["distill"] = {"enabled": True, **({"kind": args.distill_kind} if args.distill_kind else {})}
    return {**{k: v for k, v in run.items() if v is not None}, **({"train": train} if train else {})}


def _add_job_options(p: argparse.ArgumentParser, epochs: tuple[str, ...]) -> None:
    p.add_argument("--config", help="TOML file with settings (command-line options override it)")
    p.add_argument("--arch", help="architecture: {architectures} (default fpn)")
    p.add_argument("--data", help="dataset: synthetic (default, generated), magnetic-tile, FORMAT:PATH or a folder; "
                                  "formats: {datasets}")
    p.add_argument("--seed", type=int, help="seeds the model, the split, the data order and the pruner (default 0)")
    for stage in epochs:
        p.add_argument(f"--epochs-{stage}" if len(epochs) > 1 else "--epochs", dest=f"epochs_{stage}", type=int,
                       help=f"epochs of the {stage} stage")
    p.add_argument("--out", help="run folder; an existing one is resumed")
    _add_settings(p)


def _job_from(args: argparse.Namespace, **extra: object):
    from toolkit.config import load_config

    epochs = {f"epochs_{s}": getattr(args, f"epochs_{s}", None) for s in ("train", "prune", "finetune")}
    job = {"arch": args.arch, "data": args.data, "seed": args.seed, **extra}
    return load_config(args.config, **job, **_settings(args, epochs))


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    import time

    return Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


# -- train ------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from toolkit.config import write_config
    from toolkit.runner.dense import train_dense

    job = _job_from(args)
    out = _out_dir(args, f"train-{job.arch}")
    out.mkdir(parents=True, exist_ok=True)
    write_config(job, out / "config.toml")
    stats = train_dense(job.arch, job.data, job.seed, job.run, out)
    train, val, test = stats["splits"]
    print(f"data: {stats['data_description']}; train/val/test = {train}/{val}/{test}")
    print(f"test mean IoU {stats['test_iou']:.4f}; params {stats['params']:,}; wrote {out}")
    return 0


# -- lr-find ----------------------------------------------------------------------------
def _cmd_lr_find(args: argparse.Namespace) -> int:
    from toolkit.config import write_config
    from toolkit.runner.stages import build_model, open_workbench
    from toolkit.workbench.lr_find import lr_range_test

    job = _job_from(args)
    out = _out_dir(args, f"lr-find-{job.arch}")
    out.mkdir(parents=True, exist_ok=True)
    write_config(job, out / "config.toml")
    wb = open_workbench(job.run, job.data, job.seed)
    model = build_model(job.arch, job.run, wb.splits.num_classes, job.seed)
    r = lr_range_test(model, wb.trainer("train"), start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps,
                      rule=args.rule, out_dir=out)
    t = job.run.train
    print(f"suggested lr {r.suggestion:.2g} ({r.rule}; steepest {r.steepest_lr:.2g}, min/10 {r.min_loss_lr / 10:.2g}) "
          f"for {t.optimizer} with loss {t.loss}; wrote {out / 'lr_find.png'}")
    return 0


def _add_lr_find(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lr-find", help="learning-rate range test (Smith 2015)",
                       description="Train a copy of the model while the learning rate grows exponentially, "
                                   "and write the loss curve (lr_find.png, lr_find.json) with a suggested rate.")
    _add_job_options(p, ())
    p.add_argument("--steps", type=int, default=100, help="steps of the sweep (default 100)")
    p.add_argument("--start-lr", type=float, default=1e-7)
    p.add_argument("--end-lr", type=float, default=1.0)
    p.add_argument("--rule", choices=["steepest", "min/10"], default="steepest", help="how to pick the suggestion")
    p.set_defaults(func=_cmd_lr_find)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a dense segmentation model",
                       description="Train a dense model and write a run folder (config, metrics CSV, stats.json, "
                                   "checkpoints, curve plot).")
    _add_job_options(p, ("train",))
    p.set_defaults(func=_cmd_train)


# -- prune ------------------------------------------------------------------------------
def _cmd_prune(args: argparse.Namespace) -> int:
    import time

    from toolkit.atomic import write_json
    from toolkit.errors import UsageError
    from toolkit.pruning.targets import Target
    from toolkit.runner.cell import Cell, resolve_pruner, run_cell
    from toolkit.runner.dense import train_dense
    from toolkit.runner.rows import cell_row, environment, ok_columns
    from toolkit.runner.stages import Checkpoint

    if args.sparsity is not None and args.target is not None:
        raise UsageError("give --sparsity or --target, not both")
    target = args.target if args.target is not None else (None if args.sparsity is None else str(args.sparsity))
    arch = args.arch
    checkpoint = Checkpoint.read(args.checkpoint) if args.checkpoint else None  # read once, used by every stage
    if checkpoint:
        arch = checkpoint.recipe["arch"]  # the checkpoint says what model it is
    job = _job_from(argparse.Namespace(**{**vars(args), "arch": arch}), plugin=args.plugin, target=target,
                    checkpoint=args.checkpoint, plugin_options=_plugin_options(args.option) or None)
    if job.checkpoint and checkpoint is None:  # given in the --config file
        checkpoint = Checkpoint.read(job.checkpoint)
    if checkpoint:
        job.run.encoder = checkpoint.recipe["encoder"]
    cell = Cell(job.arch, job.data, job.plugin, Target.parse(job.target), job.seed)
    options = dict(job.plugin_options or {})
    resolve_pruner(cell.plugin, cell.target, options)  # unknown name, bad options or target: one line, before any work
    out = _out_dir(args, f"prune-{job.arch}-{job.plugin}")
    dense = train_dense(job.arch, job.data, job.seed, job.run, out / "dense", checkpoint=checkpoint)
    t0 = time.perf_counter()
    columns = run_cell(cell, job.run, dense, out, options=options, checkpoint=checkpoint)
    # the row a grid's local executor writes for the same cell: same builder, same columns
    row = cell_row(cell, job.run, options, "local", environment(), ok_columns(columns), time.perf_counter() - t0)
    write_json(row, out / "result.json")
    print(f"{cell_line(row)}; wrote {out}")
    return 0


def cell_line(row: dict[str, Any]) -> str:
    """One finished cell in one line, its warnings (``toolkit.results.alerts``) at the end."""
    from toolkit.results.alerts import warning_text

    if row.get("status") != "ok":
        return f"{row['cell']}: failed: {row.get('error')}"
    return (
        f"{row['plugin']} ({row['kind']}) at {row['target_kind']}={row['target']:g}: reached {row['reached']:.3f}, "
        f"params -{row['params_reduction']:.1%}, FLOPs -{row['flops_reduction']:.1%}, "
        f"CPU latency x{row['latency_speedup']:.2f}, test IoU {row['test_iou_dense']:.4f} -> {row['test_iou_pruned']:.4f} "
        f"after {row['recovery_steps']} recovery steps{warning_text(row)}"
    )


def _plugin_options(pairs: list[str] | None) -> dict[str, object]:
    """``-o key=value`` pairs; values are read as TOML scalars (never evaluated as code)."""
    import tomllib

    from toolkit.errors import UsageError

    options: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"plugin option {pair!r} must look like key=value")
        try:
            options[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            options[key.strip()] = value
    return options


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="train (or load) -> prune -> fine-tune one model",
                       description="Run the three-stage pipeline with one pruner plugin and write a run folder with "
                                   "before/after parameters, FLOPs, sparsity, latency, curves and test IoU.")
    p.add_argument("--plugin", required=True, help="pruner: {pruners}")
    p.add_argument("--sparsity", type=float, help="the pruner's own measure in [0, 1): channel rate (structured) "
                                                  "or zero fraction (unstructured); default 0.5")
    p.add_argument("--target", help="or a cost to remove: flops=0.5, params=0.5, latency=0.5 (rate=, sparsity= too)")
    p.add_argument("--checkpoint", help="dense checkpoint from 'toolkit train' (dense.pt): skip training")
    p.add_argument("-o", "--option", action="append", metavar="KEY=VALUE", help="pruner option, e.g. -o criterion=magnitude")
    _add_job_options(p, ("train", "prune", "finetune"))
    p.set_defaults(func=_cmd_prune)


# -- compare ----------------------------------------------------------------------------
def _split(text: str | None, cast: Callable[[str], object] = str) -> list | None:
    from toolkit.errors import UsageError

    if text is None:
        return None
    try:
        return [cast(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"cannot read {text!r} as a comma-separated list of {cast.__name__}") from None


def _cmd_compare(args: argparse.Namespace) -> int:
    from toolkit.errors import UsageError
    from toolkit.results.report import write_report
    from toolkit.runner.grid import load_grid, run_grid
    from toolkit.runner.lock import hold

    epochs = _split(args.epochs, int)
    if epochs is not None and len(epochs) not in (1, 3):
        raise UsageError("--epochs takes one number (every stage) or three: train,prune,finetune")
    if epochs and len(epochs) == 1:
        epochs = epochs * 3
    if args.seed is not None and args.seeds is not None:
        raise UsageError("give --seed or --seeds, not both")
    seeds = [args.seed] if args.seed is not None else _split(args.seeds, int)
    run = _settings(args, dict(zip(("epochs_train", "epochs_prune", "epochs_finetune"), epochs)) if epochs else None)
    ray = {k: v for k, v in {"address": args.ray_address, "cpus_per_cell": args.cpus_per_cell,
                             "gpus_per_cell": args.gpus_per_cell}.items() if v is not None}
    grid = load_grid(args.config, archs=_split(args.archs), plugins=_split(args.plugins),
                     sparsities=_split(args.sparsities, float), targets=_split(args.targets),
                     datasets=_split(args.datasets), seeds=seeds, recovery_steps=_split(args.recovery_steps, int),
                     executor=args.executor, cell_timeout=args.cell_timeout, retime=args.retime, ray=ray or None,
                     run=run, tracking=_tracking(args))
    out = Path(args.out)

    def finished_cell(cell: Any, row: dict[str, Any]) -> None:
        from tqdm.auto import tqdm

        line = cell_line(row)
        tqdm.write(line if line.startswith(cell.id) else f"{cell.id}: {line}")  # below the progress bar

    with hold(out, "compare"):
        rows = run_grid(grid, out, retry_failed=args.retry_failed, force=args.force, on_cell=finished_cell)
        report = write_report(out)
    failed = [r for r in rows.values() if r["status"] != "ok"]
    for r in failed:
        print(f"failed: {r['cell']}: {r.get('error') or 'no reason recorded'}")
    print(f"{len(rows) - len(failed)} cells ok, {len(failed)} failed; report: {report}")
    if failed and not args.allow_failed:
        print(f"toolkit compare: {len(failed)} cell(s) failed (--retry-failed runs them again; "
              "--allow-failed exits 0 anyway)", file=sys.stderr)
        return 1
    return 0


def _tracking(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--mlflow [URI]`` and ``--mlflow-models`` over the grid's ``[tracking]``."""
    given = {k: v for k, v in {"mlflow": args.mlflow, "models": args.mlflow_models or None}.items() if v is not None}
    return given or None


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="run the benchmark grid and write tables and plots",
        description="Run model x pruner x target x dataset x seed (train once per model, dataset and seed, prune many), "
        "then write report.md, results.csv/.tex/.jsonl and plots. Re-running the same command resumes: finished cells are skipped.",
    )
    p.add_argument("--config", help="grid TOML (see benchmarks/grid-*.toml); options below override it")
    p.add_argument("--plugins", help="comma list of pruners (default dense,fpgm,l1,agp; dense = the control): {pruners}")
    p.add_argument("--archs", help="comma list of architectures (default fpn,unet): {architectures}")
    p.add_argument("--sparsities", help="comma list in each pruner's own measure, e.g. 0.2,0.5,0.9 (default 0.5,0.75)")
    p.add_argument("--targets", help="comma list of cost targets, e.g. flops=0.25,flops=0.5 (alone: no sparsities)")
    p.add_argument("--datasets", help="comma list of datasets (default synthetic), NAME or FORMAT:PATH; formats: {datasets}")
    p.add_argument("--seeds", help="comma list: every cell, dense included, runs once per seed (default 0)")
    p.add_argument("--seed", type=int, help="one seed (same as --seeds N)")
    p.add_argument("--recovery-steps", help="comma list of recovery budgets, e.g. 0,120,400: every cell, the dense "
                                            "control included, runs once per budget of steps after pruning "
                                            "(prune stage + fine-tune; 0 = prune and measure). Default: the epochs")
    p.add_argument("--epochs", help="epochs per stage: N, or train,prune,finetune")
    p.add_argument("--executor", choices=EXECUTORS.names(), help="where cells run: {executors}")
    p.add_argument("--ray-address", help="ray: auto (the running cluster) or HOST:PORT; none starts a local Ray")
    p.add_argument("--cpus-per-cell", type=float, help="ray: CPUs each cell reserves (default 1)")
    p.add_argument("--gpus-per-cell", type=float, help="ray: GPUs each cell reserves (default 0)")
    p.add_argument("--cell-timeout", type=float, help="seconds; a cell running longer is stopped and recorded as failed")
    p.add_argument("--out", default="runs/compare", help="run folder (default runs/compare); an existing one is resumed")
    p.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    p.add_argument("--allow-failed", action="store_true",
                   help="exit 0 even if cells failed (default: exit 1 after writing every row and the report)")
    p.add_argument("--mlflow", nargs="?", const="local", metavar="URI",
                   help="log every dense model and cell to MLflow, nested under one run for the grid: alone, to a "
                        "store in the run folder (RUN/mlflow.db); or to a tracking URI, e.g. http://host:5000")
    p.add_argument("--mlflow-models", action="store_true", help="with --mlflow: log the model files too (large)")
    p.add_argument("--force", action="store_true", help="resume even if the folder was made with other settings")
    p.add_argument("--retime", action=argparse.BooleanOptionalAction, default=None,
                   help="once the cells are done, time every model again in one process, interleaved "
                        "(default: on for the local executor, off on Ray)")
    _add_settings(p)
    p.set_defaults(func=_cmd_compare)


# -- report / export ----------------------------------------------------------------------
def _cmd_report(args: argparse.Namespace) -> int:
    from toolkit.results.report import write_report

    if (args.runtimes or args.cells) and not args.retime:
        from toolkit.errors import UsageError

        raise UsageError("--runtimes and --cells choose what --retime times: add --retime")
    if args.retime:
        from toolkit.runner.lock import hold
        from toolkit.results.runtimes import check_runtimes
        from toolkit.runner.retime import retime_run, runtimes_of

        if not (Path(args.run_dir) / "cells").is_dir():
            from toolkit.errors import UsageError

            raise UsageError(f"{args.run_dir} has no cells/: pass a folder written by 'toolkit compare'")
        settings = runtimes_of(Path(args.run_dir))
        settings["rounds"] = args.rounds or settings["rounds"]
        if args.runtimes:
            settings["runtimes"] = check_runtimes(_split(args.runtimes))
        settings["cells"] = _split(args.cells) if args.cells else []
        with hold(Path(args.run_dir), "report --retime"):  # it rewrites rows: never beside a running grid
            rows = retime_run(Path(args.run_dir), **settings)
        print(f"re-timed {sum(r.get('retimed_rounds') is not None for r in rows.values())} cells, "
              f"{settings['rounds']} interleaved rounds on {', '.join(settings['runtimes'])}")
    print(f"report: {write_report(args.run_dir)}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write tables and plots of a compare run",
                       description="Write report.md, results.md/.csv/.tex and plots from RUN_DIR/results.jsonl.")
    p.add_argument("run_dir", help="a folder written by 'toolkit compare'")
    p.add_argument("--retime", action="store_true",
                   help="first time every model again in this process, interleaved (for a grid run on a busy "
                        "machine or a cluster; run it on a quiet one)")
    p.add_argument("--rounds", type=int, help="--retime: timed rounds (default: the run's latency_runs, at least 10)")
    p.add_argument("--runtimes", help="--retime: comma list of runtimes to time on (default: the run's latency_runtimes)")
    p.add_argument("--cells", help="--retime: only cells whose id or method matches one of these comma-separated "
                                   "shell patterns (e.g. 'fpgm*,*__r800'), with their dense models")
    p.set_defaults(func=_cmd_report)


def _cmd_merge(args: argparse.Namespace) -> int:
    from toolkit.results.report import write_report
    from toolkit.runner.lock import hold
    from toolkit.runner.merge import merge_runs

    out = Path(args.into)
    with hold(out, "merge", option="--into"):
        done = merge_runs(out, [Path(s) for s in args.run_dirs], force=args.force)
        report = write_report(out)
    kept = f" ({len(done.kept)} in both, kept from {out})" if done.kept else ""
    print(f"merged {len(done.cells)} cells and {len(done.dense)} dense models{kept}; report: {report}")
    return 0


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="join run folders that ran parts of one grid, and report them together",
                       description="Copy the finished cells and dense models of RUN_DIRS into --into (made with the "
                                   "same settings: split a grid by --seeds or --plugins over machines, then join), "
                                   "then write its report. Cells the destination already has are kept.")
    p.add_argument("run_dirs", nargs="+", help="folders written by 'toolkit compare'")
    p.add_argument("--into", required=True, help="destination run folder (created if missing; resumable by compare)")
    p.add_argument("--force", action="store_true", help="join folders made with other settings")
    p.set_defaults(func=_cmd_merge)


def _cmd_export(args: argparse.Namespace) -> int:
    import torch

    from toolkit.errors import UsageError
    from toolkit.pruning.serialize import load_model
    from toolkit.results.runtimes import export_checked
    from toolkit.workbench.device import resolve_device

    if args.image_size < 32 or args.image_size % 32:
        raise UsageError(f"--image-size must be a multiple of 32, got {args.image_size}")
    if args.threads < 1 or args.runs < 1:
        raise UsageError("--threads and --runs must be >= 1")
    device = resolve_device(args.device or "cpu")
    model = load_model(args.model).to(device)
    out = args.out or str(Path(args.model).with_suffix(".onnx" if args.format == "onnx" else ".xml"))
    channels = model_in_channels(model)
    torch.manual_seed(0)
    x = torch.randn(1, channels, args.image_size, args.image_size, device=device)
    done = export_checked(model, x, out, args.format, tolerance=args.tolerance, threads=args.threads, runs=args.runs)
    shape = "x".join(map(str, done.input_shape))
    print(f"{args.format}: {done.path} (input {shape}, dynamic batch); outputs match PyTorch's within "
          f"{done.max_abs_diff:.2g} (tolerance {args.tolerance:g})")
    print(f"latency: {done.timing.median_ms:.2f} ms median (IQR {done.timing.iqr_ms:.2f} ms, {done.timing.runs} runs) "
          f"on {done.description}, input {shape}")
    return 0


def model_in_channels(model) -> int:
    import torch.nn as nn

    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return int(first.in_channels)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained or pruned model to ONNX or OpenVINO",
                       description="Load a model file written by train, prune or compare (dense.pt, pruned.pt), "
                                   "export it for deployment (onnx: the onnx extra; openvino: the openvino extra), "
                                   "check the file's outputs against PyTorch's in its runtime, and print its latency.")
    p.add_argument("model", help="dense.pt or pruned.pt from a run folder")
    p.add_argument("--format", choices=["onnx", "openvino"], default="onnx",
                   help="onnx (default; checked on ONNX Runtime) or openvino (IR .xml + .bin; checked on OpenVINO)")
    p.add_argument("--out", help="output file (default: beside the model, .onnx or .xml)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest difference from PyTorch's outputs accepted (default 1e-3); past it the export fails")
    p.add_argument("--threads", type=int, default=1, help="runtime threads for the latency printed (default 1)")
    p.add_argument("--runs", type=int, default=20, help="timed runs for the latency printed (default 20)")
    p.add_argument("--image-size", type=int, default=128, help="input side for the export trace (default 128)")
    p.add_argument("--device", help="device to trace on: cpu (default), cuda, cuda:N, mps")
    p.set_defaults(func=_cmd_export)


def _subcommand_adders() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Every subcommand, in the order ``--help`` lists them."""
    return [_add_plugins, _add_train, _add_lr_find, _add_prune, _add_compare, _add_report, _add_merge, _add_export]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toolkit",
        description="Train, prune and fine-tune segmentation models for defect inspection, and compare pruning methods.",
    )
    from toolkit import __version__

    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=functools.partial(argparse.ArgumentParser, formatter_class=RegistryHelp))
    for add in _subcommand_adders():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ToolkitError as exc:
        print(f"toolkit {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"toolkit {args.command}: interrupted; finished work is saved", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
