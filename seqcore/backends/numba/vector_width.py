"""The vector width the packed-panel kernels are built for (``panels.py``), apart from them.

``cache.py`` keys the kernel cache by this width before any kernel may be defined (a kernel
decorated outside the keyed directory would cache in Numba's default place), so it lives in
a module that defines none.
"""
from __future__ import annotations

import os

import llvmlite.binding as llvm

__all__ = ["VECTOR_BYTES"]

try:
    _FEATURES = llvm.get_host_cpu_features()
except RuntimeError:  # LLVM cannot list this host's features: the narrowest width serves everywhere
    _FEATURES = {}
VECTOR_BYTES = 64 if _FEATURES.get("avx512f") else 32 if _FEATURES.get("avx") else 16
# SEQCORE_PANEL_VECTOR_BYTES=16|32|64 overrides the choice (to test the narrower kernels on a wide
# CPU); the kernel cache is keyed by the width in force (cache.py)
_forced = os.environ.get("SEQCORE_PANEL_VECTOR_BYTES", "").strip()
if _forced:
    if _forced not in ("16", "32", "64"):
        raise ValueError(f"SEQCORE_PANEL_VECTOR_BYTES: got {_forced!r}, expected 16, 32 or 64")
    VECTOR_BYTES = int(_forced)
