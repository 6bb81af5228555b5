"""Argument checks shared by the public API: errors name the argument, the value and what was expected."""
from __future__ import annotations

import math
import numbers
import os
from typing import Callable

import numpy as np

from .autodiff import Traced
from .tree import tree_leaves


def _raw(x):
    return x.value if isinstance(x, Traced) else x


def is_array(x) -> bool:
    """Whether ``x`` (or the value a traced ``x`` holds) is an array of some library: it has a shape and a dtype."""
    x = _raw(x)
    return hasattr(x, "shape") and hasattr(x, "dtype")


def dtype_kind(x) -> str:
    """'f' for floating, 'i'/'u' for integers, 'b' for bool — for any backend's arrays."""
    dt = _raw(x).dtype
    if getattr(dt, "is_floating_point", None) is not None:  # torch.dtype
        if dt.is_floating_point:
            return "f"
        return "b" if str(dt) == "torch.bool" else "i"
    return dt.kind


def _has_numpy_dtype(x) -> bool:
    """Whether NumPy has ``x``'s dtype (torch.bfloat16 it has not): the reference computes in it."""
    x = _raw(x)
    if isinstance(x.dtype, np.dtype):  # NumPy's own arrays and scalars, CuPy's
        return True
    from .backends import numpy_dtype
    try:
        numpy_dtype(x[(slice(0, 0),) * x.ndim])  # of an empty view: a strided tensor is not copied
    except TypeError:  # torch: "Got unsupported ScalarType BFloat16"
        return False
    return True


def check_array(name: str, x, ndim: int | tuple[int, ...] | None = None, floating: bool = True):
    """Validate that ``x`` is an array (of floats, when ``floating``) with ``ndim`` dimensions."""
    if not is_array(x):
        raise TypeError(f"{name}: got {type(x).__name__}, expected an array")
    check_has_data(name, x)
    if floating and dtype_kind(x) != "f":
        raise TypeError(f"{name}: got dtype {_raw(x).dtype}, expected a floating-point array "
                        "(float32 or float64; float16 runs the reference)")
    if floating and not _has_numpy_dtype(x):
        raise TypeError(f"{name}: got dtype {_raw(x).dtype}, expected float32 or float64 (float16 runs the "
                        "reference): NumPy, which the reference computes in, has no such dtype; convert to float32")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name}: got an array of shape {tuple(x.shape)} ({x.ndim} dims), expected {want} dims")
    return x


def check_has_data(name: str, x) -> None:
    """``x`` is not a torch tensor on the 'meta' device (a shape and dtype without data): seqcore
    computes on the data, and reading it would fail with torch's unnamed NotImplementedError."""
    if getattr(getattr(_raw(x), "device", None), "type", None) == "meta":
        raise ValueError(f"{name}: got a tensor on device meta, expected a tensor with data (cpu or cuda): "
                         "seqcore computes on the tensor's data, which a meta tensor has not")


def check_shape(name: str, x, expected: tuple, what: str = ""):
    """``expected`` may hold ``None`` for 'any size'."""
    shape = tuple(x.shape)
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        sizes = ["?" if e is None else str(e) for e in expected]
        exp = f"({sizes[0]},)" if len(sizes) == 1 else "(" + ", ".join(sizes) + ")"
        raise ValueError(f"{name}: got shape {shape}, expected {exp}{' ' + what if what else ''}")
    return x


def check_same_backend(name: str, x, ref_name: str, ref):
    """``x`` is an array of the same library as ``ref`` (a NumPy array beside a torch tensor is refused),
    and for torch tensors on the same device."""
    kx, kr = type(_raw(x)), type(_raw(ref))
    lib_x, lib_r = kx.__module__.split(".")[0], kr.__module__.split(".")[0]
    if lib_x != lib_r:  # say so, not "float64 != torch.float64" or an error deep inside the primitive
        raise TypeError(f"{name}: got a {lib_x}.{kx.__name__}, expected a {lib_r}.{kr.__name__} like {ref_name} "
                        "(arrays of one backend)")
    dx, dr = getattr(_raw(x), "device", None), getattr(_raw(ref), "device", None)
    if lib_x == "torch" and dx != dr:  # the reference would read both and answer on one device, silently
        raise ValueError(f"{name}: got a tensor on device {dx}, expected device {dr} like {ref_name} "
                         "(tensors on one device)")


