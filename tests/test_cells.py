"""Recurrent cells: forward against direct formulas (and torch.nn.GRU), gradients and step
Jacobians against central finite differences in float64, the registry, and bad input."""
import numpy as np
import pytest

import seqcore
from seqcore import cells

from primitive_cases import stable_seed

# (test id, CLI name, fields); heads=2 is used where the shapes allow it (see _make)
CONFIGS = [
    ("elman", "elman", {}),
    ("elman-relu", "elman", {"nonlinearity": "relu"}),
    ("lstm", "lstm", {}),
    ("gru", "gru", {}),
    ("leaky", "leaky", {}),
    ("leaky-tanh", "leaky", {"nonlinearity": "tanh", "tau_init": 1.5}),
    ("mingru", "mingru", {}),
    ("mingru-log", "mingru", {"log_space": True}),
    ("minlstm", "minlstm", {}),
    ("minlstm-log", "minlstm", {"log_space": True}),
    ("diaggru", "diaggru", {}),
    ("cifg-lstm", "cifg-lstm", {}),
]
IDS = [c[0] for c in CONFIGS]
SHAPES = [(1, 1, 1, 1), (2, 5, 4, 4), (3, 3, 2, 6)]  # (B, T, I, H): T = 1, odd T, B = 1, D = 1
TWO_STATE = (cells.LSTM, cells.CIFGLSTM)


def _make(name, fields, I, H):
    fields = dict(fields)
    if name in ("diaggru", "cifg-lstm"):
        fields["heads"] = 2 if I % 2 == 0 and H % 2 == 0 else 1
    return cells.make(name, I, H, **fields)


def _params(cell, rng):
    p = cell.init(rng, np.float64)
    if isinstance(cell, cells.LeakyRNN):
        p["tau"] = rng.uniform(1.2, 3.0, size=p["tau"].shape)  # away from the clamp's kink at 1
    return p


def _h0(cell, rng, B):
    h = 0.5 * rng.normal(size=(B, cell.hidden_size))
    return (h, 0.5 * rng.normal(size=(B, cell.hidden_size))) if isinstance(cell, TWO_STATE) else h


