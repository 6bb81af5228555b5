"""The ``seqcore`` command line: list backends, tasks and cells; train, resume and evaluate runs.

``seqcore train --task nparity --curriculum multi-head --cell lstm --out runs/x`` writes a
run directory (:mod:`seqcore.runs`); ``seqcore resume runs/x`` continues it after an
interruption; ``seqcore eval runs/x`` scores its checkpoint on fresh batches.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

import click
import numpy as np

from seqcore import backends, cells, tasks
from seqcore.backends import BackendUnavailable, heap
from seqcore.runs import RunDir, blas_threads_note, checkpoint_meta
from seqcore.tasks.idx import DEFAULT_DATA_DIRS
from seqcore.validate import INT64_MAX, is_finite_number, is_integer
from seqcore import train as train_module
from seqcore.train import DTYPES, MOMENTUM_OPTIMIZERS, OPTIMIZERS, SCHEDULES, Run, TrainConfig
from seqcore.train import EARLY_STOPS, build_schedule, current_status
from seqcore.train import resume as resume_run
from seqcore.train import train as train_run

from .common import (NONE, KeyValue, OptionalFloat, SeqcoreGroup, load_config_file, note_blas_pin,
                     check_backend_loads, option_given, register_optional, saved_config_errors, user_errors)

__all__ = ["main", "default_backend", "build_config", "load_run", "evaluate_run"]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
FINISHED = ("completed", "curriculum-finished", "target-reached")


@click.group(cls=SeqcoreGroup, context_settings=CONTEXT)
@click.option("--traceback", is_flag=True, help="Show Python tracebacks instead of one-line errors.")
@click.version_option(package_name="seqcore")
def main(traceback: bool) -> None:
    """seqcore: recurrent sequence learning on NumPy, Numba, CUDA and PyTorch backends."""
    # every step frees and re-allocates the same buffers: keep them in the heap instead of
    # page-faulting them in again (seqcore.backends.heap); SEQCORE_RETAIN_HEAP=0 opts out
    heap.retain_from_env()


# -- listings -----------------------------------------------------------------------------------

def default_backend() -> str:
    """The backend ``seqcore train`` uses without ``--backend``: ``$SEQCORE_BACKEND`` when set,
    else the fastest CPU backend that loads here ("numba", else "numpy").

    An unknown ``$SEQCORE_BACKEND`` is a ClickException naming the variable (a later
    ``backend: got ...`` would not say where the value came from).
    """
    env = os.environ.get("SEQCORE_BACKEND", "").strip()
    if env:
        if env not in backends.names():
            raise click.ClickException(f"$SEQCORE_BACKEND: got {env!r}, expected one of {backends.names()} "
                                       "(or unset it, or pass --backend)")
        return env
    try:
        backends.get("numba")
    except BackendUnavailable:
        return "numpy"
    return "numba"


@main.command("backends")
def list_backends() -> None:
    """List the backends: available here or not, version, or why not."""
    rows = backends.info()
    try:
        default, bad_env = default_backend(), None
    except click.ClickException as exc:  # still list the backends: the names to choose from
        default, bad_env = None, exc
    click.echo(f"{'name':<8} {'available':<10} {'version':<14} note")
    for r in rows:
        note = r["reason"] or ("default for `seqcore train`" if r["name"] == default else "")
        click.echo(f"{r['name']:<8} {'yes' if r['available'] else 'no':<10} {r['version'] or '-':<14} {note}")
    from seqcore.backends import blas
    # matrix-product speed of the numpy backend (and of the numba backend's narrow products): an OPENBLAS_CORETYPE pin can cost 1.6-4x
    click.echo(f"\nOpenBLAS kernels: {blas.describe()}")
    if any(r["name"] == "numba" and r["available"] for r in rows):  # loaded by info(): how its kernels multiply
        from seqcore.backends.numba import panels
        click.echo(f"numba kernels' matrix products: packed-panel micro-kernels, {panels.VECTOR_BYTES}-byte vectors "
                   "(no BLAS; products narrower than one panel: NumPy's)")
    click.echo("heap: freed memory kept for the next step" if heap.retained()
               else "heap: glibc defaults (freed memory may go back to the OS between steps)")
    pin = blas.pin_note()
    if pin:
        click.echo(pin)
    if bad_env is not None:
        raise bad_env
    if default is not None and not any(r["name"] == default and r["available"] for r in rows):
        # $SEQCORE_BACKEND names a backend that cannot load here: `seqcore train` would refuse it
        raise click.ClickException(f"$SEQCORE_BACKEND: got {default!r}, which cannot load here (see above); "
                                   "unset it, or set it to an available backend")


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split()).rstrip(":").replace("``", "")


@main.command("tasks")
@click.argument("name", required=False, type=click.Choice(tasks.names()))
def list_tasks(name: str | None) -> None:
    """List the tasks, or show one task's fields (set them with --task-arg KEY=VALUE)."""
    if name is None:
        width = max(map(len, tasks.names()))
        for n in tasks.names():
            click.echo(f"{n:<{width}}  {_first_paragraph(tasks.describe(n))}")
        click.echo(f"\ncurricula: {', '.join(tasks.curriculum_names())}")
        return
    click.echo(f"{name}: {_first_paragraph(tasks.describe(name))}\nfields (--task-arg KEY=VALUE):")
    for key, value in tasks.fields(name).items():
        if key != "seed":  # set by the run's --seed, not by --task-arg (TrainConfig refuses it)
            click.echo(f"  {key} = {json.dumps(value)}")
    click.echo("the task's seed is the run's --seed")


