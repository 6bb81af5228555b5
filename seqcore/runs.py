"""Run directories: ``config.json``, ``metrics.jsonl``, ``summary.json``, ``checkpoint.npz``.

Every file is written atomically (a temporary file in the same directory, then
``os.replace``), so an interrupted run leaves either the old or the new version and
``seqcore resume`` loses at most the work since the last checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .backends import numpy_dtype
from .tree import tree_paths
from .validate import check_positive_int

__all__ = ["JsonConfig", "RunDir", "atomic_write", "write_json", "read_json", "read_json_object", "save_checkpoint",
           "load_checkpoint", "restoring", "params_to_arrays", "params_from_arrays", "blas_threads",
           "blas_threads_note"]


class JsonConfig:
    """Mixin for the frozen dataclass configurations saved as a run's ``config.json``."""

    def to_dict(self) -> dict:
        import dataclasses
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        import dataclasses
        if not isinstance(d, dict):  # a list's items would be reported as "unknown keys"
            raise ValueError(f"config: got a {type(d).__name__}, expected an object of {cls.__name__} fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config: unknown keys {unknown}; expected keys among {sorted(known)}")
        return cls(**d)

    @classmethod
    def read(cls, path):
        """The configuration saved in ``path`` (a run's ``config.json``); a ValueError naming the
        file when it is not one (``hidden: got 'x', ...`` alone would not say where to look)."""
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename."""
    given, path = path, Path(path)
    if path.name in ("", ".", "..") or path.is_dir():  # the rename onto a directory fails with a raw OSError
        raise ValueError(f"path: got {os.fspath(given)!r}, which names a directory, expected a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o644 & ~umask)  # mkstemp creates 0600; run files are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def _strict(obj):
    """``obj`` with every NaN or infinite float as ``None``: strict JSON (``jq``, ``JSON.parse``)
    has no NaN, and Python's writer would emit it."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        return _strict(obj.tolist())
    return obj


def to_json(obj, **kwargs) -> str:
    """Strict JSON text of a run file's value: NumPy scalars and arrays as numbers and lists,
    a non-finite float (a loss not measured yet, a diverged one) as ``null``."""
    return json.dumps(_strict(obj), default=_json_default, allow_nan=False, **kwargs)


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (a temporary file, then a rename)."""
    atomic_write(path, (to_json(obj, indent=2) + "\n").encode())


def read_json(path) -> Any:
    """The JSON value in ``path``; FileNotFoundError when missing, ValueError naming the file when
    it cannot be read or parsed. Run files (config, summary) must be objects: see :func:`read_json_object`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:  # a directory in the way, no permission, binary junk
        raise ValueError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from exc


def read_json_object(path) -> dict:
    """:func:`read_json` of a file that must hold a JSON object (``config.json``, ``summary.json``)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: got a JSON {type(data).__name__}, expected an object")
    return data


def params_to_arrays(params, prefix: str = "params/", to_numpy=np.asarray) -> dict[str, np.ndarray]:
    """Flatten a parameter tree to ``{"params/<path>": array}``; two leaves with one path are refused."""
    from .tree import checkpoint_paths
    return {prefix + p: to_numpy(v) for p, _, v in checkpoint_paths("params", params)}


def params_from_arrays(template, arrays, prefix: str = "params/", asarray=np.asarray):
    """Rebuild a tree shaped like ``template`` from :func:`params_to_arrays` output."""
    from .tree import tree_flatten, tree_unflatten
    leaves, treedef = tree_flatten(template)
    paths = [p for p, _ in tree_paths(template)]
    out = []
    for path, leaf in zip(paths, leaves):
        key = prefix + path
        if key not in arrays:
            raise ValueError(f"checkpoint: missing {key!r}; it does not match this model")
        a = np.asarray(arrays[key])
        if a.shape != tuple(leaf.shape):
            raise ValueError(f"checkpoint: {key!r} has shape {a.shape}, expected {tuple(leaf.shape)}")
        if a.dtype != numpy_dtype(leaf):  # the run's dtype (config.json) and the checkpoint's differ
            raise ValueError(f"checkpoint: {key!r} has dtype {a.dtype}, expected {numpy_dtype(leaf)}")
        out.append(asarray(a))
    return tree_unflatten(treedef, out)


def blas_threads() -> int | None:
    """NumPy's OpenBLAS thread count (:func:`seqcore.backends.blas.numpy_blas_threads`), which every
    checkpoint records: a product's rounding depends on it."""
    from .backends.blas import numpy_blas_threads
    return numpy_blas_threads()


