"""Schedules: hand-computed values at phase boundaries, continuity, monotonicity, bad arguments."""
import math
import re
from fractions import Fraction

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


# -- independent references: the README's formulas, written out step by step ------------------------

GRID = np.concatenate([np.arange(0.0, 130.0, 0.25), [127.3, 1e4]])  # fractional steps and far past the end


def assert_matches(schedule, reference, grid=GRID, tol=1e-12):
    got = np.array([schedule(float(t)) for t in grid])
    want = np.array([reference(float(t)) for t in grid])
    np.testing.assert_allclose(got, want, rtol=tol, atol=1e-15)


def half_cosine(p):
    return 0.5 * (1.0 + math.cos(math.pi * p))


def ref_warmup(t, warmup, init, peak):
    return init + (peak - init) * t / warmup


def ref_cosine(peak, total, alpha=0.0, power=1.0):
    return lambda t: peak * (alpha + (1 - alpha) * half_cosine(min(t, total) / total) ** power)


def ref_warmup_cosine(peak, warmup, total, init=0.0, alpha=0.0, power=1.0):
    def f(t):
        t = min(t, total)
        if t < warmup:
            return ref_warmup(t, warmup, init, peak)
        if total == warmup:
            return alpha * peak
        return peak * (alpha + (1 - alpha) * half_cosine((t - warmup) / (total - warmup)) ** power)
    return f


def ref_sgdr(peak, length, alpha=0.0, mult=1.0, decay=1.0, cycles=None):
    def f(t):
        i, start = 0, 0
        while t >= start + max(1, round(length * mult ** i)):
            start += max(1, round(length * mult ** i))
            i += 1
        if cycles is not None and i >= cycles:
            return alpha * peak * decay ** (cycles - 1)
        L = max(1, round(length * mult ** i))
        return peak * decay ** i * (alpha + (1 - alpha) * half_cosine((t - start) / L))
    return f


def ref_wsd(peak, total, warmup, cooldown_steps, kind, floor, init=0.0):
    shapes = {"linear": lambda p: 1 - p, "cosine": half_cosine, "sqrt": lambda p: 1 - math.sqrt(p)}

    def f(t):
        t = min(t, total)
        if t < warmup:
            return ref_warmup(t, warmup, init, peak)
        if t < total - cooldown_steps:
            return peak
        if cooldown_steps == 0:
            return peak * floor
        return peak * (floor + (1 - floor) * shapes[kind]((t - (total - cooldown_steps)) / cooldown_steps))
    return f


def ref_infinite(peak, c, lo, warmup, cooldown, constant, anneal, init=0.0):
    end = warmup + cooldown + constant + anneal

    def f(t):
        t = min(t, end)
        if t < warmup:
            return ref_warmup(t, warmup, init, peak)
        if t < warmup + cooldown:
            return c + (peak - c) * half_cosine((t - warmup) / cooldown)
        if t < warmup + cooldown + constant or anneal == 0:
            return c
        return c * math.exp(-math.log(c / lo) * (t - warmup - cooldown - constant) / anneal)
    return f


def ref_triangular(base, peak, half, mode="triangular", gamma=1.0):
    def f(t):
        c = math.floor(1 + t / (2 * half))
        x = abs(t / half - 2 * c + 1)
        scale = {"triangular": 1.0, "triangular2": 0.5 ** (c - 1), "exp_range": gamma ** t}[mode]
        return base + (peak - base) * max(0.0, 1 - x) * scale
    return f


def ref_refined(norms, peak, width=1, total=None, power=2.0):
    """Defazio et al.'s rule with plain loops: optional running median (edge-padded start,
    reflected end), w = g^-power, shape_t = w_t * sum_{s>t} w_s, scaled to max = peak (also after
    resampling to ``total`` steps)."""
    g = [float(v) for v in norms]
    n = len(g)
    if width > 1:
        half = width // 2

        def at(i):
            if i < 0:
                return g[0]
            if i < n:
                return g[i]
            return g[2 * (n - 1) - i] if i <= 2 * (n - 1) else g[-1]  # reflected, then the last
        g = [float(np.median([at(i) for i in range(t - half, t + half + 1)])) for t in range(n)]
    w = [v ** -power for v in g]
    shape = [w[t] * sum(w[t + 1:]) for t in range(n)]
    top = max(shape)
    shape = [peak * v / top for v in shape]
    total = n if total is None else total
    if total != n:  # linear resampling in relative time
        resampled = []
        for k in range(total):
            x = k * (n - 1) / (total - 1)
            lo = min(int(math.floor(x)), n - 2)
            resampled.append(shape[lo] + (shape[lo + 1] - shape[lo]) * (x - lo))
        top = max(resampled)  # the new grid may miss the old maximum: scaled to max = peak again
        shape = [peak * v / top for v in resampled]

    def f(t):
        t = min(t, total - 1)
        lo = int(math.floor(t))
        if lo == t:
            return shape[lo]
        return shape[lo] + (shape[lo + 1] - shape[lo]) * (t - lo)
    return f


