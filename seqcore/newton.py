"""The Newton scan: parallel-in-time evaluation of nonlinear cells (ParaRNN, DEER, quasi-DEER).

``hs, info = seqcore.newton_scan(cell, params, x)`` computes the same trajectory as
``cell.apply(params, x)`` by Newton's method on the whole sequence at once: every
iteration evaluates the residual and the step Jacobians of all steps together and
solves the linearised system with one parallel scan (RESEARCH §3).  The backward pass
needs no Newton loop: one reverse scan with the transposed Jacobians at the solution,
then the per-step parameter VJPs — the gradients of sequential BPTT.

Stopping rule: ``max_{b,t} ‖F_{b,t}‖_∞ / (1 + max(‖s_{b,t}‖_∞, ‖s_{b,t−1}‖_∞)) ≤ tol`` with
``F_t = s_t − f(s_{t−1}, xi_t)``: every step's residual against its own scale.  Iteration k leaves
steps ≤ k + 1 with a zero residual, so ``max_iters ≥ T − 1`` converges in exact arithmetic (in
floating point, chaotic Jacobians' products can overflow first; ``damping`` keeps them finite).  When the rule
is not met within ``max_iters`` (or the iterate becomes non-finite), the trajectory is recomputed by the
cell's sequential recurrence, a :class:`NewtonConvergenceWarning` is issued and
``info.converged`` is ``False``.

What converged guarantees: every step meets its equation to ``tol`` (relative to the step's
state scale), not equality with ``mode="sequential"``.  ``f`` is evaluated on all B·T steps in
one matrix product, which rounds differently from the per-step products of the sequential
recurrence; a chaotic cell amplifies that difference to O(1) over ~100 steps (as it amplifies
the sequential recurrence's own rounding).  For stable cells the two agree to rounding.
"""
from __future__ import annotations

import contextvars
import math
import numbers
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from . import backends
from .autodiff import stop_gradient
from .newton_solve import JACOBIANS, adjoint, newton_solve, resolve_jacobian
from .primitives import define
from .validate import check_choice, check_positive_int, finite_float, is_real_number

__all__ = ["newton_scan", "NewtonInfo", "NewtonConvergenceWarning", "JACOBIANS",
           "DEFAULT_TOL", "DEFAULT_MAX_ITERS"]

# relative residual tolerance per dtype: a few hundred ulps of a unit-scale state
DEFAULT_TOL = {"float64": 1e-12, "float32": 1e-6, "float16": 1e-3, "bfloat16": 1e-2}
DEFAULT_MAX_ITERS = 32


class NewtonConvergenceWarning(RuntimeWarning):
    """The Newton scan did not converge; the sequential recurrence was used instead."""


# where the running cell sits in a Stack / Bidirectional ("layer 1: backward direction: "), set by
# cells.stack: a stack warns once per failing layer and direction, and each warning says which
warning_place = contextvars.ContextVar("seqcore_newton_warning_place", default="")


@dataclass(frozen=True)
class NewtonInfo:
    """What a Newton scan did.

    Attributes:
        iterations: Newton updates performed (0: the initial guess already met the tolerance).
        residuals: the relative residual ``max_{b,t} ‖F_{b,t}‖_∞ / (1 + max(‖s_{b,t}‖_∞, ‖s_{b,t−1}‖_∞))``
            of the initial guess and after each update (``iterations + 1`` values).
        threshold: ``tol`` — the bound the residual had to meet.
        converged: ``False`` when the result came from the sequential fallback.
        jacobian: the structure the solve used (``"diag"``, ``"block"``, ``"dense"`` or ``"quasi"``).
        max_iters: the iteration budget actually applied (``min(max_iters, T − 1)``).
    """

    iterations: int
    residuals: tuple
    threshold: float
    converged: bool
    jacobian: str
    max_iters: int


# -- the primitive ---------------------------------------------------------------------------

def _history_array(xp, history, max_iters):
    """``(max_iters + 1, 3)`` float64 rows of (iteration, residual, threshold); iteration −1 after the
    last iterate. float64 whatever the states' dtype: rounded to float32, a residual just above the
    threshold could read as equal to it, and ``info.converged`` would disagree with the fallback taken."""
    rows = [[k, r, t] for k, (r, t) in enumerate(history)]
    rows += [[-1.0, math.nan, math.nan]] * (max_iters + 1 - len(history))
    return xp.asarray(rows, dtype=xp.float64)


