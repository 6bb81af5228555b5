"""Tasks: labels recomputed with plain loops, shapes, determinism, the registry,
IDX files (written here, byte by byte) and bad arguments."""
from __future__ import annotations

import gzip
import itertools
import json
import random
import re
import struct

import numpy as np
import pytest

from seqcore import tasks
from seqcore.tasks import Batch, DatasetError, head_targets, last_step_index, take
from seqcore.tasks.idx import find_idx_file, read_idx, write_idx

GENERATED = ["nparity", "ndms", "copy", "selective-copy", "adding", "mqar", "set-disjointness",
             "passkey", "flip-flop", "s3", "s5", "zn", "lorenz96"]
SMALL = {"lorenz96": dict(length=12, burn_in=5)}


def sample(name, batch_size=64, seed=0, **kw):
    task = tasks.make(name, **{**SMALL.get(name, {}), **kw})
    return task, task.sample(np.random.default_rng(seed), batch_size)


def tokens_of(batch):
    return batch.x.argmax(-1)


# ---------------------------------------------------------------- registry

def test_names_are_the_command_line_names():
    assert tasks.names() == ("nparity", "ndms", "copy", "selective-copy", "adding", "mqar",
                             "set-disjointness", "passkey", "flip-flop", "s2", "s3", "s4", "s5", "s6",
                             "s7", "zn", "lorenz96", "image", "mnist1d")
    lines = [tasks.describe(name) for name in tasks.names()]
    assert all(line and "\n" not in line for line in lines) and len(set(lines)) == len(lines) - 5  # s2..s7 share one
    for name in GENERATED:  # each name builds its own task
        assert tasks.make(name, **SMALL.get(name, {})).name == name
    assert tasks.make("image").name == "image"


def test_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match="nparity.*mnist1d"):
        tasks.make("parity")


@pytest.mark.parametrize("name", [["nparity"], {"copy": 1}, None])
def test_unhashable_or_odd_names_are_refused_like_unknown_ones(name):
    for lookup in (tasks.make, tasks.fields, tasks.describe):
        with pytest.raises(ValueError, match=r"^task: got .*, expected one of 'nparity'.*'mnist1d'"):
            lookup(name)


def test_unknown_field_is_named():
    with pytest.raises(ValueError, match="bogus"):
        tasks.make("copy", bogus=3)
    with pytest.raises(ValueError, match="degree"):
        tasks.make("s3", degree=4)  # fixed by the name


@pytest.mark.parametrize("name", ["nparity", "s5", "flip-flop", "image"])
def test_config_round_trips_through_json(name):
    task = tasks.make(name, **({"n": [2, 4]} if name == "nparity" else {}))
    cfg = json.loads(json.dumps(tasks.config(task)))
    assert cfg["name"] == name and tasks.make(**cfg) == task


def test_every_task_config_round_trips_through_make():
    from seqcore.tasks.state_tracking import DEGREES

    built = [tasks.make(name, **SMALL.get(name, {})) for name in tasks.names() if name != "mnist1d"]
    built += [tasks.PermutationTask(degree=k, length=5) for k in DEGREES]  # S4 has a name as well
    for task in built:
        cfg = json.loads(json.dumps(tasks.config(task)))
        assert cfg["name"] in tasks.names() and tasks.make(**cfg) == task
    assert tasks.make("s4", length=5) == tasks.PermutationTask(degree=4, length=5)
    with pytest.raises(ValueError, match="degree=3"):  # a name still fixes its degree
        tasks.make("s3", degree=4)


def test_numpy_scalar_fields_are_stored_as_python_numbers():
    task = tasks.make("nparity", n=[np.int64(2), np.int32(4)], seed=np.uint8(3))
    cfg = json.loads(json.dumps(tasks.config(task)))  # NumPy integers are not JSON-serialisable
    assert cfg["n"] == [2, 4] and cfg["seed"] == 3 and type(task.seed) is int
    assert task == tasks.make("nparity", n=[2, 4], seed=3) and hash(task) == hash(tasks.make("nparity", n=[2, 4], seed=3))
    copy = tasks.make("copy", length=np.int64(5))
    assert type(copy.length) is int and json.dumps(tasks.config(copy))
    with pytest.raises(TypeError, match="length"):
        tasks.make("copy", length=np.True_)  # a NumPy bool is still not an int


@pytest.mark.parametrize("name,kwargs,error", [
    ("nparity", dict(n=0), ValueError),
    ("nparity", dict(n=2.5), TypeError),
    ("nparity", dict(n=[2, 2]), ValueError),
    ("nparity", dict(n=[]), ValueError),
    ("nparity", dict(n=[2, 5], n_max=4), ValueError),
    ("ndms", dict(n=1), ValueError),
    ("nparity", dict(seed=-1), ValueError),
    ("nparity", dict(seed=True), TypeError),
    ("copy", dict(vocab_size=1), ValueError),
    ("copy", dict(delay=-1), ValueError),
    ("selective-copy", dict(length=10, seq_len=5), ValueError),
    ("mqar", dict(num_pairs=20, num_keys=16), ValueError),
    ("mqar", dict(num_queries=9, num_pairs=8), ValueError),
    ("mqar", dict(gap=-1), ValueError),
    ("set-disjointness", dict(vocab_size=7, set_size=4), ValueError),
    ("passkey", dict(length=3, key_length=4), ValueError),
    ("flip-flop", dict(p_write=0.0), ValueError),
    ("flip-flop", dict(p_write=1.5), ValueError),
    ("zn", dict(n=1), ValueError),
    ("lorenz96", dict(alpha=1.5), ValueError),
    ("lorenz96", dict(dim=3), ValueError),
    ("lorenz96", dict(dt=float("nan")), ValueError),
    ("image", dict(order="column"), ValueError),
    ("image", dict(dataset="cifar"), ValueError),
    ("image", dict(permutation_seed=-2), ValueError),
    ("image", dict(data_dir=3), TypeError),
])
def test_bad_fields_raise_naming_the_field(name, kwargs, error):
    field = next(iter(kwargs))
    with pytest.raises(error, match=field):
        tasks.make(name, **kwargs)


