"""The import promise, the backend registry, the tape, and bad-input errors."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import seqcore
from seqcore import backends, cells, nn, ops

HEAVY = ("numba", "cupy", "torch", "click", "tqdm", "matplotlib")


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_import_loads_only_numpy(backend):
    # a backend named in $SEQCORE_BACKEND is imported on first use too, not by the import
    code = ("import sys, seqcore, seqcore.cells, seqcore.nn, seqcore.models; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "SEQCORE_BACKEND": backend})
    assert out.stdout.strip() == "", f"SEQCORE_BACKEND={backend}: the import loaded {out.stdout.strip()}"


def test_pyplot_is_none_without_matplotlib(monkeypatch):
    from seqcore.plotting import pyplot
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert pyplot() is None


def test_pyplot_draws_to_files_when_matplotlib_is_present():
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    from seqcore.plotting import pyplot
    plt = pyplot()
    assert plt is sys.modules["matplotlib.pyplot"] and plt.get_backend().lower() == "agg"


# -- registry ---------------------------------------------------------------------------------

def test_registry_names_and_numpy_always_available():
    assert set(backends.names()) >= {"numpy", "numba", "cupy", "torch"}
    assert "numpy" in backends.available()
    assert backends.get("numpy").name == "numpy"


def test_unknown_backend_is_a_value_error_naming_choices():
    with pytest.raises(ValueError, match=r"backend: unknown backend 'jax'.*numpy"):
        backends.get("jax")
    with pytest.raises(ValueError, match="jax"):
        seqcore.use("jax")


def test_missing_backend_names_package_and_extra(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.delitem(backends._LOADED, "cupy", raising=False)
    with pytest.raises(backends.BackendUnavailable, match=r"cupy.*seqcore\[cuda\]"):
        backends.get("cupy")
    assert "cupy" not in backends.available()


def test_a_backend_failing_at_import_with_any_error_is_unavailable(monkeypatch):
    """A framework that imports but fails to start (numba with NUMBA_NUM_THREADS=0 raises a
    ValueError) is unavailable like a missing one: the cause and the setting named, and
    available() / info() list it instead of raising."""
    import importlib
    real_import_module = importlib.import_module

    def failing(name, *args, **kwargs):
        if name == "seqcore.backends.numba":
            raise ValueError("Number of threads specified must be > 0.")
        return real_import_module(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", failing)
    monkeypatch.delitem(backends._LOADED, "numba", raising=False)
    monkeypatch.setattr(backends, "_FAILED", {})
    monkeypatch.setenv("NUMBA_NUM_THREADS", "0")
    with pytest.raises(backends.BackendUnavailable,
                       match=r"backend 'numba' cannot load: ValueError: Number of threads .*NUMBA_NUM_THREADS='0'"):
        backends.get("numba")
    assert "numba" not in backends.available()
    row = next(r for r in backends.info() if r["name"] == "numba")
    assert not row["available"] and "NUMBA_NUM_THREADS='0'" in row["reason"] and row["reason"] == backends._FAILED["numba"]


def test_use_as_context_manager_restores_previous():
    before = backends.current()
    with seqcore.use("numpy"):
        assert backends.current() == "numpy"
    assert backends.current() == before


def test_a_use_object_switches_when_its_block_is_entered():
    """Kept and entered later, or again, a `use` object restores what was current at each entry
    (it used to restore what was current when it was made)."""
    other = next((n for n in backends.available() if n != "numpy"), None)
    if other is None:
        pytest.skip("needs a second backend that loads here (numba or torch, in the test extra)")
    with seqcore.use("numpy"):
        kept = seqcore.use(other)
        seqcore.use("numpy")
        with kept:
            assert backends.current() == other
            with kept:
                assert backends.current() == other
            assert backends.current() == other
        assert backends.current() == "numpy"
        with seqcore.use(other):  # the usual form restores what the call replaced
            with seqcore.use("numpy"):
                assert backends.current() == "numpy"
            assert backends.current() == other
        assert backends.current() == "numpy"


def test_environment_variable_sets_default():
    code = "import seqcore; print(seqcore.backends.current())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "SEQCORE_BACKEND": "torch"})
    assert out.stdout.strip() == "torch"
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "SEQCORE_BACKEND": "nope"})
    assert bad.returncode != 0 and "$SEQCORE_BACKEND: got 'nope', expected one of" in bad.stderr


def test_backend_detection_does_not_import_frameworks():
    code = ("import sys, numpy as np, seqcore; seqcore.backends.backend_of(np.zeros(3)); "
            "print('torch' in sys.modules, 'cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


# -- tape ---------------------------------------------------------------------------------------

def test_vjp_returns_dicts_for_dicts_and_none_for_labels():
    rng = np.random.default_rng(0)
    lin = nn.Linear(3, 4)
    p = lin.init(rng, np.float64)
    x = rng.normal(size=(5, 3))
    labels = rng.integers(0, 4, 5)
    loss, pullback = seqcore.vjp(lambda p, x, y: nn.cross_entropy(lin.apply(p, x), y), p, x, labels)
    gp, gx, gy = pullback(np.ones(()))
    assert set(gp) == {"weight", "bias"} and gy is None
    # direct formula: d/dlogits = softmax − onehot, averaged
    z = x @ p["weight"].T + p["bias"]
    s = np.exp(z - z.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    s[np.arange(5), labels] -= 1
    np.testing.assert_allclose(gp["weight"], s.T @ x / 5, rtol=1e-12)
    np.testing.assert_allclose(gx, s @ p["weight"] / 5, rtol=1e-12)


def test_gradients_take_their_arguments_dtype():
    """float32 parameters with float64 data: the arithmetic is float64, the parameter gradients
    float32 (they once came back float64 and an update turned the parameters float64)."""
    rng = np.random.default_rng(0)
    for cell in (cells.Elman(3, 4), cells.DiagGRU(4, 4)):
        p = cell.init(rng, np.float32)
        x = rng.normal(size=(2, 5, cell.input_size))
        out, pullback = seqcore.vjp(lambda p, x: cell.apply(p, x)[0].sum(), p, x)
        g, gx = pullback(np.ones((), out.dtype))
        assert out.dtype == np.float64 and gx.dtype == np.float64
        assert {k: v.dtype for k, v in g.items()} == {k: np.dtype(np.float32) for k in p}
        p64 = {k: v.astype(np.float64) for k, v in p.items()}
        g64, _ = seqcore.vjp(lambda p, x: cell.apply(p, x)[0].sum(), p64, x)[1](np.ones(()))
        for k in p:  # the float64 computation's gradient, in float32
            np.testing.assert_allclose(g[k], g64[k], rtol=1e-6, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_returned_gradients_own_their_memory(backend):
    """No returned gradient is another's memory or the caller's cotangent: ``a + b`` hands both
    operands the same array, a reshape a view of it, and the folded LSTM bias routes one
    gradient to bias_ih and bias_hh; changing one in place must not change another."""
    if backend == "torch":
        pytest.importorskip("torch", reason="the torch backend needs torch")
    mod = seqcore.backends.get(backend)
    to_np = mod.to_numpy
    a, c = mod.asarray(np.zeros((2, 3))), mod.asarray(np.ones((2, 3)))
    with seqcore.use(backend):
        da, db, dr = seqcore.vjp(lambda a, b, r: (a + b) + r.reshape(2, 3), a, a + 0, a.reshape(6) + 0)[1](c)
        da *= 0
        assert to_np(db).tolist() == to_np(c).tolist() == to_np(dr).reshape(2, 3).tolist() == [[1.0] * 3] * 2
        cell = seqcore.cells.LSTM(2, 3)
        params = {k: mod.asarray(v) for k, v in cell.init(np.random.default_rng(0), np.float64).items()}
        x = mod.asarray(np.ones((1, 4, 2)))
        dp, _ = seqcore.vjp(lambda p, x: cell.apply(p, x)[0].sum(), params, x)[1](mod.asarray(np.ones(())))
        assert to_np(dp["bias_ih"]).tolist() == to_np(dp["bias_hh"]).tolist()
        dp["bias_ih"] *= 0
        assert np.abs(to_np(dp["bias_hh"])).max() > 0


def test_traced_transposes_follow_numpy():
    rng = np.random.default_rng(1)
    for shape in ((4,), (3, 4), (2, 3, 4), (2, 1, 3, 4)):
        x = rng.normal(size=shape)
        W = rng.normal(size=x.T.shape)
        out, pullback = seqcore.vjp(lambda x: (x.T * W).sum(), x)
        np.testing.assert_allclose(out, (x.T * W).sum(), rtol=1e-12)
        np.testing.assert_array_equal(pullback(np.ones(()))[0], W.T)  # d/dx Σ xᵀ·W = Wᵀ
        if x.ndim >= 2:
            Wm = rng.normal(size=x.mT.shape)
            _, pullback = seqcore.vjp(lambda x: (x.mT * Wm).sum(), x)
            np.testing.assert_array_equal(pullback(np.ones(()))[0], Wm.mT)
    with pytest.raises(ValueError, match=r"^mT: got an array of shape \(4,\)"):
        seqcore.vjp(lambda x: x.mT, np.ones(4))


def test_untracked_numpy_op_on_traced_value_raises():
    with pytest.raises(TypeError, match="Traced"):   # NumPy refuses: no silent dropped gradient
        seqcore.vjp(lambda a: np.tanh(a), np.ones(3))
    with pytest.raises(TypeError, match="traced seqcore array"):
        seqcore.vjp(lambda a: np.asarray(a), np.ones(3))


def test_reused_value_accumulates_gradient():
    x = np.array([1.0, 2.0, 3.0])
    _, pb = seqcore.vjp(lambda x: ops.sum(x * x + ops.tanh(x) * x), x)
    (g,) = pb(np.ones(()))
    np.testing.assert_allclose(g, 2 * x + np.tanh(x) + x * (1 - np.tanh(x) ** 2), rtol=1e-12)


def test_tape_is_freed_without_the_cyclic_garbage_collector():
    """A tape holds every residual; it must die with its last reference (no reference
    cycles), so each training step's buffers are released when the step ends."""
    import gc
    import weakref
    cell = cells.LSTM(3, 4)
    rng = np.random.default_rng(0)
    params = cell.init(rng)
    x = rng.normal(size=(2, 5, 3))
    out, pullback = seqcore.vjp(lambda p, x: cell.apply(p, x)[0], params, x)
    pullback(np.ones_like(out))  # a first call may compile kernels (numba as the default backend), which leaves garbage
    del out, pullback
    for _ in range(10):  # earlier tests' garbage, including what its finalizers leave behind
        if gc.collect() == 0:
            break
    gc.disable()
    try:
        out, pullback = seqcore.vjp(lambda p, x: cell.apply(p, x)[0], params, x)
        pullback(np.ones_like(out))
        alive = weakref.ref(out)          # the output array, also held by the tape
        del out, pullback
        assert alive() is None
        assert gc.collect() == 0          # nothing was left for the collector either
    finally:
        gc.enable()


