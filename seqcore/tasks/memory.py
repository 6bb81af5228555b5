"""Memory tasks with their own input formats: the adding problem (regression),
set disjointness (read two sets, classify) and flip-flop (per-step bits).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .base import Batch, Head, Task, check_real, check_int, check_sample_fits, one_hot

__all__ = ["AddingTask", "SetDisjointnessTask", "FlipFlopTask"]


ADDING_TOLERANCE = 0.04


@dataclasses.dataclass(frozen=True)
class AddingTask(Task):
    """Adding problem: two channels, values uniform in [0, 1) and a marker that
    is 1 at two steps (one in the first half, one in the second half, of
    ``length``); the target is the sum of the two marked values.

    x (B, T, 2) float32 (channel 0 values, channel 1 markers); one regression
    head: y (B, T, 1) float32 holding the sum at the last step, which is the
    only marked step. Predicting 1.0 gives a mean squared error of about 1/6.
    """

    length: int = 50
    seed: int = 0
    name = "adding"
    input_kind = "real"

    def _check(self) -> None:
        check_int("length", self.length, minimum=2)
        check_sample_fits(self, ("length",), self.length, 2)

    @property
    def input_size(self) -> int:
        return 2

    @property
    def heads(self) -> tuple[Head, ...]:
        # the usual criterion: an answer within 0.04 of the sum counts as correct
        return (Head("sum", 1, "regression", tolerance=ADDING_TOLERANCE),)

    def _sample(self, rng, batch_size):
        T, half = self.length, self.length // 2
        values = rng.random((batch_size, T))
        first = rng.integers(0, half, size=batch_size)
        second = rng.integers(half, T, size=batch_size)
        rows = np.arange(batch_size)
        markers = np.zeros((batch_size, T))
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = np.stack([values, markers], axis=-1).astype(np.float32)
        y = np.zeros((batch_size, T, 1), dtype=np.float32)
        # target from the float32 inputs the model sees
        y[:, -1, 0] = x[rows, first, 0] + x[rows, second, 0]
        mask = np.zeros((batch_size, T), dtype=np.float32)
        mask[:, -1] = 1.0
        return Batch(x, y, mask)


@dataclasses.dataclass(frozen=True)
class SetDisjointnessTask(Task):
    """Set disjointness: a set A of ``set_size`` distinct tokens, a separator,
    then a set B of ``set_size`` distinct tokens; label 1 when A and B share no
    token, 0 otherwise (balanced). A recurrent model must hold A to judge B.

    Tokens 0..vocab_size-1, separator = vocab_size. T = 2·set_size + 1; one
    last-step head with 2 classes. Overlapping pairs share 1..set_size tokens.
    """

    vocab_size: int = 16
    set_size: int = 4
    seed: int = 0
    name = "set-disjointness"

    def _check(self) -> None:
        check_int("set_size", self.set_size, minimum=1)
        check_int("vocab_size", self.vocab_size, minimum=2 * self.set_size, bound="2·set_size")
        check_sample_fits(self, ("vocab_size", "set_size"), 2 * self.set_size + 1, self.input_size)

    @property
    def input_size(self) -> int:
        return self.vocab_size + 1

    @property
    def heads(self) -> tuple[Head, ...]:
        return (Head("disjoint", 2, "last"),)

    def _sample(self, rng, batch_size):
        m, V = self.set_size, self.vocab_size
        perm = np.argsort(rng.random((batch_size, V)), axis=1)
        a, b = perm[:, :m], perm[:, m:2 * m].copy()  # b starts disjoint from a
        disjoint = rng.integers(0, 2, size=batch_size)
        shared = np.where(disjoint == 1, 0, rng.integers(1, m + 1, size=batch_size))
        take_a = np.arange(m)[None, :] < shared[:, None]
        b = np.where(take_a, a, b)  # the first `shared` of a (a random subset of a)
        b = np.take_along_axis(b, np.argsort(rng.random((batch_size, m)), axis=1), axis=1)
        tokens = np.concatenate([a, np.full((batch_size, 1), V), b], axis=1)
        mask = np.zeros(tokens.shape, dtype=np.float32)
        mask[:, -1] = 1.0
        return Batch(one_hot(tokens, self.input_size), disjoint.astype(np.int64), mask)


@dataclasses.dataclass(frozen=True)
class FlipFlopTask(Task):
    """Flip-flop: ``channels`` independent memory bits. At each step every
    channel gets an instruction (write with probability ``p_write``, else
    ignore) and a random bit; the output at each step is the bit of the last
    write of that channel. Step 0 writes every channel.

    x (B, T, 2·channels) float32: x[..., c] = 1 for a write on channel c,
    x[..., channels + c] = the bit as -1/+1 (also present, and to be ignored,
    on ignore steps). One per-step head per channel, 2 classes; y (B, T) for
    one channel, (B, T, channels) for several. Every step is marked.
    """

    channels: int = 3
    length: int = 64
    p_write: float = 0.2
    seed: int = 0
    name = "flip-flop"
    input_kind = "real"

    def _check(self) -> None:
        check_int("channels", self.channels, minimum=1)
        check_int("length", self.length, minimum=1)
        check_real("p_write", self.p_write, low=0.0, high=1.0, low_open=True)
        check_sample_fits(self, ("channels", "length"), self.length, self.input_size, labels=self.channels)

    @property
    def input_size(self) -> int:
        return 2 * self.channels

    @property
    def heads(self) -> tuple[Head, ...]:
        return tuple(Head(f"channel{c}", 2, "per_step") for c in range(self.channels))

    def _sample(self, rng, batch_size):
        B, T, C = batch_size, self.length, self.channels
        write = rng.random((B, T, C)) < self.p_write
        write[:, 0, :] = True
        bits = rng.integers(0, 2, size=(B, T, C))
        steps = np.arange(T)[None, :, None]
        last_write = np.maximum.accumulate(np.where(write, steps, 0), axis=1)
        y = np.take_along_axis(bits, last_write, axis=1)
        x = np.concatenate([write, 2 * bits - 1], axis=-1).astype(np.float32)
        y = y[..., 0] if C == 1 else y
        return Batch(x, y.astype(np.int64), np.ones((B, T), dtype=np.float32))
