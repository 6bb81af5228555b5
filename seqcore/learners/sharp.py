"""SHARP: sparse dynamic connectivity and replay of hidden activations of recent classes.

After Gurbuz, Moorman & Dovrolis (2023, "SHARP: sparsity and hidden activation
replay for neuro-inspired continual learning"), kept simple:

* **Sparse dynamic connectivity.** Every weight matrix the model lists in
  ``sparse_paths`` (all but the readout for the MLP; input and recurrent weights for
  RNNs) has a binary mask with a fixed ``density``, drawn at initialisation. Masked
  weights are zero and get no gradient. A diagonal the forward masks anyway
  (LeakyRNN's ``W_hh ⊙ (1 − I)``, ``model.masked_diagonal_paths()``) is never a
  connection: the density applies to the other H(H − 1) entries. Every
  ``rewire_every`` steps, in each matrix, the fraction ``drop_fraction`` of active
  weights with the smallest magnitude is dropped and as many inactive positions are
  regrown — at random (``regrow="random"``, as in SET) or where the last gradient was
  largest (``regrow="gradient"``, as in RigL). Regrown weights start at zero, so the number of connections never changes.
* **Stable units.** After each experience the fraction ``freeze_fraction`` of the
  still-plastic hidden units (the readout's inputs) with the largest mean activation
  |h| on that experience become stable: the rows of the parameters that feed them
  (``model.unit_paths``, ``model.unit_rows``) get no more gradient, no update whatever
  the optimizer's momentum, and are never rewired (the role of the paper's
  consolidated units; its KNN read-out and contrastive loss are not used). With one
  hidden layer a stable unit's activations for past inputs stay exactly what they were
  when stored; in deeper MLPs and in RNNs its inputs (earlier layers, the recurrent
  state) come partly from plastic units, so replayed activations drift slowly.
* **Hidden activation replay.** The readout's inputs h (``model.hidden``) are stored
  with their labels in a class-balanced buffer, computed when the samples are trained
  on. Only the ``recent_classes`` most recently seen classes are kept (older classes
  are evicted), and every step adds ``β · CE(readout(h_m), y_m)`` on a batch of them —
  which trains the readout alone: the stored activations are constants.
"""
from __future__ import annotations

import numpy as np

from ..autodiff import stop_gradient
from ..tree import tree_map
from .base import HP, Learner, get_path, set_path
from .classifiers import masked_diagonals
from .replay import ClassBalancedBuffer

__all__ = ["SHARP"]