@pytest.mark.parametrize("kwargs, error", [
    (dict(trim_threshold=1.5), TypeError), (dict(trim_threshold=True), TypeError),
    (dict(trim_threshold=-1), ValueError), (dict(mmap_threshold=(32 << 20) + 1), ValueError)])
def test_heap_retain_rejects_bad_thresholds(kwargs, error):
    from seqcore.backends import heap
    with pytest.raises(error, match=next(iter(kwargs))):
        heap.retain(**kwargs)


_STEP_FAULTS = """
import resource, sys
import numpy as np, seqcore
from seqcore import cells
from seqcore.backends import heap
assert heap.retain() or sys.exit(3)
cell = cells.LSTM(32, 64); rng = np.random.default_rng(0); params = cell.init(rng, np.float32)
x = rng.normal(size=(16, 128, 32)).astype(np.float32)
def step():
    out, pb = seqcore.vjp(lambda p, x: (cell.apply(p, x)[0] ** 2).sum(), params, x)
    pb(np.ones((), np.float32))
for _ in range(3): step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10): step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 10)
"""


def test_heap_retain_keeps_each_steps_buffers_for_the_next():
    """With glibc's defaults each of these steps page-faults about 1000 fresh pages (its
    buffers went back to the OS when the previous step's tape died); retained, none."""
    from seqcore.backends import heap
    if heap._mallopt() is None:
        pytest.skip("the C library has no mallopt (not glibc): heap.retain() does nothing here")
    out = subprocess.run([sys.executable, "-c", _STEP_FAULTS], capture_output=True, text=True,
                         env={**os.environ, "SEQCORE_BACKEND": "numpy"})
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 10  # page faults per step (the 1.2 MB of residuals alone are 300 pages)


