"""Where the compiled kernels are cached: a directory keyed by a digest of this backend's sources.

Numba invalidates a cached kernel only when the file that defines it changes, but the
kernels inline helpers from ``ops.py``: an edit there alone would leave stale machine code
in use.  Caching into ``seqcore-numba-<digest of every .py file here>`` makes any edit of
the backend start a fresh cache.  The directory sits in this package's ``__pycache__``, or
under ``NUMBA_CACHE_DIR`` when that is set.  Where it cannot be written, the kernels cache in
a keyed directory under the temp directory instead, or, where none can be written either, are
not cached (said once, in a warning): Numba's own fallbacks (this package's ``__pycache__``
itself) carry no digest.  Only the kernels defined inside :func:`keyed_cache_dir` are
affected; the user's own Numba functions keep Numba's settings.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import warnings
from pathlib import Path

import numba

__all__ = ["source_digest", "cache_dir", "keyed_cache_dir", "caching"]

PREFIX = "seqcore-numba-"
_HERE = Path(__file__).resolve().parent
_caching = True  # False once keyed_cache_dir found no keyed directory it could write


def source_digest(directory: Path = _HERE) -> str:
    """16 hex digits of SHA-1 over the names and contents of the ``.py`` files in ``directory``."""
    h = hashlib.sha1()
    for path in sorted(Path(directory).glob("*.py")):
        h.update(path.name.encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _build_digest() -> str:
    """4 hex digits naming the packed product's vector width (``panels.py``): kernels built for
    one panel width must not be loaded where :func:`panels.pack` makes another."""
    from .vector_width import VECTOR_BYTES
    return hashlib.sha1(f"panels:{VECTOR_BYTES}".encode()).hexdigest()[:4]


def cache_dir(digest: str | None = None) -> Path:
    """The kernel cache directory for the current sources and BLAS (not created here)."""
    base = Path(numba.config.CACHE_DIR) if numba.config.CACHE_DIR else _HERE / "__pycache__"
    return base / (PREFIX + (digest or source_digest() + _build_digest()))


def _prune_stale(current: Path) -> None:
    """Remove caches of earlier sources from this package's own ``__pycache__`` (best effort);
    those of the current sources built for another panel width stay."""
    if current.parent != _HERE / "__pycache__" or not current.parent.is_dir():
        return  # a shared NUMBA_CACHE_DIR may hold other checkouts' caches: leave it alone
    sources = PREFIX + source_digest()
    for old in current.parent.glob(PREFIX + "*"):
        if not old.name.startswith(sources):
            shutil.rmtree(old, ignore_errors=True)


def caching() -> bool:
    """Whether kernels decorated now cache on disk (False where :func:`keyed_cache_dir` found no
    keyed directory it could write)."""
    return _caching


def _unwritable(directory: Path) -> str:
    """Why ``directory`` cannot be created and written into ('' when it can), as Numba tests it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as exc:
        return str(exc)
    return ""


def _private_dir(name: str) -> Path:
    """``<temp dir>/seqcore-numba-uid<uid>/<name>``.  Numba's cache index is a pickle: a directory
    that another user could write into (or own) is refused with an OSError."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    base = Path(tempfile.gettempdir()) / f"{PREFIX}uid{uid if uid is not None else ''}"
    base.mkdir(mode=0o700, exist_ok=True)
    st = base.lstat()
    if not stat.S_ISDIR(st.st_mode) or (uid is not None and (st.st_uid != uid or st.st_mode & 0o022)):
        raise PermissionError(f"{base} is not a directory of this user's alone")
    return base / name


@contextlib.contextmanager
def keyed_cache_dir():
    """Within this block, ``@njit(cache=True)`` functions cache into :func:`cache_dir`, or where
    that cannot be written into a keyed directory under the temp directory; where neither can,
    :func:`caching` is False (kernels decorated with ``cache=caching()`` are then not cached)
    and the block yields None."""
    global _caching
    previous = numba.config.CACHE_DIR
    target = cache_dir()
    _prune_stale(target)
    problem = _unwritable(target)
    if problem:
        try:
            fallback = _private_dir(target.name)
            fallback_problem = _unwritable(fallback)
        except OSError as exc:
            fallback, fallback_problem = None, str(exc)
        setting = f"NUMBA_CACHE_DIR={previous!r}" if previous else "NUMBA_CACHE_DIR unset"
        instead = (f"caching them in {fallback} instead" if not fallback_problem else
                   f"nor in the temp directory ({fallback_problem}): they are not cached and compile in every process")
        warnings.warn(f"the numba backend cannot write its kernel cache in {target} ({setting}: {problem}); {instead}. "
                      "Set NUMBA_CACHE_DIR to a writable directory", RuntimeWarning, stacklevel=3)
        target = None if fallback_problem else fallback
    _caching = target is not None
    if target is not None:
        numba.config.CACHE_DIR = str(target)
    try:
        yield target
    finally:
        numba.config.CACHE_DIR = previous
