"""Quadratic regularisers: L2, EWC (separate and online), SI and MAS.

Each keeps an importance Ω (a tree shaped like the parameters) and an anchor θ* and
adds a penalty ``s · Σ_k Ω_k (θ_k − θ*_k)²`` to the loss (``s`` below). Conventions:

========== ======================================= ======================================
learner    penalty                                  importance
========== ======================================= ======================================
l2         (λ/2) Σ (θ − θ*)²                         1; θ* = parameters after the last experience
ewc        (λ/2) Σ_t Σ F_t (θ − θ*_t)²               diagonal Fisher F_t of each past task, its own anchor
online-ewc (λ/2) Σ F̃ (θ − θ*)²                      F̃ ← γ F̃ + F_t; θ* = latest parameters
si         c Σ Ω (θ − θ*)²                           Ω += ω / (Δθ² + ξ), ω = −Σ_steps g·Δθ (Zenke et al. 2017)
mas        λ Σ Ω (θ − θ*)²                           Ω += mean_x |∂‖f(x)‖²/∂θ| (Aljundi et al. 2018)
========== ======================================= ======================================

**Fisher** (EWC, online EWC): the diagonal ``F = (1/N) Σ_i (∂ log p(y_i | x_i)/∂θ)²``
from ``fisher_samples`` single-example gradients at the end of the task.
``fisher="empirical"`` (default) uses the true labels y_i (the empirical Fisher);
``fisher="sampled"`` draws y_i from the model's own prediction p(·|x_i), a one-sample
Monte-Carlo estimate of the true Fisher. The ½ is used, as in Kirkpatrick et al. (2017,
eq. 3): λ here equals 2λ' of implementations that omit it. Separate EWC keeps one term
per past task; it is stored in the equivalent single-quadratic form
``Σ_t F_t (θ − θ*_t)² = A (θ − m)² + c`` with ``A = Σ F_t``, ``m = Σ F_t θ*_t / A`` and the
constant c, so a step costs the same after 10 tasks as after one.

SI's path integral uses the gradient actually applied at each step (task loss plus the
SI penalty, as the common implementations do) and the actual parameter change, so it
works with any optimizer.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..tree import tree_leaves, tree_map
from ..validate import check_rng
from .base import HP, Learner, check_examples, check_tree_like, example_gradients, softmax

__all__ = ["L2", "EWC", "OnlineEWC", "SI", "MAS", "fisher_diagonal", "mas_importance", "quadratic_penalty"]


def quadratic_penalty(params, importance, anchor, scale: float, constant: float = 0.0):
    """``scale · (Σ_k importance_k (params_k − anchor_k)² + constant)`` as a differentiable scalar.

    ``importance`` may be None (all ones). Trees share the structure and leaf shapes of ``params``.
    """
    total = None
    anchor_leaves, param_leaves = check_tree_like("anchor", anchor, params, "params")
    imp_leaves = ([None] * len(param_leaves) if importance is None
                  else check_tree_like("importance", importance, params, "params")[0])
    for p, a, w in zip(param_leaves, anchor_leaves, imp_leaves):
        sq = ops.square(ops.sub(p, a))
        term = ops.sum(sq if w is None else ops.mul(w, sq))
        total = term if total is None else total + term
    if constant:
        total = total + constant
    return total * scale


def fisher_diagonal(learner: Learner, params, x: np.ndarray, y: np.ndarray, mode: str = "empirical",
                    rng: np.random.Generator | None = None):
    """Diagonal Fisher ``(1/N) Σ_i (∂ log p(y_i|x_i)/∂θ)²`` over the N examples of ``x (N, ...)``.

    mode: "empirical" (the given labels ``y (N,)``) or "sampled" (labels drawn from the
    model's softmax with ``rng``; with a multi-head model, the softmax of each example's
    own head, the head of ``y_i``). Returns a NumPy float64 tree shaped like ``params``.
    """
    if mode not in ("empirical", "sampled"):
        raise ValueError(f"mode: got {mode!r}, expected 'empirical' or 'sampled'")
    y = np.asarray(y)
    check_examples(x, y)
    if mode == "sampled":
        if rng is None:
            raise ValueError("rng: got None, expected a numpy Generator for mode='sampled'")
        check_rng(rng)
        probs = softmax(learner.mask_heads(learner.logits_numpy(params, x), y))
        y = np.array([rng.choice(probs.shape[1], p=p) for p in probs])
    total, n = None, 0
    for g in example_gradients(lambda p, xi, yi: learner.cross_entropy(learner.forward(p, xi), yi),
                               params, x, y, learner.be):
        sq = tree_map(np.square, g)
        total = sq if total is None else tree_map(np.add, total, sq)
        n += 1
    return tree_map(lambda v: v / n, total)


def mas_importance(learner: Learner, params, x: np.ndarray):
    """MAS importance ``(1/N) Σ_i |∂‖f(x_i)‖²/∂θ|`` (f = logits), a NumPy float64 tree."""
    total, n = None, 0
    for g in example_gradients(lambda p, xi, _: ops.sum(ops.square(learner.forward(p, xi))),
                               params, x, np.zeros(np.shape(x)[:1], np.int64), learner.be):
        a = tree_map(np.abs, g)
        total = a if total is None else tree_map(np.add, total, a)
        n += 1
    return tree_map(lambda v: v / n, total)


class _Quadratic(Learner):
    """Shared machinery: importance, anchor, constant and the penalty's scale."""

    state_fields = ("importance", "anchor", "constant")
    param_fields = ("importance", "anchor")

    def _check_state(self, values):
        super()._check_state(values)
        c = values["constant"]
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not np.isfinite(c):
            raise ValueError(f"constant: got {c!r}, expected a finite number")

    def __init__(self, **hp):
        super().__init__(**hp)
        self.importance = None
        self.anchor = None
        self.constant = 0.0

    def scale(self) -> float:
        raise NotImplementedError

    def penalty(self, params):
        """The regulariser at ``params`` (None before the first experience ends)."""
        if self.anchor is None:
            return None
        dtype = self.param_dtype(params)
        cast = lambda t: None if t is None else self.dev(tree_map(lambda v: np.asarray(v, dtype), t))  # noqa: E731
        return quadratic_penalty(params, cast(self.importance), cast(self.anchor), self.scale(), self.constant)

    def extra_loss(self, trainer, params, batch):
        return self.penalty(params)

    def _params(self, trainer):
        return self.numpy(trainer.params)

    def _examples(self, data, n: int):
        n = min(n, data.n_train) if data.n_train else n
        return data.sample(self.rng, n)


