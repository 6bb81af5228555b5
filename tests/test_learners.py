"""Continual learners: penalties and gradients against direct formulas and finite differences,
buffers against the statistics they promise, projections against their defining properties.

Models are tiny and float64; a linear softmax model (an MLP without hidden layers) gives
closed-form per-example gradients for the Fisher and MAS oracles, and a loop over single
examples (one vjp of the model each, with the loss's derivative at the logits written out)
gives them for a hidden layer and an LSTM.
"""
from __future__ import annotations

import numpy as np
import pytest

from seqcore import learners, optim
from seqcore.autodiff import vjp
from seqcore.learners.base import ExperienceData, get_path, pack_state, unpack_state
from seqcore.learners.basic import union_batch
from seqcore.learners.classifiers import MLPClassifier, RNNClassifier
from seqcore.learners.distillation import soft_cross_entropy
from seqcore.learners.orthogonal import extend_basis, project_out, project_out_masked_diagonal
from seqcore.learners.regularization import fisher_diagonal, mas_importance
from seqcore.learners.replay import ClassBalancedBuffer, ReservoirBuffer, agem_project
from seqcore.train import Trainer
from seqcore.tree import tree_flatten, tree_leaves, tree_map

N_IN, N_OUT = 4, 3


def bound(name, model=None, n_experiences=3, **hp):
    learner = learners.make(name, **hp)
    learner.bind(model or MLPClassifier(N_IN, (5,), N_OUT), n_experiences=n_experiences,
                 rng=np.random.default_rng(7))
    return learner


def params_of(learner, seed=0):
    return learner.init_params(np.random.default_rng(seed), np.float64)


def data(n=20, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, N_IN)), rng.integers(0, N_OUT, n)


def experience(x, y, index=0):
    def sample(rng, n):
        idx = rng.choice(len(y), size=n, replace=False)
        return x[idx], y[idx]
    return ExperienceData(index, index, sample, len(y), tuple(range(N_OUT)))


class FakeTrainer:
    def __init__(self, params):
        self.params = params
        self.step_count = 0


def value_and_grad(f, params):
    value, pullback = vjp(f, params)
    (g,) = pullback(np.ones_like(value))
    return float(value), g


def finite_difference(f, params, eps=1e-6, picks=6, seed=0):
    """Central differences of scalar f on a few random coordinates of every leaf: [(leaf, idx, fd)]."""
    rng = np.random.default_rng(seed)
    out = []
    leaves = tree_leaves(params)
    for k, leaf in enumerate(leaves):
        for _ in range(min(picks, leaf.size)):
            idx = tuple(int(rng.integers(0, s)) for s in leaf.shape)
            plus, minus = [tree_map(np.copy, params) for _ in range(2)]
            tree_leaves(plus)[k][idx] += eps
            tree_leaves(minus)[k][idx] -= eps
            out.append((k, idx, (float(f(plus)) - float(f(minus))) / (2 * eps)))
    return out


def check_gradient_fd(f, params, grad):
    for k, idx, fd in finite_difference(f, params):
        assert tree_leaves(grad)[k][idx] == pytest.approx(fd, rel=1e-5, abs=1e-7)


def linear_model_grads(W, b, x, y):
    """Per-example gradients of −log softmax(Wx + b)[y]: (N, out, in) and (N, out)."""
    z = x @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    r = p - np.eye(W.shape[0])[y]
    return r[:, :, None] * x[:, None, :], r


def example_grads_oracle(model, params, x, cotangent):
    """Per-example gradients ``J_iᵀ cotangent(i, z_i)``: one vjp of ``model.forward`` on example i
    alone, pulled back from a hand-derived ∂loss_i/∂logits (z_i: the example's logits (C,))."""
    out = []
    for i in range(len(x)):
        z, pullback = vjp(lambda p: model.forward(p, x[i:i + 1]), params)
        (g,) = pullback(cotangent(i, np.asarray(z)[0])[None])
        out.append(g)
    return out


def head_softmax(z, label, head_size=None):
    """softmax of logits ``z (C,)`` over the head of ``label`` (all C without heads), 0 elsewhere."""
    own = np.ones(len(z), bool) if head_size is None else np.arange(len(z)) // head_size == label // head_size
    e = np.where(own, np.exp(z - z[own].max()), 0.0)
    return e / e.sum()


def fisher_oracle(model, params, x, y, mode, rng=None, head_size=None):
    """``(1/N) Σ_i g_i²``, ``g_i = ∂(−log p(y_i|x_i))/∂θ = J_iᵀ (p_i − e_{y_i})`` example by example
    (no ½: that belongs to EWC's penalty). "sampled" first draws each y_i ~ p_i (the softmax over the
    example's own head) from ``rng``, one draw per example in order."""
    if mode == "sampled":
        probs = [head_softmax(np.asarray(model.forward(params, x[i:i + 1]))[0], y[i], head_size)
                 for i in range(len(x))]
        y = np.array([rng.choice(len(q), p=q) for q in probs])
    grads = example_grads_oracle(model, params, x,
                                 lambda i, z: head_softmax(z, y[i], head_size) - np.eye(len(z))[y[i]])
    return tree_map(lambda *g: np.mean(np.square(g), axis=0), *grads)


def mas_oracle(model, params, x):
    """``(1/N) Σ_i |∂‖f(x_i)‖²/∂θ|`` with ∂‖z‖²/∂z = 2z, example by example."""
    grads = example_grads_oracle(model, params, x, lambda i, z: 2 * z)
    return tree_map(lambda *g: np.mean(np.abs(g), axis=0), *grads)


def weighted_squares(weights, theta, anchor) -> float:
    """Σ over every leaf of Σ w·(θ − θ*)²: the quadratic penalties (EWC, SI, MAS) by hand."""
    return sum(np.sum(w * (a - s) ** 2) for w, a, s in
               zip(tree_leaves(weights), tree_leaves(theta), tree_leaves(anchor), strict=True))


def assert_trees_close(got, want, rtol=1e-10, atol=1e-15):
    for g, w in zip(tree_leaves(got), tree_leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


# a hidden layer, and an LSTM reading x (N, 4) as 4 steps of 1 feature
HIDDEN_MODELS = [MLPClassifier(N_IN, (5,), N_OUT), RNNClassifier("lstm", 1, 5, N_OUT)]
HIDDEN_IDS = ["mlp-hidden", "lstm"]


# ------------------------------------------------------------------ registry and validation

def test_registry_lists_every_learner_of_the_issue():
    assert set(learners.names()) == {"naive", "joint", "cumulative", "l2", "ewc", "online-ewc", "si", "mas", "lwf",
                                     "replay", "agem", "der", "derpp", "power-law", "refresh", "sharp", "hypernet",
                                     "orthogonal"}
    for name in learners.names():
        assert learners.make(name).name == name
    # the defaults of the README's table
    documented = {
        "l2": {"strength": 0.1},
        "ewc": {"strength": 1000.0, "fisher_samples": 200, "fisher": "empirical"},
        "online-ewc": {"strength": 1000.0, "decay": 0.9},
        "si": {"strength": 10.0, "damping": 0.1},
        "mas": {"strength": 0.03, "importance_samples": 200},
        "lwf": {"strength": 1.0, "temperature": 2.0},
        "replay": {"memory_size": 500, "replay_batch": 32, "buffer": "reservoir"},
        "agem": {"memory_per_experience": 256, "replay_batch": 256},
        "der": {"memory_size": 500, "replay_batch": 32, "alpha": 0.5},
        "derpp": {"memory_size": 500, "replay_batch": 32, "alpha": 0.5, "beta": 0.5},
        "power-law": {"memory_per_experience": 256, "replay_batch": 32, "exponent": 1.0, "budget": 2},
        "refresh": {"unlearn_lr": 0.03, "every": 1, "fisher_decay": 0.99, "noise": 0.0},
        "sharp": {"density": 0.5, "rewire_every": 100, "drop_fraction": 0.1, "regrow": "random",
                  "memory_size": 500, "recent_classes": 10, "freeze_fraction": 0.25},
        "hypernet": {"hnet_cell": "lstm", "hnet_hidden": 64, "task_embedding": 16, "chunk_embedding": 16,
                     "chunk_size": 2048, "strength": 0.01},
        "orthogonal": {"threshold": 0.97, "samples": 300},
    }
    for name, defaults in documented.items():
        hp = learners.hyperparameters(name)
        assert {k: hp[k].default for k in defaults} == defaults, name
        made = learners.make(name)
        assert all(getattr(made, k) == v for k, v in defaults.items()), name
    assert all(learners.hyperparameters(name) == {} for name in ("naive", "joint", "cumulative"))


def test_bad_names_and_hyperparameters_are_rejected_with_the_value():
    with pytest.raises(ValueError, match="learner: got 'ewk'"):
        learners.make("ewk")
    with pytest.raises(ValueError, match="lambda_"):
        learners.make("ewc", lambda_=3.0)
    with pytest.raises(ValueError, match=r"strength: got -1.0, expected >= 0"):
        learners.make("ewc", strength=-1.0)
    with pytest.raises(ValueError, match="fisher: got 'true'"):
        learners.make("ewc", fisher="true")
    with pytest.raises(TypeError, match="memory_size: got 'big'"):
        learners.make("replay", memory_size="big")
    with pytest.raises(ValueError, match="strength: got nan, expected a finite number"):
        learners.make("ewc", strength=float("nan"))
    with pytest.raises(ValueError, match=r"damping: got 0.0, expected > 0.0"):  # Ω would be 0/0
        learners.make("si", damping=0.0)
    with pytest.raises(ValueError, match=r"buffer: got array\(\['class-balanced'\]"):
        learners.make("replay", buffer=np.array(["class-balanced"]))  # compared element-wise, it passed
    with pytest.raises(ValueError, match="n_experiences: got True"):
        bound("naive", n_experiences=True)
    assert bound("naive", n_experiences=np.int64(2)).n_experiences == 2


# ------------------------------------------------------------------ quadratic regularisers

def test_l2_penalty_and_gradient():
    ln = bound("l2", strength=0.7)
    theta_star = params_of(ln, 0)
    ln.after_experience(FakeTrainer(theta_star), experience(*data()))
    theta = params_of(ln, 1)
    value, grad = value_and_grad(ln.penalty, theta)
    direct = 0.35 * sum(np.sum((a - b) ** 2) for a, b in zip(tree_leaves(theta), tree_leaves(theta_star)))
    assert value == pytest.approx(direct, rel=1e-12)
    for g, a, b in zip(tree_leaves(grad), tree_leaves(theta), tree_leaves(theta_star)):
        np.testing.assert_allclose(g, 0.7 * (a - b), rtol=1e-12)
    check_gradient_fd(ln.penalty, theta, grad)
    # the anchor moves to the parameters after the latest experience (not a sum over experiences)
    theta_star2 = params_of(ln, 2)
    ln.after_experience(FakeTrainer(theta_star2), experience(*data(), index=1))
    direct2 = 0.35 * sum(np.sum((a - b) ** 2) for a, b in zip(tree_leaves(theta), tree_leaves(theta_star2)))
    assert float(ln.penalty(theta)) == pytest.approx(direct2, rel=1e-12)


@pytest.mark.parametrize("mode", ["empirical", "sampled"])
def test_fisher_matches_closed_form_of_softmax_regression(mode):
    ln = bound("ewc", model=MLPClassifier(N_IN, (), N_OUT))
    p = params_of(ln)
    x, y = data(12)
    if mode == "sampled":  # the oracle draws the labels the same way, from the same stream
        z = x @ p[0]["weight"].T + p[0]["bias"]
        probs = np.exp(z - z.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        rng = np.random.default_rng(5)
        y_used = np.array([rng.choice(N_OUT, p=q) for q in probs])
    else:
        y_used = y
    gW, gb = linear_model_grads(p[0]["weight"], p[0]["bias"], x, y_used)
    F = fisher_diagonal(ln, p, x, y, mode, np.random.default_rng(5))
    np.testing.assert_allclose(F[0]["weight"], (gW ** 2).mean(0), rtol=1e-10)
    np.testing.assert_allclose(F[0]["bias"], (gb ** 2).mean(0), rtol=1e-10)


@pytest.mark.parametrize("mode", ["empirical", "sampled"])
@pytest.mark.parametrize("model,head_size", [(HIDDEN_MODELS[0], None), (HIDDEN_MODELS[1], None),
                                             (RNNClassifier("lstm", 1, 5, 6), 2)],
                         ids=HIDDEN_IDS + ["lstm-3-heads"])
def test_fisher_is_the_mean_square_of_single_example_gradients(model, head_size, mode):
    """Through a hidden layer and an LSTM's scan, against a loop over single examples (the mean
    of the squares, not the square of the mean); the multi-head LSTM takes each example's own head."""
    ln = learners.make("ewc", fisher=mode)
    ln.bind(model, n_experiences=3, rng=np.random.default_rng(7), head_size=head_size)
    p = params_of(ln, 3)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(10, N_IN)), rng.integers(0, model.n_classes, 10)
    F = fisher_diagonal(ln, p, x, y, mode, np.random.default_rng(5))
    assert_trees_close(F, fisher_oracle(model, p, x, y, mode, np.random.default_rng(5), head_size))
    # the oracle's per-example gradient itself, against finite differences of −log p(y_0|x_0)
    (g0,) = example_grads_oracle(model, p, x[:1], lambda i, z: head_softmax(z, y[0], head_size) - np.eye(len(z))[y[0]])
    p0 = lambda q: head_softmax(np.asarray(model.forward(q, x[:1]))[0], y[0], head_size)[y[0]]  # noqa: E731
    check_gradient_fd(lambda q: -np.log(p0(q)), p, g0)


@pytest.mark.parametrize("mode", ["empirical", "sampled"])
@pytest.mark.parametrize("model", HIDDEN_MODELS, ids=HIDDEN_IDS)
def test_ewc_keeps_one_penalty_per_task_exactly(model, mode):
    ln = bound("ewc", model=model, strength=3.0, fisher_samples=20, fisher=mode)
    fishers, anchors = [], []
    for t in range(2):
        x, y = data(20, seed=10 + t)
        theta_t = params_of(ln, 20 + t)
        ln.rng = np.random.default_rng(3)
        ln.after_experience(FakeTrainer(theta_t), experience(x, y, t))
        ln_rng = np.random.default_rng(3)  # the same 20 examples, in the same order, then the same label draws
        idx = ln_rng.choice(20, size=20, replace=False)
        fishers.append(fisher_oracle(model, theta_t, x[idx], y[idx], mode, ln_rng))
        anchors.append(theta_t)
    assert_trees_close(ln.importance, tree_map(np.add, *fishers))
    theta = params_of(ln, 99)
    value, grad = value_and_grad(ln.penalty, theta)
    direct = sum(1.5 * weighted_squares(F, theta, S) for F, S in zip(fishers, anchors))
    assert value == pytest.approx(direct, rel=1e-9)
    expected = [sum(3.0 * tree_leaves(F)[k] * (tree_leaves(theta)[k] - tree_leaves(S)[k])
                    for F, S in zip(fishers, anchors)) for k in range(len(tree_leaves(theta)))]
    for g, e in zip(tree_leaves(grad), expected):
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-14)
    check_gradient_fd(ln.penalty, theta, grad)


