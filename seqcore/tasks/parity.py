"""N-parity and N-DMS (delayed match-to-sample) on a stream of bits (RESEARCH §6).

Each sequence has its own length L drawn uniformly from ``[n_max + 2, 4·n_max + 2)``;
sequences are right-padded with zeros and the mask marks step ``L - 1``.
Several N at once give one head per N (multi-head curriculum): ``y`` is then
``(B, H)`` with column k for ``n[k]``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .base import Batch, Head, Task, check_int, check_sample_fits, last_step_mask

__all__ = ["NParityTask", "NDMSTask"]


class _BitStreamTask(Task):
    """Shared fields and layout of the N-parity and N-DMS tasks."""

    input_kind = "real"
    min_n = 1

    def _check(self) -> None:
        n = self.n
        if isinstance(n, np.ndarray):  # a 1-D array as a list: its items are checked below
            if n.ndim != 1:
                raise TypeError(f"n: got an array of shape {n.shape}, expected an int or a 1-D array of ints")
            n = n.tolist()
        if isinstance(n, (list, tuple)):
            if not n:
                raise ValueError("n: got an empty list, expected at least one N")
            for v in n:
                check_int("n", v, minimum=self.min_n)
            if len(set(n)) != len(n):
                raise ValueError(f"n: got {list(n)}, expected distinct values")
            object.__setattr__(self, "n", tuple(int(v) for v in n))
        else:
            check_int("n", n, minimum=self.min_n)
        if self.n_max is not None:
            check_int("n_max", self.n_max, minimum=max(self.ns), bound="max(n)")
        check_sample_fits(self, ("n",) if self.n_max is None else ("n_max",), self.length_range[1] - 1, 1)

    @property
    def ns(self) -> tuple[int, ...]:
        """The N of each head, in head order."""
        return self.n if isinstance(self.n, tuple) else (self.n,)

    @property
    def length_range(self) -> tuple[int, int]:
        """Sequence lengths are drawn from ``[low, high)`` = ``[n_max + 2, 4·n_max + 2)``."""
        n_max = max(self.ns) if self.n_max is None else self.n_max
        return n_max + 2, 4 * n_max + 2

    @property
    def input_size(self) -> int:
        return 1

    @property
    def heads(self) -> tuple[Head, ...]:
        return tuple(Head(f"n{n}", 2, "last") for n in self.ns)

    def _sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        low, high = self.length_range
        lengths = rng.integers(low, high, size=batch_size)
        T = int(lengths.max())
        bits = self._bits(rng, batch_size, T)
        bits[np.arange(T)[None, :] >= lengths[:, None]] = 0  # padding
        rows = np.arange(batch_size)
        labels = np.stack([self._labels(bits, lengths, rows, n) for n in self.ns], axis=1)
        y = labels[:, 0] if labels.shape[1] == 1 else labels
        x = bits.astype(np.float32)[:, :, None]
        return Batch(x, y.astype(np.int64), last_step_mask(lengths, T))


@dataclasses.dataclass(frozen=True)
class NParityTask(_BitStreamTask):
    """N-parity: a bit stream; label = sum of the last N bits mod 2.

    Each sequence draws its own probability of a 1 uniformly from [0, 1).
    Fields: ``n`` (an N, or a list of N for one head each), ``n_max`` (sets the
    length range; default max(n)), ``seed``. x (B, T, 1) float32 in {0, 1}.
    """

    n: int | tuple[int, ...] = 2
    n_max: int | None = None
    seed: int = 0
    name = "nparity"

    def _bits(self, rng, batch_size, T):
        p_one = rng.random(batch_size)
        return (rng.random((batch_size, T)) < p_one[:, None]).astype(np.int64)

    def _labels(self, bits, lengths, rows, n):
        csum = np.concatenate([np.zeros((len(bits), 1), np.int64), np.cumsum(bits, axis=1)], axis=1)
        return (csum[rows, lengths] - csum[rows, lengths - n]) % 2


@dataclasses.dataclass(frozen=True)
class NDMSTask(_BitStreamTask):
    """N-DMS (delayed match-to-sample): balanced bits; label = x[L-N] == x[L-1].

    Fields: ``n`` (an N >= 2, or a list of them), ``n_max`` (default max(n)),
    ``seed``. x (B, T, 1) float32 in {0, 1}; label 1 means "match".
    """

    n: int | tuple[int, ...] = 2
    n_max: int | None = None
    seed: int = 0
    name = "ndms"
    min_n = 2  # N = 1 compares the last bit with itself

    def _bits(self, rng, batch_size, T):
        return rng.integers(0, 2, size=(batch_size, T))

    def _labels(self, bits, lengths, rows, n):
        return (bits[rows, lengths - n] == bits[rows, lengths - 1]).astype(np.int64)
