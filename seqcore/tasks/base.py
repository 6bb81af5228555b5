"""What every task shares: the `Batch` and `Head` types, the `Task` base class,
argument checks, and small helpers over batches.

Conventions (the loop relies on them):

- Arrays are NumPy and batch-first. ``x`` is ``(B, T, D)`` float32 with
  ``D = task.input_size``; token tasks give one-hot rows (``task.input_kind ==
  "one_hot"``; ``x.argmax(-1)`` recovers the token ids), the others real values.
- ``mask`` is ``(B, T)`` float32 and marks the steps **where the loss is
  taken** (1.0) and the others (0.0). Variable-length sequences are
  right-padded with zeros; for a last-step task the mask is one-hot at each
  sequence's last valid step, so ``last_step_index(mask)`` finds it.
- ``y`` depends on the head's loss:
  ``"last"`` int64 ``(B,)`` (class at the marked step), ``"per_step"`` int64
  ``(B, T)`` (a class at every marked step; unmarked entries are 0 and
  meaningless), ``"regression"`` float32 ``(B, T, out)`` (targets at the marked
  steps; unmarked entries are 0). With several heads the labels of head ``k``
  are ``y[..., k]`` (``(B, H)`` or ``(B, T, H)``); regression tasks have one head.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from ..masks import last_step_index
from ..validate import check_array, check_choice, check_fits_in_memory, check_real, check_rng, store_python_scalars  # noqa: F401  (check_choice, check_real: re-exported)

__all__ = [
    "Batch", "Head", "Task", "DatasetTask", "LOSSES",
    "last_step_index", "head_targets", "take", "concat",
]

LOSSES = ("last", "per_step", "regression")


class Batch(NamedTuple):
    """One batch: inputs ``x`` (B, T, D) float32, labels ``y`` (see module doc),
    loss mask ``mask`` (B, T) float32 (1.0 where the loss is taken)."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray


@dataclasses.dataclass(frozen=True)
class Head:
    """One output head: its name, number of outputs (classes, or values for
    regression) and loss kind: "last", "per_step" or "regression".

    ``tolerance`` (regression only): a prediction counts as correct when every output is
    within it of the target, which gives the head an accuracy (e.g. 0.04 for the adding
    problem)."""

    name: str
    output_size: int
    loss: str
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: got {self.name!r}, expected a non-empty string")
        check_int("output_size", self.output_size, minimum=1)
        check_choice("loss", self.loss, LOSSES)
        if self.tolerance is not None:
            if self.loss != "regression":
                raise ValueError(f"tolerance: got {self.tolerance!r} for a {self.loss!r} head, "
                                 "expected None (only regression heads take a tolerance)")
            check_real("tolerance", self.tolerance, low=0.0, low_open=True)


# ---------------------------------------------------------------- argument checks

