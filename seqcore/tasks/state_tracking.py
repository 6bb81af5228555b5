"""State tracking: running products in the symmetric groups S_k (S2 … S7) and
running sums in the cyclic group Z_n.

Inputs are one-hot group elements (B, T, |G|); labels are per step, int (B, T):
the index of the product of all elements so far. Every step is marked.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np

from .base import Batch, Head, Task, check_int, check_sample_fits, one_hot

__all__ = ["PermutationTask", "ZnTask", "permutation_elements", "composition_table", "DEGREES"]

DEGREES = range(2, 8)  # S_7 has 5040 elements: its composition table is 194 MiB


@functools.lru_cache(maxsize=None)
def permutation_elements(degree: int) -> np.ndarray:
    """All permutations of 0..degree-1 in lexicographic order, (degree!, degree) int64.

    Element index i is row i; index 0 is the identity.
    """
    check_int("degree", degree, minimum=DEGREES.start, maximum=DEGREES.stop - 1)
    table = np.array(list(itertools.permutations(range(degree))), dtype=np.int64)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=None)
def composition_table(degree: int) -> np.ndarray:
    """``table[a, b]`` = index of ``a ∘ b`` (apply b first, then a), (k!, k!) int64.

    As arrays, ``(a ∘ b)[i] = a[b[i]]``.
    """
    perms = permutation_elements(degree)
    n = len(perms)
    place = degree ** np.arange(degree - 1, -1, -1)
    codes = perms @ place
    table = np.empty((n, n), dtype=np.int64)
    for start in range(0, n, 256):  # in row blocks: all of S_7's [a, b, i] at once would take 1.4 GB
        a = np.arange(start, min(start + 256, n))
        composed = perms[a[:, None, None], perms[None, :, :]]  # [a, b, i] = a[b[i]]
        # lexicographic order = increasing base-`degree` code, so a sorted search finds the index
        table[a] = np.searchsorted(codes, composed @ place)
    table.setflags(write=False)
    return table


@dataclasses.dataclass(frozen=True)
class PermutationTask(Task):
    """Composition of permutations in S_degree (``s2`` … ``s7``: degree 2 … 7).

    Each step gives a uniformly random permutation g_t (one-hot of its index in
    ``permutation_elements(degree)``); the label at step t is the index of
    p_t = g_t ∘ g_{t-1} ∘ … ∘ g_1 (g_1 applied first; as arrays p_t = g_t[p_{t-1}]).
    """

    degree: int = 3
    length: int = 32
    seed: int = 0

    def _check(self) -> None:
        check_int("degree", self.degree, minimum=DEGREES.start, maximum=DEGREES.stop - 1)
        check_int("length", self.length, minimum=1)
        check_sample_fits(self, ("length",), self.length, self.group_order)

    @property
    def name(self) -> str:  # registered for every degree, so config(task) round-trips through make
        return f"s{self.degree}"

    @property
    def group_order(self) -> int:
        return len(permutation_elements(self.degree))

    @property
    def input_size(self) -> int:
        return self.group_order

    @property
    def heads(self) -> tuple[Head, ...]:
        return (Head("product", self.group_order, "per_step"),)

    def _sample(self, rng, batch_size):
        table = composition_table(self.degree)
        g = rng.integers(0, self.group_order, size=(batch_size, self.length))
        y = np.empty_like(g)
        state = g[:, 0]
        y[:, 0] = state
        for t in range(1, self.length):
            state = table[g[:, t], state]
            y[:, t] = state
        mask = np.ones(g.shape, dtype=np.float32)
        return Batch(one_hot(g, self.input_size), y, mask)


@dataclasses.dataclass(frozen=True)
class ZnTask(Task):
    """Addition in Z_n: each step gives a uniform element of 0..n-1 (one-hot);
    the label at step t is the sum of elements 0..t mod n."""

    n: int = 5
    length: int = 32
    seed: int = 0
    name = "zn"

    def _check(self) -> None:
        check_int("n", self.n, minimum=2)
        check_int("length", self.length, minimum=1)
        check_sample_fits(self, ("n", "length"), self.length, self.n)

    @property
    def input_size(self) -> int:
        return self.n

    @property
    def heads(self) -> tuple[Head, ...]:
        return (Head("sum", self.n, "per_step"),)

    def _sample(self, rng, batch_size):
        g = rng.integers(0, self.n, size=(batch_size, self.length))
        y = np.cumsum(g, axis=1) % self.n
        return Batch(one_hot(g, self.n), y, np.ones(g.shape, dtype=np.float32))
