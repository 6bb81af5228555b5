"""Where the numba LSTM spends its time: the per-step recurrent product, three ways.

For each (B, T, H) it times, in one process, best of ``--repeats``:
* the whole forward (``dense_cells.lstm_fwd``) and a loop of its T products
  ``z = h · W_hhᵀ`` ``(B, H) × (H, 4H)`` as the kernel runs them (``panels.panel_gemm`` on the
  weight packed once), and through OpenBLAS (``gemm``) row-major and transposed
  (``zᵀ = W_hh · hᵀ``, the form the kernels used for H > 128 before the packed product);
* the whole backward (``dense_cells.lstm_bwd``: fused kernel and ``dW_hh`` GEMM) and its T
  products ``dh = dz · W_hh`` the same three ways;
and prints the packed product's share of each pass and OpenBLAS's time over it (above 1: the
packed product is faster).

    OPENBLAS_NUM_THREADS=1 python benchmarks/lstm_step_gemm.py

OpenBLAS picks its kernels at load time; ``OPENBLAS_CORETYPE`` pins them (printed first).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from seqcore import cells

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import positive_int, require_backend, run_script, shape_triple  # noqa: E402
from scan_bandwidth import machine_info  # noqa: E402


def compiled_loops():
    """``(blas, panels)``: compiled loops of T products ``out = a · b`` through OpenBLAS and through
    the packed-panel product.  Built once numba is known to load (it is an optional extra)."""
    import numba
    from _compiled_blas import gemm
    from seqcore.backends.numba.panels import panel_gemm

    @numba.njit
    def blas(a, b, out, T):
        for _ in range(T):
            gemm(a, b, out)

    @numba.njit
    def panels(a, packed, out, T):
        for _ in range(T):
            panel_gemm(a, packed, out)
    return blas, panels


def best(fn, repeats):
    fn()  # compile / load from cache / page in
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def product_times(loops, shape_a, shape_b, T, repeats, rng):
    """Best time of T products ``a · b``: packed, OpenBLAS row-major, OpenBLAS transposed
    (``loops``: :func:`compiled_loops`)."""
    from seqcore.backends.numba.panels import pack
    products, panel_products = loops
    a, b = rng.normal(size=shape_a).astype(np.float32), rng.normal(size=shape_b).astype(np.float32)
    out = np.empty((shape_a[0], shape_b[1]), np.float32)
    aT, bT, outT = np.ascontiguousarray(b.T), np.ascontiguousarray(a.T), np.empty(out.shape[::-1], np.float32)
    packed = pack(b)
    return (best(lambda: panel_products(a, packed, out, T), repeats), best(lambda: products(a, b, out, T), repeats),
            best(lambda: products(aT, bT, outT, T), repeats))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", type=shape_triple, metavar="B,T,H", help="B,T,H triples",
                    default=[(16, 128, 64), (16, 128, 128), (16, 128, 256), (64, 128, 128), (64, 128, 256)])
    ap.add_argument("--repeats", type=positive_int, default=15)
    args = ap.parse_args(argv)
    require_backend("numba")
    from seqcore.backends.numba import dense_cells
    loops = compiled_loops()
    print(f"machine: {machine_info()}\n")
    print(f"{'(B, T, H)':>16} | {'forward ms':>10} {'h·Wᵀ ms':>8} {'share':>5} {'BLAS':>5} {'BLAS ᵀ':>6} | "
          f"{'backward ms':>11} {'dz·W ms':>8} {'share':>5} {'BLAS':>5} {'BLAS ᵀ':>6}")
    for B, T, H in args.shapes:
        rng = np.random.default_rng(0)
        cell = cells.LSTM(H, H)
        xi = rng.normal(size=(B, T, 4 * H)).astype(np.float32)
        W = (0.1 * rng.normal(size=(4 * H, H))).astype(np.float32)
        s0, b = np.zeros((B, 2 * H), np.float32), np.zeros(4 * H, np.float32)
        t_fwd = best(lambda: dense_cells.lstm_fwd(xi, s0, W, b, cell), args.repeats)
        states, res = dense_cells.lstm_fwd(xi, s0, W, b, cell)
        d = rng.normal(size=states.shape).astype(np.float32)
        t_bwd = best(lambda: dense_cells.lstm_bwd(res, d, cell), args.repeats)
        fp, fb, ft = product_times(loops, (B, H), (H, 4 * H), T, args.repeats, rng)
        bp, bb, bt = product_times(loops, (B, 4 * H), (4 * H, H), T, args.repeats, rng)
        print(f"{str((B, T, H)):>16} | {t_fwd * 1e3:10.2f} {fp * 1e3:8.2f} {fp / t_fwd:5.0%} {fb / fp:4.2f}x "
              f"{ft / fp:5.2f}x | {t_bwd * 1e3:11.2f} {bp * 1e3:8.2f} {bp / t_bwd:5.0%} {bb / bp:4.2f}x "
              f"{bt / bp:5.2f}x", flush=True)


if __name__ == "__main__":
    run_script(main)