def _cell_class(name: str) -> type:
    return type(cells.make(name, 1, 1))


def describe_cell(name: str) -> str:
    """One line saying what cell ``name`` is (its class docstring, else its module's)."""
    cls = _cell_class(name)
    text = _first_paragraph(cls.__doc__)
    if not text or text.startswith(f"{cls.__name__}("):  # a dataclass's generated docstring
        text = _first_paragraph(sys.modules[cls.__module__].__doc__)
    return text


@main.command("cells")
@click.argument("name", required=False, type=click.Choice(cells.names()))
def list_cells(name: str | None) -> None:
    """List the recurrent cells, or show one cell's fields (set them with --cell-arg KEY=VALUE)."""
    if name is None:
        width = max(map(len, cells.names()))
        for n in cells.names():
            click.echo(f"{n:<{width}}  {describe_cell(n)}")
        return
    settable = [f for f in dataclasses.fields(_cell_class(name))
                if f.name not in ("input_size", "hidden_size") and f.init]
    click.echo(f"{name}: {describe_cell(name)}\nfields (--cell-arg KEY=VALUE):{'' if settable else ' none'}")
    for f in settable:
        click.echo(f"  {f.name} = {json.dumps(f.default, default=str)}")


# -- train ----------------------------------------------------------------------------------------

def _field_default(name: str):
    f = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# (flag, TrainConfig field, click type, help); every default is None = "not given" so that a
# --config file can supply the value, and the help shows TrainConfig's default
_TRAIN_OPTIONS = [
    ("--task", "task", click.Choice(tasks.names()), "Task (see `seqcore tasks`)."),
    ("--curriculum", "curriculum", click.Choice(tasks.curriculum_names()), "Curriculum."),
    ("--cell", "cell", click.Choice(cells.names()), "Recurrent cell (see `seqcore cells`)."),
    ("--hidden", "hidden", int, "Hidden units per layer."),
    ("--layers", "layers", int, "Stacked recurrent layers."),
    ("--backend", "backend", click.Choice(backends.names()), "Array backend."),
    ("--mode", "mode", click.Choice(["sequential", "parallel"]),
     "Sequential steps, or a parallel scan (Newton's method for nonlinear cells)."),
    ("--optimizer", "optimizer", click.Choice(OPTIMIZERS), "Optimizer."),
    ("--lr", "lr", float, "Peak learning rate."),
    ("--schedule", "schedule", click.Choice(SCHEDULES), "Learning-rate schedule."),
    ("--warmup", "warmup", int, "Warmup steps of the schedule."),
    ("--steps", "steps", int, "Step budget."),
    ("--batch-size", "batch_size", int, "Sequences per training batch."),
    ("--seed", "seed", int, "Seed of the data, initialisation and sampling."),
    ("--clip", "clip", OptionalFloat(), "Global gradient-norm clip ('none' to disable)."),
    ("--weight-decay", "weight_decay", float, "Weight decay."),
    ("--momentum", "momentum", float, "Momentum of sgd/nesterov."),
    ("--eval-every", "eval_every", int, "Steps between evaluations (and checkpoints)."),
    ("--eval-batches", "eval_batches", int, "Evaluation batches."),
    ("--eval-batch-size", "eval_batch_size", int, "Sequences per evaluation batch."),
    ("--target-accuracy", "target_accuracy", OptionalFloat(),
     "Stop once every head reaches this accuracy ('none': run the whole budget)."),
    ("--checkpoint-every", "checkpoint_every", int, "Steps between checkpoints (default: every evaluation)."),
    ("--dtype", "dtype", click.Choice(list(DTYPES)), "Floating-point type of the parameters."),
]


