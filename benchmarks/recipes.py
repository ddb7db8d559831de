"""Which training recipe finds thin defects: candidates on the generated thin-lines data, several seeds.

Each candidate is a recipe (``toolkit.workbench.recipes``) plus overrides; each
trains a tiny U-Net (MobileNetV3-small encoder, 0.3 M parameters) from scratch
for the same number of steps on the same seeded data (no augmentation unless
``--augment``) and reports the crack IoU on the validation split (mean and worst
over seeds), so a recipe is chosen on a margin, not on a lucky seed. The
magnetic-tile half of the choice is run with ``toolkit train`` (see
benchmarks/README.md, "Training recipes").

Run:  .venv/bin/python benchmarks/recipes.py                      (about 15 min on 2 idle cores)
      .venv/bin/python benchmarks/recipes.py --candidates research,robust --seeds 0,1,2,3,4
      .venv/bin/python benchmarks/recipes.py --collect runs/mt-* runs/headline-robust/dense/*
                      (per-run table, mean ± std over seeds, recipes.csv: toolkit train runs and a grid's dense models)
"""
from __future__ import annotations

import json
import math
import statistics
import tomllib
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch

from common import RESULTS, csv_list, machine, markdown, parser, setup, stopwatch, write_csv
from toolkit.workbench.data import load_splits
from toolkit.workbench.recipes import apply_recipe
from toolkit.workbench.training import TrainConfig, Trainer

CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    # name: (recipe, overrides): each changes one thing against research or robust
    "research": ("research", {}),
    "research-sgd0.9": ("research", {"momentum": 0.9, "lr_min": 1e-3, "clr_step": 80}),  # the headline's tuning
    "research+adamw-cosine": ("research", {"optimizer": "adamw", "schedule": "cosine", "lr_min": 1e-5,
                                           "lr_max": 1e-3, "warmup_steps": 50, "weight_decay": 1e-4}),
    "research+dice+ce": ("research", {"loss": "dice+ce"}),
    "robust": ("robust", {}),
    "robust-ce": ("robust", {"loss": "ce"}),
    "robust-dice": ("robust", {"loss": "dice"}),
    "robust-tversky.3/.7": ("robust", {"loss": "tversky", "tversky_alpha": 0.3, "tversky_beta": 0.7}),
    "robust-tversky+ce": ("robust", {"loss": "tversky+ce", "tversky_alpha": 0.3, "tversky_beta": 0.7}),
    "robust-dice+focal": ("robust", {"loss": "dice+focal"}),
    "robust-lovasz+ce": ("robust", {"loss": "lovasz+ce"}),
    "robust+ce-auto": ("robust", {"class_weights": "auto"}),
    "robust+ce-median": ("robust", {"class_weights": "median-frequency"}),
    "robust-onecycle": ("robust", {"schedule": "onecycle"}),
    "robust-lr3e-3": ("robust", {"lr_max": 3e-3}),
    "robust-sgd": ("robust", {"optimizer": "sgd", "momentum": 0.9, "lr_max": 1e-2, "lr_min": 1e-4}),
}


def tiny_unet(encoder: str) -> torch.nn.Module:
    return smp.Unet(encoder, encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=2)


def run(name: str, seed: int, args: Any) -> dict[str, Any]:
    recipe, overrides = CANDIDATES[name]
    cfg = TrainConfig(**{**apply_recipe(recipe), "recipe": recipe, **overrides, "batch_size": args.batch,
                         "progress": False, "zero_iou_patience": 0})
    splits = load_splits("thin-lines", image_size=args.size, limit=args.images, seed=seed, augment=args.augment)
    torch.manual_seed(seed)
    model = tiny_unet(args.encoder)
    trainer = Trainer(splits.train, splits.val, splits.num_classes, cfg, seed=seed)
    epochs = math.ceil(args.steps / len(trainer.train_loader))  # a validation after each pass over the data
    cfg.max_steps_per_epoch = math.ceil(args.steps / epochs)
    with stopwatch() as t:
        history = trainer.fit(model, epochs, "train")
    crack = [h.val_iou_per_class[1] for h in history]
    return {"candidate": name, "seed": seed, "steps": epochs * cfg.max_steps_per_epoch, "crack_iou": crack[-1],
            "best_crack_iou": max(crack), "seconds": t[0]}


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name in dict.fromkeys(r["candidate"] for r in rows):
        values = [r["crack_iou"] for r in rows if r["candidate"] == name and not math.isnan(r["crack_iou"])]
        out.append({"candidate": name, "recipe": CANDIDATES[name][0], "changes": str(CANDIDATES[name][1] or "-"),
                    "crack IoU mean": statistics.mean(values), "min": min(values), "max": max(values),
                    "seeds": len(values)})
    return out


