"""Model composition: input projection or embedding → stacked cells → readout heads.

A head is anything with ``name``, ``output_size`` and ``loss`` (``"last"``: classify the
state at each sequence's last marked step; ``"per_step"``: classify every marked step;
``"regression"``: predict real targets at marked steps).  Batches are ``(x, y, mask)``
with the conventions of :mod:`seqcore.tasks.base`: ``mask (B, T)`` marks where the loss
is taken, and with several heads the labels of head k are ``y[..., k]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from . import backends, nn, ops
from .autodiff import stop_gradient, vjp
from .cells.stack import stack
from .masks import last_step_index
from .validate import (check_array, check_bool, check_choice, check_params, check_positive_int, check_shape, dtype_kind,
                       finite_float, is_array, is_real_number)

__all__ = ["HeadSpec", "SequenceModel", "MLP"]

LOSS_KINDS = ("last", "per_step", "regression")


class HeadSpec(NamedTuple):
    """A readout head: ``name``, ``output_size`` and ``loss`` — ``"last"`` (classification at each
    sequence's last marked step), ``"per_step"`` (classification at every marked step) or
    ``"regression"`` (MSE at every marked step, where ``tolerance`` sets what counts as correct)."""

    name: str
    output_size: int
    loss: str
    tolerance: float | None = None  # regression: |prediction − target| below it counts as correct


def _as_head(h, i: int) -> HeadSpec:
    where = f"heads[{i}]"
    if isinstance(h, (tuple, list)) and not hasattr(h, "name"):
        if not 3 <= len(h) <= 4:
            raise ValueError(f"{where}: got {h!r}, expected (name, output_size, loss[, tolerance])")
        h = HeadSpec(*h)
    if not all(hasattr(h, a) for a in ("name", "output_size", "loss")):
        raise TypeError(f"{where}: got {type(h).__name__} {h!r:.60}, expected a HeadSpec(name, output_size, loss) "
                        "or an object with those fields")
    if not isinstance(h.name, str) or not h.name:
        raise ValueError(f"{where}.name: got {h.name!r}, expected a non-empty string")
    check_positive_int(f"{where}.output_size", h.output_size)
    spec = HeadSpec(h.name, int(h.output_size), h.loss, getattr(h, "tolerance", None))
    check_choice(f"{where}.loss", spec.loss, LOSS_KINDS)
    tol = spec.tolerance
    if tol is not None and (spec.loss != "regression" or not is_real_number(tol) or finite_float(tol) is None
                            or not tol > 0):
        raise ValueError(f"{where}.tolerance: got {spec.tolerance!r:.40} for a {spec.loss!r} head, "
                         "expected None, or a finite positive number for a regression head")
    return spec


def _to_backend(x, like):
    """Move a NumPy array to the backend of ``like`` (labels and masks come from tasks as NumPy)."""
    be = backends.get(backends.backend_of(stop_gradient(like)))
    return be.asarray(x)


def _mask_like(mask, like):
    """A batch's mask on the backend of ``like``; ``None`` (every step, weight 1) stays ``None``."""
    return None if mask is None else _to_backend(mask, like)


def _check_mask_shape(mask, BT: tuple) -> None:
    if mask is not None and tuple(np.shape(stop_gradient(mask))) != BT:
        raise ValueError(f"mask: got shape {tuple(np.shape(stop_gradient(mask)))}, expected {BT} (B, T) of x")


def _refuse_unused(name: str, params: dict, want: list) -> None:
    unused = sorted(set(params) - set(want), key=str)
    if unused:
        raise ValueError(f"{name}: got unused key(s) {unused}, expected the keys {want} from SequenceModel.init")


def _as_array(v):
    return np.asarray(v) if isinstance(v, (list, tuple)) else v


@dataclass(frozen=True)
class SequenceModel:
    """A recurrent sequence model.

    Args:
        cell: cell name (``seqcore.cells.names()``).
        input_size: features per step (or, with ``vocab_size``, the embedding width).
        hidden_size, num_layers, bidirectional: the recurrent stack.
        heads: readout heads (``HeadSpec(name, output_size, loss)`` or any object with those fields).
        vocab_size: when set, inputs are integer tokens ``(B, T)`` embedded to ``input_size``.
        cell_kwargs: extra cell arguments as a tuple of ``(key, value)`` pairs.
        feedback: generalised teacher forcing α in [0, 1] (``None``: inputs as given). The
            model then runs closed-loop, step by step: at steps t >= 1 it reads
            ``α·x_t + (1 − α)·ŷ_{t−1}``, where ŷ_{t−1} is its one per-step head's output at
            t − 1 (its forecast of x_t), and gradients flow through ŷ. α = 1 is teacher
            forcing, α = 0 free running. Needs one per-step head of ``input_size`` outputs,
            real inputs, a one-directional stack and the sequential mode.
    """

    cell: str
    input_size: int
    hidden_size: int
    heads: tuple
    num_layers: int = 1
    bidirectional: bool = False
    vocab_size: int | None = None
    cell_kwargs: tuple = field(default=())
    feedback: float | None = None

    def __post_init__(self):
        from . import cells
        check_choice("cell", self.cell, cells.names())
        check_positive_int("input_size", self.input_size)
        check_positive_int("hidden_size", self.hidden_size)
        check_positive_int("num_layers", self.num_layers)
        if isinstance(self.heads, (str, HeadSpec)) or not isinstance(self.heads, (tuple, list)):
            raise TypeError(f"heads: got {type(self.heads).__name__}, expected a tuple of heads (HeadSpec, ...)")
        if not self.heads:
            raise ValueError("heads: got none, expected at least one head")
        object.__setattr__(self, "heads", tuple(_as_head(h, i) for i, h in enumerate(self.heads)))
        names = [h.name for h in self.heads]
        if len(set(names)) != len(names):
            raise ValueError(f"heads: got names {names}, expected distinct names (parameters are keyed by name)")
        kinds = [h.loss for h in self.heads]
        if "last" in kinds and len(set(kinds)) > 1:  # no y could serve both layouts: loss() could never run
            raise ValueError(f"heads: got loss kinds {kinds}, expected 'last' heads alone (labels y (B, heads)) "
                             "or heads with a time axis alone (per_step, regression: y (B, T, ...))")
        if {"per_step", "regression"} <= set(kinds):  # integer classes and real targets cannot share one y
            raise ValueError(f"heads: got loss kinds {kinds}, expected 'per_step' heads alone (integer classes "
                             "y (B, T, heads)) or 'regression' heads alone (real targets y (B, T, out, heads))")
        check_bool("bidirectional", self.bidirectional)
        if self.vocab_size is not None:
            check_positive_int("vocab_size", self.vocab_size)
        if isinstance(self.cell_kwargs, dict):
            object.__setattr__(self, "cell_kwargs", tuple(sorted(self.cell_kwargs.items())))
        try:
            kwargs = dict(self.cell_kwargs)
        except (TypeError, ValueError):
            raise TypeError(f"cell_kwargs: got {self.cell_kwargs!r}, expected (key, value) pairs or a dict") from None
        cells.make(self.cell, self.input_size, self.hidden_size, **kwargs)  # the cell's own field checks
        if self.feedback is not None:
            self._check_feedback()

    def _check_feedback(self) -> None:
        a = self.feedback
        if not is_real_number(a) or not 0.0 <= a <= 1.0:
            raise ValueError(f"feedback: got {a!r}, expected None or a number in [0, 1]")
        head = self.heads[0]
        if len(self.heads) != 1 or head.loss == "last" or head.output_size != self.input_size:
            raise ValueError(f"feedback: got {a!r} with heads {[(h.name, h.output_size, h.loss) for h in self.heads]}, "
                             f"expected one per-step head of input_size={self.input_size} outputs (its forecast "
                             "of the next input)")
        if self.vocab_size is not None or self.bidirectional:
            raise ValueError(f"feedback: got {a!r}, expected real inputs (no vocab_size) and a one-directional "
                             "stack: a closed loop runs forward in time")

    @property
    def rnn(self):
        from . import cells
        # the first layer's real sizes: fields such as DiagGRU's heads must divide them
        cls = type(cells.make(self.cell, self.input_size, self.hidden_size, **dict(self.cell_kwargs)))
        return stack(cls, self.input_size, self.hidden_size, self.num_layers, self.bidirectional,
                     **dict(self.cell_kwargs))

    def init(self, rng: np.random.Generator, dtype=np.float32) -> dict:
        rnn = self.rnn
        params: dict[str, Any] = {"rnn": rnn.init(rng, dtype)}
        if self.vocab_size is not None:
            params["embedding"] = nn.Embedding(self.vocab_size, self.input_size).init(rng, dtype)
        params["heads"] = {h.name: nn.Linear(rnn.output_size, h.output_size).init(rng, dtype) for h in self.heads}
        return params

    def _check_params(self, params, heads=()):
        want = ["rnn", "heads"] + (["embedding"] if self.vocab_size is not None else [])
        if not isinstance(params, dict) or not set(want) <= set(params):
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"params: got {got}, expected a dict with keys {want} from SequenceModel.init")
        # an "embedding" for a model without a vocabulary, or a misspelt head: it would be silently unused
        _refuse_unused("params", params, want)
        if isinstance(params["heads"], dict):
            _refuse_unused("params['heads']", params["heads"], [h.name for h in self.heads])
        missing = [h.name for h in heads if not isinstance(params["heads"], dict) or h.name not in params["heads"]]
        if missing:
            raise ValueError(f"params['heads']: missing {missing}, expected a dict with a Linear's parameters "
                             f"for every head {[h.name for h in self.heads]}")

    def constrain(self, params: dict) -> dict:
        """Parameters projected onto their feasible set (e.g. LeakyRNN's τ ≥ 1)."""
        self._check_params(params)
        return {**params, "rnn": self.rnn.constrain(params["rnn"])}

    def features(self, params: dict, x, mode: str = "sequential", lengths=None):
        """``x: (B, T, input_size)`` (or tokens ``(B, T)``) → hidden outputs ``(B, T, output_size)``.

        ``lengths`` (B,): sequence lengths of a right-padded batch, read by bidirectional stacks
        (their backward direction starts at each sequence's last step; see ``Bidirectional.apply``)."""
        self._check_params(params)
        if self.vocab_size is not None:
            shape = tuple(np.shape(stop_gradient(x))) if hasattr(x, "shape") else None
            if shape is None or len(shape) != 2:  # the tokens themselves, before embedding adds a feature axis
                raise ValueError(f"x: got {'shape ' + str(shape) if shape is not None else type(x).__name__}, "
                                 f"expected integer tokens (B, T) (vocab_size={self.vocab_size})")
            x = nn.Embedding(self.vocab_size, self.input_size).apply(params["embedding"], x)
        if self.feedback is not None and self.feedback != 1:
            return self._closed_loop_features(params, x, mode)
        hs, _ = self.rnn.apply(params["rnn"], x, mode=mode, lengths=lengths)
        return hs

    def _closed_loop_features(self, params, x, mode):
        """Generalised teacher forcing: one step at a time, each input mixing the data with the
        previous step's forecast (see ``feedback``)."""
        if mode != "sequential":
            raise ValueError(f"mode: got {mode!r} with feedback={self.feedback}, expected 'sequential' "
                             "(a closed loop needs each forecast before the next step)")
        rnn, a = self.rnn, float(self.feedback)
        rnn.layers[0].check_input(x)  # the whole sequence, not the one-step slices the loop feeds
        p = self._head_params(params, self.heads[0], rnn.output_size)
        state, outs, forecast = None, [], None
        for t in range(x.shape[1]):
            u = x[:, t:t + 1]
            if forecast is not None:
                u = u * a + forecast * (1.0 - a)
            h, state = rnn.apply(params["rnn"], u, state)
            forecast = ops.linear(h, p["weight"], p["bias"])
            outs.append(h)
        return outs[0] if len(outs) == 1 else ops.concatenate(outs, axis=1)

    def _active(self, heads) -> tuple:
        if heads is None:
            return self.heads
        if isinstance(heads, str) or not isinstance(heads, (tuple, list)):
            raise TypeError(f"heads: got {heads!r}, expected None or a list of head names")
        by_name = {h.name: h for h in self.heads}
        missing = [n for n in heads if not isinstance(n, str) or n not in by_name]
        if missing:
            raise ValueError(f"heads: got {missing}, expected names among {list(by_name)}")
        if not heads or len(set(heads)) != len(heads):
            raise ValueError(f"heads: got {list(heads)}, expected one or more distinct names (each head's labels "
                             "are one column of y)")
        return tuple(by_name[n] for n in heads)

    def outputs(self, params: dict, x, mask=None, mode: str = "sequential", heads=None) -> dict:
        """Per-head outputs: ``(B, C)`` for ``"last"`` heads, ``(B, T, C)`` otherwise.

        ``heads``: names of the heads to compute (default: all).
        """
        active = self._active(heads)
        hs, last = self._head_inputs(params, x, mask, mode, active)
        out = {}
        for h in active:
            p = self._head_params(params, h, hs.shape[-1])
            out[h.name] = ops.linear(last if h.loss == "last" else hs, p["weight"], p["bias"])
        return out

    def _head_inputs(self, params, x, mask, mode, active):
        """``(hs, last)``: the hidden outputs ``(B, T, F)`` and, when an active head reads the last
        marked step, its features ``(B, F)``; one gather serves every such head (the backward of
        each gather fills a whole (B, T, F) array)."""
        self._check_params(params, active)
        reads_last = any(h.loss == "last" for h in active)
        idx = last_step_index(mask) if reads_last and mask is not None else None
        lengths = None
        if idx is not None and self.bidirectional:
            # a last-step head's mask ends each sequence: the backward direction starts there, not in the padding
            _check_mask_shape(mask, tuple(np.shape(stop_gradient(x)))[:2])
            lengths = idx + 1
        hs = self.features(params, x, mode, lengths=lengths)
        B, T = hs.shape[:2]
        _check_mask_shape(mask, (B, T))
        last = None
        if reads_last:
            last = ops.getitem(hs, (np.arange(B), idx if idx is not None else np.full(B, T - 1)))
        return hs, last

    @staticmethod
    def _head_params(params, h, features: int) -> dict:
        return check_params(f"params['heads'][{h.name!r}]", params["heads"][h.name],
                            {"weight": (h.output_size, features), "bias": (h.output_size,)}, "SequenceModel.init")

    @staticmethod
    def head_targets(y, k: int, n_heads: int):
        """Labels of the k-th of ``n_heads`` active heads (``y[..., k]`` when there are several)."""
        SequenceModel._check_label_columns(y, n_heads)
        return y if n_heads == 1 else y[..., k]

    @staticmethod
    def _check_label_columns(y, n_heads: int) -> None:
        """With several active heads, ``y`` holds one label column per head, in their order."""
        if n_heads > 1 and (not hasattr(y, "shape") or len(y.shape) < 2 or y.shape[-1] != n_heads):
            raise ValueError(f"y: got shape {tuple(getattr(y, 'shape', ()))}, expected a last axis of {n_heads} "
                             "(one label column per active head)")

    @staticmethod
    def _unpack(batch):
        if not isinstance(batch, (tuple, list)) or len(batch) != 3:
            raise TypeError(f"batch: got {type(batch).__name__}"
                            f"{' of length ' + str(len(batch)) if isinstance(batch, (tuple, list)) else ''}, "
                            "expected (x, y, mask)")
        x, y, mask = batch
        # nested lists of labels or weights as arrays, so that every method reads them alike
        return x, _as_array(y), _as_array(mask)

    @staticmethod
    def _check_y(y, active, x) -> None:
        """``y`` against the active heads, named as the caller passed it in ``batch``: the losses
        would name a per-head slice of it (``labels``, ``target``) and quote that slice's shape.
        ``x`` is the batch's checked input, whose first two axes are B and T."""
        B, T = tuple(np.shape(stop_gradient(x)))[:2]
        n, kind = len(active), active[0].loss  # one kind of head at a time (see __post_init__)
        if kind == "regression":
            sizes = {h.output_size for h in active}
            want, axes = (B, T, sizes.pop() if len(sizes) == 1 else None), "(B, T, out"
        else:
            want, axes = ((B,), "(B") if kind == "last" else ((B, T), "(B, T")
        if n > 1:
            want, axes = want + (n,), axes + ", heads"
        what = f"{axes}) for {n} {kind!r} head{'s' * (n > 1)}"
        y = stop_gradient(y)
        if not is_array(y):
            raise TypeError(f"y: got {type(y).__name__} {y!r:.40}, expected an array {what}")
        if kind == "regression":
            check_array("y", y)  # real targets
        elif dtype_kind(y) not in "iu":
            raise TypeError(f"y: got dtype {y.dtype}, expected integer class labels {what}")
        check_shape("y", y, want, what)
        if kind == "regression" or not y.size:
            return
        classes = [h.output_size for h in active]
        if int(y.min()) >= 0 and int(y.max()) < min(classes):  # the usual case: two reductions
            return
        for k, (h, C) in enumerate(zip(active, classes)):
            col = y if n == 1 else y[..., k]
            lo, hi = int(col.min()), int(col.max())
            if lo < 0 or hi >= C:
                where = "" if n == 1 else f"[..., {k}]"
                raise ValueError(f"y{where}: got labels in [{lo}, {hi}] for head {h.name!r}, expected [0, {C - 1}]")

    def _losses_from(self, outs, batch, active) -> dict:
        x, y, mask = self._unpack(batch)
        self._check_y(y, active, x)
        res = {}
        for k, h in enumerate(active):
            o = outs[h.name]
            t = _to_backend(self.head_targets(y, k, len(active)), o)
            if h.loss == "last":
                res[h.name] = nn.cross_entropy(o, t)
            elif h.loss == "per_step":
                res[h.name] = nn.cross_entropy(o, t, _mask_like(mask, o))
            else:
                res[h.name] = nn.mse(o, t, _mask_like(mask, o))
        return res

    def losses(self, params: dict, batch, mode: str = "sequential", heads=None) -> dict:
        """Per-head losses (differentiable scalars) for ``batch = (x, y, mask)``.

        With ``heads`` (names, in label-column order) only those heads are used; with several,
        the labels of the k-th are ``y[..., k]``, and a single active head takes ``y`` without
        the head axis.
        """
        active = self._active(heads)
        x, _, mask = self._unpack(batch)
        outs = self.outputs(params, x, mask, mode, heads=[h.name for h in active])
        return self._losses_from(outs, batch, active)

    def loss(self, params: dict, batch, mode: str = "sequential", heads=None):
        """Sum of the active heads' losses (a differentiable scalar).

        Several last-step classification heads of one size (the N-curricula's heads) are
        evaluated together: one product with their weights side by side and one cross-entropy
        over ``(B, heads, C)``, whose mean times the number of heads is the sum of the heads'
        means (equal up to rounding; the loss and its gradient 1.3x faster at 14 heads).
        """
        active = self._active(heads)
        if len(active) > 1 and all(h.loss == "last" for h in active) and len({h.output_size for h in active}) == 1:
            return self._joint_last_loss(params, batch, mode, active)
        total = None
        for v in self.losses(params, batch, mode, heads).values():
            total = v if total is None else total + v
        return total

    def _joint_last_loss(self, params, batch, mode, active):
        x, y, mask = self._unpack(batch)
        _, last = self._head_inputs(params, x, mask, mode, active)
        ps = [self._head_params(params, h, last.shape[-1]) for h in active]
        n, C = len(active), active[0].output_size
        weight = ops.concatenate([p["weight"] for p in ps], axis=0)  # (n·C, F): head k's rows k·C … k·C + C − 1
        bias = ops.concatenate([p["bias"] for p in ps], axis=0)
        logits = ops.reshape(ops.linear(last, weight, bias), (last.shape[0], n, C))
        self._check_y(y, active, x)
        return nn.cross_entropy(logits, _to_backend(y, logits)) * n

    def loss_and_grad(self, params: dict, batch, mode: str = "sequential", heads=None):
        """``(loss, grads)``: the summed loss as a float and its gradient, shaped like ``params``."""
        value, pullback = vjp(lambda p: self.loss(p, batch, mode, heads), params)
        xp = backends.namespace(value)
        (grads,) = pullback(xp.ones_like(value))
        return float(value), grads

    def evaluate(self, params: dict, batch, mode: str = "sequential", heads=None) -> dict:
        """Per-head ``{"loss": float, "accuracy": float}`` (accuracy for classification heads, and for
        regression heads with a ``tolerance``: the fraction of marked steps within it)."""
        active = self._active(heads)
        x, y, mask = self._unpack(batch)
        outs = self.outputs(params, x, mask, mode, heads=[h.name for h in active])
        losses = self._losses_from(outs, batch, active)
        res = {}
        for k, h in enumerate(active):
            t = self.head_targets(y, k, len(active))
            r = {"loss": float(losses[h.name])}
            if h.loss == "last":
                r["accuracy"] = nn.accuracy(outs[h.name], t)
            elif h.loss == "per_step":
                r["accuracy"] = nn.accuracy(outs[h.name], t, mask)
            elif h.tolerance is not None:
                r["accuracy"] = nn.tolerance_accuracy(outs[h.name], t, h.tolerance, mask)
            res[h.name] = r
        return res

    def example_losses(self, params: dict, batch, mode: str = "sequential", heads=None):
        """Per-example losses ``(B,)`` summed over the active heads (NumPy, no gradient): each
        example's :meth:`loss` on its own — per-step and regression heads the mask-weighted mean
        over its steps (0 where its weights are all zero)."""
        active = self._active(heads)
        x, y, mask = self._unpack(batch)
        outs = self.outputs(params, x, mask, mode, heads=[h.name for h in active])
        self._check_y(y, active, x)
        total = np.zeros(x.shape[0])
        if mask is not None:  # the checks loss and evaluate make: (B, T), finite weights >= 0
            mask = nn._check_mask(np.asarray(stop_gradient(mask)), tuple(x.shape[:2]))
        w = np.ones(x.shape[:2]) if mask is None else np.asarray(mask, dtype=np.float64)
        w_total = w.sum(-1)
        w_total = np.where(w_total > 0, w_total, 1.0)  # fractional weights are a weighted mean, not shrunk

        def step_mean(v):  # a step of weight 0 does not count, even a NaN one, as in loss()
            return (np.where(w > 0, v, 0.0) * w).sum(-1) / w_total
        for k, h in enumerate(active):
            o = backends.to_numpy(outs[h.name]).astype(np.float64)
            t = np.asarray(self.head_targets(y, k, len(active)))
            if h.loss == "regression":
                total += step_mean(((o - t) ** 2).mean(-1))
                continue
            z = o - o.max(-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            nll = -np.take_along_axis(logp, t[..., None].astype(np.int64), -1)[..., 0]
            if h.loss == "per_step":
                nll = step_mean(nll)
            total += nll
        return total


@dataclass(frozen=True)
class MLP:
    """A plain multi-layer perceptron on flattened inputs (the usual model for permuted-image streams).

    ``x: (B, ...) -> logits (B, output_size)``; hidden layers use ReLU.
    """

    input_size: int
    hidden_sizes: tuple
    output_size: int

    def __post_init__(self):
        check_positive_int("input_size", self.input_size)
        check_positive_int("output_size", self.output_size)
        if not isinstance(self.hidden_sizes, (tuple, list)):
            raise TypeError(f"hidden_sizes: got {self.hidden_sizes!r}, expected a tuple of layer widths")
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        for i, h in enumerate(self.hidden_sizes):
            check_positive_int(f"hidden_sizes[{i}]", h)

    def _layers(self):
        sizes = (self.input_size,) + tuple(self.hidden_sizes) + (self.output_size,)
        return [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]

    def init(self, rng, dtype=np.float32) -> list:
        return [layer.init(rng, dtype) for layer in self._layers()]

    def apply(self, params: list, x):
        """``x: (B, ...)`` with ``input_size`` features per sample -> logits ``(B, output_size)``."""
        check_array("x", x, floating=True)
        if x.ndim < 1:
            raise ValueError(f"x: got shape {tuple(x.shape)}, expected (B, ...)")
        n_layers = len(self.hidden_sizes) + 1
        if not isinstance(params, (list, tuple)) or len(params) != n_layers:
            raise ValueError(f"params: got {type(params).__name__}"
                             f"{' of length ' + str(len(params)) if isinstance(params, (list, tuple)) else ''}, "
                             f"expected a list of {n_layers} layer dicts from MLP.init")
        B = x.shape[0]
        h = ops.reshape(x, (B, math.prod(x.shape[1:])))  # not -1: NumPy cannot infer it when B = 0
        if h.shape[1] != self.input_size:
            raise ValueError(f"x: got {h.shape[1]} features per sample, expected {self.input_size}")
        layers = self._layers()
        for i, (layer, p) in enumerate(zip(layers, params)):
            h = layer.apply(p, h)
            if i < len(layers) - 1:
                h = ops.relu(h)
        return h
