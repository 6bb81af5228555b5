"""Shared pieces of the command line: one-line errors, ``KEY=VALUE`` options, config files.

Every failure the user can cause (a bad option, a bad config file, an unknown task, a
backend that does not load) ends as one ``Error: ...`` line on stderr and a non-zero exit
status; ``seqcore --traceback ...`` shows the full traceback instead.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import click

from seqcore.backends import BackendUnavailable
from seqcore.train import TrainConfig, TrainingDiverged, request_interrupt

__all__ = ["one_line", "user_errors", "saved_config_errors", "SeqcoreGroup", "KeyValue", "OptionalFloat", "NONE",
           "load_config_file", "check_config_types", "register_optional", "BROKEN_PIPE_STATUS"]

# the errors the library raises for bad input (DatasetError is a ValueError and a FileNotFoundError)
LIBRARY_ERRORS = (ValueError, TypeError, OverflowError, OSError, BackendUnavailable, TrainingDiverged)


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (its type name when the message is empty)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _want_traceback() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("traceback"))


def note_blas_pin(backend: str) -> None:
    """On stderr, :func:`seqcore.backends.blas.pin_note` when it applies to ``backend``'s products."""
    if backend == "cupy":  # GPU products: no OpenBLAS involved
        return
    from seqcore.backends import blas
    note = blas.pin_note()
    if note:
        click.echo(note, err=True)


