"""The Newton scan's per-iteration work on the diagonal cells: ``f(s_{t−1}, xi_t)`` and
``∂f/∂s_{t−1}`` for all B·T steps in single kernels, behind a :class:`FusedSteps` view of the
cell that the reference Newton engine (``newton_recurrence``) runs on unchanged.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .ops import (PARALLEL_CELLS, contiguous, exp_from_parts, expm1_from_parts, expm1_parts, kernel, num_threads,
                  scratch, sigmoid_from_exp, supported_dtype, tanh_from_expm1)

__all__ = ["FusedSteps", "newton_fwd", "newton_bwd"]


# -- Newton steps: f(s_{t−1}, xi_t) and ∂f/∂s_{t−1} for all B·T steps at once (the residual and
#    Jacobian assembly of every Newton iteration), for the diagonal cells -------------------------

@kernel(parallel=PARALLEL_CELLS)
def _diaggru_steps(h, xi, a, rows, jacobian, out, r, z, n, jac, u, q, kbits):
    """Rows N of ``h (N, H), xi (N, 3H)``: out = f, caches r, z, n; jac = diagonal ∂f/∂h when asked.

    Tasks: chunks of ``rows`` rows; u, q, kbits: (tasks, 2H) scratch.
    """
    N, H = h.shape
    one, two = h.dtype.type(1.0), h.dtype.type(2.0)
    ar, az, an = a[:H], a[H:2 * H], a[2 * H:]
    for task in prange((N + rows - 1) // rows):
        uu, qq, kk = u[task], q[task], kbits[task]
        u1, q1, k1 = uu[:H], qq[:H], kk[:H]
        sc = kk.view(h.dtype)
        # second halves as their own slices: an index like H + j is not provably ≥ 0, so Numba
        # adds a negative-index branch to every access and the loop no longer vectorizes
        u2, q2, s2 = uu[H:], qq[H:], sc[H:2 * H]
        for m in range(task * rows, min(N, task * rows + rows)):
            hm, x, rm, zm, nm = h[m], xi[m], r[m], z[m], n[m]
            xz, xn = x[H:2 * H], x[2 * H:]
            for j in range(H):
                rm[j] = x[j] + ar[j] * hm[j]
                zm[j] = xz[j] + az[j] * hm[j]
                uu[j], u2[j] = -abs(rm[j]), -abs(zm[j])
            expm1_parts(uu, qq, kk)
            for j in range(H):
                rm[j] = sigmoid_from_exp(rm[j], exp_from_parts(qq[j], sc[j], one), one)
                zm[j] = sigmoid_from_exp(zm[j], exp_from_parts(q2[j], s2[j], one), one)
                nm[j] = xn[j] + an[j] * rm[j] * hm[j]
                u1[j] = -(two * abs(nm[j]))
            expm1_parts(u1, q1, k1)
            om = out[m]
            for j in range(H):
                nm[j] = tanh_from_expm1(nm[j], expm1_from_parts(q1[j], sc[j], one), two)
                om[j] = (one - zm[j]) * hm[j] + zm[j] * nm[j]
            if jacobian:
                jm = jac[m]
                for j in range(H):
                    jm[j] = ((one - zm[j]) + (nm[j] - hm[j]) * zm[j] * (one - zm[j]) * az[j]
                             + zm[j] * (one - nm[j] * nm[j]) * an[j] * (rm[j] + hm[j] * rm[j] * (one - rm[j]) * ar[j]))


@kernel(parallel=PARALLEL_CELLS)
def _cifg_steps(state, xi, a, peep, rows, jacobian, out, acts, jac, u, q, kbits):
    """Rows N of ``state (N, 2H)`` ([c, h] interleaved), ``xi (N, 3H)``: out = f (N, 2H);
    acts (N, 4H) = f, g, o, tanh(c'); jac (N, H, 2, 2) when asked.  u, q, kbits: (tasks, 2H)."""
    N, H3 = xi.shape
    H = H3 // 3
    one, two = xi.dtype.type(1.0), xi.dtype.type(2.0)
    af, ag, ao, pf, po = a[:H], a[H:2 * H], a[2 * H:], peep[:H], peep[H:]
    for task in prange((N + rows - 1) // rows):
        uu, qq, kk = u[task], q[task], kbits[task]
        sc = kk.view(xi.dtype)
        c, hh, c2 = np.empty(H, xi.dtype), np.empty(H, xi.dtype), np.empty(H, xi.dtype)
        for m in range(task * rows, min(N, task * rows + rows)):
            st, x, am = state[m], xi[m], acts[m]
            for j in range(H):
                c[j], hh[j] = st[2 * j], st[2 * j + 1]
            for j in range(H):
                am[j] = (x[j] + af[j] * hh[j]) + pf[j] * c[j]
                am[H + j] = x[H + j] + ag[j] * hh[j]
                uu[j], uu[H + j] = -abs(am[j]), -(two * abs(am[H + j]))
            expm1_parts(uu, qq, kk)
            for j in range(H):
                am[j] = sigmoid_from_exp(am[j], exp_from_parts(qq[j], sc[j], one), one)
                am[H + j] = tanh_from_expm1(am[H + j], expm1_from_parts(qq[H + j], sc[H + j], one), two)
                c2[j] = am[j] * c[j] + (one - am[j]) * am[H + j]
                am[2 * H + j] = (x[2 * H + j] + ao[j] * hh[j]) + po[j] * c2[j]
                uu[j], uu[H + j] = -abs(am[2 * H + j]), -(two * abs(c2[j]))
            expm1_parts(uu, qq, kk)
            om = out[m]
            for j in range(H):
                am[2 * H + j] = sigmoid_from_exp(am[2 * H + j], exp_from_parts(qq[j], sc[j], one), one)
                am[3 * H + j] = tanh_from_expm1(c2[j], expm1_from_parts(qq[H + j], sc[H + j], one), two)
                om[2 * j], om[2 * j + 1] = c2[j], am[2 * H + j] * am[3 * H + j]
            if jacobian:
                for j in range(H):
                    f, g, o, tc = am[j], am[H + j], am[2 * H + j], am[3 * H + j]
                    sf = f * (one - f)
                    jcc = f + (c[j] - g) * sf * pf[j]
                    jch = (c[j] - g) * sf * af[j] + (one - f) * (one - g * g) * ag[j]
                    so = tc * o * (one - o)
                    k = o * (one - tc * tc)
                    jac[m, j, 0, 0], jac[m, j, 0, 1] = jcc, jch
                    jac[m, j, 1, 0], jac[m, j, 1, 1] = (so * po[j] + k) * jcc, so * (ao[j] + po[j] * jch) + k * jch


def _row_tasks(N, H, dtype):
    """Rows per task (about four tasks per thread) and the per-task exp scratch (2H wide)."""
    rows = max(1, -(-N // (4 * num_threads())))
    tasks = -(-N // rows)
    u, q, kbits = scratch((tasks, 2 * H), dtype)
    return rows, u, q, kbits


def _diaggru_step_rows(cell, p, h, xi, jacobian):
    N, H = h.shape
    a = contiguous(p["weight_hh"])
    h, xi = contiguous(h), contiguous(xi)
    out, r, z, n = (np.empty_like(h) for _ in range(4))
    jac = np.empty_like(h) if jacobian else np.empty((1, 1), h.dtype)
    rows, u, q, kbits = _row_tasks(N, H, h.dtype)
    _diaggru_steps(h, xi, a, rows, jacobian, out, r, z, n, jac, u, q, kbits)
    return out, (h, r, z, n), jac


def _cifg_step_rows(cell, p, state, xi, jacobian):
    N, H2 = state.shape
    H = H2 // 2
    a, peep = contiguous(p["weight_hh"]), contiguous(p["weight_peephole"])
    state, xi = contiguous(state), contiguous(xi)
    out, acts = np.empty_like(state), np.empty((N, 4 * H), state.dtype)
    jac = np.empty((N, H, 2, 2), state.dtype) if jacobian else np.empty((1, 1, 2, 2), state.dtype)
    rows, u, q, kbits = _row_tasks(N, H, state.dtype)
    _cifg_steps(state, xi, a, peep, rows, jacobian, out, acts, jac, u, q, kbits)
    c, h = state[:, 0::2], state[:, 1::2]
    f, g, o, tc = acts[:, :H], acts[:, H:2 * H], acts[:, 2 * H:3 * H], acts[:, 3 * H:]
    return out, (c, h, f, g, out[:, 0::2], o, tc), jac


_STEP_ROWS = {("seqcore.cells.pararnn", "DiagGRU"): _diaggru_step_rows,
              ("seqcore.cells.pararnn", "CIFGLSTM"): _cifg_step_rows}


class FusedSteps:
    """A cell whose ``step_fwd`` / ``step_jacobian`` on many rows run as one kernel each.

    Everything else (names, structure, ``step_bwd``, the recurrence) is the wrapped cell's,
    and the caches keep the reference's layout, so the Newton engine runs unchanged on it.
    """

    def __init__(self, cell, rows_fn):
        self.wrapped_cell, self._rows = cell, rows_fn

    def __getattr__(self, name):
        return getattr(self.wrapped_cell, name)

    def step_fwd(self, xp, p, state, xi_t):
        if not supported_dtype(state, xi_t, *(p[k] for k in self.wrapped_cell.recurrent_keys)):
            return self.wrapped_cell.step_fwd(xp, p, state, xi_t)
        out, cache, _ = self._rows(self.wrapped_cell, p, state, xi_t, False)
        return out, cache

    def step_jacobian(self, xp, p, state, xi_t):
        if not supported_dtype(state, xi_t, *(p[k] for k in self.wrapped_cell.recurrent_keys)):
            return self.wrapped_cell.step_jacobian(xp, p, state, xi_t)
        return self._rows(self.wrapped_cell, p, state, xi_t, True)[2]

    def step_fwd_and_jacobian(self, xp, p, state, xi_t):
        """``(f, cache, ∂f/∂s)`` from one kernel pass: the Newton loop needs both at the same
        states, and the Jacobian costs little once the step is computed."""
        if not supported_dtype(state, xi_t, *(p[k] for k in self.wrapped_cell.recurrent_keys)):
            cell = self.wrapped_cell
            return (*cell.step_fwd(xp, p, state, xi_t), cell.step_jacobian(xp, p, state, xi_t))
        return self._rows(self.wrapped_cell, p, state, xi_t, True)


def _with_fused_steps(cell):
    rows_fn = _STEP_ROWS.get((type(cell).__module__, type(cell).__qualname__))
    if rows_fn is None:
        return cell
    # a subclass named like the cell, so messages that print type(cell).__name__ stay right
    proxy_type = type(type(cell).__name__, (FusedSteps,), {})
    return proxy_type(cell, rows_fn)


def newton_fwd(xp, xi, state0, *rec, cell, **options):
    from ...primitives import get  # the Newton engine sits above the backends
    return get("newton_recurrence").fwd(xp, xi, state0, *rec, cell=_with_fused_steps(cell), **options)


def newton_bwd(xp, res, cotangents, cell, **options):
    from ...primitives import get
    return get("newton_recurrence").bwd(xp, res, cotangents, cell=_with_fused_steps(cell), **options)


