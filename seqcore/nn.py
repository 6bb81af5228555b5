"""Layers and losses: Linear, Embedding, activations, masked cross-entropy and MSE.

A layer is a frozen dataclass with ``init(rng, dtype) -> params`` and
``apply(params, x)``; everything is built from primitives, so ``seqcore.vjp``
differentiates it on every backend.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ops
from .backends.numpy import losses as _losses
from .autodiff import stop_gradient
from .validate import (check_array, check_bool, check_param_dtype, check_params, check_positive_int, check_rng,
                       check_shape, dtype_kind, finite_float, is_array, is_real_number)

__all__ = ["Linear", "Embedding", "cross_entropy", "mse", "accuracy", "tolerance_accuracy", "tanh", "sigmoid", "relu",
           "leaky_relu", "softplus"]

tanh, sigmoid, relu, leaky_relu, softplus = ops.tanh, ops.sigmoid, ops.relu, ops.leaky_relu, ops.softplus


@dataclass(frozen=True)
class Linear:
    """``y = x @ weight.T + bias``; ``x: (..., in_features) -> (..., out_features)``."""

    in_features: int
    out_features: int
    bias: bool = True

    def __post_init__(self):
        check_positive_int("in_features", self.in_features)
        check_positive_int("out_features", self.out_features)
        check_bool("bias", self.bias)

    def param_shapes(self) -> dict:
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def init(self, rng, dtype=np.float32) -> dict:
        check_rng(rng)
        dtype = check_param_dtype(dtype)
        k = 1.0 / np.sqrt(self.in_features)
        p = {"weight": rng.uniform(-k, k, (self.out_features, self.in_features)).astype(dtype)}
        if self.bias:
            p["bias"] = rng.uniform(-k, k, (self.out_features,)).astype(dtype)
        return p

    def apply(self, params: dict, x):
        """``x: (..., in_features) -> (..., out_features)``."""
        check_array("x", x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: got shape {tuple(x.shape)}, expected (..., {self.in_features})")
        check_params("params", params, self.param_shapes(), "Linear.init")
        return ops.linear(x, params["weight"], params["bias"] if self.bias else None)


@dataclass(frozen=True)
class Embedding:
    """Token ids ``(B, T)`` → vectors ``(B, T, dim)``."""

    num_embeddings: int
    dim: int

    def __post_init__(self):
        check_positive_int("num_embeddings", self.num_embeddings)
        check_positive_int("dim", self.dim)

    def init(self, rng, dtype=np.float32) -> dict:
        check_rng(rng)
        dtype = check_param_dtype(dtype)
        return {"weight": rng.normal(0, 1, (self.num_embeddings, self.dim)).astype(dtype)}

    def apply(self, params: dict, tokens):
        """``tokens: (...)`` integer ids in ``[0, num_embeddings)`` -> ``(..., dim)``."""
        tokens = stop_gradient(tokens)
        if not is_array(tokens) or dtype_kind(tokens) not in "iu":
            raise TypeError(f"tokens: got {getattr(tokens, 'dtype', type(tokens).__name__)}, expected an integer array")
        check_params("params", params, {"weight": (self.num_embeddings, self.dim)}, "Embedding.init")
        if tokens.size:
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.num_embeddings:
                raise ValueError(f"tokens: got ids in [{lo}, {hi}], expected ids in [0, {self.num_embeddings - 1}]")
        return ops.getitem(params["weight"], tokens)


def _check_mask(mask, shape):
    if mask is None:
        return None
    mask = stop_gradient(mask)
    if not is_array(mask):
        raise TypeError(f"mask: got {type(mask).__name__}, expected an array of shape {shape}")
    check_shape("mask", mask, shape)
    if dtype_kind(mask) not in "biuf":
        raise TypeError(f"mask: got dtype {mask.dtype}, expected bool or real numbers (weights ≥ 0)")
    if mask.size:
        lo = float(mask.min())
        if not lo >= 0 or not np.isfinite(float(mask.max())):
            raise ValueError(f"mask: got values in [{lo}, {float(mask.max())}], expected finite weights ≥ 0")
    return mask


def _check_logits_and_labels(logits, labels):
    """``logits (..., C)`` and integer ``labels (...)`` in ``[0, C)``; returns the labels (gradient stopped)."""
    check_array("logits", logits)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits: got shape {tuple(logits.shape)}, expected (..., C) with C >= 1 classes")
    labels = stop_gradient(labels)
    if not is_array(labels) or dtype_kind(labels) not in "iu":
        raise TypeError(f"labels: got {getattr(labels, 'dtype', type(labels).__name__)}, expected an integer array")
    check_shape("labels", labels, tuple(logits.shape[:-1]), "(the shape of logits without the class axis)")
    C = logits.shape[-1]
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= C):
        raise ValueError(f"labels: got values in [{int(labels.min())}, {int(labels.max())}], expected [0, {C - 1}]")
    return labels


def cross_entropy(logits, labels, mask=None):
    """Mean softmax cross-entropy over the positions, weighted by ``mask``: ``Σ w·ℓ / Σ w``.

    Args:
        logits: ``(..., C)`` — e.g. ``(B, C)`` for a last-step head, ``(B, T, C)`` per step.
        labels: integer ``(...)`` in ``[0, C)``.
        mask: ``(...)`` finite weights ≥ 0 (typically 0/1), or ``None`` for all positions; an
            all-zero mask gives 0. A position of weight 0 does not count, even with a NaN or
            −inf logit (nor does a NaN target in :func:`mse`).
    """
    labels = _check_logits_and_labels(logits, labels)
    return _losses.softmax_cross_entropy(logits, labels, _check_mask(mask, tuple(labels.shape)))


def mse(pred, target, mask=None):
    """Mean squared error over positions and features, positions weighted by ``mask`` (as in
    :func:`cross_entropy`); ``pred, target: (..., F)``, ``mask: (...)``."""
    check_array("pred", pred)
    if pred.ndim < 1 or pred.shape[-1] < 1:
        raise ValueError(f"pred: got shape {tuple(pred.shape)}, expected (..., F) with F >= 1 features")
    check_array("target", target)
    check_shape("target", stop_gradient(target), tuple(pred.shape), "(the shape of pred)")
    return _losses.mse(pred, target, _check_mask(mask, tuple(pred.shape[:-1])))


def _as_numpy(*values):
    """Plain NumPy arrays of (possibly traced) arrays of any backend, for metrics."""
    from . import backends
    return [None if v is None else backends.to_numpy(v) for v in values]


def _masked_fraction(correct: np.ndarray, mask) -> float:
    """Mean of ``correct`` weighted by ``mask`` (all positions when None): ``Σ w·c / Σ w``, 0.0
    for an all-zero mask (or no positions)."""
    w = np.ones(correct.shape) if mask is None else mask.astype(np.float64)
    top = float(w.max()) if w.size else 0.0
    if top == 0:
        return 0.0
    w = w / top  # scale-free: tiny weights (1e-13) or huge ones (1e308) neither vanish nor overflow in the sums
    return float((correct * w).sum() / w.sum())


def tolerance_accuracy(pred, target, tolerance: float, mask=None) -> float:
    """Fraction of positions where every feature of ``pred`` is within ``tolerance`` of
    ``target`` (``pred, target: (..., F)``), positions weighted by ``mask: (...)`` as in
    :func:`accuracy`; a plain number, not differentiable. A non-finite ``pred`` is wrong."""
    # finite_float: 10**400 passes a comparison with inf, then overflows in NumPy's
    if not is_real_number(tolerance) or finite_float(tolerance) is None or not tolerance > 0:
        raise ValueError(f"tolerance: got {tolerance!r:.40}, expected a finite positive number")
    check_array("pred", pred)
    check_array("target", target)
    if pred.ndim < 1:
        raise ValueError(f"pred: got shape {tuple(pred.shape)}, expected (..., F)")
    _check_mask(mask, tuple(pred.shape[:-1]))
    p, t, m = _as_numpy(pred, target, mask)
    if p.shape != t.shape:
        raise ValueError(f"target: got shape {t.shape}, expected {p.shape} (the shape of pred)")
    with np.errstate(invalid="ignore"):  # inf − inf is NaN, which the comparison counts as wrong
        ok = (np.abs(p.astype(np.float64) - t.astype(np.float64)) < tolerance).all(axis=-1)
    return _masked_fraction(ok, m)


def accuracy(logits, labels, mask=None) -> float:
    """Fraction of positions whose arg-max matches the label (a plain number, not differentiable).

    ``logits: (..., C)``, integer ``labels: (...)`` in ``[0, C)``, ``mask: (...)`` finite
    weights ≥ 0 or ``None``: the weighted mean ``Σ w·correct / Σ w``, 0.0 for an all-zero
    mask. A position with a non-finite logit (nan, ±inf) counts as wrong.
    """
    labels = _check_logits_and_labels(logits, labels)
    _check_mask(mask, tuple(labels.shape))
    z, lab, m = _as_numpy(logits, labels, mask)
    # argmax of an all-nan row is 0: without the finiteness test a diverged model scores on label 0
    correct = (z.argmax(axis=-1) == lab) & np.isfinite(z).all(axis=-1)
    return _masked_fraction(correct, m)
