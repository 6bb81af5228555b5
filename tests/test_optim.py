"""Optimizers against torch.optim, building blocks against direct formulas, checkpoints."""
import contextlib
import math
import re

import numpy as np
import pytest

from primitive_cases import paired_leaves
from seqcore import optim, schedules
from seqcore.tree import tree_flatten, tree_leaves, tree_map, tree_unflatten

STEPS = 200


def leaf_pairs(*trees):
    """The array leaves of trees of one structure (None leaves in the same places: checked by
    :func:`paired_leaves`), side by side."""
    columns = [paired_leaves(tree, trees[0]) for tree in trees]
    return [tuple(col[i][1] for col in columns) for i in range(len(columns[0])) if columns[0][i][1] is not None]


@contextlib.contextmanager
def raises_exactly(error, message):
    """Exactly ``error`` (pytest.raises also takes a subclass) with exactly ``message``."""
    with pytest.raises(error) as info:
        yield info
    assert type(info.value) is error, f"{type(info.value).__name__} raised, expected {error.__name__}"
    assert str(info.value) == message


def test_leaf_pairs_refuses_trees_of_another_structure():
    a, b = np.ones(2), np.zeros(2)
    assert [(x is a, y is b) for x, y in leaf_pairs({"w": a, "b": None}, {"w": b, "b": None})] == [(True, True)]
    for other in ({"w": a, "b": a}, {"w": a}, {"b": None, "w": a}, {"w": a, "b": [None]}):
        with pytest.raises(AssertionError, match=r"^tree: got \(leaf, is None\)"):
            leaf_pairs({"w": a, "b": None}, other)


# ----------------------------------------------------------------------------- a random quadratic

def make_problem(seed=0, noise=0.5, steps=STEPS):
    """Parameter tree and gradient oracle of ``Σ_leaf ½ (p − c)ᵀ A (p − c)`` with A SPD per leaf;
    the gradient at step t gets fixed noise ``noise·n_t`` (a stochastic-gradient setting, which also
    keeps centered RMSprop's variance estimate away from zero)."""
    rng = np.random.default_rng(seed)
    shapes = {"weight": (4, 3), "head": {"bias": (5,)}, "cells": [(2, 2)]}

    def leaf_problem(shape):
        n = int(np.prod(shape))
        q = rng.normal(size=(n, n))
        return {"A": q @ q.T / n + 0.1 * np.eye(n), "c": rng.normal(size=n), "p0": rng.normal(size=shape),
                "noise": noise * rng.normal(size=(steps, n))}

    problem = tree_map(leaf_problem, shapes, is_leaf=lambda x: isinstance(x, tuple))
    params = tree_map(lambda lp: lp["p0"], problem, is_leaf=is_leaf_problem)
    return problem, params


def is_leaf_problem(x):
    return isinstance(x, dict) and "A" in x


def grad_numpy(problem, params, step):
    return tree_map(lambda lp, p: (lp["A"] @ (p.ravel() - lp["c"]) + lp["noise"][step]).reshape(p.shape),
                    problem, params, is_leaf=is_leaf_problem)


def run_ours(opt, problem, params, steps=STEPS):
    state = opt.init(params)
    for t in range(steps):
        updates, state = opt.update(grad_numpy(problem, params, t), state, params)
        params = optim.apply_updates(params, updates)
    return params, state


def run_torch(torch, make_opt, problem, params, steps=STEPS, lr_lambda=None):
    leaves = [torch.tensor(p, dtype=torch.float64) for p in tree_leaves(params)]
    problems = []
    tree_map(lambda lp: problems.append([torch.tensor(lp[k]) for k in ("A", "c", "noise")]), problem,
             is_leaf=is_leaf_problem)
    opt = make_opt(leaves)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda else None
    for t in range(steps):
        for p, (a, c, noise) in zip(leaves, problems, strict=True):
            p.grad = (a @ (p.detach().reshape(-1) - c) + noise[t]).reshape(p.shape)
        opt.step()
        if sched:
            sched.step()
    return tree_unflatten(tree_flatten(params)[1], [p.detach().numpy() for p in leaves])


TORCH_CASES = {
    "sgd_momentum": (lambda: optim.sgd(0.05, momentum=0.9),
                     lambda t, ps: t.optim.SGD(ps, lr=0.05, momentum=0.9, foreach=False)),
    "sgd_nesterov_wd": (lambda: optim.sgd(0.03, momentum=0.8, nesterov=True, weight_decay=0.01),
                        lambda t, ps: t.optim.SGD(ps, lr=0.03, momentum=0.8, nesterov=True,
                                                  weight_decay=0.01, foreach=False)),
    "sgd_plain": (lambda: optim.sgd(0.1), lambda t, ps: t.optim.SGD(ps, lr=0.1, foreach=False)),
    "adam": (lambda: optim.adam(0.02, b1=0.85, b2=0.99, eps=1e-6),
             lambda t, ps: t.optim.Adam(ps, lr=0.02, betas=(0.85, 0.99), eps=1e-6, foreach=False)),
    "adam_l2_amsgrad": (lambda: optim.adam(0.02, weight_decay=0.05, amsgrad=True),
                        lambda t, ps: t.optim.Adam(ps, lr=0.02, weight_decay=0.05, amsgrad=True, foreach=False)),
    "adamw": (lambda: optim.adamw(0.02, weight_decay=0.1),
              lambda t, ps: t.optim.AdamW(ps, lr=0.02, weight_decay=0.1, foreach=False)),
    "rmsprop": (lambda: optim.rmsprop(0.01),
                lambda t, ps: t.optim.RMSprop(ps, lr=0.01, foreach=False)),
    "rmsprop_centered_momentum_wd": (
        lambda: optim.rmsprop(0.005, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01),
        lambda t, ps: t.optim.RMSprop(ps, lr=0.005, alpha=0.9, momentum=0.5, centered=True,
                                      weight_decay=0.01, foreach=False)),
    "adagrad": (lambda: optim.adagrad(0.1, initial_accumulator_value=0.1, eps=1e-8),
                lambda t, ps: t.optim.Adagrad(ps, lr=0.1, initial_accumulator_value=0.1, eps=1e-8, foreach=False)),
    "adagrad_lr_decay_wd": (lambda: optim.adagrad(0.2, lr_decay=0.01, weight_decay=0.02),
                            lambda t, ps: t.optim.Adagrad(ps, lr=0.2, lr_decay=0.01, weight_decay=0.02,
                                                          foreach=False)),
}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_trajectory_matches_torch(case):
    torch = pytest.importorskip("torch")
    ours, theirs = TORCH_CASES[case]
    problem, params = make_problem(seed=len(case))
    final, _ = run_ours(ours(), problem, params)
    expected = run_torch(torch, lambda ps: theirs(torch, ps), problem, params)
    moved = max(np.abs(a - b).max() for a, b in leaf_pairs(final, params))
    assert moved > 0.1  # the optimizer really went somewhere
    for got, want in leaf_pairs(final, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_schedule_as_learning_rate_matches_torch_lambda_lr():
    torch = pytest.importorskip("torch")
    sched = schedules.warmup_cosine(0.05, warmup_steps=20, total_steps=STEPS, alpha=0.1)
    problem, params = make_problem(seed=3)
    final, state = run_ours(optim.adamw(sched, weight_decay=0.05), problem, params)
    expected = run_torch(torch, lambda ps: torch.optim.AdamW(ps, lr=1.0, weight_decay=0.05, foreach=False),
                         problem, params, lr_lambda=sched)
    for got, want in leaf_pairs(final, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert optim.step_count(state) == STEPS


def assert_torch_leaves_follow(torch, opt, problem, params, expected, steps=30):
    """``opt`` on torch tensors gives ``expected`` (its result on NumPy leaves), leaves staying tensors."""
    tparams = tree_map(torch.tensor, params)
    state = opt.init(tparams)
    for t in range(steps):
        grads = tree_map(torch.tensor, grad_numpy(problem, tree_map(lambda p: p.numpy(), tparams), t))
        updates, state = opt.update(grads, state, tparams)
        tparams = optim.apply_updates(tparams, updates)
    for got, want in leaf_pairs(tparams, expected):
        assert isinstance(got, torch.Tensor)
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)


def test_torch_tensors_as_leaves_match_numpy_leaves():
    torch = pytest.importorskip("torch")
    problem, params = make_problem(seed=5)
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.clip(0.3), optim.adamw(0.01, amsgrad=True))
    expected, _ = run_ours(opt, problem, params, steps=30)
    assert_torch_leaves_follow(torch, opt, problem, params, expected)


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_flatten_gives_the_trees_updates_bit_for_bit(case):
    """Element-wise optimizers on one vector: the same bits as leaf by leaf (and so as torch)."""
    problem, params = make_problem(seed=3)
    want, _ = run_ours(TORCH_CASES[case][0](), problem, params, steps=50)
    got, state = run_ours(optim.flatten(TORCH_CASES[case][0]()), problem, params, steps=50)
    for g, w in leaf_pairs(got, want):
        np.testing.assert_array_equal(g, w)
    assert optim.step_count(state) == 50 and all(np.ndim(x) == 1 for x in tree_leaves(state) if np.ndim(x))