def _train_options(fn):
    for flag, name, type_, help_ in reversed(_TRAIN_OPTIONS):
        default = _field_default(name)
        if name == "backend":
            help_ += " [default: numba if it loads, else numpy; $SEQCORE_BACKEND overrides]"
        elif default is not None or name == "target_accuracy":
            help_ += f" [default: {default if isinstance(default, str) else json.dumps(default).replace('null', 'none')}]"
        fn = click.option(flag, name, type=type_, default=None, help=help_)(fn)
    return fn


def _data_tasks() -> list[str]:
    """The tasks that read files from a ``data_dir``."""
    return [name for name in tasks.names() if "data_dir" in tasks.fields(name)]


def build_config(config_file: str | None, options: dict, task_args=(), curriculum_args=(),
                 cell_args=(), data_dir: str | None = None, dataset: str | None = None,
                 schedule_args=()) -> tuple[TrainConfig, str | None]:
    """The :class:`TrainConfig` of ``seqcore train`` and the ``out`` named in the config file.

    Precedence: command-line ``options`` (None = not given, :data:`NONE` = None) over the
    ``config_file`` over TrainConfig's defaults; ``*_args`` are ``(key, value)`` pairs merged
    over the file's ``*_kwargs`` (which are dropped when the command line names another
    task/curriculum/cell than the file); ``data_dir`` (``--data-dir``) and ``dataset``
    (``--dataset``) are those task fields of the tasks that read files (the image task). The
    task, curriculum and cell are built once here, so that every mistake in their fields is
    reported before anything is printed.
    """
    base = load_config_file(config_file) if config_file else {}
    out = base.pop("out", None)
    merged = dict(base)
    given = {key for key, value in options.items() if value is not None}
    for key, value in options.items():
        if value is not None:
            merged[key] = None if value is NONE else value
    for flag, pairs in (("--task-arg", task_args), ("--curriculum-arg", curriculum_args), ("--cell-arg", cell_args),
                        ("--schedule-arg", schedule_args)):
        _refuse_repeated_keys(flag, pairs)
    for flag, field, value in (("--data-dir", "data_dir", data_dir), ("--dataset", "dataset", dataset)):
        if value is None:
            continue
        task = merged.get("task", _field_default("task"))
        if task not in _data_tasks():
            raise click.ClickException(f"{flag}: task {task!r} reads no files, expected a task that "
                                       f"does ({', '.join(_data_tasks())})")
        other = dict(task_args).get(field)
        if other is not None and other != value and not (field == "data_dir" and isinstance(other, str)
                                                          and os.path.abspath(other) == os.path.abspath(value)):
            raise click.ClickException(f"{flag}: got {value!r} and --task-arg {field}={other!r}, expected one "
                                       "of them (they set the same task field)")
        task_args = (*task_args, (field, value))  # data_dir: stored absolute below
    for kind, pairs in (("task", task_args), ("curriculum", curriculum_args), ("cell", cell_args),
                        ("schedule", schedule_args)):
        key = f"{kind}_kwargs"
        # the file's kwargs belong to the file's task (its default when it names none)
        same = merged.get(kind, _field_default(kind)) == base.get(kind, _field_default(kind))
        kwargs = dict(base.get(key, {})) if same else {}
        kwargs.update(dict(pairs))
        if kwargs or key in merged:
            merged[key] = kwargs
    # paths are stored absolute: eval, resume and continual --resume read config.json from any directory
    for key, field in (("task_kwargs", "data_dir"), ("schedule_kwargs", "from_run")):
        value = merged.get(key, {}).get(field) if isinstance(merged.get(key), dict) else None
        if isinstance(value, str) and value.strip():
            merged[key] = {**merged[key], field: os.path.abspath(value)}
    if merged.get("backend") is None:
        merged["backend"] = default_backend()
    # the library names the field (cell_kwargs: ...); here the option that sets it
    in_file = f" (or {{}} in {config_file})" if config_file else ""
    options = {f"{kind}_kwargs": f"--{kind}-arg" + in_file.format(f"{kind}_kwargs")
               for kind in ("task", "curriculum", "cell", "schedule")}
    schedule_fields = _field_options({}, "schedule", merged.get("schedule", _field_default("schedule")),
                                     merged.get("schedule_kwargs", {}), in_file)
    sources = _source_names(given, base, config_file)
    _refuse_unused_momentum(merged.get("optimizer", _field_default("optimizer")),
                            merged.get("momentum", _field_default("momentum")), given, base, config_file, sources)
    with user_errors({**options, **sources, **schedule_fields}):
        cfg = TrainConfig.from_dict(merged)
        # the optimizer's own checks (and the schedule's), before the header line and the run directory
        train_module.build_optimizer(cfg)
    # a field's own check says "n: got -3, ...": name the option that set it
    with user_errors(_field_options(options, "task", cfg.task, cfg.task_kwargs, in_file)):
        task = tasks.make(cfg.task, seed=cfg.seed, **cfg.task_kwargs)
        # reading input_size loads a data set's files (cached for the run): a missing one is reported now
        input_size = task.input_size
    # the curriculum's own check names the problem (e.g. a task without N) before seqcore.train would
    # fail on it with an AttributeError; model_builder's checks name run fields (mode, target_accuracy) too
    curriculum_options = _field_options(options, "curriculum", cfg.curriculum, cfg.curriculum_kwargs, in_file)
    task_options = _field_options({}, "task", cfg.task, cfg.task_kwargs, in_file)
    with user_errors({**sources, **curriculum_options,
                      **_defaulted_n_options(cfg, task, task_options, curriculum_options)}):
        _, build = train_module.model_builder(cfg, task)
    # the first layer's real sizes: fields such as DiagGRU's heads must divide them
    with user_errors(_field_options(options, "cell", cfg.cell, cfg.cell_kwargs, in_file)):
        cells.make(cfg.cell, input_size, cfg.hidden, **cfg.cell_kwargs)
    with user_errors(sources):  # sizes no machine here could hold
        train_module.check_sizes(cfg, task, build)
    check_backend_loads(cfg.backend, "backend" in given, "backend" in base and config_file)
    return cfg, out


