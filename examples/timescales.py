"""Timescales under single-head vs multi-head curricula (LeakyRNN on N-parity / N-DMS).

For each task and curriculum, train a LeakyRNN with trainable per-neuron timescales under
the same step budget and record, at every evaluation: the current N, the accuracy on every
earlier N (its own readout head, to see forgetting under single-head), and the mean τ.
Writes ``<out>/timescales.json``, two Markdown tables ``<out>/timescales.md`` (the runs, and the
mean τ per N) and, when matplotlib is present, ``<out>/timescales.png``.

    python examples/timescales.py --backend numpy --steps 3000 --hidden 64 --eval-every 100 --out docs/timescales

``--from-json FILE`` rebuilds the tables and the figure from a ``timescales.json`` written
earlier, without training:

    python examples/timescales.py --from-json docs/timescales/timescales.json --out docs/timescales
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
from seqcore.runs import atomic_write, read_json, to_json
from seqcore.train import EARLY_STOPS, Hooks, TrainConfig, check_sizes, model_builder, train
from seqcore.validate import check_positive_int, check_real


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


def _mean_or_dash(values, reduce=np.mean) -> str:
    """``reduce(values)`` to three decimals, or "—" (no value) for none."""
    return f"{reduce(values):.3f}" if values else "—"


def runs_table(results) -> str:
    """One row per run: largest N, accuracy on the earlier N, the mean τ at the end."""
    lines = ["| task | curriculum | largest N reached | mean accuracy on earlier N (end) | "
             "min accuracy on N=2 after leaving it | mean τ at end |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        status = r["summary"]["status"]
        if not finished(r) or not r["curve"]:  # diverged (its numbers are no result), or no evaluation
            mark = "" if finished(r) else f" ({status})"
            lines.append(f"| {r['task']} | {r['curriculum']}{mark} | — | — | — | — |")
            continue
        last, largest = r["curve"][-1], r["summary"]["max_level"]
        # "earlier" is below the largest N reached, the column beside it: an advance at the last
        # evaluation (recorded at the level before it) makes the N just passed an earlier one
        earlier = [a for k, a in last["acc_all_n"].items() if int(k[1:]) < largest]
        n2 = [row["acc_all_n"].get("n2") for row in r["curve"] if row["level"] > 2 and "n2" in row["acc_all_n"]]
        lines.append(f"| {r['task']} | {r['curriculum']} | {largest} | {_mean_or_dash(earlier)} | "
                     f"{_mean_or_dash(n2, min)} | {last['mean_tau']:.2f} |")
    return "\n".join(lines)


def tau_per_n(curve) -> dict[int, float]:
    """``{N: mean τ at N}`` from one run's curve: the mean of ``mean_tau`` over the evaluations
    made while the curriculum was at N. ``level`` is read before an evaluation's advance, so
    these are the τ of the network trained at N; an N advanced to at the last evaluation has
    no entry."""
    if not isinstance(curve, list):
        raise TypeError(f"curve: got {type(curve).__name__}, expected a list of evaluation records")
    taus: dict[int, list[float]] = {}
    for i, row in enumerate(curve):
        if not isinstance(row, dict) or "level" not in row or "mean_tau" not in row:
            raise ValueError(f"curve[{i}]: got {row!r:.80}, expected a record with 'level' and 'mean_tau'")
        level = check_positive_int(f"curve[{i}]['level']", row["level"])
        taus.setdefault(level, []).append(check_real(f"curve[{i}]['mean_tau']", row["mean_tau"]))
    return {n: float(np.mean(taus[n])) for n in sorted(taus)}


def tau_table(results) -> str:
    """Mean τ per N (rows) for every finished run (columns), "—" where a run never trained at
    that N; empty when no finished run was evaluated."""
    runs = [r for r in results if finished(r) and r["curve"]]
    if not runs:
        return ""
    per_n = [tau_per_n(r["curve"]) for r in runs]
    ns = sorted(set().union(*per_n))
    lines = ["Mean τ per N: the mean over the evaluations made while the curriculum was at N.", "",
             "| N | " + " | ".join(f"{r['task']} {r['curriculum']}" for r in runs) + " |",
             "| --- |" + " --- |" * len(runs)]
    lines += [f"| {n} | " + " | ".join(f"{t[n]:.3f}" if n in t else "—" for t in per_n) + " |" for n in ns]
    return "\n".join(lines)


def table(results) -> str:
    """The Markdown written to ``timescales.md``: the runs' table, then the mean τ per N."""
    return "\n\n".join(part for part in (runs_table(results), tau_table(results)) if part)


RESULT_KEYS = ("task", "curriculum", "summary", "curve")