def _numeric_grad(f, arr, eps=1e-6):
    """Central differences of the scalar ``f()`` w.r.t. every entry of ``arr`` (perturbed in place)."""
    g = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        old = arr[idx]
        arr[idx] = old + eps
        fp = f()
        arr[idx] = old - eps
        fm = f()
        arr[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


def _leaves(tree):
    return list(tree) if isinstance(tree, tuple) else [tree]


# -- gradients of apply --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cid,name,fields", CONFIGS, ids=IDS)
def test_apply_gradients_match_finite_differences(cid, name, fields, shape):
    B, T, I, H = shape
    rng = np.random.default_rng(stable_seed(cid, shape))
    cell = _make(name, fields, I, H)
    params, x, h0 = _params(cell, rng), rng.normal(size=(B, T, I)), _h0(cell, rng, B)
    R = rng.normal(size=(B, T, H))
    R_last = tuple(rng.normal(size=(B, H)) for _ in _leaves(h0))

    def loss():
        hs, last = cell.apply(params, x, h0)
        return float((hs * R).sum() + sum((a * r).sum() for a, r in zip(_leaves(last), R_last)))

    (hs, last), pullback = seqcore.vjp(lambda p, xx, hh: cell.apply(p, xx, hh), params, x, h0)
    cot_last = R_last if isinstance(last, tuple) else R_last[0]
    dparams, dx, dh0 = pullback((R, cot_last))
    for k in params:
        np.testing.assert_allclose(dparams[k], _numeric_grad(loss, params[k]), rtol=1e-6, atol=1e-8, err_msg=k)
    np.testing.assert_allclose(dx, _numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
    for g, a in zip(_leaves(dh0), _leaves(h0)):
        np.testing.assert_allclose(g, _numeric_grad(loss, a), rtol=1e-6, atol=1e-8)


# -- one step: Jacobian and VJP ------------------------------------------------------------------

def _dense(J, cell):
    N, S = J.shape[0], cell.state_size
    if cell.jacobian_structure == "dense":
        assert J.shape == (N, S, S)
        return J
    if cell.jacobian_structure == "diag":
        assert J.shape == (N, S)
        return J[:, :, None] * np.eye(S)[None]
    k = cell.block_size
    assert J.shape == (N, S // k, k, k)
    D = np.zeros((N, S, S))
    for g in range(S // k):
        D[:, g * k:(g + 1) * k, g * k:(g + 1) * k] = J[:, g]
    return D


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cid,name,fields", CONFIGS, ids=IDS)
def test_step_jacobian_and_vjp_match_finite_differences(cid, name, fields, shape):
    N, _, I, H = shape
    rng = np.random.default_rng(stable_seed(cid, "step", shape))
    cell = _make(name, fields, I, H)
    p = _params(cell, rng)
    xi = cell.project(p, rng.normal(size=(N, 1, I)))[:, 0]
    state = 0.5 * rng.normal(size=(N, cell.state_size))
    dnew = rng.normal(size=(N, cell.state_size))
    step = lambda: cell.step_fwd(np, p, state, xi)[0]  # noqa: E731

    J = _dense(cell.step_jacobian(np, p, state, xi), cell)
    # finite differences of step_fwd give the full dense Jacobian: the structure must hold too
    J_fd = np.zeros_like(J)
    for j in range(cell.state_size):
        e = np.zeros_like(state)
        e[:, j] = 1e-6
        J_fd[:, :, j] = (cell.step_fwd(np, p, state + e, xi)[0] - cell.step_fwd(np, p, state - e, xi)[0]) / 2e-6
    np.testing.assert_allclose(J, J_fd, rtol=1e-6, atol=1e-8)

    _, cache = cell.step_fwd(np, p, state, xi)
    dstate, dxi, dp = cell.step_bwd(np, p, cache, dnew)
    np.testing.assert_allclose(dstate, np.einsum("nij,ni->nj", J, dnew), rtol=1e-10, atol=1e-12)
    scalar = lambda: float((step() * dnew).sum())  # noqa: E731
    np.testing.assert_allclose(dxi, _numeric_grad(scalar, xi), rtol=1e-6, atol=1e-8)
    assert sorted(dp) == sorted(cell.recurrent_keys)
    for k in cell.recurrent_keys:
        np.testing.assert_allclose(dp[k], _numeric_grad(scalar, p[k]), rtol=1e-6, atol=1e-8, err_msg=k)


@pytest.mark.parametrize("cid,name,fields", CONFIGS, ids=IDS)
def test_step_jacobian_does_not_depend_on_the_parameters_memory_order(cid, name, fields):
    """Fortran-ordered (e.g. transposed-back) weights give the same Jacobians as C-ordered
    ones: a GRU once lost its diagonal term when its weight was not C-contiguous."""
    rng = np.random.default_rng(11)
    cell = _make(name, fields, 4, 4)
    p = _params(cell, rng)
    fortran = {k: np.asfortranarray(v) for k, v in p.items()}
    xi = cell.project(p, rng.normal(size=(3, 1, 4)))[:, 0]
    state = 0.5 * rng.normal(size=(3, cell.state_size))
    np.testing.assert_array_equal(cell.step_jacobian(np, fortran, state, xi), cell.step_jacobian(np, p, state, xi))


# -- forward against direct formulas ------------------------------------------------------------

def _sig(v):
    return 1 / (1 + np.exp(-v))


def _g(v):
    return np.where(v >= 0, v + 0.5, _sig(v))


def _dense_heads(w, heads, gates):
    """Multi-head ``(heads, gates·Hh, Ih)`` → the equivalent masked dense ``(gates·H, I)`` (gate-major rows)."""
    m, GHh, Ih = w.shape
    Hh = GHh // gates
    D = np.zeros((gates * m * Hh, m * Ih))
    for head in range(m):
        for g in range(gates):
            rows = slice(g * m * Hh + head * Hh, g * m * Hh + (head + 1) * Hh)
            D[rows, head * Ih:(head + 1) * Ih] = w[head, g * Hh:(g + 1) * Hh]
    return D


def _oracle(cell, p, x, h0):
    """The cell's equations, written out step by step: ``hs: (B, T, H)``."""
    H = cell.hidden_size
    h = np.array(h0[0] if isinstance(h0, tuple) else h0)
    c = np.array(h0[1]) if isinstance(h0, tuple) else None
    if isinstance(cell, (cells.DiagGRU, cells.CIFGLSTM)):
        W = _dense_heads(p["weight_ih"], cell.heads, 3)
    else:
        W = p["weight_ih"]
    out = []
    for t in range(x.shape[1]):
        u = x[:, t] @ W.T + p["bias_ih"]
        if isinstance(cell, cells.LeakyRNN):
            tau = np.maximum(p["tau"], 1)
            W0 = p["weight_hh"] - np.diag(np.diag(p["weight_hh"]))
            pre = (1 - 1 / tau) * h + (h @ W0.T + u) / tau
            h = np.tanh(pre) if cell.nonlinearity == "tanh" else np.where(pre > 0, pre, cell.slope * pre)
        elif isinstance(cell, cells.MinGRU):
            z, cand = _sig(u[:, :H]), u[:, H:]
            h = (1 - z) * h + z * (_g(cand) if cell.log_space else cand)
        elif isinstance(cell, cells.MinLSTM):
            i, f, cand = _sig(u[:, :H]), _sig(u[:, H:2 * H]), u[:, 2 * H:]
            h = f / (f + i) * h + i / (f + i) * (_g(cand) if cell.log_space else cand)
        elif isinstance(cell, cells.DiagGRU):
            a = p["weight_hh"]
            r = _sig(u[:, :H] + a[:H] * h)
            z = _sig(u[:, H:2 * H] + a[H:2 * H] * h)
            n = np.tanh(u[:, 2 * H:] + a[2 * H:] * (r * h))
            h = z * n + (1 - z) * h
        elif isinstance(cell, cells.CIFGLSTM):
            a, pp = p["weight_hh"], p["weight_peephole"]
            f = _sig(u[:, :H] + a[:H] * h + pp[:H] * c)
            c = f * c + (1 - f) * np.tanh(u[:, H:2 * H] + a[H:2 * H] * h)
            h = _sig(u[:, 2 * H:] + a[2 * H:] * h + pp[H:] * c) * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


ORACLE_CONFIGS = [c for c in CONFIGS if c[1] in ("leaky", "mingru", "minlstm", "diaggru", "cifg-lstm")]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cid,name,fields", ORACLE_CONFIGS, ids=[c[0] for c in ORACLE_CONFIGS])
def test_forward_matches_direct_formula(cid, name, fields, shape):
    B, T, I, H = shape
    rng = np.random.default_rng(7)
    cell = _make(name, fields, I, H)
    p, x, h0 = _params(cell, rng), rng.normal(size=(B, T, I)), _h0(cell, rng, B)
    hs, last = cell.apply(p, x, h0)
    expected = _oracle(cell, p, x, h0)
    np.testing.assert_allclose(hs, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_leaves(last)[0], expected[:, -1], rtol=1e-12, atol=1e-12)
    # h0=None means zeros
    zeros = tuple(np.zeros((B, H)) for _ in _leaves(h0))
    np.testing.assert_allclose(cell.apply(p, x)[0], cell.apply(p, x, zeros if len(zeros) > 1 else zeros[0])[0])


@pytest.mark.parametrize("name", ["diaggru", "cifg-lstm"])
def test_heads_see_only_their_input_slice(name):
    rng = np.random.default_rng(3)
    cell = cells.make(name, 4, 6, heads=2)
    p, x = cell.init(rng, np.float64), rng.normal(size=(2, 5, 4))
    x2 = x.copy()
    x2[..., 2:] += 1.0  # input features of head 1
    hs, hs2 = cell.apply(p, x)[0], cell.apply(p, x2)[0]
    np.testing.assert_array_equal(hs[..., :3], hs2[..., :3])  # neurons of head 0 are unaffected
    assert np.abs(hs[..., 3:] - hs2[..., 3:]).min() > 0


# -- linear cells: the scan engines agree with the step recurrence ---------------------------------

@pytest.mark.parametrize("T", [1, 2, 7, 33])
@pytest.mark.parametrize("cid,name,fields", [c for c in CONFIGS if c[1] in ("mingru", "minlstm")],
                         ids=["mingru", "mingru-log", "minlstm", "minlstm-log"])
def test_linear_cells_parallel_equals_sequential_equals_steps(cid, name, fields, T):
    rng = np.random.default_rng(T)
    cell = cells.make(name, 3, 5, **fields)
    assert cell.linear_in_state and cell.jacobian_structure == "diag"
    p, x, h0 = cell.init(rng, np.float64), rng.normal(size=(2, T, 3)), rng.normal(size=(2, 5))
    R = rng.normal(size=(2, T, 5))
    f = lambda mode: lambda pp, xx, hh: cell.apply(pp, xx, hh, mode=mode)[0]  # noqa: E731
    hs_seq, pb_seq = seqcore.vjp(f("sequential"), p, x, h0)
    hs_par, pb_par = seqcore.vjp(f("parallel"), p, x, h0)
    np.testing.assert_allclose(hs_par, hs_seq, rtol=1e-12, atol=1e-12)
    g_seq, g_par = pb_seq(R), pb_par(R)
    for k in p:
        np.testing.assert_allclose(g_par[0][k], g_seq[0][k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_par[1], g_seq[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_par[2], g_seq[2], rtol=1e-10, atol=1e-12)
    # the protocol's step function runs the same recurrence
    xi, h, steps, rp = cell.project(p, x), h0, [], cell.recurrent_params(p)
    for t in range(T):
        h = cell.step_fwd(np, rp, h, xi[:, t])[0]
        steps.append(h)
    np.testing.assert_allclose(np.stack(steps, axis=1), hs_seq, rtol=1e-12, atol=1e-12)


def test_log_space_is_stable_over_long_sequences():
    rng = np.random.default_rng(0)
    cell = cells.MinGRU(2, 3, log_space=True)
    p = cell.init(rng, np.float64)
    # z ≈ e^-8 over 2000 steps: the products of (1 − z) fall to about 0.4, so both the decay of
    # h0 and the candidates' inflow move the state by O(1)
    p["bias_ih"][:3] = -8.0
    x = rng.normal(size=(2, 2000, 2))
    h0 = np.array([[2.0, 2.0, 2.0], [-1.5, 0.0, 0.5]])  # h0 of any sign is kept out of log space
    hs = cell.apply(p, x, h0, mode="parallel")[0]
    assert np.all(np.isfinite(hs))
    want = _oracle(cell, p, x, h0)
    assert np.abs(want[:, -1] - h0).min() > 0.1
    np.testing.assert_allclose(hs, want, rtol=1e-10, atol=1e-12)


def _sigmoid64(k):
    e = np.exp(-np.abs(k))
    return np.where(k >= 0, 1 / (1 + e), e / (1 + e))


def _minimal_bias_grad_oracle(cell, p, x, h0):
    """∂ Σ h / ∂ bias_ih of minGRU / minLSTM (linear space) in float64, by a loop over time with
    every sigmoid derivative taken from its input (σ'(k) = σ(k)σ(−k))."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    xi = x.astype(np.float64) @ p["weight_ih"].T + p["bias_ih"]
    H = cell.hidden_size
    if isinstance(cell, cells.MinGRU):
        kz, v = xi[..., :H], xi[..., H:]
        a, s, dsig = _sigmoid64(-kz), _sigmoid64(kz), _sigmoid64(kz) * _sigmoid64(-kz)
    else:
        ki, kf, v = xi[..., :H], xi[..., H:2 * H], xi[..., 2 * H:]
        d = np.logaddexp(0, -kf) - np.logaddexp(0, -ki)
        a, s = _sigmoid64(-d), _sigmoid64(d)
        dsig = a * s
    T = x.shape[1]
    hs, h = np.empty_like(v), h0.astype(np.float64)
    for t in range(T):
        h = a[:, t] * h + s[:, t] * v[:, t]
        hs[:, t] = h
    prev = np.concatenate([h0[:, None].astype(np.float64), hs[:, :-1]], axis=1)
    g, carry = np.empty_like(v), np.zeros_like(h)
    for t in range(T - 1, -1, -1):
        g[:, t] = 1 + carry
        carry = a[:, t] * g[:, t]
    dpre = g * (v - prev) * dsig  # ∂/∂k_z (minGRU) or ∂/∂d (minLSTM)
    if isinstance(cell, cells.MinGRU):
        dk = [dpre, g * s]
    else:
        dk = [dpre * _sigmoid64(-ki), -dpre * _sigmoid64(-kf), g * s]
    return np.concatenate([k.sum(axis=(0, 1)) for k in dk])


@pytest.mark.parametrize("dtype,bias", [(np.float32, 20.0), (np.float64, 40.0)])
@pytest.mark.parametrize("sign", [-1, 1])
@pytest.mark.parametrize("mode", ["sequential", "parallel"])
@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_linear_cells_gradients_with_saturated_gates(name, mode, sign, dtype, bias):
    """Gates so saturated that σ rounds to 1 (|k| = 20 in float32, 40 in float64): σ' ≈ e^−|k|
    is not 0, and over a long sequence from a large h0 it carries most of the gradient (a
    derivative taken as y(1 − y) from the output loses it)."""
    rng = np.random.default_rng(5)
    cell = cells.make(name, 2, 2)
    p = cell.init(rng, dtype)
    p["bias_ih"][:2] += sign * bias  # k_z (minGRU) or k_i (minLSTM)
    if name == "minlstm":
        p["bias_ih"][2:4] -= sign * bias  # k_f the other way: d = log(i / f) ≈ ±2·bias
    x = rng.normal(size=(2, 3000, 2)).astype(dtype)
    h0 = np.full((2, 2), 100.0, dtype)
    _, pullback = seqcore.vjp(lambda pp: cell.apply(pp, x, h0, mode=mode)[0].sum(), p)
    got = pullback(1.0)[0]["bias_ih"]
    want = _minimal_bias_grad_oracle(cell, p, x, h0)
    tol = 1e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 1e-3 * np.abs(want).max())


# -- GRU: parity with torch.nn.GRU ---------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("B,T,I,H", [(1, 1, 1, 1), (3, 7, 4, 5)])
def test_gru_matches_torch(dtype, tol, B, T, I, H):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    cell = cells.GRU(I, H)
    p = cell.init(rng, dtype)
    x, h0 = rng.normal(size=(B, T, I)).astype(dtype), rng.normal(size=(B, H)).astype(dtype)
    R, R_last = rng.normal(size=(B, T, H)).astype(dtype), rng.normal(size=(B, H)).astype(dtype)

    ref = torch.nn.GRU(I, H, batch_first=True, dtype=torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for k in p:
            getattr(ref, f"{k}_l0").copy_(torch.from_numpy(p[k]))
    xt = torch.from_numpy(x).requires_grad_(True)
    h0t = torch.from_numpy(h0[None]).requires_grad_(True)
    out_t, hn_t = ref(xt, h0t)
    ((out_t * torch.from_numpy(R)).sum() + (hn_t[0] * torch.from_numpy(R_last)).sum()).backward()

    (hs, last), pullback = seqcore.vjp(lambda pp, xx, hh: cell.apply(pp, xx, hh), p, x, h0)
    dp, dx, dh0 = pullback((R, R_last))
    np.testing.assert_allclose(hs, out_t.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(last, hn_t[0].detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dh0, h0t.grad[0].numpy(), rtol=tol, atol=tol)
    for k in p:
        np.testing.assert_allclose(dp[k], getattr(ref, f"{k}_l0").grad.numpy(), rtol=tol, atol=tol, err_msg=k)


@pytest.mark.parametrize("cid,name,fields", CONFIGS, ids=IDS)
def test_float32_stays_float32(cid, name, fields):
    rng = np.random.default_rng(1)
    cell = _make(name, fields, 4, 6)
    p, x = cell.init(rng), rng.normal(size=(2, 3, 4)).astype(np.float32)
    state = np.zeros((2, cell.state_size), np.float32)

    def run(p, x, state):
        (hs, last), pullback = seqcore.vjp(lambda pp, xx: cell.apply(pp, xx), p, x)
        dp, dx = pullback((np.ones_like(hs), tuple(np.ones_like(a) for a in last) if isinstance(last, tuple)
                           else np.ones_like(last)))
        jac = cell.step_jacobian(np, p, state, cell.project(p, x)[:, 0])
        return {"hs": hs, "dx": dx, "step_jacobian": jac, **{f"dp[{k}]": g for k, g in dp.items()}}

    got = run(p, x, state)
    assert {k: v.dtype for k, v in got.items()} == {k: np.float32 for k in got}
    # the oracle: the same float32 numbers computed in float64; only float32 rounding may differ
    want = run({k: v.astype(np.float64) for k, v in p.items()}, x.astype(np.float64), state.astype(np.float64))
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=1e-4, atol=1e-5 * (1 + np.abs(w).max()), err_msg=k)


# -- LeakyRNN specifics --------------------------------------------------------------------------

def test_leaky_masks_the_diagonal_and_clamps_tau():
    rng = np.random.default_rng(5)
    cell = cells.LeakyRNN(3, 4)
    p = cell.init(rng, np.float64)
    assert np.all(np.diag(p["weight_hh"]) == 0) and np.all(p["tau"] == 1.0)
    x, R = rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6, 4))
    p["tau"] = np.array([0.3, 1.0, 2.0, 0.9])
    q = {k: v.copy() for k, v in p.items()}
    q["tau"] = np.array([1.0, 1.0, 2.0, 1.0])
    q["weight_hh"][np.diag_indices(4)] = 5.0  # ignored by the forward
    np.testing.assert_array_equal(cell.apply(p, x)[0], cell.apply(q, x)[0])
    np.testing.assert_array_equal(cell.timescales(p), q["tau"])
    _, pullback = seqcore.vjp(lambda pp: cell.apply(pp, x)[0], p)
    (g,) = pullback(R)
    assert np.all(np.diag(g["weight_hh"]) == 0)
    assert g["tau"][0] == 0 and g["tau"][3] == 0   # clamped: no gradient
    assert g["tau"][1] != 0 and g["tau"][2] != 0   # at τ = 1 the gradient flows, so τ can grow


# -- registry ------------------------------------------------------------------------------------

def test_registry_names_and_classes():
    assert cells.names() == ["elman", "lstm", "gru", "leaky", "mingru", "minlstm", "diaggru", "cifg-lstm"]
    classes = [cells.Elman, cells.LSTM, cells.GRU, cells.LeakyRNN, cells.MinGRU, cells.MinLSTM,
               cells.DiagGRU, cells.CIFGLSTM]
    for n, cls in zip(cells.names(), classes):
        c = cells.make(n, 2, 4)
        assert type(c) is cls and c.input_size == 2 and c.hidden_size == 4
    assert cells.make("leaky", 2, 4, tau_init=3.0, nonlinearity="tanh").tau_init == 3.0


# -- bad input -----------------------------------------------------------------------------------

def test_bad_construction_is_rejected():
    with pytest.raises(ValueError, match=r"name: got 'rnn'.*'gru'.*'cifg-lstm'"):
        cells.make("rnn", 2, 4)
    # unhashable names were a raw "TypeError: unhashable type"; an array equal to a name is not one
    for bad in (["lstm"], {"lstm": 1}, np.array(["lstm"]), np.array("lstm")):
        with pytest.raises(ValueError, match=r"^name: got .*lstm.*, expected one of 'elman', 'lstm'"):
            cells.make(bad, 2, 4)
    with pytest.raises(TypeError, match="kwargs: got \\['heads'\\]"):
        cells.make("gru", 2, 4, heads=2)
    with pytest.raises(ValueError, match="tau_init: got 0.5"):
        cells.LeakyRNN(2, 4, tau_init=0.5)
    with pytest.raises(ValueError, match="nonlinearity: got 'relu'"):
        cells.LeakyRNN(2, 4, nonlinearity="relu")
    with pytest.raises(ValueError, match="slope: got -0.1"):
        cells.LeakyRNN(2, 4, slope=-0.1)
    with pytest.raises(ValueError, match="heads: got 2, expected a divisor of input_size=3"):
        cells.DiagGRU(3, 4, heads=2)
    with pytest.raises(ValueError, match="heads: got 0"):
        cells.CIFGLSTM(2, 4, heads=0)
    with pytest.raises(TypeError, match="log_space: got 'yes'"):
        cells.MinLSTM(2, 4, log_space="yes")
    with pytest.raises(ValueError, match="hidden_size: got 0"):
        cells.make("mingru", 2, 0)


@pytest.mark.parametrize("name", ["gru", "leaky", "mingru", "minlstm", "diaggru", "cifg-lstm"])
def test_bad_apply_arguments_are_rejected(name):
    rng = np.random.default_rng(0)
    cell = cells.make(name, 2, 4)
    p, x = cell.init(rng, np.float64), rng.normal(size=(3, 5, 2))
    with pytest.raises(ValueError, match=r"x: got an array of shape \(5, 2\)"):
        cell.apply(p, x[0])
    with pytest.raises(ValueError, match=r"x: got shape \(3, 5, 3\), expected \(B, T, 2\)"):
        cell.apply(p, rng.normal(size=(3, 5, 3)))
    with pytest.raises(TypeError, match="x: got dtype int64"):
        cell.apply(p, np.ones((3, 5, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="mode: got 'newton'"):
        cell.apply(p, x, mode="newton")
    with pytest.raises(ValueError, match="params: missing 'weight_ih'"):
        cell.apply({k: v for k, v in p.items() if k != "weight_ih"}, x)
    bad = dict(p, bias_ih=np.zeros(1))
    with pytest.raises(ValueError, match=r"params\['bias_ih'\]: got shape \(1,\)"):
        cell.apply(bad, x)
    if isinstance(cell, TWO_STATE):
        with pytest.raises(TypeError, match="h0: got ndarray, expected a tuple"):
            cell.apply(p, x, np.zeros((3, 4)))
        with pytest.raises(ValueError, match=r"c0: got shape \(3, 5\)"):
            cell.apply(p, x, (np.zeros((3, 4)), np.zeros((3, 5))))
    else:
        with pytest.raises(ValueError, match=r"h0: got shape \(2, 4\), expected \(3, 4\)"):
            cell.apply(p, x, np.zeros((2, 4)))


@pytest.mark.parametrize("name", cells.names())
def test_float64_weights_with_float32_inputs_compute_in_float64(name):
    # e.g. a float64 run fed float32 data: the result equals the all-float64 computation
    cell = cells.make(name, 3, 4)
    p = cell.init(np.random.default_rng(0), np.float64)
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    hs, _ = cell.apply(p, x)
    want, _ = cell.apply(p, x.astype(np.float64))
    assert hs.dtype == np.float64
    np.testing.assert_array_equal(hs, want)
    out, pullback = seqcore.vjp(lambda p: cell.apply(p, x)[0], p)
    (g,) = pullback(np.ones_like(out))
    assert all(v.dtype == np.float64 for v in g.values())


@pytest.mark.parametrize("name", cells.names())
def test_init_rejects_a_missing_rng_and_non_float_dtypes(name):
    cell = cells.make(name, 2, 4)
    with pytest.raises(TypeError, match="rng: got NoneType, expected numpy.random.Generator"):
        cell.init(None)
    with pytest.raises(TypeError, match="dtype: got <class 'numpy.int32'>, expected float32 or float64"):
        cell.init(np.random.default_rng(0), np.int32)
    with pytest.raises(TypeError, match="dtype: got 'float16'"):
        cell.init(np.random.default_rng(0), "float16")
    params = cell.init(np.random.default_rng(0), "float64")
    assert {v.dtype for v in params.values()} == {np.dtype(np.float64)}


def test_numpy_scalars_are_accepted_as_numbers_and_flags():
    """``tau_init=np.int64(2)`` was 'expected a finite number >= 1'; ``log_space=np.True_`` a TypeError."""
    for tau in (np.int64(2), np.float32(2.0)):
        cell = cells.LeakyRNN(2, 3, tau_init=tau, slope=np.float32(0.25))
        assert cell.tau_init == 2 and type(cell.tau_init) in (int, float)  # stored as a Python number
        assert cell.slope == 0.25 and type(cell.slope) is float
        assert cell.init(np.random.default_rng(0))["tau"].tolist() == [2.0] * 3
    for cls in (cells.MinGRU, cells.MinLSTM):
        assert cls(2, 3, log_space=np.True_).log_space is True
        assert cls(2, 3, log_space=np.False_).log_space is False
    with pytest.raises(ValueError, match="tau_init: got True"):  # bools are still not numbers
        cells.LeakyRNN(2, 3, tau_init=True)
    with pytest.raises(ValueError, match=r"slope: got False"):
        cells.LeakyRNN(2, 3, slope=np.False_)
    with pytest.raises(ValueError, match=r"tau_init: got 0.5"):
        cells.LeakyRNN(2, 3, tau_init=np.float32(0.5))
    # sizes, head counts and names too: a cell's fields are plain Python values (JSON-friendly)
    import dataclasses
    import json
    for cell in (cells.Elman(np.int64(2), np.int32(3), nonlinearity=np.str_("relu")),
                 cells.DiagGRU(np.int64(4), np.int64(4), heads=np.int64(2))):
        fields = dataclasses.asdict(cell)
        assert all(type(v) in (int, str) for v in fields.values()) and json.loads(json.dumps(fields)) == fields


def test_states_checks_the_packed_initial_state():
    rng = np.random.default_rng(0)
    for cell in (cells.GRU(3, 4), cells.MinGRU(3, 4), cells.LSTM(3, 4)):
        p, x = cell.init(rng, np.float64), rng.normal(size=(2, 5, 3))
        S = cell.state_size
        for mode in ("sequential", "parallel"):
            ok = cell.states(p, x, np.zeros((2, S)), mode)
            assert np.allclose(cell.output(ok), cell.apply(p, x, mode=mode)[0])
            with pytest.raises(ValueError, match=rf"state0: got shape \(2, {S + 1}\), expected \(2, {S}\)"):
                cell.states(p, x, np.zeros((2, S + 1)), mode)
            with pytest.raises(ValueError, match=rf"state0: got shape \(3, {S}\)"):
                cell.states(p, x, np.zeros((3, S)), mode)
            with pytest.raises(TypeError, match="state0: got dtype float32, expected float64"):
                cell.states(p, x, np.zeros((2, S), np.float32), mode)
            with pytest.raises(TypeError, match="state0: got list"):
                cell.states(p, x, np.zeros((2, S)).tolist(), mode)


def test_stack_h0_is_a_list_per_layer():
    from seqcore.cells.stack import stack
    rng = np.random.default_rng(0)
    net = stack(cells.GRU, 3, 4, num_layers=2)
    p, x = net.init(rng, np.float64), rng.normal(size=(2, 5, 3))
    h0 = [rng.normal(size=(2, 4)), rng.normal(size=(2, 4))]
    hs, last = net.apply(p, x, h0)
    h1, l1 = cells.GRU(3, 4).apply(p[0], x, h0[0])
    h2, l2 = cells.GRU(4, 4).apply(p[1], h1, h0[1])
    assert np.allclose(hs, h2) and np.allclose(last[0], l1) and np.allclose(last[1], l2)
    for bad in (np.stack(h0), "ab", {"0": h0[0], "1": h0[1]}):  # PyTorch's (L, B, H) tensor, other iterables
        with pytest.raises(TypeError, match="h0: got .*, expected None or a list with one initial state per layer"):
            net.apply(p, x, bad)


@pytest.mark.parametrize("cls", TWO_STATE)
@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_h0_and_c0_dtypes_are_checked_each_on_its_own(cls, mode):
    """They were checked after packing, which promotes: a float64 cell took (h0 float32, c0 float64)
    and a float32 cell blamed h0 for c0's float64."""
    rng = np.random.default_rng(0)
    cell = cls(3, 4)
    f32, f64 = np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float64)
    for dtype, (h0, c0), bad, got in ((np.float64, (f32, f64), "h0", "float32"),
                                      (np.float32, (f32, f64), "c0", "float64"),
                                      (np.float32, (f64, f32), "h0", "float64")):
        p, x = cell.init(rng, dtype), rng.normal(size=(2, 5, 3)).astype(dtype)
        with pytest.raises(TypeError, match=rf"^{bad}: got dtype {got}, expected {np.dtype(dtype)} \(the dtype of x"):
            cell.apply(p, x, (h0, c0), mode=mode)
        same = np.zeros((2, 4), dtype)
        assert cell.apply(p, x, (same, same), mode=mode)[0].dtype == dtype


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
@pytest.mark.parametrize("make", [cells.GRU, cells.LSTM, cells.MinGRU])
def test_an_initial_state_of_another_dtype_is_refused_on_torch_as_on_numpy(make, mode):
    """numpy and numba refused a float64 h0 beside float32 x and parameters; torch ran and silently
    switched the model to float64. The oracle: the NumPy reference on the same float32 arrays."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    cell = make(3, 4)
    p, x = cell.init(rng, np.float32), rng.normal(size=(2, 5, 3)).astype(np.float32)
    pt, xt = {k: torch.from_numpy(v) for k, v in p.items()}, torch.from_numpy(x)
    two = cell.state_factor == 2
    h = rng.normal(size=(2, 4))
    for wide in ("h0", "c0") if two else ("h0",):
        parts = {"h0": h.astype(np.float32), "c0": h.astype(np.float32), wide: h}  # `wide` stays float64
        h0 = (parts["h0"], parts["c0"]) if two else parts["h0"]
        with pytest.raises(TypeError, match=rf"^{wide}: got dtype float64, expected float32 \(the dtype of x and"):
            cell.apply(p, x, h0, mode=mode)
        h0t = tuple(map(torch.from_numpy, h0)) if two else torch.from_numpy(h0)
        with pytest.raises(TypeError, match=rf"^{wide}: got dtype torch.float64, expected torch.float32 \(the dtype "
                                            "of x and the parameters\\)"):
            cell.apply(pt, xt, h0t, mode=mode)
    with pytest.raises(TypeError, match=r"^state0: got dtype torch.float64, expected torch.float32"):
        cell.states(pt, xt, torch.zeros(2, cell.state_size, dtype=torch.float64), mode)
    # in the cell's dtype it runs, in float32, equal to the reference
    h0 = (h.astype(np.float32),) * 2 if two else h.astype(np.float32)
    h0t = tuple(map(torch.from_numpy, h0)) if two else torch.from_numpy(h0)
    hs = cell.apply(pt, xt, h0t, mode=mode)[0]
    assert hs.dtype == torch.float32
    np.testing.assert_array_equal(hs.numpy(), cell.apply(p, x, h0, mode=mode)[0])


def test_bidirectional_params_need_exactly_forward_and_backward():
    """An extra key ("forwards", a typo) was accepted by apply and dropped by constrain."""
    from seqcore.cells.stack import Bidirectional
    rng = np.random.default_rng(0)
    bi = Bidirectional(cells.GRU(3, 4), cells.GRU(3, 4))
    p, x = bi.init(rng, np.float64), rng.normal(size=(2, 5, 3))
    cases = (({**p, "forwards": p["forward"]}, r"\['backward', 'forward', 'forwards'\] \(unused key\(s\) \['forwards'\]\), "),
             ({"forward": p["forward"]}, r"\['forward'\] \(missing key\(s\) \['backward'\]\), "),
             ({"forward": p["forward"], "back": 1},
              r"\['back', 'forward'\] \(missing key\(s\) \['backward'\]; unused key\(s\) \['back'\]\), "),
             ([p["forward"], p["backward"]], r"list, "))
    for bad, what in cases:
        for call in (lambda q: bi.apply(q, x), bi.constrain):
            with pytest.raises(ValueError, match=rf"^params: got {what}expected a dict with exactly the keys "
                                                 r"'backward' and 'forward' from Bidirectional.init$"):
                call(bad)
    # the exact keys still work: constrain keeps the tree's structure, apply is each direction's
    assert sorted(bi.constrain(p)) == ["backward", "forward"]
    hs, _ = bi.apply(p, x)
    np.testing.assert_array_equal(hs[..., :4], cells.GRU(3, 4).apply(p["forward"], x)[0])


def test_stack_constrain_checks_the_number_of_layers():
    """constrain zipped params against the layers: a short list came back short, a long one was cut."""
    from seqcore.cells.stack import stack
    net = stack(cells.LeakyRNN, 3, 4, num_layers=2)
    p = net.init(np.random.default_rng(0), np.float64)
    for bad, n in ((p[:1], 1), (p + p[:1], 3)):
        with pytest.raises(ValueError, match=rf"^params: got list of length {n}, expected a list of 2 layer dicts"):
            net.constrain(bad)
    got = net.constrain(p)
    assert len(got) == 2 and all(
        np.array_equal(g[k], c.constrain(q)[k]) for g, c, q in zip(got, net.layers, p) for k in q)


def test_apply_documents_the_newton_options_it_takes():
    """The docstring listed params, x, h0 and mode only; **newton_kwargs went unexplained."""
    doc = cells.Cell.apply.__doc__
    assert "**newton_kwargs" in doc and ":func:`seqcore.newton_scan`" in doc
    assert all(f"``{opt}``" in doc for opt in ("tol", "max_iters", "jacobian", "damping"))
    # what it says: checked in sequential mode and on cells without a Newton scan too
    rng = np.random.default_rng(0)
    for cell, mode in ((cells.GRU(3, 4), "sequential"), (cells.MinGRU(3, 4), "parallel")):
        with pytest.raises(TypeError, match="newton options: got unknown \\['tols'\\]"):
            cell.apply(cell.init(rng, np.float64), np.zeros((1, 2, 3)), mode=mode, tols=1e-3)


def test_leaky_constrain_names_bad_params():
    """Was a bare KeyError 'tau' (and 'list indices must be integers') from the projection."""
    cell = cells.make("leaky", 2, 3)
    params = cell.init(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"params: missing 'tau'"):
        cell.constrain({k: v for k, v in params.items() if k != "tau"})
    with pytest.raises(TypeError, match=r"params: got list, expected a dict"):
        cell.constrain([params])
    low = {**params, "tau": np.array([0.5, 2.0, 1.0], params["tau"].dtype)}
    np.testing.assert_array_equal(cell.constrain(low)["tau"], [1.0, 2.0, 1.0])  # the projection itself


def test_stack_lengths_are_checked_even_without_a_bidirectional_layer():
    """A one-directional stack reads no lengths, but a wrong one was accepted silently."""
    from seqcore.cells.stack import stack
    st = stack(cells.LSTM, 2, 3, num_layers=2)
    params = st.init(np.random.default_rng(0), np.float64)
    x = np.random.default_rng(1).normal(size=(2, 7, 2))
    for bad, message in (([3, 99], r"lengths: got values in \[3, 99\], expected each in \[1, 7\]"),
                         ([1.5, 2.0], "lengths: got float64 array of shape \\(2,\\), expected 2 integers"),
                         ([3], "lengths: got int64 array of shape \\(1,\\), expected 2 integers")):
        with pytest.raises(ValueError, match=message):
            st.apply(params, x, lengths=bad)
    # valid lengths change nothing for causal layers
    np.testing.assert_array_equal(st.apply(params, x, lengths=[3, 7])[0], st.apply(params, x)[0])


def test_a_size_given_as_a_cell_field_is_refused_like_an_unknown_field():
    """It was make()'s own 'got multiple values for argument' error, naming no option."""
    with pytest.raises(TypeError, match=r"^cell_kwargs: got \['hidden_size'\], unknown keys for the 'leaky' cell; "
                                        r"expected some of \['nonlinearity', 'slope', 'tau_init'\] \(the sizes"):
        cells.make("leaky", 2, 3, hidden_size=4)
    assert cells.make("leaky", 2, 3, tau_init=2.0).tau_init == 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_constrain_projects_every_tau_below_one_to_one(dtype):
    """τ = −inf became NaN (−inf · 0 in the old mask arithmetic); dtype kept."""
    cell = cells.make("leaky", 2, 4)
    params = cell.init(np.random.default_rng(0), dtype)
    params["tau"] = np.array([-np.inf, 0.5, 1.0, 3.0], dtype)
    tau = cell.constrain(params)["tau"]
    assert tau.dtype == dtype and tau.tolist() == [1.0, 1.0, 1.0, 3.0]


def test_make_takes_every_argument_by_keyword_too():
    assert cells.make(name="gru", input_size=3, hidden_size=4) == cells.make("gru", 3, 4)
    assert cells.make("lstm", 2, hidden_size=3).hidden_size == 3
