"""Reference elementwise, reduction, shape and matmul primitives (forward + VJP)."""
from __future__ import annotations

import math
import numbers
import operator

from ...primitives import define as _define_checked  # linear checks its own input

# what each array operation computes (its help text; every one defined below needs an entry)
DOCS = {
    "add": "a + b, with NumPy broadcasting (a broadcast operand's gradient is summed back to its shape)",
    "sub": "a − b, with NumPy broadcasting",
    "mul": "a · b elementwise, with NumPy broadcasting",
    "div": "a / b elementwise, with NumPy broadcasting",
    "neg": "−x elementwise",
    "power": "x ** p for a Python number p",
    "tanh": "tanh(x) elementwise",
    "sigmoid": "1 / (1 + exp(−x)) elementwise, without overflow at large |x|",
    "relu": "max(x, 0) elementwise (gradient 0 at x = 0)",
    "leaky_relu": "x where x > 0, else slope · x",
    "exp": "exp(x) elementwise",
    "log": "log(x) elementwise",
    "softplus": "log(1 + exp(x)) elementwise, without overflow at large x",
    "clip": "x clipped to [lo, hi] (gradient 0 outside)",
    "square": "x · x elementwise",
    "sum": "sum over axis (None: every axis), keepdims as in NumPy",
    "mean": "mean over axis (None: every axis), keepdims as in NumPy",
    "reshape": "x in a new shape",
    "swapaxes": "x with axes a1 and a2 swapped",
    "getitem": "x[index], basic and integer-array indexing (the gradient scatters back; repeats add up)",
    "concatenate": "arrays joined along an existing axis",
    "stack": "arrays stacked along a new axis",
    "where": "a where cond, else b, elementwise (cond carries no gradient)",
    "matmul": "a @ b as NumPy's matmul (1-D operands included)",
}


def define(name, fwd, bwd, arg_names=()):
    """An array operation: NumPy's own errors are the input's (``array_op``), documented in DOCS."""
    return _define_checked(name, fwd, bwd, doc=DOCS[name], array_op=True, arg_names=arg_names)


def _shape(x):
    return tuple(getattr(x, "shape", ()))


def _is_array(x):
    return hasattr(x, "shape") and hasattr(x, "dtype")


def unbroadcast(xp, g, shape):
    """Sum ``g`` down to ``shape`` (the inverse of broadcasting), for VJPs."""
    if _shape(g) == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def _grad_for(xp, x, g):
    return unbroadcast(xp, g, _shape(x)) if _is_array(x) else None


# -- binary arithmetic ----------------------------------------------------------------------

add = define("add", lambda xp, a, b: (a + b, (a, b)),
             lambda xp, r, g: (_grad_for(xp, r[0], g), _grad_for(xp, r[1], g)))
sub = define("sub", lambda xp, a, b: (a - b, (a, b)),
             lambda xp, r, g: (_grad_for(xp, r[0], g), _grad_for(xp, r[1], -g if _is_array(r[1]) else None)))
mul = define("mul", lambda xp, a, b: (a * b, (a, b)),
             lambda xp, r, g: (_grad_for(xp, r[0], g * r[1]) if _is_array(r[0]) else None,
                               _grad_for(xp, r[1], g * r[0]) if _is_array(r[1]) else None))


def _div_bwd(xp, r, g):
    a, b = r
    ga = _grad_for(xp, a, g / b) if _is_array(a) else None
    gb = _grad_for(xp, b, -g * a / (b * b)) if _is_array(b) else None
    return ga, gb


div = define("div", lambda xp, a, b: (a / b, (a, b)), _div_bwd)
neg = define("neg", lambda xp, a: (-a, None), lambda xp, r, g: (-g,))
power = define("power", lambda xp, a, p: (a ** p, (a, p)),
               lambda xp, r, g: (g * r[1] * r[0] ** (r[1] - 1) if r[1] != 0 else g * 0, None),  # x**0: 0·0**−1
               arg_names=("x", "p"))

# -- unary activations ----------------------------------------------------------------------


def _tanh_fwd(xp, x):
    y = xp.tanh(x)
    return y, y


tanh = define("tanh", _tanh_fwd, lambda xp, y, g: (g * (1 - y * y),))


