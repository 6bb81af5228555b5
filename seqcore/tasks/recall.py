"""Token recall tasks: copy, selective copy, multi-query associative recall,
passkey retrieval.

Inputs are one-hot tokens (B, T, vocabulary) float32; labels are per step,
int (B, T), and the mask marks only the answer steps.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .base import Batch, Head, Task, check_int, check_sample_fits, one_hot

__all__ = ["CopyTask", "SelectiveCopyTask", "MQARTask", "PasskeyTask"]


def _answer_batch(tokens: np.ndarray, answers: np.ndarray, answer_steps: np.ndarray,
                  input_size: int) -> Batch:
    """Batch whose labels ``answers`` (B, K) sit at steps ``answer_steps`` (B, K)."""
    B, T = tokens.shape
    y = np.zeros((B, T), dtype=np.int64)
    mask = np.zeros((B, T), dtype=np.float32)
    rows = np.arange(B)[:, None]
    y[rows, answer_steps] = answers
    mask[rows, answer_steps] = 1.0
    return Batch(one_hot(tokens, input_size), y, mask)


@dataclasses.dataclass(frozen=True)
class CopyTask(Task):
    """Copy: memorise ``length`` tokens, wait ``delay`` blank steps, then
    reproduce them, one per recall-marker step.

    Tokens: data 0..vocab_size-1, blank = vocab_size, marker = vocab_size + 1.
    Layout (T = 2·length + delay): data, blanks, markers; labels at the markers.
    """

    vocab_size: int = 8
    length: int = 10
    delay: int = 20
    seed: int = 0
    name = "copy"

    def _check(self) -> None:
        check_int("vocab_size", self.vocab_size, minimum=2)
        check_int("length", self.length, minimum=1)
        check_int("delay", self.delay, minimum=0)
        check_sample_fits(self, ("vocab_size", "length", "delay"), 2 * self.length + self.delay, self.input_size)

    @property
    def input_size(self) -> int:
        return self.vocab_size + 2

    @property
    def heads(self) -> tuple[Head, ...]:
        return (Head("copy", self.vocab_size, "per_step"),)

    def _sample(self, rng, batch_size):
        L, V = self.length, self.vocab_size
        data = rng.integers(0, V, size=(batch_size, L))
        blanks = np.full((batch_size, self.delay), V)
        markers = np.full((batch_size, L), V + 1)
        tokens = np.concatenate([data, blanks, markers], axis=1)
        steps = np.broadcast_to(L + self.delay + np.arange(L), (batch_size, L))
        return _answer_batch(tokens, data, steps, self.input_size)


@dataclasses.dataclass(frozen=True)
class SelectiveCopyTask(Task):
    """Selective copy: ``length`` data tokens scattered at random places among
    noise in the first ``seq_len`` steps; then ``length`` marker steps that must
    output the data tokens in their order of appearance.

    Tokens: data 0..vocab_size-1, noise = vocab_size, marker = vocab_size + 1.
    T = seq_len + length.
    """

    vocab_size: int = 8
    length: int = 8
    seq_len: int = 32
    seed: int = 0
    name = "selective-copy"

    def _check(self) -> None:
        check_int("vocab_size", self.vocab_size, minimum=2)
        check_int("length", self.length, minimum=1)
        check_int("seq_len", self.seq_len, minimum=self.length, bound="length")
        check_sample_fits(self, ("vocab_size", "length", "seq_len"), self.seq_len + self.length, self.input_size)

    @property
    def input_size(self) -> int:
        return self.vocab_size + 2

    @property
    def heads(self) -> tuple[Head, ...]:
        return (Head("copy", self.vocab_size, "per_step"),)

    def _sample(self, rng, batch_size):
        L, S, V = self.length, self.seq_len, self.vocab_size
        # L distinct positions per row, kept in increasing order
        places = np.sort(np.argsort(rng.random((batch_size, S)), axis=1)[:, :L], axis=1)
        data = rng.integers(0, V, size=(batch_size, L))
        tokens = np.full((batch_size, S + L), V)
        rows = np.arange(batch_size)[:, None]
        tokens[rows, places] = data
        tokens[:, S:] = V + 1
        steps = np.broadcast_to(S + np.arange(L), (batch_size, L))
        return _answer_batch(tokens, data, steps, self.input_size)


@dataclasses.dataclass(frozen=True)
class MQARTask(Task):
    """Multi-query associative recall: ``num_pairs`` key-value pairs, ``gap`` filler
    steps, then ``num_queries`` distinct keys from them; each query step must output
    its value.

    Tokens: keys 0..num_keys-1, values num_keys..num_keys+num_values-1 (keys are
    distinct within a sequence), and with ``gap`` > 0 one filler token
    num_keys+num_values. Layout: k1 v1 k2 v2 …, the fillers, then the queries;
    T = 2·num_pairs + gap + num_queries. Labels are value indices 0..num_values-1.
    The gap makes the pairs be held in the state over a distance, not only recalled
    right after they were seen.
    """

    num_keys: int = 16
    num_values: int = 16
    num_pairs: int = 8
    num_queries: int = 8
    gap: int = 0
    seed: int = 0
    name = "mqar"

    def _check(self) -> None:
        check_int("num_keys", self.num_keys, minimum=1)
        check_int("num_values", self.num_values, minimum=2)
        check_int("num_pairs", self.num_pairs, minimum=1, maximum=self.num_keys, bound="num_keys")
        check_int("num_queries", self.num_queries, minimum=1, maximum=self.num_pairs, bound="num_pairs")
        check_int("gap", self.gap, minimum=0)
        check_sample_fits(self, ("num_keys", "num_values", "num_pairs", "num_queries", "gap"),
                          2 * self.num_pairs + self.gap + self.num_queries, self.input_size)

    @property
    def input_size(self) -> int:
        return self.num_keys + self.num_values + (1 if self.gap else 0)

    @property
    def heads(self) -> tuple[Head, ...]:
        return (Head("value", self.num_values, "per_step"),)

    def _sample(self, rng, batch_size):
        P, Q, K, G = self.num_pairs, self.num_queries, self.num_keys, self.gap
        keys = np.argsort(rng.random((batch_size, K)), axis=1)[:, :P]
        values = rng.integers(0, self.num_values, size=(batch_size, P))
        asked = np.argsort(rng.random((batch_size, P)), axis=1)[:, :Q]  # which pairs
        rows = np.arange(batch_size)[:, None]
        tokens = np.empty((batch_size, 2 * P + G + Q), dtype=np.int64)
        tokens[:, 0:2 * P:2] = keys
        tokens[:, 1:2 * P:2] = K + values
        tokens[:, 2 * P:2 * P + G] = K + self.num_values  # the filler token
        tokens[:, 2 * P + G:] = keys[rows, asked]
        steps = np.broadcast_to(2 * P + G + np.arange(Q), (batch_size, Q))
        return _answer_batch(tokens, values[rows, asked], steps, self.input_size)


@dataclasses.dataclass(frozen=True)
class PasskeyTask(Task):
    """Passkey retrieval: a passkey of ``key_length`` digits hidden at a random
    place among ``length`` filler steps; then ``key_length`` query steps that
    must output the digits in order (state capacity against state size).

    Tokens: digits 0..num_digits-1, fillers num_digits..num_digits+filler_vocab-1
    (drawn at random), query = num_digits + filler_vocab. T = length + key_length.
    """

    length: int = 64
    key_length: int = 4
    num_digits: int = 10
    filler_vocab: int = 4
    seed: int = 0
    name = "passkey"

    def _check(self) -> None:
        check_int("key_length", self.key_length, minimum=1)
        check_int("length", self.length, minimum=self.key_length, bound="key_length")
        check_int("num_digits", self.num_digits, minimum=2)
        check_int("filler_vocab", self.filler_vocab, minimum=1)
        check_sample_fits(self, ("length", "key_length", "num_digits", "filler_vocab"),
                          self.length + self.key_length, self.input_size)

    @property
    def input_size(self) -> int:
        return self.num_digits + self.filler_vocab + 1

    @property
    def heads(self) -> tuple[Head, ...]:
        return (Head("passkey", self.num_digits, "per_step"),)

    def _sample(self, rng, batch_size):
        L, K, D = self.length, self.key_length, self.num_digits
        tokens = D + rng.integers(0, self.filler_vocab, size=(batch_size, L + K))
        key = rng.integers(0, D, size=(batch_size, K))
        start = rng.integers(0, L - K + 1, size=batch_size)
        rows = np.arange(batch_size)[:, None]
        tokens[rows, start[:, None] + np.arange(K)] = key
        tokens[:, L:] = D + self.filler_vocab
        steps = np.broadcast_to(L + np.arange(K), (batch_size, K))
        return _answer_batch(tokens, key, steps, self.input_size)