class RequiresGradError(TypeError):
    """The refusal of a torch tensor that requires grad: its message already names what met it,
    so a primitive re-raises it unchanged rather than as an input error of its own."""


def requires_grad_error(name: str, primitive: str = "name") -> TypeError:
    """The refusal of a torch tensor that requires grad, under ``name`` (an argument, or the
    primitive that met it); ``primitive`` goes into the ``autograd_function(...)`` hint."""
    return RequiresGradError(
        f"{name}: got a torch.Tensor that requires grad, expected tensors without requires_grad: "
        "seqcore computes on the tensors' data, so torch autograd would not see this step. "
        "Detach them (seqcore.vjp differentiates detached tensors); torch autograd reaches "
        "seqcore only through single primitives, with "
        f"seqcore.backends.get('torch').autograd_function({primitive}), not through cells or layers")


def records_grad(x) -> bool:
    """Whether ``x`` is a torch tensor that requires grad while torch records gradients: one
    attribute lookup for anything else, so it can run on every leaf of every step."""
    v = _raw(x)
    if not getattr(v, "requires_grad", False):
        return False
    import sys
    torch = sys.modules.get("torch")  # never imported here: a tensor exists only if torch is loaded
    return torch is not None and isinstance(v, torch.Tensor) and torch.is_grad_enabled()


def check_detached(name: str, x) -> None:
    """``x`` is not a torch tensor that requires grad (:func:`records_grad`): seqcore computes on
    tensors' data, so torch autograd would silently lose the graph. Named here, under the
    caller's argument name, before any primitive runs."""
    if records_grad(x):
        raise requires_grad_error(name)


def check_same_dtype(name: str, x, ref_name: str, ref):
    """``x`` is an array of ``ref``'s library (:func:`check_same_backend`) and dtype."""
    check_same_backend(name, x, ref_name, ref)
    if _raw(x).dtype != _raw(ref).dtype:
        raise TypeError(f"{name}: got dtype {_raw(x).dtype}, expected {_raw(ref).dtype} (the dtype of {ref_name})")


def check_choice(name: str, value, choices):
    """Return ``value`` if it is one of ``choices``, else raise naming them."""
    try:
        known = value in choices
    except TypeError:  # an unhashable value against a set or dict of names
        known = False
    if not known:
        raise ValueError(f"{name}: got {value!r}, expected one of {', '.join(map(repr, choices))}")
    return value


INT64_MAX = 2 ** 63 - 1  # step counters are stored as int64 in checkpoints


