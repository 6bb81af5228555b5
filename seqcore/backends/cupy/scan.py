"""CuPy scans: ``linear_scan`` forward and VJP as CUDA kernels (``kernels/linear_scan.cu``).

Same signatures as ``seqcore/backends/numpy/scan.py``; the residuals are this file's own.
The kernels read C-contiguous ``(B, T, D)`` arrays (strided inputs are copied first), index
time through ``reverse`` instead of flipping arrays, and write only arrays allocated here.

Methods choose the chunk length ``C`` (all agree up to rounding):

* ``"sequential"``: one chunk (``C = T``), sequential in time and parallel over B × D, the
  least memory traffic (forward reads a, b and writes h; VJP reads a, h, dh and writes da, db);
* ``"chunked"``: chunks of ``chunk_size`` steps;
* ``"parallel"``: chunks short enough that B × chunks × D threads fill the GPU (at least
  ``MIN_CHUNK`` steps each, at most ``MAX_CHUNKS`` chunks).

Several chunks take three passes: each chunk reduced to an affine map (product of gates,
end state from zero), the chunks' entry states chained, every chunk rescanned from its entry.
Where a chunk's product of gates overflows (|a| > 1 over long chunks), chaining would give
inf · 0 = NaN: the scan is then redone as one chunk. Dtypes other than float32/float64 (or
mixed) run the reference.
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

_SOURCE = Path(__file__).with_name("kernels") / "linear_scan.cu"
_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_KERNELS = [f"chunk_reduce<{t}, {s}>" for t in _CTYPES.values() for s in ("false", "true")] + [
    f"{k}<{t}>" for k in ("chain_chunks", "chunk_scan", "chunk_scan_vjp") for t in _CTYPES.values()]


@functools.lru_cache(maxsize=None)
def _module() -> cupy.RawModule:
    return cupy.RawModule(code=_SOURCE.read_text(), options=("-std=c++17",), name_expressions=_KERNELS)


def _launch(name: str, dtype, threads: int, args, shifted: bool | None = None) -> None:
    types = _CTYPES[np.dtype(dtype)] + ("" if shifted is None else f", {str(shifted).lower()}")
    kernel = _module().get_function(f"{name}<{types}>")
    blocks = (threads + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    kernel((blocks,), (THREADS_PER_BLOCK,), args)


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


def _scan(a, x, init, C: int, flip: bool, vjp: bool, h=None, h0=None):
    """One scan: ``h`` (forward), or ``(db, da, dh0)`` (VJP: ``x = dh``, ``init`` zeros)."""
    B, T, D = a.shape
    n = -(-T // C)
    i64, i32 = np.int64, np.int32
    sizes = (i64(B), i64(T), i64(D), i64(C), i32(flip))
    if n > 1:
        prod, end = cupy.empty((B, n, D), a.dtype), cupy.empty((B, n, D), a.dtype)
        _launch("chunk_reduce", a.dtype, B * n * D, (a, x, *sizes, prod, end), shifted=vjp)
        if not bool(cupy.isfinite(prod).all()):  # chaining would multiply inf by a zero state
            return _scan(a, x, init, T, flip, vjp, h, h0)
        entry = cupy.empty((B, n, D), a.dtype)
        _launch("chain_chunks", a.dtype, B * D, (prod, end, init, i64(B), i64(n), i64(D), entry))
    else:
        entry = init
    if not vjp:
        out = cupy.empty_like(a)
        _launch("chunk_scan", a.dtype, B * n * D, (a, x, entry, *sizes, out))
        return out
    db, da, dh0 = cupy.empty_like(a), cupy.empty_like(a), cupy.empty_like(init)
    _launch("chunk_scan_vjp", a.dtype, B * n * D, (a, x, entry, *sizes, h, h0, db, da, dh0))
    return db, da, dh0


def linear_scan_fwd(xp, a, b, h0=None, reverse=False, method="sequential", chunk_size=64):
    """Replacement of the reference ``linear_scan`` forward: ``a, b (B, T, D), h0 (B, D) | None -> h``."""
    if not _supported(a, b, h0):
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


PRIMITIVES = {"linear_scan": (linear_scan_fwd, linear_scan_bwd)}