def test_value_and_grad():
    f = lambda w: ops.sum(ops.square(w))  # noqa: E731
    v, g = seqcore.value_and_grad(f)(np.array([1.0, -2.0]))
    assert float(v) == 5.0
    np.testing.assert_array_equal(g, [2.0, -4.0])
    # a gradient asked of an integer argument is an error, not a silent None
    with pytest.raises(TypeError, match=r"^argnums: got 1, an argument of type ndarray and dtype int64"):
        seqcore.value_and_grad(lambda a, b: (a * b).sum(), argnums=1)(np.ones(3), np.arange(3))


def test_cotangent_of_wrong_shape_is_rejected():
    _, pb = seqcore.vjp(lambda a: a * 2.0, np.ones(3))
    with pytest.raises(ValueError, match=r"cotangent: got shape \(4,\), expected \(3,\)"):
        pb(np.ones(4))


def test_cotangent_dict_is_matched_to_the_output_by_key_not_order():
    _, pb = seqcore.vjp(lambda x, y: {"a": x * 2.0, "b": y * 3.0}, np.ones(2), np.ones(2))
    dx, dy = pb({"b": np.ones(2), "a": np.zeros(2)})  # d/dx of 0·2x, d/dy of 1·3y
    np.testing.assert_array_equal(dx, [0.0, 0.0])
    np.testing.assert_array_equal(dy, [3.0, 3.0])
    # a model's heads come in declaration order; a cotangent over the sorted names selects the same head
    from seqcore.models import HeadSpec, SequenceModel
    rng = np.random.default_rng(0)
    m = SequenceModel("gru", 2, 3, (HeadSpec("sum", 1, "last"), HeadSpec("carry", 1, "last")))
    p, xb = m.init(rng, np.float64), rng.normal(size=(2, 4, 2))
    outs, pb = seqcore.vjp(lambda p: m.outputs(p, xb), p)
    (g,) = pb({k: np.ones_like(outs[k]) if k == "carry" else np.zeros_like(outs[k]) for k in sorted(outs)})
    (want,) = pb({k: np.ones_like(outs[k]) if k == "carry" else np.zeros_like(outs[k]) for k in outs})
    np.testing.assert_array_equal(g["heads"]["carry"]["weight"], want["heads"]["carry"]["weight"])
    assert np.abs(g["heads"]["carry"]["weight"]).sum() > 0 and not g["heads"]["sum"]["weight"].any()


