"""The Newton scan against the sequential recurrence (the oracle), forward and backward.

Oracles: ``cell.apply(mode="sequential")`` and its BPTT gradients; a batched fixed-point
(Jacobi) sweep for bit-exactness of the exact-in-T property; plain Python loops for the
exact-arithmetic reduction of the linear solves.
"""
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import seqcore
from seqcore import cells
from seqcore.cells import CIFGLSTM, GRU, LSTM, Cell, DiagGRU, Elman, LeakyRNN, MinGRU
from seqcore.cells.base import FoldedInputBias
from seqcore.newton import (DEFAULT_MAX_ITERS, NewtonConvergenceWarning, NewtonInfo, newton_scan,
                            _parallel_states)
from seqcore.newton_solve import linear_solve, newton_solve, previous_states
from seqcore.tree import tree_leaves, tree_map

from primitive_cases import paired_leaves

TOL = {np.float64: 1e-9, np.float32: 1e-4}


FACTORIES = {
    "elman_tanh": lambda i, h: Elman(i, h, "tanh"),
    "elman_relu": lambda i, h: Elman(i, h, "relu"),
    "lstm": lambda i, h: LSTM(i, h),
    "gru": lambda i, h: GRU(i, h),
    "leaky": lambda i, h: LeakyRNN(i, h, tau_init=2.0),
    "diag_gru": lambda i, h: DiagGRU(i, h),
    "cifg_lstm": lambda i, h: CIFGLSTM(i, h),
}
CELLS = list(FACTORIES)


def backend_or_skip(name):
    """The backend module, or a skip naming why it cannot load here."""
    pytest.importorskip(name)
    try:
        return seqcore.backends.get(name)
    except seqcore.backends.BackendUnavailable as exc:
        pytest.skip(str(exc))


def make(name, dtype, B, T, H=4, I=3, seed=0, h0=True):
    rng = np.random.default_rng(seed)
    cell = FACTORIES[name](I, H)
    params = cell.init(rng, dtype)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    state = None
    if h0:
        h = (0.5 * rng.standard_normal((B, H))).astype(dtype)
        state = (h, (0.5 * rng.standard_normal((B, H))).astype(dtype)) if cell.state_factor == 2 else h
    return cell, params, x, state


def run_with_grads(cell, params, x, h0, mode, **kw):
    """Outputs ``(hs, h_last)`` and the gradients of a fixed random projection of them."""
    out, pullback = seqcore.vjp(lambda p, x, h0: cell.apply(p, x, h0, mode=mode, **kw), params, x, h0)
    rng = np.random.default_rng(123)
    cot = tree_map(lambda o: rng.standard_normal(o.shape).astype(o.dtype), out)
    return out, pullback(cot)


def assert_trees_close(got, want, tol, what):
    for name, g, w in paired_leaves(got, want, what):
        if w is None:
            continue
        assert np.shape(g) == np.shape(w), f"{name}: shape {np.shape(g)}, expected {np.shape(w)}"
        err = float(np.max(np.abs(g - w))) / max(1.0, float(np.max(np.abs(w))))
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol}"


def check_parity(name, dtype, B, T, H=4, **kw):
    cell, params, x, h0 = make(name, dtype, B, T, H)
    want, gwant = run_with_grads(cell, params, x, h0, "sequential")
    got, ggot = run_with_grads(cell, params, x, h0, "parallel", **kw)
    assert_trees_close(got, want, TOL[dtype], f"{name} forward")
    assert_trees_close(ggot, gwant, TOL[dtype], f"{name} gradients")


# -- parity with the sequential recurrence --------------------------------------------------------

@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1, 7, 64])
def test_parallel_equals_sequential(name, dtype, B, T):
    check_parity(name, dtype, B, T)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [1000, 4097])
def test_parallel_equals_sequential_long(name, dtype, B, T):
    check_parity(name, dtype, B, T, H=2)


@pytest.mark.parametrize("jacobian,damping", [("quasi", None), ("dense", None), ("auto", 0.5), ("quasi", 1.0)])
@pytest.mark.parametrize("name", ["elman_tanh", "lstm", "diag_gru", "cifg_lstm"])
def test_jacobian_variants_and_damping_keep_results(name, jacobian, damping):
    check_parity(name, np.float64, 3, 64, jacobian=jacobian, damping=damping, max_iters=64)


def test_block_expansion_of_a_diagonal_cell():
    check_parity("diag_gru", np.float64, 2, 33, jacobian="block")


