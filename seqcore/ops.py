"""Differentiable array operations (each a primitive with a reference VJP).

They accept arrays of any backend, Python and NumPy scalars, and values traced by
:func:`seqcore.vjp`; the operators of traced values (``+``, ``*``, ``@``, indexing…)
call these.  A Python list or tuple is refused (``TypeError`` naming the operand): the
operation would act on the sequence (``[1., 2.] * 3`` repeats it) before any array saw it;
convert it with the backend's ``asarray`` first.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import backends as _backends
from .autodiff import Traced, stop_gradient
from .backends.numpy import ops as _ref
from .primitives import InputIndexError, _describe
from .validate import check_array, check_real, check_same_backend, check_shape, is_array, is_integer, is_real_number

__all__ = ["add", "sub", "mul", "div", "neg", "power", "tanh", "sigmoid", "relu", "leaky_relu", "exp",
           "log", "softplus", "clip", "square", "sum", "mean", "reshape", "swapaxes", "getitem",
           "concatenate", "stack", "where", "matmul", "linear"]


def _operand(name: str, x, scalar: bool = True):
    """``x`` is a real array of any backend (traced or not), or a real number when ``scalar``."""
    if is_array(x) or (scalar and isinstance(x, numbers.Number)):
        # complex: the output would be complex and only its real part differentiated
        raw = stop_gradient(x)
        dt = getattr(raw, "dtype", None)
        if isinstance(raw, numbers.Number) and not isinstance(raw, numbers.Real):
            got = f"{type(raw).__name__} {raw!r:.40}"
        elif getattr(dt, "kind", None) == "c" or getattr(dt, "is_complex", False) is True:  # NumPy/CuPy, torch
            got = f"a {str(dt).removeprefix('torch.')} array"
        else:
            return
        raise TypeError(f"{name}: got {got}, expected {'a real number or a real array' if scalar else 'a real array'}")
    what = "an array or a number" if scalar else "an array"
    raise TypeError(f"{name}: got {type(x).__name__} {x!r:.40}, expected {what} (convert a list or tuple "
                    "with the backend's asarray)")


def _one_backend(operands: dict) -> None:
    """The array operands (numbers aside) are of one library: a NumPy array beside a torch tensor
    would compute, then fail in the backward pass without naming either."""
    first = None
    for name, x in operands.items():
        raw = x.value if type(x) is Traced else x
        if not hasattr(raw, "shape") or isinstance(raw, np.generic):  # a number
            continue
        if first is None:
            first = (name, x, type(raw))
        elif type(raw) is not first[2]:  # the usual case, one array type, costs no more than this
            check_same_backend(name, x, first[0], first[1])


def _binary(prim, doc: str):
    def op(a, b):
        _operand("a", a), _operand("b", b)
        _one_backend({"a": a, "b": b})
        return prim(a, b)
    op.__name__ = op.__qualname__ = prim.name
    op.__doc__ = doc
    return op


add = _binary(_ref.add, "``a + b`` with NumPy broadcasting.")
sub = _binary(_ref.sub, "``a - b`` with NumPy broadcasting.")
mul = _binary(_ref.mul, "``a * b`` elementwise, with NumPy broadcasting.")
div = _binary(_ref.div, "``a / b`` elementwise, with NumPy broadcasting.")


def matmul(a, b):
    """``a @ b`` as NumPy's matmul (1-D operands included)."""
    _operand("a", a, scalar=False), _operand("b", b, scalar=False)
    _one_backend({"a": a, "b": b})
    return _ref.matmul(a, b)


def where(cond, a, b):
    """``a`` where ``cond``, else ``b``, elementwise (``cond`` carries no gradient)."""
    _operand("cond", cond), _operand("a", a), _operand("b", b)
    _one_backend({"cond": cond, "a": a, "b": b})
    return _ref.where(cond, a, b)


def _unary(prim):
    def op(x):
        _operand("x", x)
        return prim(x)
    op.__name__ = op.__qualname__ = prim.name
    op.__doc__ = f"{prim.doc}."
    return op


neg, tanh, sigmoid, relu, exp, log, softplus, square = (
    _unary(p) for p in (_ref.neg, _ref.tanh, _ref.sigmoid, _ref.relu, _ref.exp, _ref.log, _ref.softplus,
                        _ref.square))


def swapaxes(x, axis1: int, axis2: int):
    """Swap two axes (the axes are static arguments of the primitive)."""
    _operand("x", x, scalar=False)
    ndim = len(x.shape)
    return _ref.swapaxes(x, a1=_one_axis("axis1", axis1, ndim), a2=_one_axis("axis2", axis2, ndim))


def power(x, p):
    """``x ** p`` for a real number ``p`` (Python or NumPy, not a bool)."""
    _operand("x", x)
    if not is_real_number(p):
        raise TypeError(f"p: got {type(p).__name__} {p!r:.40}, expected a real number (int or float)")
    check_real("p", p)  # finite: a NaN or infinite power is NaN or inf almost everywhere
    p = int(p) if isinstance(p, numbers.Integral) else float(p)  # np.float64(2) would promote float32 x
    if p == 0 and is_array(x):
        # the constant 1, gradient 0: the reference VJP's 0 · x ** -1 is nan at x = 0
        raw = stop_gradient(x)
        ones = _backends.namespace(raw).ones_like(raw)
        return _ref.where(ones > 0, ones, x)
    return _ref.power(x, p)


