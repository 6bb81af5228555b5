"""The learning-rate schedules a training run can name, and their fields.

A run fixes a schedule's peak (``lr``), its length (``steps``) and a linear warmup from 0
(``warmup``); ``schedule_kwargs`` sets the rest of the fields of :mod:`seqcore.schedules`,
with defaults scaled to the run (an SGDR cycle is a quarter of the steps after warmup, say).
The warmup ends at ``lr``, where every schedule starts but three: ``triangular`` (its cycles
start at ``base_value``, where its warmup ends), ``refined`` (it starts at its own first value,
at most ``lr``; ``lr`` is its maximum, wherever the old run's norms put it) and ``infinite``
with ``start_in_constant`` (a continuing task: no warmup, it starts at ``constant_value``).
Learning rates given as fields (``end_value``, ``min_value``, ``base_value``,
``constant_value``, ``init_value``) are absolute; ``factors`` of ``piecewise-constant`` are
multiples of ``lr``.

``refined`` reads the gradient norms a previous run recorded (``from_run``: its directory;
every run keeps its per-step gradient norms in its checkpoint) and refines the linear decay
from them. The new run keeps a copy of them in its own checkpoint and resumes from that copy,
so ``from_run`` may change, move or be overwritten (even by the new run itself) meanwhile.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from . import schedules
from .validate import check_bool, check_choice, check_real, is_finite_number, is_integer

__all__ = ["SCHEDULES", "SCHEDULE_FIELDS", "run_schedule", "check_schedule_kwargs", "recorded_grad_norms",
           "complete_grad_norms"]

# the fields each schedule takes from schedule_kwargs (lr, steps and warmup come from the run)
SCHEDULE_FIELDS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "cosine": ("alpha", "power"),
    "warmup-cosine": ("init_value", "alpha", "power"),
    "wsd": ("cooldown_steps", "cooldown", "floor_ratio", "init_value"),
    "linear": ("end_value",),
    "rex": ("min_value",),
    "exponential": ("decay_rate", "decay_steps", "staircase", "end_value"),
    "piecewise-constant": ("factors", "boundaries"),
    "sgdr": ("cycle_steps", "alpha", "cycle_mult", "peak_decay", "num_cycles"),
    "triangular": ("base_value", "half_cycle_steps", "mode", "gamma"),
    "infinite": ("constant_value", "min_value", "cooldown_steps", "constant_steps", "anneal_steps",
                 "init_value", "start_in_constant"),
    "refined": ("from_run", "median_window_fraction", "power"),
}
SCHEDULES = tuple(SCHEDULE_FIELDS)


def check_schedule_kwargs(name: str, kwargs) -> None:
    """Refuse a schedule ``kwargs`` cannot configure: an unknown name, a field it does not take."""
    check_choice("schedule", name, SCHEDULES)
    if not isinstance(kwargs, dict):
        raise TypeError(f"schedule_kwargs: got {type(kwargs).__name__}, expected a dict")
    unknown = sorted(set(kwargs) - set(SCHEDULE_FIELDS[name]))
    if unknown:
        allowed = ", ".join(SCHEDULE_FIELDS[name]) or "none"
        raise ValueError(f"schedule_kwargs: got {', '.join(map(repr, unknown))} for the {name!r} schedule, "
                         f"expected some of: {allowed}")
    if name == "refined" and "from_run" not in kwargs:
        raise ValueError("schedule_kwargs: got no 'from_run' for the 'refined' schedule, expected the directory "
                         "of the run whose gradient norms it refines")
    run = kwargs.get("from_run", "")
    if name == "refined" and (not isinstance(run, (str, os.PathLike)) or not str(run)):
        raise TypeError(f"from_run: got {run!r:.60} ({type(run).__name__}), expected the directory of a run")


def _after_warmup(decay: Callable[[int], float], lr: float, warmup: int) -> Callable[[int], float]:
    """Linear warmup 0 → ``lr`` over ``warmup`` steps, then ``decay`` (which starts at its step 0)."""
    if warmup == 0:
        return decay
    ramp = schedules.wsd(lr, warmup, warmup_steps=warmup, cooldown_steps=0)  # only its warmup is used
    return schedules.join([ramp, decay], [warmup])


def complete_grad_norms(norms: np.ndarray | None) -> bool:
    """Whether ``norms`` is a gradient-norm history ``refined`` can use: 1-D, at least 2 steps, all finite."""
    return norms is not None and norms.ndim == 1 and norms.size >= 2 and bool(np.isfinite(norms).all())


def recorded_grad_norms(run_dir) -> np.ndarray:
    """The per-step gradient norms (float64, one per step) that the run in ``run_dir`` recorded."""
    from .runs import RunDir, load_checkpoint
    path = RunDir(run_dir).checkpoint
    if not Path(path).exists():
        raise ValueError(f"from_run: got {str(run_dir)!r}, which holds no run (no {path.name})")
    arrays, _ = load_checkpoint(path)
    norms = arrays.get("grad_norms")
    if norms is None:
        raise ValueError(f"from_run: {path} holds no gradient-norm history (got none), expected a run of this "
                         "version with at least 2 steps")
    if not complete_grad_norms(norms):
        nonfinite = int((~np.isfinite(norms)).sum())  # inf: a norm that overflowed
        raise ValueError(f"from_run: {path} holds no usable gradient-norm history (got {norms.size} values"
                         f"{f', {nonfinite} of them non-finite' if nonfinite else ''}), expected a run with at "
                         "least 2 steps and every gradient norm finite")
    return norms.astype(np.float64)


def _piecewise(lr: float, rest: int, kw: dict) -> Callable[[int], float]:
    """``piecewise-constant``: ``factors`` (multiples of ``lr``; by default 1, 0.1, 0.01, …) changing at
    ``boundaries`` (by default half and three quarters of the ``rest`` steps, those that are distinct
    steps in ``[1, rest]``: a short run has fewer pieces)."""
    boundaries = kw.get("boundaries", sorted({b for b in (rest // 2, 3 * rest // 4) if b >= 1}))
    if not isinstance(boundaries, (list, tuple)):
        raise TypeError(f"boundaries: got {boundaries!r:.60}, expected a list of steps")
    factors = kw.get("factors", [0.1 ** i for i in range(len(boundaries) + 1)])
    if not isinstance(factors, (list, tuple)) or not all(is_finite_number(f) and f >= 0 for f in factors):
        raise ValueError(f"factors: got {factors!r:.60}, expected a list of finite numbers >= 0 (multiples of lr)")
    if len(factors) != len(boundaries) + 1:
        raise ValueError(f"factors: got {len(factors)} values with boundaries {list(boundaries)}, expected "
                         f"len(boundaries) + 1 = {len(boundaries) + 1}")
    return schedules.piecewise_constant([lr * f for f in factors], boundaries)


def _infinite(lr: float, steps: int, warmup: int, kw: dict) -> Callable[[int], float]:
    """``infinite`` over a run: warmup, cooldown (a fifth of the rest), plateau, anneal (a fifth) ending
    with the run; with ``start_in_constant`` (a continuing task) plateau and anneal fill the run."""
    rest = steps - warmup
    if check_bool("start_in_constant", kw.get("start_in_constant", False)):
        if warmup:
            raise ValueError(f"warmup: got {warmup} with the infinite schedule's start_in_constant, expected 0 "
                             "(a continuing task starts at constant_value, without re-warming)")
        if "cooldown_steps" in kw:
            raise ValueError(f"cooldown_steps: got {kw['cooldown_steps']!r} with start_in_constant, expected none "
                             "(a continuing task has no cooldown)")
        cooldown = 0
        anneal = kw.pop("anneal_steps", rest // 5)
        kw.setdefault("constant_steps", max(0, rest - anneal))
    else:
        cooldown = kw.pop("cooldown_steps", rest // 5)
        anneal = kw.pop("anneal_steps", rest // 5)
        if is_integer(cooldown) and cooldown > rest:
            raise ValueError(f"cooldown_steps: got {cooldown}, expected <= steps - warmup = {rest}")
        kw.setdefault("constant_steps", max(0, rest - cooldown - anneal) if is_integer(cooldown) else 0)
    if is_integer(anneal) and anneal > rest:
        raise ValueError(f"anneal_steps: got {anneal}, expected <= steps - warmup = {rest}")
    # checked here: the default min_value compares with it before schedules.infinite checks it
    kw["constant_value"] = check_real("constant_value", kw.get("constant_value", lr / 10), low=0)
    kw.setdefault("min_value", min(lr / 100, kw["constant_value"]))
    return schedules.infinite(lr, warmup_steps=warmup, cooldown_steps=cooldown, anneal_steps=anneal, **kw)


def run_schedule(name: str, lr: float, steps: int, warmup: int, kwargs: dict, *,
                 norms: np.ndarray | None = None) -> Callable[[int], float]:
    """The learning rate at each step of a run: ``name`` with peak ``lr`` over ``steps`` steps, after a
    linear warmup from 0 over ``warmup`` (the decaying schedules decay over the ``steps − warmup``
    steps after it), its other fields from ``kwargs``. ``norms``: the gradient norms ``refined``
    refines (a run's own copy), instead of those recorded in its ``from_run``."""
    check_schedule_kwargs(name, kwargs)
    kw, rest = dict(kwargs), steps - warmup
    if name == "constant":
        return _after_warmup(schedules.constant(lr), lr, warmup)
    if name == "cosine":
        return schedules.warmup_cosine(lr, warmup, steps, **kw) if warmup else schedules.cosine(lr, steps, **kw)
    if name == "warmup-cosine":
        return schedules.warmup_cosine(lr, max(warmup, 1), steps, **kw)
    if name == "wsd":
        return schedules.wsd(lr, steps, warmup_steps=warmup, **kw)
    if name == "infinite":
        return _infinite(lr, steps, warmup, kw)
    if name == "linear":
        decay = schedules.linear_decay(lr, rest, **kw)
    elif name == "rex":
        decay = schedules.rex(lr, rest, **kw)
    elif name == "exponential":
        decay = schedules.exponential(lr, **{"decay_rate": 0.01, "decay_steps": rest, **kw})
    elif name == "piecewise-constant":
        decay = _piecewise(lr, rest, kw)
    elif name == "sgdr":
        decay = schedules.sgdr(lr, **{"cycle_steps": max(1, rest // 4), **kw})
    elif name == "triangular":  # its cycles start at base_value: the warmup ends there, not at lr
        base = kw.pop("base_value", lr / 10)
        decay = schedules.triangular(base, lr, **{"half_cycle_steps": max(1, rest // 8), **kw})
        return _after_warmup(decay, base, warmup)
    else:  # refined
        run = kw.pop("from_run")
        if rest < 2:
            raise ValueError(f"steps: got {steps} with warmup {warmup}, expected steps - warmup >= 2 for the "
                             "refined schedule (it decays to 0 at its last step)")
        norms = recorded_grad_norms(run) if norms is None else norms
        decay = schedules.refined(norms, lr, total_steps=rest, **kw)
    return _after_warmup(decay, lr, warmup)
