"""Optimizers as pairs of pure functions (optax style), for parameter trees of any backend.

A :class:`GradientTransformation` is ``(init, update)``::

    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = apply_updates(params, updates)

``params``, ``grads`` and ``updates`` are trees (nested dicts/lists) of arrays of one
backend — NumPy, PyTorch or CuPy; leaves are only touched with arithmetic operators,
``.sum()``, ``.clip()`` and ``** 0.5`` (``abs()`` and ``.max()`` too when a global norm
overflows). States are nested dicts, never mutated; step counts are Python ints. Update
conventions follow ``torch.optim`` (see each optimizer), so a run here and a run there agree
to rounding. :func:`state_to_arrays` / :func:`state_from_arrays` put a state, step counts
included, into an ``.npz`` checkpoint and back.
"""
from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Callable, NamedTuple

import numpy as np

from . import backends
from .tree import checkpoint_paths, tree_flatten, tree_leaves, tree_map, tree_paths, tree_unflatten
from .validate import check_bool, check_real, finite_float, records_grad

__all__ = [
    "GradientTransformation", "apply_updates", "chain", "identity", "scale", "scale_by_schedule",
    "scale_by_learning_rate", "add_decayed_weights", "trace", "scale_by_adam", "scale_by_rms",
    "scale_by_adagrad", "clip", "clip_by_global_norm", "global_norm", "flatten", "sgd", "adam", "adamw",
    "rmsprop", "adagrad", "step_count", "state_to_arrays", "state_from_arrays",
]


class GradientTransformation(NamedTuple):
    """``init(params) -> state``; ``update(grads, state, params=None) -> (updates, state)``."""
    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


def _transformation(init, update) -> GradientTransformation:
    """A transformation whose dict state is checked against what its ``init`` makes: a state from
    another optimizer (or one saved by another) is a ValueError naming the keys, not a KeyError.
    Every entry of the state but ``"count"`` is a tree shaped like the params: without ``params``,
    the gradients are checked against it (a gradient of another shape would broadcast into it).
    Its ``init`` refuses parameters that require grad: the state made from them would join torch's graph."""
    def checked_init(params):
        _check_params(params)
        return init(params)

    def checked(grads, state, params=None):
        if isinstance(state, dict):
            moments = next((v for k, v in state.items() if k != "count"), None)
            if moments is not None and params is None:
                _check_grads(grads, moments)
            elif moments is not None:
                _check_state_library(moments, grads)
            try:
                return update(grads, state, params)
            except KeyError as exc:
                raise ValueError(f"state: got a state with keys {sorted(map(str, state))}, missing {exc}; "
                                 "expected the state this optimizer's init returns") from None
            except ValueError as exc:
                if str(exc).startswith("tree structure mismatch"):
                    raise ValueError(f"grads: {exc} (the structure of the params the state was made for)") from None
                raise
        raise TypeError(f"state: got {type(state).__name__}, expected the dict this optimizer's init returns")
    return GradientTransformation(checked_init, checked)


# ----------------------------------------------------------------------------- validation