def test_constant():
    s = S.constant(0.3)
    assert s(0) == 0.3 and s(10 ** 9) == 0.3 and isinstance(s(3), float)


def test_linear_decay_points_and_clamp():
    s = S.linear_decay(1.0, 100)
    assert [s(0), s(25), s(100), s(150)] == [1.0, 0.75, 0.0, 0.0]
    assert S.linear_decay(1.0, 100, end_value=0.1)(50) == pytest.approx(0.55, abs=1e-15)
    assert_nonincreasing(values(s, 120))
    assert_matches(S.linear_decay(0.7, 37, end_value=0.05), lambda t: 0.05 + 0.65 * (1 - min(t, 37) / 37))


def test_piecewise_constant_boundaries():
    s = S.piecewise_constant([1.0, 0.5, 0.1], [10, 20])
    assert [s(0), s(9), s(10), s(19), s(20), s(10 ** 6)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    vals, bounds = [0.9, 0.4, 0.3, 0.05], [7, 19, 40]
    assert_matches(S.piecewise_constant(vals, bounds), lambda t: vals[sum(t >= b for b in bounds)])


def test_exponential():
    s = S.exponential(1.0, 0.5, 10)
    assert s(0) == 1.0 and s(10) == 0.5 and s(5) == pytest.approx(0.5 ** 0.5, abs=1e-15)
    assert S.exponential(1.0, 0.5, 10, staircase=True)(15) == 0.5
    assert S.exponential(1.0, 0.5, 10, end_value=0.2)(30) == 0.2  # 0.125 floored
    assert_nonincreasing(values(s, 100))
    assert_matches(S.exponential(0.9, 0.7, 6, end_value=0.05), lambda t: max(0.05, 0.9 * 0.7 ** (t / 6)))
    assert_matches(S.exponential(0.9, 0.7, 6, staircase=True, end_value=0.05),
                   lambda t: max(0.05, 0.9 * 0.7 ** math.floor(t / 6)))


def test_cosine_points_power_and_floor():
    s = S.cosine(2.0, 100, alpha=0.1)
    assert s(0) == 2.0
    assert s(50) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5), abs=1e-15)
    assert s(100) == pytest.approx(0.2, abs=1e-15) and s(1000) == pytest.approx(0.2, abs=1e-15)
    assert S.cosine(2.0, 100, alpha=0.1, power=2.0)(50) == pytest.approx(2.0 * (0.1 + 0.9 * 0.25), abs=1e-15)
    hand = 2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.3)))
    assert s(30) == pytest.approx(hand, abs=1e-15)
    assert_nonincreasing(values(s, 150))
    assert_matches(S.cosine(0.7, 37, alpha=0.15, power=1.5), ref_cosine(0.7, 37, 0.15, 1.5))


def test_warmup_cosine():
    s = S.warmup_cosine(1.0, warmup_steps=10, total_steps=110, init_value=0.0, alpha=0.0)
    assert [s(0), s(5), s(10)] == [0.0, 0.5, 1.0]
    assert s(60) == pytest.approx(0.5, abs=1e-15)
    assert s(110) == pytest.approx(0.0, abs=1e-15) and s(500) == pytest.approx(0.0, abs=1e-15)
    assert_continuous_at(s, 10)
    assert_nondecreasing(values(s, 10))
    assert_nonincreasing(values(s, 200, start=10))
    assert_matches(S.warmup_cosine(0.9, 7, 50, init_value=0.1, alpha=0.2, power=2.0),
                   ref_warmup_cosine(0.9, 7, 50, 0.1, 0.2, 2.0))
    assert_matches(S.warmup_cosine(0.9, 0, 50, alpha=0.3), ref_warmup_cosine(0.9, 0, 50, 0.0, 0.3))
    assert_matches(S.warmup_cosine(0.9, 12, 12, init_value=0.2, alpha=0.1),
                   ref_warmup_cosine(0.9, 12, 12, 0.2, 0.1))  # all warmup, then the floor


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
    # cycle lengths round(7 * 1.5^i) = 7, 10, 16, 24; peaks 0.8^i; after the 4th cycle the floor
    assert_matches(S.sgdr(1.0, 7, alpha=0.1, cycle_mult=1.5, peak_decay=0.8, num_cycles=4),
                   ref_sgdr(1.0, 7, 0.1, 1.5, 0.8, 4))
    assert_matches(S.sgdr(0.6, 9, alpha=0.25, peak_decay=0.9), ref_sgdr(0.6, 9, 0.25, 1.0, 0.9),
                   grid=GRID[:-1])  # 0.9^1111 underflows the relative comparison far out


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
    assert_matches(S.wsd(0.8, 60, warmup_steps=6, cooldown_steps=15, cooldown=kind, floor_ratio=0.05,
                         init_value=0.08), ref_wsd(0.8, 60, 6, 15, kind, 0.05, 0.08))
    assert_matches(S.wsd(0.8, 60, warmup_steps=6, cooldown_steps=0, cooldown=kind, floor_ratio=0.05),
                   ref_wsd(0.8, 60, 6, 0, kind, 0.05))


