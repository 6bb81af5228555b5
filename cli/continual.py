"""``seqcore continual`` (train a stream with a continual learner) and ``seqcore report`` (show a run).

``register(group)`` adds both commands to the main click group. Every learner
hyperparameter is an option of ``continual`` (``--strength``, ``--memory-size``, …; see
``seqcore continual --help``); an option the chosen learner does not take is an error.
"""
from __future__ import annotations

import io
import json
import math
import os
import sys
from pathlib import Path

import click
import numpy as np

from seqcore import backends, cells, learners
from seqcore.continual import (CURRICULUM_TASKS, DATASETS, STREAMS, ContinualConfig, is_continual_run,
                               resume_continual, run_continual)
from seqcore.metrics import EvalCurve
from seqcore.plotting import pyplot
from seqcore.runs import (REPORT_PLOT, RunDir, atomic_write, blas_threads_note, load_checkpoint, read_json,
                          read_json_object)
from seqcore.validate import is_finite_number, is_real_number

from .common import (KeyValue, OptionalFloat, NONE, check_backend_loads, note_blas_pin, option_given, saved_config_errors,
                     user_errors)

__all__ = ["register", "continual", "report", "format_report", "plot_curves", "PlotWriteError"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
METRICS = ("average_accuracy", "forgetting", "forgetting_max", "bwt", "fwt", "min_acc", "wc_acc",
           "windowed_forgetting", "windowed_plasticity", "lca")


def _hyperparameter_specs() -> dict[str, tuple]:
    """Every learner hyperparameter: name → (python type, {help: learners that take it with
    that meaning}); one option may mean different things to different learners (``strength``)."""
    specs: dict[str, tuple] = {}
    for name in learners.names():
        for key, hp in learners.hyperparameters(name).items():
            kind, meanings = specs.setdefault(key, (type(hp.default), {}))
            meanings.setdefault(hp.help, []).append(name)
    return specs


def _learner_options(fn):
    for key, (kind, meanings) in sorted(_hyperparameter_specs().items(), reverse=True):
        ptype = {int: int, float: float, bool: bool}.get(kind, str)
        text = "; ".join(f"{meaning} [{', '.join(takers)}]" for meaning, takers in meanings.items())
        fn = click.option(f"--{key.replace('_', '-')}", key, type=ptype, default=None, help=text)(fn)
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
                   "split: classes, in an order drawn from --seed, dealt into experiences; blurry: split "
                   "with overlapping boundaries; power-law: permuted tasks rehearsed with power-law probability; "
                   "scole: many small tasks whose classes re-occur; curriculum: --task with N = --n-start, "
                   "+1, ... (generated sequences, no data set).")
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
@click.option("--stream-exponent", type=click.FloatRange(min=0), default=1.0, show_default=True,
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
              help="Evaluation samples per experience (at most its whole test split).")
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
    if not out.strip():
        raise click.ClickException(f"--out: got {out!r}, expected a directory path")
    names = _option_names(ctx, synthetic_args)
    if resume_run:
        with user_errors(names):
            _refuse_options_on_resume(ctx)
            if not (Path(out) / "checkpoint.npz").exists():
                raise click.ClickException(f"--out: {out} holds no run to resume (no checkpoint.npz)")
            if _is_training_run(out):
                raise click.ClickException(f"--out: {out} holds a `seqcore train` run, not a continual one; "
                                           f"continue it with `seqcore resume {out}`")
        saved = _saved_config(out)
        with user_errors(_stream_names(names, saved and saved.learner)), saved_config_errors(RunDir(out).config):
            if saved is not None:
                _check_stream_arguments(saved)
            _note_blas_threads(out)
            summary, _ = resume_continual(out, quiet=quiet, log=log)
    else:
        with user_errors(names):
            _refuse_unused_options(ctx, options, synthetic_args)
            config = build_config(options, synthetic_args)
            check_backend_loads(config.backend, option_given(ctx, "backend"))
            _check_stream_arguments(config)
        if not quiet:
            note_blas_pin(config.backend)
        with user_errors(_stream_names(names, config.learner)):
            summary, _ = run_continual(config, out, quiet=quiet, log=log, overwrite=overwrite)
    if summary["status"] == "interrupted":  # as `seqcore train`: the checkpoint is kept, exit status 130
        click.echo(f"Interrupted at step {summary['steps']}; the last checkpoint is kept: {summary['message']}",
                   err=True)
        sys.exit(130)
    if summary["status"] not in ("completed",):
        raise click.ClickException(f"run {summary['status']}: {summary['message']}")
    click.echo(format_report(read_json(Path(out) / "summary.json")))  # also with -q, as `train -q` prints its summary


