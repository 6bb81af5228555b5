"""Scans: every schedule equals the sequential spec; block and log-space variants against direct loops."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqcore

METHODS = ("parallel", "chunked")


def loop_linear(a, b, h0):
    h = np.zeros_like(b[:, 0]) if h0 is None else h0
    out = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return np.stack(out, 1)


@st.composite
def scan_inputs(draw):
    B = draw(st.integers(1, 3))
    T = draw(st.one_of(st.integers(1, 40), st.integers(41, 3000)))
    D = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, (B, T, D))
    # gates exactly 0 and exactly 1 at random places
    special = rng.random((B, T, D))
    a[special < 0.1] = 0.0
    a[special > 0.9] = 1.0
    if T <= 20:  # |a| > 1 only where the product cannot overflow
        a = a * draw(st.sampled_from([1.0, 1.7]))
    b = rng.normal(size=(B, T, D))
    h0 = rng.normal(size=(B, D)) if draw(st.booleans()) else None
    chunk = draw(st.integers(1, 70))
    return a, b, h0, chunk


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scan_inputs(), st.sampled_from(METHODS), st.booleans())
def test_linear_scan_methods_equal_sequential(inputs, method, reverse):
    a, b, h0, chunk = inputs
    _assert_forward_equal(seqcore.linear_scan, (a, b, h0), method, chunk, reverse)


def _assert_forward_equal(scan, args, method, chunk, reverse):
    """``scan`` by ``method`` equals the sequential scan; rounding grows with T (``args[0]``'s axis 1)."""
    ref = scan(*args, reverse=reverse)
    got = scan(*args, reverse=reverse, method=method, chunk_size=chunk)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-11 * (1 + np.abs(ref).max()) * args[0].shape[1])


def _assert_vjps_equal(scan, args, method, chunk, reverse):
    """The VJP of ``scan`` by ``method`` equals the sequential one, argument by argument (``None``
    for an absent h0 on both sides); errors scale with T as in the forward tests."""
    dh = np.random.default_rng(0).normal(size=args[1].shape)
    _, pb_ref = seqcore.vjp(lambda *xs: scan(*xs, reverse=reverse), *args)
    _, pb = seqcore.vjp(lambda *xs: scan(*xs, reverse=reverse, method=method, chunk_size=chunk), *args)
    got, want = pb(dh), pb_ref(dh)
    assert len(got) == len(want) == 3
    for g, r in zip(got, want):
        assert (g is None) == (r is None)
        if r is not None:
            np.testing.assert_allclose(g, r, rtol=0, atol=1e-10 * (1 + np.abs(r).max()) * args[0].shape[1])


@settings(max_examples=25, deadline=None)
@given(scan_inputs(), st.sampled_from(METHODS), st.booleans())
def test_linear_scan_vjp_methods_equal_sequential(inputs, method, reverse):
    a, b, h0, chunk = inputs
    _assert_vjps_equal(seqcore.linear_scan, (a, b, h0), method, chunk, reverse)


@st.composite
def block_inputs(draw):
    """k = 1, 2, 3 with 1-3 groups, or one dense group of k = 4 or 5; transitions exactly 0 or I
    at random steps and, on short sequences only, entries beyond ±1."""
    B = draw(st.integers(1, 3))
    T = draw(st.one_of(st.integers(1, 40), st.integers(41, 3000)))
    G, k = draw(st.one_of(st.tuples(st.integers(1, 3), st.integers(1, 3)), st.tuples(st.just(1), st.integers(4, 5))))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    A = rng.uniform(-1, 1, (B, T, G, k, k)) / k  # row sums below 1: bounded states over long T
    special = rng.random((B, T, G))
    A[special < 0.1] = 0.0
    A[special > 0.9] = np.eye(k)
    if T <= 20:
        A = A * draw(st.sampled_from([1.0, 1.7 * k]))
    b = rng.normal(size=(B, T, G, k))
    h0 = rng.normal(size=(B, G, k)) if draw(st.booleans()) else None
    return A, b, h0, draw(st.integers(1, 70))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block_inputs(), st.sampled_from(METHODS), st.booleans())
