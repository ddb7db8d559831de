"""Time training steps of the headline model in the toolkit's Trainer: fp32, channels_last, bf16, both.

The headline's dense training (grid-headline-robust.toml): FPN + EfficientNet-Lite0,
robust recipe, batch 8 of 128 px crops from images held at 256 px, one thread.
Each variant trains its own copy of the same initial model; the variants take
turns (one chunk of ``--steps`` steps each per round, ``--rounds`` rounds after
``--warmup`` untimed ones), so background load hits them alike. Reported: the
median seconds per step over rounds and the speed-up against fp32. Data loading
and augmentation are inside the timed steps, as in a real run. Accuracy is not
measured here: a default changes only after same-seed runs reach the same IoU
(README, "Devices").

Run on a quiet machine:
    .venv/bin/python benchmarks/step_time.py                       # magnetic tile, ImageNet weights
    .venv/bin/python benchmarks/step_time.py --data synthetic --encoder-weights none --rounds 1 --steps 1 --warmup 0
"""
from __future__ import annotations

import copy
import statistics
import time

import torch

from common import csv_list, markdown, parser, setup, write_csv
from toolkit.config import lay_recipe
from toolkit.workbench.data import load_splits
from toolkit.workbench.models import create_model
from toolkit.workbench.training import TrainConfig, Trainer
from toolkit.workbench.weights import normalization

VARIANTS = {  # name: (channels_last, precision)
    "fp32": (False, "32"),
    "channels_last": (True, "32"),
    "bf16": (False, "bf16-mixed"),
    "channels_last+bf16": (True, "bf16-mixed"),
}


def main() -> None:
    p = parser("step_time", __doc__.splitlines()[0])
    p.add_argument("--data", default="magnetic-tile", help="dataset (default magnetic-tile, the headline's)")
    p.add_argument("--encoder", default="tu-tf_efficientnet_lite0")
    p.add_argument("--encoder-weights", default="imagenet", help="imagenet (default) or none")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant per round (default 10)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--limit", type=int, default=None, help="read at most this many images")
    p.add_argument("--variants", type=csv_list(str), default=list(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    args = p.parse_args()
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    warmup = 1 if args.warmup is None else args.warmup
    line = setup(args)

    weights = None if args.encoder_weights == "none" else args.encoder_weights
    mean, std = normalization(args.encoder, args.encoder_weights)
    splits = load_splits(args.data, image_size=args.image_size, seed=0, augment=True, mean=mean, std=std,
                         limit=args.limit, progress=False)
    cfg = lay_recipe(TrainConfig(), "robust")
    cfg.batch_size, cfg.crop_size, cfg.progress = args.batch_size, args.crop_size, False
    cfg.sampling = "balanced" if getattr(splits.train, "strata", None) else "shuffle"
    torch.manual_seed(0)
    dense = create_model("fpn", args.encoder, weights, num_classes=splits.num_classes)
    runs = {}
    for name in args.variants:
        channels_last, precision = VARIANTS[name]
        trainer = Trainer(splits.train, splits.val, splits.num_classes, copy.deepcopy(cfg), seed=0, precision=precision)
        trainer.cfg.channels_last = channels_last
        runs[name] = (trainer, copy.deepcopy(dense))

    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(warmup + args.rounds):
        for name, (trainer, model) in runs.items():
            start = time.perf_counter()
            trainer(model, args.steps)
            if round_ >= warmup:
                seconds[name].append((time.perf_counter() - start) / args.steps)
        print(f"round {round_ + 1}/{warmup + args.rounds}" + (" (warm-up)" if round_ < warmup else ""), flush=True)

    base = statistics.median(seconds["fp32"]) if "fp32" in seconds else None
    rows = []
    for name, values in seconds.items():
        median = statistics.median(values)
        rows.append({"variant": name, "channels_last": VARIANTS[name][0], "precision": VARIANTS[name][1],
                     "s_per_step": median, "min_s": min(values), "max_s": max(values),
                     "speedup_vs_fp32": base / median if base else None, "rounds": len(values), "steps": args.steps,
                     "batch": args.batch_size, "crop": args.crop_size, "encoder": args.encoder, "data": args.data})
    print(markdown(rows, ["variant", "s_per_step", "min_s", "max_s", "speedup_vs_fp32"]))
    write_csv(rows, args.csv, line)


if __name__ == "__main__":
    main()
