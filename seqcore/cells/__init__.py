"""Recurrent cells: ``cell = seqcore.cells.LSTM(input_size, hidden_size)``,
``params = cell.init(rng)``, ``hs, h_last = cell.apply(params, x, h0=None)``."""
from .base import MODES, Cell
from .elman import Elman
from .lstm import LSTM

__all__ = ["Cell", "MODES", "Elman", "LSTM"]
