"""Every registered primitive: its VJP equals central finite differences in float64."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import seqcore
import seqcore.cells  # noqa: F401  (registers the cell recurrences)
import seqcore.models  # noqa: F401  (registers losses)
import seqcore.newton  # noqa: F401  (registers the Newton recurrence)
from seqcore import primitives

from primitive_cases import NONDIFF_ARGS, NONDIFF_OUTPUTS, SCAN_STATICS, cases, is_library_primitive, stable_seed

LIBRARY_PRIMITIVES = sorted(n for n in primitives.registry() if is_library_primitive(n))


def finite_difference(f, args, i, eps=1e-6):
    x = args[i]
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        plus = list(args)
        minus = list(args)
        plus[i] = x.copy()
        plus[i][idx] += eps
        minus[i] = x.copy()
        minus[i][idx] -= eps
        g[idx] = (f(*plus) - f(*minus)) / (2 * eps)
    return g


def _flatten_out(out):
    return out if isinstance(out, tuple) else (out,)


def check_primitive_gradients(prim, args, static, rng):
    out = _flatten_out(prim(*args, **static))
    cots = tuple(np.zeros(np.shape(o)) if i in NONDIFF_OUTPUTS.get(prim.name, ()) else rng.normal(size=np.shape(o))
                 for i, o in enumerate(out))

    def scalar(*a):
        o = _flatten_out(prim(*a, **static))
        skip = NONDIFF_OUTPUTS.get(prim.name, ())
        return float(sum((np.asarray(oo) * c).sum() for i, (oo, c) in enumerate(zip(o, cots)) if i not in skip))

    val, pullback = seqcore.vjp(lambda *a: prim(*a, **static), *args)
    grads = pullback(cots if len(cots) > 1 else cots[0])
    _, res = prim.fwd(np, *args, **static)
    declared = prim.bwd(np, res, cots if len(cots) > 1 else cots[0], **static)  # None: no gradient
    nondiff = NONDIFF_ARGS.get(prim.name, ())
    checked = 0
    for i, a in enumerate(args):
        where = f"{prim.name} argument {i} static={static}"
        if i in nondiff:
            assert declared[i] is None, f"{where}: listed in NONDIFF_ARGS, but its VJP gives a gradient"
            continue
        if not isinstance(a, np.ndarray):  # an absent h0 or bias, a Python number: seqcore.vjp gives None
            assert a is None or isinstance(a, (int, float)), f"{where}: got {type(a).__name__}"
            assert grads[i] is None, where
            continue
        assert a.dtype.kind == "f", f"{where}: dtype {a.dtype} is not in NONDIFF_ARGS, expected a float array"
        # the VJP's own output: seqcore.vjp turns a dropped (None) gradient into zeros
        assert declared[i] is not None, f"{where}: no gradient"
        num = finite_difference(scalar, args, i)
        np.testing.assert_allclose(grads[i], num, rtol=1e-6, atol=1e-7, err_msg=where)
        checked += 1
    return checked


def test_every_primitive_has_cases():
    rng = np.random.default_rng(0)
    for name in LIBRARY_PRIMITIVES:
        assert list(cases(name, rng)), name
    assert set(NONDIFF_ARGS) <= set(LIBRARY_PRIMITIVES), set(NONDIFF_ARGS) - set(LIBRARY_PRIMITIVES)


def _btd(args, static):
    """The (B, T, D) a case runs on: D is a cell's hidden size, a block scan's group count, else the
    last axis of the first 3-D argument (None without one)."""
    if "cell" in static:
        return args[0].shape[:2] + (static["cell"].hidden_size,)
    return next((a.shape[:3] for a in args if np.ndim(a) >= 3), None)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cases_reach_size_one_axes_odd_lengths_and_every_block_size(seed):
    """Every primitive meets T = 1, an odd T > 1, B = 1 and D = 1 whatever the caller's seed;
    block_scan meets k = 1, 2, 3 and a dense block (G = 1, k = 4) with every method and direction."""
    for name in LIBRARY_PRIMITIVES:
        seen = [_btd(args, static) for args, static in cases(name, np.random.default_rng(seed))]
        seen = [btd for btd in seen if btd is not None]
        assert any(T == 1 for _, T, _ in seen), (name, seen)
        assert any(T > 1 and T % 2 for _, T, _ in seen), (name, seen)
        assert any(B == 1 for B, _, _ in seen), (name, seen)
        assert any(D == 1 for _, _, D in seen), (name, seen)
        assert any(min(btd) > 1 and len(set(btd)) == 3 for btd in seen), (name, seen)
    blocks = {(A.shape[2:4], static["method"], static["reverse"])
              for (A, *_), static in cases("block_scan", np.random.default_rng(seed))}
    ks = {k for (_, k), _, _ in blocks}
    assert ks == {1, 2, 3, 4} and {G for (G, k), _, _ in blocks if k == 4} == {1}, blocks  # 4: dense only
    for k in ks:
        assert {(m, r) for (_, kk), m, r in blocks if kk == k} == {(s["method"], s["reverse"]) for s in SCAN_STATICS}


def test_case_seeds_are_the_same_in_every_process():
    """The gradient tests' seeds do not follow the per-process salt of ``hash()`` (a failure reproduces)."""
    code = "from primitive_cases import stable_seed; print(stable_seed('tanh'), stable_seed('lstm', (1, 2, 3)))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).parent, env=dict(os.environ, PYTHONHASHSEED=salt)).stdout
            for salt in ("1", "2")}
    assert len(outs) == 1, outs