def _note_blas_threads(out: str) -> None:
    """On stderr (also with -q: it is about the result), :func:`seqcore.runs.blas_threads_note` for
    the checkpoint in ``out`` when training goes on from it (a finished run is only reported)."""
    arrays, meta = load_checkpoint(RunDir(out).checkpoint, keys=("R",))
    # the continual loop's position: every row of the (n, n) accuracy matrix done means finished
    if "R" in arrays and meta.get("experience") == arrays["R"].shape[0]:
        return
    note = blas_threads_note(meta)
    if note:
        click.echo(note, err=True)


def _saved_config(out: str) -> ContinualConfig | None:
    """The configuration saved in ``out`` (None when it cannot be read: resuming reports why)."""
    try:
        return ContinualConfig.read(RunDir(out).config)
    except (OSError, ValueError, TypeError):
        return None


def _is_training_run(out: str) -> bool:
    """Whether ``out`` holds a ``seqcore train`` run (its config.json has TrainConfig's ``curriculum``)."""
    try:
        config = read_json(RunDir(out).config)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "curriculum" in config and not is_continual_run(out)


def _option_names(ctx: click.Context, synthetic_args=()) -> dict:
    """``user_errors`` names: the library's ``strength: got -1.0`` is shown as ``--strength: ...``.

    Every ContinualConfig field and learner hyperparameter is the option of the same name; the
    stream builders call ``experiences`` ``n_experiences``, clipping calls ``clip`` ``max_norm``,
    and the synthetic data's settings come from ``--synthetic KEY=VALUE``.
    """
    # not "out": RunDir's messages already say "out: ... (--out)", as `seqcore train`'s do
    names = {p.name: max(p.opts, key=len) for p in ctx.command.params if p.opts and p.name != "out"}
    names.update({key: f"--synthetic {key}" for key, _ in synthetic_args})
    names.update(n_experiences="--experiences", max_norm="--clip", synthetic="--synthetic")
    return names


# the stream builders' names for the stream options; learners take options of the same names
# (the power-law learner's --exponent and --budget), whose values build_config has checked
STREAM_NAMES = {"budget": "--stream-budget", "exponent": "--stream-exponent"}


def _stream_names(names: dict, learner: str | None) -> dict:
    """``names`` for the run itself, where the stream is built: ``budget: got ...`` raised there is
    --stream-budget's, except a budget the learner takes (its schedule is drawn when it is bound;
    the stream's was drawn by :func:`_check_stream_arguments` before). A learner's exponent is
    checked when the configuration is built, so one raised during the run is the stream's."""
    takes = learners.hyperparameters(learner) if learner is not None else {}
    return {**names, **{key: flag for key, flag in STREAM_NAMES.items() if key not in takes or key == "exponent"}}


def _check_stream_arguments(config: ContinualConfig) -> None:
    """The power-law stream's schedule drawn once before the run (it is small: at most
    --stream-budget draws per experience), so that an error in it names the stream's options,
    not the power-law learner's options of the same library names."""
    if config.stream != "power-law":
        return
    from seqcore.tasks.streams import power_law_steps
    with user_errors({**STREAM_NAMES, "n_tasks": "--experiences"}):
        power_law_steps(config.experiences, config.stream_exponent, config.stream_budget, config.seed)