def check_int(name: str, value: Any, *, minimum: int | None = None,
              maximum: int | None = None, bound: str = "") -> int:
    """Return ``value`` as int if it is an integer in [minimum, maximum], else raise.

    ``bound`` names the other field a limit comes from, for the message
    ("expected >= length=10").
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: got {value!r} ({type(value).__name__}), expected an int")
    label = f"{bound}=" if bound else ""
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: got {value}, expected >= {label}{minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}: got {value}, expected <= {label}{maximum}")
    return int(value)


def check_sample_fits(task: Any, fields: Sequence[str], steps: int, width: int, labels: int = 1) -> None:
    """Refuse sizes whose one sequence could never be held in memory: ``steps`` steps of
    ``width`` float32 inputs, ``labels`` int64 labels and a float32 mask value each.

    ``fields`` name the task's fields the sizes come from. Sampling such a sequence would end
    in NumPy's overflow or memory error (which names no field), or an out-of-memory kill. A
    vocabulary is a width here, so token ids also stay far inside int64."""
    nbytes = steps * (4 * width + 8 * labels + 4)  # Python ints: no overflow
    check_fits_in_memory("/".join(fields), "/".join(str(getattr(task, f)) for f in fields), nbytes,
                         f"one sequence ({steps} steps × {width} inputs)")


# ---------------------------------------------------------------- batch helpers

def head_targets(y: np.ndarray, heads: Sequence[Head]) -> tuple[np.ndarray, ...]:
    """Split labels ``y`` into one array per head (see the module doc for shapes)."""
    check_array("y", y, floating=False)
    if isinstance(heads, (str, bytes)) or not isinstance(heads, Sequence) or \
            not all(isinstance(h, Head) for h in heads):
        raise TypeError(f"heads: got {heads!r:.60}, expected a sequence of Head (task.heads)")
    heads = tuple(heads)
    if not heads:
        raise ValueError("heads: got (), expected at least one Head (task.heads)")
    if y.ndim == 0:
        raise ValueError(f"y: got shape {tuple(y.shape)}, expected labels (B, ...) with a batch axis")
    if len(heads) == 1:
        return (y,)
    if y.shape[-1] != len(heads):
        raise ValueError(f"y: got shape {y.shape}, expected a last axis of {len(heads)} (one per head)")
    return tuple(y[..., k] for k in range(len(heads)))


def _check_batch(name: str, batch, per_step) -> None:
    """``batch`` is a ``Batch`` of arrays ``x (B, T, ...)``, ``mask (B, T)`` and ``y`` with ``B`` rows
    (and ``T`` steps when ``per_step``), so that rows can be taken or stacked."""
    if not isinstance(per_step, (bool, np.bool_)):
        raise TypeError(f"per_step: got {type(per_step).__name__}, expected a bool (task.per_step)")
    if not all(isinstance(getattr(batch, f, None), np.ndarray) for f in ("x", "y", "mask")):
        raise TypeError(f"{name}: got {type(batch).__name__}, expected a Batch(x, y, mask) of NumPy arrays")
    x, y, mask = batch.x, batch.y, batch.mask
    rows_fit = mask.shape == x.shape[:2] and y.shape[:2 if per_step else 1] == x.shape[:2 if per_step else 1]
    if x.ndim < 2 or not rows_fit:
        raise ValueError(f"{name}: got x {x.shape}, y {y.shape}, mask {mask.shape}, expected x (B, T, ...), "
                         f"mask (B, T) and y (B, {'T, ' if per_step else ''}...) for per_step={bool(per_step)}")


def take(batch: Batch, indices: np.ndarray, *, per_step: bool) -> Batch:
    """Rows ``indices`` (K,) of ``batch``, with trailing steps that carry no loss in
    any chosen row cut off (they cannot change the loss of a causal model).

    ``per_step`` says whether ``y`` has a time axis (``task.per_step``).
    """
    _check_batch("batch", batch, per_step)
    indices = np.asarray(indices)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices: got {indices.dtype} array of shape {indices.shape}, expected 1-D ints")
    B = batch.x.shape[0]
    if indices.size and (indices.min() < -B or indices.max() >= B):
        raise ValueError(f"indices: got values in [{indices.min()}, {indices.max()}], expected rows of the "
                         f"batch, in [0, {B - 1}]")
    x, y, mask = batch.x[indices], batch.y[indices], batch.mask[indices]
    if len(indices) == 0:
        return Batch(x, y, mask)
    T = int(last_step_index(mask).max()) + 1
    return Batch(x[:, :T], y[:, :T] if per_step else y, mask[:, :T])


def concat(batches: Sequence[Batch], *, per_step: bool) -> Batch:
    """Stack batches along B, right-padding the time axis to the longest.

    ``per_step`` says whether ``y`` has a time axis (per-step or regression heads).
    """
    batches = list(batches)
    if not batches:
        raise ValueError("batches: got an empty list, expected at least one Batch")
    for i, b in enumerate(batches):
        _check_batch(f"batches[{i}]", b, per_step)
        for part in ("x", "y"):  # the axes that are stacked, not padded, must agree
            keep = 2 if part == "x" or per_step else 1
            got, want = getattr(b, part).shape[keep:], getattr(batches[0], part).shape[keep:]
            if got != want:
                raise ValueError(f"batches[{i}].{part}: got shape {getattr(b, part).shape}, expected trailing "
                                 f"axes {want} like batches[0].{part}")
    T = max(b.x.shape[1] for b in batches)

    def pad(a: np.ndarray) -> np.ndarray:
        widths = [(0, 0)] * a.ndim
        widths[1] = (0, T - a.shape[1])
        return np.pad(a, widths)

    x = np.concatenate([pad(b.x) for b in batches])
    mask = np.concatenate([pad(b.mask) for b in batches])
    y = np.concatenate([pad(b.y) if per_step else b.y for b in batches])
    return Batch(x, y, mask)


# ---------------------------------------------------------------- task base

class Task:
    """Base of every task. Subclasses are frozen dataclasses with a ``seed``
    field and implement ``_check``, ``input_size``, ``heads`` and ``_sample``.

    ``seed`` fixes what is fixed about a task (a generated data set, the
    evaluation batches, the stream of ``make_rng``); training batches come from
    the ``rng`` passed to ``sample``.
    """

    name: str = "task"
    input_kind: str = "one_hot"  # or "real"

    def __post_init__(self) -> None:
        store_python_scalars(self)  # config() stays JSON-friendly
        check_int("seed", self.seed, minimum=0)
        self._check()

    def _check(self) -> None:  # field validation of subclasses
        pass

    @property
    def input_size(self) -> int:
        """Size D of an input step."""
        raise NotImplementedError

    @property
    def heads(self) -> tuple[Head, ...]:
        """The output heads, in the order of ``y[..., k]`` when there are several."""
        raise NotImplementedError

    @property
    def per_step(self) -> bool:
        """Whether ``y`` has a time axis (per-step or regression heads)."""
        return self.heads[0].loss != "last"

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """Draw a batch of ``batch_size`` fresh sequences with ``rng``: ``Batch(x, y, mask)``."""
        check_rng(rng)
        self._check_fits("batch_size", check_int("batch_size", batch_size, minimum=1), "batch")
        return self._sample(rng, batch_size)

    def _sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        raise NotImplementedError

    @functools.cached_property
    def _sequence_nbytes(self) -> int:
        """The bytes of one sampled sequence (x, y and mask), drawn once: a size check per
        batch would otherwise double the cost of ``sample``."""
        return sum(a.nbytes for a in self._sample(np.random.default_rng(0), 1))

    def _check_fits(self, name: str, size: int, what: str) -> None:
        """Refuse ``size`` sequences that could never be held in memory: NumPy would fail with an
        unnamed error, or allocate until the machine runs out (longer sequences than the one
        measured only make it worse)."""
        check_fits_in_memory(name, size, size * self._sequence_nbytes,
                             f"{what} ({self._sequence_nbytes} bytes per sequence)")

    def make_rng(self) -> np.random.Generator:
        """A fresh generator for training batches, seeded from ``seed``."""
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0,)))

    def eval_batches(self, batch_size: int, num_batches: int | None = None) -> Iterator[Batch]:
        """Fixed evaluation batches: the same for a given ``seed`` and independent of
        the training stream. ``num_batches`` defaults to 4 for generated tasks."""
        self._check_fits("batch_size", check_int("batch_size", batch_size, minimum=1), "batch")
        num_batches = 4 if num_batches is None else check_int("num_batches", num_batches, minimum=1)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1,)))
        # checked above at the call, not at the first next(): the batches come from a generator
        return (self._sample(rng, batch_size) for _ in range(num_batches))

    def fixed_set(self, size: int) -> Batch:
        """A fixed training set of ``size`` sequences (padded to a common length),
        the same for a given ``seed``; index it with ``take``."""
        self._check_fits("size", check_int("size", size, minimum=1), "fixed set")
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(2,)))
        chunk = 4096
        parts = [self._sample(rng, min(chunk, size - i)) for i in range(0, size, chunk)]
        return parts[0] if len(parts) == 1 else concat(parts, per_step=self.per_step)

    def num_examples(self, split: str = "train") -> int | None:
        """Size of a finite data set split; ``None`` for generated tasks."""
        return None


class DatasetTask(Task):
    """A task over a finite data set with "train" and "test" splits and one
    last-step classification head; every sequence has the full length T.

    Subclasses implement ``labels(split) -> (N,) int64`` and
    ``_inputs(split, indices) -> (K, T, D) float32``. ``sample`` draws training
    rows uniformly with replacement; ``eval_batches`` walks the test split in order.
    """

    input_kind = "real"

    def labels(self, split: str = "train") -> np.ndarray:
        """All labels of ``split`` ("train" or "test"), (N,) int64."""
        raise NotImplementedError

    def _inputs(self, split: str, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def arrays(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """All of ``split``: inputs (N, T, D) float32 and labels (N,) int64."""
        batch = self.batch_from_indices(np.arange(self.num_examples(split)), split)
        return batch.x, batch.y

    def num_examples(self, split: str = "train") -> int:
        return len(self.labels(check_choice("split", split, ("train", "test"))))

    def batch_from_indices(self, indices: np.ndarray, split: str = "train") -> Batch:
        """The batch made of rows ``indices`` (B,) of ``split``: x (B, T, D), y (B,)."""
        y = self.labels(check_choice("split", split, ("train", "test")))
        indices = np.asarray(indices)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"indices: got {indices.dtype} array of shape {indices.shape}, expected 1-D ints")
        if len(indices) and (indices.min() < 0 or indices.max() >= len(y)):
            raise ValueError(f"indices: got values in [{indices.min()}, {indices.max()}], "
                             f"expected in [0, {len(y) - 1}] for split {split!r}")
        x = self._inputs(split, indices)
        mask = np.zeros(x.shape[:2], dtype=np.float32)
        mask[:, -1] = 1.0
        return Batch(x, np.array(y[indices], dtype=np.int64), mask)

    def _sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        return self.batch_from_indices(rng.integers(0, self.num_examples("train"), batch_size))

    def eval_batches(self, batch_size: int, num_batches: int | None = None) -> Iterator[Batch]:
        """Consecutive batches of the test split (all of it unless ``num_batches``)."""
        check_int("batch_size", batch_size, minimum=1)
        n = self.num_examples("test")
        if num_batches is not None:
            n = min(n, check_int("num_batches", num_batches, minimum=1) * batch_size)
        return (self.batch_from_indices(np.arange(start, min(start + batch_size, n)), "test")
                for start in range(0, n, batch_size))

    def fixed_set(self, size: int | None = None) -> Batch:
        """The first ``size`` training rows (all of them by default)."""
        n = self.num_examples("train")
        size = n if size is None else check_int("size", size, minimum=1, maximum=n)
        return self.batch_from_indices(np.arange(size))


def one_hot(tokens: np.ndarray, size: int) -> np.ndarray:
    """One-hot float32 encoding of int ``tokens`` (B, T) -> (B, T, size)."""
    out = np.zeros(tokens.shape + (size,), dtype=np.float32)  # not np.eye(size): size² floats
    np.put_along_axis(out, tokens[..., None], 1.0, axis=-1)
    return out


def last_step_mask(lengths: np.ndarray, T: int) -> np.ndarray:
    """Mask (B, T) float32 that is 1.0 at step ``lengths[b] - 1`` of each row."""
    mask = np.zeros((len(lengths), T), dtype=np.float32)
    mask[np.arange(len(lengths)), np.asarray(lengths) - 1] = 1.0
    return mask