@pytest.mark.parametrize("cotangent,match", [
    ({"b": np.ones(2), "c": np.zeros(2)}, r"expected dict with keys \['a', 'b'\], got dict with keys \['b', 'c'\]"),
    ([np.zeros(2), np.ones(2)], r"expected dict with keys \['a', 'b'\], got list of length 2"),
    ({"a": None, "b": np.ones(2)}, r"got None where f's output has an array of shape \(2,\)"),
    ({"a": [np.ones(2)], "b": np.ones(2)}, r"got list of length 1 where f's output has an array of shape \(2,\)"),
])
def test_cotangent_of_another_structure_is_rejected_naming_both(cotangent, match):
    _, pb = seqcore.vjp(lambda x, y: {"a": x * 2.0, "b": y * 3.0}, np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match=r"^cotangent: .*" + match):
        pb(cotangent)
    _, pb = seqcore.vjp(lambda x: (x, x * 2.0), np.ones(2))  # a tuple output takes a list, not a dict
    np.testing.assert_array_equal(pb([np.ones(2), np.ones(2)])[0], [3.0, 3.0])
    with pytest.raises(ValueError, match=r"^cotangent: .*expected sequence of length 2, got dict with keys \['a'\]"):
        pb({"a": np.ones(2)})


@pytest.mark.parametrize("axis", [np.int64(1), np.int32(-1), (np.int64(1),), (np.int64(0), np.int32(1))])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_reductions_differentiate_over_numpy_integer_axes(axis, reduce):
    x = np.arange(6.0).reshape(2, 3)
    out, pb = seqcore.vjp(lambda x: getattr(ops, reduce)(x, axis=axis), x)
    np.testing.assert_array_equal(out, getattr(np, reduce)(x, axis=axis))
    n = x.size // out.size  # the elements behind each output
    (g,) = pb(np.ones_like(out))
    np.testing.assert_array_equal(g, np.full(x.shape, 1.0 if reduce == "sum" else 1.0 / n))
    (g,) = seqcore.vjp(lambda x: getattr(x, reduce)(axis=axis).sum(), x)[1](1.0)  # the traced method
    np.testing.assert_array_equal(g, np.full(x.shape, 1.0 if reduce == "sum" else 1.0 / n))


@pytest.mark.parametrize("axis", [1.0, True, "0", (0, 1.5)])
def test_reduction_axis_of_another_type_is_refused_by_name(axis):
    with pytest.raises(TypeError, match=r"^axis: got .*expected None, an int or a tuple of ints"):
        ops.sum(np.ones((2, 3)), axis=axis)


def test_where_and_power_errors_name_their_own_arguments():
    with pytest.raises(ValueError, match=r"^where: got cond shape \(2, 3\) \(bool\), a shape \(4,\) \(float64\), "
                                         r"b shape \(3,\) \(float64\); "):
        ops.where(np.ones((2, 3)) > 0, np.ones(4), np.ones(3))
    power = seqcore.primitives.get("power")  # ops.power checks p itself; the primitive reports the failure
    with pytest.raises(TypeError, match=r"^power: got x shape \(3,\) \(float64\), p str 's'"):
        power(np.ones(3), "s")
    with pytest.raises(TypeError, match=r"^arg_names: got 'ab', expected a tuple of str"):
        seqcore.primitives.define("not_registered", lambda xp, a: (a, None), lambda xp, r, g: (g,), arg_names="ab")


@pytest.mark.parametrize("ret,shown", [(1.0, "float 1.0"), ([1.0], r"list \[1.0\]")])
def test_value_and_grad_says_a_non_array_return_is_not_an_array(ret, shown):
    with pytest.raises(ValueError, match=rf"^f: returned {shown} \(not an array\), expected a scalar array"):
        seqcore.value_and_grad(lambda x: ret)(np.ones(3))


# -- bad input ------------------------------------------------------------------------------------

def _lstm_apply_to(x):
    return cells.LSTM(3, 4).apply(cells.LSTM(3, 4).init(np.random.default_rng(0)), x)


def _elman_apply(*args, **kwargs):
    return cells.Elman(3, 4).apply(cells.Elman(3, 4).init(np.random.default_rng(0)), *args, **kwargs)


ONES = np.ones((2, 3, 4))


