"""A layer-level tape: reverse-mode differentiation by composing primitives' VJPs.

``seqcore.vjp(f, *args)`` wraps every floating-point array among ``args`` (parameter
dicts included) in a :class:`Traced`, runs ``f``, and returns ``f``'s output with a
``pullback``.  Each primitive called on a traced value records one node; the pullback
walks the nodes in reverse creation order.  Only primitives are recorded: a traced value
refuses to turn into a plain array (``np.asarray(t)`` raises), so an untracked operation
can never drop a gradient silently.
"""
from __future__ import annotations

import itertools
import math
import numbers
import weakref
from typing import Any, Callable

import numpy as np

from .tree import key_path_name, node_kind, tree_flatten, tree_key_paths, tree_map, tree_unflatten

__all__ = ["Traced", "vjp", "value_and_grad", "stop_gradient"]

_counter = itertools.count()

_UNTRACKED = ("a traced seqcore array cannot be converted to a plain array inside seqcore.vjp; "
              "use seqcore.ops (or the array's operators) so the gradient is recorded, or "
              "seqcore.stop_gradient(x) if no gradient should flow")


def _refuse_numpy_call(method: str, kwargs: dict) -> None:
    """NumPy's ``np.sum(t)`` calls ``t.sum(axis=..., dtype=None, out=None)``: say what to use instead."""
    if kwargs:
        raise TypeError(f"{method}: got NumPy's keyword argument(s) {sorted(kwargs)}: {_UNTRACKED}")


class _Node:
    __slots__ = ("name", "inputs", "outputs", "values", "multi", "pullback", "xp", "seq")

    def __init__(self, name, inputs, pullback, xp):
        self.name = name
        self.inputs = inputs
        self.outputs: list = []  # weak references to the Traced outputs
        self.values: list = []   # their arrays (zeros_like for an output that got no gradient)
        self.multi = False
        self.pullback = pullback
        self.xp = xp
        self.seq = next(_counter)


class Traced:
    """An array being differentiated.  Arithmetic on it goes through seqcore primitives."""

    __slots__ = ("value", "node", "__weakref__")
    __array_ufunc__ = None  # make NumPy defer to our reflected operators

    def __init__(self, value, node=None):
        self.value = value
        self.node = node

    # -- array-like metadata ------------------------------------------------------------
    shape = property(lambda self: tuple(self.value.shape))
    dtype = property(lambda self: self.value.dtype)
    ndim = property(lambda self: self.value.ndim)
    size = property(lambda self: self.value.size)

    def __len__(self):
        return len(self.value)

    def __array__(self, *args, **kwargs):
        raise TypeError(_UNTRACKED)

    def __repr__(self):
        return f"Traced({self.value!r})"

    def __bool__(self):
        raise TypeError("the truth value of a traced array is not defined inside seqcore.vjp")

    # -- operators (seqcore.ops is imported lazily to avoid a cycle) -------------------
    def __add__(self, o): return _ops().add(self, o)
    def __radd__(self, o): return _ops().add(o, self)
    def __sub__(self, o): return _ops().sub(self, o)
    def __rsub__(self, o): return _ops().sub(o, self)
    def __mul__(self, o): return _ops().mul(self, o)
    def __rmul__(self, o): return _ops().mul(o, self)
    def __truediv__(self, o): return _ops().div(self, o)
    def __rtruediv__(self, o): return _ops().div(o, self)
    def __neg__(self): return _ops().neg(self)
    def __pow__(self, p): return _ops().power(self, p)

    def __rpow__(self, base):
        """``base ** x`` = exp(x·ln base), for a real base > 0."""
        if not isinstance(base, numbers.Real) or isinstance(base, bool) or not 0 < base < math.inf:
            raise TypeError(f"base: got {base!r:.40} for base ** x, expected a finite real number > 0 "
                            "(exp(x * log(base)) with seqcore.ops)")
        return _ops().exp(_ops().mul(self, math.log(base)))

    # comparisons have zero derivative: they read the values and give the backend's bool arrays
    # (for ops.where and masks), as stop_gradient(x) > 0 would
    def __lt__(self, o): return self.value < stop_gradient(o)
    def __le__(self, o): return self.value <= stop_gradient(o)
    def __gt__(self, o): return self.value > stop_gradient(o)
    def __ge__(self, o): return self.value >= stop_gradient(o)
    def __eq__(self, o): return self.value == stop_gradient(o)  # elementwise, as NumPy (not identity)
    def __ne__(self, o): return self.value != stop_gradient(o)
    __hash__ = object.__hash__  # identity, as before: __eq__ alone would make traced values unhashable
    def __matmul__(self, o): return _ops().matmul(self, o)
    def __rmatmul__(self, o): return _ops().matmul(o, self)
    def __getitem__(self, idx): return _ops().getitem(self, idx)

    @property
    def T(self):
        """All axes reversed, as NumPy's ``.T`` (the array itself below two dimensions)."""
        out, n = self, self.ndim
        for i in range(n // 2):
            out = _ops().swapaxes(out, i, n - 1 - i)
        return out

    @property
    def mT(self):
        """The last two axes swapped (a stack of matrices transposed), as NumPy's ``.mT``."""
        if self.ndim < 2:
            raise ValueError(f"mT: got an array of shape {self.shape}, expected at least 2 dimensions")
        return _ops().swapaxes(self, -1, -2)

    def sum(self, axis=None, keepdims=False, **numpy_kwargs):
        _refuse_numpy_call("sum", numpy_kwargs)
        return _ops().sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False, **numpy_kwargs):
        _refuse_numpy_call("mean", numpy_kwargs)
        return _ops().mean(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        return _ops().reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)