def test_wsd_default_cooldown_is_a_fifth():
    s = S.wsd(1.0, 100)
    assert s(0) == 1.0 and s(80) == 1.0 and s(90) == pytest.approx(0.5, abs=1e-15)
    assert_matches(s, ref_wsd(1.0, 100, 0, 20, "linear", 0.0))
    assert_matches(S.wsd(1.0, 37, warmup_steps=3), ref_wsd(1.0, 37, 3, 7, "linear", 0.0))  # 37 // 5 = 7


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
    assert_matches(S.infinite(1.0, 0.4, 0.02, 5, 11, 9, 13, init_value=0.1),
                   ref_infinite(1.0, 0.4, 0.02, 5, 11, 9, 13, 0.1))
    assert_matches(S.infinite(0.9, 0.3, 0.03, 4, 6, 0, 0), ref_infinite(0.9, 0.3, 0.03, 4, 6, 0, 0))


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
    assert_matches(second, ref_infinite(1.0, 0.5, 0.05, 0, 0, 30, 40))
    assert_matches(stream, lambda t: first(t) if t < 45 else ref_infinite(1.0, 0.5, 0.05, 0, 0, 30, 40)(t - 45))


def test_rex():
    s = S.rex(1.0, 100)
    assert s(0) == 1.0 and s(50) == pytest.approx(2 / 3, abs=1e-15) and s(100) == 0.0 and s(200) == 0.0
    assert S.rex(1.0, 100, min_value=0.1)(50) == pytest.approx(0.1 + 0.9 * 2 / 3, abs=1e-15)
    assert_nonincreasing(values(s, 120))
    def ref_rex(t, peak=0.7, lo=0.05, total=37):
        p = min(t, total) / total
        return lo + (peak - lo) * (1 - p) / (1 - p / 2)
    assert_matches(S.rex(0.7, 37, min_value=0.05), ref_rex)


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
    for mode in ("triangular", "triangular2", "exp_range"):
        assert_matches(S.triangular(0.05, 0.8, 6, mode=mode, gamma=0.97),
                       ref_triangular(0.05, 0.8, 6, mode, 0.97), grid=GRID[:-1])


def test_triangular2_decays_to_base_after_1024_cycles():
    # 1.0 / 2.0 ** (cycle - 1) raised OverflowError from cycle 1025 (step 2048·5 = 10240) on
    s = S.triangular(0.1, 1.0, 5, mode="triangular2")
    ref = ref_triangular(0.1, 1.0, 5, "triangular2")
    for t in (10235, 10239, 10240, 10245, 10250, 10_000_005, 1e300):
        assert s(t) == ref(t)
    assert s(10245) == 0.1 + 0.9 * 2.0 ** -1024 == 0.1  # the peak of cycle 1025: base, to the last bit
    assert s(2 * 5 * 1074 + 5) == 0.1  # 0.5 ** 1074 is the last float above 0