_FLAGS = {name: flag for flag, name, _, _ in _TRAIN_OPTIONS}



def _refuse_repeated_keys(flag: str, pairs) -> None:
    """A ``KEY=VALUE`` option that sets one key twice is refused, as a config file that does is:
    the later value would silently replace the earlier."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise click.ClickException(f"{flag}: key {key!r} given twice ({key}={json.dumps(seen[key])} and "
                                       f"{key}={json.dumps(value)}), expected each key once")
        seen[key] = value


def _refuse_unused_momentum(optimizer: str, momentum, given: set, base: dict, config_file: str | None,
                            sources: dict) -> None:
    """A momentum the user gave (command line or config file) to an optimizer that does not read it
    is an error, not a silent no-op. TrainConfig's own default, 0.9, is not the user's: every run's
    config.json records it, and such a file must work as --config again."""
    from_file = "momentum" in base and base["momentum"] != _field_default("momentum")
    if optimizer in MOMENTUM_OPTIMIZERS or not ("momentum" in given or from_file):
        return
    if optimizer not in OPTIMIZERS or not (is_finite_number(momentum) and 0 <= momentum < 1):
        return  # TrainConfig names what is wrong with either
    # before TrainConfig, whose own refusal cannot say where the optimizer came from
    where = (f"--optimizer {optimizer}" if "optimizer" in given
             else f"optimizer {optimizer!r} (in {config_file})" if "optimizer" in base
             else f"the default optimizer {optimizer!r}")
    raise click.ClickException(f"{sources['momentum']}: got {momentum} with {where}, which does not use "
                               f"momentum; expected --optimizer {' or '.join(MOMENTUM_OPTIMIZERS)}, or no momentum")


def _source_names(given: set, base: dict, config_file: str | None) -> dict:
    """``user_errors`` names for TrainConfig's fields: ``lr: got -1.0`` is shown as ``--lr: ...``
    when the value came from the command line (``given``), as ``lr (in run.toml): ...`` when it
    came from the config file (the library names the field; the user needs to know what to change)."""
    names = {}
    for name, flag in _FLAGS.items():
        names[name] = f"{name} (in {config_file})" if name in base and name not in given else flag
    names["max_norm"] = names["clip"]  # the clipping transformation's own name for it
    return names


def _field_options(options: dict, kind: str, name: str, kwargs: dict, in_file: str) -> dict:
    """``options`` plus ``user_errors`` names for the fields given to a task, curriculum or cell:
    ``n`` is shown as ``--task-arg n``, the component's own name (unknown fields) as
    ``--task-arg (nparity)``."""
    where = in_file.format(f"{kind}_kwargs")
    names = {**options, **{key: f"--{kind}-arg {key}{where}" for key in kwargs}}
    names.setdefault(name, f"--{kind}-arg ({name}){where}")
    return names


def _defaulted_n_options(cfg: TrainConfig, task, task_options: dict, curriculum_options: dict) -> dict:
    """``user_errors`` names for an N-curriculum's ``start_n`` and ``max_n`` left to their defaults,
    which come from the task's N (``max_n``: 30 past it, or past a larger ``start_n``): the library
    names the field, here the option the user set (``start_n: got 1 (the task's largest N)`` is shown
    as ``--task-arg n: ...``). Only options given are named; nothing when the task has no N."""
    given = cfg.curriculum_kwargs
    if not hasattr(task, "ns"):
        return {}
    n_option = task_options.get("n")  # None: the task's default N, which nobody set
    names = {}
    if "start_n" not in given and n_option:
        names["start_n"] = n_option
    if "max_n" not in given:
        start = given.get("start_n")
        source = curriculum_options["start_n"] if is_integer(start) and start >= max(task.ns) else n_option
        if source:
            names["max_n"] = f"max_n (by default 30 past {source})"
    return names


@main.command()
@_train_options
@click.option("--task-arg", "task_args", type=KeyValue(), multiple=True,
              help="A task field, e.g. n=4, n=[2,3] or dataset=mnist (repeatable; see `seqcore tasks NAME`).")
@click.option("--curriculum-arg", "curriculum_args", type=KeyValue(), multiple=True,
              help="A curriculum field, e.g. threshold=0.95 or max_n=12 (repeatable).")
@click.option("--cell-arg", "cell_args", type=KeyValue(), multiple=True,
              help="A cell field, e.g. tau_init=2.0 (repeatable; see `seqcore cells NAME`).")
@click.option("--schedule-arg", "schedule_args", type=KeyValue(), multiple=True,
              help="A schedule field, e.g. cycle_steps=500 for sgdr or from_run=runs/A for refined (repeatable).")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Directory of the IDX files of the image task (its field data_dir).")
@click.option("--dataset", type=click.Choice(list(DEFAULT_DATA_DIRS)),
              help="Data set of the image task (its field dataset) [default: fashion-mnist].")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="A JSON or TOML file of TrainConfig fields (and `out`); options given here override it.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Run directory [default: the config file's `out`, else runs/TASK-CURRICULUM-CELL].")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or per-evaluation lines.")
def train(task_args, curriculum_args, cell_args, schedule_args, data_dir, dataset, config_file, out, overwrite,
          quiet, **options) -> None:
    """Train a model and write a run directory (config, metrics, summary, checkpoint)."""
    cfg, file_out = build_config(config_file, options, task_args, curriculum_args, cell_args, data_dir, dataset,
                                 schedule_args)
    if out is not None and not out.strip():  # "" would silently fall back to the default directory
        raise click.ClickException(f"--out: got {out!r}, expected a directory path")
    if file_out is not None and (not isinstance(file_out, str) or not file_out.strip()):
        raise click.ClickException(f"out: got {file_out!r} in {config_file}, expected a directory path")
    out = out or file_out or os.path.join("runs", f"{cfg.task}-{cfg.curriculum}-{cfg.cell}")
    with user_errors():  # before the header line: an unusable --out prints nothing else
        rd = RunDir(out)
        rd.refuse_existing(overwrite, cfg.to_dict())
        rd.ensure_writable()
        with rd.lock(create=False):  # a run writing there now (--overwrite) is refused before the header
            pass
    if not quiet:
        click.echo(f"seqcore train: {cfg.task} ({cfg.curriculum} curriculum), {cfg.cell} x{cfg.layers} "
                   f"hidden {cfg.hidden}, {cfg.optimizer} lr {cfg.lr:g}, {cfg.steps} steps, "
                   f"{cfg.backend} backend -> {out}")
        note_blas_pin(cfg.backend)
    with user_errors(_FLAGS):  # sizes refused when the run is built: `--batch-size: got ...`
        summary, _ = train_run(cfg, out, quiet=quiet, log=None if quiet else click.echo, overwrite=overwrite)
    _finish(summary, out)


# -- resume ---------------------------------------------------------------------------------------

def _run_config(run_dir: str) -> TrainConfig:
    rd = RunDir(run_dir)
    if not rd.config.exists():
        raise click.ClickException(f"{run_dir}: not a run directory (no config.json); "
                                   "start one with `seqcore train --out DIR`")
    from seqcore.continual import is_continual_run
    if is_continual_run(run_dir):
        raise click.ClickException(f"{run_dir}: a continual run; continue it with `seqcore continual --resume "
                                   f"--out {run_dir}` and show it with `seqcore report {run_dir}`")
    with user_errors():
        return TrainConfig.read(rd.config)


def _checkpoint_step(run_dir: str) -> int:
    with user_errors():
        return checkpoint_meta(RunDir(run_dir).checkpoint)["step"]


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--steps", type=int, help="A new total step budget (default: the run's own).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or per-evaluation lines.")
def resume(run_dir: str, steps: int | None, quiet: bool) -> None:
    """Continue the run in RUN_DIR from its last checkpoint.

    With the same step budget, an interrupted run resumed ends with exactly the parameters
    of an uninterrupted run.
    """
    cfg = _run_config(run_dir)
    with user_errors():
        # previous: the status at the checkpoint; described: summary.json was written for it
        done, previous, described = current_status(run_dir)
    total = cfg.steps if steps is None else steps
    stopped = previous in EARLY_STOPS
    if steps is not None and steps > INT64_MAX:
        raise click.ClickException(f"--steps: got {steps}, expected an integer <= {INT64_MAX}")
    if steps is not None and steps <= done:
        raise click.ClickException(f"--steps: got {steps}, expected more than the {done} steps already done")
    jump = None  # (old, new) learning rate at the resume step, when the rebuilt schedule changes it
    if steps is not None:
        with user_errors():  # a new budget the config cannot take (warmup >= steps) is this option's fault
            try:
                longer = dataclasses.replace(cfg, steps=steps, target_accuracy=None if stopped else cfg.target_accuracy)
                if longer.schedule != "refined":  # its fields scaled to the new total (refined's need its norms)
                    old_lr, new_lr = build_schedule(cfg)(done), build_schedule(longer)(done)
                    jump = (old_lr, new_lr) if not math.isclose(old_lr, new_lr, rel_tol=1e-9) else None
            except (ValueError, TypeError) as exc:
                raise ValueError(f"--steps: got {steps}, which this run's config refuses ({exc})") from exc
    if described and done >= total:
        raise click.ClickException(f"{run_dir}: already trained for {done} of {total} steps; "
                                   f"pass --steps N (N > {done}) to train longer")
    if described and steps is None and stopped:
        raise click.ClickException(f"{run_dir}: the run already stopped ({previous}); "
                                   "pass --steps N to train it further anyway")
    with user_errors(), RunDir(run_dir).lock(create=False):  # in use by another run: one line, no header
        pass
    with user_errors(), saved_config_errors(RunDir(run_dir).config):
        # reading input_size loads a data set's files (cached for the run): a missing one, before the header
        tasks.make(cfg.task, seed=cfg.seed, **cfg.task_kwargs).input_size
    if not quiet:
        past = f"; continuing past its earlier stop ({previous})" if steps is not None and stopped else ""
        rebuild = steps is None and (done >= total or stopped)  # not described: killed before its summary
        what = (f"at step {done}: its summary was not written, rebuilding it from metrics.jsonl" if rebuild
                else f"from step {done} to {total}")
        click.echo(f"seqcore resume: {run_dir} {what} ({cfg.backend} backend{past})")
        note_blas_pin(cfg.backend)
    if jump is not None:  # a change of the run's course: said even with --quiet, on stderr
        click.echo(f"note: the {cfg.schedule} schedule is rebuilt over {steps} steps: the learning rate at "
                   f"step {done} goes from {jump[0]:.4g} to {jump[1]:.4g}", err=True)
    if not (steps is None and (done >= total or stopped)):  # training goes on (not only a summary rebuilt)
        with user_errors():
            note = blas_threads_note(checkpoint_meta(RunDir(run_dir).checkpoint))
        if note:  # about the result, so also with --quiet
            click.echo(note, err=True)
    with user_errors(), saved_config_errors(RunDir(run_dir).config):
        summary, _ = resume_run(run_dir, steps=steps, quiet=quiet, log=None if quiet else click.echo)
    _finish(summary, run_dir)


# -- summaries ------------------------------------------------------------------------------------

def _head_table(heads: dict) -> list[str]:
    lines = [f"{'head':<10} {'accuracy':>9} {'loss':>10}"]
    def number(v, width):  # null: a value logged while not finite
        return f"{'nan' if v is None else format(v, '.4f'):>{width}}"
    for name, r in heads.items():
        acc = number(r["accuracy"], 9) if "accuracy" in r else f"{'-':>9}"
        lines.append(f"{name:<10} {acc} {number(r['loss'], 10)}")
    return lines


def format_summary(summary: dict, run_dir: str, checkpoint_step: int | None = None) -> str:
    """The human-readable summary printed after ``train``/``resume``."""
    s = summary
    lines = [f"status          {s['status']}",
             f"steps           {s['steps']} in {s['wall_time_s']:.1f} s",
             f"final loss      {s['final_loss']:.4f} (last training batch)"]
    if s.get("level") is not None:
        # below the largest N only when the curriculum moves down (anti: it started there)
        now = f" (now at N={s['level']})" if s["level"] != s["max_level"] else ""
        lines.append(f"max N           {s['max_level']}{now}")
    if s.get("final_accuracy") is not None:
        lines.append(f"accuracy        {s['final_accuracy']:.4f} (mean over heads, last evaluation)")
    if s.get("heads"):
        lines += ["last evaluation " + ln if i == 0 else " " * 16 + ln for i, ln in enumerate(_head_table(s["heads"]))]
    if checkpoint_step is not None and checkpoint_step != s["steps"]:
        lines.append(f"checkpoint      step {checkpoint_step}")
    lines.append(f"run directory   {run_dir}")
    return "\n".join(lines)


def _finish(summary: dict, run_dir: str) -> None:
    status = summary["status"]
    ckpt = None if status in FINISHED else _checkpoint_step(run_dir)
    click.echo(format_summary(summary, run_dir, ckpt))
    if status == "diverged":
        raise click.ClickException(summary["message"])
    if status == "interrupted":
        click.echo(f"Interrupted at step {summary['steps']}; the checkpoint of step {ckpt} is kept: "
                   f"continue with `seqcore resume {run_dir}`", err=True)
        sys.exit(130)


# -- eval -----------------------------------------------------------------------------------------

def load_run(run_dir: str, backend: str | None = None) -> Run:
    """:func:`seqcore.train.load_run` with its errors as one-line CLI messages."""
    _run_config(run_dir)  # the friendlier message for a directory without config.json
    _checkpoint_step(run_dir)  # and without checkpoint.npz (the library's error names its argument, `out`)
    with user_errors(), saved_config_errors(RunDir(run_dir).config):
        return train_module.load_run(run_dir, backend)


def evaluate_run(run: Run, batches) -> dict:
    """Per-head ``{"loss", "accuracy"}`` of ``run``'s current heads on ``batches`` (NumPy
    ``Batch``es), averaged over sequences, computed on the run's backend."""
    with backends.use(run.cfg.backend):
        return run.evaluate(batches=batches)


