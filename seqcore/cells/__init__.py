"""Recurrent cells: ``cell = seqcore.cells.LSTM(input_size, hidden_size)``,
``params = cell.init(rng)``, ``hs, h_last = cell.apply(params, x, h0=None)``.

``make(name, input_size, hidden_size, **kwargs)`` builds a cell from its CLI name
(see :func:`names`).
"""
from ..validate import check_choice
from .base import MODES, Cell
from .elman import Elman
from .gru import GRU
from .leaky import LeakyRNN
from .lstm import LSTM
from .minimal import MinGRU, MinLSTM
from .pararnn import CIFGLSTM, DiagGRU

__all__ = ["Cell", "MODES", "Elman", "LSTM", "GRU", "LeakyRNN", "MinGRU", "MinLSTM", "DiagGRU", "CIFGLSTM",
           "make", "names"]

_CELLS = {cls.name: cls for cls in (Elman, LSTM, GRU, LeakyRNN, MinGRU, MinLSTM, DiagGRU, CIFGLSTM)}


def names() -> list[str]:
    """CLI names of every cell: elman, lstm, gru, leaky, mingru, minlstm, diaggru, cifg-lstm."""
    return list(_CELLS)


def make(name: str, *sizes: int, **kwargs) -> Cell:
    """The cell called ``name`` with ``input_size``, ``hidden_size`` (by position or keyword) and its
    own fields as ``kwargs``.

    >>> make("leaky", 3, 16, tau_init=2.0)
    LeakyRNN(input_size=3, hidden_size=16, nonlinearity='leaky_relu', slope=0.01, tau_init=2.0)
    """
    # against the dict, not the list: membership by hash refuses an array that == would match
    cls = _CELLS[check_choice("name", name, _CELLS)]
    if len(sizes) > 2:
        raise TypeError(f"sizes: got {len(sizes)} positional sizes, expected input_size and hidden_size")
    given = dict(zip(("input_size", "hidden_size"), sizes))
    # a size given both ways (a cell_kwargs entry beside the size) is refused below like any
    # unknown field, not as Python's "multiple values" error
    for key in ("input_size", "hidden_size"):
        if key not in given and key in kwargs:
            given[key] = kwargs.pop(key)
    missing = [key for key in ("input_size", "hidden_size") if key not in given]
    if missing:
        raise TypeError(f"make: missing {' and '.join(missing)}, expected make(name, input_size, hidden_size, **fields)")
    input_size, hidden_size = given["input_size"], given["hidden_size"]
    duplicated = sorted(set(kwargs) & {"input_size", "hidden_size"})
    try:
        if duplicated:
            raise TypeError("unexpected keyword")
        return cls(input_size, hidden_size, **kwargs)
    except TypeError as exc:
        if "unexpected keyword" not in str(exc):
            raise
        from dataclasses import fields
        allowed = [f.name for f in fields(cls) if f.name not in ("input_size", "hidden_size")]
        unknown = sorted(set(kwargs) - set(allowed))
        expected = f"some of {allowed}" if allowed else "none (this cell has no fields to set)"
        raise TypeError(f"cell_kwargs: got {unknown}, unknown keys for the {name!r} cell; "
                        f"expected {expected}{' (the sizes are set by their own arguments)' if duplicated else ''}"
                        ) from None