def test_join_uses_relative_steps():
    s = S.join([S.constant(1.0), S.linear_decay(1.0, 10), S.constant(0.01)], [5, 15])
    got = [s(0), s(4), s(5), s(10), s(14), s(15), s(99)]
    np.testing.assert_allclose(got, [1.0, 1.0, 1.0, 0.5, 0.1, 0.01, 0.01], rtol=0, atol=1e-15)
    warm = S.join([S.triangular(0.0, 1.0, 4), S.cosine(1.0, 10)], [4])  # ramp up, then decay
    assert warm(2) == 0.5 and warm(4) == 1.0 and warm(9) == pytest.approx(0.5, abs=1e-15)
    assert_continuous_at(warm, 4)
    three = S.join([S.cosine(1.0, 10), S.linear_decay(0.5, 20), S.constant(0.1)], [10, 30])
    assert_matches(three, lambda t: ref_cosine(1.0, 10)(t) if t < 10 else
                   (0.5 * (1 - min(t - 10, 20) / 20) if t < 30 else 0.1))


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
    # the rule written out with loops, on irregular norms, for both powers and a resampling
    norms = np.random.default_rng(4).uniform(0.2, 5.0, 23)
    for power in (1.0, 2.0, 0.5):
        for total in (None, 37, 11):
            assert_matches(S.refined(norms, 0.3, total_steps=total, power=power),
                           ref_refined(norms, 0.3, total=total, power=power), grid=GRID[GRID < 60])


def test_refined_resampled_keeps_its_maximum_at_the_peak():
    # norms (3, 1, 1) → w = (1/9, 1, 1), Σ_{s>t} w_s = (2, 1, 0), shape (2/9, 1, 0); over 2 steps the
    # grid {0, 1} misses the maximum: (2/9, 0), scaled again to (1, 0) (it gave 0.1·2/9 = 0.0222 at step 0)
    s = S.refined([3.0, 1.0, 1.0], 0.1, total_steps=2)
    assert [s(0), s(0.5), s(1)] == [0.1, 0.05, 0.0]
    # the docs' "its maximum is peak" whatever the new length (it was 0.099 at 1000 steps, 0.077 at 3)
    norms = 5 * np.exp(-np.arange(300) / 20) + 1 + 0.05 * np.random.default_rng(0).random(300)
    for total in (300, 1000, 301, 37, 10, 3, 2):
        assert max(S.refined(norms, 0.1, total_steps=total)(t) for t in range(total)) == 0.1, total


def test_refined_is_scale_invariant_in_the_norms():
    # w_t·Σ_{s>t} w_s rescales as a whole: huge norms gave 0/0 = NaN (1e100², 1e40⁸ underflow)
    for scale, power in ((1e100, 2.0), (1e40, 8.0), (1e-300, 2.0), (1e-300, 8.0), (1e300, 0.5)):
        got = values(S.refined([scale] * 10, 0.1, power=power), 12)
        np.testing.assert_array_equal(got, values(S.refined([1.0] * 10, 0.1, power=power), 12), err_msg=f"{scale}")
        np.testing.assert_allclose(got, values(S.linear_decay(0.1, 9), 12), rtol=0, atol=1e-16)
    norms = np.random.default_rng(6).uniform(0.2, 5.0, 23)
    for power in (0.5, 2.0, 8.0):
        want = values(S.refined(norms, 0.3, power=power), 25, num=97)
        np.testing.assert_array_equal(values(S.refined(norms * 2.0 ** -900, 0.3, power=power), 25, num=97), want)
        for scale in (1e-300, 1e-100, 1e100, 1e300):
            got = values(S.refined(norms * scale, 0.3, power=power), 25, num=97)
            np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-16, err_msg=f"{scale}, {power}")
    # weights spanning hundreds of decades: still finite, the largest product is the peak
    for norms, want in (([1e100, 1e-100], [1.0, 0.0]), ([1e-300, 1.0, 1.0], [1.0, 0.0, 0.0]),
                        ([1e300, 1e-300, 1.0, 1e300], [0.0, 1.0, 0.0, 0.0]),
                        ([1e80, 1.0, 1e-80, 1.0], [1e-160, 1.0, 1.0, 0.0])):
        np.testing.assert_allclose(values(S.refined(norms, 1.0), len(norms) - 1), want, rtol=1e-12, atol=0)