@pytest.mark.parametrize("model", HIDDEN_MODELS, ids=HIDDEN_IDS)
def test_online_ewc_decays_the_running_fisher_and_anchors_at_the_latest_task(model):
    ln = bound("online-ewc", model=model, strength=2.0, decay=0.5, fisher_samples=20)
    fishers, last = [], None
    for t in range(2):
        x, y = data(20, seed=30 + t)
        last = params_of(ln, 40 + t)
        ln.after_experience(FakeTrainer(last), experience(x, y, t))
        fishers.append(fisher_oracle(model, last, x, y, "empirical"))  # all 20 examples: order does not matter
    expected_F = tree_map(lambda a, b: 0.5 * a + b, *fishers)
    assert_trees_close(ln.importance, expected_F)
    theta = params_of(ln, 50)
    value, grad = value_and_grad(ln.penalty, theta)
    direct = weighted_squares(expected_F, theta, last)
    assert value == pytest.approx(direct, rel=1e-10)
    for g, f, a, s in zip(tree_leaves(grad), tree_leaves(expected_F), tree_leaves(theta), tree_leaves(last)):
        np.testing.assert_allclose(g, 2.0 * f * (a - s), rtol=1e-9, atol=1e-14)
    check_gradient_fd(ln.penalty, theta, grad)


def _sgd_path_integral(ln, trainer, x, y, rng, steps, lr):
    """Train ``steps`` SGD steps on batches of 8 of (x, y); check SI's path integral against
    Σ Δθ² / lr (with SGD, Δθ = −lr·g, so ω = Σ −g·Δθ = Σ Δθ² / lr) and return that oracle."""
    history = [trainer.params]
    for _ in range(steps):
        idx = rng.choice(len(y), size=8, replace=False)
        trainer.step((x[idx], y[idx], None))
        history.append(trainer.params)
    omega = tree_map(lambda *ps: sum((b - a) ** 2 for a, b in zip(ps[:-1], ps[1:])) / lr, *history)
    for got, want in zip(tree_leaves(ln.path_integral), tree_leaves(omega)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)
    return omega


def test_si_path_integral_and_penalty_under_plain_sgd():
    lr, xi, c = 0.05, 0.1, 0.8
    ln = bound("si", strength=c, damping=xi)
    theta0 = params_of(ln)
    trainer = Trainer(ln.loss, theta0, optim.sgd(lr), hooks=ln)
    x, y = data(40)
    ln.before_experience(trainer, experience(x, y))
    rng = np.random.default_rng(0)
    omega = _sgd_path_integral(ln, trainer, x, y, rng, 15, lr)
    ln.after_experience(trainer, experience(x, y))
    Omega = tree_map(lambda w, a, b: w / ((b - a) ** 2 + xi), omega, theta0, trainer.params)
    theta = params_of(ln, 3)
    value, grad = value_and_grad(ln.penalty, theta)
    for g, O, a, s in zip(tree_leaves(grad), tree_leaves(Omega), tree_leaves(theta), tree_leaves(trainer.params)):
        np.testing.assert_allclose(g, 2 * c * O * (a - s), rtol=1e-9, atol=1e-15)
    direct = c * weighted_squares(Omega, theta, trainer.params)
    assert value == pytest.approx(direct, rel=1e-10)
    # a second experience: the applied gradient now includes the SI penalty, and under SGD the
    # path integral is still Σ Δθ² / lr; the importances of the two experiences add up
    start2 = trainer.params
    x2, y2 = data(40, seed=8)
    ln.before_experience(trainer, experience(x2, y2, 1))
    omega2 = _sgd_path_integral(ln, trainer, x2, y2, rng, 10, lr)
    ln.after_experience(trainer, experience(x2, y2, 1))
    Omega2 = tree_map(lambda O, w, a, b: O + w / ((b - a) ** 2 + xi), Omega, omega2, start2, trainer.params)
    for got, want in zip(tree_leaves(ln.importance), tree_leaves(Omega2)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)
    for got, want in zip(tree_leaves(ln.anchor), tree_leaves(trainer.params)):
        np.testing.assert_array_equal(got, want)


def check_mas_penalty(ln, omega, p, x):
    """After an experience on ``x`` at ``p``, the penalty at another θ is 0.3·Σ Ω(θ − p)² and its
    gradient agrees with finite differences; returns that θ."""
    ln.after_experience(FakeTrainer(p), experience(x, np.zeros(15, int)))
    theta = params_of(ln, 4)
    value, grad = value_and_grad(ln.penalty, theta)
    assert value == pytest.approx(0.3 * weighted_squares(omega, theta, p), rel=1e-10)
    check_gradient_fd(ln.penalty, theta, grad)
    return theta


def test_mas_importance_is_the_mean_absolute_output_sensitivity():
    ln = bound("mas", model=MLPClassifier(N_IN, (), N_OUT), strength=0.3, importance_samples=15)
    p = params_of(ln)
    x, _ = data(15)
    W, b = p[0]["weight"], p[0]["bias"]
    f = x @ W.T + b  # ∂‖f‖²/∂W = 2 f xᵀ, ∂‖f‖²/∂b = 2 f
    omega = mas_importance(ln, p, x)
    np.testing.assert_allclose(omega[0]["weight"], np.abs(2 * f[:, :, None] * x[:, None, :]).mean(0), rtol=1e-10)
    np.testing.assert_allclose(omega[0]["bias"], np.abs(2 * f).mean(0), rtol=1e-10)
    theta = check_mas_penalty(ln, omega, p, x)
    # a second experience: importances are summed (closed form again), the anchor is the latest θ
    p2 = params_of(ln, 6)
    x2, _ = data(15, seed=9)
    f2 = x2 @ p2[0]["weight"].T + p2[0]["bias"]
    ln.after_experience(FakeTrainer(p2), experience(x2, np.zeros(15, int), 1))
    np.testing.assert_allclose(ln.importance[0]["weight"], omega[0]["weight"]
                               + np.abs(2 * f2[:, :, None] * x2[:, None, :]).mean(0), rtol=1e-10)
    np.testing.assert_allclose(ln.importance[0]["bias"], omega[0]["bias"] + np.abs(2 * f2).mean(0), rtol=1e-10)
    direct2 = 0.3 * weighted_squares(ln.importance, theta, p2)
    assert float(ln.penalty(theta)) == pytest.approx(direct2, rel=1e-10)


@pytest.mark.parametrize("model", HIDDEN_MODELS, ids=HIDDEN_IDS)
def test_mas_importance_through_a_hidden_layer_and_an_lstm(model):
    ln = bound("mas", model=model, strength=0.3, importance_samples=15)
    p = params_of(ln, 2)
    x, _ = data(15, seed=4)
    omega = mas_importance(ln, p, x)
    assert_trees_close(omega, mas_oracle(model, p, x))
    (g0,) = example_grads_oracle(model, p, x[:1], lambda i, z: 2 * z)
    check_gradient_fd(lambda q: np.sum(np.asarray(model.forward(q, x[:1])) ** 2), p, g0)
    check_mas_penalty(ln, omega, p, x)


# ------------------------------------------------------------------ distillation

def softmax(z, T=1.0):
    z = z / T
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_soft_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(0)
    logits, q = rng.normal(size=(5, 4)), softmax(rng.normal(size=(5, 4)))
    value, grad = value_and_grad(lambda z: soft_cross_entropy(z, q, 2.0), logits)
    assert value == pytest.approx(-(q * np.log(softmax(logits, 2.0))).sum(1).mean(), rel=1e-12)
    np.testing.assert_allclose(grad, (softmax(logits, 2.0) - q) / (2.0 * 5), rtol=1e-10)



@pytest.mark.parametrize("temperature,error,message", [
    (0, ValueError, r"temperature: got 0, expected > 0"), (-1.0, ValueError, r"temperature: got -1.0, expected > 0"),
    (float("nan"), ValueError, r"temperature: got nan, expected a finite number"),
    ("2", TypeError, r"temperature: got '2' \(str\), expected a real number")])
def test_soft_cross_entropy_refuses_a_temperature_that_is_not_positive(temperature, error, message):
    logits, q = np.zeros((2, 3)), np.full((2, 3), 1 / 3)
    with pytest.raises(error, match=message):
        soft_cross_entropy(logits, q, temperature)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_union_batch_refuses_a_batch_size_that_is_not_a_positive_int(batch_size):
    x, y = data(10)
    with pytest.raises(ValueError, match=rf"batch_size: got {batch_size!r}, expected an integer >= 1"):
        union_batch(np.random.default_rng(0), [experience(x, y)], batch_size)
    got_x, got_y = union_batch(np.random.default_rng(0), [experience(x, y)], 4)  # a valid size still works
    assert got_x.shape == (4, N_IN) and all(any(np.array_equal(r, q) for q in x) for r in got_x)


