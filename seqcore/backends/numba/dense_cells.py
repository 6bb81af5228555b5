"""Fused sequences of the dense cells (Elman, LSTM, GRU, LeakyRNN): forward and exact BPTT.

One compiled loop over time per direction.  Per step the recurrent product is one
``(B, H) × (H, kH)`` product against the weight packed once per call (``panels.py``: 1.3-2×
OpenBLAS's speed at these shapes) and the gate arithmetic
runs row by row in simple loops that LLVM vectorizes, with ``ops.expm1_parts`` as the
vectorized exponential (libm's scalar ``tanhf`` would dominate).  The weight gradient is not
accumulated per step: the loop keeps every step's pre-activation gradient and one
``(kH, B·T) × (B·T, H)`` product after it (``products.matmul_tn``) gives ``dW_hh``.
"""
from __future__ import annotations

import numpy as np

from .ops import (contiguous, exp_from_parts, expm1_from_parts, expm1_parts, kernel, prefetch_row, scratch,
                  sigmoid_from_exp, tanh_from_expm1)
from .panels import pack, panel_gemm, panel_gemm_rows
from .products import matmul_tn

__all__ = ["elman_fwd", "elman_bwd", "lstm_fwd", "lstm_bwd", "gru_fwd", "gru_bwd", "leaky_fwd", "leaky_bwd"]


# -- Elman ------------------------------------------------------------------------------------

@kernel()
def _elman_forward(xi, h0, WTp, bias, relu, states, hbuf, zbuf, u, q, kbits):
    """states[:, t] = φ(xi_t + h_{t-1} W^T + b);  WTp = pack(W_hh^T); hbuf, zbuf, u, q, kbits: (B, H)."""
    B, T, H = xi.shape
    zero, one, two = xi.dtype.type(0.0), xi.dtype.type(1.0), xi.dtype.type(2.0)
    uf, qf, kf = u.reshape(B * H), q.reshape(B * H), kbits.reshape(B * H)
    scale = kbits.view(xi.dtype)
    hbuf[:, :] = h0
    for t in range(T):
        panel_gemm(hbuf, WTp, zbuf)
        if relu:  # one pass per step (tanh needs the vectorized exp in between: two)
            for i in range(B):
                for j in range(H):
                    z = (xi[i, t, j] + zbuf[i, j]) + bias[j]
                    hn = zero if z <= zero else z  # NaN passes, as np.maximum(z, 0)
                    hbuf[i, j] = hn
                    states[i, t, j] = hn
            continue
        for i in range(B):
            for j in range(H):
                zbuf[i, j] = (xi[i, t, j] + zbuf[i, j]) + bias[j]
        for i in range(B):
            for j in range(H):
                u[i, j] = -(two * abs(zbuf[i, j]))
        expm1_parts(uf, qf, kf)
        for i in range(B):
            for j in range(H):
                hbuf[i, j] = tanh_from_expm1(zbuf[i, j], expm1_from_parts(q[i, j], scale[i, j], one), two)
        for i in range(B):  # a separate copy: folded into the loop above it ran 0.89-0.97x at B·H = 8192
            for j in range(H):
                states[i, t, j] = hbuf[i, j]
        # LeakyRNN's tanh step repeats these loops: an inlined helper serving both ran 0.55-0.73x at
        # (4, 512, 16) and 0.83-0.97x at (16, 256, 64)


@kernel()
def _elman_backward(states, Wp, dstates, relu, dxi, ds):
    """dxi_t = (ds + dstates_t) φ'(out_t); ds ← dxi_t W (Wp = pack(W_hh)).  ds (B, H) enters as 0, leaves as dh0."""
    B, T, H = states.shape
    zero, one = states.dtype.type(0.0), states.dtype.type(1.0)
    dxf = dxi.reshape(-1)
    for t in range(T - 1, -1, -1):
        for i in range(B):
            out, d_out, dx = states[i, t], dstates[i, t], dxi[i, t]
            for j in range(H):
                d = ds[i, j] + d_out[j]
                dp = d * (one if out[j] > zero else zero) if relu else d * (one - out[j] * out[j])
                dx[j] = dp
        panel_gemm_rows(dxf, t * H, T * H, B, H, Wp, ds)


