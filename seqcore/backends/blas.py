"""Which kernels each loaded OpenBLAS picked: matrix-product speed depends on it.

OpenBLAS builds with ``DYNAMIC_ARCH`` (NumPy's and SciPy's wheels) choose their GEMM kernels
for the CPU when they load; ``OPENBLAS_CORETYPE`` overrides the choice.  A pin to an older
core (AVX2 ``Haswell`` on an AVX-512 machine) halves the speed of every matrix product in
both the NumPy and the numba backend, while PyTorch (MKL, oneDNN) ignores it.  Linux only
(reads ``/proc/self/maps``); elsewhere nothing is reported.
"""
from __future__ import annotations

import ctypes
import os

__all__ = ["openblas_cores", "describe"]

_CORENAME_SYMBOLS = ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                     "openblas_get_corename64_", "openblas_get_corename")


def openblas_cores() -> dict[str, str]:
    """``{library file name: core name}`` for every OpenBLAS loaded in this process (e.g. ``Haswell``).

    Only libraries already loaded are seen: NumPy's on ``import numpy``, SciPy's once the numba
    backend (or SciPy's linear algebra) has loaded.
    """
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.split()[-1].lower() and ".so" in ln})
    except OSError:
        return {}
    cores = {}
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in _CORENAME_SYMBOLS:
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                name = fn()
                cores[os.path.basename(path)] = name.decode() if name else "?"
                break
    return cores


def describe() -> str:
    """One line: the cores of :func:`openblas_cores` and whether ``OPENBLAS_CORETYPE`` pins them."""
    cores = openblas_cores()
    text = ", ".join(f"{k}: {v}" for k, v in cores.items()) or "no OpenBLAS loaded"
    pin = os.environ.get("OPENBLAS_CORETYPE")
    return f"{text}; OPENBLAS_CORETYPE={pin!r} (pinned)" if pin else f"{text}; OPENBLAS_CORETYPE unset"
