"""The Numba backend: every replaced primitive equals the NumPy reference, forward and VJP.

Oracle: the reference (fwd, bwd) of each primitive, run directly on the same inputs.
Tolerances per dtype (rtol, atol scaled by the largest reference entry).
"""
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


import seqcore
import seqcore.newton  # noqa: F401  (registers newton_recurrence)
from seqcore import cells, primitives
from seqcore.backends.numpy import scan as ref_scan

from primitive_cases import NONDIFF_OUTPUTS, cases, is_library_primitive, stable_seed

numba = pytest.importorskip("numba", reason="the numba backend needs numba (pip install 'seqcore[numba]')")
try:
    seqcore.backends.get("numba")
except seqcore.backends.BackendUnavailable as exc:  # e.g. a numba that does not import
    pytest.skip(str(exc), allow_module_level=True)

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]
REPLACED = sorted(seqcore.backends.get("numba").primitives)


@pytest.fixture(scope="module")
def nb():
    return seqcore.backends.get("numba")


def assert_close(got, want, dtype, what):
    if want is None:
        assert got is None, f"{what}: expected None"
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=f"{what}: non-finite entries differ")
    scale = float(np.abs(want[finite]).max()) if finite.any() else 1.0
    r = RTOL[dtype.type if isinstance(dtype, np.dtype) else dtype]
    np.testing.assert_allclose(got[finite], want[finite], rtol=r, atol=r * max(scale, 1e-30), err_msg=what)



def assert_same_nonfinite(got, want, what):
    """NaN, +inf and −inf exactly where the reference has them (``assert_close`` only compares
    finiteness: a NaN turned into −inf would pass it)."""
    got, want = np.asarray(got), np.asarray(want)
    for kind in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(kind(got), kind(want), err_msg=f"{what}: {kind.__name__} entries differ")

def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


LAYOUTS = ("reversed", "strided", "transposed", "broadcast")


def in_layout(x, layout):
    """``x``'s values in a layout that is not C-contiguous where the shape allows: ``reversed``
    (negative strides), ``strided`` (every other entry of the last axis), ``transposed`` (Fortran
    order); ``broadcast`` repeats the first entry along the first axis longer than 1 (stride 0,
    read-only), so it changes the values."""
    if layout == "reversed":
        return np.flip(np.flip(x).copy())
    if layout == "strided":
        return np.repeat(x, 2, axis=-1)[..., ::2]
    if layout == "transposed":
        return np.asfortranarray(x)
    axis = next((i for i, n in enumerate(x.shape) if n > 1), None)
    return x if axis is None else np.broadcast_to(np.take(x, [0], axis=axis), x.shape)


def _laid_out(xs, layout):
    """``(xs for the replacement, xs for the reference)``: with a ``layout``, the arrays in it and
    C-contiguous copies of those views (the same values)."""
    if layout is None:
        return xs, xs
    views = tuple(None if x is None else in_layout(x, layout) for x in xs)
    return views, tuple(None if v is None else np.array(v) for v in views)


def compare_primitive(nb, name, args, static, dtype, rng, layout=None):
    """Forward and VJP of the numba replacement equal the reference's; with a ``layout``
    (:data:`LAYOUTS`), the replacement gets the inputs and cotangents in it.  Diagnostic outputs
    (``NONDIFF_OUTPUTS``) are not compared and get a zero cotangent."""
    prim = primitives.get(name)
    fwd, bwd = nb.primitives[name]
    args, ref_args = _laid_out(args, layout)
    want, want_res = prim.fwd(np, *ref_args, **static)
    got, got_res = fwd(np, *args, **static)
    if name != "newton_recurrence":  # that one runs the reference engine on compiled steps: no tag
        assert got_res[0] == "numba", f"{name}: the replacement fell back to the reference"
    nondiff = NONDIFF_OUTPUTS.get(name, ())
    for i, (g, w) in enumerate(zip(_as_tuple(got), _as_tuple(want))):
        if i not in nondiff:
            assert_close(g, w, dtype, f"{name} forward")
    cot = tuple(np.zeros_like(w) if i in nondiff else rng.normal(size=np.shape(w)).astype(dtype)
                for i, w in enumerate(_as_tuple(want)))
    got_cot, cot = _laid_out(cot, layout)
    if not isinstance(want, tuple):
        got_cot, cot = got_cot[0], cot[0]
    want_grads = prim.bwd(np, want_res, cot, **static)
    got_grads = bwd(np, got_res, got_cot, **static)
    assert len(got_grads) == len(want_grads)
    for i, (g, w) in enumerate(zip(got_grads, want_grads)):
        assert_close(g, w, dtype, f"{name} gradient {i}")


# -- the module ---------------------------------------------------------------------------------

def test_backend_module(nb):
    assert nb.name == "numba" and nb.xp is np and nb.version == numba.__version__
    x = nb.asarray([1.0, 2.0], dtype=np.float32)
    assert isinstance(x, np.ndarray) and x.dtype == np.float32
    np.testing.assert_array_equal(nb.to_numpy(x), [1.0, 2.0])


def test_import_seqcore_does_not_load_numba():
    code = "import sys, seqcore, seqcore.cells, seqcore.scan; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_hot_primitive_is_replaced(nb):
    hot = {"linear_scan", "block_scan", "log_linear_scan", "linear"}
    hot |= {n for n in primitives.registry() if n.endswith("_recurrence") and is_library_primitive(n)}
    assert hot - set(nb.primitives) == set()


@pytest.mark.parametrize("name", REPLACED)
def test_replacements_have_the_reference_signatures(nb, name):
    """Names, kinds (positional, keyword-only, *args, **kwargs) and defaults of every parameter, as
    the reference's: a call by keyword must not work on one backend only."""
    prim = primitives.get(name)
    for what, ref, replacement in zip(("forward", "backward"), (prim.fwd, prim.bwd), nb.primitives[name]):
        assert inspect.signature(replacement) == inspect.signature(ref), (
            f"{name} {what}: {inspect.signature(replacement)}, the reference has {inspect.signature(ref)}")


# -- every replaced primitive on the shared cases ---------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["linear_scan", "block_scan", "log_linear_scan", "elman_recurrence",
                                  "lstm_recurrence", "gru_recurrence", "leaky_recurrence", "diaggru_recurrence",
                                  "cifg-lstm_recurrence", "mingru_recurrence", "minlstm_recurrence"])
def test_replacement_equals_reference_on_shared_cases(nb, name, dtype):
    rng = np.random.default_rng(0)
    for args, static in cases(name, rng, dtype):
        compare_primitive(nb, name, args, static, dtype, rng)


# -- scans: shapes, methods, directions -----------------------------------------------------------

SHAPES = [(1, 1, 1), (2, 7, 3), (1, 4097, 2), (3, 64, 1), (2, 33, 130)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_linear_scan_every_method_and_direction(nb, monkeypatch, shape, dtype):
    from seqcore.backends.numba import scan
    monkeypatch.setattr(scan, "num_threads", lambda: 64)  # chunked / parallel cut time on any machine,
    monkeypatch.setattr(scan, "CHUNK_MIN_WORK", 0)       # at any size
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 1.0, shape).astype(dtype)
    b = rng.normal(size=shape).astype(dtype)
    h0 = rng.normal(size=(shape[0], shape[2])).astype(dtype)
    for method in ("sequential", "chunked", "parallel"):
        for reverse in (False, True):
            for init in (None, h0):
                static = dict(reverse=reverse, method=method, chunk_size=16)
                compare_primitive(nb, "linear_scan", (a, b, init), static, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8, 19])  # 4 and 8 have their own builds
@pytest.mark.parametrize("B,T,G", [(1, 1, 1), (2, 9, 3), (1, 1025, 2)])
def test_block_scan_every_block_size(nb, k, B, T, G, dtype):
    rng = np.random.default_rng(2)
    A = (rng.uniform(-1, 1, (B, T, G, k, k)) / k).astype(dtype)
    b = rng.normal(size=(B, T, G, k)).astype(dtype)
    h0 = rng.normal(size=(B, G, k)).astype(dtype)
    for reverse in (False, True):
        for init in (None, h0):
            compare_primitive(nb, "block_scan", (A, b, init), dict(reverse=reverse), dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 7, 3), (1, 4097, 2)])
def test_log_linear_scan_including_zero_inputs(nb, shape, dtype):
    rng = np.random.default_rng(3)
    log_a = np.log(rng.uniform(0.3, 1.0, shape)).astype(dtype)
    log_b = rng.normal(size=shape).astype(dtype)
    log_b[..., 0] = -np.inf  # b = 0 in the first channel: the state stays at h0's trajectory
    log_h0 = rng.normal(size=(shape[0], shape[2])).astype(dtype)
    for reverse in (False, True):
        for init in (None, log_h0):
            compare_primitive(nb, "log_linear_scan", (log_a, log_b, init), dict(reverse=reverse), dtype, rng)