@kernel()
def _bias_grad_kernel(d2, db):
    """db = column sums of d2, in float64 partial sums (B·T terms: float32 sums would drift)."""
    acc = np.zeros(d2.shape[1], np.float64)
    for m in range(d2.shape[0]):
        for j in range(d2.shape[1]):
            acc[j] += d2[m, j]
    for j in range(d2.shape[1]):
        db[j] = acc[j]


def _weight_grad(dpre, hprev, bias=True):
    """Σ over (b, t) of dpre^T h_{t-1}: ``(B, T, kH), (B, T, H) -> (kH, H)``; and the bias gradient
    (None without ``bias``).  The product is one ``(kH, B·T) × (B·T, H)`` through the panel
    kernels (``products.matmul_tn``)."""
    n = dpre.shape[0] * dpre.shape[1]
    d2, h2 = dpre.reshape(n, dpre.shape[2]), hprev.reshape(n, hprev.shape[2])
    dW = matmul_tn(d2, h2)
    if not bias:
        return dW, None
    db = np.empty(d2.shape[1], dpre.dtype)
    _bias_grad_kernel(d2, db)
    return dW, db


def _previous(states, first):
    """``h_{t-1}`` at every t: ``(B, T, H)`` from the states and ``first = h0``."""
    return np.concatenate([first[:, None, :], states[:, :-1]], axis=1)


def elman_fwd(xi, h0, W, b, cell):
    """Elman over time: ``xi (B, T, H), h0 (B, H), W_hh (H, H), b_hh (H,) -> states (B, T, H)``."""
    xi, h0 = contiguous(xi), contiguous(h0)
    B, T, H = xi.shape
    states = np.empty_like(xi)
    _elman_forward(xi, h0, pack(W.T), contiguous(b), cell.nonlinearity == "relu", states,
                   np.empty((B, H), xi.dtype), np.empty((B, H), xi.dtype), *scratch((B, H), xi.dtype))
    return states, (states, h0, W)


def elman_bwd(res, dstates, cell):
    """BPTT of :func:`elman_fwd`: ``(dxi, dh0, dW_hh, db_hh)``."""
    states, h0, W = res
    B, T, H = states.shape
    dxi, ds = np.empty_like(states), np.zeros((B, H), states.dtype)
    _elman_backward(states, pack(W), dstates, cell.nonlinearity == "relu", dxi, ds)
    dW, db = _weight_grad(dxi, _previous(states, h0))
    return dxi, ds, dW, db


# -- LSTM (state [c, h] interleaved per neuron; gates i, f, g, o) --------------------------------

