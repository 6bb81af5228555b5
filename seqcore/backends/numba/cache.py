"""Where the compiled kernels are cached: a directory keyed by a digest of this backend's sources.

Numba invalidates a cached kernel only when the file that defines it changes, but the
kernels inline helpers from ``ops.py``: an edit there alone would leave stale machine code
in use.  Caching into ``seqcore-numba-<digest of every .py file here>`` makes any edit of
the backend start a fresh cache.  The directory sits in this package's ``__pycache__``, or
under ``NUMBA_CACHE_DIR`` when that is set; where it is not writable, Numba falls back to
its own locations.  Only the kernels defined inside :func:`keyed_cache_dir` are affected;
the user's own Numba functions keep Numba's settings.
"""
from __future__ import annotations

import contextlib
import hashlib
import shutil
from pathlib import Path

import numba

__all__ = ["source_digest", "cache_dir", "keyed_cache_dir"]

PREFIX = "seqcore-numba-"
_HERE = Path(__file__).resolve().parent


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
    """Remove caches of earlier sources from this package's own ``__pycache__`` (best effort)."""
    if current.parent != _HERE / "__pycache__" or not current.parent.is_dir():
        return  # a shared NUMBA_CACHE_DIR may hold other checkouts' caches: leave it alone
    for old in current.parent.glob(PREFIX + "*"):
        if old != current:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def keyed_cache_dir():
    """Within this block, ``@njit(cache=True)`` functions cache into :func:`cache_dir`."""
    previous = numba.config.CACHE_DIR
    target = cache_dir()
    _prune_stale(target)
    numba.config.CACHE_DIR = str(target)
    try:
        yield target
    finally:
        numba.config.CACHE_DIR = previous