def test_quasi_needs_more_iterations_than_newton():
    cell, params, x, h0 = make("lstm", np.float64, 3, 200)
    _, full = newton_scan(cell, params, x, h0)
    _, quasi = newton_scan(cell, params, x, h0, jacobian="quasi", max_iters=200)
    assert full.converged and quasi.converged
    assert quasi.iterations > full.iterations


def test_cell_linear_in_state_converges_in_one_update():
    rng = np.random.default_rng(0)
    cell = MinGRU(3, 4)
    params, x = cell.init(rng, np.float64), rng.standard_normal((2, 50, 3))
    hs, info = newton_scan(cell, params, x)
    np.testing.assert_allclose(hs, cell.apply(params, x)[0], atol=1e-12)
    assert info.iterations == 1 and info.converged


@pytest.mark.parametrize("backend", ["numba", "torch", "cupy"])
@pytest.mark.parametrize("name", ["lstm", "diag_gru", "cifg_lstm"])
def test_other_backends_match_the_sequential_reference(backend, name):
    mod = backend_or_skip(backend)
    cell, params, x, _ = make(name, np.float64, 2, 100, h0=False)
    want, gwant = run_with_grads(cell, params, x, None, "sequential")
    with seqcore.use(backend):
        out, pullback = seqcore.vjp(lambda p, x, h0: cell.apply(p, x, h0, mode="parallel"),
                                    tree_map(mod.asarray, params), mod.asarray(x), None)  # as run_with_grads
        rng = np.random.default_rng(123)  # the cotangents of run_with_grads
        cot = tree_map(lambda o: mod.asarray(rng.standard_normal(o.shape)), out)
        grads = pullback(cot)
    to_np = lambda t: tree_map(mod.to_numpy, t)
    assert_trees_close(to_np(out), want, 1e-9, f"{backend} forward")
    assert_trees_close(to_np(grads), gwant, 1e-9, f"{backend} gradients")


# -- exactness in T ---------------------------------------------------------------------------------

def chaotic_elman(T, B=3, H=8, gain=3.0, seed=1):
    """tanh Elman with recurrent weights N(0, gain²/H): a positive Lyapunov exponent for gain > 1."""
    rng = np.random.default_rng(seed)
    cell = Elman(2, H)
    params = cell.init(rng, np.float64)
    params["weight_hh"] = rng.standard_normal((H, H)) * gain / np.sqrt(H)
    return cell, params, rng.standard_normal((B, T, 2))


def jacobi_sweeps(cell, params, x, sweeps):
    """``s ← f(s_{t−1}, xi_t)`` for every t at once, from Newton's initial guess; after T − 1
    sweeps this is the sequential trajectory computed with the same batched arithmetic."""
    p = cell.recurrent_params(params)
    xi = cell.project(params, x)
    B, T, _ = xi.shape
    state0 = np.zeros((B, cell.state_size))
    f = lambda prev: cell.step_fwd(np, p, prev.reshape(B * T, -1), xi.reshape(B * T, -1))[0].reshape(B, T, -1)
    s = f(np.concatenate([state0[:, None], np.zeros((B, T - 1, cell.state_size))], axis=1))
    for _ in range(sweeps):
        s = f(previous_states(np, s, state0))
    return xi, state0, p, s


def test_max_iters_T_converges_for_chaotic_weights():
    T = 64
    cell, params, x = chaotic_elman(T)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NewtonConvergenceWarning)
        hs, info = newton_scan(cell, params, x, max_iters=T)
    assert info.converged and info.iterations > 10  # chaos: far more than the usual handful
    np.testing.assert_allclose(hs, cell.apply(params, x)[0], rtol=0, atol=1e-9)
    # only a zero residual passes tol=1e-300: s_t == f(s_{t−1}) bit for bit at every step, which
    # determines the trajectory — the fixed-point oracle with the same batched arithmetic
    hs, info = newton_scan(cell, params, x, max_iters=T, tol=1e-300)
    assert info.converged and info.iterations <= T - 1 and info.residuals[-1] == 0.0
    assert np.array_equal(hs, jacobi_sweeps(cell, params, x, T - 1)[3])