@kernel()
def _lstm_forward(xi, c0, h0, WTp, bias, states, acts, hprev, hbuf, cbuf, zbuf, z, u, q, kbits):
    """states (B, T, 2H); acts (B, T, 5H) = i, f, g, o, tanh(c) per step; hprev (B, T, H) = h_{t-1}.

    Per step one product ``zbuf = h · W_hhᵀ`` (B, 4H) (``WTp = pack(W_hhᵀ)``), then row by row
    (so the scratch stays in L1) simple loops that LLVM vectorizes, with one vectorized exp pass
    per layer of nonlinearities.  Buffers: hbuf, cbuf (B, H); zbuf (B, 4H); z, u, q, kbits (4H,).

    Rows are addressed at unsigned offsets in the flattened arrays, not sliced: a slice
    costs about 10 ns (it updates a reference count), and a dozen per row and step was a
    sizeable part of the kernel at H = 64; a signed index gets Numba's negative-index
    branch, which stops LLVM from vectorizing the loop.
    """
    B, T, H4 = xi.shape
    H = H4 // 4
    one, two = xi.dtype.type(1.0), xi.dtype.type(2.0)
    scale = kbits.view(xi.dtype)
    uc, qc, kc, sc = u[:H], q[:H], kbits[:H], scale[:H]
    # per-gate slices of the scratch, indexed from 0, made once here
    ug, zg, qg, sg = u[2 * H:3 * H], z[2 * H:3 * H], q[2 * H:3 * H], scale[2 * H:3 * H]
    zo, qo, so = z[3 * H:], q[3 * H:], scale[3 * H:]
    xf, af, hpf, sf = xi.reshape(-1), acts.reshape(-1), hprev.reshape(-1), states.reshape(-1)
    cf, hf, zf = cbuf.reshape(-1), hbuf.reshape(-1), zbuf.reshape(-1)
    uH, uT = np.uint64(H), np.uint64(T)
    uH2, uH4, uH5 = np.uint64(2 * H), np.uint64(4 * H), np.uint64(5 * H)  # uint64 × int64 would be a float
    hbuf[:, :] = h0
    cbuf[:, :] = c0
    for t in range(T):
        panel_gemm(hbuf, WTp, zbuf)
        for i in range(B):
            ui = np.uint64(i)
            n = ui * uT + np.uint64(t)  # the (i, t) row
            ox, oa, ob, oz = n * uH4, n * uH5, ui * uH, ui * uH4
            for j in range(uH4):
                z[j] = (xf[ox + j] + zf[oz + j]) + bias[j]
            for j in range(H4):
                u[j] = -abs(z[j])  # exp(-|z|) for the sigmoids
            for j in range(H):
                ug[j] = two * ug[j]  # expm1(-2|z|) for tanh
            expm1_parts(u, q, kbits)
            for j in range(uH2):
                af[oa + j] = sigmoid_from_exp(z[j], exp_from_parts(q[j], scale[j], one), one)
            og = oa + uH2
            for j in range(uH):
                af[og + j] = tanh_from_expm1(zg[j], expm1_from_parts(qg[j], sg[j], one), two)
            oo = og + uH
            for j in range(uH):
                af[oo + j] = sigmoid_from_exp(zo[j], exp_from_parts(qo[j], so[j], one), one)
            for j in range(uH):
                cf[ob + j] = af[oa + uH + j] * cf[ob + j] + af[oa + j] * af[og + j]
            for j in range(uH):
                uc[j] = -(two * abs(cf[ob + j]))
            expm1_parts(uc, qc, kc)
            ot = oo + uH
            for j in range(uH):
                af[ot + j] = tanh_from_expm1(cf[ob + j], expm1_from_parts(qc[j], sc[j], one), two)
            oh, os = n * uH, n * uH2
            for j in range(uH):  # this step's product has read h: the row can take the new h
                hpf[oh + j] = hf[ob + j]
                hn = af[oo + j] * af[ot + j]
                hf[ob + j] = hn
                sf[os + j + j] = cf[ob + j]
                sf[os + j + j + np.uint64(1)] = hn


