"""CuPy scans: ``linear_scan`` and ``block_scan`` (k = 1, 2, 3, 4), forward and VJP, as CUDA
kernels (``kernels/linear_scan.cu``, ``kernels/block_scan.cu``).

Same signatures as ``seqcore/backends/numpy/scan.py``; the residuals are this file's own.
The kernels read C-contiguous ``(B, T, D)`` arrays (blocks: ``(B, T, G, k, k)`` and
``(B, T, G, k)``; strided inputs, such as the transposed views of the Newton adjoint, are
copied first), index time through ``reverse`` instead of flipping arrays, and write only
arrays allocated here.

Methods choose the chunk length ``C`` (all agree up to rounding):

* ``"sequential"``: one chunk (``C = T``), sequential in time and parallel over B × D, the
  least memory traffic (forward reads a, b and writes h; VJP reads a, h, dh and writes da, db);
* ``"chunked"``: chunks of ``chunk_size`` steps;
* ``"parallel"``: chunks short enough that B × chunks × D (× G) threads fill the GPU (at least
  ``MIN_CHUNK`` steps each, at most ``MAX_CHUNKS`` chunks).

Several chunks take three passes: each chunk reduced to an affine map (product of gates or
blocks, end state from zero), the chunks' entry states chained, every chunk rescanned from its entry.
Where a chunk's product of gates overflows (|a| > 1 over long chunks), chaining would give
inf · 0 = NaN: the scan is then redone as one chunk. Dtypes other than float32/float64 (or
mixed), and blocks larger than 4 × 4 (the dense Jacobians of GRU/LSTM Newton solves), run the
reference.
"""
from __future__ import annotations

import functools
from pathlib import Path

import cupy
import numpy as np

from ..numpy import scan as _ref

__all__ = ["PRIMITIVES", "chunk_length"]

THREADS_PER_BLOCK = 256
# threads that keep an H100/H200-class GPU's memory system busy (132 SMs × 2048 resident)
TARGET_THREADS = 1 << 18
MIN_CHUNK = 16
# the chunks' entry states are chained serially: at most this many chunks per sequence
MAX_CHUNKS = 1024

BLOCK_SIZES = (2, 3, 4)  # block_scan's k with kernels (k = 1 runs the diagonal ones; larger k the reference)

_KERNELS = Path(__file__).with_name("kernels")
_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


def _names(prefix: str, sizes: list[str]) -> list[str]:
    """Every template instance of one kernel file: ``<ctype[, k]>``, the reduction also ``<..., vjp>``."""
    out = []
    for t in _CTYPES.values():
        for k in sizes:
            args = ", ".join(filter(None, (t, k)))
            out += [f"{prefix}chunk_reduce<{args}, {v}>" for v in ("false", "true")]
            out += [f"{prefix}{name}<{args}>" for name in ("chain_chunks", "chunk_scan", "chunk_scan_vjp")]
    return out


@functools.lru_cache(maxsize=None)
def _module(block: bool) -> cupy.RawModule:
    """The compiled kernels of ``linear_scan.cu`` or ``block_scan.cu`` (NVRTC, cached on disk by CuPy)."""
    source = _KERNELS / ("block_scan.cu" if block else "linear_scan.cu")
    names = _names("block_", [str(k) for k in BLOCK_SIZES]) if block else _names("", [""])
    return cupy.RawModule(code=source.read_text(), options=("-std=c++17",), name_expressions=names)


@functools.lru_cache(maxsize=None)
def _kernel(name: str, dtype: np.dtype, k: int | None, vjp: bool | None) -> cupy.RawKernel:
    """One template instance (looked up once: every launch pays the host's time, not the GPU's)."""
    template = ", ".join(filter(None, (_CTYPES[dtype], k and str(k), None if vjp is None else str(vjp).lower())))
    return _module(k is not None).get_function(f"{'block_' if k else ''}{name}<{template}>")


