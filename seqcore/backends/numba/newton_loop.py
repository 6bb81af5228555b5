"""The Newton engine on Numba: the reference loop (``seqcore.newton_solve``) run on a view of
the cell that carries compiled pieces.

Every cell gets :class:`NewtonKernels`: the residual ``−F = f − s`` with its row maxima, and
the update ``f_t + A_t δ_{t−1}``, each one parallel pass over the trajectory where NumPy made
three to five (a shifted copy, a batched 2×2 product, sums, absolute values, maxima).  The
cells with compiled steps (``newton_steps.py``) get :class:`FusedSteps` (DiagGRU, CIFG-LSTM:
steps with their Jacobians, and step adjoints) or :class:`CachedJacobianSteps` (GRU, LSTM:
steps, and dense Jacobians built from the steps' caches when an iteration needs them).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from typing import Callable, NamedTuple, Optional

from .newton_dense_steps import DENSE_STEPS
from .newton_steps import DIAGONAL_STEPS, StepCache, row_tasks
from .ops import PARALLEL_CELLS, as_dtype, contiguous, int_like, kernel, supported_dtype

__all__ = ["STEP_KERNELS", "StepKernels", "NewtonKernels", "FusedSteps", "CachedJacobianSteps", "newton_view",
           "newton_fwd", "newton_bwd"]


@kernel(parallel=PARALLEL_CELLS)
def _residual(states, f, S, rows, mask, neg_F, fbits, sbits, row_F, row_s):
    """neg_F = f − states over flat arrays of rows of S (one row per step); row_F[m], row_s[m] =
    the largest |F| and |s| of row m as the bit patterns of the floats (``fbits``, ``sbits``:
    integer views of neg_F and states).  Tasks: chunks of ``rows`` rows.

    Non-negative floats order like their bit patterns, NaN above inf, so an integer max
    finds the largest |x| and lets a NaN through; it also vectorizes, where a float max that
    must respect NaN does not.  Each chunk is sliced once and looped from 0 (a loop from a
    run-time offset gets a negative-index branch per access and does not vectorize); rows
    are addressed at unsigned offsets, for the same reason.
    """
    N = states.shape[0] // S
    uS = np.uint64(S)
    for task in prange((N + rows - 1) // rows):
        m0 = task * rows
        m1 = min(N, m0 + rows)
        lo, hi = m0 * S, m1 * S
        s, fm, d, db, sb = states[lo:hi], f[lo:hi], neg_F[lo:hi], fbits[lo:hi], sbits[lo:hi]
        for j in range(hi - lo):
            d[j] = fm[j] - s[j]
        for m in range(m1 - m0):
            o = np.uint64(m) * uS
            mf, ms = mask & 0, mask & 0
            for j in range(uS):
                mf = max(mf, db[o + j] & mask)
                ms = max(ms, sb[o + j] & mask)
            row_F[m0 + m], row_s[m0 + m] = mf, ms


@kernel()
def _relative_residual(row_F, row_s, state0, T):
    """``newton_solve.relative_residual`` over the row maxima (float arrays of B·T rows, rows of
    sequence b at b·T …), rounded as the reference; a NaN anywhere stays NaN."""
    cast = row_F.dtype.type  # every result rounded to the dtype (Numba would widen float32)
    one = cast(1.0)
    worst = cast(0.0)
    prev = worst
    for m in range(row_F.shape[0]):
        if m % T == 0:  # a sequence starts: its predecessor is state0's row
            prev = worst * 0
            for v in state0[m // T]:
                a = abs(v)
                if not a <= prev:
                    prev = a
        else:
            prev = row_s[m - 1]
        cur = row_s[m]
        r = cast(row_F[m] / cast(one + (cur if not cur < prev else prev)))
        if worst == worst and not r <= worst:
            worst = r
    return worst


@kernel(parallel=PARALLEL_CELLS)
def _update(f, A, delta, S, k, T, rows, out):
    """out = f + A δ with δ shifted by one step, over flat arrays (``f, delta, out``: N·S floats,
    groups of k = 1, 2 or 3; ``A``: N·S·k, each group's k × k block row-major), then f itself
    on the steps that start a sequence.  Products summed in column order, then added to f:
    the reference's rounding (``newton_solve.update``).  Tasks are chunks of ``rows`` steps,
    each sliced once and looped from 0 (a loop from a run-time offset gets a negative-index
    branch per access and does not vectorize)."""
    N = f.shape[0] // S
    for task in prange((N + rows - 1) // rows):
        m0 = task * rows
        m1 = min(N, m0 + rows)
        lo, hi = max(m0, 1) * S, m1 * S
        fv, av, dv, ov = f[lo:hi], A[k * lo:k * hi], delta[lo - S:hi - S], out[lo:hi]
        if k == 1:
            for j in range(hi - lo):
                ov[j] = fv[j] + av[j] * dv[j]
        elif k == 2:
            for p in range((hi - lo) // 2):
                d0, d1 = dv[2 * p], dv[2 * p + 1]
                ov[2 * p] = fv[2 * p] + (av[4 * p] * d0 + av[4 * p + 1] * d1)
                ov[2 * p + 1] = fv[2 * p + 1] + (av[4 * p + 2] * d0 + av[4 * p + 3] * d1)
        else:
            for p in range((hi - lo) // 3):
                d0, d1, d2 = dv[3 * p], dv[3 * p + 1], dv[3 * p + 2]
                for i in range(3):
                    r = 9 * p + 3 * i
                    ov[3 * p + i] = fv[3 * p + i] + ((av[r] * d0 + av[r + 1] * d1) + av[r + 2] * d2)
        for m in range((m0 + T - 1) // T * T, m1, T):  # the first step of each sequence
            om, fm = out[m * S:(m + 1) * S], f[m * S:(m + 1) * S]
            for j in range(S):
                om[j] = fm[j]


def newton_residual(states, f, state0):
    """``newton_solve.residual`` with ``−F`` and the row maxima in one pass: ``(−F, ρ)`` (the
    reference where the dtypes are not float32/float64 alike)."""
    if not supported_dtype(states, f, state0):
        from ...newton_solve import residual
        return residual(np, states, f, state0)
    B, T, S = states.shape
    s1, f1 = contiguous(states).reshape(-1), contiguous(f).reshape(-1)
    ints = int_like(s1.dtype)
    neg_F = np.empty_like(s1)
    row_F, row_s = np.empty(B * T, ints), np.empty(B * T, ints)
    _residual(s1, f1, S, row_tasks(B * T)[0], ints(np.iinfo(ints).max), neg_F, neg_F.view(ints), s1.view(ints),
              row_F, row_s)
    rho = _relative_residual(row_F.view(s1.dtype), row_s.view(s1.dtype), contiguous(state0), T)
    return neg_F.reshape(states.shape), float(rho)


def newton_update(f, A, delta, target):
    """``newton_solve.update`` in one pass: ``f_t + A_t δ_{t−1}`` for every step (the reference
    where the dtypes are not float32/float64 alike, and for dense operators: NumPy's batched
    matmul vectorizes their dot products, which a loop kept in IEEE order cannot; 1.2× slower
    for a GRU at H = 32)."""
    B, T, S = f.shape
    N = B * T
    k = 1 if target in ("diag", "quasi") else A.shape[2]
    if k > 3 or not supported_dtype(f, A, delta):
        from ...newton_solve import update
        return update(np, f, A, delta, target)
    out = np.empty(N * S, f.dtype)
    _update(contiguous(f).reshape(-1), contiguous(A).reshape(-1), contiguous(delta).reshape(-1), S, k, T,
            row_tasks(N)[0], out)
    return out.reshape(B, T, S)


class StepKernels(NamedTuple):
    """A cell's compiled Newton steps.  ``rows(cell, p, state, xi, jacobian) -> (f, cache, J or
    None)``; ``bwd(cell, p, cache, dout)`` the step adjoint (None: the reference's, on the
    reference's cache); ``jacobian_from_cache(cell, p, cache)`` (None: J only with the step).

    A cell with ``jacobian_from_cache`` has Jacobians much dearer than its step (dense ones):
    the Newton loop then builds J only when an iteration needs it, not for the final residual
    check.  A diagonal cell's J costs little next to its step, so it comes from the same pass."""
    rows: Callable
    bwd: Optional[Callable] = None
    jacobian_from_cache: Optional[Callable] = None


STEP_KERNELS = {**{key: StepKernels(rows, bwd) for key, (rows, bwd) in DIAGONAL_STEPS.items()},
                **{key: StepKernels(rows, None, jac) for key, (rows, jac) in DENSE_STEPS.items()}}


class NewtonKernels:
    """The view of a cell the Newton engine runs on: the cell itself for everything but
    ``newton_residual`` and ``newton_update`` (compiled; the reference where the dtypes are
    not float32/float64 alike)."""

    def __init__(self, cell):
        self.wrapped_cell = cell

    def __getattr__(self, name):
        return getattr(self.wrapped_cell, name)

    newton_residual = staticmethod(newton_residual)
    newton_update = staticmethod(newton_update)


class FusedSteps(NewtonKernels):
    """:class:`NewtonKernels` whose ``step_fwd`` / ``step_jacobian`` / ``step_bwd`` on many rows
    run as one kernel each (``newton_steps.py``).  Steps with a compiled adjoint keep their own
    cache (:class:`~.newton_steps.StepCache`); the others (GRU, LSTM) keep the reference's,
    and so does any step the dtypes send to the reference; those get the reference's adjoint."""

    def __init__(self, cell, kernels):
        super().__init__(cell)
        self._kernels = kernels
        self._rows = kernels.rows

    def _supported(self, *arrays, p):
        return supported_dtype(*arrays, *(p[k] for k in self.wrapped_cell.recurrent_keys))

    def step_fwd(self, xp, p, state, xi_t):
        if not self._supported(state, xi_t, p=p):
            return self.wrapped_cell.step_fwd(xp, p, state, xi_t)
        out, cache, _ = self._rows(self.wrapped_cell, p, state, xi_t, False)
        return out, cache

    def step_jacobian(self, xp, p, state, xi_t):
        if not self._supported(state, xi_t, p=p):
            return self.wrapped_cell.step_jacobian(xp, p, state, xi_t)
        return self._rows(self.wrapped_cell, p, state, xi_t, True)[2]

    def step_fwd_and_jacobian(self, xp, p, state, xi_t):
        """``(f, cache, ∂f/∂s)`` from one kernel pass: the Newton loop needs both at the same
        states, and the Jacobian costs little once the step is computed."""
        if not self._supported(state, xi_t, p=p):
            cell = self.wrapped_cell
            return (*cell.step_fwd(xp, p, state, xi_t), cell.step_jacobian(xp, p, state, xi_t))
        return self._rows(self.wrapped_cell, p, state, xi_t, True)

    def step_bwd(self, xp, p, cache, dout):
        if not isinstance(cache, StepCache):
            return self.wrapped_cell.step_bwd(xp, p, cache, dout)
        return self._kernels.bwd(self.wrapped_cell, p, cache, as_dtype(dout, cache[0].dtype))


class CachedJacobianSteps(FusedSteps):
    """:class:`FusedSteps` of a cell whose Jacobian is built from its step's cache by a kernel
    of its own (dense Jacobians: the Newton loop asks for them only when it iterates)."""

    def step_jacobian_cached(self, xp, p, state, xi_t, cache):
        """``∂f/∂s`` at ``(state, xi_t)`` given the cache their ``step_fwd`` returned."""
        if not self._supported(state, xi_t, p=p):
            return self.wrapped_cell.step_jacobian(xp, p, state, xi_t)
        return self._kernels.jacobian_from_cache(self.wrapped_cell, p, cache)


def newton_view(cell):
    """The cell as the Newton engine sees it on this backend (a subclass named like the cell,
    so that messages printing ``type(cell).__name__`` stay right)."""
    kernels = STEP_KERNELS.get((type(cell).__module__, type(cell).__qualname__))
    if kernels is None:
        base = NewtonKernels
    else:
        base = FusedSteps if kernels.jacobian_from_cache is None else CachedJacobianSteps
    proxy_type = type(type(cell).__name__, (base,), {})
    return proxy_type(cell) if kernels is None else proxy_type(cell, kernels)


# The engine's linear solves call the scan primitives on NumPy arrays, which dispatch to the
# default backend: this one while it runs, whatever default the caller has set.

def newton_fwd(xp, xi, state0, *rec, cell, tol, max_iters, jacobian, damping):
    """``newton_recurrence``'s reference forward on the numba view of ``cell``."""
    from ... import backends
    from ...primitives import get  # the Newton engine sits above the backends
    with backends.use("numba"):
        return get("newton_recurrence").fwd(xp, xi, state0, *rec, cell=newton_view(cell), tol=tol,
                                            max_iters=max_iters, jacobian=jacobian, damping=damping)


def newton_bwd(xp, res, cotangents, cell, tol, max_iters, jacobian, damping):
    """``newton_recurrence``'s reference backward on the numba view of ``cell``."""
    from ... import backends
    from ...primitives import get
    with backends.use("numba"):
        return get("newton_recurrence").bwd(xp, res, cotangents, cell=newton_view(cell), tol=tol,
                                            max_iters=max_iters, jacobian=jacobian, damping=damping)