def test_block_scan_methods_equal_sequential(inputs, method, reverse):
    A, b, h0, chunk = inputs
    _assert_forward_equal(seqcore.block_scan, (A, b, h0), method, chunk, reverse)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block_inputs(), st.sampled_from(METHODS), st.booleans())
def test_block_scan_vjp_methods_equal_sequential(inputs, method, reverse):
    A, b, h0, chunk = inputs
    dh = np.random.default_rng(0).normal(size=b.shape)
    _, pb_ref = seqcore.vjp(lambda A, b, h0: seqcore.block_scan(A, b, h0, reverse=reverse), A, b, h0)
    _, pb = seqcore.vjp(lambda A, b, h0: seqcore.block_scan(A, b, h0, reverse=reverse, method=method,
                                                            chunk_size=chunk), A, b, h0)
    for g, r in zip(pb(dh), pb_ref(dh)):
        if r is not None:
            np.testing.assert_allclose(g, r, rtol=0, atol=1e-10 * (1 + np.abs(r).max()) * A.shape[1])
        else:
            assert g is None


def test_linear_scan_matches_plain_loop():
    rng = np.random.default_rng(1)
    a, b, h0 = rng.uniform(-1, 1, (2, 33, 3)), rng.normal(size=(2, 33, 3)), rng.normal(size=(2, 3))
    np.testing.assert_allclose(seqcore.linear_scan(a, b, h0), loop_linear(a, b, h0), rtol=1e-13, atol=1e-13)
    rev = seqcore.linear_scan(a, b, h0, reverse=True)
    np.testing.assert_allclose(rev, loop_linear(a[:, ::-1], b[:, ::-1], h0)[:, ::-1], rtol=1e-13, atol=1e-13)
    # a NumPy bool is a flag like every other in the library
    np.testing.assert_array_equal(seqcore.linear_scan(a, b, h0, reverse=np.True_), rev)
    with pytest.raises(TypeError, match=r"^reverse: got 1, expected True or False"):
        seqcore.linear_scan(a, b, h0, reverse=1)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("method", ("sequential",) + METHODS)
@pytest.mark.parametrize("T", [1, 7, 130])
def test_block_scan_matches_loop(k, method, T):
    rng = np.random.default_rng(k * 100 + T)
    B, G = 2, 3
    A = rng.uniform(-0.6, 0.6, (B, T, G, k, k))
    b = rng.normal(size=(B, T, G, k))
    h0 = rng.normal(size=(B, G, k))
    h, out = h0, []
    for t in range(T):
        h = np.einsum("bgij,bgj->bgi", A[:, t], h) + b[:, t]
        out.append(h)
    np.testing.assert_allclose(seqcore.block_scan(A, b, h0, method=method, chunk_size=16), np.stack(out, 1),
                               rtol=1e-12, atol=1e-12)


def test_block_scan_k1_equals_linear_scan_and_dense():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(-1, 1, (2, 50, 4)), rng.normal(size=(2, 50, 4))
    h = seqcore.block_scan(a[..., None, None], b[..., None], method="parallel")[..., 0]
    np.testing.assert_allclose(h, seqcore.linear_scan(a, b), rtol=1e-12, atol=1e-12)
    # the same diagonal system as one dense 4x4 block
    A = np.einsum("btd,de->btde", a, np.eye(4))[:, :, None]
    hd = seqcore.block_scan(A, b[:, :, None], method="chunked", chunk_size=7)[:, :, 0]
    np.testing.assert_allclose(hd, seqcore.linear_scan(a, b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ("sequential",) + METHODS)
def test_log_scan_survives_long_products(method):
    # 20 000 gates of 0.9: the plain product underflows float64 (0.9**20000 = 1e-915)
    T = 20000
    la = np.full((1, T, 1), np.log(0.9))
    lb = np.full((1, T, 1), -np.inf)
    lb[0, 0, 0] = 0.0  # b_1 = 1, then only decay
    y = seqcore.log_linear_scan(la, lb, method=method, chunk_size=256)
    expected = np.arange(T) * np.log(0.9)
    np.testing.assert_allclose(y[0, :, 0], expected, rtol=1e-9)
    assert np.all(np.isfinite(y))


@settings(max_examples=30, deadline=None)
@given(scan_inputs(), st.sampled_from(METHODS))
def test_log_scan_methods_equal_sequential_and_linear(inputs, method):
    a, b, h0, chunk = inputs
    la, lb = np.log(np.abs(a) + 0.05), b
    ly0 = None if h0 is None else h0
    ref = seqcore.log_linear_scan(la, lb, ly0)
    got = seqcore.log_linear_scan(la, lb, ly0, method=method, chunk_size=chunk)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    if a.shape[1] <= 40:
        lin = seqcore.linear_scan(np.exp(la), np.exp(lb), None if ly0 is None else np.exp(ly0))
        np.testing.assert_allclose(np.exp(ref), lin, rtol=1e-10)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scan_inputs(), st.sampled_from(METHODS), st.booleans())