def collect(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """One row per trained dense model: a ``toolkit train`` run folder (its ``config.toml``) or a
    dense folder of a ``toolkit compare`` run (``dense/<arch>__<data>__s<seed>``, settings in the
    run's ``settings.json``): its method settings, steps and per-class test IoU."""
    rows = []
    for run in run_dirs:
        stats = json.loads((run / "stats.json").read_text())
        if (run / "config.toml").exists():
            job = tomllib.loads((run / "config.toml").read_text())
            cfg, seed, name = job["run"], job["seed"], run.name
        else:  # a grid's dense stage: <grid run>/dense/<arch>__<data>__s<seed>
            grid_run = run.parent.parent
            cfg = json.loads((grid_run / "settings.json").read_text())
            seed, name = stats["seed"], f"{grid_run.name}/{run.name}"
        # runs from before recipes existed trained with the research settings (then TrainConfig's defaults)
        t = {**apply_recipe("research"), "recipe": "research", "crop_size": None, **cfg["train"]}
        row = {"run": name, "seed": seed, "recipe": t["recipe"], "loss": t["loss"],
               "class_weights": t["class_weights"], "optimizer": t["optimizer"], "schedule": t["schedule"],
               "lr": f"{t['lr_min']:g}..{t['lr_max']:g}", "image_size": cfg["image_size"], "crop": t["crop_size"] or "",
               "fg_crop": t["foreground_crop"] if t["crop_size"] else "", "steps": stats["steps_train"],
               "batch": t["batch_size"], "test_mIoU": stats["test_iou"]}
        row.update(dict(zip(stats["class_names"], stats["test_iou_per_class"])))
        row["train_min"] = stats["time_train_s"] / 60
        rows.append(row)
    return rows


def by_setting(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds of every IoU column, one row per (recipe, loss, optimiser, lr, size, crop, steps)."""
    keys = ("recipe", "loss", "optimizer", "lr", "image_size", "crop", "steps")
    not_iou = (*keys, "run", "seed", "class_weights", "schedule", "fg_crop", "batch", "train_min")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    table = []
    for key, members in groups.items():
        line: dict[str, Any] = {**dict(zip(keys, key)), "n": len(members)}
        for col in [c for c in members[0] if c not in not_iou]:  # test_mIoU and one column a class
            values = [float(m[col]) for m in members]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            line[col] = f"{statistics.fmean(values):.3f} ± {std:.3f}"
        table.append(line)
    return table


def main() -> None:
    p = parser("recipes", __doc__.splitlines()[0])
    p.set_defaults(csv=None)
    p.add_argument("--candidates", type=csv_list(str), default=list(CANDIDATES))
    p.add_argument("--seeds", type=csv_list(int), default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--images", type=int, default=300, help="generated images (60% train, 16% validation)")
    p.add_argument("--encoder", default="tu-mobilenetv3_small_050", help="smp encoder of the tiny U-Net (depth 3)")
    p.add_argument("--augment", action="store_true", help="the research's augmentation (off: what a recipe learns, faster)")
    p.add_argument("--collect", type=Path, nargs="+",
                   help="toolkit train run folders: tabulate them into recipes.csv instead of training")
    args = p.parse_args()
    if args.collect:
        rows = collect(args.collect)
        print(markdown(rows))
        print(markdown(by_setting(rows)))
        write_csv(rows, args.csv or RESULTS / "recipes.csv", machine(torch.get_num_threads()))  # toolkit train's threads
        return
    line = setup(args)
    rows = []
    for name in args.candidates:
        for seed in args.seeds:
            rows.append(run(name, seed, args))
            print(f"{name} seed {seed}: crack IoU {rows[-1]['crack_iou']:.3f} ({rows[-1]['seconds']:.0f} s)", flush=True)
    print(markdown(summary(rows)))
    write_csv(rows, args.csv or RESULTS / "recipes-thin-lines.csv", line)


if __name__ == "__main__":
    main()