def test_refined_median_filter_removes_spikes():
    norms = np.ones(100)
    norms[[30, 60]] = 100.0  # isolated spikes
    line = S.linear_decay(1.0, 99)
    smoothed = S.refined(norms, 1.0, median_window_fraction=0.1)
    raw = S.refined(norms, 1.0)
    assert all(smoothed(t) == pytest.approx(line(t), abs=1e-15) for t in range(100))
    assert abs(raw(30) - line(30)) > 0.1
    # the running median written out: edge-padded start, reflected end (window 2*(f*n//2)+1)
    bumpy = np.random.default_rng(5).uniform(0.5, 3.0, 30)
    for fraction, width in ((0.2, 7), (0.1, 3), (0.35, 11), (1.0, 31)):
        assert_matches(S.refined(bumpy, 1.0, median_window_fraction=fraction),
                       ref_refined(bumpy, 1.0, width=width), grid=GRID[GRID < 40])


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
    (lambda: S.infinite(1.0, 0.5, 0.1, 5, 5, 0, 0, start_in_constant=True), ValueError,
     "constant_steps, anneal_steps: got 0 and 0, expected a sum >= 1 (start_in_constant=True drops"),
    (lambda: S.infinite(1.0, 0.5, 0.1, 0, 0, 0, 0), ValueError, "warmup_steps, cooldown_steps, constant_steps"),
    (lambda: S.cosine(1.0, 10.5), TypeError, "total_steps"),
    (lambda: S.exponential(1.0, 1.5, 10), ValueError, "decay_rate"),
    (lambda: S.sgdr(1.0, 10, cycle_mult=0.5), ValueError, "cycle_mult"),
    (lambda: S.piecewise_constant([1.0, 0.5], [10, 20]), ValueError, "values"),
    (lambda: S.piecewise_constant([1.0, 0.5, 0.1], [20, 10]), ValueError, "boundaries"),
    (lambda: S.join([S.constant(1.0)], [10]), ValueError, "schedules"),
    (lambda: S.join([S.constant(1.0), S.constant(2.0)], 5), TypeError,  # was "'int' object is not iterable"
     "boundaries: got int 5, expected a sequence of numbers"),
    (lambda: S.join(S.constant(1.0), []), TypeError, "schedules: got function"),
    (lambda: S.join(None, [5]), TypeError, "schedules: got NoneType None, expected a sequence of schedules"),
    (lambda: S.join([S.constant(1.0), S.constant(2.0)], "5"), TypeError,
     "boundaries: got str '5', expected a sequence"),
    (lambda: S.refined([1.0, 0.0, 2.0], 1.0), ValueError, "grad_norms"),
    (lambda: S.refined([1.0], 1.0), ValueError, "grad_norms"),
    (lambda: S.linear_decay(1.0, 10)(-1), ValueError, "step: got -1.0, expected >= 0"),
    (lambda: S.piecewise_constant(0.1, [5]), TypeError, "values: got float 0.1, expected a sequence of numbers"),
    (lambda: S.refined(["a", "b"], 0.1), TypeError, "grad_norms: got ['a', 'b'], expected a sequence of numbers"),
    (lambda: S.refined([1.0, -1.0], 0.1), ValueError, "grad_norms: got min -1.0, expected finite values > 0"),
    (lambda: S.wsd(0.1, 100, cooldown=np.array(["sqrt", "x"])), ValueError, "cooldown: got array("),
    (lambda: S.triangular(0.1, 1.0, 5, mode=np.array(["a", "b"])), ValueError,  # was NumPy's "truth value ... ambiguous"
     "mode: got array(['a', 'b'], dtype='<U1'), expected one of ('triangular', 'triangular2', 'exp_range')"),
    (lambda: S.refined([1.0, 2.0], 0.1, median_window_fraction=2), ValueError,
     "median_window_fraction: got 2.0, expected a ratio in [0, 1]"),
    # an infinite step was a NaN cycle index or an OverflowError; integers beyond the float range too
    (lambda: S.sgdr(1.0, 5)(math.inf), ValueError, "step: got inf, expected a finite number >= 0"),
    (lambda: S.triangular(0.1, 1.0, 5)(math.inf), ValueError, "step: got inf, expected a finite number >= 0"),
    (lambda: S.linear_decay(1.0, 5)(10 ** 400), ValueError, "step: got 1000000000"),
    (lambda: S.linear_decay(1.0, 10 ** 400), ValueError, "total_steps: got 1000000000"),
    (lambda: S.sgdr(1.0, 10 ** 400), ValueError, "cycle_steps: got 1000000000"),
    # norms that are no real numbers were cast to float64 silently
    (lambda: S.refined([True, True, True], 1.0), TypeError, "grad_norms: got [True, True, True], expected a sequence "
     "of numbers (real gradient norms, not dtype bool)"),
    (lambda: S.refined(["1", "2", "3"], 1.0), TypeError, "grad_norms: got ['1', '2', '3'], expected a sequence"),
    (lambda: S.refined(np.array([1 + 1j, 2, 3]), 1.0), TypeError, "not dtype complex128"),
]


