"""Differentiable array operations (each a primitive with a reference VJP).

They accept arrays of any backend, Python scalars, and values traced by
:func:`seqcore.vjp`; the operators of traced values (``+``, ``*``, ``@``, indexing…)
call these.
"""
from __future__ import annotations

from .backends.numpy import ops as _ref
from .validate import check_array, check_same_backend, check_shape

__all__ = ["add", "sub", "mul", "div", "neg", "power", "tanh", "sigmoid", "relu", "leaky_relu", "exp",
           "log", "softplus", "clip", "square", "sum", "mean", "reshape", "swapaxes", "getitem",
           "concatenate", "stack", "where", "matmul", "linear"]

add, sub, mul, div, neg = _ref.add, _ref.sub, _ref.mul, _ref.div, _ref.neg
tanh, sigmoid, relu, exp, log, softplus, square = (
    _ref.tanh, _ref.sigmoid, _ref.relu, _ref.exp, _ref.log, _ref.softplus, _ref.square)
matmul, where = _ref.matmul, _ref.where


def swapaxes(x, axis1: int, axis2: int):
    """Swap two axes (the axes are static arguments of the primitive)."""
    return _ref.swapaxes(x, a1=axis1, a2=axis2)


def power(x, p):
    """``x ** p`` for a Python number ``p``."""
    if not isinstance(p, (int, float)):
        raise TypeError(f"p: got {type(p).__name__}, expected a Python int or float")
    return _ref.power(x, p)


def leaky_relu(x, negative_slope: float = 0.01):
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
        raise TypeError(f"negative_slope: got {type(negative_slope).__name__} {negative_slope!r}, expected a number")
    return _ref.leaky_relu(x, slope=float(negative_slope))


def clip(x, lo=None, hi=None):
    """Clamp to ``[lo, hi]``; the gradient is zero where the value was clamped."""
    return _ref.clip(x, lo=lo, hi=hi)


def sum(x, axis=None, keepdims: bool = False):  # noqa: A001 - mirrors the array API name
    return _ref.sum_(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims: bool = False):
    return _ref.mean(x, axis=axis, keepdims=keepdims)


def reshape(x, shape):
    return _ref.reshape(x, shape=tuple(shape))


def getitem(x, index):
    return _ref.getitem(x, index=index)


def concatenate(xs, axis: int = 0):
    return _ref.concatenate(*xs, axis=axis)


def stack(xs, axis: int = 0):
    return _ref.stack(*xs, axis=axis)


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` with ``x: (..., in)``, ``weight: (out, in)``, ``bias: (out,)``."""
    check_array("x", x, floating=False)
    check_array("weight", weight, floating=False)
    check_same_backend("weight", weight, "x", x)  # float32 beside float64 promotes, as the cells allow
    if weight.ndim != 2:
        raise ValueError(f"weight: got shape {tuple(weight.shape)}, expected (out_features, in_features)")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x: got shape {tuple(x.shape)}, expected (..., {weight.shape[1]}) (weight's in_features)")
    if bias is not None:
        check_array("bias", bias, floating=False)
        check_same_backend("bias", bias, "x", x)
        check_shape("bias", bias, (weight.shape[0],), "(out_features,)")
    return _ref.linear(x, weight, bias)
