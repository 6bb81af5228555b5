"""The torch adapter: every primitive on torch tensors equals the NumPy reference, forward and VJP,
and primitives compose with torch autograd."""
import numpy as np
import pytest

import seqcore
import seqcore.models  # noqa: F401  (registers losses)
import seqcore.newton  # noqa: F401  (registers the Newton recurrence)
from seqcore import primitives

from primitive_cases import cases, is_library_primitive, paired_leaves

torch = pytest.importorskip("torch", reason="the torch backend needs PyTorch")


@pytest.fixture(autouse=True)
def _seed_torch():
    """The tests draw with torch.rand/randn: the same data on every run, so a failure reproduces."""
    torch.manual_seed(0)


def _t(x, device="cpu"):
    return torch.tensor(x, device=device) if isinstance(x, np.ndarray) else x


def _np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="torch sees no CUDA GPU here"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(n for n in primitives.registry() if is_library_primitive(n)))
def test_primitive_on_torch_tensors_equals_reference(name, device):
    """Tensors on the GPU too: the reference runs on their data and the results come back to
    the tensors' device."""
    rng = np.random.default_rng(1)
    prim = primitives.get(name)
    for args, static in cases(name, rng):
        ref_out, ref_pb = seqcore.vjp(lambda *a: prim(*a, **static), *args)
        outs = ref_out if isinstance(ref_out, tuple) else (ref_out,)
        cot = tuple(rng.normal(size=np.shape(o)) for o in outs)
        ref_grads = ref_pb(cot if len(cot) > 1 else cot[0])
        targs = [_t(a, device) if isinstance(a, np.ndarray) else a for a in args]
        with seqcore.use("torch"):
            out, pb = seqcore.vjp(lambda *a: prim(*a, **static), *targs)
            grads = pb(tuple(_t(c, device) for c in cot) if len(cot) > 1 else _t(cot[0], device))
        got = out if isinstance(out, tuple) else (out,)
        for what, g, r in paired_leaves(got, outs, f"{name} output"):
            assert isinstance(g, torch.Tensor) and g.device.type == device, what
            np.testing.assert_array_equal(_np(g), np.asarray(r), err_msg=what)
        for what, g, r in paired_leaves(grads, ref_grads, f"{name} gradient"):  # None only where the reference's is
            if r is not None:
                assert isinstance(g, torch.Tensor) and g.device.type == device, what
                np.testing.assert_array_equal(_np(g), r, err_msg=what)


def test_namespace_and_to_numpy_follow_the_arrays_backend():
    t = torch.arange(4.0, dtype=torch.float64)
    assert seqcore.backends.namespace(t) is seqcore.backends.get("torch").xp
    assert seqcore.backends.namespace(np.zeros(2)) is np
    out = seqcore.backends.to_numpy(t)
    assert type(out) is np.ndarray and out.dtype == np.float64
    np.testing.assert_array_equal(out, [0.0, 1.0, 2.0, 3.0])
    t[0] = 7.0  # a CPU tensor's data is shared, not copied
    assert out[0] == 7.0
    seen = []

    def f(x):  # inside seqcore.vjp the tensor is a traced value: still torch's
        seen.append((seqcore.backends.namespace(x), seqcore.backends.to_numpy(x)))
        return (x * x).sum()
    seqcore.vjp(f, t)
    assert seen[0][0] is seqcore.backends.get("torch").xp
    np.testing.assert_array_equal(seen[0][1], [7.0, 1.0, 2.0, 3.0])
    for bad in (None, "abc", [1.0, 2.0]):
        for fn in (seqcore.backends.namespace, seqcore.backends.to_numpy):
            with pytest.raises(TypeError, match=rf"^array: got {type(bad).__name__} .*, expected an array of any backend$"):
                fn(bad)


@pytest.mark.parametrize("device", DEVICES)
def test_autograd_function_keeps_the_tensors_device(device):
    fn = seqcore.backends.get("torch").linear_scan
    a = torch.rand(2, 5, 3, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(2, 5, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, method="parallel"), (a, b))
    h = fn(a, b)
    (h * h).sum().backward()
    assert h.device.type == a.grad.device.type == b.grad.device.type == device
    _, pb = seqcore.vjp(lambda a, b: seqcore.linear_scan(a, b), _np(a), _np(b))
    da, db = pb(2 * _np(h))
    np.testing.assert_allclose(_np(a.grad), da, rtol=1e-12)
    np.testing.assert_allclose(_np(b.grad), db, rtol=1e-12)


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


