"""Fused sequences of ParaRNN's diagonal cells (DiagGRU, CIFG-LSTM): forward and exact BPTT.

No matrix product, so every neuron is an independent scan: tasks over (batch row, block of
neurons), time outside, neurons inside.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .ops import (AHEAD, AheadBuilds, PARALLEL_CELLS, contiguous, exp_from_parts, expm1_from_parts, expm1_parts,
                  inline, kernel, prefetch_segments, sigmoid_from_exp, split_columns, tanh_from_expm1, task_block,
                  task_scratch)

__all__ = ["diaggru_fwd", "diaggru_bwd", "cifg_fwd", "cifg_bwd"]


# -- diagonal cells (ParaRNN's DiagGRU and CIFG-LSTM): no matrix product, so every neuron is an
#    independent scan — tasks over B × blocks of neurons, sequential in time, like the scans --------

@inline
def diaggru_step_adjoint(d, h, r, z, n, ar, az, an, one):
    """One neuron's DiagGRU step adjoint (``DiagGRU.step_bwd``): ``(dh, dk_r, dk_z, dk_n)`` from
    ``d = ∂L/∂h'``, the previous state h and the step's gates; the BPTT loop and the Newton
    step adjoint share it."""
    dkn = d * z * (one - n * n)
    dkz = d * (n - h) * z * (one - z)
    dkr = dkn * an * h * r * (one - r)
    return d * (one - z) + dkn * an * r + dkz * az + dkr * ar, dkr, dkz, dkn


@inline
def cifg_step_adjoint(dc, dh, c, f, g, o, tc, af, ag, ao, pf, po, one):
    """One neuron's CIFG-LSTM step adjoint (``CIFGLSTM.step_bwd``): ``(dc_prev, dh_prev, dk_f,
    dk_g, dk_o)`` from ``dc, dh = ∂L/∂c', ∂L/∂h'``, the previous cell state c and the step's
    gates; the BPTT loop and the Newton step adjoint share it."""
    dko = dh * tc * o * (one - o)
    dc2 = dc + dh * o * (one - tc * tc) + dko * po
    dkf = dc2 * (c - g) * f * (one - f)
    dkg = dc2 * (one - f) * (one - g * g)
    return dc2 * f + dkf * pf, dkf * af + dkg * ag + dko * ao, dkf, dkg, dko


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
        i, j0, j1 = task_block(task, nblk, blk, H)
        w = j1 - j0
        hb, uu, qq, kk = hbuf[task, :w], u[task, :2 * w], q[task, :2 * w], kbits[task, :2 * w]
        u1, q1, k1 = u[task, :w], q[task, :w], kbits[task, :w]
        sc = kbits[task].view(xi.dtype)
        # second halves as their own slices: an index like w + jj is not provably ≥ 0, so Numba
        # adds a negative-index branch to every access and the loop no longer vectorizes
        u2, q2, s2 = uu[w:], qq[w:], sc[w:2 * w]
        ar, az, an = a[j0:j1], a[H + j0:H + j1], a[2 * H + j0:2 * H + j1]
        for jj in range(w):
            hb[jj] = h0[i, j0 + jj]
        for t in range(T):
            xr, xz, xn = xi[i, t, j0:j1], xi[i, t, H + j0:H + j1], xi[i, t, 2 * H + j0:2 * H + j1]
            r, z, n = acts[i, t, j0:j1], acts[i, t, H + j0:H + j1], acts[i, t, 2 * H + j0:2 * H + j1]
            for jj in range(w):
                r[jj] = xr[jj] + ar[jj] * hb[jj]  # pre-activations first, gates below
                z[jj] = xz[jj] + az[jj] * hb[jj]
                uu[jj], u2[jj] = -abs(r[jj]), -abs(z[jj])
            expm1_parts(uu, qq, kk)
            for jj in range(w):
                r[jj] = sigmoid_from_exp(r[jj], exp_from_parts(qq[jj], sc[jj], one), one)
                z[jj] = sigmoid_from_exp(z[jj], exp_from_parts(q2[jj], s2[jj], one), one)
                n[jj] = xn[jj] + an[jj] * r[jj] * hb[jj]
                u1[jj] = -(two * abs(n[jj]))
            expm1_parts(u1, q1, k1)
            st = states[i, t, j0:j1]
            for jj in range(w):
                n[jj] = tanh_from_expm1(n[jj], expm1_from_parts(q1[jj], sc[jj], one), two)
                hb[jj] = (one - z[jj]) * hb[jj] + z[jj] * n[jj]
                st[jj] = hb[jj]


def _make_diaggru_backward(ahead: bool):
    """The kernel; with ``ahead``, each task asks for its lines ``AHEAD`` steps before use (ops.AheadBuilds)."""

    @kernel(parallel=PARALLEL_CELLS)
    def _diaggru_backward(states, acts, h0, a, dstates, blk, dxi, da_part, dh0):
        """da_part (B, 3H): this row's share of the gradient of a (summed over B by the caller).

        Time outside, neurons inside (independent chains side by side, so the loop vectorizes).
        """
        B, T, H = states.shape
        one = states.dtype.type(1.0)
        nblk = (H + blk - 1) // blk
        acf, sf, dsf, dxf = acts.reshape(-1), states.reshape(-1), dstates.reshape(-1), dxi.reshape(-1)
        for task in prange(B * nblk):
            i, j0, j1 = task_block(task, nblk, blk, H)
            w = j1 - j0
            ar, az, an = a[j0:j1], a[H + j0:H + j1], a[2 * H + j0:2 * H + j1]
            dh, sr, sz, sn = np.zeros(w, a.dtype), np.zeros(w, a.dtype), np.zeros(w, a.dtype), np.zeros(w, a.dtype)
            for t in range(T - 1, -1, -1):
                if ahead:
                    if t > AHEAD:  # this task's lines AHEAD steps back
                        row = i * T + t - AHEAD
                        prefetch_segments(acf, row, 3 * H, 3, H, j0, w)
                        prefetch_segments(dxf, row, 3 * H, 3, H, j0, w)
                        prefetch_segments(dsf, row, H, 1, 0, j0, w)
                        prefetch_segments(sf, row - 1, H, 1, 0, j0, w)
                r, z, n = acts[i, t, j0:j1], acts[i, t, H + j0:H + j1], acts[i, t, 2 * H + j0:2 * H + j1]
                hp = states[i, t - 1, j0:j1] if t > 0 else h0[i, j0:j1]
                ds = dstates[i, t, j0:j1]
                dr, dz, dn = dxi[i, t, j0:j1], dxi[i, t, H + j0:H + j1], dxi[i, t, 2 * H + j0:2 * H + j1]
                for jj in range(w):
                    dh[jj], dkr, dkz, dkn = diaggru_step_adjoint(dh[jj] + ds[jj], hp[jj], r[jj], z[jj], n[jj], ar[jj],
                                                                 az[jj], an[jj], one)
                    dr[jj], dz[jj], dn[jj] = dkr, dkz, dkn
                    sr[jj] += dkr * hp[jj]
                    sz[jj] += dkz * hp[jj]
                    sn[jj] += dkn * r[jj] * hp[jj]
            for jj in range(w):
                da_part[i, j0 + jj], da_part[i, H + j0 + jj], da_part[i, 2 * H + j0 + jj] = sr[jj], sz[jj], sn[jj]
                dh0[i, j0 + jj] = dh[jj]
    return _diaggru_backward


_diaggru_backward = AheadBuilds(_make_diaggru_backward)


def diaggru_fwd(xi, h0, a, cell):
    """DiagGRU over time: ``xi (B, T, 3H), h0 (B, H), a (3H,) -> states (B, T, H)``."""
    xi, h0, a = contiguous(xi), contiguous(h0), contiguous(a)
    B, T, H3 = xi.shape
    H = H3 // 3
    blk = split_columns(B, H, 16)
    states, acts = np.empty((B, T, H), xi.dtype), np.empty((B, T, 3 * H), xi.dtype)
    _diaggru_forward(xi, h0, a, blk, states, acts, *task_scratch(B, H, blk, 2, xi.dtype))
    return states, (states, acts, h0, a)


def diaggru_bwd(res, dstates, cell):
    """BPTT of :func:`diaggru_fwd`: ``(dxi, dh0, da)``."""
    states, acts, h0, a = res
    B, T, H = states.shape
    dxi, da_part, dh0 = np.empty((B, T, 3 * H), states.dtype), np.empty((B, 3 * H), states.dtype), np.empty_like(h0)
    blk = split_columns(B, H, 16)
    _diaggru_backward.for_width(blk)(states, acts, h0, a, dstates, blk, dxi, da_part, dh0)
    return dxi, dh0, da_part.sum(axis=0)


@kernel(parallel=PARALLEL_CELLS)
def _cifg_forward(xi, c0, h0, a, peep, blk, states, acts, cbuf, hbuf, u, q, kbits):
    """State [c, h] interleaved; acts (B, T, 4H) = f, g, o, tanh(c').  u, q, kbits rows: (2 blk,)."""
    B, T, H3 = xi.shape
    H = H3 // 3
    one, two = xi.dtype.type(1.0), xi.dtype.type(2.0)
    nblk = (H + blk - 1) // blk
    for task in prange(B * nblk):
        i, j0, j1 = task_block(task, nblk, blk, H)
        w = j1 - j0
        cb, hb, uu, qq, kk = cbuf[task, :w], hbuf[task, :w], u[task, :2 * w], q[task, :2 * w], kbits[task, :2 * w]
        sc = kbits[task].view(xi.dtype)
        u2, q2, s2 = uu[w:], qq[w:], sc[w:2 * w]  # w + jj would block vectorization (see DiagGRU)
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
                uu[jj], u2[jj] = -abs(f[jj]), -(two * abs(g[jj]))
            expm1_parts(uu, qq, kk)
            for jj in range(w):  # c', then o (which peeks at c') and tanh(c')
                f[jj] = sigmoid_from_exp(f[jj], exp_from_parts(qq[jj], sc[jj], one), one)
                g[jj] = tanh_from_expm1(g[jj], expm1_from_parts(q2[jj], s2[jj], one), two)
                cb[jj] = f[jj] * cb[jj] + (one - f[jj]) * g[jj]
                o[jj] = (xo[jj] + ao[jj] * hb[jj]) + po[jj] * cb[jj]
                uu[jj], u2[jj] = -abs(o[jj]), -(two * abs(cb[jj]))
            expm1_parts(uu, qq, kk)
            for jj in range(w):
                o[jj] = sigmoid_from_exp(o[jj], exp_from_parts(qq[jj], sc[jj], one), one)
                tc[jj] = tanh_from_expm1(cb[jj], expm1_from_parts(q2[jj], s2[jj], one), two)
                hb[jj] = o[jj] * tc[jj]
            st = states[i, t, 2 * j0:2 * j1]
            for jj in range(w):
                st[2 * jj] = cb[jj]
                st[2 * jj + 1] = hb[jj]


def _make_cifg_backward(ahead: bool):
    """The kernel; with ``ahead``, each task asks for its lines ``AHEAD`` steps before use (ops.AheadBuilds)."""

    @kernel(parallel=PARALLEL_CELLS)
    def _cifg_backward(states, acts, c0, h0, a, peep, dstates, blk, dxi, dpart, dstate0):
        """dpart (B, 5H): this row's share of [d a_f, d a_g, d a_o, d p_f, d p_o]; time outside, neurons inside."""
        B, T, H2 = states.shape
        H = H2 // 2
        one = states.dtype.type(1.0)
        nblk = (H + blk - 1) // blk
        acf, sf, dsf, dxflat = acts.reshape(-1), states.reshape(-1), dstates.reshape(-1), dxi.reshape(-1)
        for task in prange(B * nblk):
            i, j0, j1 = task_block(task, nblk, blk, H)
            w = j1 - j0
            af, ag, ao = a[j0:j1], a[H + j0:H + j1], a[2 * H + j0:2 * H + j1]
            pf, po = peep[j0:j1], peep[H + j0:H + j1]
            dcn, dhn = np.zeros(w, a.dtype), np.zeros(w, a.dtype)
            s_af, s_ag, s_ao = np.zeros(w, a.dtype), np.zeros(w, a.dtype), np.zeros(w, a.dtype)
            s_pf, s_po = np.zeros(w, a.dtype), np.zeros(w, a.dtype)
            cp, hp, c2, dsc, dsh = (np.empty(w, a.dtype), np.empty(w, a.dtype), np.empty(w, a.dtype),
                                    np.empty(w, a.dtype), np.empty(w, a.dtype))
            for t in range(T - 1, -1, -1):
                if ahead:
                    if t > AHEAD:  # this task's lines AHEAD steps back; [c, h] rows interleaved
                        row = i * T + t - AHEAD
                        prefetch_segments(acf, row, 4 * H, 4, H, j0, w)
                        prefetch_segments(dxflat, row, 3 * H, 3, H, j0, w)
                        prefetch_segments(dsf, row, 2 * H, 1, 0, 2 * j0, 2 * w)
                        prefetch_segments(sf, row - 1, 2 * H, 1, 0, 2 * j0, 2 * w)
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
                    dcn[jj], dhn[jj], dkf, dkg, dko = cifg_step_adjoint(
                        dcn[jj] + dsc[jj], dhn[jj] + dsh[jj], cp[jj], f[jj], g[jj], o[jj], tc[jj], af[jj], ag[jj], ao[jj],
                        pf[jj], po[jj], one)
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
    return _cifg_backward


_cifg_backward = AheadBuilds(_make_cifg_backward)


def cifg_fwd(xi, state0, a, peep, cell):
    """CIFG-LSTM over time: ``xi (B, T, 3H), state0 (B, 2H), a (3H,), peep (2H,) -> states (B, T, 2H)``."""
    xi, a, peep = contiguous(xi), contiguous(a), contiguous(peep)
    B, T, H3 = xi.shape
    H = H3 // 3
    c0, h0 = contiguous(state0[:, 0::2]), contiguous(state0[:, 1::2])
    blk = split_columns(B, H, 16)
    hbuf, u, q, kbits = task_scratch(B, H, blk, 2, xi.dtype)
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
    blk = split_columns(B, H, 16)
    _cifg_backward.for_width(blk)(states, acts, c0, h0, a, peep, dstates, blk, dxi, dpart, dstate0)
    d = dpart.sum(axis=0)
    return dxi, dstate0, d[:3 * H], d[3 * H:]


