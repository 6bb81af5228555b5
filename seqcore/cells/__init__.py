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


_GIVEN_BY_KEYWORD = object()


def make(name: str, input_size: int = _GIVEN_BY_KEYWORD, hidden_size: int = _GIVEN_BY_KEYWORD, /,
         **kwargs) -> Cell:
    """The cell called ``name`` with ``input_size``, ``hidden_size`` and its own fields as ``kwargs``.

    >>> make("leaky", 3, 16, tau_init=2.0)
    LeakyRNN(input_size=3, hidden_size=16, nonlinearity='leaky_relu', slope=0.01, tau_init=2.0)
    """
    # against the dict, not the list: membership by hash refuses an array that == would match
    cls = _CELLS[check_choice("name", name, _CELLS)]
    # the sizes may come by keyword; given both ways (a cell_kwargs entry of that name beside the
    # size), the entry is refused like any unknown field, not as Python's "multiple values" error
    if input_size is _GIVEN_BY_KEYWORD:
        input_size = kwargs.pop("input_size", _GIVEN_BY_KEYWORD)
    if hidden_size is _GIVEN_BY_KEYWORD:
        hidden_size = kwargs.pop("hidden_size", _GIVEN_BY_KEYWORD)
    missing = [n for n, v in (("input_size", input_size), ("hidden_size", hidden_size)) if v is _GIVEN_BY_KEYWORD]
    if missing:
        raise TypeError(f"make: missing {' and '.join(missing)}, expected make(name, input_size, hidden_size, **fields)")
    sizes = sorted(set(kwargs) & {"input_size", "hidden_size"})
    try:
        if sizes:
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
                        f"expected {expected}{' (the sizes are set by their own arguments)' if sizes else ''}"
                        ) from None
