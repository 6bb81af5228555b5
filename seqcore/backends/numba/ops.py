"""Shared machinery of the Numba kernels: lazy compilation with a compile log, input rules.

Not primitives: the replacements live in ``scan.py`` and ``cells.py``.  Every kernel is
``@njit(cache=True, fastmath=False)`` (``cache=False`` where no cache directory can be written:
``cache.py``); it compiles on its first call for a given
signature (or loads from Numba's on-disk cache) and that first call is logged, so
compile time can be reported apart from run time (:func:`compile_report`).
"""
from __future__ import annotations

import threading
import time

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .cache import caching

__all__ = ["kernel", "Kernel", "inline", "compile_report", "clear_compile_report", "contiguous", "as_dtype",
           "supported_dtype", "split_columns", "int_like", "num_threads", "scratch", "task_scratch", "task_block",
           "prefetch_row", "prefetch_segments", "AHEAD", "AHEAD_MIN_WIDTH", "AheadBuilds", "PARALLEL_CELLS", "sigmoid_from_exp", "tanh_from_expm1", "expm1_parts", "exp_nonpos",
           "expm1_nonpos", "exp_from_parts", "expm1_from_parts", "log1p_unit", "log1p_coefficients"]

# fastmath off (IEEE results, no reassociation); error_model "numpy": float division does not
# check for zero, so loops with divisions vectorize (the Python model adds a branch per division).
# Cached unless no source-keyed directory can be written (cache.keyed_cache_dir, around this import)
_JIT_OPTIONS = dict(cache=caching(), fastmath=False, nogil=True, error_model="numpy")

# The diagonal cells and the Newton steps loop over independent (row, block of neurons)
# tasks with prange, in parallel: 1.2-2x on 2 threads (BENCHMARKS.md).  A parallel kernel
# takes ~1-2 s longer to compile per dtype; False compiles them serial.
PARALLEL_CELLS = True

_LOG: list[dict] = []
_LOG_LOCK = threading.Lock()


class Kernel:
    """A lazily compiled ``@njit`` function whose first call per signature is logged."""

    def __init__(self, py_func, parallel: bool):
        self.name = py_func.__name__.lstrip("_")
        self.parallel = parallel
        self.dispatcher = numba.njit(parallel=parallel, **_JIT_OPTIONS)(py_func)

    def __call__(self, *args):
        d = self.dispatcher
        n_before = len(d.overloads)
        t0 = time.perf_counter()
        out = d(*args)
        if len(d.overloads) != n_before:
            self._log(time.perf_counter() - t0)
        return out

    def _log(self, first_call_s: float) -> None:
        d = self.dispatcher
        sig = list(d.overloads)[-1]
        meta = d.overloads[sig].metadata or {}
        timers = meta.get("timers") or {}
        compiled = "compiler_lock" in timers
        with _LOG_LOCK:
            _LOG.append({
                "kernel": self.name,
                "signature": ", ".join(str(t) for t in sig),
                "source": "compiled" if compiled else "disk cache",
                "compile_s": float(timers.get("compiler_lock", 0.0)),
                "first_call_s": first_call_s,
            })


def inline(py_func):
    """Decorator for a helper compiled into the kernels that call it (``inline="always"``)."""
    return numba.njit(inline="always", **_JIT_OPTIONS)(py_func)


def kernel(parallel: bool = False):
    """Decorator: ``@kernel(parallel=True)`` turns a Python function into a logged :class:`Kernel`."""
    def wrap(py_func):
        return Kernel(py_func, parallel)
    return wrap


def compile_report() -> list[dict]:
    """One row per (kernel, signature) compiled or loaded from cache in this process.

    Each row: ``kernel``, ``signature``, ``source`` (``"compiled"`` or ``"disk cache"``),
    ``compile_s`` (Numba's own compile timer; 0 when loaded from the cache) and
    ``first_call_s`` (wall time of that first call: compile or cache load plus one run).
    Steady-state run time is what later calls take.
    """
    with _LOG_LOCK:
        return [dict(r) for r in _LOG]


