"""Reference learners: naive fine-tuning (lower bound), joint and cumulative training.

* ``naive``: plain training on each experience in turn (catastrophic forgetting).
* ``joint``: every batch is drawn from the union of *all* experiences of the stream,
  future ones included — i.i.d. training with the same number of updates, the usual
  upper bound.
* ``cumulative``: every batch is drawn from the union of the experiences seen so far
  (0..i): retraining on everything, the upper bound of any rehearsal method.

Batches from a union pick each sample's experience uniformly at random (experiences of
equal size weigh equally), then sample within it.
"""
from __future__ import annotations

import numpy as np

from ..validate import check_positive_int
from .base import Learner

__all__ = ["Naive", "Joint", "Cumulative", "union_batch"]


class Naive(Learner):
    """Fine-tuning: no protection against forgetting."""

    name = "naive"


def union_batch(rng: np.random.Generator, sources: list, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch of ``batch_size`` samples: each from a uniformly chosen source, then from its sampler.

    sources: :class:`ExperienceData` objects (each with ``sample(rng, n)``).
    """
    if not sources:
        raise ValueError("sources: got none, expected at least one experience to sample from")
    check_positive_int("batch_size", batch_size)
    counts = rng.multinomial(batch_size, np.full(len(sources), 1.0 / len(sources)))
    xs, ys = [], []
    for src, count in zip(sources, counts):
        if count:
            x, y = src.sample(rng, int(count))
            xs.append(x)
            ys.append(y)
    order = rng.permutation(batch_size)
    return np.concatenate(xs)[order], np.concatenate(ys)[order]


class _UnionTraining(Learner):
    # the loop keeps every experience this learner samples from built (one rebuild per step and
    # experience otherwise: a permuted stream re-permutes its whole training set each time)
    uses_all_experiences = True

    def _sources(self) -> list:
        raise NotImplementedError

    def prepare_batch(self, trainer, batch):
        if self.data_for is None:
            raise ValueError(f"data_for: learner {self.name!r} needs the loop to give access to every experience")
        x, y = union_batch(self.rng, self._sources(), batch[0].shape[0])
        return (x, y, None)

    def before_experience(self, trainer, data) -> None:
        self.index = data.index


class Joint(_UnionTraining):
    """Joint (i.i.d.) training on the whole stream: the upper bound."""

    name = "joint"

    def _sources(self):
        return [self.data_for(j) for j in range(self.n_experiences)]


class Cumulative(_UnionTraining):
    """Training on the union of all experiences seen so far."""

    name = "cumulative"

    def _sources(self):
        return [self.data_for(j) for j in range(self.index + 1)]