def test_flatten_with_clipping_and_torch_leaves():
    torch = pytest.importorskip("torch")
    problem, params = make_problem(seed=6)
    make = lambda: optim.chain(optim.clip_by_global_norm(0.5), optim.adam(0.02))  # noqa: E731
    want, _ = run_ours(make(), problem, params, steps=30)
    got, _ = run_ours(optim.flatten(make()), problem, params, steps=30)
    for g, w in leaf_pairs(got, want):  # the norm sums in another order
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)
    assert_torch_leaves_follow(torch, optim.flatten(make()), problem, params, got)


def test_flatten_refuses_mixed_leaves_and_names_bad_gradients():
    opt = optim.flatten(optim.adam(0.1))
    with raises_exactly(TypeError, "params: got leaves of float64 and float32 (ndarray, ndarray), expected one dtype "
                                   "and backend (flatten puts them in one vector)"):
        opt.init({"a": np.zeros(2), "b": np.zeros(2, np.float32)})
    with raises_exactly(ValueError, "params: got a tree without leaves, expected parameter arrays"):
        opt.init({})
    with raises_exactly(TypeError, "inner: got function, expected a GradientTransformation"):
        optim.flatten(lambda g: g)
    params = {"a": np.zeros(2), "b": np.zeros(3)}
    state = opt.init(params)
    with raises_exactly(ValueError, "grads['b']: got shape (2,), expected (3,) like the parameter"):
        opt.update({"a": np.ones(2), "b": np.ones(2)}, state, params)


# ----------------------------------------------------------------------------- building blocks

def grads_tree(rng):
    return {"a": rng.normal(size=(3, 4)), "b": [rng.normal(size=5), rng.normal(size=(2,))]}


def test_clip_by_global_norm_formula():
    rng = np.random.default_rng(1)
    g = grads_tree(rng)
    norm = math.sqrt(sum(float((x ** 2).sum()) for x in tree_leaves(g)))
    assert optim.global_norm(g) == pytest.approx(norm, rel=1e-15)
    clipped, _ = optim.clip_by_global_norm(norm / 2).update(g, {})
    for got, x in leaf_pairs(clipped, g):
        np.testing.assert_allclose(got, x * 0.5, rtol=1e-14)
    assert optim.global_norm(clipped) == pytest.approx(norm / 2, rel=1e-14)
    untouched, _ = optim.clip_by_global_norm(norm * 2).update(g, {})
    for got, x in leaf_pairs(untouched, g):
        np.testing.assert_array_equal(got, x)


def test_clip_by_global_norm_of_huge_finite_gradients():
    # g·g overflowed (float32 from 1.8e19, float64 from 1.3e154): the norm was inf and the clip zeroed g
    g32 = {"w": np.array([3e19, -6e19], np.float32)}
    norm = math.hypot(*map(float, g32["w"]))  # in float64, from the float32 values
    assert optim.global_norm(g32) == pytest.approx(norm, rel=1e-6)
    clipped, _ = optim.clip_by_global_norm(1.0).update(g32, {})
    assert clipped["w"].dtype == np.float32
    np.testing.assert_allclose(clipped["w"], [1 / math.sqrt(5), -2 / math.sqrt(5)], rtol=1e-6)
    assert optim.global_norm({"a": np.array([1e155, 1e155])}) == pytest.approx(math.sqrt(2) * 1e155, rel=1e-15)
    g64 = {"a": np.array([3e200, 4e200]), "b": [np.array([-1.2e201]), np.zeros(0)]}
    assert optim.global_norm(g64) == pytest.approx(1.3e201, rel=1e-15)  # √(3² + 4² + 12²) = 13
    np.testing.assert_allclose(optim.clip_by_global_norm(1.0).update({"a": np.array([1e155, 1e155])}, {})[0]["a"],
                               [1 / math.sqrt(2)] * 2, rtol=1e-15)
    # the report's step: clipped to norm 1, then SGD with lr 0.1, flattened as the training loop does
    p = {"w": np.array([1.0, -2.0], np.float32)}
    opt = optim.flatten(optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1)))
    updates, _ = opt.update({"w": np.full(2, 3e19, np.float32)}, opt.init(p), p)
    np.testing.assert_allclose(optim.apply_updates(p, updates)["w"], [1 - 0.1 / math.sqrt(2), -2 - 0.1 / math.sqrt(2)],
                               rtol=1e-6)
    # beyond the float64 range, and NaN or inf leaves, the norm stays non-finite
    assert optim.global_norm([np.full(4, 1.7e308)]) == math.inf
    assert optim.global_norm([np.array([np.inf, 1.0]), np.array([1e200])]) == math.inf
    assert math.isnan(optim.global_norm([np.array([1e200]), np.array([np.nan])]))
    torch = pytest.importorskip("torch")
    assert optim.global_norm({"w": torch.tensor([3e19, -6e19])}) == pytest.approx(norm, rel=1e-6)


def test_clip_elementwise():
    g = {"x": np.array([-3.0, -0.5, 0.0, 0.2, 7.0])}
    out, _ = optim.clip(0.4).update(g, {})
    np.testing.assert_array_equal(out["x"], [-0.4, -0.4, 0.0, 0.2, 0.4])


def test_chain_clip_then_sgd_is_composition_of_formulas():
    rng = np.random.default_rng(2)
    g, p = grads_tree(rng), grads_tree(rng)
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.add_decayed_weights(0.1),
                      optim.scale_by_learning_rate(0.5))
    updates, state = opt.update(g, opt.init(p), p)
    factor = min(1.0, 1.0 / optim.global_norm(g))
    for u, gi, pi in leaf_pairs(updates, g, p):
        np.testing.assert_allclose(u, -0.5 * (gi * factor + 0.1 * pi), rtol=1e-14)
    assert state[2] == {"count": 1}


def test_scale_by_schedule_uses_count_from_zero():
    seen = []
    opt = optim.scale_by_schedule(lambda c: seen.append(c) or 2.0 ** c)
    state = opt.init({"x": np.ones(2)})
    for _ in range(3):
        out, state = opt.update({"x": np.ones(2)}, state)
    assert seen == [0, 1, 2] and state["count"] == 3
    np.testing.assert_array_equal(out["x"], [4.0, 4.0])


def test_add_decayed_weights_mask_skips_leaves():
    p = {"w": np.full(2, 2.0), "b": np.full(2, 3.0)}
    g = {"w": np.ones(2), "b": np.ones(2)}
    out, _ = optim.add_decayed_weights(0.5, mask=lambda ps: {"w": True, "b": False}).update(g, {}, p)
    np.testing.assert_array_equal(out["w"], [2.0, 2.0])
    np.testing.assert_array_equal(out["b"], [1.0, 1.0])