def check_positive_int(name: str, value, minimum: int = 1, maximum: int | None = None):
    """An integer (Python or NumPy, not bool) ``>= minimum`` (and ``<= maximum`` when given)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}: got {value!r}, expected an integer >= {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}: got {value!r}, expected an integer <= {maximum}")
    return value


def check_bool(name: str, value):
    """``True`` or ``False`` (a truthy string such as ``"no"`` is refused, not read as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: got {value!r}, expected True or False")
    return bool(value)


def check_rng(rng):
    """A ``numpy.random.Generator`` (randomness is explicit: no global seeding)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: got {type(rng).__name__}, expected numpy.random.Generator "
                        "(e.g. numpy.random.default_rng(0))")
    return rng


def check_param_dtype(dtype):
    """``float32`` or ``float64`` as a NumPy dtype (the dtypes parameters are initialised in)."""
    try:  # np.dtype(None) is float64: a None passed on from elsewhere would choose it silently
        kind = None if dtype is None else np.dtype(dtype)
    except TypeError:
        kind = None
    if kind not in (np.float32, np.float64):
        raise TypeError(f"dtype: got {dtype!r}, expected float32 or float64")
    return kind


def check_params(name: str, params, shapes: dict, owner: str = ""):
    """``params`` is a dict holding every key of ``shapes`` as a float array of that shape.

    ``shapes`` maps a key to its expected shape (``None`` entries match any size); a key
    beyond ``shapes`` is refused (a misspelt or leftover parameter would be silently unused).
    ``owner`` names what made the dict (``"LSTM.init"``).
    """
    src = f" from {owner}" if owner else ""
    if not isinstance(params, dict):
        raise TypeError(f"{name}: got {type(params).__name__}, expected a dict{src}")
    extra = params.keys() - shapes.keys()
    if extra:
        raise ValueError(f"{name}: got unused key(s) {sorted(map(str, extra))}; expected keys {sorted(shapes)}{src}")
    for k, shape in shapes.items():
        if k not in params:
            raise ValueError(f"{name}: missing {k!r}; expected keys {sorted(shapes)}{src}")
        check_array(f"{name}[{k!r}]", params[k])
        check_shape(f"{name}[{k!r}]", params[k], shape)
    return params


# ---------------------------------------------------------------- sizes this machine can hold

def physical_memory() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX, or the value is unknown
        return None


def check_fits_in_memory(name: str, value, nbytes: int, what: str) -> None:
    """Refuse a size whose arrays could never fit in this machine's memory: allocating them
    would end in an out-of-memory kill, or run for hours first, instead of an error."""
    total = physical_memory()
    if total is not None and nbytes > total:
        raise ValueError(f"{name}: got {value}, whose {what} would take {nbytes / 2**30:.3g} GiB, more than this "
                         f"machine's {total / 2**30:.3g} GiB of memory")


def _takes_layers(build: Callable[..., object]) -> bool:
    """Whether ``build`` can be called as ``build(hidden, layers=L)``."""
    import inspect
    try:
        params = inspect.signature(build).parameters.values()
    except (TypeError, ValueError):  # no signature to read
        return False
    return any(p.name == "layers" or p.kind is p.VAR_KEYWORD for p in params)


def _quadratic_at(counts: list[int], x: int) -> int:
    """The quadratic through ``(1, counts[0]), (2, counts[1]), (3, counts[2])`` at ``x`` (Newton's
    divided differences; exact in integers)."""
    d1, d2 = counts[1] - counts[0], counts[2] - counts[1]
    return counts[0] + (x - 1) * d1 + (x - 1) * (x - 2) * (d2 - d1) // 2


def parameter_count(build: Callable[..., object], hidden: int, probes: int = 64, layers: int | None = None) -> int:
    """The number of parameters of ``build(hidden).init(...)``, without allocating them.

    Every model here has a parameter count quadratic in the hidden size (``H·H``, ``H·I`` and
    ``H`` terms), so three small models fix it exactly. Their sizes are multiples of the smallest
    size ``build`` accepts (cells with heads need multiples of the head count).

    With ``layers``, ``build(hidden, layers=L)`` builds an ``L``-layer stack, and the count of
    ``layers`` layers is found from stacks of 1, 2 and 3 layers, without building the deep one: the
    first layer reads the inputs and layers 2..L all read the layer below, so they are alike and
    the count is linear in the depth. The 3-layer stacks check that claim (their third layer must
    add what the second added, at every probe size); a stack that fails it is built at its depth.
    A ``build`` without a ``layers`` parameter is measured at its own depth, as without ``layers``."""
    if not _takes_layers(build):
        layers = None
    deep = layers is not None and layers > 3
    for base in range(1, probes + 1):
        if hidden % base:
            continue

        def count(k, depth=layers):
            model = build(k * base) if depth is None else build(k * base, layers=depth)
            return sum(np.size(leaf) for leaf in tree_leaves(model.init(np.random.default_rng(0))))
        try:
            by_depth = [[count(k, d) for k in (1, 2, 3)] for d in ((1, 2, 3) if deep else (layers,))]
        except (ValueError, TypeError):
            continue
        x = hidden // base  # the quadratic in hidden is fixed at x = hidden / base = 1, 2, 3
        if not deep:
            return _quadratic_at(by_depth[0], x)
        second = [b - a for a, b in zip(by_depth[0], by_depth[1])]
        third = [b - a for a, b in zip(by_depth[1], by_depth[2])]
        if second == third:  # layers 2 and 3 alike at three sizes: alike at every size (both quadratic)
            one, two = _quadratic_at(by_depth[0], x), _quadratic_at(by_depth[1], x)
            return one + (layers - 1) * (two - one)
        return _quadratic_at([count(k) for k in (1, 2, 3)], x)
    return 0  # no small model to measure: the build itself reports the problem


def check_model_fits(name: str, hidden: int, build: Callable[..., object], itemsize: int, copies: int,
                     layers: int = 1, layers_name: str = "layers") -> None:
    """Refuse a hidden size whose parameters, in ``copies`` copies (parameters, gradients,
    optimizer state) of ``itemsize`` bytes, could not fit in this machine's memory.

    With ``layers`` > 1 and a ``build(hidden, layers=L)`` that builds an ``L``-layer stack (see
    :func:`parameter_count`), the depth is counted without building the stack, and when one layer
    would fit, the depth is the cause and is named (``layers_name``) instead of the hidden size."""
    count = parameter_count(build, hidden, layers=layers if layers > 1 else None)
    nbytes = count * itemsize * copies
    total = physical_memory()
    if layers > 1 and total is not None and nbytes > total and _takes_layers(build):
        if parameter_count(build, hidden, layers=1) * itemsize * copies <= total:  # the depth is the cause
            check_fits_in_memory(layers_name, layers, nbytes, f"{count:.3g} parameters in {layers} layers of "
                                 f"{hidden} hidden units (with their gradients and optimizer state)")
    depth = f" in {layers} layers" if layers > 1 else ""
    check_fits_in_memory(name, hidden, nbytes, f"{count:.3g} parameters{depth} (with their gradients and "
                         "optimizer state)")


def is_real_number(value) -> bool:
    """A real number, Python or NumPy (``np.float32(0.1)``, ``np.int64(2)``), but not a bool:
    ``True`` where a number belongs is a mistake, not 1."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_integer(value) -> bool:
    """An integer, Python or NumPy (``np.int64(4)``), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def finite_float(value) -> float | None:
    """``value`` (a real number) as a float when that is finite; None for NaN, the infinities
    and integers too large for a float (``10**400``), which ``math.isfinite`` cannot even take."""
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def check_real(name: str, value, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float when it is a finite real number (Python or NumPy, not a bool)
    within the bounds given (``low_open`` / ``high_open`` exclude a bound); else raise,
    naming ``name``, the value and the bound it broke."""
    if not is_real_number(value):
        raise TypeError(f"{name}: got {value!r:.40} ({type(value).__name__}), expected a real number")
    number = finite_float(value)
    if number is None:
        raise ValueError(f"{name}: got {value!r:.40}, expected a finite number")
    if low is not None and (number <= low if low_open else number < low):
        raise ValueError(f"{name}: got {value}, expected {'>' if low_open else '>='} {low}")
    if high is not None and (number >= high if high_open else number > high):
        raise ValueError(f"{name}: got {value}, expected {'<' if high_open else '<='} {high}")
    return number


def is_finite_number(value) -> bool:
    """A finite real number (:func:`is_real_number`, neither NaN nor infinite): what a
    numeric config field or a recorded metric needs."""
    return is_real_number(value) and finite_float(value) is not None


def store_python_scalars(obj) -> None:
    """Replace the NumPy scalars among a frozen dataclass's fields (also inside a list or
    tuple field) by Python ones: ``np.int64(4)`` → ``4``, ``np.str_("tanh")`` → ``"tanh"``.
    A config then stays JSON-friendly, and equal objects compare and hash alike. Checks
    still see the types that matter (``np.True_`` becomes ``True``, still not an int)."""
    import dataclasses
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, np.generic):
            object.__setattr__(obj, f.name, value.item())
        elif isinstance(value, (list, tuple)) and any(isinstance(v, np.generic) for v in value):
            object.__setattr__(obj, f.name, type(value)(v.item() if isinstance(v, np.generic) else v for v in value))