def _newton_fwd(xp, xi, state0, *rec, cell, tol, max_iters, jacobian, damping):
    p = dict(zip(cell.recurrent_keys, rec))
    states, history = newton_solve(xp, cell, p, xi, state0, tol=tol, max_iters=max_iters,
                                   jacobian=jacobian, damping=damping)
    residual, threshold = history[-1]
    if not residual <= threshold:
        states = cell.recurrence()(xi, state0, *rec, cell=cell)
        # no residual in the text, and the user's line as the location: Python's default filter
        # then shows the warning once per session, not at every step of a training loop
        bad = _non_finite_inputs(xp, cell, xi, state0, p) if not math.isfinite(residual) else []
        if bad:  # checked only after a failure: the converging path pays nothing for it
            text = (f"newton_scan: {type(cell).__name__} got NaN or inf in {', '.join(bad)}; the sequential "
                    f"recurrence was used instead (it carries them through, as mode='sequential' does)")
        else:
            why = ("the residual stayed above the tolerance; info.residuals has the history"
                   if math.isfinite(residual) and math.isfinite(threshold) else "the iterate became non-finite")
            text = (f"newton_scan: {type(cell).__name__} did not converge in {len(history) - 1} Newton iterations "
                    f"({why}); the sequential recurrence was used instead. "
                    f"Raise max_iters, add damping, or use mode='sequential'.")
        warnings.warn(warning_place.get() + text, NewtonConvergenceWarning, stacklevel=_caller_outside_seqcore())
    return (states, _history_array(xp, history, max_iters)), (p, xi, state0, states)


def _non_finite_inputs(xp, cell, xi, state0, p: dict) -> list:
    """What of the scan's inputs holds NaN or inf, as the user knows it: the projected input
    (from x and the input weights), h0 (and c0: the state unpacked), the recurrent parameters by
    the params they are computed from (a folded bias: ``params['bias_ih'] or params['bias_hh']``)."""
    state = cell.unpack_state(state0)
    named = [("x (or the input weights or bias projecting it)", xi)]
    named += zip(("h0", "c0"), state) if isinstance(state, tuple) else [("h0", state)]
    for k, v in p.items():
        named.append((" or ".join(f"params[{s!r}]" for s in cell.recurrent_sources.get(k, (k,))), v))
    return [name for name, v in named if not bool(xp.isfinite(v).all())]


