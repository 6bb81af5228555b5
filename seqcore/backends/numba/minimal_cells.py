"""Fused sequences of minGRU and minLSTM: forward and exact BPTT, gates and scan in one loop.

The gates depend on the input only, so the forward keeps nothing but the states: the
backward recomputes every step's gates from ``xi`` (a few vectorized exps per neuron are
cheaper than storing and re-reading them).  Tasks over (batch row, block of neurons), time
outside, neurons inside, as in ``diagonal_cells.py``.  Both run in linear space, also for
``log_space`` cells (the sequential scan forms no long product of gates), like the reference
``<name>_recurrence`` in ``seqcore/cells/minimal.py``.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .ops import (AHEAD, AheadBuilds, PARALLEL_CELLS, contiguous, exp_from_parts, expm1_parts, inline, kernel,
                  log1p_coefficients, log1p_unit, prefetch_segments, sigmoid_from_exp, split_columns, task_block,
                  task_scratch)

__all__ = ["minimal_fwd", "minimal_bwd"]



# -- gates of one row segment (inlined into the kernels) ------------------------------------------

@inline
def _candidate(v, q, sc, log_space, c, dc):
    """h̃ and ∂h̃/∂v: v and 1, or in log space g(v) = v + ½ (v ≥ 0) | σ(v), from q, sc = expm1
    parts of −|v|."""
    one, half = v.dtype.type(1.0), v.dtype.type(0.5)
    if log_space:
        for j in range(v.shape[0]):
            s = sigmoid_from_exp(v[j], exp_from_parts(q[j], sc[j], one), one)
            pos = v[j] >= 0
            c[j] = v[j] + half if pos else s
            dc[j] = one if pos else s * (one - s)
    else:
        for j in range(v.shape[0]):
            c[j] = v[j]
            dc[j] = one


@inline
def _mingru_gates(kz, v, log_space, u, q, sc, un, qn, kn, a, z, c, dc):
    """a = σ(−k_z), z = σ(k_z), h̃, ∂h̃/∂v.  u, q, sc: (2w,) exp buffers (second half for v);
    un, qn, kn: the first w (2w in log space) entries of u, q, kbits, the part to evaluate."""
    w = kz.shape[0]
    one = kz.dtype.type(1.0)
    u2, q2, s2 = u[w:], q[w:], sc[w:]  # w + j would block vectorization (see dense_cells)
    for j in range(w):
        u[j] = -abs(kz[j])
    if log_space:
        for j in range(w):
            u2[j] = -abs(v[j])
    expm1_parts(un, qn, kn)
    for j in range(w):
        e = exp_from_parts(q[j], sc[j], one)
        z[j] = sigmoid_from_exp(kz[j], e, one)
        a[j] = sigmoid_from_exp(-kz[j], e, one)
    _candidate(v, q2, s2, log_space, c, dc)


@inline
def _minlstm_gates(ki, kf, v, log_space, coef, u, q, kbits, sc, un, qn, kn, a, s, c, dc, si, sf, grads):
    """a = σ(−d), s = σ(d) with d = softplus(−k_f) − softplus(−k_i); h̃, ∂h̃/∂v; with ``grads``
    also si = σ(−k_i), sf = σ(−k_f).  u, q, kbits, sc: (3w,) exp buffers (parts for k_i, k_f,
    v); un, qn, kn: the first 2w (3w in log space) entries."""
    w = ki.shape[0]
    one, two = ki.dtype.type(1.0), ki.dtype.type(2.0)
    sqrt2, ln2 = ki.dtype.type(1.4142135623730951), ki.dtype.type(0.6931471805599453)
    zero = ki.dtype.type(0.0)
    u1, q1, k1, s1 = u[:w], q[:w], kbits[:w], sc[:w]
    u2, q2, s2 = u[w:2 * w], q[w:2 * w], sc[w:2 * w]
    u3, q3, s3 = u[2 * w:], q[2 * w:], sc[2 * w:]
    for j in range(w):
        u1[j] = -abs(ki[j])
    for j in range(w):
        u2[j] = -abs(kf[j])
    if log_space:
        for j in range(w):
            u3[j] = -abs(v[j])
    expm1_parts(un, qn, kn)
    for j in range(w):
        ei, ef = exp_from_parts(q1[j], s1[j], one), exp_from_parts(q2[j], s2[j], one)
        # softplus(y) = max(y, 0) + log1p(exp(−|y|)), NumPy's logaddexp(0, y)
        spf = max(-kf[j], zero) + log1p_unit(ef, one, two, sqrt2, ln2, coef)
        spi = max(-ki[j], zero) + log1p_unit(ei, one, two, sqrt2, ln2, coef)
        a[j] = spf - spi  # d, for now
    if grads:  # σ(−k_i), σ(−k_f): the backward's only
        for j in range(w):
            si[j] = sigmoid_from_exp(-ki[j], exp_from_parts(q1[j], s1[j], one), one)
            sf[j] = sigmoid_from_exp(-kf[j], exp_from_parts(q2[j], s2[j], one), one)
    for j in range(w):
        u1[j] = -abs(a[j])
    expm1_parts(u1, q1, k1)
    for j in range(w):
        d = a[j]
        e = exp_from_parts(q1[j], s1[j], one)
        a[j] = sigmoid_from_exp(-d, e, one)
        s[j] = sigmoid_from_exp(d, e, one)
    _candidate(v, q3, s3, log_space, c, dc)


@inline
def _task_rows(task, w, width, log_space, hbuf, u, q, kbits):
    """This task's rows: the state row (w,); the exp buffers u, q, kbits and the scale view
    (width·w,); their first (width − 1)·w entries ((width·w) in log space: the candidate's
    exp too), the part :func:`expm1_parts` evaluates."""
    m = width * w
    n = m if log_space else m - w
    return (hbuf[task, :w], u[task, :m], q[task, :m], kbits[task, :m], kbits[task, :m].view(u.dtype),
            u[task, :n], q[task, :n], kbits[task, :n])


@inline
def _step_gates(xi, i, t, j0, j1, lstm, log_space, coef, grads, uu, qq, kk, sc, un, qn, kn, a, b, c, dc, si, sf):
    """Step t's gates of row i, neurons j0:j1: a and b (z for minGRU, s for minLSTM) with
    h' = a h + b h̃, the candidate h̃ and ∂h̃/∂v; with ``grads`` (minLSTM) also si, sf."""
    H = xi.shape[2] // (3 if lstm else 2)
    if lstm:
        _minlstm_gates(xi[i, t, j0:j1], xi[i, t, H + j0:H + j1], xi[i, t, 2 * H + j0:2 * H + j1], log_space,
                       coef, uu, qq, kk, sc, un, qn, kn, a, b, c, dc, si, sf, grads)
    else:
        _mingru_gates(xi[i, t, j0:j1], xi[i, t, H + j0:H + j1], log_space, uu, qq, sc, un, qn, kn, a, b, c, dc)