def test_add_decayed_weights_mask_of_another_structure_is_named():
    p = {"w": np.full(2, 2.0), "b": np.full(2, 3.0)}
    opt = optim.adamw(0.1, mask={"w": True})
    with raises_exactly(ValueError, "mask: tree structure mismatch: expected dict with keys ['b', 'w'], got dict with "
                                    "keys ['w'] (the structure of params)"):
        opt.update(p, opt.init(p), p)
    with raises_exactly(TypeError, "mask: got 'x' (str), expected a tree of True/False like params or a function "
                                   "params -> tree"):
        optim.adamw(0.1, mask="x")  # it failed only at the first update, naming no argument
    out, _ = optim.add_decayed_weights(0.5, mask={"w": False, "b": True}).update(
        {"w": np.ones(2), "b": np.ones(2)}, {}, p)
    np.testing.assert_array_equal(out["w"], [1.0, 1.0])
    np.testing.assert_array_equal(out["b"], [2.5, 2.5])
    # gradients of another structure than params are the gradients' fault, named by path
    for mask in (None, {"w": False, "b": True}):
        with raises_exactly(ValueError, "grads: got no leaf at 'b', expected one gradient per parameter "
                                        "(the paths of params: ['b', 'w']...)"):
            optim.add_decayed_weights(0.5, mask=mask).update({"w": np.ones(2)}, {}, p)


def test_centered_rmsprop_stays_finite_when_rounding_makes_the_variance_negative():
    # a constant gradient: s − a² = g²·α^t·(1 − α^t) → 0, and rounding makes it negative (step 3225
    # here, as in torch): its square root was NaN. Clamped at 0, the update there is g/eps.
    g, eps = {"x": np.array([0.1])}, 1e-8
    opt = optim.scale_by_rms(alpha=0.99, eps=eps, centered=True)
    state, negative = opt.init(g), []
    for t in range(3400):
        out, state = opt.update(g, state)
        d = float((state["square_avg"]["x"] - state["grad_avg"]["x"] ** 2)[0])
        want = 0.1 / (math.sqrt(max(d, 0.0)) + eps)
        assert float(out["x"][0]) == pytest.approx(want, rel=1e-15), t
        if d < 0:
            negative.append(t)
            assert float(out["x"][0]) == 0.1 / eps
    assert negative  # the rounding case was reached


def test_adam_first_step_is_sign_times_lr():
    # after one step m̂ = g and v̂ = g², so the update is −η·g/(|g| + eps); eps = 1e-300 vanishes
    # beside |g| (eps = 0 is refused: a zero gradient element would give 0/0)
    g = {"x": np.array([0.3, -2.0, 5.0])}
    opt = optim.adam(0.1, eps=1e-300)
    updates, _ = opt.update(g, opt.init(g), g)
    np.testing.assert_allclose(updates["x"], [-0.1, 0.1, -0.1], rtol=1e-15)


def test_float32_leaves_stay_float32_and_follow_the_float64_run():
    # the same float32-exact inputs in float64 are the oracle: only the rounding differs
    rng = np.random.default_rng(8)
    p32 = {"x": rng.normal(size=5).astype(np.float32), "layers": [{"w": rng.normal(size=(2, 3)).astype(np.float32)}]}
    grads32 = [tree_map(lambda x: rng.normal(size=x.shape).astype(np.float32), p32) for _ in range(8)]

    def run(params, grads):
        opt = optim.adamw(schedules.cosine(1e-2, 10), weight_decay=0.1)
        state = opt.init(params)
        for g in grads:
            updates, state = opt.update(g, state, params)
            params = optim.apply_updates(params, updates)
        return params, updates, state

    to64 = lambda tree: tree_map(lambda x: x.astype(np.float64) if isinstance(x, np.ndarray) else x, tree)  # noqa: E731
    got = run(p32, grads32)
    want = run(to64(p32), [to64(g) for g in grads32])
    for g, w in leaf_pairs(got, want):
        if isinstance(w, np.ndarray):
            assert g.dtype == np.float32
            np.testing.assert_allclose(g, w.astype(np.float32), rtol=1e-5, atol=1e-7)
        else:  # the step count
            assert g == w == 8


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("make", [
    lambda: optim.adamw(schedules.wsd(0.02, 100, warmup_steps=10, cooldown="sqrt"), amsgrad=True),
    lambda: optim.chain(optim.clip_by_global_norm(0.5), optim.sgd(0.05, momentum=0.9, nesterov=True)),
    lambda: optim.rmsprop(0.01, momentum=0.3, centered=True),
    lambda: optim.adagrad(schedules.linear_decay(0.1, 100), initial_accumulator_value=0.1),
])
def test_checkpoint_roundtrip_is_bit_identical(tmp_path, make):
    problem, params = make_problem(seed=7)

    def steps(opt, params, state, n):
        for _ in range(n):
            t = optim.step_count(state)
            updates, state = opt.update(grad_numpy(problem, params, t), state, params)
            params = optim.apply_updates(params, updates)
        return params, state

    opt = make()
    straight, straight_state = steps(opt, params, opt.init(params), 60)

    opt = make()
    mid_params, mid_state = steps(opt, params, opt.init(params), 25)
    path = tmp_path / "ckpt.npz"
    np.savez(path, **optim.state_to_arrays(mid_state), **{f"params/{i}": p for i, p in enumerate(tree_leaves(mid_params))})
    del mid_state
    opt = make()  # a fresh process would rebuild the optimizer from its config
    with np.load(path) as data:
        restored = optim.state_from_arrays(opt.init(params), data)
        leaves = [data[f"params/{i}"] for i in range(len(tree_leaves(params)))]
    restored_params = tree_unflatten(tree_flatten(params)[1], leaves)
    assert optim.step_count(restored) == 25 and isinstance(optim.step_count(restored), int)
    resumed, resumed_state = steps(opt, restored_params, restored, 35)
    for a, b in leaf_pairs(resumed, straight):
        np.testing.assert_array_equal(a, b)
    for a, b in leaf_pairs(resumed_state, straight_state):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_with_torch_leaves_roundtrips():
    torch = pytest.importorskip("torch", reason="torch leaves need torch (the 'torch' extra)")
    params = {"w": torch.arange(6, dtype=torch.float64).reshape(2, 3)}
    opt = optim.adam(0.1)
    state = opt.init(params)
    for _ in range(3):
        _, state = opt.update({"w": params["w"] * 0.5 + 1.0}, state, params)
    arrays = optim.state_to_arrays(state)
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    restored = optim.state_from_arrays(opt.init(params), arrays)
    assert restored[0]["count"] == 3 and isinstance(restored[0]["mu"]["w"], torch.Tensor)
    np.testing.assert_array_equal(restored[0]["nu"]["w"].numpy(), state[0]["nu"]["w"].numpy())


def test_state_from_arrays_reports_missing_and_wrong_shape():
    params = {"x": np.zeros(3)}
    opt = optim.adam(0.1)
    arrays = optim.state_to_arrays(opt.init(params))
    with raises_exactly(ValueError, "arrays: missing ['opt_state/0/nu/x'], expected every path of the template state "
                                    "under prefix 'opt_state/'"):
        optim.state_from_arrays(opt.init(params), {k: v for k, v in arrays.items() if "nu" not in k})
    arrays["opt_state/0/mu/x"] = np.zeros(4)
    with raises_exactly(ValueError, "arrays['opt_state/0/mu/x']: got shape (4,), expected (3,)"):
        optim.state_from_arrays(opt.init(params), arrays)


# ----------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("build, message", [
    (lambda: optim.sgd(-0.1), "learning_rate: got -0.1, expected >= 0.0"),
    (lambda: optim.adam(-1e-3), "learning_rate: got -0.001, expected >= 0.0"),
    (lambda: optim.sgd(0.1, momentum=1.0), "momentum: got 1.0, expected < 1.0"),
    (lambda: optim.sgd(0.1, nesterov=True), "nesterov: got True with momentum=0.0, expected momentum > 0"),
    (lambda: optim.sgd(0.1, weight_decay=-1.0), "weight_decay: got -1.0, expected >= 0.0"),
    (lambda: optim.adam(1e-3, b1=1.0), "b1: got 1.0, expected < 1.0"),
    (lambda: optim.adam(1e-3, b2=-0.1), "b2: got -0.1, expected >= 0.0"),
    (lambda: optim.adam(1e-3, eps=-1.0), "eps: got -1.0, expected > 0.0"),
    (lambda: optim.adamw(1e-3, weight_decay=-0.1), "weight_decay: got -0.1, expected >= 0.0"),
    (lambda: optim.rmsprop(1e-3, alpha=1.5), "alpha: got 1.5, expected < 1.0"),
    (lambda: optim.adagrad(1e-3, initial_accumulator_value=-1.0),
     "initial_accumulator_value: got -1.0, expected >= 0.0"),
    (lambda: optim.adagrad(1e-3, lr_decay=-1.0), "lr_decay: got -1.0, expected >= 0.0"),
    (lambda: optim.clip_by_global_norm(0.0), "max_norm: got 0.0, expected > 0"),
    (lambda: optim.clip(-1.0), "max_delta: got -1.0, expected >= 0.0"),
])
def test_bad_arguments_name_the_field(build, message):
    with raises_exactly(ValueError, message):
        build()


