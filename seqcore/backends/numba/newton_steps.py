"""The Newton scan's per-step work on the diagonal cells: ``f(s_{t−1}, xi_t)`` with
``∂f/∂s_{t−1}`` for all B·T steps in single kernels (the residual and Jacobian assembly of every
Newton iteration), and their step adjoints (the backward's last pass); the helpers the dense
cells' kernels (``newton_dense_steps.py``) share.
``newton_loop.FusedSteps`` puts them behind the cells' ``step_*`` methods.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .diagonal_cells import cifg_step_adjoint, diaggru_step_adjoint
from .ops import (PARALLEL_CELLS, contiguous, exp_from_parts, expm1_from_parts, expm1_parts, inline, kernel,
                  num_threads, scratch, sigmoid_from_exp, tanh_from_expm1)

__all__ = ["StepCache", "row_tasks", "row_scratch", "exp_scratch", "DIAGONAL_STEPS"]


# -- Newton steps: f(s_{t−1}, xi_t) and ∂f/∂s_{t−1} for all B·T steps at once (the residual and
#    Jacobian assembly of every Newton iteration), for the diagonal cells -------------------------

@inline
def exp_scratch(u, q, kbits, task, H):
    """Task ``task``'s exp buffers (2H wide): ``uu, qq, kk, scale`` whole and their halves
    ``u1, q1, k1`` and ``u2, q2, s2``.  Each half is its own slice: an index like ``H + j`` is
    not provably ≥ 0, so Numba would add a negative-index branch to every access and the loop
    would no longer vectorize."""
    uu, qq, kk = u[task], q[task], kbits[task]
    sc = kk.view(u.dtype)
    return uu, qq, kk, sc, uu[:H], qq[:H], kk[:H], uu[H:], qq[H:], sc[H:2 * H]


@inline
def diaggru_jacobian(r, z, n, h, ar, az, an, one):
    """One neuron's ∂h'/∂h of a DiagGRU step from its gates (the diagonal Jacobian)."""
    return (one - z) + (n - h) * z * (one - z) * az + z * (one - n * n) * an * (r + h * r * (one - r) * ar)


# Row addressing: the kernels index the flattened arrays at unsigned offsets (row m of an
# (N, kH) array starts at m·kH).  A slice per row costs several ns each, tens per row (3.3 ns
# per element at H = 16 against 1.0 at H = 128), and a signed index gets Numba's
# negative-index branch, which stops LLVM from vectorizing the loop.

@kernel(parallel=PARALLEL_CELLS)
def _diaggru_steps(h, xi, a, rows, jacobian, out, r, z, n, jac, u, q, kbits):
    """Rows N of ``h (N, H), xi (N, 3H)``: out = f, caches r, z, n; jac = diagonal ∂f/∂h when asked.

    Tasks: chunks of ``rows`` rows; u, q, kbits: (tasks, 2H) scratch.
    """
    N, H = h.shape
    one, two = h.dtype.type(1.0), h.dtype.type(2.0)
    ar, az, an = a[:H], a[H:2 * H], a[2 * H:]
    hf, xf, rf, zf, nf, of, jf = (h.reshape(-1), xi.reshape(-1), r.reshape(-1), z.reshape(-1), n.reshape(-1),
                                  out.reshape(-1), jac.reshape(-1))
    uH = np.uint64(H)
    for task in prange((N + rows - 1) // rows):
        uu, qq, kk, sc, u1, q1, k1, u2, q2, s2 = exp_scratch(u, q, kbits, task, H)
        for m in range(task * rows, min(N, task * rows + rows)):
            o = np.uint64(m) * uH           # row m of the (N, H) arrays
            oz = np.uint64(3 * m + 1) * uH  # xi's z part; its r part is oz - H, its n part oz + H
            for j in range(uH):
                rv, zv = xf[oz - uH + j] + ar[j] * hf[o + j], xf[oz + j] + az[j] * hf[o + j]
                rf[o + j], zf[o + j] = rv, zv
                uu[j], u2[j] = -abs(rv), -abs(zv)
            expm1_parts(uu, qq, kk)
            for j in range(uH):
                rv = sigmoid_from_exp(rf[o + j], exp_from_parts(qq[j], sc[j], one), one)
                zf[o + j] = sigmoid_from_exp(zf[o + j], exp_from_parts(q2[j], s2[j], one), one)
                rf[o + j] = rv
                nv = xf[oz + uH + j] + an[j] * rv * hf[o + j]
                nf[o + j] = nv
                u1[j] = -(two * abs(nv))
            expm1_parts(u1, q1, k1)
            for j in range(uH):
                nv = tanh_from_expm1(nf[o + j], expm1_from_parts(q1[j], sc[j], one), two)
                nf[o + j] = nv
                of[o + j] = (one - zf[o + j]) * hf[o + j] + zf[o + j] * nv
            if jacobian:
                for j in range(uH):
                    jf[o + j] = diaggru_jacobian(rf[o + j], zf[o + j], nf[o + j], hf[o + j], ar[j], az[j], an[j], one)


# Rows at most this wide (float32, float64) take the blocked kernel below: one call of the
# vectorized exp costs about 5 ns besides its elements, and three calls per row of 16 floats
# were half the step (2.2x float32, 1.25x float64 at H = 16; BENCHMARKS.md)
SHORT_ROW_WIDTH = {4: 32, 8: 16}
EXP_BLOCK = 256  # elements per exp call in the blocked kernel


@kernel(parallel=PARALLEL_CELLS)
def _diaggru_steps_blocked(h, xi, a, rows, per, jacobian, out, r, z, n, jac, u, q, kbits):
    """:func:`_diaggru_steps` for short rows, the same arithmetic element by element: each exp
    pass covers ``per`` rows at once.  u, q, kbits: (tasks, 2·per·H), the r (later n) half first."""
    N, H = h.shape
    one, two = h.dtype.type(1.0), h.dtype.type(2.0)
    ar, az, an = a[:H], a[H:2 * H], a[2 * H:]
    hf, xf, rf, zf, nf, of, jf = (h.reshape(-1), xi.reshape(-1), r.reshape(-1), z.reshape(-1), n.reshape(-1),
                                  out.reshape(-1), jac.reshape(-1))
    uH, W = np.uint64(H), per * H
    for task in prange((N + rows - 1) // rows):
        uu, qq, kk = u[task], q[task], kbits[task]
        sc = kk.view(h.dtype)
        u1, q1, k1, s1 = uu[:W], qq[:W], kk[:W], sc[:W]  # halves as their own slices (see exp_scratch)
        u2, q2, s2 = uu[W:], qq[W:], sc[W:2 * W]
        end = min(N, task * rows + rows)
        for b in range(task * rows, end, per):
            for m in range(b, min(end, b + per)):
                o, oz, ob = np.uint64(m) * uH, np.uint64(3 * m + 1) * uH, np.uint64(m - b) * uH
                for j in range(uH):
                    rv, zv = xf[oz - uH + j] + ar[j] * hf[o + j], xf[oz + j] + az[j] * hf[o + j]
                    rf[o + j], zf[o + j] = rv, zv
                    u1[ob + j], u2[ob + j] = -abs(rv), -abs(zv)
            expm1_parts(uu, qq, kk)
            for m in range(b, min(end, b + per)):
                o, oz, ob = np.uint64(m) * uH, np.uint64(3 * m + 1) * uH, np.uint64(m - b) * uH
                for j in range(uH):
                    rv = sigmoid_from_exp(rf[o + j], exp_from_parts(q1[ob + j], s1[ob + j], one), one)
                    zf[o + j] = sigmoid_from_exp(zf[o + j], exp_from_parts(q2[ob + j], s2[ob + j], one), one)
                    rf[o + j] = rv
                    nv = xf[oz + uH + j] + an[j] * rv * hf[o + j]
                    nf[o + j] = nv
                    u1[ob + j] = -(two * abs(nv))
            expm1_parts(u1, q1, k1)
            for m in range(b, min(end, b + per)):
                o, ob = np.uint64(m) * uH, np.uint64(m - b) * uH
                for j in range(uH):
                    nv = tanh_from_expm1(nf[o + j], expm1_from_parts(q1[ob + j], s1[ob + j], one), two)
                    nf[o + j] = nv
                    of[o + j] = (one - zf[o + j]) * hf[o + j] + zf[o + j] * nv
                if jacobian:
                    for j in range(uH):
                        jf[o + j] = diaggru_jacobian(rf[o + j], zf[o + j], nf[o + j], hf[o + j], ar[j], az[j], an[j],
                                                     one)


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


@kernel(parallel=PARALLEL_CELLS)
def _diaggru_steps_bwd(h, r, z, n, dout, a, rows, dh, dxi, da):
    """The adjoint of :func:`_diaggru_steps` row by row: dh (N, H), dxi (N, 3H) = (dk_r, dk_z, dk_n);
    da (tasks, 3H) float64 = this task's share of the weight_hh gradient."""
    N, H = h.shape
    one = h.dtype.type(1.0)
    ar, az, an = a[:H], a[H:2 * H], a[2 * H:]
    hf, rf, zf, nf, df, dhf, xf = (h.reshape(-1), r.reshape(-1), z.reshape(-1), n.reshape(-1), dout.reshape(-1),
                                   dh.reshape(-1), dxi.reshape(-1))
    uH = np.uint64(H)
    for task in prange((N + rows - 1) // rows):
        sr, sz, sn = da[task, :H], da[task, H:2 * H], da[task, 2 * H:]
        for m in range(task * rows, min(N, task * rows + rows)):
            o = np.uint64(m) * uH           # row m of the (N, H) arrays (see _diaggru_steps)
            oz = np.uint64(3 * m + 1) * uH  # dxi's z part
            for j in range(uH):
                hv, rv = hf[o + j], rf[o + j]
                dhf[o + j], dkr, dkz, dkn = diaggru_step_adjoint(df[o + j], hv, rv, zf[o + j], nf[o + j],
                                                                 ar[j], az[j], an[j], one)
                xf[oz - uH + j], xf[oz + j], xf[oz + uH + j] = dkr, dkz, dkn
                sr[j] += dkr * hv
                sz[j] += dkz * hv
                sn[j] += dkn * rv * hv


@kernel(parallel=PARALLEL_CELLS)
def _cifg_steps_bwd(state, acts, out, dnew, a, peep, rows, dstate, dxi, dp):
    """The adjoint of :func:`_cifg_steps` row by row: dstate (N, 2H) [c, h] interleaved,
    dxi (N, 3H) = (dk_f, dk_g, dk_o); dp (tasks, 5H) float64 = this task's share of the
    weight_hh (3H) and weight_peephole (2H) gradients."""
    N, H2 = state.shape
    H = H2 // 2
    one = state.dtype.type(1.0)
    af, ag, ao, pf, po = a[:H], a[H:2 * H], a[2 * H:], peep[:H], peep[H:]
    for task in prange((N + rows - 1) // rows):
        sf, sg, so, spf, spo = (dp[task, :H], dp[task, H:2 * H], dp[task, 2 * H:3 * H], dp[task, 3 * H:4 * H],
                                dp[task, 4 * H:])
        for m in range(task * rows, min(N, task * rows + rows)):
            st, am, om, d, ds, x = state[m], acts[m], out[m], dnew[m], dstate[m], dxi[m]
            fg, gg, og, tc = am[:H], am[H:2 * H], am[2 * H:3 * H], am[3 * H:]
            xf, xg, xo = x[:H], x[H:2 * H], x[2 * H:]
            for j in range(H):
                c, h, c2 = st[2 * j], st[2 * j + 1], om[2 * j]
                ds[2 * j], ds[2 * j + 1], dkf, dkg, dko = cifg_step_adjoint(
                    d[2 * j], d[2 * j + 1], c, fg[j], gg[j], og[j], tc[j], af[j], ag[j], ao[j], pf[j], po[j], one)
                xf[j], xg[j], xo[j] = dkf, dkg, dko
                sf[j] += dkf * h
                sg[j] += dkg * h
                so[j] += dko * h
                spf[j] += dkf * c
                spo[j] += dko * c2


def row_tasks(N):
    """``(rows per task, tasks)`` splitting N independent rows into about four tasks per thread."""
    rows = max(1, -(-N // (4 * num_threads())))
    return rows, -(-N // rows)


def row_scratch(N, H, dtype):
    """:func:`row_tasks`' rows per task and the per-task exp scratch (2H wide)."""
    rows, tasks = row_tasks(N)
    u, q, kbits = scratch((tasks, 2 * H), dtype)
    return rows, u, q, kbits


class StepCache(tuple):
    """What the fused steps keep for their adjoint (the kernels' own arrays, not the
    reference's cache), so that :meth:`FusedSteps.step_bwd` knows it may run the kernel."""


def _diaggru_step_rows(cell, p, h, xi, jacobian):
    N, H = h.shape
    a = contiguous(p["weight_hh"])
    h, xi = contiguous(h), contiguous(xi)
    out, r, z, n = (np.empty_like(h) for _ in range(4))
    jac = np.empty_like(h) if jacobian else np.empty((1, 1), h.dtype)
    if H <= SHORT_ROW_WIDTH[h.itemsize]:
        rows, tasks = row_tasks(N)
        per = max(1, min(rows, EXP_BLOCK // H))
        u, q, kbits = scratch((tasks, 2 * per * H), h.dtype)
        u[:] = 0  # a task's last block may fill part of the buffers: the rest stays finite
        _diaggru_steps_blocked(h, xi, a, rows, per, jacobian, out, r, z, n, jac, u, q, kbits)
    else:
        rows, u, q, kbits = row_scratch(N, H, h.dtype)
        _diaggru_steps(h, xi, a, rows, jacobian, out, r, z, n, jac, u, q, kbits)
    return out, StepCache((h, r, z, n)), jac


def _diaggru_step_bwd(cell, p, cache, dout):
    h, r, z, n = cache
    N, H = h.shape
    dh, dxi = np.empty_like(h), np.empty((N, 3 * H), h.dtype)
    rows, tasks = row_tasks(N)
    da = np.zeros((tasks, 3 * H))
    _diaggru_steps_bwd(h, r, z, n, contiguous(dout), contiguous(p["weight_hh"]), rows, dh, dxi, da)
    return dh, dxi, {"weight_hh": da.sum(axis=0).astype(h.dtype)}


def _cifg_step_rows(cell, p, state, xi, jacobian):
    N, H2 = state.shape
    H = H2 // 2
    a, peep = contiguous(p["weight_hh"]), contiguous(p["weight_peephole"])
    state, xi = contiguous(state), contiguous(xi)
    out, acts = np.empty_like(state), np.empty((N, 4 * H), state.dtype)
    jac = np.empty((N, H, 2, 2), state.dtype) if jacobian else np.empty((1, 1, 2, 2), state.dtype)
    rows, u, q, kbits = row_scratch(N, H, state.dtype)
    _cifg_steps(state, xi, a, peep, rows, jacobian, out, acts, jac, u, q, kbits)
    return out, StepCache((state, acts, out)), jac


def _cifg_step_bwd(cell, p, cache, dnew):
    state, acts, out = cache
    N, H2 = state.shape
    H = H2 // 2
    dstate, dxi = np.empty_like(state), np.empty((N, 3 * H), state.dtype)
    rows, tasks = row_tasks(N)
    dp = np.zeros((tasks, 5 * H))
    _cifg_steps_bwd(state, acts, out, dnew, contiguous(p["weight_hh"]), contiguous(p["weight_peephole"]), rows,
                    dstate, dxi, dp)
    sums = dp.sum(axis=0).astype(state.dtype)
    return dstate, dxi, {"weight_hh": sums[:3 * H], "weight_peephole": sums[3 * H:]}


# (forward rows with Jacobian, step adjoint) per cell class
DIAGONAL_STEPS = {("seqcore.cells.pararnn", "DiagGRU"): (_diaggru_step_rows, _diaggru_step_bwd),
                  ("seqcore.cells.pararnn", "CIFGLSTM"): (_cifg_step_rows, _cifg_step_bwd)}
