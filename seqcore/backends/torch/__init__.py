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

import inspect

import numpy as np
import torch

from ...primitives import get as _get_primitive
from ...validate import check_has_data, requires_grad_error
from ...tree import tree_leaves, tree_map

name = "torch"
xp = torch
version = torch.__version__
primitives: dict = {}


def asarray(x, dtype=None):
    """``x`` as a tensor; ``dtype`` a NumPy or a torch dtype."""
    target = None if dtype is None else _torch_dtype(dtype)
    if isinstance(x, torch.Tensor):
        return x if target is None else x.to(target)
    arr = np.asarray(x, dtype=None if isinstance(dtype, torch.dtype) else dtype)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"x: got {type(x).__name__} of dtype {arr.dtype}, expected numbers (bool, int, float "
                        "or complex) to make a torch tensor")
    out = torch.from_numpy(_contiguous(arr))
    return out if target is None else out.to(target)  # NumPy has no bfloat16: torch converts


# float dtypes NumPy has: the reference runs on a tensor's data as a NumPy array
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def _check_numpy_data(name: str, a, what: str) -> None:
    """Refuse a tensor whose data NumPy cannot read: on the meta device (no data), or floating of a dtype
    NumPy has not (bfloat16, float8). ``.numpy()`` would fail unnamed."""
    check_has_data(name, a)
    if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dtype not in _NUMPY_FLOATS:
        raise TypeError(f"{name}: got dtype {a.dtype}, expected torch.float32 or torch.float64 (or torch.float16) "
                        f"for {what}: the torch backend computes with the NumPy reference, and NumPy has no "
                        f"{str(a.dtype).removeprefix('torch.')}; convert with .float()")


def _check_tensors(what: str, args, names: tuple = ()) -> None:
    """Positional arguments of a primitive on torch: tensors (or None/Python numbers), floating ones
    of one dtype NumPy has, all on one device — named here instead of failing inside the reference or torch.
    ``names``: the arguments' public names (``a``, ``b``), else ``args[i]``."""
    names = tuple(names) + tuple(f"args[{i}]" for i in range(len(names), len(args)))
    floating, device = None, None
    for i, a in enumerate(args):
        if a is None or (isinstance(a, (int, float)) and not isinstance(a, bool)):
            continue
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"{names[i]}: got {type(a).__name__}, expected a torch.Tensor for {what} "
                            "(convert NumPy arrays with seqcore.backends.get('torch').asarray)")
        _check_numpy_data(names[i], a, what)
        if a.is_floating_point():
            if floating is not None and a.dtype != floating[1]:
                raise TypeError(f"{names[i]}: got dtype {a.dtype}, expected {floating[1]} like {floating[0]} "
                                f"of {what}")
            floating = floating or (names[i], a.dtype)
        if device is not None and a.device != device[1]:
            raise ValueError(f"{names[i]}: got a tensor on {a.device}, expected {device[1]} like {device[0]} "
                             f"of {what}")
        device = device or (names[i], a.device)


def _contiguous(v):
    """A C-contiguous ndarray (0-d stays 0-d; torch rejects negative strides)."""
    arr = np.asarray(v)
    ok = arr.flags.c_contiguous and all(st >= 0 for st in arr.strides)  # size-1 axes may carry any stride
    return arr if ok else arr.copy(order="C")


def to_numpy(x):
    if isinstance(x, torch.Tensor):
        _check_numpy_data("x", x, "to_numpy")
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _torch_dtype(dtype):
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
    except TypeError:  # not a dtype ("Cannot interpret"), or one torch has not (str, object)
        raise TypeError(f"dtype: got {dtype!r:.60}, expected a torch dtype or a NumPy dtype torch has "
                        "(bool, int, float or complex)") from None


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


def _root(a: np.ndarray) -> np.ndarray:
    """The array at the end of ``a``'s chain of views: the one that owns (or wraps) its memory."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _run_reference(prim, args, static):
    """``prim``'s reference on the data of tensors: ``(outputs, residuals, args)``, all NumPy."""
    np_args = _to_np(list(args))
    out, res = prim.fwd(np, *np_args, **_to_np(static))
    # A reference may return a view of an input (reshape, getitem): as a tensor it would share the
    # input's storage without torch knowing (no view or version-counter link), so an in-place change
    # of one would silently change the other. Fresh outputs, the common case, are not copied.
    # An output that owns its memory (no base) shares it only by being an input itself.
    leaves = [out] if isinstance(out, np.ndarray) else tree_leaves(out)
    flat = all(isinstance(a, np.ndarray) or a is None or isinstance(a, (int, float)) for a in np_args)
    inputs = [a for a in (np_args if flat else tree_leaves(np_args)) if isinstance(a, np.ndarray)]
    if all(not isinstance(o, np.ndarray) or o.base is None for o in leaves) and not any(
            o is a for a in inputs for o in leaves):
        return out, res, np_args  # the common case, checked cheaply: every call pays for this

    def own(o):
        return o.copy() if isinstance(o, np.ndarray) and any(np.may_share_memory(o, a) for a in inputs) else o
    return tree_map(own, out, is_leaf=lambda v: isinstance(v, np.ndarray)), res, np_args