def _ops():
    from . import ops
    return ops


def record(name: str, args: tuple, outputs, pullback: Callable, xp) -> Any:
    """Wrap a primitive's ``outputs`` in :class:`Traced` values linked to one tape node."""
    node = _Node(name, [a if isinstance(a, Traced) else None for a in args], pullback, xp)
    node.multi = isinstance(outputs, tuple)
    wrapped = tuple(Traced(o, node) for o in outputs) if node.multi else (Traced(outputs, node),)
    # Weak references back: strong ones would make every node and its outputs a reference
    # cycle, and a tape, with the residuals its pullbacks hold, would then outlive its last
    # use until the cyclic garbage collector ran (fresh pages for every step's residuals).
    node.outputs = [weakref.ref(w) for w in wrapped]
    node.values = [w.value for w in wrapped]
    return wrapped if node.multi else wrapped[0]


def _is_float_array(x) -> bool:
    dt = getattr(x, "dtype", None)
    if dt is None or not hasattr(x, "shape"):
        return False
    return getattr(dt, "is_floating_point", None) is True or getattr(dt, "kind", "") == "f"


def stop_gradient(x):
    """The value of ``x`` with no gradient flowing back through it."""
    return x.value if isinstance(x, Traced) else x


def _backprop(outputs: list, cotangents: list) -> dict:
    grads: dict[int, Any] = {}
    nodes: dict[int, _Node] = {}
    stack = []
    for o, c in zip(outputs, cotangents):
        if isinstance(o, Traced) and c is not None:
            grads[id(o)] = c if id(o) not in grads else grads[id(o)] + c
            if o.node is not None:
                stack.append(o.node)
    while stack:
        n = stack.pop()
        if id(n) in nodes:
            continue
        nodes[id(n)] = n
        stack.extend(i.node for i in n.inputs if i is not None and i.node is not None)
    for n in sorted(nodes.values(), key=lambda n: n.seq, reverse=True):
        # an output that no longer exists was used by nothing: it has no gradient (ids are only
        # taken of live outputs, so a recycled id cannot alias another array's gradient)
        cots = [None if o is None else grads.pop(id(o), None) for o in (r() for r in n.outputs)]
        if all(c is None for c in cots):
            continue
        cots = [n.xp.zeros_like(v) if c is None else c for v, c in zip(n.values, cots)]
        in_grads = n.pullback(tuple(cots) if n.multi else cots[0])
        for inp, g in zip(n.inputs, in_grads):
            if inp is not None and g is not None:
                k = id(inp)
                grads[k] = g if k not in grads else grads[k] + g
    return grads


