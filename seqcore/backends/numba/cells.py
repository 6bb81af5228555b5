"""Fused cell sequences: the ``<name>_recurrence`` primitives, forward and exact BPTT.

Each replacement has the reference's signature (``seqcore/cells/base.py``):
``fwd(xp, xi, state0, *recurrent params, cell=cell) -> (states (B, T, S), residuals)`` and
``bwd(xp, residuals, dstates, cell=cell) -> (dxi, dstate0, *dparams)``.

One compiled loop over time per direction.  Per step the recurrent matrix product is one
``np.dot`` on contiguous 2-D buffers (``(B, H) × (H, kH)`` — BLAS, with its own threads)
and the gate arithmetic is fused in scalar loops.  The weight gradient is not accumulated
per step: the loop stores every step's pre-activation gradient and the previous hidden
state, and one ``(kH, B·T) × (B·T, H)`` product after the loop gives ``dW_hh``.

A cell of another class (a subclass, say), other dtypes or mixed dtypes run the
reference recurrence instead.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .ops import (as_dtype, contiguous, exp_from_parts, expm1_from_parts, expm1_parts, kernel, sigmoid_from_exp,
                  split_columns, supported_dtype, tanh_from_expm1)

__all__ = ["PRIMITIVES"]


# -- Elman ------------------------------------------------------------------------------------

@kernel()
def _elman_forward(xi, h0, WT, bias, relu, states, hbuf, zbuf, u, q, kbits):
    """states[:, t] = φ(xi_t + h_{t-1} W^T + b);  WT = W_hh^T (H, H); hbuf, zbuf, u, q, kbits: (B, H)."""
    B, T, H = xi.shape
    zero, one, two = xi.dtype.type(0.0), xi.dtype.type(1.0), xi.dtype.type(2.0)
    uf, qf, kf = u.reshape(B * H), q.reshape(B * H), kbits.reshape(B * H)
    scale = kbits.view(xi.dtype)
    hbuf[:, :] = h0
    for t in range(T):
        np.dot(hbuf, WT, zbuf)
        for i in range(B):
            for j in range(H):
                zbuf[i, j] = (xi[i, t, j] + zbuf[i, j]) + bias[j]
        if relu:
            for i in range(B):
                for j in range(H):
                    hbuf[i, j] = zbuf[i, j] if zbuf[i, j] > zero else zero
        else:
            for i in range(B):
                for j in range(H):
                    u[i, j] = -(two * abs(zbuf[i, j]))
            expm1_parts(uf, qf, kf)
            for i in range(B):
                for j in range(H):
                    hbuf[i, j] = tanh_from_expm1(zbuf[i, j], expm1_from_parts(q[i, j], scale[i, j], one), two)
        for i in range(B):
            for j in range(H):
                states[i, t, j] = hbuf[i, j]


@kernel()
def _elman_backward(states, W, dstates, relu, dxi, ds, dbuf):
    """dxi_t = (ds + dstates_t) φ'(out_t); ds ← dxi_t W.  ds (B, H) enters as 0, leaves as dh0."""
    B, T, H = states.shape
    zero, one = states.dtype.type(0.0), states.dtype.type(1.0)
    for t in range(T - 1, -1, -1):
        for i in range(B):
            out, d_out, dx = states[i, t], dstates[i, t], dxi[i, t]
            for j in range(H):
                d = ds[i, j] + d_out[j]
                dp = d * (one if out[j] > zero else zero) if relu else d * (one - out[j] * out[j])
                dx[j] = dp
                dbuf[i, j] = dp
        np.dot(dbuf, W, ds)


def _weight_grad(dpre, hprev):
    """Σ over (b, t) of dpre^T h_{t-1}: ``(B, T, kH), (B, T, H) -> (kH, H)``; and the bias gradient."""
    n = dpre.shape[0] * dpre.shape[1]
    d2 = dpre.reshape(n, dpre.shape[2])
    return d2.T @ hprev.reshape(n, hprev.shape[2]), d2.sum(axis=0)


def _previous(states, first):
    """``h_{t-1}`` at every t: ``(B, T, H)`` from the states and ``first = h0``."""
    return np.concatenate([first[:, None, :], states[:, :-1]], axis=1)


