"""Optional plotting: matplotlib's pyplot for writing figures to files, or None without it."""
from __future__ import annotations

__all__ = ["pyplot"]


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures go to files, no
    display needed), or ``None`` when matplotlib is not installed (``pip install
    'seqcore[plot]'``).  matplotlib is imported here, on first use, never by ``import seqcore``."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
