"""Classifiers as learners see them: ``forward(params, x) -> logits``, and a little more.

Every learner needs ``init(rng, dtype)`` and ``forward(params, x) -> (B, C)``. Two
learners look inside:

* SHARP needs ``hidden(params, x) -> (B, F)`` (the input of the readout layer),
  ``readout(params, h) -> (B, C)``, ``sparse_paths(params)`` (the weight matrices it
  keeps sparse), ``unit_paths(params)`` (the parameters whose rows produce the F
  hidden units) and ``unit_rows(path, shape)`` (the unit each row of such a parameter
  feeds);
* orthogonal projection needs ``projection_layers(params, x)`` (called with NumPy
  parameters and inputs, whatever the backend): a list of
  ``(weight_path, bias_path or None, inputs (N, in))`` — for each weight matrix, the
  inputs it multiplies, so its updates can be projected away from their span. A path
  may index past its leaf (a head's slab of a grouped weight, a tuple of bias rows).

Optionally, for both, ``masked_diagonal_paths()``: the weights whose forward masks the
diagonal (``W ⊙ (1 − I)``); orthogonal projection projects their rows without it, SHARP
never makes it active (:func:`masked_diagonals`).

:class:`MLPClassifier` (the permuted-image model) and :class:`RNNClassifier` (a
:class:`seqcore.models.SequenceModel` with one last-step head, any cell) provide all of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ops
from ..autodiff import stop_gradient
from ..cells.leaky import LeakyRNN
from ..models import MLP, HeadSpec, SequenceModel
from ..validate import check_array, check_positive_int

__all__ = ["MLPClassifier", "RNNClassifier"]


def masked_diagonals(model) -> set[tuple]:
    """The paths of ``model.masked_diagonal_paths()``, or none when the model has no such method."""
    masked = getattr(model, "masked_diagonal_paths", None)
    return {tuple(p) for p in masked()} if callable(masked) else set()


@dataclass(frozen=True)
class MLPClassifier:
    """An MLP on flattened inputs: ``x (B, ...) -> logits (B, n_classes)``, ReLU hidden layers.

    Parameters are a list of ``{"weight": (out, in), "bias": (out,)}``, one per layer.
    """

    input_size: int
    hidden_sizes: tuple
    n_classes: int

    def __post_init__(self):
        if not isinstance(self.hidden_sizes, (tuple, list)):
            raise TypeError(f"hidden_sizes: got {type(self.hidden_sizes).__name__}, expected a tuple of ints")
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        check_positive_int("n_classes", self.n_classes)
        self.mlp  # its constructor checks the sizes, naming them (a cast would truncate 2.5 to 2)

    @property
    def mlp(self) -> MLP:
        return MLP(self.input_size, self.hidden_sizes, self.n_classes)

    @property
    def readout_path(self) -> tuple:
        return (len(self.hidden_sizes),)

    def init(self, rng: np.random.Generator, dtype=np.float32) -> list:
        return self.mlp.init(rng, dtype)

    def forward(self, params, x):
        """``x: (B, ...)`` with prod(...) = input_size → logits ``(B, n_classes)``."""
        return self.mlp.apply(params, x)

    def _layer_outputs(self, params, x):
        h = ops.reshape(x, (x.shape[0], -1))
        if h.shape[1] != self.input_size:
            raise ValueError(f"x: got {h.shape[1]} features per sample, expected {self.input_size}")
        inputs = []
        for p in params[:-1]:
            inputs.append(h)
            h = ops.relu(ops.linear(h, p["weight"], p["bias"]))
        inputs.append(h)
        return inputs

    def hidden(self, params, x):
        """The readout's input ``(B, hidden_sizes[-1])`` (post-ReLU); ``x`` itself with no hidden layer."""
        return self._layer_outputs(params, x)[-1]

    def readout(self, params, h):
        """Logits from readout inputs ``h (B, F)``; only the last layer's parameters are used."""
        p = params[-1]
        return ops.linear(h, p["weight"], p["bias"])

    def sparse_paths(self, params) -> list[tuple]:
        """Weight matrices kept sparse by SHARP: every layer but the readout."""
        return [(i, "weight") for i in range(len(params) - 1)]

    def unit_paths(self, params) -> list[tuple]:
        """Parameters whose rows produce the ``hidden`` units (row i feeds unit i)."""
        last = len(params) - 2
        return [(last, "weight"), (last, "bias")] if last >= 0 else []

    def unit_rows(self, path, shape) -> np.ndarray:
        """The hidden unit fed by each row of the ``unit_paths`` parameter of ``shape``."""
        return np.arange(shape[0]) % self.hidden_sizes[-1]

    def projection_layers(self, params, x) -> list[tuple]:
        """``[((i, "weight"), (i, "bias"), inputs (B, in_i))]`` for every layer i (NumPy inputs)."""
        plain = [stop_gradient(p) for p in params]
        inputs = self._layer_outputs([{k: stop_gradient(v) for k, v in p.items()} for p in plain], x)
        return [((i, "weight"), (i, "bias"), stop_gradient(h)) for i, h in enumerate(inputs)]