def _sigmoid_fwd(xp, x):
    """σ(x), numerically stable, and e = exp(−|x|): its VJP's residual, a fresh array (not x:
    torch would refuse an in-place change of it)."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)), e


def sigmoid_np(xp, x):
    """Numerically stable logistic function."""
    return _sigmoid_fwd(xp, x)[0]


def _sigmoid_bwd(xp, e, g):
    # σ(x)σ(−x) = e/(1+e)²: y(1 − y) would be 0 once y rounds to 1
    return (g * (e / ((1 + e) * (1 + e))),)


sigmoid = define("sigmoid", _sigmoid_fwd, _sigmoid_bwd)
relu = define("relu", lambda xp, x: (xp.maximum(x, 0), x > 0), lambda xp, m, g: (g * m,))
leaky_relu = define("leaky_relu",
                    lambda xp, x, slope=0.01: (xp.where(x > 0, x, slope * x), x > 0),
                    lambda xp, m, g, slope=0.01: (xp.where(m, g, slope * g),))


def _exp_fwd(xp, x):
    y = xp.exp(x)
    return y, y


exp = define("exp", _exp_fwd, lambda xp, y, g: (g * y,))
log = define("log", lambda xp, x: (xp.log(x), x), lambda xp, x, g: (g / x,))
softplus = define("softplus",
                  lambda xp, x: (xp.logaddexp(0, x), x),
                  lambda xp, x, g: (g * sigmoid_np(xp, x),))
clip = define("clip",
              lambda xp, x, lo=None, hi=None: (xp.clip(x, lo, hi), x),
              lambda xp, x, g, lo=None, hi=None: (
                  g * ((x >= lo) if lo is not None else 1) * ((x <= hi) if hi is not None else 1),))
square = define("square", lambda xp, x: (x * x, x), lambda xp, x, g: (2 * g * x,))

# -- reductions -----------------------------------------------------------------------------


def _axes(axis, ndim: int) -> tuple:
    """The reduced axes, non-negative; ``axis`` an integer or a tuple of them (NumPy's included,
    which the forward accepts too)."""
    axes = (axis,) if isinstance(axis, numbers.Integral) else axis
    return tuple(operator.index(a) % ndim for a in axes)


def _expand(xp, g, shape, axis, keepdims):
    if axis is not None and not keepdims:
        g = xp.expand_dims(g, _axes(axis, len(shape)))
    return xp.broadcast_to(g, shape)


sum_ = define("sum",
              lambda xp, x, axis=None, keepdims=False: (x.sum(axis=axis, keepdims=keepdims), _shape(x)),
              lambda xp, s, g, axis=None, keepdims=False: (_expand(xp, g, s, axis, keepdims) + 0,))


def _count(shape, axis):
    n = 1
    for a in range(len(shape)) if axis is None else _axes(axis, len(shape)):
        n *= shape[a]
    return n


mean = define("mean",
              lambda xp, x, axis=None, keepdims=False: (x.mean(axis=axis, keepdims=keepdims), _shape(x)),
              lambda xp, s, g, axis=None, keepdims=False: (_expand(xp, g, s, axis, keepdims) / _count(s, axis),))

# -- shape ----------------------------------------------------------------------------------

reshape = define("reshape", lambda xp, x, shape: (x.reshape(shape), _shape(x)),
                 lambda xp, s, g, shape: (g.reshape(s),))
swapaxes = define("swapaxes", lambda xp, x, a1, a2: (xp.swapaxes(x, a1, a2), None),
                  lambda xp, r, g, a1, a2: (xp.swapaxes(g, a1, a2),))


def _is_basic(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, slice)) or p is None or p is Ellipsis for p in parts)


def _getitem_bwd(xp, r, g, index):
    shape, dtype = r
    out = xp.zeros(shape, dtype=dtype)
    if _is_basic(index):  # no repeated positions: plain assignment is exact
        out[index] = g
    else:
        xp.add.at(out, index, g)
    return (out,)


getitem = define("getitem", lambda xp, x, index: (x[index], (_shape(x), x.dtype)), _getitem_bwd)


def _concat_fwd(xp, *xs, axis=0):
    return xp.concatenate(xs, axis=axis), [x.shape[axis] for x in xs]


def _concat_bwd(xp, sizes, g, axis=0):
    out, start = [], 0
    for n in sizes:
        idx = [slice(None)] * g.ndim
        idx[axis] = slice(start, start + n)
        out.append(g[tuple(idx)])
        start += n
    return tuple(out)


concatenate = define("concatenate", _concat_fwd, _concat_bwd)
stack = define("stack", lambda xp, *xs, axis=0: (xp.stack(xs, axis=axis), len(xs)),
               lambda xp, n, g, axis=0: tuple(xp.take(g, i, axis=axis) for i in range(n)))
where = define("where",
               lambda xp, cond, a, b: (xp.where(cond, a, b), (cond, a, b)),
               lambda xp, r, g: (None,
                                 _grad_for(xp, r[1], xp.where(r[0], g, 0)) if _is_array(r[1]) else None,
                                 _grad_for(xp, r[2], xp.where(r[0], 0, g)) if _is_array(r[2]) else None),
               arg_names=("cond", "a", "b"))

# -- linear algebra -------------------------------------------------------------------------


def _matmul_bwd(xp, r, g):
    a, b = r
    # a 1-D operand is a row (left) or a column (right) whose axis the product dropped
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a.ndim == 1:
        g = g[..., None, :] if b.ndim > 1 else g[..., None]
    if b.ndim == 1:
        g = g[..., None]
    ga = g @ xp.swapaxes(b2, -1, -2)
    gb = xp.swapaxes(a2, -1, -2) @ g
    return (unbroadcast(xp, ga, a2.shape).reshape(a.shape), unbroadcast(xp, gb, b2.shape).reshape(b.shape))


matmul = define("matmul", lambda xp, a, b: (a @ b, (a, b)), _matmul_bwd)


def _rows(x):
    """``x`` as ``(rows, last axis)``; the row count spelled out: ``-1`` is ambiguous when the array
    is empty (0 input or output features)."""
    return x.reshape(math.prod(x.shape[:-1]), x.shape[-1])


def _linear_fwd(xp, x, weight, bias=None):
    if weight.shape[1] == 1:  # one input feature: a broadcast product has the GEMM's bits, ~3x faster
        y = x * weight[:, 0]
    else:  # one 2-D GEMM: NumPy's batched matmul over leading axes does not reach BLAS efficiently
        y = (_rows(x) @ weight.T).reshape(x.shape[:-1] + (weight.shape[0],))
    if bias is not None:
        if bias.dtype == y.dtype:  # in place into the fresh GEMM output: one (B·T, out) temporary less
            y += bias
        else:  # mixed dtypes promote, as the out-of-place sum does
            y = y + bias
    return y, (x, weight, bias is not None)


def _linear_bwd(xp, r, g):
    x, weight, has_bias = r
    x2, g2 = _rows(x), _rows(g)
    gx = (g2 @ weight).reshape(x.shape)
    gw = g2.T @ x2
    gb = g2.sum(axis=0) if has_bias else None
    return gx, gw, gb


linear = _define_checked("linear", _linear_fwd, _linear_bwd,
                doc="y = x @ weight.T + bias; x: (..., in), weight: (out, in), bias: (out,)")