# the options that make sense with --resume; any other would be silently ignored
RESUME_OPTIONS = ("out", "resume_run", "quiet")


def _refuse_options_on_resume(ctx: click.Context) -> None:
    """A resumed run keeps its config.json: an option given explicitly with --resume is an error."""
    given = [max(p.opts, key=len) for p in ctx.command.params if p.name not in RESUME_OPTIONS and option_given(ctx, p.name)]
    if given:
        raise click.ClickException(f"{', '.join(given)}: not allowed with --resume; the run continues with "
                                   f"its saved config.json (start a new run with another --out to change it)")


# options that only some configurations read: (option name, test on the options, what reads it)
_CONDITIONAL = (
    ("task", lambda o: o["stream"] == "curriculum", "--stream curriculum"),
    ("dataset", lambda o: o["stream"] != "curriculum", "streams of images or synthetic data (not --stream curriculum)"),
    ("n_start", lambda o: o["stream"] == "curriculum", "--stream curriculum"),
    ("overlap", lambda o: o["stream"] == "blurry", "--stream blurry"),
    ("classes_per_experience", lambda o: o["stream"] == "scole", "--stream scole"),
    ("class_distribution", lambda o: o["stream"] == "scole", "--stream scole"),
    ("stream_exponent", lambda o: o["stream"] == "power-law" or (o["stream"] == "scole" and
                                                                  o["class_distribution"] == "zipf"),
     "--stream power-law, or scole with --class-distribution zipf"),
    ("stream_budget", lambda o: o["stream"] == "power-law", "--stream power-law"),
    ("data_dir", lambda o: o["stream"] != "curriculum" and o["dataset"] in ("fashion-mnist", "mnist"),
     "--dataset fashion-mnist or mnist"),
    ("step_features", lambda o: o["model"] != "mlp", "a recurrent --model"),
    ("train_size", lambda o: o["stream"] != "curriculum",
     "streams of images or synthetic data (not --stream curriculum)"),
    ("momentum", lambda o: o["optimizer"] == "sgd", "--optimizer sgd"),
)


def _refuse_unused_options(ctx: click.Context, options: dict, synthetic_args) -> None:
    """An option given on the command line that this configuration never reads is an error,
    not a silent no-op (`--overlap` on a permuted stream, `--data-dir` with synthetic data)."""
    for name, used, reader in _CONDITIONAL:
        if option_given(ctx, name) and not used(options):
            flag = "--" + name.replace("_", "-")
            what = f" (--optimizer {options['optimizer']} does not use it)" if name == "momentum" else ""
            raise click.ClickException(f"{flag}: not used by this run{what}; it is read only with {reader}")
    seen = {}
    for key, value in synthetic_args:  # a key given twice: the later value would silently win
        if key in seen:
            raise click.ClickException(f"--synthetic: key {key!r} given twice ({key}={json.dumps(seen[key])} and "
                                       f"{key}={json.dumps(value)}), expected each key once")
        seen[key] = value
    if synthetic_args and (options["dataset"] != "synthetic" or options["stream"] == "curriculum"):
        raise click.ClickException("--synthetic: not used by this run; it is read only with --dataset synthetic")


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
    if options.get("data_dir"):  # stored absolute: `continual --resume` reads config.json from any directory
        options["data_dir"] = os.path.abspath(options["data_dir"])
    return ContinualConfig(**options, backend=backend, clip=None if clip in (None, NONE) else clip,
                           learner_kwargs=hparams, synthetic=dict(synthetic_args))


# -- report ---------------------------------------------------------------------------------------

def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "   -  "
    return f"{round(v, 3) + 0.0:6.3f}"  # + 0.0: a value that rounds to zero prints 0.000, not -0.000