def _scratch(shape, dtype):
    """Buffers of the vectorized exp: argument, polynomial part, and the exponent bits (int of the same width)."""
    return np.empty(shape, dtype), np.empty(shape, dtype), np.empty(shape, np.int32 if dtype == np.float32 else np.int64)


def elman_fwd(xi, h0, W, b, cell):
    xi, h0 = contiguous(xi), contiguous(h0)
    B, T, H = xi.shape
    states = np.empty_like(xi)
    _elman_forward(xi, h0, contiguous(W.T), contiguous(b), cell.nonlinearity == "relu", states,
                   np.empty((B, H), xi.dtype), np.empty((B, H), xi.dtype), *_scratch((B, H), xi.dtype))
    return states, (states, h0, W)


def elman_bwd(res, dstates, cell):
    states, h0, W = res
    B, T, H = states.shape
    dxi, ds = np.empty_like(states), np.zeros((B, H), states.dtype)
    _elman_backward(states, contiguous(W), dstates, cell.nonlinearity == "relu", dxi, ds,
                    np.empty((B, H), states.dtype))
    dW, db = _weight_grad(dxi, _previous(states, h0))
    return dxi, ds, dW, db


# -- LSTM (state [c, h] interleaved per neuron; gates i, f, g, o) --------------------------------

@kernel()
def _lstm_forward(xi, c0, h0, WT, bias, states, acts, hprev, hbuf, cbuf, zbuf, u, q, kbits):
    """states (B, T, 2H); acts (B, T, 5H) = i, f, g, o, tanh(c) per step; hprev (B, T, H) = h_{t-1}.

    Buffers: hbuf, cbuf (B, H); zbuf (B, 4H); u, q, kbits (4H,).  Per step: one GEMM, then
    row by row (so the scratch stays in L1) simple loops that LLVM vectorizes, with one
    vectorized exp pass per layer of nonlinearities.
    """
    B, T, H4 = xi.shape
    H = H4 // 4
    one, two = xi.dtype.type(1.0), xi.dtype.type(2.0)
    scale = kbits.view(xi.dtype)
    uc, qc, kc, sc = u[:H], q[:H], kbits[:H], scale[:H]
    hbuf[:, :] = h0
    cbuf[:, :] = c0
    for t in range(T):
        np.dot(hbuf, WT, zbuf)
        for i in range(B):
            z, x, a = zbuf[i], xi[i, t], acts[i, t]
            for j in range(H4):
                z[j] = (x[j] + z[j]) + bias[j]
            for j in range(H4):
                u[j] = -abs(z[j])  # exp(-|z|) for the sigmoids
            for j in range(2 * H, 3 * H):
                u[j] = two * u[j]  # expm1(-2|z|) for tanh
            expm1_parts(u, q, kbits)
            for j in range(2 * H):
                a[j] = sigmoid_from_exp(z[j], exp_from_parts(q[j], scale[j], one), one)
            for j in range(2 * H, 3 * H):
                a[j] = tanh_from_expm1(z[j], expm1_from_parts(q[j], scale[j], one), two)
            for j in range(3 * H, H4):
                a[j] = sigmoid_from_exp(z[j], exp_from_parts(q[j], scale[j], one), one)
            c, hb, hp, st = cbuf[i], hbuf[i], hprev[i, t], states[i, t]
            for j in range(H):
                c[j] = a[H + j] * c[j] + a[j] * a[2 * H + j]
            for j in range(H):
                uc[j] = -(two * abs(c[j]))
            expm1_parts(uc, qc, kc)
            for j in range(H):
                a[4 * H + j] = tanh_from_expm1(c[j], expm1_from_parts(qc[j], sc[j], one), two)
            for j in range(H):
                hp[j] = hb[j]
            for j in range(H):
                hb[j] = a[3 * H + j] * a[4 * H + j]
            for j in range(H):
                st[2 * j] = c[j]
                st[2 * j + 1] = hb[j]