def adapt_reference(prim):
    """``(fwd, bwd)`` running ``prim``'s NumPy reference on the data of torch tensors."""
    def fwd(_xp, *args, **static):
        if torch.is_grad_enabled() and any(getattr(a, "requires_grad", False) for a in args):
            # the reference runs on the tensors' data: torch's autograd would silently lose the graph
            raise requires_grad_error(prim.name, repr(prim.name))
        for i, a in enumerate(args):  # a plain tensor (most arguments) needs no tree walk
            for leaf in (a,) if isinstance(a, torch.Tensor) else tree_leaves(a):
                if isinstance(leaf, torch.Tensor) and (leaf.dtype not in _NUMPY_FLOATS or leaf.is_meta):
                    _check_numpy_data(f"args[{i}]", leaf, f"primitive {prim.name!r}")
        device = _device_of(args)
        out, res, _ = _run_reference(prim, args, static)
        return _to_torch(out, device), (res, device)

    def bwd(_xp, residuals, cot, **static):
        res, device = residuals
        grads = prim.bwd(np, res, _to_np(cot), **_to_np(static))
        return tuple(_to_torch(g, device) if g is not None else None for g in grads)

    return fwd, bwd


def _held(res, pairs) -> list:
    """The CPU tensors of ``pairs`` ``(tensor, its NumPy data)`` whose memory the residuals view."""
    roots = {id(_root(r)) for r in tree_leaves(res) if isinstance(r, np.ndarray)}
    return [t for t, a in pairs if isinstance(t, torch.Tensor) and t.device.type == "cpu"
            and isinstance(a, np.ndarray) and id(_root(a)) in roots
            and a.size and t.data_ptr() == a.__array_interface__["data"][0]]


def _owned(grads, cots) -> tuple:
    """``grads``, each copied if it shares memory with a cotangent or an earlier gradient: torch cannot
    see that sharing, and may make both leaves' ``.grad`` one buffer (``a.grad.zero_()`` clearing ``b``'s)."""
    seen = [c.detach().numpy() for c in cots if isinstance(c, torch.Tensor) and c.device.type == "cpu"]
    out = []
    for g in grads:
        if isinstance(g, torch.Tensor) and g.device.type == "cpu":
            a = g.detach().numpy()
            if any(np.may_share_memory(a, s) for s in seen):
                g = g.clone()
                a = g.numpy()
            seen.append(a)
        out.append(g)
    return tuple(out)


class _SecondDerivative(torch.autograd.Function):
    """The identity on a primitive's gradients, linked to the primitive's inputs, whose backward
    raises. The gradients were computed from NumPy data, so they have no graph: differentiated again
    (a gradient penalty), seqcore's term would silently be missing. ``once_differentiable`` is not
    enough: it links them to the incoming gradients only, so ``autograd.grad(g, a)``, and any ``g``
    from ``out.sum()``, found no path to ``a`` and gave 0 for that term."""

    @staticmethod
    def forward(ctx, name, n, *tensors):  # tensors: n gradients, then the inputs they depend on
        ctx.name = name
        return tuple(g.view_as(g) for g in tensors[:n])

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(f"autograd_function({ctx.name!r}) is differentiable once: its gradient was computed "
                           "from NumPy data, so torch cannot differentiate it again (create_graph=True, "
                           "gradgradcheck): second derivatives through seqcore are not supported")


def _differentiable_once(name: str, grads, inputs) -> tuple:
    """``grads`` as outputs of :class:`_SecondDerivative` over ``inputs`` (those requiring grad)."""
    given = [g for g in grads if g is not None]
    if not given:
        return tuple(grads)
    marked = iter(_SecondDerivative.apply(name, len(given), *given, *inputs))
    return tuple(None if g is None else next(marked) for g in grads)


def autograd_function(prim_name: str):
    """A callable applying primitive ``prim_name`` to tensors inside torch autograd.

    Non-tensor positional arguments (``None``) and keyword arguments are passed through
    as the primitive's static arguments.  Differentiable once: backpropagating through a gradient
    it gave under ``create_graph=True`` (a gradient penalty, ``gradgradcheck``) raises, since its
    VJP runs on NumPy data.
    """
    prim = _get_primitive(prim_name)
    _, bwd = adapt_reference(prim)

    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, static, *args):
            device = _device_of(args)
            out_np, res, np_args = _run_reference(prim, args, static)
            out = _to_torch(out_np, device)
            ctx.res, ctx.static, ctx.n = (res, device), static, len(args)
            ctx.multi = isinstance(out, tuple)
            outs, outs_np = (out, out_np) if ctx.multi else ((out,), (out_np,))
            # residuals that view a tensor's memory: saved, so that torch refuses the backward if that
            # tensor was changed in place (which would change the gradient silently)
            ctx.save_for_backward(*_held(res, [*zip(args, np_args), *zip(outs, outs_np)]))
            # the inputs a second derivative would reach (kept on ctx, not saved: no version check needed)
            ctx.differentiable = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
            return out

        @staticmethod
        def backward(ctx, *cots):
            ctx.saved_tensors  # noqa: B018 - unpacking runs torch's check for in-place changes
            cot = tuple(cots) if ctx.multi else cots[0]
            with torch.no_grad():
                grads = _owned(bwd(torch, ctx.res, cot, **ctx.static), cots)
            if torch.is_grad_enabled() and ctx.differentiable:  # create_graph=True
                grads = _differentiable_once(prim_name, grads, ctx.differentiable)
            return (None,) + tuple(grads) + (None,) * (ctx.n - len(grads))

    _Fn.__name__ = f"{prim_name}_torch_function"

    from ...scan import CHECKS
    check = CHECKS.get(prim_name)  # a scan's argument rules, named as seqcore.linear_scan names them
    names = tuple(inspect.signature(check).parameters) if check else ()

    def call(*args, **static):
        # tensors first: the scan's rules would take a NumPy first argument as the reference and blame a tensor
        _check_tensors(f"primitive {prim_name!r}", args, names[:len(args)])
        if check:
            check(*(a.detach() if isinstance(a, torch.Tensor) else a for a in args), **static)
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