@pytest.mark.parametrize("make", [optim.sgd, optim.adam, optim.adamw, optim.rmsprop, optim.adagrad])
def test_weight_decay_must_be_a_real_number(make):
    # a falsy None, False, [] or 0j passed as "no decay" (True was refused, and adamw refused them all)
    for value in (None, False, [], 0j):
        with pytest.raises(TypeError, match="^" + re.escape(f"weight_decay: got {value!r} ({type(value).__name__}), "
                                                            "expected a real number") + "$"):
            make(0.1, weight_decay=value)
    p = {"x": np.array([2.0])}
    for zero in (0, 0.0, np.float64(0.0)):
        opt = make(0.1, weight_decay=zero)
        updates, _ = opt.update({"x": np.array([0.0])}, opt.init(p), p)
        np.testing.assert_array_equal(updates["x"], [0.0])  # no gradient, no decay: no step


@pytest.mark.parametrize("make", [optim.sgd, optim.adam, optim.adamw, optim.rmsprop, optim.adagrad,
                                  lambda lr: optim.adagrad(lr, lr_decay=0.5)])
def test_a_schedule_giving_a_non_number_is_named_by_every_optimizer(make):
    # adagrad divided the value by its decay first: "unsupported operand type(s) for /"
    p = {"x": np.ones(2)}
    for value, error, message in ((None, TypeError, "schedule gave None (NoneType) at step 0, expected a real number"),
                                  (math.nan, ValueError, "schedule gave nan at step 0, expected a finite number")):
        opt = make(lambda count, value=value: value)
        with pytest.raises(error, match="^" + re.escape("learning_rate: " + message) + "$"):
            opt.update(p, opt.init(p), p)


def test_flip_sign_is_a_bool():
    with pytest.raises(TypeError, match=r"^flip_sign: got 'no', expected True or False$"):  # was read as True
        optim.scale_by_learning_rate(0.1, flip_sign="no")
    g = {"x": np.ones(2)}
    for flip, sign in ((True, -1.0), (False, 1.0), (np.bool_(False), 1.0)):
        opt = optim.scale_by_learning_rate(0.5, flip_sign=flip)
        np.testing.assert_array_equal(opt.update(g, opt.init(g))[0]["x"], [0.5 * sign] * 2)


def test_bad_types_and_missing_params():
    with raises_exactly(TypeError, "learning_rate: got 'fast' (str), expected a real number"):
        optim.sgd("fast")
    with raises_exactly(TypeError, "transforms[1]: got str, expected a GradientTransformation"):
        optim.chain(optim.scale(1.0), "adam")
    opt = optim.adamw(0.1)
    p = {"x": np.ones(2)}
    with raises_exactly(ValueError, "params: got None, expected the parameter tree (add_decayed_weights needs it)"):
        opt.update(p, opt.init(p))
    bad = optim.sgd(lambda step: -0.5)
    with raises_exactly(ValueError, "learning_rate: schedule gave -0.5 at step 0, expected >= 0"):
        bad.update(p, bad.init(p), p)
    # another optimizer's state (it was a bare KeyError), or no state at all
    with raises_exactly(ValueError, "state: got a state with keys ['count', 'momentum_buffer'], missing 'mu'; expected "
                                    "the state this optimizer's init returns"):
        optim.adam(0.1).update(p, optim.sgd(0.1, momentum=0.9).init(p), p)
    with raises_exactly(ValueError, "state: got int, expected a tuple of 2 states from chain(...).init"):
        optim.chain(optim.clip(1.0), optim.adam(0.1)).update(p, 5, p)
    with raises_exactly(ValueError, "state: got a tuple of 1 states, expected a tuple of 2 states from "
                                    "chain(...).init"):
        optim.chain(optim.clip(1.0), optim.adam(0.1)).update(p, ({},), p)
    # a decay mask of non-bools ("no" is truthy) is refused
    masked = optim.adamw(0.1, mask={"x": "no"})
    with raises_exactly(TypeError, "mask: got a leaf 'no' (str), expected True or False per parameter"):
        masked.update(p, masked.init(p), p)
    # a tree that does not fit names its argument
    adam = optim.adam(0.1)
    two = {"x": np.ones(2), "y": np.ones(3)}
    missing_y = "grads: got no leaf at 'y', expected one gradient per parameter (the paths of params: ['x', 'y']...)"
    with raises_exactly(ValueError, missing_y):
        adam.update({"x": np.ones(2)}, adam.init(two), two)
    # without params, against the state (which holds every parameter's path and shape)
    with raises_exactly(ValueError, missing_y):
        adam.update({"x": np.ones(2)}, adam.init(two))
    with raises_exactly(ValueError, "updates: tree structure mismatch: expected dict with keys ['x', 'y'], got dict "
                                    "with keys ['x'] (the structure of params)"):
        optim.apply_updates(two, {"x": np.ones(2)})
    # (last: it needs torch) gradients of another backend than their parameters (NumPy for torch) are named
    torch = pytest.importorskip("torch", reason="a second backend is needed for the mixed-backend check")
    adam_t = optim.adam(1e-3)
    tp = {"w": torch.zeros(3)}
    with raises_exactly(TypeError, "grads['w']: got a numpy ndarray, expected a torch array like the parameter "
                                   "(one backend)"):
        adam_t.update({"w": np.ones(3)}, adam_t.init(tp), tp)


FREEZE = ("to freeze a parameter, leave it out of the params the optimizer updates, or pass a zero gradient under "
          "plain SGD")


@pytest.mark.parametrize("make", [lambda: optim.sgd(0.1, momentum=0.9), lambda: optim.adam(1e-3),
                                  lambda: optim.rmsprop(1e-2), lambda: optim.adagrad(1e-2)])
def test_gradients_of_the_wrong_shape_or_path_are_named(make):
    opt = make()
    params = {"w": np.ones((3, 2)), "b": np.zeros(2)}
    state = opt.init(params)
    # a (1,)-shaped gradient would otherwise broadcast silently into the moments
    with raises_exactly(ValueError, "grads['w']: got shape (1,), expected (3, 2) like the parameter"):
        opt.update({"w": np.ones(1), "b": np.zeros(2)}, state, params)
    with raises_exactly(ValueError, "grads: got a leaf at 'c', expected the paths of params (['b', 'w']...)"):
        opt.update({"w": np.ones((3, 2)), "c": np.zeros(2)}, state, params)
    # a None gradient would otherwise fail as "None - float" deep inside a moment update
    with raises_exactly(ValueError, f"grads['b']: got None, expected an array shaped like the parameter ({FREEZE})"):
        opt.update({"w": np.ones((3, 2)), "b": None}, state, params)
    with raises_exactly(ValueError, "grads['b']: got None, expected an array shaped like the parameter (a None "
                                    f"gradient goes where the parameter is None: pass params to update; {FREEZE})"):
        opt.update({"w": np.ones((3, 2)), "b": None}, state)  # without params too
    # without params, against the shapes the state holds: (4, 2) used to broadcast the moments to (4, 2)
    with raises_exactly(ValueError, "grads['b']: got shape (4, 2), expected (2,) like the parameter"):
        opt.update({"w": np.ones((3, 2)), "b": np.ones((4, 2))}, state)
    updates, _ = opt.update({"w": np.ones((3, 2)), "b": np.ones(2)}, state)  # the right shapes still pass
    assert updates["b"].shape == (2,)


# ----------------------------------------------------------------------------- damaged checkpoints

STEP = "expected a step count (an integer >= 0)"

def _adam_arrays():
    params = {"x": np.zeros(3), "y": np.ones((2, 2), np.float32)}
    opt = optim.adam(0.1)
    state = opt.init(params)
    _, state = opt.update({"x": np.ones(3), "y": np.ones((2, 2), np.float32)}, state, params)
    return opt, params, optim.state_to_arrays(state)