@pytest.mark.parametrize("name", LIBRARY_PRIMITIVES)
def test_vjp_matches_finite_differences(name):
    rng = np.random.default_rng(stable_seed(name))
    prim = primitives.get(name)
    checked = 0
    for args, static in cases(name, rng):
        checked += check_primitive_gradients(prim, args, static, rng)
    assert checked > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_with_one_input_feature_has_the_gemm_bits(dtype):
    """``ops.linear`` multiplies by broadcasting when in_features = 1 (a K = 1 GEMM is slow):
    the same single rounding per element as the matrix product."""
    rng = np.random.default_rng(3)
    x, w, b = (rng.normal(size=s).astype(dtype) for s in ((4, 9, 1), (17, 1), (17,)))
    y = seqcore.ops.linear(x, w, b)
    ref = (x.reshape(-1, 1) @ w.T).reshape(4, 9, 17)
    np.testing.assert_array_equal(y, ref + b)
    assert y.dtype == dtype and y.flags.c_contiguous
    np.testing.assert_array_equal(seqcore.ops.linear(x, w), ref)



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape,w_shape", [((9, 0), (64, 0)), ((2, 3, 0), (5, 0)), ((4, 3), (0, 3)),
                                             ((3, 0), (0, 0)), ((0, 3), (5, 3))])
