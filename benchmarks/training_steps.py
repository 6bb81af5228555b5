"""Training steps per second on N-parity: every available backend against the NumPy reference.

The same TrainConfig (task, cell, sizes, seed) is run for ``--steps`` steps on each backend
in this process, after one short warm-up run per backend (Numba compiles on first use);
the table gives steps per second and the ratio to the ``numpy`` backend measured in the
same run.

    python benchmarks/training_steps.py                     # lstm, gru, leaky, diaggru; H = 64
    python benchmarks/training_steps.py --cells leaky --hidden 128 --steps 200
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # as the CLI does: see cli/__init__.py
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from seqcore import backends, cells, tasks  # noqa: E402
from seqcore.train import TrainConfig, train  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import chosen_backends, positive_int, run_script  # noqa: E402


def config(cell: str, backend: str, hidden: int, steps: int, n: int, batch: int) -> TrainConfig:
    return TrainConfig(task="nparity", task_kwargs={"n": n}, cell=cell, hidden=hidden, backend=backend,
                       steps=steps, batch_size=batch, eval_every=steps, eval_batches=1, eval_batch_size=32, seed=0)


def steps_per_second(cell: str, backend: str, hidden: int, steps: int, n: int, batch: int) -> float:
    cfg = config(cell, backend, hidden, steps, n, batch)
    t0 = time.perf_counter()
    train(cfg, None, quiet=True)
    return steps / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru", "leaky", "diaggru"])
    ap.add_argument("--backends", nargs="+", default=None, help="default: every available backend")
    ap.add_argument("--hidden", type=positive_int, default=64)
    ap.add_argument("--n", type=positive_int, default=8, help="parity order N (sequence lengths in [N+2, 4N+2))")
    ap.add_argument("--batch", type=positive_int, default=64)
    ap.add_argument("--steps", type=positive_int, default=100)
    args = ap.parse_args(argv)
    for option, given, known in (("--cells", args.cells, cells.names()),
                                 ("--backends", args.backends or (), backends.names())):
        unknown = [v for v in given if v not in known]
        if unknown:
            ap.error(f"{option}: got unknown {unknown}, expected some of {known}")
    names = chosen_backends(ap, args.backends)
    if "numpy" not in names:
        names = ["numpy", *names]
    try:  # the remaining mistakes (a parity order the task refuses), before anything is timed
        tasks.make("nparity", n=args.n)
        for cell in args.cells:
            for b in names:
                config(cell, b, args.hidden, args.steps, args.n, args.batch)
    except (ValueError, TypeError) as exc:
        ap.error(str(exc))
    from scan_bandwidth import machine_info
    print(f"machine: {machine_info()}")
    print(f"N-parity N={args.n}, batch {args.batch}, hidden {args.hidden}, {args.steps} steps (evaluation once)\n")
    print(f"{'cell':10s} " + " ".join(f"{b + ' steps/s':>16s}" for b in names) + "   ratios vs numpy")
    for cell in args.cells:
        rates = {}
        for b in names:
            steps_per_second(cell, b, args.hidden, 3, args.n, args.batch)  # warm-up (compilation)
            rates[b] = steps_per_second(cell, b, args.hidden, args.steps, args.n, args.batch)
        ratios = " ".join(f"{b}={rates[b] / rates['numpy']:.2f}x" for b in names if b != "numpy")
        print(f"{cell:10s} " + " ".join(f"{rates[b]:16.1f}" for b in names) + "   " + ratios)


if __name__ == "__main__":
    run_script(main)