# -- kernels: one per direction for both cells (``lstm`` picks the gates) -------------------------------

@kernel(parallel=PARALLEL_CELLS)
def _minimal_forward(xi, h0, lstm, log_space, coef, blk, states, hbuf, u, q, kbits, gates):
    """h_t = a_t h_{t-1} + b_t h̃_t.  Per task: hbuf (blk,), u, q, kbits (P/H · blk,), gates
    (6 blk,) rows, with P/H = 2 (minGRU) or 3 (minLSTM) projections per neuron."""
    B, T, H = states.shape
    nblk = (H + blk - 1) // blk
    for task in prange(B * nblk):
        i, j0, j1 = task_block(task, nblk, blk, H)
        w = j1 - j0
        hb, uu, qq, kk, sc, un, qn, kn = _task_rows(task, w, 3 if lstm else 2, log_space, hbuf, u, q, kbits)
        g = gates[task]  # contiguous rows (a 2-D view's rows would not vectorize)
        a, b, c = g[:w], g[w:2 * w], g[2 * w:3 * w]
        dc, si, sf = g[3 * w:4 * w], g[4 * w:5 * w], g[5 * w:6 * w]
        for jj in range(w):
            hb[jj] = h0[i, j0 + jj]
        for t in range(T):
            _step_gates(xi, i, t, j0, j1, lstm, log_space, coef, False, uu, qq, kk, sc, un, qn, kn,
                        a, b, c, dc, si, sf)
            st = states[i, t, j0:j1]
            for jj in range(w):
                hb[jj] = a[jj] * hb[jj] + b[jj] * c[jj]
                st[jj] = hb[jj]