def test_ops_refuse_a_numpy_array_beside_a_tensor_and_take_numpy_scalars():
    """A mixed call used to compute, then fail in the backward pass inside torch's ``.to()``."""
    from seqcore import ops
    t, a = torch.rand(3, dtype=torch.float64), np.random.default_rng(0).random(3)
    mixed = [(ops.add, (t, a), "b: got a numpy.ndarray, expected a torch.Tensor like a"),
             (ops.matmul, (a, t), "b: got a torch.Tensor, expected a numpy.ndarray like a"),
             (ops.where, (a > 0, t, t), "a: got a torch.Tensor, expected a numpy.ndarray like cond"),
             (ops.stack, ([t, a],), r"xs\[1\]: got a numpy.ndarray, expected a torch.Tensor like xs\[0\]")]
    for op, args, message in mixed:
        with pytest.raises(TypeError, match=message):
            seqcore.vjp(op, *args)
    # a NumPy scalar is a number beside a tensor: d(3t)/dt = 3
    out, pullback = seqcore.vjp(lambda x: ops.mul(x, np.float32(3.0)), t)
    (grad,) = pullback(torch.ones(3, dtype=torch.float64))
    assert torch.equal(out, 3.0 * t) and torch.equal(grad, torch.full((3,), 3.0, dtype=torch.float64))


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


# -- round 3: second derivatives, memory shared with inputs, dtypes NumPy lacks ------------------

def test_a_gradient_of_the_gradient_raises_instead_of_dropping_the_seqcore_term():
    """The VJP runs on NumPy data, so its result has no graph: a gradient penalty silently lost the
    scan's second-order term (1.83 where central differences give 1.06). Now torch refuses it,
    also where the incoming gradient needs none (out.sum()), which once_differentiable lets through."""
    fn = _tb().linear_scan
    a = torch.rand(1, 4, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 4, 2, dtype=torch.float64)
    refused = r"^autograd_function\('linear_scan'\) is differentiable once"
    for loss in (lambda h: (h ** 2).sum(), lambda h: h.sum()):
        g, = torch.autograd.grad(loss(fn(a, b)), a, create_graph=True)
        with pytest.raises(RuntimeError, match=refused):
            ((g ** 2).sum() + (a ** 2).sum()).backward()
    with pytest.raises(RuntimeError, match=refused):
        torch.autograd.gradgradcheck(lambda a: fn(a, b), (a,))
    # the first derivative is unchanged, create_graph or not: against central differences
    assert torch.autograd.gradcheck(lambda a: fn(a, b), (a,))
    g, = torch.autograd.grad(fn(a, b).sum(), a, create_graph=True)
    torch.testing.assert_close(g, torch.autograd.grad(fn(a, b).sum(), a)[0], rtol=0, atol=0)


def test_an_output_that_views_an_input_is_copied():
    """The reference's reshape returns a view of its input; as a tensor it shared the input's storage
    without torch knowing, so zeroing the output in place zeroed the input and exp's gradient."""
    w = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=torch.float64, requires_grad=True)
    z = w.exp()
    y = _tb().autograd_function("reshape")(z, shape=(3, 2))
    y.mul_(0)
    z.sum().backward()
    torch.testing.assert_close(w.grad, w.detach().exp(), rtol=0, atol=0)  # d/dw Σ exp(w), as native torch gives
    with seqcore.use("torch"):  # the seqcore path (no torch autograd) too
        x = torch.arange(6, dtype=torch.float64)
        for out in (seqcore.ops.reshape(x, (2, 3)), x.reshape(2, 3).T + 0.0, seqcore.ops.getitem(x, slice(1, 4))):
            out.mul_(0)
        torch.testing.assert_close(x, torch.arange(6, dtype=torch.float64))


def test_changing_a_tensor_the_backward_needs_in_place_raises_like_native_torch():
    """linear_scan's residuals hold its output h and its input a: an in-place change of either after
    the forward silently changed the gradient; native torch raises, and so does the adapter now."""
    fn = _tb().linear_scan
    b = torch.randn(1, 4, 2, dtype=torch.float64)
    for changed in ("output", "input"):
        a = torch.rand(1, 4, 2, dtype=torch.float64, requires_grad=True)
        h = fn(a, b)
        with torch.no_grad():
            (h if changed == "output" else a).mul_(0.5)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            h.sum().backward()
    # an output the backward does not need may still change in place (as with native torch)
    z = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    y = _tb().autograd_function("reshape")(z * 1.0, shape=(3, 2))
    y.mul_(2)
    y.sum().backward()
    torch.testing.assert_close(z.grad, torch.full((2, 3), 2.0, dtype=torch.float64))