@pytest.mark.parametrize("call,error,message", [
    (lambda: seqcore.linear_scan(np.ones((2, 3)), np.ones((2, 3))), ValueError,
     "a: got an array of shape (2, 3) (2 dims), expected 3 dims"),
    (lambda: seqcore.linear_scan(ONES, np.ones((2, 5, 4))), ValueError,
     "b: got shape (2, 5, 4), expected (2, 3, 4) (the shape of a)"),
    (lambda: seqcore.linear_scan(ONES.astype(np.int64), ONES), TypeError,
     "a: got dtype int64, expected a floating-point array (float32 or float64; float16 runs the reference)"),
    (lambda: seqcore.linear_scan(ONES, ONES, np.ones((3, 4))), ValueError,
     "h0: got shape (3, 4), expected (2, 4) (B, D) from a"),
    (lambda: seqcore.linear_scan(ONES, ONES, method="magic"), ValueError,
     "method: got 'magic', expected one of 'sequential', 'parallel', 'chunked'"),
    (lambda: seqcore.linear_scan(ONES, ONES.astype(np.float32)), TypeError,
     "b: got dtype float32, expected float64 (the dtype of a)"),
    (lambda: seqcore.linear_scan(ONES, ONES, chunk_size=0), ValueError, "chunk_size: got 0, expected an integer >= 1"),
    (lambda: seqcore.block_scan(np.ones((2, 3, 1, 2, 3)), np.ones((2, 3, 1, 2))), ValueError,
     "A: got blocks of shape (2, 3), expected square blocks (k, k) with k >= 1"),
    (lambda: seqcore.block_scan(np.ones((2, 3, 1, 2, 2)), np.ones((2, 3, 2, 2))), ValueError,
     "b: got shape (2, 3, 2, 2), expected (2, 3, 1, 2) (B, T, G, k) from A"),
    (lambda: seqcore.log_linear_scan(np.ones((2, 0, 4)), np.ones((2, 0, 4))), ValueError,
     "log_a: got T = 0 steps, expected T >= 1"),
    (lambda: _lstm_apply_to(np.ones((2, 5, 2), np.float32)), ValueError,
     "x: got shape (2, 5, 2), expected (B, T, 3) (input_size=3)"),
    (lambda: _elman_apply(np.ones((2, 5, 3), np.float32), np.ones((2, 5), np.float32)), ValueError,
     "h0: got shape (2, 5), expected (2, 4) (B, hidden_size)"),
    (lambda: cells.Elman(0, 4), ValueError, "input_size: got 0, expected an integer >= 1"),
    (lambda: cells.Elman(3, 4, nonlinearity="sigmoid"), ValueError,
     "nonlinearity: got 'sigmoid', expected one of 'tanh', 'relu'"),
    (lambda: cells.Elman(3, 4).apply({}, np.ones((2, 5, 3))), ValueError,
     "params: missing 'weight_ih'; expected keys ['bias_hh', 'bias_ih', 'weight_hh', 'weight_ih'] from Elman.init"),
    (lambda: _elman_apply(np.ones((2, 5, 3)), mode="fast"), ValueError,
     "mode: got 'fast', expected one of 'sequential', 'parallel'"),
    (lambda: nn.cross_entropy(np.ones((2, 3)), np.array([0, 5])), ValueError,
     "labels: got values in [0, 5], expected [0, 2]"),
    (lambda: nn.cross_entropy(np.ones((2, 3)), np.array([0.0, 1.0])), TypeError,
     "labels: got float64, expected an integer array"),
])
def test_bad_input_names_argument_value_and_expectation(call, error, message):
    """The whole message (argument, value received, expectation) and one exception type per case."""
    with pytest.raises(error, match=f"^{re.escape(message)}$") as info:
        call()
    assert type(info.value) is error  # not a subclass standing in for it


@pytest.mark.parametrize("cotangent", [1.0, 1, np.float64(1.0), np.ones((), np.float64)])
def test_a_float32_model_differentiates_in_float32_whatever_the_cotangent(cotangent):
    """A Python float (or float64) cotangent is cast to the output's dtype: the backward of a
    float32 model runs in float32, as on every other backend (float64 would change its bits)."""
    from seqcore import cells
    rng = np.random.default_rng(1)
    cell = cells.GRU(3, 5)
    p, x = cell.init(rng, np.float32), rng.normal(size=(2, 9, 3)).astype(np.float32)
    _, pullback = seqcore.vjp(lambda p, x: (cell.apply(p, x)[0] ** 2).mean(), p, x)
    want_p, want_x = pullback(np.float32(1.0))
    got_p, got_x = pullback(cotangent)
    assert got_x.dtype == np.float32
    np.testing.assert_array_equal(got_x, want_x)
    for k in p:
        assert got_p[k].dtype == np.float32
        np.testing.assert_array_equal(got_p[k], want_p[k])
    # float32 arithmetic throughout: 3**200 overflows to inf and inf · 0 = NaN, as in float32
    a, b = np.full((1, 200, 1), 3, np.float32), np.zeros((1, 200, 1), np.float32)
    _, pullback = seqcore.vjp(lambda a, b: seqcore.linear_scan(a, b).sum(), a, b)
    with np.errstate(over="ignore", invalid="ignore"):
        np.testing.assert_array_equal(pullback(cotangent)[0], pullback(np.float32(1.0))[0])


