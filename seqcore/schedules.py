"""Learning-rate schedules: plain functions ``step -> float``.

Every constructor validates its arguments and returns a closure ``schedule(step)``
that takes a finite non-negative step (``int`` or ``float``) and returns a Python ``float``.
Step 0 is the first optimizer update. Schedules with a total length clamp: any step
beyond the total gives the final value. Warmups are linear from ``init_value`` (default
0) at step 0 to the peak at ``step == warmup_steps``.

Pass a schedule as ``learning_rate`` to any optimizer in :mod:`seqcore.optim`.
"""
from __future__ import annotations

import bisect
import math
import numbers
from typing import Callable, Sequence

import numpy as np

from .optim import _check_schedule, _schedule_value
from .validate import check_bool, check_fits_in_memory, check_real, finite_float

__all__ = [
    "Schedule", "constant", "linear_decay", "piecewise_constant", "exponential", "cosine",
    "warmup_cosine", "sgdr", "wsd", "infinite", "rex", "triangular", "join", "refined",
]

Schedule = Callable[[float], float]

COOLDOWN_KINDS = ("linear", "cosine", "sqrt")
TRIANGULAR_MODES = ("triangular", "triangular2", "exp_range")


# ----------------------------------------------------------------------------- validation

def _steps(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: got {value!r} ({type(value).__name__}), expected an int")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}: got {value}, expected >= {minimum}")
    if finite_float(value) is None:  # 10**400: the schedules compute in floats
        raise ValueError(f"{name}: got {value!r:.40}, expected an int a float can hold (<= 1.8e308)")
    return value


