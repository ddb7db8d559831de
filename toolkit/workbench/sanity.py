"""Signals that a training run is going nowhere, raised while it runs rather than found in a table later.

The commonest failure on defect data is silent: the loss falls, the mean IoU
looks plausible, and one thin or rare class is never predicted at all (the
magnetic-tile crack at 128 px). A foreground class whose validation IoU is
exactly 0 for ``patience`` epochs in a row gets one warning, naming it and
saying what to try.
"""
from __future__ import annotations

import warnings
from typing import Sequence


class StuckClassWarning(UserWarning):
    """A foreground class the model has not predicted correctly for many epochs."""


def zero_streak(values: Sequence[float]) -> int:
    """How many of the last values are exactly 0 (NaN, a class absent from validation, ends a streak)."""
    n = 0
    for v in reversed(values):
        if v != 0.0:  # NaN != 0 too
            break
        n += 1
    return n


def newly_stuck(per_class_history: Sequence[Sequence[float]], patience: int) -> list[int]:
    """Foreground classes whose zero streak has just reached ``patience`` epochs (so each streak warns once).

    ``per_class_history[e][c]`` is epoch e's validation IoU of class c; class 0 is background.
    """
    if patience < 1 or not per_class_history:
        return []
    classes = len(per_class_history[-1])
    return [c for c in range(1, classes) if zero_streak([epoch[c] for epoch in per_class_history if c < len(epoch)]) == patience]


def advice(recipe: str) -> str:
    if recipe != "robust":
        return "try recipe = 'robust' (--recipe robust), or a loss with a pixel term (loss = 'dice+ce')"
    return ("try class_weights = 'auto', a higher image_size with crop_size and foreground_crop for thin "
            "defects, or more steps")


def warn_stuck(
    per_class_history: Sequence[Sequence[float]], patience: int, class_names: Sequence[str] | None,
    stage: str, recipe: str,
) -> list[int]:
    """Warn (``StuckClassWarning``) for each class that has just been at 0 IoU for ``patience`` epochs."""
    stuck = newly_stuck(per_class_history, patience)
    for c in stuck:
        name = class_names[c] if class_names and c < len(class_names) else f"class {c}"
        warnings.warn(
            f"{stage}: validation IoU of {name!r} has been 0 for {patience} epochs (no pixel of it found); "
            f"{advice(recipe)}",
            StuckClassWarning, stacklevel=3,
        )
    return stuck