BEYOND_FLOAT32 = "in magnitude, beyond the range of float32, expected a finite optimizer state in the template's dtype"


@pytest.mark.parametrize("key, value, error, message", [
    ("opt_state/0/count", np.array(2.7), ValueError, f"arrays['opt_state/0/count']: got array(2.7), {STEP}"),
    ("opt_state/0/count", np.array(-3), ValueError, f"arrays['opt_state/0/count']: got array(-3), {STEP}"),
    ("opt_state/0/count", np.array(True), ValueError, f"arrays['opt_state/0/count']: got array(True), {STEP}"),
    ("opt_state/0/count", np.array("x"), ValueError,
     f"arrays['opt_state/0/count']: got array('x', dtype='<U1'), {STEP}"),
    ("opt_state/0/mu/x", np.array(["a", "b", "c"]), TypeError,
     "arrays['opt_state/0/mu/x']: got dtype <U1, expected a floating-point array"),
    ("opt_state/0/mu/x", np.array([1 + 1j, 2, 3]), TypeError,
     "arrays['opt_state/0/mu/x']: got dtype complex128, expected a floating-point array"),
    ("opt_state/0/mu/x", np.array([1, 2, 3]), TypeError,
     "arrays['opt_state/0/mu/x']: got dtype int64, expected a floating-point array"),
    ("opt_state/0/nu/y", np.full((2, 2), np.nan), ValueError,
     "arrays['opt_state/0/nu/y']: got non-finite values (NaN or inf), expected a finite optimizer state"),
    ("opt_state/0/nu/y", np.full((2, 2), -1.0), ValueError,
     "arrays['opt_state/0/nu/y']: got a minimum of -1.0, expected a sum of squares >= 0"),
    # finite as saved (float64), inf in the float32 template: the check holds after the cast
    ("opt_state/0/nu/y", np.array([[1e39, 0.0], [0.0, 0.0]]), ValueError,
     f"arrays['opt_state/0/nu/y']: got values up to 1e+39 {BEYOND_FLOAT32}"),
    ("opt_state/0/mu/y", np.full((2, 2), -1e300), ValueError,
     f"arrays['opt_state/0/mu/y']: got values up to 1e+300 {BEYOND_FLOAT32}"),
    ("opt_state/0/mu/z", np.zeros(3), ValueError,
     "arrays: got paths the template state does not have ['opt_state/0/mu/z'], expected only the template's paths "
     "under prefix 'opt_state/' (a checkpoint of another optimizer or another configuration?)"),
    ("opt_state/1/count", np.array(5), ValueError,
     "arrays: got step counts {'opt_state/0/count': 1, 'opt_state/1/count': 5}, expected one count in every part of "
     "the state (a checkpoint assembled from different runs?)"),
])
def test_state_from_arrays_refuses_damaged_leaves(key, value, error, message):
    opt, params, arrays = _adam_arrays()
    arrays[key] = value
    with raises_exactly(error, message):
        optim.state_from_arrays(opt.init(params), arrays)


def test_state_from_arrays_accepts_parameters_named_like_square_slots():
    # Adam's mu for a parameter called "sum" was required to be >= 0, as if it were Adagrad's sum
    params = {"sum": np.array([1.0, 2.0]), "nu": np.array([0.5]), "square_avg": np.array([0.5]),
              "nu_max": np.array([0.5])}
    grads = {"sum": np.array([1.0, -1.0]), "nu": np.array([-1.0]), "square_avg": np.array([-1.0]),
             "nu_max": np.array([-1.0])}
    for opt in (optim.adam(0.1, amsgrad=True), optim.sgd(0.1, momentum=0.9), optim.rmsprop(0.1, centered=True)):
        _, state = opt.update(grads, opt.init(params), params)
        restored = optim.state_from_arrays(opt.init(params), optim.state_to_arrays(state))
        for got, want in leaf_pairs(restored, state):
            np.testing.assert_array_equal(got, want)
    # the slots themselves are still checked, under any parameter name
    opt = optim.adam(0.1)
    arrays = optim.state_to_arrays(opt.init(params))
    arrays["opt_state/0/nu/sum"] = np.array([-1.0, 0.0])
    with raises_exactly(ValueError, "arrays['opt_state/0/nu/sum']: got a minimum of -1.0, expected a sum of "
                                    "squares >= 0"):
        optim.state_from_arrays(opt.init(params), arrays)


def test_state_from_arrays_refuses_another_optimizers_checkpoint():
    params = {"x": np.zeros(3)}
    amsgrad = optim.state_to_arrays(optim.adam(0.1, amsgrad=True).init(params))
    # nu_max used to be dropped silently
    with raises_exactly(ValueError, "arrays: got paths the template state does not have ['opt_state/0/nu_max/x'], "
                                    "expected only the template's paths under prefix 'opt_state/' (a checkpoint of "
                                    "another optimizer or another configuration?)"):
        optim.state_from_arrays(optim.adam(0.1).init(params), amsgrad)
    with raises_exactly(ValueError, "arrays: missing ['opt_state/0/momentum_buffer/x'], expected every path of the "
                                    "template state under prefix 'opt_state/'"):
        optim.state_from_arrays(optim.sgd(0.1, momentum=0.9).init(params), amsgrad)


def test_state_to_and_from_arrays_refuse_wrong_structures():
    opt, params, arrays = _adam_arrays()
    with raises_exactly(TypeError, "arrays: got NoneType, expected a dict of arrays or an np.load result"):
        optim.state_from_arrays(opt.init(params), None)
    with raises_exactly(TypeError, "arrays: got list, expected a dict of arrays or an np.load result"):
        optim.state_from_arrays(opt.init(params), list(arrays.values()))
    with raises_exactly(TypeError, "prefix: got int, expected str"):
        optim.state_from_arrays(opt.init(params), arrays, prefix=3)
    with raises_exactly(TypeError, "template_state: got NoneType, expected an optimizer state (e.g. opt.init(params))"):
        optim.state_from_arrays(None, arrays)
    with raises_exactly(TypeError, "state: got int, expected an optimizer state (a dict or tuple from an optimizer's "
                                   "init/update)"):
        optim.state_to_arrays(5)
    slot = "expected an array or an int step count (a state from an optimizer's init/update)"
    with raises_exactly(TypeError, f"state['a']: got str, {slot}"):
        optim.state_to_arrays({"a": "text"})
    with raises_exactly(TypeError, f"state['a']: got object, {slot}"):
        optim.state_to_arrays({"a": object()})


def test_state_from_arrays_keeps_torch_template_dtype():
    torch = pytest.importorskip("torch")
    from seqcore import backends
    try:
        backends.get("torch")
    except backends.BackendUnavailable:
        pytest.skip("torch backend cannot load")
    params = {"w": torch.zeros(2, 3, dtype=torch.float32)}
    opt = optim.adam(0.1)
    arrays = optim.state_to_arrays(opt.init({"w": np.zeros((2, 3))}))  # float64 moments
    restored = optim.state_from_arrays(opt.init(params), arrays)
    assert restored[0]["mu"]["w"].dtype == torch.float32  # was float64: the update then promoted the params
    arrays["opt_state/0/nu/w"] = np.full((2, 3), 1e39)  # finite in the file, inf as float32
    with raises_exactly(ValueError, f"arrays['opt_state/0/nu/w']: got values up to 1e+39 {BEYOND_FLOAT32}"):
        optim.state_from_arrays(opt.init(params), arrays)


def test_apply_updates_refuses_another_dtype_and_keeps_torch_leaves_working():
    """An update of another dtype used to promote its parameter (float32 params became float64)."""
    params = {"w": np.zeros(3, np.float32)}
    for bad in (np.ones(3), np.ones(3, np.int64)):
        with raises_exactly(TypeError, f"updates['w']: got dtype {bad.dtype}, expected float32 like the parameter"):
            optim.apply_updates(params, {"w": bad})
    torch = pytest.importorskip("torch", reason="torch leaves")
    tp = {"w": torch.zeros(3)}
    new = optim.apply_updates(tp, {"w": torch.ones(3)})
    assert new["w"].dtype == torch.float32 and new["w"].tolist() == [1.0] * 3
    with raises_exactly(TypeError, "updates['w']: got dtype torch.float64, expected torch.float32 like the parameter"):
        optim.apply_updates(tp, {"w": torch.ones(3, dtype=torch.float64)})
    with raises_exactly(TypeError, "updates['w']: got a numpy ndarray, expected a torch array of dtype torch.float32 "
                                   "like the parameter (one backend)"):
        optim.apply_updates(tp, {"w": np.ones(3, np.float32)})


