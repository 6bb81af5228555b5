"""LSTM and GRU sequence forward + backward: seqcore's numba backend against PyTorch on the CPU.

Both sides do the same work: the input projection, the recurrence over T steps, and the
backward pass to the input and every parameter, for ``out.backward(g)`` with a fixed
random cotangent ``g``.  seqcore runs ``cell.apply`` under ``seqcore.vjp`` with
``seqcore.use("numba")``; PyTorch runs ``nn.LSTM`` / ``nn.GRU`` (``batch_first``, float32).
Same thread count for both (``--threads``; it also sets the BLAS threads, so it must be
given before NumPy is imported — this script does that).  Timings are the best of
``--repeats`` round-robin runs in one process; the ratio is torch time / seqcore time
(> 1: seqcore is faster).

``--gemm-floor`` adds the time of the layer's matrix products alone, run as seqcore runs them
(input projection, its two gradients and ``dW_hh`` through ``products.py``, the T per-step
products forward and backward through the packed-panel product), and ``ceiling`` = torch time /
that floor: the best ratio seqcore could reach if everything else (gate arithmetic, memory
traffic, the autodiff tape) took no time.

    python benchmarks/rnn_vs_torch.py                    # full grid, 2 threads
    python benchmarks/rnn_vs_torch.py --quick --threads 1
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import positive_int, require_backend, run_script  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=["lstm", "gru"])
    ap.add_argument("--batch", nargs="+", type=positive_int, default=[16, 64])
    ap.add_argument("--steps", nargs="+", type=positive_int, default=[128, 512])
    ap.add_argument("--hidden", nargs="+", type=positive_int, default=[64, 128, 256])
    ap.add_argument("--quick", action="store_true", help="T = 128 only")
    ap.add_argument("--gemm-floor", action="store_true", help="also time the matrix products alone")
    return ap.parse_args(argv)


def gemm_floor(kind, B, T, H, np, numba):
    """A callable running the matrix products of one forward + backward of the layer (float32),
    each as the numba backend runs it."""
    from seqcore.backends.numba.panels import pack, panel_gemm
    from seqcore.backends.numba.products import matmul, matmul_tn

    @numba.njit
    def steps(a, panels, out, T):
        for _ in range(T):
            panel_gemm(a, panels, out)

    G = (4 if kind == "lstm" else 3) * H
    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    x2, W_ih, d2, h2, W_hh = f32(B * T, H), f32(G, H), f32(B * T, G), f32(B * T, H), f32(G, H)
    step_fwd = (f32(B, H), pack(W_hh.T), np.empty((B, G), np.float32))  # as the kernels run them
    step_bwd = (f32(B, G), pack(W_hh), np.empty((B, H), np.float32))

    def run():
        matmul(x2, W_ih.T)            # input projection
        steps(*step_fwd, T)
        steps(*step_bwd, T)
        matmul(d2, W_ih)              # its input gradient
        matmul_tn(d2, x2)             # dW_ih
        matmul_tn(d2, h2)             # dW_hh
    return run


def main(argv=None):
    args = parse(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if "numpy" in sys.modules:
        print("warning: NumPy was imported before the thread count was set", file=sys.stderr)
    nb = require_backend("numba")
    require_backend("torch")  # for `import torch`, with the install hint
    import numpy as np
    import numba
    import torch

    import seqcore
    from seqcore import cells

    from scan_bandwidth import best_of, machine_info

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    print(f"machine: {machine_info()}")
    print(f"threads: torch {torch.get_num_threads()}, numba {numba.get_num_threads()}, "
          f"BLAS {os.environ['OPENBLAS_NUM_THREADS']}; torch {torch.__version__}, numba {numba.__version__}\n")
    steps = [128] if args.quick else args.steps
    floor_head = f" {'GEMMs ms':>9s} {'ceiling':>7s}" if args.gemm_floor else ""
    print(f"{'cell':5s} {'B':>3s} {'T':>4s} {'H':>4s} {'seqcore ms':>11s} {'torch ms':>9s} {'ratio':>6s}{floor_head}  target")
    ratios = []
    for kind, B, T, H in itertools.product(args.cells, args.batch, steps, args.hidden):
        rng = np.random.default_rng(0)
        cell = (cells.LSTM if kind == "lstm" else cells.GRU)(H, H)
        params = cell.init(rng, np.float32)
        x = rng.normal(size=(B, T, H)).astype(np.float32)
        g = rng.normal(size=(B, T, H)).astype(np.float32)

        def run_seqcore():
            with seqcore.use("numba"):
                out, pullback = seqcore.vjp(lambda p, x: cell.apply(p, x)[0], params, x)
                pullback(g)

        module = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(H, H, batch_first=True)
        xt, gt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(g)

        def run_torch():
            module.zero_grad(set_to_none=True)
            xt.grad = None
            out, _ = module(xt)
            out.backward(gt)

        t = best_of({"seqcore": run_seqcore, "torch": run_torch}, args.repeats)
        if args.gemm_floor:  # timed apart: its buffers would change how the others' allocations page-fault
            t["gemms"] = best_of({"gemms": gemm_floor(kind, B, T, H, np, numba)}, args.repeats)["gemms"]
        ratio = t["torch"] / t["seqcore"]
        floor = f" {t['gemms'] * 1e3:9.1f} {t['torch'] / t['gemms']:7.2f}" if args.gemm_floor else ""
        target = 1.0 if H <= 128 else 0.7
        ratios.append((kind, B, T, H, ratio, target))
        flag = "ok" if ratio >= target else "MISSED"
        print(f"{kind:5s} {B:3d} {T:4d} {H:4d} {t['seqcore'] * 1e3:11.1f} {t['torch'] * 1e3:9.1f} {ratio:6.2f}{floor}  "
              f">= {target:.1f} {flag}", flush=True)
    met = sum(r[4] >= r[5] for r in ratios)
    print(f"\ntargets met: {met} of {len(ratios)}")
    print("\ncompile report (first call of each kernel in this process):")
    for r in nb.compile_report():
        print(f"  {r['kernel']:18s} {r['source']:10s} compile {r['compile_s']:6.2f}s  first call {r['first_call_s']:6.2f}s")


if __name__ == "__main__":
    run_script(main)
