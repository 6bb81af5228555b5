"""The torch adapter: every primitive on torch tensors equals the NumPy reference, forward and VJP,
and primitives compose with torch autograd."""
import numpy as np
import pytest

import seqcore
import seqcore.models  # noqa: F401  (registers losses)
import seqcore.newton  # noqa: F401  (registers the Newton recurrence)
from seqcore import primitives

from primitive_cases import cases, is_library_primitive

torch = pytest.importorskip("torch", reason="the torch backend needs PyTorch")


def _t(x):
    return torch.tensor(x) if isinstance(x, np.ndarray) else x


def _np(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else x


@pytest.mark.parametrize("name", sorted(n for n in primitives.registry() if is_library_primitive(n)))
def test_primitive_on_torch_tensors_equals_reference(name):
    rng = np.random.default_rng(1)
    prim = primitives.get(name)
    for args, static in cases(name, rng):
        ref_out, ref_pb = seqcore.vjp(lambda *a: prim(*a, **static), *args)
        outs = ref_out if isinstance(ref_out, tuple) else (ref_out,)
        cot = tuple(rng.normal(size=np.shape(o)) for o in outs)
        ref_grads = ref_pb(cot if len(cot) > 1 else cot[0])
        targs = [_t(a) if isinstance(a, np.ndarray) else a for a in args]
        with seqcore.use("torch"):
            out, pb = seqcore.vjp(lambda *a: prim(*a, **static), *targs)
            grads = pb(tuple(_t(c) for c in cot) if len(cot) > 1 else _t(cot[0]))
        got = out if isinstance(out, tuple) else (out,)
        for g, r in zip(got, outs):
            assert isinstance(g, torch.Tensor)
            np.testing.assert_array_equal(_np(g), np.asarray(r))
        for g, r in zip(grads, ref_grads):
            if r is None or g is None:
                continue
            np.testing.assert_array_equal(_np(g), r)


def test_autograd_function_matches_seqcore_vjp():
    rng = np.random.default_rng(0)
    A = rng.uniform(-0.5, 0.5, (2, 9, 3, 2, 2))
    b = rng.normal(size=(2, 9, 3, 2))
    fn = seqcore.backends.get("torch").autograd_function("block_scan")
    At, bt = torch.tensor(A, requires_grad=True), torch.tensor(b, requires_grad=True)
    h = fn(At, bt, None, method="parallel")
    w = torch.from_numpy(rng.normal(size=h.shape))
    (h * w).sum().backward()
    _, pb = seqcore.vjp(lambda A, b: seqcore.block_scan(A, b), A, b)
    dA, db = pb(w.numpy())
    np.testing.assert_allclose(At.grad.numpy(), dA, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(bt.grad.numpy(), db, rtol=1e-12, atol=1e-13)


def test_torch_linear_scan_validates_and_gradchecks():
    fn = seqcore.backends.get("torch").linear_scan
    a = torch.rand(2, 5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, method="chunked", chunk_size=2), (a, b))
    with pytest.raises(ValueError, match=r"b: got shape \(2, 4, 3\)"):
        fn(a, torch.randn(2, 4, 3, dtype=torch.float64))


# -- bad arguments (round 2) ----------------------------------------------------------------------

def _tb():
    return seqcore.backends.get("torch")


def test_torch_linear_scan_names_non_tensor_arguments():
    b = torch.rand(2, 5, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="^a: got ndarray, expected a torch.Tensor"):  # was AttributeError 'detach'
        _tb().linear_scan(b.numpy(), b)
    with pytest.raises(TypeError, match="^h0: got ndarray"):
        _tb().linear_scan(b, b, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="^a: got NoneType"):
        _tb().linear_scan(None, b)


def test_autograd_function_checks_scans_and_tensors():
    f = _tb().autograd_function("linear_scan")
    a = torch.rand(2, 5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^b: got shape \(2, 4, 3\)"):  # was an IndexError in the reference
        f(a, a[:, :4])
    with pytest.raises(TypeError, match="^a: got dtype torch.int64"):   # ran on ints silently
        f(a.long(), a)
    with pytest.raises(TypeError, match="^b: got dtype torch.float64, expected torch.float32"):  # promoted silently
        f(a.float(), a)
    mul = _tb().autograd_function("mul")
    with pytest.raises(TypeError, match=r"^args\[1\]: got ndarray, expected a torch.Tensor"):  # mixed backends
        mul(a, a.numpy())
    with pytest.raises(TypeError, match=r"^args\[1\]: got dtype torch.float32, expected torch.float64"):
        mul(a, a.float())


def test_torch_asarray_and_mixed_backend_scans_are_named():
    with pytest.raises(TypeError, match="^x: got ndarray of dtype object"):  # was torch's "can't convert"
        _tb().asarray(np.array([None]))
    a = torch.rand(2, 5, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^b: got a torch.Tensor, expected a numpy.ndarray like a"):
        seqcore.linear_scan(a.numpy(), a)  # said "got dtype torch.float64, expected float64"


def test_a_tensor_that_requires_grad_is_refused_not_silently_detached():
    """The reference runs on the tensors' data, so torch autograd would lose the graph: refused,
    pointing to autograd_function, which keeps it (checked against the same scan's gradient)."""
    import torch
    a = torch.rand(2, 6, 3, dtype=torch.float64, requires_grad=True)
    b = torch.rand(2, 6, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^linear_scan: got a torch.Tensor that requires grad.*autograd_function"):
        seqcore.linear_scan(a, b)
    with torch.no_grad():
        plain = seqcore.linear_scan(a, b)
    out = seqcore.backends.get("torch").autograd_function("linear_scan")(a, b, None)
    torch.testing.assert_close(out.detach(), plain)
    out.sum().backward()
    _, pullback = seqcore.vjp(lambda a: seqcore.linear_scan(a, b).sum(), a.detach())
    torch.testing.assert_close(a.grad, pullback(torch.ones((), dtype=torch.float64))[0])
