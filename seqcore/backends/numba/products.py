"""Whole-array matrix products through the packed-panel micro-kernels (``panels.py``).

The per-step products of the dense cells were the first users of the panel kernels; the
products over a whole sequence go through them too: the input projection (:data:`PRIMITIVES`
replaces ``linear``), its two gradients, and the recurrent weight gradients of the dense
cells.  At the layer shapes of a recurrent network, ``(B·T, 64-128) × (64-128, 4H)`` and
``(4H, B·T) × (B·T, H)``, they ran 1.1-1.35x faster than OpenBLAS on one thread
(BENCHMARKS.md).  OpenBLAS keeps two kinds: products with fewer output columns than one panel
(``panel_width``: 64 float32 or 32 float64 with AVX-512), where the padding wastes most of the
work, and weight gradients more than :data:`TN_MAX_ROW_BYTES` wide.

Large products split their output rows over Numba's threads (:data:`PARALLEL_MIN_FLOPS`), like
every other kernel of this backend, so that the whole backend follows one thread count.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ..numpy.ops import _linear_bwd, _linear_fwd  # the reference, for what the kernels do not take
from .ops import as_dtype, contiguous, kernel, num_threads, supported_dtype
from .panels import MR, pack, panel_gemm_into, panel_gemm_tn_rows, panel_width

__all__ = ["matmul", "matmul_tn", "panels_pay", "panels_pay_tn", "TN_MAX_ROW_BYTES", "linear_fwd", "linear_bwd", "PRIMITIVES", "PARALLEL_MIN_FLOPS"]

#: products of at least this many multiply-adds split their rows over the threads: below it
#: waking Numba's workers (about 0.1 ms on a 2-vCPU guest) costs more than the split saves
PARALLEL_MIN_FLOPS = 1 << 23
#: fewer rows than this: the packing of the right operand is not repaid
MIN_ROWS = 8
#: the transposed product (a weight gradient) only where the right operand's rows are at most
#: this long: at 1 KB (256 float32 columns) its blocks of rows fall into a quarter of L1's sets
#: even packed, and it ran 0.6-0.9x OpenBLAS's speed (1.1-1.4x at 64-192 columns)
TN_MAX_ROW_BYTES = 768


def panels_pay(M: int, N: int, dtype) -> bool:
    """Whether an ``(M, ·) × (·, N)`` product of ``dtype`` goes through the panel kernels."""
    return np.dtype(dtype) in (np.float32, np.float64) and M >= MIN_ROWS and N >= panel_width(dtype)


def panels_pay_tn(M: int, N: int, dtype) -> bool:
    """Whether an ``(M, ·) × (·, N)`` weight gradient (:func:`matmul_tn`) goes through the panels."""
    return panels_pay(M, N, dtype) and N * np.dtype(dtype).itemsize <= TN_MAX_ROW_BYTES


def _tasks(rows: int, flops: int) -> int:
    """Parallel tasks for ``rows`` output rows: 1 (serial) for small work, else about two per thread."""
    threads = num_threads()
    if threads == 1 or flops < PARALLEL_MIN_FLOPS:
        return 1
    return max(1, min(2 * threads, rows // (4 * MR)))


def _row_block(rows: int, tasks: int) -> int:
    """Rows per task, a multiple of the micro-kernel's MR."""
    per = -(-rows // tasks)
    return -(-per // MR) * MR


@kernel()
def _nn_serial(a, panels, out):
    M, K = a.shape
    panel_gemm_into(a.reshape(-1), 0, K, M, K, panels, out.reshape(-1), 0, out.shape[1])


@kernel(parallel=True)
def _nn_parallel(a, panels, out, rows):
    M, K = a.shape
    N = out.shape[1]
    af, of = a.reshape(-1), out.reshape(-1)
    for task in prange((M + rows - 1) // rows):
        i0 = task * rows
        panel_gemm_into(af, i0 * K, K, min(rows, M - i0), K, panels, of, i0 * N, N)


@kernel()
def _tn_serial(a, wf, ldw, pstride, NR, out):
    K, M = a.shape
    panel_gemm_tn_rows(a.reshape(-1), M, K, wf, ldw, pstride, NR, out, 0, M)


@kernel(parallel=True)
def _tn_parallel(a, wf, ldw, pstride, NR, out, rows):
    K, M = a.shape
    af = a.reshape(-1)
    for task in prange((M + rows - 1) // rows):
        i0 = task * rows
        panel_gemm_tn_rows(af, M, K, wf, ldw, pstride, NR, out, i0, min(M, i0 + rows))


def matmul(a, b):
    """``a @ b`` for 2-D ``a (M, K)``, ``b (K, N)`` of one float dtype: the panel kernels where
    :func:`panels_pay`, NumPy's BLAS otherwise."""
    M, K = a.shape
    N = b.shape[1]
    if not panels_pay(M, N, a.dtype) or b.dtype != a.dtype:
        return a @ b
    a, panels = contiguous(a), pack(b)
    out = np.empty((M, N), a.dtype)
    tasks = _tasks(M, M * K * N)
    if tasks == 1:
        _nn_serial(a, panels, out)
    else:
        _nn_parallel(a, panels, out, _row_block(M, tasks))
    return out


def matmul_tn(a, b):
    """``a.T @ b`` for 2-D ``a (K, M)``, ``b (K, N)`` of one float dtype (a weight gradient:
    K is the long B·T axis); the panel kernels where :func:`panels_pay_tn`, NumPy's BLAS otherwise.
    ``b`` is read in place when N is a whole number of panels, packed otherwise."""
    K, M = a.shape
    N = b.shape[1]
    if not panels_pay_tn(M, N, a.dtype) or b.dtype != a.dtype or K == 0:
        return a.T @ b
    a, b = contiguous(a), contiguous(b)
    NR = panel_width(a.dtype)
    if N % NR == 0:
        wf, ldw, pstride = b.reshape(-1), N, NR
    else:
        wf, ldw, pstride = pack(b).reshape(-1), NR, K * NR
    out = np.zeros((M, -(-N // NR) * NR), a.dtype)  # whole panels wide (panel_gemm_tn_rows)
    tasks = _tasks(M, M * K * N)
    if tasks == 1:
        _tn_serial(a, wf, ldw, pstride, NR, out)
    else:
        _tn_parallel(a, wf, ldw, pstride, NR, out, _row_block(M, tasks))
    return out if out.shape[1] == N else np.ascontiguousarray(out[:, :N])


# -- the linear primitive ---------------------------------------------------------------------

def linear_fwd(xp, x, weight, bias=None):
    """``y = x @ weight.T + bias``, the reference's contract (``backends/numpy/ops.py``)."""
    if (not supported_dtype(x, weight, bias) or weight.ndim != 2 or x.ndim < 2 or weight.shape[1] == 1
            or not panels_pay(x.size // max(x.shape[-1], 1), weight.shape[0], x.dtype)):
        # (one input feature: the reference's broadcast product, which has the GEMM's bits)
        y, res = _linear_fwd(xp, x, weight, bias)
        return y, ("reference", res)
    x2 = x.reshape(-1, x.shape[-1])
    y = matmul(x2, weight.T)
    if bias is not None:
        y += bias
    return y.reshape(x.shape[:-1] + (weight.shape[0],)), ("numba", (x2, x.shape, weight, bias is not None))


def linear_bwd(xp, r, g):
    """``(dx, dweight, dbias)`` of :func:`linear_fwd`."""
    tag, res = r
    if tag == "reference":
        return _linear_bwd(xp, res, g)
    x2, shape, weight, has_bias = res
    g2 = as_dtype(g, x2.dtype).reshape(-1, weight.shape[0])
    gx = matmul(g2, weight).reshape(shape)
    gw = matmul_tn(g2, x2)
    gb = g2.sum(axis=0) if has_bias else None
    return gx, gw, gb


PRIMITIVES = {"linear": (linear_fwd, linear_bwd)}
