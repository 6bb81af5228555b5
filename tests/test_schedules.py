"""Schedules: hand-computed values at phase boundaries, continuity, monotonicity, bad arguments."""
import math

import numpy as np
import pytest

from seqcore import schedules as S


def values(schedule, stop, start=0, num=None):
    steps = np.arange(start, stop + 1) if num is None else np.linspace(start, stop, num)
    return np.array([schedule(float(t)) for t in steps])


def assert_nonincreasing(v):
    assert np.all(np.diff(v) <= 1e-15), np.diff(v).max()


def assert_nondecreasing(v):
    assert np.all(np.diff(v) >= -1e-15), np.diff(v).min()


def assert_continuous_at(schedule, step, tol=1e-6):
    left, right = schedule(step - 1e-9), schedule(step)
    assert abs(left - right) < tol, (step, left, right)


def test_constant():
    s = S.constant(0.3)
    assert s(0) == 0.3 and s(10 ** 9) == 0.3 and isinstance(s(3), float)


def test_linear_decay_points_and_clamp():
    s = S.linear_decay(1.0, 100)
    assert [s(0), s(25), s(100), s(150)] == [1.0, 0.75, 0.0, 0.0]
    assert S.linear_decay(1.0, 100, end_value=0.1)(50) == pytest.approx(0.55, abs=1e-15)
    assert_nonincreasing(values(s, 120))


def test_piecewise_constant_boundaries():
    s = S.piecewise_constant([1.0, 0.5, 0.1], [10, 20])
    assert [s(0), s(9), s(10), s(19), s(20), s(10 ** 6)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]


def test_exponential():
    s = S.exponential(1.0, 0.5, 10)
    assert s(0) == 1.0 and s(10) == 0.5 and s(5) == pytest.approx(0.5 ** 0.5, abs=1e-15)
    assert S.exponential(1.0, 0.5, 10, staircase=True)(15) == 0.5
    assert S.exponential(1.0, 0.5, 10, end_value=0.2)(30) == 0.2  # 0.125 floored
    assert_nonincreasing(values(s, 100))


def test_cosine_points_power_and_floor():
    s = S.cosine(2.0, 100, alpha=0.1)
    assert s(0) == 2.0
    assert s(50) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5), abs=1e-15)
    assert s(100) == pytest.approx(0.2, abs=1e-15) and s(1000) == pytest.approx(0.2, abs=1e-15)
    assert S.cosine(2.0, 100, alpha=0.1, power=2.0)(50) == pytest.approx(2.0 * (0.1 + 0.9 * 0.25), abs=1e-15)
    hand = 2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.3)))
    assert s(30) == pytest.approx(hand, abs=1e-15)
    assert_nonincreasing(values(s, 150))


def test_warmup_cosine():
    s = S.warmup_cosine(1.0, warmup_steps=10, total_steps=110, init_value=0.0, alpha=0.0)
    assert [s(0), s(5), s(10)] == [0.0, 0.5, 1.0]
    assert s(60) == pytest.approx(0.5, abs=1e-15)
    assert s(110) == pytest.approx(0.0, abs=1e-15) and s(500) == pytest.approx(0.0, abs=1e-15)
    assert_continuous_at(s, 10)
    assert_nondecreasing(values(s, 10))
    assert_nonincreasing(values(s, 200, start=10))


def test_sgdr_restarts_multiplier_and_decay():
    s = S.sgdr(1.0, 10)
    assert s(0) == 1.0 and s(5) == pytest.approx(0.5, abs=1e-15) and s(10) == 1.0 and s(25) == pytest.approx(0.5)
    assert s(9) == pytest.approx(0.5 * (1 + math.cos(0.9 * math.pi)), abs=1e-15)
    grow = S.sgdr(1.0, 10, alpha=0.2, cycle_mult=2.0, peak_decay=0.5, num_cycles=2)
    # cycles [0, 10) peak 1, [10, 30) peak 0.5; after the last cycle its floor 0.2·0.5
    assert grow(10) == 0.5 and grow(20) == pytest.approx(0.5 * (0.2 + 0.8 * 0.5), abs=1e-15)
    assert grow(30) == pytest.approx(0.1, abs=1e-15) and grow(10 ** 6) == pytest.approx(0.1, abs=1e-15)
    assert_continuous_at(grow, 30, tol=1e-3)  # end of the last cycle meets the clamped floor
    endless = S.sgdr(1.0, 10, cycle_mult=2.0, peak_decay=0.5)
    assert endless(30) == 0.25 and endless(70) == 0.125
    assert_nonincreasing(values(endless, 29, start=10))


