"""minGRU and minLSTM forward + backward on the Numba backend: the fused recurrence against the
composed path it replaced, and against the NumPy backend, in one process.

Three ways to run ``cell.apply`` under ``seqcore.vjp`` (input projection included):

* ``fused``    — ``mode="sequential"`` on ``seqcore.use("numba")``: the ``<name>_recurrence``
  primitive, gates and scan in one compiled loop each way;
* ``composed`` — the gates by differentiable ops, then the Numba ``linear_scan`` (in log space,
  ``log_linear_scan`` plus the ``h0`` term), which is what ``mode="sequential"`` ran before the
  fused primitive existed (``mode="parallel"`` still runs it, with the parallel scans);
* ``numpy``    — ``mode="sequential"`` on the NumPy reference.

Ratios are times over the fused time, best of ``--repeats`` round-robin runs; BLAS runs
single-threaded unless the environment says otherwise.

    python benchmarks/minimal_cells.py
    python benchmarks/minimal_cells.py --shape 64 128 128 --repeats 7
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # as the CLI does: see cli/__init__.py
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import positive_int, require_backend, run_script  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))  # line 1 wraps
    ap.add_argument("--shape", type=positive_int, nargs=3, default=[16, 256, 64], metavar=("B", "T", "H"))
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = ap.parse_args(argv)
    nb = require_backend("numba")

    import seqcore
    from seqcore import cells

    from scan_bandwidth import best_of, machine_info

    B, T, H = args.shape
    dtype = np.dtype(args.dtype)
    print(f"machine: {machine_info()}")
    print(f"(B, T, H) = ({B}, {T}, {H}), {dtype}, numba threads {nb.num_threads()}\n")
    print(f"{'cell':14s} {'fused ms':>9s} {'composed ms':>12s} {'numpy ms':>9s} {'composed/fused':>15s} {'numpy/fused':>12s}")
    for name, log_space in (("mingru", False), ("mingru", True), ("minlstm", False), ("minlstm", True)):
        rng = np.random.default_rng(0)
        cell = cells.make(name, H, H, log_space=log_space)
        params = cell.init(rng, dtype)
        x = rng.normal(size=(B, T, H)).astype(dtype)
        g = rng.normal(size=(B, T, H)).astype(dtype)

        def composed(p, x):
            return _composed_states(cell, p, x)

        def run(backend, forward):
            def go():
                with seqcore.use(backend):
                    _, pullback = seqcore.vjp(forward, params, x)
                    pullback(g)
            return go

        t = best_of({"fused": run("numba", lambda p, x: cell.apply(p, x)[0]),
                     "composed": run("numba", composed),
                     "numpy": run("numpy", lambda p, x: cell.apply(p, x)[0])}, args.repeats)
        label = f"{name}{' log' if log_space else ''}"
        print(f"{label:14s} {t['fused'] * 1e3:9.2f} {t['composed'] * 1e3:12.2f} {t['numpy'] * 1e3:9.2f} "
              f"{t['composed'] / t['fused']:15.2f} {t['numpy'] / t['fused']:12.2f}", flush=True)


def _composed_states(cell, params, x):
    """The gates by differentiable ops, then the scan primitives (no fused recurrence)."""
    from seqcore import ops
    from seqcore.scan import linear_scan, log_linear_scan
    xi = cell.project(params, x)
    if not cell.log_space:
        a, b = cell._coefficients(xi)
        return linear_scan(a, b)
    log_a, log_b = cell._log_coefficients(xi)
    h = ops.exp(log_linear_scan(log_a, log_b))
    decay = ops.exp(linear_scan(np.ones(log_a.shape, log_a.dtype), log_a))  # the h0 term, h0 = 0
    return h + decay * np.zeros((x.shape[0], 1, cell.hidden_size), log_a.dtype)


if __name__ == "__main__":
    run_script(main)
