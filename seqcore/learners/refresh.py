"""Refresh learning (Wang et al., ICLR 2024): unlearn the current batch a little, then relearn it.

Refresh is a plug-in on top of rehearsal; here it extends experience replay. Every
``every`` steps, on the batch about to be trained (current + replayed samples):

1. **unlearn** — one gradient *ascent* step, scaled per parameter by the inverse of
   its (normalised) Fisher information::

       θ' = θ + γ · g ⊘ (1 + F / mean(F)),    g = ∇_θ L(θ; batch)

   where F is a running estimate of the diagonal empirical Fisher
   (``F ← ρ F + (1 − ρ) g²``). Parameters that matter (large F) move little; the
   damping ``1 + …`` keeps the step bounded where F is tiny (the paper's F⁻¹ would
   be unbounded there). Optional Gaussian noise of standard deviation
   ``noise · sqrt(γ / (1 + F / mean(F)))`` follows the paper's Langevin form.
2. **relearn** — the ordinary optimizer step, with the gradient taken at θ'.

The idea: unlearning removes what the latest data over-wrote into the parameters
that matter least, so relearning lands in a flatter region that keeps old knowledge.
"""
from __future__ import annotations

import numpy as np

from ..tree import tree_leaves, tree_map
from .base import HP
from .replay import Replay

__all__ = ["Refresh"]


class Refresh(Replay):
    """Experience replay with an unlearn-then-relearn step."""

    name = "refresh"
    hyperparameters = dict(
        Replay.hyperparameters,
        unlearn_lr=HP(0.03, "γ of the unlearning (ascent) step", low=0.0),
        every=HP(1, "unlearn before every k-th step", low=1),
        fisher_decay=HP(0.99, "ρ of the running Fisher F ← ρF + (1−ρ)g²", low=0.0, high=1.0),
        noise=HP(0.0, "scale of the Langevin noise of the unlearning step", low=0.0),
    )
    state_fields = Replay.state_fields + ("fisher",)
    param_fields = Replay.param_fields + ("fisher",)

    def __init__(self, **hp):
        super().__init__(**hp)
        self.fisher = None

    def unlearn(self, trainer, batch) -> None:
        """Apply the unlearning step to ``trainer.params`` (updates the running Fisher first)."""
        g = tree_map(lambda v: np.asarray(self.be.to_numpy(v), np.float64), self.gradient(trainer.params, batch))
        sq = tree_map(np.square, g)
        self.fisher = sq if self.fisher is None else tree_map(
            lambda f, s: self.fisher_decay * f + (1 - self.fisher_decay) * s, self.fisher, sq)
        mean = np.mean(np.concatenate([f.ravel() for f in tree_leaves(self.fisher)])) or 1.0
        scale = tree_map(lambda f: 1.0 / (1.0 + f / mean), self.fisher)
        params = self.numpy(trainer.params)

        def step(p, gi, s):
            new = p + self.unlearn_lr * gi * s
            if self.noise > 0:
                new = new + self.noise * np.sqrt(self.unlearn_lr * s) * self.rng.standard_normal(p.shape)
            return new.astype(p.dtype)

        trainer.params = self.dev(tree_map(step, params, g, scale))

    def prepare_batch(self, trainer, batch):
        batch = super().prepare_batch(trainer, batch)
        if trainer.step_count % self.every == 0 and self.unlearn_lr > 0:
            self.unlearn(trainer, batch)
        return batch
