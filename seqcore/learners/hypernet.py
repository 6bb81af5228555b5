"""A recurrent hypernetwork that writes the target network's weights chunk by chunk.

After von Oswald et al. (2020, "Continual learning with hypernetworks"), with the
chunked hypernetwork made recurrent: a seqcore cell (LSTM by default) reads, at chunk
step k = 1..K, the concatenation ``[e_t ; c_k]`` of the learned task embedding
``e_t (E,)`` and a learned chunk embedding ``c_k (C,)``; a linear head maps its output
``h_k (H,)`` to chunk k of the weights (``chunk_size`` numbers). The K chunks are
concatenated, cut to the target's parameter count, mapped per target tensor to
``mean + std · output`` with the mean and standard deviation of that tensor's default
initialisation (0.1 for the std of a constant tensor), so outputs of unit size give
weights centred and scaled like the usual ones (LeakyRNN's time constants around their
initial 1, where the clamp max(τ, 1) lets a gradient through), and reshaped into the
target's parameter tree.
The target network (the run's model: an MLP or an RNN classifier) is evaluated with
these generated weights; gradients reach the hypernetwork through ``seqcore.vjp``.

Trainable parameters are the hypernetwork's only:
``{"task_embeddings": (n_experiences, E), "chunk_embeddings": (K, C), "cell": …,
"head": {"weight": (chunk_size, H), "bias": (chunk_size,)}}``.

Forgetting is fought by the output regulariser: before experience t the weights the
hypernetwork generates for every earlier task are stored, ``W*_j = h(e_j)`` for
j < t, and training adds ``β · Σ_{j<t} ‖h(e_j) − W*_j‖²`` (squared Euclidean norm
over all generated weights). Earlier task embeddings are frozen (their gradients and
updates are zeroed, so momentum cannot move them), as in the paper. The network is *task-aware*: experience j is evaluated with
the weights generated from e_j, so the task identity must be known at test time —
the usual protocol for hypernetworks, and an advantage over the domain-incremental
learners it is compared with. Train it with Adam (e.g. ``--optimizer adam --lr 1e-3``).
"""
from __future__ import annotations

import math

import numpy as np

from .. import cells, nn, ops
from ..autodiff import stop_gradient
from ..tree import tree_flatten, tree_map, tree_unflatten
from .base import HP, Learner

__all__ = ["HyperNetwork"]


