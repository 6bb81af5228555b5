"""Page faults and mean time per training step, with and without ``seqcore.backends.heap.retain()``.

A step is ``seqcore.vjp`` of an LSTM layer's squared output and its pullback (numba backend,
float32, 1 thread).  Each setting runs in its own child process (the heap policy is
process-wide), alternating ``--rounds`` times so that both see the same machine; each child
warms up, then reports the mean wall time and the minor page faults per step over ``--steps``
steps.  The ratio is mean time with glibc's defaults / mean time with the heap retained.

    python benchmarks/step_memory.py
    python benchmarks/step_memory.py --shape 64 128 64 --steps 30
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import positive_int, require_backend, run_child as run_measuring_child, run_script  # noqa: E402

CHILD = """
import json, os, resource, sys, time
import numpy as np, seqcore
from seqcore import cells
from seqcore.backends import heap
B, T, H, steps = (int(a) for a in sys.argv[1:5])
applied = heap.retain_from_env()
cell = cells.LSTM(H, H); rng = np.random.default_rng(0); params = cell.init(rng, np.float32)
x = rng.normal(size=(B, T, H)).astype(np.float32)
def step():
    with seqcore.use("numba"):
        out, pullback = seqcore.vjp(lambda p, x: (cell.apply(p, x)[0] ** 2).sum(), params, x)
        pullback(np.ones((), np.float32))
for _ in range(3):
    step()
f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
for _ in range(steps):
    step()
dt, df = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(json.dumps({"retained": applied, "ms": 1e3 * dt / steps, "faults": df / steps}))
"""


def run_child(shape, steps, retain: bool) -> dict:
    env = {**os.environ, "SEQCORE_RETAIN_HEAP": "1" if retain else "0", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    return run_measuring_child([sys.executable, "-c", CHILD, *map(str, shape), str(steps)], env,
                               f"{'retained' if retain else 'defaults'}, (B, T, H) = {tuple(shape)}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", nargs="+", type=positive_int, default=[16, 128, 64, 64, 128, 64],
                    help="B T H triples (default: 16 128 64  64 128 64)")
    ap.add_argument("--steps", type=positive_int, default=50)
    ap.add_argument("--rounds", type=positive_int, default=3)
    args = ap.parse_args(argv)
    if len(args.shape) % 3:
        ap.error(f"--shape: got {len(args.shape)} numbers, expected B T H triples")
    require_backend("numba")  # the children's: one line here rather than each child's traceback
    from scan_bandwidth import machine_info
    print(f"machine: {machine_info()}")
    print(f"{'(B, T, H)':>16s} | {'defaults ms':>11s} {'faults':>7s} | {'retained ms':>11s} {'faults':>7s} | ratio")
    for i in range(0, len(args.shape), 3):
        shape = tuple(args.shape[i:i + 3])
        runs = {False: [], True: []}
        for _ in range(args.rounds):
            for retain in (False, True):
                runs[retain].append(run_child(shape, args.steps, retain))
        best = {k: min(v, key=lambda r: r["ms"]) for k, v in runs.items()}
        if not best[True]["retained"]:
            print(f"{str(shape):>16s} | heap.retain() does nothing here (no glibc mallopt)")
            continue
        d, r = best[False], best[True]
        print(f"{str(shape):>16s} | {d['ms']:11.2f} {d['faults']:7.0f} | {r['ms']:11.2f} {r['faults']:7.0f} | "
              f"{d['ms'] / r['ms']:5.2f}", flush=True)


if __name__ == "__main__":
    run_script(main)