def leaky_relu(x, negative_slope: float = 0.01):
    """``x`` where ``x > 0``, else ``negative_slope · x``."""
    _operand("x", x)
    if not is_real_number(negative_slope):
        raise TypeError(f"negative_slope: got {type(negative_slope).__name__} {negative_slope!r}, expected a number")
    # finite: NaN or inf would make every negative input NaN or infinite
    return _ref.leaky_relu(x, slope=check_real("negative_slope", negative_slope))


def clip(x, lo=None, hi=None):
    """Clamp to ``[lo, hi]`` (``None``: no bound); the gradient is zero where the value was clamped."""
    _operand("x", x)
    # a NaN bound makes every output NaN; lo, hi passed as given, so as not to promote x
    bounds = [_clip_bound(name, b) for name, b in (("lo", lo), ("hi", hi))]
    if bounds[0] is not None and bounds[1] is not None and np.any(bounds[0] > bounds[1]):
        raise ValueError(f"hi: got {hi!r:.60}, expected >= lo = {lo!r:.60} (everywhere, for array bounds)")
    return _ref.clip(x, lo=lo, hi=hi)


def _clip_bound(name: str, b):
    """A bound of :func:`clip` as a NumPy value: a finite real number, or an array (per-element
    bounds, ±inf allowed there) of the operand's library without NaN; ``None`` stays ``None``."""
    if b is None:
        return None
    if not is_array(b):
        return check_real(name, b)
    _operand(name, b)
    value = _backends.to_numpy(b)
    if value.dtype.kind not in "iuf" or np.isnan(value).any():
        raise ValueError(f"{name}: got an array bound of dtype {value.dtype}{' holding NaN' * (value.dtype.kind == 'f')}, "
                         "expected real numbers (±inf for no bound)")
    return value


def _one_axis(name: str, axis, ndim: int, owner: str = "x") -> int:
    """``axis`` (an int, not a bool) as an int in ``[-ndim, ndim)`` of ``owner``: out of range it
    is named here (NumPy would meet a huge one with an OverflowError)."""
    if not is_integer(axis):
        raise TypeError(f"{name}: got {type(axis).__name__} {axis!r:.60}, expected an int")
    if not -ndim <= axis < ndim:
        raise InputIndexError(f"{name}: got {axis!r:.40}, expected an axis in [{-ndim}, {ndim}) "
                              f"({owner} has {ndim} dim{'s' * (ndim != 1)})")
    return int(axis)


def _axis(axis, ndim: int):
    """``axis`` as ``None``, an int or a tuple of ints of an array of ``ndim`` dims: NumPy
    integers become ints, so that no backend's reduction or VJP meets a kind of axis its
    forward let through."""
    if axis is None:
        return None
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    if not all(is_integer(a) for a in axes):
        raise TypeError(f"axis: got {type(axis).__name__} {axis!r:.60}, expected None, an int or a tuple of ints")
    axes = tuple(_one_axis("axis", a, ndim) for a in axes)
    return axes if isinstance(axis, (tuple, list)) else axes[0]


def sum(x, axis=None, keepdims: bool = False):  # noqa: A001 - mirrors the array API name
    """Sum over ``axis`` (``None``: every axis)."""
    _operand("x", x, scalar=False)
    return _ref.sum_(x, axis=_axis(axis, len(x.shape)), keepdims=keepdims)


def mean(x, axis=None, keepdims: bool = False):
    """Mean over ``axis`` (``None``: every axis)."""
    _operand("x", x, scalar=False)
    return _ref.mean(x, axis=_axis(axis, len(x.shape)), keepdims=keepdims)


def reshape(x, shape):
    """``x`` in a new shape."""
    _operand("x", x, scalar=False)
    dims = (shape,) if is_integer(shape) else shape
    if is_array(dims) and getattr(dims, "ndim", None) == 1 and np.dtype(dims.dtype).kind in "iu":
        dims = dims.tolist()  # a 1-D integer array, as NumPy takes it
    if not isinstance(dims, (tuple, list)) or not all(is_integer(d) for d in dims):
        raise TypeError(f"shape: got {type(shape).__name__} {shape!r:.60}, expected an int or a sequence of ints")
    return _ref.reshape(x, shape=tuple(int(d) for d in dims))


def getitem(x, index):
    """``x[index]``: basic and integer-array indexing (the gradient scatters back)."""
    _operand("x", x, scalar=False)
    return _ref.getitem(x, index=index)


def _sequence(xs):
    if is_array(xs) or isinstance(xs, (str, bytes, dict)) or not hasattr(xs, "__iter__"):
        raise TypeError(f"xs: got {type(xs).__name__}, expected a list or tuple of arrays")
    xs = tuple(xs)
    if not xs:
        raise ValueError("xs: got an empty sequence, expected one or more arrays")
    for i, x in enumerate(xs):
        _operand(f"xs[{i}]", x)
    _one_backend({f"xs[{i}]": x for i, x in enumerate(xs)})
    return xs


def concatenate(xs, axis: int = 0):
    """The arrays of ``xs`` joined along an existing axis."""
    xs = _sequence(xs)
    ndim = len(getattr(xs[0], "shape", ()))
    if ndim == 0:  # before the axis, which it has none of
        raise ValueError(f"xs[0]: got {_describe(xs[0])}, expected an array with at least one axis to join along")
    return _ref.concatenate(*xs, axis=_one_axis("axis", axis, ndim, "xs[0]"))


def stack(xs, axis: int = 0):
    """The arrays of ``xs`` stacked along a new axis."""
    xs = _sequence(xs)
    ndim = len(getattr(xs[0], "shape", ())) + 1  # the new axis may go last
    return _ref.stack(*xs, axis=_one_axis("axis", axis, ndim, "the stacked result"))


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