class L2(_Quadratic):
    """L2 towards the parameters at the end of the previous experience."""

    name = "l2"
    hyperparameters = {"strength": HP(0.1, "λ of (λ/2) Σ (θ − θ*)²", low=0.0)}

    def scale(self):
        return self.strength / 2

    def after_experience(self, trainer, data):
        self.anchor = tree_map(lambda v: v.astype(np.float64), self._params(trainer))


class EWC(_Quadratic):
    """Elastic weight consolidation with one penalty per past task."""

    name = "ewc"
    hyperparameters = {
        "strength": HP(1000.0, "λ of (λ/2) Σ_t Σ F_t (θ − θ*_t)²", low=0.0),
        "fisher_samples": HP(200, "examples used for the diagonal Fisher", low=1),
        "fisher": HP("empirical", "labels of the Fisher: empirical (true labels) or sampled (model's)",
                     choices=("empirical", "sampled")),
    }
    state_fields = _Quadratic.state_fields + ("weighted_anchor_sum", "weighted_square_sum")
    param_fields = _Quadratic.param_fields + ("weighted_anchor_sum", "weighted_square_sum")

    def __init__(self, **hp):
        super().__init__(**hp)
        self.weighted_anchor_sum = None  # Σ F_t θ*_t
        self.weighted_square_sum = None  # Σ F_t θ*_t²

    def scale(self):
        return self.strength / 2

    def after_experience(self, trainer, data):
        params = self._params(trainer)
        x, y = self._examples(data, self.fisher_samples)
        F = fisher_diagonal(self, trainer.params, x, y, self.fisher, self.rng)
        theta = tree_map(lambda v: v.astype(np.float64), params)
        if self.importance is None:
            A, b, c = F, tree_map(np.multiply, F, theta), tree_map(lambda f, t: f * t * t, F, theta)
        else:
            A = tree_map(np.add, self.importance, F)
            b = tree_map(lambda s, f, t: s + f * t, self.weighted_anchor_sum, F, theta)
            c = tree_map(lambda s, f, t: s + f * t * t, self.weighted_square_sum, F, theta)
        self.importance, self.weighted_anchor_sum, self.weighted_square_sum = A, b, c
        # A (θ − m)² + const with m = b / A reproduces Σ_t F_t (θ − θ*_t)² exactly.
        self.anchor = tree_map(lambda a, bb, t: np.where(a > 0, bb / np.where(a > 0, a, 1), t), A, b, theta)
        self.constant = float(sum(np.sum(cc - np.where(a > 0, bb * bb / np.where(a > 0, a, 1), 0.0))
                                  for a, bb, cc in zip(tree_leaves(A), tree_leaves(b), tree_leaves(c))))