class HyperNetwork(Learner):
    """Task-conditioned recurrent hypernetwork with an output regulariser."""

    name = "hypernet"
    hyperparameters = {
        "hnet_cell": HP("lstm", "seqcore cell of the hypernetwork", choices=tuple(cells.names())),
        "hnet_hidden": HP(64, "hidden size of the hypernetwork cell", low=1),
        "task_embedding": HP(16, "size E of the task embeddings", low=1),
        "chunk_embedding": HP(16, "size C of the chunk embeddings", low=1),
        "chunk_size": HP(2048, "target weights emitted per chunk step", low=1),
        "strength": HP(0.01, "β of β Σ_{j<t} ‖h(e_j) − W*_j‖²", low=0.0),
    }
    state_fields = ("targets",)

    def _check_state(self, values):
        super()._check_state(values)
        targets = values["targets"]
        if targets is None:
            return
        if targets.dtype.kind != "f" or targets.ndim != 2 or targets.shape[1] != self.n_target or \
                targets.shape[0] > self.n_experiences:
            raise ValueError(f"targets: got a {targets.dtype} array of shape {targets.shape}, expected None or "
                             f"floats (t, {self.n_target}) with t <= {self.n_experiences} (weights of earlier tasks)")
        if not np.isfinite(targets).all():
            raise ValueError("targets: got NaN or inf, expected finite generated weights")

    def __init__(self, **hp):
        super().__init__(**hp)
        self.targets = None  # (t, n_target): generated weights of tasks 0..t-1 stored before task t
        self._cache = None

    # -- structure ----------------------------------------------------------------------------------
    def bind(self, model, **kw):
        super().bind(model, **kw)
        template = model.init(np.random.default_rng(0), np.float64)
        leaves, self._treedef = tree_flatten(template)
        self._shapes = [tuple(v.shape) for v in leaves]
        self._sizes = [int(np.prod(s)) for s in self._shapes]
        self.n_target = sum(self._sizes)
        self.n_chunks = math.ceil(self.n_target / self.chunk_size)
        # W = mean + scale · output per tensor: centred like the default init, whose mean is not
        # always 0 (LeakyRNN's τ = 1: generated around 0 it would be clamped to 1, with no gradient)
        scales = [float(np.std(v)) if np.std(v) > 0 else 0.1 for v in leaves]
        self._scale = np.concatenate([np.full(n, s) for n, s in zip(self._sizes, scales)])
        self._offset = np.concatenate([np.full(n, float(np.mean(v))) for n, v in zip(self._sizes, leaves)])
        self._cell = cells.make(self.hnet_cell, self.task_embedding + self.chunk_embedding, self.hnet_hidden)

    def init_params(self, rng, dtype=np.float32) -> dict:
        return {
            "task_embeddings": rng.normal(0.0, 1.0, (self.n_experiences, self.task_embedding)).astype(dtype),
            "chunk_embeddings": rng.normal(0.0, 1.0, (self.n_chunks, self.chunk_embedding)).astype(dtype),
            "cell": self._cell.init(rng, dtype),
            "head": nn.Linear(self.hnet_hidden, self.chunk_size).init(rng, dtype),
        }

    def constrain(self, params: dict) -> dict:
        """The hypernetwork's own cell's projection; the generated weights need none (a LeakyRNN
        target reads max(τ, 1))."""
        return {**params, "cell": self._cell.constrain(params["cell"])}

    def generate(self, params, tasks) -> object:
        """Flat target weights ``(len(tasks), n_target)`` for the task indices ``tasks``."""
        tasks = np.asarray(list(tasks), dtype=np.int64)
        k, K = len(tasks), self.n_chunks
        E, C = self.task_embedding, self.chunk_embedding
        dtype = self.param_dtype(params)
        zeros = lambda shape: self.be.asarray(np.zeros(shape, dtype))  # noqa: E731 - broadcasting helpers
        e = ops.add(ops.reshape(ops.getitem(params["task_embeddings"], tasks), (k, 1, E)), zeros((1, K, E)))
        c = ops.add(ops.reshape(params["chunk_embeddings"], (1, K, C)), zeros((k, 1, C)))
        hs, _ = self._cell.apply(params["cell"], ops.concatenate([e, c], axis=-1))
        chunks = ops.linear(hs, params["head"]["weight"], params["head"]["bias"])  # (k, K, chunk_size)
        flat = ops.getitem(ops.reshape(chunks, (k, K * self.chunk_size)), (slice(None), slice(0, self.n_target)))
        return ops.add(ops.mul(flat, self.be.asarray(self._scale.astype(dtype)[None, :])),
                       self.be.asarray(self._offset.astype(dtype)[None, :]))

    def target_params(self, flat_row):
        """One generated row ``(n_target,)`` → the target model's parameter tree."""
        leaves, start = [], 0
        for shape, size in zip(self._shapes, self._sizes):
            leaves.append(ops.reshape(ops.getitem(flat_row, slice(start, start + size)), shape))
            start += size
        return tree_unflatten(self._treedef, leaves)

    def _generated(self, params):
        """Weights for the current task and (when stored) every earlier one, computed once per step."""
        if self._cache is not None and self._cache[0] is params:
            return self._cache[1]
        t = self.index
        tasks = [t] + (list(range(t)) if self.targets is not None and t > 0 else [])
        out = self.generate(params, tasks)
        self._cache = (params, out)
        return out

    # -- learner hooks -----------------------------------------------------------------------------
    def forward(self, params, x):
        return self.model.forward(self.target_params(ops.getitem(self._generated(params), 0)), x)

    def predict(self, params, x, index: int):
        flat = self.generate(tree_map(stop_gradient, params), [index])
        return self.model.forward(self.target_params(ops.getitem(flat, 0)), x)

    def regulariser(self, params):
        """``β Σ_{j<t} ‖h(e_j) − W*_j‖²`` (None on the first experience)."""
        if self.targets is None or self.index == 0:
            return None
        gen = ops.getitem(self._generated(params), slice(1, None))
        dtype = self.param_dtype(params)
        diff = ops.sub(gen, self.be.asarray(self.targets.astype(dtype)))
        return ops.sum(ops.square(diff)) * self.strength

    def extra_loss(self, trainer, params, batch):
        return self.regulariser(params)

    def before_experience(self, trainer, data):
        self._cache = None
        if data.index > 0:
            plain = tree_map(stop_gradient, trainer.params)
            self.targets = np.asarray(self.be.to_numpy(self.generate(plain, range(data.index))), np.float64)

    def _current_embedding_only(self, tree):
        """``tree`` with every task embedding's entry zeroed except the current task's."""
        keep = np.zeros((self.n_experiences, 1))
        keep[self.index] = 1.0
        g = tree["task_embeddings"]
        dtype = np.asarray(self.be.to_numpy(g)).dtype
        return dict(tree, task_embeddings=g * self.be.asarray(keep.astype(dtype)))

    def transform_grads(self, trainer, grads, batch):
        self._cache = None
        return self._current_embedding_only(grads)

    def transform_updates(self, trainer, updates):
        return self._current_embedding_only(updates)  # Adam's momentum would move earlier embeddings
