"""The Numba CPU backend: NumPy arrays, hot primitives replaced by compiled loops.

``seqcore.use("numba")`` (or ``SEQCORE_BACKEND=numba``, ``seqcore.backends.get("numba")``).
Importing this module imports numba; ``import seqcore`` never does.  Kernels compile on
their first call per dtype (float32, float64) and are cached on disk by Numba in a
directory keyed by a digest of this backend's sources (``cache.py``; ``NUMBA_CACHE_DIR``
moves it), so an edit of any backend file never runs stale machine code.  :func:`compile_report` lists the
first calls, with compile time apart from run time.  Inputs that are not C-contiguous
(slices, transposes, flips) are copied to contiguous arrays first; dtypes other than
float32/float64 (or mixed) fall back to the NumPy reference.
"""
import numba as _numba
import numpy as np

from .. import BackendUnavailable as _BackendUnavailable
from .cache import keyed_cache_dir as _keyed_cache_dir

if _numba.config.DISABLE_JIT:  # the kernels would run as Python functions, which cannot run their LLVM intrinsics
    raise _BackendUnavailable("backend 'numba' cannot load: NUMBA_DISABLE_JIT is set, which turns its compiled kernels off; "
                              "unset NUMBA_DISABLE_JIT, or use the numpy backend")

with _keyed_cache_dir():  # kernels are decorated on import: they cache where the sources' digest says
    from .cells import PRIMITIVES as _CELL_PRIMITIVES
    from .ops import clear_compile_report, compile_report, num_threads
    from .products import PRIMITIVES as _PRODUCT_PRIMITIVES
    from .scan import PRIMITIVES as _SCAN_PRIMITIVES

__all__ = ["name", "xp", "version", "asarray", "to_numpy", "primitives", "compile_report",
           "clear_compile_report", "num_threads"]

name = "numba"
xp = np
version = _numba.__version__
primitives: dict = {**_SCAN_PRIMITIVES, **_CELL_PRIMITIVES, **_PRODUCT_PRIMITIVES}


def asarray(x, dtype=None):
    """``numpy.asarray``: this backend computes on NumPy arrays."""
    return np.asarray(x, dtype=dtype)


def to_numpy(x):
    """``numpy.asarray`` (arrays are already NumPy arrays)."""
    return np.asarray(x)