def test_sampled_fisher_refuses_an_rng_that_is_not_a_generator():
    ln = bound("ewc")
    x, y = data(4)
    with pytest.raises(TypeError, match=r"rng: got int, expected numpy.random.Generator"):
        fisher_diagonal(ln, params_of(ln), x, y, "sampled", 3)
    with pytest.raises(ValueError, match=r"rng: got None, expected a numpy Generator"):
        fisher_diagonal(ln, params_of(ln), x, y, "sampled", None)

def test_lwf_distils_the_previous_model_on_current_inputs():
    ln = bound("lwf", strength=1.7, temperature=2.0)
    teacher = params_of(ln, 0)
    x, y = data(9)
    ln.after_experience(FakeTrainer(teacher), experience(x, y))
    theta = params_of(ln, 1)
    model = ln.model
    q = softmax(np.asarray(model.forward(teacher, x)), 2.0)
    value, grad = value_and_grad(lambda p: ln.distillation(p, x), theta)
    direct = -1.7 * (q * np.log(softmax(np.asarray(model.forward(theta, x)), 2.0))).sum(1).mean()
    assert value == pytest.approx(direct, rel=1e-10)
    check_gradient_fd(lambda p: ln.distillation(p, x), theta, grad)


@pytest.mark.parametrize("name", ["der", "derpp"])
def test_der_replay_loss_matches_its_formula(name):
    ln = bound(name, alpha=0.4, **({"beta": 0.9} if name == "derpp" else {}))
    theta = params_of(ln, 2)
    x1, y1 = data(6, seed=3)
    x2, y2 = data(6, seed=4)
    z1 = np.random.default_rng(5).normal(size=(6, N_OUT))
    first = {"x": x1, "y": y1, "logits": z1}
    second = {"x": x2, "y": y2, "logits": z1}
    f = lambda p: ln.replay_loss(p, first, second if name == "derpp" else None)  # noqa: E731
    value, grad = value_and_grad(f, theta)
    direct = 0.4 * np.mean((np.asarray(ln.model.forward(theta, x1)) - z1) ** 2)
    if name == "derpp":
        logp = np.log(softmax(np.asarray(ln.model.forward(theta, x2))))
        direct += 0.9 * -logp[np.arange(6), y2].mean()
    assert value == pytest.approx(direct, rel=1e-10)
    check_gradient_fd(f, theta, grad)


def test_der_stores_the_logits_seen_before_the_update():
    ln = bound("der", memory_size=50)
    theta = params_of(ln)
    trainer = Trainer(ln.loss, theta, optim.sgd(0.1), hooks=ln)
    x, y = data(8)
    before = np.asarray(ln.model.forward(theta, x))
    trainer.step((x, y, None))
    np.testing.assert_allclose(ln.memory.data["logits"][:8], before, rtol=1e-12)
    np.testing.assert_array_equal(ln.memory.data["y"][:8], y)


# ------------------------------------------------------------------ A-GEM

@pytest.mark.parametrize("seed", range(6))
def test_agem_projection_properties(seed):
    rng = np.random.default_rng(seed)
    g = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=5)}
    r = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=5)}
    dot = sum(np.sum(g[k] * r[k]) for k in g)
    if dot >= 0:  # make both cases appear: flip the reference for half of the seeds
        r = {k: -v for k, v in r.items()}
        dot = -dot
    out = agem_project(g, r)
    new_dot = sum(np.sum(out[k] * r[k]) for k in g)
    assert new_dot >= -1e-12 and new_dot == pytest.approx(0.0, abs=1e-10)
    rr = sum(np.sum(v * v) for v in r.values())
    for k in g:
        np.testing.assert_allclose(out[k], g[k] - dot / rr * r[k], rtol=1e-12)
    flipped = {k: -v for k, v in r.items()}  # g·(−r) > 0: unchanged
    same = agem_project(g, flipped)
    for k in g:
        assert same[k] is g[k]


# ------------------------------------------------------------------ buffers

def test_reservoir_sampling_is_uniform_chi_square():
    n_items, capacity, runs = 200, 20, 600
    counts = np.zeros(n_items)
    rng = np.random.default_rng(1234)
    for _ in range(runs):
        buf = ReservoirBuffer(capacity)
        for start in range(0, n_items, 25):
            ids = np.arange(start, start + 25)
            buf.add(rng, x=ids[:, None].astype(float), y=ids)
        counts[buf.data["y"][: len(buf)]] += 1
    expected = runs * capacity / n_items
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 199 degrees of freedom: the 99.9 % quantile is about 276; a buffer that kept only the
    # first or the last items would give a statistic in the thousands
    assert chi2 < 276, chi2
    assert counts[:25].mean() == pytest.approx(expected, rel=0.2)
    assert counts[-25:].mean() == pytest.approx(expected, rel=0.2)


def test_class_balanced_buffer_balances_an_imbalanced_stream():
    rng = np.random.default_rng(0)
    buf = ClassBalancedBuffer(30)
    # class 0 dominates, class 3 is rare (4 samples), classes 1 and 2 are plentiful
    labels = np.concatenate([np.zeros(400, int), np.ones(60, int), np.full(60, 2), np.full(4, 3)])
    labels = labels[rng.permutation(labels.size)]
    for start in range(0, labels.size, 16):
        y = labels[start:start + 16]
        buf.add(rng, x=y[:, None].astype(float), y=y)
    counts = np.bincount(buf.data["y"][: len(buf)], minlength=4)
    assert len(buf) == 30 and counts[3] == 4  # a rare class keeps all its samples
    assert counts[:3].max() - counts[:3].min() <= 1, counts


def test_buffers_refuse_rows_of_another_shape_or_dtype_kind_by_name():
    rng = np.random.default_rng(0)
    refusals = [  # (x, y, error, message): each would broadcast, truncate or miscount silently
        (np.array([[7.0], [8.0]]), np.array([2, 3]), ValueError,
         r"fields\['x'\]: got rows of shape \(1,\), expected \(3,\) as stored"),
        (np.ones((2, 5)), np.array([2, 3]), ValueError, r"fields\['x'\]: got rows of shape \(5,\), expected \(3,\)"),
        (np.ones((2, 3), complex), np.array([2, 3]), TypeError,
         r"fields\['x'\]: got complex128 values, expected float64 as stored"),
    ]
    for buf in (ReservoirBuffer(4), ClassBalancedBuffer(4)):
        buf.add(rng, x=np.ones((2, 3)), y=np.array([0, 1]))
        for x, y, error, message in refusals:
            with pytest.raises(error, match=message):
                buf.add(rng, x=x, y=y)
        reservoir = type(buf) is ReservoirBuffer  # the class-balanced buffer checks its labels first
        with pytest.raises(TypeError, match=r"fields\['y'\]: got float64 values, expected int64 as stored"
                           if reservoir else r"y: got float64 of shape \(2,\) .*expected integer class labels"):
            buf.add(rng, x=np.ones((2, 3)), y=np.array([2.9, 3.9]))
        with pytest.raises(ValueError if reservoir else TypeError,
                           match=r"fields\['y'\]: got rows of shape \(1,\), expected \(\) as stored"
                           if reservoir else r"y: got int64 of shape \(2, 1\)"):
            buf.add(rng, x=np.ones((2, 3)), y=np.array([[2], [3]]))
        assert (len(buf), buf.n_seen) == (2, 2)  # every refusal left the buffer as it was
        # the same kinds at another width are accepted and stored exactly
        buf.add(rng, x=np.full((2, 3), 0.5, np.float32), y=np.array([2, 3], np.int32))
        np.testing.assert_array_equal(buf.data["x"][:4], [[1] * 3, [1] * 3, [0.5] * 3, [0.5] * 3])
        np.testing.assert_array_equal(buf.data["y"][:4], [0, 1, 2, 3])
    fresh = ClassBalancedBuffer(3)
    with pytest.raises(TypeError, match=r"y: got float64 of shape \(2,\) \(array\(\[0.5, 1.7\]\)\), expected integer"):
        fresh.add(rng, x=np.ones((2, 3)), y=np.array([0.5, 1.7]))
    assert fresh.data == {} and fresh.seen_per_class.size == 0  # nothing allocated by the refused batch
    fresh.add(rng, x=np.ones((2, 4)), y=np.array([0, 1]))
    assert fresh.data["x"].shape == (3, 4)
    for buf in (ReservoirBuffer(3), fresh):  # an empty batch, even as lists (float64 to NumPy), adds nothing
        before = (len(buf), buf.n_seen)
        buf.add(rng, x=[], y=[])
        assert (len(buf), buf.n_seen) == before
    with pytest.raises(ValueError, match=r"y: got label 1099511627776, expected class indices < 16777216"):
        fresh.add(rng, x=np.ones((1, 4)), y=np.array([2 ** 40]))  # a count per class up to it: 8 TiB


def test_rnn_classifier_cuts_any_sample_shape_into_steps_in_row_order():
    model = RNNClassifier("gru", 8, 5, 3)
    params = model.init(np.random.default_rng(0), np.float64)
    images = np.random.default_rng(1).normal(size=(2, 4, 6))  # 24 features read in 3 steps of 8
    rows = images.reshape(2, 3, 8)
    np.testing.assert_array_equal(model.forward(params, images), model.forward(params, rows))
    np.testing.assert_array_equal(model.forward(params, images.reshape(2, 24)), model.forward(params, rows))
    with pytest.raises(ValueError, match=r"x: got 25 features, expected a multiple of input_size=8"):
        model.forward(params, np.zeros((2, 5, 5)))


def test_buffer_state_round_trip():
    rng = np.random.default_rng(0)
    buf = ClassBalancedBuffer(10)
    buf.add(rng, x=np.arange(24.0)[:, None], y=np.arange(24) % 3)
    arrays, meta = pack_state({"memory": buf})
    template = ClassBalancedBuffer(10)
    fresh = unpack_state(arrays, meta, {"memory": template})["memory"]
    assert len(template) == 0  # loaded into a copy
    for k in buf.data:
        np.testing.assert_array_equal(fresh.data[k][: len(fresh)], buf.data[k][: len(buf)])
    assert (fresh.size, fresh.n_seen) == (buf.size, buf.n_seen)
    np.testing.assert_array_equal(fresh.seen_per_class, buf.seen_per_class)


# ------------------------------------------------------------------ refresh, SHARP, orthogonal, hypernetwork

