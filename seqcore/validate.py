"""Argument checks shared by the public API: errors name the argument, the value and what was expected."""
from __future__ import annotations

import numbers

import numpy as np

from .autodiff import Traced


def _raw(x):
    return x.value if isinstance(x, Traced) else x


def is_array(x) -> bool:
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


def check_array(name: str, x, ndim: int | tuple[int, ...] | None = None, floating: bool = True):
    """Validate that ``x`` is an array (of floats, when ``floating``) with ``ndim`` dimensions."""
    if not is_array(x):
        raise TypeError(f"{name}: got {type(x).__name__}, expected an array")
    if floating and dtype_kind(x) != "f":
        raise TypeError(f"{name}: got dtype {_raw(x).dtype}, expected a floating-point array (float32 or float64)")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name}: got an array of shape {tuple(x.shape)} ({x.ndim} dims), expected {want} dims")
    return x


def check_shape(name: str, x, expected: tuple, what: str = ""):
    """``expected`` may hold ``None`` for 'any size'."""
    shape = tuple(x.shape)
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        exp = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name}: got shape {shape}, expected {exp}{' ' + what if what else ''}")
    return x


def check_same_backend(name: str, x, ref_name: str, ref):
    """``x`` is an array of the same library as ``ref`` (a NumPy array beside a torch tensor is refused)."""
    kx, kr = type(_raw(x)), type(_raw(ref))
    lib_x, lib_r = kx.__module__.split(".")[0], kr.__module__.split(".")[0]
    if lib_x != lib_r:  # say so, not "float64 != torch.float64" or an error deep inside the primitive
        raise TypeError(f"{name}: got a {lib_x}.{kx.__name__}, expected a {lib_r}.{kr.__name__} like {ref_name} "
                        "(arrays of one backend)")


def check_same_dtype(name: str, x, ref_name: str, ref):
    check_same_backend(name, x, ref_name, ref)
    if _raw(x).dtype != _raw(ref).dtype:
        raise TypeError(f"{name}: got dtype {_raw(x).dtype}, expected {_raw(ref).dtype} (the dtype of {ref_name})")


def check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"{name}: got {value!r}, expected one of {list(choices)}")
    return value


def check_positive_int(name: str, value, minimum: int = 1):
    """An integer (Python or NumPy, not bool) ``>= minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}: got {value!r}, expected an integer >= {minimum}")
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
    try:
        kind = np.dtype(dtype)
    except TypeError:
        kind = None
    if kind not in (np.float32, np.float64):
        raise TypeError(f"dtype: got {dtype!r}, expected float32 or float64")
    return kind


def check_params(name: str, params, shapes: dict, owner: str = ""):
    """``params`` is a dict holding every key of ``shapes`` as a float array of that shape.

    ``shapes`` maps a key to its expected shape (``None`` entries match any size); keys
    beyond ``shapes`` are allowed.  ``owner`` names what made the dict (``"LSTM.init"``).
    """
    src = f" from {owner}" if owner else ""
    if not isinstance(params, dict):
        raise TypeError(f"{name}: got {type(params).__name__}, expected a dict{src}")
    for k, shape in shapes.items():
        if k not in params:
            raise ValueError(f"{name}: missing {k!r}; expected keys {sorted(shapes)}{src}")
        check_array(f"{name}[{k!r}]", params[k])
        check_shape(f"{name}[{k!r}]", params[k], shape)
    return params