@kernel()
def _lstm_backward(states, acts, c0, W, dstates, dxi, dc, dh, dzbuf):
    """BPTT; dc, dh (B, H) enter as 0 and leave as the gradient of (c0, h0)."""
    B, T, H2 = states.shape
    H = H2 // 2
    one = states.dtype.type(1.0)
    for t in range(T - 1, -1, -1):
        for i in range(B):
            a, d_s, dx, dz = acts[i, t], dstates[i, t], dxi[i, t], dzbuf[i]
            for j in range(H):
                ig, fg, gg, og, tc = a[j], a[H + j], a[2 * H + j], a[3 * H + j], a[4 * H + j]
                cp = c0[i, j] if t == 0 else states[i, t - 1, 2 * j]
                dnh = dh[i, j] + d_s[2 * j + 1]
                dc2 = (dc[i, j] + d_s[2 * j]) + dnh * og * (one - tc * tc)
                dz[j] = dc2 * gg * ig * (one - ig)
                dz[H + j] = dc2 * cp * fg * (one - fg)
                dz[2 * H + j] = dc2 * ig * (one - gg * gg)
                dz[3 * H + j] = dnh * tc * og * (one - og)
                dc[i, j] = dc2 * fg
            for j in range(4 * H):
                dx[j] = dz[j]
        np.dot(dzbuf, W, dh)


def lstm_fwd(xi, state0, W, b, cell):
    xi = contiguous(xi)
    B, T, H4 = xi.shape
    H = H4 // 4
    c0, h0 = contiguous(state0[:, 0::2]), contiguous(state0[:, 1::2])
    states = np.empty((B, T, 2 * H), xi.dtype)
    acts, hprev = np.empty((B, T, 5 * H), xi.dtype), np.empty((B, T, H), xi.dtype)
    _lstm_forward(xi, c0, h0, contiguous(W.T), contiguous(b), states, acts, hprev,
                  np.empty((B, H), xi.dtype), np.empty((B, H), xi.dtype), np.empty((B, H4), xi.dtype),
                  *_scratch(H4, xi.dtype))
    return states, (states, acts, hprev, c0, W)


def lstm_bwd(res, dstates, cell):
    states, acts, hprev, c0, W = res
    B, T, H2 = states.shape
    H = H2 // 2
    dxi = np.empty((B, T, 4 * H), states.dtype)
    dc, dh = np.zeros((B, H), states.dtype), np.zeros((B, H), states.dtype)
    _lstm_backward(states, acts, c0, contiguous(W), dstates, dxi, dc, dh, np.empty((B, 4 * H), states.dtype))
    dstate0 = np.stack([dc, dh], axis=-1).reshape(B, H2)
    dW, db = _weight_grad(dxi, hprev)
    return dxi, dstate0, dW, db


# -- GRU (gates r, z, n; torch.nn.GRU) ------------------------------------------------------------

@kernel()
def _gru_forward(xi, h0, WT, bias, states, acts, hbuf, zbuf, u, q, kbits):
    """acts (B, T, 4H) = r, z, n, (W_hn h + b_hn) per step; hbuf (B, H); zbuf (B, 3H); u, q, kbits (B, 2H)."""
    B, T, H3 = xi.shape
    H = H3 // 3
    one, two = xi.dtype.type(1.0), xi.dtype.type(2.0)
    uf, qf, kf = u.reshape(B * 2 * H), q.reshape(B * 2 * H), kbits.reshape(B * 2 * H)
    scale, scale_f = kbits.view(xi.dtype), kf.view(xi.dtype)
    hbuf[:, :] = h0
    for t in range(T):
        np.dot(hbuf, WT, zbuf)
        for i in range(B):
            for j in range(H3):
                zbuf[i, j] = zbuf[i, j] + bias[j]
            for j in range(2 * H):
                zbuf[i, j] = xi[i, t, j] + zbuf[i, j]
                u[i, j] = -abs(zbuf[i, j])
        expm1_parts(uf, qf, kf)
        for i in range(B):
            for j in range(2 * H):
                acts[i, t, j] = sigmoid_from_exp(zbuf[i, j], exp_from_parts(q[i, j], scale[i, j], one), one)
            for j in range(H):
                acts[i, t, 3 * H + j] = zbuf[i, 2 * H + j]
                zbuf[i, 2 * H + j] = xi[i, t, 2 * H + j] + acts[i, t, j] * zbuf[i, 2 * H + j]
                uf[i * H + j] = -(two * abs(zbuf[i, 2 * H + j]))  # packed (B, H) at the front
        expm1_parts(uf[:B * H], qf[:B * H], kf[:B * H])
        for i in range(B):
            for j in range(H):
                acts[i, t, 2 * H + j] = tanh_from_expm1(zbuf[i, 2 * H + j],
                                                        expm1_from_parts(qf[i * H + j], scale_f[i * H + j], one), two)
            for j in range(H):
                zg = acts[i, t, H + j]
                hbuf[i, j] = (one - zg) * acts[i, t, 2 * H + j] + zg * hbuf[i, j]
                states[i, t, j] = hbuf[i, j]


