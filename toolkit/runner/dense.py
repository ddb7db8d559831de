"""The dense stage: train (or load) the model every cell of an (architecture, dataset, seed) prunes.

Its folder holds ``dense.pt``, the training checkpoints and curves, and
``stats.json`` with the dense model's measurements; ``stats.json`` is written
last, so a folder that has it is finished and is never trained again (its
resume checkpoint ``train_last.pt`` is then deleted).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from toolkit.config import RunConfig
from toolkit.errors import UsageError
from toolkit.runner.stages import (
    Checkpoint, build_model, describe, drop_resume_checkpoints, open_workbench, recipe, save_examples, save_model,
    write_json,
)

STATS = "stats.json"


def finished_dense(folder: Path) -> dict[str, Any] | None:
    """The stats of a finished dense stage, or None."""
    path = folder / STATS
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # half-written by a crash: train (or measure) again


def train_dense(
    arch: str,
    dataset: str,
    seed: int,
    settings: RunConfig,
    folder: Path,
    *,
    checkpoint: str | Path | Checkpoint | None = None,
    examples: int = 0,
) -> dict[str, Any]:
    """Train the dense model into ``folder`` (resuming an interrupted training), or measure
    the given ``checkpoint`` (a file, or a ``Checkpoint`` already read); returns its stats (also
    ``folder/stats.json``)."""
    done = finished_dense(folder)
    if done is not None:
        return done
    folder.mkdir(parents=True, exist_ok=True)
    wb = open_workbench(settings, dataset, seed)
    t0 = time.perf_counter()
    history: list[dict[str, Any]] = []
    if checkpoint:
        given = Checkpoint.read(checkpoint)
        if given.recipe["arch"] != arch:
            raise UsageError(f"{given.path} holds a {given.recipe['arch']} model, not {arch}")
        model = given.model(wb.splits.num_classes)
        path, seconds, steps = given.path.resolve(), 0.0, 0
    else:
        model = build_model(arch, settings, wb.splits.num_classes, seed)
        trainer = wb.trainer("train")
        records = trainer.fit(model, settings.epochs_train, "train", folder)
        history = [r.__dict__ for r in records]
        path = save_model(model, recipe(arch, settings.encoder, wb.splits.num_classes), folder / "dense.pt")
        seconds, steps = time.perf_counter() - t0, settings.epochs_train * wb.steps_per_epoch
    stats = describe(model, wb)
    stats.update(
        arch=arch, dataset=dataset, seed=seed, checkpoint=str(path), encoder=settings.encoder,
        class_names=wb.splits.class_names, data_description=wb.splits.description,
        splits=[len(wb.splits.train), len(wb.splits.val), len(wb.splits.test)],
        time_train_s=seconds, steps_train=steps, history=history,
    )
    save_examples(model, wb, examples, folder / "examples.npz")
    if history:
        from toolkit.results.plots import plot_curves

        plot_curves(history, folder / "curves.png", title=f"{arch} ({settings.encoder}) on {dataset}, seed {seed}")
    write_json(stats, folder / STATS)
    drop_resume_checkpoints(folder)
    return stats
