"""Numba scans: ``linear_scan``, ``block_scan`` and ``log_linear_scan``, forward and VJP.

Same signatures as ``seqcore/backends/numpy/scan.py``; the residuals are this file's own.
Every kernel reads C-contiguous ``(B, T, ...)`` arrays (strided inputs are copied first)
and indexes time through ``reverse`` instead of flipping arrays.  Kernels write only arrays
allocated here, never the caller's, which may be read-only.

* ``linear_scan``: a forward and a backward kernel over *chunks* of ``C`` steps, tasks
  over (batch row, chunk, block of D).  ``method="sequential"`` is one chunk (``C = T``):
  sequential in time, parallel over B × D, and the minimum memory traffic (forward reads
  a, b and writes h; backward reads a, h, dh and writes da, db — RESEARCH §2).
  ``"chunked"`` (``C = chunk_size``) and ``"parallel"`` (about four chunks per thread) are
  parallel over T as well — used only when B × D gives fewer tasks than threads, since they
  read the inputs twice: pass 1 reduces every chunk to an affine map (product
  of gates, end state from zero), pass 2 chains the chunk carries (serial, n = T / C
  values), pass 3 rescans every chunk from its carry.  All schedules agree up to rounding.
* ``block_scan`` (k = 1 reuses the diagonal kernels; k = 2, 3 written out; k ≥ 4 in
  ``dense_blocks.py``) and ``log_linear_scan`` run sequentially in time with tasks over B × G (B × D)
  for every ``method`` — the reference's methods differ from each other only in rounding.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ..numpy import scan as _ref
from .dense_blocks import dense_kernels
from .ops import (AHEAD, AheadBuilds, as_dtype, contiguous, exp_from_parts, expm1_parts, inline, kernel,
                  log1p_coefficients, log1p_unit, num_threads, prefetch_row, split_columns, supported_dtype, task_block,
                  task_scratch)

__all__ = ["PRIMITIVES", "chunk_length"]


# -- diagonal linear scan ---------------------------------------------------------------------

# Loop shape: each task keeps its running state in a small local array and walks whole row
# segments with simple unit-stride loops — the form LLVM vectorizes (indexing h[i, t, d]
# against h[i, t - 1, d] inside one loop defeats its alias analysis).  A segment is addressed
# at an unsigned offset into the flattened array, not sliced: a slice per step costs about
# 10 ns (a reference-count update), and a signed index gets Numba's negative-index branch,
# which stops LLVM from vectorizing the loop (an unsigned one does not).

def _make_diag_forward(ahead: bool):
    """The kernel; with ``ahead``, where time runs downwards each task asks for its lines ``AHEAD``
    steps before use (ops.AheadBuilds)."""

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
        af, bf, hf = a.reshape(-1), b.reshape(-1), h.reshape(-1)
        for task in prange(B * n * nblk):
            row, d0, d1 = task_block(task, nblk, blk, D)  # rows: (batch row, chunk)
            i, c = row // n, row % n
            w = d1 - d0
            uw = np.uint64(w)
            x = np.empty(w, a.dtype)
            if reduce_only:
                pr = np.empty(w, a.dtype)
                for d in range(w):
                    x[d], pr[d] = zero, one
            else:
                for d in range(w):
                    x[d] = carry[i, c, d0 + d]
            end = min(T, c * C + C)
            for j in range(c * C, end):
                t = T - 1 - j if reverse else j
                r = np.uint64((i * T + t) * D + d0)
                if ahead:
                    if reverse and j + AHEAD < end:  # descending rows AHEAD steps on
                        rn = r - np.uint64(AHEAD * D)
                        prefetch_row(af, rn, w)
                        prefetch_row(bf, rn, w)
                        if not reduce_only:
                            prefetch_row(hf, rn, w)
                for d in range(uw):
                    x[d] = af[r + d] * x[d] + bf[r + d]
                if reduce_only:
                    for d in range(uw):
                        pr[d] = af[r + d] * pr[d]
                else:
                    for d in range(uw):
                        hf[r + d] = x[d]
            if reduce_only:
                for d in range(w):
                    carry[i, c, d0 + d], prod[i, c, d0 + d] = x[d], pr[d]
    return _diag_forward


_diag_forward = AheadBuilds(_make_diag_forward)


@kernel()
def _chain_chunks(prod, carry, x, backward):
    """Pass 2 (serial, n ≪ T): carry[:, c] ← the state entering chunk c; x (B, D) enters first.
    Returns False when a carry is not finite (the caller then scans without chunks).

    Chunks are visited from the last one when ``backward``; x leaves as the final state.  A
    chunk's product of gates overflows where |a| > 1 over the chunk even if the states stay
    finite; an exact zero state passes it as zero (the sequential scan's 0 · a · a …), not as
    inf · 0 = NaN.
    """
    B, n, D = carry.shape
    finite = True
    for i in range(B):
        for k in range(n):
            c = n - 1 - k if backward else k
            for d in range(D):
                xv = x[i, d]
                nxt = carry[i, c, d] if xv == 0 else prod[i, c, d] * xv + carry[i, c, d]
                carry[i, c, d] = xv
                x[i, d] = nxt
                finite = finite and abs(xv) < np.inf
    return finite


def _make_diag_backward(ahead: bool):
    """The kernel; with ``ahead``, where time runs downwards each task asks for its lines ``AHEAD``
    steps before use (ops.AheadBuilds)."""

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
        af, hf, dhf, daf, dbf = a.reshape(-1), h.reshape(-1), dh.reshape(-1), da.reshape(-1), db.reshape(-1)
        for task in prange(B * n * nblk):
            row, d0, d1 = task_block(task, nblk, blk, D)  # rows: (batch row, chunk)
            i, c = row // n, row % n
            w = d1 - d0
            uw = np.uint64(w)
            j0, j1 = c * C, min(T, c * C + C)
            x = np.empty(w, a.dtype)  # the carry a_{t+1} g_{t+1}
            if reduce_only:
                pr = np.empty(w, a.dtype)
                for d in range(w):
                    x[d], pr[d] = zero, one
                for j in range(j1 - 1, j0 - 1, -1):
                    t = T - 1 - j if reverse else j
                    r = np.uint64((i * T + t) * D + d0)
                    if ahead:
                        if not reverse and j - AHEAD >= j0:  # descending rows AHEAD steps on
                            rn = r - np.uint64(AHEAD * D)
                            prefetch_row(af, rn, w)
                            prefetch_row(dhf, rn, w)
                    for d in range(uw):
                        x[d] = af[r + d] * (x[d] + dhf[r + d])
                    for d in range(uw):
                        pr[d] = af[r + d] * pr[d]
                for d in range(w):
                    carry[i, c, d0 + d], prod[i, c, d0 + d] = x[d], pr[d]
                continue
            for d in range(w):
                x[d] = carry[i, c, d0 + d]
            for j in range(j1 - 1, j0 - 1, -1):
                t = T - 1 - j if reverse else j
                r = np.uint64((i * T + t) * D + d0)
                if ahead:
                    if not reverse and j - AHEAD > j0:  # descending rows AHEAD steps on (and h's row before)
                        rn = r - np.uint64(AHEAD * D)
                        prefetch_row(af, rn, w)
                        prefetch_row(dhf, rn, w)
                        prefetch_row(dbf, rn, w)
                        prefetch_row(daf, rn, w)
                        prefetch_row(hf, rn - np.uint64(D), w)
                for d in range(uw):
                    dbf[r + d] = x[d] + dhf[r + d]
                if j > 0:  # h_{t-1} in scan order
                    rp = np.uint64((i * T + (T - j if reverse else j - 1)) * D + d0)
                    for d in range(uw):
                        daf[r + d] = dbf[r + d] * hf[rp + d]
                else:
                    hp = h0[i, d0:d1]
                    for d in range(w):
                        daf[r + np.uint64(d)] = dbf[r + np.uint64(d)] * hp[d]
                for d in range(uw):
                    x[d] = af[r + d] * dbf[r + d]
            if j0 == 0:
                for d in range(w):
                    dh0[i, d0 + d] = x[d]
    return _diag_backward


_diag_backward = AheadBuilds(_make_diag_backward)


# Elements per thread below which time is never cut: the chunked schedule reads the inputs
# twice and adds two parallel launches and a serial carry chain.  Measured on 2 threads
# (float32, forward + backward): one row of 16 or 64 columns ran 1.1-1.4x slower chunked
# than sequential up to 2^20 elements per thread, and 0.89x at 2^23 (BENCHMARKS.md).
CHUNK_MIN_WORK = 1 << 20


def chunk_length(B: int, T: int, D: int, method: str, chunk_size: int) -> int:
    """Steps per chunk of the diagonal kernels (``T``: one chunk, no pass over T).

    ``"chunked"`` / ``"parallel"`` cut time only when the B × D tasks (rows × blocks of 64
    columns) leave a thread idle and every thread gets at least ``CHUNK_MIN_WORK`` elements:
    chunking reads the inputs twice, so with a task per thread, or little work, it only
    costs (measured on 2 threads: 1.4–2.2× slower than one chunk for 2–6 rows of 64 columns,
    T = 2048–65536; BENCHMARKS.md).  ``"parallel"`` then cuts about four chunks per thread,
    ``"chunked"`` chunks of ``chunk_size`` steps unless that gives more: finer chunks only
    lengthen the serial carry chain (one row, T = 65536: 1.45× slower with 64-step chunks).
    """
    threads = num_threads()
    if method == "sequential" or B * -(-D // 64) >= threads or B * T * D < threads * CHUNK_MIN_WORK:
        return T
    per_thread = -(-T // (4 * threads))
    if method == "chunked":
        return max(1, min(max(chunk_size, per_thread), T))
    return max(1, per_thread)


def _diag_scan(a, b, h0, reverse, C):
    """Forward of the diagonal scan on contiguous (B, T, D) arrays; h0 (B, D) never None."""
    B, T, D = a.shape
    n = -(-T // C)
    blk = split_columns(B * n, D)
    h = np.empty_like(a)
    forward = _diag_forward.for_width(blk)
    if n == 1:  # one chunk entered from h0
        # a copy, not a view of h0: the kernel writes carry and prod in pass 1, so a read-only h0
        # as those arguments fails to compile even though this pass only reads them
        carry = h0.reshape(B, 1, D).copy()
        forward(a, b, carry, carry, reverse, C, blk, False, h)
        return h
    carry, prod = np.empty((B, n, D), a.dtype), np.empty((B, n, D), a.dtype)
    forward(a, b, carry, prod, reverse, C, blk, True, h)
    if not _chain_chunks(prod, carry, h0.copy(), False):  # an overflowed product met a state
        return _diag_scan(a, b, h0, reverse, T)
    forward(a, b, carry, prod, reverse, C, blk, False, h)
    return h


def _diag_scan_vjp(a, h, h0, dh, reverse, C):
    B, T, D = a.shape
    n = -(-T // C)
    blk = split_columns(B * n, D)
    carry, prod = np.zeros((B, n, D), a.dtype), np.empty((B, n, D), a.dtype)
    da, db, dh0 = np.empty_like(a), np.empty_like(a), np.empty_like(h0)
    backward = _diag_backward.for_width(blk)
    if n > 1:
        backward(a, h, h0, dh, carry, prod, reverse, C, blk, True, da, db, dh0)
        if not _chain_chunks(prod, carry, np.zeros_like(h0), True):
            return _diag_scan_vjp(a, h, h0, dh, reverse, T)
    backward(a, h, h0, dh, carry, prod, reverse, C, blk, False, da, db, dh0)
    return da, db, dh0


def linear_scan_fwd(xp, a, b, h0=None, reverse=False, method="sequential", chunk_size=64):
    """Replacement of the reference ``linear_scan`` forward: ``a, b (B, T, D), h0 (B, D) | None -> h``."""
    if not supported_dtype(a, b, h0):
        out, res = _ref.linear_scan_fwd(xp, a, b, h0, reverse, method, chunk_size)
        return out, ("reference", res)
    a, b = contiguous(a), contiguous(b)
    has_h0 = h0 is not None
    h0 = contiguous(h0) if has_h0 else np.zeros((a.shape[0], a.shape[2]), a.dtype)
    h = _diag_scan(a, b, h0, bool(reverse), chunk_length(*a.shape, method, chunk_size))
    return h, ("numba", a, h, h0, has_h0)


def linear_scan_bwd(xp, res, dh, reverse=False, method="sequential", chunk_size=64):
    """VJP: ``dh (B, T, D) -> (da, db, dh0 or None)``."""
    if res[0] == "reference":
        return _ref.linear_scan_bwd(xp, res[1], dh, reverse, method, chunk_size)
    _, a, h, h0, has_h0 = res
    C = chunk_length(*a.shape, method, chunk_size)
    da, db, dh0 = _diag_scan_vjp(a, h, h0, as_dtype(dh, a.dtype), bool(reverse), C)
    return da, db, (dh0 if has_h0 else None)


# -- block-diagonal / dense scan --------------------------------------------------------------
# h_t[g] = A_t[g] @ h_{t-1}[g] + b_t[g]; backward g_t = A_{t+1}^T g_{t+1} + dh_t,
# dA_t = g_t h_{t-1}^T, db = g, dh0 = A_1^T g_1.  Tasks: B × blocks of groups.

# Scalar indexing throughout: an array view per group and step would cost two atomic
# reference-count updates, more than the 2×2 product itself.

@inline
def _entry(A, i, t, g, r, q, transposed):
    """``A[i, t, g, r, q]``, or ``A[i, t, g, q, r]`` when ``A`` holds the transposed blocks."""
    return A[i, t, g, q, r] if transposed else A[i, t, g, r, q]


@kernel(parallel=True)
def _block_forward(A, b, h0, reverse, transposed, blk, h):
    """Tasks: (batch row, block of groups).  k = 2 and 3 written out (k ≥ 4: ``dense_blocks.py``).
    ``transposed``: ``A`` holds each block transposed (the caller's operand was a swapped view)."""
    B, T, G, k = b.shape
    zero = b.dtype.type(0.0)
    nblk = (G + blk - 1) // blk
    for task in prange(B * nblk):
        i, g0, g1 = task_block(task, nblk, blk, G)
        t = T - 1 if reverse else 0
        for g in range(g0, g1):  # the first step from h0
            for r in range(k):
                acc = zero
                for q in range(k):
                    acc += _entry(A, i, t, g, r, q, transposed) * h0[i, g, q]
                h[i, t, g, r] = acc + b[i, t, g, r]
        for j in range(1, T):
            tp = t
            t = T - 1 - j if reverse else j
            if k == 2:
                for g in range(g0, g1):
                    p0, p1 = h[i, tp, g, 0], h[i, tp, g, 1]
                    a01, a10 = _entry(A, i, t, g, 0, 1, transposed), _entry(A, i, t, g, 1, 0, transposed)
                    h[i, t, g, 0] = (A[i, t, g, 0, 0] * p0 + a01 * p1) + b[i, t, g, 0]
                    h[i, t, g, 1] = (a10 * p0 + A[i, t, g, 1, 1] * p1) + b[i, t, g, 1]
            else:
                for g in range(g0, g1):
                    p0, p1, p2 = h[i, tp, g, 0], h[i, tp, g, 1], h[i, tp, g, 2]
                    for r in range(3):
                        h[i, t, g, r] = (_entry(A, i, t, g, r, 0, transposed) * p0
                                         + _entry(A, i, t, g, r, 1, transposed) * p1
                                         + _entry(A, i, t, g, r, 2, transposed) * p2) + b[i, t, g, r]


@kernel(parallel=True)
def _block_backward(A, h, h0, dh, reverse, blk, dA, db, dh0):
    """g_t = A_{t+1}^T g_{t+1} + dh_t; dA_t = g_t h_{t-1}^T; db = g; dh0 = A_1^T g_1 (scan order);
    k = 2 and 3 (k ≥ 4: ``dense_blocks.py``)."""
    B, T, G, k = dh.shape
    zero = dh.dtype.type(0.0)
    nblk = (G + blk - 1) // blk
    for task in prange(B * nblk):
        i, g0, g1 = task_block(task, nblk, blk, G)
        t = 0
        for j in range(T - 1, -1, -1):
            tn = t
            t = T - 1 - j if reverse else j
            if j == T - 1:
                for g in range(g0, g1):
                    for r in range(k):
                        db[i, t, g, r] = dh[i, t, g, r]
            elif k == 2:
                for g in range(g0, g1):
                    n0, n1 = db[i, tn, g, 0], db[i, tn, g, 1]
                    db[i, t, g, 0] = (A[i, tn, g, 0, 0] * n0 + A[i, tn, g, 1, 0] * n1) + dh[i, t, g, 0]
                    db[i, t, g, 1] = (A[i, tn, g, 0, 1] * n0 + A[i, tn, g, 1, 1] * n1) + dh[i, t, g, 1]
            else:
                for g in range(g0, g1):
                    n0, n1, n2 = db[i, tn, g, 0], db[i, tn, g, 1], db[i, tn, g, 2]
                    for r in range(3):
                        db[i, t, g, r] = (A[i, tn, g, 0, r] * n0 + A[i, tn, g, 1, r] * n1
                                          + A[i, tn, g, 2, r] * n2) + dh[i, t, g, r]
            if j > 0:
                tp = T - j if reverse else j - 1
                for g in range(g0, g1):
                    for r in range(k):
                        for q in range(k):
                            dA[i, t, g, r, q] = db[i, t, g, r] * h[i, tp, g, q]
            else:
                for g in range(g0, g1):
                    for r in range(k):
                        for q in range(k):
                            dA[i, t, g, r, q] = db[i, t, g, r] * h0[i, g, q]
                    for q in range(k):
                        acc = zero
                        for r in range(k):
                            acc += A[i, t, g, r, q] * db[i, t, g, r]
                        dh0[i, g, q] = acc


def block_scan_fwd(xp, A, b, h0=None, reverse=False, method="sequential", chunk_size=64):
    """Replacement of ``block_scan``: ``A (B, T, G, k, k), b (B, T, G, k), h0 (B, G, k) | None -> h``."""
    if not supported_dtype(A, b, h0):
        out, res = _ref.block_scan_fwd(xp, A, b, h0, reverse, method, chunk_size)
        return out, ("reference", res)
    b = contiguous(b)
    Bn, T, G, k = b.shape
    has_h0 = h0 is not None
    h0 = contiguous(h0) if has_h0 else np.zeros((Bn, G, k), b.dtype)
    if k == 1:  # diagonal: the linear-scan kernel on (B, T, G)
        A = contiguous(A)
        h = _diag_scan(A.reshape(Bn, T, G), b.reshape(Bn, T, G), h0.reshape(Bn, G), bool(reverse),
                       chunk_length(Bn, T, G, method, chunk_size)).reshape(b.shape)
        return h, ("numba", A, h, h0, has_h0)
    # blocks transposed in place (a swapped view, as the Newton adjoint passes Jᵀ) are read as
    # they lie instead of copied; the residual keeps the view and the backward copies it
    At = np.swapaxes(A, -1, -2)
    transposed = not A.flags.c_contiguous and At.flags.c_contiguous
    if not transposed:
        A = contiguous(A)
    h = np.empty_like(b)
    forward = _block_forward if k <= 3 else dense_kernels(k)[0]
    forward(At if transposed else A, b, h0, bool(reverse), transposed, split_columns(Bn, G, 16), h)
    return h, ("numba", A, h, h0, has_h0)


def block_scan_bwd(xp, res, dh, reverse=False, method="sequential", chunk_size=64):
    """VJP: ``dh (B, T, G, k) -> (dA, db, dh0 or None)``."""
    if res[0] == "reference":
        return _ref.block_scan_bwd(xp, res[1], dh, reverse, method, chunk_size)
    _, A, h, h0, has_h0 = res
    A, dh = contiguous(A), as_dtype(dh, h.dtype)
    Bn, T, G, k = h.shape
    if k == 1:
        da, db, dh0 = _diag_scan_vjp(A.reshape(Bn, T, G), h.reshape(Bn, T, G), h0.reshape(Bn, G),
                                     dh.reshape(Bn, T, G), bool(reverse),
                                     chunk_length(Bn, T, G, method, chunk_size))
        dA, db, dh0 = da.reshape(A.shape), db.reshape(h.shape), dh0.reshape(h0.shape)
    else:
        dA, db, dh0 = np.empty_like(A), np.empty_like(h), np.empty_like(h0)
        backward = _block_backward if k <= 3 else dense_kernels(k)[1]
        backward(A, h, h0, dh, bool(reverse), split_columns(Bn, G, 16), dA, db, dh0)
    return dA, db, (dh0 if has_h0 else None)


# -- log-space scan ------------------------------------------------------------------------------

# Row form with a vectorized exp (ops.expm1_parts) and log1p: logaddexp(x, z) =
# max(x, z) + log1p(exp(−|x − z|)); per-task scratch rows come from the caller.

@kernel(parallel=True)
def _log_forward(la, lb, y0, reverse, blk, coef, y, u, q, kbits):
    """y_t = logaddexp(log_a_t + y_{t-1}, log_b_t).  u, q, kbits: (tasks, blk) scratch."""
    B, T, D = la.shape
    nblk = (D + blk - 1) // blk
    zero, one, two = la.dtype.type(0.0), la.dtype.type(1.0), la.dtype.type(2.0)
    ln2, sqrt2 = la.dtype.type(0.6931471805599453), la.dtype.type(1.4142135623730951)
    for task in prange(B * nblk):
        i, d0, d1 = task_block(task, nblk, blk, D)
        w = d1 - d0
        x, mx = np.empty(w, la.dtype), np.empty(w, la.dtype)
        uu, qq, kk = u[task, :w], q[task, :w], kbits[task, :w]
        sc = kk.view(la.dtype)
        for d in range(w):
            x[d] = y0[i, d0 + d]
        for j in range(T):
            t = T - 1 - j if reverse else j
            ar, br, yr = la[i, t, d0:d1], lb[i, t, d0:d1], y[i, t, d0:d1]
            for d in range(w):
                xd, bd = ar[d] + x[d], br[d]
                mx[d] = bd if xd < bd else xd  # a NaN in xd stays; one in bd reaches uu
                # equal inputs (±inf included) add log 2, as numpy.logaddexp: not inf − inf = NaN
                uu[d] = zero if xd == bd else -abs(xd - bd)
            expm1_parts(uu, qq, kk)
            for d in range(w):
                x[d] = mx[d] + log1p_unit(exp_from_parts(qq[d], sc[d], one), one, two, sqrt2, ln2, coef)
            for d in range(w):
                yr[d] = x[d]


@kernel(parallel=True)
def _log_backward(la, lb, y, y0, dy, reverse, blk, dla, dlb, dy0, u, q, kbits):
    """g_t = w_{t+1} g_{t+1} + dy_t with w_t = exp(log_a_t + y_{t-1} - y_t), v_t = exp(log_b_t - y_t);
    dla = w g (so the carry w_{t+1} g_{t+1} is dla at t+1), dlb = v g, dy0 = w_1 g_1.
    A weight is 0 where its numerator is −inf; y = −inf counts as 0 (the reference's rule).
    u, q, kbits: (tasks, 2 blk) scratch."""
    B, T, D = la.shape
    nblk = (D + blk - 1) // blk
    zero, one = la.dtype.type(0.0), la.dtype.type(1.0)
    for task in prange(B * nblk):
        i, d0, d1 = task_block(task, nblk, blk, D)
        w = d1 - d0
        carry, num = np.zeros(w, la.dtype), np.empty(w, la.dtype)
        uu, qq, kk = u[task, :2 * w], q[task, :2 * w], kbits[task, :2 * w]
        sc = kk.view(la.dtype)
        for j in range(T - 1, -1, -1):
            t = T - 1 - j if reverse else j
            yp = y[i, T - j if reverse else j - 1, d0:d1] if j > 0 else y0[i, d0:d1]
            ar, br, yr = la[i, t, d0:d1], lb[i, t, d0:d1], y[i, t, d0:d1]
            dyr, dar, dbr = dy[i, t, d0:d1], dla[i, t, d0:d1], dlb[i, t, d0:d1]
            for d in range(w):
                num[d] = ar[d] + yp[d]
                yy = zero if yr[d] == -np.inf else yr[d]
                uu[d] = num[d] - yy
                uu[w + d] = br[d] - yy
            expm1_parts(uu, qq, kk)
            for d in range(w):
                g = carry[d] + dyr[d]
                wt = zero if num[d] == -np.inf else exp_from_parts(qq[d], sc[d], one)
                vt = zero if br[d] == -np.inf else exp_from_parts(qq[w + d], sc[w + d], one)
                dar[d] = wt * g
                dbr[d] = vt * g
                carry[d] = dar[d]
        for d in range(w):
            dy0[i, d0 + d] = carry[d]


def log_linear_scan_fwd(xp, log_a, log_b, log_h0=None, reverse=False, method="sequential", chunk_size=64):
    """Replacement of ``log_linear_scan``: ``log_a, log_b (B, T, D), log_h0 (B, D) | None -> log_h``."""
    if not supported_dtype(log_a, log_b, log_h0):
        out, res = _ref.log_linear_scan_fwd(xp, log_a, log_b, log_h0, reverse, method, chunk_size)
        return out, ("reference", res)
    la, lb = contiguous(log_a), contiguous(log_b)
    has_h0 = log_h0 is not None
    y0 = contiguous(log_h0) if has_h0 else np.full((la.shape[0], la.shape[2]), -np.inf, la.dtype)
    y = np.empty_like(la)
    B, T, D = la.shape
    blk = split_columns(B, D)
    _log_forward(la, lb, y0, bool(reverse), blk, log1p_coefficients(la.dtype), y,
                 *task_scratch(B, D, blk, 1, la.dtype)[1:])
    return y, ("numba", la, lb, y, y0, has_h0)


def log_linear_scan_bwd(xp, res, dy, reverse=False, method="sequential", chunk_size=64):
    """VJP: ``dy (B, T, D) -> (dlog_a, dlog_b, dlog_h0 or None)``."""
    if res[0] == "reference":
        return _ref.log_linear_scan_bwd(xp, res[1], dy, reverse, method, chunk_size)
    _, la, lb, y, y0, has_h0 = res
    dla, dlb, dy0 = np.empty_like(la), np.empty_like(lb), np.empty_like(y0)
    B, T, D = la.shape
    blk = split_columns(B, D)
    _log_backward(la, lb, y, y0, as_dtype(dy, la.dtype), bool(reverse), blk, dla, dlb, dy0,
                  *task_scratch(B, D, blk, 2, la.dtype)[1:])
    return dla, dlb, (dy0 if has_h0 else None)


PRIMITIVES = {
    "linear_scan": (linear_scan_fwd, linear_scan_bwd),
    "block_scan": (block_scan_fwd, block_scan_bwd),
    "log_linear_scan": (log_linear_scan_fwd, log_linear_scan_bwd),
}
