"""Sparsity schedules: how the target sparsity rises during gradual pruning.

A schedule only says *how much* to prune *when*; which weights go is the
criterion's business (``toolkit.pruning.criteria``) and zeroing them is
``toolkit.pruning.masking``'s. Notation of the issue and of Zhu & Gupta (2017):
``t_0`` start iteration, ``dt`` iterations between prunes, ``n_p`` prunes,
``zeta_0`` initial and ``zeta_f`` final sparsity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from toolkit.errors import UsageError
from toolkit.named import Names

Shape = Literal["linear", "cubic"]


def _progress(t: float, start: int, steps: int, interval: int) -> float:
    """Fraction of the pruning window ``[t_0, t_0 + n_p * dt]`` behind ``t``, clipped to [0, 1]."""
    return min(1.0, max(0.0, (t - start) / (steps * interval)))


def linear(t: float, final: float, steps: int, interval: int, initial: float = 0.0, start: int = 0) -> float:
    """Linear pruning (LP): ``zeta(t) = zeta_0 + (t - t_0) / (n_p * dt) * (zeta_f - zeta_0)``.

    The issue writes the slope as ``zeta_f``; with the default ``zeta_0 = 0`` the
    two agree. For ``zeta_0 > 0`` the slope is ``zeta_f - zeta_0`` so the
    schedule still ends at ``zeta_f`` (the issue's literal formula would end at
    ``zeta_0 + zeta_f``, above the requested sparsity).
    """
    return initial + _progress(t, start, steps, interval) * (final - initial)


def cubic(t: float, final: float, steps: int, interval: int, initial: float = 0.0, start: int = 0) -> float:
    """AGP (Zhu & Gupta): ``zeta(t) = zeta_f + (zeta_0 - zeta_f) * (1 - (t - t_0) / (n_p * dt))**3``.

    Prunes fast while the network has many redundant weights, slowly near the end.
    """
    return final + (initial - final) * (1.0 - _progress(t, start, steps, interval)) ** 3


FORMULAS: Names[Callable[..., float]] = Names("schedule shape")
FORMULAS.register("linear", "linear pruning (LP): the same sparsity added at every prune", linear)
FORMULAS.register("cubic", "AGP (Zhu & Gupta): prunes fast while many weights are redundant, slowly near the end", cubic)


@dataclass(frozen=True)
class Schedule:
    """A sparsity schedule with its pruning times: prunes at ``t_0 + k * dt`` for ``k = 1..n_p``.

    No prune happens at ``t_0`` itself: score-based criteria have seen no
    gradients yet, so the first mask comes after one interval of scoring.
    """

    shape: Shape
    final: float
    steps: int
    interval: int
    initial: float = 0.0
    start: int = 0

    def __post_init__(self) -> None:
        FORMULAS.check(self.shape)
        if not 0.0 <= self.initial <= self.final < 1.0:
            raise UsageError(
                f"sparsities must satisfy 0 <= initial ({self.initial}) <= final ({self.final}) < 1; "
                "lower the initial sparsity or the target"
            )
        if self.steps < 1 or self.interval < 1:
            raise UsageError(f"pruning_steps ({self.steps}) and step_interval ({self.interval}) must be at least 1")
        if self.start < 0:
            raise UsageError(f"the schedule cannot start before iteration 0 (start={self.start})")

    def at(self, t: float) -> float:
        """Target sparsity at iteration ``t``."""
        return FORMULAS[self.shape](t, self.final, self.steps, self.interval, self.initial, self.start)

    @property
    def end(self) -> int:
        """The iteration at which the schedule reaches ``zeta_f``."""
        return self.start + self.steps * self.interval

    def prune_iterations(self) -> list[int]:
        return [self.start + k * self.interval for k in range(1, self.steps + 1)]