@pytest.mark.parametrize("build, error, message", BAD)
def test_bad_arguments_name_the_field(build, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build()


def test_only_floors_are_told_about_the_peak():
    with pytest.raises(ValueError) as info:
        S.refined([1.0, 2.0], 0.1, median_window_fraction=2)
    assert str(info.value) == "median_window_fraction: got 2.0, expected a ratio in [0, 1]"
    with pytest.raises(ValueError, match=re.escape("(a floor above the peak is not allowed)")):
        S.wsd(1.0, 100, floor_ratio=2.0)
    # a negative ratio is below 0, not above the peak: the floor note is for values above 1 only
    for build, name in ((lambda: S.cosine(1.0, 10, alpha=-0.1), "alpha"),
                        (lambda: S.sgdr(1.0, 10, alpha=-0.1), "alpha"),
                        (lambda: S.wsd(1.0, 10, floor_ratio=-0.1), "floor_ratio")):
        with pytest.raises(ValueError) as info:
            build()
        assert str(info.value) == f"{name}: got -0.1, expected a ratio in [0, 1]"


@pytest.mark.parametrize("build", [
    lambda: S.warmup_cosine(1.0, 2, 10, init_value=2.0),
    lambda: S.wsd(1.0, 10, warmup_steps=2, init_value=2.0),
    lambda: S.infinite(1.0, 0.5, 0.1, 2, 2, 2, 2, init_value=2.0),
])
def test_init_value_above_the_peak_is_no_floor(build):
    # init_value is where the warmup starts, not a floor: the message says so
    with pytest.raises(ValueError) as info:
        build()
    assert str(info.value) == "init_value: got 2.0, expected <= peak=1.0 (the warmup rises from init_value to the peak)"


@pytest.mark.parametrize("build, name", [
    (lambda: S.cosine(10 ** 400, 10), "peak"),
    (lambda: S.exponential(0.1, 0.5, 3, end_value=-10 ** 400), "end_value"),
    (lambda: S.wsd(0.1, 10, floor_ratio=10 ** 400), "floor_ratio"),
])
def test_integers_too_large_for_a_float_are_not_finite(build, name):
    with pytest.raises(ValueError, match=f"^{name}: got -?1000.*expected a finite number"):
        build()


# -- the schedules of a training run ----------------------------------------------------------------

@pytest.mark.parametrize("value, error, message", [
    ("abc", TypeError, "constant_value: got 'abc' (str), expected a real number"),
    (None, TypeError, "constant_value: got None (NoneType), expected a real number"),
    (-0.1, ValueError, "constant_value: got -0.1, expected >= 0"),
])
def test_infinite_run_schedule_names_a_bad_constant_value(value, error, message):
    # the default min_value compared with it first: "'<' not supported between 'str' and 'float'"
    from seqcore.run_schedules import run_schedule
    with pytest.raises(error, match="^" + re.escape(message) + "$"):
        run_schedule("infinite", 0.1, 100, 10, {"constant_value": value})
    lr = run_schedule("infinite", 0.1, 100, 10, {"constant_value": 0.02})  # min_value: min(lr/100, 0.02)
    assert lr(100) == pytest.approx(0.001, rel=1e-12)


def test_a_history_with_an_overflowed_norm_is_called_non_finite(tmp_path):
    from seqcore.run_schedules import recorded_grad_norms
    from seqcore.runs import save_checkpoint
    save_checkpoint(tmp_path / "checkpoint.npz", {"grad_norms": np.array([1.0, np.inf, 2.0, 3.0])}, {"step": 4})
    with pytest.raises(ValueError) as info:
        recorded_grad_norms(tmp_path)
    assert str(info.value) == (f"from_run: {tmp_path / 'checkpoint.npz'} holds no usable gradient-norm history "
                               "(got 4 values, 1 of them non-finite), expected a run with at least 2 steps and "
                               "every gradient norm finite")  # it said "1 missing", of a complete history
    save_checkpoint(tmp_path / "checkpoint.npz", {"grad_norms": np.array([1.0])}, {"step": 1})
    with pytest.raises(ValueError, match=re.escape("history (got 1 values), expected a run with at least 2 steps")):
        recorded_grad_norms(tmp_path)
    save_checkpoint(tmp_path / "checkpoint.npz", {"grad_norms": np.array([1.0, 2.0])}, {"step": 2})
    np.testing.assert_array_equal(recorded_grad_norms(tmp_path), [1.0, 2.0])


# -- sgdr with slowly growing cycles --------------------------------------------------------------

def sgdr_value(peak, alpha, decay, index, tau, length):
    """The formula of the sgdr docstring, written with the same operations (so results are bit-equal),
    with this file's half_cosine: the library's own shape function would hide its own error."""
    return peak * decay ** index * (alpha + (1.0 - alpha) * half_cosine(tau / length))


def sgdr_starts(cycle_steps, mult, stop):
    """Cycle starts and lengths, one cycle at a time (the straightforward loop) up to ``stop``."""
    starts, lengths, start, i = [], [], 0, 0
    while start <= stop:
        length = max(1, round(cycle_steps * mult ** i))
        starts.append(start)
        lengths.append(length)
        start, i = start + length, i + 1
    return starts, lengths


@pytest.mark.parametrize("cycle_steps, mult, stop", [(1, 1.001, 3000), (3, 1.0001, 30000), (2, 1.05, 30000)])
def test_sgdr_with_slowly_growing_cycles_matches_the_cycle_by_cycle_loop(cycle_steps, mult, stop):
    # runs of equal lengths (1, 1, ..., 2, 2, ...) and, with 1.05, cycles of distinct lengths
    starts, lengths = sgdr_starts(cycle_steps, mult, stop)
    s = S.sgdr(0.9, cycle_steps, alpha=0.1, cycle_mult=mult, peak_decay=0.999)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(starts) - 1, size=min(300, len(starts) - 1), replace=False)
    for i in sorted(picks, reverse=True):  # out of order: the kept runs must not depend on the call order
        start, length = starts[i], lengths[i]
        for tau in (0.0, 0.5, length - 1.0, length - 0.25):
            if tau >= 0:
                assert s(start + tau) == sgdr_value(0.9, 0.1, 0.999, i, tau, length), (i, tau)


