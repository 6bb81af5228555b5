"""Curricula: small state machines that choose what to train on next.

A curriculum knows nothing about models or optimizers. The training loop asks
it for the current task and heads, draws batches with ``sample``, reports
per-example losses with ``record_losses`` (used by ``cyclical`` only) and, after
each evaluation, calls ``update(step, accuracies)``, which returns True when the
task changed (new heads may then appear: heads are identified by name, e.g.
"n5"). ``state_dict``/``load_state_dict`` save and restore the state for resume.

N-curricula (``single-head``, ``multi-head``, ``sliding``, ``anti``) work on a
task with an ``n`` field (``nparity``, ``ndms``) and rebuild it with
``dataclasses.replace(task, n=...)``; the length range follows the largest
current N unless the base task fixes a larger ``n_max``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..validate import check_bool
from .base import (Batch, DatasetTask, Head, Task, check_choice, check_real, check_int,
                   check_rng, take)

__all__ = ["Curriculum", "FixedCurriculum", "SingleHeadCurriculum", "MultiHeadCurriculum",
           "SlidingCurriculum", "AntiCurriculum", "CyclicalCurriculum",
           "make_curriculum", "curriculum_names"]


def _check_task(task: Any) -> Task:
    if not isinstance(task, Task):
        raise TypeError(f"task: got {type(task).__name__}, expected a seqcore task (seqcore.tasks.make(...))")
    return task


def _accuracy_list(accuracies: Mapping[str, float] | Sequence[float], heads: tuple[Head, ...]) -> list[float]:
    """Accuracies in head order, from a {head name: accuracy} mapping or a sequence."""
    names = [h.name for h in heads]
    if isinstance(accuracies, Mapping):
        keys = sorted(map(repr, accuracies))
        missing = [n for n in names if n not in accuracies]
        if missing:
            raise ValueError(f"accuracies: got keys [{', '.join(keys)}], missing {missing} "
                             f"(expected one per head: {names})")
        unknown = [k for k in accuracies if k not in names]
        if unknown:
            raise ValueError(f"accuracies: got keys {unknown} that name no current head, expected only "
                             f"the heads {names} (heads of an earlier level, or a typo?)")
        values = [accuracies[n] for n in names]
    else:
        if isinstance(accuracies, (str, bytes)) or not isinstance(accuracies, (Sequence, np.ndarray)):
            raise TypeError(f"accuracies: got {type(accuracies).__name__} {accuracies!r:.60}, expected a "
                            f"{{head name: accuracy}} mapping or a sequence of {len(heads)} accuracies")
        values = list(accuracies)
        if len(values) != len(heads):
            raise ValueError(f"accuracies: got {len(values)} values, expected {len(heads)} "
                             f"(one per head: {[h.name for h in heads]})")
    return [check_real("accuracies", a, low=0.0, high=1.0) for a in values]


class Curriculum:
    """Base curriculum: one fixed task, never advances."""

    name = "curriculum"

    def __init__(self, task: Task):
        self.task = _check_task(task)
        self.finished = False

    def current_task(self) -> Task:
        """The task to train on now."""
        return self.task

    def heads(self) -> tuple[Head, ...]:
        """The heads of the current task (label columns of ``y`` in this order)."""
        return self.current_task().heads

    @property
    def level(self) -> int | None:
        """The current N of an N-curriculum (largest N for multi-head), else None."""
        return None

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """A training batch of the current task (see ``Task.sample``)."""
        return self.current_task().sample(rng, batch_size)

    def record_losses(self, losses: np.ndarray) -> None:
        """Per-example losses (B,) of the last batch from ``sample`` (ignored here)."""

    def update(self, step: int, accuracies: Mapping[str, float] | Sequence[float]) -> bool:
        """Report evaluation accuracies (per head, by name or in head order) at
        ``step``; return True when the curriculum moved on to another task."""
        check_int("step", step, minimum=0)
        _accuracy_list(accuracies, self.heads())
        return False

    def state_dict(self) -> dict[str, Any]:
        """The mutable state: Python scalars, strings and NumPy arrays."""
        return {"kind": self.name, "finished": bool(self.finished)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from ``state_dict`` (of the same kind of curriculum).

        Every entry is checked before any is applied: a missing entry, a wrong type or a value
        this curriculum cannot be in raises ``ValueError``/``TypeError`` naming ``state[key]``."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state: got {type(state).__name__}, expected a state_dict of a {self.name!r} "
                            "curriculum")
        if state.get("kind") != self.name:
            raise ValueError(f"state: got kind {state.get('kind')!r}, expected a state_dict of a {self.name!r} "
                             "curriculum")
        self.finished = _state_bool(state, "finished")


def _state_entry(state: Mapping[str, Any], key: str) -> Any:
    if key not in state:
        raise ValueError(f"state: missing {key!r}, expected every entry of state_dict() "
                         f"(got {sorted(map(str, state))})")
    value = state[key]
    if isinstance(value, np.ndarray) and value.ndim == 0:  # a scalar read back from an .npz
        value = value[()]
    return value


def _state_int(state: Mapping[str, Any], key: str, minimum: int | None = None,
               maximum: int | None = None, bound: str = "") -> int:
    return check_int(f"state[{key!r}]", _state_entry(state, key), minimum=minimum, maximum=maximum, bound=bound)


def _state_bool(state: Mapping[str, Any], key: str) -> bool:
    return check_bool(f"state[{key!r}]", _state_entry(state, key))


def _state_indices(state: Mapping[str, Any], key: str, size: int, shape_tail: tuple = (),
                   distinct: bool = False) -> np.ndarray:
    """An int array of shape (K, *shape_tail) with values in [0, size) (``size=None``: >= 0)."""
    value = np.asarray(_state_entry(state, key))
    if value.size == 0:
        return np.zeros((0,) + shape_tail, dtype=np.int64)
    if not np.issubdtype(value.dtype, np.integer):
        raise TypeError(f"state[{key!r}]: got dtype {value.dtype}, expected integers")
    if value.ndim != 1 + len(shape_tail) or value.shape[1:] != shape_tail:
        want = "(K" + "".join(f", {d}" for d in shape_tail) + ("" if shape_tail else ",") + ")"
        raise ValueError(f"state[{key!r}]: got shape {value.shape}, expected {want}")
    if value.min() < 0 or (size is not None and value.max() >= size):
        raise ValueError(f"state[{key!r}]: got values in [{value.min()}, {value.max()}], "
                         f"expected in [0, {'...' if size is None else size - 1}]")
    if distinct and np.unique(value).size != value.size:
        raise ValueError(f"state[{key!r}]: got repeated indices, expected distinct ones")
    return value.astype(np.int64)


class FixedCurriculum(Curriculum):
    """``fixed``: always the given task."""

    name = "fixed"


class _NCurriculum(Curriculum):
    """Shared machinery of the curricula over N: the current N, transitions."""

    step_direction = +1

    def __init__(self, task: Task, start_n: int | None = None, *, threshold: float = 0.98,
                 max_n: int | None = None, min_n: int | None = None):
        super().__init__(task)
        if not hasattr(task, "ns") or "n" not in {f.name for f in dataclasses.fields(task)}:
            raise ValueError(f"task: got {task.name!r} for the {self.name!r} curriculum, which moves over N; "
                             "expected a task with an `n` field (nparity, ndms), or the 'fixed' curriculum")
        floor = getattr(task, "min_n", 1)
        self.threshold = check_real("threshold", threshold, low=0.0, high=1.0, low_open=True)
        # N counts from 2 by default (RESEARCH §6); N = 1 parity is allowed when asked for
        self.min_n = max(2, floor) if min_n is None else check_int("min_n", min_n, minimum=floor)
        default_start = max(task.ns) if self.step_direction < 0 else min(task.ns)
        self.start_n = default_start if start_n is None else check_int("start_n", start_n, minimum=floor)
        if self.step_direction < 0 and self.min_n > self.start_n:
            # blame the value the user gave: min_n, or else start_n (given, or the task's N)
            start = f"{self.start_n}" + (" (the task's largest N)" if start_n is None else "")
            if min_n is not None and start_n is None:
                raise ValueError(f"min_n: got {self.min_n}, expected <= start_n={start}")
            default = " (the default; pass a smaller min_n to go lower)" if min_n is None else ""
            raise ValueError(f"start_n: got {start}, expected >= min_n={self.min_n}{default}")
        self.max_n = None if max_n is None else check_int("max_n", max_n, minimum=self.start_n, bound="start_n")
        self.n = self.start_n
        self.transitions: list[tuple[int, int]] = []
        if start_n is not None:  # built here, or the task's refusal would blame its field n at the first sample
            try:
                self._task_for((self.start_n,))
            except ValueError as err:
                raise ValueError(f"start_n: got {start_n}, whose task {task.name!r} is refused ({err})") from None

    @property
    def level(self) -> int:
        return self.n

    def active_ns(self) -> tuple[int, ...]:
        """The N of each current head."""
        return (self.n,)

    def current_task(self) -> Task:
        return self._task_for(self.active_ns())

    def _task_for(self, ns: tuple[int, ...]) -> Task:
        n_max = None if self.task.n_max is None else max(self.task.n_max, max(ns))
        return dataclasses.replace(self.task, n=ns[0] if len(ns) == 1 else ns, n_max=n_max)

    def _ready(self, accs: list[float]) -> bool:
        return all(a >= self.threshold for a in accs)

    def _can_move(self) -> bool:
        if self.step_direction > 0:
            return self.max_n is None or self.n < self.max_n
        return self.n > self.min_n

    def update(self, step, accuracies):
        # transitions are recorded in time order, so a report cannot predate the last one
        last = self.transitions[-1][0] if self.transitions else 0
        check_int("step", step, minimum=last, bound="the step of the last transition" if self.transitions else "")
        accs = _accuracy_list(accuracies, self.heads())
        if self.finished or not self._ready(accs):
            return False
        if not self._can_move():
            self.finished = True
            return False
        self.n += self.step_direction
        self.transitions.append((int(step), self.n))
        return True

    def state_dict(self):
        return {**super().state_dict(), "n": int(self.n),
                "transitions": np.asarray(self.transitions, dtype=np.int64).reshape(-1, 2)}

    def load_state_dict(self, state):
        # N only moves away from start_n: up to max_n, or (anti) down to min_n
        if self.step_direction > 0:
            low, high, low_name, high_name = self.start_n, self.max_n, "start_n", "max_n"
        else:
            low, high, low_name, high_name = self.min_n, self.start_n, "min_n", "start_n"
        if isinstance(state, Mapping) and state.get("kind") == self.name:
            n = _state_int(state, "n", minimum=low, bound=low_name)
            if high is not None:
                _state_int(state, "n", maximum=high, bound=high_name)
            transitions = _state_indices(state, "transitions", None, (2,))
            if np.any(np.diff(transitions[:, 0]) < 0):
                raise ValueError(f"state['transitions']: got steps {transitions[:, 0].tolist()!r:.200}, "
                                 "expected them in time order")
        super().load_state_dict(state)
        self.n = n
        self.transitions = [(int(s), int(v)) for s, v in transitions]


class SingleHeadCurriculum(_NCurriculum):
    """``single-head``: train one N (one head, "n{N}"); when its accuracy reaches
    ``threshold`` (0.98) move to N+1, replacing the head, up to ``max_n``."""

    name = "single-head"

    def __init__(self, task, start_n=None, *, threshold=0.98, max_n=None):
        super().__init__(task, start_n, threshold=threshold, max_n=max_n)


class MultiHeadCurriculum(_NCurriculum):
    """``multi-head``: heads for every N from ``start_n`` to the current N (their
    losses are summed by the loop); add a head for N+1 when ``advance_when="all"``
    heads reach ``threshold`` (default) or only the ``"newest"`` one does."""

    name = "multi-head"

    def __init__(self, task, start_n=None, *, threshold=0.98, max_n=None, advance_when="all"):
        super().__init__(task, start_n, threshold=threshold, max_n=max_n)
        self.advance_when = check_choice("advance_when", advance_when, ("all", "newest"))

    def active_ns(self):
        return tuple(range(self.start_n, self.n + 1))

    def _ready(self, accs):
        return super()._ready(accs if self.advance_when == "all" else accs[-1:])


class SlidingCurriculum(MultiHeadCurriculum):
    """``sliding``: multi-head keeping only the newest ``window`` heads (N-window+1..N),
    so the oldest head is dropped when a new one is added."""

    name = "sliding"

    def __init__(self, task, start_n=None, *, window=3, threshold=0.98, max_n=None, advance_when="all"):
        super().__init__(task, start_n, threshold=threshold, max_n=max_n, advance_when=advance_when)
        self.window = check_int("window", window, minimum=1)

    def active_ns(self):
        return tuple(range(max(self.start_n, self.n - self.window + 1), self.n + 1))


class AntiCurriculum(_NCurriculum):
    """``anti``: single head starting at the hardest N (``start_n``, default the
    base task's largest N) and moving to N-1 at ``threshold``, down to ``min_n``."""

    name = "anti"
    step_direction = -1

    def __init__(self, task, start_n=None, *, threshold=0.98, min_n=None):
        super().__init__(task, start_n, threshold=threshold, min_n=min_n)


class CyclicalCurriculum(Curriculum):
    """``cyclical``: each epoch trains on a fraction of a fixed training set; the
    fraction starts at ``start_fraction``, is divided by ``alpha`` each epoch up
    to ``end_fraction``, then multiplied by ``alpha`` back down, and so on
    (0.25, 0.5, 1, 0.5, 0.25, 0.5, … for alpha = 0.5). An epoch's examples are
    drawn without replacement with probability ∝ 1/loss (losses reported by the
    loop via ``record_losses``; unseen examples count as loss 1), then shuffled.

    The training set is a ``DatasetTask``'s train split (its first
    ``num_examples`` rows when given) or ``task.fixed_set(num_examples)``
    (default 10000) for generated tasks.
    """

    name = "cyclical"

    def __init__(self, task, *, num_examples=None, start_fraction=0.25, alpha=0.5,
                 end_fraction=1.0, min_loss=1e-4):
        super().__init__(task)
        self.start_fraction = check_real("start_fraction", start_fraction, low=0.0, high=1.0,
                                          low_open=True)
        self.end_fraction = check_real("end_fraction", end_fraction, low=self.start_fraction,
                                        high=1.0)
        self.alpha = check_real("alpha", alpha, low=0.0, high=1.0, low_open=True)
        if self.alpha == 1.0 and self.start_fraction < self.end_fraction:
            raise ValueError("alpha: got 1.0, expected < 1 so the fraction can move "
                             f"from start_fraction={start_fraction} to end_fraction={end_fraction}")
        self.min_loss = check_real("min_loss", min_loss, low=0.0, low_open=True)
        if isinstance(task, DatasetTask):
            available = task.num_examples("train")
            self.size = available if num_examples is None else check_int(
                "num_examples", num_examples, minimum=1, maximum=available, bound="training examples")
        else:
            self.size = 10000 if num_examples is None else check_int("num_examples", num_examples, minimum=1)
            task._check_fits("num_examples", self.size, "training set for the cyclical curriculum")
        self._pool: Batch | None = None
        self.losses = np.ones(self.size)
        self.epoch = 0
        self.fraction = self.start_fraction
        self.increasing = True
        self.order = np.zeros(0, dtype=np.int64)
        self.position = 0
        self.last_indices = np.zeros(0, dtype=np.int64)

    def _batch(self, indices: np.ndarray) -> Batch:
        if isinstance(self.task, DatasetTask):
            return self.task.batch_from_indices(indices, "train")
        if self._pool is None:
            self._pool = self.task.fixed_set(self.size)
        return take(self._pool, indices, per_step=self.task.per_step)

    def _next_fraction(self) -> None:
        # repeated division and multiplication by alpha drift by an ulp or so (0.01 / 0.1 / 0.1
        # = 0.9999999999999999): a fraction that close to an end is that end, or the end
        # fractions would each run twice
        if self.increasing:
            f = self.fraction / self.alpha
            self.fraction = self.end_fraction if f >= self.end_fraction or math.isclose(f, self.end_fraction) else f
            self.increasing = self.fraction < self.end_fraction
        else:
            f = self.fraction * self.alpha
            self.fraction = (self.start_fraction if f <= self.start_fraction or math.isclose(f, self.start_fraction)
                             else f)
            self.increasing = self.fraction <= self.start_fraction

    def _new_epoch(self, rng: np.random.Generator) -> None:
        if self.epoch > 0:
            self._next_fraction()
        count = max(1, math.ceil(self.fraction * self.size - 1e-9))
        weights = 1.0 / np.maximum(self.losses, self.min_loss)
        chosen = rng.choice(self.size, size=count, replace=False, p=weights / weights.sum())
        self.order = rng.permutation(chosen).astype(np.int64)
        self.position = 0
        self.epoch += 1

    def epoch_size(self) -> int:
        """Number of examples in the current epoch: 0 before the first :meth:`sample`, which
        draws the first epoch with its ``rng``."""
        return len(self.order)

    def sample(self, rng, batch_size):
        """The next ``batch_size`` examples of the epoch (starting new epochs as needed)."""
        check_rng(rng)
        check_int("batch_size", batch_size, minimum=1)
        parts, needed = [], batch_size
        while needed:
            if self.position >= len(self.order):
                self._new_epoch(rng)
            chunk = self.order[self.position:self.position + needed]
            self.position += len(chunk)
            needed -= len(chunk)
            parts.append(chunk)
        self.last_indices = np.concatenate(parts)
        return self._batch(self.last_indices)

    def record_losses(self, losses):
        """Per-example losses (B,) of the last batch; they set the sampling weights."""
        losses = np.asarray(losses)
        if losses.dtype.kind not in "fiu":
            raise TypeError(f"losses: got dtype {losses.dtype}, expected real per-example losses")
        losses = losses.astype(np.float64)
        if losses.shape != self.last_indices.shape:
            raise ValueError(f"losses: got shape {losses.shape}, expected {self.last_indices.shape} "
                             "(one per example of the last batch from sample)")
        if not np.all(np.isfinite(losses)) or np.any(losses < 0):
            raise ValueError("losses: got non-finite or negative values, expected losses >= 0")
        self.losses[self.last_indices] = losses

    def state_dict(self):
        return {**super().state_dict(), "losses": self.losses.copy(), "epoch": int(self.epoch),
                "fraction": float(self.fraction), "increasing": bool(self.increasing),
                "order": self.order.copy(), "position": int(self.position),
                "last_indices": self.last_indices.copy()}

    def load_state_dict(self, state):
        if isinstance(state, Mapping) and state.get("kind") == self.name:
            losses = np.asarray(_state_entry(state, "losses"))
            if losses.dtype.kind not in "fiu":
                raise TypeError(f"state['losses']: got dtype {losses.dtype}, expected floats")
            if losses.shape != (self.size,):
                raise ValueError(f"state['losses']: got shape {losses.shape}, expected ({self.size},)")
            if not np.all(np.isfinite(losses)) or np.any(losses < 0):
                raise ValueError("state['losses']: got non-finite or negative values, expected losses >= 0")
            epoch = _state_int(state, "epoch", minimum=0)
            fraction = _state_entry(state, "fraction")
            fraction = check_real("state['fraction']", fraction, low=self.start_fraction,
                                   high=self.end_fraction)
            increasing = _state_bool(state, "increasing")
            order = _state_indices(state, "order", self.size, distinct=True)
            position = _state_int(state, "position", minimum=0)
            _state_int(state, "position", maximum=len(order), bound="len(state['order'])")
            last_indices = _state_indices(state, "last_indices", self.size)
        super().load_state_dict(state)
        self.losses = np.array(losses, dtype=np.float64)
        self.epoch, self.fraction, self.increasing = epoch, fraction, increasing
        self.order, self.position, self.last_indices = order.copy(), position, last_indices.copy()


_CURRICULA = {c.name: c for c in (FixedCurriculum, SingleHeadCurriculum, MultiHeadCurriculum,
                                  SlidingCurriculum, AntiCurriculum, CyclicalCurriculum)}


def curriculum_names() -> tuple[str, ...]:
    """The curriculum names accepted by ``make_curriculum``."""
    return tuple(_CURRICULA)


def make_curriculum(name: str, task: Task, **kwargs: Any) -> Curriculum:
    """Build curriculum ``name`` over ``task``, e.g.
    ``make_curriculum("multi-head", make("nparity", n=2), threshold=0.98)``."""
    if not isinstance(name, str) or name not in _CURRICULA:
        raise ValueError(f"curriculum: got {name!r}, expected one of {', '.join(_CURRICULA)}")
    try:
        return _CURRICULA[name](task, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            import inspect
            bad = str(e).rsplit("argument", 1)[-1].strip()
            allowed = [p for p in inspect.signature(_CURRICULA[name]).parameters if p != "task"]
            expected = f"some of {allowed}" if allowed else "none (it has no fields to set)"
            raise ValueError(f"curriculum_kwargs: got {bad} for the {name!r} curriculum, "
                             f"expected {expected}") from None
        raise
