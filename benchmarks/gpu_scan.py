"""Scan throughput of the cupy backend's CUDA kernels against a same-traffic CuPy baseline and
against the NumPy reference running on CuPy arrays, in one process.

The forward reads a, b and writes h (3 arrays); the VJP reads a, h, dh and writes da, db
(5 arrays).  The baseline is ``out = a + b`` on CuPy arrays of the same size (3 arrays).
``block_scan`` with 2×2 and 3×3 blocks is counted the same way (A, b, h forward; A, h, dh,
dA, db backward).
Times are CUDA-event times of the GPU work, best of ``--repeats``, measured round-robin.

    python benchmarks/gpu_scan.py                    # 2^24 float32 elements per array
    python benchmarks/gpu_scan.py --log2-size 22 --dtype float64
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from seqcore.validate import check_fits_in_memory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import positive_int, require_backend, run_script  # noqa: E402


def gpu_times(fns: dict, repeats: int) -> dict:
    """Best CUDA-event time (seconds) of each callable, round-robin."""
    import cupy
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    for f in fns.values():
        f()  # compile, allocate
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            start.record()
            f()
            stop.record()
            stop.synchronize()
            best[k] = min(best[k], cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--log2-size", type=positive_int, default=24, help="elements per array: 2^N (default 24)")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--repeats", type=positive_int, default=10)
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the NumPy reference on CuPy arrays (slow for long sequences)")
    args = ap.parse_args()
    try:  # on the host side too: sizes that no machine here holds are refused before the GPU is touched
        check_fits_in_memory("--log2-size", args.log2_size, 8 * (1 << args.log2_size) * np.dtype(args.dtype).itemsize,
                             "8 arrays")
    except ValueError as exc:
        ap.error(str(exc))
    require_backend("cupy")
    import cupy

    from seqcore.backends.cupy import scan as gpu
    from seqcore.backends.numpy import scan as ref

    dtype, n = np.dtype(args.dtype), 1 << args.log2_size
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    print(f"GPU: {props['name'].decode()}; {props['multiProcessorCount']} SMs; CuPy {cupy.__version__}; "
          f"CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}; {dtype}, 2^{args.log2_size} elements per array")
    shapes = [(16, n // 16 // 1024, 1024), (64, n // 64 // 64, 64), (1, n // 64, 64)]
    rng = cupy.random.default_rng(0)
    fns, traffic = {}, {}
    for shape in shapes:
        a = rng.uniform(0.5, 1.0, shape, dtype=np.float64).astype(dtype)
        b, dh = rng.standard_normal(shape, dtype=dtype), rng.standard_normal(shape, dtype=dtype)
        if shape == shapes[0]:
            fns["baseline out = a + b"] = lambda a=a, b=b: a + b
            traffic["baseline out = a + b"] = 3
        for method in ("sequential", "parallel"):
            _, res = gpu.linear_scan_fwd(cupy, a, b, None, False, method)
            key = f"{shape} {method}"
            fns[f"{key} fwd"] = lambda a=a, b=b, m=method: gpu.linear_scan_fwd(cupy, a, b, None, False, m)
            fns[f"{key} bwd"] = lambda r=res, dh=dh, m=method: gpu.linear_scan_bwd(cupy, r, dh, False, m)
        if not args.no_reference:  # the reference's own fastest form on the GPU: the associative scan
            _, rres = ref.linear_scan_fwd(cupy, a, b, None, False, "parallel")
            fns[f"{shape} reference fwd"] = lambda a=a, b=b: ref.linear_scan_fwd(cupy, a, b, None, False, "parallel")
            fns[f"{shape} reference bwd"] = lambda r=rres, dh=dh: ref.linear_scan_bwd(cupy, r, dh, False, "parallel")
    # block_scan with 2 x 2 and 3 x 3 blocks (the Newton solves of the 2x2-block cells): about
    # as many bytes of A as the diagonal scan's a
    blocks = {}
    for k in (2, 3):
        shape = (16, 1024, max(1, n // (16 * 1024 * k * k)))
        A = (rng.uniform(-1.0, 1.0, shape + (k, k), dtype=np.float64) / k).astype(dtype)
        b, dh = rng.standard_normal(shape + (k,), dtype=dtype), rng.standard_normal(shape + (k,), dtype=dtype)
        _, res = gpu.block_scan_fwd(cupy, A, b, None, False, "parallel")
        fns[f"block {k} fwd"] = lambda A=A, b=b: gpu.block_scan_fwd(cupy, A, b, None, False, "parallel")
        fns[f"block {k} bwd"] = lambda r=res, dh=dh: gpu.block_scan_bwd(cupy, r, dh, False, "parallel")
        blocks[k] = (shape, A.size + b.size)  # numbers of A and of b
    t = gpu_times(fns, args.repeats)
    size = n * dtype.itemsize
    base_bw = 3 * size / t["baseline out = a + b"]
    print(f"\n{'measurement':44s} {'time ms':>9s} {'GB/s':>8s} {'vs a+b':>7s} {'vs reference':>13s}")

    def row(name, seconds, arrays, reference=None):
        bw = arrays * size / seconds
        vs = f"{reference / seconds:12.1f}x" if reference else ""
        print(f"{name:44s} {seconds * 1e3:9.3f} {bw / 1e9:8.1f} {bw / base_bw:7.2f} {vs:>13s}")

    row("baseline out = a + b", t["baseline out = a + b"], 3)
    for shape in shapes:
        ref_fb = None if args.no_reference else t[f"{shape} reference fwd"] + t[f"{shape} reference bwd"]
        for method in ("sequential", "parallel"):
            key = f"{shape} {method}"
            row(f"{key} fwd", t[f"{key} fwd"], 3)
            row(f"{key} fwd+bwd", t[f"{key} fwd"] + t[f"{key} bwd"], 8, ref_fb)
        if ref_fb:
            row(f"{shape} reference (assoc.) fwd+bwd", ref_fb, 8)
    for k, (shape, numbers) in blocks.items():
        # forward: A, b, h; VJP: A, h, dh, dA, db — in units of the diagonal arrays' n elements
        a_units, v_units = (numbers - numbers // (k + 1)) / n, (numbers // (k + 1)) / n
        print(f"block_scan {k}x{k} blocks, (B, T, G) = {shape}:")
        row("  parallel fwd", t[f"block {k} fwd"], a_units + 2 * v_units)
        row("  parallel fwd+bwd", t[f"block {k} fwd"] + t[f"block {k} bwd"], 3 * a_units + 5 * v_units)


if __name__ == "__main__":
    run_script(main)