def _ratio(name: str, value, why: str = "") -> float:
    """``value`` in [0, 1]; ``why`` is said only for a value above 1 (a negative one is no floor above the peak)."""
    value = check_real(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: got {value}, expected a ratio in [0, 1]{why if value > 1.0 else ''}")
    return value


_FLOOR = " (a floor above the peak is not allowed)"
_WARMUP_START = "the warmup rises from init_value to the peak"


def _floor_below(name: str, value, peak_name: str, peak: float, why: str = "floor above the peak") -> float:
    value = check_real(name, value, low=0)
    if value > peak:
        raise ValueError(f"{name}: got {value}, expected <= {peak_name}={peak} ({why})")
    return value


def _step(step) -> float:
    if isinstance(step, bool) or not isinstance(step, numbers.Real):
        raise TypeError(f"step: got {step!r} ({type(step).__name__}), expected a number")
    value = finite_float(step)  # None for NaN, inf and ints beyond the float range (10**400)
    if value is None:
        raise ValueError(f"step: got {step!r:.40}, expected a finite number >= 0")
    if value < 0:
        raise ValueError(f"step: got {value}, expected >= 0")
    return value


def _warmup(step: float, warmup_steps: int, init_value: float, peak: float) -> float:
    return init_value + (peak - init_value) * step / warmup_steps


def _cosine_shape(progress: float) -> float:
    """½(1 + cos(π p)) for p in [0, 1]: 1 at p = 0, 0 at p = 1."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------- schedules

def constant(value: float) -> Schedule:
    """``η_t = value`` for every step."""
    value = check_real("value", value, low=0)

    def schedule(step) -> float:
        _step(step)
        return value

    return schedule


def linear_decay(peak: float, total_steps: int, end_value: float = 0.0) -> Schedule:
    """``η_t = end + (peak − end)·(1 − t/T)`` for t ≤ T, then ``end``; with end = 0 it is ``η·(1 − t/T)``."""
    peak = check_real("peak", peak, low=0)
    total_steps = _steps("total_steps", total_steps, 1)
    end_value = _floor_below("end_value", end_value, "peak", peak)

    def schedule(step) -> float:
        t = min(_step(step), total_steps)
        return end_value + (peak - end_value) * (1.0 - t / total_steps)

    return schedule


def _sequence(name: str, value, items: str = "numbers") -> list:
    """``value`` as a list: only ordered sequences (a dict would give its keys, a set its hash order)."""
    if not (isinstance(value, (list, tuple, range)) or isinstance(value, np.ndarray) and value.ndim == 1):
        got = f"of shape {value.shape}" if isinstance(value, np.ndarray) else f"{value!r:.40}"
        raise TypeError(f"{name}: got {type(value).__name__} {got}, expected a sequence of {items} "
                        "(a list, tuple or 1-D array: an ordered sequence)")
    return list(value)


def piecewise_constant(values: Sequence[float], boundaries: Sequence[int]) -> Schedule:
    """``values[i]`` for ``boundaries[i-1] <= t < boundaries[i]``; ``len(values) == len(boundaries) + 1``."""
    values = [check_real(f"values[{i}]", v, low=0) for i, v in enumerate(_sequence("values", values))]
    boundaries = [_steps(f"boundaries[{i}]", b, 1) for i, b in enumerate(_sequence("boundaries", boundaries))]
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"values: got {len(values)} values, expected len(boundaries) + 1 = {len(boundaries) + 1}")
    for i in range(1, len(boundaries)):
        if boundaries[i] <= boundaries[i - 1]:
            raise ValueError(f"boundaries: got {boundaries}, expected strictly increasing steps")

    def schedule(step) -> float:
        t = _step(step)
        index = sum(1 for b in boundaries if t >= b)
        return values[index]

    return schedule


def exponential(peak: float, decay_rate: float, decay_steps: int, staircase: bool = False,
                end_value: float = 0.0) -> Schedule:
    """``η_t = max(end, peak·rate^(t/k))`` with ``k = decay_steps``; ``staircase`` uses ``floor(t/k)``."""
    peak = check_real("peak", peak, low=0)
    decay_rate = check_real("decay_rate", decay_rate)
    if not 0.0 < decay_rate <= 1.0:
        raise ValueError(f"decay_rate: got {decay_rate}, expected in (0, 1]")
    decay_steps = _steps("decay_steps", decay_steps, 1)
    end_value = _floor_below("end_value", end_value, "peak", peak)
    staircase = check_bool("staircase", staircase)

    def schedule(step) -> float:
        exponent = _step(step) / decay_steps
        if staircase:
            exponent = math.floor(exponent)
        return max(end_value, peak * decay_rate ** exponent)

    return schedule


def cosine(peak: float, total_steps: int, alpha: float = 0.0, power: float = 1.0) -> Schedule:
    """``η_t = peak·(α + (1 − α)·[½(1 + cos(π t/T))]^power)``; ``α`` is the floor as a ratio of the peak."""
    peak = check_real("peak", peak, low=0)
    total_steps = _steps("total_steps", total_steps, 1)
    alpha = _ratio("alpha", alpha, _FLOOR)
    power = check_real("power", power, low=0, low_open=True)

    def schedule(step) -> float:
        t = min(_step(step), total_steps)
        return peak * (alpha + (1.0 - alpha) * _cosine_shape(t / total_steps) ** power)

    return schedule


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int, init_value: float = 0.0,
                  alpha: float = 0.0, power: float = 1.0) -> Schedule:
    """Linear warmup ``init → peak`` over ``warmup_steps``, then :func:`cosine` over the remaining
    ``total_steps − warmup_steps`` steps down to ``α·peak`` (``total_steps`` includes the warmup)."""
    peak = check_real("peak", peak, low=0)
    total_steps = _steps("total_steps", total_steps, 1)
    warmup_steps = _steps("warmup_steps", warmup_steps, 0)
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps: got {warmup_steps}, expected <= total_steps={total_steps}")
    init_value = _floor_below("init_value", init_value, "peak", peak, _WARMUP_START)
    alpha = _ratio("alpha", alpha, _FLOOR)
    power = check_real("power", power, low=0, low_open=True)
    decay_steps = total_steps - warmup_steps

    def schedule(step) -> float:
        t = min(_step(step), total_steps)
        if t < warmup_steps:
            return _warmup(t, warmup_steps, init_value, peak)
        if decay_steps == 0:
            return peak * alpha
        progress = (t - warmup_steps) / decay_steps
        return peak * (alpha + (1.0 - alpha) * _cosine_shape(progress) ** power)

    return schedule


def sgdr(peak: float, cycle_steps: int, alpha: float = 0.0, cycle_mult: float = 1.0,
         peak_decay: float = 1.0, num_cycles: int | None = None) -> Schedule:
    """Cosine with warm restarts: cycle ``i`` lasts ``L_i = round(cycle_steps·cycle_mult^i)`` steps and
    inside it ``η = p_i·(α + (1 − α)·½(1 + cos(π τ/L_i)))`` with ``p_i = peak·peak_decay^i`` and τ the
    step within the cycle. With ``num_cycles`` set, steps after the last cycle give its final value
    ``α·p_last``; otherwise cycles repeat forever. A cycle longer than the float range (from a huge
    ``cycle_mult``) never ends."""
    peak = check_real("peak", peak, low=0)
    cycle_steps = _steps("cycle_steps", cycle_steps, 1)
    alpha = _ratio("alpha", alpha, _FLOOR)
    cycle_mult = check_real("cycle_mult", cycle_mult)
    if cycle_mult < 1.0:
        raise ValueError(f"cycle_mult: got {cycle_mult}, expected >= 1")
    peak_decay = check_real("peak_decay", peak_decay)
    if not 0.0 < peak_decay <= 1.0:
        raise ValueError(f"peak_decay: got {peak_decay}, expected in (0, 1]")
    if num_cycles is not None:
        num_cycles = _steps("num_cycles", num_cycles, 1)

    def cycle_length(index: int) -> int | float:
        try:
            return max(1, round(cycle_steps * cycle_mult ** index))
        except OverflowError:  # longer than any float step: the cycle never ends
            return math.inf

    # Lengths never decrease, so cycles are walked a run of equal lengths at a time (the run's last
    # cycle from logarithms, then checked exactly), not one by one: with cycle_mult = 1 + 1e-9 the
    # first run alone holds ~4e8 cycles. Runs found are kept, as the schedule is called every step.
    run_starts, run_firsts, run_lengths = [0], [0], [cycle_length(0)]  # first step, first cycle, length
    log_mult = math.log1p(cycle_mult - 1.0)

    def add_run() -> None:
        first, size = run_firsts[-1], run_lengths[-1]
        last = max(first, math.floor(math.log((size + 0.5) / cycle_steps) / log_mult))
        while cycle_length(last + 1) == size:
            last += 1
        while last > first and cycle_length(last) != size:
            last -= 1
        run_firsts.append(last + 1)
        run_lengths.append(cycle_length(last + 1))
        run_starts.append(run_starts[-1] + (last + 1 - first) * size)  # last: locate finds runs by start

    def locate(t: float) -> tuple[int, float, int]:
        """(cycle index, step within the cycle, cycle length)."""
        if cycle_mult == 1.0:
            index = int(t // cycle_steps)
            return index, t - index * cycle_steps, cycle_steps
        # past num_cycles the value is fixed: no run beyond the one holding the last cycle is needed
        while run_starts[-1] <= t and run_lengths[-1] != math.inf and (
                num_cycles is None or run_firsts[-1] < num_cycles):
            add_run()
        run = bisect.bisect_right(run_starts, t) - 1
        size = run_lengths[run]
        if size == math.inf:  # an endless cycle holds every later step
            return run_firsts[run], t - run_starts[run], size
        offset = (math.floor(t) - run_starts[run]) // size  # integers: exact, as cycles start at whole steps
        start = run_starts[run] + offset * size
        return run_firsts[run] + offset, t - start, size

    def schedule(step) -> float:
        index, tau, length = locate(_step(step))
        if num_cycles is not None and index >= num_cycles:  # past the last cycle: its final value
            return peak * peak_decay ** (num_cycles - 1) * alpha
        return peak * peak_decay ** index * (alpha + (1.0 - alpha) * _cosine_shape(tau / length))

    return schedule


def _cooldown_shape(kind: str, progress: float) -> float:
    if kind == "linear":
        return 1.0 - progress
    if kind == "cosine":
        return _cosine_shape(progress)
    return 1.0 - math.sqrt(progress)


def wsd(peak: float, total_steps: int, warmup_steps: int = 0, cooldown_steps: int | None = None,
        cooldown: str = "linear", floor_ratio: float = 0.0, init_value: float = 0.0) -> Schedule:
    """Warmup–stable–decay: linear warmup to ``peak``, plateau at ``peak``, then over the last
    ``cooldown_steps`` steps ``η = peak·(r + (1 − r)·f(p))`` with p the cooldown progress, r the
    floor ratio and ``f(p) = 1 − p`` (``"linear"``), ``½(1 + cos πp)`` (``"cosine"``) or
    ``1 − √p`` (``"sqrt"``). ``cooldown_steps`` defaults to 20 % of ``total_steps``."""
    peak = check_real("peak", peak, low=0)
    total_steps = _steps("total_steps", total_steps, 1)
    warmup_steps = _steps("warmup_steps", warmup_steps, 0)
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps: got {warmup_steps}, expected <= total_steps={total_steps}")
    if cooldown_steps is None:
        cooldown_steps = min(total_steps - warmup_steps, total_steps // 5)
    cooldown_steps = _steps("cooldown_steps", cooldown_steps, 0)
    if warmup_steps + cooldown_steps > total_steps:
        raise ValueError(f"cooldown_steps: got {cooldown_steps}, expected <= total_steps - warmup_steps"
                         f"={total_steps - warmup_steps}")
    if not isinstance(cooldown, str) or cooldown not in COOLDOWN_KINDS:
        raise ValueError(f"cooldown: got {cooldown!r}, expected one of {COOLDOWN_KINDS}")
    floor_ratio = _ratio("floor_ratio", floor_ratio, _FLOOR)
    init_value = _floor_below("init_value", init_value, "peak", peak, _WARMUP_START)
    cooldown_start = total_steps - cooldown_steps

    def schedule(step) -> float:
        t = min(_step(step), total_steps)
        if t < warmup_steps:
            return _warmup(t, warmup_steps, init_value, peak)
        if t < cooldown_start:
            return peak
        if cooldown_steps == 0:
            return peak * floor_ratio
        progress = (t - cooldown_start) / cooldown_steps
        return peak * (floor_ratio + (1.0 - floor_ratio) * _cooldown_shape(cooldown, progress))

    return schedule


def infinite(peak: float, constant_value: float, min_value: float, warmup_steps: int,
             cooldown_steps: int, constant_steps: int, anneal_steps: int, init_value: float = 0.0,
             start_in_constant: bool = False) -> Schedule:
    """Infinite schedule for continual pre-training, four phases in order:

    1. warmup ``init → peak`` (linear, ``warmup_steps``);
    2. cosine cooldown ``peak → constant_value`` (``cooldown_steps``);
    3. constant ``constant_value`` (``constant_steps``, any length);
    4. exponential anneal ``c·exp(−ln(c/η_min)·τ/T_anneal)``, c = ``constant_value``, from ``c`` to
       ``min_value`` (``anneal_steps``), then ``min_value``.

    **Continuing with a later task.** ``start_in_constant=True`` drops phases 1–2: step 0 is already
    in the constant phase at ``constant_value`` (no re-warming), followed by ``constant_steps`` of
    plateau and the anneal. Build the first task with ``start_in_constant=False`` and every later
    task with ``start_in_constant=True``.
    """
    peak = check_real("peak", peak, low=0)
    constant_value = _floor_below("constant_value", constant_value, "peak", peak)
    min_value = check_real("min_value", min_value, low=0, low_open=True)
    if min_value > constant_value:
        raise ValueError(f"min_value: got {min_value}, expected <= constant_value={constant_value} "
                         "(the anneal decays from constant_value down to min_value)")
    warmup_steps = _steps("warmup_steps", warmup_steps, 0)
    cooldown_steps = _steps("cooldown_steps", cooldown_steps, 0)
    constant_steps = _steps("constant_steps", constant_steps, 0)
    anneal_steps = _steps("anneal_steps", anneal_steps, 0)
    init_value = _floor_below("init_value", init_value, "peak", peak, _WARMUP_START)
    if check_bool("start_in_constant", start_in_constant):
        if constant_steps + anneal_steps < 1:  # the warmup and cooldown given are dropped: say so
            raise ValueError(f"constant_steps, anneal_steps: got {constant_steps} and {anneal_steps}, expected a "
                             "sum >= 1 (start_in_constant=True drops the warmup and the cooldown)")
        warmup_steps = cooldown_steps = 0
    if warmup_steps + cooldown_steps + constant_steps + anneal_steps < 1:
        raise ValueError("warmup_steps, cooldown_steps, constant_steps, anneal_steps: got 0 each, "
                         "expected a sum >= 1")
    cooldown_start = warmup_steps
    constant_start = cooldown_start + cooldown_steps
    anneal_start = constant_start + constant_steps
    total_steps = anneal_start + anneal_steps
    log_ratio = math.log(constant_value / min_value)

    def schedule(step) -> float:
        t = min(_step(step), total_steps)
        if t < cooldown_start:
            return _warmup(t, warmup_steps, init_value, peak)
        if t < constant_start:
            progress = (t - cooldown_start) / cooldown_steps
            return constant_value + (peak - constant_value) * _cosine_shape(progress)
        if t < anneal_start or anneal_steps == 0:
            return constant_value
        return constant_value * math.exp(-log_ratio * (t - anneal_start) / anneal_steps)

    return schedule


def rex(peak: float, total_steps: int, min_value: float = 0.0) -> Schedule:
    """REX: ``η_t = η_min + (peak − η_min)·(1 − p)/(1 − p/2)`` with ``p = t/T``."""
    peak = check_real("peak", peak, low=0)
    total_steps = _steps("total_steps", total_steps, 1)
    min_value = _floor_below("min_value", min_value, "peak", peak)

    def schedule(step) -> float:
        p = min(_step(step), total_steps) / total_steps
        return min_value + (peak - min_value) * (1.0 - p) / (1.0 - p / 2.0)

    return schedule


def triangular(base_value: float, peak: float, half_cycle_steps: int, mode: str = "triangular",
               gamma: float = 1.0) -> Schedule:
    """Cyclical (triangular) schedule: with ``c = floor(1 + t/(2s))`` and ``x = |t/s − 2c + 1|``,
    ``η_t = base + (peak − base)·max(0, 1 − x)·scale``; ``scale`` is 1 (``"triangular"``),
    ``1/2^(c−1)`` (``"triangular2"``) or ``gamma^t`` (``"exp_range"``). Starts at ``base``."""
    peak = check_real("peak", peak, low=0)
    base_value = _floor_below("base_value", base_value, "peak", peak)
    half_cycle_steps = _steps("half_cycle_steps", half_cycle_steps, 1)
    if not isinstance(mode, str) or mode not in TRIANGULAR_MODES:  # an array would compare elementwise
        raise ValueError(f"mode: got {mode!r}, expected one of {TRIANGULAR_MODES}")
    gamma = check_real("gamma", gamma)
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma: got {gamma}, expected in (0, 1]")

    def schedule(step) -> float:
        t = _step(step)
        cycle = math.floor(1.0 + t / (2 * half_cycle_steps))
        x = abs(t / half_cycle_steps - 2 * cycle + 1)
        if mode == "triangular":
            scale = 1.0
        elif mode == "triangular2":
            scale = 0.5 ** (cycle - 1)  # underflows to 0 after 1074 halvings (2.0 ** 1024 would overflow)
        else:
            scale = gamma ** t
        return base_value + (peak - base_value) * max(0.0, 1.0 - x) * scale

    return schedule


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Concatenate schedules: for ``boundaries[i-1] <= t < boundaries[i]`` the value is
    ``schedules[i](t − boundaries[i-1])`` (each later schedule sees the step relative to its start)."""
    schedules = _sequence("schedules", schedules, "schedules")
    for i, s in enumerate(schedules):
        _check_schedule(f"schedules[{i}]", s)
    boundaries = [_steps(f"boundaries[{i}]", b, 1) for i, b in enumerate(_sequence("boundaries", boundaries))]
    if len(schedules) != len(boundaries) + 1:
        raise ValueError(f"schedules: got {len(schedules)} schedules, expected len(boundaries) + 1 = "
                         f"{len(boundaries) + 1}")
    for i in range(1, len(boundaries)):
        if boundaries[i] <= boundaries[i - 1]:
            raise ValueError(f"boundaries: got {boundaries}, expected strictly increasing steps")
    starts = [0] + boundaries

    def schedule(step) -> float:
        t = _step(step)
        index = sum(1 for b in boundaries if t >= b)
        local = t - starts[index]
        return _schedule_value(f"schedules[{index}]", schedules[index](local), local)

    return schedule


def _median_filter(values: np.ndarray, width: int) -> np.ndarray:
    """Running median, odd ``width``; the start is padded with its edge value and the end by
    reflection (so the trend near the end of the run is not flattened)."""
    half = width // 2
    padded = np.concatenate([np.full(half, values[0]), values, values[::-1][1:][:half]])
    if padded.size < values.size + 2 * half:  # run shorter than the half-window
        padded = np.concatenate([padded, np.full(values.size + 2 * half - padded.size, values[-1])])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    return np.median(windows, axis=1)


def refined(grad_norms: Sequence[float], peak: float, median_window_fraction: float = 0.0,
            total_steps: int | None = None, power: float = 2.0) -> Schedule:
    """Linear decay refined from a previous run's gradient norms (Defazio et al., 2023,
    "When, Why and How Much? Adaptive learning rate scheduling by refinement").

    With ``g_t`` the gradient norm at step t of the previous run (shape ``(n,)``), optionally
    median-filtered over a window of ``median_window_fraction·n`` steps (rounded to odd),
    ``w_t = g_t^(−power)`` (power 2 is the paper's SGD rule) and ``η_t ∝ w_t·Σ_{s>t} w_s``,
    normalised so that its maximum is ``peak``. The last step has η = 0. Constant norms give
    exactly :func:`linear_decay` over ``n − 1`` steps; norms that are large early give a warmup,
    norms that grow towards the end a fast final anneal. ``total_steps`` (default n) resamples the
    shape linearly in relative time, then normalises it again (the maximum stays ``peak``).
    """
    try:
        norms = np.asarray(grad_norms)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"grad_norms: got {grad_norms!r:.60}, expected a sequence of numbers ({exc})") from None
    if norms.dtype.kind not in "iuf":  # bools, strings, complex and objects would cast to float64 silently
        raise TypeError(f"grad_norms: got {grad_norms!r:.60}, expected a sequence of numbers (real gradient "
                        f"norms, not dtype {norms.dtype})")
    norms = norms.astype(np.float64)
    if norms.ndim != 1 or norms.size < 2:
        raise ValueError(f"grad_norms: got shape {norms.shape}, expected (n,) with n >= 2")
    if not np.all(np.isfinite(norms)) or np.any(norms <= 0):
        raise ValueError(f"grad_norms: got min {float(norms.min())!r}, expected finite values > 0")
    peak = check_real("peak", peak, low=0)
    median_window_fraction = _ratio("median_window_fraction", median_window_fraction)
    power = check_real("power", power, low=0, low_open=True)
    n = norms.size
    total_steps = n if total_steps is None else _steps("total_steps", total_steps, 2)

    width = 2 * (int(median_window_fraction * n) // 2) + 1
    if width > 1:
        norms = _median_filter(norms, width)
    # The shape is scale-invariant in the norms: weights relative to the largest, (min g / g_t)^power
    # in (0, 1], so huge norms cannot underflow it to 0/0 nor tiny ones overflow it to inf/inf.
    weights = (norms.min() / norms) ** power
    tail = np.concatenate([np.cumsum(weights[::-1])[::-1][1:], [0.0]])  # Σ_{s>t} w_s
    shape = weights * tail
    if shape.max() >= np.sqrt(np.finfo(np.float64).tiny):
        shape = shape / shape.max()
    else:  # weights spanning ~150 decades or more: their products underflow, so take them in log space
        log_weights = power * (np.log(norms.min()) - np.log(norms))
        log_shape = log_weights[:-1] + np.logaddexp.accumulate(log_weights[::-1])[::-1][1:]
        shape = np.append(np.exp(log_shape - log_shape.max()), 0.0)
    if total_steps != n:
        # the new grid and the resampled shape: two float64 arrays of total_steps values at once
        check_fits_in_memory("total_steps", total_steps, 16 * total_steps, "resampled schedule")
        shape = np.interp(np.linspace(0.0, 1.0, total_steps), np.linspace(0.0, 1.0, n), shape)
        if shape.max() > 0:  # the new grid usually misses the old maximum
            shape = shape / shape.max()
    values = peak * shape
    last = total_steps - 1

    def schedule(step) -> float:
        t = min(_step(step), last)
        lo = int(math.floor(t))
        if lo == t or lo == last:
            return float(values[lo])
        return float(values[lo] + (values[lo + 1] - values[lo]) * (t - lo))

    return schedule