def _launch(name: str, dtype, k: int | None, threads: int, args, vjp: bool | None = None) -> None:
    blocks = (threads + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    _kernel(name, np.dtype(dtype), k, vjp)((blocks,), (THREADS_PER_BLOCK,), args)


def chunk_length(B: int, T: int, D: int, method: str, chunk_size: int) -> int:
    """Steps per chunk for ``method`` (see the module docstring)."""
    if method == "sequential":
        return T
    if method == "chunked":
        return max(1, min(T, int(chunk_size)))
    chunks = min(-(-TARGET_THREADS // max(1, B * D)), max(1, T // MIN_CHUNK), MAX_CHUNKS)
    return -(-T // chunks)


def _supported(*arrays) -> bool:
    arrays = [x for x in arrays if x is not None]
    return (all(isinstance(x, cupy.ndarray) for x in arrays) and arrays[0].dtype in _CTYPES
            and all(x.dtype == arrays[0].dtype for x in arrays) and all(x.size for x in arrays))


# Shapes the kernels index by: anything else goes to the reference, which names the misfit
# (a kernel would read past the end of an array instead).
def _linear_shapes_fit(a, b, h0) -> bool:
    return a.ndim == 3 and a.shape == b.shape and (h0 is None or h0.shape == (a.shape[0], a.shape[2]))


def _block_shapes_fit(A, b, h0) -> bool:
    return (b.ndim == 4 and A.shape == b.shape + b.shape[-1:]
            and (h0 is None or h0.shape == (b.shape[0],) + b.shape[2:]))


def _scan(a, x, init, C: int, flip: bool, vjp: bool, h=None, h0=None, k: int | None = None):
    """One scan: ``h`` (forward), or ``(db, da, dh0)`` (VJP: ``x = dh``, ``init`` zeros).

    Diagonal (``k`` None): ``a, x (B, T, D)``, ``init (B, D)``. Blocks: ``a (B, T, G, k, k)``,
    ``x (B, T, G, k)``, ``init (B, G, k)``. Threads run over (row, chunk, channel or group)."""
    B, T, G = x.shape[:3]
    n = -(-T // C)
    i64 = np.int64
    sizes = (i64(B), i64(T), i64(G), i64(C), np.int32(flip))
    if n > 1:
        prod, end = cupy.empty((B, n) + a.shape[2:], a.dtype), cupy.empty((B, n) + x.shape[2:], a.dtype)
        _launch("chunk_reduce", a.dtype, k, B * n * G, (a, x, *sizes, prod, end), vjp=vjp)
        if not bool(cupy.isfinite(prod).all()):  # chaining would multiply inf by a zero state
            return _scan(a, x, init, T, flip, vjp, h, h0, k)
        entry = cupy.empty((B, n) + x.shape[2:], a.dtype)
        _launch("chain_chunks", a.dtype, k, B * G, (prod, end, init, i64(B), i64(n), i64(G), entry))
    else:
        entry = init
    if not vjp:
        out = cupy.empty_like(x)
        _launch("chunk_scan", a.dtype, k, B * n * G, (a, x, entry, *sizes, out))
        return out
    db, da, dh0 = cupy.empty_like(x), cupy.empty_like(a), cupy.empty_like(init)
    _launch("chunk_scan_vjp", a.dtype, k, B * n * G, (a, x, entry, *sizes, h, h0, db, da, dh0))
    return db, da, dh0


def linear_scan_fwd(xp, a, b, h0=None, reverse=False, method="sequential", chunk_size=64):
    """Replacement of the reference ``linear_scan`` forward: ``a, b (B, T, D), h0 (B, D) | None -> h``."""
    if not (_supported(a, b, h0) and _linear_shapes_fit(a, b, h0)):  # the reference names a misfit
        out, res = _ref.linear_scan_fwd(xp, a, b, h0, reverse, method, chunk_size)
        return out, ("reference", res)
    a, b = cupy.ascontiguousarray(a), cupy.ascontiguousarray(b)
    has_h0 = h0 is not None
    h0 = cupy.ascontiguousarray(h0) if has_h0 else cupy.zeros((a.shape[0], a.shape[2]), a.dtype)
    h = _scan(a, b, h0, chunk_length(*a.shape, method, chunk_size), bool(reverse), False)
    return h, ("cuda", a, h, h0, has_h0)


def linear_scan_bwd(xp, res, dh, reverse=False, method="sequential", chunk_size=64):
    """VJP: ``dh (B, T, D) -> (da, db, dh0 or None)``."""
    if res[0] == "reference":
        return _ref.linear_scan_bwd(xp, res[1], dh, reverse, method, chunk_size)
    _, a, h, h0, has_h0 = res
    dh = cupy.ascontiguousarray(dh, dtype=a.dtype)
    C = chunk_length(*a.shape, method, chunk_size)
    db, da, dh0 = _scan(a, dh, cupy.zeros_like(h0), C, not reverse, True, h, h0)
    return da, db, (dh0 if has_h0 else None)


def block_scan_fwd(xp, A, b, h0=None, reverse=False, method="sequential", chunk_size=64):
    """Replacement of ``block_scan``: ``A (B, T, G, k, k), b (B, T, G, k), h0 (B, G, k) | None -> h``."""
    if not (_supported(A, b, h0) and _block_shapes_fit(A, b, h0)) or b.shape[-1] not in (1,) + BLOCK_SIZES:
        out, res = _ref.block_scan_fwd(xp, A, b, h0, reverse, method, chunk_size)
        return out, ("reference", res)
    A, b = cupy.ascontiguousarray(A), cupy.ascontiguousarray(b)
    Bn, T, G, k = b.shape
    has_h0 = h0 is not None
    h0 = cupy.ascontiguousarray(h0) if has_h0 else cupy.zeros((Bn, G, k), b.dtype)
    C = chunk_length(Bn, T, G, method, chunk_size)
    if k == 1:  # diagonal: the linear-scan kernels on (B, T, G)
        h = _scan(A.reshape(Bn, T, G), b.reshape(Bn, T, G), h0.reshape(Bn, G), C, bool(reverse), False)
        h = h.reshape(b.shape)
    else:
        h = _scan(A, b, h0, C, bool(reverse), False, k=k)
    return h, ("cuda", A, h, h0, has_h0)


def block_scan_bwd(xp, res, dh, reverse=False, method="sequential", chunk_size=64):
    """VJP: ``dh (B, T, G, k) -> (dA, db, dh0 or None)``."""
    if res[0] == "reference":
        return _ref.block_scan_bwd(xp, res[1], dh, reverse, method, chunk_size)
    _, A, h, h0, has_h0 = res
    Bn, T, G, k = h.shape
    dh = cupy.ascontiguousarray(dh, dtype=A.dtype)
    C = chunk_length(Bn, T, G, method, chunk_size)
    if k == 1:
        db, dA, dh0 = _scan(A.reshape(Bn, T, G), dh.reshape(Bn, T, G), cupy.zeros((Bn, G), A.dtype), C,
                            not reverse, True, h.reshape(Bn, T, G), h0.reshape(Bn, G))
        db, dA, dh0 = db.reshape(h.shape), dA.reshape(A.shape), dh0.reshape(h0.shape)
    else:
        db, dA, dh0 = _scan(A, dh, cupy.zeros_like(h0), C, not reverse, True, h, h0, k=k)
    return dA, db, (dh0 if has_h0 else None)


PRIMITIVES = {"linear_scan": (linear_scan_fwd, linear_scan_bwd), "block_scan": (block_scan_fwd, block_scan_bwd)}