def test_sigmoid_input_may_change_in_place_after_the_forward():
    """sigmoid's backward needs exp(-|x|), computed in the forward: as with torch.sigmoid, changing
    x in place afterwards leaves the gradient σ(x)(1 - σ(x)) of the x it was called with."""
    sig = _tb().autograd_function("sigmoid")
    x = torch.tensor([-3.0, 0.0, 2.0], dtype=torch.float64)
    z = x.clone().requires_grad_(True)
    w = z * 1.0  # sigmoid's input, changed in place below
    y = sig(w)
    s = torch.sigmoid(x)
    with torch.no_grad():
        w.mul_(5.0)
    y.sum().backward()
    torch.testing.assert_close(z.grad, s * (1 - s), rtol=1e-14, atol=0)


def test_gradients_of_two_leaves_are_separate_buffers():
    """add's VJP hands the same cotangent to both operands: as tensors they shared memory, so
    clearing one leaf's .grad cleared the other's. Native torch: y.grad is w after x.grad.zero_()."""
    add = _tb().autograd_function("add")
    x = torch.rand(3, dtype=torch.float64, requires_grad=True)
    y = torch.rand(3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64)
    (add(x, y) * w).sum().backward()
    x.grad.zero_()
    torch.testing.assert_close(y.grad, w, rtol=0, atol=0)


def test_bfloat16_is_refused_naming_the_argument_and_float16_equals_the_reference():
    """NumPy has no bfloat16: it failed with torch's unnamed 'Got unsupported ScalarType BFloat16'."""
    from seqcore import cells
    a, b = torch.rand(1, 4, 2), torch.randn(1, 4, 2)
    want = r"expected float32 or float64 .*convert to float32"
    with pytest.raises(TypeError, match=rf"^a: got dtype torch.bfloat16, {want}"):
        seqcore.linear_scan(a.bfloat16(), b.bfloat16())
    with pytest.raises(TypeError, match=r"^b: got dtype torch.bfloat16, expected torch.float32 or torch.float64 "
                                        r".*primitive 'linear_scan'.*convert with .float\(\)"):
        _tb().linear_scan(a, b.bfloat16())
    with pytest.raises(TypeError, match=r"^args\[1\]: got dtype torch.bfloat16, expected torch.float32 or "
                                        r"torch.float64 .*primitive 'mul'"):
        _tb().autograd_function("mul")(a, a.bfloat16())
    with pytest.raises(TypeError, match=r"args\[0\]: got dtype torch.bfloat16.*primitive 'exp'"):
        seqcore.ops.exp(a.bfloat16())
    cell = cells.GRU(2, 3)
    p = {k: torch.from_numpy(v) for k, v in cell.init(np.random.default_rng(0)).items()}
    with pytest.raises(TypeError, match=rf"^x: got dtype torch.bfloat16, {want}"):
        cell.apply({k: v.bfloat16() for k, v in p.items()}, b.bfloat16())
    with pytest.raises(TypeError, match=rf"^h0: got dtype torch.bfloat16, {want}"):
        cell.apply(p, b, torch.zeros(1, 3).bfloat16())
    np.testing.assert_array_equal(seqcore.linear_scan(a.half(), b.half()).numpy(),
                                  seqcore.linear_scan(a.half().numpy(), b.half().numpy()))


