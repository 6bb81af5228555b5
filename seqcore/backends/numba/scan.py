"""Numba scans: ``linear_scan``, ``block_scan`` and ``log_linear_scan``, forward and VJP.

Same signatures as ``seqcore/backends/numpy/scan.py``; the residuals are this file's own.
Every kernel reads C-contiguous ``(B, T, ...)`` arrays (strided inputs are copied first)
and indexes time through ``reverse`` instead of flipping arrays.

* ``linear_scan``: a forward and a backward kernel over *chunks* of ``C`` steps, tasks
  over (batch row, chunk, block of D).  ``method="sequential"`` is one chunk (``C = T``):
  sequential in time, parallel over B × D, and the minimum memory traffic (forward reads
  a, b and writes h; backward reads a, h, dh and writes da, db — RESEARCH §2).
  ``"chunked"`` uses ``C = chunk_size``, ``"parallel"`` about four chunks per thread —
  parallel over T as well: pass 1 reduces every chunk to an affine map (product of gates,
  end state from zero), pass 2 chains the chunk carries (serial, n = T / C values), pass 3
  rescans every chunk from its carry (the inputs are read twice).
* ``block_scan`` (k = 1 reuses the diagonal kernels; k = 2, 3 written out; any k: dense
  loops) and ``log_linear_scan`` run sequentially in time with tasks over B × G (B × D)
  for every ``method`` — the reference's methods differ from each other only in rounding.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ..numpy import scan as _ref
from .ops import (as_dtype, contiguous, kernel, logaddexp, num_threads, safe_exp_diff, split_columns,
                  supported_dtype)

__all__ = ["PRIMITIVES", "chunk_length"]


# -- diagonal linear scan ---------------------------------------------------------------------

# Loop shape: each task keeps its running state in a small local array and walks whole row
# segments (a[i, t, d0:d1]) with simple unit-stride loops — the form LLVM vectorizes (indexing
# h[i, t, d] against h[i, t - 1, d] inside one loop defeats its alias analysis).

@kernel(parallel=True)
def _diag_forward(a, b, carry, prod, reverse, C, blk, reduce_only, h):
    """h_t = a_t h_{t-1} + b_t over chunks of C steps; tasks: (batch row, chunk, column block).

    ``reduce_only`` (pass 1): chunk c becomes the affine map x -> prod[:, c] x + carry[:, c]
    (product of its gates, its end state from 0).  Otherwise (pass 3): scan chunk c from the
    state ``carry[:, c]`` entering it, writing h.  carry, prod: (B, n, D).
    """
    B, T, D = a.shape
    n = carry.shape[1]
    nblk = (D + blk - 1) // blk
    one, zero = a.dtype.type(1.0), a.dtype.type(0.0)
    for task in prange(B * n * nblk):
        i, rest = task // (n * nblk), task % (n * nblk)
        c, d0 = rest // nblk, (rest % nblk) * blk
        d1 = min(D, d0 + blk)
        w = d1 - d0
        x = np.empty(w, a.dtype)
        if reduce_only:
            pr = np.empty(w, a.dtype)
            for d in range(w):
                x[d], pr[d] = zero, one
        else:
            for d in range(w):
                x[d] = carry[i, c, d0 + d]
        for j in range(c * C, min(T, c * C + C)):
            t = T - 1 - j if reverse else j
            ar, br = a[i, t, d0:d1], b[i, t, d0:d1]
            for d in range(w):
                x[d] = ar[d] * x[d] + br[d]
            if reduce_only:
                for d in range(w):
                    pr[d] = ar[d] * pr[d]
            else:
                hr = h[i, t, d0:d1]
                for d in range(w):
                    hr[d] = x[d]
        if reduce_only:
            for d in range(w):
                carry[i, c, d0 + d], prod[i, c, d0 + d] = x[d], pr[d]


@kernel()
def _chain_chunks(prod, carry, x, backward):
    """Pass 2 (serial, n ≪ T): carry[:, c] ← the state entering chunk c; x (B, D) enters first.

    Chunks are visited from the last one when ``backward``; x leaves as the final state.
    """
    B, n, D = carry.shape
    for i in range(B):
        for k in range(n):
            c = n - 1 - k if backward else k
            for d in range(D):
                nxt = prod[i, c, d] * x[i, d] + carry[i, c, d]
                carry[i, c, d] = x[i, d]
                x[i, d] = nxt


@kernel(parallel=True)
def _diag_backward(a, h, h0, dh, carry, prod, reverse, C, blk, reduce_only, da, db, dh0):
    """g_t = a_{t+1} g_{t+1} + dh_t; db = g, da_t = g_t h_{t-1}, dh0 = a_1 g_1 (in scan order).

    ``reduce_only`` (pass 1): chunk c maps the carry x = a_next g_next arriving from the later
    chunk to prod x + carry (its a_first g_first computed with x = 0).  Otherwise (pass 3):
    every chunk backwards from its carry in one sweep — reads a, h, dh; writes da, db.
    """
    B, T, D = a.shape
    n = carry.shape[1]
    nblk = (D + blk - 1) // blk
    one, zero = a.dtype.type(1.0), a.dtype.type(0.0)
    for task in prange(B * n * nblk):
        i, rest = task // (n * nblk), task % (n * nblk)
        c, d0 = rest // nblk, (rest % nblk) * blk
        d1 = min(D, d0 + blk)
        w = d1 - d0
        j0, j1 = c * C, min(T, c * C + C)
        x = np.empty(w, a.dtype)  # the carry a_{t+1} g_{t+1}
        if reduce_only:
            pr = np.empty(w, a.dtype)
            for d in range(w):
                x[d], pr[d] = zero, one
            for j in range(j1 - 1, j0 - 1, -1):
                t = T - 1 - j if reverse else j
                ar, dhr = a[i, t, d0:d1], dh[i, t, d0:d1]
                for d in range(w):
                    x[d] = ar[d] * (x[d] + dhr[d])
                for d in range(w):
                    pr[d] = ar[d] * pr[d]
            for d in range(w):
                carry[i, c, d0 + d], prod[i, c, d0 + d] = x[d], pr[d]
            continue
        for d in range(w):
            x[d] = carry[i, c, d0 + d]
        for j in range(j1 - 1, j0 - 1, -1):
            t = T - 1 - j if reverse else j
            ar, dhr, dbr, dar = a[i, t, d0:d1], dh[i, t, d0:d1], db[i, t, d0:d1], da[i, t, d0:d1]
            for d in range(w):
                dbr[d] = x[d] + dhr[d]
            hp = h[i, T - j if reverse else j - 1, d0:d1] if j > 0 else h0[i, d0:d1]
            for d in range(w):
                dar[d] = dbr[d] * hp[d]
            for d in range(w):
                x[d] = ar[d] * dbr[d]
        if j0 == 0:
            for d in range(w):
                dh0[i, d0 + d] = x[d]


def chunk_length(T: int, method: str, chunk_size: int) -> int:
    """Steps per chunk of the diagonal kernels for ``method`` (``T`` means no chunking)."""
    if method == "sequential":
        return T
    if method == "chunked":
        return max(1, min(chunk_size, T))
    return max(1, -(-T // (4 * num_threads())))  # "parallel": about four chunks per thread


def _diag_scan(a, b, h0, reverse, C):
    """Forward of the diagonal scan on contiguous (B, T, D) arrays; h0 (B, D) never None."""
    B, T, D = a.shape
    n = -(-T // C)
    blk = split_columns(B * n, D)
    h = np.empty_like(a)
    if n == 1:
        _diag_forward(a, b, h0[:, None, :], h0[:, None, :], reverse, C, blk, False, h)
        return h
    carry, prod = np.empty((B, n, D), a.dtype), np.empty((B, n, D), a.dtype)
    _diag_forward(a, b, carry, prod, reverse, C, blk, True, h)
    _chain_chunks(prod, carry, h0.copy(), False)
    _diag_forward(a, b, carry, prod, reverse, C, blk, False, h)
    return h


def _diag_scan_vjp(a, h, h0, dh, reverse, C):
    B, T, D = a.shape
    n = -(-T // C)
    blk = split_columns(B * n, D)
    carry, prod = np.zeros((B, n, D), a.dtype), np.empty((B, n, D), a.dtype)
    da, db, dh0 = np.empty_like(a), np.empty_like(a), np.empty_like(h0)
    if n > 1:
        _diag_backward(a, h, h0, dh, carry, prod, reverse, C, blk, True, da, db, dh0)
        _chain_chunks(prod, carry, np.zeros_like(h0), True)
    _diag_backward(a, h, h0, dh, carry, prod, reverse, C, blk, False, da, db, dh0)
    return da, db, dh0


def linear_scan_fwd(xp, a, b, h0=None, reverse=False, method="sequential", chunk_size=64):
    if not supported_dtype(a, b, h0):
        out, res = _ref.linear_scan_fwd(xp, a, b, h0, reverse, method, chunk_size)
        return out, ("reference", res)
    a, b = contiguous(a), contiguous(b)
    has_h0 = h0 is not None
    h0 = contiguous(h0) if has_h0 else np.zeros((a.shape[0], a.shape[2]), a.dtype)
    h = _diag_scan(a, b, h0, bool(reverse), chunk_length(a.shape[1], method, chunk_size))
    return h, ("numba", a, h, h0, has_h0)


def linear_scan_bwd(xp, res, dh, reverse=False, method="sequential", chunk_size=64):
    if res[0] == "reference":
        return _ref.linear_scan_bwd(xp, res[1], dh, reverse, method, chunk_size)
    _, a, h, h0, has_h0 = res
    C = chunk_length(a.shape[1], method, chunk_size)
    da, db, dh0 = _diag_scan_vjp(a, h, h0, as_dtype(dh, a.dtype), bool(reverse), C)
    return da, db, (dh0 if has_h0 else None)


# -- block-diagonal / dense scan --------------------------------------------------------------
# h_t[g] = A_t[g] @ h_{t-1}[g] + b_t[g]; backward g_t = A_{t+1}^T g_{t+1} + dh_t,
# dA_t = g_t h_{t-1}^T, db = g, dh0 = A_1^T g_1.  Tasks: B × blocks of groups.

@kernel(parallel=True)
def _block_forward(A, b, h0, reverse, blk, h):
    """Tasks: (batch row, block of groups).  k = 2 and 3 written out; any other k: dense loops."""
    B, T, G, k = b.shape
    zero = b.dtype.type(0.0)
    nblk = (G + blk - 1) // blk
    for task in prange(B * nblk):
        i, g0 = task // nblk, (task % nblk) * blk
        t = 0
        for j in range(T):
            tp = t
            t = T - 1 - j if reverse else j
            for g in range(g0, min(G, g0 + blk)):
                p = h0[i, g] if j == 0 else h[i, tp, g]
                M, out = A[i, t, g], h[i, t, g]
                if k == 2:
                    p0, p1 = p[0], p[1]
                    out[0] = (M[0, 0] * p0 + M[0, 1] * p1) + b[i, t, g, 0]
                    out[1] = (M[1, 0] * p0 + M[1, 1] * p1) + b[i, t, g, 1]
                elif k == 3:
                    p0, p1, p2 = p[0], p[1], p[2]
                    out[0] = (M[0, 0] * p0 + M[0, 1] * p1 + M[0, 2] * p2) + b[i, t, g, 0]
                    out[1] = (M[1, 0] * p0 + M[1, 1] * p1 + M[1, 2] * p2) + b[i, t, g, 1]
                    out[2] = (M[2, 0] * p0 + M[2, 1] * p1 + M[2, 2] * p2) + b[i, t, g, 2]
                else:
                    for r in range(k):
                        acc = zero
                        for q in range(k):
                            acc += M[r, q] * p[q]
                        out[r] = acc + b[i, t, g, r]


@kernel(parallel=True)
def _block_backward(A, h, h0, dh, reverse, blk, dA, db, dh0):
    """g_t = A_{t+1}^T g_{t+1} + dh_t; dA_t = g_t h_{t-1}^T; db = g; dh0 = A_1^T g_1 (scan order)."""
    B, T, G, k = dh.shape
    zero = dh.dtype.type(0.0)
    nblk = (G + blk - 1) // blk
    for task in prange(B * nblk):
        i, g0 = task // nblk, (task % nblk) * blk
        t = 0
        for j in range(T - 1, -1, -1):
            tn = t
            t = T - 1 - j if reverse else j
            tp = T - j if reverse else j - 1
            for g in range(g0, min(G, g0 + blk)):
                gr, d = db[i, t, g], dh[i, t, g]
                if j == T - 1:
                    for r in range(k):
                        gr[r] = d[r]
                else:
                    M, nx = A[i, tn, g], db[i, tn, g]
                    if k == 2:
                        gr[0] = (M[0, 0] * nx[0] + M[1, 0] * nx[1]) + d[0]
                        gr[1] = (M[0, 1] * nx[0] + M[1, 1] * nx[1]) + d[1]
                    elif k == 3:
                        gr[0] = (M[0, 0] * nx[0] + M[1, 0] * nx[1] + M[2, 0] * nx[2]) + d[0]
                        gr[1] = (M[0, 1] * nx[0] + M[1, 1] * nx[1] + M[2, 1] * nx[2]) + d[1]
                        gr[2] = (M[0, 2] * nx[0] + M[1, 2] * nx[1] + M[2, 2] * nx[2]) + d[2]
                    else:
                        for r in range(k):
                            acc = zero
                            for q in range(k):
                                acc += M[q, r] * nx[q]
                            gr[r] = acc + d[r]
                p = h0[i, g] if j == 0 else h[i, tp, g]
                for r in range(k):
                    for q in range(k):
                        dA[i, t, g, r, q] = gr[r] * p[q]
                if j == 0:
                    M = A[i, t, g]
                    for q in range(k):
                        acc = zero
                        for r in range(k):
                            acc += M[r, q] * gr[r]
                        dh0[i, g, q] = acc


def block_scan_fwd(xp, A, b, h0=None, reverse=False, method="sequential", chunk_size=64):
    if not supported_dtype(A, b, h0):
        out, res = _ref.block_scan_fwd(xp, A, b, h0, reverse, method, chunk_size)
        return out, ("reference", res)
    A, b = contiguous(A), contiguous(b)
    Bn, T, G, k = b.shape
    has_h0 = h0 is not None
    h0 = contiguous(h0) if has_h0 else np.zeros((Bn, G, k), b.dtype)
    if k == 1:  # diagonal: the linear-scan kernel on (B, T, G)
        h = _diag_scan(A.reshape(Bn, T, G), b.reshape(Bn, T, G), h0.reshape(Bn, G), bool(reverse),
                       chunk_length(T, method, chunk_size)).reshape(b.shape)
        return h, ("numba", A, h, h0, has_h0)
    h = np.empty_like(b)
    _block_forward(A, b, h0, bool(reverse), split_columns(Bn, G, 16), h)
    return h, ("numba", A, h, h0, has_h0)


def block_scan_bwd(xp, res, dh, reverse=False, method="sequential", chunk_size=64):
    if res[0] == "reference":
        return _ref.block_scan_bwd(xp, res[1], dh, reverse, method, chunk_size)
    _, A, h, h0, has_h0 = res
    dh = as_dtype(dh, h.dtype)
    Bn, T, G, k = h.shape
    if k == 1:
        da, db, dh0 = _diag_scan_vjp(A.reshape(Bn, T, G), h.reshape(Bn, T, G), h0.reshape(Bn, G),
                                     dh.reshape(Bn, T, G), bool(reverse), chunk_length(T, method, chunk_size))
        dA, db, dh0 = da.reshape(A.shape), db.reshape(h.shape), dh0.reshape(h0.shape)
    else:
        dA, db, dh0 = np.empty_like(A), np.empty_like(h), np.empty_like(h0)
        _block_backward(A, h, h0, dh, bool(reverse), split_columns(Bn, G, 16), dA, db, dh0)
    return dA, db, (dh0 if has_h0 else None)


# -- log-space scan ------------------------------------------------------------------------------

@kernel(parallel=True)
def _log_forward(la, lb, y0, reverse, blk, y):
    """y_t = logaddexp(log_a_t + y_{t-1}, log_b_t), NumPy's logaddexp formula."""
    B, T, D = la.shape
    nblk = (D + blk - 1) // blk
    ln2 = la.dtype.type(0.6931471805599453)
    for task in prange(B * nblk):
        i, d0 = task // nblk, (task % nblk) * blk
        t = 0
        for j in range(T):
            tp = t
            t = T - 1 - j if reverse else j
            for d in range(d0, min(D, d0 + blk)):
                yp = y0[i, d] if j == 0 else y[i, tp, d]
                y[i, t, d] = logaddexp(la[i, t, d] + yp, lb[i, t, d], ln2)


