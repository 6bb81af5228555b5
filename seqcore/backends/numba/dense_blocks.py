"""Numba ``block_scan`` kernels for dense blocks (k ≥ 4): the k × k products of every step on
flat arrays at unsigned offsets, in loops LLVM vectorizes.

Forward ``h_t = A_t h_{t−1} + b_t``: with ``A`` row-major each output is a dot product of a
row of ``A_t`` (summed in column order, a plain chain: without reassociation LLVM cannot
vectorize it, but flat addressing halves its cost); with ``A`` holding its blocks transposed
(the Newton adjoint's ``Jᵀ``, read in place) the outputs accumulate row by row of the stored
block, unit stride.  Backward ``g_t = A_{t+1}ᵀ g_{t+1} + dh_t``, ``dA_t = g_t h_{t−1}ᵀ``: the
same row-by-row accumulation over row-major ``A``, and the outer products row by row.  Every
output's multiply-adds run in the order of the five-index loops these replaced (bit-identical).

Where k is small (``SMALL_K``) a build with k as a compile-time constant unrolls the rows:
with k known only at run time a loop of 4–8 elements never reaches LLVM's vector body.
Tasks: (batch row, block of groups), time sequential inside each.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .ops import inline, kernel, task_block

__all__ = ["SMALL_K", "dense_kernels"]

SMALL_K = (4, 8)


@inline
def _sum_rows(Af, oa, v, ov, uk, acc, zero):
    """acc[r] = Σ_q M[q, r] v[q], q in order, for the k × k block M stored row-major at ``oa``
    (``v``'s k values at ``ov``): unit-stride rows of M, the form LLVM vectorizes."""
    for r in range(uk):
        acc[r] = zero
    for q in range(uk):
        vq, oq = v[ov + q], oa + np.uint64(q) * uk
        for r in range(uk):
            acc[r] += Af[oq + r] * vq


def _make(kc: int):
    """Forward and backward kernels for blocks of ``kc`` (0: k read from the arrays)."""

    @kernel(parallel=True)
    def _dense_forward(A, b, h0, reverse, transposed, blk, h):
        """h (B, T, G, k) from A (B, T, G, k, k) (each block transposed when ``transposed``),
        b like h, h0 (B, G, k)."""
        B, T, G, kk = b.shape
        k = kc if kc else kk
        Af, bf, hf, h0f = A.reshape(-1), b.reshape(-1), h.reshape(-1), h0.reshape(-1)
        zero = b.dtype.type(0.0)
        nblk = (G + blk - 1) // blk
        uk, row = np.uint64(k), np.uint64(G * k)  # row: one step of h
        for task in prange(B * nblk):
            i, g0, g1 = task_block(task, nblk, blk, G)
            acc = np.empty(k, b.dtype)
            for j in range(T):
                t = T - 1 - j if reverse else j
                for g in range(g0, g1):
                    o = np.uint64(((i * T + t) * G + g) * k)  # this group's row of h, b
                    oa = o * uk                               # its block of A
                    if j == 0:
                        src, op = h0f, np.uint64((i * G + g) * k)
                    else:  # the previous step's row, one step of h before or after
                        src, op = hf, (o + row if reverse else o - row)
                    if transposed:  # stored row q is column q of A_t
                        _sum_rows(Af, oa, src, op, uk, acc, zero)
                        for r in range(uk):
                            hf[o + r] = acc[r] + bf[o + r]
                    else:
                        for r in range(uk):
                            s, orow = zero, oa + np.uint64(r) * uk
                            for q in range(uk):
                                s += Af[orow + q] * src[op + q]
                            hf[o + r] = s + bf[o + r]

    @kernel(parallel=True)
    def _dense_backward(A, h, h0, dh, reverse, blk, dA, db, dh0):
        """db = g, dA, dh0 = A_1ᵀ g_1 (scan order) from row-major A, the states h and h0, dh."""
        B, T, G, kk = dh.shape
        k = kc if kc else kk
        Af, hf, h0f, dhf, dAf, dbf, dh0f = (A.reshape(-1), h.reshape(-1), h0.reshape(-1), dh.reshape(-1),
                                            dA.reshape(-1), db.reshape(-1), dh0.reshape(-1))
        zero = dh.dtype.type(0.0)
        nblk = (G + blk - 1) // blk
        uk, row = np.uint64(k), np.uint64(G * k)
        for task in prange(B * nblk):
            i, g0, g1 = task_block(task, nblk, blk, G)
            acc = np.empty(k, dh.dtype)
            for j in range(T - 1, -1, -1):
                t = T - 1 - j if reverse else j
                for g in range(g0, g1):
                    o = np.uint64(((i * T + t) * G + g) * k)
                    oa = o * uk
                    if j == T - 1:
                        for r in range(uk):
                            dbf[o + r] = dhf[o + r]
                    else:  # g_t = A_nᵀ g_n + dh_t, n the step after t in scan order
                        on = o - row if reverse else o + row
                        _sum_rows(Af, on * uk, dbf, on, uk, acc, zero)
                        for r in range(uk):
                            dbf[o + r] = acc[r] + dhf[o + r]
                    if j > 0:
                        src, op = hf, (o + row if reverse else o - row)
                    else:
                        src, op = h0f, np.uint64((i * G + g) * k)
                    for r in range(uk):
                        gr, orow = dbf[o + r], oa + np.uint64(r) * uk
                        for q in range(uk):
                            dAf[orow + q] = gr * src[op + q]
                    if j == 0:  # dh0 = A_tᵀ g_t at the first step in scan order
                        _sum_rows(Af, oa, dbf, o, uk, acc, zero)
                        for r in range(uk):
                            dh0f[op + r] = acc[r]

    return _dense_forward, _dense_backward


_BUILDS = {kc: _make(kc) for kc in (0,) + SMALL_K}


def dense_kernels(k: int):
    """``(forward, backward)`` for blocks of k ≥ 4: a build for k itself where k is in ``SMALL_K``."""
    return _BUILDS[k if k in SMALL_K else 0]