@contextlib.contextmanager
def user_errors(options: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn library errors raised inside the block into ``click.ClickException`` (one line).

    ``options`` maps library argument names to the command-line options that set them: a
    message starting ``name: ...`` (the library's convention) is shown as ``option: ...``; an
    element of one, ``name[0]: ...``, as ``option`` with the index after the option's name.
    """
    try:
        yield
    except (click.ClickException, BrokenPipeError):  # a closed stdout is handled by SeqcoreGroup
        raise
    except LIBRARY_ERRORS as exc:
        if _want_traceback():
            raise
        text = one_line(exc)
        name, sep, rest = text.partition(": ")
        base, bracket, index = name.partition("[")
        if sep and options and name in options:
            text = f"{options[name]}: {rest}"
        elif sep and options and bracket and base in options:
            # "--schedule-arg boundaries (or schedule_kwargs in run.toml)": the index goes after the name
            option, paren, source = options[base].partition(" (")
            text = f"{option}{bracket}{index}{paren}{source}: {rest}"
        raise click.ClickException(text) from exc
    except MemoryError as exc:  # sizes too large for this machine (--hidden 10**8): say so, without a traceback
        if _want_traceback():
            raise
        raise click.ClickException(f"out of memory ({one_line(exc)}); expected sizes that fit in this machine's "
                                   "memory: lower the sizes given (--hidden, --batch-size, a length or a memory size)"
                                   ) from exc


def option_given(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` was given (on the command line or through its environment
    variable), not left at its default."""
    return ctx.get_parameter_source(name) in (click.core.ParameterSource.COMMANDLINE,
                                              click.core.ParameterSource.ENVIRONMENT)


@contextlib.contextmanager
def saved_config_errors(config_path) -> Iterator[None]:
    """Data files missing or damaged while a run is rebuilt from its saved ``config.json``
    (``eval``, ``resume``, ``continual --resume``): the data directory comes from that file, and
    these commands have no ``--data-dir``, so the message says so instead of advising the option."""
    from seqcore.tasks.idx import DatasetError
    try:
        yield
    except DatasetError as exc:
        if _want_traceback():
            raise
        text = one_line(exc)
        where = (f"the data_dir that this run's {config_path} names (the data set's default directory when it "
                 "names none): put the files there, or edit data_dir in that file")
        advice = " as data_dir (--data-dir)"  # the end of seqcore.tasks.idx.HOW_TO_GET
        if text.endswith(advice):
            text = f"{text[: -len(advice)]} as {where}"
        else:
            text = f"{text} (the data directory is {where})"
        raise click.ClickException(text) from exc


def check_backend_loads(name: str, from_option: bool, config_file=None) -> None:
    """A backend that cannot load here is refused before anything is written, naming where the
    choice came from (``--backend``, the config file, or ``$SEQCORE_BACKEND``)."""
    from seqcore import backends
    try:
        backends.get(name)
    except backends.BackendUnavailable as exc:
        source = ("--backend" if from_option else f"backend (in {config_file})" if config_file
                  else "$SEQCORE_BACKEND" if os.environ.get("SEQCORE_BACKEND", "").strip() else "backend")
        raise click.ClickException(f"{source}: {one_line(exc)}") from exc


# the exit status of a program killed by SIGPIPE (128 + 13), as `yes | head -1` leaves it
BROKEN_PIPE_STATUS = 141


@contextlib.contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    # `seqcore report DIR | head -1`: the reader is gone, so there is no one to tell; stop
    # quietly, like a program killed by SIGPIPE, instead of printing "Error: [Errno 32] ..."
    try:
        yield
    except BrokenPipeError:
        try:  # the interpreter flushes stdout at exit: send what is left to /dev/null
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass  # not a real file (click's test runner): nothing is flushed at exit
        sys.exit(BROKEN_PIPE_STATUS)


@contextlib.contextmanager
def _one_line_usage() -> Iterator[None]:
    # click prints usage + hint + error on three lines; keep the hint, on the error line
    try:
        yield
    except click.UsageError as exc:
        if exc.ctx is not None:
            exc.message = f"{one_line(exc)} (see '{exc.ctx.command_path} --help')"
            exc.ctx = None
        raise


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    # `kill PID` or a job scheduler's stop ends a run like Ctrl-C: the last checkpoint is kept,
    # summary.json says "interrupted" and `seqcore resume` goes on from there (exit status 130)
    if threading.current_thread() is not threading.main_thread():  # handlers belong to the main thread
        yield
        return

    def interrupt(signum, frame):
        # the flag too: a KeyboardInterrupt raised inside a finaliser is printed and dropped by Python,
        # and the training loop would go on to "completed"; it checks the flag before each step
        request_interrupt()
        raise KeyboardInterrupt

    # Ctrl-C as well, unless SIGINT is ignored (a background job) or handled by someone else
    signals = [signal.SIGTERM] + [signal.SIGINT] * (signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    request_interrupt(False)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        request_interrupt(False)


class Interrupted(click.ClickException):
    """Ctrl-C or SIGTERM outside a training loop (which records its own "interrupted" status)."""

    exit_code = 130

    def __init__(self):
        super().__init__("interrupted")


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a KeyboardInterrupt or was raised by one (an import interrupted half-way
    comes out as a RuntimeError whose context is the interrupt)."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class SeqcoreGroup(click.Group):
    """A click group whose usage errors are printed as one ``Error:`` line, and whose commands,
    interrupted outside a training loop (building a run, loading data, writing its files), end
    with ``Error: interrupted`` and exit status 130 (click's own would be "Aborted!" and 1)."""

    def make_context(self, *args, **kwargs):
        with _quiet_broken_pipe(), _one_line_usage():  # `seqcore --help | head -1`
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _quiet_broken_pipe(), _one_line_usage(), _sigterm_as_interrupt():
            try:
                return super().invoke(ctx)
            except (SystemExit, click.exceptions.Exit, click.ClickException):
                raise  # a command's own exit, even one it chose while handling an interrupt
            except BaseException as exc:
                if _caused_by_interrupt(exc):
                    raise Interrupted() from None
                raise


class KeyValue(click.ParamType):
    """``KEY=VALUE`` → ``(key, value)``; the value is parsed as JSON when it is valid JSON
    (``n=3`` → 3, ``n=[2,3]`` → [2, 3], ``x=true`` → True), else kept as a string."""

    name = "KEY=VALUE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        key, sep, raw = str(value).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            self.fail(f"got {value!r}, expected KEY=VALUE with KEY a field name (e.g. n=4 or n=[2,3])",
                      param, ctx)
        try:
            parsed: Any = json.loads(raw)
        except json.JSONDecodeError:
            parsed = raw
        if isinstance(parsed, float) and not math.isfinite(parsed):
            parsed = raw  # json accepts NaN/Infinity; a field value never wants them
        return key, parsed


class _NoneType:
    def __repr__(self) -> str:
        return "NONE"


NONE = _NoneType()  # "--clip none": the option was given and means None (unlike "not given")
# the words that mean None: on the command line (--clip none) and in config files, since TOML
# has no null (clip = "none")
NONE_WORDS = ("none", "off", "null")
OR_NONE = ' or null ("none" in TOML)'


class OptionalFloat(click.ParamType):
    """A float, or ``none``/``off`` for None (returned as the marker :data:`NONE`)."""

    name = "FLOAT|none"

    def convert(self, value, param, ctx):
        if value is NONE or isinstance(value, float):
            return value
        if str(value).strip().lower() in NONE_WORDS:
            return NONE
        try:
            return float(value)
        except ValueError:
            self.fail(f"got {value!r}, expected a number or 'none'", param, ctx)


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as exc:
            raise click.ClickException(f"{path}: reading TOML needs Python >= 3.11 or the package tomli "
                                       "(pip install 'seqcore[cli]'); or write the config as JSON") from exc
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise click.ClickException(f"{path}: not valid TOML ({one_line(exc)})") from exc


def load_config_file(path: str | Path) -> dict:
    """Read a run configuration from a ``.json`` or ``.toml`` file.

    Top-level keys are :class:`seqcore.train.TrainConfig` fields (``-`` may stand for ``_``)
    plus an optional ``out``; ``task_kwargs``, ``curriculum_kwargs`` and ``cell_kwargs`` are
    tables/objects. Other suffixes are tried as JSON, then as TOML.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{path}: cannot read the config file ({one_line(exc)})") from exc
    suffix = path.suffix.lower()
    if suffix == ".toml":
        data = _read_toml(path)
    else:
        try:
            data = json.loads(text, object_pairs_hook=_refuse_duplicates)
        except _DuplicateKey as exc:
            raise click.ClickException(f"{path}: key {exc.args[0]!r} given twice, expected each key once") from None
        except json.JSONDecodeError as exc:
            if suffix == ".json":
                raise click.ClickException(f"{path}: not valid JSON ({one_line(exc)})") from exc
            try:
                data = _read_toml(path)
            except click.ClickException:
                raise click.ClickException(f"{path}: neither valid JSON nor valid TOML "
                                           "(name it .json or .toml to see the parse error)") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{path}: got a {type(data).__name__} at the top level, "
                                   "expected an object/table of TrainConfig fields")
    spelled: dict[str, str] = {}
    for key in data:  # "batch-size" and "batch_size" are one field: the file must not set it twice
        field = str(key).replace("-", "_")
        if field in spelled:
            raise click.ClickException(f"{path}: keys {spelled[field]!r} and {key!r} both set {field}, "
                                       "expected each field once")
        spelled[field] = key
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    known = {f.name for f in dataclasses.fields(TrainConfig)} | {"out"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise click.ClickException(f"{path}: unknown keys {unknown}; expected keys among {sorted(known)}")
    check_config_types(data, str(path))
    return data


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicates(pairs: list) -> dict:
    # json keeps the last of two equal keys silently; a config file that sets a field twice is a mistake
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


_TYPE_CHECKS = {  # annotation of a TrainConfig field -> (test, what is expected)
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "dict": (lambda v: isinstance(v, dict), "an object/table"),
}


def check_config_types(data: dict, source: str) -> None:
    """Check the JSON/TOML types of ``data``'s TrainConfig fields; ClickException naming ``source``.
    An optional field given as the string "none" (or "null") becomes None, in place."""
    annotations = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    annotations["out"] = "str"
    for key, value in list(data.items()):
        ann = annotations.get(key, "")
        optional = ann.endswith("| None")
        base = ann.split("|")[0].strip()
        if optional and isinstance(value, str) and value.strip().lower() in NONE_WORDS:
            data[key] = value = None
        if base not in _TYPE_CHECKS or (optional and value is None):
            continue
        test, expected = _TYPE_CHECKS[base]
        if not test(value):
            raise click.ClickException(f"{source}: {key}: got {value!r} ({type(value).__name__}), expected "
                                       f"{expected}{OR_NONE if optional else ''}")


def register_optional(group: click.Group, module: str, commands: tuple[str, ...]) -> None:
    """Add the commands of an optional module (``module.register(group)``) to ``group``.

    A module that does not exist adds nothing. A module that exists but fails to import
    (a missing dependency, a bug) must not break the other commands, and must not vanish
    silently either: each of ``commands`` is then a stub that fails with the import error
    (``seqcore --traceback <command>`` re-raises it).
    """
    try:
        mod = importlib.import_module(module)
        mod.register(group)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return
        _add_broken(group, module, commands, exc)
    except Exception as exc:  # noqa: BLE001 - shown to the user when the command is used
        _add_broken(group, module, commands, exc)


def _add_broken(group: click.Group, module: str, commands: tuple[str, ...], error: Exception) -> None:
    reason = f"{type(error).__name__}: {one_line(error)}"
    for name in commands:
        if name not in group.commands:
            group.add_command(_broken_command(name, module, reason, error))


def _broken_command(name: str, module: str, reason: str, error: Exception) -> click.Command:
    @click.command(name, help=f"(unavailable: {module} failed to load: {reason})",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def broken():
        if _want_traceback():
            raise error
        raise click.ClickException(f"`{name}` is unavailable: {module} failed to load ({reason})")

    return broken