SIZE_FIELDS = [("nparity", "n"), ("nparity", "n_max"), ("ndms", "n"), ("copy", "vocab_size"), ("copy", "length"),
               ("copy", "delay"), ("selective-copy", "vocab_size"), ("selective-copy", "seq_len"),
               ("adding", "length"), ("mqar", "num_keys"), ("mqar", "num_values"), ("mqar", "gap"),
               ("set-disjointness", "vocab_size"), ("passkey", "length"), ("passkey", "num_digits"),
               ("passkey", "filler_vocab"), ("flip-flop", "channels"), ("flip-flop", "length"),
               ("s3", "length"), ("zn", "n"), ("zn", "length"), ("lorenz96", "dim"), ("lorenz96", "length"),
               ("mnist1d", "num_samples")]


@pytest.mark.parametrize("name,field", SIZE_FIELDS)
def test_sizes_no_machine_holds_are_refused_when_built(name, field):
    # before: NumPy's "high is out of bounds for int64", an OverflowError or a MemoryError at sample time
    with pytest.raises(ValueError, match=rf"(^|/){field}(/\S*)?: got (\S*/)?{10**20}\b.*would take .* GiB"):
        tasks.make(name, **{**SMALL.get(name, {}), field: 10**20})


def test_lorenz96_integrations_too_long_to_wait_for_are_refused():
    from seqcore.tasks.lorenz import MAX_RK4_STEPS

    # before: a trial trajectory of 10**12 observations (or 10**20 substeps each) ran at construction
    with pytest.raises(ValueError, match=r"^burn_in/length/substeps: got 1000000000000/100/5, expected "
                                         r"\(burn_in \+ length\)·substeps <= 1e\+06 RK4 steps"):
        tasks.make("lorenz96", burn_in=10**12)
    with pytest.raises(ValueError, match=r"^burn_in/length/substeps: got 100/100/100000000000000000000"):
        tasks.make("lorenz96", substeps=10**20)
    with pytest.raises(ValueError, match=r"^substeps: got 500, expected 2200·substeps"):  # the reference trajectory
        tasks.make("lorenz96", substeps=500, normalize=True)
    task = tasks.make("lorenz96", substeps=500, length=2, burn_in=0)
    with pytest.raises(ValueError, match=r"^substeps: got 500, .*attractor_stats"):
        task.attractor_stats()
    assert (100 + 100) * 5 * 1000 <= MAX_RK4_STEPS  # the defaults take a thousandth of the bound


def test_a_large_vocabulary_is_one_hot_encoded_without_a_square_table():
    # before: np.eye(200000) wanted 149 GiB for a batch of 2 x 2 x 200000
    b = tasks.make("zn", n=200_000, length=2).sample(np.random.default_rng(0), 1)
    assert b.x.shape == (1, 2, 200_000) and b.x.sum() == 2
    np.testing.assert_array_equal(b.y, np.cumsum(tokens_of(b), axis=1) % 200_000)


def test_bad_sample_arguments():
    task = tasks.make("copy")
    with pytest.raises(TypeError, match="rng"):
        task.sample(0, 4)
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(np.random.default_rng(0), 0)


# ---------------------------------------------------------------- the shared contract

@pytest.mark.parametrize("name", GENERATED)
def test_shapes_follow_the_heads(name):
    task, b = sample(name, batch_size=16)
    B, T, D = b.x.shape
    assert (B, D) == (16, task.input_size) and b.x.dtype == np.float32
    assert b.mask.shape == (B, T) and b.mask.dtype == np.float32
    assert set(np.unique(b.mask)) <= {0.0, 1.0} and (b.mask.sum(1) > 0).all()
    heads = task.heads
    loss = heads[0].loss
    assert all(h.loss == loss for h in heads)
    trailing = () if len(heads) == 1 else (len(heads),)
    if loss == "last":
        assert b.y.shape == (B,) + trailing and b.y.dtype == np.int64
        assert (b.mask.sum(1) == 1).all()
    elif loss == "per_step":
        assert b.y.shape == (B, T) + trailing and b.y.dtype == np.int64
    else:
        assert b.y.shape == (B, T, heads[0].output_size) and b.y.dtype == np.float32
    for h, y in zip(heads, head_targets(b.y, heads)):
        if h.loss != "regression":
            assert 0 <= y.min() and y.max() < h.output_size
    if task.input_kind == "one_hot":
        assert np.array_equal(b.x.sum(-1), np.ones((B, T)))
        assert set(np.unique(b.x)) <= {0.0, 1.0}
    if loss == "last":
        # right padding: the mask is one-hot at each sequence's last valid step, zeros after it
        last = last_step_index(b.mask)
        np.testing.assert_array_equal(b.mask, (np.arange(T)[None, :] == last[:, None]).astype(np.float32))
        assert np.all(b.x[np.arange(T)[None, :] > last[:, None]] == 0)
        assert last.max() == T - 1  # no step after the longest sequence
    else:
        # labels at unmarked steps are 0
        unmarked = np.broadcast_to((b.mask == 0).reshape(b.mask.shape + (1,) * (b.y.ndim - 2)), b.y.shape)
        assert np.all(b.y[unmarked] == 0)


@pytest.mark.parametrize("name", GENERATED)
def test_same_seed_same_batches(name):
    _, a = sample(name, batch_size=8, seed=3)
    _, b = sample(name, batch_size=8, seed=3)
    _, c = sample(name, batch_size=8, seed=4)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    assert not np.array_equal(a.x, c.x)
    task = tasks.make(name, **SMALL.get(name, {}))
    e1 = list(task.eval_batches(4, num_batches=2))
    e2 = list(task.eval_batches(4, num_batches=2))
    assert len(e1) == 2 and all(np.array_equal(u.x, v.x) for u, v in zip(e1, e2))
    train = task.sample(task.make_rng(), 4)
    assert not np.array_equal(train.x, e1[0].x)  # evaluation is not the training stream
    assert np.array_equal(task.sample(task.make_rng(), 4).x, train.x)  # make_rng is seeded from seed
    other_seed = tasks.make(name, **{**SMALL.get(name, {}), "seed": 1})
    assert not np.array_equal(next(other_seed.eval_batches(4)).x, e1[0].x)
    default = list(task.eval_batches(4))  # 4 batches by default for generated tasks
    with pytest.raises(ValueError, match="^num_batches: got 0"):
        task.eval_batches(4, 0)  # at the call, not at the first next()
    assert len(default) == 4 and all(e.x.shape[0] == 4 for e in default)
    assert np.array_equal(default[0].x, e1[0].x) and np.array_equal(default[1].x, e1[1].x)
    assert not np.array_equal(default[0].x, default[1].x)