@kernel()
def _gru_backward(states, acts, h0, W, dstates, dxi, dgh, dh, dbuf, mbuf):
    """BPTT; dgh (B, T, 3H) = gradient of h W^T + b_hh per step; dh (B, H) enters as 0, leaves as dh0."""
    B, T, H = states.shape
    one = states.dtype.type(1.0)
    for t in range(T - 1, -1, -1):
        for i in range(B):
            a, dx, dg = acts[i, t], dxi[i, t], dgh[i, t]
            for j in range(H):
                r, z, n, ghn = a[j], a[H + j], a[2 * H + j], a[3 * H + j]
                hp = h0[i, j] if t == 0 else states[i, t - 1, j]
                d = dh[i, j] + dstates[i, t, j]
                dkn = d * (one - z) * (one - n * n)
                dkz = d * (hp - n) * z * (one - z)
                dkr = dkn * ghn * r * (one - r)
                dx[j], dx[H + j], dx[2 * H + j] = dkr, dkz, dkn
                dbuf[i, j], dbuf[i, H + j], dbuf[i, 2 * H + j] = dkr, dkz, dkn * r
                dh[i, j] = d * z  # the direct path; the matrix path is added below
            for j in range(3 * H):
                dg[j] = dbuf[i, j]
        np.dot(dbuf, W, mbuf)
        for i in range(B):
            for j in range(H):
                dh[i, j] = dh[i, j] + mbuf[i, j]


def gru_fwd(xi, h0, W, b, cell):
    xi, h0 = contiguous(xi), contiguous(h0)
    B, T, H3 = xi.shape
    H = H3 // 3
    states, acts = np.empty((B, T, H), xi.dtype), np.empty((B, T, 4 * H), xi.dtype)
    _gru_forward(xi, h0, contiguous(W.T), contiguous(b), states, acts,
                 np.empty((B, H), xi.dtype), np.empty((B, H3), xi.dtype), *_scratch((B, 2 * H), xi.dtype))
    return states, (states, acts, h0, W)


def gru_bwd(res, dstates, cell):
    states, acts, h0, W = res
    B, T, H = states.shape
    dxi, dgh = np.empty((B, T, 3 * H), states.dtype), np.empty((B, T, 3 * H), states.dtype)
    dh = np.zeros((B, H), states.dtype)
    _gru_backward(states, acts, h0, contiguous(W), dstates, dxi, dgh, dh, np.empty((B, 3 * H), states.dtype),
                  np.empty((B, H), states.dtype))
    dW, db = _weight_grad(dgh, _previous(states, h0))
    return dxi, dh, dW, db


# -- LeakyRNN: h' = φ((1 − 1/τ) h + (h W0^T + xi) / τ), W0 = W_hh with a zero diagonal --------------

@kernel()
def _leaky_forward(xi, h0, W0T, inv, tanh, slope, states, us, hbuf, zbuf, u, q, kbits):
    """us (B, T, H) keeps u = h W0^T + xi per step (the backward needs it); zbuf, u, q, kbits: (B, H)."""
    B, T, H = xi.shape
    zero, one, two = xi.dtype.type(0.0), xi.dtype.type(1.0), xi.dtype.type(2.0)
    uf, qf, kf = u.reshape(B * H), q.reshape(B * H), kbits.reshape(B * H)
    scale = kbits.view(xi.dtype)
    hbuf[:, :] = h0
    for t in range(T):
        np.dot(hbuf, W0T, zbuf)
        for i in range(B):
            for j in range(H):
                uu = zbuf[i, j] + xi[i, t, j]
                us[i, t, j] = uu
                zbuf[i, j] = (one - inv[j]) * hbuf[i, j] + uu * inv[j]  # the pre-activation
        if tanh:
            for i in range(B):
                for j in range(H):
                    u[i, j] = -(two * abs(zbuf[i, j]))
            expm1_parts(uf, qf, kf)
            for i in range(B):
                for j in range(H):
                    hbuf[i, j] = tanh_from_expm1(zbuf[i, j], expm1_from_parts(q[i, j], scale[i, j], one), two)
        else:
            for i in range(B):
                for j in range(H):
                    hbuf[i, j] = zbuf[i, j] if zbuf[i, j] > zero else slope * zbuf[i, j]
        for i in range(B):
            for j in range(H):
                states[i, t, j] = hbuf[i, j]