@kernel()
def _lstm_backward(states, acts, state0, Wp, dstates, dxi, dc, dh):
    """BPTT; dc, dh (B, H) enter as 0 and leave as the gradients of c0 and h0.

    Per step ``dh = dz · W_hh`` (``Wp = pack(W_hh)``), reading the step's rows of ``dxi`` in
    place.  ``state0`` is (B, 2H), [c, h] interleaved.
    """
    B, T, H2 = states.shape
    H = H2 // 2
    one = states.dtype.type(1.0)
    actf, sf, dsf, dxf = acts.reshape(-1), states.reshape(-1), dstates.reshape(-1), dxi.reshape(-1)
    uT = np.uint64(T)
    for t in range(T - 1, -1, -1):
        for i in range(B):
            if i + 1 < B:  # the next row's lines (see prefetch_row)
                n = np.uint64(i + 1) * uT + np.uint64(t)
                prefetch_row(actf, n * np.uint64(5 * H), 5 * H)
                prefetch_row(dsf, n * np.uint64(2 * H), 2 * H)
                if t > 0:
                    prefetch_row(sf, (n - np.uint64(1)) * np.uint64(2 * H), 2 * H)
            a, d_s, dx = acts[i, t], dstates[i, t], dxi[i, t]
            cp = state0[i] if t == 0 else states[i, t - 1]
            # gate slices indexed from 0 (see _lstm_forward: H + j would block vectorization)
            ai, af, ag, ao, at = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:4 * H], a[4 * H:]
            di, df, dg, do = dx[:H], dx[H:2 * H], dx[2 * H:3 * H], dx[3 * H:]
            dci, dhi = dc[i], dh[i]
            for j in range(H):
                ig, fg, gg, og, tc = ai[j], af[j], ag[j], ao[j], at[j]
                dnh = dhi[j] + d_s[2 * j + 1]
                dc2 = (dci[j] + d_s[2 * j]) + dnh * og * (one - tc * tc)
                di[j] = dc2 * gg * ig * (one - ig)
                df[j] = dc2 * cp[2 * j] * fg * (one - fg)
                dg[j] = dc2 * ig * (one - gg * gg)
                do[j] = dnh * tc * og * (one - og)
                dci[j] = dc2 * fg
        panel_gemm_rows(dxf, t * 4 * H, T * 4 * H, B, 4 * H, Wp, dh)


def lstm_fwd(xi, state0, W, b, cell):
    """LSTM over time: ``xi (B, T, 4H), state0 (B, 2H) [c, h] interleaved -> states (B, T, 2H)``."""
    xi, state0 = contiguous(xi), contiguous(state0)
    B, T, H4 = xi.shape
    H = H4 // 4
    states = np.empty((B, T, 2 * H), xi.dtype)
    acts, hprev = np.empty((B, T, 5 * H), xi.dtype), np.empty((B, T, H), xi.dtype)
    _lstm_forward(xi, contiguous(state0[:, 0::2]), contiguous(state0[:, 1::2]),
                  pack(W.T), contiguous(b), states, acts, hprev,
                  np.empty((B, H), xi.dtype), np.empty((B, H), xi.dtype),
                  np.empty((B, H4), xi.dtype), np.empty(H4, xi.dtype), *scratch(H4, xi.dtype))
    return states, (states, acts, hprev, state0, W)


def lstm_bwd(res, dstates, cell):
    """BPTT of :func:`lstm_fwd`: ``(dxi, dstate0, dW_hh, db_hh)``."""
    states, acts, hprev, state0, W = res
    B, T, H2 = states.shape
    H = H2 // 2
    dxi = np.empty((B, T, 4 * H), states.dtype)
    dc, dh = np.zeros((B, H), states.dtype), np.zeros((B, H), states.dtype)
    _lstm_backward(states, acts, state0, pack(W), dstates, dxi, dc, dh)
    dstate0 = np.stack([dc, dh], axis=-1).reshape(B, H2)
    dW, db = _weight_grad(dxi, hprev)
    return dxi, dstate0, dW, db


# -- GRU (gates r, z, n; torch.nn.GRU) ------------------------------------------------------------

@kernel()
def _gru_forward(xi, h0, WTp, bias, states, acts, hbuf, zbuf, z, u, q, kbits):
    """acts (B, T, 4H) = r, z, n, (W_hn h + b_hn) per step; hbuf (B, H); zbuf (B, 3H); z (3H,); u, q, kbits (2H,).

    Per step: one product ``zbuf = h · W_hhᵀ`` (``WTp = pack(W_hhᵀ)``), then row by row simple
    vectorized loops.
    """
    B, T, H3 = xi.shape
    H = H3 // 3
    one, two = xi.dtype.type(1.0), xi.dtype.type(2.0)
    scale = kbits.view(xi.dtype)
    un, qn, kn, sn = u[:H], q[:H], kbits[:H], scale[:H]
    hbuf[:, :] = h0
    for t in range(T):
        panel_gemm(hbuf, WTp, zbuf)
        for i in range(B):
            x, a, st, h, zr = xi[i, t], acts[i, t], states[i, t], hbuf[i], zbuf[i]
            for j in range(H3):
                z[j] = zr[j] + bias[j]  # h W^T + b_hh, as the reference groups it
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
            for j in range(H):  # this step's product has read h: the row can take the new h
                hn = (one - a[H + j]) * a[2 * H + j] + a[H + j] * h[j]
                h[j] = hn
                st[j] = hn