def test_refresh_unlearning_step_is_a_fisher_scaled_ascent():
    ln = bound("refresh", unlearn_lr=0.2)
    theta = params_of(ln)
    trainer = FakeTrainer(theta)
    x, y = data(8)
    _, g = value_and_grad(lambda p: ln.loss(p, (x, y, None)), theta)
    ln.unlearn(trainer, (x, y, None))
    F = tree_map(np.square, g)  # the first estimate of the running Fisher is g²
    mean = np.mean(np.concatenate([f.ravel() for f in tree_leaves(F)]))
    for new, old, gi, f in zip(tree_leaves(trainer.params), tree_leaves(theta), tree_leaves(g), tree_leaves(F)):
        np.testing.assert_allclose(new, old + 0.2 * gi / (1 + f / mean), rtol=1e-12)
    # ascent: the loss on the batch goes up
    assert float(ln.loss(trainer.params, (x, y, None))) > float(ln.loss(theta, (x, y, None)))
    # a second step: the running Fisher is the EMA F ← ρF + (1 − ρ)g², g taken at the new θ
    theta1 = trainer.params
    x2, y2 = data(8, seed=4)
    _, g2 = value_and_grad(lambda p: ln.loss(p, (x2, y2, None)), theta1)
    ln.unlearn(trainer, (x2, y2, None))
    F2 = tree_map(lambda f, g: 0.99 * f + 0.01 * g ** 2, F, g2)
    for got, want in zip(tree_leaves(ln.fisher), tree_leaves(F2)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)
    mean2 = np.mean(np.concatenate([f.ravel() for f in tree_leaves(F2)]))
    for new, old, gi, f in zip(tree_leaves(trainer.params), tree_leaves(theta1), tree_leaves(g2), tree_leaves(F2)):
        np.testing.assert_allclose(new, old + 0.2 * gi / (1 + f / mean2), rtol=1e-12)
    # `every`: the unlearning step runs before every k-th step only
    ln2 = bound("refresh", unlearn_lr=0.2, every=2)
    t2 = FakeTrainer(theta)
    t2.step_count = 1
    ln2.prepare_batch(t2, (x, y, None))
    assert t2.params is theta and ln2.fisher is None
    t2.step_count = 2
    ln2.prepare_batch(t2, (x, y, None))  # empty buffer: the batch is (x, y), as in the first check
    for new, old, gi, f in zip(tree_leaves(t2.params), tree_leaves(theta), tree_leaves(g), tree_leaves(F)):
        np.testing.assert_allclose(new, old + 0.2 * gi / (1 + f / mean), rtol=1e-12)


def test_sharp_keeps_density_freezes_stable_units_and_replays_recent_classes():
    model = MLPClassifier(N_IN, (10,), N_OUT)
    ln = bound("sharp", model=model, density=0.4, rewire_every=3, drop_fraction=0.3, freeze_fraction=0.5,
               recent_classes=2, memory_size=40, replay_batch=8)
    theta = params_of(ln)
    n_active = int(round(0.4 * 10 * N_IN))
    assert ln.masks[0].sum() == n_active and np.all(theta[0]["weight"][~ln.masks[0]] == 0)
    trainer = Trainer(ln.loss, theta, optim.sgd(0.1), hooks=ln)
    x, y = data(60)
    for s in range(7):
        idx = np.arange(8) + 8 * s
        trainer.step((x[idx], y[idx], None))
        assert np.all(trainer.params[0]["weight"][~ln.masks[0]] == 0)
        assert ln.masks[0].sum() == n_active  # drop/regrow never changes the count
    W, b = trainer.params[0]["weight"], trainer.params[0]["bias"]
    activity = np.maximum(x @ W.T + b, 0).mean(0)  # mean |h| over the experience's 60 samples
    ln.after_experience(trainer, experience(x, y))
    assert ln.stable.sum() == 5
    assert set(np.flatnonzero(ln.stable)) == set(np.argsort(-activity)[:5])  # the most active units
    frozen_before = trainer.params[0]["weight"][ln.stable].copy()
    bias_before = trainer.params[0]["bias"][ln.stable].copy()
    x2 = x[:16] + 1.0
    y2 = np.array([0, 1] * 8)  # only classes 0 and 1 from now on: class 2 leaves the recent set
    for s in range(2):
        trainer.step((x2[8 * s:8 * s + 8], y2[8 * s:8 * s + 8], None))
    np.testing.assert_array_equal(trainer.params[0]["weight"][ln.stable], frozen_before)
    np.testing.assert_array_equal(trainer.params[0]["bias"][ln.stable], bias_before)
    assert set(np.unique(ln.memory.data["y"][: len(ln.memory)])) <= {0, 1}


PARARNN = [RNNClassifier("diaggru", N_IN, 6, N_OUT), RNNClassifier("diaggru", N_IN, 6, N_OUT, cell_kwargs=(("heads", 2),)),
           RNNClassifier("cifg-lstm", N_IN, 6, N_OUT)]
PARARNN_IDS = ["diaggru", "diaggru-2-heads", "cifg-lstm"]


@pytest.mark.parametrize("model", [MLPClassifier(N_IN, (10,), N_OUT), RNNClassifier("leaky", N_IN, 6, N_OUT)] + PARARNN,
                         ids=["mlp", "leaky"] + PARARNN_IDS)  # leaky: per-unit time constants are held too
def test_sharp_holds_stable_units_and_masks_under_adam(model):
    """Momentum keeps moving parameters whose gradient is zeroed: SHARP holds them in the update."""
    ln = bound("sharp", model=model, density=0.6, rewire_every=1000, freeze_fraction=0.5, replay_batch=8)
    theta = params_of(ln)
    paths = model.sparse_paths(theta)
    assert len(ln.masks) == len(paths) >= 1  # grouped ParaRNN input weights are sparse too
    masked = set(getattr(model, "masked_diagonal_paths", lambda: [])())  # never connections (leaky)
    for path, mask in zip(paths, ln.masks):
        assert mask.sum() == max(1, round(0.6 * (mask.size - (mask.shape[0] if path in masked else 0))))
    trainer = Trainer(ln.loss, theta, optim.adamw(0.01, weight_decay=0.1), hooks=ln)
    x, y = data(60)
    for s in range(7):
        trainer.step((x[8 * s:8 * s + 8], y[8 * s:8 * s + 8], None))
    ln.after_experience(trainer, experience(x, y))
    assert 0 < ln.stable.sum() < ln.stable.size
    units = [tuple(p) for p in model.unit_paths(trainer.params)]
    if isinstance(model, RNNClassifier):  # every parameter of these cells' last layer feeds units row by row
        last = len(trainer.params["rnn"]) - 1
        assert set(units) == {("rnn", last, k) for k in trainer.params["rnn"][last]}
    held = {p: ln._frozen(p, np.shape(get_path(trainer.params, p)), units) for p in units}
    before = tree_map(np.copy, trainer.params)
    for s in range(5):
        trainer.step((x[8 * s:8 * s + 8] + 1.0, y[8 * s:8 * s + 8], None))
    for path, frozen in held.items():
        now, then = get_path(trainer.params, path), get_path(before, path)
        np.testing.assert_array_equal(now[frozen], then[frozen])
        assert np.abs(now[~frozen] - then[~frozen]).max() > 1e-4  # plastic units still learn
    for path, mask in zip(paths, ln.masks):
        assert np.all(get_path(trainer.params, path)[~mask] == 0)



@pytest.mark.parametrize("regrow", ["random", "gradient"])
def test_sharp_never_spends_connections_on_a_leaky_rnns_masked_diagonal(regrow):
    """LeakyRNN's forward uses W_hh ⊙ (1 − I): the diagonal is never a connection, so the density
    applies to the H(H − 1) other entries, at init and after every drop/regrow round."""
    H = 8
    model = RNNClassifier("leaky", N_IN, H, N_OUT, num_layers=2)
    ln = bound("sharp", model=model, density=0.5, rewire_every=1, drop_fraction=0.3, regrow=regrow,
               freeze_fraction=0.0, replay_batch=8)
    theta = params_of(ln)
    paths = model.sparse_paths(theta)
    masked = set(model.masked_diagonal_paths())
    assert masked == {("rnn", 0, "weight_hh"), ("rnn", 1, "weight_hh")} and masked <= set(paths)

    def check():
        for path, mask in zip(paths, ln.masks):
            usable = mask.size - (H if path in masked else 0)
            assert mask.sum() == round(0.5 * usable), path
            if path in masked:
                assert not np.diag(mask).any(), path
    check()
    trainer = Trainer(ln.loss, theta, optim.adam(0.05), hooks=ln)
    x, y = data(80)
    hh = paths.index(("rnn", 0, "weight_hh"))
    changed = False
    for s in range(10):
        before = ln.masks[hh].copy()
        trainer.step((x[8 * s:8 * s + 8], y[8 * s:8 * s + 8], None))
        changed |= not np.array_equal(before, ln.masks[hh])
        check()
    assert changed  # the rounds did rewire the recurrent weights


@pytest.mark.parametrize("model,readout", [(MLPClassifier(N_IN, (6, 5), N_OUT), (2,)),
                                           (RNNClassifier("lstm", N_IN, 5, N_OUT), ("heads", "class"))],
                         ids=["mlp", "lstm"])
def test_sharp_replay_loss_matches_its_formula(model, readout):
    """β · mean CE(h Wᵀ + b, y) on stored activations: value and gradient by the closed form and
    by finite differences; the stored h are constants, so only the readout gets a gradient."""
    ln = bound("sharp", model=model, replay_weight=0.7, memory_size=40)
    theta = params_of(ln, 1)
    rng = np.random.default_rng(2)
    h, y = rng.normal(size=(7, 5)), rng.integers(0, N_OUT, 7)
    f = lambda p: ln.replay_loss(p, h, y)  # noqa: E731
    value, grad = value_and_grad(f, theta)
    W, b = get_path(theta, readout)["weight"], get_path(theta, readout)["bias"]
    logp = np.log(softmax(h @ W.T + b))
    assert value == pytest.approx(0.7 * -logp[np.arange(7), y].mean(), rel=1e-12)
    gW, gb = linear_model_grads(W, b, h, y)
    np.testing.assert_allclose(get_path(grad, readout)["weight"], 0.7 * gW.mean(0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(get_path(grad, readout)["bias"], 0.7 * gb.mean(0), rtol=1e-10, atol=1e-14)
    check_gradient_fd(f, theta, grad)
    head = {id(v) for v in get_path(grad, readout).values()}
    assert all(not np.any(g) for g in tree_leaves(grad) if id(g) not in head)  # hidden layers, cells: zero

    # extra_loss: nothing before anything is stored; then the replay of the hidden activations the
    # first batch had before its update (all 8 fit in the memory and in one replay batch)
    trainer = Trainer(ln.loss, theta, optim.sgd(0.1), hooks=ln)
    x, y = data(16, seed=3)
    assert ln.extra_loss(trainer, theta, (x[:8], y[:8], None)) is None
    h0 = np.asarray(model.hidden(theta, x[:8]))
    trainer.step((x[:8], y[:8], None))
    ln.prepare_batch(trainer, (x[8:], y[8:], None))
    now = trainer.params
    W, b = get_path(now, readout)["weight"], get_path(now, readout)["bias"]
    expected = 0.7 * -np.log(softmax(h0 @ W.T + b))[np.arange(8), y[:8]].mean()
    assert float(ln.extra_loss(trainer, now, (x[8:], y[8:], None))) == pytest.approx(expected, rel=1e-12)


def test_extend_basis_captures_the_energy_threshold():
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(100, 3)) @ rng.normal(size=(3, 8)) + 0.01 * rng.normal(size=(100, 8))
    basis = extend_basis(None, inputs, 0.99)
    np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-10)
    assert basis.shape[1] == 3  # three directions carry > 99 % of the energy
    covered = np.sum((inputs @ basis) ** 2) / np.sum(inputs ** 2)
    assert covered >= 0.99
    more = extend_basis(basis, rng.normal(size=(50, 8)), 0.99)
    assert more.shape[1] > 3 and np.allclose(more[:, :3] @ more[:, :3].T @ basis, basis, atol=1e-8)
    g = rng.normal(size=(4, 8))
    np.testing.assert_allclose(project_out(g, basis) @ basis, 0, atol=1e-12)



def test_extend_basis_at_threshold_one_adds_no_direction_for_inputs_already_in_its_span():
    """Rounding leaves the covered energy a hair below the total; a direction of pure rounding
    residual (no energy of the inputs) must not be added: it would remove plasticity for good."""
    rng = np.random.default_rng(0)
    D = 8
    for _ in range(40):
        A = rng.normal(size=(30, 3)) @ rng.normal(size=(3, D))
        basis = extend_basis(None, A, 1.0)
        assert basis.shape[1] == 3
        inside = rng.normal(size=(30, 3)) @ A[:3]  # inside span(basis)
        assert extend_basis(basis, inside, 1.0) is basis
        new = rng.normal(size=(1, D))  # a genuine new direction is still added, and only it
        more = extend_basis(basis, rng.normal(size=(30, 4)) @ np.concatenate([A[:3], new]), 1.0)
        assert more.shape[1] == 4
        residual = new[0] - more @ (more.T @ new[0])
        assert np.linalg.norm(residual) < 1e-10 * np.linalg.norm(new)