def test_sgdr_past_num_cycles_does_not_walk_every_cycle():
    # it looped over every cycle up to the step: with cycle_mult 1 + 1e-9 (4e8 one-step cycles first)
    # the step 10**12 never finished; past the last cycle the value is its floor
    s = S.sgdr(1.0, 1, alpha=0.1, cycle_mult=1 + 1e-9, peak_decay=0.9, num_cycles=3)
    assert s(10 ** 12) == 1.0 * 0.9 ** 2 * 0.1
    assert s(2.5) == sgdr_value(1.0, 0.1, 0.9, 2, 0.5, 1)
    # cycle_mult 1.0001: a huge step gives what the cycle-by-cycle loop gives at a moderate one
    slow = S.sgdr(1.0, 5, alpha=0.2, cycle_mult=1.0001, peak_decay=0.9, num_cycles=3)
    want = ref_sgdr(1.0, 5, 0.2, 1.0001, 0.9, 3)
    assert slow(10 ** 12) == want(100.0) == pytest.approx(0.2 * 0.81)
    assert [slow(t) for t in np.arange(0.0, 20.0, 0.5)] == [want(t) for t in np.arange(0.0, 20.0, 0.5)]


def test_sgdr_endless_slowly_growing_cycles_at_huge_steps():
    # cycle_mult 1 + 1e-9 from 1 step: cycle i lasts 1 step until round(m^i) reaches 2, at cycle j2
    # (found by bisection); then 2 steps. The step 10**8 + 0.25 is in cycle 10**8.
    m, d = 1 + 1e-9, 1 - 1e-9
    s = S.sgdr(1.0, 1, alpha=0.1, cycle_mult=m, peak_decay=d)
    lo, hi = 0, 10 ** 9
    while hi - lo > 1:  # round(m^lo) == 1 < round(m^hi)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if round(m ** mid) >= 2 else (mid, hi)
    j2 = hi
    assert 4 * 10 ** 8 < j2 < 5 * 10 ** 8  # ln 1.5 / ln m
    assert s(10 ** 8 + 0.25) == sgdr_value(1.0, 0.1, d, 10 ** 8, 0.25, 1)
    assert s(j2 - 0.5) == sgdr_value(1.0, 0.1, d, j2 - 1, 0.5, 1)
    assert s(j2) == sgdr_value(1.0, 0.1, d, j2, 0.0, 2)  # the first 2-step cycle starts at step j2
    k = 10 ** 8
    assert s(j2 + 2 * k + 1.5) == sgdr_value(1.0, 0.1, d, j2 + k, 1.5, 2)
    assert s(j2 + 2 * k + 2) == sgdr_value(1.0, 0.1, d, j2 + k + 1, 0.0, 2)
    assert math.isfinite(s(10 ** 12))


