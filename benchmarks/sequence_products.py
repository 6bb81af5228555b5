"""A recurrent layer's whole-sequence matrix products: the panel kernels against OpenBLAS.

For each (B, T, H) with input size H it times, in one process, the three products around an
LSTM-sized layer (4H gate columns) as the numba backend runs them (``products.matmul`` and
``matmul_tn``: the packed-panel micro-kernels where their shapes suit them, NumPy's OpenBLAS
otherwise) and as NumPy runs them (``@``, the reference backend):

* the input projection ``(B·T, H) × (H, 4H)``;
* its input gradient ``(B·T, 4H) × (4H, H)``;
* a weight gradient ``(4H, B·T) × (B·T, H)`` (``dW_ih``; ``dW_hh`` has the same shape).

The two are called alternately, best of ``--repeats``; ratio = OpenBLAS time / seqcore time
(above 1: seqcore is faster).  ``path`` says which kernel seqcore took.  ``--threads`` sets
OpenBLAS's and Numba's threads alike (before NumPy is imported).

    python benchmarks/sequence_products.py --threads 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import positive_int, require_backend, run_script, shape_triple  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--repeats", type=positive_int, default=15)
    ap.add_argument("--shapes", nargs="+", type=shape_triple, metavar="B,T,H", help="B,T,H triples",
                    default=[(16, 128, 64), (64, 128, 64), (16, 512, 64), (16, 128, 128), (64, 128, 128),
                             (16, 128, 256)])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    return ap.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    require_backend("numba")
    import numpy as np
    from seqcore.backends.numba import products
    from scan_bandwidth import machine_info

    print(machine_info())
    print(f"threads {args.threads}, {args.dtype}, best of {args.repeats}; ratio = OpenBLAS / seqcore\n")
    print(f"{'(B, T, H)':>15s} {'product':>14s} {'(M, K, N)':>20s} {'OpenBLAS ms':>12s} {'seqcore ms':>11s} "
          f"{'ratio':>6s} {'GFLOP/s':>8s}  path")
    rng = np.random.default_rng(0)
    dtype = np.dtype(args.dtype)
    for B, T, H in args.shapes:
        f = lambda *shape: rng.normal(size=shape).astype(dtype)  # noqa: E731
        x, W, g = f(B * T, H), f(4 * H, H), f(B * T, 4 * H)
        cases = [("projection", (B * T, H, 4 * H), lambda: x @ W.T, lambda: products.matmul(x, W.T),
                  products.panels_pay(B * T, 4 * H, dtype)),
                 ("input grad", (B * T, 4 * H, H), lambda: g @ W, lambda: products.matmul(g, W),
                  products.panels_pay(B * T, H, dtype)),
                 ("weight grad", (4 * H, B * T, H), lambda: g.T @ x, lambda: products.matmul_tn(g, x),
                  products.panels_pay_tn(4 * H, H, dtype))]
        for name, (M, K, N), blas, ours, panels in cases:
            blas(), ours()  # compile / load, page in
            tb, to = [], []
            for _ in range(args.repeats):
                for fn, times in ((blas, tb), (ours, to)):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
            tb, to = min(tb), min(to)
            print(f"{str((B, T, H)):>15s} {name:>14s} {str((M, K, N)):>20s} {tb * 1e3:12.3f} {to * 1e3:11.3f} "
                  f"{tb / to:6.2f} {2 * M * K * N / to / 1e9:8.0f}  {'panels' if panels else 'OpenBLAS'}", flush=True)


if __name__ == "__main__":
    run_script(main)
