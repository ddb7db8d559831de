"""What a run asks a pruner for: a target, and the search that meets a cost target.

One vocabulary from the command line to the results row:

* ``sparsity=0.5`` (or a bare ``0.5``): the pruner's own measure. For a
  structured pruner that is the channel **rate** (fraction of output channels
  removed from each prunable layer), for an unstructured one the **zero
  fraction** of the prunable weights. The row calls it ``rate`` or
  ``sparsity`` accordingly; the pruner is handed it as ``PruneRequest.amount``.
* ``flops=0.5``, ``params=0.5``, ``latency=0.5``: a **cost** target, "remove
  50% of the FLOPs (parameters, latency)". Structured pruners search the rate
  that reaches it; unstructured pruners keep dense kernels, so they are run at
  that zero fraction and their row reports the cost they really reached
  (no FLOP or latency change), which says plainly that they miss it.

A target is checked once, where it is read (``Target.parse``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from toolkit.errors import UsageError

NATIVE = ("sparsity", "rate")
COSTS = ("flops", "params", "latency")
KINDS = (*NATIVE, *COSTS)
TOLERANCE = 0.01  # a cost target counts as met within +-1 point


@dataclass(frozen=True)
class Target:
    """``kind`` in ``KINDS`` and a fraction to remove, ``0 <= value < 1``."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"unknown target kind {self.kind!r}; use one of {', '.join(KINDS)} (e.g. flops=0.5)")
        value = float(self.value)
        if math.isnan(value) or not 0.0 <= value < 1.0:
            raise UsageError(f"a {self.kind} target is a fraction to remove in [0, 1), got {self.value}")
        object.__setattr__(self, "value", value)

    @classmethod
    def parse(cls, text: "str | float | int | Target") -> "Target":
        """``0.5``, ``"0.5"``, ``"sparsity=0.5"``, ``"rate=0.5"``, ``"flops=0.5"``, ``"flops=50%"``."""
        if isinstance(text, Target):
            return text
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return cls("sparsity", float(text))
        kind, sep, value = str(text).strip().partition("=")
        if not sep:
            kind, value = "sparsity", kind
        kind, value = kind.strip().lower(), value.strip()
        try:
            number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
        except ValueError:
            raise UsageError(f"cannot read target {text!r}: write 0.5, sparsity=0.5, rate=0.5 or flops=0.5") from None
        return cls(kind, number)

    @property
    def is_cost(self) -> bool:
        return self.kind in COSTS

    def for_pruner(self, pruner_kind: str) -> "Target":
        """Name the native target by the pruner's measure: ``rate`` (structured) or ``sparsity``."""
        if self.kind == "rate" and pruner_kind != "structured":
            raise UsageError(f"rate={self.value:g} is a structured pruning rate; an {pruner_kind} pruner takes sparsity=")
        if self.kind in NATIVE:
            return Target("rate" if pruner_kind == "structured" else "sparsity", self.value)
        return self

    @property
    def slug(self) -> str:
        """Part of a cell id: ``0.5`` for the native target (as before), ``flops0.5`` for a cost one."""
        return f"{self.value:g}" if self.kind in NATIVE else f"{self.kind}{self.value:g}"

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"


def met(target: Target, reached: float) -> bool:
    """Within one point of the request."""
    return abs(reached - target.value) <= TOLERANCE + 1e-9


def find_rate(
    reduction_at: Callable[[float], float],
    goal: float,
    *,
    tolerance: float = TOLERANCE / 2,
    highest: float = 0.97,
    max_trials: int = 14,
    known_below: tuple[float, float] | None = None,
) -> tuple[float, float, list[tuple[float, float]]]:
    """The channel rate whose cost reduction is ``goal``, by bracketed secant search.

    ``reduction_at(rate)`` prunes a copy at that rate and measures what fraction
    of the cost it removed; it must rise with the rate (it does for FLOPs and
    parameters; latency is noisy). The first guess is ``1 - sqrt(1 - goal)``:
    removing a fraction r of a layer's inputs and outputs removes about
    ``1 - (1 - r)**2`` of its work. ``known_below`` is a (rate, reduction)
    already measured below the goal, where the search starts. Returns
    ``(rate, reached, trials)``; when no rate is within ``tolerance`` the
    closest one tried.
    """
    if not 0.0 < goal < 1.0:
        raise UsageError(f"a cost target must lie in (0, 1), got {goal}")
    trials: list[tuple[float, float]] = []
    lo, f_lo = known_below or (0.0, 0.0)
    hi, f_hi = highest, None
    rate = max(min(highest, 1.0 - math.sqrt(1.0 - goal)), lo + 0.01)
    for _ in range(max_trials):
        reached = float(reduction_at(rate))
        trials.append((rate, reached))
        if abs(reached - goal) <= tolerance:
            break
        if reached < goal:
            lo, f_lo = rate, reached
        else:
            hi, f_hi = rate, reached
        if f_hi is None:  # not bracketed yet: step up from the first guess
            rate = min(highest, rate + (goal - reached) * 1.5 + 0.02)
            if rate == highest and trials[-1][0] == highest:
                break
            continue
        # secant inside the bracket, with bisection as a guard against flat spots
        guess = lo + (goal - f_lo) * (hi - lo) / max(f_hi - f_lo, 1e-9)
        rate = guess if lo + 0.05 * (hi - lo) < guess < hi - 0.05 * (hi - lo) else (lo + hi) / 2
        if hi - lo < 1e-4:
            break
    best = min(trials, key=lambda t: abs(t[1] - goal))
    return best[0], best[1], trials