def test_max_iters_T_gives_an_exact_trajectory_for_strongly_chaotic_weights():
    """Spectral scale 8, T = 120: chaos grows one rounding to O(1) within the run, so
    mode="sequential" is no oracle for the bits (here it is 2.0 from this result, and as far
    from a long-double run). What "exact" can mean in floating point: the fixed point of the
    batched f bit for bit, and every step equal to f(h_{t−1}, x_t) computed on its own, up to
    that step's rounding."""
    T = 120
    cell, params, x = chaotic_elman(T, B=1, H=16, gain=8.0, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NewtonConvergenceWarning)
        hs, info = newton_scan(cell, params, x, max_iters=T, tol=1e-300)
    assert info.converged and info.iterations <= T - 1 and info.residuals[-1] == 0.0
    assert np.array_equal(hs, jacobi_sweeps(cell, params, x, T - 1)[3])
    prev = np.zeros(16)
    for t in range(T):  # one step at a time, from the returned h_{t−1}
        f = np.tanh(params["weight_ih"] @ x[0, t] + params["bias_ih"] + params["weight_hh"] @ prev
                    + params["bias_hh"])
        assert np.abs(hs[0, t] - f).max() <= 1e-14, f"t={t}"
        prev = hs[0, t]


def test_float32_corrections_that_overflow_fall_back_and_damping_converges():
    """README: strongly chaotic tanh weights in float32 overflow the corrections after one iteration
    at T = 150; the result is then the sequential trajectory, and damping 10 converges."""
    T = 150
    cell, params, x = chaotic_elman(T, B=2, H=16, gain=8.0, seed=1)
    params, x = {k: v.astype(np.float32) for k, v in params.items()}, x.astype(np.float32)
    sequential = cell.apply(params, x)[0]
    with pytest.warns(NewtonConvergenceWarning, match="the iterate became non-finite"):
        hs, info = newton_scan(cell, params, x, max_iters=T - 1)
    assert not info.converged and info.iterations == 1 and np.array_equal(hs, sequential)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NewtonConvergenceWarning)
        hs, info = newton_scan(cell, params, x, max_iters=T - 1, damping=10.0)
    assert info.converged
    # every step satisfies its own equation (chaos makes the bits differ from the sequential run's)
    prev = np.concatenate([np.zeros_like(hs[:, :1]), hs[:, :-1]], axis=1).astype(np.float64)
    f = np.tanh(x.astype(np.float64) @ params["weight_ih"].T + params["bias_ih"] + prev @ params["weight_hh"].T
                + params["bias_hh"])
    assert np.abs(hs - f).max() < 1e-5


def test_converged_means_each_step_meets_tol_not_the_sequential_bits():
    """What converged guarantees (README, newton.py): every step solves its own equation to tol,
    also with the sequential recurrence's one-step ``f``.  Not equality with mode="sequential":
    the batched ``f`` rounds differently, and chaos amplifies the difference to O(1) here."""
    T = 120
    cell, params, x = chaotic_elman(T, B=1, H=16, gain=8.0, seed=9)
    hs, info = newton_scan(cell, params, x, max_iters=T - 1)
    assert info.converged and info.iterations > 50
    p, xi = cell.recurrent_params(params), cell.project(params, x)
    prev = np.concatenate([np.zeros((1, 1, 16)), hs[:, :-1]], axis=1)
    f = np.stack([cell.step_fwd(np, p, prev[:, t], xi[:, t])[0] for t in range(T)], axis=1)
    scale = 1 + np.maximum(np.abs(hs).max(-1), np.abs(prev).max(-1))
    assert (np.abs(hs - f).max(-1) / scale).max() <= info.threshold * (1 + 1e-6) + 1e-15


@pytest.mark.parametrize("jacobian,damping", [("auto", 0.0), ("quasi", 0.0), ("auto", 3.0)])
def test_iteration_k_makes_steps_up_to_k_plus_1_exact(jacobian, damping):
    T = 40
    cell, params, x = chaotic_elman(T, gain=4.0)
    xi, state0, p, exact = jacobi_sweeps(cell, params, x, T - 1)
    for k in (1, 5, 17, T - 1):
        s, _ = newton_solve(np, cell, p, xi, state0, tol=1e-300, max_iters=k, jacobian=jacobian.replace(
            "auto", "dense"), damping=damping)
        assert np.array_equal(s[:, :k + 1], exact[:, :k + 1]), f"k={k}"
    assert np.array_equal(s, exact)


# -- exact-arithmetic reduction of the linearised solve -----------------------------------------------

def sequential_solve(A, rhs, diag, reverse=False):
    B, T, S = rhs.shape
    out, d = np.zeros_like(rhs), np.zeros((B, S))
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        d = (A[:, t] * d if diag else (A[:, t] @ d.reshape(B, A.shape[2], -1, 1)).reshape(B, S)) + rhs[:, t]
        out[:, t] = d
    return out