def blas_threads_note(meta: dict) -> str | None:
    """One ``note:`` line when the checkpoint ``meta`` (of :func:`load_checkpoint`) records another
    BLAS thread count than this process runs (:func:`blas_threads`), naming both and how to match
    the checkpoint's; None when they agree or either is unknown (a checkpoint older than the record)."""
    if not isinstance(meta, dict):
        raise TypeError(f"meta: got {type(meta).__name__}, expected a checkpoint's meta dict")
    saved, now = meta.get("blas_threads"), blas_threads()
    if isinstance(saved, bool) or not isinstance(saved, int) or saved < 1 or now is None or saved == now:
        return None
    return (f"note: the checkpoint was written with {saved} BLAS thread{'s' * (saved != 1)}, this process runs "
            f"{now}: the resumed run will not be bit-identical to an uninterrupted one; to match, start it "
            f"with OPENBLAS_NUM_THREADS={saved} in the environment")


def save_checkpoint(path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Atomically write ``arrays`` and a JSON ``meta`` dict into one ``.npz`` file; ``meta`` gains
    ``blas_threads`` (:func:`blas_threads`) unless it holds one."""
    import io
    if not isinstance(meta, dict):  # load_checkpoint refuses anything else
        raise TypeError(f"meta: got {type(meta).__name__}, expected a dict (the checkpoint's JSON object)")
    check_positive_int("meta['step']", meta.get("step"), minimum=0)  # as load_checkpoint requires
    buf = io.BytesIO()
    payload = dict(arrays)
    meta = {"blas_threads": blas_threads(), **meta}
    payload["__meta__"] = np.frombuffer(json.dumps(meta, default=_json_default).encode(), dtype=np.uint8)
    np.savez(buf, **payload)
    atomic_write(path, buf.getvalue())


def first_nonfinite(arrays: dict, prefixes: tuple = ("",)) -> str | None:
    """The first key under ``prefixes`` whose float array holds NaN or Inf, else None."""
    return next((k for k, v in arrays.items() if k.startswith(prefixes) and v.dtype.kind == "f"
                 and not np.isfinite(v).all()), None)


def check_finite_params(path, arrays: dict) -> None:
    """Checkpoints only ever hold finite parameters and optimizer state: anything else is a
    damaged file, and training on from it would only report "diverged" at once."""
    bad = first_nonfinite(arrays, ("params/", "opt_state/"))
    if bad is not None:
        raise ValueError(f"{path}: {bad!r} holds NaN or Inf, expected the finite parameters and optimizer "
                         "state a checkpoint is written with (the file is damaged)")


def load_checkpoint(path, keys=None) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` of a checkpoint; ``keys`` (names): read only those arrays (the others stay
    on disk). A name in ``keys`` that the file does not hold is left out of ``arrays``: callers ask
    for optional records (``"R" in arrays``) and check the ones they need."""
    if keys is not None:  # checked here: a TypeError inside the read would be blamed on the file
        if isinstance(keys, (str, bytes)) or not hasattr(keys, "__iter__"):
            raise TypeError(f"keys: got {type(keys).__name__} {keys!r:.60}, expected None or a collection of "
                            "array names (str)")
        keys = frozenset(keys)
        bad = next((k for k in keys if not isinstance(k, str)), None)
        if bad is not None:
            raise TypeError(f"keys: got {type(bad).__name__} {bad!r:.40} among the names, expected array names (str)")
    return _read_checkpoint(path, keys)


def checkpoint_meta(path) -> dict:
    """The ``__meta__`` record of a checkpoint (its step, ...), checked as :func:`load_checkpoint`
    checks it, without reading the arrays."""
    return _read_checkpoint(path, ())[1]


# what np.load and reading the arrays raise for a damaged file (found by flipping each byte of
# checkpoints): a truncated or non-zip file, bad CRCs and headers, an unsupported or encrypted member
_DAMAGED = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError,
            tokenize.TokenError)


def _read_checkpoint(path, keys) -> tuple[dict[str, np.ndarray], dict]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint (was the run started with this directory as --out?)")
    try:
        with np.load(path, allow_pickle=False) as z:  # an npz file reads each array when asked for it
            arrays = {k: z[k] for k in z.files if keys is None or k == "__meta__" or k in keys}
    except _DAMAGED as exc:
        raise ValueError(f"{path}: unreadable checkpoint ({exc})") from exc
    if "__meta__" not in arrays:
        raise ValueError(f"{path}: unreadable checkpoint (no __meta__ record; expected a file written by a "
                         "seqcore run)")
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable checkpoint (its __meta__ record is not JSON: {exc})") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: unreadable checkpoint (__meta__: got a JSON {type(meta).__name__}, "
                         "expected an object)")
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{path}: unreadable checkpoint (__meta__ step: got {step!r}, expected an integer >= 0)")
    return arrays, meta


