"""Test-session settings.

The suite is many small matrix products; multi-threaded BLAS spends more time waking
threads than computing on them, and on a busy 2-core machine it was 10x slower.  Set
before NumPy is first imported; an explicit value in the environment wins.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))  # the shared primitive_cases module
