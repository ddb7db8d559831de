"""The ``toolkit`` command: a thin shell over the library.

Each subcommand parses plain values, calls one library function and prints its
result. A ``ToolkitError`` becomes one line on stderr and its exit code; Ctrl-C
exits 130 after whatever finished has been written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from toolkit.errors import ToolkitError

Command = Callable[[argparse.Namespace], int]


def _cmd_plugins(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from toolkit.plugins import get_registry

    registry = get_registry()
    table = Table(title="pruners", title_justify="left")
    for col in ("name", "backend", "kind", "distribution"):
        table.add_column(col, no_wrap=True)  # names must stay whole to be copied
    table.add_column("description")
    for name in registry.list(args.pattern):
        reg = registry.pruners[name]
        table.add_row(name, reg.spec.backend, reg.spec.kind, reg.distribution, reg.spec.description)
    console = Console(width=max(120, Console().width))
    console.print(table)
    for broken in registry.broken:
        console.print(f"[red]broken plugin[/red] {broken.plugin} ({broken.distribution}): {broken.error}")
        if args.verbose and broken.detail:
            console.print(broken.detail, markup=False)
    return 0


def _add_plugins(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list installed pruner plugins", description="List every pruner that installed plugins offer, and plugins that failed to load.")
    p.add_argument("pattern", nargs="?", help="only names matching this glob, e.g. 'l*'")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of broken plugins")
    p.set_defaults(func=_cmd_plugins)


def _add_run_options(p: argparse.ArgumentParser, epochs: tuple[str, ...]) -> None:
    """Options shared by train/prune/compare; unset ones keep the config's value."""
    p.add_argument("--config", help="TOML file with settings (command-line options override it)")
    p.add_argument("--arch", help="unet, unetplusplus, fpn, linknet, manet (default fpn)")
    p.add_argument("--encoder", help="smp encoder name (default resnet101, as in the research)")
    p.add_argument("--encoder-weights", help="none (default), imagenet, or PATH to an encoder state_dict")
    p.add_argument("--data", help="synthetic (default, generated), magnetic-tile, or FORMAT:PATH / PATH")
    p.add_argument("--image-size", type=int, help="training size in pixels, a multiple of 32, at least 64 (default 128)")
    p.add_argument("--limit", type=int, help="read at most this many images (quick runs; 0 = all)")
    p.add_argument("--binary", action="store_true", default=None, help="defect / no-defect instead of one class per defect")
    p.add_argument("--skip-bad", action="store_true", default=None, help="skip (and report) unreadable files instead of stopping")
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int, help="default 4")
    p.add_argument("--steps-per-epoch", type=int, help="cap on training steps per epoch (quick runs)")
    p.add_argument("--sampling", choices=["shuffle", "balanced"],
                   help="training draws: shuffle (default) or balanced (each class folder equally often)")
    _add_method_options(p)
    for stage in epochs:
        p.add_argument(f"--epochs-{stage}" if len(epochs) > 1 else "--epochs", dest=f"epochs_{stage}", type=int,
                       help=f"epochs of the {stage} stage")
    p.add_argument("--out", help="run folder; an existing one is resumed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


METHOD_OPTIONS = {  # training method settings: (type, help); each overrides the recipe's value
    "recipe": (str, "research or robust (default robust; see toolkit/workbench/recipes.py)"),
    "loss": (str, "tversky, dice, focal, lovasz, ce, or a sum such as dice+ce"),
    "class_weights": (str, "for ce/focal: none, auto (inverse-sqrt frequency) or one number a class, e.g. 1,8"),
    "optimizer": (str, "sgd or adamw"),
    "schedule": (str, "cyclic, onecycle or cosine"),
    "lr_min": (float, "lowest learning rate"),
    "lr_max": (float, "peak learning rate"),
    "warmup_steps": (int, "onecycle/cosine: steps of linear warm-up"),
    "crop_size": (int, "train on random crops of this side of images held at --image-size (0 = whole images)"),
    "foreground_crop": (float, "probability that a crop is centred on a defect pixel"),
    "eval_window": (int, "evaluate in overlapping windows of this side (0 = whole images)"),
}


def _add_method_options(p: argparse.ArgumentParser) -> None:
    for name, (kind, text) in METHOD_OPTIONS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)


