"""Plot every learning-rate schedule of seqcore.schedules.

    python examples/plot_schedules.py [OUTPUT.png] [--steps 1000]

Writes a grid of plots (default ``schedules.png``) when matplotlib is installed;
otherwise prints a table of values at a few steps and says that matplotlib is missing.
The suffix of OUTPUT picks the format (``.png``, ``.pdf``, ``.svg``, ...; ``.png`` is
appended to a name without one).
"""
from __future__ import annotations

import argparse
import io
import os

import numpy as np

from seqcore import schedules as S
from seqcore.plotting import pyplot
from seqcore.runs import atomic_write


def build_schedules(total: int) -> dict[str, list[tuple[str, S.Schedule]]]:
    """Panel title -> [(curve label, schedule)], every schedule over ``total`` steps, peak 1."""
    warmup, cooldown = total // 20, total // 5
    # a synthetic gradient-norm history for `refined`: large early, then a noisy plateau
    rng = np.random.default_rng(0)
    norms = 1.0 + 4.0 * np.exp(-np.arange(total) / (total / 20)) + 0.1 * rng.standard_normal(total) ** 2
    infinite_args = dict(peak=1.0, constant_value=0.4, min_value=0.02, warmup_steps=warmup,
                         cooldown_steps=cooldown, constant_steps=total // 2, anneal_steps=total // 5)
    return {
        "constant": [("constant(1)", S.constant(1.0))],
        "linear_decay": [("η(1 − t/T)", S.linear_decay(1.0, total)),
                         ("end 0.2", S.linear_decay(1.0, total, end_value=0.2))],
        "piecewise_constant": [("÷10 at ½T, ¾T", S.piecewise_constant([1.0, 0.1, 0.01], [total // 2, 3 * total // 4]))],
        "exponential": [("rate 0.5 per T/5", S.exponential(1.0, 0.5, total // 5)),
                        ("staircase", S.exponential(1.0, 0.5, total // 5, staircase=True))],
        "cosine": [("α=0", S.cosine(1.0, total)), ("α=0.1, power 2", S.cosine(1.0, total, alpha=0.1, power=2.0))],
        "warmup_cosine": [("warmup T/20", S.warmup_cosine(1.0, warmup, total))],
        "sgdr": [("cycles T/4", S.sgdr(1.0, total // 4)),
                 ("×2 length, ×0.7 peak", S.sgdr(1.0, total // 8, cycle_mult=2.0, peak_decay=0.7))],
        "wsd": [(kind, S.wsd(1.0, total, warmup_steps=warmup, cooldown_steps=cooldown, cooldown=kind,
                             floor_ratio=0.05)) for kind in S.COOLDOWN_KINDS],
        "infinite": [("first task", S.infinite(**infinite_args)),
                     ("later task (start_in_constant)", S.infinite(**infinite_args, start_in_constant=True))],
        "rex": [("η_min=0", S.rex(1.0, total)), ("η_min=0.1", S.rex(1.0, total, min_value=0.1))],
        "triangular": [(mode, S.triangular(0.1, 1.0, total // 8, mode=mode, gamma=0.998))
                       for mode in S.TRIANGULAR_MODES],
        "join": [("warmup_cosine, then constant", S.join([S.warmup_cosine(1.0, warmup, total // 2, alpha=0.2),
                                                          S.constant(0.2)], [total // 2]))],
        "refined": [("from noisy norms", S.refined(norms, 1.0)),
                    ("median-filtered (10 %)", S.refined(norms, 1.0, median_window_fraction=0.1))],
    }


def print_table(panels, total: int) -> None:
    steps = [0, total // 10, total // 4, total // 2, 3 * total // 4, total - 1, total]
    print(f"{'schedule':48s}" + "".join(f"{t:>9d}" for t in steps))
    for title, curves in panels.items():
        for label, schedule in curves:
            print(f"{title + ' / ' + label:48s}" + "".join(f"{schedule(t):9.4f}" for t in steps))


def plot(plt, panels, total: int, path: str) -> None:

    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    steps = np.arange(total + 1)
    for ax, (title, curves) in zip(axes.flat, panels.items()):
        for label, schedule in curves:
            ax.plot(steps, [schedule(t) for t in steps], label=label, linewidth=1.2)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylim(-0.03, 1.08)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    # rendered in memory, then written atomically (a temporary file beside it, then a rename):
    # a failed write leaves an earlier figure at ``path`` as it was
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=os.path.splitext(path)[1][1:].lower(), dpi=110)
    finally:
        plt.close(fig)
    atomic_write(path, buf.getvalue())
    print(f"wrote {path}")


def output_path(parser, given: str) -> str:
    """The file the figure goes to: ``given``, with ``.png`` appended when it has no suffix
    (matplotlib would append it silently); a one-line usage error for a folder or a missing one."""
    if not given.strip():  # '' would become the hidden file '.png'
        parser.error(f"output: got {given!r}, expected a file name such as 'schedules.png'")
    path = given if os.path.splitext(given)[1] else given + ".png"
    for p in dict.fromkeys((given, path)):
        if os.path.isdir(p):
            parser.error(f"output: got {given!r}, which is a folder; expected a file name such as "
                         f"{os.path.join(given, 'schedules.png')!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"output: got {given!r}, whose directory {folder!r} does not exist")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default="schedules.png",
                        help="figure path; its suffix picks the format (default schedules.png; .png is "
                             "appended to a name without a suffix)")
    parser.add_argument("--steps", type=int, default=1000, help="horizon T of every schedule (default 1000)")
    args = parser.parse_args(argv)
    if args.steps < 40:
        parser.error(f"--steps: got {args.steps}, expected >= 40")
    path = output_path(parser, args.output)
    plt = pyplot()
    if plt is not None:
        from matplotlib.backend_bases import FigureCanvasBase
        formats = FigureCanvasBase.get_supported_filetypes()
        suffix = os.path.splitext(path)[1][1:].lower()
        if suffix not in formats:
            parser.error(f"output: got {args.output!r}, whose suffix {suffix!r} is no format matplotlib writes; "
                         f"expected one of {', '.join('.' + f for f in sorted(formats))}")
    panels = build_schedules(args.steps)
    if plt is None:
        print("matplotlib is missing (pip install 'seqcore[plot]'); printing values instead.")
        print_table(panels, args.steps)
        return
    try:
        plot(plt, panels, args.steps, path)
    except OSError as exc:  # no permission, disk full: any earlier file at path is left as it was
        raise SystemExit(f"plot_schedules.py: error: cannot write {path} ({exc.strerror or exc})") from None


if __name__ == "__main__":
    main()