# ---------------------------------------------------------------- oracles, one per task

@pytest.mark.parametrize("n", [2, 5, [2, 3, 7]])
def test_nparity_labels(n):
    task, b = sample("nparity", batch_size=300, n=n)
    ns = task.ns
    low, high = max(ns) + 2, 4 * max(ns) + 2
    labels = b.y.reshape(len(b.y), -1)
    last = last_step_index(b.mask)
    for i in range(len(b.y)):
        L = last[i] + 1
        assert low <= L < high
        bits = [int(v) for v in b.x[i, :, 0]]
        assert set(bits) <= {0, 1} and sum(bits[L:]) == 0  # zero padding
        for k, N in enumerate(ns):
            assert labels[i, k] == sum(bits[L - N:L]) % 2
    assert [h.name for h in task.heads] == [f"n{N}" for N in ns]
    assert all(h.output_size == 2 and h.loss == "last" for h in task.heads)
    lengths = last + 1  # lengths cover the documented range, not a narrower one
    assert lengths.min() <= low + 2 and lengths.max() >= high - 3


def test_nparity_bit_probability_varies_per_sequence():
    _, b = sample("nparity", batch_size=400, n=20)
    last = last_step_index(b.mask)
    means = np.array([b.x[i, :last[i] + 1, 0].mean() for i in range(len(last))])
    assert (means < 0.15).sum() > 20 and (means > 0.85).sum() > 20  # uniform p, not p = 1/2


@pytest.mark.parametrize("n", [2, 6, [2, 4]])
def test_ndms_labels(n):
    task, b = sample("ndms", batch_size=300, n=n, n_max=8)
    assert task.length_range == (10, 34)
    labels = b.y.reshape(len(b.y), -1)
    last = last_step_index(b.mask)
    for i in range(len(b.y)):
        L = last[i] + 1
        assert 10 <= L < 34
        x = b.x[i, :L, 0]
        for k, N in enumerate(task.ns):
            assert labels[i, k] == int(x[L - N] == x[L - 1])
    assert 0.45 < np.mean([b.x[i, :last[i] + 1, 0].mean() for i in range(300)]) < 0.55


def test_copy_labels():
    task, b = sample("copy", vocab_size=5, length=4, delay=3)
    tok = tokens_of(b)
    V, L = 5, 4
    for i in range(len(tok)):
        data = list(tok[i, :L])
        assert all(t < V for t in data)
        assert list(tok[i, L:L + 3]) == [V] * 3 and list(tok[i, L + 3:]) == [V + 1] * L
        answers = [int(b.y[i, t]) for t in range(tok.shape[1]) if b.mask[i, t]]
        assert answers == data
        assert [t for t in range(tok.shape[1]) if b.mask[i, t]] == list(range(L + 3, 2 * L + 3))


def test_selective_copy_labels():
    task, b = sample("selective-copy", vocab_size=6, length=5, seq_len=12)
    tok = tokens_of(b)
    for i in range(len(tok)):
        data = [int(t) for t in tok[i, :12] if t < 6]
        assert len(data) == 5 and all(t == 6 for t in tok[i, :12] if t >= 6)
        assert list(tok[i, 12:]) == [7] * 5
        assert [int(b.y[i, t]) for t in range(17) if b.mask[i, t]] == data
        assert list(b.mask[i]) == [0] * 12 + [1] * 5  # the answers are asked at the markers


def test_adding_labels():
    task, b = sample("adding", length=20)
    for i in range(len(b.x)):
        marked = [t for t in range(20) if b.x[i, t, 1] == 1.0]
        assert len(marked) == 2 and marked[0] < 10 <= marked[1]
        assert np.all((b.x[i, :, 1] == 0) | (b.x[i, :, 1] == 1))
        assert b.mask[i, 19] == 1 and b.mask[i].sum() == 1
        assert b.y[i, 19, 0] == pytest.approx(float(b.x[i, marked[0], 0]) + float(b.x[i, marked[1], 0]))


def test_adding_accuracy_counts_answers_within_the_tolerance():
    from seqcore import nn
    from seqcore.models import SequenceModel
    task, b = sample("adding", length=12, batch_size=400)
    (head,) = task.heads
    assert head.tolerance == 0.04
    model = SequenceModel("gru", task.input_size, 8, task.heads)
    params = model.init(np.random.default_rng(0))
    # a read-out that answers the median sum everywhere: some answers fall within the tolerance
    params["heads"]["sum"]["weight"][:] = 0.0
    params["heads"]["sum"]["bias"][:] = np.median(b.y[:, -1, 0])
    pred = np.asarray(model.outputs(params, b.x, b.mask)["sum"])[:, -1, 0]  # the last (marked) step
    want = np.mean(np.abs(pred - b.y[:, -1, 0]) < 0.04)
    assert 0.02 < want < 0.5
    assert model.evaluate(params, b)["sum"]["accuracy"] == pytest.approx(want, abs=1e-12)
    # the metric itself on hand-made values: per position, every feature must be within the tolerance
    p = np.array([[[0.0, 1.0], [0.5, 0.5]], [[0.2, 0.2], [0.0, 0.0]]])
    t = np.array([[[0.03, 1.0], [0.5, 0.6]], [[0.2, 0.25], [0.0, 0.0]]])
    assert nn.tolerance_accuracy(p, t, 0.04) == 0.5
    assert nn.tolerance_accuracy(p, t, 0.04, mask=np.array([[1, 0], [0, 1]])) == 1.0
    with pytest.raises(ValueError, match="tolerance: got 0"):
        nn.tolerance_accuracy(p, t, 0)
    with pytest.raises(ValueError, match="tolerance: got 0.1 for a 'last' head"):
        tasks.Head("y", 2, "last", tolerance=0.1)


