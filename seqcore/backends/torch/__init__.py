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
    return torch.from_numpy(_contiguous(np.asarray(x, dtype=dtype)))


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
        return _Fn.apply(static, *args)

    call.__doc__ = f"{prim_name} on torch tensors, differentiable by torch autograd. {prim.doc}"
    return call


def linear_scan(a, b, h0=None, *, reverse=False, method="sequential", chunk_size=64):
    """:func:`seqcore.linear_scan` for torch tensors inside torch autograd."""
    from ...scan import linear_scan as checked  # validates shapes and dtypes on the tensors
    checked(a.detach(), b.detach(), None if h0 is None else h0.detach(), reverse=reverse, method=method,
            chunk_size=chunk_size)
    return autograd_function("linear_scan")(a, b, h0, reverse=reverse, method=method, chunk_size=chunk_size)
