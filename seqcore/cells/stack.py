"""Multi-layer stacks and the bidirectional wrapper (``torch.nn.RNN/LSTM/GRU`` layouts)."""
from __future__ import annotations

import contextlib

from dataclasses import dataclass

import numpy as np

from .. import backends, ops
from ..autodiff import stop_gradient
from ..validate import check_bool, check_positive_int, is_array
from .base import MODES, Cell


def _time_reversal(lengths, T: int) -> tuple:
    """The index that reverses ``(B, T, ...)`` arrays in time; with ``lengths``, each row within its
    first ``lengths[b]`` steps, its padding left in place after them (the map is its own inverse)."""
    if lengths is None:
        return (slice(None), slice(None, None, -1))
    t = np.arange(T)
    L = lengths[:, None]
    return (np.arange(len(lengths))[:, None], np.where(t < L, L - 1 - t, t))


def check_lengths(lengths, B: int, T: int) -> np.ndarray | None:
    """``lengths`` (None, or B integers in [1, T]) as an int64 NumPy array."""
    if lengths is None:
        return None
    if is_array(lengths):  # any backend's: the values are needed on the host, for the indices
        raw = backends.to_numpy(lengths)
    else:
        raw = np.asarray(lengths)
    if raw.dtype.kind not in "iu" or raw.shape != (B,):
        raise ValueError(f"lengths: got {raw.dtype} array of shape {raw.shape}, expected {B} integers (B,)")
    if raw.size and (raw.min() < 1 or raw.max() > T):
        raise ValueError(f"lengths: got values in [{raw.min()}, {raw.max()}], expected each in [1, {T}] (T of x)")
    return raw.astype(np.int64)


@dataclass(frozen=True)
class Bidirectional:
    """Runs ``forward`` over the sequence and ``backward`` over it reversed; outputs are concatenated.

    ``hs: (B, T, 2H)`` with ``hs[..., :H]`` from the forward cell and ``hs[..., H:]`` from the
    backward cell (aligned to the same time step), as ``torch.nn.RNN(bidirectional=True)``.
    ``h0`` and ``h_last`` are pairs ``(forward_state, backward_state)``.
    """

    forward: Cell
    backward: Cell

    def __post_init__(self):
        for name in ("forward", "backward"):
            if not isinstance(getattr(self, name), Cell):
                raise TypeError(f"{name}: got {type(getattr(self, name)).__name__}, expected a seqcore cell "
                                "(seqcore.cells.Cell)")
        if (self.forward.input_size, self.forward.hidden_size) != (self.backward.input_size, self.backward.hidden_size):
            raise ValueError("backward: got a cell of different sizes, expected the same input and hidden sizes as forward")

    input_size = property(lambda self: self.forward.input_size)
    output_size = property(lambda self: 2 * self.forward.hidden_size)

    def init(self, rng, dtype=np.float32) -> dict:
        return {"forward": self.forward.init(rng, dtype), "backward": self.backward.init(rng, dtype)}

    def constrain(self, params: dict) -> dict:
        _check_directions(params)
        return {"forward": self.forward.constrain(params["forward"]),
                "backward": self.backward.constrain(params["backward"])}

    def apply(self, params, x, h0=None, mode: str = "sequential", lengths=None, **kw):
        """``lengths`` (B,): each sequence's own length in a right-padded batch. The backward cell
        then starts at each sequence's last real step, as over a packed sequence in PyTorch, and
        its outputs at padded steps are those of the padding read after the sequence; its final
        state is taken after the whole padded input. Without it, every row is read from step T − 1."""
        _check_directions(params)
        B, T = _batch_and_time(x)
        reverse = _time_reversal(check_lengths(lengths, B, T), T)  # one index, for the inputs and the outputs
        if h0 is not None and (not isinstance(h0, (tuple, list)) or len(h0) != 2):
            raise TypeError(f"h0: got {type(h0).__name__}{_length(h0)}, expected None or a pair "
                            "(forward_state, backward_state)")
        h0f, h0b = (None, None) if h0 is None else h0
        with _where("forward direction"):
            hf, lf = self.forward.apply(params["forward"], x, h0f, mode=mode, **kw)
        with _where("backward direction"):
            hb, lb = self.backward.apply(params["backward"], ops.getitem(x, reverse), h0b, mode=mode, **kw)
        return ops.concatenate([hf, ops.getitem(hb, reverse)], axis=-1), (lf, lb)


