"""PyTorch adapter backend.

* As a seqcore backend (``seqcore.use("torch")``): arrays are ``torch.Tensor``; a
  primitive without a torch replacement runs the NumPy reference on the tensor's data
  and hands back tensors on the tensor's device and dtype.  Results equal the reference
  exactly; this path is for interoperability, not speed.
* As an adapter for PyTorch code: :func:`autograd_function` turns any seqcore primitive
  into a ``torch.autograd.Function``, so seqcore scans and cells compose with torch
  autograd (``seqcore.backends.get("torch").linear_scan(a, b)`` is differentiable by
  ``loss.backward()``).
"""
from __future__ import annotations

import numpy as np
import torch

from ...primitives import get as _get_primitive
from ...tree import tree_map

name = "torch"
xp = torch
version = torch.__version__
primitives: dict = {}


def asarray(x, dtype=None):
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(_torch_dtype(dtype))
    arr = np.asarray(x, dtype=dtype)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"x: got {type(x).__name__} of dtype {arr.dtype}, expected numbers (bool, int, float "
                        "or complex) to make a torch tensor")
    return torch.from_numpy(_contiguous(arr))


def _check_tensors(what: str, args) -> None:
    """Positional arguments of a primitive on torch: tensors (or None/Python numbers), floating ones
    of one dtype, all on one device — named here instead of failing inside the reference or torch."""
    floating, device = None, None
    for i, a in enumerate(args):
        if a is None or (isinstance(a, (int, float)) and not isinstance(a, bool)):
            continue
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"args[{i}]: got {type(a).__name__}, expected a torch.Tensor for {what} "
                            "(convert NumPy arrays with seqcore.backends.get('torch').asarray)")
        if a.is_floating_point():
            if floating is not None and a.dtype != floating[1]:
                raise TypeError(f"args[{i}]: got dtype {a.dtype}, expected {floating[1]} like args[{floating[0]}] "
                                f"of {what}")
            floating = floating or (i, a.dtype)
        if device is not None and a.device != device[1]:
            raise ValueError(f"args[{i}]: got a tensor on {a.device}, expected {device[1]} like args[{device[0]}] "
                             f"of {what}")
        device = device or (i, a.device)


def _contiguous(v):
    """A C-contiguous ndarray (0-d stays 0-d; torch rejects negative strides)."""
    arr = np.asarray(v)
    ok = arr.flags.c_contiguous and all(st >= 0 for st in arr.strides)  # size-1 axes may carry any stride
    return arr if ok else arr.copy(order="C")


def to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _torch_dtype(dtype):
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def _to_np(tree):
    return tree_map(lambda v: to_numpy(v) if isinstance(v, torch.Tensor) else v, tree,
                    is_leaf=lambda v: isinstance(v, torch.Tensor))


def _to_torch(tree, device):
    def conv(v):
        if isinstance(v, (np.ndarray, np.generic)):
            return torch.from_numpy(_contiguous(v)).to(device)
        return v
    return tree_map(conv, tree, is_leaf=lambda v: isinstance(v, (np.ndarray, np.generic)))


def _device_of(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def adapt_reference(prim):
    """``(fwd, bwd)`` running ``prim``'s NumPy reference on the data of torch tensors."""
    def fwd(_xp, *args, **static):
        if torch.is_grad_enabled() and any(getattr(a, "requires_grad", False) for a in args):
            # the reference runs on the tensors' data: torch's autograd would silently lose the graph
            raise TypeError(f"{prim.name}: got a torch.Tensor that requires grad, whose gradient torch autograd "
                            "would not get through seqcore; expected tensors without requires_grad (detach "
                            "them, or differentiate with seqcore.vjp), or use seqcore.backends.get('torch')"
                            f".autograd_function({prim.name!r}) inside torch autograd")
        device = _device_of(args)
        out, res = prim.fwd(np, *_to_np(list(args)), **_to_np(static))
        return _to_torch(out, device), (res, device)

    def bwd(_xp, residuals, cot, **static):
        res, device = residuals
        grads = prim.bwd(np, res, _to_np(cot), **_to_np(static))
        return tuple(_to_torch(g, device) if g is not None else None for g in grads)

    return fwd, bwd


def autograd_function(prim_name: str):
    """A callable applying primitive ``prim_name`` to tensors inside torch autograd.

    Non-tensor positional arguments (``None``) and keyword arguments are passed through
    as the primitive's static arguments.
    """
    prim = _get_primitive(prim_name)
    fwd, bwd = adapt_reference(prim)

    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, static, *args):
            out, res = fwd(torch, *args, **static)
            ctx.res, ctx.static, ctx.n = res, static, len(args)
            ctx.multi = isinstance(out, tuple)
            return out

        @staticmethod
        def backward(ctx, *cots):
            cot = tuple(cots) if ctx.multi else cots[0]
            grads = bwd(torch, ctx.res, cot, **ctx.static)
            return (None,) + tuple(grads) + (None,) * (ctx.n - len(grads))

    _Fn.__name__ = f"{prim_name}_torch_function"

    def call(*args, **static):
        from ...scan import CHECKS
        if prim_name in CHECKS:  # the scans' argument rules, named as seqcore.linear_scan names them
            CHECKS[prim_name](*(a.detach() if isinstance(a, torch.Tensor) else a for a in args), **static)
        _check_tensors(f"primitive {prim_name!r}", args)
        return _Fn.apply(static, *args)

    call.__doc__ = f"{prim_name} on torch tensors, differentiable by torch autograd. {prim.doc}"
    return call


def linear_scan(a, b, h0=None, *, reverse=False, method="sequential", chunk_size=64):
    """:func:`seqcore.linear_scan` for torch tensors inside torch autograd."""
    for name, v in (("a", a), ("b", b), ("h0", h0)):
        if not (isinstance(v, torch.Tensor) or (name == "h0" and v is None)):
            raise TypeError(f"{name}: got {type(v).__name__}, expected a torch.Tensor"
                            f"{' or None' if name == 'h0' else ''} (this is the torch backend's linear_scan)")
    return autograd_function("linear_scan")(a, b, h0, reverse=reverse, method=method, chunk_size=chunk_size)