@kernel()
def _leaky_backward(states, us, h0, W0, inv, tanh, slope, dstates, dus, dtau_sum, dh, dbuf, mbuf):
    """dus (B, T, H) = gradient of u per step; dtau_sum (H,) += Σ dpre (u − h); dh enters 0, leaves dh0."""
    B, T, H = states.shape
    zero, one = states.dtype.type(0.0), states.dtype.type(1.0)
    for t in range(T - 1, -1, -1):
        for i in range(B):
            for j in range(H):
                hp = h0[i, j] if t == 0 else states[i, t - 1, j]
                out, uu = states[i, t, j], us[i, t, j]
                d = dh[i, j] + dstates[i, t, j]
                if tanh:
                    dpre = d * (one - out * out)
                else:
                    pre = (one - inv[j]) * hp + uu * inv[j]
                    dpre = d * (one if pre > zero else slope)
                dbuf[i, j] = dpre * inv[j]
                dus[i, t, j] = dbuf[i, j]
                dh[i, j] = dpre * (one - inv[j])
                dtau_sum[j] += dpre * (uu - hp)
        np.dot(dbuf, W0, mbuf)
        for i in range(B):
            for j in range(H):
                dh[i, j] = dh[i, j] + mbuf[i, j]


def leaky_fwd(xi, h0, W, tau, cell):
    xi, h0 = contiguous(xi), contiguous(h0)
    B, T, H = xi.shape
    inv = 1 / np.maximum(tau, 1)
    W0 = W * (1 - np.eye(H, dtype=W.dtype))
    slope = xi.dtype.type(cell.slope)
    states, us = np.empty_like(xi), np.empty_like(xi)
    _leaky_forward(xi, h0, contiguous(W0.T), inv, cell.nonlinearity == "tanh", slope, states, us,
                   np.empty((B, H), xi.dtype), np.empty((B, H), xi.dtype), *_scratch((B, H), xi.dtype))
    return states, (states, us, h0, W0, tau, inv, slope)


def leaky_bwd(res, dstates, cell):
    states, us, h0, W0, tau, inv, slope = res
    B, T, H = states.shape
    dus, dtau_sum = np.empty_like(states), np.zeros(H, states.dtype)
    dh = np.zeros((B, H), states.dtype)
    _leaky_backward(states, us, h0, W0, inv, cell.nonlinearity == "tanh", slope, dstates, dus, dtau_sum, dh,
                    np.empty((B, H), states.dtype), np.empty((B, H), states.dtype))
    dW = _weight_grad(dus, _previous(states, h0))[0] * (1 - np.eye(H, dtype=states.dtype))
    dtau = -dtau_sum * inv * inv * (tau >= 1)
    return dus, dh, dW, dtau


# -- diagonal cells (ParaRNN's DiagGRU and CIFG-LSTM): no matrix product, so every neuron is an
#    independent scan — tasks over B × blocks of neurons, sequential in time, like the scans --------