def _counted(batches, sizes: list):
    """``batches`` as they come, with each batch's number of sequences appended to ``sizes``."""
    for batch in batches:
        sizes.append(batch[0].shape[0])
        yield batch


@main.command("eval")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--batches", "num_batches", type=click.IntRange(min=1),
              help="Evaluation batches [default: the run's eval_batches].")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Sequences per batch [default: the run's eval_batch_size].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the fresh batches (independent of the training and evaluation streams).")
@click.option("--run-eval-set", is_flag=True,
              help="Use the run's own fixed evaluation batches instead (reproduces its last evaluation).")
@click.option("--backend", type=click.Choice(backends.names()), help="Evaluate on another backend.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-head results as JSON.")
@click.pass_context
def eval_(ctx, run_dir, num_batches, batch_size, seed, run_eval_set, backend, as_json) -> None:
    """Evaluate the checkpoint in RUN_DIR on fresh batches of its current task and heads."""
    if backend is not None:  # named as the option that chose it, before the run is loaded
        check_backend_loads(backend, True)
    if run_eval_set and option_given(ctx, "seed"):
        raise click.ClickException(f"--seed: got {seed} with --run-eval-set, expected one of them (the run's "
                                   "evaluation batches are fixed)")
    run = load_run(run_dir, backend)
    cfg = run.cfg
    if run_eval_set:  # other sizes would score another set under the label "the run's evaluation set"
        for option, given, own, field in (("--batches", num_batches, cfg.eval_batches, "eval_batches"),
                                          ("--batch-size", batch_size, cfg.eval_batch_size, "eval_batch_size")):
            if given is not None and given != own:
                raise click.ClickException(f"{option}: got {given} with --run-eval-set, expected the run's "
                                           f"{field} ({own}) or no {option}: the run's evaluation set is fixed")
    num_batches = num_batches or cfg.eval_batches
    batch_size = batch_size or cfg.eval_batch_size
    task = run.curriculum.current_task()
    if isinstance(task, tasks.DatasetTask) and option_given(ctx, "seed"):
        raise click.ClickException(f"--seed: got {seed} for task {cfg.task!r}, which is evaluated on its data "
                                   "set's test split (no fresh batches to draw); leave --seed out")
    with user_errors({"batch_size": "--batch-size", "num_batches": "--batches"}):
        train_module.check_batch_fits("batch_size", batch_size, cfg, task)
        # the option names: the message names the second one inside, where user_errors cannot reach it
        train_module.check_eval_count(num_batches, batch_size, task, ("--batches", "--batch-size"))
        if run_eval_set or isinstance(task, tasks.DatasetTask):
            source = "the run's evaluation set" if run_eval_set else "the test split"
            batches = task.eval_batches(batch_size, num_batches)
        else:
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
            source = f"fresh batches, seed {seed}"
            # drawn one at a time as they are scored: --batches × --batch-size need not fit in memory at once
            batches = (task.sample(rng, batch_size) for _ in range(num_batches))
        sizes = []
        results = evaluate_run(run, _counted(batches, sizes))
    step = run.trainer.step_count
    if as_json:
        click.echo(json.dumps({"step": step, "level": run.curriculum.level, "heads": results}, indent=2))
        return
    n_seq = sum(sizes)
    level = f", N {run.curriculum.level}" if run.curriculum.level is not None else ""
    click.echo(f"{run_dir}: step {step}{level}; {n_seq} sequences ({source}), {cfg.backend} backend")
    for line in _head_table(results):
        click.echo(line)
    accs = [r["accuracy"] for r in results.values() if "accuracy" in r]
    if accs:
        click.echo(f"{'mean':<10} {np.mean(accs):>9.4f}")


# continual-learning commands live in their own module when it is present
register_optional(main, f"{__package__ or 'seqcore_cli'}.continual", ("continual", "report"))
register_optional(main, f"{__package__ or 'seqcore_cli'}.bench", ("bench",))

if __name__ == "__main__":
    main()
