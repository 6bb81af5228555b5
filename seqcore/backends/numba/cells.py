"""Fused cell sequences: the ``<name>_recurrence`` primitives (forward and exact BPTT) and the
Newton scan's ``newton_recurrence`` on fused steps.

Each replacement has the reference's signature (``seqcore/cells/base.py``):
``fwd(xp, xi, state0, *recurrent params, cell=cell) -> (states (B, T, S), residuals)`` and
``bwd(xp, residuals, dstates, cell=cell) -> (dxi, dstate0, *dparams)``; minGRU's and minLSTM's,
which have no recurrent params, ``fwd(xp, xi, state0, *, cell)`` and ``bwd(xp, res, dh, *, cell)``
(``seqcore/cells/minimal.py``).  The kernels live in
``dense_cells.py`` (Elman, LSTM, GRU, LeakyRNN), ``diagonal_cells.py`` (DiagGRU, CIFG-LSTM),
``minimal_cells.py`` (minGRU, minLSTM), ``newton_steps.py``, ``newton_dense_steps.py`` and
``newton_loop.py``; this module only dispatches.
A cell of another class (a subclass, say), other dtypes or mixed dtypes run the reference.
"""
from __future__ import annotations

from .dense_cells import elman_bwd, elman_fwd, gru_bwd, gru_fwd, leaky_bwd, leaky_fwd, lstm_bwd, lstm_fwd
from .diagonal_cells import cifg_bwd, cifg_fwd, diaggru_bwd, diaggru_fwd
from .minimal_cells import minimal_bwd, minimal_fwd
from .newton_loop import FusedSteps, newton_bwd, newton_fwd
from .ops import as_dtype, supported_dtype

__all__ = ["PRIMITIVES", "FusedSteps"]


# -- dispatch: the fused loop for the cell classes written here, the reference otherwise --------

def _replacement(fused_fwd, fused_bwd, module: str, qualname: str):
    def fwd(xp, xi, state0, *rec, cell):
        cell = getattr(cell, "wrapped_cell", cell)  # a newton_loop proxy from the Newton engine
        cls = type(cell)
        if cls.__module__ != module or cls.__qualname__ != qualname or not supported_dtype(xi, state0, *rec):
            from ...cells.base import _recurrence_fwd  # the reference (cells sit above backends)
            out, res = _recurrence_fwd(xp, xi, state0, *rec, cell=cell)
            return out, ("reference", res)
        out, res = fused_fwd(xi, state0, *rec, cell)
        return out, ("numba", res)

    def bwd(xp, res, dstates, cell):
        cell = getattr(cell, "wrapped_cell", cell)
        tag, res = res
        if tag == "reference":
            from ...cells.base import _recurrence_bwd
            return _recurrence_bwd(xp, res, dstates, cell=cell)
        return fused_bwd(res, as_dtype(dstates, res[0].dtype), cell)

    return fwd, bwd


def _minimal_replacement(qualname: str):
    """:func:`_replacement` for minGRU / minLSTM under their reference's signature."""
    any_fwd, any_bwd = _replacement(minimal_fwd, minimal_bwd, "seqcore.cells.minimal", qualname)

    def fwd(xp, xi, state0, *, cell):
        return any_fwd(xp, xi, state0, cell=cell)

    def bwd(xp, res, dh, *, cell):
        return any_bwd(xp, res, dh, cell)

    return fwd, bwd


PRIMITIVES = {
    "elman_recurrence": _replacement(elman_fwd, elman_bwd, "seqcore.cells.elman", "Elman"),
    "lstm_recurrence": _replacement(lstm_fwd, lstm_bwd, "seqcore.cells.lstm", "LSTM"),
    "gru_recurrence": _replacement(gru_fwd, gru_bwd, "seqcore.cells.gru", "GRU"),
    "leaky_recurrence": _replacement(leaky_fwd, leaky_bwd, "seqcore.cells.leaky", "LeakyRNN"),
    "diaggru_recurrence": _replacement(diaggru_fwd, diaggru_bwd, "seqcore.cells.pararnn", "DiagGRU"),
    "cifg-lstm_recurrence": _replacement(cifg_fwd, cifg_bwd, "seqcore.cells.pararnn", "CIFGLSTM"),
    "mingru_recurrence": _minimal_replacement("MinGRU"),
    "minlstm_recurrence": _minimal_replacement("MinLSTM"),
    "newton_recurrence": (newton_fwd, newton_bwd),
}