@kernel()
def _gru_backward(states, acts, h0, Wp, dstates, dxi, dgh, dh, mbuf):
    """BPTT; dgh (B, T, 3H) = gradient of h W^T + b_hh per step; dh (B, H) enters as 0, leaves as dh0.

    Per step ``mbuf = dgh_t · W_hh`` (``Wp = pack(W_hh)``; mbuf (B, H)), reading the step's rows
    of ``dgh`` in place.
    """
    B, T, H = states.shape
    one = states.dtype.type(1.0)
    actf, sf, dsf, dgf = acts.reshape(-1), states.reshape(-1), dstates.reshape(-1), dgh.reshape(-1)
    uT = np.uint64(T)
    for t in range(T - 1, -1, -1):
        for i in range(B):
            if i + 1 < B:  # the next row's lines, as in _lstm_backward (1.16-1.19x at B·T·H = 2^19)
                nx = np.uint64(i + 1) * uT + np.uint64(t)
                prefetch_row(actf, nx * np.uint64(4 * H), 4 * H)
                prefetch_row(dsf, nx * np.uint64(H), H)
                if t > 0:
                    prefetch_row(sf, (nx - np.uint64(1)) * np.uint64(H), H)
            a, dx, dg = acts[i, t], dxi[i, t], dgh[i, t]
            ar, az, an, ag = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:]  # slices, as in _lstm_forward (vectorization)
            dxr, dxz, dxn = dx[:H], dx[H:2 * H], dx[2 * H:]
            dgr, dgz, dgn = dg[:H], dg[H:2 * H], dg[2 * H:]
            for j in range(H):
                r, z, n, ghn = ar[j], az[j], an[j], ag[j]
                hp = h0[i, j] if t == 0 else states[i, t - 1, j]
                d = dh[i, j] + dstates[i, t, j]
                dkn = d * (one - z) * (one - n * n)
                dkz = d * (hp - n) * z * (one - z)
                dkr = dkn * ghn * r * (one - r)
                dxr[j], dxz[j], dxn[j] = dkr, dkz, dkn
                dgr[j], dgz[j], dgn[j] = dkr, dkz, dkn * r
                dh[i, j] = d * z  # the direct path; the matrix path is added below
        panel_gemm_rows(dgf, t * 3 * H, T * 3 * H, B, 3 * H, Wp, mbuf)
        for i in range(B):
            dhi, mi = dh[i], mbuf[i]
            for j in range(H):
                dhi[j] = dhi[j] + mi[j]


def gru_fwd(xi, h0, W, b, cell):
    """GRU over time: ``xi (B, T, 3H), h0 (B, H), W_hh (3H, H), b_hh (3H,) -> states (B, T, H)``."""
    xi, h0 = contiguous(xi), contiguous(h0)
    B, T, H3 = xi.shape
    H = H3 // 3
    states, acts = np.empty((B, T, H), xi.dtype), np.empty((B, T, 4 * H), xi.dtype)
    _gru_forward(xi, h0, pack(W.T), contiguous(b), states, acts, np.empty((B, H), xi.dtype),
                 np.empty((B, H3), xi.dtype), np.empty(H3, xi.dtype), *scratch(2 * H, xi.dtype))
    return states, (states, acts, h0, W)


def gru_bwd(res, dstates, cell):
    """BPTT of :func:`gru_fwd`: ``(dxi, dh0, dW_hh, db_hh)``."""
    states, acts, h0, W = res
    B, T, H = states.shape
    dxi, dgh = np.empty((B, T, 3 * H), states.dtype), np.empty((B, T, 3 * H), states.dtype)
    dh = np.zeros((B, H), states.dtype)
    _gru_backward(states, acts, h0, pack(W), dstates, dxi, dgh, dh, np.empty((B, H), states.dtype))
    dW, db = _weight_grad(dgh, _previous(states, h0))
    return dxi, dh, dW, db


