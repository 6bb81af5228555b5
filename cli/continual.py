"""``seqcore continual`` (train a stream with a continual learner) and ``seqcore report`` (show a run).

``register(group)`` adds both commands to the main click group. Every learner
hyperparameter is an option of ``continual`` (``--strength``, ``--memory-size``, …; see
``seqcore continual --help``); an option the chosen learner does not take is an error.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import click
import numpy as np

from seqcore import backends, cells, learners
from seqcore.continual import CURRICULUM_TASKS, DATASETS, STREAMS, ContinualConfig, resume_continual, run_continual
from seqcore.metrics import EvalCurve
from seqcore.plotting import pyplot
from seqcore.runs import RunDir, read_json

from .common import KeyValue, OptionalFloat, NONE, user_errors

__all__ = ["register", "continual", "report", "format_report", "plot_curves"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
METRICS = ("average_accuracy", "forgetting", "forgetting_max", "bwt", "fwt", "min_acc", "wc_acc",
           "windowed_forgetting", "windowed_plasticity", "lca")


def _hyperparameter_specs() -> dict[str, tuple]:
    """Every learner hyperparameter: name → (python type, help, learners that take it)."""
    specs: dict[str, tuple] = {}
    for name in learners.names():
        for key, hp in learners.hyperparameters(name).items():
            kind = type(hp.default)
            prev = specs.get(key)
            takers = (prev[2] if prev else ()) + (name,)
            specs[key] = (prev[0] if prev else kind, prev[1] if prev else hp.help, takers)
    return specs


def _learner_options(fn):
    for key, (kind, text, takers) in sorted(_hyperparameter_specs().items(), reverse=True):
        ptype = {int: int, float: float, bool: bool}.get(kind, str)
        fn = click.option(f"--{key.replace('_', '-')}", key, type=ptype, default=None,
                          help=f"{text} [{', '.join(takers)}]")(fn)
    return fn


def _default_backend() -> str:
    try:
        from .main import default_backend
        return default_backend()
    except ImportError:  # pragma: no cover - main is written elsewhere
        return "numpy"


@click.command("continual", context_settings=CONTEXT)
@click.option("--stream", type=click.Choice(STREAMS), default="permuted", show_default=True,
              help="permuted: a fixed pixel permutation per experience (the first is the identity); "
                   "split: classes dealt into experiences; blurry: split with overlapping boundaries; "
                   "power-law: permuted tasks rehearsed with power-law probability; scole: many small "
                   "tasks whose classes re-occur; curriculum: --task with N = --n-start, +1, ... "
                   "(generated sequences, no data set).")
@click.option("--task", type=click.Choice(CURRICULUM_TASKS), default="nparity", show_default=True,
              help="curriculum: the task whose N grows by one per experience.")
@click.option("--n-start", type=click.IntRange(min=1), default=2, show_default=True,
              help="curriculum: N of the first experience.")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True,
              help="blurry: fraction of each experience drawn from its neighbours.")
@click.option("--classes-per-experience", type=click.IntRange(min=1), default=2, show_default=True,
              help="scole: classes in each small task.")
@click.option("--class-distribution", type=click.Choice(("uniform", "zipf")), default="uniform",
              show_default=True, help="scole: how the classes of each task are drawn.")
@click.option("--stream-exponent", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="power-law stream: decay exponent of rehearsal probability; scole: Zipf exponent.")
@click.option("--stream-budget", type=click.IntRange(min=1), default=1, show_default=True,
              help="power-law stream: rehearsals drawn after each new task.")
@click.option("--scenario", type=click.Choice(("class", "task", "domain")), default=None,
              help="class: one head over every class; domain: one shared head, labels per experience; "
                   "task: one head per experience, evaluated with its own head (task-incremental). "
                   "Default: the stream's own (split/blurry/scole: class; permuted/power-law/curriculum: "
                   "domain).")
@click.option("--dataset", type=click.Choice(DATASETS), default="fashion-mnist", show_default=True,
              help="synthetic: Gaussian class clusters generated locally (no files needed).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Directory of the IDX files.")
@click.option("--synthetic", "synthetic_args", type=KeyValue(), multiple=True,
              help="Synthetic data setting KEY=VALUE (n_features, n_classes, n_train, n_test, noise, rank).")
@click.option("--experiences", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--train-size", type=click.IntRange(min=1), help="Training samples kept (default: all).")
@click.option("--eval-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Evaluation samples per experience.")
@click.option("--model", type=click.Choice(("mlp", *cells.names())), default="mlp", show_default=True,
              help="An MLP or a recurrent classifier with this cell (images read row by row).")
@click.option("--hidden", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--step-features", type=click.IntRange(min=1), help="Features per step for recurrent models.")
@click.option("--learner", type=click.Choice(learners.names()), default="naive", show_default=True)
@click.option("--optimizer", type=click.Choice(("sgd", "adam")), default="adam", show_default=True,
              help="The learners' default hyperparameters are tuned for Adam.")
@click.option("--lr", type=float, default=0.001, show_default=True)
@click.option("--momentum", type=float, default=0.0, show_default=True)
@click.option("--reset-optimizer", is_flag=True, help="Re-initialise the optimizer state at every experience.")
@click.option("--clip", type=OptionalFloat(), default=None, help="Global-norm gradient clipping (default: none).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=500, show_default=True,
              help="Updates per experience.")
@click.option("--eval-every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Continual evaluation every k updates, on every experience seen.")
@click.option("--checkpoint-every", type=click.IntRange(min=1),
              help="Also checkpoint every k updates (always at the end of each experience).")
@click.option("--backend", type=click.Choice(backends.names()), help="Backend (default: numba when it loads).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--dtype", type=click.Choice(("float32", "float64")), default="float32", show_default=True)
@_learner_options
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("--resume", "resume_run", is_flag=True, help="Continue the interrupted run in --out.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bar or per-experience lines (the final report is still printed).")
@click.pass_context
def continual(ctx, out, overwrite, resume_run, quiet, synthetic_args, **options) -> None:
    """Train a continual-learning stream with a learner; write metrics.jsonl and summary.json to --out."""
    log = None if quiet else click.echo
    with user_errors():
        if resume_run:
            _refuse_options_on_resume(ctx)
            if not (Path(out) / "checkpoint.npz").exists():
                raise click.ClickException(f"--out: {out} holds no run to resume (no checkpoint.npz)")
            summary, _ = resume_continual(out, quiet=quiet, log=log)
        else:
            config = build_config(options, synthetic_args)
            summary, _ = run_continual(config, out, quiet=quiet, log=log, overwrite=overwrite)
    if summary["status"] not in ("completed",):
        raise click.ClickException(f"run {summary['status']}: {summary['message']}")
    click.echo(format_report(read_json(Path(out) / "summary.json")))  # also with -q, as `train -q` prints its summary


# the options that make sense with --resume; any other would be silently ignored
RESUME_OPTIONS = ("out", "resume_run", "quiet")


def _refuse_options_on_resume(ctx: click.Context) -> None:
    """A resumed run keeps its config.json: an option given explicitly with --resume is an error."""
    explicit = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    given = [max(p.opts, key=len) for p in ctx.command.params
             if p.name not in RESUME_OPTIONS and ctx.get_parameter_source(p.name) in explicit]
    if given:
        raise click.ClickException(f"{', '.join(given)}: not allowed with --resume; the run continues with "
                                   f"its saved config.json (start a new run with another --out to change it)")


def build_config(options: dict, synthetic_args=()) -> ContinualConfig:
    """A :class:`ContinualConfig` from the ``continual`` command's options."""
    specs = _hyperparameter_specs()
    learner = options["learner"]
    accepted = learners.hyperparameters(learner)
    hparams = {}
    for key in specs:
        value = options.pop(key, None)
        if value is None:
            continue
        if key not in accepted:
            takes = ", ".join("--" + k.replace("_", "-") for k in accepted) or "none"
            raise click.ClickException(f"--{key.replace('_', '-')}: not a hyperparameter of learner {learner!r} "
                                       f"(it takes: {takes})")
        hparams[key] = value
    clip = options.pop("clip")
    backend = options.pop("backend") or _default_backend()
    return ContinualConfig(**options, backend=backend, clip=None if clip in (None, NONE) else clip,
                           learner_kwargs=hparams, synthetic=dict(synthetic_args))