@pytest.mark.parametrize("call, match", [
    (lambda a: a * 1j, r"^b: got complex 1j, expected a real number or a real array"),
    (lambda a: (1 + 2j) + a, r"^a: got complex \(1\+2j\), expected a real number or a real array"),
    (lambda a: a * np.complex64(1), r"^b: got complex64 .*, expected a real number or a real array"),
    (lambda a: a + np.array([1j, 2.0]), r"^b: got a complex128 array, expected a real number or a real array"),
    (lambda a: ops.tanh(np.array([1j, 2.0])), r"^x: got a complex128 array, expected a real number or a real array"),
    (lambda a: a @ np.ones((2, 2), np.complex64), r"^b: got a complex64 array, expected a real array"),
])
def test_traced_arithmetic_refuses_complex_operands(call, match):
    """The output came back complex and its real part was differentiated (pb(1.0) gave [0, 2]
    for (a * [1j, 2]).sum()), with at most a ComplexWarning."""
    with pytest.raises(TypeError, match=match):
        seqcore.vjp(call, np.array([1.0, 2.0]))
    out, pullback = seqcore.vjp(lambda a: (a * np.array([3.0, 2.0]) + 1).sum(), np.array([1.0, 2.0]))
    assert out == 9.0  # 3 + 4 + 1 + 1: real operands still work
    np.testing.assert_array_equal(pullback(1.0)[0], [3.0, 2.0])


@pytest.mark.parametrize("slope", [float("nan"), float("inf"), -np.inf])
def test_leaky_relu_refuses_a_slope_that_is_not_finite(slope):
    """A NaN or infinite slope made every negative input NaN (or ±inf)."""
    with pytest.raises(ValueError, match=r"^negative_slope: got -?(nan|inf), expected a finite number"):
        nn.leaky_relu(-np.ones(2), slope)
    np.testing.assert_array_equal(nn.leaky_relu(np.array([-2.0, 3.0]), 0.5), [-1.0, 3.0])


@pytest.mark.parametrize("numpy_function", [np.sum, np.mean, lambda t: np.sum(t, axis=0, keepdims=True)])
def test_numpy_reductions_of_a_traced_array_say_to_use_seqcore_ops(numpy_function):
    """np.sum(traced) said "Traced.sum() got an unexpected keyword argument 'out'"."""
    with pytest.raises(TypeError, match=r"a traced seqcore array cannot be converted to a plain array inside "
                                        r"seqcore.vjp; use seqcore.ops"):
        seqcore.vjp(numpy_function, np.ones((2, 3)))
    out, pullback = seqcore.vjp(lambda t: t.sum(axis=0).mean(), np.ones((2, 3)))  # the methods still work
    assert out == 2.0
    np.testing.assert_array_equal(pullback(1.0)[0], np.full((2, 3), 1 / 3))


def test_traced_comparisons_rpow_and_a_nested_vjp():
    """`x > 0` gives a bool mask for ops.where (it was a NumPy error); `2.0 ** x` is exp(x ln 2);
    a vjp inside a vjp says it cannot be nested (it said to use seqcore.ops)."""
    from seqcore import ops
    a = np.array([-1.0, 0.5, 2.0])
    out, pullback = seqcore.vjp(lambda x: ops.where(x > 0, x * x, 0.0 * x).sum() + (2.0 ** x).sum()
                                + ops.where(x <= 0.5, x, 0.0 * x).sum(), a)
    (grad,) = pullback(1.0)
    assert np.isclose(out, np.where(a > 0, a * a, 0).sum() + (2.0 ** a).sum() + a[a <= 0.5].sum(), rtol=1e-15)
    np.testing.assert_allclose(grad, np.where(a > 0, 2 * a, 0) + np.log(2) * 2.0 ** a + (a <= 0.5), rtol=1e-15)
    for base in (-2.0, float("inf")):
        with pytest.raises(TypeError, match="^base: got .* for base \\*\\* x, expected a finite real number > 0"):
            seqcore.vjp(lambda x: base ** x, a)
    # == and != compare values (they compared identity: `x == 0.5` was False, silently)
    out, pullback = seqcore.vjp(lambda x: ops.where(x == 0.5, x, 0.0 * x).sum()
                                + ops.where(x != 0.5, 2.0 * x, 0.0 * x).sum(), a)
    assert np.isclose(out, 0.5 + 2 * (-1.0 + 2.0), rtol=1e-15)
    np.testing.assert_array_equal(pullback(1.0)[0], [2.0, 1.0, 2.0])
    traced_seen = []
    seqcore.vjp(lambda x: traced_seen.append(x) or {x: 1} and x.sum(), a)  # still hashable (by identity)
    assert len(traced_seen) == 1
    with pytest.raises(TypeError, match="seqcore.vjp cannot be nested"):
        seqcore.vjp(lambda x: seqcore.vjp(lambda y: y * y, x)[0], a)