REQUIRES_GRAD = ("got a torch.Tensor that requires grad, expected a detached tensor (pass x.detach(), or update under "
                 "torch.no_grad() as torch.optim does): torch would record the optimizer's arithmetic, one more step "
                 "in its graph each update")


@pytest.mark.parametrize("make", [lambda: optim.adam(0.1), lambda: optim.sgd(0.1),
                                  lambda: optim.sgd(0.1, momentum=0.9, weight_decay=0.01),
                                  lambda: optim.flatten(optim.adam(0.1))])
def test_tensors_that_require_grad_are_refused_by_path(make):
    """nn.Parameters (or gradients taken with create_graph) used to be accepted: torch recorded every
    optimizer step, chaining one graph through all of them (memory without bound)."""
    torch = pytest.importorskip("torch", reason="tensors that require grad are torch's")
    opt = make()
    tree = lambda requires_grad=False: {"b": torch.ones(2, dtype=torch.float64),  # noqa: E731
                                        "cells": [{"w": torch.full((3,), 2.0, dtype=torch.float64,
                                                                   requires_grad=requires_grad)}]}
    with raises_exactly(TypeError, "params['cells/0/w']: " + REQUIRES_GRAD):
        opt.init(tree(True))
    params, state = tree(), opt.init(tree())
    with raises_exactly(TypeError, "grads['cells/0/w']: " + REQUIRES_GRAD):
        opt.update(tree(True), state, params)
    with raises_exactly(TypeError, "grads['cells/0/w']: " + REQUIRES_GRAD):
        opt.update(tree(True), state)  # without params: checked against the state
    with raises_exactly(TypeError, "params['cells/0/w']: " + REQUIRES_GRAD):
        opt.update(tree(), state, tree(True))
    with raises_exactly(TypeError, "params['cells/0/w']: " + REQUIRES_GRAD):
        optim.apply_updates(tree(True), tree())
    with raises_exactly(TypeError, "updates['cells/0/w']: " + REQUIRES_GRAD):
        optim.apply_updates(tree(), tree(True))
    # detached, as before: the same step as on NumPy leaves, carrying no graph
    updates, _ = opt.update(tree(), state, params)
    new = optim.apply_updates(params, updates)
    np_params = tree_map(lambda x: x.numpy(), params)
    np_updates, _ = opt.update(np_params, opt.init(np_params), np_params)
    for got, want in leaf_pairs(new, optim.apply_updates(np_params, np_updates)):
        assert isinstance(got, torch.Tensor) and not got.requires_grad
        np.testing.assert_array_equal(got.numpy(), want)


def test_requires_grad_is_refused_by_global_norm_and_accepted_under_no_grad():
    torch = pytest.importorskip("torch", reason="tensors that require grad are torch's")
    w = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    with raises_exactly(TypeError, "tree['w']: " + REQUIRES_GRAD):
        optim.global_norm({"w": w})
    with raises_exactly(TypeError, "grads: " + REQUIRES_GRAD):  # a single leaf has no path
        optim.clip_by_global_norm(1.0).update(w, {})
    # a building block's init refuses it too (the state would carry the graph)
    with raises_exactly(TypeError, "params['w']: " + REQUIRES_GRAD):
        optim.scale_by_adam().init({"w": w})
    # under no_grad torch records nothing (torch.optim steps there): one SGD step by hand, p − η·g
    with torch.no_grad():
        assert optim.global_norm({"w": w}) == 5.0
        opt = optim.sgd(0.5)
        params = {"w": torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))}
        updates, _ = opt.update({"w": w}, opt.init(params), params)
        new = optim.apply_updates(params, updates)
    assert new["w"].tolist() == [1.0 - 0.5 * 3.0, -2.0 - 0.5 * 4.0] and new["w"].grad_fn is None


# ----------------------------------------------------------------------------- eps and schedule signatures

EPS_OPTIMIZERS = [
    ("adam", lambda eps: optim.adam(0.1, eps=eps)),
    ("adamw", lambda eps: optim.adamw(0.1, eps=eps, weight_decay=0.0)),
    ("rmsprop", lambda eps: optim.rmsprop(0.1, eps=eps)),
    ("rmsprop centered", lambda eps: optim.rmsprop(0.1, eps=eps, centered=True)),
    ("adagrad", lambda eps: optim.adagrad(0.1, eps=eps)),
]


@pytest.mark.parametrize("name, make", EPS_OPTIMIZERS)
def test_eps_zero_is_refused_and_a_zero_gradient_element_gives_no_step(name, make):
    # with eps = 0, g / (√s + eps) was 0/0 = NaN for an exactly zero gradient element
    with pytest.raises(ValueError, match=r"^eps: got 0.0, expected > 0.0$"):
        make(0.0)
    params = {"w": np.ones(3, np.float32)}
    opt = make(1e-8)
    updates, _ = opt.update({"w": np.array([0.5, 0.0, 0.0], np.float32)}, opt.init(params), params)
    # first step: m̂ = g, v̂ = g² (Adam), s = (1−α)g² (RMSprop), s = g² (Adagrad): the nonzero
    # element moves by −η·g/(√s + eps) and the zero ones stay put
    s = {"rmsprop": 0.01 * 0.25, "rmsprop centered": 0.01 * 0.25 - (0.01 * 0.5) ** 2}.get(name, 0.25)
    np.testing.assert_allclose(updates["w"], [-0.1 * 0.5 / (math.sqrt(s) + 1e-8), 0.0, 0.0], rtol=1e-6)
    assert updates["w"][1] == 0.0 and updates["w"][2] == 0.0


@pytest.mark.parametrize("name, make", EPS_OPTIMIZERS)
def test_eps_that_is_zero_in_the_parameters_dtype_is_refused_at_init(name, make):
    # 1e-50 > 0 passes the constructor, but is 0 once added to float32 moments: 0/0 = NaN again
    opt = make(1e-50)
    with pytest.raises(ValueError, match="^" + re.escape(
            "eps: got 1e-50, which is 0 in float32 (the dtype of params['layer/w']), expected an eps > 0 in the "
            "parameters' dtype (at least 1.401298464324817e-45)") + "$"):
        opt.init({"layer": {"w": np.ones(2, np.float32)}})
    with raises_exactly(ValueError, "eps: got 1e-50, which is 0 in float32 (the dtype of params), expected an eps > 0 "
                                    "in the parameters' dtype (at least 1.401298464324817e-45)"):
        optim.flatten(opt).init({"w": np.ones(2, np.float32)})
    p64 = {"w": np.ones(2)}  # in float64, 1e-50 stays > 0: a zero gradient element gives no step
    updates, _ = opt.update({"w": np.array([0.0, 0.5])}, opt.init(p64), p64)
    assert updates["w"][0] == 0.0 and np.isfinite(updates["w"]).all()


@pytest.mark.parametrize("make", [optim.sgd, optim.adam, optim.adamw, optim.rmsprop, optim.adagrad])
def test_a_learning_rate_schedule_that_does_not_take_the_step_is_named(make):
    # it failed at the first update with "<lambda>() takes 0 positional arguments but 1 was given"
    with pytest.raises(TypeError, match="^" + re.escape(
            "learning_rate: got a callable <lambda>() that does not take the step (too many positional arguments), "
            "expected a schedule step -> float") + "$"):
        make(lambda: 0.1)
    with raises_exactly(TypeError, "learning_rate: got a callable <lambda>(t, scale) that does not take the step "
                                   "(missing a required argument: 'scale'), expected a schedule step -> float"):
        make(lambda t, scale: 0.1 * scale)
    with raises_exactly(TypeError, "schedule: got a callable <lambda>() that does not take the step (too many "
                                   "positional arguments), expected a schedule step -> float"):
        optim.scale_by_schedule(lambda: 1.0)
    # one step argument plus defaults is a schedule: η = 0.05·2 from the default
    opt = optim.sgd(lambda t, scale=2.0: 0.05 * scale)
    p = {"x": np.array([3.0])}
    updates, _ = opt.update({"x": np.array([1.5])}, opt.init(p), p)
    np.testing.assert_allclose(updates["x"], [-0.1 * 1.5], rtol=1e-15)