@pytest.mark.parametrize("kind, shape_at_half", [
    ("linear", 0.5), ("cosine", 0.5), ("sqrt", 1 - math.sqrt(0.5)),
])
def test_wsd_phases(kind, shape_at_half):
    s = S.wsd(1.0, 100, warmup_steps=10, cooldown_steps=20, cooldown=kind, floor_ratio=0.1)
    assert [s(0), s(5), s(10), s(50), s(79), s(80)] == [0.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert s(90) == pytest.approx(0.1 + 0.9 * shape_at_half, abs=1e-15)
    assert s(100) == pytest.approx(0.1, abs=1e-15) and s(10 ** 5) == pytest.approx(0.1, abs=1e-15)
    for boundary in (10, 80, 100):
        assert_continuous_at(s, boundary, tol=1e-4)
    assert_nondecreasing(values(s, 10))
    assert_nonincreasing(values(s, 120, start=10))


def test_wsd_default_cooldown_is_a_fifth():
    s = S.wsd(1.0, 100)
    assert s(0) == 1.0 and s(80) == 1.0 and s(90) == pytest.approx(0.5, abs=1e-15)


def test_infinite_phases_and_anneal_formula():
    s = S.infinite(1.0, constant_value=0.5, min_value=0.05, warmup_steps=10, cooldown_steps=20,
                   constant_steps=30, anneal_steps=40)
    assert [s(0), s(5), s(10)] == [0.0, 0.5, 1.0]
    assert s(20) == pytest.approx(0.75, abs=1e-15)  # cosine half-way between 1 and 0.5
    assert s(30) == 0.5 and s(45) == 0.5 and s(59) == 0.5 and s(60) == 0.5
    assert s(80) == pytest.approx(0.5 * math.exp(-math.log(10) * 0.5), abs=1e-15)
    assert s(100) == pytest.approx(0.05, abs=1e-15) and s(10 ** 6) == pytest.approx(0.05, abs=1e-15)
    for boundary in (10, 30, 60, 100):
        assert_continuous_at(s, boundary, tol=1e-4)
    assert_nonincreasing(values(s, 150, start=10))


def test_infinite_second_task_starts_at_constant_without_rewarming():
    kwargs = dict(peak=1.0, constant_value=0.5, min_value=0.05, warmup_steps=10, cooldown_steps=20,
                  constant_steps=30, anneal_steps=40)
    first = S.infinite(**kwargs)
    second = S.infinite(**kwargs, start_in_constant=True)
    assert second(0) == first(45) == 0.5
    assert max(values(second, 200)) == 0.5  # never re-warms above the constant level
    assert second(29) == 0.5 and second(30) == 0.5
    assert second(50) == pytest.approx(0.5 * math.exp(-math.log(10) * 0.5), abs=1e-15)
    assert second(70) == pytest.approx(0.05, abs=1e-15)
    # a stream: task 1 stays in its constant phase, task 2 continues seamlessly
    stream = S.join([first, second], [45])
    assert_continuous_at(stream, 45)


def test_rex():
    s = S.rex(1.0, 100)
    assert s(0) == 1.0 and s(50) == pytest.approx(2 / 3, abs=1e-15) and s(100) == 0.0 and s(200) == 0.0
    assert S.rex(1.0, 100, min_value=0.1)(50) == pytest.approx(0.1 + 0.9 * 2 / 3, abs=1e-15)
    assert_nonincreasing(values(s, 120))


def test_triangular_modes():
    s = S.triangular(0.1, 1.0, half_cycle_steps=10)
    assert [s(0), s(10), s(20), s(30)] == [0.1, 1.0, 0.1, 1.0]
    assert s(5) == pytest.approx(0.55, abs=1e-15) and s(15) == pytest.approx(0.55, abs=1e-15)
    halving = S.triangular(0.1, 1.0, 10, mode="triangular2")
    assert halving(30) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-15) and halving(50) == pytest.approx(0.325)
    shrink = S.triangular(0.1, 1.0, 10, mode="exp_range", gamma=0.99)
    assert shrink(10) == pytest.approx(0.1 + 0.9 * 0.99 ** 10, abs=1e-15)
    assert_nondecreasing(values(s, 10))
    assert_nonincreasing(values(s, 20, start=10))


def test_join_uses_relative_steps():
    s = S.join([S.constant(1.0), S.linear_decay(1.0, 10), S.constant(0.01)], [5, 15])
    got = [s(0), s(4), s(5), s(10), s(14), s(15), s(99)]
    np.testing.assert_allclose(got, [1.0, 1.0, 1.0, 0.5, 0.1, 0.01, 0.01], rtol=0, atol=1e-15)
    warm = S.join([S.triangular(0.0, 1.0, 4), S.cosine(1.0, 10)], [4])  # ramp up, then decay
    assert warm(2) == 0.5 and warm(4) == 1.0 and warm(9) == pytest.approx(0.5, abs=1e-15)
    assert_continuous_at(warm, 4)


def test_refined_constant_norms_is_linear_decay():
    n = 50
    s, line = S.refined(np.full(n, 3.0), peak=0.2), S.linear_decay(0.2, n - 1)
    for t in range(n + 5):
        assert s(t) == pytest.approx(line(t), abs=1e-15)