@pytest.mark.parametrize("dtype,big", [(np.float32, 5e18), (np.float64, 5e153)])
def test_losses_whose_mean_is_finite_do_not_overflow_in_their_sum(dtype, big):
    """Each squared error (or cross-entropy term) is finite and so is their mean; the sum of 4096
    of them is not: the weights are divided by the total before the sum (it was inf)."""
    from seqcore import nn
    pred = np.full((64, 64, 1), big, dtype)
    assert np.isclose(nn.mse(pred, np.zeros_like(pred)), dtype(big) ** 2, rtol=1e-5)
    logits = np.zeros((4096, 2), dtype)
    logits[:, 0] = dtype(big) ** 2 / 10  # label 1: each term is that logit (its log-sum-exp)
    assert np.isclose(nn.cross_entropy(logits, np.ones(4096, np.int64)), logits[0, 0], rtol=1e-5)


# -- QA r12 fuzz: tree, backends, ops, newton and nn arguments ------------------------------------

def test_tree_unflatten_counts_the_leaves():
    """Too few leaves raised a bare StopIteration; extra ones were dropped silently."""
    from seqcore.tree import tree_flatten, tree_unflatten
    leaves, treedef = tree_flatten({"a": 1.0, "b": [2.0, None, (3.0,)]})
    assert tree_unflatten(treedef, [4.0, 5.0, 6.0]) == {"a": 4.0, "b": [5.0, None, (6.0,)]}
    for got in ([1.0], [1.0] * 5, []):
        with pytest.raises(ValueError, match=rf"^leaves: got {len(got)}, expected 3 \(the leaves of treedef\)$"):
            tree_unflatten(treedef, got)
    with pytest.raises(ValueError, match=r"^leaves: got more than 3, expected 3"):
        tree_unflatten(treedef, iter([1.0] * 4))


def test_tree_paths_keep_none_must_be_a_bool():
    """keep_none='no' was read as True."""
    from seqcore.tree import tree_key_paths, tree_paths
    for f in (tree_paths, tree_key_paths):
        with pytest.raises(TypeError, match=r"^keep_none: got 'no', expected True or False"):
            f({"a": None}, keep_none="no")
    assert tree_paths({"a": None, "b": 1}, keep_none=np.True_) == [("a", None), ("b", 1)]
    assert tree_paths({"a": None, "b": 1}) == [("b", 1)]


@pytest.mark.parametrize("array", [None, [1.0], 2.0])
def test_numpy_dtype_of_something_not_an_array_is_a_type_error(array):
    """It was an AttributeError ('NoneType' object has no attribute 'ndim')."""
    with pytest.raises(TypeError, match=rf"^array: got {type(array).__name__} .*, expected an array of any backend"):
        backends.numpy_dtype(array)
    assert backends.numpy_dtype(np.zeros(2, np.float32)) == np.float32


@pytest.mark.parametrize("call, match", [
    (lambda x: ops.power(x, 10 ** 400), r"^p: got 1000000000.*, expected a finite number"),
    (lambda x: ops.clip(x, 10 ** 400), r"^lo: got 1000000000.*, expected a finite number"),
    (lambda x: ops.clip(x, None, -10 ** 400), r"^hi: got -1000000000.*, expected a finite number"),
    (lambda x: ops.sum(x, axis=2 ** 70), r"^axis: got 1180591620717411303424, expected an axis in \[-2, 2\)"),
    (lambda x: ops.mean(x, axis=(0, -2 ** 70)), r"^axis: got -1180591620717411303424, expected an axis in \[-2, 2\)"),
    (lambda x: ops.swapaxes(x, 2 ** 70, 0), r"^axis1: got 1180591620717411303424, expected an axis in \[-2, 2\)"),
    (lambda x: ops.concatenate([x, x], axis=2 ** 70), r"^axis: got 1180591620717411303424, expected an axis in "
                                                       r"\[-2, 2\) \(xs\[0\] has 2 dims\)"),
    (lambda x: ops.stack([x, x], axis=2 ** 70), r"^axis: got 1180591620717411303424, expected an axis in \[-3, 3\) "
                                                r"\(the stacked result has 3 dims\)"),
    (lambda x: ops.stack([x, x], axis=3), r"^axis: got 3, expected an axis in \[-3, 3\)"),
    (lambda x: ops.concatenate([], axis=0), r"^xs: got an empty sequence, expected one or more arrays"),
    (lambda x: ops.concatenate([1.0, 2.0], axis=2 ** 70), r"^xs\[0\]: got float 1.0, expected an array with at "
                                                           r"least one axis"),
])
def test_huge_python_ints_are_named_not_overflow_errors(call, match):
    """Each was an OverflowError (int too large to convert to float / C long), traced or not."""
    for traced in (False, True):
        with pytest.raises(ValueError, match=match):
            if traced:
                seqcore.vjp(call, np.ones((2, 3)))
            else:
                call(np.ones((2, 3)))


