"""Distillation: learning without forgetting (LwF) and dark experience replay (DER, DER++).

* ``lwf`` (Li & Hoiem 2016): the model at the end of the previous experience is the
  teacher; on each current batch the loss gains
  ``λ · mean_i [−Σ_c q_ic log softmax(z_i / T)_c]`` with ``q_i = softmax(z_i^old / T)``
  (cross-entropy with the teacher's softened outputs; it differs from the KL divergence
  by a constant, so the gradients are the same; no T² factor). With a multi-head model
  (task-incremental streams) the term is summed over the heads of earlier experiences,
  each head's softmax taken on its own block of logits, as in the original method.
* ``der`` (Buzzega et al. 2020): a reservoir buffer keeps inputs with the logits the
  model gave them when they were seen (before that step's update); the loss gains
  ``α · mean((f(x_m) − z_m)²)`` (mean over the replayed samples and the logits).
* ``derpp``: DER plus ``β · CE(f(x'_m), y'_m)`` on a second, independent buffer batch.
"""
from __future__ import annotations

import numpy as np

from .. import nn, ops
from ..autodiff import stop_gradient
from ..validate import check_real
from .base import HP, Learner, softmax
from .replay import make_buffer

__all__ = ["LwF", "DER", "DERpp", "soft_cross_entropy", "log_softmax"]


def log_softmax(logits):
    """``log softmax`` over the last axis, differentiable (logits (B, C) → (B, C))."""
    raw = stop_gradient(logits)
    # the shift only stabilises exp(); it cancels in the result, so no gradient goes through it
    shift = raw.amax(-1, keepdim=True) if hasattr(raw, "amax") else raw.max(axis=-1, keepdims=True)
    z = ops.sub(logits, shift)
    return ops.sub(z, ops.log(ops.sum(ops.exp(z), axis=-1, keepdims=True)))


def soft_cross_entropy(logits, target_probs, temperature: float = 1.0):
    """``mean_i [−Σ_c q_ic log softmax(logits_i / T)_c]``; logits (B, C), target_probs (B, C)."""
    if tuple(np.shape(stop_gradient(target_probs))) != tuple(logits.shape):
        raise ValueError(f"target_probs: got shape {tuple(np.shape(target_probs))}, expected {tuple(logits.shape)}")
    temperature = check_real("temperature", temperature, low=0.0, low_open=True)
    logp = log_softmax(ops.mul(logits, 1.0 / temperature))
    return ops.neg(ops.sum(ops.mul(target_probs, logp))) * (1.0 / logits.shape[0])


class LwF(Learner):
    """Learning without forgetting: distil the previous model's outputs on current data."""

    name = "lwf"
    hyperparameters = {
        "strength": HP(1.0, "λ of the distillation term", low=0.0),
        "temperature": HP(2.0, "softmax temperature T", low=1e-6),
    }
    state_fields = ("teacher", "old_heads")
    param_fields = ("teacher",)

    def _check_state(self, values):
        super()._check_state(values)
        heads = values["old_heads"]
        if not isinstance(heads, list) or any(isinstance(h, bool) or not isinstance(h, int) or h < 0 for h in heads):
            raise ValueError(f"old_heads: got {heads!r:.80}, expected a list of head indices (ints >= 0)")

    def __init__(self, **hp):
        super().__init__(**hp)
        self.teacher = None
        self.old_heads = []  # heads trained by earlier experiences (multi-head models)

    def after_experience(self, trainer, data):
        self.teacher = self.numpy(trainer.params)
        if data.head not in self.old_heads:
            self.old_heads = sorted(self.old_heads + [int(data.head)])

    def distillation(self, params, x):
        """The LwF term on inputs ``x`` (NumPy, (B, ...)); None before the first experience ends."""
        if self.teacher is None:
            return None
        dtype = np.asarray(x).dtype
        old = self.logits_numpy(self.dev(self.teacher), x)
        logits = self.forward(params, self.be.asarray(x))
        if self.head_size is None:
            blocks = [slice(None)]
        else:
            blocks = [slice(h * self.head_size, (h + 1) * self.head_size) for h in self.old_heads]
        total = None
        for block in blocks:
            q = self.be.asarray(softmax(old[:, block], self.temperature).astype(dtype))
            z = logits if block == slice(None) else ops.getitem(logits, (slice(None), block))
            term = soft_cross_entropy(z, q, self.temperature)
            total = term if total is None else total + term
        return total * self.strength

    def extra_loss(self, trainer, params, batch):
        return self.distillation(params, batch[0])


class DER(Learner):
    """Dark experience replay: match the logits stored with replayed samples."""

    name = "der"
    hyperparameters = {
        "memory_size": HP(500, "buffer capacity (samples)", low=1),
        "replay_batch": HP(32, "buffer samples per term and step", low=1),
        "alpha": HP(0.5, "α of the logit-matching term", low=0.0),
    }
    state_fields = ("memory",)
    beta = 0.0

    def __init__(self, **hp):
        super().__init__(**hp)
        self.memory = make_buffer("reservoir", self.memory_size, name="memory_size")
        self._current = None
        self._replay = None

    def prepare_batch(self, trainer, batch):
        x = np.asarray(batch[0])
        self._current = (x, np.asarray(batch[1]), self.logits_numpy(trainer.params, x).astype(x.dtype))
        self._replay = None
        if len(self.memory):
            first = self.memory.sample(self.rng, self.replay_batch)
            second = self.memory.sample(self.rng, self.replay_batch) if self.beta > 0 else None
            self._replay = (first, second)
        return batch

    def replay_loss(self, params, first: dict, second: dict | None = None):
        """``α·mean((f(x) − z)²)`` on ``first`` (+ ``β·CE`` on ``second`` for DER++)."""
        out = self.forward(params, self.be.asarray(first["x"]))
        target = self.be.asarray(np.asarray(first["logits"], dtype=first["x"].dtype))
        total = nn.mse(out, target) * self.alpha
        if second is not None and self.beta > 0:
            logits = self.forward(params, self.be.asarray(second["x"]))
            total = total + self.cross_entropy(logits, second["y"]) * self.beta
        return total

    def extra_loss(self, trainer, params, batch):
        if self._replay is None:
            return None
        return self.replay_loss(params, *self._replay)

    def after_step(self, trainer, batch, loss):
        x, y, z = self._current
        self.memory.add(self.rng, x=x, y=y, logits=z)


class DERpp(DER):
    """DER++: DER plus cross-entropy on a second batch of buffer samples."""

    name = "derpp"
    hyperparameters = dict(DER.hyperparameters, beta=HP(0.5, "β of the replayed cross-entropy", low=0.0))
    beta = 0.5  # overwritten by the hyperparameter