@pytest.mark.parametrize("gap", [0, 5])
def test_mqar_labels(gap):
    task, b = sample("mqar", num_keys=10, num_values=7, num_pairs=6, num_queries=4, gap=gap)
    assert task.input_size == 17 + (gap > 0) and b.x.shape[1] == 12 + gap + 4
    tok = tokens_of(b)
    q0 = 12 + gap  # the first query step
    for i in range(len(tok)):
        table = {}
        for j in range(6):
            k, v = int(tok[i, 2 * j]), int(tok[i, 2 * j + 1])
            assert k < 10 <= v < 17 and k not in table
            table[k] = v - 10
        assert all(int(t) == 17 for t in tok[i, 12:q0])  # fillers
        queries = [int(t) for t in tok[i, q0:]]
        assert len(set(queries)) == 4 and all(q in table for q in queries)
        assert [int(b.y[i, q0 + q]) for q in range(4)] == [table[q] for q in queries]
        assert b.mask[i, :q0].sum() == 0 and b.mask[i, q0:].sum() == 4


def test_set_disjointness_labels():
    task, b = sample("set-disjointness", batch_size=400, vocab_size=10, set_size=3)
    tok = tokens_of(b)
    for i in range(len(tok)):
        a, sep, c = tok[i, :3], tok[i, 3], tok[i, 4:]
        assert sep == 10 and len(set(a)) == 3 and len(set(c)) == 3
        assert b.y[i] == int(not (set(a) & set(c)))
    assert 0.4 < b.y.mean() < 0.6


def test_passkey_labels():
    task, b = sample("passkey", length=20, key_length=3, num_digits=10, filler_vocab=2)
    tok = tokens_of(b)
    for i in range(len(tok)):
        key = [int(t) for t in tok[i, :20] if t < 10]
        assert len(key) == 3
        assert list(tok[i, 20:]) == [12] * 3
        assert [int(b.y[i, t]) for t in range(23) if b.mask[i, t]] == key
        assert list(b.mask[i]) == [0] * 20 + [1] * 3
        assert all(10 <= int(t) < 12 for t in tok[i, :20] if t >= 10)  # fillers
    assert task.input_size == 13 and task.heads[0].output_size == 10


@pytest.mark.parametrize("channels", [1, 3])
def test_flip_flop_labels(channels):
    task, b = sample("flip-flop", channels=channels, length=30, p_write=0.3)
    y = b.y.reshape(*b.y.shape[:2], channels)
    for i in range(len(b.x)):
        memory = [None] * channels
        for t in range(30):
            for c in range(channels):
                if b.x[i, t, c] == 1.0:
                    memory[c] = int(b.x[i, t, channels + c] > 0)
                assert y[i, t, c] == memory[c]
    assert b.mask.all()


@pytest.mark.parametrize("name,degree", [("s3", 3), ("s4", 4), ("s5", 5)])
def test_permutation_labels(name, degree):
    task, b = sample(name, batch_size=16, length=12)
    elements = list(itertools.permutations(range(degree)))  # index i <-> lexicographic i-th
    tok = tokens_of(b)
    for i in range(len(tok)):
        state = tuple(range(degree))
        for t in range(12):
            g = elements[tok[i, t]]
            state = tuple(g[state[j]] for j in range(degree))  # apply the earlier ones first
            assert elements[b.y[i, t]] == state
    assert task.name == name and task.input_size == len(elements)


def test_composition_table_of_s7_matches_composing_the_permutations():
    from seqcore.tasks.state_tracking import composition_table, permutation_elements

    table, perms = composition_table(7), permutation_elements(7)  # built in blocks, not a 1.4 GB array
    a, b = np.random.default_rng(0).integers(0, 5040, size=(2, 2000))
    np.testing.assert_array_equal(perms[table[a, b]], np.take_along_axis(perms[a], perms[b], axis=1))


def test_zn_labels():
    task, b = sample("zn", n=7, length=15)
    tok = tokens_of(b)
    for i in range(len(tok)):
        total = 0
        for t in range(15):
            total = (total + int(tok[i, t])) % 7
            assert b.y[i, t] == total


def _l96_derivative(x, F):
    D = len(x)
    return np.array([(x[(i + 1) % D] - x[i - 2]) * x[i - 1] - x[i] + F for i in range(D)])


def test_lorenz96_next_states():
    task, b = sample("lorenz96", batch_size=3, dim=6, forcing=8.0, dt=0.01, substeps=3, length=8)
    assert np.array_equal(b.x[:, 1:], b.y[:, :-1])
    for i in range(3):
        for t in range(8):
            s = b.x[i, t].astype(np.float64)
            for _ in range(3):
                k1 = _l96_derivative(s, 8.0)
                k2 = _l96_derivative(s + 0.005 * k1, 8.0)
                k3 = _l96_derivative(s + 0.005 * k2, 8.0)
                k4 = _l96_derivative(s + 0.01 * k3, 8.0)
                s = s + 0.01 / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            np.testing.assert_allclose(b.y[i, t], s, rtol=1e-4, atol=1e-4)
    assert b.mask.all()


def test_lorenz96_teacher_forcing_mix():
    data, pred = np.full((2, 4), 3.0), np.full((2, 4), -1.0)
    assert np.allclose(tasks.make("lorenz96", alpha=0.25).mix(data, pred), 0.25 * 3 - 0.75)
    assert np.array_equal(tasks.make("lorenz96").mix(data, pred), data)  # alpha = 1: teacher forcing
    assert np.array_equal(tasks.make("lorenz96", alpha=0.0).mix(data, pred), pred)  # free running
    rng = np.random.default_rng(0)
    d, p = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    np.testing.assert_allclose(tasks.make("lorenz96", alpha=0.6).mix(d, p), 0.6 * d + 0.4 * p, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="prediction"):
        tasks.make("lorenz96").mix(data, pred[:, :2])


# ---------------------------------------------------------------- batch helpers

def test_last_step_index_and_take():
    task = tasks.make("nparity", n=3)
    pool = task.fixed_set(50)
    assert np.array_equal(pool.x, task.fixed_set(50).x)
    rows = np.array([4, 9, 1])
    sub = take(pool, rows, per_step=False)
    lengths = last_step_index(pool.mask)[rows] + 1
    assert sub.x.shape[1] == lengths.max()
    assert np.array_equal(sub.y, pool.y[rows])
    assert np.array_equal(last_step_index(sub.mask), lengths - 1)
    # the kept steps are the rows' first steps; the cut-off ones carried no loss in those rows
    T = lengths.max()
    assert np.array_equal(sub.x, pool.x[rows, :T]) and np.array_equal(sub.mask, pool.mask[rows, :T])
    assert pool.mask[rows, T:].sum() == 0
    # last_step_index against a loop: the last marked step of every row
    loop = [max(t for t in range(pool.mask.shape[1]) if pool.mask[i, t]) for i in range(50)]
    assert list(last_step_index(pool.mask)) == loop
    # per-step labels are cut with the steps
    copy_task = tasks.make("selective-copy", vocab_size=4, length=3, seq_len=6)
    cb = copy_task.sample(np.random.default_rng(0), 5)
    csub = take(cb, np.array([3, 0]), per_step=True)
    assert np.array_equal(csub.y, cb.y[[3, 0]]) and np.array_equal(csub.x, cb.x[[3, 0]])  # last step marked
    masked = Batch(cb.x, cb.y, np.where(np.arange(9)[None, :] < 7, cb.mask, 0).astype(np.float32))
    msub = take(masked, np.array([1, 2]), per_step=True)
    assert msub.x.shape[1] == 7 and np.array_equal(msub.y, cb.y[[1, 2], :7])
    with pytest.raises(ValueError, match="mask"):
        last_step_index(np.zeros((2, 3)))