def test_join_checks_what_its_schedules_give():
    # a string raised "could not convert string to float: 'x'"; a NaN passed through
    with pytest.raises(TypeError, match="^" + re.escape(
            "schedules[1]: schedule gave 'x' (str) at step 1.0, expected a real number") + "$"):
        S.join([S.constant(1.0), lambda t: "x"], [5])(6)
    with pytest.raises(ValueError, match="^" + re.escape(
            "schedules[1]: schedule gave nan at step 2.0, expected a finite number") + "$"):
        S.join([S.constant(1.0), lambda t: math.nan], [5])(7)
    with pytest.raises(TypeError, match=r"^schedules\[0\]: got a callable <lambda>\(\) that does not take the step"):
        S.join([lambda: 1.0, S.constant(1.0)], [5])
    joined = S.join([S.constant(0.5), S.linear_decay(1.0, 10)], [5])
    assert joined(4) == 0.5 and joined(7.5) == 1.0 - 2.5 / 10


# ----------------------------------------------------------------------------- unordered values, huge sizes

@pytest.mark.parametrize("values, kind", [({0: 1.0, 10: 0.1, 20: 0.01}, "dict"), ({1.0, 0.1, 0.01}, "set"),
                                          (frozenset({1.0, 0.1, 0.01}), "frozenset"),
                                          ((v for v in (1.0, 0.1, 0.01)), "generator"),
                                          (np.ones((3, 1)), "ndarray")])
def test_piecewise_constant_and_join_refuse_unordered_values(values, kind):
    """A dict (optax's {boundary: scale}) gave its keys as learning rates 0, 10 and 20; a set its
    hash order. Only ordered sequences are taken."""
    with pytest.raises(TypeError, match=rf"^values: got {kind} .*, expected a sequence of numbers \(a list, tuple "
                                        r"or 1-D array: an ordered sequence\)"):
        S.piecewise_constant(values, [10, 20])
    with pytest.raises(TypeError, match=rf"^boundaries: got {kind} "):
        S.piecewise_constant([1.0, 0.1, 0.01], values)
    with pytest.raises(TypeError, match=r"^schedules: got dict "):
        S.join({S.constant(1.0): 0, S.constant(0.5): 10}, [10])


def test_piecewise_constant_and_join_take_lists_tuples_and_1d_arrays():
    for values, bounds in [([1.0, 0.1, 0.01], [10, 20]), ((1.0, 0.1, 0.01), (10, 20)),
                           (np.array([1.0, 0.1, 0.01]), np.array([10, 20])), ([1.0, 0.1, 0.01], range(10, 30, 10))]:
        s = S.piecewise_constant(values, bounds)
        assert [s(t) for t in (0, 9.5, 10, 19, 20, 1e6)] == [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
        j = S.join((S.constant(1.0), S.linear_decay(1.0, 10)), bounds[:1])
        assert j(15) == 0.5


def test_sgdr_cycles_longer_than_the_float_range_never_end():
    """cycle_mult ** i overflowed (an OverflowError naming nothing) at the first restart, even for a
    cycle num_cycles never reaches; such a cycle is now endless."""
    # cycles: [0, 10) peak 1; [10, 10 + 1e201) peak 0.5; then 10·1e400 steps, an endless cycle of peak 0.25
    s = S.sgdr(1.0, 10, alpha=0.5, cycle_mult=1e200, peak_decay=0.5)
    assert s(3) == pytest.approx(0.75 + 0.25 * math.cos(0.3 * math.pi), abs=1e-15)
    assert s(15) == 0.5 and s(1e250) == 0.25 and s(1.7e308) == 0.25
    once = S.sgdr(1.0, 10, alpha=0.5, cycle_mult=1e200, peak_decay=0.5, num_cycles=2)
    assert once(15) == 0.5 and once(1e250) == 0.25  # past the last cycle: its floor 0.5·0.5
    assert S.sgdr(0.1, 100, 0.0, cycle_mult=1e160)(150) == pytest.approx(0.1, abs=1e-15)
    # cycle i lasts 2^i steps and starts at 2^i − 1: step 1.7e308 is in cycle 1023; 2^1024 overflowed
    t = 1.7e308
    tau = Fraction(t) - (2 ** 1023 - 1)
    want = 0.1 * half_cosine(float(tau / 2 ** 1023))
    assert S.sgdr(0.1, 1, 0.0, cycle_mult=2.0)(t) == pytest.approx(want, rel=1e-12)


def test_refined_refuses_a_total_steps_beyond_this_machines_memory():
    """The resampled schedule holds total_steps floats: 10**13 was a raw MemoryError (72.8 TiB)."""
    with pytest.raises(ValueError, match=r"^total_steps: got 10000000000000, whose resampled schedule would take "
                                         r"[0-9.e+]+ GiB, more than this machine's"):
        S.refined([1.0, 2.0, 3.0], 1.0, total_steps=10 ** 13)
