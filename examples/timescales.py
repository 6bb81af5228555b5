"""Timescales under single-head vs multi-head curricula (LeakyRNN on N-parity / N-DMS).

For each task and curriculum, train a LeakyRNN with trainable per-neuron timescales under
the same step budget and record, at every evaluation: the current N, the accuracy on every
earlier N (its own readout head, to see forgetting under single-head), and the mean τ.
Writes ``<out>/timescales.json``, a Markdown table ``<out>/timescales.md`` and, when
matplotlib is present, ``<out>/timescales.png``.

    python examples/timescales.py --backend numpy --steps 3000 --hidden 64 --eval-every 100 --out docs/timescales
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
from pathlib import Path

import numpy as np

from seqcore import backends, tasks
from seqcore.plotting import pyplot
from seqcore.runs import atomic_write, to_json
from seqcore.train import EARLY_STOPS, Hooks, TrainConfig, check_sizes, model_builder, train


class EarlierN(Hooks):
    """At each evaluation: accuracy of every head n2..nN on its own N, and mean timescale."""

    def __init__(self):
        self.rows = []

    def on_evaluate(self, run, record):
        level = run.curriculum.level
        lo = run.curriculum.start_n
        accs = {}
        for n in range(lo, level + 1):
            task = dataclasses.replace(run.task, n=n, n_max=None)
            accs[f"n{n}"] = run.evaluate(task, [f"n{n}"])[f"n{n}"]["accuracy"]
        taus = [backends.get(run.cfg.backend).to_numpy(layer["tau"]).clip(1, None)
                for layer in run.trainer.params["rnn"]]
        row = {"step": record["step"], "level": level, "acc_all_n": accs, "mean_tau": float(np.mean(taus))}
        self.rows.append(row)
        return {"acc_all_n": accs, "mean_tau": row["mean_tau"]}


# TrainConfig fields -> the options that set them, to name the option in a refusal
OPTIONS = {"steps": "--steps", "hidden": "--hidden", "batch_size": "--batch-size", "lr": "--lr",
           "max_n": "--max-n", "eval_every": "--eval-every", "seed": "--seed", "backend": "--backend"}


def make_config(task, curriculum, args, backend) -> TrainConfig:
    """The run's TrainConfig, with the checks ``train`` would make at its start (the task, the
    curriculum, e.g. ``max_n`` below the first N, and the memory sizes): a ValueError or TypeError
    naming the field."""
    cfg = TrainConfig(task=task, task_kwargs={"n": 2}, curriculum=curriculum,
                      curriculum_kwargs={"max_n": args.max_n}, cell="leaky", hidden=args.hidden,
                      backend=backend, optimizer="nesterov", lr=args.lr, momentum=0.9, clip=1.0,
                      steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every,
                      eval_batches=2, eval_batch_size=256, seed=args.seed)
    task_obj = tasks.make(cfg.task, seed=cfg.seed, **cfg.task_kwargs)
    check_sizes(cfg, task_obj, model_builder(cfg, task_obj)[1])
    return cfg


def run_one(cfg: TrainConfig):
    task, curriculum = cfg.task, cfg.curriculum
    hook = EarlierN()
    summary, _ = train(cfg, None, hooks=hook, quiet=True,
                       log=lambda line: print(f"[{task} {curriculum}] {line}", flush=True))
    return {"task": task, "curriculum": curriculum, "summary": summary, "curve": hook.rows}


def finished(result) -> bool:
    """Whether the run used its budget or stopped early on purpose (not diverged, not interrupted)."""
    return result["summary"]["status"] in ("completed", *EARLY_STOPS)


def table(results) -> str:
    lines = ["| task | curriculum | largest N reached | mean accuracy on earlier N (end) | "
             "min accuracy on N=2 after leaving it | mean τ at end |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        status = r["summary"]["status"]
        if not finished(r) or not r["curve"]:  # diverged (its numbers are no result), or no evaluation
            mark = "" if finished(r) else f" ({status})"
            lines.append(f"| {r['task']} | {r['curriculum']}{mark} | — | — | — | — |")
            continue
        last = r["curve"][-1]
        earlier = [a for k, a in last["acc_all_n"].items() if int(k[1:]) < last["level"]]
        n2 = [row["acc_all_n"].get("n2") for row in r["curve"] if row["level"] > 2 and "n2" in row["acc_all_n"]]
        lines.append(f"| {r['task']} | {r['curriculum']} | {r['summary']['max_level']} | "
                     f"{np.mean(earlier) if earlier else float('nan'):.3f} | "
                     f"{min(n2) if n2 else float('nan'):.3f} | {last['mean_tau']:.2f} |")
    return "\n".join(lines)


def plot(results, path):
    plt = pyplot()
    if plt is None:
        kept = f" ({path} is an earlier run's figure, left as it was)" if os.path.exists(path) else ""
        print(f"matplotlib is not installed: no plot{kept}")
        return
    results = [r for r in results if finished(r)]
    fig, axes = plt.subplots(2, len(results), figsize=(4 * len(results), 6), squeeze=False)
    all_ns = [int(k[1:]) for r in results for row in r["curve"] for k in row["acc_all_n"]] or [2]
    # one colour per N from a colormap: a 10-colour cycle gave N = 2, 12 and 22 the same colour
    norm = plt.Normalize(min(all_ns), max(all_ns))
    cmap = plt.get_cmap("viridis")
    for j, r in enumerate(results):
        steps = [row["step"] for row in r["curve"]]
        ns = sorted({int(k[1:]) for row in r["curve"] for k in row["acc_all_n"]})
        for n in ns:
            ys = [row["acc_all_n"].get(f"n{n}", np.nan) for row in r["curve"]]
            axes[0, j].plot(steps, ys, color=cmap(norm(n)), lw=1)
        axes[0, j].set_title(f"{r['task']} · {r['curriculum']}")
        axes[0, j].set_ylim(0.4, 1.02)
        axes[0, j].set_ylabel("accuracy")
        axes[1, j].plot(steps, [row["mean_tau"] for row in r["curve"]])
        axes[1, j].set_ylabel("mean τ")
        axes[1, j].set_xlabel("step")
    fig.tight_layout()
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes[0]), pad=0.01)
    bar.set_label("N")
    buf = io.BytesIO()  # rendered in memory, then written atomically: a failed write keeps the old figure
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    print(f"wrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="nparity,ndms")
    p.add_argument("--curricula", default="single-head,multi-head")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--max-n", type=int, default=40)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None)
    p.add_argument("--out", default="docs/timescales")
    args = p.parse_args(argv)
    # mistakes refused here in one line, not as a traceback from inside the first run
    # (the anti-curriculum counts N down from a start and takes no max_n: it does not fit here)
    for name, given, allowed in (("--tasks", args.tasks, ("nparity", "ndms")),
                                 ("--curricula", args.curricula, ("single-head", "multi-head", "sliding"))):
        unknown = [v for v in given.split(",") if v not in allowed]
        if unknown:
            p.error(f"{name}: got {unknown}, expected names among {list(allowed)}, comma-separated")
        if len(set(given.split(","))) < len(given.split(",")):  # the same run twice, two identical rows
            p.error(f"{name}: got {given!r}, expected each name once")
    if args.backend is not None:
        if args.backend not in backends.names():
            p.error(f"--backend: got {args.backend!r}, expected one of {backends.names()}")
        try:
            backends.get(args.backend)
        except backends.BackendUnavailable as exc:
            p.error(f"--backend: {exc}")
    backend = args.backend or ("numba" if "numba" in backends.available() else "numpy")
    try:  # every run's config, before the output folder or the first run
        configs = [make_config(t, c, args, backend) for t in args.tasks.split(",") for c in args.curricula.split(",")]
    except (ValueError, TypeError) as exc:
        field, sep, rest = str(exc).partition(": ")
        p.error(f"{OPTIONS[field]}: {rest}" if sep and field in OPTIONS else str(exc))
    if not args.out.strip():  # Path('') is the current directory
        p.error(f"--out: got {args.out!r}, expected a folder name")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        p.error(f"--out: got {args.out!r}, which is a file; expected a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        p.error(f"--out: got {args.out!r}, where no folder can be created ({exc.strerror or exc})")
    results, failed = [], []
    for cfg in configs:
        r = run_one(cfg)
        status = r["summary"]["status"]
        if status == "interrupted":  # Ctrl-C stops the script; the results already in --out stay as they are
            print("timescales.py: interrupted; nothing written", file=sys.stderr)
            raise SystemExit(130)
        if not finished(r):  # e.g. diverged: said here, marked in the table, left out of the figure
            print(f"timescales.py: {cfg.task} {cfg.curriculum}: {status}: {r['summary']['message']}", file=sys.stderr)
            failed.append(f"{cfg.task} {cfg.curriculum}")
        results.append(r)
    if failed and len(failed) == len(results):
        raise SystemExit(f"timescales.py: error: every run failed ({', '.join(failed)}); nothing written")
    md = table(results)
    print(md)
    # written atomically (a temporary file, then a rename): a failed rewrite keeps the earlier result
    try:
        atomic_write(out / "timescales.json", to_json(results, indent=1).encode())  # strict: NaN as null
        atomic_write(out / "timescales.md", (md + "\n").encode())
        plot(results, out / "timescales.png")
    except OSError as exc:  # disk full, a file-size limit, no permission
        raise SystemExit(f"timescales.py: error: cannot write the results into {out} ({exc.strerror or exc}); "
                         "no file there is left half-written") from None
    if failed:
        raise SystemExit(f"timescales.py: error: {len(failed)} run(s) did not finish ({', '.join(failed)}); "
                         "they are marked in the table")


if __name__ == "__main__":
    main()
