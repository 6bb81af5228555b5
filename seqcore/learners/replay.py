"""Rehearsal: memory buffers, experience replay, A-GEM and power-law rehearsal.

Buffers hold named fields (``x``, ``y``, and e.g. ``logits`` for DER) in arrays of a
fixed capacity:

* :class:`ReservoirBuffer` — reservoir sampling (Vitter's algorithm R): after n
  insertions every one of them is in the buffer with probability capacity / n.
* :class:`ClassBalancedBuffer` — class-balancing reservoir sampling (Chrysakis & Moens
  2020): while full, a sample of a class that is not among the largest evicts a random
  member of a largest class; a sample of a largest class c replaces a random member of
  c with probability m_c / n_c (m_c stored, n_c seen). Stored class counts stay within
  one of each other for the classes that had enough samples.

Learners:

* ``replay`` (ER): each batch is the current batch plus ``replay_batch`` samples from
  the buffer; the current batch is added to the buffer after the step.
* ``agem`` (Chaudhry et al. 2019): an episodic memory of ``memory_per_experience``
  samples per past experience; the gradient g is projected when it conflicts with the
  memory's gradient g_ref: ``g ← g − (g·g_ref / g_ref·g_ref) g_ref`` if ``g·g_ref < 0``.
* ``power-law``: episodic memories as for A-GEM; during experience t the rehearsed
  tasks are those of :func:`seqcore.tasks.streams.power_law_steps` (``budget`` draws
  with ``p_j ∝ Δ_j^(−exponent)``, Δ_j the experiences since task j was last rehearsed);
  replay batches come from their memories. ``exponent=0`` is uniform rehearsal of the
  same budget.
"""
from __future__ import annotations

import math

import numpy as np

from ..tree import tree_map
from ..validate import check_fits_in_memory, check_rng
from .base import HP, Learner, check_tree_like, tree_dot

__all__ = ["ReservoirBuffer", "ClassBalancedBuffer", "make_buffer", "Replay", "AGEM", "PowerLawRehearsal",
           "agem_project"]


def _check_capacity(capacity, name: str) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
        raise ValueError(f"{name}: got {capacity!r}, expected an int >= 1")
    return int(capacity)


MAX_CLASSES = 2 ** 24  # ClassBalancedBuffer counts samples per class in an array indexed by label


