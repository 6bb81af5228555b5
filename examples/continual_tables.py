"""The permuted Fashion-MNIST reproductions of the README, as run directories and tables.

Runs every (table, learner, seed) of the protocol below that has no completed run under
``--out`` yet (a completed ``summary.json`` is reused, and an interrupted run of the same
configuration resumes from its last checkpoint, as ``seqcore continual --resume`` would, so an
interrupted sweep continues where it stopped), then writes ``<out>/tables.md``: mean ±
standard deviation over the seeds found, and the stability-gap table. With matplotlib it also
writes ``<out>/stability_gap.png``.

    python examples/continual_tables.py --out runs/permuted-fashion-mnist            # everything
    python examples/continual_tables.py --out runs/permuted-fashion-mnist --tables gap
    python examples/continual_tables.py --out runs/permuted-fashion-mnist --no-run   # tables only
    python examples/continual_tables.py --tables adam --rows sharp hypernet          # two rows

Each run equals one ``seqcore continual`` command: ``--dataset fashion-mnist --stream
permuted --experiences 10 --steps 1000 --hidden 256 --batch-size 64 --eval-every 50
--eval-size 1000 --backend numpy`` plus the table's optimizer and the learner's options.
Runs go one at a time: wall times are only comparable when nothing else shares the cores.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
from pathlib import Path

from seqcore.metrics import EvalCurve
from seqcore.plotting import pyplot
from seqcore.runs import RunDir, atomic_write, read_json

PROTOCOL = dict(stream="permuted", dataset="fashion-mnist", experiences=10, steps=1000, hidden=256,
                optimizer="adam", lr=0.001, batch_size=64, eval_every=50, eval_size=1000, backend="numpy")

# table -> (protocol changes, [(label, run name, learner, learner_kwargs, config changes, options shown)])
ER = dict(memory_size=1000, replay_batch=64)
REHEARSAL = dict(memory_per_experience=100, replay_batch=64, budget=3)
TABLES = {
    "adam": ({}, [
        ("naive", "naive", "naive", {}, {}, "—"),
        ("EWC", "ewc", "ewc", dict(strength=1000), {}, "`--strength 1000`"),
        ("SI", "si", "si", dict(strength=1), {}, "`--strength 1`"),
        ("ER", "replay", "replay", ER, {}, "`--memory-size 1000 --replay-batch 64`"),
        ("A-GEM", "agem", "agem", dict(memory_per_experience=100, replay_batch=256), {},
         "`--memory-per-experience 100 --replay-batch 256`"),
        ("DER++", "derpp", "derpp", ER, {}, "`--memory-size 1000 --replay-batch 64` (α = β = 0.5)"),
        ("LwF", "lwf", "lwf", dict(strength=1), {}, "`--strength 1` (T = 2)"),
        ("power-law rehearsal", "power-law", "power-law", dict(REHEARSAL, exponent=1), {},
         "`--memory-per-experience 100 --replay-batch 64 --budget 3 --exponent 1`"),
        ("uniform rehearsal", "power-law-uniform", "power-law", dict(REHEARSAL, exponent=0), {},
         "same, `--exponent 0`"),
        ("refresh", "refresh", "refresh", dict(ER, unlearn_lr=0.001), {}, "ER's options + `--unlearn-lr 0.001`"),
        ("SHARP", "sharp", "sharp", dict(memory_size=1000), {}, "`--memory-size 1000`"),
        ("hypernetwork (task-aware)", "hypernet", "hypernet", dict(strength=0.1), dict(lr=0.003),
         "`--strength 0.1 --lr 0.003`"),
    ]),
    "sgd": (dict(optimizer="sgd", lr=0.05), [
        ("naive", "naive", "naive", {}, {}, "—"),
        ("EWC", "ewc", "ewc", dict(strength=1), {}, "`--strength 1`"),
        ("SI", "si", "si", dict(strength=0.1), {}, "`--strength 0.1`"),
        ("LwF", "lwf", "lwf", dict(strength=1), {}, "`--strength 1`"),
        ("ER", "replay", "replay", ER, {}, "`--memory-size 1000 --replay-batch 64`"),
        ("A-GEM", "agem", "agem", dict(memory_per_experience=100, replay_batch=256), {},
         "`--memory-per-experience 100 --replay-batch 256`"),
    ]),
    "task": (dict(scenario="task"), [
        ("naive", "naive", "naive", {}, {}, "—"),
        ("EWC", "ewc", "ewc", dict(strength=1000), {}, "`--strength 1000`"),
        ("SI", "si", "si", dict(strength=1), {}, "`--strength 1`"),
        ("LwF", "lwf", "lwf", dict(strength=1), {}, "`--strength 1`"),
        ("ER", "replay", "replay", ER, {}, "`--memory-size 1000 --replay-batch 64`"),
    ]),
    "gap": (dict(experiences=2, eval_every=5, eval_size=500), [
        ("naive", "naive", "naive", {}, {}, "—"),
        ("ER", "replay", "replay", ER, {}, "`--memory-size 1000 --replay-batch 64`"),
        ("EWC", "ewc", "ewc", dict(strength=1000), {}, "`--strength 1000`"),
    ]),
}
METRICS = ("average_accuracy", "forgetting", "min_acc", "wc_acc", "bwt", "fwt")
GAP_WINDOW = 200      # updates of experience 2 searched for the lowest accuracy on experience 1
GAP_RECOVERED = 0.03  # "recovered": back within this of the accuracy before experience 2


def run_dir(out: Path, table: str, name: str, seed: int) -> Path:
    return out / table / f"{name}-s{seed}"


def table_seeds(table: str, seeds: list[int]) -> list[int]:
    """The Adam table runs every seed; the others the first."""
    return seeds if table == "adam" else seeds[:1]


def completed(path: Path) -> dict | None:
    try:
        summary = read_json(RunDir(path).summary)
    except (OSError, ValueError):
        return None
    return summary if summary.get("status") == "completed" else None


def found_runs(out: Path, tables, seeds) -> int:
    """How many completed runs the chosen tables would show."""
    return sum(1 for table in tables for _, name, *_ in TABLES[table][1] for seed in table_seeds(table, seeds)
               if completed(run_dir(out, table, name, seed)))


def resumable(path: Path, cfg) -> bool:
    """Whether ``path`` holds an unfinished run of exactly ``cfg`` (its ``config.json`` and a
    checkpoint), which ``resume_continual`` continues."""
    from seqcore.continual import ContinualConfig
    rd = RunDir(path)
    if not rd.checkpoint.exists():
        return False
    try:
        return ContinualConfig.read(rd.config) == cfg
    except (OSError, ValueError, TypeError):  # no config.json, or another run's
        return False


def run_missing(out: Path, tables, seeds, data_dir=None, only=None) -> None:
    """Run every (table, row, seed) without a completed run under ``out``; resume one that was
    interrupted (same config, a checkpoint), start the others afresh (``overwrite``)."""
    from seqcore.continual import ContinualConfig, resume_continual, run_continual
    from seqcore.tasks import DatasetError
    for table in tables:
        changes, rows = TABLES[table]
        for seed in table_seeds(table, seeds):
            for label, name, learner, kwargs, extra, _ in rows:
                path = run_dir(out, table, name, seed)
                if completed(path) or (only is not None and name not in only):
                    continue
                cfg = ContinualConfig(**{**PROTOCOL, **changes, **extra}, learner=learner,
                                      learner_kwargs=kwargs, seed=seed, data_dir=data_dir)
                summary = None
                if resumable(path, cfg):
                    print(f"[{table}] {label}, seed {seed} -> {path} (resuming)", flush=True)
                    try:
                        summary, _ = resume_continual(str(path), quiet=True)
                    except DatasetError:  # no data here: starting over would not find it either
                        raise
                    except ValueError as exc:  # a damaged run: start it again, as before
                        print(f"[{table}] {label}, seed {seed}: cannot resume ({exc}); starting over", flush=True)
                if summary is None:
                    print(f"[{table}] {label}, seed {seed} -> {path}", flush=True)
                    summary, _ = run_continual(cfg, str(path), quiet=True, overwrite=True)
                accuracy = summary.get("average_accuracy")  # absent when no experience finished
                print(f"[{table}] {label}, seed {seed}: {summary['status']}, average accuracy "
                      f"{'—' if accuracy is None else f'{accuracy:.3f}'}, {summary['wall_time_s']:.0f} s", flush=True)
                if summary["status"] == "interrupted":  # Ctrl-C: stop the sweep; the next one resumes here
                    raise KeyboardInterrupt


def _num(x: float) -> str:
    return f"{x:.3f}".replace("-", "−")


def metric_table(out: Path, table: str, seeds) -> str:
    rows = TABLES[table][1]
    several = len(seeds) > 1  # a single-seed table has no seeds column (as in the README)
    seeds_head = " seeds |" if several else ""
    lines = [f"| learner | options |{seeds_head} final avg. acc. | forgetting | min-ACC | WC-ACC | BWT | FWT | wall (s) |",
             "|---|---|" + "---|" * (len(METRICS) + 1 + several)]
    for label, name, *_, shown in rows:
        found = [s for s in (completed(run_dir(out, table, name, seed)) for seed in seeds) if s]
        count = f" {len(found)} |" if several else ""
        if not found:
            lines.append(f"| {label} | {shown} |{count}" + " |" * (len(METRICS) + 1))
            continue
        cells = []
        for key in METRICS:  # a metric a run could not measure (null, e.g. FWT) is left out of its mean
            xs = [s[key] for s in found if s.get(key) is not None]
            cells.append("—" if not xs else f"{_num(statistics.mean(xs))} ± {statistics.stdev(xs):.3f}"
                         if len(xs) > 1 else _num(xs[0]))
        walls = [s["wall_time_s"] for s in found if s.get("wall_time_s") is not None]
        wall = f"{statistics.mean(walls):.0f}" if walls else "—"
        lines.append(f"| {label} | {shown} |{count} " + " | ".join(cells) + f" | {wall} |")
    return "\n".join(lines)


def gap_curve(path: Path) -> tuple[list[int], list[float]]:
    """(updates into experience 2, accuracy on experience 1) from a two-experience run."""
    curve = EvalCurve.from_records(RunDir(path).read_metrics())
    during = curve.experience == 1
    if not during.any():
        raise ValueError(f"{path}: no evaluation during experience 2 in metrics.jsonl")
    steps = curve.iterations[during]
    return (steps - steps[0]).tolist(), curve.accuracy[during, 0].tolist()


def gap_table(out: Path, seed: int) -> tuple[str, dict]:
    lines = ["| learner | accuracy on exp. 1 before exp. 2 | lowest, in exp. 2's first "
             f"{GAP_WINDOW} updates | back within {GAP_RECOVERED} at update | at the end of exp. 2 |",
             "|---|---|---|---|---|"]
    curves = {}
    for label, name, *_ in TABLES["gap"][1]:
        path = run_dir(out, "gap", name, seed)
        if not completed(path):
            continue
        steps, accs = gap_curve(path)
        curves[label] = (steps, accs)
        before = accs[0]
        window = [(a, s) for s, a in zip(steps, accs) if 0 < s <= GAP_WINDOW]
        if not window:  # a log cut short or edited by hand: say which run
            raise ValueError(f"{path}: no evaluation of experience 1 in experience 2's first {GAP_WINDOW} updates; "
                             "rerun it (remove the directory)")
        low, at = min(window)
        back = next((s for s, a in zip(steps, accs) if s >= at and a >= before - GAP_RECOVERED), None)
        lines.append(f"| {label} | {before:.3f} | {low:.3f} (after {at} updates) | "
                     f"{'never' if back is None else back} | {accs[-1]:.3f} |")
    return "\n".join(lines), curves


def plot_gap(curves: dict, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        kept = f"; {path} is an earlier sweep's figure, left as it was" if path.exists() else ""
        print(f"matplotlib is not installed: no stability-gap plot{kept}", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (steps, accs) in curves.items():
        ax.plot(steps, accs, label=label)
    ax.set_xlabel("updates into experience 2")
    ax.set_ylabel("accuracy on experience 1")
    ax.set_title("Stability gap, permuted Fashion-MNIST (MLP 784-256-10, Adam)")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()  # rendered in memory, then written atomically: a failed write keeps the old figure
    try:
        fig.savefig(buf, format="png", dpi=120)
    finally:
        plt.close(fig)
    atomic_write(path, buf.getvalue())
    return True


def nonnegative_int(text: str) -> int:
    """argparse type of ``--seeds``: an integer >= 0 (ContinualConfig's rule)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected an integer >= 0")
    return value


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/permuted-fashion-mnist", type=Path)
    parser.add_argument("--tables", nargs="+", choices=sorted(TABLES), default=["adam", "sgd", "task", "gap"])
    parser.add_argument("--seeds", nargs="+", type=nonnegative_int, default=[0, 1, 2],
                        help="seeds of the Adam table (the others use the first)")
    parser.add_argument("--no-run", action="store_true", help="only write the tables from the runs found")
    parser.add_argument("--rows", nargs="+", metavar="NAME",
                        help="run only these rows (run names such as sharp, hypernet); the tables show every row found")
    parser.add_argument("--data-dir", help="directory of the Fashion-MNIST IDX files (default: the Debian "
                                           "package's, /usr/share/datasets/fashion-mnist)")
    args = parser.parse_args(argv)
    repeated = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
    if repeated:  # each would count as another run in the mean and standard deviation
        parser.error(f"--seeds: got {args.seeds}, which repeats {repeated}; expected distinct seeds")
    if args.rows is not None:
        known = list(dict.fromkeys(name for table in args.tables for _, name, *_ in TABLES[table][1]))
        unknown = [name for name in args.rows if name not in known]
        if unknown:
            parser.error(f"--rows: got {unknown}, expected run names of the chosen tables "
                         f"({', '.join(args.tables)}): {', '.join(known)}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out: got '{args.out}', which is a file; expected a folder (it is created if missing)")
    if args.data_dir:  # stored absolute, as `seqcore continual` does: a resumed run reads it from config.json
        args.data_dir = os.path.abspath(args.data_dir)
    if not args.no_run:
        from seqcore.tasks import DatasetError
        try:
            run_missing(args.out, args.tables, args.seeds, args.data_dir, args.rows)
        except DatasetError as exc:  # no data here: say how to get it, in one line
            parser.error(str(exc))
        except ValueError as exc:  # a run directory another process is writing, a file in the way
            raise SystemExit(f"continual_tables.py: error: {exc}") from None
        except KeyboardInterrupt:
            print("interrupted; the same command resumes the sweep", file=sys.stderr)
            sys.exit(130)
    if not found_runs(args.out, args.tables, args.seeds):  # empty tables would read like results
        raise SystemExit(f"continual_tables.py: error: no completed runs under {args.out} for the tables "
                         f"{', '.join(args.tables)}; run the sweep first (without --no-run)")
    parts = []
    try:  # a damaged run file, an --out that cannot be written: one line, not a traceback
        for table in args.tables:
            if table == "gap":
                text, curves = gap_table(args.out, args.seeds[0])
                if curves and plot_gap(curves, args.out / "stability_gap.png"):
                    text += "\n\n![stability gap](stability_gap.png)"  # beside tables.md, in <out>
            else:
                text = metric_table(args.out, table, table_seeds(table, args.seeds))
            parts.append(f"## {table}\n\n{text}")
        # written atomically (a temporary file, then a rename): a failed rewrite keeps the earlier tables
        atomic_write(args.out / "tables.md", ("\n\n".join(parts) + "\n").encode())
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"continual_tables.py: error: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"continual_tables.py: error: cannot write the tables into {args.out} "
                         f"({exc.strerror or exc})") from None
    except KeyboardInterrupt:  # tables.md is written atomically: the earlier one, if any, stays whole
        print("interrupted while writing the tables; the earlier tables.md is unchanged", file=sys.stderr)
        sys.exit(130)
    print("\n\n".join(parts))


if __name__ == "__main__":
    main()