@dataclass(frozen=True)
class Stack:
    """Layers applied in turn; layer l + 1 reads layer l's outputs.

    ``h0`` (None, or a list with one entry per layer) and ``h_last`` hold each layer's state as
    that layer takes it: ``(B, H)``, ``(h, c)`` for LSTM-like cells, a pair ``(forward,
    backward)`` for a :class:`Bidirectional` layer — not PyTorch's stacked ``(L·D, B, H)``."""

    layers: tuple

    def __post_init__(self):
        if not isinstance(self.layers, (tuple, list)):
            raise TypeError(f"layers: got {type(self.layers).__name__}, expected a tuple of cells")
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError("layers: got an empty tuple, expected at least one cell")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, (Cell, Bidirectional)):
                raise TypeError(f"layers[{i}]: got {type(layer).__name__}, expected a seqcore cell or Bidirectional")
        for i in range(1, len(self.layers)):
            prev, cur = self.layers[i - 1], self.layers[i]
            if _out_size(prev) != cur.input_size:
                raise ValueError(f"layers[{i}]: got input_size {cur.input_size}, expected {_out_size(prev)} "
                                 f"(the output size of layers[{i - 1}])")

    input_size = property(lambda self: self.layers[0].input_size)
    output_size = property(lambda self: _out_size(self.layers[-1]))

    def init(self, rng, dtype=np.float32) -> list:
        return [layer.init(rng, dtype) for layer in self.layers]

    def constrain(self, params: list) -> list:
        """Each layer's :meth:`Cell.constrain` (applied after every optimizer update)."""
        self._check_params(params)
        return [layer.constrain(p) for layer, p in zip(self.layers, params)]

    def _check_params(self, params):
        if not isinstance(params, (list, tuple)) or len(params) != len(self.layers):
            raise ValueError(f"params: got {type(params).__name__} of length {len(params) if hasattr(params, '__len__') else '?'}, "
                             f"expected a list of {len(self.layers)} layer dicts from Stack.init")

    def apply(self, params, x, h0=None, mode: str = "sequential", lengths=None, **kw):
        """``x: (B, T, input_size) -> (hs (B, T, output_size), [h_last per layer])``.

        ``lengths`` (B,): sequence lengths of a right-padded batch, for the bidirectional layers
        (see :meth:`Bidirectional.apply`); one-directional layers never read past a step."""
        if mode not in MODES:
            raise ValueError(f"mode: got {mode!r}, expected one of {list(MODES)}")
        self._check_params(params)
        if h0 is not None and not isinstance(h0, (list, tuple)):
            raise TypeError(f"h0: got {type(h0).__name__}, expected None or a list with one initial state per layer "
                            f"({len(self.layers)}), each as the layer's apply takes it")
        h0 = [None] * len(self.layers) if h0 is None else list(h0)
        if len(h0) != len(self.layers):
            raise ValueError(f"h0: got {len(h0)} states, expected one per layer ({len(self.layers)})")
        lengths = check_lengths(lengths, *_batch_and_time(x))  # checked even where no layer reads them
        last = []
        for i, (layer, p, s) in enumerate(zip(self.layers, params, h0)):
            with _where(f"layer {i}" if len(self.layers) > 1 else ""):
                if isinstance(layer, Bidirectional):
                    x, h = layer.apply(p, x, s, mode=mode, lengths=lengths, **kw)
                else:
                    x, h = layer.apply(p, x, s, mode=mode, **kw)
            last.append(h)
        return x, last


@contextlib.contextmanager
def _where(place: str):
    """Prefix a plain ValueError / TypeError raised inside, and the Newton scan's convergence
    warnings, with ``place`` (which layer, which direction): a stack's layers check the same
    argument names, and each may fall back on its own."""
    from ..newton import warning_place  # the Newton engine sits above cells
    # set, not caught and re-issued: catch_warnings would swallow every other warning in the block
    token = warning_place.set(f"{warning_place.get()}{place}: ") if place else None
    try:
        yield
    except (ValueError, TypeError) as exc:
        if not place or type(exc) not in (ValueError, TypeError):
            raise
        raise type(exc)(f"{place}: {exc}") from exc
    finally:
        if token is not None:
            warning_place.reset(token)


def _batch_and_time(x) -> tuple[int, int]:
    shape = tuple(np.shape(stop_gradient(x)))
    return (shape[0], shape[1]) if len(shape) >= 2 else (0, 0)  # a wrong x is the cell's to name


def _length(x) -> str:
    return f" of length {len(x)}" if isinstance(x, (tuple, list)) else ""


def _check_directions(params):
    # exactly these keys, as every cell's params: a misspelled "forwards" is refused, not ignored
    expected = "expected a dict with exactly the keys 'backward' and 'forward' from Bidirectional.init"
    if not isinstance(params, dict):
        raise ValueError(f"params: got {type(params).__name__}, {expected}")
    keys = {"forward", "backward"}
    missing, unused = sorted(keys - set(params)), sorted(set(params) - keys, key=repr)
    if missing or unused:
        why = "; ".join(f"{what} key(s) {ks}" for what, ks in (("missing", missing), ("unused", unused)) if ks)
        raise ValueError(f"params: got {sorted(params, key=repr)} ({why}), {expected}")


def _out_size(layer) -> int:
    return layer.output_size if hasattr(layer, "output_size") else layer.hidden_size


def stack(cell_class, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
          **cell_kwargs) -> Stack:
    """A ``torch.nn.LSTM``-shaped stack: ``num_layers`` layers of ``cell_class`` (optionally bidirectional)."""
    check_positive_int("num_layers", num_layers)
    check_bool("bidirectional", bidirectional)
    if not (isinstance(cell_class, type) and issubclass(cell_class, Cell)):
        raise TypeError(f"cell_class: got {cell_class!r}, expected a cell class such as seqcore.cells.LSTM")
    from . import _CELLS, make
    name = getattr(cell_class, "name", None)
    if _CELLS.get(name) is cell_class:  # the registry's constructor names unknown fields
        def build(n):
            return make(name, n, hidden_size, **cell_kwargs)
    else:  # a cell class of the user's: its own constructor
        def build(n):
            return cell_class(n, hidden_size, **cell_kwargs)
    layers, size = [], input_size
    for _ in range(num_layers):
        layer = Bidirectional(build(size), build(size)) if bidirectional else build(size)
        layers.append(layer)
        size = _out_size(layer)
    return Stack(tuple(layers))