@kernel(parallel=True)
def _log_backward(la, lb, y, y0, dy, reverse, blk, dla, dlb, dy0):
    """g_t = w_{t+1} g_{t+1} + dy_t with w_t = exp(log_a_t + y_{t-1} - y_t), v_t = exp(log_b_t - y_t);
    dla = w g (so the carry w_{t+1} g_{t+1} is dla at t+1), dlb = v g, dy0 = w_1 g_1."""
    B, T, D = la.shape
    nblk = (D + blk - 1) // blk
    zero = la.dtype.type(0.0)
    for task in prange(B * nblk):
        i, d0 = task // nblk, (task % nblk) * blk
        t = 0
        for j in range(T - 1, -1, -1):
            tn = t
            t = T - 1 - j if reverse else j
            tp = T - j if reverse else j - 1
            for d in range(d0, min(D, d0 + blk)):
                yp = y0[i, d] if j == 0 else y[i, tp, d]
                g = dy[i, t, d] if j == T - 1 else dla[i, tn, d] + dy[i, t, d]
                dla[i, t, d] = safe_exp_diff(la[i, t, d] + yp, y[i, t, d], zero) * g
                dlb[i, t, d] = safe_exp_diff(lb[i, t, d], y[i, t, d], zero) * g
                if j == 0:
                    dy0[i, d] = dla[i, t, d]


