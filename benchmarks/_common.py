"""Helpers shared by the benchmark scripts: argument types, child processes, Ctrl-C.

Not a benchmark itself.  It imports nothing heavy (no NumPy): ``rnn_vs_torch.py`` and
``sequence_products.py`` parse their arguments with it and only then set the thread counts,
which must happen before NumPy loads.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys

__all__ = ["positive_int", "shape_triple", "require_backend", "chosen_backends", "run_child", "run_script"]


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts and sizes: an integer >= 1, else argparse's one-line usage
    error (``argument --repeats: got 0, expected an integer >= 1``, exit status 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {value}, expected an integer >= 1")
    return value


def shape_triple(text: str) -> tuple[int, int, int]:
    """argparse ``type=`` for a ``B,T,H`` triple of positive integers (``--shapes 16,128,64``)."""
    parts = text.split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected B,T,H (three positive integers)")
    return values


def require_backend(name: str):
    """The seqcore backend ``name``; when it cannot load here (an optional extra not installed),
    the script exits with one line naming the pip extra instead of a traceback.  Call it after
    parsing the arguments, so that ``--help`` and argument errors work without the extra."""
    from seqcore import backends
    try:
        return backends.get(name)
    except backends.BackendUnavailable as exc:
        raise SystemExit(f"error: this benchmark needs the {name} backend: {exc}") from None


def chosen_backends(ap: argparse.ArgumentParser, requested: list[str] | None) -> list[str]:
    """The backends to measure: every backend that loads here when ``requested`` (``--backends``)
    is None; else ``requested`` without repeats, each of which must load (``ap.error`` otherwise:
    a backend asked for by name is not skipped quietly)."""
    from seqcore import backends
    if requested is None:
        return backends.available()
    names = list(dict.fromkeys(requested))
    for name in names:
        try:
            backends.get(name)
        except backends.BackendUnavailable as exc:
            ap.error(f"--backends: {exc}")
    return names


def run_child(cmd: list[str], env: dict, what: str) -> dict:
    """Run a measuring child process and return the JSON object on the last line of its stdout.

    When the child fails, the end of its stderr (where its error is) goes to stderr and the
    script exits with one line naming ``what``, rather than with a ``CalledProcessError``
    traceback quoting the child's source.  A child stopped by Ctrl-C raises KeyboardInterrupt
    here too (see :func:`run_script`).
    """
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    err = out.stderr.strip().splitlines()
    if out.returncode == -signal.SIGINT or (out.returncode != 0 and err and err[-1] == "KeyboardInterrupt"):
        raise KeyboardInterrupt
    if out.returncode != 0:
        if err:
            print("\n".join(err[-10:]), file=sys.stderr)
        reason = err[-1] if err else f"exit status {out.returncode}, no error message"
        raise SystemExit(f"error: child ({what}) failed: {reason}")
    lines = out.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"error: child ({what}) printed no result line "
                         f"(stdout: {out.stdout.strip()[-200:]!r})") from None


def run_script(main) -> None:
    """Run a script's ``main()``; Ctrl-C ends it with one line and exit status 130 (as
    ``seqcore bench`` does), not with a traceback from wherever the timing loop was."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