@pytest.mark.parametrize("dtype,value", [(np.float32, 1e-25), (np.float32, 1e-44), (np.float32, 3e-23),
                                         (np.float64, 1e-200), (np.float64, 1e-315)])
def test_global_norm_of_gradients_whose_squares_all_underflow(dtype, value):
    """Every square underflows to 0 (it returned 0, and a recorded norm of 0 made `refined` refuse the
    run's history); the norm is taken again scaled by a power of two."""
    g = {"a": np.full(10, value, dtype), "b": np.full(3, value / 4, dtype)}
    top = float(g["a"][0])
    want = top * math.sqrt(sum(float(((v.astype(np.float64) / top) ** 2).sum()) for v in g.values()))
    assert optim.global_norm(g) == pytest.approx(want, rel=1e-6)
    assert optim.global_norm({"a": np.zeros(3, dtype)}) == 0.0


def test_global_norm_of_float32_gradients_whose_squares_are_subnormal():
    """Squares of 3e-23 are float32 subnormals (a norm 25 % off), and beside one of them many of 1e-24
    vanish (a norm 8.5 times too small): the sum is taken again rescaled below 1e-30."""
    g = {"big": np.array([3e-23], np.float32), "many": np.full(10**5, 1e-24, np.float32)}
    want = math.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in g.values()))
    assert optim.global_norm(g) == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------------- gradients unlike their parameters

FLAT_CASES = {"sgd+wd": lambda: optim.sgd(0.1, momentum=0.9, weight_decay=0.5),
              "adam+wd": lambda: optim.adam(0.1, weight_decay=0.5)}


@pytest.mark.parametrize("case", sorted(FLAT_CASES))
def test_flatten_takes_gradients_in_the_params_key_order(case):
    """grads with the params' keys in another order: flatten raveled each tree in its own order, so
    the decay λ·p of 'a' went to 'b' and the moments mixed. The plain optimizer is the oracle."""
    params = {"a": np.array([1.0, -2.0]), "b": np.array([3.0, 0.5, -1.0])}
    plain, flat = FLAT_CASES[case](), optim.flatten(FLAT_CASES[case]())
    want, got, plain_state, flat_state = params, params, plain.init(params), flat.init(params)
    for step in range(3):
        grads = {"b": want["b"] * 0.3 + step, "a": want["a"] - 1.0}  # keys reversed
        updates, plain_state = plain.update(grads, plain_state, want)
        want = optim.apply_updates(want, updates)
        grads = {"b": got["b"] * 0.3 + step, "a": got["a"] - 1.0}
        updates, flat_state = flat.update(grads, flat_state, got)
        assert list(updates) == ["a", "b"]  # the params' order
        got = optim.apply_updates(got, updates)
    for k in params:
        np.testing.assert_array_equal(got[k], want[k])


def test_flatten_without_params_takes_gradients_in_the_order_init_saw():
    params = {"a": np.array([1.0, -2.0]), "b": np.array([3.0, 0.5, -1.0])}
    grads = {"b": np.array([0.1, 0.2, 0.3]), "a": np.array([-1.0, 4.0])}
    want, _ = optim.adam(0.1).update(grads, optim.adam(0.1).init(params))
    flat = optim.flatten(optim.adam(0.1))
    got, _ = flat.update(grads, flat.init(params))
    assert list(got) == ["a", "b"]
    for k in params:
        np.testing.assert_array_equal(got[k], want[k])
    # an init that saw the keys in two orders cannot tell which one a third order means
    three = {"a": np.ones(1), "b": np.ones(1), "c": np.ones(1)}
    flat.init(three)
    flat.init({k: three[k] for k in "cba"})
    shuffled = {k: np.ones(1) for k in "bac"}
    with raises_exactly(ValueError, "grads: got dict keys in another order than the params init saw, which held "
                                    "them in several orders; expected params passed to update (to take the gradients "
                                    "in their order)"):
        flat.update(shuffled, flat.init(three))
    updates, _ = flat.update(shuffled, flat.init(three), three)  # with params, their order
    assert list(updates) == ["a", "b", "c"]


NONE_CASES = {"sgd": lambda: optim.sgd(0.1), "adam": lambda: optim.adam(0.1),
              "momentum": lambda: optim.sgd(0.1, momentum=0.9, weight_decay=0.1),
              "clip+sgd": lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1)),
              "flatten(adam)": lambda: optim.flatten(optim.adam(0.1))}


@pytest.mark.parametrize("case", sorted(NONE_CASES))
def test_a_none_parameter_takes_a_none_gradient(case):
    """None marks an empty subtree: init accepted it and value_and_grad gives None there, but every
    update refused the None gradient. The oracle: the same tree without that entry."""
    import seqcore
    params = {"w": np.array([1.0, 2.0, -1.0]), "layers": [{"weight": np.array([0.5, 1.0, 3.0]), "bias": None}]}
    _, grads = seqcore.value_and_grad(lambda p: (p["w"] * p["layers"][0]["weight"]).sum())(params)
    assert grads["layers"][0]["bias"] is None
    opt, oracle = NONE_CASES[case](), NONE_CASES[case]()
    bare = {"w": params["w"], "layers": [{"weight": params["layers"][0]["weight"]}]}
    bare_grads = {"w": grads["w"], "layers": [{"weight": grads["layers"][0]["weight"]}]}
    want, _ = oracle.update(bare_grads, oracle.init(bare), bare)
    got, state = opt.update(grads, opt.init(params), params)
    assert got["layers"][0]["bias"] is None
    np.testing.assert_array_equal(got["w"], want["w"])
    np.testing.assert_array_equal(got["layers"][0]["weight"], want["layers"][0]["weight"])
    assert optim.apply_updates(params, got)["layers"][0]["bias"] is None
    # a None gradient for an array parameter, or an array for a None one, is still refused
    with raises_exactly(ValueError, f"grads['w']: got None, expected an array shaped like the parameter ({FREEZE})"):
        opt.update({**grads, "w": None}, state, params)
    with pytest.raises(ValueError, match=r"^grads\['layers/0/bias'\]: got a leaf of type ndarray, expected None "
                                         r"like the parameter \(an empty subtree\)"):
        opt.update({**grads, "layers": [{"weight": grads["w"], "bias": np.ones(3)}]}, state, params)


def test_a_none_gradient_without_params_is_matched_with_the_state():
    params = {"w": np.array([1.0, 2.0]), "b": None}
    grads = {"w": np.array([0.5, -1.0]), "b": None}
    for make in (lambda: optim.adam(0.1), lambda: optim.flatten(optim.adam(0.1)), optim.scale_by_adam):
        opt, oracle = make(), make()
        want, _ = oracle.update({"w": grads["w"]}, oracle.init({"w": params["w"]}))
        got, _ = opt.update(grads, opt.init(params))  # the moments (or the structure init saw) are None there
        np.testing.assert_array_equal(got["w"], want["w"])
        assert got["b"] is None
    # without moments and without params, nothing tells where the parameter is None
    with raises_exactly(ValueError, "grads['b']: got None, expected an array shaped like the parameter (a None "
                                    f"gradient goes where the parameter is None: pass params to update; {FREEZE})"):
        optim.sgd(0.1).update(grads, optim.sgd(0.1).init(params))