def load_results(path) -> list:
    """The results in a ``timescales.json`` written by this script; FileNotFoundError, or a
    ValueError naming the file, the run and what it lacks."""
    results = read_json(path)
    if not isinstance(results, list) or not results:
        raise ValueError(f"{path}: got {results!r:.60}, expected a non-empty list of runs as timescales.py writes")
    for i, r in enumerate(results):
        missing = [k for k in RESULT_KEYS if k not in r] if isinstance(r, dict) else list(RESULT_KEYS)
        if missing:
            raise ValueError(f"{path}: run {i}: lacks {missing}, expected a run with the keys {list(RESULT_KEYS)}")
        if not isinstance(r["summary"], dict) or "status" not in r["summary"] \
                or finished(r) and "max_level" not in r["summary"]:
            raise ValueError(f"{path}: run {i}: got the summary {r['summary']!r:.80}, expected one with "
                             "'status' (and 'max_level' when it finished)")
        try:  # every curve record's level and τ, and the accuracies the runs' table reads
            if finished(r):
                check_positive_int("summary['max_level']", r["summary"]["max_level"])
            tau_per_n(r["curve"])
            for j, row in enumerate(r["curve"]):
                if not isinstance(row.get("acc_all_n"), dict) or "step" not in row:
                    raise ValueError(f"curve[{j}]: got {row!r:.80}, expected a record with 'step' and 'acc_all_n'")
                for key, acc in row["acc_all_n"].items():
                    if not (isinstance(key, str) and key[:1] == "n" and key[1:].isdigit()):
                        raise ValueError(f"curve[{j}]['acc_all_n']: got the key {key!r:.20}, expected 'n<N>' (n2, n3, ...)")
                    check_real(f"curve[{j}]['acc_all_n'][{key!r}]", acc, low=0.0, high=1.0)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: run {i}: {exc}") from None
    if not any(finished(r) for r in results):  # no row, no column, no panel: nothing to rebuild
        raise ValueError(f"{path}: got no finished run ({', '.join(r['summary']['status'] for r in results)}), "
                         "expected at least one")
    return results


def plot(results, path):
    plt = pyplot()
    if plt is None:
        kept = f" ({path} is an earlier run's figure, left as it was)" if os.path.exists(path) else ""
        print(f"matplotlib is not installed: no plot{kept}")
        return
    results = [r for r in results if finished(r)]
    fig, axes = plt.subplots(3, len(results), figsize=(4 * len(results), 9), squeeze=False)
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
        taus = tau_per_n(r["curve"])
        axes[2, j].plot(list(taus), list(taus.values()), marker=".")
        axes[2, j].set_ylabel("mean τ at N")
        axes[2, j].set_xlabel("N")
        axes[2, j].xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # N is a whole number
        if j:  # one τ scale across runs, so the curricula compare at a glance
            axes[2, j].sharey(axes[2, 0])
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
    p.add_argument("--from-json", metavar="FILE", default=None,
                   help="rebuild the tables and the figure in --out from this timescales.json, without training")
    args = p.parse_args(argv)
    if args.from_json is not None:
        rebuild(p, args)
        return
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
    out = output_folder(p, args.out)
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
    publish(results, out)
    if failed:
        raise SystemExit(f"timescales.py: error: {len(failed)} run(s) did not finish ({', '.join(failed)}); "
                         "they are marked in the table")


def output_folder(p, given: str) -> Path:
    """``--out`` as a folder, created if missing; a file or an uncreatable path is refused."""
    if not given.strip():  # Path('') is the current directory
        p.error(f"--out: got {given!r}, expected a folder name")
    out = Path(given)
    if out.exists() and not out.is_dir():
        p.error(f"--out: got {given!r}, which is a file; expected a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        p.error(f"--out: got {given!r}, where no folder can be created ({exc.strerror or exc})")
    return out


def publish(results, out: Path) -> None:
    """Print the tables and write the JSON, the tables and the figure into ``out``."""
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


# the options of a training run, which --from-json does not use
TRAINING_OPTIONS = ("tasks", "curricula", "steps", "hidden", "batch_size", "lr", "max_n", "eval_every", "seed",
                    "backend")


def rebuild(p, args) -> None:
    """``--from-json``: the tables and the figure from stored results, no training."""
    given = [f"--{name.replace('_', '-')}" for name in TRAINING_OPTIONS if getattr(args, name) != p.get_default(name)]
    if given:  # they would change nothing: said, not silently ignored
        p.error(f"--from-json: got it with {', '.join(given)}, expected no training options (nothing is trained)")
    try:
        results = load_results(args.from_json)
    except (FileNotFoundError, ValueError) as exc:
        p.error(f"--from-json: {exc}")
    publish(results, output_folder(p, args.out))


if __name__ == "__main__":
    main()