def test_log_scan_vjp_methods_equal_sequential(inputs, method, reverse):
    a, b, h0, chunk = inputs
    _assert_vjps_equal(seqcore.log_linear_scan, (np.log(np.abs(a) + 0.05), b, h0), method, chunk, reverse)


def test_float32_scans_stay_float32():
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, (2, 9, 3)).astype(np.float32)
    b = rng.normal(size=(2, 9, 3)).astype(np.float32)
    la = np.log(a + np.float32(0.1))
    for scan, args in ((seqcore.linear_scan, (a, b)), (seqcore.log_linear_scan, (la, b))):
        # the oracle: the same float32 inputs through the sequential spec in float64
        want = scan(*(v.astype(np.float64) for v in args))
        for method in ("sequential",) + METHODS:
            got = scan(*args, method=method, chunk_size=4)
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype,T", [(np.float32, 300), (np.float64, 2000)])
@pytest.mark.parametrize("method", METHODS)
def test_products_that_overflow_where_the_states_do_not(method, dtype, T):
    # a = 1.5 throughout: the prefix products of the gates overflow long before the states do
    # (zero until the last 50 steps); inf · 0 must not turn them into NaN, forward or backward
    a = np.full((1, T, 2), 1.5, dtype)
    b = np.zeros((1, T, 2), dtype)
    b[0, T - 50:] = 1
    ref, pull_ref = seqcore.vjp(lambda a, b: seqcore.linear_scan(a, b), a, b)
    got, pull = seqcore.vjp(lambda a, b: seqcore.linear_scan(a, b, method=method, chunk_size=64), a, b)
    assert np.all(np.isfinite(ref))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    cot = np.zeros_like(b)
    cot[0, :3] = 1  # a loss on the first steps only: the cotangent is zero over the long tail
    for g, want in zip(pull(cot), pull_ref(cot)):
        np.testing.assert_allclose(g, want, rtol=1e-5)
    # the same through 2×2 blocks (the Newton solves' form)
    A = np.einsum("btd,de->btde", a, np.eye(2, dtype=dtype))[:, :, None]
    hb = seqcore.block_scan(A, b[:, :, None], method=method, chunk_size=64)[:, :, 0]
    np.testing.assert_allclose(hb, ref, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_a_chunk_whose_product_overflows_midway(method):
    # gates 1.5 then 0.5 for 250 steps each: a span's product passes 1.5^250 (beyond float32)
    # on its way to 0.75^250, while states from h0 = 1e-10 peak near 1e34 and stay finite
    pattern = np.array(([1.5] * 250 + [0.5] * 250) * 4, np.float32)
    a = np.tile(pattern[None, :, None], (1, 1, 3))
    h0 = np.full((1, 3), 1e-10, np.float32)
    ref = seqcore.linear_scan(a, np.zeros_like(a), h0)
    got = seqcore.linear_scan(a, np.zeros_like(a), h0, method=method, chunk_size=500)
    assert np.all(np.isfinite(ref)) and ref.max() > 1e33
    np.testing.assert_allclose(got, ref, rtol=1e-5)
