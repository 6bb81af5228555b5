"""Products against a fixed right operand, packed once into column panels: a recurrent step's GEMM.

A recurrent layer multiplies a small ``(B, K)`` matrix by the same weight matrix at each of
its T steps.  A BLAS ``gemm`` re-packs the weight on every call, and at B = 16-64 that copy
costs as much as the arithmetic: OpenBLAS ran ``(16, 128) × (128, 512)`` at about half the
speed it reaches on large products (BENCHMARKS.md).  Here the weight is packed once per
sequence (:func:`pack`) into panels of ``NR`` columns, zero-padded, each panel's rows
contiguous; :func:`panel_gemm` then writes the output tile by tile with a register-tiled
micro-kernel: ``MR`` rows × ``NR`` columns of accumulators held in vector registers, one
multiply-add per (row, vector) per k (``llvm.fmuladd``: fused where the CPU has FMA).  The
micro-kernel is emitted as LLVM IR with explicit vector types (``_make_tile``), since Numba
gives no way to keep a block of accumulators in registers across a loop.

The vector width follows the host CPU (64 bytes with AVX-512, 32 with AVX, otherwise 16;
LLVM splits a wider vector where the CPU has narrower registers), so the cached kernels are
specific to the CPU they were compiled on, as all of Numba's are.  Results are not
bit-identical to a BLAS: each output is one multiply-add chain over k, in order.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, register_jitable

from .ops import kernel
from .vector_width import VECTOR_BYTES

__all__ = ["pack", "panel_gemm", "panel_gemm_rows", "panel_gemm_into", "panel_gemm_tn_rows", "KC", "lanes", "panel_width", "MR", "NV", "VECTOR_BYTES"]

#: accumulator rows per tile, and vectors per row (MR · NV registers of accumulators, plus NV
#: for the panel's row and one for the broadcast: 21 of the 32 registers AVX-512 has, 11 of 16)
MR = 4
NV = 4 if VECTOR_BYTES == 64 else 2


def lanes(dtype) -> int:
    """Vector lanes for ``dtype`` on this CPU."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


def panel_width(dtype) -> int:
    """Columns per panel (``NR``) for ``dtype``."""
    return NV * lanes(dtype)


