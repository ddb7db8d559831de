"""Sparsity schedules against the formulas of the issue, on numbers."""
import pytest

from toolkit.errors import UsageError
from toolkit.pruning.schedules import Schedule, cubic, linear

# n_p = 4 prunes, dt = 10 iterations, t_0 = 0: the window is [0, 40]
N_P, DT = 4, 10


def test_linear_start_middle_end():
    assert linear(0, 0.8, N_P, DT) == 0.0
    assert linear(10, 0.8, N_P, DT) == pytest.approx(0.2)  # (t - t_0) / (n_p dt) * zeta_f = 10/40 * 0.8
    assert linear(20, 0.8, N_P, DT) == pytest.approx(0.4)
    assert linear(40, 0.8, N_P, DT) == pytest.approx(0.8)
    assert linear(55, 0.8, N_P, DT) == pytest.approx(0.8)  # holds zeta_f after the window


def test_linear_with_start_and_initial_sparsity():
    # t_0 = 5, zeta_0 = 0.2: rises from 0.2 to 0.8 over [5, 45]
    assert linear(0, 0.8, N_P, DT, initial=0.2, start=5) == pytest.approx(0.2)
    assert linear(5, 0.8, N_P, DT, initial=0.2, start=5) == pytest.approx(0.2)
    assert linear(25, 0.8, N_P, DT, initial=0.2, start=5) == pytest.approx(0.5)
    assert linear(45, 0.8, N_P, DT, initial=0.2, start=5) == pytest.approx(0.8)


def test_cubic_start_middle_end():
    assert cubic(0, 0.9, N_P, DT) == 0.0
    # zeta_f + (zeta_0 - zeta_f) * (1 - 20/40)**3 = 0.9 - 0.9 / 8
    assert cubic(20, 0.9, N_P, DT) == pytest.approx(0.7875)
    assert cubic(10, 0.9, N_P, DT) == pytest.approx(0.9 - 0.9 * 0.75**3)
    assert cubic(40, 0.9, N_P, DT) == pytest.approx(0.9)
    assert cubic(100, 0.9, N_P, DT) == pytest.approx(0.9)
    assert cubic(20, 0.9, N_P, DT, initial=0.1) == pytest.approx(0.9 - 0.8 / 8)


def test_cubic_prunes_faster_early_than_linear():
    assert cubic(10, 0.9, N_P, DT) > linear(10, 0.9, N_P, DT)
    assert cubic(30, 0.9, N_P, DT) - cubic(20, 0.9, N_P, DT) < linear(30, 0.9, N_P, DT) - linear(20, 0.9, N_P, DT)


@pytest.mark.parametrize("shape", ["linear", "cubic"])
def test_schedule_is_monotone_and_reaches_final_at_the_end(shape):
    s = Schedule(shape, final=0.9, steps=N_P, interval=DT, initial=0.1, start=3)
    values = [s.at(t) for t in range(0, 60)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert s.end == 3 + N_P * DT
    assert s.at(s.end) == pytest.approx(0.9)
    assert s.at(s.end - 1) < 0.9
    assert s.prune_iterations() == [13, 23, 33, 43]
    assert [round(s.at(t), 6) for t in s.prune_iterations()][-1] == 0.9


@pytest.mark.parametrize(
    "kwargs",
    [dict(shape="exp"), dict(final=1.0), dict(initial=0.95), dict(steps=0), dict(interval=0), dict(start=-1)],
)
def test_bad_schedules_are_usage_errors(kwargs):
    args = dict(shape="linear", final=0.9, steps=N_P, interval=DT) | kwargs
    with pytest.raises(UsageError):
        Schedule(**args)
