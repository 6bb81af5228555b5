"""Newton scan (mode="parallel") against the sequential recurrence, per backend.

For each backend that loads here, each cell and each T: the Newton iterations needed and
the wall time of the parallel and the sequential path, forward and forward+backward
(``seqcore.vjp`` + pullback), printed as parallel/sequential ratios measured in the same
run.  Cases whose scan operators would not fit in ``--max-memory-gb`` are skipped.

    python3 benchmarks/newton.py --T 256 1024 4096 --cells diaggru cifg-lstm --batch 4 --hidden 32

BLAS runs single-threaded unless the environment says otherwise, as under the ``seqcore``
command: with OpenBLAS threads left spinning after the input projection, numba's parallel
kernels waited for a time slice, and on 2 cores every short run came out as a multiple of
about 4 ms (0.1-ms sequential runs timed as 4 ms).
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # as the CLI does: see cli/__init__.py
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import seqcore  # noqa: E402
from _common import chosen_backends, positive_int, run_script  # noqa: E402
from seqcore import backends  # noqa: E402
from seqcore.newton import NewtonConvergenceWarning, newton_scan  # noqa: E402
from seqcore.tree import tree_map  # noqa: E402

T_VALUES = (256, 1024, 4096, 16384, 65536)


# the spellings of earlier editions (BENCHMARKS.md's commands), as the cells' registry names them now
CELL_ALIASES = {"diag_gru": "diaggru", "cifg_lstm": "cifg-lstm"}


def cell_factories():
    """The nonlinear cells of the registry (``seqcore.cells.names()``), by their CLI names."""
    from seqcore import cells
    return {name: (lambda n: lambda i, h: cells.make(n, i, h))(name) for name in cells.names()
            if not cells.make(name, 1, 1).linear_in_state}


def machine_info() -> str:
    from scan_bandwidth import machine_info as cpu_and_blas
    rows = [f"{platform.platform()}; {cpu_and_blas()}; BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}"]
    for name in backends.names():
        try:
            rows.append(f"backend {name}: available ({getattr(backends.get(name), 'version', '?')})")
        except backends.BackendUnavailable:
            rows.append(f"backend {name}: unavailable")
    return "\n".join(rows)


def best_time(fn, repeats, synchronize=lambda: None):
    """Best wall time of ``fn``; ``synchronize`` waits for a GPU backend's queued work."""
    best = float("inf")
    for _ in range(repeats):
        synchronize()
        t0 = time.perf_counter()
        fn()
        synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def scan_bytes(cell, B, T, itemsize):
    """Bytes of one array of per-step scan operators (the Hillis–Steele scan holds a few)."""
    per_step = {"diag": cell.state_size, "block": cell.state_size * cell.state_factor,
                "dense": cell.state_size ** 2}[cell.jacobian_structure]
    return B * T * per_step * itemsize