@contextlib.contextmanager
def restoring(path) -> Iterator[None]:
    """Around restoring a run from the checkpoint ``path``: a record missing from it, or one that
    does not fit the run's config.json, is a ValueError naming the file (not a bare KeyError)."""
    try:
        yield
    except KeyError as exc:
        raise ValueError(f"{path}: no {exc.args[0]!r} record; expected a checkpoint of this run") from exc
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: cannot be restored ({exc}); expected a checkpoint written by the run of "
                         "this config.json") from exc


# keys every continual config.json has held since the first version, and a training run's never has
CONTINUAL_KEYS = ("stream", "experiences", "learner", "learner_kwargs")


REPORT_PLOT = "accuracy.png"  # where `seqcore report` puts its plot by default, beside the run's files


def _pid_in(handle) -> str:
    """The process id a lock holder wrote in the lock file ``handle`` ('' when it has not yet)."""
    handle.seek(0)
    text = handle.read().strip()
    return text if text.isdigit() else ""


class RunDir:
    """The files of one run."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.summary = self.path / "summary.json"
        self.checkpoint = self.path / "checkpoint.npz"

    def refuse_existing(self, overwrite: bool = False, config: dict | None = None) -> None:
        """Raise ValueError if a run is here and ``overwrite`` is false; the message names the
        command that continues it (``seqcore continual --resume --out DIR`` for a continual run,
        else ``seqcore resume DIR``).

        A run is a checkpoint, or run files (config, metrics, summary) without one: a run killed
        before its first checkpoint, or files that are not a run's (a config file kept here).
        Only a ``config.json`` equal to ``config`` (the same command run again) may be replaced
        then without ``overwrite``: anything else would be lost.
        """
        if overwrite:
            return
        if self.checkpoint.exists() and not self.checkpoint.is_file():
            raise ValueError(f"out: {self.checkpoint} is not a file, expected the run's checkpoint or nothing; "
                             "remove it or choose another --out")
        if self.checkpoint.exists():
            resume = (f"seqcore continual --resume --out {self.path}" if self.holds_continual_run()
                      else f"seqcore resume {self.path}")
            raise ValueError(f"out: {self.path} already holds a run; continue it with `{resume}`, "
                             "replace it with --overwrite (overwrite=True in Python), or choose another --out")
        present = [f.name for f in (self.config, self.metrics, self.summary) if f.exists()]
        if present and not (present == [self.config.name] and self._holds_config(config)):
            raise ValueError(f"out: {self.path} holds {', '.join(present)} but no checkpoint.npz (a run stopped "
                             "before its first checkpoint, or files of something else); replace them with "
                             "--overwrite (overwrite=True in Python), or choose another --out")

    def _holds_config(self, config: dict | None) -> bool:
        """Whether ``config.json`` here is ``config``, as :meth:`create` would write it."""
        if config is None:
            return False
        try:
            return read_json(self.config) == json.loads(to_json(config))
        except (OSError, ValueError):  # unreadable or not JSON: not this run's
            return False

    def holds_continual_run(self) -> bool:
        """Whether the ``config.json`` here is a continual run's: it holds the continual-only keys
        ``CONTINUAL_KEYS`` (False when there is no readable ``config.json`` object)."""
        try:
            config = read_json(self.config)
        except (OSError, ValueError):  # missing, unreadable or not JSON
            return False
        return isinstance(config, dict) and all(key in config for key in CONTINUAL_KEYS)

    def create(self, config: dict, overwrite: bool = False) -> None:
        """Start a run here with ``config``.  An overwritten run's files go first, its checkpoint
        before anything else: a new ``config.json`` beside the old checkpoint would be a
        resumable mix of two runs, if the process died before the new run's first checkpoint."""
        self.refuse_existing(overwrite, config)
        with self._writable():
            self.path.mkdir(parents=True, exist_ok=True)
            # the report's default plot too: it would show the old run's curves beside the new run
            for old in (self.checkpoint, self.summary, self.metrics, self.path / REPORT_PLOT):
                if old.exists():
                    old.unlink()
            write_json(self.config, config)

    @contextlib.contextmanager
    def lock(self, create: bool = True) -> Iterator[None]:
        """Hold this directory for the calling process while a run writes it (``create``: make
        the directory first; without it a missing directory is left to the caller to report).

        A second process that tries to train, resume or continue a run here meanwhile gets a
        ``ValueError`` (two writers would interleave ``metrics.jsonl`` and overwrite each other's
        checkpoints). The lock is an ``flock`` on ``DIR/.lock``, which the OS drops when the
        process ends, so a killed run leaves no stale lock. Where ``fcntl`` is missing (Windows)
        runs are not guarded."""
        try:
            import fcntl
        except ImportError:
            yield
            return
        if not create and not self.path.is_dir():
            yield
            return
        with self._writable():
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / ".lock", "a+")
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _pid_in(handle)
                raise ValueError(f"out: {self.path} is in use by another seqcore process"
                                 f"{f' (pid {holder})' if holder else ''}; wait for it to finish"
                                 f"{', or choose another --out' if create else ''}") from None
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            self._remove_stale_temporaries()
            yield
        finally:
            handle.close()

    def holder(self) -> str | None:
        """Whether a process holds :meth:`lock` here (a run training, resuming): None when none does
        (or where ``fcntl`` is missing), else its pid as it wrote it in ``.lock`` ('' in the instant
        before it has). Only looks: no file or directory is created."""
        try:
            import fcntl
            handle = open(self.path / ".lock")
        except (ImportError, OSError):  # no lock file: no run ever held one here
            return None
        with handle:
            try:  # a shared lock, given up at once: it conflicts only with a writer's
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return _pid_in(handle)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return None

    def _remove_stale_temporaries(self) -> None:
        """Remove what :func:`atomic_write` left of writes killed mid-way (``.NAME.XXXX.tmp``, as
        large as a checkpoint); only the lock's holder writes here, so none is in progress."""
        for name in (self.config, self.metrics, self.summary, self.checkpoint):
            for tmp in self.path.glob(f".{name.name}.*.tmp"):
                try:
                    tmp.unlink()
                except OSError:  # gone already, or not ours to remove: harmless either way
                    pass

    def ensure_writable(self) -> None:
        """Create the directory now (a command checks ``--out`` before it prints or trains anything)."""
        with self._writable():
            self.path.mkdir(parents=True, exist_ok=True)
            if not os.access(self.path, os.W_OK):
                raise PermissionError(13, "Permission denied", str(self.path))

    @contextlib.contextmanager
    def _writable(self):
        try:
            yield
        except OSError as exc:  # a file in the way, no permission, a read-only or virtual file system
            raise ValueError(f"out: got {str(self.path)!r}, where no run directory can be written "
                             f"({exc.strerror or exc}); expected a path where a directory can be created "
                             "and written (--out)") from exc

    def log(self, record: dict) -> None:
        """Append one JSON line to ``metrics.jsonl`` and flush it to disk."""
        with open(self.metrics, "a") as f:
            f.write(to_json(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, last_step: int) -> None:
        """Drop log lines written after ``last_step`` (work lost by an interrupted run)."""
        if not self.metrics.exists():
            return
        # a run killed while appending leaves a partial last line: work after the checkpoint, dropped
        records = self._records(drop_partial_tail=True)
        for i, (_, r) in enumerate(records, 1):
            step = r.get("step", 0)
            if isinstance(step, bool) or not isinstance(step, int):
                raise ValueError(f"{self.metrics}: record {i}: \"step\": got {step!r:.40}, expected an int "
                                 "(the file is damaged)")
        keep = [ln for ln, r in records if r.get("step", 0) <= last_step]
        atomic_write(self.metrics, ("\n".join(keep) + "\n").encode() if keep else b"")

    def read_metrics(self, skip_partial_tail: bool = False, on_skip=None) -> list[dict]:
        """The records of ``metrics.jsonl`` (a ValueError naming the file and line for a bad one).

        ``skip_partial_tail``: a last line that is not valid JSON (a run killed while appending
        leaves one) is left out instead, and ``on_skip()``, when given, is called."""
        if not self.metrics.exists():
            return []
        return [r for _, r in self._records(skip_partial_tail, on_skip)]

    def _records(self, drop_partial_tail: bool = False, on_drop=None) -> list[tuple[str, dict]]:
        try:
            lines = [(i, ln) for i, ln in enumerate(self.metrics.read_text().splitlines(), 1) if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{self.metrics}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from exc
        records = []
        for k, (i, ln) in enumerate(lines):
            try:
                record = json.loads(ln)
            except json.JSONDecodeError as exc:
                if drop_partial_tail and k == len(lines) - 1:
                    if on_drop is not None:
                        on_drop()
                    break
                raise ValueError(f"{self.metrics}: line {i}: not valid JSON ({exc})") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{self.metrics}: line {i}: got a JSON {type(record).__name__}, "
                                 "expected one object per line")
            records.append((ln, record))
        return records