def _caller_outside_seqcore() -> int:
    """The ``stacklevel`` of the first frame outside the seqcore package, counted from the
    frame that calls this function."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _newton_bwd(xp, res, cotangents, cell, tol, max_iters, jacobian, damping):
    p, xi, state0, states = res
    dstates = cotangents[0]  # the history output carries no gradient
    dxi, dstate0, dp = adjoint(xp, cell, p, xi, state0, states, dstates)
    return (dxi, dstate0) + tuple(dp[k] for k in cell.recurrent_keys)


newton_recurrence = define(
    "newton_recurrence", _newton_fwd, _newton_bwd,
    doc="Newton scan of a cell: (xi (B,T,P), state0 (B,S), recurrent params) -> "
        "(states (B,T,S), history (max_iters+1, 3)); static: cell, tol, max_iters, jacobian, damping")


# -- option handling -------------------------------------------------------------------------

def _dtype_name(dtype) -> str:
    """``"float32"`` for a NumPy dtype, a scalar type such as ``np.float32`` (whose ``str`` is
    ``"<class 'numpy.float32'>"``) or ``torch.float32``."""
    try:
        import numpy as np
        return np.dtype(dtype).name
    except TypeError:  # torch dtypes: "torch.float32"
        return str(dtype).replace("torch.", "")


def _resolve_options(cell, dtype, T, tol=None, max_iters=None, jacobian="auto", damping=None) -> dict:
    check_choice("jacobian", jacobian, JACOBIANS)
    structure = resolve_jacobian(cell, jacobian)
    if tol is None:
        tol = DEFAULT_TOL.get(_dtype_name(dtype), 1e-6)
    if isinstance(tol, (bool, np.bool_)) or not isinstance(tol, numbers.Real) or not 0 < tol < 1:
        raise ValueError(f"tol: got {tol!r}, expected a number in (0, 1)")
    if max_iters is None:
        max_iters = DEFAULT_MAX_ITERS
    check_positive_int("max_iters", max_iters)
    if damping is None:
        damping = 0.0
    # finite_float: 10**400 passes a comparison with inf, then float() overflows
    if not is_real_number(damping) or finite_float(damping) is None or damping < 0:
        raise ValueError(f"damping: got {damping!r:.40}, expected None or a finite number >= 0")
    # T − 1 updates make every step exact, so more would only repeat the last one
    return {"tol": float(tol), "max_iters": int(min(max_iters, T - 1)), "jacobian": structure, "damping": float(damping)}


def _check_cell(cell):
    from .cells.base import Cell
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: got {type(cell).__name__}, expected a seqcore cell (seqcore.cells.Cell)")


def _parallel_states(cell, params: dict, xi, state0, **newton_kwargs):
    """States ``(B, T, S)`` of ``cell`` by the Newton scan — the engine of ``Cell.states(mode="parallel")``.

    Args:
        cell: a :class:`seqcore.cells.Cell`.
        params: the cell's parameters (only ``cell.recurrent_params(params)`` is read here).
        xi: ``(B, T, P)`` projected inputs (``cell.project(params, x)``).
        state0: ``(B, S)`` packed initial state.
        **newton_kwargs: ``tol``, ``max_iters``, ``jacobian``, ``damping`` as in :func:`newton_scan`.
    Returns:
        states ``(B, T, S)``, differentiable through :func:`seqcore.vjp`.
    """
    return _run(cell, params, xi, state0, newton_kwargs)[0]


def check_options(cell, dtype, T: int, newton_kwargs: dict) -> dict:
    """The resolved options ``{tol, max_iters, jacobian, damping}``; unknown names and bad values raise."""
    unknown = sorted(set(newton_kwargs) - {"tol", "max_iters", "jacobian", "damping"})
    if unknown:
        raise TypeError(f"newton options: got unknown {unknown}, expected tol, max_iters, jacobian, damping")
    return _resolve_options(cell, dtype, T, **newton_kwargs)


def _run(cell, params, xi, state0, newton_kwargs):
    _check_cell(cell)
    opts = check_options(cell, xi.dtype, xi.shape[1], newton_kwargs)
    states, history = newton_recurrence(xi, state0, *cell.recurrent_args(params), cell=cell, **opts)
    return states, _info(stop_gradient(history), opts)


def _info(history, opts) -> NewtonInfo:
    import numpy as np
    h = backends.to_numpy(history).astype(np.float64)
    h = h[h[:, 0] >= 0]
    residual, threshold = h[-1, 1:]
    return NewtonInfo(iterations=len(h) - 1, residuals=tuple(float(r) for r in h[:, 1]), threshold=float(threshold),
                      converged=bool(residual <= threshold), jacobian=opts["jacobian"], max_iters=opts["max_iters"])


def newton_scan(cell, params: dict, x, h0=None, *, tol: float | None = None, max_iters: int | None = None,
                jacobian: str = "auto", damping: float | None = None):
    """Run ``cell`` over ``x`` with the Newton scan (parallel in time); differentiable with :func:`seqcore.vjp`.

    Args:
        cell: a nonlinear :class:`seqcore.cells.Cell` (Elman, LSTM, GRU, DiagGRU, CIFGLSTM, …).
        params: from ``cell.init``.
        x: ``(B, T, input_size)``.
        h0: initial state as for ``cell.apply`` (``(B, H)``; LSTM-like cells ``(h0, c0)``), zeros if ``None``.
        tol: relative residual tolerance; stop when every step's residual is within ``tol`` of its
            own scale: ``‖F_{b,t}‖_∞ ≤ tol · (1 + max(‖s_{b,t}‖_∞, ‖s_{b,t−1}‖_∞))`` for all b, t.
            Default per dtype: 1e-12 (float64), 1e-6 (float32).
        max_iters: Newton updates allowed before falling back (default 32; capped at ``T − 1``,
            which is always exact).
        jacobian: ``"auto"`` (the cell's structure), ``"diag"``, ``"block"``, ``"dense"`` (expand to a
            richer structure) or ``"quasi"`` (keep only the diagonal: cheaper iterations, more of them).
        damping: λ ≥ 0 (``None``: 0); each solve uses ``J_t / (1 + λ)`` — smaller, more cautious
            corrections; λ → ∞ is the fixed-point (Jacobi) iteration ``s_t ← f(s_{t−1}, x_t)``.
    Returns:
        ``(hs, info)``: ``hs: (B, T, hidden_size)`` as ``cell.apply(params, x, h0)[0]``, and a
        :class:`NewtonInfo`.  If the tolerance is not met, ``hs`` comes from the sequential
        recurrence, a :class:`NewtonConvergenceWarning` is issued and ``info.converged`` is False.
    """
    _check_cell(cell)
    state0 = cell.checked_state0(params, x, h0)  # the checks of cell.apply
    xi = cell.project(params, x)
    states, info = _run(cell, params, xi, state0, {"tol": tol, "max_iters": max_iters, "jacobian": jacobian,
                                                   "damping": damping})
    return cell.output(states), info