class OnlineEWC(_Quadratic):
    """Online EWC (Schwarz et al. 2018): one running Fisher, anchored at the latest parameters."""

    name = "online-ewc"
    hyperparameters = {
        "strength": HP(1000.0, "λ of (λ/2) Σ F̃ (θ − θ*)²", low=0.0),
        "decay": HP(0.9, "γ of F̃ ← γ F̃ + F_t", low=0.0, high=1.0),
        "fisher_samples": HP(200, "examples used for the diagonal Fisher", low=1),
        "fisher": HP("empirical", "labels of the Fisher: empirical (true labels) or sampled (model's)",
                     choices=("empirical", "sampled")),
    }

    def scale(self):
        return self.strength / 2

    def after_experience(self, trainer, data):
        x, y = self._examples(data, self.fisher_samples)
        F = fisher_diagonal(self, trainer.params, x, y, self.fisher, self.rng)
        self.importance = F if self.importance is None else tree_map(
            lambda old, new: self.decay * old + new, self.importance, F)
        self.anchor = tree_map(lambda v: v.astype(np.float64), self._params(trainer))


class SI(_Quadratic):
    """Synaptic intelligence (Zenke, Poole & Ganguli 2017)."""

    name = "si"
    hyperparameters = {
        "strength": HP(10.0, "c of c Σ Ω (θ − θ*)²", low=0.0),
        # ξ > 0: a parameter that did not move in an experience (a weight from a constant-zero
        # input) has ω = Δθ = 0, and ξ = 0 would make its Ω 0/0
        "damping": HP(0.1, "ξ of Ω += ω / (Δθ² + ξ)", low=0.0, low_open=True),
    }
    state_fields = _Quadratic.state_fields + ("path_integral", "start")
    param_fields = _Quadratic.param_fields + ("path_integral", "start")

    def __init__(self, **hp):
        super().__init__(**hp)
        self.path_integral = None  # ω of the current experience
        self.start = None          # θ at the start of the current experience
        self._last = None

    def scale(self):
        return self.strength

    def before_experience(self, trainer, data):
        self.start = tree_map(lambda v: v.astype(np.float64), self._params(trainer))
        self.path_integral = tree_map(np.zeros_like, self.start)

    def transform_grads(self, trainer, grads, batch):
        self._last = (self.numpy(grads), self._params(trainer))
        return grads

    def after_step(self, trainer, batch, loss):
        grads, before = self._last
        after = self._params(trainer)
        self.path_integral = tree_map(lambda w, g, b, a: w - g.astype(np.float64) * (a.astype(np.float64) - b),
                                      self.path_integral, grads, before, after)

    def after_experience(self, trainer, data):
        theta = tree_map(lambda v: v.astype(np.float64), self._params(trainer))
        omega = tree_map(lambda w, t, s: w / ((t - s) ** 2 + self.damping), self.path_integral, theta, self.start)
        self.importance = omega if self.importance is None else tree_map(np.add, self.importance, omega)
        self.anchor = theta
        self.path_integral = tree_map(np.zeros_like, theta)


class MAS(_Quadratic):
    """Memory aware synapses (Aljundi et al. 2018): unsupervised importance from output sensitivity."""

    name = "mas"
    hyperparameters = {
        "strength": HP(0.03, "λ of λ Σ Ω (θ − θ*)²", low=0.0),
        "importance_samples": HP(200, "examples used for Ω", low=1),
    }

    def scale(self):
        return self.strength

    def after_experience(self, trainer, data):
        x, _ = self._examples(data, self.importance_samples)
        omega = mas_importance(self, trainer.params, x)
        self.importance = omega if self.importance is None else tree_map(np.add, self.importance, omega)
        self.anchor = tree_map(lambda v: v.astype(np.float64), self._params(trainer))

