"""The ``seqcore`` command line (installed as the package ``seqcore_cli``).

``seqcore_cli.main.main`` is the click group behind the ``seqcore`` console script; the
README's command-line section lists the commands.

BLAS runs single-threaded unless the environment says otherwise: seqcore's CPU work is
many small matrix products, for which waking BLAS threads costs more than it saves, and
with the numba backend NumPy's and SciPy's separate BLAS thread pools would compete for
the same cores (measured: 3x slower LSTM training on 2 cores).  Set before NumPy loads.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def run():
    """The ``seqcore`` console script: :func:`seqcore_cli.main.main`, loaded here so that a Ctrl-C
    while NumPy and seqcore load (the first fraction of a second) exits 130 without a traceback."""
    import sys
    try:
        from .main import main
    except KeyboardInterrupt:
        print("Interrupted while starting", file=sys.stderr)
        sys.exit(130)
    main()