def pack(W):
    """``W (K, N)`` → panels ``(P, K, NR)``, ``P = ceil(N / NR)``, the last zero-padded.

    One compiled pass.  ``W`` is often a transposed view (``W_hhᵀ``, a layer's ``weightᵀ``):
    then its columns are the rows of a C-ordered array, and they are read 16 k at a time, so
    that each cache line is read once.  (With NumPy — zeros, a transposing copy, a second
    copy into panels — packing a (256, 784) ``weightᵀ`` took 223 µs, as long as a
    (128, 256) × (256, 784) product.)
    """
    K, N = W.shape
    NR = panel_width(W.dtype)
    out = np.empty((-(-N // NR), K, NR), W.dtype)
    if W.flags.f_contiguous and not W.flags.c_contiguous:
        _pack_columns(W.T, NR, out)
    else:
        _pack_rows(np.ascontiguousarray(W), NR, out)
    return out


@kernel()
def _pack_rows(W, NR, out):
    """``out[p, k, c] = W[k, p·NR + c]``, zero past N; ``W (K, N)`` C-contiguous.  Flat arrays at
    unsigned offsets: a row slice per k cost about 10 ns, as much as copying the row."""
    K, N = W.shape
    wf, of = W.reshape(-1), out.reshape(-1)
    uK, uN, uNR = np.uint64(K), np.uint64(N), np.uint64(NR)
    for p in range(out.shape[0]):
        c0 = p * NR
        cols = min(NR, N - c0)
        for k in range(K):
            uk = np.uint64(k)
            o, w = (np.uint64(p) * uK + uk) * uNR, uk * uN + np.uint64(c0)
            for c in range(cols):
                of[o + np.uint64(c)] = wf[w + np.uint64(c)]
            for c in range(cols, NR):
                of[o + np.uint64(c)] = 0


@kernel()
def _pack_columns(V, NR, out):
    """``out[p, k, c] = V[p·NR + c, k]``, zero past N: the panels of ``W = Vᵀ``, ``V (N, K)``
    C-contiguous, 16 k at a time (flat arrays at unsigned offsets, as in :func:`_pack_rows`)."""
    N, K = V.shape
    vf, of = V.reshape(-1), out.reshape(-1)
    uK, uNR = np.uint64(K), np.uint64(NR)
    for p in range(out.shape[0]):
        c0 = p * NR
        cols = min(NR, N - c0)
        base = np.uint64(p) * uK * uNR
        for k0 in range(0, K, 16):
            k1 = min(K, k0 + 16)
            for c in range(cols):
                src = np.uint64(c0 + c) * uK
                for k in range(k0, k1):
                    uk = np.uint64(k)
                    of[base + uk * uNR + np.uint64(c)] = vf[src + uk]
        for k in range(K):
            o = base + np.uint64(k) * uNR
            for c in range(cols, NR):
                of[o + np.uint64(c)] = 0


def _make_tile(rows: int, tn: bool = False):
    """The micro-kernel for ``rows`` accumulator rows (1..MR).

    Plain (``tn=False``): ``out[r, c] = Σ_k a[a_off + r·lda + k] · w[w_off + k·ldw + c]``, with
    ``w`` packed panels (``ldw = NR``).
    ``tn=True`` reads ``a`` down its columns, ``a[a_off + r + k·lda]`` (a product with ``aᵀ``),
    and starts the accumulators from ``out`` instead of 0, so that a product cut into blocks of
    k adds each block to the last: every output stays one multiply-add chain over k, in order,
    whatever the blocks.  Its output rows are whole panels (``cols`` is ignored): without the
    lane-by-lane code for a partial vector the kernels using it compile 2-3x faster.
    """

    @intrinsic
    def tile(typingctx, a, a_off, lda, w, w_off, ldw, out, o_off, ldo, K, cols):
        """Flat arrays; rows ``r < rows``, columns ``c < cols`` of the output tile (see above)."""
        if not (isinstance(a, types.Array) and a.dtype in (types.float32, types.float64)
                and getattr(w, "dtype", None) == a.dtype and getattr(out, "dtype", None) == a.dtype):
            return None  # one float dtype for all three arrays (a typing error otherwise)
        sig = types.void(a, a_off, lda, w, w_off, ldw, out, o_off, ldo, K, cols)

        def codegen(context, builder, sig, args):
            args = [v if isinstance(t, types.Array) else context.cast(builder, v, t, types.int64)
                    for v, t in zip(args, sig.args)]
            a_, a_off, lda, w_, w_off, ldw, out_, o_off, ldo, K, cols = args
            fty = context.get_value_type(sig.args[0].dtype)
            VL = VECTOR_BYTES // (4 if fty == ir.FloatType() else 8)
            vty, i64, i32 = ir.VectorType(fty, VL), ir.IntType(64), ir.IntType(32)
            vptr = vty.as_pointer()
            name = f"llvm.fmuladd.v{VL}{'f32' if fty == ir.FloatType() else 'f64'}"
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3), name)
            ap = context.make_array(sig.args[0])(context, builder, a_).data
            wp = context.make_array(sig.args[3])(context, builder, w_).data
            op = context.make_array(sig.args[6])(context, builder, out_).data
            const = lambda v: ir.Constant(i64, v)  # noqa: E731
            zero = ir.Constant(vty, [0.0] * VL)
            splat = ir.Constant(ir.VectorType(i32, VL), [0] * VL)

            def out_vector(r, v):
                """Pointer to vector v of row r of the output tile, and whether it is whole."""
                first = v * VL
                base = builder.gep(op, [builder.add(builder.add(o_off, builder.mul(const(r), ldo)), const(first))])
                return base, builder.icmp_signed(">=", cols, const(first + VL)), first

            starts = [zero] * (rows * NV)
            if tn:  # the accumulators start from out (whose rows are whole panels: see panel_gemm_tn_rows)
                for r in range(rows):
                    for v in range(NV):
                        starts[r * NV + v] = builder.load(builder.bitcast(out_vector(r, v)[0], vptr), align=4)

            entry = builder.block
            loop = builder.append_basic_block("tile.k")
            done = builder.append_basic_block("tile.store")
            builder.branch(loop)
            builder.position_at_end(loop)
            k = builder.phi(i64)
            k.add_incoming(const(0), entry)
            accs = []
            for start in starts:
                acc = builder.phi(vty)
                acc.add_incoming(start, entry)
                accs.append(acc)
            # the plain tile reads packed panels, whose row stride is the constant NR (as a constant
            # it kept the per-step products 1-5 % faster than a run-time stride did)
            wrow = builder.add(w_off, builder.mul(k, ldw if tn else const(NV * VL)))
            ws = [builder.load(builder.bitcast(builder.gep(wp, [builder.add(wrow, const(v * VL))]), vptr), align=4)
                  for v in range(NV)]
            new = []
            for r in range(rows):
                at = (builder.add(builder.add(a_off, const(r)), builder.mul(k, lda)) if tn
                      else builder.add(builder.add(a_off, builder.mul(const(r), lda)), k))
                s = builder.load(builder.gep(ap, [at]))
                b = builder.shuffle_vector(builder.insert_element(ir.Constant(vty, ir.Undefined), s, ir.Constant(i32, 0)),
                                           ir.Constant(vty, ir.Undefined), splat)
                new.extend(builder.call(fma, [b, ws[v], accs[r * NV + v]]) for v in range(NV))
            k1 = builder.add(k, const(1))
            k.add_incoming(k1, builder.block)
            for acc, value in zip(accs, new):
                acc.add_incoming(value, builder.block)
            builder.cbranch(builder.icmp_signed("<", k1, K), loop, done)

            builder.position_at_end(done)
            for r in range(rows):
                for v in range(NV):
                    value = new[r * NV + v]
                    base, whole, first = out_vector(r, v)
                    if tn:
                        builder.store(value, builder.bitcast(base, vptr), align=4)
                        continue
                    with builder.if_else(whole, likely=True) as (full, part):
                        with full:
                            builder.store(value, builder.bitcast(base, vptr), align=4)
                        with part:  # the last panel's partial vector: lane by lane
                            for lane in range(VL):
                                with builder.if_then(builder.icmp_signed(">", cols, const(first + lane))):
                                    builder.store(builder.extract_element(value, ir.Constant(i32, lane)),
                                                  builder.gep(base, [const(lane)]))
            return context.get_dummy_value()

        return sig, codegen

    return tile


assert MR == 4  # the dispatch below names the four tiles of each kind
_tile4, _tile3, _tile2, _tile1 = (_make_tile(r) for r in (4, 3, 2, 1))
_tn4, _tn3, _tn2, _tn1 = (_make_tile(r, tn=True) for r in (4, 3, 2, 1))
#: k per block of the transposed product.  Its left operand is read down the columns, one cache
#: line per k, at a stride of a whole row: at power-of-two row lengths those lines fall into a few
#: of L1's sets, and more than a few dozen of them evict each other before the next four output
#: rows reuse them.  64 k per block (with the right operand's block, 16 KB, in L1) ran these
#: products 1.1-1.35x faster than OpenBLAS at (4H, B·T) × (B·T, H), H = 64-128; 256 ran
#: 0.75x at H = 128, and copying the left operand into micro-panels first (as BLAS does) cost
#: more than it saved (BENCHMARKS.md).
KC = 64


@register_jitable
def panel_gemm(a, panels, out):
    """``out = a @ W`` for ``a (M, K)``, ``out (M, N)`` C-contiguous and ``panels = pack(W)``."""
    M, K = a.shape
    panel_gemm_rows(a.reshape(-1), 0, K, M, K, panels, out)


@register_jitable
def panel_gemm_rows(af, a_off, lda, M, K, panels, out):
    """:func:`panel_gemm` with ``a``'s rows read from the flat array ``af`` at ``a_off + r·lda``:
    e.g. one step's rows of a ``(B, T, K)`` array (``a_off = t·K``, ``lda = T·K``), without a copy."""
    panel_gemm_into(af, a_off, lda, M, K, panels, out.reshape(-1), 0, out.shape[1])


@register_jitable
def panel_gemm_into(af, a_off, lda, M, K, panels, of, o_off, N):
    """:func:`panel_gemm_rows` writing ``M`` rows of ``N`` columns into the flat array ``of`` from
    ``o_off`` (so that parallel tasks can each take a block of rows)."""
    P, NR = panels.shape[0], panels.shape[2]
    if K == 0:
        of[o_off:o_off + M * N] = 0
        return
    wf = panels.reshape(-1)
    full = M - M % 4
    rest = M - full
    tail = a_off + full * lda
    for p in range(P):
        cols = min(NR, N - p * NR)
        w_off, o_col = p * K * NR, o_off + p * NR
        for i in range(0, full, 4):
            _tile4(af, a_off + i * lda, lda, wf, w_off, NR, of, i * N + o_col, N, K, cols)
        if rest == 3:
            _tile3(af, tail, lda, wf, w_off, NR, of, full * N + o_col, N, K, cols)
        elif rest == 2:
            _tile2(af, tail, lda, wf, w_off, NR, of, full * N + o_col, N, K, cols)
        elif rest == 1:
            _tile1(af, tail, lda, wf, w_off, NR, of, full * N + o_col, N, K, cols)


@register_jitable
def panel_gemm_tn_rows(af, M, K, wf, ldw, pstride, NR, out, i0, i1):
    """Rows ``i0:i1`` of ``out += aᵀ @ W``: ``a (K, M)`` C-contiguous, flat in ``af``;
    ``out (M, P·NR)`` C-contiguous, whole panels wide, holding what the products add to (zeros
    for a plain product); columns past ``W``'s come out 0 when ``W`` is packed.

    ``W (K, N)`` is read in panels of ``NR`` columns: panel p's row k at ``wf[p·pstride + k·ldw]``,
    so either packed (``pack(W)``: ``ldw = NR``, ``pstride = K·NR``) or, when ``N`` is a multiple
    of ``NR``, in place (``ldw = N``, ``pstride = NR``): a weight gradient's right operand is as
    big as the product's input and not worth copying.  k runs in blocks of :data:`KC`; each
    output is still one multiply-add chain over k, in order (the ``tn`` micro-kernel).
    """
    N = out.shape[1]
    P = N // NR
    of = out.reshape(-1)
    full = i0 + (i1 - i0) // 4 * 4
    rest = i1 - full
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        a_off = k0 * M
        for p in range(P):
            w_off, o_col = p * pstride + k0 * ldw, p * NR
            for i in range(i0, full, 4):
                _tn4(af, a_off + i, M, wf, w_off, ldw, of, i * N + o_col, N, kc, NR)
            if rest == 3:
                _tn3(af, a_off + full, M, wf, w_off, ldw, of, full * N + o_col, N, kc, NR)
            elif rest == 2:
                _tn2(af, a_off + full, M, wf, w_off, ldw, of, full * N + o_col, N, kc, NR)
            elif rest == 1:
                _tn1(af, a_off + full, M, wf, w_off, ldw, of, full * N + o_col, N, kc, NR)
