"""Fused cell sequences: the ``<name>_recurrence`` primitives (forward and exact BPTT) and the
fused step / Jacobian assembly that the Newton scan runs on every iteration.

Each replacement has the reference's signature (``seqcore/cells/base.py``):
``fwd(xp, xi, state0, *recurrent params, cell=cell) -> (states (B, T, S), residuals)`` and
``bwd(xp, residuals, dstates, cell=cell) -> (dxi, dstate0, *dparams)``.

* Dense cells (Elman, LSTM, GRU, LeakyRNN): one compiled loop over time per direction.  Per
  step the recurrent product is one ``np.dot`` on contiguous 2-D buffers (``(B, H) × (H, kH)``,
  BLAS through SciPy) and the gate arithmetic runs row by row in simple loops that LLVM
  vectorizes, with ``ops.expm1_parts`` as the vectorized exponential (libm's scalar
  ``tanhf`` would dominate).  The weight gradient is not accumulated per step: the loop keeps
  every step's pre-activation gradient and one ``(kH, B·T) × (B·T, H)`` product after it
  gives ``dW_hh``.
* Diagonal cells (DiagGRU, CIFG-LSTM): no matrix product, so every neuron is an independent
  scan: tasks over (batch row, block of neurons), time outside, neurons inside.
* ``newton_recurrence``: the reference Newton engine, run on a :class:`FusedSteps` view of
  the cell whose ``step_fwd`` / ``step_jacobian`` over all B·T steps are single kernels.

A cell of another class (a subclass, say), other dtypes or mixed dtypes run the reference.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .ops import (as_dtype, contiguous, exp_from_parts, expm1_from_parts, expm1_parts, kernel, num_threads,
                  sigmoid_from_exp, split_columns, supported_dtype, tanh_from_expm1)

__all__ = ["PRIMITIVES", "FusedSteps", "PARALLEL_CELLS"]

# The diagonal cells and the Newton steps loop over independent (row, block of neurons)
# tasks with prange; they are compiled serial because a parallel kernel costs ~2 s more to
# compile per dtype (the cold test suite stays near a minute on two cores).  True makes
# them parallel over the tasks.
PARALLEL_CELLS = False


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


@kernel()
def _weight_grad_kernel(d2, h2, dW, db):
    """dW = d2^T h2 (one GEMM through the same BLAS as the step products), db = column sums of d2."""
    np.dot(d2.T, h2, dW)
    acc = np.zeros(d2.shape[1], np.float64)  # B·T terms: float64 partial sums keep float32 exact enough
    for m in range(d2.shape[0]):
        for j in range(d2.shape[1]):
            acc[j] += d2[m, j]
    for j in range(d2.shape[1]):
        db[j] = acc[j]


def _weight_grad(dpre, hprev):
    """Σ over (b, t) of dpre^T h_{t-1}: ``(B, T, kH), (B, T, H) -> (kH, H)``; and the bias gradient.

    Computed in a kernel so that every matrix product of this backend goes to one BLAS (and
    one thread pool): NumPy's and SciPy's BLAS are separate libraries whose idle threads spin.
    """
    n = dpre.shape[0] * dpre.shape[1]
    d2, h2 = dpre.reshape(n, dpre.shape[2]), hprev.reshape(n, hprev.shape[2])
    dW, db = np.empty((d2.shape[1], h2.shape[1]), dpre.dtype), np.empty(d2.shape[1], dpre.dtype)
    _weight_grad_kernel(d2, h2, dW, db)
    return dW, db


def _previous(states, first):
    """``h_{t-1}`` at every t: ``(B, T, H)`` from the states and ``first = h0``."""
    return np.concatenate([first[:, None, :], states[:, :-1]], axis=1)


def _scratch(shape, dtype):
    """Buffers of the vectorized exp: argument, polynomial part, exponent bits (an int of the same width)."""
    ints = np.int32 if dtype == np.float32 else np.int64
    return np.empty(shape, dtype), np.empty(shape, dtype), np.empty(shape, ints)


def elman_fwd(xi, h0, W, b, cell):
    """Elman over time: ``xi (B, T, H), h0 (B, H), W_hh (H, H), b_hh (H,) -> states (B, T, H)``."""
    xi, h0 = contiguous(xi), contiguous(h0)
    B, T, H = xi.shape
    states = np.empty_like(xi)
    _elman_forward(xi, h0, contiguous(W.T), contiguous(b), cell.nonlinearity == "relu", states,
                   np.empty((B, H), xi.dtype), np.empty((B, H), xi.dtype), *_scratch((B, H), xi.dtype))
    return states, (states, h0, W)


def elman_bwd(res, dstates, cell):
    """BPTT of :func:`elman_fwd`: ``(dxi, dh0, dW_hh, db_hh)``."""
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
    """LSTM over time: ``xi (B, T, 4H), state0 (B, 2H) [c, h] interleaved -> states (B, T, 2H)``."""
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
    """BPTT of :func:`lstm_fwd`: ``(dxi, dstate0, dW_hh, db_hh)``."""
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
    """acts (B, T, 4H) = r, z, n, (W_hn h + b_hn) per step; hbuf (B, H); zbuf (B, 3H); u, q, kbits (2H,).

    Per step: one GEMM, then row by row simple vectorized loops (as the LSTM forward).
    """
    B, T, H3 = xi.shape
    H = H3 // 3
    one, two = xi.dtype.type(1.0), xi.dtype.type(2.0)
    scale = kbits.view(xi.dtype)
    un, qn, kn, sn = u[:H], q[:H], kbits[:H], scale[:H]
    hbuf[:, :] = h0
    for t in range(T):
        np.dot(hbuf, WT, zbuf)
        for i in range(B):
            z, x, a, hb, st = zbuf[i], xi[i, t], acts[i, t], hbuf[i], states[i, t]
            for j in range(H3):
                z[j] = z[j] + bias[j]  # h W^T + b_hh, as the reference groups it
            for j in range(2 * H):
                z[j] = x[j] + z[j]
            for j in range(2 * H):
                u[j] = -abs(z[j])
            expm1_parts(u, q, kbits)
            for j in range(2 * H):
                a[j] = sigmoid_from_exp(z[j], exp_from_parts(q[j], scale[j], one), one)
            for j in range(H):
                a[3 * H + j] = z[2 * H + j]
            for j in range(H):
                z[2 * H + j] = x[2 * H + j] + a[j] * z[2 * H + j]
            for j in range(H):
                un[j] = -(two * abs(z[2 * H + j]))
            expm1_parts(un, qn, kn)
            for j in range(H):
                a[2 * H + j] = tanh_from_expm1(z[2 * H + j], expm1_from_parts(qn[j], sn[j], one), two)
            for j in range(H):
                hb[j] = (one - a[H + j]) * a[2 * H + j] + a[H + j] * hb[j]
            for j in range(H):
                st[j] = hb[j]


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
    """GRU over time: ``xi (B, T, 3H), h0 (B, H), W_hh (3H, H), b_hh (3H,) -> states (B, T, H)``."""
    xi, h0 = contiguous(xi), contiguous(h0)
    B, T, H3 = xi.shape
    H = H3 // 3
    states, acts = np.empty((B, T, H), xi.dtype), np.empty((B, T, 4 * H), xi.dtype)
    _gru_forward(xi, h0, contiguous(W.T), contiguous(b), states, acts,
                 np.empty((B, H), xi.dtype), np.empty((B, H3), xi.dtype), *_scratch(2 * H, xi.dtype))
    return states, (states, acts, h0, W)


def gru_bwd(res, dstates, cell):
    """BPTT of :func:`gru_fwd`: ``(dxi, dh0, dW_hh, db_hh)``."""
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
    """LeakyRNN over time: ``xi (B, T, H), h0 (B, H), W_hh (H, H), tau (H,) -> states (B, T, H)``."""
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
    """BPTT of :func:`leaky_fwd`: ``(dxi, dh0, dW_hh, dtau)`` (zero diagonal / clamp as the reference)."""
    states, us, h0, W0, tau, inv, slope = res
    B, T, H = states.shape
    dus, dtau_sum = np.empty_like(states), np.zeros(H, np.float64)  # a sum of B·T terms
    dh = np.zeros((B, H), states.dtype)
    _leaky_backward(states, us, h0, W0, inv, cell.nonlinearity == "tanh", slope, dstates, dus, dtau_sum, dh,
                    np.empty((B, H), states.dtype), np.empty((B, H), states.dtype))
    dW = _weight_grad(dus, _previous(states, h0))[0] * (1 - np.eye(H, dtype=states.dtype))
    dtau = -dtau_sum.astype(states.dtype) * inv * inv * (tau >= 1)
    return dus, dh, dW, dtau


# -- diagonal cells (ParaRNN's DiagGRU and CIFG-LSTM): no matrix product, so every neuron is an
#    independent scan — tasks over B × blocks of neurons, sequential in time, like the scans --------

@kernel(parallel=PARALLEL_CELLS)
def _diaggru_forward(xi, h0, a, blk, states, acts, hbuf, u, q, kbits):
    """acts (B, T, 3H) = r, z, n.  Per task: hbuf (blk,), u, q, kbits (2 blk,) rows.

    Row form: every step works on contiguous row segments with unit-stride loops (vectorized),
    the state of the task's neurons in a local row.
    """
    B, T, H3 = xi.shape
    H = H3 // 3
    one, two = xi.dtype.type(1.0), xi.dtype.type(2.0)
    nblk = (H + blk - 1) // blk
    for task in prange(B * nblk):
        i, j0 = task // nblk, (task % nblk) * blk
        j1 = min(H, j0 + blk)
        w = j1 - j0
        hb, uu, qq, kk = hbuf[task, :w], u[task, :2 * w], q[task, :2 * w], kbits[task, :2 * w]
        u1, q1, k1 = u[task, :w], q[task, :w], kbits[task, :w]
        sc = kbits[task].view(xi.dtype)
        ar, az, an = a[j0:j1], a[H + j0:H + j1], a[2 * H + j0:2 * H + j1]
        for jj in range(w):
            hb[jj] = h0[i, j0 + jj]
        for t in range(T):
            xr, xz, xn = xi[i, t, j0:j1], xi[i, t, H + j0:H + j1], xi[i, t, 2 * H + j0:2 * H + j1]
            r, z, n = acts[i, t, j0:j1], acts[i, t, H + j0:H + j1], acts[i, t, 2 * H + j0:2 * H + j1]
            for jj in range(w):
                r[jj] = xr[jj] + ar[jj] * hb[jj]  # pre-activations first, gates below
                z[jj] = xz[jj] + az[jj] * hb[jj]
                uu[jj], uu[w + jj] = -abs(r[jj]), -abs(z[jj])
            expm1_parts(uu, qq, kk)
            for jj in range(w):
                r[jj] = sigmoid_from_exp(r[jj], exp_from_parts(qq[jj], sc[jj], one), one)
                z[jj] = sigmoid_from_exp(z[jj], exp_from_parts(qq[w + jj], sc[w + jj], one), one)
                n[jj] = xn[jj] + an[jj] * r[jj] * hb[jj]
                u1[jj] = -(two * abs(n[jj]))
            expm1_parts(u1, q1, k1)
            st = states[i, t, j0:j1]
            for jj in range(w):
                n[jj] = tanh_from_expm1(n[jj], expm1_from_parts(q1[jj], sc[jj], one), two)
                hb[jj] = (one - z[jj]) * hb[jj] + z[jj] * n[jj]
                st[jj] = hb[jj]


@kernel(parallel=PARALLEL_CELLS)
def _diaggru_backward(states, acts, h0, a, dstates, blk, dxi, da_part, dh0):
    """da_part (B, 3H): this row's share of the gradient of a (summed over B by the caller).

    Time outside, neurons inside (independent chains side by side, so the loop vectorizes).
    """
    B, T, H = states.shape
    one = states.dtype.type(1.0)
    nblk = (H + blk - 1) // blk
    for task in prange(B * nblk):
        i, j0 = task // nblk, (task % nblk) * blk
        j1 = min(H, j0 + blk)
        w = j1 - j0
        ar, az, an = a[j0:j1], a[H + j0:H + j1], a[2 * H + j0:2 * H + j1]
        dh, sr, sz, sn = np.zeros(w, a.dtype), np.zeros(w, a.dtype), np.zeros(w, a.dtype), np.zeros(w, a.dtype)
        for t in range(T - 1, -1, -1):
            r, z, n = acts[i, t, j0:j1], acts[i, t, H + j0:H + j1], acts[i, t, 2 * H + j0:2 * H + j1]
            hp = states[i, t - 1, j0:j1] if t > 0 else h0[i, j0:j1]
            ds = dstates[i, t, j0:j1]
            dr, dz, dn = dxi[i, t, j0:j1], dxi[i, t, H + j0:H + j1], dxi[i, t, 2 * H + j0:2 * H + j1]
            for jj in range(w):
                d = dh[jj] + ds[jj]
                dkn = d * z[jj] * (one - n[jj] * n[jj])
                dkz = d * (n[jj] - hp[jj]) * z[jj] * (one - z[jj])
                dkr = dkn * an[jj] * hp[jj] * r[jj] * (one - r[jj])
                dh[jj] = d * (one - z[jj]) + dkn * an[jj] * r[jj] + dkz * az[jj] + dkr * ar[jj]
                dr[jj], dz[jj], dn[jj] = dkr, dkz, dkn
                sr[jj] += dkr * hp[jj]
                sz[jj] += dkz * hp[jj]
                sn[jj] += dkn * r[jj] * hp[jj]
        for jj in range(w):
            da_part[i, j0 + jj], da_part[i, H + j0 + jj], da_part[i, 2 * H + j0 + jj] = sr[jj], sz[jj], sn[jj]
            dh0[i, j0 + jj] = dh[jj]


def _task_scratch(B, H, blk, width, dtype):
    """Per-task rows for the diagonal kernels: hbuf (tasks, blk) and u, q, kbits (tasks, width·blk)."""
    tasks = B * (-(-H // blk))
    u, q, kbits = _scratch((tasks, width * blk), dtype)
    u[:], q[:], kbits[:] = 0, 0, 0  # lanes past a short last block are computed too: keep them finite
    return np.empty((tasks, blk), dtype), u, q, kbits


def diaggru_fwd(xi, h0, a, cell):
    """DiagGRU over time: ``xi (B, T, 3H), h0 (B, H), a (3H,) -> states (B, T, H)``."""
    xi, h0, a = contiguous(xi), contiguous(h0), contiguous(a)
    B, T, H3 = xi.shape
    H = H3 // 3
    blk = split_columns(B, H, 16)
    states, acts = np.empty((B, T, H), xi.dtype), np.empty((B, T, 3 * H), xi.dtype)
    _diaggru_forward(xi, h0, a, blk, states, acts, *_task_scratch(B, H, blk, 2, xi.dtype))
    return states, (states, acts, h0, a)


def diaggru_bwd(res, dstates, cell):
    """BPTT of :func:`diaggru_fwd`: ``(dxi, dh0, da)``."""
    states, acts, h0, a = res
    B, T, H = states.shape
    dxi, da_part, dh0 = np.empty((B, T, 3 * H), states.dtype), np.empty((B, 3 * H), states.dtype), np.empty_like(h0)
    _diaggru_backward(states, acts, h0, a, dstates, split_columns(B, H, 16), dxi, da_part, dh0)
    return dxi, dh0, da_part.sum(axis=0)


@kernel(parallel=PARALLEL_CELLS)
def _cifg_forward(xi, c0, h0, a, peep, blk, states, acts, cbuf, hbuf, u, q, kbits):
    """State [c, h] interleaved; acts (B, T, 4H) = f, g, o, tanh(c').  u, q, kbits rows: (2 blk,)."""
    B, T, H3 = xi.shape
    H = H3 // 3
    one, two = xi.dtype.type(1.0), xi.dtype.type(2.0)
    nblk = (H + blk - 1) // blk
    for task in prange(B * nblk):
        i, j0 = task // nblk, (task % nblk) * blk
        j1 = min(H, j0 + blk)
        w = j1 - j0
        cb, hb, uu, qq, kk = cbuf[task, :w], hbuf[task, :w], u[task, :2 * w], q[task, :2 * w], kbits[task, :2 * w]
        sc = kbits[task].view(xi.dtype)
        af, ag, ao = a[j0:j1], a[H + j0:H + j1], a[2 * H + j0:2 * H + j1]
        pf, po = peep[j0:j1], peep[H + j0:H + j1]
        for jj in range(w):
            cb[jj], hb[jj] = c0[i, j0 + jj], h0[i, j0 + jj]
        for t in range(T):
            xf, xg, xo = xi[i, t, j0:j1], xi[i, t, H + j0:H + j1], xi[i, t, 2 * H + j0:2 * H + j1]
            f, g = acts[i, t, j0:j1], acts[i, t, H + j0:H + j1]
            o, tc = acts[i, t, 2 * H + j0:2 * H + j1], acts[i, t, 3 * H + j0:3 * H + j1]
            for jj in range(w):  # f and g from the old state
                f[jj] = (xf[jj] + af[jj] * hb[jj]) + pf[jj] * cb[jj]
                g[jj] = xg[jj] + ag[jj] * hb[jj]
                uu[jj], uu[w + jj] = -abs(f[jj]), -(two * abs(g[jj]))
            expm1_parts(uu, qq, kk)
            for jj in range(w):  # c', then o (which peeks at c') and tanh(c')
                f[jj] = sigmoid_from_exp(f[jj], exp_from_parts(qq[jj], sc[jj], one), one)
                g[jj] = tanh_from_expm1(g[jj], expm1_from_parts(qq[w + jj], sc[w + jj], one), two)
                cb[jj] = f[jj] * cb[jj] + (one - f[jj]) * g[jj]
                o[jj] = (xo[jj] + ao[jj] * hb[jj]) + po[jj] * cb[jj]
                uu[jj], uu[w + jj] = -abs(o[jj]), -(two * abs(cb[jj]))
            expm1_parts(uu, qq, kk)
            for jj in range(w):
                o[jj] = sigmoid_from_exp(o[jj], exp_from_parts(qq[jj], sc[jj], one), one)
                tc[jj] = tanh_from_expm1(cb[jj], expm1_from_parts(qq[w + jj], sc[w + jj], one), two)
                hb[jj] = o[jj] * tc[jj]
            st = states[i, t]
            for jj in range(w):
                st[2 * (j0 + jj)] = cb[jj]
                st[2 * (j0 + jj) + 1] = hb[jj]


@kernel(parallel=PARALLEL_CELLS)
def _cifg_backward(states, acts, c0, h0, a, peep, dstates, blk, dxi, dpart, dstate0):
    """dpart (B, 5H): this row's share of [d a_f, d a_g, d a_o, d p_f, d p_o]; time outside, neurons inside."""
    B, T, H2 = states.shape
    H = H2 // 2
    one = states.dtype.type(1.0)
    nblk = (H + blk - 1) // blk
    for task in prange(B * nblk):
        i, j0 = task // nblk, (task % nblk) * blk
        j1 = min(H, j0 + blk)
        w = j1 - j0
        af, ag, ao = a[j0:j1], a[H + j0:H + j1], a[2 * H + j0:2 * H + j1]
        pf, po = peep[j0:j1], peep[H + j0:H + j1]
        dcn, dhn = np.zeros(w, a.dtype), np.zeros(w, a.dtype)
        s_af, s_ag, s_ao = np.zeros(w, a.dtype), np.zeros(w, a.dtype), np.zeros(w, a.dtype)
        s_pf, s_po = np.zeros(w, a.dtype), np.zeros(w, a.dtype)
        cp, hp, c2, dsc, dsh = (np.empty(w, a.dtype), np.empty(w, a.dtype), np.empty(w, a.dtype),
                                np.empty(w, a.dtype), np.empty(w, a.dtype))
        for t in range(T - 1, -1, -1):
            f, g = acts[i, t, j0:j1], acts[i, t, H + j0:H + j1]
            o, tc = acts[i, t, 2 * H + j0:2 * H + j1], acts[i, t, 3 * H + j0:3 * H + j1]
            dxf, dxg, dxo = dxi[i, t, j0:j1], dxi[i, t, H + j0:H + j1], dxi[i, t, 2 * H + j0:2 * H + j1]
            # de-interleave [c, h] rows into contiguous local rows (few arrays per loop: vectorizes)
            st, ds = states[i, t], dstates[i, t]
            for jj in range(w):
                c2[jj], dsc[jj], dsh[jj] = st[2 * (j0 + jj)], ds[2 * (j0 + jj)], ds[2 * (j0 + jj) + 1]
            if t > 0:
                prev = states[i, t - 1]
                for jj in range(w):
                    cp[jj], hp[jj] = prev[2 * (j0 + jj)], prev[2 * (j0 + jj) + 1]
            else:
                for jj in range(w):
                    cp[jj], hp[jj] = c0[i, j0 + jj], h0[i, j0 + jj]
            for jj in range(w):
                dh2 = dhn[jj] + dsh[jj]
                dko = dh2 * tc[jj] * o[jj] * (one - o[jj])
                dc2 = (dcn[jj] + dsc[jj]) + dh2 * o[jj] * (one - tc[jj] * tc[jj]) + dko * po[jj]
                dkf = dc2 * (cp[jj] - g[jj]) * f[jj] * (one - f[jj])
                dkg = dc2 * (one - f[jj]) * (one - g[jj] * g[jj])
                dcn[jj] = dc2 * f[jj] + dkf * pf[jj]
                dhn[jj] = dkf * af[jj] + dkg * ag[jj] + dko * ao[jj]
                dxf[jj], dxg[jj], dxo[jj] = dkf, dkg, dko
            for jj in range(w):
                s_af[jj] += dxf[jj] * hp[jj]
                s_ag[jj] += dxg[jj] * hp[jj]
                s_ao[jj] += dxo[jj] * hp[jj]
                s_pf[jj] += dxf[jj] * cp[jj]
                s_po[jj] += dxo[jj] * c2[jj]
        for jj in range(w):
            j = j0 + jj
            dpart[i, j], dpart[i, H + j], dpart[i, 2 * H + j] = s_af[jj], s_ag[jj], s_ao[jj]
            dpart[i, 3 * H + j], dpart[i, 4 * H + j] = s_pf[jj], s_po[jj]
            dstate0[i, 2 * j], dstate0[i, 2 * j + 1] = dcn[jj], dhn[jj]


def cifg_fwd(xi, state0, a, peep, cell):
    """CIFG-LSTM over time: ``xi (B, T, 3H), state0 (B, 2H), a (3H,), peep (2H,) -> states (B, T, 2H)``."""
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
    """BPTT of :func:`cifg_fwd`: ``(dxi, dstate0, da, dpeep)``."""
    states, acts, c0, h0, a, peep = res
    B, T, H2 = states.shape
    H = H2 // 2
    dxi, dpart = np.empty((B, T, 3 * H), states.dtype), np.empty((B, 5 * H), states.dtype)
    dstate0 = np.empty((B, H2), states.dtype)
    _cifg_backward(states, acts, c0, h0, a, peep, dstates, split_columns(B, H, 16), dxi, dpart, dstate0)
    d = dpart.sum(axis=0)
    return dxi, dstate0, d[:3 * H], d[3 * H:]


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
        for m in range(task * rows, min(N, task * rows + rows)):
            hm, x, rm, zm, nm = h[m], xi[m], r[m], z[m], n[m]
            for j in range(H):
                rm[j] = x[j] + ar[j] * hm[j]
                zm[j] = x[H + j] + az[j] * hm[j]
                uu[j], uu[H + j] = -abs(rm[j]), -abs(zm[j])
            expm1_parts(uu, qq, kk)
            for j in range(H):
                rm[j] = sigmoid_from_exp(rm[j], exp_from_parts(qq[j], sc[j], one), one)
                zm[j] = sigmoid_from_exp(zm[j], exp_from_parts(qq[H + j], sc[H + j], one), one)
                nm[j] = x[2 * H + j] + an[j] * rm[j] * hm[j]
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
    u, q, kbits = _scratch((tasks, 2 * H), dtype)
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


def _with_fused_steps(cell):
    rows_fn = _STEP_ROWS.get((type(cell).__module__, type(cell).__qualname__))
    if rows_fn is None:
        return cell
    # a subclass named like the cell, so messages that print type(cell).__name__ stay right
    proxy_type = type(type(cell).__name__, (FusedSteps,), {})
    return proxy_type(cell, rows_fn)


def _newton_fwd(xp, xi, state0, *rec, cell, **options):
    from ...primitives import get  # the Newton engine sits above the backends
    return get("newton_recurrence").fwd(xp, xi, state0, *rec, cell=_with_fused_steps(cell), **options)


def _newton_bwd(xp, res, cotangents, cell, **options):
    from ...primitives import get
    return get("newton_recurrence").bwd(xp, res, cotangents, cell=_with_fused_steps(cell), **options)


# -- dispatch: the fused loop for the cell classes written here, the reference otherwise --------

def _replacement(fused_fwd, fused_bwd, module: str, qualname: str):
    def fwd(xp, xi, state0, *rec, cell):
        cell = getattr(cell, "wrapped_cell", cell)  # a FusedSteps proxy from the Newton engine
        cls = type(cell)
        if cls.__module__ != module or cls.__qualname__ != qualname or not supported_dtype(xi, state0, *rec):
            from ...cells.base import _recurrence_fwd  # the reference (cells sit above backends)
            out, res = _recurrence_fwd(xp, xi, state0, *rec, cell=cell)
            return out, ("reference", res)
        out, res = fused_fwd(xi, state0, *rec, cell)
        return out, ("numba", res)

    def bwd(xp, res, dstates, cell):
        cell = getattr(cell, "wrapped_cell", cell)
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
    "newton_recurrence": (_newton_fwd, _newton_bwd),
}