def _config_from(args: argparse.Namespace, **extra: object):
    from toolkit.config import load_config

    train = {k: v for k, v in {
        "batch_size": args.batch_size, "max_steps_per_epoch": args.steps_per_epoch, "sampling": args.sampling,
        "seed": args.seed, "progress": False if args.no_progress else None,
        **{name: getattr(args, name) for name in METHOD_OPTIONS},
    }.items() if v is not None}
    overrides = {name: getattr(args, name, None) for name in (
        "arch", "encoder", "encoder_weights", "data", "image_size", "limit", "binary", "skip_bad", "seed",
        "epochs_train", "epochs_prune", "epochs_finetune",
    )}
    return load_config(args.config, **overrides, **extra, train=train or None)


def _out_dir(args: argparse.Namespace, name: str):
    import time
    from pathlib import Path

    return Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _run_folder(args: argparse.Namespace, command: str):
    """The run's config and its folder, with the config it used written into it."""
    from toolkit.config import write_config

    cfg = _config_from(args)
    out = _out_dir(args, f"{command}-{cfg.arch}")
    out.mkdir(parents=True, exist_ok=True)
    write_config(cfg, out / "config.toml")
    return cfg, out


def _cmd_train(args: argparse.Namespace) -> int:
    from toolkit.runner.stages import build_workbench, describe, train_dense, write_json
    from toolkit.results.plots import plot_curves

    cfg, out = _run_folder(args, "train")
    wb = build_workbench(cfg)
    print(f"data: {wb.splits.description}; train/val/test = {len(wb.splits.train)}/{len(wb.splits.val)}/{len(wb.splits.test)}")
    dense = train_dense(wb, out)
    stats = describe(dense.model, wb)
    stats.update(arch=cfg.arch, encoder=cfg.encoder, dataset=cfg.data, classes=wb.splits.class_names,
                 history=[h.__dict__ for h in dense.history], time_train_s=dense.seconds)
    write_json(stats, out / "metrics.json")
    plot_curves(dense.history, out / "curves.png", title=f"{cfg.arch} ({cfg.encoder}) on {cfg.data}")
    print(f"test mean IoU {stats['test_iou']:.4f}; params {stats['params']:,}; wrote {out}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a dense segmentation model", description="Train a dense model and write a run folder (config, metrics CSV/JSON, checkpoints, curve plot).")
    _add_run_options(p, ("train",))
    p.set_defaults(func=_cmd_train)


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from toolkit.runner.stages import build_workbench
    from toolkit.workbench.lr_find import lr_range_test
    from toolkit.workbench.models import create_model

    cfg, out = _run_folder(args, "lr-find")
    wb = build_workbench(cfg)
    weights = cfg.encoder_weights if cfg.encoder_weights not in ("none", "") else None
    model = create_model(cfg.arch, cfg.encoder, weights, num_classes=wb.splits.num_classes)
    r = lr_range_test(model, wb.trainer, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps,
                      rule=args.rule, out_dir=out)
    print(f"suggested lr {r.suggestion:.2g} ({r.rule}; steepest {r.steepest_lr:.2g}, min/10 {r.min_loss_lr / 10:.2g}) "
          f"for {cfg.train.optimizer} with loss {cfg.train.loss}; wrote {r.files['plot']}")
    return 0


