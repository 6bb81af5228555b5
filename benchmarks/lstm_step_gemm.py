"""Where the numba LSTM spends its time: the per-step recurrent product, in both orientations.

For each (B, T, H) it times, in one process, best of ``--repeats``:
* the whole forward (``dense_cells.lstm_fwd``) and a loop of its T products in both forms,
  ``z = h · W_hhᵀ`` ``(B, H) × (H, 4H)`` and ``zᵀ = W_hh · hᵀ`` ``(4H, H) × (H, B)``;
* the whole backward (``dense_cells.lstm_bwd``: fused kernel and ``dW_hh`` GEMM) and its T
  products in both forms, ``dh = dz · W_hh`` and ``dhᵀ = W_hhᵀ · dzᵀ``;
and prints each product's share and the speed-up of the transposed form (what the kernels run).

    OPENBLAS_NUM_THREADS=1 python benchmarks/lstm_step_gemm.py

OpenBLAS picks its kernels at load time; ``OPENBLAS_CORETYPE`` pins them (printed first).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numba
import numpy as np

from seqcore import cells
from seqcore.backends.numba import dense_cells

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scan_bandwidth import machine_info  # noqa: E402


@numba.njit
def _products(a, b, out, T):
    for _ in range(T):
        np.dot(a, b, out)


def best(fn, repeats):
    fn()  # compile / load from cache / page in
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def product_times(shape_a, shape_b, shape_out, T, repeats, rng):
    """Best time of T products in the plain form and in the transposed form (both operands flipped)."""
    a, b = rng.normal(size=shape_a).astype(np.float32), rng.normal(size=shape_b).astype(np.float32)
    out = np.empty(shape_out, np.float32)
    aT, bT, outT = np.ascontiguousarray(b.T), np.ascontiguousarray(a.T), np.empty(shape_out[::-1], np.float32)
    return (best(lambda: _products(a, b, out, T), repeats), best(lambda: _products(aT, bT, outT, T), repeats))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["16,128,64", "16,128,128", "16,128,256", "64,128,128",
                                                    "64,128,256"], help="B,T,H triples")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    print(f"machine: {machine_info()}\n")
    print(f"{'(B, T, H)':>16} | {'forward ms':>10} {'W·hᵀ ms':>8} {'share':>5} {'h·Wᵀ ms':>8} {'gain':>5} | "
          f"{'backward ms':>11} {'Wᵀ·dzᵀ ms':>9} {'share':>5} {'dz·W ms':>8} {'gain':>5}")
    for text in args.shapes:
        B, T, H = (int(v) for v in text.split(","))
        rng = np.random.default_rng(0)
        cell = cells.LSTM(H, H)
        xi = rng.normal(size=(B, T, 4 * H)).astype(np.float32)
        W = (0.1 * rng.normal(size=(4 * H, H))).astype(np.float32)
        s0, b = np.zeros((B, 2 * H), np.float32), np.zeros(4 * H, np.float32)
        t_fwd = best(lambda: dense_cells.lstm_fwd(xi, s0, W, b, cell), args.repeats)
        states, res = dense_cells.lstm_fwd(xi, s0, W, b, cell)
        d = rng.normal(size=states.shape).astype(np.float32)
        t_bwd = best(lambda: dense_cells.lstm_bwd(res, d, cell), args.repeats)
        f_plain, f_trans = product_times((B, H), (H, 4 * H), (B, 4 * H), T, args.repeats, rng)
        b_plain, b_trans = product_times((B, 4 * H), (4 * H, H), (B, H), T, args.repeats, rng)
        print(f"{str((B, T, H)):>16} | {t_fwd * 1e3:10.2f} {f_trans * 1e3:8.2f} {f_trans / t_fwd:5.0%} "
              f"{f_plain * 1e3:8.2f} {f_plain / f_trans:4.2f}x | {t_bwd * 1e3:11.2f} {b_trans * 1e3:9.2f} "
              f"{b_trans / t_bwd:5.0%} {b_plain * 1e3:8.2f} {b_plain / b_trans:4.2f}x", flush=True)


if __name__ == "__main__":
    main()