def _schedule_value(name: str, value, count: int) -> float:
    """A schedule's value at ``count`` as a finite float (a NaN step size would poison every parameter)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) and not (
            hasattr(value, "shape") and tuple(value.shape) == ()):
        raise TypeError(f"{name}: schedule gave {value!r} ({type(value).__name__}) at step {count}, "
                        "expected a real number")
    if finite_float(value) is None:
        raise ValueError(f"{name}: schedule gave {value!r:.40} at step {count}, expected a finite number")
    value = float(value)
    return value


def _check_schedule(name: str, schedule) -> Callable[[int], float]:
    """``schedule`` is a callable that takes one step argument (a wrong signature would otherwise
    fail at the first update, inside the optimizer, without naming the argument)."""
    if not callable(schedule):
        raise TypeError(f"{name}: got {schedule!r}, expected a callable step -> float")
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):  # a builtin without a signature: its first call will tell
        return schedule
    try:
        signature.bind(0)
    except TypeError as exc:
        raise TypeError(f"{name}: got a callable {getattr(schedule, '__name__', type(schedule).__name__)}"
                        f"{signature} that does not take the step ({exc}), expected a schedule step -> float") from None
    return schedule


def _learning_rate(learning_rate) -> Callable[[int], float]:
    """A schedule for ``learning_rate`` (float or callable); rejects negative constants."""
    if callable(learning_rate):
        return _check_schedule("learning_rate", learning_rate)
    value = check_real("learning_rate", learning_rate, low=0.0)
    return lambda count: value


def _zeros_like(x):
    return x * 0.0  # backend-neutral; parameters are finite at init


def _check_detached(name: str, tree) -> None:
    """No leaf of ``tree`` is a torch tensor that requires grad (:func:`validate.records_grad`), named
    by its path: torch would record the optimizer's arithmetic on it, one more step in its graph each
    update, and memory would grow without bound."""
    for path, leaf in tree_paths(tree):
        if records_grad(leaf):  # not check_detached's wording: here torch would record, not lose, the step
            where = f"{name}[{path!r}]" if path else name
            raise TypeError(f"{where}: got a torch.Tensor that requires grad, expected a detached tensor (pass "
                            "x.detach(), or update under torch.no_grad() as torch.optim does): torch would record "
                            "the optimizer's arithmetic, one more step in its graph each update")


def _is_complex(x) -> bool:
    """Whether leaf ``x`` holds complex numbers (dtype kind ``c``, torch's ``is_complex``, a Python complex)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return isinstance(x, complex)
    kind = getattr(dtype, "kind", None)  # NumPy's and CuPy's dtypes; torch's have is_complex instead
    return kind == "c" if kind is not None else getattr(dtype, "is_complex", False) is True


def _refuse_complex(name: str, tree) -> None:
    """No leaf of ``tree`` is complex, named by its path: the optimizers square with ``g*g``, not
    ``|g|²``, so a complex leaf would get a wrong update (its real part moved by an imaginary gradient)."""
    for path, leaf in tree_paths(tree):
        if _is_complex(leaf):
            where = f"{name}[{path!r}]" if path else name
            raise TypeError(f"{where}: got dtype {getattr(leaf, 'dtype', 'complex')}, expected real floating-point "
                            "arrays (the optimizers and global norms do not do complex arithmetic)")


def _is_floating(x) -> bool:
    """Whether leaf ``x`` is real floating point (dtype kind ``f``, torch's ``is_floating_point``) or a
    Python real number (a float, or an int that the first update turns into one), not a bool."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return isinstance(x, numbers.Real) and not isinstance(x, bool)
    kind = getattr(dtype, "kind", None)  # NumPy's and CuPy's dtypes; torch's have is_floating_point instead
    return kind == "f" if kind is not None else getattr(dtype, "is_floating_point", False) is True


def _check_params(params) -> None:
    """What every ``init`` refuses, named by its path: a leaf that requires grad, is complex, or is no
    real floating point (integer or bool parameters would get float updates that ``apply_updates``
    refuses, after the error had blamed the gradients)."""
    _check_detached("params", params)
    _refuse_complex("params", params)
    for path, leaf in tree_paths(params):
        if not _is_floating(leaf):
            where = f"params[{path!r}]" if path else "params"
            got = f"dtype {leaf.dtype}" if hasattr(leaf, "dtype") else f"{type(leaf).__name__} {leaf!r:.40}"
            raise TypeError(f"{where}: got {got}, expected floating-point arrays")


def _stateless_init(params) -> dict:
    """``init`` of a transformation without state: it refuses what every ``init`` refuses."""
    _check_params(params)
    return {}


# ----------------------------------------------------------------------------- basics

class _DtypeMismatch(Exception):
    """An update leaf unlike its parameter; :func:`apply_updates` then finds and names its path."""


class _RecordsGrad(Exception):
    """A leaf that requires grad; :func:`apply_updates` then finds and names its path."""


def _fits_dtype(p, u) -> bool:
    """``u`` is an array of ``p``'s library and dtype (``p`` an array), or ``p`` is no array.

    ``p + u`` would promote: float32 params would silently become float64 for good."""
    if not (hasattr(p, "shape") and hasattr(p, "dtype")):
        return True
    return hasattr(u, "shape") and hasattr(u, "dtype") and _library(u) == _library(p) and u.dtype == p.dtype


def _dtype_error(params, updates, path: str = "") -> TypeError | None:
    """The error naming the first update leaf unlike its parameter, walking both trees in
    :func:`tree_map`'s order (an update that is a nested list is a leaf here, not a subtree)."""
    if isinstance(params, dict) and isinstance(updates, dict):
        pairs = [(f"{path}{k}/", v, updates.get(k)) for k, v in params.items()]
    elif isinstance(params, (list, tuple)) and isinstance(updates, (list, tuple)):
        pairs = [(f"{path}{i}/", v, u) for i, (v, u) in enumerate(zip(params, updates))]
    else:
        if params is None or updates is None or _fits_dtype(params, updates):
            return None
        p, u, where = params, updates, f"updates[{path[:-1]!r}]"
        if not (hasattr(u, "shape") and hasattr(u, "dtype")):
            return TypeError(f"{where}: got {type(u).__name__} {u!r:.40}, expected an array of dtype {p.dtype} "
                             "like the parameter")
        if _library(u) != _library(p):
            return TypeError(f"{where}: got a {_library(u)} {type(u).__name__}, expected a {_library(p)} array "
                             f"of dtype {p.dtype} like the parameter (one backend)")
        return TypeError(f"{where}: got dtype {u.dtype}, expected {p.dtype} like the parameter")
    for sub_path, v, u in pairs:
        err = _dtype_error(v, u, sub_path)
        if err is not None:
            return err
    return None


def apply_updates(params, updates):
    """``params + updates`` leaf by leaf: both trees of the same structure, each update an array of
    its parameter's shape, array library and dtype (another dtype would promote the parameter), and
    no torch tensor that requires grad (torch would chain every step into one graph)."""
    def add(p, u):
        if u is None:
            return p
        if tuple(np.shape(u)) != tuple(np.shape(p)):
            raise ValueError(f"updates: got a leaf of shape {tuple(np.shape(u))}, expected {tuple(np.shape(p))} "
                             "(the shape of its parameter)")
        if not _fits_dtype(p, u):
            raise _DtypeMismatch
        if records_grad(p) or records_grad(u):
            raise _RecordsGrad
        return p + u
    try:
        return tree_map(add, params, updates)
    except _RecordsGrad:  # name its path: one of these raises
        _check_detached("params", params)
        _check_detached("updates", updates)
        raise
    except _DtypeMismatch:
        raise (_dtype_error(params, updates) or TypeError("updates: got a leaf unlike its parameter")) from None
    except ValueError as exc:
        if str(exc).startswith("tree structure mismatch"):  # say which argument does not fit
            raise ValueError(f"updates: {exc} (the structure of params)") from None
        raise


def identity() -> GradientTransformation:
    """Passes gradients through unchanged."""
    return GradientTransformation(_stateless_init, lambda grads, state, params=None: (grads, state))


_ANY = object()  # _grads_fit without params: any structure


def _grads_fit(g, p=_ANY) -> bool:
    """True when ``g`` has ``None`` leaves only where ``p`` has (never without ``p``), (``p`` given)
    ``p``'s structure and leaf shapes, libraries and dtypes, and no leaf of either requires grad;
    False sends :func:`_check_grads` to its detailed walk, which names the problem."""
    if isinstance(g, dict):
        return (p is _ANY or isinstance(p, dict) and g.keys() == p.keys()) and \
            all(_grads_fit(v, _ANY if p is _ANY else p[k]) for k, v in g.items())
    if isinstance(g, (list, tuple)):
        return (p is _ANY or isinstance(p, (list, tuple)) and len(g) == len(p)) and \
            all(_grads_fit(v, _ANY if p is _ANY else p[i]) for i, v in enumerate(g))
    if g is None:  # an empty subtree, as tree_map keeps it, where the parameter is one
        return p is None
    if records_grad(g):
        return False
    return p is _ANY or (p is not None and not isinstance(p, (dict, list, tuple)) and np.shape(g) == np.shape(p)
                         and _library(g) == _library(p) and _same_dtype(g, p) and not records_grad(p))


def _same_dtype(g, p) -> bool:
    """An array ``g`` has the dtype of ``p`` (anything goes for a Python number or a ``p`` without one)."""
    want = getattr(p, "dtype", None)
    got = getattr(g, "dtype", None)
    return want is None or got is None or got is want or got == want


def _library(x) -> str:
    """The array library of a leaf (``numpy``, ``torch``, ``cupy``; Python numbers count as NumPy)."""
    module = type(x).__module__.split(".")[0]
    return "numpy" if module == "builtins" else module


def _check_state_library(moments, grads) -> None:
    """The state's arrays are of the gradients' library (a state made for another backend's params
    would fail inside the update, or pass through SGD and make updates of the wrong library)."""
    state_leaves, grad_leaves = tree_leaves(moments), tree_leaves(grads)
    if state_leaves and grad_leaves and _library(state_leaves[0]) != _library(grad_leaves[0]):
        raise TypeError(f"state: got {_library(state_leaves[0])} arrays, expected {_library(grad_leaves[0])} "
                        "arrays like grads (the state init made for params of this backend)")


def _check_grads(grads, params=None) -> None:
    """No gradient leaf requires grad, and none is ``None`` but where the parameter is ``None`` (an
    empty subtree); with ``params``, every leaf sits at a parameter's path with that parameter's
    shape, library and dtype, and no parameter requires grad. ``params`` may hold ``_ANY`` leaves
    (any array there).

    A ``None`` would fail deep inside a moment update (``None - float``), a shape mismatch would
    broadcast silently into the optimizer's moments, and another dtype would promote them: all are
    named here."""
    if _grads_fit(grads, _ANY if params is None else params):  # the usual case, without every leaf's path
        return
    _check_detached("grads", grads)
    if params is not None:
        _check_detached("params", params)
    want = None if params is None else dict(tree_paths(params, keep_none=True))
    for path, g in tree_paths(grads, keep_none=True):
        if want is not None and path not in want:
            raise ValueError(f"grads: got a leaf at {path!r}, expected the paths of params ({sorted(want)[:6]}...)")
        p = _ANY if want is None else want[path]
        if g is None and p is not None:
            hint = "a None gradient goes where the parameter is None: pass params to update; " if want is None else ""
            raise ValueError(f"grads[{path!r}]: got None, expected an array shaped like the parameter ({hint}"
                             "to freeze a parameter, leave it out of the params the optimizer updates, "
                             "or pass a zero gradient under plain SGD)")
        if g is None or p is _ANY:
            continue
        if p is None:
            raise ValueError(f"grads[{path!r}]: got a leaf of type {type(g).__name__}, expected None like the "
                             "parameter (an empty subtree)")
        if np.shape(g) != np.shape(p):
            raise ValueError(f"grads[{path!r}]: got shape {tuple(np.shape(g))}, expected {tuple(np.shape(p))} "
                             "like the parameter")
        if _library(g) != _library(p):
            raise TypeError(f"grads[{path!r}]: got a {_library(g)} {type(g).__name__}, expected a {_library(p)} "
                            "array like the parameter (one backend)")
        if not _same_dtype(g, p):
            raise TypeError(f"grads[{path!r}]: got dtype {g.dtype}, expected {p.dtype} like the parameter")
    if want is not None:
        missing = sorted(set(want) - {path for path, _ in tree_paths(grads, keep_none=True)})
        if missing:
            raise ValueError(f"grads: got no leaf at {missing[0]!r}, expected one gradient per parameter "
                             f"(the paths of params: {sorted(want)[:6]}...)")


def _moment_trees(state) -> list:
    """The per-parameter trees of a transformation's dict state, or of a chain's tuple of states
    (made from params by ``tree_map``: ``None`` where a parameter is ``None``)."""
    if isinstance(state, dict):
        return [v for k, v in state.items() if k != "count"]
    if isinstance(state, tuple):
        return [m for s in state for m in _moment_trees(s)]
    return []


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply ``transforms`` one after the other; the state is the tuple of their states."""
    for i, t in enumerate(transforms):
        if not isinstance(t, GradientTransformation):
            raise TypeError(f"transforms[{i}]: got {type(t).__name__}, expected a GradientTransformation")

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params=None):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            got = f"a tuple of {len(state)} states" if isinstance(state, tuple) else type(state).__name__
            raise ValueError(f"state: got {got}, expected a tuple of {len(transforms)} states from chain(...).init")
        if params is not None:
            _check_grads(grads, params)
        elif not _grads_fit(grads):  # a None gradient fits where a moment tree (made from params) is None
            _check_grads(grads, next((m for m in _moment_trees(state) if _grads_fit(grads, m)), None))
        new_state = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)

    return GradientTransformation(init, update)


def scale(factor: float) -> GradientTransformation:
    """``u = factor·g``."""
    factor = check_real("factor", factor)
    return GradientTransformation(
        _stateless_init, lambda grads, state, params=None: (tree_map(lambda g: g * factor, grads), state))


def scale_by_schedule(schedule: Callable[[int], float]) -> GradientTransformation:
    """``u = schedule(count)·g``, count = 0 on the first update; the state is ``{"count": int}``."""
    _check_schedule("schedule", schedule)

    def init(params):
        return {"count": 0}

    def update(grads, state, params=None):
        factor = _schedule_value("schedule", schedule(state["count"]), state["count"])
        return tree_map(lambda g: g * factor, grads), {"count": state["count"] + 1}

    return _transformation(init, update)


def scale_by_learning_rate(learning_rate, flip_sign: bool = True) -> GradientTransformation:
    """``u = −η_t·g`` (descent), with η a float or a schedule of the step; always counts steps."""
    schedule = _learning_rate(learning_rate)
    sign = -1.0 if check_bool("flip_sign", flip_sign) else 1.0

    def signed(count):
        value = _schedule_value("learning_rate", schedule(count), count)
        if value < 0:
            raise ValueError(f"learning_rate: schedule gave {value} at step {count}, expected >= 0")
        return sign * value

    return scale_by_schedule(signed)


def add_decayed_weights(weight_decay: float, mask=None) -> GradientTransformation:
    """``u = g + λ·p`` (needs ``params``). ``mask``: a tree of bools like ``params`` or a function
    ``params -> tree``; leaves where it is False are not decayed (e.g. biases)."""
    weight_decay = check_real("weight_decay", weight_decay, low=0.0)
    if not (mask is None or callable(mask) or isinstance(mask, (dict, list, tuple, bool, np.bool_))):
        raise TypeError(f"mask: got {mask!r:.40} ({type(mask).__name__}), expected a tree of True/False like "
                        "params or a function params -> tree")

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("params: got None, expected the parameter tree (add_decayed_weights needs it)")
        _check_grads(grads, params)  # a missing or extra gradient named by its path, not as a bare mismatch
        if weight_decay == 0.0:
            return grads, state
        if mask is None:
            return tree_map(lambda g, p: g + weight_decay * p, grads, params), state
        where = mask(params) if callable(mask) else mask

        def decay(g, p, m):
            if not isinstance(m, (bool, np.bool_)):  # "no" or 0 would decide by Python truthiness
                raise TypeError(f"mask: got a leaf {m!r} ({type(m).__name__}), expected True or False per parameter")
            return g + weight_decay * p if m else g
        try:
            return tree_map(decay, grads, params, where), state
        except ValueError as exc:
            if not str(exc).startswith("tree structure mismatch"):
                raise
            try:  # say which tree does not fit params: the mask, or else the gradients
                tree_map(lambda p, m: None, params, where)
            except ValueError as mask_exc:
                raise ValueError(f"mask: {mask_exc} (the structure of params)") from None
            raise

    return GradientTransformation(_stateless_init, update)


def trace(momentum: float, nesterov: bool = False) -> GradientTransformation:
    """Heavy-ball momentum as in ``torch.optim.SGD`` (dampening 0): ``b = μ·b + g``;
    ``u = g + μ·b`` with Nesterov, else ``u = b``. State ``{"count", "momentum_buffer"}``."""
    momentum = check_real("momentum", momentum, low=0.0, high=1.0, high_open=True)
    nesterov = check_bool("nesterov", nesterov)

    def init(params):
        return {"count": 0, "momentum_buffer": tree_map(_zeros_like, params)}

    def update(grads, state, params=None):
        buf = tree_map(lambda b, g: momentum * b + g, state["momentum_buffer"], grads)
        out = tree_map(lambda g, b: g + momentum * b, grads, buf) if nesterov else buf
        return out, {"count": state["count"] + 1, "momentum_buffer": buf}

    return _transformation(init, update)


def _maximum(a, b):
    # elementwise max with operators only (exact: one term is multiplied by 0, the other by 1)
    return a * (a >= b) + b * (a < b)


def _eps(eps) -> float:
    """``eps`` > 0: with 0, an exactly zero gradient element gives 0/0 = NaN (routine: an unused
    head, an embedding row absent from the batch, a masked weight)."""
    return check_real("eps", eps, low=0.0, low_open=True)


def _check_eps_fits(eps: float, params) -> None:
    """``eps`` is added in each parameter's dtype: one that rounds to 0 there (1e-50 in float32,
    1e-8 in float16) gives 0/0 = NaN like ``eps=0``."""
    for path, p in tree_paths(params):
        if not hasattr(p, "dtype"):  # a Python float: float64, where eps > 0 stays > 0
            continue
        try:
            dtype = backends.numpy_dtype(p)
        except TypeError:  # a dtype NumPy lacks (bfloat16, which has float32's range): not checked
            continue
        if dtype.kind == "f" and dtype.type(eps) == 0:
            where = f"params[{path!r}]" if path else "params"
            raise ValueError(f"eps: got {eps!r}, which is 0 in {dtype} (the dtype of {where}), expected an eps "
                             f"> 0 in the parameters' dtype (at least {np.finfo(dtype).smallest_subnormal})")


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                  amsgrad: bool = False) -> GradientTransformation:
    """Adam direction with bias correction, eps outside the square root (``torch.optim.Adam``):
    ``m = b1·m + (1−b1)·g``, ``v = b2·v + (1−b2)·g²``,
    ``u = (m/(1−b1^t)) / (√v/√(1−b2^t) + eps)`` (``v`` → running max of ``v`` with ``amsgrad``)."""
    b1 = check_real("b1", b1, low=0.0, high=1.0, high_open=True)
    b2 = check_real("b2", b2, low=0.0, high=1.0, high_open=True)
    eps = _eps(eps)
    amsgrad = check_bool("amsgrad", amsgrad)

    def init(params):
        _check_eps_fits(eps, params)
        state = {"count": 0, "mu": tree_map(_zeros_like, params), "nu": tree_map(_zeros_like, params)}
        if amsgrad:
            state["nu_max"] = tree_map(_zeros_like, params)
        return state

    def update(grads, state, params=None):
        count = state["count"] + 1
        mu = tree_map(lambda m, g: m + (1.0 - b1) * (g - m), state["mu"], grads)  # torch's lerp form
        nu = tree_map(lambda v, g: b2 * v + (1.0 - b2) * (g * g), state["nu"], grads)
        new_state = {"count": count, "mu": mu, "nu": nu}
        if amsgrad:
            nu = new_state["nu_max"] = tree_map(_maximum, state["nu_max"], nu)
        correction1 = 1.0 - b1 ** count
        correction2_sqrt = math.sqrt(1.0 - b2 ** count)
        out = tree_map(lambda m, v: (m / correction1) / (v ** 0.5 / correction2_sqrt + eps), mu, nu)
        return out, new_state

    return _transformation(init, update)


def _nonnegative(d):
    # s − a² is >= 0 in exact arithmetic, but rounding makes it slightly negative once α^t is below
    # the float epsilon (a near-constant gradient): its square root would be NaN. Operators only.
    return d * (d > 0)


def scale_by_rms(alpha: float = 0.99, eps: float = 1e-8, centered: bool = False) -> GradientTransformation:
    """RMSprop direction (``torch.optim.RMSprop``): ``s = α·s + (1−α)·g²``, ``u = g/(√s + eps)``;
    centered: ``a = α·a + (1−α)·g``, ``u = g/(√(s − a²) + eps)``."""
    alpha = check_real("alpha", alpha, low=0.0, high=1.0, high_open=True)
    eps = _eps(eps)
    centered = check_bool("centered", centered)

    def init(params):
        _check_eps_fits(eps, params)
        state = {"count": 0, "square_avg": tree_map(_zeros_like, params)}
        if centered:
            state["grad_avg"] = tree_map(_zeros_like, params)
        return state

    def update(grads, state, params=None):
        sq = tree_map(lambda s, g: alpha * s + (1.0 - alpha) * (g * g), state["square_avg"], grads)
        new_state = {"count": state["count"] + 1, "square_avg": sq}
        if centered:
            avg = new_state["grad_avg"] = tree_map(lambda a, g: a + (1.0 - alpha) * (g - a), state["grad_avg"], grads)
            out = tree_map(lambda g, s, a: g / (_nonnegative(s - a * a) ** 0.5 + eps), grads, sq, avg)
        else:
            out = tree_map(lambda g, s: g / (s ** 0.5 + eps), grads, sq)
        return out, new_state

    return _transformation(init, update)


def scale_by_adagrad(initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> GradientTransformation:
    """Adagrad direction (``torch.optim.Adagrad``): ``s = s + g²``, ``u = g/(√s + eps)``, s starting at
    ``initial_accumulator_value``."""
    initial = check_real("initial_accumulator_value", initial_accumulator_value, low=0.0)
    eps = _eps(eps)

    def init(params):
        _check_eps_fits(eps, params)
        return {"count": 0, "sum": tree_map(lambda p: _zeros_like(p) + initial, params)}

    def update(grads, state, params=None):
        acc = tree_map(lambda s, g: s + g * g, state["sum"], grads)
        out = tree_map(lambda g, s: g / (s ** 0.5 + eps), grads, acc)
        return out, {"count": state["count"] + 1, "sum": acc}

    return _transformation(init, update)


def clip(max_delta: float) -> GradientTransformation:
    """Clip every element of the gradient to ``[−max_delta, max_delta]``."""
    max_delta = check_real("max_delta", max_delta, low=0.0)

    def update(grads, state, params=None):
        for path, g in tree_paths(grads):  # a leaf clip cannot take, named by its path
            if not hasattr(g, "clip") and (not isinstance(g, numbers.Real) or isinstance(g, bool)):
                where = f"grads[{path!r}]" if path else "grads"
                raise TypeError(f"{where}: got a {type(g).__name__} leaf {g!r:.40}, expected arrays or real numbers")
        return tree_map(lambda g: _clip_leaf(g, max_delta), grads), state

    return GradientTransformation(_stateless_init, update)


def _clip_leaf(g, max_delta: float):
    """``g`` clipped to ``[−max_delta, max_delta]``: an array by its ``clip``, a Python number (which the
    optimizers take as a float leaf) by ``min``/``max``; NaN stays NaN."""
    if hasattr(g, "clip"):
        return g.clip(-max_delta, max_delta)
    return float(min(max(g, -max_delta), max_delta))


# below this sum of squares, squares of float32 entries may have been subnormal or 0 (they are from
# |g| ≈ 1e-19): global_norm sums them again rescaled (exact, one more pass, rare in practice)
RESCALED_NORM_BELOW = 1e-30


def global_norm(tree) -> float:
    """``√(Σ_leaves Σ g²)`` as a Python float; a finite tree has a finite norm unless the norm itself
    is beyond the float64 range (about 1.8e308): then it is ``inf`` (:func:`clip_by_global_norm`
    still clips such gradients exactly). Complex leaves are refused (``g*g`` is not ``|g|²``).

    Should the squares overflow (in float32 from ``|g|`` ≈ 1.8e19) or their sum fall below
    ``RESCALED_NORM_BELOW`` (where float32 squares lose digits or vanish), they are summed again
    scaled by the power of two that brings the largest ``|g|`` into [½, 1) (exact). A NaN leaf
    gives a NaN norm, an inf leaf an inf norm. A torch tensor that requires grad is refused (torch
    would record the sum, and warn when it becomes a float)."""
    return _global_norm("tree", tree)[0]


def _global_norm(name: str, tree) -> tuple[float, float, int]:
    """:func:`global_norm`, naming the tree ``name`` in its errors, as ``(norm, root, shift)`` with
    ``norm = root·2^shift``: a norm beyond the float64 range is ``inf``, but ``root`` stays finite."""
    leaves = tree_leaves(tree)
    for i, g in enumerate(leaves):
        if not hasattr(g, "shape"):
            raise TypeError(f"{name}: got a {type(g).__name__} leaf (leaf {i}), expected arrays")
        if records_grad(g):
            _check_detached(name, tree)
        if _is_complex(g):
            _refuse_complex(name, tree)
    with np.errstate(over="ignore", under="ignore"):  # an overflow or underflow is handled below
        total = sum(float((g * g).sum()) for g in leaves)
    if total != math.inf and not total < RESCALED_NORM_BELOW:  # NaN goes through: a NaN norm
        return total ** 0.5, total ** 0.5, 0
    tops = [float(abs(g).max()) for g in leaves if math.prod(g.shape)]
    if not all(map(math.isfinite, tops)):  # an inf leaf
        return math.inf, math.inf, 0
    if not tops or max(tops) == 0.0:  # all zero: no underflow
        return 0.0, 0.0, 0
    exponent = -math.frexp(max(tops))[1]
    with np.errstate(under="ignore"):  # the smallest entries may still vanish; the largest decide
        total = sum(float((h * h).sum()) for h in (_times_power_of_two(g, exponent) for g in leaves))
    root = math.sqrt(total)
    try:
        return math.ldexp(root, -exponent), root, -exponent
    except OverflowError:  # a norm beyond the float64 range
        return math.inf, root, -exponent


def _times_power_of_two(g, exponent: int):
    """``g · 2^exponent``, exactly, in steps whose factor stays a normal number of ``g``'s dtype
    (float32 subnormals need up to 2^149, beyond float32's range in one factor)."""
    step = 60 if exponent > 0 else -60
    while abs(exponent) > 60:
        g, exponent = g * 2.0 ** step, exponent - step
    return g * 2.0 ** exponent


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """If the global norm ‖g‖ exceeds ``max_norm``, scale every leaf by ``max_norm/‖g‖``; else pass.
    (``torch.nn.utils.clip_grad_norm_`` divides by ``‖g‖ + 1e-6`` instead; this is the exact rule.)"""
    max_norm = check_real("max_norm", max_norm)
    if max_norm <= 0:
        raise ValueError(f"max_norm: got {max_norm}, expected > 0")

    def update(grads, state, params=None):
        norm, root, shift = _global_norm("grads", grads)
        if norm <= max_norm:
            return grads, state
        if norm == math.inf and math.isfinite(root):  # finite entries, a norm beyond float64: scale by parts
            mantissa, exponent = math.frexp(max_norm / root)
            return tree_map(lambda g: _times_power_of_two(g * mantissa, exponent - shift), grads), state
        factor = max_norm / norm
        return tree_map(lambda g: g * factor, grads), state

    return GradientTransformation(_stateless_init, update)


def _concatenate(leaves: list):
    """One 1-D array holding ``leaves`` raveled in order, on their backend (NumPy, PyTorch, CuPy)."""
    xp = np if isinstance(leaves[0], np.ndarray) else backends.namespace(leaves[0])
    return xp.concatenate([x.reshape(-1) for x in leaves])


def flatten(inner: GradientTransformation) -> GradientTransformation:
    """Run ``inner`` on one vector holding every leaf, then split the updates back into the tree.

    The updates are those of ``inner`` on the tree (bit for bit where ``inner`` works element by
    element; a global norm sums in another order, so clipping agrees to rounding), but each step
    costs a few array operations instead of a few per leaf: for a model with dozens of small
    parameter arrays that is most of the optimizer's time. ``inner``'s state lives on the vector
    (``mu`` is one array, not a tree). Every leaf must have one dtype and backend. Masks of
    :func:`add_decayed_weights` see the vector, so use ``inner`` unflattened with a mask.

    Gradients are put in the order of ``params`` (dict keys in another order would otherwise meet
    other parameters' moments); without ``params``, in the order of the tree of that structure
    ``init`` saw (each structure ``init`` sees is recorded)."""
    if not isinstance(inner, GradientTransformation):
        raise TypeError(f"inner: got {type(inner).__name__}, expected a GradientTransformation")
    layouts: list = []  # (treedef, tree of _ANY leaves) of each params structure init saw, in its key order

    def ravel(name, leaves):
        if not leaves:
            raise ValueError(f"{name}: got a tree without leaves, expected parameter arrays")
        for i, leaf in enumerate(leaves):
            if not hasattr(leaf, "reshape") or not hasattr(leaf, "dtype"):
                raise TypeError(f"{name}: got a {type(leaf).__name__} leaf (leaf {i}), expected arrays")
            if leaf.dtype != leaves[0].dtype or type(leaf) is not type(leaves[0]):
                raise TypeError(f"{name}: got leaves of {leaves[0].dtype} and {leaf.dtype} "
                                f"({type(leaves[0]).__name__}, {type(leaf).__name__}), expected one dtype and "
                                "backend (flatten puts them in one vector)")
        return _concatenate(leaves)

    def init(params):
        _check_params(params)  # by path, before the leaves become one vector
        leaves, treedef = tree_flatten(params)
        vector = ravel("params", leaves)
        if not any(treedef == order for order, _ in layouts):
            layouts.append((treedef, tree_unflatten(treedef, [_ANY] * len(leaves))))
        return inner.init(vector)

    def layout_of(grads, treedef):
        """The ``(treedef, reference)`` recorded by ``init`` for ``grads``' structure, keys in any order."""
        for layout in layouts:
            if layout[0] == treedef:
                return layout
        fits = [layout for layout in layouts if _grads_fit(grads, layout[1])]
        if len(fits) > 1:
            raise ValueError("grads: got dict keys in another order than the params init saw, which held them "
                             "in several orders; expected params passed to update (to take the gradients in "
                             "their order)")
        return fits[0] if fits else (None, None)

    def update(grads, state, params=None):
        leaves, treedef = tree_flatten(grads)
        if params is None:
            order, reference = layout_of(grads, treedef)
        else:
            param_leaves, order = tree_flatten(params)
            reference = params
        _check_grads(grads, reference)
        if order is not None and treedef != order:  # keys in another order: take them in the params' order
            leaves, treedef = tree_flatten(tree_map(lambda p, g: g, reference, grads))
        flat_params = None if params is None else ravel("params", param_leaves)
        flat_updates, state = inner.update(ravel("grads", leaves), state, flat_params)
        pieces, start = [], 0
        for leaf in leaves:
            size = math.prod(leaf.shape)
            pieces.append(flat_updates[start:start + size].reshape(leaf.shape))
            start += size
        return tree_unflatten(treedef, pieces), state

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- optimizers

def _l2_decay(weight_decay) -> list[GradientTransformation]:
    """The L2 decay added to the gradient, or nothing when it is 0 (checked first: a falsy
    ``None`` or ``False`` would otherwise pass as "no decay")."""
    weight_decay = check_real("weight_decay", weight_decay, low=0.0)
    return [add_decayed_weights(weight_decay)] if weight_decay else []


def sgd(learning_rate, momentum: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0) -> GradientTransformation:
    """SGD as ``torch.optim.SGD`` with dampening 0: ``d = g + λ·p``; ``b = μ·b + d``;
    ``p ← p − η·(d + μ·b)`` (Nesterov) or ``p ← p − η·b``."""
    _learning_rate(learning_rate)
    momentum = check_real("momentum", momentum, low=0.0, high=1.0, high_open=True)
    nesterov = check_bool("nesterov", nesterov)
    if nesterov and momentum == 0.0:
        raise ValueError("nesterov: got True with momentum=0.0, expected momentum > 0")
    parts = _l2_decay(weight_decay)
    if momentum:
        parts.append(trace(momentum, nesterov))
    return chain(*parts, scale_by_learning_rate(learning_rate))


def adam(learning_rate=1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         weight_decay: float = 0.0, amsgrad: bool = False) -> GradientTransformation:
    """Adam as ``torch.optim.Adam``: L2 ``weight_decay`` is added to the gradient before the moments;
    ``p ← p − η·(m/(1−b1^t)) / (√v/√(1−b2^t) + eps)``."""
    _learning_rate(learning_rate)
    parts = _l2_decay(weight_decay)
    return chain(*parts, scale_by_adam(b1, b2, eps, amsgrad), scale_by_learning_rate(learning_rate))


def adamw(learning_rate=1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 1e-2, amsgrad: bool = False, mask=None) -> GradientTransformation:
    """AdamW as ``torch.optim.AdamW`` (decoupled decay): ``p ← p − η·(adam_direction + λ·p)``,
    i.e. the decay ``η·λ·p`` follows the learning-rate schedule. ``mask`` as in
    :func:`add_decayed_weights`."""
    _learning_rate(learning_rate)
    return chain(scale_by_adam(b1, b2, eps, amsgrad), add_decayed_weights(weight_decay, mask),
                 scale_by_learning_rate(learning_rate))


def rmsprop(learning_rate=1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
            momentum: float = 0.0, centered: bool = False) -> GradientTransformation:
    """RMSprop as ``torch.optim.RMSprop``: ``d = g + λ·p``; ``s = α·s + (1−α)·d²``;
    ``b = μ·b + d/(√s + eps)``; ``p ← p − η·b`` (``b = d/(√s + eps)`` without momentum)."""
    _learning_rate(learning_rate)
    parts = _l2_decay(weight_decay)
    parts.append(scale_by_rms(alpha, eps, centered))
    if check_real("momentum", momentum, low=0.0, high=1.0, high_open=True):
        parts.append(trace(momentum))
    return chain(*parts, scale_by_learning_rate(learning_rate))


def adagrad(learning_rate=1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
            initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> GradientTransformation:
    """Adagrad as ``torch.optim.Adagrad``: ``d = g + λ·p``; ``s = s + d²``;
    ``p ← p − η_t/(1 + t·lr_decay) · d/(√s + eps)`` with t = 0 on the first update."""
    schedule = _learning_rate(learning_rate)
    lr_decay = check_real("lr_decay", lr_decay, low=0.0)
    parts = _l2_decay(weight_decay)
    parts.append(scale_by_adagrad(initial_accumulator_value, eps))
    # the schedule's value is checked before the division, which would fail on a non-number first
    return chain(*parts, scale_by_learning_rate(
        lambda count: _schedule_value("learning_rate", schedule(count), count) / (1.0 + count * lr_decay)))


# ----------------------------------------------------------------------------- checkpoints

def step_count(state) -> int:
    """The number of updates applied so far: the first ``"count"`` found in ``state``."""
    if isinstance(state, dict):
        if "count" in state:
            return int(state["count"])
        children = state.values()
    elif isinstance(state, (list, tuple)):
        children = state
    else:
        children = ()
    for child in children:
        try:
            return step_count(child)
        except ValueError:
            continue
    raise ValueError("state: got a state without a step count, expected one from an optimizer's init")


def _leaf_to_numpy(path: str, leaf) -> np.ndarray:
    if isinstance(leaf, (bool, np.bool_)):
        raise TypeError(f"state[{path!r}]: got {leaf!r}, expected an array or an int step count")
    if isinstance(leaf, (np.ndarray, np.generic, numbers.Number)):
        out = np.array(leaf)
    elif hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        from . import backends  # the registry converts torch/cupy arrays without importing them here
        out = np.array(backends.to_numpy(leaf))
    else:
        raise TypeError(f"state[{path!r}]: got {type(leaf).__name__}, expected an array or an int step count "
                        "(a state from an optimizer's init/update)")
    if out.dtype.kind not in "fiu":
        raise TypeError(f"state[{path!r}]: got dtype {out.dtype}, expected floating-point arrays and int counts")
    return out


def _leaf_dtype(template) -> np.dtype:
    """The NumPy dtype of a float template leaf (a Python float: float64), read without copying its data."""
    if isinstance(template, numbers.Real) and not isinstance(template, np.generic):
        return np.dtype(np.float64)
    return backends.numpy_dtype(template)


def _numpy_to_leaf(array: np.ndarray, template):
    """``array`` (already in the template's dtype, see :func:`_check_restored`) as a leaf like ``template``."""
    if isinstance(template, bool) or isinstance(template, numbers.Integral):
        return int(array)
    if isinstance(template, numbers.Real):
        return float(array)
    if isinstance(template, (np.ndarray, np.generic)):
        return np.array(array)
    return backends.get(backends.backend_of(template)).asarray(array)


def state_to_arrays(state, prefix: str = "opt_state/") -> dict[str, np.ndarray]:
    """Flatten an optimizer state into ``{path: numpy array}`` for ``np.savez``; step counts become
    0-d int64 arrays. Paths look like ``"opt_state/1/mu/cells/0/weight_hh"``."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix: got {type(prefix).__name__}, expected str")
    if not isinstance(state, (dict, list, tuple)):
        raise TypeError(f"state: got {type(state).__name__}, expected an optimizer state (a dict or tuple from "
                        "an optimizer's init/update)")
    return {prefix + path: _leaf_to_numpy(path, leaf) for path, _, leaf in checkpoint_paths("state", state)}


def _check_restored(key: str, array: np.ndarray, template, square: bool = False) -> np.ndarray:
    """``array`` (read from a checkpoint) fits the template leaf: shape, dtype kind, values finite in
    the template's dtype, and >= 0 for a ``square`` slot. Returns it in that dtype (a float leaf) or
    as read (a count)."""
    count = isinstance(template, numbers.Integral)
    expected = () if count else tuple(getattr(template, "shape", ()))
    if tuple(array.shape) != expected:
        raise ValueError(f"arrays[{key!r}]: got shape {array.shape}, expected {expected}")
    if count:
        if array.dtype.kind not in "iu" or int(array) < 0:
            raise ValueError(f"arrays[{key!r}]: got {array!r}, expected a step count (an integer >= 0)")
        return array
    if array.dtype.kind != "f":
        raise TypeError(f"arrays[{key!r}]: got dtype {array.dtype}, expected a floating-point array")
    if not np.isfinite(array).all():
        raise ValueError(f"arrays[{key!r}]: got non-finite values (NaN or inf), expected a finite optimizer state")
    dtype = _leaf_dtype(template)
    with np.errstate(over="ignore"):  # an overflow is refused just below, by name
        cast = np.asarray(array, dtype=dtype)
    if not np.isfinite(cast).all():  # finite as saved, inf in a narrower template dtype (1e39 as float32)
        raise ValueError(f"arrays[{key!r}]: got values up to {float(np.abs(array).max())!r} in magnitude, beyond "
                         f"the range of {dtype}, expected a finite optimizer state in the template's dtype")
    if square and cast.size and float(cast.min()) < 0:  # a square root of it comes next
        raise ValueError(f"arrays[{key!r}]: got a minimum of {float(cast.min())!r}, expected a sum of squares >= 0")
    return cast


# state slots that accumulate squared gradients (Adam's nu, RMSprop's square_avg, Adagrad's sum)
_SQUARES = {"nu", "nu_max", "square_avg", "sum"}


def _in_square_slot(state, keys: tuple) -> bool:
    """Whether the leaf at ``keys`` lies in a slot of :data:`_SQUARES` of a transformation's state
    (a dict with an int ``"count"``), not under a parameter that merely has such a name."""
    node = state
    for k in keys:
        if isinstance(node, dict) and k in _SQUARES and isinstance(node.get("count"), numbers.Integral):
            return True
        node = node[k]
    return False


def state_from_arrays(template_state, arrays, prefix: str = "opt_state/"):
    """Rebuild a state shaped like ``template_state`` (e.g. ``opt.init(params)``) from ``arrays``
    (a dict or an ``np.load`` result) written by :func:`state_to_arrays`. Leaves come back on the
    template leaf's backend and dtype; counts come back as ints.

    Refused with a ``ValueError``/``TypeError`` naming the path: a path of the template missing from
    ``arrays``, a path under ``prefix`` the template does not have (a checkpoint of another optimizer,
    e.g. ``amsgrad`` or momentum on one side only), a wrong shape, a non-float moment or a
    non-finite one, a count that is not an integer >= 0, and counts that differ between the parts
    of one state (every part of a chain counts the same updates)."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix: got {type(prefix).__name__}, expected str")
    if not isinstance(template_state, (dict, list, tuple)):
        raise TypeError(f"template_state: got {type(template_state).__name__}, expected an optimizer state "
                        "(e.g. opt.init(params))")
    if not (hasattr(arrays, "keys") and hasattr(arrays, "__getitem__")):
        raise TypeError(f"arrays: got {type(arrays).__name__}, expected a dict of arrays or an np.load result")
    paths = checkpoint_paths("template_state", template_state)
    wanted = {prefix + p for p, _, _ in paths}
    missing = [k for k in sorted(wanted) if k not in arrays]
    if missing:
        raise ValueError(f"arrays: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, expected every "
                         f"path of the template state under prefix {prefix!r}")
    extra = sorted(k for k in arrays.keys() if isinstance(k, str) and k.startswith(prefix) and k not in wanted)
    if extra:
        raise ValueError(f"arrays: got paths the template state does not have {extra[:5]}"
                         f"{' ...' if len(extra) > 5 else ''}, expected only the template's paths under prefix "
                         f"{prefix!r} (a checkpoint of another optimizer or another configuration?)")
    counts: dict[str, int] = {}
    checked = []
    for path, keys, template in paths:
        key = prefix + path
        array = _check_restored(key, np.asarray(arrays[key]), template, _in_square_slot(template_state, keys))
        checked.append(array)
        if isinstance(template, numbers.Integral):
            counts[key] = int(array)
    if len(set(counts.values())) > 1:
        raise ValueError(f"arrays: got step counts {counts}, expected one count in every part of the state "
                         "(a checkpoint assembled from different runs?)")
    leaves = iter(checked)

    def restore(template):
        return _numpy_to_leaf(next(leaves), template)

    return tree_map(restore, template_state)  # visits leaves in tree_paths order