def _add_lr_find(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lr-find", help="learning-rate range test (Smith 2015)",
                       description="Train a copy of the model while the learning rate grows exponentially, "
                                   "and write the loss curve (lr_find.png, lr_find.json) with a suggested rate.")
    _add_run_options(p, ())
    p.add_argument("--steps", type=int, default=100, help="steps of the sweep (default 100)")
    p.add_argument("--start-lr", type=float, default=1e-7)
    p.add_argument("--end-lr", type=float, default=1.0)
    p.add_argument("--rule", choices=["steepest", "min/10"], default="steepest", help="how to pick the suggestion")
    p.set_defaults(func=_cmd_lr_find)


def _cmd_prune(args: argparse.Namespace) -> int:
    from toolkit.runner.stages import run_prune_pipeline
    from toolkit.plugins import get_registry

    get_registry().get(args.plugin)  # unknown names fail before any work
    options = _plugin_options(args.option)
    cfg = _config_from(args, plugin=args.plugin, sparsity=args.sparsity, checkpoint=args.checkpoint,
                       pruning_steps=args.pruning_steps, plugin_options=options or None)
    out = _out_dir(args, f"prune-{cfg.arch}-{cfg.plugin}")
    r = run_prune_pipeline(cfg, out)
    print(
        f"{r['plugin']} ({r['kind']}) at {r['target_sparsity']:.0%}: sparsity {r['achieved_sparsity']:.3f}, "
        f"params -{r['params_reduction']:.1%}, FLOPs -{r['flops_reduction']:.1%}, "
        f"latency x{r['latency_speedup']:.2f}, test IoU {r['test_iou_dense']:.4f} -> {r['test_iou_pruned']:.4f}; wrote {out}"
    )
    return 0


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
    p = sub.add_parser("prune", help="train (or load) -> prune -> fine-tune one model", description="Run the three-stage pipeline with one pruner plugin and write a run folder with before/after parameters, FLOPs, sparsity, latency, curves and test IoU.")
    p.add_argument("--plugin", required=True, help="pruner name (see 'toolkit plugins')")
    p.add_argument("--sparsity", type=float, help="target sparsity / pruning rate in [0, 1) (default 0.5)")
    p.add_argument("--pruning-steps", type=int, help="n_p: number of pruning steps for gradual pruners (default 10)")
    p.add_argument("--checkpoint", help="dense checkpoint from 'toolkit train' (dense.pt): skip training")
    p.add_argument("-o", "--option", action="append", metavar="KEY=VALUE", help="pruner option, e.g. -o criterion=magnitude")
    _add_run_options(p, ("train", "prune", "finetune"))
    p.set_defaults(func=_cmd_prune)