def _make_minimal_backward(ahead: bool):
    """The kernel; with ``ahead``, each task asks for its lines ``AHEAD`` steps before use (ops.AheadBuilds)."""

    @kernel(parallel=PARALLEL_CELLS)
    def _minimal_backward(xi, states, h0, dstates, lstm, log_space, coef, blk, dxi, dh0, hbuf, u, q, kbits, gates):
        """g_t = dstates_t + a_{t+1} g_{t+1}; dh0 = a_1 g_1; hbuf holds the carry a_{t+1} g_{t+1}.
        minGRU: dk_z = z a (g h̃ − g h_{t-1}), dv = g z h̃'.  minLSTM: dd = a s (g h̃ − g h_{t-1}),
        dk_i = dd σ(−k_i), dk_f = −dd σ(−k_f), dv = g s h̃'."""
        B, T, H = states.shape
        P = xi.shape[2]
        nblk = (H + blk - 1) // blk
        xf, dxf, dsf, sf = xi.reshape(-1), dxi.reshape(-1), dstates.reshape(-1), states.reshape(-1)
        for task in prange(B * nblk):
            i, j0, j1 = task_block(task, nblk, blk, H)
            w = j1 - j0
            x, uu, qq, kk, sc, un, qn, kn = _task_rows(task, w, 3 if lstm else 2, log_space, hbuf, u, q, kbits)
            g = gates[task]
            a, b, c = g[:w], g[w:2 * w], g[2 * w:3 * w]
            dc, si, sf = g[3 * w:4 * w], g[4 * w:5 * w], g[5 * w:6 * w]
            for jj in range(w):
                x[jj] = 0
            for t in range(T - 1, -1, -1):
                if ahead:
                    if t > AHEAD:  # this task's lines AHEAD steps back
                        row = i * T + t - AHEAD
                        prefetch_segments(xf, row, P, P // H, H, j0, w)
                        prefetch_segments(dxf, row, P, P // H, H, j0, w)
                        prefetch_segments(dsf, row, H, 1, 0, j0, w)
                        prefetch_segments(sf, row - 1, H, 1, 0, j0, w)
                _step_gates(xi, i, t, j0, j1, lstm, log_space, coef, True, uu, qq, kk, sc, un, qn, kn,
                            a, b, c, dc, si, sf)
                hp = states[i, t - 1, j0:j1] if t > 0 else h0[i, j0:j1]
                ds, dk = dstates[i, t, j0:j1], dxi[i, t, j0:j1]
                if lstm:
                    dkf, dv = dxi[i, t, H + j0:H + j1], dxi[i, t, 2 * H + j0:2 * H + j1]
                    for jj in range(w):
                        gg = x[jj] + ds[jj]
                        dd = a[jj] * b[jj] * (gg * c[jj] - gg * hp[jj])
                        dk[jj] = dd * si[jj]
                        dkf[jj] = -dd * sf[jj]
                        dv[jj] = gg * b[jj] * dc[jj]
                        x[jj] = a[jj] * gg
                else:
                    dv = dxi[i, t, H + j0:H + j1]
                    for jj in range(w):
                        gg = x[jj] + ds[jj]
                        dk[jj] = b[jj] * a[jj] * (gg * c[jj] - gg * hp[jj])  # z(1 − z) is 0 once z rounds to 1
                        dv[jj] = gg * b[jj] * dc[jj]
                        x[jj] = a[jj] * gg
            for jj in range(w):
                dh0[i, j0 + jj] = x[jj]
    return _minimal_backward


_minimal_backward = AheadBuilds(_make_minimal_backward)


# -- the replacements ------------------------------------------------------------------------------------

def _buffers(B, H, blk, lstm, dtype):
    hbuf, u, q, kbits = task_scratch(B, H, blk, 3 if lstm else 2, dtype)
    return hbuf, u, q, kbits, np.empty((hbuf.shape[0], 6 * blk), dtype)


def minimal_fwd(xi, h0, cell):
    """minGRU / minLSTM over time: ``xi (B, T, 2H | 3H), h0 (B, H) -> states (B, T, H)``."""
    xi, h0 = contiguous(xi), contiguous(h0)
    B, T, H = h0.shape[0], xi.shape[1], h0.shape[1]
    lstm = cell.n_projections == 3
    blk = split_columns(B, H, 16)
    states = np.empty((B, T, H), xi.dtype)
    _minimal_forward(xi, h0, lstm, cell.log_space, log1p_coefficients(xi.dtype), blk, states,
                     *_buffers(B, H, blk, lstm, xi.dtype))
    return states, (xi, states, h0)


def minimal_bwd(res, dstates, cell):
    """BPTT of :func:`minimal_fwd`: ``(dxi, dh0)``."""
    xi, states, h0 = res
    B, T, H = states.shape
    lstm = cell.n_projections == 3
    blk = split_columns(B, H, 16)
    dxi, dh0 = np.empty_like(xi), np.empty_like(h0)
    _minimal_backward.for_width(blk)(xi, states, h0, dstates, lstm, cell.log_space,
                                              log1p_coefficients(xi.dtype), blk, dxi, dh0,
                                              *_buffers(B, H, blk, lstm, xi.dtype))
    return dxi, dh0
