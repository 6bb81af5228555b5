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

__all__ = ["openblas_cores", "describe", "pin_note"]

_CORENAME_SYMBOLS = ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                     "openblas_get_corename64_", "openblas_get_corename")


def openblas_cores() -> dict[str, str]:
    """``{library file name: core name}`` for every OpenBLAS loaded in this process (e.g. ``Haswell``).

    Only libraries already loaded are seen: NumPy's on ``import numpy``, SciPy's once SciPy's
    linear algebra has loaded.
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


# OpenBLAS core names (lower case) by the widest vector unit their kernels use
_AVX512_CORES = {"skylakex", "cooperlake", "sapphirerapids"}
_AVX2_CORES = {"haswell", "zen"}


def _cpu_flags() -> set[str]:
    """The x86 feature flags of ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pin_note(flags: set[str] | None = None) -> str | None:
    """One line when ``OPENBLAS_CORETYPE`` pins OpenBLAS to narrower kernels than the CPU has
    (``flags``: its feature flags, read from ``/proc/cpuinfo`` by default); else None.

    Measured here (``benchmarks/blas_pin.py``): pinned to ``Haswell`` on an AVX-512 CPU, the
    small products of a recurrent step ran 2-4.4x slower ((16|64, 64) x (64, 64)), larger
    ones 1.6-1.8x.  The numba backend's kernels call no BLAS (``numba/panels.py``), so there the
    pin costs only the products narrower than one panel and the wide weight gradients (the
    README's main job: no measurable difference).
    """
    pin = os.environ.get("OPENBLAS_CORETYPE", "").strip()
    if not pin:
        return None
    flags = _cpu_flags() if flags is None else flags
    core = pin.lower()
    if "avx512f" in flags and core not in _AVX512_CORES:
        unit = "AVX-512"
    elif "avx2" in flags and core not in _AVX512_CORES | _AVX2_CORES:
        unit = "AVX2"
    else:
        return None
    return (f"note: OPENBLAS_CORETYPE={pin} holds OpenBLAS to older kernels than this CPU's {unit}; "
            "NumPy's matrix products run 1.6-4x slower (unset it unless you need the pin)")