# -- LeakyRNN: h' = φ((1 − 1/τ) h + (h W0^T + xi) / τ), W0 = W_hh with a zero diagonal --------------

@kernel()
def _leaky_forward(xi, h0, W0Tp, inv, tanh, slope, states, us, hbuf, zbuf, u, q, kbits):
    """us (B, T, H) keeps u = h W0^T + xi per step (the backward needs it; W0Tp = pack(W0^T)); zbuf, u, q, kbits: (B, H)."""
    B, T, H = xi.shape
    zero, one, two = xi.dtype.type(0.0), xi.dtype.type(1.0), xi.dtype.type(2.0)
    uf, qf, kf = u.reshape(B * H), q.reshape(B * H), kbits.reshape(B * H)
    scale = kbits.view(xi.dtype)
    hbuf[:, :] = h0
    for t in range(T):
        panel_gemm(hbuf, W0Tp, zbuf)
        if not tanh:  # one pass per step: the activation needs no vectorized exp in between
            for i in range(B):
                for j in range(H):
                    uu = zbuf[i, j] + xi[i, t, j]
                    us[i, t, j] = uu
                    pre = (one - inv[j]) * hbuf[i, j] + uu * inv[j]
                    hn = pre if pre > zero else slope * pre
                    hbuf[i, j] = hn
                    states[i, t, j] = hn
            continue
        for i in range(B):
            for j in range(H):
                uu = zbuf[i, j] + xi[i, t, j]
                us[i, t, j] = uu
                zbuf[i, j] = (one - inv[j]) * hbuf[i, j] + uu * inv[j]  # the pre-activation
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
def _leaky_backward(states, us, h0, W0p, inv, tanh, slope, dstates, dus, dtau_sum, dh, mbuf):
    """dus (B, T, H) = gradient of u per step; dtau_sum (H,) += Σ dpre (u − h); dh enters 0, leaves dh0.
    Per step ``mbuf = dus_t · W0`` (``W0p = pack(W0)``), reading the step's rows of ``dus`` in place."""
    B, T, H = states.shape
    zero, one = states.dtype.type(0.0), states.dtype.type(1.0)
    duf = dus.reshape(-1)
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
                dus[i, t, j] = dpre * inv[j]
                dh[i, j] = dpre * (one - inv[j])
                dtau_sum[j] += dpre * (uu - hp)
        panel_gemm_rows(duf, t * H, T * H, B, H, W0p, mbuf)
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
    _leaky_forward(xi, h0, pack(W0.T), inv, cell.nonlinearity == "tanh", slope, states, us,
                   np.empty((B, H), xi.dtype), np.empty((B, H), xi.dtype), *scratch((B, H), xi.dtype))
    return states, (states, us, h0, W0, tau, inv, slope)


def leaky_bwd(res, dstates, cell):
    """BPTT of :func:`leaky_fwd`: ``(dxi, dh0, dW_hh, dtau)`` (zero diagonal / clamp as the reference)."""
    states, us, h0, W0, tau, inv, slope = res
    B, T, H = states.shape
    dus, dtau_sum = np.empty_like(states), np.zeros(H, np.float64)  # a sum of B·T terms
    dh = np.zeros((B, H), states.dtype)
    _leaky_backward(states, us, h0, pack(W0), inv, cell.nonlinearity == "tanh", slope, dstates, dus, dtau_sum, dh,
                    np.empty((B, H), states.dtype))
    dW = _weight_grad(dus, _previous(states, h0), bias=False)[0] * (1 - np.eye(H, dtype=states.dtype))
    dtau = -dtau_sum.astype(states.dtype) * inv * inv * (tau >= 1)
    return dus, dh, dW, dtau