def vjp(f: Callable, *args: Any) -> tuple[Any, Callable]:
    """Evaluate ``f(*args)`` and return ``(out, pullback)``.

    ``pullback(cotangent)`` — ``cotangent`` shaped like ``out`` (same tree of arrays; for each
    floating output a floating array of its backend, of any float dtype, or a float for a scalar;
    it is cast to the output's dtype, so the backward runs in the forward's precision) —
    returns a tuple with one gradient per argument of ``f``, each shaped like that
    argument and of its dtype: arrays for arrays, dicts for parameter dicts, ``None`` for non-float
    leaves (integer labels, masks given as ints) and non-array arguments.

    >>> out, pullback = seqcore.vjp(lambda a, b: seqcore.linear_scan(a, b), a, b)
    >>> da, db = pullback(np.ones_like(out))
    """
    if not callable(f):
        raise TypeError(f"f: got {type(f).__name__}, expected a callable")
    leaves, treedef = tree_flatten(args)
    if any(isinstance(x, Traced) for x in leaves):
        raise TypeError("args: got a value traced by an enclosing seqcore.vjp, expected plain arrays: seqcore.vjp "
                        "cannot be nested (no second-order gradients); pass seqcore.stop_gradient(x) to treat "
                        "the value as a constant")
    from .validate import check_detached  # validate imports this module
    for keys, leaf in tree_key_paths(args):  # named as f's argument, not as the first primitive that meets it
        check_detached(key_path_name("args", keys), leaf)
    traced = [Traced(x) if _is_float_array(x) else x for x in leaves]
    out = f(*tree_unflatten(treedef, traced))
    out_leaves, out_def = tree_flatten(out)
    values = tree_unflatten(out_def, [o.value if isinstance(o, Traced) else o for o in out_leaves])

    def pullback(cotangent):
        cot_leaves = _cotangent_leaves(out, cotangent)
        for o, c in zip(out_leaves, cot_leaves):
            if tuple(getattr(c, "shape", ())) != tuple(getattr(o, "shape", ())):
                raise ValueError(f"cotangent: got shape {tuple(getattr(c, 'shape', ()))}, "
                                 f"expected {tuple(getattr(o, 'shape', ()))} (the shape of f's output)")
            _check_cotangent(c, o)
        owned = {_memory_key(c) for c in cot_leaves if hasattr(c, "shape")}
        cot_leaves = [_cotangent_like(c, o) for o, c in zip(out_leaves, cot_leaves)]
        owned.update(_memory_key(c) for c in cot_leaves if hasattr(c, "shape"))
        grads = _backprop(out_leaves, cot_leaves)
        result = []
        for x, t in zip(leaves, traced):
            if isinstance(t, Traced):
                g = grads.get(id(t))
                g = _zeros_like(x) if g is None else _cast_like(g, x)
                result.append(_own(g, owned))
            else:
                result.append(None)
        return tree_unflatten(treedef, result)

    return values, pullback


def _cotangent_leaves(out, cotangent) -> list:
    """The leaves of ``cotangent`` in the order of ``out``'s leaves.  Dict entries are matched by
    key, not position: a dict built in another key order would send each cotangent to another
    output, a wrong gradient without an error."""
    leaves: list = []

    def take(o, c):
        if c is None or isinstance(c, (dict, list, tuple)):
            what = f"an array of shape {tuple(o.shape)}" if hasattr(o, "shape") else type(o).__name__
            raise ValueError(f"cotangent: got {'None' if c is None else node_kind(c)} where f's output has {what} "
                             "(the structure of f's output)")
        leaves.append(c)

    try:
        tree_map(take, out, cotangent)
    except ValueError as exc:
        if str(exc).startswith("tree structure mismatch"):
            raise ValueError(f"cotangent: {exc} (the structure of f's output)") from None
        raise
    return leaves


def _check_cotangent(c, o) -> None:
    """The cotangent ``c`` of a floating output ``o``: a float array of ``o``'s backend (any float
    dtype: each gradient comes back in its argument's dtype) or, for a scalar, a float number.
    Otherwise the VJPs would cast it silently (complex, bool) or fail inside the backend."""
    from .validate import check_array, check_same_backend, is_array
    if not (is_array(o) and _is_float_array(o.value if isinstance(o, Traced) else o)):
        return  # an integer or constant output: no gradient flows through it
    if isinstance(c, (np.generic, int, float, complex)):  # a number (a NumPy scalar included)
        if isinstance(c, (bool, np.bool_, complex, np.complexfloating)) or not isinstance(
                c, (int, float, np.integer, np.floating)):  # pullback(1) is fine; True or 1j is a mistake
            raise TypeError(f"cotangent: got {type(c).__name__} {c!r}, expected a real number or a floating-point "
                            f"array like f's output ({o.dtype})")
        return
    check_same_backend("cotangent", c, "f's output", o)
    check_array("cotangent", c)