def test_linear_with_zero_features(x_shape, w_shape, dtype):
    """0 input (or output) features: an empty sum, so y is the bias alone; the gradients keep
    their arguments' shapes, and db sums the cotangent over the rows."""
    rng = np.random.default_rng(4)
    x, w, b = np.ones(x_shape, dtype), np.ones(w_shape, dtype), rng.normal(size=w_shape[:1]).astype(dtype)
    y, pullback = seqcore.vjp(seqcore.ops.linear, x, w, b)
    assert y.shape == x_shape[:-1] + w_shape[:1] and y.dtype == dtype
    if w_shape[1] == 0:
        np.testing.assert_array_equal(y, np.broadcast_to(b, y.shape))
    g = rng.normal(size=y.shape).astype(dtype)
    dx, dw, db = pullback(g)
    assert (dx.shape, dw.shape, db.shape) == (x_shape, w_shape, w_shape[:1])
    assert dx.dtype == dw.dtype == db.dtype == dtype
    rows = int(np.prod(x_shape[:-1]))  # not -1: ambiguous for an empty array
    g2 = g.reshape(rows, w_shape[0])
    np.testing.assert_allclose(dx.reshape(rows, w_shape[1]), g2 @ w, rtol=1e-6)
    np.testing.assert_allclose(dw, g2.T @ x.reshape(rows, w_shape[1]), rtol=1e-6)
    np.testing.assert_allclose(db, g2.sum(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(seqcore.ops.linear(x, w), y - b)


@pytest.mark.parametrize("name", [3, None, b"numpy", ["numba"]])
def test_a_backend_name_that_is_no_string_is_a_type_error_naming_name(name):
    with pytest.raises(TypeError, match=r"^name: got \w+ .*expected a backend name \(str\), one of \['numpy'"):
        seqcore.use(name)
    assert seqcore.backends.current() == "numpy"  # unchanged
    if name is not None:  # get(None) is the current backend
        with pytest.raises(TypeError, match="^name: "):
            seqcore.backends.get(name)
    with pytest.raises(ValueError, match="unknown backend 'jax'"):  # an unknown string stays a ValueError
        seqcore.use("jax")

def test_a_loss_of_exactly_zero_is_positive_zero():
    """An all-zero mask, or logits that pick every label with certainty, give +0.0 (printed
    as 0.0000, not -0.0000)."""
    from seqcore import nn
    for loss in (nn.cross_entropy(np.zeros((4, 3)), np.zeros(4, np.int64), np.zeros(4)),
                 nn.cross_entropy(np.array([[0.0, -1e4], [-1e4, 0.0]]), np.array([0, 1]))):
        assert float(loss) == 0.0 and not np.signbit(float(loss))


def test_every_primitive_documents_itself():
    import inspect
    from seqcore import primitives
    for name, prim in primitives._REGISTRY.items():
        assert prim.doc, name
        assert inspect.getdoc(prim) == f"{name}: {prim.doc}"
    assert "differentiable routine" in inspect.getdoc(primitives.Primitive)


def test_power_zero_has_zero_gradient_everywhere():
    """The reference VJP ``g · p · x ** (p − 1)`` is 0 · 0 ** −1 = nan at x = 0 when p = 0."""
    x = np.array([0.0, 1.0, -2.0, np.inf])
    for f in (lambda v: seqcore.ops.power(v, 0), lambda v: v ** 0):
        out, pullback = seqcore.vjp(f, x)
        np.testing.assert_array_equal(out, np.ones(4))
        (g,) = pullback(np.ones(4))
        np.testing.assert_array_equal(g, np.zeros(4))
    out, pullback = seqcore.vjp(lambda v: seqcore.ops.power(v, 0), x.astype(np.float32))
    assert out.dtype == np.float32 and pullback(np.ones(4, np.float32))[0].dtype == np.float32
    # other exponents keep the reference's gradient (p = 2: 2x)
    _, pullback = seqcore.vjp(lambda v: seqcore.ops.power(v, 2), x[:3])
    np.testing.assert_array_equal(pullback(np.ones(3))[0], 2 * x[:3])


@pytest.mark.parametrize("dtype,x", [(np.float32, 20.0), (np.float64, 40.0)])
def test_sigmoid_gradient_where_the_output_rounds_to_one(dtype, x):
    """σ(x) rounds to 1 but σ'(x) = σ(x)σ(−x) ≈ e^−|x| does not vanish (y(1 − y) would be 0)."""
    xs = np.array([x, -x, 3 * x, 0.5, 800.0], dtype)
    _, pullback = seqcore.vjp(lambda v: seqcore.ops.sigmoid(v).sum(), xs)
    e = np.exp(-np.abs(xs.astype(np.float64)))
    (g,) = pullback(np.ones((), dtype))
    assert g.dtype == dtype
    np.testing.assert_allclose(g, e / (1 + e) ** 2, rtol=10 * np.finfo(dtype).eps, atol=0)


def _unmasked_only(loss, good):
    """``loss`` on the positions ``good`` of a (1, T, ·) input alone."""
    return lambda z, y, m: loss(z[:, good], y[:, good], m[:, good])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_positions_with_nan_or_inf_do_not_count(dtype):
    """A weight-0 step with a NaN target or a −inf/NaN logit contributes nothing to the loss
    or its gradient (0 · NaN would make both NaN)."""
    from seqcore import nn
    rng = np.random.default_rng(4)
    good = np.array([True, False, True, False])
    mask = np.array([[1.0, 0.0, 2.0, 0.0]])
    logits = rng.normal(size=(1, 4, 3)).astype(dtype)
    logits[0, 1, 0], logits[0, 3] = -np.inf, np.nan
    labels = np.array([[1, 0, 2, 1]])
    pred = rng.normal(size=(1, 4, 2)).astype(dtype)
    target = rng.normal(size=(1, 4, 2)).astype(dtype)
    target[0, 1, 0], target[0, 3] = np.nan, np.inf
    for loss, z, y in ((nn.cross_entropy, logits, labels), (nn.mse, pred, target)):
        v, pullback = seqcore.vjp(lambda z: loss(z, y, mask), z)
        (g,) = pullback(np.ones((), dtype))
        w, pullback_w = seqcore.vjp(lambda z: _unmasked_only(loss, good)(z, y, mask), z)
        np.testing.assert_allclose(float(v), float(w), rtol=1e-6)
        np.testing.assert_array_equal(g[:, ~good], 0)
        np.testing.assert_allclose(g, pullback_w(np.ones((), dtype))[0], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e300, 1e-60, 1e-300])
def test_loss_weights_of_any_finite_scale(dtype, scale):
    """The losses are weighted means: weights scaled by 1e300 or 1e-60 (beyond float32, or
    near float64's limits) give the loss of the unscaled weights, not NaN or a silent 0."""
    from seqcore import nn
    rng = np.random.default_rng(6)
    logits, labels = rng.normal(size=(3, 4, 5)).astype(dtype), rng.integers(0, 5, size=(3, 4))
    pred, target = rng.normal(size=(3, 4, 2)).astype(dtype), rng.normal(size=(3, 4, 2)).astype(dtype)
    w = rng.uniform(0.5, 1.0, size=(3, 4))
    w[0, 0] = 0
    for loss, args in ((nn.cross_entropy, (logits, labels)), (nn.mse, (pred, target))):
        want, pb_want = seqcore.vjp(lambda z: loss(z, args[1], w), args[0])
        got, pb_got = seqcore.vjp(lambda z: loss(z, args[1], w * scale), args[0])
        np.testing.assert_allclose(float(got), float(want), rtol=1e-5 if dtype == np.float32 else 1e-12)
        np.testing.assert_allclose(pb_got(1.0)[0], pb_want(1.0)[0], rtol=1e-5 if dtype == np.float32 else 1e-12)
    # 0/1 masks keep their bits (the largest weight is 1: the scaling is exact)
    m = (w > 0).astype(np.float64)
    d, mw = pred - target, m.astype(dtype)
    assert float(nn.mse(pred, target, m)) == float((d * d * mw[..., None]).sum() / (mw.sum() * 2))