def test_fixed_set_pads_across_chunks():
    task = tasks.make("ndms", n=4)
    pool = task.fixed_set(5000)  # two chunks of different padded lengths
    assert pool.x.shape == (5000, 4 * 4 + 1, 1)
    last = last_step_index(pool.mask)
    for i in range(0, 5000, 97):
        L = last[i] + 1
        assert pool.y[i] == int(pool.x[i, L - 4, 0] == pool.x[i, L - 1, 0])
    # padding: one marked step per row, nothing after it (in both chunks)
    T = pool.x.shape[1]
    after = np.arange(T)[None, :] > last[:, None]
    assert np.all(pool.x[after] == 0) and np.all(pool.mask.sum(1) == 1)
    assert np.all(pool.mask[after] == 0)
    # the second chunk (rows 4096...) holds its own sequences, not a copy of the first
    assert not np.array_equal(pool.x[4096:4100], pool.x[:4])


# ---------------------------------------------------------------- IDX files

def idx_bytes(array, code):
    """An IDX file written by hand: magic, big-endian dims, big-endian data."""
    fmt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(fmt).tobytes()


@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                        (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)])
@pytest.mark.parametrize("compressed", [False, True])
def test_idx_read_write_round_trip(tmp_path, code, dtype, compressed):
    array = (np.arange(24).reshape(2, 3, 4) * 3 - 20).astype(dtype)
    raw = idx_bytes(array, code)
    path = tmp_path / ("a.gz" if compressed else "a")
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    got = read_idx(path)
    assert got.dtype == dtype and np.array_equal(got, array)
    write_idx(tmp_path / "b", array)
    assert (tmp_path / "b").read_bytes() == raw  # our writer matches the hand-written bytes


def write_split(directory, split, images, labels, style="-", gz=True):
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    for kind, array, rank in (("images", images, 3), ("labels", labels, 1)):
        raw = idx_bytes(array, 0x08)
        path = directory / f"{prefix}-{kind}{style}idx{rank}-ubyte{suffix}"
        path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.fixture
def tiny_images(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, size=(7, 4, 5), dtype=np.uint8), np.arange(7, dtype=np.uint8) % 10
    test = rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8), np.array([9, 0, 4], dtype=np.uint8)
    write_split(tmp_path, "train", *train)
    write_split(tmp_path, "test", *test, style=".", gz=False)
    return tmp_path, train, test


