"""Test-session settings.

The suite is many small matrix products; multi-threaded BLAS spends more time waking
threads than computing on them, and on a busy 2-core machine it was 10x slower.  Set
before NumPy is first imported; an explicit value in the environment wins.
"""
import os
import sys
from pathlib import Path

from hypothesis import settings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))  # the shared primitive_cases module

# Property tests draw the same examples on every run and print a failure's @reproduce_failure
# blob: a fresh checkout has no .hypothesis database to replay a CI failure from.  Loaded here,
# before the test modules' @settings copy it; `--hypothesis-profile=default` explores anew.
settings.register_profile("seqcore", derandomize=True, print_blob=True)
settings.load_profile("seqcore")