# -- report ---------------------------------------------------------------------------------------

def _fmt(v) -> str:
    return "   -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.3f}"


def format_report(summary: dict) -> str:
    """The accuracy matrix and every metric of a run's ``summary.json``, as text."""
    R = summary.get("accuracy_matrix") or []
    n = len(R)
    lines = [f"learner {summary.get('learner')}  model {summary.get('model')}  stream {summary.get('stream')} "
             f"({summary.get('dataset')}, {summary.get('scenario', '?')}-incremental)  status {summary.get('status')}  steps {summary.get('steps')}  "
             f"wall time {summary.get('wall_time_s', float('nan')):.1f} s",
             "", "accuracy matrix R[i, j] (row: after training experience i; column: experience j)",
             "        " + " ".join(f"{'exp ' + str(j):>6}" for j in range(n))]
    for i, row in enumerate(R):
        lines.append(f"after {i:<2}" + " ".join(_fmt(v) for v in row))
    if summary.get("baseline"):
        lines.append("init    " + " ".join(_fmt(v) for v in summary["baseline"]))
    lines.append("")
    for key in METRICS:
        if key in summary:
            lines.append(f"{key:<20} {_fmt(summary[key]).strip()}")
    return "\n".join(lines)


def plot_curves(run_dir: str | Path, path: str | Path) -> Path | None:
    """Per-iteration accuracy of every experience (the stability gap) into ``path``; None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    records = RunDir(run_dir).read_metrics()
    if not records:
        return None
    curve = EvalCurve.from_records(records)
    fig, ax = plt.subplots(figsize=(8, 4))
    for j in range(curve.accuracy.shape[1]):
        seen = curve.experience >= j
        ax.plot(curve.iterations[seen], curve.accuracy[seen, j], label=f"exp {j}", lw=1.2)
    for i in range(1, curve.n_seen):
        ax.axvline(curve.iterations[np.flatnonzero(curve.experience == i)[0]], color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    ax.set_title(f"continual evaluation: {Path(run_dir).name}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


@click.command("report", context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Where to save the accuracy-per-iteration plot (default: RUN_DIR/accuracy.png).")
@click.option("--no-plot", is_flag=True, help="Do not plot.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json as it is.")
def report(run_dir: str, plot_path: str | None, no_plot: bool, as_json: bool) -> None:
    """Print a continual run's accuracy matrix and metrics (and plot its curves when matplotlib is present)."""
    with user_errors():
        summary_path = Path(run_dir) / "summary.json"
        if not summary_path.exists():
            raise click.ClickException(f"{run_dir}: no summary.json (not a finished `seqcore continual` run?)")
        summary = read_json(summary_path)
        if "accuracy_matrix" not in summary:
            raise click.ClickException(f"{summary_path}: no accuracy_matrix (not a `seqcore continual` run)")
        if as_json:
            click.echo(json.dumps(summary, indent=2))
            return
        click.echo(format_report(summary))
        if not no_plot:
            saved = plot_curves(run_dir, plot_path or Path(run_dir) / "accuracy.png")
            if saved is not None:
                click.echo(f"\nplot: {saved}")


def register(group: click.Group) -> None:
    """Add ``continual`` and ``report`` to the click ``group``."""
    group.add_command(continual)
    group.add_command(report)