def test_image_rows_pixels_and_permutation(tiny_images):
    directory, (xtr, ytr), (xte, yte) = tiny_images
    rows = tasks.make("image", data_dir=directory, order="row")
    pixels = tasks.make("image", data_dir=str(directory), order="pixel", permutation_seed=5)
    assert rows.num_examples("train") == 7 and rows.num_examples("test") == 3
    assert rows.input_size == 5 and pixels.input_size == 1
    b = rows.batch_from_indices(np.array([6, 0]))
    assert b.x.shape == (2, 4, 5) and list(b.y) == [ytr[6], ytr[0]]
    assert np.allclose(b.x[0], xtr[6] / 255.0) and list(b.mask[0]) == [0, 0, 0, 1]
    perm = np.random.default_rng(5).permutation(20)
    x, y = pixels.arrays("test")
    assert x.shape == (3, 20, 1) and list(y) == list(yte)
    for i in range(3):
        flat = [xte[i, p // 5, p % 5] for p in range(20)]
        for t in range(20):
            assert x[i, t, 0] == np.float32(flat[perm[t]]) / np.float32(255.0)
    batches = list(rows.eval_batches(2))
    assert [len(e.y) for e in batches] == [2, 1]
    assert list(np.concatenate([e.y for e in batches])) == list(yte)
    s = rows.sample(np.random.default_rng(0), 5)
    assert s.x.shape == (5, 4, 5) and set(s.y) <= set(ytr)
    for k in range(5):  # every sampled row is a training image, scaled, with its own label
        matches = [i for i in range(7) if np.allclose(s.x[k], xtr[i] / 255.0, atol=1e-7)]
        assert len(matches) == 1 and s.y[k] == ytr[matches[0]]
    assert s.mask.shape == (5, 4) and np.all(s.mask[:, -1] == 1) and s.mask.sum() == 5
    # the training split read pixel by pixel uses the same permutation
    xp, yp = pixels.arrays("train")
    np.testing.assert_allclose(xp[:, :, 0], xtr.reshape(7, 20)[:, perm] / 255.0, atol=1e-7)
    assert list(yp) == list(ytr)
    # the fixed training set of a data set is its first rows, in order
    fixed = rows.fixed_set()
    np.testing.assert_allclose(fixed.x, xtr / 255.0, atol=1e-7)
    assert list(fixed.y) == list(ytr) and list(rows.fixed_set(3).y) == list(ytr[:3])
    # num_batches limits the walk over the test split
    assert [list(e.y) for e in rows.eval_batches(2, num_batches=1)] == [list(yte[:2])]
    # bad arguments are refused at the call, before any batch is asked for
    with pytest.raises(ValueError, match="^num_batches: got -3"):
        rows.eval_batches(2, -3)


def test_missing_data_dir_says_how_to_get_it(tmp_path):
    task = tasks.make("image", data_dir=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"nowhere/train-images-idx3-ubyte\[\.gz\]: file not found "
                                           r"\(directory .* does not exist\).*dataset-fashion-mnist") as info:
        task.sample(np.random.default_rng(0), 2)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_data_dir_that_is_a_file_is_called_a_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(DatasetError, match=rf"\({re.escape(str(path))} is a file, expected the directory "
                                           r"holding the IDX files\)") as info:
        tasks.make("image", data_dir=path).input_size
    assert "does not exist" not in str(info.value)


def test_write_idx_replaces_the_file_atomically(tmp_path, monkeypatch):
    path = tmp_path / "a-idx1-ubyte"
    write_idx(path, np.arange(3, dtype=np.uint8))
    monkeypatch.setattr("os.replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # interrupted before the rename: the old file is intact
        write_idx(path, np.arange(5, dtype=np.uint8))
    monkeypatch.undo()
    assert read_idx(path).tolist() == [0, 1, 2] and [p.name for p in tmp_path.iterdir()] == [path.name]
    with pytest.raises(ValueError, match=r"path: got '.*missing/a-idx1-ubyte', whose directory does not exist"):
        write_idx(tmp_path / "missing" / path.name, np.arange(3, dtype=np.uint8))
    assert not (tmp_path / "missing").exists()  # a misspelt directory is not created


@pytest.mark.parametrize("damage,message", [
    (lambda raw: raw[:-3], "truncated"),
    (lambda raw: raw + b"\0", "too long"),
    (lambda raw: b"\x01" + raw[1:], "magic number"),
    (lambda raw: raw[:2] + b"\x07" + raw[3:], "magic number"),
    (lambda raw: raw[:6], "truncated header"),
    (lambda raw: b"", "not an IDX file"),
    (lambda raw: gzip.compress(raw)[:-9], "gzip"),
])
def test_corrupt_idx_files_raise_one_clear_error(tmp_path, damage, message):
    raw = idx_bytes(np.zeros((3, 2, 2), np.uint8), 0x08)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(damage(raw))
    with pytest.raises(DatasetError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "dataset-fashion-mnist" in str(info.value)


def test_idx_header_of_too_many_values_is_a_dataset_error(tmp_path):
    # before: np.prod wrapped to 0 (65536**4 = 2**64) and reshape failed with NumPy's message
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x04" + struct.pack(">IIII", 65536, 65536, 65536, 65536))
    with pytest.raises(DatasetError, match=rf"^{path}: truncated: 20 bytes, expected {20 + 2**64} for shape "
                                           r"\(65536, 65536, 65536, 65536\) of uint8"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x0e\x03" + struct.pack(">III", *(2**32 - 1,) * 3))
    with pytest.raises(DatasetError, match=rf"truncated: 16 bytes, expected {16 + 8 * (2**32 - 1) ** 3} for"):
        read_idx(path)


def test_test_images_of_another_shape_or_without_pixels_are_refused(tmp_path):
    write_split(tmp_path, "train", np.zeros((20, 28, 28), np.uint8), np.zeros(20, np.uint8))
    write_split(tmp_path, "test", np.zeros((7, 20, 28), np.uint8), np.zeros(7, np.uint8))
    task = tasks.make("image", data_dir=tmp_path)
    # before: accepted, then an IndexError at the first evaluation
    shapes = r"shape \(20, 28\), expected \(28, 28\) like the training images \(shapes \(7, 20, 28\) here, " \
             r"\(20, 28, 28\) in .*train-images-idx3-ubyte\.gz\)"
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz: images of " + shapes):
        task.input_size
    with pytest.raises(DatasetError, match=shapes):
        next(task.eval_batches(4))
    write_split(tmp_path, "test", np.zeros((7, 28, 28), np.uint8), np.zeros(6, np.uint8))
    with pytest.raises(DatasetError, match="6 labels for 7 images"):
        tasks.make("image", data_dir=tmp_path).input_size
    for split in ("train", "test"):  # before: an IndexError in sample
        write_split(tmp_path, split, np.zeros((4, 0, 28), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz: expected images of at least 1 x 1 "
                                           r"pixels, got shape \(4, 0, 28\)"):
        tasks.make("image", data_dir=tmp_path).sample(np.random.default_rng(0), 2)


def test_inconsistent_image_files(tmp_path):
    write_split(tmp_path, "train", np.zeros((4, 2, 2), np.uint8), np.zeros(3, np.uint8))
    write_split(tmp_path, "test", np.zeros((1, 2, 2), np.uint8), np.zeros(1, np.uint8))
    with pytest.raises(DatasetError, match="3 labels for 4 images"):
        tasks.make("image", data_dir=tmp_path).input_size
    write_split(tmp_path, "train", np.zeros((4, 2, 2), np.uint8), np.full(4, 11, np.uint8))
    with pytest.raises(DatasetError, match="label 11"):
        tasks.make("image", data_dir=tmp_path).input_size
    write_split(tmp_path, "train", np.zeros((0, 2, 2), np.uint8), np.zeros(0, np.uint8))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte(\.gz)?: holds 0 images, expected at least one"):
        tasks.make("image", data_dir=tmp_path).sample(np.random.default_rng(0), 2)


def test_find_idx_file_prefers_existing_spelling(tmp_path):
    (tmp_path / "test-labels.idx1-ubyte").write_bytes(idx_bytes(np.zeros(1, np.uint8), 0x08))
    assert find_idx_file(tmp_path, "test", "labels").name == "test-labels.idx1-ubyte"


@pytest.mark.skipif(not __import__("os").path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_when_installed():
    task = tasks.make("image")
    assert task.num_examples("train") == 60000 and task.num_examples("test") == 10000
    b = next(task.eval_batches(16))
    assert b.x.shape == (16, 28, 28) and 0 <= b.x.min() and b.x.max() <= 1
    # oracle: the gzip files parsed here with struct and np.frombuffer, not with read_idx
    root = "/usr/share/datasets/fashion-mnist"

    def raw(prefix, kind):
        with gzip.open(f"{root}/{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz", "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        assert zero == 0 and dtype == 0x08  # unsigned bytes
        dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    test_x, test_y = raw("t10k", "images"), raw("t10k", "labels")
    train_x, train_y = raw("train", "images"), raw("train", "labels")
    assert test_x.shape == (10000, 28, 28) and train_x.shape == (60000, 28, 28)
    # the test split in order: eval_batches walks it from row 0, rows of the image as steps
    np.testing.assert_array_equal(b.x, test_x[:16].astype(np.float32) / 255)
    np.testing.assert_array_equal(b.y, test_y[:16])
    x, y = task.arrays("test")
    np.testing.assert_array_equal(x[-3:], test_x[-3:].astype(np.float32) / 255)
    np.testing.assert_array_equal(y, test_y)
    rows = np.array([0, 1, 12345, 59999])
    train = task.batch_from_indices(rows, "train")
    np.testing.assert_array_equal(train.x, train_x[rows].astype(np.float32) / 255)
    np.testing.assert_array_equal(train.y, train_y[rows])
    # pixel order: one pixel per step, row-major
    pixel = tasks.make("image", order="pixel").batch_from_indices(rows, "train")
    np.testing.assert_array_equal(pixel.x[:, :, 0], train_x[rows].reshape(4, 784).astype(np.float32) / 255)
    assert len(np.unique(train_y)) == 10 and len(np.unique(test_y)) == 10


# ---------------------------------------------------------------- MNIST-1D

def test_mnist1d_matches_its_package_and_leaves_global_rng_alone():
    pytest.importorskip("mnist1d")
    from mnist1d.data import get_dataset_args, make_dataset

    np.random.seed(123)
    random.seed(7)
    before = np.random.get_state()[1].copy(), random.getstate()
    task = tasks.make("mnist1d", num_samples=200, seed=3)
    x, y = task.arrays("train")
    assert np.array_equal(np.random.get_state()[1], before[0]) and random.getstate() == before[1]
    args = get_dataset_args()
    args.num_samples, args.seed = 200, 3
    ref = make_dataset(args)
    assert x.shape == (160, 40, 1) and np.allclose(x[:, :, 0], ref["x"], atol=1e-6)
    assert np.array_equal(y, ref["y"]) and np.array_equal(task.labels("test"), ref["y_test"])
    assert task.num_examples("test") == 40


def test_mnist1d_bad_split():
    pytest.importorskip("mnist1d")
    with pytest.raises(ValueError, match="train_split"):
        tasks.make("mnist1d", num_samples=20, train_split=0.01)


def test_mnist1d_without_its_package_names_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mnist1d" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install mnist1d"):
        tasks.make("mnist1d")


def test_lorenz96_normalize_standardises_with_the_attractor_statistics():
    kw = dict(dim=8, length=50, burn_in=20)
    raw = tasks.make("lorenz96", **kw).sample(np.random.default_rng(3), 16)
    task = tasks.make("lorenz96", normalize=True, **kw)
    mean, std = task.attractor_stats()
    assert 1.5 < mean < 3.5 and 2.5 < std < 4.5  # F = 8: about 2.3 and 3.6
    got = task.sample(np.random.default_rng(3), 16)  # the same trajectories, standardised
    np.testing.assert_allclose(got.x, (raw.x.astype(np.float64) - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.y, (raw.y.astype(np.float64) - mean) / std, rtol=1e-5, atol=1e-5)
    assert abs(float(got.x.mean())) < 0.3 and 0.7 < float(got.x.std()) < 1.3
    with pytest.raises(TypeError, match="normalize: got 'yes'"):
        tasks.make("lorenz96", normalize="yes")


@pytest.mark.parametrize("kw", [dict(forcing=20.0, dt=0.05, substeps=1),
                                dict(dim=8, forcing=20.0, dt=0.05, substeps=1, length=30, burn_in=10),
                                dict(forcing=8.0, dt=0.1), dict(forcing=-20.0, dt=0.04)])
def test_lorenz96_unstable_settings_are_refused_when_built(kw):
    # before: built from one trial sequence, then a batch of 64 overflowed at the first step of the run
    # the trial sequences overflow (forcing 20, dt 0.05), or the bound on dt·|forcing| refuses
    with pytest.raises(ValueError, match=r"^forcing: got forcing=.* with dt=.*, substeps=\d+: (dt·\|forcing\| = "
                                         r".* above MAX_DT_FORCING = 0.6|the RK4 integration overflowed)"):
        tasks.make("lorenz96", **kw)


def test_lorenz96_settings_at_the_bound_never_overflow():
    task = tasks.make("lorenz96", forcing=20.0, dt=0.03, substeps=1, length=4, burn_in=30)
    for seed in range(3):  # the divergent swings of dt·|forcing| = 0.8 hit ~1 in 10^3 of these
        assert np.isfinite(task.sample(np.random.default_rng(seed), 1024).x).all()
    tasks.make("lorenz96", forcing=8.0, dt=0.075)  # 0.6000000000000001 in floating point


def test_nparity_and_ndms_take_n_as_an_integer_array():
    for name in ("nparity", "ndms"):
        task = tasks.make(name, n=np.array([3, 2]))
        assert task == tasks.make(name, n=[3, 2]) and task.n == (3, 2)
        a, b = (t.sample(np.random.default_rng(1), 8) for t in (task, tasks.make(name, n=[3, 2])))
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
        with pytest.raises(TypeError, match=r"^n: got an array of shape \(1, 2\), expected an int or a 1-D array"):
            tasks.make(name, n=np.array([[3, 2]]))
        with pytest.raises(TypeError, match=r"^n: got 2.0 \(float\), expected an int"):
            tasks.make(name, n=np.array([2.0, 3.0]))


def test_mnist1d_num_samples_must_be_a_multiple_of_10():
    # before: 25 made 20 sequences, 2 of each digit, silently
    with pytest.raises(ValueError, match=r"^num_samples: got 25, expected a multiple of 10"):
        tasks.make("mnist1d", num_samples=25, train_split=0.5)
    task = tasks.make("mnist1d", num_samples=30, train_split=0.5)
    assert len(task.labels("train")) + len(task.labels("test")) == 30


def test_take_and_concat_name_bad_batches_rows_and_shapes():
    """Raw IndexError / AttributeError / np.concatenate messages named no argument."""
    from seqcore.tasks.base import Batch, concat, take
    task = tasks.make("nparity", n=3)
    b = task.sample(np.random.default_rng(0), 4)
    with pytest.raises(ValueError, match=r"^indices: got values in \[5, 5\], expected rows of the batch, in \[0, 3\]"):
        take(b, np.array([5]), per_step=False)
    with pytest.raises(TypeError, match=r"^batch: got tuple, expected a Batch\(x, y, mask\)"):
        take(tuple(b), np.array([0]), per_step=False)
    with pytest.raises(ValueError, match=r"^batch: got x \(4, 12, 1\), y \(4,\), mask \(4, 12\).*per_step=True"):
        take(b, np.array([0]), per_step=True)
    with pytest.raises(TypeError, match=r"^per_step: got str"):
        concat([b], per_step="no")
    wide = Batch(np.zeros((2, 5, 2), np.float32), b.y[:2], np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"^batches\[1\]\.x: got shape \(2, 5, 2\), expected trailing axes \(1,\)"):
        concat([b, wide], per_step=False)
    # the operations themselves: rows in order, time cut to the last step that carries a loss
    got = take(b, np.array([2, 0]), per_step=False)
    T = int(np.flatnonzero(b.mask[[2, 0]].any(0)).max()) + 1
    np.testing.assert_array_equal(got.x, b.x[[2, 0], :T])
    np.testing.assert_array_equal(concat([b, b], per_step=False).y, np.concatenate([b.y, b.y]))


def test_image_data_dir_empty_or_holding_a_directory_by_the_files_name(tmp_path):
    """'' looked in the current directory and named no directory; a directory named like the
    IDX file was reported as 'file not found'."""
    with pytest.raises(ValueError, match=r"^data_dir: got '', expected a directory path"):
        tasks.make("image", data_dir="")
    (tmp_path / "train-images-idx3-ubyte").mkdir()
    with pytest.raises(tasks.DatasetError, match=r"train-images-idx3-ubyte: is a directory \(or another non-file\), "
                                                 r"expected the IDX file itself\. Fashion-MNIST comes with"):
        tasks.make("image", data_dir=tmp_path).input_size


def test_lorenz96_normalize_refuses_a_forcing_without_an_attractor():
    """F = 0.5 settles to a fixed point (state std ~3e-4): normalized inputs reached ~400."""
    with pytest.raises(ValueError, match=r"^forcing: got 0.5: the dynamics settle to a fixed point"):
        tasks.make("lorenz96", forcing=0.5, normalize=True)
    b = tasks.make("lorenz96", forcing=0.5).sample(np.random.default_rng(0), 2)  # unnormalized: fine
    assert np.abs(b.x).max() < 10
    t = tasks.make("lorenz96", forcing=8.0, normalize=True)
    assert np.abs(t.sample(np.random.default_rng(0), 4).x).max() < 10  # standardised states


@pytest.mark.parametrize("dim", [4, 5, 40])
def test_lorenz96_fixed_point_stability_matches_the_jacobian_eigenvalues(dim):
    """The closed form against the eigenvalues of a central-difference Jacobian at x = F."""
    from seqcore.tasks.lorenz import fixed_point_is_stable, lorenz96_derivative
    for forcing in (-0.6, -0.49, 0.3, 0.85, 0.88, 0.9, 1.2, 8.0):
        x, eps = np.full(dim, forcing), 1e-6
        jac = np.stack([(lorenz96_derivative(x + eps * e, forcing) - lorenz96_derivative(x - eps * e, forcing))
                        / (2 * eps) for e in np.eye(dim)], axis=1)
        assert fixed_point_is_stable(dim, forcing) == (np.linalg.eigvals(jac).real.max() < 0), forcing


def test_lorenz96_normalize_refuses_a_slowly_settling_forcing():
    """F = 0.7 (dim 40) decays so slowly that the reference run's spread passed the std test;
    the inputs were then scaled by 1/0.003 (std ~15)."""
    with pytest.raises(ValueError, match=r"^forcing: got 0.7: the dynamics settle to a fixed point"):
        tasks.make("lorenz96", forcing=0.7, normalize=True)


# ---------------------------------------------------------------- sizes and helpers (QA r12 fuzz)

@pytest.mark.parametrize("call,name,what", [
    (lambda t, n: t.sample(np.random.default_rng(0), n), "batch_size", "batch"),
    (lambda t, n: t.eval_batches(n), "batch_size", "batch"),
    (lambda t, n: t.fixed_set(n), "size", "fixed set")])
def test_batch_and_set_sizes_are_budgeted_against_memory_by_name(call, name, what, monkeypatch):
    """QA r12: sample(rng, 2**70) raised NumPy's unnamed "Maximum allowed dimension exceeded",
    10**9 a MemoryError, and fixed_set(2**70) looped over chunks until the machine ran out."""
    from seqcore import validate
    task = tasks.make("copy")
    x, y, mask = task.sample(np.random.default_rng(5), 1)
    one = x.nbytes + y.nbytes + mask.nbytes  # copy's sequences all have this size (fixed length)
    with pytest.raises(ValueError, match=rf"^{name}: got {2 ** 70}, whose {what} \({one} bytes per sequence\) "
                                         r"would take .* GiB, more than this machine's"):
        call(task, 2 ** 70)
    monkeypatch.setattr(validate, "physical_memory", lambda: 2 ** 20)
    fits = 2 ** 20 // one  # by hand: the largest count of such sequences in 1 MiB
    with pytest.raises(ValueError, match=rf"^{name}: got {fits + 1}, whose {what} \({one} bytes per sequence\)"):
        call(task, fits + 1)
    got = call(task, fits)  # refused at the call above, not at the first next() of eval_batches
    got = got if isinstance(got, Batch) else next(got)
    assert got.x.shape == (fits,) + x.shape[1:]


def test_head_targets_validates_y_and_heads():
    """QA r12: a list y raised AttributeError, a 0-d y IndexError, and empty heads blamed y."""
    heads = (tasks.Head("a", 2, "per_step"), tasks.Head("b", 3, "per_step"))
    y = np.arange(12).reshape(2, 3, 2)
    a, b = head_targets(y, heads)
    np.testing.assert_array_equal(a, [[0, 2, 4], [6, 8, 10]])
    np.testing.assert_array_equal(b, [[1, 3, 5], [7, 9, 11]])
    with pytest.raises(TypeError, match=r"^y: got list, expected an array"):
        head_targets([[[0, 1]]], heads)
    with pytest.raises(ValueError, match=r"^y: got shape \(\), expected labels \(B, ...\)"):
        head_targets(np.int64(0), heads)
    with pytest.raises(ValueError, match=r"^heads: got \(\), expected at least one Head"):
        head_targets(y, ())
    for bad in (("a", "b"), None, "ab"):
        with pytest.raises(TypeError, match=r"^heads: got .*expected a sequence of Head"):
            head_targets(y, bad)
