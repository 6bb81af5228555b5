"""Step masks ``(B, T)`` shared by the tasks (which make them) and the models (which read them)."""
from __future__ import annotations

import numpy as np

from .autodiff import stop_gradient

__all__ = ["last_step_index"]


def _as_numpy(mask) -> np.ndarray:
    """``mask`` as a NumPy array: NumPy arrays and nested lists as they are, another backend's
    array through its backend's ``to_numpy`` (the registry imports no framework to find it)."""
    mask = stop_gradient(mask)  # a traced mask carries no gradient
    if isinstance(mask, np.ndarray):
        return mask
    if isinstance(mask, (list, tuple)):
        try:
            return np.asarray(mask)
        except ValueError:  # ragged rows
            raise ValueError(f"mask: got a ragged nested sequence ({len(mask)} rows of different lengths), "
                             "expected a (B, T) array") from None
    if hasattr(mask, "shape") and hasattr(mask, "dtype"):
        from . import backends
        return backends.to_numpy(mask)
    raise TypeError(f"mask: got {type(mask).__name__}, expected a (B, T) array")


def last_step_index(mask) -> np.ndarray:
    """Index of the last marked step of each row of ``mask`` (B, T) -> (B,) int64.

    For a last-step task this is the step whose output is classified. ``mask`` holds
    weights >= 0 (float, int or bool; a step is marked where it is > 0). A row without a
    marked step, a negative or NaN entry, or a mask that is not a real (B, T) array raises
    ValueError/TypeError naming ``mask``.
    """
    mask = _as_numpy(mask)
    if mask.dtype.kind not in "biuf":
        raise TypeError(f"mask: got dtype {mask.dtype}, expected float, int or bool weights")
    if mask.ndim != 2:
        raise ValueError(f"mask: got shape {mask.shape}, expected (B, T)")
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise ValueError("mask: got NaN or inf entries, expected finite weights >= 0")
    if mask.dtype.kind in "if" and (mask < 0).any():
        raise ValueError(f"mask: got a negative entry ({mask.min()}), expected weights >= 0")
    marked = mask > 0
    if mask.shape[1] == 0:
        raise ValueError(f"mask: got shape {mask.shape} (T = 0 steps), expected at least one marked step per row "
                         "for a last-step head")
    empty = np.flatnonzero(~marked.any(axis=1))
    if empty.size:
        rows = ", ".join(map(str, empty[:10].tolist())) + (", …" if empty.size > 10 else "")
        raise ValueError(f"mask: rows [{rows}] have no marked step (all weights 0, {empty.size} of {mask.shape[0]} "
                         "rows), expected at least one step > 0 per row for a last-step head")
    T = mask.shape[1]
    return (T - 1 - np.argmax(marked[:, ::-1], axis=1)).astype(np.int64)
