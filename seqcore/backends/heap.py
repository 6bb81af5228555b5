"""Keep freed memory in the process heap between training steps (glibc).

Every training step allocates the same large buffers (activations, residuals, gradients) and
frees them when the step ends: a tape dies with its last reference.  glibc then sees
megabytes free at the top of its heap and gives them back to the OS (``M_TRIM_THRESHOLD``),
and serves blocks above ``M_MMAP_THRESHOLD`` with a fresh mapping each time, so the next
step page-faults the same memory in again, zero-filled, at 1–2 µs per 4 KiB page on a VM.
For a small LSTM layer (B = 16, T = 128, H = 64) that was half of the step
(``benchmarks/step_memory.py``).

:func:`retain` raises both thresholds, once, for the whole process: freed memory stays
in the heap for the next step (peak memory is not returned to the OS while the process
runs).  Blocks above 32 MiB, glibc's ceiling for the mapping threshold, are still mapped
afresh.  The ``seqcore`` command calls it at start-up (``SEQCORE_RETAIN_HEAP=0`` turns that
off); library users call it themselves.  Linux with glibc only; elsewhere it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["retain", "retained", "retain_from_env"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)

_state = {"retained": False}


def retain(trim_threshold: int = 1 << 30, mmap_threshold: int = MMAP_THRESHOLD_MAX) -> bool:
    """Keep up to ``trim_threshold`` bytes of freed heap memory instead of returning it to the
    OS, and serve blocks up to ``mmap_threshold`` bytes from the heap; True when applied.

    False (and nothing changes) where the C library has no ``mallopt`` (not glibc) or
    refuses a value.
    """
    for name, value, hi in (("trim_threshold", trim_threshold, None), ("mmap_threshold", mmap_threshold,
                                                                       MMAP_THRESHOLD_MAX)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}: got {type(value).__name__}, expected an int (bytes)")
        if value < 0 or (hi is not None and value > hi):
            raise ValueError(f"{name}: got {value}, expected 0 <= {name}" + (f" <= {hi}" if hi else ""))
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    _state["retained"] = _state["retained"] or ok
    return ok


def retain_from_env() -> bool:
    """:func:`retain` with its defaults unless ``$SEQCORE_RETAIN_HEAP`` is ``0`` (what the
    ``seqcore`` command and the benchmarks do at start-up); True when applied."""
    if os.environ.get("SEQCORE_RETAIN_HEAP", "1").strip() == "0":
        return False
    return retain()


def retained() -> bool:
    """Whether :func:`retain` has been applied in this process."""
    return _state["retained"]


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):  # no libc found, or one without mallopt (musl)
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn
