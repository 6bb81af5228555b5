"""OpenBLAS called from compiled (Numba) loops, for the benchmarks that time it against the
packed-panel kernels (``lstm_step_gemm.py``).  No seqcore kernel calls a BLAS any more (the
dense cells' products, the input projections and the weight gradients run ``panels.py``);
this module kept the kernels' BLAS calls until then.

NumPy's wheels (2.x) export ILP64 CBLAS as ``scipy_cblas_sgemm64_`` / ``scipy_cblas_dgemm64_``.
When they are there, :func:`gemm` calls them (their addresses registered with LLVM under fixed
names): NumPy's own OpenBLAS, the library of every NumPy product.  Elsewhere (a NumPy built
against another BLAS), or with ``SEQCORE_KERNEL_BLAS=scipy`` in the environment, :func:`gemm`
is Numba's ``np.dot``, which needs SciPy (its BLAS, a second OpenBLAS with its own threads).
:data:`SOURCE` says which.
"""
from __future__ import annotations

import ctypes
import glob
import os

import llvmlite.binding as llvm
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload, register_jitable

__all__ = ["gemm", "SOURCE", "LIBRARY"]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_SYMBOLS = {"s": "scipy_cblas_sgemm64_", "d": "scipy_cblas_dgemm64_"}


def _numpy_openblas() -> tuple[str | None, dict[str, int]]:
    """NumPy's bundled OpenBLAS and the addresses of its CBLAS GEMMs (``{}`` when absent)."""
    site = os.path.dirname(os.path.dirname(np.__file__))
    candidates = sorted(glob.glob(os.path.join(site, "numpy.libs", "*openblas*"))
                        + glob.glob(os.path.join(os.path.dirname(np.__file__), ".dylibs", "*openblas*")))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: the same handle
            found = {p: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for p, name in _SYMBOLS.items()}
        except (OSError, AttributeError):
            continue
        return path, found
    return None, {}


# SEQCORE_KERNEL_BLAS=scipy keeps numba's np.dot (SciPy's BLAS), e.g. to compare the two
LIBRARY, _ADDRESSES = (None, {}) if os.environ.get("SEQCORE_KERNEL_BLAS") == "scipy" else _numpy_openblas()
SOURCE = "numpy-openblas" if _ADDRESSES else "scipy-np.dot"

_INT, _I64, _VOID = types.int32, types.int64, types.voidptr
_EXTERNAL = {}
for _prefix, _address in _ADDRESSES.items():
    _name = f"seqcore_cblas_{_prefix}gemm"
    llvm.add_symbol(_name, _address)
    _float = types.float32 if _prefix == "s" else types.float64
    _EXTERNAL[_float] = types.ExternalFunction(_name, types.void(
        _INT, _INT, _INT, _I64, _I64, _I64, _float, _VOID, _I64, _VOID, _I64, _float, _VOID, _I64))


@intrinsic
def _data(typingctx, arr):
    """The data pointer of an array as ``void*`` (for the CBLAS call)."""
    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.bitcast(array.data, cgutils.voidptr_t)
    return types.voidptr(arr), codegen


def gemm(a, b, out):
    """``out = a @ b`` for 2-D float arrays of one dtype (``np.dot(a, b, out)``'s contract)."""
    np.dot(a, b, out)


@register_jitable
def _layout(x, size):
    """(transpose flag, leading dimension) of a 2-D operand stored by rows or by columns; (0, 0) otherwise."""
    rows, cols = x.shape
    s0, s1 = x.strides
    if s1 == size and s0 >= max(cols, 1) * size and s0 % size == 0:
        return _NO_TRANS, s0 // size
    if s0 == size and s1 >= max(rows, 1) * size and s1 % size == 0:
        return _TRANS, s1 // size
    return 0, 0


@overload(gemm)
def _gemm(a, b, out):
    call = _EXTERNAL.get(getattr(a, "dtype", None))
    if call is None or not (a.dtype == b.dtype == out.dtype):
        return lambda a, b, out: np.dot(a, b, out)
    ftype = np.float32 if a.dtype == types.float32 else np.float64
    one, zero = ftype(1.0), ftype(0.0)

    def impl(a, b, out):
        size = out.itemsize
        M, K = a.shape
        N = b.shape[1]
        if b.shape[0] != K or out.shape[0] != M or out.shape[1] != N:
            raise ValueError("gemm: shapes do not match")
        ta, lda = _layout(a, size)
        tb, ldb = _layout(b, size)
        if ta == 0 or tb == 0 or out.strides[1] != size or out.strides[0] < max(N, 1) * size:
            np.dot(a, b, out)  # an operand neither row- nor column-ordered: NumPy's rules
            return
        if M == 0 or N == 0:
            return
        if K == 0:
            out[:, :] = zero
            return
        call(_ROW_MAJOR, ta, tb, M, N, K, one, _data(a), lda, _data(b), ldb, zero, _data(out),
             out.strides[0] // size)
    return impl