def run_case(mod, cell, B, T, dtype, repeats):
    rng = np.random.default_rng(0)
    params = tree_map(mod.asarray, cell.init(rng, dtype))
    x = mod.asarray(rng.standard_normal((B, T, cell.input_size)).astype(dtype))

    def forward(mode):
        return cell.apply(params, x, mode=mode)[0]

    def forward_backward(mode):
        out, pullback = seqcore.vjp(lambda p, x: cell.apply(p, x, mode=mode)[0], params, x)
        return pullback(mod.xp.ones_like(out))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NewtonConvergenceWarning)
        _, info = newton_scan(cell, params, x)
        for mode in ("sequential", "parallel"):  # warm-up (JIT compilation, caches) of every timed call
            forward(mode), forward_backward(mode)
        sync = getattr(mod, "synchronize", lambda: None)  # the cupy backend queues its kernels
        r = {"iters": info.iterations, "converged": info.converged,
             "seq_f": best_time(lambda: forward("sequential"), repeats, sync),
             "par_f": best_time(lambda: forward("parallel"), repeats, sync),
             "seq_fb": best_time(lambda: forward_backward("sequential"), repeats, sync),
             "par_fb": best_time(lambda: forward_backward("parallel"), repeats, sync)}
    r["fallbacks"] = sum(issubclass(w.category, NewtonConvergenceWarning) for w in caught)
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=positive_int, nargs="+", default=list(T_VALUES), help="sequence lengths")
    ap.add_argument("--backends", nargs="+", default=None,
                    help="default: every backend that loads here (a backend named here must load)")
    ap.add_argument("--cells", nargs="+", default=["diaggru", "cifg-lstm", "gru"],
                    help="nonlinear cells by their registry names (diag_gru and cifg_lstm are accepted too)")
    ap.add_argument("--batch", type=positive_int, default=4)
    ap.add_argument("--hidden", type=positive_int, default=32)
    ap.add_argument("--input", type=positive_int, default=8)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--repeats", type=positive_int, default=3, help="best of this many timings")
    ap.add_argument("--max-memory-gb", type=float, default=1.0, help="skip cases whose scan operators exceed this")
    args = ap.parse_args(argv)

    factories = cell_factories()
    args.cells = [CELL_ALIASES.get(c, c) for c in args.cells]
    unknown = [c for c in args.cells if c not in factories]
    if unknown:
        ap.error(f"--cells: got unknown {unknown}, expected some of {sorted(factories)}")
    unknown = [b for b in args.backends or () if b not in backends.names()]
    if unknown:
        ap.error(f"--backends: got unknown {unknown}, expected some of {backends.names()}")
    if not args.max_memory_gb > 0:  # also NaN
        ap.error(f"--max-memory-gb: got {args.max_memory_gb}, expected a positive number")
    names = chosen_backends(ap, args.backends)
    dtype = np.dtype(args.dtype)
    print(machine_info())
    print(f"B={args.batch} H={args.hidden} I={args.input} dtype={args.dtype}, best of {args.repeats}; "
          f"ratio = parallel time / sequential time (< 1: parallel faster)\n")
    head = (f"{'backend':8s} {'cell':10s} {'T':>6s} {'iters':>5s} {'seq fwd s':>10s} {'par fwd s':>10s} "
            f"{'ratio':>7s} {'seq f+b s':>10s} {'par f+b s':>10s} {'ratio':>7s}")
    print(head)
    print("-" * len(head))
    failed = 0
    for name in names:
        mod = backends.get(name)
        with seqcore.use(name):
            for cname in args.cells:
                cell = factories[cname](args.input, args.hidden)
                for T in args.T:
                    if scan_bytes(cell, args.batch, T, dtype.itemsize) * 6 > args.max_memory_gb * 2 ** 30:
                        print(f"{name:8s} {cname:10s} {T:6d} skipped (scan operators exceed --max-memory-gb)")
                        continue
                    try:
                        r = run_case(mod, cell, args.batch, T, dtype, args.repeats)
                    except Exception as exc:  # a backend missing a piece: report, keep going
                        print(f"{name:8s} {cname:10s} {T:6d} failed: {type(exc).__name__}: {exc}", flush=True)
                        failed += 1
                        continue
                    note = "" if r["converged"] else f"  (not converged: sequential fallback x{r['fallbacks']})"
                    print(f"{name:8s} {cname:10s} {T:6d} {r['iters']:5d} {r['seq_f']:10.4f} {r['par_f']:10.4f} "
                          f"{r['par_f'] / r['seq_f']:7.2f} {r['seq_fb']:10.4f} {r['par_fb']:10.4f} "
                          f"{r['par_fb'] / r['seq_fb']:7.2f}{note}", flush=True)
    if failed:  # `seqcore bench` reads only the exit status
        raise SystemExit(f"error: {failed} case(s) failed (see the 'failed:' rows above)")


if __name__ == "__main__":
    run_script(main)