def test_complex_parameters_and_gradients_are_refused_by_path():
    """Complex leaves were accepted: Adam moved the real part of 1+1j by a gradient of 1j (torch
    moves the imaginary part), and global_norm([1j, 1]) was 0 instead of √2."""
    p = {"w": np.array([1 + 1j, 2.0])}
    real_only = "expected real floating-point arrays (the optimizers and global norms do not do complex arithmetic)"
    for opt in (optim.adam(0.1), optim.sgd(0.1), optim.flatten(optim.adam(0.1))):
        with raises_exactly(TypeError, f"params['w']: got dtype complex128, {real_only}"):
            opt.init(p)
    with raises_exactly(TypeError, f"tree['a']: got dtype complex128, {real_only}"):
        optim.global_norm({"a": np.array([1j, 1.0])})
    with raises_exactly(TypeError, f"grads['b/0']: got dtype complex64, {real_only}"):
        optim.clip_by_global_norm(1.0).update({"a": np.ones(2), "b": [np.ones(2, np.complex64)]}, {})
    real = {"w": np.array([1.0, 2.0])}  # a complex gradient for a real parameter: another dtype
    with pytest.raises(TypeError, match=r"^grads\['w'\]: got dtype complex128, expected float64 like the parameter"):
        optim.adam(0.1).update({"w": np.array([1j, 1.0])}, optim.adam(0.1).init(real), real)
    torch = pytest.importorskip("torch")
    with raises_exactly(TypeError, f"params['t']: got dtype torch.complex64, {real_only}"):
        optim.adam(0.1).init({"t": torch.ones(2, dtype=torch.complex64)})


@pytest.mark.parametrize("make", [lambda: optim.adam(0.1), lambda: optim.sgd(0.1),
                                  lambda: optim.flatten(optim.adam(0.1))])
def test_gradients_of_another_dtype_than_their_parameter_are_named(make):
    """float64 (or int64) gradients for float32 parameters were accepted, the state silently became
    float64, and the later error blamed 'updates' with a dtype the user never passed."""
    opt = make()
    p = {"w": np.ones(2, np.float32)}
    state = opt.init(p)
    with pytest.raises(TypeError, match=r"^grads\['w'\]: got dtype float64, expected float32 like the parameter"):
        opt.update({"w": np.ones(2)}, state, p)
    with pytest.raises(TypeError, match=r"^grads\['w'\]: got dtype int64, expected float32 like the parameter"):
        opt.update({"w": np.ones(2, np.int64)}, state, p)
    updates, new_state = opt.update({"w": np.ones(2, np.float32)}, state, p)
    assert updates["w"].dtype == np.float32
    assert all(x.dtype == np.float32 for x in tree_leaves(new_state) if hasattr(x, "dtype"))
    adam = optim.adam(0.1)  # without params, against the moments (in the parameters' dtype)
    with pytest.raises(TypeError, match=r"^grads\['w'\]: got dtype float64, expected float32 like the parameter"):
        adam.update({"w": np.ones(2)}, adam.init(p))


def test_clip_by_global_norm_of_finite_gradients_whose_norm_is_beyond_float64():
    """‖g‖ of 4 entries of 1e308 is 2e308, beyond float64: global_norm is inf (documented), and the
    clip used to scale by max_norm/inf = 0. The factor is now taken from the rescaled norm."""
    g = {"a": np.full(4, 1e308)}
    assert optim.global_norm(g) == math.inf
    np.testing.assert_allclose(optim.clip_by_global_norm(1.0).update(g, {})[0]["a"], [0.5] * 4, rtol=1e-15)
    g = {"a": np.array([1e308, -1.5e308]), "b": [np.array([1e300, 1e10, 0.0])]}
    scaled = tree_map(lambda x: x / 1e308, g)  # exact-enough oracle: the norm in units of 1e308
    unit = math.sqrt(sum(float((x * x).sum()) for x in tree_leaves(scaled)))
    clipped, _ = optim.clip_by_global_norm(3.0).update(g, {})
    for got, x in leaf_pairs(clipped, scaled):
        np.testing.assert_allclose(got, x / unit * 3.0, rtol=1e-14, atol=0)
    assert optim.global_norm(clipped) == pytest.approx(3.0, rel=1e-14)
    p = {"w": np.zeros(4)}  # inside a flattened chain, as the training loop runs it
    opt = optim.flatten(optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1)))
    updates, _ = opt.update({"w": np.full(4, 1e308)}, opt.init(p), p)
    np.testing.assert_allclose(updates["w"], [-0.05] * 4, rtol=1e-15)


def test_checkpoint_paths_that_collide_are_refused():
    """A key 'a/b' beside a → b, or keys 0 and '0', gave one checkpoint path for two leaves: one
    moment was silently lost, and restoring put the other into both."""
    params = {"a/b": np.array([1.0]), "a": {"b": np.array([5.0])}}
    opt = optim.adam(0.1)
    state = opt.init(params)
    collision = ("leaves at keys (0, 'mu', 'a/b') and (0, 'mu', 'a', 'b') have the same checkpoint path '0/mu/a/b', "
                 "expected distinct paths (a key holding '/', or int and str keys alike)")
    with raises_exactly(ValueError, "state: " + collision):
        optim.state_to_arrays(state)
    arrays = {"opt_state/0/count": np.array(0), "opt_state/1/count": np.array(0),
              "opt_state/0/mu/a/b": np.zeros(1), "opt_state/0/nu/a/b": np.zeros(1)}
    with raises_exactly(ValueError, "template_state: " + collision):
        optim.state_from_arrays(state, arrays)
    momentum = optim.sgd(0.1, momentum=0.9)
    with raises_exactly(ValueError, "state: leaves at keys (0, 'momentum_buffer', 0) and (0, 'momentum_buffer', '0') "
                                    "have the same checkpoint path '0/momentum_buffer/0', expected distinct paths (a "
                                    "key holding '/', or int and str keys alike)"):
        optim.state_to_arrays(momentum.init({0: np.ones(1), "0": np.ones(1)}))


@pytest.mark.parametrize("make", [lambda: optim.sgd(0.1), lambda: optim.sgd(0.1, momentum=0.9),
                                  lambda: optim.adam(0.1), lambda: optim.adamw(0.1), lambda: optim.rmsprop(0.1),
                                  lambda: optim.adagrad(0.1), lambda: optim.flatten(optim.adam(0.1)),
                                  optim.identity, lambda: optim.scale(2.0), lambda: optim.clip(1.0),
                                  lambda: optim.clip_by_global_norm(1.0), lambda: optim.add_decayed_weights(0.1),
                                  lambda: optim.chain(optim.clip(1.0), optim.scale(-0.1))])
def test_integer_and_bool_parameters_are_refused_at_init_by_path(make):
    """int and bool parameters were accepted by init; the first update then blamed the gradients
    ("expected int64 like the parameter"), and int gradients only moved the error to apply_updates."""
    opt = make()
    for leaf, dtype in ((np.arange(3), "int64"), (np.ones(2, bool), "bool"), (np.arange(3, dtype=np.uint8), "uint8")):
        with pytest.raises(TypeError) as info:
            opt.init({"a": np.ones(2), "b": [leaf]})
        assert str(info.value) == f"params['b/0']: got dtype {dtype}, expected floating-point arrays"
    with pytest.raises(TypeError) as info:
        opt.init({"flag": True})
    assert str(info.value) == "params['flag']: got bool True, expected floating-point arrays"
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError) as info:
        opt.init({"t": torch.arange(3)})
    assert str(info.value) == "params['t']: got dtype torch.int64, expected floating-point arrays"


def test_python_int_parameters_are_taken_as_floats():
    # a Python int param is a float leaf after one update: the same updates as for the float
    for opt in (optim.adam(0.1), optim.sgd(0.1, momentum=0.9)):
        got, _ = opt.update({"w": 0.5}, opt.init({"w": 2}), {"w": 2})
        want, _ = opt.update({"w": 0.5}, opt.init({"w": 2.0}), {"w": 2.0})
        assert got == want and isinstance(got["w"], float)


def test_clip_of_python_number_leaves_clips_like_arrays():
    """clip called g.clip(...), an AttributeError on the float leaves every optimizer accepts."""
    opt = optim.chain(optim.clip(0.5), optim.sgd(1.0))
    p = {"w": 1.0, "v": [0.0, 0.0]}
    g = {"w": 2.0, "v": [-3, 0.25]}
    updates, _ = opt.update(g, opt.init(p), p)
    assert updates == {"w": -0.5, "v": [0.5, -0.25]}  # −clip(g): by hand
    arrays, _ = opt.update(tree_map(np.float64, g), opt.init(p), p)  # the array path agrees
    assert tree_map(float, arrays) == updates
    assert math.isnan(optim.clip(0.5).update({"w": math.nan}, {})[0]["w"])
    with pytest.raises(TypeError) as info:
        optim.clip(0.5).update({"w": "big"}, {})
    assert str(info.value) == "grads['w']: got a str leaf 'big', expected arrays or real numbers"
