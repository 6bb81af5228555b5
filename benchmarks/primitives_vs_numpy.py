"""Every primitive the numba backend replaces, forward + backward, against the NumPy reference.

Each row times ``fwd`` then ``bwd`` (with a random cotangent) of one primitive on the same
inputs for both backends, best of ``--repeats`` round-robin runs in one process, after a
warm-up call (so compile time is excluded; the compile report at the end lists it).
The ratio is reference time / numba time (target ≥ 10×).

    python benchmarks/primitives_vs_numpy.py                          # (B, T, D) = (4, 2048, 64)
    python benchmarks/primitives_vs_numpy.py --scan-shape 8 512 256   # wide states
    python benchmarks/primitives_vs_numpy.py --only linear_scan newton # rows whose label has these
    python benchmarks/primitives_vs_numpy.py --only "linear x"         # the linear row alone
    python benchmarks/primitives_vs_numpy.py --streak 3    # time calls that follow one of their own

By default every timed call follows a call of the other backend.  After the reference's
Python loop (milliseconds), Numba's worker threads have gone to sleep and each parallel
kernel pays about 0.1 ms to wake them, which dominates the smallest primitives;
``--streak 3`` measures the back-to-back calls of a loop instead.

The reference runs one vectorized NumPy step per time step, so its cost is T × (Python
overhead + B·D work): the ratio is largest for long sequences of small states and shrinks
as B·D grows (a wide step is already memory-bound in NumPy).

BLAS runs single-threaded unless the environment says otherwise, as under the ``seqcore``
command: OpenBLAS threads left spinning after a NumPy product take the cores from numba's
parallel kernels (measured: the dense ``block_scan`` 4× slower, the LSTM 1.7× slower on 2 cores).
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


def scan_cases(rng, dtype, B, T, D):
    shape = f"({B}, {T}, {D})"
    a = rng.uniform(0.5, 1.0, (B, T, D)).astype(dtype)
    b = rng.normal(size=(B, T, D)).astype(dtype)
    h0 = rng.normal(size=(B, D)).astype(dtype)
    for method in ("sequential", "chunked", "parallel"):
        yield f"linear_scan {method} {shape}", "linear_scan", (a, b, h0), dict(method=method)
    yield f"linear_scan reverse {shape}", "linear_scan", (a, b, None), dict(reverse=True)
    for k in (1, 2, 3, 8):
        G = max(1, D // k // 2)
        A = (rng.uniform(-1, 1, (B, T, G, k, k)) / k).astype(dtype)
        bb = rng.normal(size=(B, T, G, k)).astype(dtype)
        yield f"block_scan k={k} ({B}, {T}, G={G})", "block_scan", (A, bb, None), {}
    yield f"log_linear_scan {shape}", "log_linear_scan", (np.log(a), b, None), {}


def _recurrence_args(rng, dtype, cell, B, T, H):
    """``(xi, state0, *recurrent params)`` of a cell over random inputs."""
    params = cell.init(rng, dtype)
    x = rng.normal(size=(B, T, H)).astype(dtype)
    xi = np.asarray(cell.project(params, x))
    state0 = np.zeros((B, cell.state_size), dtype)
    return (xi, state0) + tuple(params[k] for k in cell.recurrent_keys)


def cell_cases(rng, dtype, B, T, H):
    from seqcore import cells
    for cell in (cells.Elman(H, H), cells.LSTM(H, H), cells.GRU(H, H), cells.LeakyRNN(H, H), cells.DiagGRU(H, H),
                 cells.CIFGLSTM(H, H), cells.MinGRU(H, H), cells.MinLSTM(H, H)):
        args = _recurrence_args(rng, dtype, cell, B, T, H)
        yield f"{cell.name}_recurrence ({B}, {T}, H={H})", f"{cell.name}_recurrence", args, dict(cell=cell)


def linear_cases(rng, dtype, B, T, H):
    """``linear``: the LSTM's input projection at the cell shape, ``x (B, T, H) @ W (4H, H)ᵀ + b``.
    Both sides are one GEMM (the reference's through NumPy's BLAS): there is no loop over T to save."""
    x = rng.normal(size=(B, T, H)).astype(dtype)
    w = (rng.normal(size=(4 * H, H)) / np.sqrt(H)).astype(dtype)
    b = rng.normal(size=4 * H).astype(dtype)
    yield f"linear x ({B}, {T}, {H}), W ({4 * H}, {H})", "linear", (x, w, b), {}


def newton_cases(rng, dtype, B, T, H):
    """The Newton scan with the defaults of ``mode="parallel"`` (tolerance per dtype, the
    cell's own Jacobian structure), on the cells whose steps the backend compiles."""
    from seqcore import cells
    from seqcore.newton import _resolve_options
    for cell in (cells.DiagGRU(H, H), cells.CIFGLSTM(H, H)):
        args = _recurrence_args(rng, dtype, cell, B, T, H)
        yield (f"newton_recurrence {cell.name} ({B}, {T}, H={H})", "newton_recurrence", args,
               dict(cell=cell, **_resolve_options(cell, dtype, T)))


def summary(ratios: dict[str, list[float]]) -> list[str]:
    """The closing lines: smallest ratio and geometric mean of the primitive rows, then the
    ``newton_recurrence`` ratios on a line of their own (either line absent when ``--only``
    selected no such row)."""
    lines = []
    if ratios["primitives"]:
        prim = ratios["primitives"]
        lines.append(f"primitives: smallest ratio {min(prim):.1f}× (target ≥ 10×); geometric mean "
                     f"{float(np.exp(np.mean(np.log(prim)))):.1f}×")
    if ratios["newton"]:
        lines.append("newton_recurrence (not in the mean): " + ", ".join(f"{r:.1f}×" for r in ratios["newton"]))
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--scan-shape", type=positive_int, nargs=3, default=[4, 2048, 64], metavar=("B", "T", "D"))
    ap.add_argument("--cell-shape", type=positive_int, nargs=3, default=[16, 256, 64], metavar=("B", "T", "H"))
    ap.add_argument("--only", nargs="+", metavar="TEXT", help="rows whose label contains any of these")
    ap.add_argument("--streak", type=positive_int, default=1,
                    help="calls of one backend in a row per round (default 1: each call follows the other "
                         "backend's; 3: the best call follows one of its own, as in a training loop)")
    args = ap.parse_args(argv)
    nb = require_backend("numba")

    import numba

    import seqcore
    from seqcore import primitives

    from scan_bandwidth import best_of, machine_info

    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    cases = list(scan_cases(rng, dtype, *args.scan_shape)) + list(cell_cases(rng, dtype, *args.cell_shape))
    newton = list(newton_cases(rng, dtype, *args.cell_shape))
    cases += list(linear_cases(rng, dtype, *args.cell_shape)) + newton  # drawn last: the other rows' inputs as before
    if args.only:
        chosen = [c for c in cases if any(text in c[0] for text in args.only)]
        if not chosen:
            ap.error(f"--only: got {args.only}, which no row label contains; the labels are: "
                     + "; ".join(c[0] for c in cases))
        cases = chosen
    print(f"machine: {machine_info()}")
    print(f"numba {numba.__version__}, threads {numba.get_num_threads()}, BLAS threads "
          f"{os.environ['OPENBLAS_NUM_THREADS']}; dtype {dtype}\n")
    print(f"{'primitive (shape)':42s} {'numpy ms':>9s} {'numba ms':>9s} {'ratio':>7s}")
    ratios = {"primitives": [], "newton": []}
    for label, name, prim_args, static in cases:
        prim = primitives.get(name)
        impls = {"numpy": (prim.fwd, prim.bwd), "numba": nb.primitives[name]}
        out, _ = prim.fwd(np, *prim_args, **static)
        if isinstance(out, tuple):  # newton_recurrence: (states, history); history has no gradient
            cot = (rng.normal(size=out[0].shape).astype(dtype),) + tuple(np.zeros_like(o) for o in out[1:])
        else:
            cot = rng.normal(size=np.shape(out)).astype(dtype)

        def run(impl):
            fwd, bwd = impls[impl]
            with seqcore.use(impl):  # primitives that call others (the Newton engine) dispatch on it
                o, res = fwd(np, *prim_args, **static)
                bwd(np, res, cot, **static)

        t = best_of({k: (lambda k=k: run(k)) for k in impls}, args.repeats, args.streak)
        ratio = t["numpy"] / t["numba"]
        # the Newton rows time a whole engine, not one primitive: kept out of the summary (BENCHMARKS.md)
        ratios["newton" if name == "newton_recurrence" else "primitives"].append(ratio)
        print(f"{label:42s} {t['numpy'] * 1e3:9.1f} {t['numba'] * 1e3:9.2f} {ratio:7.1f}", flush=True)
    print()
    for line in summary(ratios):
        print(line)
    print("\ncompile report (first call of each kernel in this process):")
    for r in nb.compile_report():
        print(f"  {r['kernel']:18s} {r['source']:10s} compile {r['compile_s']:6.2f}s  first call {r['first_call_s']:6.2f}s")


if __name__ == "__main__":
    run_script(main)