@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference on NaN and inf
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_linear_scan_with_nan_and_infinite_inputs(nb, dtype):
    """numpy.logaddexp's rules, forward and VJP: NaN propagates (also where log_b = −inf, b = 0),
    logaddexp(inf, inf) = inf, logaddexp(−inf, −inf) = −inf.  One channel per combination of
    the first step's log_a, log_b and log_h0; the later steps per ``tail``."""
    special = [0.0, -1.5, 2.0, np.inf, -np.inf, np.nan]
    combos = np.array(np.meshgrid(special, special, special, indexing="ij")).reshape(3, -1)
    D = combos.shape[1]
    rng = np.random.default_rng(9)
    fwd, bwd = nb.primitives["log_linear_scan"]
    prim = primitives.get("log_linear_scan")
    for tail_a, tail_b in [(0.0, -np.inf), (np.nan, -np.inf), (0.0, np.inf), (-np.inf, 1.0), (0.5, 0.3)]:
        la = np.empty((1, 3, D), dtype)
        lb = np.empty((1, 3, D), dtype)
        la[0, 0], lb[0, 0] = combos[0], combos[1]
        la[0, 1], lb[0, 1] = tail_a, tail_b
        la[0, 2], lb[0, 2] = 0.2, -np.inf
        for h0 in (None, combos[2][None].astype(dtype)):
            for reverse in (False, True):
                args = (la[:, ::-1].copy(), lb[:, ::-1].copy()) if reverse else (la, lb)
                want, want_res = prim.fwd(np, *args, h0, reverse=reverse)
                got, got_res = fwd(np, *args, h0, reverse=reverse)
                assert got_res[0] == "numba"
                what = f"tail {tail_a, tail_b}, h0 {h0 is not None}, reverse {reverse}"
                assert_same_nonfinite(got, want, f"{what}: y")
                assert_close(got, want, dtype, f"{what}: y")
                dy = rng.normal(size=want.shape).astype(dtype)
                for i, (g, w) in enumerate(zip(bwd(np, got_res, dy, reverse=reverse),
                                               prim.bwd(np, want_res, dy, reverse=reverse))):
                    if w is not None:
                        assert_same_nonfinite(g, w, f"{what}: gradient {i}")
                        assert_close(g, w, dtype, f"{what}: gradient {i}")

def test_non_contiguous_inputs_are_copied(nb):
    rng = np.random.default_rng(4)
    base = rng.uniform(0.5, 1.0, (5, 40, 6))
    a = base[:, ::-2, 1::2]             # reversed and strided
    b = np.asfortranarray(rng.normal(size=(5, 20, 3)))
    h0 = rng.normal(size=(3, 5)).T      # transposed
    assert not (a.flags.c_contiguous or b.flags.c_contiguous or h0.flags.c_contiguous)
    for method in ("sequential", "chunked"):
        compare_primitive(nb, "linear_scan", (a, b, h0), dict(method=method, chunk_size=4), np.float64, rng)
    A = np.swapaxes(rng.uniform(-0.5, 0.5, (2, 8, 3, 2, 2)), -1, -2)
    compare_primitive(nb, "block_scan", (A, rng.normal(size=(2, 8, 3, 2))[:, :, ::-1], None), {}, np.float64, rng)
    # transposed blocks are read in place (no copy) by the forward: every k, both directions
    for k in (2, 3, 4, 5, 8):
        A = np.swapaxes(rng.uniform(-0.5, 0.5, (2, 9, 2, k, k)), -1, -2)
        h0 = rng.normal(size=(2, 2, k))
        for reverse in (False, True):
            b = rng.normal(size=(2, 9, 2, k))
            compare_primitive(nb, "block_scan", (A, b, h0), dict(reverse=reverse), np.float64, rng)
            fwd = nb.primitives["block_scan"][0]
            got, res = fwd(np, A, b, h0, reverse)
            assert res[1] is A  # read in place, not copied
            np.testing.assert_array_equal(got, fwd(np, np.ascontiguousarray(A), b, h0, reverse)[0])
    cell = cells.LSTM(3, 4)
    p = cell.init(rng, np.float64)
    xi = rng.normal(size=(6, 2, 16)).transpose(1, 0, 2)  # (B, T, 4H) with a non-contiguous layout
    args = (xi, np.zeros((2, 8)), p["weight_hh"].T.copy().T, p["bias_hh"])
    compare_primitive(nb, "lstm_recurrence", args, dict(cell=cell), np.float64, rng)



@pytest.mark.filterwarnings("ignore::seqcore.newton.NewtonConvergenceWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", REPLACED)
def test_every_replacement_takes_any_layout(nb, name, dtype):
    """Every replaced primitive on the shared cases (``linear``: panel-wide ones) with each input and
    each cotangent reversed, strided, transposed or broadcast (stride 0, read-only) equals the
    reference on C-contiguous copies, forward and VJP."""
    rng = np.random.default_rng(stable_seed("layouts", name, np.dtype(dtype).name))
    examples = panel_linear_cases(rng, dtype) if name == "linear" else list(cases(name, rng, dtype))
    for layout in LAYOUTS:
        non_contiguous = 0
        for args, static in examples:
            non_contiguous += sum(x is not None and not in_layout(x, layout).flags.c_contiguous for x in args)
            compare_primitive(nb, name, args, static, dtype, rng, layout=layout)
        assert non_contiguous, f"{name}: no input was made non-contiguous by {layout!r}"


def _read_only(x):
    x = np.array(x)
    x.flags.writeable = False
    return x


@pytest.mark.parametrize("dtype", DTYPES)
def test_scans_take_read_only_inputs_and_leave_them_unchanged(nb, monkeypatch, dtype):
    """Read-only inputs (np.asarray of another library's buffer, a memory map opened "r"), forward and
    VJP, every scan, both directions, one chunk and several, with and without prefetching.  h0 used
    to be passed as the one-chunk forward's carry buffers: a Numba TypingError (setitem on a
    read-only array), though that pass never writes them."""
    from seqcore.backends.numba import ops, scan
    monkeypatch.setattr(scan, "CHUNK_MIN_WORK", 0)  # let "chunked" cut time at this size, on any machine
    monkeypatch.setattr(scan, "num_threads", lambda: 64)
    rng = np.random.default_rng(14)
    B, T, D = 2, 9, 3

    def check(name, args, static):
        inputs = tuple(_read_only(x.astype(dtype)) for x in args)
        saved = tuple(x.copy() for x in inputs)
        prim, (fwd, bwd) = primitives.get(name), nb.primitives[name]
        want, want_res = prim.fwd(np, *saved, **static)
        got, res = fwd(np, *inputs, **static)
        assert res[0] == "numba", f"{name}: the replacement fell back to the reference"
        assert_close(got, want, dtype, f"{name} forward {static}")
        cot = _read_only(rng.normal(size=want.shape).astype(dtype))
        for i, (g, w) in enumerate(zip(bwd(np, res, cot, **static), prim.bwd(np, want_res, cot.copy(), **static))):
            assert_close(g, w, dtype, f"{name} gradient {i} {static}")
        for x, x0 in zip(inputs, saved):
            np.testing.assert_array_equal(x, x0, err_msg=f"{name}: an input was written")

    linear = (rng.uniform(0.5, 1.0, (B, T, D)), rng.normal(size=(B, T, D)), rng.normal(size=(B, D)))
    log = (np.log(rng.uniform(0.3, 1.0, (B, T, D))), rng.normal(size=(B, T, D)), rng.normal(size=(B, D)))
    for reverse in (False, True):
        for ahead_width in (ops.AHEAD_MIN_WIDTH, 1):  # 1: the prefetching builds at this width
            monkeypatch.setattr(ops, "AHEAD_MIN_WIDTH", ahead_width)
            for method in ("sequential", "chunked"):
                static = dict(reverse=reverse, method=method, chunk_size=4)
                assert (scan.chunk_length(B, T, D, method, 4) < T) == (method == "chunked")
                check("linear_scan", linear, static)
        monkeypatch.setattr(ops, "AHEAD_MIN_WIDTH", 128)
        check("log_linear_scan", log, dict(reverse=reverse))
        for k in (1, 2, 4):  # k = 1: the diagonal kernels; 4: dense_blocks.py
            block = ((rng.uniform(-1, 1, (B, T, 2, k, k)) / k), rng.normal(size=(B, T, 2, k)),
                     rng.normal(size=(B, 2, k)))
            check("block_scan", block, dict(reverse=reverse))
    # transposed blocks read in place: a swapped view of a read-only array
    A = _read_only(rng.uniform(-0.5, 0.5, (B, T, 2, 2, 2)).astype(dtype))
    b = _read_only(rng.normal(size=(B, T, 2, 2)).astype(dtype))
    h0 = _read_only(rng.normal(size=(B, 2, 2)).astype(dtype))
    got, res = nb.primitives["block_scan"][0](np, np.swapaxes(A, -1, -2), b, h0)
    assert_close(got, ref_scan.block_scan_fwd(np, np.swapaxes(A, -1, -2), b, h0)[0], dtype, "transposed blocks")


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_minimal_cells_in_parallel_mode_take_a_read_only_h0(kind):
    """The parallel mode's scan starts from h0 as given: read-only was a TypingError (float64 and float32)."""
    rng = np.random.default_rng(15)
    for dtype in DTYPES:
        cell = cells.make(kind, 3, 5)
        p = cell.init(rng, dtype)
        x = rng.normal(size=(2, 6, 3)).astype(dtype)
        h0 = _read_only(rng.normal(size=(2, 5)).astype(dtype))
        with seqcore.use("numpy"):
            want, want_last = cell.apply(p, x, h0, mode="parallel")
        with seqcore.use("numba"):
            got, got_last = cell.apply(p, x, h0, mode="parallel")
        assert_close(got, want, dtype, f"{kind} states")
        assert_close(got_last, want_last, dtype, f"{kind} last state")