def test_the_requires_grad_refusal_says_to_detach_inside_seqcore_vjp():
    """It told seqcore.vjp's own users to 'differentiate with seqcore.vjp', and cell users to use
    autograd_function('linear'), an internal primitive that cannot stand in for a cell."""
    from seqcore import cells
    a = torch.rand(2, 5, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(TypeError, match=r"^args\[0\]: got a torch.Tensor that requires grad") as err:
        seqcore.vjp(lambda a: seqcore.linear_scan(a, a), a)
    assert "differentiate with seqcore.vjp" not in str(err.value)
    assert "Detach them (seqcore.vjp differentiates detached tensors)" in str(err.value)
    cell = cells.GRU(3, 4)
    p = {k: torch.from_numpy(v).requires_grad_() for k, v in cell.init(np.random.default_rng(0), np.float64).items()}
    with pytest.raises(TypeError, match=r"^params\['weight_ih'\]: got a torch.Tensor that requires grad.*"
                                        r"Detach them.*not through cells or layers"):
        cell.apply(p, a.detach())
    out, pullback = seqcore.vjp(lambda a: seqcore.linear_scan(a, a).sum(), a.detach())  # as the message says
    assert pullback(torch.ones((), dtype=torch.float64))[0].shape == a.shape


def test_a_cell_names_the_argument_that_requires_grad():
    """nn.LSTM's own parameters (the natural first try at weight copying) were refused as
    'linear: got a torch.Tensor that requires grad', and h0 as 'stack: got xs[0] ...'."""
    from seqcore import cells
    tm = torch.nn.LSTM(3, 4, batch_first=True)
    cell, x = cells.LSTM(3, 4), torch.randn(2, 5, 3)
    params = {k: getattr(tm, k + "_l0") for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    detached = {k: v.detach() for k, v in params.items()}
    with pytest.raises(TypeError, match=r"^params\['weight_ih'\]: got a torch.Tensor that requires grad"):
        cell.apply(params, x)
    with pytest.raises(TypeError, match=r"^params\['weight_hh'\]: got a torch.Tensor that requires grad"):
        cell.apply({**detached, "weight_hh": params["weight_hh"]}, x)
    with pytest.raises(TypeError, match=r"^c0: got a torch.Tensor that requires grad"):
        cell.apply(detached, x, (torch.zeros(2, 4), torch.zeros(2, 4, requires_grad=True)))
    with pytest.raises(TypeError, match=r"^x: got a torch.Tensor that requires grad"):
        cell.apply(detached, x.clone().requires_grad_())
    with torch.no_grad():  # nothing to lose: accepted, and equal to the detached weights' result
        assert torch.equal(cell.apply(params, x)[0], cell.apply(detached, x)[0])


def test_an_optimizer_state_of_torch_params_is_refused_with_numpy_grads():
    """Adam failed inside its moment update; SGD and RMSprop returned torch updates for NumPy params."""
    from seqcore import optim
    params = {"w": torch.ones(3, dtype=torch.float64)}
    numpy_params = {"w": np.ones(3)}
    for opt in (optim.adam(0.1), optim.sgd(0.1, momentum=0.9), optim.rmsprop(0.1), optim.adagrad(0.1)):
        state = opt.init(params)
        with pytest.raises(TypeError, match="^state: got torch arrays, expected numpy arrays like grads"):
            opt.update({"w": np.ones(3)}, state, numpy_params)
        updates, _ = opt.update({"w": torch.ones(3, dtype=torch.float64)}, state, params)  # its own backend
        assert isinstance(updates["w"], torch.Tensor)


# -- round 10: meta tensors and devices, NumPy beside the adapter, torch dtypes, vjp's requires-grad name --------

def test_a_meta_tensor_is_refused_by_name():
    """A meta tensor has no data: reading it failed with torch's unnamed NotImplementedError."""
    from seqcore import cells
    a, m = torch.rand(2, 5, 3), torch.rand(2, 5, 3, device="meta")
    meta = r"got a tensor on device meta, expected a tensor with data"
    with pytest.raises(ValueError, match=rf"^a: {meta}"):
        seqcore.linear_scan(m, m)
    with pytest.raises(ValueError, match=rf"^b: {meta}"):
        seqcore.linear_scan(a, m)
    with pytest.raises(ValueError, match=rf"^b: {meta}"):
        _tb().linear_scan(a, m)
    with pytest.raises(ValueError, match=rf"^exp: got x shape \(2, 5, 3\) .*; args\[0\]: {meta}"):
        seqcore.ops.exp(m)  # as a bfloat16 tensor is reported
    with pytest.raises(ValueError, match=rf"^x: {meta}"):
        _tb().to_numpy(m)
    cell = cells.GRU(3, 4)
    p = {k: torch.from_numpy(v).to("meta") for k, v in cell.init(np.random.default_rng(0)).items()}
    with pytest.raises(ValueError, match=rf"^x: {meta}"):
        cell.apply(p, m)
    with pytest.raises(ValueError, match=rf"^params\['weight_ih'\]: {meta}"):
        cell.apply(p, a)


def test_tensors_on_two_devices_are_refused_naming_both():
    """Only the library was compared: the reference would read both and answer on one device (meta stands
    in for a GPU here)."""
    from seqcore.validate import check_same_backend
    a, m = torch.rand(2, 5, 3), torch.rand(2, 5, 3, device="meta")
    with pytest.raises(ValueError, match=r"^b: got a tensor on device meta, expected device cpu like a "
                                         r"\(tensors on one device\)"):
        check_same_backend("b", m, "a", a)
    check_same_backend("b", a + 1, "a", a)  # one device: accepted
    _, pullback = seqcore.vjp(lambda x: x * 2, a.double())
    with pytest.raises(ValueError, match=r"^cotangent: got a tensor on device meta, expected device cpu like "
                                         r"f's output"):
        pullback(torch.ones(2, 5, 3, dtype=torch.float64, device="meta"))


def test_autograd_function_names_the_numpy_argument_not_the_tensor():
    """The scan's rules ran first and took the NumPy array as the reference: 'b: got a torch.Tensor,
    expected a numpy.ndarray like a' told the adapter's user to pass NumPy."""
    f = _tb().autograd_function("linear_scan")
    t = torch.randn(2, 6, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^a: got ndarray, expected a torch.Tensor for primitive 'linear_scan'"):
        f(t.numpy(), t, None)
    with pytest.raises(TypeError, match=r"^h0: got ndarray, expected a torch.Tensor"):
        f(t, t, t[:, 0].numpy())
    with pytest.raises(TypeError, match=r"^A: got ndarray, expected a torch.Tensor for primitive 'block_scan'"):
        _tb().autograd_function("block_scan")(np.zeros((1, 2, 1, 2, 2)), torch.zeros(1, 2, 1, 2))


def test_torch_asarray_takes_torch_dtypes_and_to_numpy_names_bfloat16():
    tb = _tb()
    x = tb.asarray(torch.ones(2, dtype=torch.float64), dtype=torch.float32)
    assert x.dtype == torch.float32 and torch.equal(x, torch.ones(2))
    y = tb.asarray(np.array([0.1, 2.5]), dtype=torch.bfloat16)  # NumPy has no bfloat16: torch converts
    assert y.dtype == torch.bfloat16 and torch.equal(y, torch.tensor([0.1, 2.5]).bfloat16())
    assert tb.asarray([1, 2], dtype=np.float32).dtype == torch.float32  # NumPy dtypes as before
    for bad in ("nonsense", str):
        with pytest.raises(TypeError, match="^dtype: got .*, expected a torch dtype or a NumPy dtype torch has"):
            tb.asarray(np.ones(2), dtype=bad)
    with pytest.raises(TypeError, match=r"^x: got dtype torch.bfloat16, expected torch.float32 or torch.float64 "
                                        r".*convert with .float\(\)"):
        tb.to_numpy(torch.ones(2, dtype=torch.bfloat16))
    np.testing.assert_array_equal(tb.to_numpy(torch.ones(2, dtype=torch.float16)), np.ones(2, np.float16))


def test_vjp_names_the_argument_that_requires_grad():
    """It was refused by the first primitive, named twice and never as f's argument:
    'mul: got a shape (4, 3) ...; mul: got a torch.Tensor that requires grad'."""
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    calls = []
    with pytest.raises(TypeError, match=r"^args\[0\]: got a torch.Tensor that requires grad"):
        seqcore.vjp(lambda x: calls.append(x) or x * 2, x)
    assert calls == []  # refused before f ran
    with pytest.raises(TypeError, match=r"^args\[1\]\['w'\]: got a torch.Tensor that requires grad"):
        seqcore.vjp(lambda a, p: a * p["w"], x.detach(), {"w": x})
    with torch.no_grad():  # nothing to lose: accepted, with the detached tensor's gradient
        out, pullback = seqcore.vjp(lambda x: x * 2, x)
    torch.testing.assert_close(pullback(torch.ones(4, 3, dtype=torch.float64))[0],
                               torch.full((4, 3), 2.0, dtype=torch.float64), rtol=0, atol=0)


def test_an_array_op_names_itself_once_for_a_tensor_that_requires_grad():
    """'mul: got a shape (4, 3) (torch.float64), b int 2; mul: got a torch.Tensor that requires grad'."""
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(TypeError, match=r"^mul: got a torch.Tensor that requires grad.*"
                                        r"autograd_function\('mul'\)") as err:
        seqcore.ops.mul(x, 2.0)
    assert str(err.value).count("mul") == 2  # the name, and the autograd_function('mul') hint
