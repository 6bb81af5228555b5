"""Step masks ``(B, T)`` shared by the tasks (which make them) and the models (which read them)."""
from __future__ import annotations

import numpy as np

__all__ = ["last_step_index"]


def last_step_index(mask) -> np.ndarray:
    """Index of the last marked step of each row of ``mask`` (B, T) -> (B,) int64.

    For a last-step task this is the step whose output is classified.
    Rows without any marked step raise ValueError.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask: got shape {mask.shape}, expected (B, T)")
    marked = mask > 0
    if mask.shape[1] == 0 or not marked.any(axis=1).all():
        raise ValueError("mask: a row has no marked step, expected at least one for a last-step head")
    T = mask.shape[1]
    return (T - 1 - np.argmax(marked[:, ::-1], axis=1)).astype(np.int64)
