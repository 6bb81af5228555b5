"""The numba kernels' matrix products: NumPy's OpenBLAS (``gemm.py``) against numba's ``np.dot``.

``np.dot`` inside a numba kernel calls SciPy's OpenBLAS; ``seqcore.backends.numba.gemm.gemm``
calls NumPy's own (when NumPy exports its CBLAS).  For the products of recurrent steps and
weight gradients it times T calls of each inside a compiled loop, alternating the two, best of
``--repeats``, and prints the ratio (above 1: NumPy's library is faster) and whether the
results are bit-identical.  (The dense cells' per-step products have since moved to the
packed-panel kernel, ``panels.py``; ``lstm_step_gemm.py`` compares it with both BLAS forms.
The input projections and weight gradients moved to ``products.py`` where their shapes suit
the panels (``sequence_products.py``); the Newton steps' products still go through ``gemm``.)

    OPENBLAS_NUM_THREADS=1 python benchmarks/kernel_gemm.py
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numba
import numpy as np

from seqcore.backends.numba import gemm as kernel_gemm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scan_bandwidth import machine_info  # noqa: E402

# (M, K, N): the per-step products of LSTM/GRU layers (both orientations) and a weight gradient
SHAPES = [(16, 64, 256), (16, 128, 512), (64, 64, 256), (64, 128, 512), (512, 128, 16), (128, 512, 16),
          (16, 512, 128), (64, 512, 128), (256, 8192, 64)]


@numba.njit(cache=False)
def _loop_np_dot(a, b, out, n):
    for _ in range(n):
        np.dot(a, b, out)


@numba.njit(cache=False)
def _loop_gemm(a, b, out, n):
    for _ in range(n):
        kernel_gemm.gemm(a, b, out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = ap.parse_args(argv)
    print(machine_info())
    print(f"kernel products: {kernel_gemm.SOURCE} ({os.path.basename(kernel_gemm.LIBRARY or '-')})")
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    print(f"{'(M, K, N)':<18} {'np.dot us':>10} {'gemm us':>10} {'ratio':>7}  bits")
    for M, K, N in SHAPES:
        a, b = rng.normal(size=(M, K)).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
        out1, out2 = np.empty((M, N), dtype), np.empty((M, N), dtype)
        n = max(1, int(2e7 // (M * K * N)))
        _loop_np_dot(a, b, out1, 1)
        _loop_gemm(a, b, out2, 1)
        best = [np.inf, np.inf]
        for _ in range(args.repeats):
            for i, fn, out in ((0, _loop_np_dot, out1), (1, _loop_gemm, out2)):
                t = time.perf_counter()
                fn(a, b, out, n)
                best[i] = min(best[i], (time.perf_counter() - t) / n)
        same = "same" if np.array_equal(out1, out2) else "differ"
        print(f"{str((M, K, N)):<18} {best[0] * 1e6:>10.2f} {best[1] * 1e6:>10.2f} {best[0] / best[1]:>7.2f}  {same}")


if __name__ == "__main__":
    main()