def _split(text: str | None, cast: Callable[[str], object] = str) -> list | None:
    from toolkit.errors import UsageError

    if text is None:
        return None
    try:
        return [cast(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"cannot read {text!r} as a comma-separated list of {cast.__name__}") from None


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from toolkit.runner.grid import load_grid, run_grid
    from toolkit.errors import UsageError
    from toolkit.plugins import parse_names
    from toolkit.results.report import write_report

    epochs = _split(args.epochs, int)
    if epochs is not None and len(epochs) not in (1, 3):
        raise UsageError("--epochs takes one number (every stage) or three: train,prune,finetune")
    if epochs and len(epochs) == 1:
        epochs = epochs * 3
    run = {
        "encoder": args.encoder, "encoder_weights": args.encoder_weights, "image_size": args.image_size,
        "limit": args.limit, "seed": args.seed, "binary": args.binary, "skip_bad": args.skip_bad,
        "pruning_steps": args.pruning_steps,
        **(dict(zip(("epochs_train", "epochs_prune", "epochs_finetune"), epochs)) if epochs else {}),
        "train": {k: v for k, v in {"batch_size": args.batch_size, "max_steps_per_epoch": args.steps_per_epoch,
                                     "sampling": args.sampling,
                                     "progress": False if args.no_progress else None}.items() if v is not None},
    }
    grid = load_grid(args.config, archs=_split(args.archs), plugins=_split(args.plugins),
                     sparsities=_split(args.sparsities, float), datasets=_split(args.datasets), run=run)
    parse_names(",".join(grid.plugins))  # unknown pruners: one line, exit 2, before any work
    out = Path(args.out)
    rows = run_grid(grid, out, retry_failed=args.retry_failed, force=args.force)
    report = write_report(out)
    failed = sum(r["status"] != "ok" for r in rows.values())
    print(f"{len(rows) - failed} cells ok, {failed} failed; report: {report}")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="run the benchmark grid and write tables and plots",
        description="Run model x pruner x sparsity x dataset (train once per model and dataset, prune many), "
        "then write report.md, results.csv/.tex/.jsonl and plots. Re-running the same command resumes: finished cells are skipped.",
    )
    p.add_argument("--config", help="grid TOML (see benchmarks/grid-*.toml); options below override it")
    p.add_argument("--plugins", help="comma list of pruners (default fpgm,l1,agp)")
    p.add_argument("--archs", help="comma list of architectures (default fpn,unet)")
    p.add_argument("--sparsities", help="comma list, e.g. 0.2,0.5,0.9 (default 0.5,0.75)")
    p.add_argument("--datasets", help="comma list of datasets (default synthetic)")
    p.add_argument("--epochs", help="epochs per stage: N, or train,prune,finetune")
    p.add_argument("--encoder", help="smp encoder (demo default resnet18)")
    p.add_argument("--encoder-weights", help="none, imagenet or PATH")
    p.add_argument("--image-size", type=int)
    p.add_argument("--limit", type=int, help="read at most this many images per dataset (0 = all; the demo reads 120)")
    p.add_argument("--binary", action="store_true", default=None)
    p.add_argument("--skip-bad", action="store_true", default=None)
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--sampling", choices=["shuffle", "balanced"])
    p.add_argument("--pruning-steps", type=int)
    p.add_argument("--out", default="runs/compare", help="run folder (default runs/compare); an existing one is resumed")
    p.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    p.add_argument("--force", action="store_true", help="resume even if the folder was made with other settings")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_compare)


def _cmd_report(args: argparse.Namespace) -> int:
    from toolkit.results.report import write_report

    print(f"report: {write_report(args.run_dir)}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write tables and plots of a compare run", description="Write report.md, results.md/.csv/.tex and plots from RUN_DIR/results.jsonl.")
    p.add_argument("run_dir", help="a folder written by 'toolkit compare'")
    p.set_defaults(func=_cmd_report)


def _cmd_export(args: argparse.Namespace) -> int:
    import torch

    from toolkit.pruning.serialize import export_onnx, load_model

    if args.image_size < 32 or args.image_size % 32:
        from toolkit.errors import UsageError

        raise UsageError(f"--image-size must be a multiple of 32, got {args.image_size}")
    model = load_model(args.model)
    out = args.out or str(Path(args.model).with_suffix(".onnx"))
    path = export_onnx(model, torch.randn(1, model_in_channels(model), args.image_size, args.image_size), out)
    print(f"onnx: {path} (input 1x{model_in_channels(model)}x{args.image_size}x{args.image_size}, dynamic batch)")
    return 0


def model_in_channels(model) -> int:
    import torch.nn as nn

    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return int(first.in_channels)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained or pruned model to ONNX",
                       description="Load a model file written by train, prune or compare (dense.pt, pruned.pt) "
                                   "and export it to ONNX for deployment (needs the onnx extra).")
    p.add_argument("model", help="dense.pt or pruned.pt from a run folder")
    p.add_argument("--out", help="ONNX file (default: beside the model, .onnx)")
    p.add_argument("--image-size", type=int, default=128, help="input side for the export trace (default 128)")
    p.set_defaults(func=_cmd_export)


def _subcommand_adders() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Every subcommand, in the order ``--help`` lists them."""
    return [_add_plugins, _add_train, _add_lr_find, _add_prune, _add_compare, _add_report, _add_export]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toolkit",
        description="Train, prune and fine-tune segmentation models for defect inspection, and compare pruning methods.",
    )
    from toolkit import __version__

    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