def test_extend_basis_refuses_a_basis_that_is_not_orthonormal():
    with pytest.raises(ValueError, match=r"basis: got columns that are not orthonormal"):
        extend_basis(np.ones((3, 2)), np.eye(3), 0.9)
    with pytest.raises(ValueError, match=r"basis: got columns that are not orthonormal"):
        extend_basis(2 * np.eye(3)[:, :1], np.eye(3), 0.9)
    rng = np.random.default_rng(0)
    basis = extend_basis(None, rng.normal(size=(10, 5)) @ rng.normal(size=(5, 6)), 0.9)
    # a float32 copy is orthonormal to float32 rounding: accepted, like the float64 one
    for b in (basis, basis.astype(np.float32)):
        assert extend_basis(b, rng.normal(size=(4, 6)), 0.9).shape[1] >= b.shape[1]
    with pytest.raises(ValueError, match=r"basis: got columns that are not orthonormal"):
        extend_basis((basis * (1 + 1e-3)).astype(np.float32), np.eye(6), 0.9)

@pytest.mark.parametrize("model", [MLPClassifier(N_IN, (6,), N_OUT), RNNClassifier("lstm", 2, 5, N_OUT)],
                         ids=["mlp", "lstm"])
def test_orthogonal_updates_leave_past_layer_outputs_unchanged(model):
    ln = bound("orthogonal", model=model, threshold=1.0, samples=20)
    theta = params_of(ln)
    rng = np.random.default_rng(2)
    # low-rank past inputs: every step (pair of features) is a multiple of one direction v
    x = (rng.normal(size=(20, 2, 1)) * np.array([0.6, -0.8])).reshape(20, 4)
    y = rng.integers(0, N_OUT, 20)
    trainer = Trainer(ln.loss, theta, optim.sgd(0.5), hooks=ln)
    ln.after_experience(trainer, experience(x, y))
    before = model.projection_layers(trainer.params, x)
    x2, y2 = data(8, seed=9)
    trainer.step((x2 * 3, y2, None))  # a different task, with inputs off the past span
    from seqcore.learners.base import get_path
    for (w_path, b_path, inputs) in before:
        dW = get_path(trainer.params, w_path) - get_path(theta, w_path)
        db = get_path(trainer.params, b_path) - get_path(theta, b_path)
        np.testing.assert_allclose(inputs @ dW.T + db, 0, atol=1e-9)
    moved = [np.abs(get_path(trainer.params, w) - get_path(theta, w)).max() for w, _, _ in before]
    assert max(moved) > 1e-3  # the step did change the weights, only not on the past inputs' span
    # the RNN's recorded inputs are the oracle's: x_t for weight_ih, h_{t-1} for weight_hh
    if isinstance(model, RNNClassifier):
        hs = np.asarray(model.net.features(theta, x.reshape(20, 2, 2)))
        np.testing.assert_allclose(before[0][2], x.reshape(40, 2))
        np.testing.assert_allclose(before[1][2], np.concatenate([np.zeros((20, 1, 5)), hs[:, :1]], 1).reshape(40, 5))


@pytest.mark.parametrize("model", [MLPClassifier(N_IN, (6,), N_OUT), RNNClassifier("lstm", N_IN, 5, N_OUT),
                                   RNNClassifier("leaky", N_IN, 5, N_OUT)] + PARARNN,
                         ids=["mlp", "lstm", "leaky"] + PARARNN_IDS)
def test_orthogonal_projection_keeps_past_outputs_under_adamw(model):
    """The update is projected after the optimizer, and unlisted parameters (diagonal
    recurrences, peepholes, time constants) are held: outputs on past inputs stay put."""
    ln = bound("orthogonal", model=model, threshold=1.0, samples=20)
    theta = params_of(ln)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 1)) * np.array([0.6, -0.8, 0.3, 0.5])  # rank-one past inputs (one step)
    y = rng.integers(0, N_OUT, 20)
    trainer = Trainer(ln.loss, theta, optim.adamw(0.05, weight_decay=0.1), hooks=ln)
    ln.after_experience(trainer, experience(x, y))
    past = np.asarray(model.forward(theta, x))
    x2, y2 = data(8, seed=9)
    for _ in range(3):
        trainer.step((x2 * 3, y2, None))
    # directions below 1e-12 of the inputs' energy stay out of the basis: changes of ~1e-6 relative
    np.testing.assert_allclose(np.asarray(model.forward(trainer.params, x)), past, atol=1e-6)
    moved = max(np.abs(a - b).max() for a, b in zip(tree_leaves(trainer.params), tree_leaves(theta)))
    assert moved > 1e-3


def test_masked_diagonal_projection_matches_a_basis_per_row_without_its_coordinate():
    rng = np.random.default_rng(0)
    H = 8
    # past inputs [z; 1] (bias column last), one of them along e_0 so that e_0 lies in the span
    z = np.concatenate([rng.normal(size=(4, H)), np.eye(H)[:1]])
    inputs = np.concatenate([z, np.ones((5, 1))], axis=1)
    basis = extend_basis(None, inputs, 1.0)
    g = rng.normal(size=(H, H + 1))
    got = project_out_masked_diagonal(g, basis)
    for i in range(H):  # oracle: row i sees the inputs without coordinate i (the forward masks it)
        seen = np.delete(inputs, i, axis=1)
        U, S, _ = np.linalg.svd(seen.T, full_matrices=False)
        Q = U[:, S > 1e-10 * S[0]]
        row = np.delete(g[i], i)
        np.testing.assert_allclose(np.delete(got[i], i), row - Q @ (Q.T @ row), atol=1e-12)
        assert got[i, i] == 0
    np.testing.assert_allclose(got @ inputs.T, 0, atol=1e-12)  # the diagonal is 0, so masking changes nothing
    with pytest.raises(ValueError, match=r"grad: got shape \(9, 8\), expected out <= D"):
        project_out_masked_diagonal(np.zeros((9, 8)), basis[:8])
    with pytest.raises(ValueError, match=r"basis: got shape \(8, 2\), expected \(9, k\)"):
        project_out_masked_diagonal(g, np.zeros((8, 2)))


@pytest.mark.parametrize("layers", [1, 2])
def test_orthogonal_projection_keeps_past_outputs_of_a_leaky_rnn_over_several_steps(layers):
    """LeakyRNN's forward masks weight_hh's diagonal, so row i must be projected without
    h_i; with T > 1 the past h_{t−1} are non-zero and a plain (I − MMᵀ) would leak."""
    model = RNNClassifier("leaky", 3, 10, N_OUT, num_layers=layers)
    assert model.masked_diagonal_paths() == [("rnn", i, "weight_hh") for i in range(layers)]
    ln = bound("orthogonal", model=model, threshold=1.0, samples=2)
    theta = params_of(ln)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 4 * 3)), rng.integers(0, N_OUT, 2)  # 2 past sequences of T = 4 steps
    trainer = Trainer(ln.loss, theta, optim.adamw(0.05, weight_decay=0.1), hooks=ln)
    ln.after_experience(trainer, experience(x, y))
    past = np.asarray(model.forward(theta, x))
    x2, y2 = rng.normal(size=(8, 12)), rng.integers(0, N_OUT, 8)
    for _ in range(3):
        trainer.step((x2, y2, None))
    np.testing.assert_allclose(np.asarray(model.forward(trainer.params, x)), past, rtol=0, atol=1e-10)
    for i in range(layers):
        dW = trainer.params["rnn"][i]["weight_hh"] - theta["rnn"][i]["weight_hh"]
        assert np.abs(dW).max() > 1e-3  # the recurrent weights did learn, off the past span
        assert np.all(np.diag(dW) == 0)


def test_hypernetwork_keeps_earlier_embeddings_under_adam():
    ln = bound("hypernet", model=MLPClassifier(N_IN, (5,), N_OUT), hnet_hidden=6, task_embedding=3,
               chunk_embedding=2, chunk_size=7)
    trainer = Trainer(ln.loss, params_of(ln), optim.adam(0.01), hooks=ln)
    x, y = data(40)
    ln.index = 0  # set by the continual loop
    ln.before_experience(trainer, experience(x, y, 0))
    for s in range(5):
        trainer.step((x[8 * s:8 * s + 8], y[8 * s:8 * s + 8], None))
    first = np.array(trainer.params["task_embeddings"][0])
    ln.after_experience(trainer, experience(x, y, 0))
    ln.index = 1
    ln.before_experience(trainer, experience(x, y, 1))
    for s in range(5):
        trainer.step((x[8 * s:8 * s + 8] + 1, y[8 * s:8 * s + 8], None))
    np.testing.assert_array_equal(trainer.params["task_embeddings"][0], first)
    assert np.abs(trainer.params["task_embeddings"][1] - params_of(ln)["task_embeddings"][1]).max() > 1e-4


def hypernet_weights_oracle(ln, hp, task):
    """The documented generator written out in NumPy: the cell reads ``[e_task ; c_k]`` for the K chunk
    steps, the head maps each output to a chunk, and each target tensor is mean + std · output with
    the mean and std of its default init (std 0.1 for a constant tensor). Returns (n_target,)."""
    E, K = ln.task_embedding, ln.n_chunks
    inp = np.concatenate([np.broadcast_to(hp["task_embeddings"][task], (1, K, E)), hp["chunk_embeddings"][None]], -1)
    hs, _ = ln._cell.apply(hp["cell"], inp)
    raw = (np.asarray(hs) @ hp["head"]["weight"].T + hp["head"]["bias"]).reshape(-1)[: ln.n_target]
    template, _ = tree_flatten(ln.model.init(np.random.default_rng(0), np.float64))
    return np.concatenate([v.mean() + (v.std() if v.std() > 0 else 0.1) * raw[a:a + v.size]
                           for v, a in zip(template, np.cumsum([0] + [v.size for v in template]))])