class SHARP(Learner):
    """Sparse dynamic connectivity plus replay of recent classes' hidden activations."""

    name = "sharp"
    needs = ("hidden", "readout", "sparse_paths", "unit_paths")
    hyperparameters = {
        "density": HP(0.5, "fraction of active weights in each sparse matrix", low=1e-3, high=1.0),
        "rewire_every": HP(100, "steps between drop/regrow rounds", low=1),
        "drop_fraction": HP(0.1, "fraction of active weights dropped (and regrown) per round", low=0.0, high=1.0),
        "regrow": HP("random", "where connections regrow", choices=("random", "gradient")),
        "memory_size": HP(500, "hidden activations stored", low=1),
        "replay_batch": HP(64, "activations replayed per step", low=1),
        "replay_weight": HP(1.0, "β of the replayed readout loss", low=0.0),
        "recent_classes": HP(10, "how many of the most recently seen classes are replayed", low=1),
        "freeze_fraction": HP(0.25, "fraction of plastic hidden units made stable after each experience",
                              low=0.0, high=1.0),
        "unit_samples": HP(256, "examples used to rank hidden units by activation", low=1),
    }
    state_fields = ("masks", "memory", "class_last_seen", "clock", "stable")

    def _check_state(self, values):
        super()._check_state(values)
        template = self.model.init(np.random.default_rng(0), np.float64)
        paths = self._paths(template)
        masks = values["masks"]
        if not isinstance(masks, list) or len(masks) != len(paths):
            raise ValueError(f"masks: got {len(masks) if isinstance(masks, list) else type(masks).__name__} masks, "
                             f"expected {len(paths)} (one per sparse matrix {paths})")
        for i, (path, mask) in enumerate(zip(paths, masks)):
            shape = np.shape(get_path(template, path))
            if mask.dtype != bool or mask.shape != shape:
                raise ValueError(f"masks[{i}]: got a {mask.dtype} array of shape {mask.shape}, expected a bool "
                                 f"mask of shape {shape} like the weight at {path}")
        seen = values["class_last_seen"]
        if seen.ndim != 1 or (seen.size and (seen.dtype.kind not in "iu" or seen.min() < 0)):
            raise ValueError(f"class_last_seen: got {seen!r:.80}, expected (C,) step counts >= 0")
        clock = values["clock"]
        if isinstance(clock, bool) or not isinstance(clock, int) or clock < 0:
            raise ValueError(f"clock: got {clock!r}, expected an int >= 0")
        stable = values["stable"]
        if stable is not None:
            size = getattr(self.model, "input_size", None)  # both classifiers read (1, input_size) inputs
            width = int(np.shape(self.model.hidden(template, np.zeros((1, size))))[-1]) \
                if isinstance(size, int) else None
            if stable.dtype != bool or stable.ndim != 1 or (width is not None and stable.shape != (width,)):
                raise ValueError(f"stable: got a {stable.dtype} array of shape {stable.shape}, expected None or a "
                                 f"bool array of one entry per hidden unit{f' ({width},)' if width else ''}")

    def __init__(self, **hp):
        super().__init__(**hp)
        self.masks: list = []
        self.memory = ClassBalancedBuffer(self.memory_size, name="memory_size")
        self.class_last_seen = np.zeros(0, np.int64)  # step at which each class was last trained (0: never)
        self.clock = 0
        self.stable = None  # (F,) bool: hidden units whose incoming parameters are frozen
        self._replay = None
        self._last_grads = None

    def init_params(self, rng, dtype=np.float32):
        params = self.model.init(rng, dtype)
        self.masks = []
        for path in self.model.sparse_paths(params):
            w = get_path(params, path)
            usable = np.flatnonzero(self._usable(path, w.shape))
            mask = np.zeros(w.size, bool)
            n_active = min(usable.size, max(1, int(round(self.density * usable.size))))
            mask[rng.choice(usable, size=n_active, replace=False)] = True
            mask = mask.reshape(w.shape)
            self.masks.append(mask)
            params = set_path(params, path, (w * mask).astype(w.dtype))
        return params

    # -- connectivity ----------------------------------------------------------------------------
    def _paths(self, params):
        return self.model.sparse_paths(params)

    def _usable(self, path, shape) -> np.ndarray:
        """Bool array of ``shape``: the entries of the weight at ``path`` that can be connections
        (all but a diagonal its forward masks: a connection there would do nothing)."""
        usable = np.ones(shape, bool)
        if tuple(path) in masked_diagonals(self.model):
            np.fill_diagonal(usable, False)
        return usable

    def _apply_masks(self, tree, to_backend):
        for path, mask in zip(self._paths(tree), self.masks):
            w = get_path(tree, path)
            tree = set_path(tree, path, w * to_backend(mask.astype(np.asarray(self.be.to_numpy(w)).dtype)))
        return tree

    def _frozen(self, path, shape, units: list) -> np.ndarray:
        """Bool array of ``shape``: the entries of the parameter at ``path`` that feed stable units
        (none unless ``path`` is among ``units``, the model's unit paths)."""
        if self.stable is None or tuple(path) not in units:
            return np.zeros(shape, bool)
        rows = self.stable[self.model.unit_rows(tuple(path), shape)]
        return np.broadcast_to(rows.reshape(rows.shape + (1,) * (len(shape) - rows.ndim)), shape)

    def _held(self, tree, to_backend):
        """``tree`` with the masked weights and the stable units' entries set to zero."""
        tree = self._apply_masks(tree, to_backend)
        if self.stable is None or not self.stable.any():
            return tree
        units = self._unit_paths(tree)
        for path in units:
            g = get_path(tree, path)
            keep = ~self._frozen(path, tuple(g.shape), units)
            tree = set_path(tree, path, g * to_backend(keep.astype(np.asarray(self.be.to_numpy(g)).dtype)))
        return tree

    def after_experience(self, trainer, data):
        n = min(self.unit_samples, data.n_train) if data.n_train else self.unit_samples
        x, _ = data.sample(self.rng, n)
        plain = tree_map(stop_gradient, trainer.params)
        h = np.abs(np.asarray(self.be.to_numpy(self.model.hidden(plain, self.be.asarray(x))), np.float64))
        activity = h.mean(axis=0)
        if self.stable is None:
            self.stable = np.zeros(activity.size, bool)
        plastic = np.flatnonzero(~self.stable)
        k = int(round(self.freeze_fraction * plastic.size))
        if k:
            self.stable[plastic[np.argsort(-activity[plastic], kind="stable")[:k]]] = True

    def rewire(self, trainer) -> None:
        """One drop/regrow round on every sparse matrix (counts of active weights are kept)."""
        params = self.numpy(trainer.params)
        units = self._unit_paths(params)
        for k, (path, mask) in enumerate(zip(self._paths(params), self.masks)):
            w = get_path(params, path)
            movable = (~self._frozen(path, w.shape, units) & self._usable(path, w.shape)).ravel()
            active = np.flatnonzero(mask.ravel() & movable)
            n_drop = int(self.drop_fraction * active.size)
            if n_drop == 0:
                continue
            dropped = active[np.argsort(np.abs(w.ravel()[active]), kind="stable")[:n_drop]]
            flat = mask.ravel().copy()
            flat[dropped] = False
            candidates = np.flatnonzero(~flat & movable)
            candidates = candidates[~np.isin(candidates, dropped)]
            if candidates.size < n_drop:  # not enough fresh positions: allow the dropped ones back
                candidates = np.flatnonzero(~flat & movable)
            if self.regrow == "gradient" and self._last_grads is not None:
                g = np.abs(get_path(self._last_grads, path).ravel()[candidates])
                grown = candidates[np.argsort(-g, kind="stable")[:n_drop]]
            else:
                grown = self.rng.choice(candidates, size=n_drop, replace=False)
            flat[grown] = True
            self.masks[k] = flat.reshape(mask.shape)
            new_w = w.ravel().copy()
            new_w[~flat] = 0.0
            new_w[grown] = 0.0
            params = set_path(params, path, new_w.reshape(w.shape))
        trainer.params = self.dev(params)

    # -- hooks -------------------------------------------------------------------------------------
    def prepare_batch(self, trainer, batch):
        x, y = np.asarray(batch[0]), np.asarray(batch[1]).astype(np.int64)
        plain = tree_map(stop_gradient, trainer.params)
        h = np.asarray(self.be.to_numpy(self.model.hidden(plain, self.be.asarray(x))))
        self._replay = self.memory.sample(self.rng, self.replay_batch) if len(self.memory) else None
        self._store(h, y)
        return batch

    def _store(self, h: np.ndarray, y: np.ndarray) -> None:
        self.clock += 1
        if y.max() >= self.class_last_seen.size:
            grown = np.zeros(int(y.max()) + 1, np.int64)
            grown[: self.class_last_seen.size] = self.class_last_seen
            self.class_last_seen = grown
        self.class_last_seen[np.unique(y)] = self.clock
        seen = np.flatnonzero(self.class_last_seen > 0)
        recent = seen[np.argsort(-self.class_last_seen[seen], kind="stable")[: self.recent_classes]]
        keep = np.isin(y, recent)
        if keep.any():
            self.memory.add(self.rng, h=h[keep], y=y[keep])
        if len(self.memory):
            stored = self.memory.data["y"][: len(self.memory)]
            if not np.isin(stored, recent).all():
                self.memory.keep(np.isin(stored, recent))

    def replay_loss(self, params, h: np.ndarray, y: np.ndarray):
        """``β · CE(readout(params, h), y)`` on stored activations ``h (M, F)``."""
        logits = self.model.readout(params, self.be.asarray(h.astype(self.param_dtype(params))))
        return self.cross_entropy(logits, y) * self.replay_weight

    def extra_loss(self, trainer, params, batch):
        if self._replay is None or self.replay_weight == 0:
            return None
        return self.replay_loss(params, self._replay["h"], self._replay["y"])

    def _unit_paths(self, tree) -> list[tuple]:
        return [tuple(p) for p in self.model.unit_paths(tree)]

    def transform_grads(self, trainer, grads, batch):
        if self.regrow == "gradient":
            self._last_grads = self.numpy(grads)
        return self._held(grads, self.be.asarray)

    def transform_updates(self, trainer, updates):
        return self._held(updates, self.be.asarray)  # momentum would move what the gradients spare

    def after_step(self, trainer, batch, loss):
        trainer.params = self._apply_masks(trainer.params, self.be.asarray)
        if trainer.step_count % self.rewire_every == 0:
            self.rewire(trainer)