def test_linear_scan_from_a_read_only_h0_through_the_public_api(nb):
    h0 = np.zeros((2, 3))
    h0.flags.writeable = False
    with seqcore.use("numba"):
        h = seqcore.linear_scan(np.full((2, 4, 3), 0.5), np.ones((2, 4, 3)), h0)
    np.testing.assert_allclose(h[:, -1], 1.875)  # 1 + ½ + ¼ + ⅛ from zero


@pytest.mark.parametrize("dtype", DTYPES)
def test_panel_gemm_equals_matmul(nb, dtype):
    """The packed-panel product of the dense cells' steps against a float64 matmul: row counts
    around the tile height (1..9), column counts below, at and across panel widths, K = 1, and
    rows read at a stride from a larger array (panel_gemm_rows)."""
    import numba
    from seqcore.backends.numba import panels

    @numba.njit
    def product(a, W_packed, out):
        panels.panel_gemm(a, W_packed, out)

    @numba.njit
    def strided(flat, off, lda, M, K, W_packed, out):
        panels.panel_gemm_rows(flat, off, lda, M, K, W_packed, out)

    rng = np.random.default_rng(5)
    NR = panels.panel_width(dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for M in range(1, 10):
        for K, N in [(1, 1), (7, NR - 1), (33, NR), (5, 2 * NR + 3), (64, 3 * NR)]:
            a, W = rng.normal(size=(M, K)).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
            expect = a.astype(np.float64) @ W.astype(np.float64)
            scale = np.abs(a).astype(np.float64) @ np.abs(W).astype(np.float64)
            out = np.full((M, N), np.nan, dtype)
            product(a, panels.pack(W), out)
            assert np.all(np.abs(out - expect) <= tol * scale), (M, K, N)
            big = rng.normal(size=(M, 3, K)).astype(dtype)  # rows of step t = 1 of a (M, T, K) array
            out[:] = np.nan
            strided(big.reshape(-1), K, 3 * K, M, K, panels.pack(W), out)
            expect = big[:, 1].astype(np.float64) @ W.astype(np.float64)
            assert np.all(np.abs(out - expect) <= tol * (np.abs(big[:, 1]).astype(np.float64) @ np.abs(W))), (M, K, N)


@pytest.mark.parametrize("dtype", DTYPES)
def test_panel_products_equal_matmul(nb, monkeypatch, dtype):
    """``products.matmul`` and ``matmul_tn`` (``a.T @ b``, k in blocks of ``KC``) against a float64
    matmul: rows around the tile height, K across the k-blocks, N below one panel (BLAS), at and
    across panel widths (right operand read in place or packed), serial and split over threads,
    and non-contiguous operands."""
    from seqcore.backends.numba import panels, products

    rng = np.random.default_rng(7)
    NR, KC = panels.panel_width(dtype), panels.KC
    tol = 1e-12 if dtype == np.float64 else 3e-6

    def check(got, a64, b64, what):
        scale = np.abs(a64) @ np.abs(b64)
        assert got.dtype == dtype and got.shape == scale.shape, what
        assert np.all(np.abs(got - a64 @ b64) <= tol * scale), what

    for split in (False, True):
        monkeypatch.setattr(products, "PARALLEL_MIN_FLOPS", 0 if split else 1 << 62)
        for M in (8, 9, 13, 70):
            for K in (1, KC - 1, KC + 1, 3 * KC + 5):
                for N in (NR - 1, NR, NR + 3, 2 * NR):
                    a, b = rng.normal(size=(M, K)).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
                    check(products.matmul(a, b), a.astype(np.float64), b.astype(np.float64), ("nn", M, K, N, split))
                    at = rng.normal(size=(K, M)).astype(dtype)
                    check(products.matmul_tn(at, b), at.T.astype(np.float64), b.astype(np.float64),
                          ("tn", M, K, N, split))
    a, b = rng.normal(size=(40, 30)).astype(dtype)[::2], rng.normal(size=(NR + 5, 30)).astype(dtype).T
    check(products.matmul(a, b), a.astype(np.float64), b.astype(np.float64), "strided operands")
    check(products.matmul_tn(a.T, b[:, :NR]), a.astype(np.float64), b[:, :NR].astype(np.float64), "strided tn")
    assert products.panels_pay(64, NR, dtype) and not products.panels_pay(64, NR - 1, dtype)
    assert not products.panels_pay(products.MIN_ROWS - 1, 4 * NR, dtype)
    wide = products.TN_MAX_ROW_BYTES // np.dtype(dtype).itemsize + 1  # weight gradients this wide: BLAS
    a, b = rng.normal(size=(50, 16)).astype(dtype), rng.normal(size=(50, wide)).astype(dtype)
    np.testing.assert_array_equal(products.matmul_tn(a, b), a.T @ b)


def panel_linear_cases(rng, dtype):
    """``linear`` cases wide enough for the panel products (narrower outputs run the reference):
    leading axes, bias or none, outputs across panels."""
    from seqcore.backends.numba import panels

    NR = panels.panel_width(dtype)
    n = lambda *shape: rng.normal(size=shape).astype(dtype)  # noqa: E731
    return [((n(3, 11, 7), n(NR + 3, 7), n(NR + 3)), {}), ((n(40, NR), n(2 * NR, NR), None), {}),
            ((n(2, 3, 9, 2 * NR + 1), n(NR, 2 * NR + 1), n(NR)), {})]


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_replacement_equals_reference(nb, dtype):
    """The input projection through the panel products, forward and VJP (leading axes, bias or
    none, outputs across panels); outputs narrower than a panel run the reference."""
    from seqcore.backends.numba import panels

    rng = np.random.default_rng(8)
    NR = panels.panel_width(dtype)
    n = lambda *shape: rng.normal(size=shape).astype(dtype)  # noqa: E731
    for args, static in panel_linear_cases(rng, dtype):
        compare_primitive(nb, "linear", args, static, dtype, rng)
    fwd, bwd = nb.primitives["linear"]
    x, W = n(5, 9, 6), n(NR - 1, 6)
    y, res = fwd(np, x, W)
    assert res[0] == "reference"
    assert_close(y, primitives.get("linear").fwd(np, x, W)[0], dtype, "narrow linear")
    assert_close(bwd(np, res, np.ones_like(y))[1], np.ones((45, NR - 1), dtype).T @ x.reshape(45, 6), dtype,
                 "narrow linear dW")
    x1, W1 = n(5, 9, 1), n(2 * NR, 1)  # one input feature: the reference's broadcast product, bit for bit
    y, res = fwd(np, x1, W1)
    assert res[0] == "reference"
    np.testing.assert_array_equal(y, primitives.get("linear").fwd(np, x1, W1)[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_pack_of_every_layout(nb, dtype):
    """``pack`` (one compiled pass; transposed views read column-block-wise) against the panels
    built by NumPy: zero padding past N, row-major, transposed, reversed and Fortran operands."""
    from seqcore.backends.numba import panels
    rng = np.random.default_rng(11)
    NR = panels.panel_width(dtype)
    for K, N in [(1, 1), (5, 3), (17, NR), (33, NR + 1), (40, 3 * NR - 5), (0, 5), (4, 0)]:
        A = rng.normal(size=(K, N)).astype(dtype)
        P = -(-N // NR)
        padded = np.zeros((K, P * NR), dtype)
        padded[:, :N] = A
        want = padded.reshape(K, P, NR).transpose(1, 0, 2)
        for W in (A, np.ascontiguousarray(A.T).T, A[:, ::-1][:, ::-1], np.asfortranarray(A)):
            got = panels.pack(W)
            assert got.shape == want.shape and got.dtype == dtype and got.flags.c_contiguous
            np.testing.assert_array_equal(got, want)


_NARROW_PANELS = """
import numba, numpy as np
from seqcore.backends.numba import panels
assert panels.VECTOR_BYTES == {width}
@numba.njit
def product(a, W_packed, out):
    panels.panel_gemm(a, W_packed, out)
rng = np.random.default_rng(0)
for dtype in (np.float32, np.float64):
    NR = panels.panel_width(dtype)
    assert NR == panels.NV * {width} // np.dtype(dtype).itemsize
    for M, K, N in [(1, 1, 1), (5, 9, NR + 3), (8, 40, 3 * NR)]:
        a, W = rng.normal(size=(M, K)).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
        out = np.empty((M, N), dtype)
        product(a, panels.pack(W), out)
        scale = np.abs(a).astype(np.float64) @ np.abs(W)
        assert np.all(np.abs(out - a.astype(np.float64) @ W) <= 2e-6 * scale), (dtype, M, K, N)
    from seqcore.backends.numba import products
    for M, K, N in [(9, 1, NR), (10, 3 * panels.KC + 1, NR + 3), (8, 70, 2 * NR)]:
        a, b = rng.normal(size=(K, M)).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
        scale = np.abs(a.T).astype(np.float64) @ np.abs(b)
        got = products.matmul_tn(a, b)
        assert np.all(np.abs(got - a.T.astype(np.float64) @ b) <= 2e-6 * scale), ("tn", dtype, M, K, N)
print("ok")
"""


@pytest.mark.parametrize("width", [16, 32])
def test_panel_gemm_narrower_vectors(nb, tmp_path, width):
    """The packed product compiled for 16- and 32-byte vectors (SSE/NEON-wide, AVX-wide; LLVM
    splits them on this CPU) against matmul, in a subprocess with its own kernel cache."""
    env = dict(os.environ, SEQCORE_PANEL_VECTOR_BYTES=str(width), NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _NARROW_PANELS.format(width=width)], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_panel_vector_width_override_is_validated(nb):
    env = dict(os.environ, SEQCORE_PANEL_VECTOR_BYTES="48")
    out = subprocess.run([sys.executable, "-c", "import seqcore.backends.numba.panels"], env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "SEQCORE_PANEL_VECTOR_BYTES: got '48', expected 16, 32 or 64" in out.stderr


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["lstm", "gru", "elman", "leaky"])
def test_dense_cells_across_panel_and_tile_edges(nb, kind, dtype):
    """The dense cells' fused kernels against the reference at batch sizes around the product's
    tile height and widths crossing its panels (H = 70: 280 LSTM columns)."""
    rng = np.random.default_rng(1)
    for B, T, H in [(1, 1, 1), (3, 9, 5), (5, 4, 70), (9, 3, 17)]:
        cell = cells.make(kind, 2, H)
        p = cell.init(rng, dtype)
        xi = cell.project(p, rng.normal(size=(B, T, 2)).astype(dtype))
        args = (xi, rng.normal(size=(B, cell.state_size)).astype(dtype), *(p[k] for k in cell.recurrent_keys))
        compare_primitive(nb, f"{cell.name}_recurrence", args, dict(cell=cell), dtype, rng)


@pytest.mark.parametrize("kind", ["diaggru", "cifg-lstm", "mingru", "minlstm"])
def test_backward_kernels_with_prefetching(nb, monkeypatch, kind):
    """The per-neuron cells' backward kernels come in two builds, with and without asking for
    lines ahead (chosen by task width); the prefetching build, forced here at small widths
    (B = 1 and 3: whole rows, and rows split into blocks), must equal the reference too."""
    from seqcore.backends.numba import diagonal_cells, minimal_cells, ops
    monkeypatch.setattr(ops, "AHEAD_MIN_WIDTH", 1)
    rng = np.random.default_rng(12)
    for B, T, H in [(1, 9, 20), (3, 7, 40)]:
        cell = cells.make(kind, 2, H)
        p = cell.init(rng, np.float64)
        xi = np.asarray(cell.project(p, rng.normal(size=(B, T, 2))))
        args = (xi, rng.normal(size=(B, cell.state_size)), *cell.recurrent_args(p))
        compare_primitive(nb, f"{cell.name}_recurrence", args, dict(cell=cell), np.float64, rng)
    build = {"diaggru": diagonal_cells._diaggru_backward, "cifg-lstm": diagonal_cells._cifg_backward}.get(
        kind, minimal_cells._minimal_backward)[True]
    assert build.dispatcher.signatures, "the prefetching build did not run"


@pytest.mark.parametrize("method", ["sequential", "chunked"])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_with_prefetching(nb, monkeypatch, method, reverse):
    """The diagonal scan's prefetching builds (forced at small widths) against the reference,
    both time directions, one chunk and several (float64)."""
    from seqcore.backends.numba import ops, scan
    monkeypatch.setattr(ops, "AHEAD_MIN_WIDTH", 1)
    monkeypatch.setattr(scan, "CHUNK_MIN_WORK", 0)  # let `chunked` cut time at this size, on any machine
    monkeypatch.setattr(scan, "num_threads", lambda: 64)
    rng = np.random.default_rng(13)
    for B, T, D in [(1, 9, 20), (2, 40, 33)]:
        assert (scan.chunk_length(B, T, D, method, 4) < T) == (method == "chunked")
        a, b = rng.uniform(-1.1, 1.1, size=(B, T, D)), rng.normal(size=(B, T, D))
        args = (a, b, rng.normal(size=(B, D)))
        compare_primitive(nb, "linear_scan", args, dict(reverse=reverse, method=method, chunk_size=4),
                          np.float64, rng)
    assert scan._diag_forward[True].dispatcher.signatures and scan._diag_backward[True].dispatcher.signatures


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("method", ["chunked", "parallel"])
def test_chunked_scans_where_chunk_products_overflow(nb, monkeypatch, method, reverse):
    """A chunk's product of gates overflows (|a| > 1 over the chunk) where the states stay
    finite: states from zero pass it as zero, a non-finite carry rescans without chunks — the
    sequential scan's values and gradients, never NaN."""
    from seqcore.backends.numba import scan
    monkeypatch.setattr(scan, "CHUNK_MIN_WORK", 0)
    monkeypatch.setattr(scan, "num_threads", lambda: 64)
    T = 4000
    rising = np.full((1, T, 3), 1.5, np.float32)  # zero states until the inputs start, at the end
    b = np.zeros((1, T, 3), np.float32)
    b[0, (slice(T - 50, None) if not reverse else slice(None, 50))] = 1
    pattern = np.array(([1.5] * 250 + [0.5] * 250) * (T // 500), np.float32)  # peaks near 1e34
    swinging = np.tile(pattern[None, :, None], (1, 1, 3))
    for a, h0 in ((rising, None), (swinging, np.full((1, 3), 1e-10, np.float32))):
        assert scan.chunk_length(1, T, 3, method, 500) < T
        static = dict(reverse=reverse, method=method, chunk_size=500)
        ref, res = nb.primitives["linear_scan"][0](np, a, b, h0, reverse=reverse)
        got, res_got = nb.primitives["linear_scan"][0](np, a, b, h0, **static)
        assert np.all(np.isfinite(ref))
        assert_close(got, ref, np.float32, f"{method} forward")
        cot = np.zeros_like(b)
        cot[0, (slice(None, 3) if not reverse else slice(T - 3, None))] = 1  # zero over the long tail
        want = nb.primitives["linear_scan"][1](np, res, cot, reverse=reverse)
        for g, w, what in zip(nb.primitives["linear_scan"][1](np, res_got, cot, **static), want, ("da", "db", "dh0")):
            assert_close(g, w, np.float32, f"{method} {what}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log_space", [False, True])
@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_minimal_cells_long_and_wide(nb, kind, log_space, dtype):
    """Fused minGRU / minLSTM against the reference: many neuron blocks (H = 70, a short last
    block), long T, gates driven into saturation (|k| up to 40) and candidates of both signs."""
    rng = np.random.default_rng(11)
    cell = cells.make(kind, 2, 70, log_space=log_space)
    xi = (rng.normal(size=(3, 1500, cell.n_projections * 70)) * rng.choice([1.0, 10.0, 40.0], 70 * cell.n_projections))
    compare_primitive(nb, f"{kind}_recurrence", (xi.astype(dtype), rng.normal(size=(3, 70)).astype(dtype)),
                      dict(cell=cell), dtype, rng)

@pytest.mark.parametrize("dtype,k", [(np.float32, 20.0), (np.float64, 40.0)])
def test_mingru_gate_derivative_where_the_gate_rounds_to_one(nb, dtype, k):
    """z = σ(k_z) rounds to 1, yet σ'(k_z) = σ(k_z)σ(−k_z) ≈ e^−k: the reference and the fused
    kernel keep it (z(1 − z) would be 0), each entry to relative rounding."""
    rng = np.random.default_rng(2)
    cell = cells.MinGRU(2, 4)
    kz = k + rng.uniform(0, 2, size=(3, 1, 4))
    xi = np.concatenate([kz, rng.normal(size=(3, 1, 4))], axis=-1).astype(dtype)
    h0 = rng.normal(size=(3, 4)).astype(dtype)
    e = np.exp(-kz.astype(np.float64))
    want = (xi[..., 4:].astype(np.float64) - h0[:, None]) * e / (1 + e) ** 2  # dstates = 1
    prim = primitives.get("mingru_recurrence")
    for fwd, bwd, what in ((prim.fwd, prim.bwd, "reference"), (*nb.primitives["mingru_recurrence"], "numba")):
        _, res = fwd(np, xi, h0, cell=cell)
        dxi, _ = bwd(np, res, np.ones((3, 1, 4), dtype), cell=cell)
        np.testing.assert_allclose(dxi[..., :4], want, rtol=10 * RTOL[dtype], err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_with_zero_features(nb, dtype):
    """0 input features: y is the bias alone (the empty sum), through seqcore.use("numba"), with
    gradients of the arguments' shapes; 0 output features: an empty y."""
    from seqcore.backends.numba import panels

    NR = panels.panel_width(dtype)
    rng = np.random.default_rng(10)
    for x_shape, w_shape in [((300, 0), (2 * NR, 0)), ((4, 80, 0), (NR, 0)), ((300, 7), (0, 7))]:
        x, w, b = np.ones(x_shape, dtype), np.ones(w_shape, dtype), rng.normal(size=w_shape[:1]).astype(dtype)
        with seqcore.use("numba"):
            y, pullback = seqcore.vjp(seqcore.ops.linear, x, w, b)
            g = rng.normal(size=y.shape).astype(dtype)
            dx, dw, db = pullback(g)
        assert y.shape == x_shape[:-1] + w_shape[:1] and y.dtype == dtype
        np.testing.assert_array_equal(y, np.broadcast_to(b, y.shape) if w_shape[1] == 0 else y)
        assert (dx.shape, dw.shape, db.shape) == (x_shape, w_shape, w_shape[:1])
        np.testing.assert_array_equal(dx, np.zeros(x_shape, dtype) if w_shape[0] == 0 else dx)
        np.testing.assert_array_equal(dw, np.zeros(w_shape, dtype))
        np.testing.assert_allclose(db, g.reshape(-1, w_shape[0]).sum(axis=0) if w_shape[0] else db, rtol=1e-5)


# -- cells end to end through seqcore.use("numba") ---------------------------------------------------

CELLS = {
    "elman-tanh": lambda: cells.Elman(3, 8),
    "elman-relu": lambda: cells.Elman(3, 8, nonlinearity="relu"),
    "lstm": lambda: cells.LSTM(3, 8),
    "gru": lambda: cells.GRU(3, 8),
    "leaky": lambda: cells.LeakyRNN(3, 8, tau_init=2.0),
    "leaky-tanh": lambda: cells.LeakyRNN(3, 8, nonlinearity="tanh"),
    "diaggru": lambda: cells.DiagGRU(4, 8, heads=2),
    "cifg-lstm": lambda: cells.CIFGLSTM(3, 8),
    "mingru": lambda: cells.MinGRU(3, 8),
    "mingru-log": lambda: cells.MinGRU(3, 8, log_space=True),
    "minlstm": lambda: cells.MinLSTM(3, 8),
    "minlstm-log": lambda: cells.MinLSTM(3, 8, log_space=True),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_cell_values_and_gradients_match_numpy_backend(cell_name, dtype):
    cell = CELLS[cell_name]()
    rng = np.random.default_rng(5)
    params = cell.init(rng, dtype)
    if "tau" in params:  # some timescales below the clamp at 1, some above
        params["tau"] = rng.uniform(0.5, 3.0, params["tau"].shape).astype(dtype)
    for B, T in [(1, 1), (3, 17)]:
        x = rng.normal(size=(B, T, cell.input_size)).astype(dtype)
        cot = rng.normal(size=(B, T, cell.hidden_size)).astype(dtype)

        def run():
            out, pullback = seqcore.vjp(lambda p, x: cell.apply(p, x)[0], params, x)
            return out, pullback(cot)

        with seqcore.use("numpy"):
            want, (want_dp, want_dx) = run()
        with seqcore.use("numba"):
            got, (got_dp, got_dx) = run()
        assert_close(got, want, dtype, f"{cell_name} outputs")
        assert_close(got_dx, want_dx, dtype, f"{cell_name} dx")
        for k in want_dp:
            assert_close(got_dp[k], want_dp[k], dtype, f"{cell_name} d{k}")



@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_fused_cells_over_long_sequences(nb, cell_name, dtype):
    """T = 3001 steps (B = 2, H = 8): the fused forward and BPTT of every cell stay within the
    tolerances of the reference while rounding errors accumulate over time."""
    cell = CELLS[cell_name]()
    rng = np.random.default_rng(stable_seed("long", cell_name, np.dtype(dtype).name))
    p = cell.init(rng, dtype)
    xi = np.asarray(cell.project(p, rng.normal(size=(2, 3001, cell.input_size)).astype(dtype)))
    state0 = (0.5 * rng.normal(size=(2, cell.state_size))).astype(dtype)
    compare_primitive(nb, f"{cell.name}_recurrence", (xi, state0, *cell.recurrent_args(p)), dict(cell=cell),
                      dtype, rng)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference on NaN and inf
@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_cell_nan_patterns_match_numpy_backend(cell_name):
    """A NaN in x (one entry), in weight_hh or in h0 reaches the same outputs and gradients as
    in the reference: a NaN must not come out as a plausible number (relu's max(NaN, 0) is NaN)."""
    cell = CELLS[cell_name]()
    for dtype in DTYPES:
        for site in ("x", "weight_hh", "h0"):
            rng = np.random.default_rng(11)
            params = cell.init(rng, dtype)
            x = rng.normal(size=(2, 5, cell.input_size)).astype(dtype)
            cot = rng.normal(size=(2, 5, cell.hidden_size)).astype(dtype)
            h0 = None
            if site == "x":
                x[0, 1, 0] = np.nan
            elif site == "weight_hh":
                if "weight_hh" not in params:
                    continue
                params["weight_hh"].reshape(-1)[1] = np.nan
            else:
                h0 = seqcore.tree.tree_map(np.array, cell.apply(params, x)[1])
                seqcore.tree.tree_leaves(h0)[0][1, 2] = np.nan

            def run():
                out, pullback = seqcore.vjp(lambda p, x: cell.apply(p, x, h0)[0], params, x)
                return out, pullback(cot)

            with seqcore.use("numpy"):
                want, (want_dp, want_dx) = run()
            with seqcore.use("numba"):
                got, (got_dp, got_dx) = run()
            assert np.isnan(want).any()
            pairs = [("outputs", got, want), ("dx", got_dx, want_dx)]
            pairs += [(f"d{k}", got_dp[k], want_dp[k]) for k in want_dp]
            for what, g, w in pairs:
                assert_same_nonfinite(g, w, f"{cell_name} {dtype.__name__} NaN in {site}: {what}")
                assert_close(g, w, dtype, f"{cell_name} {dtype.__name__} NaN in {site}: {what}")

def test_public_scan_dispatches_to_numba(nb):
    rng = np.random.default_rng(6)
    a, b = rng.uniform(0, 1, (2, 50, 3)), rng.normal(size=(2, 50, 3))
    want = seqcore.linear_scan(a, b)
    with seqcore.use("numba"):
        nb.clear_compile_report()
        got, pullback = seqcore.vjp(lambda a, b: seqcore.linear_scan(a, b, method="chunked"), a, b)
        da, db = pullback(np.ones_like(got))
    assert_close(got, want, np.float64, "linear_scan via seqcore.use")
    # ∂(Σ h)/∂b_t = Σ_{s≥t} Π_{t<r≤s} a_r: the reverse scan of ones, by a direct loop
    expect = np.zeros_like(b)
    acc = np.zeros((2, 3))
    for t in range(49, -1, -1):
        acc = 1 + (a[:, t + 1] * acc if t < 49 else 0)
        expect[:, t] = acc
    assert_close(db, expect, np.float64, "linear_scan db")


def test_chunking_over_time_only_when_rows_cannot_fill_the_threads(monkeypatch):
    from seqcore.backends.numba import scan
    monkeypatch.setattr(scan, "num_threads", lambda: 4)
    chunk_length = scan.chunk_length
    monkeypatch.setattr(scan, "CHUNK_MIN_WORK", 1000 * 8 // 4)   # exactly enough work per thread
    assert chunk_length(1, 1000, 8, "parallel", 16) == -(-1000 // 16)
    assert chunk_length(1, 999, 8, "parallel", 16) == 999      # too little: one chunk
    monkeypatch.setattr(scan, "CHUNK_MIN_WORK", 0)
    assert chunk_length(1, 1000, 8, "sequential", 16) == 1000
    assert chunk_length(1, 1000, 8, "chunked", 100) == 100
    assert chunk_length(1, 1000, 8, "chunked", 16) == -(-1000 // 16)  # no finer than 4 chunks per thread
    assert chunk_length(1, 1000, 8, "parallel", 16) == -(-1000 // 16)
    assert chunk_length(3, 1000, 64, "chunked", 100) == 100    # a thread would idle
    assert chunk_length(2, 1000, 130, "chunked", 16) == 1000   # 2 rows × 3 column blocks: a task per thread
    assert chunk_length(4, 1000, 64, "parallel", 16) == 1000
    assert chunk_length(1, 5, 8, "chunked", 64) == 5


# -- the Newton scan: fused residual / Jacobian assembly ---------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [lambda: cells.DiagGRU(4, 6, heads=2), lambda: cells.DiagGRU(4, 20, heads=2),
                                  lambda: cells.DiagGRU(3, 40), lambda: cells.CIFGLSTM(3, 5),
                                  lambda: cells.GRU(3, 5), lambda: cells.LSTM(3, 5), lambda: cells.GRU(3, 23),
                                  lambda: cells.LSTM(2, 17)])
def test_fused_newton_steps_equal_the_cell_steps(make, dtype):
    # DiagGRU rows of 6 and 20 (float32) take the blocked step kernel, 40 the row kernel; N = 700
    # gives the blocked kernel several blocks per task, the last one partly filled; GRU(3, 23) and
    # LSTM(2, 17) have 69 and 68 gate columns, past one panel of the dense steps' product
    from seqcore.backends.numba.newton_loop import FusedSteps, newton_view
    from seqcore.backends.numba.newton_steps import StepCache
    cell = make()
    fused = newton_view(cell)
    assert isinstance(fused, FusedSteps) and type(fused).__name__ == type(cell).__name__
    rng = np.random.default_rng(10)
    p = {k: v for k, v in cell.init(rng, dtype).items() if k in cell.recurrent_keys}
    for N in (1, 37, 700):
        state = rng.normal(size=(N, cell.state_size)).astype(dtype)
        gates = 4 if isinstance(cell, cells.LSTM) else 3
        xi = rng.normal(size=(N, gates * cell.hidden_size)).astype(dtype)
        want, want_cache = cell.step_fwd(np, p, state, xi)
        got, got_cache = fused.step_fwd(np, p, state, xi)
        assert_close(got, want, dtype, "f")
        assert_close(fused.step_jacobian(np, p, state, xi), cell.step_jacobian(np, p, state, xi), dtype, "J")
        got_f, got_cache, got_J = fused.step_fwd_and_jacobian(np, p, state, xi)
        assert_close(got_f, want, dtype, "f (fused with J)")
        assert_close(got_J, cell.step_jacobian(np, p, state, xi), dtype, "J (fused with f)")
        if hasattr(fused, "step_jacobian_cached"):  # dense Jacobians: from the step's cache
            got_J = fused.step_jacobian_cached(np, p, state, xi, fused.step_fwd(np, p, state, xi)[1])
            assert_close(got_J, cell.step_jacobian(np, p, state, xi), dtype, "J (from the cache)")
        # the adjoint of the step from the fused cache equals the reference's from its own
        dout = rng.normal(size=want.shape)  # float64: a kernel's adjoint casts to the cache's dtype
        if not isinstance(got_cache, StepCache):  # GRU, LSTM: the reference's cache and adjoint
            dout = dout.astype(dtype)
        got_b, want_b = fused.step_bwd(np, p, got_cache, dout), cell.step_bwd(np, p, want_cache, dout.astype(dtype))
        for name, g, w in (("dstate", got_b[0], want_b[0]), ("dxi", got_b[1], want_b[1])):
            assert g.dtype == dtype
            assert_close(g, w, dtype, name)
        assert sorted(got_b[2]) == sorted(want_b[2])
        for k in want_b[2]:
            assert got_b[2][k].dtype == dtype
            assert_close(got_b[2][k], want_b[2][k], dtype, k)
        # a reference cache (a step the dtypes sent to the reference) gets the reference adjoint
        ref = fused.step_bwd(np, p, want_cache, dout.astype(dtype))
        assert all(np.array_equal(a, b) for a, b in zip(ref[:2], want_b[:2]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, H", [(1, 16), (37, 7), (700, 16), (333, 32)])
def test_blocked_diaggru_steps_give_the_row_kernels_bits(nb, dtype, N, H):
    """Short rows evaluate their exps over blocks of rows: element by element the same arithmetic."""
    from seqcore.backends.numba import newton_steps as ns
    from seqcore.backends.numba.ops import scratch
    rng = np.random.default_rng(N + H)
    h, xi, a = (rng.normal(size=s).astype(dtype) for s in ((N, H), (N, 3 * H), (3 * H,)))
    rows, tasks = ns.row_tasks(N)
    per = max(1, min(rows, ns.EXP_BLOCK // H))
    blocked = scratch((tasks, 2 * per * H), dtype)
    blocked[0][:] = 0
    outs = [[np.empty_like(h) for _ in range(5)] for _ in range(2)]
    ns._diaggru_steps(h, xi, a, rows, True, *outs[0], *ns.row_scratch(N, H, dtype)[1:])
    ns._diaggru_steps_blocked(h, xi, a, rows, per, True, *outs[1], *blocked)
    for want, got in zip(*outs):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target, k", [("diag", 1), ("quasi", 1), ("block", 2), ("block", 3), ("dense", 5)])
def test_compiled_newton_update_and_residual_equal_the_reference(dtype, target, k):
    from seqcore import newton_solve
    from seqcore.backends.numba.newton_loop import newton_residual, newton_update
    rng = np.random.default_rng(13)
    for B, T in ((1, 1), (2, 7), (3, 40)):
        S = 2 * k if target == "block" else 5
        f, delta, states = (rng.normal(size=(B, T, S)).astype(dtype) for _ in range(3))
        delta[:, 3:5] = 0  # steps after an exactly converged predecessor keep f bit for bit
        A = rng.normal(size={"block": (B * T, S // k, k, k), "dense": (B * T, 1, S, S)}.get(target, (B * T, S)))
        A = A.astype(dtype)
        want = newton_solve.update(np, f, A, delta, target)
        got = newton_update(f, A, delta, target)
        assert got.dtype == dtype
        assert_close(got, want, dtype, "update")
        np.testing.assert_array_equal(got[:, 0], f[:, 0])
        np.testing.assert_array_equal(got[:, 4:6], f[:, 4:6])
        state0 = rng.normal(size=(B, S)).astype(dtype)
        for bad, where in ((None, None), (np.nan, (-1, -1, -1)), (np.inf, (-1, -1, -1)), (np.inf, (0, 0, 1)),
                           (1e30, (0, T - 1, 0))):
            s = states.copy()
            if bad is not None:
                s[where] = bad
            want_r, got_r = newton_solve.residual(np, s, f, state0), newton_residual(s, f, state0)
            np.testing.assert_array_equal(got_r[0], want_r[0])
            np.testing.assert_equal(got_r[1], want_r[1])  # NaN where NumPy gives NaN
            assert isinstance(got_r[1], float)


def test_newton_loop_computes_steps_and_jacobians_in_one_pass(nb, monkeypatch):
    """One kernel pass per Newton iteration (plus the initial guess), not a step pass and a
    Jacobian pass: counted on the fused DiagGRU rows."""
    from seqcore.backends.numba import newton_loop
    key = ("seqcore.cells.pararnn", "DiagGRU")
    calls = []
    kernels = newton_loop.STEP_KERNELS[key]
    monkeypatch.setitem(newton_loop.STEP_KERNELS, key,
                        kernels._replace(rows=lambda *a: calls.append(a[-1]) or kernels.rows(*a)))
    cell = cells.DiagGRU(3, 8)
    rng = np.random.default_rng(12)
    params = cell.init(rng, np.float64)
    x = rng.normal(size=(2, 50, 3))
    with seqcore.use("numba"):
        hs, info = seqcore.newton_scan(cell, params, x, tol=1e-12, max_iters=20)
    want, _ = cell.apply(params, x)
    np.testing.assert_allclose(hs, want, rtol=1e-10, atol=1e-12)
    assert info.converged and info.iterations >= 2
    # the initial guess (no Jacobian), then one pass with the Jacobian per residual evaluated
    assert calls == [False] + [True] * (info.iterations + 1)


def test_newton_view_sends_other_dtypes_to_the_reference():
    """float16 (or mixed) trajectories: the view's residual and update are the reference's."""
    from seqcore import newton_solve
    from seqcore.backends.numba.newton_loop import NewtonKernels, newton_view
    view = newton_view(cells.Elman(3, 4))  # no compiled steps: the residual and update only
    assert isinstance(view, NewtonKernels) and not hasattr(view, "step_fwd_and_jacobian")
    rng = np.random.default_rng(15)
    f, delta, states = (rng.normal(size=(2, 5, 4)).astype(np.float16) for _ in range(3))
    A = rng.normal(size=(10, 4)).astype(np.float32)  # mixed with float16: not compiled
    np.testing.assert_array_equal(view.newton_update(f, A, delta, "diag"), newton_solve.update(np, f, A, delta, "diag"))
    state0 = rng.normal(size=(2, 4)).astype(np.float16)
    got, want = view.newton_residual(states, f, state0), newton_solve.residual(np, states, f, state0)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]
    # compiled steps and cached Jacobians fall back the same way
    gru = cells.GRU(3, 4)
    gview = newton_view(gru)
    p16 = {k: v.astype(np.float16) for k, v in gru.init(rng, np.float32).items()}
    h, xi = rng.normal(size=(6, 4)).astype(np.float16), rng.normal(size=(6, 12)).astype(np.float16)
    out, cache = gview.step_fwd(np, p16, h, xi)
    np.testing.assert_array_equal(out, gru.step_fwd(np, p16, h, xi)[0])
    np.testing.assert_array_equal(gview.step_jacobian_cached(np, p16, h, xi, cache), gru.step_jacobian(np, p16, h, xi))


def test_numba_newton_solves_with_numba_scans_whatever_the_default(nb, monkeypatch):
    """The replacement's linear solves dispatch on the default backend; it sets it to numba
    while it runs, so a caller holding the primitive under the NumPy default still gets the
    compiled scans (counted), and the default is restored afterwards."""
    calls = []
    fwd_scan, bwd_scan = nb.primitives["block_scan"]
    monkeypatch.setitem(nb.primitives, "block_scan", (lambda *a, **k: calls.append(1) or fwd_scan(*a, **k), bwd_scan))
    cell = cells.CIFGLSTM(3, 4)
    rng = np.random.default_rng(14)
    params = cell.init(rng, np.float64)
    xi = np.asarray(cell.project(params, rng.normal(size=(2, 30, 3))))
    rec = tuple(params[k] for k in cell.recurrent_keys)
    from seqcore.newton import _resolve_options
    static = dict(cell=cell, **_resolve_options(cell, xi.dtype, 30))
    with seqcore.use("numpy"):
        (got, _), _ = nb.primitives["newton_recurrence"][0](np, xi, np.zeros((2, 8)), *rec, **static)
        assert seqcore.backends.current() == "numpy"
    assert calls, "the Newton solves ran the reference scans"
    want = primitives.get("cifg-lstm_recurrence").fwd(np, xi, np.zeros((2, 8)), *rec, cell=cell)[0]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("make", [lambda: cells.GRU(3, 6), lambda: cells.LSTM(3, 5)])
def test_dense_newton_builds_jacobians_only_for_iterations(nb, monkeypatch, make):
    """Dense Jacobians come from the step's cache, only when an iteration solves with them:
    none for the final residual check (counted), one more for the backward's adjoint."""
    from seqcore.backends.numba import newton_loop
    cell = make()
    key = (type(cell).__module__, type(cell).__qualname__)
    kernels, built = newton_loop.STEP_KERNELS[key], []
    monkeypatch.setitem(newton_loop.STEP_KERNELS, key, kernels._replace(
        jacobian_from_cache=lambda *a: built.append(1) or kernels.jacobian_from_cache(*a)))
    rng = np.random.default_rng(16)
    params = cell.init(rng, np.float64)
    x = rng.normal(size=(2, 40, 3))
    with seqcore.use("numba"):
        hs, info = seqcore.newton_scan(cell, params, x, tol=1e-12, max_iters=30)
        assert info.converged and len(built) == info.iterations
        out, pullback = seqcore.vjp(lambda p: seqcore.newton_scan(cell, p, x, tol=1e-12, max_iters=30)[0], params)
        grads = pullback(np.ones_like(out))[0]
    assert len(built) == 2 * info.iterations + 1  # the same iterations again, and the adjoint's
    want_hs, _ = cell.apply(params, x)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-10, atol=1e-12)
    want_out, want_pb = seqcore.vjp(lambda p: cell.apply(p, x)[0], params)
    for k, g in want_pb(np.ones_like(want_out))[0].items():
        np.testing.assert_allclose(grads[k], g, rtol=1e-8, atol=1e-10)


@pytest.mark.filterwarnings("ignore::seqcore.newton.NewtonConvergenceWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_newton_recurrence_equals_reference(nb, dtype):
    prim = primitives.get("newton_recurrence")
    fwd, bwd = nb.primitives["newton_recurrence"]
    rng = np.random.default_rng(11)
    for args, static in cases("newton_recurrence", rng, dtype):
        (want, _), want_res = prim.fwd(np, *args, **static)
        (got, history), got_res = fwd(np, *args, **static)
        assert_close(got, want, dtype, "newton states")
        assert history.shape == (static["max_iters"] + 1, 3)
        cot = (rng.normal(size=want.shape).astype(dtype), np.zeros_like(history))
        for i, (g, w) in enumerate(zip(bwd(np, got_res, cot, **static), prim.bwd(np, want_res, cot, **static))):
            assert_close(g, w, dtype, f"newton gradient {i}")


# -- fallback, compile report, the vectorized exponential ------------------------------------------

def test_unsupported_dtypes_fall_back_to_the_reference(nb):
    rng = np.random.default_rng(7)
    a = rng.uniform(0, 1, (2, 5, 3)).astype(np.float16)
    b = rng.normal(size=(2, 5, 3)).astype(np.float16)
    fwd, bwd = nb.primitives["linear_scan"]
    h, res = fwd(np, a, b)
    assert res[0] == "reference"
    np.testing.assert_array_equal(h, ref_scan.linear_scan_fwd(np, a, b)[0])
    da, db, dh0 = bwd(np, res, np.ones_like(h))
    np.testing.assert_array_equal(db, ref_scan.linear_scan_bwd(np, ref_scan.linear_scan_fwd(np, a, b)[1],
                                                               np.ones_like(h))[1])


def test_compile_report_separates_first_calls(nb):
    from seqcore.backends.numba import ops
    rng = np.random.default_rng(8)
    nb.clear_compile_report()
    ops.Kernel(lambda x: x.sum(), parallel=False)  # an unused kernel compiles nothing
    k = ops.kernel()(_report_probe)
    x = rng.normal(size=5)
    assert k(x) == pytest.approx(x.sum())
    assert k(x) == pytest.approx(x.sum())   # second call: no new row
    rows = [r for r in nb.compile_report() if r["kernel"] == "report_probe"]
    assert len(rows) == 1
    assert rows[0]["source"] in ("compiled", "disk cache") and rows[0]["first_call_s"] > 0
    assert rows[0]["compile_s"] >= 0 and "float64" in rows[0]["signature"]


def _report_probe(x):
    s = x.dtype.type(0.0)
    for v in x:
        s += v
    return s


@pytest.mark.parametrize("dtype,ints", [(np.float32, np.int32), (np.float64, np.int64)])
def test_vectorized_exp_is_accurate_to_a_few_ulp(dtype, ints):
    from seqcore.backends.numba.ops import exp_nonpos, expm1_nonpos
    info = np.finfo(dtype)
    lowest = np.log(info.tiny)  # below this exp(x) is not a normal number
    x = -np.concatenate([np.logspace(-30, np.log10(-lowest), 4000),
                         np.random.default_rng(9).uniform(0, -lowest, 4000), [0.0]])
    x = x.astype(dtype)
    out, kbits = np.empty_like(x), np.empty(x.size, ints)
    eps = info.eps
    exp_nonpos(x, out, kbits)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(out - want) / want) < 4 * eps
    tail = np.array([2 * lowest, -np.inf, np.nan], dtype)  # below the normals: exactly 0 (and -1), NaN kept
    exp_nonpos(tail, out[:3], kbits[:3])
    assert out[:2].tolist() == [0.0, 0.0] and np.isnan(out[2])
    expm1_nonpos(tail, out[:3], kbits[:3])
    assert out[:2].tolist() == [-1.0, -1.0] and np.isnan(out[2])
    expm1_nonpos(x, out, kbits)
    want = np.expm1(x.astype(np.float64))
    nz = want != 0
    assert np.max(np.abs(out[nz] - want[nz]) / np.abs(want[nz])) < 4 * eps
    assert out[~nz].tolist() == [0.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_vectorized_log1p_is_accurate_to_a_few_ulp(dtype):
    from seqcore.backends.numba.ops import log1p_coefficients, log1p_unit
    t = dtype
    consts = (t(1.0), t(2.0), t(np.sqrt(2.0)), t(np.log(2.0)), log1p_coefficients(np.dtype(dtype)))
    e = np.concatenate([np.logspace(-30, 0, 300), np.random.default_rng(12).uniform(0, 1, 300), [0.0, 1.0]])
    e = e.astype(dtype)
    got = np.array([log1p_unit(v, *consts) for v in e])
    want = np.log1p(e.astype(np.float64))
    nz = want > 0
    assert np.max(np.abs(got[nz] - want[nz]) / want[nz]) < 4 * np.finfo(dtype).eps
    assert got[~nz].tolist() == [0.0]


def test_kernels_cache_into_a_directory_keyed_by_every_backend_source(nb, tmp_path):
    """An edit of any backend file (ops.py's inlined helpers included) must not reuse stale kernels."""
    import numba

    from seqcore.backends.numba import cache, dense_cells, ops, scan
    here = cache._HERE
    for name in ("ops.py", "dense_cells.py", "scan.py"):  # a copy of the sources, one file edited at a time
        copy = tmp_path / name.replace(".py", "")
        shutil.copytree(here, copy, ignore=shutil.ignore_patterns("__pycache__"))
        assert cache.source_digest(copy) == cache.source_digest(here)
        (copy / name).write_text((copy / name).read_text() + "\n# edited\n")
        assert cache.source_digest(copy) != cache.source_digest(here)
    target = cache.cache_dir()
    assert target.name == cache.PREFIX + cache.source_digest() + cache._build_digest()
    for dispatcher in (dense_cells._lstm_forward.dispatcher, ops.expm1_parts, scan._diag_forward[False].dispatcher):
        assert Path(dispatcher._cache._cache_path).is_relative_to(target), dispatcher
    assert numba.config.CACHE_DIR == os.environ.get("NUMBA_CACHE_DIR", "")  # the user's setting is restored




def test_backend_runs_without_scipy(nb):
    """The numba extra installs no SciPy: the backend loads and the dense cells (whose products
    once went through numba's np.dot, i.e. SciPy's BLAS) run with SciPy made unimportable, and
    give the NumPy reference's values and gradients."""
    script = (
        "import sys; sys.modules['scipy'] = None\n"
        "import numpy as np, seqcore\n"
        "from seqcore import cells\n"
        "c = cells.LSTM(3, 70); p = c.init(np.random.default_rng(0), np.float32)\n"
        "x = np.random.default_rng(1).normal(size=(9, 5, 3)).astype(np.float32)\n"
        "res = {}\n"
        "for name in ('numba', 'numpy'):\n"
        "    with seqcore.use(name):\n"
        "        out, pb = seqcore.vjp(lambda p, x: c.apply(p, x)[0], p, x)\n"
        "        res[name] = (out, pb(np.ones_like(out))[0])\n"
        "assert not any(m == 'scipy' or m.startswith('scipy.') for m in sys.modules if sys.modules[m] is not None)\n"
        "np.testing.assert_allclose(res['numba'][0], res['numpy'][0], rtol=1e-5, atol=1e-5)\n"
        "for k in res['numpy'][1]:\n"
        "    np.testing.assert_allclose(res['numba'][1][k], res['numpy'][1][k], rtol=1e-4, atol=1e-4)\n"
        "print(True)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]


@pytest.mark.parametrize("dtype,big", [(np.float32, 1e37), (np.float64, 1e300)])
@pytest.mark.parametrize("name", ["lstm", "gru", "diaggru", "cifg-lstm"])
def test_a_saturated_gate_has_a_zero_derivative_as_in_the_reference(name, dtype, big):
    """Gate pre-activations of ±big: exp(−big) is 0, so the gate's derivative is exactly 0, as in the
    reference (the vectorized exp returned ~1e-38, which times an input of 1e37 made a gradient of 0.07)."""
    cell = cells.make(name, 1, 2)
    params = cell.init(np.random.default_rng(1), dtype)
    x = np.array([[[big], [-big], [0.5]]], dtype)

    def grads(backend):
        with seqcore.use(backend):
            _, pullback = seqcore.vjp(lambda p: cell.apply(p, x)[0].sum(), params)
            return pullback(1.0)[0]

    want, got = grads("numpy"), grads("numba")
    for key in want:
        assert np.isfinite(want[key]).all()
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)


# -- a kernel cache that cannot be written, caches of another panel width ---------------------------

_CACHE_PLACES = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    {setup}
    import numba
    from seqcore.backends.numba import cache, dense_cells, ops, scan
dispatchers = (dense_cells._lstm_forward.dispatcher, ops.expm1_parts, scan._diag_forward[False].dispatcher)
print(json.dumps(dict(paths=[getattr(d._cache, "_cache_path", None) for d in dispatchers],
                      name=cache.cache_dir().name, restored=numba.config.CACHE_DIR,
                      warnings=[str(w.message) for w in caught])))
"""


def _cache_places(env_cache_dir, tmp_dir, setup="pass"):
    """Where the kernels of a fresh process would cache (None: not cached), and its warnings."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(env_cache_dir), TMPDIR=str(tmp_dir))
    out = subprocess.run([sys.executable, "-c", _CACHE_PLACES.format(setup=setup)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import json
    return json.loads(out.stdout)


def _unwritable_dirs(tmp_path):
    """A cache directory under a regular file (unwritable even for root), and a read-only one
    where chmod holds (not for root)."""
    (tmp_path / "a-file").write_text("")
    places = [tmp_path / "a-file" / "cache"]
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    if not os.access(read_only, os.W_OK):
        places.append(read_only)
    return places


def test_an_unwritable_cache_dir_caches_under_the_temp_dir_still_keyed_by_the_sources(tmp_path):
    """Numba would fall back to this package's own __pycache__, with no digest of the sources
    in the path: an edit of ops.py's inlined helpers would then load stale machine code."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    for unwritable in _unwritable_dirs(tmp_path):
        got = _cache_places(unwritable, tmp)
        for path in got["paths"]:
            assert path is not None and Path(path).is_relative_to(tmp) and got["name"] in Path(path).parts, got
        assert got["restored"] == str(unwritable)
        notes = [w for w in got["warnings"] if "NUMBA_CACHE_DIR" in w]
        assert len(notes) == 1 and str(unwritable) in notes[0] and str(tmp) in notes[0], got["warnings"]


def test_kernels_are_not_cached_where_no_keyed_directory_can_be_written(tmp_path):
    """The temp directory unusable too (a file in its place, or a shared directory another user
    could write into): no disk cache for this process, said once."""
    (tmp_path / "a-file").write_text("")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / f"seqcore-numba-uid{os.getuid()}").mkdir(mode=0o777)
    os.chmod(shared / f"seqcore-numba-uid{os.getuid()}", 0o777)
    for tmp in (tmp_path / "a-file", shared):
        got = _cache_places(tmp_path / "a-file" / "cache", tmp, setup=f"import tempfile; tempfile.tempdir = {str(tmp)!r}")
        assert got["paths"] == [None, None, None], got
        notes = [w for w in got["warnings"] if "NUMBA_CACHE_DIR" in w]
        assert len(notes) == 1 and "not cached" in notes[0], got["warnings"]


def test_only_caches_of_other_sources_are_pruned(monkeypatch, tmp_path):
    """Caches of the same sources built for another panel width (SEQCORE_PANEL_VECTOR_BYTES) stay:
    alternating widths must not recompile everything each time."""
    from seqcore.backends.numba import cache
    monkeypatch.setattr(cache, "_HERE", tmp_path)
    sources = cache.PREFIX + cache.source_digest()
    current, other_width = tmp_path / "__pycache__" / (sources + "a043"), tmp_path / "__pycache__" / (sources + "d3b4")
    old_sources = tmp_path / "__pycache__" / (cache.PREFIX + "0" * 16 + "a043")
    unrelated = tmp_path / "__pycache__" / "numba_cb58"
    for folder in (current, other_width, old_sources, unrelated):
        folder.mkdir(parents=True)
    cache._prune_stale(current)
    assert sorted(p.name for p in (tmp_path / "__pycache__").iterdir()) == sorted(
        p.name for p in (current, other_width, unrelated))


# -- a backend that cannot load: one line, and the default falls back to numpy ----------------------

_SEQCORE = [sys.executable, "-c", "from seqcore_cli.main import main; main()"]


@pytest.mark.parametrize("setting", ["NUMBA_NUM_THREADS=0", "SEQCORE_PANEL_VECTOR_BYTES=48", "NUMBA_DISABLE_JIT=1"])
def test_a_numba_backend_that_fails_at_load_is_unavailable_not_a_traceback(tmp_path, setting):
    """Not only ImportError: numba's own start-up errors, a bad panel width, and interpreted
    kernels (NUMBA_DISABLE_JIT, which the kernels cannot run) make the backend unavailable,
    named in one line; `seqcore train` without --backend then runs on numpy, as documented."""
    var, value = setting.split("=")
    env = {k: v for k, v in os.environ.items() if k != "SEQCORE_BACKEND"}
    env[var] = value

    def seqcore_cli(*args):
        out = subprocess.run([*_SEQCORE, *args], env=env, capture_output=True, text=True, timeout=300)
        assert "Traceback" not in out.stderr, out.stderr[-3000:]
        return out

    listing = seqcore_cli("backends")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines() if line.strip()}
    assert rows["numba"].split()[1] == "no" and var in rows["numba"], listing.stdout
    assert "default for `seqcore train`" in rows["numpy"], listing.stdout
    small = ["--steps", "1", "--hidden", "4", "--batch-size", "2", "--eval-batches", "1", "--eval-batch-size", "2"]
    run = seqcore_cli("train", *small, "--out", str(tmp_path / "run"))
    assert run.returncode == 0, run.stderr
    import json
    assert json.loads((tmp_path / "run" / "config.json").read_text())["backend"] == "numpy"
    refused = seqcore_cli("train", *small, "--backend", "numba", "--out", str(tmp_path / "refused"))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode != 0 and len(lines) == 1 and lines[0].startswith("Error: --backend: backend 'numba' cannot load")
    assert var in lines[0] and not (tmp_path / "refused").exists()


# -- memory maps, empty batches ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_memory_maps_opened_read_only_take_the_compiled_kernels(nb, monkeypatch, tmp_path, dtype):
    """np.memmap is an ndarray subclass holding plain data: read in place by the kernels, not
    sent to the reference's Python loop (850x slower)."""
    from seqcore.backends.numba import scan
    rng = np.random.default_rng(12)

    def memmap(name, values):
        values = np.asarray(values, dtype)
        m = np.memmap(tmp_path / name, dtype=dtype, mode="w+", shape=values.shape)
        m[:] = values
        m.flush()
        return np.memmap(tmp_path / name, dtype=dtype, mode="r", shape=values.shape)

    a, b = memmap("a", rng.uniform(0.5, 1.0, (2, 9, 70))), memmap("b", rng.normal(size=(2, 9, 70)))
    h0 = memmap("h0", rng.normal(size=(2, 70)))
    compare_primitive(nb, "linear_scan", (a, b, h0), {}, dtype, rng)
    compare_primitive(nb, "log_linear_scan", (memmap("la", -rng.uniform(0, 2, (2, 9, 5))),
                                              memmap("lb", rng.normal(size=(2, 9, 5))), None), {}, dtype, rng)
    A = memmap("A", rng.uniform(-0.5, 0.5, (2, 9, 3, 2, 2)))
    for blocks in (A, np.swapaxes(A, -1, -2)):
        compare_primitive(nb, "block_scan", (blocks, memmap("bb", rng.normal(size=(2, 9, 3, 2))), None), {}, dtype, rng)
    # through the public API: the reference is never asked
    want = seqcore.linear_scan(np.array(a), np.array(b))
    monkeypatch.setattr(scan._ref, "linear_scan_fwd", lambda *args: pytest.fail("ran the reference"))
    with seqcore.use("numba"):
        assert_close(seqcore.linear_scan(a, b), want, dtype, "linear_scan of memory maps")


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_empty_batch_gives_empty_results_as_in_the_reference(nb, dtype):
    """B = 0 with more columns than one task block (D > 64, G > 16, H > 16), where the column
    split divided by the number of rows."""
    rng = np.random.default_rng(13)
    for h0 in (None, np.zeros((0, 100), dtype)):
        for name in ("linear_scan", "log_linear_scan"):
            compare_primitive(nb, name, (np.zeros((0, 3, 100), dtype), np.zeros((0, 3, 100), dtype), h0), {}, dtype, rng)
    for k, G in ((1, 100), (2, 17), (5, 17)):
        compare_primitive(nb, "block_scan", (np.zeros((0, 3, G, k, k), dtype), np.zeros((0, 3, G, k), dtype), None),
                          {}, dtype, rng)
    for name, kwargs in (("diaggru", {}), ("cifg-lstm", {}), ("mingru", {}), ("mingru", dict(log_space=True)),
                         ("minlstm", {}), ("minlstm", dict(log_space=True))):
        cell = cells.make(name, 3, 20, **kwargs)
        params, x = cell.init(rng, dtype), np.zeros((0, 4, 3), dtype)
        for mode in ("sequential", "parallel"):
            def run():
                out, pullback = seqcore.vjp(lambda p, x: cell.apply(p, x, mode=mode)[0], params, x)
                return out, pullback(np.zeros_like(out))

            with seqcore.use("numpy"):
                want, (want_dp, want_dx) = run()
            with seqcore.use("numba"):
                got, (got_dp, got_dx) = run()
            what = f"{name} {kwargs} {mode}"
            assert_close(got, want, dtype, f"{what} outputs")
            assert_close(got_dx, want_dx, dtype, f"{what} dx")
            for key in want_dp:
                assert_close(got_dp[key], want_dp[key], dtype, f"{what} d{key}")
