"""The primitive mechanism.

A *primitive* is a differentiable routine with a forward and a hand-written VJP.  Its
NumPy reference is registered here with :func:`define`; it is written against an array
namespace ``xp`` so that NumPy-like backends (NumPy, CuPy) can run it unchanged.  A
backend *replaces* a primitive by putting ``(fwd, bwd)`` with the same signatures in its
``primitives`` dict:

    fwd(xp, *arrays, **static) -> (outputs, residuals)
    bwd(xp, residuals, cotangents, **static) -> tuple of gradients, one per array argument

``outputs`` is an array or a tuple of arrays; ``cotangents`` has the same structure,
with zeros filled in for outputs that received no gradient.  ``None`` gradients mean
"not differentiable" (integer labels, masks).

Calling a primitive (:meth:`Primitive.__call__`) dispatches on the backend of its array
arguments and, when any argument is being traced by :func:`seqcore.vjp`, records a node
on the tape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import backends as _backends
from .autodiff import Traced, record
from .validate import RequiresGradError

__all__ = ["Primitive", "define", "get", "registry", "implementation"]

_REGISTRY: dict[str, "Primitive"] = {}


_PRIMITIVE_DOC = """A differentiable routine: a forward ``fwd(xp, *arrays, **static)`` and its
hand-written VJP ``bwd``; calling it dispatches on the backend of its array arguments."""


class _Doc:
    """``__doc__`` of a primitive: its own ``doc`` (what ``help`` and ``inspect.getdoc`` show),
    the class's on the class."""

    def __get__(self, obj, cls):
        if obj is None or not obj.doc:
            return _PRIMITIVE_DOC
        return f"{obj.name}: {obj.doc}"


@dataclass(frozen=True)
class Primitive:
    __doc__ = _Doc()
    name: str
    fwd: Callable
    bwd: Callable
    doc: str = ""
    array_op: bool = False  # a thin wrapper of an array operation: the array library's errors are the input's
    arg_names: tuple = ()  # the public operation's names for the array arguments, for input errors

    def __call__(self, *args: Any, **static: Any):
        raw = tuple(a.value if isinstance(a, Traced) else a for a in args)
        backend = _backends.get(_backends.backend_of(*raw))
        fwd, bwd = implementation(self, backend)
        try:
            outputs, residuals = fwd(backend.xp, *raw, **static)
        except (ValueError, IndexError, TypeError) as exc:
            if not self.array_op or isinstance(exc, RequiresGradError):  # the latter names this op already
                raise
            raise _input_error(self.name, raw, static, exc, self.arg_names) from exc
        if not any(isinstance(a, Traced) for a in args):
            return outputs

        def pullback(cotangents):
            return bwd(backend.xp, residuals, cotangents, **static)

        return record(self.name, args, outputs, pullback, backend.xp)


def _describe(x) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"shape {tuple(x.shape)} ({x.dtype})"
    return f"{type(x).__name__} {x!r:.40}"


def _input_error(name: str, raw: tuple, static: dict, exc: Exception, arg_names: tuple = ()) -> Exception:
    """An array operation's failure (NumPy's broadcasting, reshape, axis or index error) as a
    ValueError (TypeError for types) that names the operation and what it got."""
    names = arg_names or (("a", "b") if len(raw) == 2 and name not in ("concatenate", "stack") else (
        ("x",) if len(raw) == 1 else tuple(f"xs[{i}]" for i in range(len(raw)))))
    got = ", ".join(f"{n} {_describe(x)}" for n, x in zip(names, raw))
    got += "".join(f", {k}={v!r:.60}" for k, v in static.items())
    if isinstance(exc, IndexError):  # still an IndexError, which ends Python's iteration over a traced array
        kind = InputIndexError
    else:
        kind = ValueError if isinstance(exc, ValueError) else TypeError
    return kind(f"{name}: got {got}; {exc}")


class InputIndexError(ValueError, IndexError):
    """An index or axis out of range in an array operation (a ValueError and an IndexError, as
    NumPy's ``AxisError`` is)."""


def implementation(prim: Primitive, backend) -> tuple[Callable, Callable]:
    """``(fwd, bwd)`` that ``backend`` uses for ``prim``: its replacement, or the reference."""
    replaced = backend.primitives.get(prim.name)
    if replaced is not None:
        return replaced
    adapt = getattr(backend, "adapt_reference", None)
    return adapt(prim) if adapt is not None else (prim.fwd, prim.bwd)


def define(name: str, fwd: Callable, bwd: Callable, doc: str = "", array_op: bool = False,
           arg_names: tuple = ()) -> Primitive:
    """Register the reference implementation of primitive ``name`` and return it.  ``array_op``:
    ``fwd`` validates nothing itself, so a ValueError, IndexError or TypeError from it is the
    input's fault and is reported naming the operation and the shapes it got.  ``arg_names``:
    the names of the array arguments in that report (default ``x``; ``a``, ``b``; ``xs[i]``)."""
    if name in _REGISTRY:
        raise ValueError(f"primitive {name!r} is already defined")
    if not isinstance(arg_names, tuple) or not all(isinstance(n, str) for n in arg_names):
        raise TypeError(f"arg_names: got {arg_names!r:.60}, expected a tuple of str")
    prim = Primitive(name, fwd, bwd, doc, array_op, arg_names)
    _REGISTRY[name] = prim
    return prim


def get(name: str) -> Primitive:
    """The registered primitive called ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"name: got {type(name).__name__} {name!r}, expected a primitive's name (a str)")
    if name not in _REGISTRY:
        raise ValueError(f"name: got unknown primitive {name!r}; expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def registry() -> dict[str, Primitive]:
    """All registered primitives, by name (a copy)."""
    return dict(_REGISTRY)