class ReservoirBuffer:
    """A fixed-capacity buffer filled by reservoir sampling.

    ``add(rng, x=(B, ...), y=(B,), ...)`` inserts B samples (every field has B rows; after
    the first batch, rows of the stored shape and a dtype that casts within the stored kind);
    ``sample(rng, n)`` returns ``{field: (min(n, size), ...)}`` drawn without replacement.
    ``name`` is what errors call the capacity (``memory_size`` for a learner's buffer).
    """

    def __init__(self, capacity: int, *, name: str = "capacity"):
        self._capacity_name = name
        self.capacity = _check_capacity(capacity, name)
        self.data: dict[str, np.ndarray] = {}
        self.size = 0
        self.n_seen = 0

    def __len__(self) -> int:
        return self.size

    def _check_fields(self, fields: dict) -> int:
        if not fields:
            raise ValueError("fields: got none, expected arrays such as x=..., y=...")
        rows = {k: np.asarray(v).shape[0] if np.ndim(v) else -1 for k, v in fields.items()}
        if len(set(rows.values())) != 1 or -1 in rows.values():
            raise ValueError(f"fields: got leading sizes {rows}, expected the same batch size B for every field")
        if self.data and set(fields) != set(self.data):
            raise ValueError(f"fields: got {sorted(fields)}, expected {sorted(self.data)} as before")
        if 0 in rows.values():  # nothing to store (y=[] is float64 to NumPy: no dtype to check)
            return 0
        for k, v in fields.items() if self.data else ():
            v, stored = np.asarray(v), self.data[k]
            # a row assignment would broadcast a smaller row or truncate floats into ints silently
            if v.shape[1:] != stored.shape[1:]:
                raise ValueError(f"fields[{k!r}]: got rows of shape {v.shape[1:]}, expected {stored.shape[1:]} "
                                 "as stored")
            if not np.can_cast(v.dtype, stored.dtype, "same_kind"):
                raise TypeError(f"fields[{k!r}]: got {v.dtype} values, expected {stored.dtype} as stored (or a "
                                "dtype of the same kind)")
        if not self.data:
            self.data = self._allocate({k: np.asarray(v) for k, v in fields.items()})
        return next(iter(rows.values()))

    def _allocate(self, rows: dict) -> dict[str, np.ndarray]:
        """``capacity`` rows like those of each field of ``rows``, refused by name when they could
        never fit in memory (NumPy's unnamed error, or an out-of-memory kill, otherwise)."""
        row = sum(v.dtype.itemsize * math.prod(v.shape[1:]) for v in rows.values())
        check_fits_in_memory(self._capacity_name, self.capacity, self.capacity * row,
                             f"buffer ({row} bytes per sample)")
        return {k: np.zeros((self.capacity,) + v.shape[1:], v.dtype) for k, v in rows.items()}

    def _put(self, slot: int, fields: dict, i: int) -> None:
        for k, v in fields.items():
            self.data[k][slot] = v[i]

    def add(self, rng: np.random.Generator, **fields) -> None:
        check_rng(rng)
        B = self._check_fields(fields)
        for i in range(B):
            if self.size < self.capacity:
                self._put(self.size, fields, i)
                self.size += 1
            else:
                j = int(rng.integers(0, self.n_seen + 1))
                if j < self.capacity:
                    self._put(j, fields, i)
            self.n_seen += 1

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        check_rng(rng)
        if self.size == 0:
            raise ValueError("buffer: empty, nothing to sample")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: got {n!r}, expected an int >= 1")
        index = rng.choice(self.size, size=min(int(n), self.size), replace=False)
        return {k: v[index] for k, v in self.data.items()}

    def keep(self, selected) -> None:
        """Drop every stored sample whose entry in ``selected`` (size,) bool is False."""
        selected = np.asarray(selected, bool)
        if selected.shape != (self.size,):
            raise ValueError(f"selected: got shape {selected.shape}, expected ({self.size},)")
        for k, v in self.data.items():
            kept = v[: self.size][selected]
            v[: kept.shape[0]] = kept
        self.size = int(selected.sum())

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "size": self.size, "n_seen": self.n_seen,
                "data": {k: v[: self.size] for k, v in self.data.items()}}

    _state_keys = ("capacity", "size", "n_seen", "data")

    def _check_state(self, state) -> tuple[int, int, dict]:
        """``(size, n_seen, data)`` of a :meth:`state_dict`, checked against this buffer."""
        if not isinstance(state, dict):
            raise TypeError(f"state: got {type(state).__name__}, expected a buffer's state_dict")
        if set(state) != set(self._state_keys):
            raise ValueError(f"state: got keys {sorted(state)}, expected {sorted(self._state_keys)} "
                             f"(the state of a {type(self).__name__})")

        def count(key, low, high=None):
            v = state[key]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low or (high is not None and v > high):
                raise ValueError(f"state[{key!r}]: got {v!r}, expected an int in [{low}, {high if high is not None else '...'}]")
            return int(v)

        if count("capacity", 1) != self.capacity:
            raise ValueError(f"state: got capacity {state['capacity']}, expected {self.capacity}")
        size = count("size", 0, self.capacity)
        n_seen = count("n_seen", size)
        data = state["data"]
        if not isinstance(data, dict) or (size and not data):
            raise ValueError(f"state['data']: got {type(data).__name__} {data!r:.60}, expected a dict of arrays "
                             f"with {size} rows")
        for k, v in data.items():
            if not hasattr(v, "shape") or v.ndim < 1 or v.shape[0] != size:
                raise ValueError(f"state['data'][{k!r}]: got shape {getattr(v, 'shape', None)}, expected "
                                 f"({size}, ...) like state['size']")
        return size, n_seen, data

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (checked first: capacity, ``0 <= size <= capacity``,
        ``n_seen >= size``, one row per stored sample in every field)."""
        self.size, self.n_seen, data = self._check_state(state)
        self.data = self._allocate(data)
        for k, v in data.items():
            self.data[k][: self.size] = v


class ClassBalancedBuffer(ReservoirBuffer):
    """Class-balancing reservoir sampling; needs integer labels ``y (B,) >= 0``."""

    def __init__(self, capacity: int, *, name: str = "capacity"):
        super().__init__(capacity, name=name)
        self.seen_per_class = np.zeros(0, np.int64)

    def add(self, rng: np.random.Generator, **fields) -> None:
        check_rng(rng)
        if "y" not in fields:
            raise ValueError(f"fields: got {sorted(fields)}, expected a label field y for class balance")
        y = np.asarray(fields["y"])
        if y.ndim == 1 and y.size == 0:
            self._check_fields(fields)
            return
        if y.ndim != 1 or y.dtype.kind not in "iu":  # counted per class: 0.5 would count as class 0
            raise TypeError(f"y: got {y.dtype} of shape {y.shape} ({y!r:.60}), expected integer class labels (B,)")
        if y.size and y.min() < 0:
            raise ValueError(f"y: got label {int(y.min())}, expected labels >= 0")
        if y.size and y.max() >= MAX_CLASSES:  # a count per class up to the largest label is kept
            raise ValueError(f"y: got label {int(y.max())}, expected class indices < {MAX_CLASSES}")
        B = self._check_fields(fields)
        y = y.astype(np.int64)
        if y.size and y.max() >= self.seen_per_class.size:
            grown = np.zeros(int(y.max()) + 1, np.int64)
            grown[: self.seen_per_class.size] = self.seen_per_class
            self.seen_per_class = grown
        for i in range(B):
            c = int(y[i])
            self.seen_per_class[c] += 1
            self.n_seen += 1
            if self.size < self.capacity:
                self._put(self.size, fields, i)
                self.size += 1
                continue
            stored = self.data["y"][: self.size].astype(np.int64)
            counts = np.bincount(stored, minlength=self.seen_per_class.size)
            largest = np.flatnonzero(counts == counts.max())
            if c not in largest:
                victim_class = int(rng.choice(largest))
                slot = int(rng.choice(np.flatnonzero(stored == victim_class)))
                self._put(slot, fields, i)
            elif rng.random() < counts[c] / self.seen_per_class[c]:
                slot = int(rng.choice(np.flatnonzero(stored == c)))
                self._put(slot, fields, i)

    def state_dict(self) -> dict:
        return dict(super().state_dict(), seen_per_class=self.seen_per_class)

    _state_keys = ReservoirBuffer._state_keys + ("seen_per_class",)

    def _check_state(self, state):
        size, n_seen, data = super()._check_state(state)
        seen = np.asarray(state["seen_per_class"])
        if seen.size and (seen.ndim != 1 or seen.dtype.kind not in "iu" or seen.min() < 0):
            raise ValueError(f"state['seen_per_class']: got {seen!r:.80}, expected (C,) counts >= 0")
        if size:
            y = np.asarray(data.get("y", np.zeros(0)))
            if "y" not in data or y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= seen.size:
                raise ValueError(f"state['data']['y']: got {y!r:.80}, expected int labels in "
                                 f"[0, {seen.size}) (class balance needs them)")
        return size, n_seen, data

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.seen_per_class = np.asarray(state["seen_per_class"], np.int64).reshape(-1)


def make_buffer(kind: str, capacity: int, *, name: str = "capacity") -> ReservoirBuffer:
    """``"reservoir"`` or ``"class-balanced"`` buffer of ``capacity`` samples (``name``: see
    :class:`ReservoirBuffer`)."""
    if kind == "reservoir":
        return ReservoirBuffer(capacity, name=name)
    if kind == "class-balanced":
        return ClassBalancedBuffer(capacity, name=name)
    raise ValueError(f"buffer: got {kind!r}, expected 'reservoir' or 'class-balanced'")


def _concat(batch, extra_x, extra_y):
    x, y = batch[0], batch[1]
    return (np.concatenate([x, extra_x.astype(x.dtype)]), np.concatenate([y, extra_y.astype(y.dtype)]), None)


class Replay(Learner):
    """Experience replay with a reservoir (or class-balanced) buffer."""

    name = "replay"
    hyperparameters = {
        "memory_size": HP(500, "buffer capacity (samples)", low=1),
        "replay_batch": HP(32, "buffer samples added to every batch", low=1),
        "buffer": HP("reservoir", "buffer policy", choices=("reservoir", "class-balanced")),
    }
    state_fields = ("memory",)

    def __init__(self, **hp):
        super().__init__(**hp)
        self.memory = make_buffer(self.buffer, self.memory_size, name="memory_size")
        self._current = None

    def prepare_batch(self, trainer, batch):
        self._current = batch
        if len(self.memory) == 0:
            return batch
        mem = self.memory.sample(self.rng, self.replay_batch)
        return _concat(batch, mem["x"], mem["y"])

    def after_step(self, trainer, batch, loss):
        x, y = self._current[0], self._current[1]
        self.memory.add(self.rng, x=np.asarray(x), y=np.asarray(y))


def agem_project(grads, reference, to_numpy=np.asarray):
    """A-GEM's projection: ``g − (g·g_ref / g_ref·g_ref) g_ref`` when ``g·g_ref < 0``, else ``g``.

    ``grads`` and ``reference`` are trees of the same structure; dot products run over
    all leaves together. Returns a tree like ``grads``.
    """
    r_leaves, g_leaves = check_tree_like("reference", reference, grads, "grads")
    g_np = [to_numpy(v) for v in g_leaves]
    r_np = [to_numpy(v) for v in r_leaves]
    dot = tree_dot(g_np, r_np)
    if dot >= 0:
        return grads
    ref_sq = tree_dot(r_np, r_np)
    if ref_sq == 0:
        return grads
    coef = dot / ref_sq
    return tree_map(lambda g, r: g - r * coef, grads, reference)


class _EpisodicMemory(Learner):
    """A fixed number of random training samples stored per finished experience."""

    state_fields = ("memory_x", "memory_y")

    def _check_state(self, values):
        super()._check_state(values)
        xs, ys = values["memory_x"], values["memory_y"]
        if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
            raise ValueError(f"memory_x/memory_y: got {len(xs) if isinstance(xs, list) else xs!r} and "
                             f"{len(ys) if isinstance(ys, list) else ys!r} memories, expected one (x, y) pair "
                             "per finished experience")
        for i, (x, y) in enumerate(zip(xs, ys)):
            if x.ndim < 1 or y.ndim != 1 or x.shape[0] != y.shape[0] or y.dtype.kind not in "iu":
                raise ValueError(f"memory_x[{i}]/memory_y[{i}]: got shapes {x.shape} and {y.shape} "
                                 f"(labels {y.dtype}), expected x (N, ...) and int labels y (N,)")

    def __init__(self, **hp):
        super().__init__(**hp)
        self.memory_x: list = []
        self.memory_y: list = []

    def after_experience(self, trainer, data):
        n = min(self.memory_per_experience, data.n_train) if data.n_train else self.memory_per_experience
        x, y = data.sample(self.rng, n)
        self.memory_x.append(np.asarray(x))
        self.memory_y.append(np.asarray(y))

    def memory_batch(self, tasks, n: int):
        """``n`` samples drawn uniformly from the memories of ``tasks`` (without replacement when possible)."""
        x = np.concatenate([self.memory_x[t] for t in tasks])
        y = np.concatenate([self.memory_y[t] for t in tasks])
        index = self.rng.choice(len(y), size=min(n, len(y)), replace=False)
        return x[index], y[index]


class AGEM(_EpisodicMemory):
    """Averaged gradient episodic memory."""

    name = "agem"
    hyperparameters = {
        "memory_per_experience": HP(256, "samples stored per experience", low=1),
        "replay_batch": HP(256, "memory samples for the reference gradient", low=1),
    }

    def transform_grads(self, trainer, grads, batch):
        if not self.memory_x:
            return grads
        x, y = self.memory_batch(range(len(self.memory_x)), self.replay_batch)
        reference = self.gradient(trainer.params, (x, y))
        return agem_project(grads, reference, self.be.to_numpy)


class PowerLawRehearsal(_EpisodicMemory):
    """Rehearsal of past tasks chosen by a power law of the time since each was last rehearsed."""

    name = "power-law"
    hyperparameters = {
        "memory_per_experience": HP(256, "samples stored per experience", low=1),
        "replay_batch": HP(32, "memory samples added to every batch", low=1),
        "exponent": HP(1.0, "α of p_j ∝ Δ_j^(−α); 0 = uniform", low=0.0),
        # >= 1 like --stream-budget: budget 0 would rehearse nothing, i.e. be naive fine-tuning
        "budget": HP(2, "draws of past tasks per experience (distinct tasks rehearsed ≤ budget)", low=1),
        "schedule_seed": HP(0, "seed of the rehearsal schedule", low=0),
    }

    def bind(self, model, **kw):
        from ..tasks.streams import power_law_steps
        super().bind(model, **kw)
        self.schedule = power_law_steps(self.n_experiences, self.exponent, self.budget, self.schedule_seed)

    def rehearsed(self, index: int) -> tuple[int, ...]:
        """Past tasks rehearsed during experience ``index``."""
        return tuple(self.schedule[index][1:])

    def before_experience(self, trainer, data):
        self.index = data.index

    def prepare_batch(self, trainer, batch):
        tasks = [t for t in self.rehearsed(self.index) if t < len(self.memory_x)]
        if not tasks:
            return batch
        x, y = self.memory_batch(tasks, self.replay_batch)
        return _concat(batch, x, y)