@dataclass(frozen=True)
class RNNClassifier:
    """A recurrent classifier: a stack of ``cell`` layers, then a linear head on the last step.

    ``x: (B, T, input_size)``; 2-D inputs ``(B, F)`` are cut into ``T = F / input_size``
    steps of ``input_size`` features (a flattened image read row by row with
    ``input_size`` = its width). Parameters: ``{"rnn": [layer dicts], "heads": {"class": …}}``.
    """

    cell: str
    input_size: int
    hidden_size: int
    n_classes: int
    num_layers: int = 1
    cell_kwargs: tuple = ()

    def __post_init__(self):
        check_positive_int("n_classes", self.n_classes)
        self.net  # its constructor checks the cell, sizes and layers, naming them, here rather than at init

    @property
    def net(self) -> SequenceModel:
        return SequenceModel(self.cell, self.input_size, self.hidden_size,
                             (HeadSpec("class", self.n_classes, "last"),), num_layers=self.num_layers,
                             cell_kwargs=self.cell_kwargs)

    readout_path = ("heads", "class")

    def init(self, rng: np.random.Generator, dtype=np.float32) -> dict:
        return self.net.init(rng, dtype)

    def constrain(self, params: dict) -> dict:
        """The cells' projection after each update (LeakyRNN's τ back to >= 1)."""
        return self.net.constrain(params)

    def _sequence(self, x):
        check_array("x", x)
        if x.ndim > 2 and x.shape[-1] != self.input_size:
            # e.g. (B, 28, 28) images read in steps of 56 pixels: the features in row order, cut below
            x = ops.reshape(x, (x.shape[0], int(np.prod(x.shape[1:]))))
        if x.ndim == 2:
            if x.shape[1] % self.input_size:
                raise ValueError(f"x: got {x.shape[1]} features, expected a multiple of input_size="
                                 f"{self.input_size} to cut into steps")
            return ops.reshape(x, (x.shape[0], x.shape[1] // self.input_size, self.input_size))
        if x.ndim != 3:
            raise ValueError(f"x: got shape {tuple(x.shape)}, expected (B, T, {self.input_size}) or (B, F)")
        return x

    def hidden(self, params, x):
        """The last step's output ``(B, hidden_size)``: the readout's input."""
        hs = self.net.features(params, self._sequence(x))
        return ops.getitem(hs, (slice(None), -1))

    def readout(self, params, h):
        p = params["heads"]["class"]
        return ops.linear(h, p["weight"], p["bias"])

    def forward(self, params, x):
        """``x: (B, T, input_size)`` or ``(B, F)`` → logits ``(B, n_classes)``."""
        return self.readout(params, self.hidden(params, x))

    def sparse_paths(self, params) -> list[tuple]:
        """Input and recurrent weight matrices of every layer (``weight_*`` leaves of 2 or more
        dimensions: dense matrices and the grouped input weights of ParaRNN's cells)."""
        out = []
        for i, layer in enumerate(params["rnn"]):
            out += [("rnn", i, k) for k, v in layer.items() if k.startswith("weight") and v.ndim >= 2]
        return out

    def unit_paths(self, params) -> list[tuple]:
        """Every parameter of the last layer whose rows feed its hidden units (:meth:`unit_rows`):
        weights and biases, diagonal recurrences, peepholes and time constants alike."""
        last = params["rnn"][-1]
        return [("rnn", len(params["rnn"]) - 1, k) for k, v in last.items()
                if v.ndim == 3 or (v.ndim in (1, 2) and v.shape[0] % self.hidden_size == 0)]

    def unit_rows(self, path, shape) -> np.ndarray:
        """The unit fed by each row: row g·H + i feeds unit i (gate g); in a grouped weight
        ``(heads, gates·H/heads, I/heads)`` row g·H/heads + j of head m feeds unit m·H/heads + j."""
        H = self.hidden_size
        if len(shape) == 3:
            heads, rows = shape[:2]
            return np.arange(heads)[:, None] * (H // heads) + np.arange(rows)[None, :] % (H // heads)
        return np.arange(shape[0]) % H

    def projection_layers(self, params, x) -> list[tuple]:
        """``weight_ih`` with the layer's inputs x_t (per head for a grouped weight, with its
        bias rows), ``weight_hh`` with h_{t−1} (h_0 = 0), and the head.

        Other recurrent parameters (diagonal recurrences, peepholes, time constants) are
        not listed: the orthogonal learner holds them fixed once it has a basis.
        """
        plain = {"rnn": [{k: stop_gradient(v) for k, v in layer.items()} for layer in params["rnn"]]}
        h = np.asarray(stop_gradient(self._sequence(x)))
        layers = []
        for i, (cell, p) in enumerate(zip(self.net.rnn.layers, plain["rnn"])):
            if not hasattr(cell, "hidden_size"):
                break  # bidirectional: stop here
            out, _ = cell.apply(p, h)
            out = np.asarray(out)
            B, T = h.shape[:2]
            if p.get("weight_ih") is not None and p["weight_ih"].ndim == 2:
                layers.append((("rnn", i, "weight_ih"), ("rnn", i, "bias_ih") if "bias_ih" in p else None,
                               h.reshape(B * T, -1)))
            elif p.get("weight_ih") is not None and p["weight_ih"].ndim == 3:
                layers += self._grouped_layers(i, p["weight_ih"].shape, h.reshape(B * T, -1))
            if p.get("weight_hh") is not None and p["weight_hh"].ndim == 2:
                prev = np.concatenate([np.zeros_like(out[:, :1]), out[:, :-1]], axis=1)
                layers.append((("rnn", i, "weight_hh"), ("rnn", i, "bias_hh") if "bias_hh" in p else None,
                               prev.reshape(B * T, -1)))
            h = out
        else:
            layers.append((("heads", "class", "weight"), ("heads", "class", "bias"), h[:, -1]))
        return layers

    def masked_diagonal_paths(self) -> list[tuple]:
        """``weight_hh`` of every LeakyRNN layer: its forward uses ``W_hh ⊙ (1 − I)``, so row i
        never sees h_i and the orthogonal learner must project each row without it."""
        return [("rnn", i, "weight_hh") for i, cell in enumerate(self.net.rnn.layers) if isinstance(cell, LeakyRNN)]

    def _grouped_layers(self, i: int, shape, inputs) -> list[tuple]:
        """One entry per head of a grouped ``weight_ih (heads, gates·Hh, Ih)``: head m's slab, its
        bias rows (gate g, neuron j of the head ↔ bias row g·H + m·Hh + j) and its input slice."""
        heads, rows, Ih = shape
        if heads == 1:
            return [(("rnn", i, "weight_ih", 0), ("rnn", i, "bias_ih"), inputs)]
        H, Hh = self.hidden_size, self.hidden_size // heads
        out = []
        for m in range(heads):
            bias_rows = tuple(int(r // Hh * H + m * Hh + r % Hh) for r in range(rows))
            out.append((("rnn", i, "weight_ih", m), ("rnn", i, "bias_ih", bias_rows),
                        inputs[:, m * Ih:(m + 1) * Ih]))
        return out
