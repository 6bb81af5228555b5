"""Which kernels each loaded OpenBLAS picked: matrix-product speed depends on it.

OpenBLAS builds with ``DYNAMIC_ARCH`` (NumPy's and SciPy's wheels) choose their GEMM kernels
for the CPU when they load; ``OPENBLAS_CORETYPE`` overrides the choice.  A pin to an older
core (AVX2 ``Haswell`` on an AVX-512 machine) halves the speed of every matrix product in
both the NumPy and the numba backend, while PyTorch (MKL, oneDNN) ignores it.  Linux only
(reads ``/proc/self/maps``); elsewhere nothing is reported.
"""
from __future__ import annotations

import ctypes
import functools
import json
import os
import subprocess
import sys

__all__ = ["openblas_cores", "numpy_blas_threads", "describe", "pin_effect", "pin_note"]


def _symbols(function: str) -> tuple[str, ...]:
    """An OpenBLAS function as each build names it: NumPy 2's scipy-openblas wheels, NumPy 1's
    openblas64_ wheels, a system OpenBLAS."""
    return tuple(f"{lib}{function}{suffix}" for lib in ("scipy_openblas_", "openblas_") for suffix in ("64_", ""))


_CORENAME_SYMBOLS = _symbols("get_corename")


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


def numpy_blas_threads() -> int | None:
    """The threads NumPy's OpenBLAS splits a matrix product over (``OPENBLAS_NUM_THREADS`` as it
    was when NumPy loaded, else one per core); None where it cannot be read (another BLAS).

    A product's rounding depends on it, so a run resumed under another count ends close to,
    not bit-identical with, an uninterrupted one (:func:`seqcore.runs.blas_threads_note`)."""
    # NumPy's own extension: looking the symbol up through it finds the OpenBLAS it links to
    core = sys.modules.get("numpy._core._multiarray_umath") or sys.modules.get("numpy.core._multiarray_umath")
    try:
        lib = ctypes.CDLL(core.__file__)
    except (AttributeError, OSError, TypeError):
        return None
    for symbol in _symbols("get_num_threads"):
        get = getattr(lib, symbol, None)
        if get is not None:
            get.restype = ctypes.c_int
            return int(get())
    return None


def _check_cores(name: str, value) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise TypeError(f"{name}: got {value!r}, expected a dict {{library file name: core name}} "
                        "as openblas_cores() returns")


def pin_effect(pin: str, cores: dict[str, str], unpinned: dict[str, str]) -> str:
    """What ``OPENBLAS_CORETYPE=pin`` did, from the cores OpenBLAS runs with the pin (``cores``)
    and without it (``unpinned``; ``{}`` when unknown), both as :func:`openblas_cores` returns them:

    * ``"pinned"``: the pin changed the kernels (some library runs another core than unpinned);
    * ``"no effect"``: every library runs ``pin``, which is the core it picks unpinned anyway;
    * ``"not taken"``: the kernels are the unpinned ones and not ``pin``'s: OpenBLAS ignores a
      misspelled name (silently unless ``OPENBLAS_VERBOSE=2``), and runs some names as another core's kernels
      (measured with NumPy 2.4.6's OpenBLAS on an AVX2 machine: ``Zen`` as ``Haswell``);
    * ``"unknown"``: ``unpinned`` does not name the libraries of ``cores``.
    """
    if not isinstance(pin, str) or not pin:
        raise TypeError(f"pin: got {pin!r}, expected a non-empty OPENBLAS_CORETYPE value (str)")
    _check_cores("cores", cores)
    _check_cores("unpinned", unpinned)
    if not cores:
        raise ValueError("cores: got {}, expected the core of at least one loaded OpenBLAS")
    common = [lib for lib in cores if lib in unpinned]
    if not common:
        return "unknown"
    if any(cores[lib].lower() != unpinned[lib].lower() for lib in common):
        return "pinned"
    # OpenBLAS matches core names without regard to case
    return "no effect" if all(core.lower() == pin.lower() for core in cores.values()) else "not taken"


@functools.lru_cache(maxsize=1)
def _unpinned_cores() -> tuple[tuple[str, str], ...]:
    """:func:`openblas_cores` of a child process without ``OPENBLAS_CORETYPE`` (OpenBLAS reads it
    once, when it loads); empty when the child fails."""
    code = ("import importlib.util, json, numpy; "
            f"spec = importlib.util.spec_from_file_location('blas', {os.path.abspath(__file__)!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "print(json.dumps(m.openblas_cores()))")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env["OPENBLAS_NUM_THREADS"] = "1"
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                             check=True)
        return tuple(json.loads(out.stdout.strip().splitlines()[-1]).items())
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, AttributeError):
        return ()


_EFFECT_TEXT = {"pinned": "pinned", "no effect": "set, no effect: OpenBLAS picks these kernels unpinned too",
                "not taken": "not taken: OpenBLAS runs the kernels it picks unpinned; misspelled?",
                "unknown": "set"}


def describe() -> str:
    """One line: the cores of :func:`openblas_cores` and what ``OPENBLAS_CORETYPE`` does to them
    (a pin is compared with the cores of a child process started without it: :func:`pin_effect`)."""
    cores = openblas_cores()
    text = ", ".join(f"{k}: {v}" for k, v in cores.items()) or "no OpenBLAS loaded"
    pin = os.environ.get("OPENBLAS_CORETYPE")
    if not pin:
        return f"{text}; OPENBLAS_CORETYPE unset"
    if not cores:
        return f"{text}; OPENBLAS_CORETYPE={pin!r}"
    return f"{text}; OPENBLAS_CORETYPE={pin!r} ({_EFFECT_TEXT[pin_effect(pin, cores, dict(_unpinned_cores()))]})"


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