@kernel(parallel=True)
def _diaggru_forward(xi, h0, a, blk, states, acts, hbuf, u, q, kbits):
    """acts (B, T, 3H) = r, z, n.  Per task: hbuf (blk,), u, q, kbits (2 blk,) rows."""
    B, T, H3 = xi.shape
    H = H3 // 3
    one, two = xi.dtype.type(1.0), xi.dtype.type(2.0)
    nblk = (H + blk - 1) // blk
    for task in prange(B * nblk):
        i, j0 = task // nblk, (task % nblk) * blk
        n = min(H, j0 + blk) - j0
        hb, uu, qq, kk = hbuf[task], u[task], q[task], kbits[task]
        u1, q1, k1 = uu[:blk], qq[:blk], kk[:blk]
        sc = kk.view(xi.dtype)
        for jj in range(n):
            hb[jj] = h0[i, j0 + jj]
        for t in range(T):
            for jj in range(n):
                j = j0 + jj
                acts[i, t, j] = xi[i, t, j] + a[j] * hb[jj]
                acts[i, t, H + j] = xi[i, t, H + j] + a[H + j] * hb[jj]
                uu[jj], uu[blk + jj] = -abs(acts[i, t, j]), -abs(acts[i, t, H + j])
            expm1_parts(uu, qq, kk)
            for jj in range(n):
                j = j0 + jj
                r = sigmoid_from_exp(acts[i, t, j], exp_from_parts(qq[jj], sc[jj], one), one)
                acts[i, t, j] = r
                acts[i, t, H + j] = sigmoid_from_exp(acts[i, t, H + j],
                                                     exp_from_parts(qq[blk + jj], sc[blk + jj], one), one)
                acts[i, t, 2 * H + j] = xi[i, t, 2 * H + j] + a[2 * H + j] * r * hb[jj]
                u1[jj] = -(two * abs(acts[i, t, 2 * H + j]))
            expm1_parts(u1, q1, k1)
            for jj in range(n):
                j = j0 + jj
                nn = tanh_from_expm1(acts[i, t, 2 * H + j], expm1_from_parts(q1[jj], sc[jj], one), two)
                acts[i, t, 2 * H + j] = nn
                z = acts[i, t, H + j]
                hb[jj] = (one - z) * hb[jj] + z * nn
                states[i, t, j] = hb[jj]


@kernel(parallel=True)
def _diaggru_backward(states, acts, h0, a, dstates, blk, dxi, da_part, dh0):
    """da_part (B, 3H): this row's share of the gradient of a (summed over B by the caller)."""
    B, T, H = states.shape
    one, zero = states.dtype.type(1.0), states.dtype.type(0.0)
    nblk = (H + blk - 1) // blk
    for task in prange(B * nblk):
        i, j0 = task // nblk, (task % nblk) * blk
        for j in range(j0, min(H, j0 + blk)):
            ar, az, an = a[j], a[H + j], a[2 * H + j]
            dh, sr, sz, sn = zero, zero, zero, zero
            for t in range(T - 1, -1, -1):
                r, z, n = acts[i, t, j], acts[i, t, H + j], acts[i, t, 2 * H + j]
                hp = h0[i, j] if t == 0 else states[i, t - 1, j]
                d = dh + dstates[i, t, j]
                dkn = d * z * (one - n * n)
                dkz = d * (n - hp) * z * (one - z)
                dkr = dkn * an * hp * r * (one - r)
                dh = d * (one - z) + dkn * an * r + dkz * az + dkr * ar
                dxi[i, t, j], dxi[i, t, H + j], dxi[i, t, 2 * H + j] = dkr, dkz, dkn
                sr += dkr * hp
                sz += dkz * hp
                sn += dkn * r * hp
            da_part[i, j], da_part[i, H + j], da_part[i, 2 * H + j] = sr, sz, sn
            dh0[i, j] = dh