def log_linear_scan_fwd(xp, log_a, log_b, log_h0=None, reverse=False, method="sequential", chunk_size=64):
    if not supported_dtype(log_a, log_b, log_h0):
        out, res = _ref.log_linear_scan_fwd(xp, log_a, log_b, log_h0, reverse, method, chunk_size)
        return out, ("reference", res)
    la, lb = contiguous(log_a), contiguous(log_b)
    has_h0 = log_h0 is not None
    y0 = contiguous(log_h0) if has_h0 else np.full((la.shape[0], la.shape[2]), -np.inf, la.dtype)
    y = np.empty_like(la)
    _log_forward(la, lb, y0, bool(reverse), split_columns(la.shape[0], la.shape[2]), y)
    return y, ("numba", la, lb, y, y0, has_h0)


def log_linear_scan_bwd(xp, res, dy, reverse=False, method="sequential", chunk_size=64):
    if res[0] == "reference":
        return _ref.log_linear_scan_bwd(xp, res[1], dy, reverse, method, chunk_size)
    _, la, lb, y, y0, has_h0 = res
    dla, dlb, dy0 = np.empty_like(la), np.empty_like(lb), np.empty_like(y0)
    _log_backward(la, lb, y, y0, as_dtype(dy, la.dtype), bool(reverse), split_columns(la.shape[0], la.shape[2]),
                  dla, dlb, dy0)
    return dla, dlb, (dy0 if has_h0 else None)


PRIMITIVES = {
    "linear_scan": (linear_scan_fwd, linear_scan_bwd),
    "block_scan": (block_scan_fwd, block_scan_bwd),
    "log_linear_scan": (log_linear_scan_fwd, log_linear_scan_bwd),
}
