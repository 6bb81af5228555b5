"""The Newton scan's per-step work on the dense GRU and LSTM: the steps ``f(s_{t−1}, xi_t)`` of
all B·T rows in one kernel (each task's rows of ``h W_hhᵀ`` through the packed-panel product,
then the gates of those rows), and their
dense Jacobians in another, from the steps' caches (the Newton loop builds them only when an
iteration solves with them).  Caches and step adjoints are the reference's.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .newton_steps import exp_scratch, row_scratch, row_tasks
from .ops import (PARALLEL_CELLS, contiguous, exp_from_parts, expm1_from_parts, expm1_parts, kernel, scratch,
                  sigmoid_from_exp, tanh_from_expm1)
from .panels import pack, panel_gemm_into

__all__ = ["DENSE_STEPS"]


@kernel(parallel=PARALLEL_CELLS)
def _gru_steps(h, xi, WTp, bias, rows, gh, out, r, z, n, ghn, u, q, kbits):
    """The dense GRU's rows: each task's rows of gh = h W_hhᵀ (``WTp = pack(W_hhᵀ)``), then per
    row the gates as the reference groups them (``xi + (gh + b_hh)``), out = f, and the
    reference's cache r, z, n, ghn = (gh + b)_n (its Jacobian comes from that cache:
    :func:`_gru_jacobian`)."""
    N, H = h.shape
    one, two = h.dtype.type(1.0), h.dtype.type(2.0)
    hf, ghf = h.reshape(-1), gh.reshape(-1)
    br, bz, bn = bias[:H], bias[H:2 * H], bias[2 * H:]
    for task in prange((N + rows - 1) // rows):
        m0 = task * rows
        panel_gemm_into(hf, m0 * H, H, min(rows, N - m0), H, WTp, ghf, m0 * 3 * H, 3 * H)
        uu, qq, kk, sc, u1, q1, k1, u2, q2, s2 = exp_scratch(u, q, kbits, task, H)
        for m in range(task * rows, min(N, task * rows + rows)):
            hm, x, g, rm, zm, nm, gm = h[m], xi[m], gh[m], r[m], z[m], n[m], ghn[m]
            xz, xn, gz, gn = x[H:2 * H], x[2 * H:], g[H:2 * H], g[2 * H:]
            for j in range(H):
                rm[j] = x[j] + (g[j] + br[j])
                zm[j] = xz[j] + (gz[j] + bz[j])
                uu[j], u2[j] = -abs(rm[j]), -abs(zm[j])
            expm1_parts(uu, qq, kk)
            for j in range(H):
                rm[j] = sigmoid_from_exp(rm[j], exp_from_parts(qq[j], sc[j], one), one)
                zm[j] = sigmoid_from_exp(zm[j], exp_from_parts(q2[j], s2[j], one), one)
                gm[j] = gn[j] + bn[j]
                nm[j] = xn[j] + rm[j] * gm[j]
                u1[j] = -(two * abs(nm[j]))
            expm1_parts(u1, q1, k1)
            om = out[m]
            for j in range(H):
                nm[j] = tanh_from_expm1(nm[j], expm1_from_parts(q1[j], sc[j], one), two)
                om[j] = (one - zm[j]) * nm[j] + zm[j] * hm[j]


@kernel(parallel=PARALLEL_CELLS)
def _gru_jacobian(h, r, z, n, ghn, W, rows, jac):
    """``jac (N, H, H)`` from the GRU's step cache: row i is ``a_i W_z[i] + b_i r_i W_n[i] +
    b_i ghn_i r_i(1 − r_i) W_r[i]`` summed in that order, plus ``z_i`` on the diagonal, with
    ``a = (h − n) z(1 − z)``, ``b = (1 − z)(1 − n²)`` (``GRU.step_jacobian``)."""
    N, H = h.shape
    one = h.dtype.type(1.0)
    Wr, Wz, Wn = W[:H], W[H:2 * H], W[2 * H:]
    for task in prange((N + rows - 1) // rows):
        for m in range(task * rows, min(N, task * rows + rows)):
            for i in range(H):
                zi, ni, ri = z[m, i], n[m, i], r[m, i]
                bi = (one - zi) * (one - ni * ni)
                ca, cn, cr = (h[m, i] - ni) * zi * (one - zi), bi * ri, bi * ghn[m, i] * ri * (one - ri)
                for j in range(H):
                    jac[m, i, j] = (ca * Wz[i, j] + cn * Wn[i, j]) + cr * Wr[i, j]
                jac[m, i, i] += zi


@kernel(parallel=PARALLEL_CELLS)
def _lstm_steps(state, xi, WTp, bias, rows, zb, out, c, h, ig, fg, gg, og, tc, u, q, kbits):
    """The LSTM's rows (state [c, h] interleaved): per task, its rows of c, h de-interleaved and
    of zb = h W_hhᵀ (``WTp = pack(W_hhᵀ)``), then per row the gates ``(xi + zb) + b_hh``,
    out = [c', h'] interleaved and the reference's cache (c, h, i, f, g, o, tanh c') (its
    Jacobian: :func:`_lstm_jacobian`).  u, q, kbits: (tasks, 4H)."""
    N, H = c.shape
    one, two = xi.dtype.type(1.0), xi.dtype.type(2.0)
    hflat, zflat = h.reshape(-1), zb.reshape(-1)  # (zf names a gate below)
    for task in prange((N + rows - 1) // rows):
        m0 = task * rows
        for m in range(m0, min(N, m0 + rows)):
            st, cm, hm = state[m], c[m], h[m]
            for j in range(H):
                cm[j], hm[j] = st[2 * j], st[2 * j + 1]
        panel_gemm_into(hflat, m0 * H, H, min(rows, N - m0), H, WTp, zflat, m0 * 4 * H, 4 * H)
        uu, qq, kk = u[task], q[task], kbits[task]
        sc = kk.view(xi.dtype)
        ug, qg, sg = uu[2 * H:3 * H], qq[2 * H:3 * H], sc[2 * H:3 * H]
        u1, q1, k1, s1 = uu[:H], qq[:H], kk[:H], sc[:H]
        for m in range(task * rows, min(N, task * rows + rows)):
            x, zr = xi[m], zb[m]
            for j in range(4 * H):
                zr[j] = (x[j] + zr[j]) + bias[j]
                uu[j] = -abs(zr[j])
            for j in range(H):
                ug[j] = two * ug[j]
            expm1_parts(uu, qq, kk)
            im, fm, gm, om, tm, cm, hm, new = ig[m], fg[m], gg[m], og[m], tc[m], c[m], h[m], out[m]
            zf, zg, zo = zr[H:2 * H], zr[2 * H:3 * H], zr[3 * H:]
            qf, sf, qo, so = qq[H:2 * H], sc[H:2 * H], qq[3 * H:], sc[3 * H:]
            for j in range(H):
                im[j] = sigmoid_from_exp(zr[j], exp_from_parts(qq[j], sc[j], one), one)
                fm[j] = sigmoid_from_exp(zf[j], exp_from_parts(qf[j], sf[j], one), one)
                gm[j] = tanh_from_expm1(zg[j], expm1_from_parts(qg[j], sg[j], one), two)
                om[j] = sigmoid_from_exp(zo[j], exp_from_parts(qo[j], so[j], one), one)
            for j in range(H):
                tm[j] = fm[j] * cm[j] + im[j] * gm[j]  # c' until its tanh below
                u1[j] = -(two * abs(tm[j]))
            expm1_parts(u1, q1, k1)
            for j in range(H):
                c2 = tm[j]
                tm[j] = tanh_from_expm1(c2, expm1_from_parts(q1[j], s1[j], one), two)
                new[2 * j], new[2 * j + 1] = c2, om[j] * tm[j]


@kernel(parallel=PARALLEL_CELLS)
def _lstm_jacobian(c, ig, fg, gg, og, tc, W, rows, jac):
    """``jac (N, 2H, 2H)`` from the LSTM's step cache (``LSTM.step_jacobian``): the ∂/∂h
    columns as rows of W_hh scaled and summed in its order, diag(f) and diag(k f) in the
    ∂/∂c columns, ``k = o(1 − tanh²c')``."""
    N, H = c.shape
    one, zero = c.dtype.type(1.0), c.dtype.type(0.0)
    Wi, Wf, Wg, Wo = W[:H], W[H:2 * H], W[2 * H:3 * H], W[3 * H:]
    for task in prange((N + rows - 1) // rows):
        for m in range(task * rows, min(N, task * rows + rows)):
            for i in range(H):
                iv, fv, gv, ov, tv = ig[m, i], fg[m, i], gg[m, i], og[m, i], tc[m, i]
                k = ov * (one - tv * tv)
                a_i, a_f, a_g = gv * iv * (one - iv), c[m, i] * fv * (one - fv), iv * (one - gv * gv)
                a_o = tv * ov * (one - ov)
                rc, rh = jac[m, 2 * i], jac[m, 2 * i + 1]
                for j in range(H):
                    d = (a_i * Wi[i, j] + a_f * Wf[i, j]) + a_g * Wg[i, j]
                    rc[2 * j], rc[2 * j + 1] = zero, d
                    rh[2 * j], rh[2 * j + 1] = zero, a_o * Wo[i, j] + k * d
                rc[2 * i], rh[2 * i] = fv, k * fv


def _gru_step_rows(cell, p, h, xi, jacobian):
    """The GRU's steps (and Jacobians when asked); the cache is the reference's, whose
    ``step_bwd`` is already two GEMMs and a few whole-array products."""
    N, H = h.shape
    h, xi = contiguous(h), contiguous(xi)
    out, r, z, n, ghn = (np.empty_like(h) for _ in range(5))
    rows, u, q, kbits = row_scratch(N, H, h.dtype)
    _gru_steps(h, xi, pack(p["weight_hh"].T), contiguous(p["bias_hh"]), rows, np.empty((N, 3 * H), h.dtype),
               out, r, z, n, ghn, u, q, kbits)
    cache = (h, r, z, n, ghn)
    return out, cache, _gru_cached_jacobian(cell, p, cache) if jacobian else None


def _gru_cached_jacobian(cell, p, cache):
    h = cache[0]
    N, H = h.shape
    jac = np.empty((N, H, H), h.dtype)
    _gru_jacobian(*cache, contiguous(p["weight_hh"]), row_tasks(N)[0], jac)
    return jac


def _lstm_step_rows(cell, p, state, xi, jacobian):
    """The LSTM's steps (and Jacobians when asked); the cache and ``step_bwd`` are the reference's."""
    N, H2 = state.shape
    H = H2 // 2
    state, xi = contiguous(state), contiguous(xi)
    c, h, i, f, g, o, tc = (np.empty((N, H), state.dtype) for _ in range(7))
    out = np.empty_like(state)
    rows, tasks = row_tasks(N)
    u, q, kbits = scratch((tasks, 4 * H), state.dtype)
    _lstm_steps(state, xi, pack(p["weight_hh"].T), contiguous(p["bias_hh"]), rows,
                np.empty((N, 4 * H), state.dtype), out, c, h, i, f, g, o, tc, u, q, kbits)
    cache = (c, h, i, f, g, o, tc)
    return out, cache, _lstm_cached_jacobian(cell, p, cache) if jacobian else None


def _lstm_cached_jacobian(cell, p, cache):
    c, _, i, f, g, o, tc = cache
    N, H = c.shape
    jac = np.empty((N, 2 * H, 2 * H), c.dtype)
    _lstm_jacobian(c, i, f, g, o, tc, contiguous(p["weight_hh"]), row_tasks(N)[0], jac)
    return jac


# (forward rows, Jacobian from the cache) per cell class
DENSE_STEPS = {("seqcore.cells.gru", "GRU"): (_gru_step_rows, _gru_cached_jacobian),
               ("seqcore.cells.lstm", "LSTM"): (_lstm_step_rows, _lstm_cached_jacobian)}