def _seconds(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def format_report(summary: dict) -> str:
    """The accuracy matrix and every metric of a run's ``summary.json``, as text."""
    R = summary.get("accuracy_matrix") or []
    n = len(R)
    lines = [f"learner {summary.get('learner')}  model {summary.get('model')}  stream {summary.get('stream')} "
             f"({summary.get('dataset')}, {summary.get('scenario', '?')}-incremental)  status {summary.get('status')}  steps {summary.get('steps')}  "
             f"wall time {_seconds(summary.get('wall_time_s'))} s",
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


def _is_number_or_none(v) -> bool:
    return v is None or is_real_number(v)


def _check_summary(summary: dict, source) -> None:
    """ClickException naming ``source`` when ``summary`` is not what ``format_report`` can print
    (a summary.json edited or damaged by hand: a string where a number belongs, a matrix that is not rows)."""
    R = summary["accuracy_matrix"]
    if not (isinstance(R, list) and all(isinstance(row, list) and all(map(_is_number_or_none, row)) for row in R)):
        raise click.ClickException(f"{source}: accuracy_matrix: got {R!r:.60}, expected a list of rows of "
                                   "numbers (null for not evaluated)")
    n = len(R)
    if any(len(row) != n for row in R):
        raise click.ClickException(f"{source}: accuracy_matrix: got rows of lengths {[len(row) for row in R]}, "
                                   f"expected {n} rows of {n} (one column per experience)")
    if any(v is not None and not 0.0 <= v <= 1.0 for row in R for v in row):
        raise click.ClickException(f"{source}: accuracy_matrix: got {R!r:.60}, expected accuracies in [0, 1]")
    baseline = summary.get("baseline")
    if baseline is not None and not (isinstance(baseline, list) and len(baseline) == n
                                     and all(map(_is_number_or_none, baseline))
                                     and all(v is None or 0.0 <= v <= 1.0 for v in baseline)):
        raise click.ClickException(f"{source}: baseline: got {baseline!r:.60}, expected a list of {n} accuracies "
                                   "in [0, 1] (one per experience)")
    for key in (*METRICS, "wall_time_s"):
        value = summary.get(key)  # json reads Infinity and NaN, which no run writes (it writes null)
        if not (value is None or is_finite_number(value)):
            raise click.ClickException(f"{source}: {key}: got {summary[key]!r:.60}, expected a finite number or null")


def _check_plot_path(path: str) -> None:
    folder = Path(path).parent
    if not folder.is_dir():
        raise click.ClickException(f"--plot: got {path!r}, whose directory {str(folder)!r} does not exist; "
                                   "expected a file in an existing directory")
    suffix = Path(path).suffix[1:].lower()
    if suffix and pyplot() is not None:  # without matplotlib nothing is plotted: nothing to check
        from matplotlib.backend_bases import FigureCanvasBase
        formats = FigureCanvasBase.get_supported_filetypes()
        if suffix not in formats:
            raise click.ClickException(f"--plot: got {path!r}, expected a file name ending in a format matplotlib "
                                       f"writes ({', '.join(sorted(formats))})")


class PlotWriteError(ValueError):
    """The plot was drawn but its file cannot be written (and only that: a damaged metrics.jsonl is a ValueError)."""


def plot_curves(run_dir: str | Path, path: str | Path) -> Path | None:
    """Per-iteration accuracy of every experience (the stability gap) into ``path``; None without matplotlib.

    A ValueError when ``metrics.jsonl`` is missing, has no evaluations or is damaged (a partial
    last line, left by a killed run, is skipped with a note, as ``--resume`` skips it), a
    :class:`PlotWriteError` when the file cannot be written."""
    plt = pyplot()
    if plt is None:
        return None
    rd = RunDir(run_dir)
    if not rd.metrics.exists():
        raise ValueError(f"{rd.metrics} does not exist")
    records = rd.read_metrics(skip_partial_tail=True, on_skip=lambda: click.echo(
        f"note: {rd.metrics}: its partial last line (a killed run's) is left out of the plot", err=True))
    if not records:
        raise ValueError(f"{rd.metrics} has no evaluations")
    try:
        curve = EvalCurve.from_records(records)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{rd.metrics}: {exc}") from exc
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
    # rendered in memory, then written atomically like every run file; the suffix picks the format
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=Path(path).suffix[1:].lower() or None, dpi=120)
    except ValueError as exc:  # an unknown format
        raise ValueError(f"plot: got {str(path)!r}: {exc}") from exc
    finally:
        plt.close(fig)
    try:
        atomic_write(path, buf.getvalue())
    except OSError as exc:
        raise PlotWriteError(f"plot: got {str(path)!r}, which cannot be written ({exc.strerror or exc})") from exc
    return Path(path)


@click.command("report", context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Where to save the accuracy-per-iteration plot (default: RUN_DIR/accuracy.png).")
@click.option("--no-plot", is_flag=True, help="Do not plot.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json as it is.")
def report(run_dir: str, plot_path: str | None, no_plot: bool, as_json: bool) -> None:
    """Print a continual run's accuracy matrix and metrics (and plot its curves when matplotlib is present)."""
    if plot_path is not None and not plot_path.strip():  # '' would fall back to the default file
        raise click.ClickException(f"--plot: got {plot_path!r}, expected a file name")
    if plot_path is not None and no_plot:  # one of them would be silently ignored
        raise click.ClickException(f"--plot: got {plot_path!r} with --no-plot, expected one of them")
    with user_errors({"plot": "--plot"}):
        summary_path = Path(run_dir) / "summary.json"
        # a process holds the run: training it, or resuming it after an earlier segment's summary
        holder = None if _is_training_run(run_dir) else RunDir(run_dir).holder()
        in_progress = None if holder is None else f"in progress{f' (pid {holder})' if holder else ''}"
        if not summary_path.exists():
            if in_progress:
                raise click.ClickException(f"{run_dir}: {in_progress}, no summary.json yet; report it when it "
                                           "finishes")
            if is_continual_run(run_dir):  # killed before its first summary: a checkpoint to go on from
                raise click.ClickException(f"{run_dir}: no summary.json yet (the run was stopped before its first "
                                           f"one); continue it with `seqcore continual --resume --out {run_dir}`")
            raise click.ClickException(f"{run_dir}: no summary.json (not a finished `seqcore continual` run?)")
        summary = read_json_object(summary_path)
        if "accuracy_matrix" not in summary:
            raise click.ClickException(f"{summary_path}: no accuracy_matrix (not a `seqcore continual` run)")
        if in_progress:
            click.echo(f"note: {run_dir} is {in_progress}: this summary is from an earlier segment of the run "
                       f"(status {summary.get('status')}, step {summary.get('steps')})", err=True)
        if as_json:  # as it is, even when damaged
            click.echo(json.dumps(summary, indent=2))
            return
        _check_summary(summary, summary_path)
        if plot_path is not None and not no_plot:  # before the report is printed, not after it
            _check_plot_path(plot_path)
        click.echo(format_report(summary))
        if not no_plot:
            try:
                saved = plot_curves(run_dir, plot_path or Path(run_dir) / REPORT_PLOT)
            except PlotWriteError:
                if plot_path is not None:
                    raise
                # the default file, in a directory this user cannot write: the report is what was asked for
                click.echo(f"note: no plot: {Path(run_dir) / REPORT_PLOT} cannot be written; "
                           "give --plot FILE elsewhere, or --no-plot", err=True)
                return
            except ValueError as exc:  # metrics.jsonl missing, empty or damaged
                if plot_path is not None:  # asked for by name: an error
                    raise click.ClickException(f"--plot {plot_path}: nothing plotted, {exc}") from exc
                click.echo(f"note: no plot: {exc}", err=True)  # the report, which was asked for, is printed
                return
            if saved is not None:
                click.echo(f"\nplot: {saved}")
            elif plot_path is not None and pyplot() is None:  # asked for by name: say why there is none
                click.echo(f"note: --plot {plot_path}: nothing plotted, matplotlib is not installed "
                           "(pip install 'seqcore[plot]')", err=True)


def register(group: click.Group) -> None:
    """Add ``continual`` and ``report`` to the click ``group``."""
    group.add_command(continual)
    group.add_command(report)