def _cotangent_like(c, o):
    """``c`` in the dtype of the floating output ``o``: every backend then differentiates in the
    primal dtype (a float or float64 cotangent would run a float32 model's backward in float64)."""
    v = o.value if isinstance(o, Traced) else o
    if c is None or not _is_float_array(v):
        return c
    if not hasattr(c, "shape") or isinstance(c, np.generic):
        return _zeros_like(v) + float(c)  # a Python float keeps v's dtype (NumPy's weak scalars)
    return _cast_like(c, v)


def _memory_key(a):
    """Which allocation an array's data lies in (NumPy: the base array it views; torch: its
    storage; CuPy: its memory block)."""
    if isinstance(a, np.ndarray):
        while isinstance(a.base, np.ndarray):
            a = a.base
        return id(a) if a.base is None else id(a.base)
    storage = getattr(a, "untyped_storage", None)
    if storage is not None:  # torch
        return ("torch", storage().data_ptr())
    data = getattr(a, "data", None)
    return ("cupy", id(data.mem)) if hasattr(data, "mem") else id(a)


def _own(g, owned: set):
    """``g``, copied if its memory is another returned gradient's or a cotangent's: VJPs pass
    cotangents through (``a + b`` gives both operands the same array, a reshape a view of it),
    and a caller that clips or masks one gradient in place must not change another."""
    key = _memory_key(g)
    if key in owned:
        g = g.copy() if hasattr(g, "copy") else g.clone()
        key = _memory_key(g)
    owned.add(key)
    return g


def _cast_like(g, x):
    """``g`` in ``x``'s dtype: a gradient has its argument's dtype, so that float32 parameters
    stay float32 under an update even when float64 data promoted the arithmetic."""
    if g.dtype == x.dtype:
        return g
    if hasattr(g, "astype"):  # NumPy, CuPy
        return g.astype(x.dtype)
    return g.to(x.dtype)  # torch


def _zeros_like(x):
    if type(x) is np.ndarray:  # the usual case, without the registry's lookup (0.8 against 2.7 µs; a
        return np.zeros_like(x)  # multi-head model's unused heads take dozens per step)
    from . import backends
    return backends.namespace(x).zeros_like(x)


def value_and_grad(f: Callable, argnums: int = 0) -> Callable:
    """``value_and_grad(f)(*args) -> (f(*args), ∂f/∂args[argnums])`` for a scalar-valued ``f``."""
    if not callable(f):
        raise TypeError(f"f: got {type(f).__name__}, expected a callable")
    if isinstance(argnums, bool) or not isinstance(argnums, int):
        raise TypeError(f"argnums: got {argnums!r}, expected an int (the position of the argument to differentiate)")

    def wrapped(*args):
        if not -len(args) <= argnums < len(args):
            raise ValueError(f"argnums: got {argnums}, expected a position among the {len(args)} arguments given")
        out, pullback = vjp(f, *args)
        if not hasattr(out, "shape"):
            raise ValueError(f"f: returned {type(out).__name__} {out!r:.40} (not an array), expected a scalar "
                             "array of a backend (build it with seqcore.ops or the arrays' operators)")
        if tuple(out.shape) != ():
            raise ValueError(f"f: returned {type(out).__name__} of shape {tuple(out.shape)}, "
                             "expected a scalar array (use seqcore.vjp for non-scalar outputs)")
        from . import backends
        xp = backends.namespace(out)
        grads = pullback(xp.ones_like(out))
        if grads[argnums] is None:  # not silently: a gradient was asked of this very argument
            arg = args[argnums]
            raise TypeError(f"argnums: got {argnums}, an argument of type {type(arg).__name__}"
                            f"{' and dtype ' + str(arg.dtype) if hasattr(arg, 'dtype') else ''}; expected the "
                            "position of a floating-point array or a tree of them")
        return out, grads[argnums]
    return wrapped
