"""Linear-scan throughput of the numba backend as a fraction of a same-traffic NumPy baseline.

A scan is memory-bound (RESEARCH §2): the forward reads a, b and writes h (3 arrays), the
backward reads a, h, dh and writes da, db (5 arrays).  The baseline is ``out = a + b`` on
arrays of the same size (3 arrays), measured in the same process, interleaved with the
scan, best of ``--repeats``.  Bandwidth = arrays moved × bytes / seconds.

    python benchmarks/scan_bandwidth.py                       # 2^24 float32 elements
    python benchmarks/scan_bandwidth.py --log2-size 22 --dtype float64 --repeats 5
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from seqcore.backends import blas
from seqcore.validate import check_fits_in_memory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import positive_int, require_backend, run_script  # noqa: E402


def machine_info() -> str:
    """Describe the machine, after applying the process setting the ``seqcore`` command uses
    (freed heap memory kept between calls, ``seqcore.backends.heap``; ``SEQCORE_RETAIN_HEAP=0``
    measures with glibc's defaults), so that figures match what a run sees."""
    from seqcore.backends import heap
    heap.retain_from_env()
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}; {os.cpu_count()} logical CPUs; load average {load:.1f}; Python {platform.python_version()}; "
            f"NumPy {np.__version__}\nBLAS kernels: {blas.describe()}\n"
            f"heap: {'freed memory retained' if heap.retained() else 'glibc defaults'}")


def best_of(fns: dict, repeats: int, streak: int = 1) -> dict:
    """Best wall time of each callable, measured round-robin so that all see the same machine state.

    Each round calls every callable ``streak`` times in a row, timing each call: with
    ``streak > 1`` the best time is that of a call following one of its own, as in a loop
    of the same work (Numba's worker threads sleep after a few ms without a parallel
    region, and waking them costs about 0.1 ms; caches hold the call's own data).
    """
    times = {k: [] for k in fns}
    for k, f in fns.items():
        f()  # warm up (compile, page in)
    for _ in range(repeats):
        for k, f in fns.items():
            for _ in range(streak):
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log2-size", type=positive_int, default=24,
                    help="elements per array: 2**log2_size (default 24), rounded down to a multiple of B · D")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--batch", type=positive_int, default=16, help="B; D = 1024 and T = 2**log2_size // (B · D)")
    ap.add_argument("--repeats", type=positive_int, default=7)
    args = ap.parse_args(argv)
    n = 2 ** args.log2_size
    B, D = args.batch, 1024
    T = n // (B * D)
    if T < 1:
        ap.error(f"--log2-size: got {args.log2_size}, too small for --batch {B} (D = {D}): expected "
                 f"2**log2_size >= B · D = {B * D}")
    n = B * T * D  # the elements the arrays hold: fewer than 2**log2_size when B does not divide it
    try:  # a, b, dh, out, the states and the three gradients
        check_fits_in_memory("--log2-size", args.log2_size, 8 * n * np.dtype(args.dtype).itemsize, "8 arrays")
    except ValueError as exc:
        ap.error(str(exc))
    nb = require_backend("numba")

    import numba

    from seqcore.backends.numba import scan as nscan

    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 1.0, (B, T, D)).astype(dtype)
    b = rng.normal(size=(B, T, D)).astype(dtype)
    dh = rng.normal(size=(B, T, D)).astype(dtype)
    out = np.empty_like(a)
    size = a.nbytes
    print(f"machine: {machine_info()}")
    print(f"numba {numba.__version__}, threads {numba.get_num_threads()} (threading layer chosen at first run)")
    print(f"arrays: (B, T, D) = ({B}, {T}, {D}) {dtype} = {n} elements, {size / 2**20:.0f} MiB each\n")

    fwd, bwd = nb.primitives["linear_scan"]
    h, res = fwd(np, a, b)
    fns = {
        "baseline out = a + b": lambda: a + b,
        "baseline np.add(a, b, out=)": lambda: np.add(a, b, out=out),
        "scan fwd": lambda: fwd(np, a, b),
        "scan bwd": lambda: bwd(np, res, dh),
    }
    # the kernels alone, outputs preallocated (no page faults of fresh arrays)
    h0 = np.zeros((B, D), dtype)
    da, db, dh0 = np.empty_like(a), np.empty_like(a), np.empty_like(h0)
    zeros_carry = np.zeros((B, 1, D), dtype)
    blk = nscan.split_columns(B, D)
    diag_fwd, diag_bwd = nscan._diag_forward.for_width(blk), nscan._diag_backward.for_width(blk)  # the builds scan.py runs
    fns["kernel fwd (outputs preallocated)"] = lambda: diag_fwd(
        a, b, h0[:, None, :], h0[:, None, :], False, T, blk, False, out)
    fns["kernel bwd (outputs preallocated)"] = lambda: diag_bwd(
        a, h, h0, dh, zeros_carry, zeros_carry, False, T, blk, False, da, db, dh0)
    # one long sequence of a narrow state: B x D gives one task, so only time can be split
    narrow = (1, n // 64, 64)
    a1, b1, dh1 = a.reshape(narrow), b.reshape(narrow), dh.reshape(narrow)
    for method in ("sequential", "chunked", "parallel"):
        _, res_m = fwd(np, a1, b1, None, False, method, 4096)
        fns[f"narrow fwd {method}"] = lambda m=method: fwd(np, a1, b1, None, False, m, 4096)
        fns[f"narrow bwd {method}"] = lambda r=res_m, m=method: bwd(np, r, dh1, False, m, 4096)

    t = best_of(fns, args.repeats)
    base = 3 * size / t["baseline out = a + b"]
    base_pre = 3 * size / t["baseline np.add(a, b, out=)"]
    print(f"{'measurement':42s} {'time ms':>9s} {'GB/s':>7s} {'vs a+b':>7s} {'vs add(out=)':>13s}")

    def row(name, seconds, arrays):
        bw = arrays * size / seconds
        print(f"{name:42s} {seconds * 1e3:9.2f} {bw / 1e9:7.2f} {bw / base:7.2f} {bw / base_pre:13.2f}")

    row("baseline out = a + b", t["baseline out = a + b"], 3)
    row("baseline np.add(a, b, out=)", t["baseline np.add(a, b, out=)"], 3)
    for what in ("scan", "kernel"):
        sfx = "" if what == "scan" else " (outputs preallocated)"
        tf, tb = t[f"{what} fwd{sfx}"], t[f"{what} bwd{sfx}"]
        row(f"{what} fwd{sfx}", tf, 3)
        row(f"{what} bwd{sfx}", tb, 5)
        row(f"{what} fwd+bwd{sfx}", tf + tb, 8)
    print(f"\nnarrow state {narrow} (chunk_size 4096 for 'chunked'):")
    for method in ("sequential", "chunked", "parallel"):
        tf, tb = t[f"narrow fwd {method}"], t[f"narrow bwd {method}"]
        row(f"scan fwd+bwd {method}", tf + tb, 8)
    print("(chunked / parallel read a, b twice forward and a, dh twice backward; the minimum")
    print(" traffic is counted, so their ratios understate the bandwidth they reach)")
    print("\ncompile report (first call of each kernel in this process):")
    for r in nb.compile_report():
        print(f"  {r['kernel']:18s} {r['source']:10s} compile {r['compile_s']:6.2f}s  "
              f"first call {r['first_call_s']:6.2f}s  ({r['signature'][:60]}…)")


if __name__ == "__main__":
    run_script(main)