def test_refined_hand_computed_and_shapes():
    # norms (1, 2, 1) → w = (1, ¼, 1); w_t·Σ_{s>t} w_s = (1.25, 0.25, 0) → normalised (1, 0.2, 0)
    s = S.refined([1.0, 2.0, 1.0], peak=0.5)
    assert [s(0), s(1), s(2), s(3)] == [0.5, pytest.approx(0.1, abs=1e-16), 0.0, 0.0]
    assert s(0.5) == pytest.approx(0.3, abs=1e-15)  # linear between steps
    # large norms early → small weights early → a warm-up emerges
    norms = np.concatenate([np.geomspace(10, 1, 20), np.ones(80)])
    v = values(S.refined(norms, peak=1.0), 99)
    assert v[0] < 0.05 and v.argmax() > 10 and v.max() == 1.0 and v[-1] == 0.0
    # resampling keeps the shape in relative time
    assert S.refined(np.ones(11), 1.0, total_steps=21)(10) == pytest.approx(0.5, abs=1e-15)


def test_refined_median_filter_removes_spikes():
    norms = np.ones(100)
    norms[[30, 60]] = 100.0  # isolated spikes
    line = S.linear_decay(1.0, 99)
    smoothed = S.refined(norms, 1.0, median_window_fraction=0.1)
    raw = S.refined(norms, 1.0)
    assert all(smoothed(t) == pytest.approx(line(t), abs=1e-15) for t in range(100))
    assert abs(raw(30) - line(30)) > 0.1


BAD = [
    (lambda: S.constant(-0.1), ValueError, "value: got -0.1, expected >= 0"),
    (lambda: S.linear_decay(-1.0, 10), ValueError, "peak: got -1.0"),
    (lambda: S.cosine(-1.0, 10), ValueError, "peak"),
    (lambda: S.warmup_cosine(1.0, 200, 100), ValueError, "warmup_steps: got 200, expected <= total_steps=100"),
    (lambda: S.wsd(1.0, 100, warmup_steps=200), ValueError, "warmup_steps: got 200"),
    (lambda: S.wsd(1.0, 100, warmup_steps=50, cooldown_steps=60), ValueError, "cooldown_steps: got 60"),
    (lambda: S.cosine(1.0, 10, alpha=1.5), ValueError, "alpha: got 1.5"),
    (lambda: S.wsd(1.0, 100, floor_ratio=2.0), ValueError, "floor_ratio: got 2.0"),
    (lambda: S.linear_decay(1.0, 10, end_value=2.0), ValueError, "end_value: got 2.0, expected <= peak=1.0"),
    (lambda: S.rex(1.0, 10, min_value=3.0), ValueError, "min_value"),
    (lambda: S.triangular(2.0, 1.0, 10), ValueError, "base_value"),
    (lambda: S.infinite(1.0, 2.0, 0.1, 1, 1, 1, 1), ValueError, "constant_value: got 2.0"),
    (lambda: S.infinite(1.0, 0.5, 0.6, 1, 1, 1, 1), ValueError, "min_value: got 0.6"),
    (lambda: S.infinite(1.0, 0.5, 0.0, 1, 1, 1, 1), ValueError, "min_value"),
    (lambda: S.wsd(1.0, 100, cooldown="step"), ValueError, "cooldown: got 'step'"),
    (lambda: S.triangular(0.1, 1.0, 10, mode="sine"), ValueError, "mode"),
    (lambda: S.linear_decay(1.0, 0), ValueError, "total_steps: got 0, expected >= 1"),
    (lambda: S.cosine(1.0, -5), ValueError, "total_steps: got -5"),
    (lambda: S.wsd(1.0, 0), ValueError, "total_steps"),
    (lambda: S.rex(1.0, 0), ValueError, "total_steps"),
    (lambda: S.warmup_cosine(1.0, 0, 0), ValueError, "total_steps"),
    (lambda: S.infinite(1.0, 0.5, 0.1, 5, 5, 0, 0, start_in_constant=True), ValueError, "total_steps"),
    (lambda: S.cosine(1.0, 10.5), TypeError, "total_steps"),
    (lambda: S.exponential(1.0, 1.5, 10), ValueError, "decay_rate"),
    (lambda: S.sgdr(1.0, 10, cycle_mult=0.5), ValueError, "cycle_mult"),
    (lambda: S.piecewise_constant([1.0, 0.5], [10, 20]), ValueError, "values"),
    (lambda: S.piecewise_constant([1.0, 0.5, 0.1], [20, 10]), ValueError, "boundaries"),
    (lambda: S.join([S.constant(1.0)], [10]), ValueError, "schedules"),
    (lambda: S.refined([1.0, 0.0, 2.0], 1.0), ValueError, "grad_norms"),
    (lambda: S.refined([1.0], 1.0), ValueError, "grad_norms"),
    (lambda: S.linear_decay(1.0, 10)(-1), ValueError, "step: got -1.0, expected >= 0"),
]


@pytest.mark.parametrize("build, error, message", BAD)
def test_bad_arguments_name_the_field(build, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()
