"""Where the numba LSTM backward spends its time: the per-step recurrent product vs the rest.

For each (B, T, H) it times, in one process, best of ``--repeats``:
* the whole backward (``dense_cells.lstm_bwd``: the fused kernel and the ``dW_hh`` GEMM);
* a loop of T products ``dhᵀ = W_hhᵀ · dzᵀ``, ``(H, 4H) × (4H, B)`` (what the kernel does);
* the same products untransposed, ``dh = dz · W_hh``, ``(B, 4H) × (4H, H)``;
and prints the product's share of the backward and how much faster the transposed form is.

    OPENBLAS_NUM_THREADS=1 python benchmarks/lstm_backward_gemm.py
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from seqcore import cells
from seqcore.backends.numba import dense_cells


@numba.njit
def _products(a, b, out, T):
    for _ in range(T):
        np.dot(a, b, out)


def best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["16,128,64", "16,128,256", "64,128,128"],
                    help="B,T,H triples")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    print(f"{'(B, T, H)':>16} {'backward ms':>12} {'Wᵀ·dzᵀ ms':>10} {'share':>6} {'dz·W ms':>9} {'Wᵀ·dzᵀ speed-up':>16}")
    for text in args.shapes:
        B, T, H = (int(v) for v in text.split(","))
        rng = np.random.default_rng(0)
        cell = cells.LSTM(H, H)
        xi = rng.normal(size=(B, T, 4 * H)).astype(np.float32)
        W = (0.1 * rng.normal(size=(4 * H, H))).astype(np.float32)
        states, res = dense_cells.lstm_fwd(xi, np.zeros((B, 2 * H), np.float32), W, np.zeros(4 * H, np.float32), cell)
        d = rng.normal(size=states.shape).astype(np.float32)
        dense_cells.lstm_bwd(res, d, cell)  # compile / load from cache
        t_kernel = best(lambda: dense_cells.lstm_bwd(res, d, cell), args.repeats)
        dz, dh = rng.normal(size=(B, 4 * H)).astype(np.float32), np.empty((B, H), np.float32)
        WT, dzT, dhT = np.ascontiguousarray(W.T), np.ascontiguousarray(dz.T), np.empty((H, B), np.float32)
        _products(dz, W, dh, 1)
        _products(WT, dzT, dhT, 1)
        t_plain = best(lambda: _products(dz, W, dh, T), args.repeats)
        t_trans = best(lambda: _products(WT, dzT, dhT, T), args.repeats)
        print(f"{str((B, T, H)):>16} {t_kernel * 1e3:12.2f} {t_trans * 1e3:10.2f} {t_trans / t_kernel:6.0%} "
              f"{t_plain * 1e3:9.2f} {t_plain / t_trans:15.2f}x")


if __name__ == "__main__":
    main()
