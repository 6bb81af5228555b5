"""Backend registry.

A backend is a small module (``seqcore.backends.<name>``) exposing ``name``, ``xp``
(its array namespace), ``asarray``, ``to_numpy``, ``version`` and ``primitives`` — a
dict of replacements for reference primitives, keyed by primitive name.  Backends are
imported on first use only; detecting the backend of an array reads ``sys.modules``
and never imports a framework.
"""
from __future__ import annotations

import importlib
import os
import sys
import threading
from types import ModuleType

import numpy as np

from ..validate import is_array

__all__ = ["BackendUnavailable", "available", "get", "use", "current", "names", "backend_of", "namespace", "to_numpy", "numpy_dtype",
           "info"]

# name -> (module path, package it needs, pip extra that installs it)
_REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "numpy": ("seqcore.backends.numpy", "numpy", None),
    "numba": ("seqcore.backends.numba", "numba", "numba"),
    "cupy": ("seqcore.backends.cupy", "cupy", "cuda"),
    "torch": ("seqcore.backends.torch", "torch", "torch"),
}
_LOADED: dict[str, ModuleType] = {}
_FAILED: dict[str, str] = {}
_state = threading.local()
_lock = threading.Lock()


class BackendUnavailable(ImportError):
    """Raised when a backend's framework cannot be imported (or fails to start) here."""


def names() -> list[str]:
    """Every backend seqcore knows about, loadable here or not."""
    return list(_REGISTRY)


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name: got {type(name).__name__} {name!r}, expected a backend name (str), one of {names()}")
    if name not in _REGISTRY:
        raise ValueError(f"backend: unknown backend {name!r}; expected one of {names()}")


def _settings_hint(package: str, exc: BaseException) -> str:
    """The framework's own environment settings (``NUMBA_*``) that are set, unless the message
    already names a set variable: a framework failing at import mostly fails on one of them."""
    text = str(exc)
    if any(key in text for key in os.environ if "_" in key and key.isupper()):
        return ""
    prefix = package.upper() + "_"
    settings = [f"{key}={value!r}" for key, value in sorted(os.environ.items()) if key.startswith(prefix)]
    return f" (check the environment: {', '.join(settings)})" if settings else ""


def get(name: str | None = None) -> ModuleType:
    """Return the backend module ``name`` (default: the current backend), importing it on first use."""
    if name is None:
        name = current()
    _check_name(name)
    if name in _LOADED:
        return _LOADED[name]
    module_path, package, extra = _REGISTRY[name]
    with _lock:
        try:
            mod = importlib.import_module(module_path)
        except BackendUnavailable as exc:
            _FAILED[name] = str(exc)
            raise
        except ImportError as exc:
            hint = f"pip install 'seqcore[{extra}]'" if extra else f"pip install {package}"
            msg = f"backend {name!r} cannot load: {exc} (the package {package!r} is needed; install it with {hint})"
            _FAILED[name] = msg
            raise BackendUnavailable(msg) from exc
        except Exception as exc:  # a framework that imports but fails to start (numba: NUMBA_NUM_THREADS=0)
            msg = f"backend {name!r} cannot load: {type(exc).__name__}: {exc}{_settings_hint(package, exc)}"
            _FAILED[name] = msg
            raise BackendUnavailable(msg) from exc
        _LOADED[name] = mod
    return mod


def available() -> list[str]:
    """Names of the backends that load on this machine (imports each candidate)."""
    out = []
    for name in _REGISTRY:
        try:
            get(name)
        except BackendUnavailable:
            continue
        out.append(name)
    return out


def info() -> list[dict]:
    """``[{name, available, version, reason}]`` for every known backend."""
    rows = []
    for name in _REGISTRY:
        try:
            mod = get(name)
            rows.append({"name": name, "available": True, "version": mod.version, "reason": ""})
        except BackendUnavailable as exc:
            rows.append({"name": name, "available": False, "version": "", "reason": str(exc)})
    return rows


def _default_from_env() -> str:
    env = os.environ.get("SEQCORE_BACKEND", "numpy").strip() or "numpy"
    if env not in _REGISTRY:
        raise ValueError(f"$SEQCORE_BACKEND: got {env!r}, expected one of {names()}")
    return env


def current() -> str:
    """Name of the default backend (``seqcore.use`` > ``SEQCORE_BACKEND`` > ``"numpy"``)."""
    name = getattr(_state, "name", None)
    return name if name is not None else _default_from_env()


class use:
    """Set the default backend; also usable as a context manager that restores the previous one.

    >>> seqcore.use("numba")            # from now on
    >>> with seqcore.use("torch"): ...  # only inside the block

    A ``with`` restores what was current when it was entered, except that an object entered
    while its own backend is current (the usual ``with use(x):``, the call having just switched)
    restores what that call replaced.
    """

    def __init__(self, name: str):
        _check_name(name)
        get(name)  # fail now, with the install hint, rather than at first use
        self.name = name
        self._replaced = [getattr(_state, "name", None)]  # what this call switched away from
        self._restore: list = []  # one entry per `with` entered (an object may be entered again)
        _state.name = name

    def __enter__(self) -> ModuleType:
        current = getattr(_state, "name", None)
        # `with use(x):` restores what the call replaced; an object kept and entered later (or again)
        # switches now and restores what is current now
        self._restore.append(self._replaced.pop() if self._replaced and current == self.name else current)
        self._replaced.clear()
        _state.name = self.name
        return get(self.name)

    def __exit__(self, *exc) -> None:
        _state.name = self._restore.pop()


def backend_of(*arrays) -> str:
    """Backend that owns these arrays, detected from ``sys.modules`` without importing anything.

    NumPy arrays belong to the current backend when it computes on NumPy arrays
    (``numpy``, ``numba``), else to ``numpy``.
    """
    torch = sys.modules.get("torch")
    cupy = sys.modules.get("cupy")
    for a in arrays:
        if torch is not None and isinstance(a, torch.Tensor):
            return "torch"
        if cupy is not None and isinstance(a, cupy.ndarray):
            return "cupy"
    cur = current()
    return cur if cur in ("numpy", "numba") else "numpy"


def _plain_array(array):
    """``array`` (a value traced by ``seqcore.vjp`` included) as its backend's own array."""
    if not is_array(array):
        raise TypeError(f"array: got {type(array).__name__} {array!r:.40}, expected an array of any backend")
    from ..autodiff import stop_gradient  # autodiff reaches the registry through this module
    return stop_gradient(array)


def namespace(array):
    """The array module (``xp``) of the backend that owns ``array``: ``numpy`` for NumPy arrays,
    the torch or CuPy namespace for theirs (also for a value traced inside ``seqcore.vjp``)."""
    return get(backend_of(_plain_array(array))).xp


def to_numpy(array) -> np.ndarray:
    """``array`` of any backend as a NumPy array: NumPy arrays as they are, a tensor's data
    without a copy where it lives on the CPU, a GPU array copied to the host; a traced value's
    data, without its gradient."""
    array = _plain_array(array)
    return np.asarray(get(backend_of(array)).to_numpy(array))


def numpy_dtype(array) -> np.dtype:
    """The NumPy dtype of an array of any backend (``torch.float32`` → ``float32``), read
    without copying its data."""
    if isinstance(array, (np.ndarray, np.generic)):
        return array.dtype
    array = _plain_array(array)  # None or a list would meet ``.ndim`` below: an AttributeError
    module = get(backend_of(array))
    empty = array[(slice(0, 0),) * array.ndim] if array.ndim else array  # a view: reshape copies a strided array
    return np.asarray(module.to_numpy(empty)).dtype