def clear_compile_report() -> None:
    """Forget the rows of :func:`compile_report` (kernels stay compiled)."""
    with _LOG_LOCK:
        _LOG.clear()


def supported_dtype(*arrays) -> bool:
    """True when the arrays (``None`` skipped) are all float32 or all float64 NumPy arrays or
    memory maps (``np.memmap``: plain data, read in place; :func:`contiguous` views it as an ndarray).

    Anything else (mixed dtypes, float16, other array subclasses) runs the NumPy reference.
    """
    arrays = [a for a in arrays if a is not None]
    if not all(type(a) in (np.ndarray, np.memmap) for a in arrays):
        return False
    dt = arrays[0].dtype
    return dt in (np.float32, np.float64) and all(a.dtype == dt for a in arrays)


def as_dtype(x, dtype):
    """``x`` as a C-contiguous array of ``dtype`` (cotangents may arrive in another float type)."""
    return np.ascontiguousarray(x, dtype=dtype)


def contiguous(x):
    """C-contiguous view of ``x``, copying only when ``x`` is strided, reversed or transposed."""
    return np.ascontiguousarray(x)


def num_threads() -> int:
    """Threads Numba's parallel kernels use (``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``)."""
    return numba.get_num_threads()


def split_columns(rows: int, cols: int, min_block: int = 64) -> int:
    """Column-block width so that ``rows × ceil(cols / width)`` tasks keep every thread busy.

    Aims at four tasks per thread; blocks stay ≥ ``min_block`` columns (a multiple of 16,
    so the inner loop vectorizes) unless ``cols`` itself is smaller.
    """
    want = 4 * num_threads()
    if rows == 0 or rows >= want or cols <= min_block:  # no rows (an empty batch): no tasks to spread
        return max(cols, 1)
    per_row = -(-want // rows)
    width = -(-cols // per_row)
    width = max(min_block, -(-width // 16) * 16)
    return min(width, cols)


def int_like(dtype):
    """The integer type as wide as float ``dtype`` (float32: int32, float64: int64), for bit views."""
    return np.int32 if dtype == np.float32 else np.int64


def scratch(shape, dtype):
    """Buffers of the vectorized exp: argument, polynomial part, exponent bits (an int of the same width)."""
    return np.empty(shape, dtype), np.empty(shape, dtype), np.empty(shape, int_like(dtype))


def task_scratch(B, H, blk, width, dtype):
    """Per-task rows of the kernels whose tasks are (batch row, block of ``blk`` neurons):
    a state row ``(tasks, blk)`` and the exp buffers u, q, kbits ``(tasks, width·blk)``."""
    tasks = B * (-(-H // blk))
    u, q, kbits = scratch((tasks, width * blk), dtype)
    u[:], q[:], kbits[:] = 0, 0, 0  # lanes past a short last block are computed too: keep them finite
    return np.empty((tasks, blk), dtype), u, q, kbits


@intrinsic
def _prefetch(typingctx, flat, offset):
    """``llvm.prefetch`` of ``flat[offset]`` (read, keep in all cache levels): a hint, no effect
    on results.  ``flat`` is a 1-D array, ``offset`` an unsigned index into it."""
    sig = types.void(flat, offset)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0i8")  # LLVM ≥ 15 renames the typed-pointer form itself
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return sig, codegen


@inline
def prefetch_row(flat, offset, n):
    """Ask for the cache lines of ``flat[offset:offset + n]`` (``offset`` unsigned).

    The dense cells' kernels walk B rows per step that lie a whole sequence apart in their
    (B, T, ·) arrays, so the hardware prefetchers, which follow streams within a page, do
    not run ahead; asking for the next row's lines while the current row is computed gained
    1.15–1.4× in the LSTM kernels at B·T·H ≥ 2^19 (BENCHMARKS.md).
    """
    step = 64 // flat.itemsize
    for k in range(0, n, step):
        _prefetch(flat, offset + np.uint64(k))


# Kernels that walk time downwards (the per-neuron cells' backward passes, the diagonal scan's
# backward and its reverse forward) lose the hardware prefetchers, which follow such streams
# poorly: each task asks for its lines AHEAD steps before use, in a separate build used where
# its rows are wide enough for that to pay (1.3-2.5x at 128 neurons or columns per task;
# 0.4-1.0x at 16-64, where the requests cost more than they save; BENCHMARKS.md)
AHEAD = 2
AHEAD_MIN_WIDTH = 128


class AheadBuilds:
    """The two builds of a kernel that ``make(ahead)`` defines: with its requests for lines ahead
    (``ahead`` a closure constant, so the other build carries no trace of them: compiled in but
    never run, they slowed narrow tasks) and without; :meth:`for_width` picks one."""

    def __init__(self, make):
        self.builds = {ahead: make(ahead) for ahead in (False, True)}

    def __getitem__(self, ahead: bool):
        return self.builds[ahead]

    def for_width(self, width: int):
        """The build for tasks ``width`` neurons or columns wide."""
        return self.builds[width >= AHEAD_MIN_WIDTH]


@inline
def prefetch_segments(flat, row, row_len, count, stride, first, n):
    """Ask for ``count`` segments of ``n`` elements, ``stride`` apart from column ``first``, of
    row ``row`` of a flattened ``(rows, row_len)`` array (see :func:`prefetch_row`)."""
    base = np.uint64(row) * np.uint64(row_len) + np.uint64(first)
    for s in range(count):
        prefetch_row(flat, base + np.uint64(s * stride), n)


@inline
def task_block(task, nblk, blk, n):
    """``(row, first, end)`` of parallel task ``task`` when tasks are rows × ``nblk`` blocks of
    ``blk`` columns out of ``n`` (the last block may be shorter)."""
    first = (task % nblk) * blk
    return task // nblk, first, min(n, first + blk)


# -- scalar helpers inlined into kernels (constants are passed in, typed like the data, so
#    float32 kernels never promote to float64) ------------------------------------------------

@inline
def sigmoid_from_exp(x, e, one):
    """σ(x) from ``e = exp(−|x|)``, the reference's stable form (``one`` = 1 in the data's dtype)."""
    return one / (one + e) if x >= 0 else e / (one + e)


@inline
def tanh_from_expm1(x, em, two):
    """tanh(x) from ``em = expm1(−2|x|)``: −em / (2 + em), sign of x (no cancellation near 0)."""
    t = -em / (two + em)
    return t if x >= 0 else -t


# -- vectorizable exp / expm1 on non-positive arguments ---------------------------------------------
# Scalar libm calls (tanhf, expm1f: ~14 ns each here; Numba has no SVML) would dominate the
# cell loops.  These work on whole 1-D buffers with plain arithmetic that LLVM vectorizes:
# x = k ln2 + r (Cody–Waite), expm1(r) by its Taylor polynomial (|r| ≤ ln2/2: degree 8 is
# below float32 rounding, degree 13 below float64), 2^k built in the exponent bits.
# Accuracy: a few ulp, like libm.  Below log(smallest normal) exp is 0 exactly (the scale's bits are
# 0; the reduction runs on the clamped argument), not a subnormal: a saturated gate then has an
# exactly zero derivative, as in the reference (a ~1e-38 one, times an input of 1e37, was not small).

@numba.njit(**_JIT_OPTIONS)
def expm1_parts(x, q, kbits):
    """q = expm1(r), kbits = bits of 2^k, with x = k ln2 + r, for x ≤ 0 (1-D, same length)."""
    f32 = x.itemsize == 4
    lo = x.dtype.type(-87.6 if f32 else -708.7)  # 2^k stays a normal number
    inv_ln2 = x.dtype.type(1.4426950408889634)
    half = x.dtype.type(0.5)
    ln2_hi = x.dtype.type(0.693359375 if f32 else 6.93147180369123816490e-01)
    ln2_lo = x.dtype.type(-2.12194440e-4 if f32 else 1.90821492927058770002e-10)
    bias = 127 if f32 else 1023
    shift = 23 if f32 else 52
    if f32:
        c2, c3, c4, c5 = x.dtype.type(1 / 2), x.dtype.type(1 / 6), x.dtype.type(1 / 24), x.dtype.type(1 / 120)
        c6, c7, c8 = x.dtype.type(1 / 720), x.dtype.type(1 / 5040), x.dtype.type(1 / 40320)
        one = x.dtype.type(1.0)  # a literal 1 would promote the float32 polynomial to float64
        for j in range(x.shape[0]):
            v = x[j]
            under = v < lo
            v = lo if under else v  # keeps NaN
            kf = np.floor(v * inv_ln2 + half)
            r = (v - kf * ln2_hi) - kf * ln2_lo
            q[j] = r * (one + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * (c7 + r * c8)))))))
            kbits[j] = np.int32(0) if under else (np.int32(kf) + np.int32(bias)) << np.int32(shift)
    else:
        c = (1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040, 1 / 40320, 1 / 362880, 1 / 3628800,
             1 / 39916800, 1 / 479001600, 1 / 6227020800)
        for j in range(x.shape[0]):
            v = x[j]
            under = v < lo
            v = lo if under else v
            kf = np.floor(v * inv_ln2 + half)
            r = (v - kf * ln2_hi) - kf * ln2_lo
            p = c[11]
            p = c[10] + r * p
            p = c[9] + r * p
            p = c[8] + r * p
            p = c[7] + r * p
            p = c[6] + r * p
            p = c[5] + r * p
            p = c[4] + r * p
            p = c[3] + r * p
            p = c[2] + r * p
            p = c[1] + r * p
            p = c[0] + r * p
            q[j] = r * (1 + r * p)
            kbits[j] = np.int64(0) if under else (np.int64(kf) + bias) << shift


@numba.njit(**_JIT_OPTIONS)
def exp_nonpos(x, out, kbits):
    """out = exp(x) for x ≤ 0 (1-D buffers; ``kbits``: int32 for float32, int64 for float64)."""
    expm1_parts(x, out, kbits)
    scale = kbits.view(x.dtype)
    one = x.dtype.type(1.0)
    for j in range(x.shape[0]):
        out[j] = scale[j] * (one + out[j])


@numba.njit(**_JIT_OPTIONS)
def expm1_nonpos(x, out, kbits):
    """out = exp(x) − 1 for x ≤ 0, accurate near 0 (1-D buffers, ``kbits`` as in exp_nonpos)."""
    expm1_parts(x, out, kbits)
    scale = kbits.view(x.dtype)
    one = x.dtype.type(1.0)
    for j in range(x.shape[0]):
        out[j] = scale[j] * out[j] + (scale[j] - one)


@inline
def exp_from_parts(q, scale, one):
    """exp(x) from :func:`expm1_parts`' ``q`` and ``scale = kbits.view(float)``."""
    return scale * (one + q)


@inline
def expm1_from_parts(q, scale, one):
    """exp(x) − 1 from :func:`expm1_parts`' ``q`` and ``scale``."""
    return scale * q + (scale - one)


@inline
def log1p_unit(e, one, two, sqrt2, ln2, c):
    """log(1 + e) for e in [0, 1], vectorizable: u = 1 + e, log u = k ln2 + 2 atanh(s) with
    u = 2^k m, m in [√2/2, √2], s = (m − 1)/(m + 1) (|s| ≤ 0.172, series to s^21), plus the
    rounding correction (e − (u − 1)) / u.  ``c`` holds 1/3, 1/5, … 1/21 in the data's dtype."""
    u = one + e
    big = u > sqrt2
    m = u / two if big else u
    s = (m - one) / (m + one)
    s2 = s * s
    p = c[9]
    for n in range(8, -1, -1):
        p = c[n] + s2 * p
    lg = two * s * (one + s2 * p)
    lg = ln2 + lg if big else lg
    return lg + (e - (u - one)) / u


def log1p_coefficients(dtype):
    """The series coefficients :func:`log1p_unit` takes: 1/3, 1/5, …, 1/21 in ``dtype``."""
    return np.array([1.0 / (2 * n + 3) for n in range(10)], dtype)