def test_clip_checks_its_bounds():
    """A NaN bound made every output NaN; True, complex and lo > hi were taken."""
    x = np.array([-2.0, 0.5, 3.0], np.float32)
    for kwargs, error, match in (({"lo": float("nan")}, ValueError, r"^lo: got nan, expected a finite number"),
                                 ({"hi": float("inf")}, ValueError, r"^hi: got inf, expected a finite number"),
                                 ({"lo": True}, TypeError, r"^lo: got True \(bool\), expected a real number"),
                                 ({"hi": 1 + 1j}, TypeError, r"^hi: got \(1\+1j\) \(complex\), expected a real"),
                                 ({"lo": 1.0, "hi": 0.0}, ValueError, r"^hi: got 0.0, expected >= lo = 1.0")):
        with pytest.raises(error, match=match):
            ops.clip(x, **kwargs)
    for lo, hi in ((-1.0, 1.0), (None, 1), (np.float32(0.0), None), (1.0, 1.0)):
        got = ops.clip(x, lo, hi)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, np.clip(x, lo, hi))


@pytest.mark.parametrize("p", [float("nan"), float("inf"), -np.inf])
def test_power_refuses_a_non_finite_exponent(p):
    """p = nan gave ones at x = 1 and NaN elsewhere, without a word."""
    with pytest.raises(ValueError, match=rf"^p: got {p!r}, expected a finite number"):
        ops.power(np.array([1.0, 2.0]), p)
    np.testing.assert_array_equal(ops.power(np.array([1.0, 2.0]), -1), [1.0, 0.5])


def test_swapaxes_stack_and_reshape_name_their_own_arguments():
    """swapaxes reported the primitive's a1/a2 and NumPy's text, and took True as axis 1 (as did
    stack); reshape(x, None) was "'NoneType' object is not iterable"."""
    x = np.arange(6.0).reshape(2, 3)
    with pytest.raises(TypeError, match=r"^axis1: got NoneType None, expected an int$"):
        ops.swapaxes(x, None, 1)
    with pytest.raises(TypeError, match=r"^axis2: got bool True, expected an int$"):
        ops.swapaxes(x, 0, True)
    with pytest.raises(ValueError, match=r"^axis2: got -3, expected an axis in \[-2, 2\) \(x has 2 dims\)"):
        ops.swapaxes(x, 0, -3)
    with pytest.raises(TypeError, match=r"^axis: got bool True, expected an int$"):
        ops.stack([x, x], axis=True)
    with pytest.raises(TypeError, match=r"^axis: got bool False, expected an int$"):
        ops.concatenate([x, x], axis=False)
    for shape in (None, 6.0, (2, "3"), (2.0, 3)):
        with pytest.raises(TypeError, match=r"^shape: got .*, expected an int or a sequence of ints"):
            ops.reshape(x, shape)
    # valid axes, negative ones included, as NumPy's
    np.testing.assert_array_equal(ops.swapaxes(x, np.int64(-1), 0), x.T)
    for axis in (0, 1, 2, -1, -3):
        np.testing.assert_array_equal(ops.stack([x, x + 1], axis=axis), np.stack([x, x + 1], axis=axis))
    for axis in (0, 1, -1, -2):
        np.testing.assert_array_equal(ops.concatenate([x, x + 1], axis=axis), np.concatenate([x, x + 1], axis=axis))
    np.testing.assert_array_equal(ops.reshape(x, 6), x.reshape(6))
    np.testing.assert_array_equal(ops.reshape(x, [np.int64(3), -1]), x.reshape(3, 2))


def test_newton_damping_and_tolerance_take_huge_ints_as_out_of_range():
    """damping=10**400 and tolerance=10**400 passed '< inf' and then overflowed in float()."""
    cell = cells.GRU(2, 3)
    params = cell.init(np.random.default_rng(0), np.float64)
    x = np.zeros((1, 3, 2))
    with pytest.raises(ValueError, match=r"^damping: got 1000000000.*, expected None or a finite number >= 0"):
        seqcore.newton_scan(cell, params, x, damping=10 ** 400)
    with pytest.raises(ValueError, match=r"^tolerance: got 1000000000.*, expected a finite positive number"):
        nn.tolerance_accuracy(np.zeros((2, 3)), np.zeros((2, 3)), 10 ** 400)
    pred = np.array([[0.0, 0.1], [0.0, 2.0]])
    assert nn.tolerance_accuracy(pred, np.zeros((2, 2)), 10 ** 3) == 1.0
    assert nn.tolerance_accuracy(pred, np.zeros((2, 2)), 1) == 0.5


def test_clip_takes_array_bounds_and_reshape_an_integer_array():
    """Per-element bounds (±inf for none) clip like np.clip, with the gradient 1 inside only."""
    from seqcore import ops
    x = np.array([[-2.0, 0.5, 3.0, 7.0]])
    lo, hi = np.array([-1.0, -1.0, 0.0, -np.inf]), np.array([1.0, 1.0, 2.0, np.inf])
    out, pullback = seqcore.vjp(lambda x: ops.clip(x, lo, hi), x)
    np.testing.assert_array_equal(out, np.clip(x, lo, hi))
    np.testing.assert_array_equal(pullback(np.ones_like(out))[0], [[0.0, 1.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="^lo: got an array bound of dtype float64 holding NaN"):
        ops.clip(x, np.array([np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match="^hi: got .*expected >= lo"):
        ops.clip(x, hi, lo)
    assert ops.reshape(np.arange(6.0), np.array([3, 2])).shape == (3, 2)
