"""What an ``OPENBLAS_CORETYPE`` pin costs: per-step matrix products, pinned against unpinned.

OpenBLAS reads the variable once, when it loads, so each setting runs in its own child
process (1 BLAS thread), alternating ``--rounds`` times so that both see the same machine.
Each child times the shapes of a recurrent step (``(B, H) × (H, kH)``) through NumPy's
OpenBLAS (``np.dot``) and through the numba kernels' packed-panel product (``panels.py``, the
weight packed once, as the dense cells run it; it calls no BLAS, so the pin should leave it
alone), best of 7 × 200 calls.
The ratio is pinned time / unpinned time: above 1, the pin is slower.

    python benchmarks/blas_pin.py                    # pin: Haswell
    python benchmarks/blas_pin.py --pin Sandybridge --rounds 3

A pin that runs the kernels OpenBLAS picks unpinned is noted (the ratios are then noise); one
that OpenBLAS does not take as named (a misspelled core, or one it runs as another's) is
refused after the first round.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import positive_int, run_child as run_measuring_child, run_script  # noqa: E402

CHILD = """
import json, sys, time
import numpy as np
from seqcore.backends import blas
shapes = json.loads(sys.argv[1])
def best(f, a, b, c):
    f(a, b, c)
    out = 1e9
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(200):
            f(a, b, c)
        out = min(out, (time.perf_counter() - t) / 200)
    return out
try:
    import numba
    from seqcore.backends.numba.panels import pack, panel_gemm
    @numba.njit(cache=False)
    def kernel_dot(a, panels, c):
        panel_gemm(a, panels, c)
except ImportError:
    kernel_dot = None
res = {"cores": blas.describe(), "core_names": blas.openblas_cores()}
rng = np.random.default_rng(0)
for M, K, N in shapes:
    a, b = rng.random((M, K), np.float32), rng.random((K, N), np.float32)
    c = np.empty((M, N), np.float32)
    res[f"{M}x{K}x{N}"] = [best(np.dot, a, b, c), best(kernel_dot, a, pack(b), c) if kernel_dot else None]
print(json.dumps(res))
"""

SHAPES = [(16, 64, 64), (64, 64, 64), (16, 64, 256), (64, 64, 256), (16, 128, 512), (64, 128, 512)]


def run_child(pin: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"})
    if pin is not None:
        env["OPENBLAS_CORETYPE"] = pin
    return run_measuring_child([sys.executable, "-c", CHILD, json.dumps(SHAPES)], env,
                               "unpinned" if pin is None else f"OPENBLAS_CORETYPE={pin}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pin", default="Haswell", help="the OPENBLAS_CORETYPE to compare with no pin")
    ap.add_argument("--rounds", type=positive_int, default=2)
    args = ap.parse_args(argv)
    if not args.pin.strip():
        ap.error(f"--pin: got {args.pin!r}, expected an OPENBLAS_CORETYPE name such as Haswell")
    from scan_bandwidth import machine_info

    from seqcore.backends import blas
    print(f"machine: {machine_info()}")
    best: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for pin in (args.pin, None):
            res = run_child(pin)
            key = "unpinned" if pin is None else "pinned"
            cores, core_names = res.pop("cores"), res.pop("core_names")
            best.setdefault(key, {"cores": cores, "core_names": core_names})
            for shape, times in res.items():
                old = best[key].get(shape, [float("inf")] * 2)
                best[key][shape] = [min(o, t) if t is not None else None for o, t in zip(old, times)]
        if round_ == 0:
            ran = best["pinned"]["core_names"]
            effect = blas.pin_effect(args.pin, ran, best["unpinned"]["core_names"]) if ran else "unknown"
            if effect == "not taken":  # the same kernels twice: refuse rather than time noise for more rounds
                ap.error(f"--pin: got {args.pin!r}, but OpenBLAS ran {', '.join(sorted(set(ran.values())))} with it, "
                         "the kernels it picks unpinned: a misspelled core name, or one this OpenBLAS runs as "
                         "another core's kernels")
    pinned, free = best["pinned"], best["unpinned"]
    print(f"pinned:   {pinned['cores']}\nunpinned: {free['cores']}\n")
    if effect == "no effect":
        print(f"note: OPENBLAS_CORETYPE={args.pin} selects the kernels OpenBLAS picks unpinned here; the ratios "
              "below are run-to-run noise\n")
    print(f"{'(M, K) x (K, N)':>22s} {'numpy pinned us':>16s} {'unpinned us':>12s} {'ratio':>6s}   "
          f"{'kernel pinned us':>16s} {'unpinned us':>12s} {'ratio':>6s}")
    for shape in SHAPES:
        key = "x".join(map(str, shape))
        cols = []
        for j in (0, 1):
            p, u = pinned[key][j], free[key][j]
            cols.append(f"{p * 1e6:16.2f} {u * 1e6:12.2f} {p / u:6.2f}" if p is not None else f"{'-':>36s}")
        label = f"({shape[0]}, {shape[1]}) x ({shape[1]}, {shape[2]})"
        print(f"{label:>22s} {cols[0]}   {cols[1]}")


if __name__ == "__main__":
    run_script(main)
