"""Scan schedules for associative recurrences, shared by every reference scan.

A recurrence is described by its *elements* (a tuple of arrays whose axis 1 is time),
an associative ``combine(earlier, later)``, the ``apply(element, state)`` map that
advances a state, and an ``identity`` element (used to pad chunks).  Three schedules:

- ``sequential``: apply the elements one step after another (the spec);
- ``parallel``: Hillis–Steele prefix scan, ⌈log2 T⌉ rounds, any T ≥ 1;
- ``chunked``: sequential inside chunks of ``chunk_size`` steps (all chunks at once), a
  scan over the chunk carries, then a fix-up — the schedule GPU scan kernels use.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class Recurrence(NamedTuple):
    combine: Callable    # (earlier, later) -> element
    apply: Callable      # (element, state) -> state
    identity: Callable   # (xp, like_element, n_steps) -> element of n_steps identity steps
    # True where combined elements carry products of transitions, which overflow over long
    # spans of |a| > 1 where the states themselves stay finite (an exact zero then meets inf)
    forms_products: bool = False


def _take(elems, sl, axis=1):
    idx = (slice(None),) * axis + (sl,)
    return tuple(e[idx] for e in elems)


def sequential(xp, rec: Recurrence, elems, h0):
    """States ``h_t`` for t = 1..T, stacked on axis 1; ``h0`` has no time axis."""
    T = elems[0].shape[1]
    h = h0
    out = []
    for t in range(T):
        h = rec.apply(_take(elems, t), h)
        out.append(h)
    return xp.stack(out, axis=1)


def _inclusive_hillis_steele(xp, rec, elems, axis):
    T = elems[0].shape[axis]
    off = 1
    while off < T:
        earlier = _take(elems, slice(None, T - off), axis)
        later = _take(elems, slice(off, None), axis)
        new = rec.combine(earlier, later)
        head = _take(elems, slice(None, off), axis)
        elems = tuple(xp.concatenate([h, n], axis=axis) for h, n in zip(head, new))
        off *= 2
    return elems


def parallel(xp, rec: Recurrence, elems, h0):
    prefix = _inclusive_hillis_steele(xp, rec, elems, axis=1)
    return rec.apply(prefix, xp.expand_dims(h0, 1))


def chunked(xp, rec: Recurrence, elems, h0, chunk_size: int = 64):
    B, T = elems[0].shape[:2]
    C = max(1, min(chunk_size, T))
    n = -(-T // C)
    pad = n * C - T
    if pad:
        ident = rec.identity(xp, elems, pad)
        elems = tuple(xp.concatenate([e, i], axis=1) for e, i in zip(elems, ident))
    # (B, n, C, ...): local inclusive scan inside every chunk, all chunks at once
    local = tuple(e.reshape((B, n, C) + e.shape[2:]) for e in elems)
    acc = _take(local, 0, axis=2)
    steps = [acc]
    for c in range(1, C):
        acc = rec.combine(acc, _take(local, c, axis=2))
        steps.append(acc)
    local = tuple(xp.stack(parts, axis=2) for parts in zip(*steps))
    # carries: the state entering each chunk
    last = _take(local, C - 1, axis=2)
    carries, h = [], h0
    for k in range(n):
        carries.append(h)
        h = rec.apply(_take(last, k), h)
    carry = xp.stack(carries, axis=1)  # (B, n, ...)
    h = rec.apply(local, xp.expand_dims(carry, 2))
    h = h.reshape((B, n * C) + h.shape[3:])
    return h[:, :T]



def run(xp, rec: Recurrence, elems, h0, method: str, chunk_size: int = 64):
    """States of the recurrence under ``method``.  A parallel or chunked result that is not
    finite is recomputed sequentially: their combined elements hold products of many
    transitions, which can overflow (|a| > 1 over a long span) where the sequential states stay
    finite, and an overflowed product times an exact zero (a zero input, a zero initial state)
    gives NaN.  So every method returns finite states wherever the sequential scan does."""
    if method == "sequential":
        return sequential(xp, rec, elems, h0)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowed product is caught below
        h = chunked(xp, rec, elems, h0, chunk_size) if method == "chunked" else parallel(xp, rec, elems, h0)
    if rec.forms_products and not bool(xp.isfinite(h).all()):
        return sequential(xp, rec, elems, h0)  # its own warnings, if any, are the input's
    return h


# -- the three recurrences of seqcore --------------------------------------------------------

def _diag_identity(xp, like, n):
    a, b = like
    shape = (a.shape[0], n) + a.shape[2:]
    return xp.ones(shape, a.dtype), xp.zeros(shape, b.dtype)


DIAGONAL = Recurrence(
    combine=lambda e, l: (l[0] * e[0], l[0] * e[1] + l[1]),
    apply=lambda el, h: el[0] * h + el[1],
    identity=_diag_identity,
    forms_products=True,
)


def matvec(A, v):
    """``A @ v`` over leading axes (``A: (..., k, k)``, ``v: (..., k)``); for k ≤ 3 unrolled
    into elementwise products, as :func:`_matmul` (2.6× faster at k = 2, float32)."""
    k = A.shape[-1]
    if k > 3:
        return (A @ v[..., None])[..., 0]
    out = A[..., :, 0] * v[..., 0, None]
    for i in range(1, k):
        out += A[..., :, i] * v[..., i, None]
    return out


def _block_identity(xp, like, n):
    A, b = like
    k = A.shape[-1]
    eye = xp.broadcast_to(xp.eye(k, dtype=A.dtype), (A.shape[0], n) + A.shape[2:]) + 0
    return eye, xp.zeros((b.shape[0], n) + b.shape[2:], b.dtype)


def _matmul(A, B):
    """``A @ B`` over leading axes; for blocks of size ≤ 3 unrolled into elementwise products,
    which NumPy runs several times faster than a batch of tiny matrix products."""
    k = A.shape[-1]
    if k > 3:
        return A @ B
    out = A[..., :, 0, None] * B[..., None, 0, :]
    for i in range(1, k):
        out = out + A[..., :, i, None] * B[..., None, i, :]
    return out


BLOCK = Recurrence(
    combine=lambda e, l: (_matmul(l[0], e[0]), matvec(l[0], e[1]) + l[1]),
    apply=lambda el, h: matvec(el[0], h) + el[1],
    identity=_block_identity,
    forms_products=True,
)


def _log_identity(xp, like, n):
    la, lb = like
    shape = (la.shape[0], n) + la.shape[2:]
    return xp.zeros(shape, la.dtype), xp.full(shape, -xp.inf, dtype=lb.dtype)


def _logaddexp(x, y):
    import numpy as np  # logaddexp exists in every NumPy-like namespace as a ufunc
    return np.logaddexp(x, y)


LOG = Recurrence(
    combine=lambda e, l: (l[0] + e[0], _logaddexp(l[0] + e[1], l[1])),
    apply=lambda el, y: _logaddexp(el[0] + y, el[1]),
    identity=_log_identity,
)