def _task_scratch(B, H, blk, width, dtype):
    """Per-task rows for the diagonal kernels: hbuf (tasks, blk) and u, q, kbits (tasks, width·blk)."""
    tasks = B * (-(-H // blk))
    u, q, kbits = _scratch((tasks, width * blk), dtype)
    u[:], q[:], kbits[:] = 0, 0, 0  # lanes past a short last block are computed too: keep them finite
    return np.empty((tasks, blk), dtype), u, q, kbits


def diaggru_fwd(xi, h0, a, cell):
    xi, h0, a = contiguous(xi), contiguous(h0), contiguous(a)
    B, T, H3 = xi.shape
    H = H3 // 3
    blk = split_columns(B, H, 16)
    states, acts = np.empty((B, T, H), xi.dtype), np.empty((B, T, 3 * H), xi.dtype)
    _diaggru_forward(xi, h0, a, blk, states, acts, *_task_scratch(B, H, blk, 2, xi.dtype))
    return states, (states, acts, h0, a)


def diaggru_bwd(res, dstates, cell):
    states, acts, h0, a = res
    B, T, H = states.shape
    dxi, da_part, dh0 = np.empty((B, T, 3 * H), states.dtype), np.empty((B, 3 * H), states.dtype), np.empty_like(h0)
    _diaggru_backward(states, acts, h0, a, dstates, split_columns(B, H, 16), dxi, da_part, dh0)
    return dxi, dh0, da_part.sum(axis=0)


@kernel(parallel=True)
def _cifg_forward(xi, c0, h0, a, peep, blk, states, acts, cbuf, hbuf, u, q, kbits):
    """State [c, h] interleaved; acts (B, T, 4H) = f, g, o, tanh(c').  u, q, kbits rows: (2 blk,)."""
    B, T, H3 = xi.shape
    H = H3 // 3
    one, two = xi.dtype.type(1.0), xi.dtype.type(2.0)
    nblk = (H + blk - 1) // blk
    for task in prange(B * nblk):
        i, j0 = task // nblk, (task % nblk) * blk
        n = min(H, j0 + blk) - j0
        cb, hb, uu, qq, kk = cbuf[task], hbuf[task], u[task], q[task], kbits[task]
        sc = kk.view(xi.dtype)
        for jj in range(n):
            cb[jj], hb[jj] = c0[i, j0 + jj], h0[i, j0 + jj]
        for t in range(T):
            for jj in range(n):  # f and g from the old state
                j = j0 + jj
                acts[i, t, j] = (xi[i, t, j] + a[j] * hb[jj]) + peep[j] * cb[jj]
                acts[i, t, H + j] = xi[i, t, H + j] + a[H + j] * hb[jj]
                uu[jj], uu[blk + jj] = -abs(acts[i, t, j]), -(two * abs(acts[i, t, H + j]))
            expm1_parts(uu, qq, kk)
            for jj in range(n):  # c', then o (which peeks at c') and tanh(c')
                j = j0 + jj
                f = sigmoid_from_exp(acts[i, t, j], exp_from_parts(qq[jj], sc[jj], one), one)
                g = tanh_from_expm1(acts[i, t, H + j], expm1_from_parts(qq[blk + jj], sc[blk + jj], one), two)
                acts[i, t, j], acts[i, t, H + j] = f, g
                cb[jj] = f * cb[jj] + (one - f) * g
                acts[i, t, 2 * H + j] = (xi[i, t, 2 * H + j] + a[2 * H + j] * hb[jj]) + peep[H + j] * cb[jj]
                uu[jj], uu[blk + jj] = -abs(acts[i, t, 2 * H + j]), -(two * abs(cb[jj]))
            expm1_parts(uu, qq, kk)
            for jj in range(n):
                j = j0 + jj
                o = sigmoid_from_exp(acts[i, t, 2 * H + j], exp_from_parts(qq[jj], sc[jj], one), one)
                tc = tanh_from_expm1(cb[jj], expm1_from_parts(qq[blk + jj], sc[blk + jj], one), two)
                acts[i, t, 2 * H + j], acts[i, t, 3 * H + j] = o, tc
                hb[jj] = o * tc
                states[i, t, 2 * j], states[i, t, 2 * j + 1] = cb[jj], hb[jj]


@kernel(parallel=True)
def _cifg_backward(states, acts, c0, h0, a, peep, dstates, blk, dxi, dpart, dstate0):
    """dpart (B, 5H): this row's share of [d a_f, d a_g, d a_o, d p_f, d p_o]."""
    B, T, H2 = states.shape
    H = H2 // 2
    one, zero = states.dtype.type(1.0), states.dtype.type(0.0)
    nblk = (H + blk - 1) // blk
    for task in prange(B * nblk):
        i, j0 = task // nblk, (task % nblk) * blk
        for j in range(j0, min(H, j0 + blk)):
            af, ag, ao, pf, po = a[j], a[H + j], a[2 * H + j], peep[j], peep[H + j]
            dcn, dhn = zero, zero
            s_af, s_ag, s_ao, s_pf, s_po = zero, zero, zero, zero, zero
            for t in range(T - 1, -1, -1):
                f, g, o, tc = acts[i, t, j], acts[i, t, H + j], acts[i, t, 2 * H + j], acts[i, t, 3 * H + j]
                c = c0[i, j] if t == 0 else states[i, t - 1, 2 * j]
                h = h0[i, j] if t == 0 else states[i, t - 1, 2 * j + 1]
                c2 = states[i, t, 2 * j]
                dh2 = dhn + dstates[i, t, 2 * j + 1]
                dko = dh2 * tc * o * (one - o)
                dc2 = (dcn + dstates[i, t, 2 * j]) + dh2 * o * (one - tc * tc) + dko * po
                dkf = dc2 * (c - g) * f * (one - f)
                dkg = dc2 * (one - f) * (one - g * g)
                dcn = dc2 * f + dkf * pf
                dhn = dkf * af + dkg * ag + dko * ao
                dxi[i, t, j], dxi[i, t, H + j], dxi[i, t, 2 * H + j] = dkf, dkg, dko
                s_af += dkf * h
                s_ag += dkg * h
                s_ao += dko * h
                s_pf += dkf * c
                s_po += dko * c2
            dpart[i, j], dpart[i, H + j], dpart[i, 2 * H + j] = s_af, s_ag, s_ao
            dpart[i, 3 * H + j], dpart[i, 4 * H + j] = s_pf, s_po
            dstate0[i, 2 * j], dstate0[i, 2 * j + 1] = dcn, dhn


def cifg_fwd(xi, state0, a, peep, cell):
    xi, a, peep = contiguous(xi), contiguous(a), contiguous(peep)
    B, T, H3 = xi.shape
    H = H3 // 3
    c0, h0 = contiguous(state0[:, 0::2]), contiguous(state0[:, 1::2])
    blk = split_columns(B, H, 16)
    hbuf, u, q, kbits = _task_scratch(B, H, blk, 2, xi.dtype)
    states, acts = np.empty((B, T, 2 * H), xi.dtype), np.empty((B, T, 4 * H), xi.dtype)
    _cifg_forward(xi, c0, h0, a, peep, blk, states, acts, np.empty_like(hbuf), hbuf, u, q, kbits)
    return states, (states, acts, c0, h0, a, peep)


def cifg_bwd(res, dstates, cell):
    states, acts, c0, h0, a, peep = res
    B, T, H2 = states.shape
    H = H2 // 2
    dxi, dpart = np.empty((B, T, 3 * H), states.dtype), np.empty((B, 5 * H), states.dtype)
    dstate0 = np.empty((B, H2), states.dtype)
    _cifg_backward(states, acts, c0, h0, a, peep, dstates, split_columns(B, H, 16), dxi, dpart, dstate0)
    d = dpart.sum(axis=0)
    return dxi, dstate0, d[:3 * H], d[3 * H:]


# -- dispatch: the fused loop for the cell classes written here, the reference otherwise --------

def _replacement(fused_fwd, fused_bwd, module: str, qualname: str):
    def fwd(xp, xi, state0, *rec, cell):
        cls = type(cell)
        if cls.__module__ != module or cls.__qualname__ != qualname or not supported_dtype(xi, state0, *rec):
            from ...cells.base import _recurrence_fwd  # the reference (cells sit above backends)
            out, res = _recurrence_fwd(xp, xi, state0, *rec, cell=cell)
            return out, ("reference", res)
        out, res = fused_fwd(xi, state0, *rec, cell)
        return out, ("numba", res)

    def bwd(xp, res, dstates, cell):
        tag, res = res
        if tag == "reference":
            from ...cells.base import _recurrence_bwd
            return _recurrence_bwd(xp, res, dstates, cell=cell)
        return fused_bwd(res, as_dtype(dstates, res[0].dtype), cell)

    return fwd, bwd


PRIMITIVES = {
    "elman_recurrence": _replacement(elman_fwd, elman_bwd, "seqcore.cells.elman", "Elman"),
    "lstm_recurrence": _replacement(lstm_fwd, lstm_bwd, "seqcore.cells.lstm", "LSTM"),
    "gru_recurrence": _replacement(gru_fwd, gru_bwd, "seqcore.cells.gru", "GRU"),
    "leaky_recurrence": _replacement(leaky_fwd, leaky_bwd, "seqcore.cells.leaky", "LeakyRNN"),
    "diaggru_recurrence": _replacement(diaggru_fwd, diaggru_bwd, "seqcore.cells.pararnn", "DiagGRU"),
    "cifg-lstm_recurrence": _replacement(cifg_fwd, cifg_bwd, "seqcore.cells.pararnn", "CIFGLSTM"),
}