def test_hypernetwork_generates_target_weights_and_regularises_old_tasks():
    target = MLPClassifier(N_IN, (5,), N_OUT)
    ln = bound("hypernet", model=target, hnet_hidden=6, task_embedding=3, chunk_embedding=2, chunk_size=7,
               strength=0.3)
    hp = params_of(ln)
    assert ln.n_target == 5 * N_IN + 5 + N_OUT * 5 + N_OUT and ln.n_chunks == -(-ln.n_target // 7)
    x, y = data(6)
    ln.index = 0
    flat = np.asarray(ln.generate(hp, [0]))[0]
    W0 = flat[:20].reshape(5, N_IN)
    np.testing.assert_allclose(np.asarray(ln.predict(hp, x, 0)),
                               np.asarray(target.forward([{"weight": W0, "bias": flat[20:25]},
                                                          {"weight": flat[25:40].reshape(N_OUT, 5),
                                                           "bias": flat[40:]}], x)), rtol=1e-12)
    trainer = FakeTrainer(hp)
    ln.index = 2
    ln.before_experience(trainer, experience(x, y, 2))
    # the stored targets are the weights generated for the old embeddings 0 and 1 at these parameters
    stored = np.stack([hypernet_weights_oracle(ln, hp, j) for j in (0, 1)])
    np.testing.assert_allclose(ln.targets, stored, rtol=1e-12, atol=1e-15)
    moved = tree_map(lambda v: v + 0.01, hp)
    ln._cache = None
    value, grad = value_and_grad(ln.regulariser, moved)
    gen = np.stack([hypernet_weights_oracle(ln, moved, j) for j in (0, 1)])
    assert value == pytest.approx(0.3 * np.sum((gen - stored) ** 2), rel=1e-10)

    def reg(p):
        ln._cache = None
        return ln.regulariser(p)
    check_gradient_fd(reg, moved, grad)
    g = ln.transform_grads(trainer, grad, None)  # only the current task's embedding may move
    assert np.all(g["task_embeddings"][[0, 1]] == 0) and np.all(g["task_embeddings"][2] == grad["task_embeddings"][2])



def test_hypernetwork_generates_weights_centred_like_the_default_init():
    """W = mean(init) + scale · output per target tensor (scale: the init's std, 0.1 for a
    constant tensor). LeakyRNN's τ (init constant 1) is generated around 1, so the task loss
    reaches the hypernetwork through τ; without the offset τ ≈ 0, clamped to 1, no gradient."""
    from seqcore import ops
    model = RNNClassifier("leaky", N_IN, 4, N_OUT)
    ln = bound("hypernet", model=model, hnet_hidden=6, task_embedding=3, chunk_embedding=2, chunk_size=16)
    hp = params_of(ln)
    ln.index = 0
    flat = np.asarray(ln.generate(hp, [0]))[0]
    np.testing.assert_allclose(flat, hypernet_weights_oracle(ln, hp, 0), rtol=1e-12, atol=1e-15)
    tau = np.asarray(ln.target_params(flat)["rnn"][0]["tau"])
    init_tau = model.init(np.random.default_rng(0), np.float64)["rnn"][0]["tau"]
    assert np.abs(tau - init_tau.mean()).max() < 0.5 and np.any(tau > 1)
    x, y = data(16)
    # the gradient through τ alone: the loss with every other generated tensor held constant
    tau_at = np.asarray(ln.target_params(np.arange(ln.n_target, dtype=np.float64))["rnn"][0]["tau"]).astype(int)
    assert np.array_equal(flat[tau_at], tau)
    keep = np.zeros(ln.n_target)
    keep[tau_at] = 1.0

    def through_tau(p):
        row = ops.add(ops.mul(ops.getitem(ln.generate(p, [0]), 0), keep), flat * (1 - keep))
        return ln.cross_entropy(model.forward(ln.target_params(row), x), y)
    _, g_hnet = value_and_grad(through_tau, hp)
    # oracle: dL/dτ of the target model, times dτ/d(head bias) = 0.1 at τ's slot of its chunk
    _, g_target = value_and_grad(lambda q: ln.cross_entropy(model.forward(q, x), y), ln.target_params(flat))
    dtau = g_target["rnn"][0]["tau"]
    assert np.abs(dtau).max() > 1e-6  # zero before the offset: every generated τ sat below the clamp at 1
    expected_bias = np.zeros(ln.chunk_size)
    np.add.at(expected_bias, tau_at % ln.chunk_size, 0.1 * dtau)
    np.testing.assert_allclose(g_hnet["head"]["bias"], expected_bias, rtol=1e-9, atol=1e-15)


def test_learner_state_round_trip_restores_every_field():
    ln = bound("ewc", fisher_samples=10)
    theta = params_of(ln)
    ln.after_experience(FakeTrainer(theta), experience(*data()))
    ln.index = 1
    arrays, meta = ln.state_dict()
    other = bound("ewc", fisher_samples=10)
    other.load_state_dict(arrays, meta)
    assert other.index == 1 and other.constant == ln.constant
    for a, b in zip(tree_leaves(other.importance), tree_leaves(ln.importance)):
        np.testing.assert_array_equal(a, b)
    assert other.rng.bit_generator.state == ln.rng.bit_generator.state
    for field in ("anchor", "weighted_anchor_sum", "weighted_square_sum"):
        for a, b in zip(tree_leaves(getattr(other, field)), tree_leaves(getattr(ln, field))):
            np.testing.assert_array_equal(a, b)
    # the restored learner behaves the same: its penalty is the EWC formula at any θ
    theta2 = params_of(ln, 5)
    F = ln.importance  # one task: A = F and m = θ*
    direct = 500.0 * weighted_squares(F, theta2, theta)
    assert float(other.penalty(theta2)) == pytest.approx(direct, rel=1e-10)
    assert float(other.penalty(theta2)) == pytest.approx(float(ln.penalty(theta2)), rel=1e-12)


# ------------------------------------------------------------------ batch composition of rehearsal learners

def test_replay_appends_buffer_samples_and_stores_the_current_batch():
    ln = bound("replay", memory_size=100, replay_batch=5)
    theta = params_of(ln)
    trainer = Trainer(ln.loss, theta, optim.sgd(0.0), hooks=ln)
    x, y = data(8, seed=2)
    assert ln.prepare_batch(trainer, (x, y, None)) == (x, y, None)  # empty buffer: the batch as it is
    trainer.step((x, y, None))
    np.testing.assert_array_equal(ln.memory.data["x"][:8], x)  # stored after the step
    np.testing.assert_array_equal(ln.memory.data["y"][:8], y)
    x2, y2 = data(6, seed=3)
    bx, by, _ = ln.prepare_batch(trainer, (x2, y2, None))
    assert bx.shape == (11, N_IN) and by.shape == (11,)
    np.testing.assert_array_equal(bx[:6], x2)
    np.testing.assert_array_equal(by[:6], y2)
    rows = [int(np.flatnonzero((x == r).all(1))[0]) for r in bx[6:]]  # every replayed row is a stored one
    assert len(set(rows)) == 5 and np.array_equal(by[6:], y[rows])
    # the loss of a step is taken on the concatenated batch
    value = float(ln.loss(theta, (bx, by, None)))
    logp = np.log(softmax(np.asarray(ln.model.forward(theta, bx))))
    assert value == pytest.approx(-logp[np.arange(11), by].mean(), rel=1e-12)


def _labelled_experiences(n, size=50):
    """Experience j holds inputs filled with j and labels j (so every row says where it came from)."""
    return [experience(np.full((size, N_IN), float(j)), np.full(size, j), j) for j in range(n)]


@pytest.mark.parametrize("name", ["joint", "cumulative"])
def test_joint_and_cumulative_draw_from_the_documented_experiences(name):
    exps = _labelled_experiences(3)
    ln = learners.make(name)
    ln.bind(MLPClassifier(N_IN, (5,), N_OUT), n_experiences=3, rng=np.random.default_rng(0),
            data_for=lambda j: exps[j])
    counts = np.zeros(3)
    for index in (0, 1, 2):
        ln.before_experience(None, exps[index])
        seen = np.zeros(3)
        for _ in range(40):
            x, y, _ = ln.prepare_batch(None, (np.zeros((30, N_IN)), np.zeros(30, int), None))
            assert x.shape == (30, N_IN) and np.array_equal(x[:, 0], y)  # rows keep their labels
            seen += np.bincount(y, minlength=3)
        allowed = 3 if name == "joint" else index + 1  # joint: every experience, future ones too
        assert np.all(seen[allowed:] == 0) and np.all(seen[:allowed] > 0)
        # each allowed experience is picked with probability 1/allowed per sample (1200 samples)
        p = 1 / allowed
        assert np.all(np.abs(seen[:allowed] - 1200 * p) < 5 * np.sqrt(1200 * p * (1 - p)) + 1e-9), seen
        counts += seen
    assert counts.sum() == 3 * 1200


def test_agem_learner_projects_against_the_gradient_on_its_memory():
    model = MLPClassifier(N_IN, (), N_OUT)  # softmax regression: closed-form gradients
    ln = bound("agem", model=model, memory_per_experience=12, replay_batch=100)
    theta = params_of(ln, 1)
    trainer = FakeTrainer(theta)
    x, y = data(12, seed=5)
    g_none = {"a": np.ones(3)}
    assert ln.transform_grads(trainer, g_none, None) is g_none  # no memory yet: unchanged
    ln.after_experience(trainer, experience(x, y))  # all 12 samples are stored
    assert sorted(map(tuple, ln.memory_x[0])) == sorted(map(tuple, x))
    gW, gb = linear_model_grads(theta[0]["weight"], theta[0]["bias"], x, y)
    ref = [gW.mean(0), gb.mean(0)]  # the memory gradient, over all stored samples (replay_batch >= 12)
    for sign in (-1.0, 1.0):  # a conflicting and an agreeing gradient
        g = [{"weight": sign * ref[0] + 0.1 * np.arange(N_OUT * N_IN).reshape(N_OUT, N_IN) / 12,
              "bias": sign * ref[1]}]
        out = ln.transform_grads(trainer, g, None)
        dot = np.sum(g[0]["weight"] * ref[0]) + np.sum(g[0]["bias"] * ref[1])
        rr = np.sum(ref[0] ** 2) + np.sum(ref[1] ** 2)
        coef = dot / rr if dot < 0 else 0.0
        np.testing.assert_allclose(out[0]["weight"], g[0]["weight"] - coef * ref[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(out[0]["bias"], g[0]["bias"] - coef * ref[1], rtol=1e-9, atol=1e-12)
        new_dot = np.sum(np.asarray(out[0]["weight"]) * ref[0]) + np.sum(np.asarray(out[0]["bias"]) * ref[1])
        assert new_dot >= -1e-10


def test_power_law_learner_replays_the_scheduled_tasks():
    from seqcore.tasks.streams import power_law_steps
    exps = _labelled_experiences(6, size=20)
    ln = learners.make("power-law", memory_per_experience=20, replay_batch=40, exponent=1.0, budget=2,
                       schedule_seed=4)
    ln.bind(MLPClassifier(N_IN, (5,), N_OUT), n_experiences=6, rng=np.random.default_rng(0))
    steps = power_law_steps(6, 1.0, 2, 4)
    for t in range(6):
        assert ln.rehearsed(t) == tuple(steps[t][1:])
        ln.before_experience(None, exps[t])
        x0, y0 = np.full((3, N_IN), -1.0), np.full(3, 0)
        x, y, _ = ln.prepare_batch(None, (x0, y0, None))
        np.testing.assert_array_equal(x[:3], x0)
        replayed = set(x[3:, 0].astype(int))
        assert replayed == set(steps[t][1:])  # exactly the scheduled past tasks (all their rows fit)
        assert len(y) == 3 + 20 * len(steps[t][1:])
        ln.after_experience(None, exps[t])


# ------------------------------------------------------------------ multi-head (task-incremental) models

HEADS, HEAD_SIZE = 3, 2


def multi_head(name="naive", **hp):
    learner = learners.make(name, **hp)
    learner.bind(MLPClassifier(N_IN, (5,), HEADS * HEAD_SIZE), n_experiences=HEADS, rng=np.random.default_rng(7),
                 head_size=HEAD_SIZE)
    return learner


def log_softmax_np(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_multi_head_cross_entropy_is_taken_over_each_samples_own_head():
    ln = multi_head()
    theta = params_of(ln, 3)
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(8, N_IN)), rng.integers(0, HEADS * HEAD_SIZE, 8)  # global labels
    value, grad = value_and_grad(lambda p: ln.loss(p, (x, y, None)), theta)
    z = np.asarray(ln.model.forward(theta, x))
    head, local = y // HEAD_SIZE, y % HEAD_SIZE
    direct = -np.mean([log_softmax_np(z[i:i + 1, h * HEAD_SIZE:(h + 1) * HEAD_SIZE])[0, c]
                       for i, (h, c) in enumerate(zip(head, local))])
    assert value == pytest.approx(direct, rel=1e-12)
    check_gradient_fd(lambda p: ln.loss(p, (x, y, None)), theta, grad)
    # a batch of head 1 only leaves the read-out rows of heads 0 and 2 untouched
    y1 = HEAD_SIZE + rng.integers(0, HEAD_SIZE, 8)
    _, g1 = value_and_grad(lambda p: ln.loss(p, (x, y1, None)), theta)
    readout = g1[-1]["weight"]
    assert np.all(readout[:HEAD_SIZE] == 0) and np.all(readout[2 * HEAD_SIZE:] == 0)
    assert np.abs(readout[HEAD_SIZE:2 * HEAD_SIZE]).max() > 0
    with pytest.raises(ValueError, match="head_size: got 0"):
        learners.make("naive").bind(ln.model, n_experiences=3, head_size=0)


def test_multi_head_lwf_distils_each_earlier_head_separately():
    ln = multi_head("lwf", strength=0.8, temperature=2.0)
    teacher, theta = params_of(ln, 0), params_of(ln, 1)
    x, y = data(7)
    for head in (0, 1):  # two experiences done: heads 0 and 1 are old, head 2 is being learnt
        ln.after_experience(FakeTrainer(teacher), ExperienceData(head, head, None, None, (), head))
    assert ln.old_heads == [0, 1]
    z_old, z = np.asarray(ln.model.forward(teacher, x)), lambda p: np.asarray(ln.model.forward(p, x))
    direct = 0.0
    for h in (0, 1):
        block = slice(h * HEAD_SIZE, (h + 1) * HEAD_SIZE)
        q = softmax(z_old[:, block], 2.0)
        direct += -(q * np.log(softmax(z(theta)[:, block], 2.0))).sum(1).mean()
    value, grad = value_and_grad(lambda p: ln.distillation(p, x), theta)
    assert value == pytest.approx(0.8 * direct, rel=1e-10)
    check_gradient_fd(lambda p: ln.distillation(p, x), theta, grad)
    assert np.all(grad[-1]["weight"][2 * HEAD_SIZE:] == 0)  # the new head is not distilled


def test_multi_head_sampled_fisher_draws_labels_within_the_head():
    ln = multi_head("ewc", fisher="sampled")
    theta = params_of(ln, 2)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, N_IN)), np.full(30, 2 * HEAD_SIZE)  # every example from head 2
    F = fisher_diagonal(ln, theta, x, y, "sampled", np.random.default_rng(1))
    # only head 2's read-out rows receive gradient: labels were drawn inside head 2
    assert np.all(F[-1]["weight"][: 2 * HEAD_SIZE] == 0) and F[-1]["weight"][2 * HEAD_SIZE:].max() > 0


def test_multi_head_fisher_matches_the_closed_form_of_a_linear_model():
    """Softmax regression with 3 heads of 2: the per-example gradient of −log p_head(y|x) is
    (p_head − e_y) xᵀ on the head's rows and 0 elsewhere; labels of the sampled Fisher are drawn
    from the head's softmax (the single-head test's protocol)."""
    ln = learners.make("ewc", fisher="sampled")
    ln.bind(MLPClassifier(N_IN, (), HEADS * HEAD_SIZE), n_experiences=HEADS, rng=np.random.default_rng(7),
            head_size=HEAD_SIZE)
    p = params_of(ln, 4)
    W, b = p[0]["weight"], p[0]["bias"]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, N_IN))
    y = rng.integers(0, HEADS * HEAD_SIZE, 10)  # global labels: head = y // HEAD_SIZE
    z = x @ W.T + b
    heads = y // HEAD_SIZE
    probs = np.zeros_like(z)
    for i, h in enumerate(heads):
        block = slice(h * HEAD_SIZE, (h + 1) * HEAD_SIZE)
        probs[i, block] = softmax(z[i:i + 1, block])[0]
    draw = np.random.default_rng(11)
    sampled = np.array([draw.choice(HEADS * HEAD_SIZE, p=q) for q in probs])
    assert np.all(sampled // HEAD_SIZE == heads)
    for mode, labels in (("empirical", y), ("sampled", sampled)):
        r = probs - np.eye(HEADS * HEAD_SIZE)[labels]  # zero outside each example's head
        F = fisher_diagonal(ln, p, x, y, mode, np.random.default_rng(11))
        np.testing.assert_allclose(F[0]["weight"], ((r[:, :, None] * x[:, None, :]) ** 2).mean(0), rtol=1e-10,
                                   atol=1e-15)
        np.testing.assert_allclose(F[0]["bias"], (r ** 2).mean(0), rtol=1e-10, atol=1e-15)


# ------------------------------------------------------------------ damaged states and bad names (round 2)

def test_unhashable_learner_name_is_named():
    with pytest.raises(ValueError, match="learner: got"):  # was TypeError: unhashable type
        learners.make(["naive"])


def _ewc_state():
    ln = bound("ewc", fisher_samples=5)
    ln.after_experience(FakeTrainer(params_of(ln)), experience(*data()))
    ln.index = 0
    return ln.state_dict()


def test_load_state_dict_refuses_another_learners_state_and_malformed_meta():
    arrays, meta = _ewc_state()
    with pytest.raises(ValueError, match=r"meta: got fields .*unknown \['weighted_anchor_sum'"):
        bound("l2").load_state_dict(arrays, meta)  # was accepted, setting EWC's fields on L2
    with pytest.raises(ValueError, match=r"missing \['anchor'\]"):
        bound("ewc").load_state_dict(arrays, {k: v for k, v in meta.items() if k != "anchor"})
    with pytest.raises(TypeError, match="meta: got NoneType"):  # was AttributeError
        bound("ewc").load_state_dict(arrays, None)
    with pytest.raises(TypeError, match="arrays: got NoneType"):
        bound("ewc").load_state_dict(None, meta)
    bad = {**meta, "anchor": {"t": "zzz"}}
    with pytest.raises(ValueError, match=r"meta\['anchor'\]: got"):  # was KeyError 'key'
        bound("ewc").load_state_dict(arrays, bad)
    bad = {**meta, "rng": {"t": "rng", "state": {"x": 1}}}
    with pytest.raises(ValueError, match=r"meta\['rng'\]"):
        bound("ewc").load_state_dict(arrays, bad)


@pytest.mark.parametrize("change, error, match", [
    (("anchor/0/bias", np.zeros((7, 7))), ValueError, r"anchor\['0/bias'\]: got shape \(7, 7\)"),  # broadcast later
    (("anchor/0/bias", np.array(["x"] * 5)), TypeError, r"anchor\['0/bias'\]: got dtype"),
    (("importance/0/weight", np.full((5, N_IN), np.nan)), ValueError, r"importance\['0/weight'\]: got NaN"),
])
def test_load_state_dict_checks_parameter_shaped_fields(change, error, match):
    arrays, meta = _ewc_state()
    key, value = change
    arrays = dict(arrays, **{f"learner/{key}": value})
    ln = bound("ewc")
    with pytest.raises(error, match=match):
        ln.load_state_dict(arrays, meta)
    assert ln.anchor is None  # nothing was set


@pytest.mark.parametrize("field, value, match", [
    ("index", "x", "index: got 'x'"),
    ("index", 99, r"index: got 99, expected an int in \[-1, 2\]"),
    ("constant", "x", "constant: got 'x'"),
])
def test_load_state_dict_checks_scalar_fields(field, value, match):
    arrays, meta = _ewc_state()
    with pytest.raises(ValueError, match=match):
        bound("ewc").load_state_dict(arrays, {**meta, field: {"t": "value", "v": value}})


def _replay_state(buffer="reservoir"):
    ln = bound("replay", memory_size=10, buffer=buffer)
    x, y = data(6)
    ln.memory.add(np.random.default_rng(0), x=x, y=y)
    return ln.state_dict()


@pytest.mark.parametrize("key, value, match", [
    ("size", 50, r"state\['size'\]: got 50, expected an int in \[0, 10\]"),   # was a broadcasting error
    ("size", 3, r"state\['data'\]\['x'\]: got shape \(6, 4\), expected \(3, \.\.\.\)"),
    ("size", -1, r"state\['size'\]: got -1"),
    ("n_seen", 2, r"state\['n_seen'\]: got 2"),                               # was accepted
])
def test_buffer_state_is_checked_on_load(key, value, match):
    arrays, meta = _replay_state()
    meta["memory"]["items"]["items"][key]["v"] = value
    with pytest.raises(ValueError, match=r"meta\['memory'\]: " + match):
        bound("replay", memory_size=10).load_state_dict(arrays, meta)


def test_a_refused_state_leaves_the_buffer_as_it_was():
    arrays, meta = _replay_state()
    ln = bound("replay", memory_size=10)
    with pytest.raises(ValueError, match=r"index: got 99"):  # checked after the buffer was read
        ln.load_state_dict(arrays, {**meta, "index": {"t": "value", "v": 99}})
    assert len(ln.memory) == 0 and ln.memory.n_seen == 0  # was loaded in place before the refusal
    ln.load_state_dict(arrays, meta)
    assert len(ln.memory) == 6


def test_buffer_kinds_refuse_each_others_states():
    arrays, meta = _replay_state("reservoir")
    with pytest.raises(ValueError, match=r"expected .*seen_per_class.*ClassBalancedBuffer"):  # was KeyError
        bound("replay", memory_size=10, buffer="class-balanced").load_state_dict(arrays, meta)
    arrays, meta = _replay_state("class-balanced")
    with pytest.raises(ValueError, match=r"state of a ReservoirBuffer"):  # seen_per_class was dropped silently
        bound("replay", memory_size=10).load_state_dict(arrays, meta)
    with pytest.raises(ValueError, match=r"state: got keys"):
        ReservoirBuffer(4).load_state_dict({"capacity": 4, "size": 0})


def test_episodic_memories_must_pair_up_on_load():
    ln = bound("agem", memory_per_experience=5)
    ln.after_experience(None, experience(*data()))
    arrays, meta = ln.state_dict()
    meta["memory_y"]["items"] = []
    with pytest.raises(ValueError, match="memory_x/memory_y: got 1 and 0 memories"):  # was IndexError later
        bound("agem", memory_per_experience=5).load_state_dict(arrays, meta)


def test_sharp_hypernet_and_orthogonal_states_are_checked_on_load():
    sharp = bound("sharp")
    params_of(sharp)
    arrays, meta = sharp.state_dict()
    arrays = dict(arrays, **{"learner/masks/0": np.ones((2, 2), bool)})
    with pytest.raises(ValueError, match=r"masks\[0\]: got a bool array of shape \(2, 2\)"):
        bound("sharp").load_state_dict(arrays, meta)
    hnet = bound("hypernet", chunk_size=16)
    arrays, meta = hnet.state_dict()
    arrays = dict(arrays, **{"learner/targets": np.zeros((1, 3))})
    meta["targets"] = {"t": "array", "key": "learner/targets"}
    with pytest.raises(ValueError, match=r"targets: got a float64 array of shape \(1, 3\)"):
        bound("hypernet", chunk_size=16).load_state_dict(arrays, meta)
    orth = bound("orthogonal", samples=10)
    orth.after_experience(FakeTrainer(params_of(orth)), experience(*data()))
    arrays, meta = orth.state_dict()
    arrays = dict(arrays, **{"learner/bases/0": np.zeros((3, 1))})
    with pytest.raises(ValueError, match=r"bases\[0\]: got a float64 array of shape \(3, 1\)"):
        bound("orthogonal", samples=10).load_state_dict(arrays, meta)


# ---------------------------------------------------------------- argument checks of the public helpers

def test_quadratic_penalty_refuses_trees_unlike_params():
    from seqcore.learners.regularization import quadratic_penalty
    params = [np.ones(3), np.ones(2)]
    # by hand: Σ w (1 − 0)² = 2·3 + 1·2 = 8, times 0.5
    assert float(quadratic_penalty(params, [np.full(3, 2.0), np.ones(2)], [np.zeros(3), np.zeros(2)], 0.5)) == 4.0
    assert float(quadratic_penalty(params, None, [np.zeros(3), np.zeros(2)], 1.0)) == 5.0
    with pytest.raises(ValueError, match=r"^anchor: got a tree with 1 arrays, expected 2 like params"):
        quadratic_penalty(params, None, [np.zeros(3)], 1.0)  # was 3.0: zip dropped the second term
    with pytest.raises(ValueError, match=r"^importance: got a tree with 1 arrays, expected 2 like params"):
        quadratic_penalty(params, [np.ones(3)], [np.zeros(3), np.zeros(2)], 1.0)
    with pytest.raises(ValueError, match=r"^anchor\[1\]: got shape \(1,\), expected \(2,\) like params\[1\]"):
        quadratic_penalty(params, None, [np.zeros(3), np.zeros(1)], 1.0)  # would broadcast
    with pytest.raises(ValueError, match=r"^importance: got an array at importance\['c'\], expected one at "
                                         r"importance\['b'\] like params"):
        quadratic_penalty({"a": np.ones(2), "b": np.ones(2)}, {"a": np.ones(2), "c": np.ones(2)},
                          {"a": np.zeros(2), "b": np.zeros(2)}, 1.0)


def test_per_example_helpers_require_one_label_per_example():
    from seqcore.learners.base import example_gradients
    ln = bound("ewc")
    p = params_of(ln)
    x, y = data(5)
    full = fisher_diagonal(ln, p, x[:2], y[:2])
    with pytest.raises(ValueError, match=r"^y: got 5 labels, expected 2 \(one per example of x\)"):
        fisher_diagonal(ln, p, x[:2], y)  # the extra labels were ignored, giving `full`
    with pytest.raises(ValueError, match=r"^y: got 1 labels, expected 2 \(one per example of x\)"):
        fisher_diagonal(ln, p, x[:2], y[:1], "sampled", np.random.default_rng(0))
    for call in (lambda: fisher_diagonal(ln, p, x[:0], y[:0]), lambda: mas_importance(ln, p, x[:0]),
                 lambda: example_gradients(lambda *a: 0.0, p, x[:0], y[:0], ln.be)):  # returned None / nothing
        with pytest.raises(ValueError, match=r"^x: got 0 examples, expected at least 1"):
            call()
    with pytest.raises(ValueError, match=r"^y: got labels of shape \(\), expected 2"):
        example_gradients(lambda *a: 0.0, p, x[:2], np.int64(0), ln.be)  # refused when called, not when drawn
    assert all(np.array_equal(a, b) for a, b in zip(tree_leaves(full), tree_leaves(fisher_diagonal(ln, p, x[:2], y[:2]))))


def test_learner_cross_entropy_refuses_float_labels_instead_of_flooring_them():
    from seqcore import nn
    from seqcore.learners.base import head_mask
    ln = bound("ewc")
    logits = np.random.default_rng(0).normal(size=(5, N_OUT))
    y = np.array([0, 1, 2, 0, 1])
    assert float(ln.cross_entropy(logits, y.astype(np.uint8))) == pytest.approx(float(nn.cross_entropy(logits, y)),
                                                                                 rel=1e-15)
    with pytest.raises(TypeError, match=r"^y: got float64, expected integer labels"):
        ln.cross_entropy(logits, y + 0.9)  # was the cross-entropy of y: 0.9 floored to class 0
    with pytest.raises(TypeError, match=r"^y: got float64, expected integer labels"):
        head_mask(np.array([1.5]), 4, 2)
    ln.head_size = 2
    with pytest.raises(TypeError, match=r"^y: got float32, expected integer labels"):
        ln.loss(params_of(ln), (data(5)[0], np.zeros(5, np.float32), None))


def test_geometry_helpers_name_the_argument_that_does_not_fit():
    from seqcore.learners.base import softmax, tree_dot
    assert tree_dot({"a": np.ones(3), "b": np.full(2, 2.0)}, {"a": np.ones(3), "b": np.ones(2)}) == 7.0
    with pytest.raises(ValueError, match=r"^b\[0\]: got shape \(4,\), expected \(3,\) like a\[0\]"):
        tree_dot([np.ones(3)], [np.ones(4)])
    with pytest.raises(ValueError, match=r"^reference\[0\]: got shape \(4,\), expected \(3,\) like grads\[0\]"):
        agem_project([-np.ones(3)], [np.ones(4)])
    with pytest.raises(ValueError, match=r"^reference: got a tree with 1 arrays, expected 2 like grads"):
        agem_project([-np.ones(3), np.ones(1)], [np.ones(3)])
    with pytest.raises(ValueError, match=r"^inputs: got an array of shape \(5,\) \(1 dims\), expected 2 dims"):
        extend_basis(None, np.ones(5), 0.9)
    with pytest.raises(ValueError, match=r"^inputs: got shape \(4, 5\), expected \(N, 3\)"):
        extend_basis(np.eye(3)[:, :1], np.ones((4, 5)), 0.9)
    with pytest.raises(ValueError, match=r"^basis: got an array of shape \(3,\)"):
        extend_basis(np.ones(3), np.ones((4, 3)), 0.9)
    with pytest.raises(ValueError, match=r"^inputs: got NaN or inf, expected finite values"):
        extend_basis(None, np.full((4, 3), np.nan), 0.9)
    z = np.array([[0.0, np.log(3.0)]])
    np.testing.assert_allclose(softmax(z, 2.0), [[1 / (1 + np.sqrt(3)), np.sqrt(3) / (1 + np.sqrt(3))]], rtol=1e-15)
    for t, match in ((0.0, r"^temperature: got 0.0, expected > 0"), (-1.0, r"^temperature: got -1.0, expected > 0"),
                     (np.inf, r"^temperature: got inf, expected a finite number")):
        with pytest.raises(ValueError, match=match):
            softmax(z, t)


# ------------------------------------------------------------------ argument checks (QA r12 fuzz)

def test_every_numeric_hyperparameter_refuses_huge_ints_and_integral_floats_by_name():
    """QA r12: a float hyperparameter of 10**400 raised np.isfinite's unnamed TypeError, and every
    integer hyperparameter took 2.0 (check_positive_int refuses it everywhere else)."""
    import re
    checked = {float: 0, int: 0}
    for name in learners.names():
        for key, hp in learners.hyperparameters(name).items():
            kind = type(hp.default)
            if kind is float:
                with pytest.raises(ValueError, match=rf"^{key}: got 10{{39}}, expected a finite number$"):
                    learners.make(name, **{key: 10 ** 400})
            elif kind is int:
                value = max(int(hp.low or 0), 1) + 1
                with pytest.raises(TypeError, match=re.escape(f"{key}: got {float(value)!r}, expected an integer")):
                    learners.make(name, **{key: float(value)})
                # what the command line passes (click's int), and NumPy's ints, are taken as they are
                assert getattr(learners.make(name, **{key: np.int64(value)}), key) == value
            else:
                continue
            checked[kind] += 1
    assert checked[float] >= 15 and checked[int] >= 15


def test_bind_refuses_a_model_without_init_or_forward_and_a_legacy_rng():
    """QA r12: bind(None) was accepted; the later init_params raised AttributeError."""
    for model in (None, object()):
        with pytest.raises(TypeError, match=rf"^model: got {type(model).__name__} without init, forward, which "
                                            "learner 'naive' needs"):
            learners.make("naive").bind(model, n_experiences=2)
    with pytest.raises(TypeError, match=r"^rng: got RandomState, expected numpy.random.Generator"):
        learners.make("naive").bind(MLPClassifier(N_IN, (5,), N_OUT), n_experiences=2,
                                    rng=np.random.RandomState(0))


@pytest.mark.parametrize("kind", [ReservoirBuffer, ClassBalancedBuffer])
def test_buffers_refuse_rngs_that_are_not_generators(kind):
    """QA r12: sample(None, 2) raised AttributeError, and a legacy RandomState was accepted."""
    buf = kind(4)
    x, y = data(3)
    for rng, got in ((None, "NoneType"), (0, "int"), (np.random.RandomState(0), "RandomState")):
        with pytest.raises(TypeError, match=rf"^rng: got {got}, expected numpy.random.Generator"):
            buf.add(rng, x=x, y=y)
    buf.add(np.random.default_rng(0), x=x, y=y)
    for rng, got in ((None, "NoneType"), (0, "int"), (np.random.RandomState(0), "RandomState")):
        with pytest.raises(TypeError, match=rf"^rng: got {got}, expected numpy.random.Generator"):
            buf.sample(rng, 2)
    assert sorted(buf.sample(np.random.default_rng(1), 3)["y"].tolist()) == sorted(y.tolist())


@pytest.mark.parametrize("kind", [ReservoirBuffer, ClassBalancedBuffer])
def test_buffer_capacity_is_budgeted_against_memory_when_allocated(kind, monkeypatch):
    """QA r12: ReservoirBuffer(2**70).add(...) raised NumPy's unnamed dimension error, 10**9 a
    MemoryError; the storage is allocated at the first add (its rows' size is known only then)."""
    from seqcore import validate
    x, y = data(3)  # float64 rows of N_IN and an int64 label: 8 * N_IN + 8 bytes per sample, by hand
    row = 8 * N_IN + 8
    with pytest.raises(ValueError, match=rf"^capacity: got {2 ** 70}, whose buffer \({row} bytes per sample\) "
                                         r"would take .* GiB"):
        kind(2 ** 70).add(np.random.default_rng(0), x=x, y=y)
    monkeypatch.setattr(validate, "physical_memory", lambda: 2 ** 20)
    fits = 2 ** 20 // row
    with pytest.raises(ValueError, match=rf"^capacity: got {fits + 1}, whose buffer"):
        kind(fits + 1).add(np.random.default_rng(0), x=x, y=y)
    buf = kind(fits)
    buf.add(np.random.default_rng(0), x=x, y=y)
    assert buf.data["x"].shape == (fits, N_IN) and len(buf) == 3
    # load_state_dict allocates the same storage
    state = {**buf.state_dict(), "capacity": fits + 1}
    big = kind(fits + 1)
    with pytest.raises(ValueError, match=rf"^capacity: got {fits + 1}, whose buffer"):
        big.load_state_dict(state)
    # a learner's buffer is its memory_size
    with pytest.raises(ValueError, match=rf"^memory_size: got {fits + 1}, whose buffer \({row} bytes per sample\)"):
        learners.make("replay", memory_size=fits + 1, buffer="reservoir" if kind is ReservoirBuffer
                      else "class-balanced").memory.add(np.random.default_rng(0), x=x, y=y)


def test_rnn_classifier_names_x_that_is_not_an_array():
    """QA r12: forward(params, list) raised AttributeError ('list' object has no attribute 'ndim')."""
    clf = RNNClassifier("gru", 2, 3, 2)
    params = clf.init(np.random.default_rng(0), np.float64)
    for bad, got in (([[[0.0, 1.0]]], "list"), (None, "NoneType")):
        with pytest.raises(TypeError, match=rf"^x: got {got}, expected an array"):
            clf.forward(params, bad)
    x = np.random.default_rng(1).normal(size=(2, 3, 2))  # arrays as before: (B, F) is cut into steps of 2
    np.testing.assert_array_equal(clf.forward(params, x), clf.forward(params, x.reshape(2, 6)))


def test_classifiers_check_their_sizes_and_cell_when_built():
    """A bad cell or size surfaced only at init (or, for MLP hidden sizes, was cast: 2.5 became 2)."""
    from seqcore.learners.classifiers import MLPClassifier, RNNClassifier
    with pytest.raises(ValueError, match="^cell: got 'nope'"):
        RNNClassifier("nope", 2, 3, 2)
    with pytest.raises(ValueError, match="^hidden_size: got 2.5"):
        RNNClassifier("lstm", 2, 2.5, 2)
    with pytest.raises(ValueError, match="^num_layers: got 0"):
        RNNClassifier("lstm", 2, 3, 2, num_layers=0)
    with pytest.raises(ValueError, match=r"^hidden_sizes\[0\]: got 2.5"):
        MLPClassifier(4, (2.5,), 2)
    with pytest.raises(TypeError, match="^hidden_sizes: got int"):
        MLPClassifier(4, 5, 2)
    assert MLPClassifier(4, [3], 2).hidden_sizes == (3,)