def signed_permutations(rng, shape, k):
    """Random signed permutation matrices (entries in {−1, 0, +1}): products stay exact."""
    n = int(np.prod(shape))
    P = np.zeros((n, k, k))
    for m in range(n):
        P[m, np.arange(k), rng.permutation(k)] = rng.choice([-1.0, 1.0], size=k)
    return P.reshape(shape + (k, k))


def impulses(rng, B, T, S):
    rhs = np.zeros((B, T, S))
    rhs[0, 0, 0] = 1.0  # the unit impulse at the very first step reaches every later step
    for _ in range(5):
        rhs[rng.integers(B), rng.integers(T), rng.integers(S)] += 1.0
    return rhs


@pytest.mark.parametrize("structure", ["diag", "block", "dense"])
@pytest.mark.parametrize("reverse", [False, True])
def test_exact_reduction_with_unit_jacobians(structure, reverse):
    rng = np.random.default_rng(7)
    B, T, S = 2, 1001, 6
    if structure == "diag":
        A = rng.choice([-1.0, 1.0], size=(B, T, S))
    else:
        G, k = (S // 2, 2) if structure == "block" else (1, S)
        A = signed_permutations(rng, (B, T, G), k)
    rhs = impulses(rng, B, T, S)
    got = linear_solve(np, A, rhs, structure, reverse=reverse)
    assert np.array_equal(got, sequential_solve(A, rhs, structure == "diag", reverse))


@dataclass(frozen=True)
class SignCell(Cell):
    """``s' = σ_t ⊙ s + scale ⊙ u_t`` with ``x_t = [σ_t, u_t]``: a diagonal Jacobian σ_t ∈ {−1, +1}."""

    name: ClassVar[str] = "test_newton_sign"
    jacobian_structure: ClassVar[str] = "diag"
    recurrent_keys: ClassVar[tuple] = ("scale",)

    def init(self, rng, dtype=np.float64):
        return {"scale": np.ones(self.hidden_size, dtype=dtype)}

    def project(self, params, x):
        return x

    def step_fwd(self, xp, p, s, xi_t):
        H = self.hidden_size
        return xi_t[:, :H] * s + p["scale"] * xi_t[:, H:], (s, xi_t)

    def step_bwd(self, xp, p, cache, d):
        s, xi_t = cache
        H = self.hidden_size
        return d * xi_t[:, :H], np.concatenate([d * s, d * p["scale"]], axis=1), {
            "scale": (d * xi_t[:, H:]).sum(axis=0)}

    def step_jacobian(self, xp, p, s, xi_t):
        return xi_t[:, :self.hidden_size]


def test_exact_reduction_end_to_end_forward_and_gradients():
    rng = np.random.default_rng(3)
    B, T, H = 2, 513, 3
    cell = SignCell(2 * H, H)
    params = cell.init(rng)
    x = np.concatenate([rng.choice([-1.0, 1.0], size=(B, T, H)), impulses(rng, B, T, H)], axis=2)
    h0 = rng.integers(-2, 3, size=(B, H)).astype(np.float64)
    want, gwant = run_with_grads(cell, params, x, h0, "sequential")
    got, ggot = run_with_grads(cell, params, x, h0, "parallel")
    cot = np.round(8 * np.random.default_rng(0).standard_normal((B, T, H)))  # integers: exact sums
    _, pb_seq = seqcore.vjp(lambda p, x, h0: cell.apply(p, x, h0)[0], params, x, h0)
    _, pb_par = seqcore.vjp(lambda p, x, h0: cell.apply(p, x, h0, mode="parallel")[0], params, x, h0)
    for a, b in zip(tree_leaves(pb_par(cot)), tree_leaves(pb_seq(cot))):
        assert np.array_equal(a, b)
    for a, b in zip(tree_leaves(got), tree_leaves(want)):
        assert np.array_equal(a, b)


# -- convergence --------------------------------------------------------------------------------------

def brief_training(cell, rng, steps=40, lr=0.5, B=8, T=48):
    """A few dozen plain SGD steps on "output the running mean of input channel 0" with a linear readout."""
    params = cell.init(rng, np.float64)
    params["readout"] = np.zeros((cell.hidden_size, 1))
    for _ in range(steps):
        x = rng.standard_normal((B, T, cell.input_size))
        target = np.cumsum(x[..., 0], axis=1) / np.arange(1, T + 1)

        def loss(p):
            hs, _ = cell.apply({k: v for k, v in p.items() if k != "readout"}, x)
            err = seqcore.ops.reshape(hs @ p["readout"], target.shape) - target
            return seqcore.ops.mean(err * err)

        value, grads = seqcore.value_and_grad(loss)(params)
        params = {k: params[k] - lr * grads[k] for k in params}
    params.pop("readout")
    return tree_map(lambda a: a.astype(np.float32), params), float(value)


# Newton updates measured at T = 4096, B = 2, H = 16, float32, default tolerance, random init and
# after brief_training (the README's iteration table); the target for DiagGRU / CIFG-LSTM is <= 4
ITERATION_BOUND = {"diag_gru": 4, "cifg_lstm": 4, "elman_tanh": 4, "lstm": 3, "gru": 3, "leaky": 4}
# jacobian="quasi", (random init, briefly trained) as in the README's table; None: does not
# converge in the default max_iters, so the scan falls back to the sequential trajectory
QUASI_BOUND = {"diag_gru": (4, 4), "cifg_lstm": (23, 25), "lstm": (14, 14), "gru": (10, 11),
               "elman_tanh": (25, None), "leaky": (11, 12)}


@pytest.mark.parametrize("name", list(ITERATION_BOUND))
@pytest.mark.parametrize("trained", [False, True])
def test_iterations_at_T_4096(name, trained):
    rng = np.random.default_rng(11)
    cell = FACTORIES[name](3, 16)
    params = brief_training(cell, rng)[0] if trained else cell.init(rng, np.float32)
    x = rng.standard_normal((2, 4096, 3)).astype(np.float32)
    want = cell.apply(params, x)[0]
    hs, info = newton_scan(cell, params, x)
    assert info.converged
    assert info.iterations <= ITERATION_BOUND[name], info.residuals
    np.testing.assert_allclose(hs, want, rtol=0, atol=1e-4)
    bound = QUASI_BOUND[name][trained]
    if bound is None:
        with pytest.warns(NewtonConvergenceWarning, match=f"did not converge in {DEFAULT_MAX_ITERS} Newton"):
            hs, info = newton_scan(cell, params, x, jacobian="quasi")
        assert not info.converged and info.iterations == DEFAULT_MAX_ITERS
        assert np.array_equal(hs, want)
    else:
        hs, info = newton_scan(cell, params, x, jacobian="quasi")
        assert info.converged and info.iterations <= bound, info.residuals
        np.testing.assert_allclose(hs, want, rtol=0, atol=1e-4)


def test_brief_training_reduces_the_loss():
    cell = FACTORIES["diag_gru"](3, 16)
    _, before = brief_training(cell, np.random.default_rng(11), steps=1, lr=0.0)
    _, after = brief_training(cell, np.random.default_rng(11))
    assert after < 0.7 * before


# -- non-convergence: fallback, warning, converged=False --------------------------------------------

def test_non_convergence_falls_back_to_the_sequential_trajectory():
    cell, params, x = chaotic_elman(64)
    with pytest.warns(NewtonConvergenceWarning, match="did not converge in 3 Newton iterations"):
        hs, info = newton_scan(cell, params, x, max_iters=3)
    assert not info.converged and info.iterations == 3 and info.residuals[-1] > info.threshold
    assert np.array_equal(hs, cell.apply(params, x)[0])


def test_non_convergence_warning_points_at_the_caller_and_shows_once_by_default():
    import warnings
    cell, params, x = chaotic_elman(64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's filter: once per message and location
        for gain in (1.0, 1.5, 2.0):      # other residuals each time, same call site
            newton_scan(cell, {**params, "weight_hh": params["weight_hh"] * gain}, x, max_iters=3)
    ours = [w for w in caught if issubclass(w.category, NewtonConvergenceWarning)]
    assert len(ours) == 1 and ours[0].filename == __file__


def test_stack_warnings_say_which_layer_and_direction_fell_back():
    """A Stack / Bidirectional issued one identical warning per failing layer and direction
    (Python's default filter then showed one line, naming no layer). Each now carries the prefix
    its errors get ("layer 1: backward direction: ") and still points at the caller's line."""
    from seqcore.cells.stack import stack
    H = 8
    net = stack(Elman, 2, H, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(1)
    params = net.init(rng, np.float64)
    failing = {(0, "forward"), (1, "backward")}
    for i, d in failing:  # chaotic, as chaotic_elman: 8 Newton updates leave T = 64 steps unconverged
        params[i][d]["weight_hh"] = rng.standard_normal((H, H)) * 3.0 / np.sqrt(H)
    x = rng.standard_normal((3, 64, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's filter: once per message and location
        for _ in range(2):
            got = net.apply(params, x, mode="parallel", max_iters=8)[0]
        bi = net.layers[1]
        got_bi = bi.apply(params[1], got, mode="parallel", max_iters=8)[0]  # reads 2H features
        newton_scan(bi.backward, params[1]["backward"], got, max_iters=8)  # outside a stack: no prefix
    ours = [w for w in caught if issubclass(w.category, NewtonConvergenceWarning)]
    text = "newton_scan: Elman did not converge in 8 Newton iterations"
    assert sorted(str(w.message).split(text)[0] for w in ours) == [
        "", "backward direction: ", "layer 0: forward direction: ", "layer 1: backward direction: "]
    assert all(w.filename == __file__ for w in ours)
    np.testing.assert_allclose(got, net.apply(params, x)[0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got_bi, bi.apply(params[1], got)[0], rtol=0, atol=1e-9)


def test_non_convergence_gradients_are_those_of_bptt():
    cell, params, x = chaotic_elman(32, gain=2.0)
    h0 = np.zeros((3, 8))
    want, gwant = run_with_grads(cell, params, x, h0, "sequential")
    with pytest.warns(NewtonConvergenceWarning):
        got, ggot = run_with_grads(cell, params, x, h0, "parallel", max_iters=2)
    assert_trees_close(got, want, 0.0, "forward")
    assert_trees_close(ggot, gwant, 1e-9, "gradients")


def test_overflowing_iterate_falls_back():
    # relu with large weights in float32: the Jacobian products overflow, the iterate turns non-finite
    rng = np.random.default_rng(0)
    H, T = 8, 200
    cell = Elman(2, H, "relu")
    params = cell.init(rng, np.float32)
    params["weight_hh"] = (rng.standard_normal((H, H)) * 3.0 / np.sqrt(H)).astype(np.float32)
    x = rng.standard_normal((2, T, 2)).astype(np.float32)
    with pytest.warns(NewtonConvergenceWarning, match="the iterate became non-finite"):
        hs, info = newton_scan(cell, params, x, max_iters=50)
    assert not info.converged and not np.isfinite(info.residuals[-1])
    assert np.isfinite(hs).all()
    assert np.array_equal(hs, cell.apply(params, x)[0])


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch", "cupy"])
@pytest.mark.parametrize("name", ["gru", "lstm", "diag_gru", "cifg_lstm", "elman_tanh"])
def test_non_finite_input_falls_back_naming_the_input_not_the_solver(backend, name):
    """A NaN in x, h0 or a recurrent weight was reported as 'did not converge in 0 Newton
    iterations (the iterate overflowed) ... Raise max_iters, add damping'. The oracle: the
    sequential mode on the same backend, NaNs and all. The name is the user's argument: c0 was
    reported as h0 (the packed state), LSTM's and Elman's bias_ih as bias_hh (the two are folded)."""
    mod = backend_or_skip(backend)
    cell, params, x, h0 = make(name, np.float64, 2, 20)
    two = cell.state_factor == 2
    folded = isinstance(cell, FoldedInputBias)
    cases = [("x", "x (or the input weights"), ("h0", "h0"), ("weight_hh", "params['weight_hh']"),
             ("bias_ih", "params['bias_ih'] or params['bias_hh']" if folded else "x (or the input weights")]
    for where, shown in cases + [("c0", "c0")] * two:
        p, xx, hh = dict(params), x.copy(), tuple(map(np.copy, h0)) if two else h0.copy()
        if where == "x":
            xx[0, 10, 1] = np.nan
        elif where in ("h0", "c0"):
            (hh[where == "c0"] if two else hh)[1, 2] = np.nan
        else:
            p[where] = p[where].copy()
            p[where].flat[0] = np.nan
        args = tree_map(mod.asarray, (p, xx, hh))
        with seqcore.use(backend), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            want = mod.to_numpy(cell.apply(*args)[0])
            got = mod.to_numpy(cell.apply(*args, mode="parallel")[0])
        assert np.array_equal(got, want, equal_nan=True) and not np.isfinite(want).all()
        ours = [str(w.message) for w in caught if issubclass(w.category, NewtonConvergenceWarning)]
        assert len(ours) == 1, ours
        assert f"{type(cell).__name__} got NaN or inf in {shown}" in ours[0], ours[0]
        assert "max_iters" not in ours[0] and "damping" not in ours[0], ours[0]


def test_adjoint_with_overflowing_jacobian_products_is_bptt():
    # chaotic tanh weights, float32, T = 600: products of the transposed Jacobians overflow over
    # the tail, where the cotangent is exactly zero (a loss on the first steps only); the
    # adjoint's parallel solve must give BPTT's finite gradient, not inf · 0 = NaN
    rng = np.random.default_rng(0)
    H, T = 32, 600
    cell = Elman(2, H)
    params = cell.init(rng, np.float32)
    params["weight_hh"] = (4.0 * rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
    x = rng.standard_normal((1, T, 2)).astype(np.float32)
    grads = {}
    for mode in ("sequential", "parallel"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NewtonConvergenceWarning)  # 2 iterations: the forward falls back
            _, pull = seqcore.vjp(lambda p, x: cell.apply(p, x, mode=mode, max_iters=2)[0][:, :3].sum(), params, x)
            grads[mode] = pull(np.ones((), np.float32))
    assert all(np.isfinite(g).all() for g in tree_leaves(grads["sequential"]))
    assert_trees_close(grads["parallel"], grads["sequential"], 1e-5, "gradients")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_each_step_meets_the_tolerance_on_its_own_scale(backend):
    # relu with large weights: one sequence's states grow to ~5e9 while the other's stay near
    # 300; a tolerance relative to the batch's largest state let Newton stop with 25 % errors
    # in the small sequence.  Converged now means every step is right to its own scale.
    backend_or_skip(backend)
    rng = np.random.default_rng(14)
    cell = Elman(3, 4, "relu")
    params = {k: (v * 4 if "weight" in k else v) for k, v in cell.init(rng, np.float32).items()}
    x = rng.standard_normal((2, 40, 3)).astype(np.float32)
    h0 = rng.standard_normal((2, 4)).astype(np.float32)
    want = cell.apply(params, x, h0)[0]
    with seqcore.use(backend), warnings.catch_warnings():
        warnings.simplefilter("error", NewtonConvergenceWarning)
        hs, info = newton_scan(cell, params, x, h0)
    assert info.converged and np.abs(want).max() > 1e9
    assert np.max(np.abs(hs - want) / (1 + np.abs(want))) < 1e-4


# -- the info record and validation -------------------------------------------------------------------

def test_info_records_the_residual_history():
    cell, params, x, h0 = make("lstm", np.float32, 3, 300)
    hs, info = newton_scan(cell, params, x, h0, tol=1e-5)
    assert isinstance(info, NewtonInfo) and info.jacobian == "dense" and info.max_iters == DEFAULT_MAX_ITERS
    assert len(info.residuals) == info.iterations + 1
    assert info.residuals[-1] <= info.threshold < info.residuals[-2]
    assert info.threshold == pytest.approx(1e-5)
    # the rule, recomputed step by step: ‖F_bt‖ / (1 + max(‖s_bt‖, ‖s_b,t−1‖)), s including c
    state0 = cell.pack_state(h0, 3, np, np.float32)
    xi = cell.project(params, x)
    s = _parallel_states(cell, params, xi, state0, tol=1e-5)
    prev = previous_states(np, s, state0)
    p = dict(zip(cell.recurrent_keys, cell.recurrent_args(params)))
    f, _ = cell.step_fwd(np, p, prev.reshape(-1, 8), xi.reshape(-1, xi.shape[2]))
    f = f.reshape(s.shape)
    rho = max(np.abs(s[b, t] - f[b, t]).max() / (1 + max(np.abs(s[b, t]).max(), np.abs(prev[b, t]).max()))
              for b in range(3) for t in range(300))
    assert info.residuals[-1] == pytest.approx(float(rho), rel=1e-3)
    _, short = newton_scan(cell, params, x[:, :5], h0)
    assert short.max_iters == 4  # capped at T − 1


def test_parallel_states_returns_packed_states():
    cell, params, x, h0 = make("lstm", np.float64, 2, 20)
    state0 = cell.pack_state(h0, 2, np, np.float64)
    xi = cell.project(params, x)
    got = _parallel_states(cell, params, xi, state0)
    assert np.allclose(got, cell.states(params, x, state0), atol=1e-10) and got.shape == (2, 20, 8)


@pytest.mark.parametrize("kwargs,err,match", [
    ({"tol": 0.0}, ValueError, "tol: got 0.0"),
    ({"tol": "small"}, ValueError, "tol"),
    ({"max_iters": 0}, ValueError, "max_iters: got 0"),
    ({"max_iters": 2.5}, ValueError, "max_iters"),
    ({"jacobian": "sparse"}, ValueError, "jacobian: got 'sparse'"),
    ({"jacobian": "diag"}, ValueError, "jacobian: got 'diag' for LSTM"),
    ({"jacobian": "block"}, ValueError, "at least as rich as 'dense'"),
    ({"damping": -1.0}, ValueError, "damping: got -1.0"),
    ({"damping": float("nan")}, ValueError, "damping"),
])
def test_invalid_options_are_rejected(kwargs, err, match):
    cell, params, x, h0 = make("lstm", np.float64, 2, 5)
    with pytest.raises(err, match=match):
        newton_scan(cell, params, x, h0, **kwargs)


def test_invalid_arguments_are_rejected():
    cell, params, x, h0 = make("elman_tanh", np.float64, 2, 5)
    with pytest.raises(TypeError, match="cell: got str"):
        newton_scan("elman", params, x)
    with pytest.raises(ValueError, match="x: got shape"):
        newton_scan(cell, params, x[..., :2])
    with pytest.raises(ValueError, match="params: missing 'weight_hh'"):
        newton_scan(cell, {k: v for k, v in params.items() if k != "weight_hh"}, x)
    with pytest.raises(TypeError, match="unknown \\['tolerance'\\]"):
        cell.apply(params, x, mode="parallel", tolerance=1e-3)
    # h0 as cell.apply takes it: its dtype (float32 beside float64 data) and shape are checked
    with pytest.raises(TypeError, match="h0: got dtype float32, expected float64"):
        newton_scan(cell, params, x, h0.astype(np.float32))
    with pytest.raises(ValueError, match="h0"):
        newton_scan(cell, params, x, h0[:1])


def test_default_tolerance_follows_the_dtype_however_it_is_named():
    """A NumPy dtype, a scalar type (np.float64, whose str is "<class ...>") or a name all pick
    the tolerance of their precision."""
    from seqcore.cells import GRU
    from seqcore.newton import DEFAULT_TOL, _resolve_options
    cell = GRU(2, 3)
    for dtype in (np.dtype("float64"), np.float64, "float64"):
        assert _resolve_options(cell, dtype, 10)["tol"] == DEFAULT_TOL["float64"]
    assert _resolve_options(cell, np.float32, 10)["tol"] == DEFAULT_TOL["float32"]


def test_default_tolerance_of_torch_dtypes():
    torch = pytest.importorskip("torch", reason="torch dtypes need torch (pip install 'seqcore[torch]')")
    from seqcore.cells import GRU
    from seqcore.newton import DEFAULT_TOL, _resolve_options
    cell = GRU(2, 3)
    assert _resolve_options(cell, torch.float64, 10)["tol"] == DEFAULT_TOL["float64"]
    assert _resolve_options(cell, torch.bfloat16, 10)["tol"] == DEFAULT_TOL["bfloat16"]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_an_empty_batch_runs_in_parallel_mode_as_in_sequential(backend):
    """B = 0 ended in NumPy's 'zero-size array to reduction operation maximum'."""
    if backend not in seqcore.backends.available():
        pytest.skip(f"{backend} backend cannot load")
    rng = np.random.default_rng(0)
    x = np.zeros((0, 5, 4), np.float32)
    with seqcore.use(backend):
        for make in (cells.GRU, cells.LSTM, cells.DiagGRU, cells.CIFGLSTM):
            cell = make(4, 8)
            p = cell.init(rng)
            hs, _ = cell.apply(p, x, mode="parallel")
            assert hs.shape == cell.apply(p, x)[0].shape == (0, 5, 8)
            _, info = seqcore.newton_scan(cell, p, x)
            assert info.converged
            g, gx = seqcore.vjp(lambda p, x: cell.apply(p, x, mode="parallel")[0].sum(), p, x)[1](np.ones((), np.float32))
            assert gx.shape == x.shape and all(not np.any(v) for v in g.values())


def test_a_float32_residual_just_above_the_threshold_is_not_converged(monkeypatch):
    """The history is float64: rounded to float32, r = tol·(1 + 1e-9) would equal tol and
    info.converged would say True for a trajectory the fallback produced."""
    import seqcore.newton as newton_module
    real = newton_module.newton_solve

    def barely_over(*args, **kwargs):
        states, history = real(*args, **kwargs)
        tol = history[-1][1]
        return states, history[:-1] + [(tol * (1 + 1e-9), tol)]
    monkeypatch.setattr(newton_module, "newton_solve", barely_over)
    cell = cells.make("diaggru", 3, 4)
    params = cell.init(np.random.default_rng(0), np.float32)
    x = np.random.default_rng(1).normal(size=(2, 16, 3)).astype(np.float32)
    with pytest.warns(NewtonConvergenceWarning):
        hs, info = newton_scan(cell, params, x)
    assert not info.converged and info.residuals[-1] > info.threshold
    assert np.array_equal(hs, cell.apply(params, x)[0])
