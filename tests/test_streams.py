"""Continual-learning streams: label maps, permutations, overlaps and schedule statistics."""
import re

import numpy as np
import pytest

from seqcore.tasks.streams import (Experience, Stream, blurry, curriculum_stream, permuted_stream,
                                   power_law_schedule, power_law_steps, power_law_stream,
                                   scole_stream, split_stream)


def make_data(n_train=60, n_test=30, n_classes=6, shape=(4, 3)):
    """x holds the sample id in every feature (plus the feature index), so rows are traceable."""
    def part(n, offset):
        ids = offset + np.arange(n)
        x = ids[:, None].astype(np.float64) * 1000 + np.arange(int(np.prod(shape)))
        return x.reshape((n,) + shape), ids % n_classes
    return part(n_train, 0) + part(n_test, 10**6)


def sample_ids(x):
    return (x.reshape(x.shape[0], -1).min(axis=1) // 1000).astype(int)


# ------------------------------------------------------------------ permuted

def test_permuted_stream_permutes_features_and_keeps_shape():
    xtr, ytr, xte, yte = make_data()
    stream = permuted_stream(xtr, ytr, xte, yte, n_experiences=4, seed=3)
    assert len(stream) == 4 and stream.scenario == "domain" and stream.n_outputs == 6
    for i, exp in enumerate(stream):
        perm = exp.info["permutation"]
        np.testing.assert_array_equal(np.sort(perm), np.arange(12))
        assert exp.train[0].shape == xtr.shape and exp.eval[0].shape == xte.shape
        np.testing.assert_array_equal(exp.train[0].reshape(60, 12), xtr.reshape(60, 12)[:, perm])
        np.testing.assert_array_equal(exp.eval[0].reshape(30, 12), xte.reshape(30, 12)[:, perm])
        np.testing.assert_array_equal(exp.train[1], ytr)
        assert exp.task_id == i and exp.head == 0
    np.testing.assert_array_equal(stream[0].info["permutation"], np.arange(12))
    perms = [tuple(e.info["permutation"]) for e in stream]
    assert len(set(perms)) == 4


def test_permuted_stream_is_deterministic_and_first_identity_optional():
    xtr, ytr, xte, yte = make_data(shape=(5, 7))  # a (T, D) sequence per sample
    a = permuted_stream(xtr, ytr, xte, yte, 3, seed=11, first_identity=False)
    b = permuted_stream(xtr, ytr, xte, yte, 3, seed=11, first_identity=False)
    c = permuted_stream(xtr, ytr, xte, yte, 3, seed=12, first_identity=False)
    for i in range(3):
        np.testing.assert_array_equal(a[i].info["permutation"], b[i].info["permutation"])
        np.testing.assert_array_equal(a[i].train[0], b[i].train[0])  # same stream for the same seed
        np.testing.assert_array_equal(a[i].train[0], a[i].train[0].copy())
        np.testing.assert_array_equal(a[i].eval[0], b[i].eval[0])
        # the (T, D) samples are flattened, permuted and reshaped back
        perm = a[i].info["permutation"]
        np.testing.assert_array_equal(np.sort(perm), np.arange(35))
        np.testing.assert_array_equal(a[i].train[0], xtr.reshape(60, 35)[:, perm].reshape(60, 5, 7))
        np.testing.assert_array_equal(a[i].eval[0], xte.reshape(30, 35)[:, perm].reshape(30, 5, 7))
        np.testing.assert_array_equal(a[i].train[1], ytr)
        # without first_identity no experience is the identity
        assert not np.array_equal(perm, np.arange(35))
    assert not np.array_equal(a[0].info["permutation"], np.arange(35))
    assert not np.array_equal(a[1].info["permutation"], c[1].info["permutation"])
    multi = permuted_stream(xtr, ytr, xte, yte, 3, seed=11, multi_head=True)
    assert [e.head for e in multi] == [0, 1, 2] and multi.scenario == "task" and multi.n_heads == 3
    assert multi.n_outputs == 6  # one head holds every class: labels are unchanged
    for e in multi:
        np.testing.assert_array_equal(e.train[1], ytr)
        np.testing.assert_array_equal(e.eval[1], yte)
    np.testing.assert_array_equal(multi[0].train[0], xtr)  # first_identity by default


def test_permuted_stream_validation():
    xtr, ytr, xte, yte = make_data()
    with pytest.raises(ValueError, match="n_experiences: got 0"):
        permuted_stream(xtr, ytr, xte, yte, 0, seed=0)
    with pytest.raises(ValueError, match="x_test: got feature shape"):
        permuted_stream(xtr, ytr, xte[:, :2], yte, 2, seed=0)
    with pytest.raises(TypeError, match="labels of dtype float64"):
        permuted_stream(xtr, ytr.astype(float), xte, yte, 2, seed=0)
    with pytest.raises(ValueError, match="seed: got -1"):
        permuted_stream(xtr, ytr, xte, yte, 2, seed=-1)


# ------------------------------------------------------------------ split

@pytest.mark.parametrize("scenario", ["class", "task", "domain"])
def test_split_stream_label_maps(scenario):
    xtr, ytr, xte, yte = make_data()
    stream = split_stream(xtr, ytr, xte, yte, n_experiences=3, scenario=scenario)
    assert len(stream) == 3
    for i, exp in enumerate(stream):
        group = (2 * i, 2 * i + 1)
        assert exp.classes == group
        original = ytr[sample_ids(exp.train[0])]  # the true class of every row
        assert set(original) == set(group) and len(original) == 20
        expected = original if scenario == "class" else original - 2 * i
        np.testing.assert_array_equal(exp.train[1], expected)
        np.testing.assert_array_equal(exp.eval[1], (yte[sample_ids(exp.eval[0]) - 10**6]
                                                    - (0 if scenario == "class" else 2 * i)))
        assert exp.head == (i if scenario == "task" else 0)
        assert exp.info["label_map"] == {c: (c if scenario == "class" else c - 2 * i) for c in group}
    assert stream.n_outputs == (6 if scenario == "class" else 2)
    assert stream.n_heads == (3 if scenario == "task" else 1)


def test_split_stream_class_order():
    xtr, ytr, xte, yte = make_data()
    by_size = split_stream(xtr, ytr, xte, yte, classes_per_experience=3, class_order=[5, 0, 3, 1, 2, 4],
                           scenario="task")
    assert [e.classes for e in by_size] == [(5, 0, 3), (1, 2, 4)]
    np.testing.assert_array_equal(by_size[0].train[1], [{5: 0, 0: 1, 3: 2}[c] for c in
                                                        ytr[sample_ids(by_size[0].train[0])]])
    seeded = [split_stream(xtr, ytr, xte, yte, n_experiences=2, seed=4)[0].classes for _ in range(2)]
    assert seeded[0] == seeded[1]
    assert sorted(sum((e.classes for e in split_stream(xtr, ytr, xte, yte, n_experiences=2, seed=4)),
                      ())) == list(range(6))


def test_split_stream_validation():
    xtr, ytr, xte, yte = make_data()
    with pytest.raises(ValueError, match="expected exactly one"):
        split_stream(xtr, ytr, xte, yte)
    with pytest.raises(ValueError, match="expected exactly one"):
        split_stream(xtr, ytr, xte, yte, n_experiences=2, classes_per_experience=3)
    # the message names the value the caller gave (not the group size derived from it)
    with pytest.raises(ValueError, match=re.escape("n_experiences: got 4, expected a divisor of the 6 classes "
                                                   "(1, 2, 3, 6)")):
        split_stream(xtr, ytr, xte, yte, n_experiences=4)
    with pytest.raises(ValueError, match=re.escape("classes_per_experience: got 4, expected a divisor of the 6 "
                                                   "classes (1, 2, 3, 6)")):
        split_stream(xtr, ytr, xte, yte, classes_per_experience=4)
    with pytest.raises(ValueError, match="scenario: got 'online'"):
        split_stream(xtr, ytr, xte, yte, n_experiences=2, scenario="online")
    with pytest.raises(ValueError, match="class_order"):
        split_stream(xtr, ytr, xte, yte, n_experiences=2, class_order=[0, 1, 2, 3, 4, 4])
    with pytest.raises(ValueError, match="seed: got 3 together with class_order"):
        split_stream(xtr, ytr, xte, yte, n_experiences=2, class_order=[0, 1, 2, 3, 4, 5], seed=3)
    with pytest.raises(ValueError, match="y_test: got classes"):
        split_stream(xtr, ytr, xte, yte + 1, n_experiences=2)


# ------------------------------------------------------------------ blurry

def test_blurry_overlap_fractions_and_sources():
    xtr, ytr, xte, yte = make_data(n_train=600)
    base = split_stream(xtr, ytr, xte, yte, n_experiences=3)
    stream = blurry(base, overlap=0.215, seed=1)  # 43 of 200 mixed in; the previous one gives 21
    expected_sources = [{0: 157, 1: 43}, {0: 21, 1: 157, 2: 22}, {1: 43, 2: 157}]
    for i, exp in enumerate(stream):
        source = exp.info["source_experience"]
        assert dict(zip(*np.unique(source, return_counts=True))) == expected_sources[i]
        ids = sample_ids(exp.train[0])
        assert len(set(ids)) == 200  # no sample twice
        for j in expected_sources[i]:  # a sample credited to j is one of j's own training samples
            assert set(ids[source == j]) <= set(sample_ids(base[j].train[0]))
        for j in expected_sources[i]:
            # every sample credited to experience j is one of j's own (class, label) pairs
            assert set(ytr[ids[source == j]]) <= set(base[j].classes)
        np.testing.assert_array_equal(exp.train[1], ytr[ids])
        np.testing.assert_array_equal(exp.eval[0], base[i].eval[0])
    assert stream[1].classes == tuple(range(6))
    again = blurry(base, overlap=0.215, seed=1)
    np.testing.assert_array_equal(again[1].train[0], stream[1].train[0])


def test_blurry_validation():
    xtr, ytr, xte, yte = make_data()
    base = split_stream(xtr, ytr, xte, yte, n_experiences=3)
    for overlap in (1.0, -0.1):
        with pytest.raises(ValueError, match="overlap"):
            blurry(base, overlap, seed=0)
    with pytest.raises(ValueError, match="scenario 'task'"):
        blurry(split_stream(xtr, ytr, xte, yte, n_experiences=3, scenario="task"), 0.1, seed=0)
    with pytest.raises(TypeError, match="stream: got list"):
        blurry(list(base), 0.1, seed=0)


# ------------------------------------------------------------------ power-law environment

def test_power_law_steps_structure_and_budget():
    steps = power_law_steps(40, exponent=1.0, budget=3, seed=0)
    assert [s[0] for s in steps] == list(range(40))
    for t, step in enumerate(steps):
        rehearsed = step[1:]
        assert len(rehearsed) <= 3 and len(set(rehearsed)) == len(rehearsed)
        assert all(0 <= j < t for j in rehearsed)
    assert max(len(s) for s in steps) == 4
    np.testing.assert_array_equal(power_law_schedule(40, 1.0, 3, seed=0),
                                  [task for step in steps for task in step])
    assert power_law_schedule(5, 1.0, 0, seed=0).tolist() == [0, 1, 2, 3, 4]
    assert power_law_steps(40, 1.0, 3, seed=0) == steps


def rehearsal_rate_by_age(steps, n_tasks):
    """Fraction of (step, task) opportunities at each age Δ that were rehearsed."""
    last_seen = np.zeros(n_tasks, int)
    offered, taken = np.zeros(n_tasks + 1), np.zeros(n_tasks + 1)
    for t, step in enumerate(steps):
        ages = t - last_seen[:t]
        np.add.at(offered, ages, 1)
        np.add.at(taken, ages[list(step[1:])], 1)
        last_seen[list(step)] = t
    return taken, offered


def test_power_law_recent_tasks_rehearsed_more_often():
    steps = power_law_steps(300, exponent=1.5, budget=2, seed=5)
    taken, offered = rehearsal_rate_by_age(steps, 300)
    bands = [(1, 2), (2, 4), (4, 8), (8, 16), (16, 301)]
    rates = [taken[a:b].sum() / offered[a:b].sum() for a, b in bands]
    assert all(r1 > r2 for r1, r2 in zip(rates, rates[1:])), rates
    # uniform rehearsal (exponent 0) rehearses old tasks far more than the power law does
    uniform_ages = [sum(t - j for j in s[1:]) for t, s in enumerate(power_law_steps(300, 0.0, 2, seed=5))]
    power_ages = [sum(t - j for j in s[1:]) for t, s in enumerate(steps)]
    assert np.sum(power_ages) < 0.5 * np.sum(uniform_ages)


@pytest.mark.parametrize("exponent", [0.0, 2.0])
def test_power_law_rehearsal_probability_matches_formula(exponent):
    # 4 tasks, budget 1. Step 1 must rehearse task 0; at step 2 one of tasks {0, 1} is rehearsed;
    # at step 3 the ages are 1, 1 and 2 for the other one, so it is picked with
    # probability 2^-a / (2 + 2^-a) (1/3 when a = 0, 1/9 when a = 2).
    n_seeds, hits = 3000, 0
    for seed in range(n_seeds):
        steps = power_law_steps(4, exponent, 1, seed)
        assert steps[1] == (1, 0)
        other = 1 - steps[2][1]
        hits += steps[3][1] == other
    p = 2.0 ** -exponent / (2 + 2.0 ** -exponent)
    assert abs(hits - n_seeds * p) < 4 * np.sqrt(n_seeds * p * (1 - p))


def test_power_law_stream_and_validation():
    xtr, ytr, xte, yte = make_data()
    base = permuted_stream(xtr, ytr, xte, yte, 5, seed=0)
    stream = power_law_stream(base, exponent=1.0, budget=2, seed=3)
    schedule = power_law_schedule(5, 1.0, 2, seed=3)
    assert stream.task_ids == tuple(schedule)
    for exp, task in zip(stream, schedule):
        assert exp.task_id == task
        np.testing.assert_array_equal(exp.info["permutation"], base[task].info["permutation"])
    flags = [e.info["rehearsal"] for e in stream]
    assert flags.count(False) == 5 and sum(flags) == len(schedule) - 5
    # step and rehearsal flag of each position, from the steps themselves: the first entry of a
    # step is the new task, the others are rehearsals
    steps = power_law_steps(5, 1.0, 2, seed=3)
    want = [(t, k > 0) for t, step in enumerate(steps) for k in range(len(step))]
    assert [(e.info["step"], e.info["rehearsal"]) for e in stream] == want
    for exp in stream:  # a rehearsed experience is its task's base experience
        base_exp = base[exp.task_id]
        np.testing.assert_array_equal(exp.train[0], base_exp.train[0])
        np.testing.assert_array_equal(exp.eval[0], base_exp.eval[0])
    with pytest.raises(ValueError, match="exponent"):
        power_law_schedule(5, -1.0, 2, seed=0)
    with pytest.raises(ValueError, match="budget: got -1"):
        power_law_schedule(5, 1.0, -1, seed=0)
    with pytest.raises(ValueError, match="n_tasks: got 0"):
        power_law_schedule(0, 1.0, 1, seed=0)


# ------------------------------------------------------------------ SCoLe

def inclusion_probabilities(p, k):
    """P(class i is among k = 2 classes drawn without replacement with weights p)."""
    assert k == 2
    return np.array([p[i] + sum(p[j] * p[i] / (1 - p[j]) for j in range(len(p)) if j != i)
                     for i in range(len(p))])


@pytest.mark.parametrize("distribution", ["uniform", "zipf"])
def test_scole_class_distribution_and_reoccurrence(distribution):
    xtr, ytr, xte, yte = make_data(n_train=200, n_test=50, n_classes=10)
    n_exp = 400
    stream = scole_stream(xtr, ytr, xte, yte, n_exp, 2, class_distribution=distribution,
                          exponent=1.5 if distribution == "zipf" else None, seed=7)
    probs = np.array([stream.info["class_probabilities"][c] for c in range(10)])
    if distribution == "uniform":
        np.testing.assert_allclose(probs, 0.1)
    else:
        np.testing.assert_allclose(np.sort(probs)[::-1] / probs.max(), np.arange(1, 11) ** -1.5)
    counts = np.zeros(10)
    for i in range(n_exp):
        exp = stream[i]
        assert len(exp.classes) == 2 and exp.task_id == i
        assert set(exp.train[1]) == set(exp.classes) and set(exp.eval[1]) == set(exp.classes)
        assert len(exp.train[1]) == 40  # all 20 samples of each of its two classes
        ids = sample_ids(exp.train[0])
        assert sorted(ids) == sorted(np.flatnonzero(np.isin(ytr, exp.classes)))
        np.testing.assert_array_equal(exp.train[1], ytr[ids])
        counts[list(exp.classes)] += 1
    assert counts.min() >= 2  # classes re-occur
    expected = n_exp * inclusion_probabilities(probs, 2)
    sd = np.sqrt(expected * (1 - expected / n_exp))
    assert np.all(np.abs(counts - expected) < 4 * sd), (counts, expected)


def test_scole_subsampling_determinism_and_validation():
    xtr, ytr, xte, yte = make_data(n_train=200, n_test=50, n_classes=10)
    a = scole_stream(xtr, ytr, xte, yte, 20, 3, samples_per_class=5, seed=2)
    b = scole_stream(xtr, ytr, xte, yte, 20, 3, samples_per_class=5, seed=2)
    assert [e.classes for e in a] == [e.classes for e in b]
    np.testing.assert_array_equal(a[4].train[0], b[4].train[0])
    assert np.all(np.bincount(a[4].train[1], minlength=10)[list(a[4].classes)] == 5)
    for exp in a:
        ids = sample_ids(exp.train[0])
        assert len(set(ids)) == len(ids) == 15  # 5 distinct samples of each of its 3 classes
        np.testing.assert_array_equal(exp.train[1], ytr[ids])  # every row keeps its own label
        assert set(exp.train[1]) == set(exp.classes)
        # evaluation: every test sample of its classes, none other
        test_ids = sample_ids(exp.eval[0]) - 10**6
        assert sorted(test_ids) == sorted(np.flatnonzero(np.isin(yte, exp.classes)))
        np.testing.assert_array_equal(exp.eval[1], yte[test_ids])
    with pytest.raises(ValueError, match="classes_per_experience: got 11"):
        scole_stream(xtr, ytr, xte, yte, 20, 11, seed=0)
    with pytest.raises(ValueError, match="class_distribution"):
        scole_stream(xtr, ytr, xte, yte, 20, 2, class_distribution="normal", seed=0)
    with pytest.raises(ValueError, match="samples_per_class: got 21"):
        scole_stream(xtr, ytr, xte, yte, 20, 2, samples_per_class=21, seed=0)


# ------------------------------------------------------------------ curriculum and basics

class ParityTask:
    """Duck-typed stand-in for an N-parity task: label = sum of the last n bits mod 2."""

    def __init__(self, n, length=8):
        self.n, self.length = n, length

    def sample(self, rng, batch_size):
        x = rng.integers(0, 2, size=(batch_size, self.length, 1))
        return x.astype(np.float32), x[:, -self.n:, 0].sum(axis=1) % 2


def test_curriculum_stream():
    stream = curriculum_stream(ParityTask, [2, 3, 4], seed=0, eval_size=64)
    assert len(stream) == 3 and stream.scenario == "domain" and stream.n_outputs == 2
    for i, (exp, n) in enumerate(zip(stream, [2, 3, 4])):
        assert exp.is_sampled and exp.n_train is None and exp.info["n"] == n and exp.head == 0
        x, y = exp.eval
        assert x.shape == (64, 8, 1)
        np.testing.assert_array_equal(y, x[:, -n:, 0].sum(axis=1) % 2)
        assert exp.classes == (0, 1)
        xb, yb = exp.sample(np.random.default_rng(1), 5)
        np.testing.assert_array_equal(yb, xb[:, -n:, 0].sum(axis=1) % 2)
        # the experience samples from task_factory(n) itself
        xr, yr = ParityTask(n).sample(np.random.default_rng(1), 5)
        np.testing.assert_array_equal(xb, xr)
        np.testing.assert_array_equal(yb, yr)
    assert not np.array_equal(stream[0].eval[0], stream[1].eval[0])  # one evaluation set per experience
    again = curriculum_stream(ParityTask, [2, 3, 4], seed=0, eval_size=64)
    np.testing.assert_array_equal(again[2].eval[0], stream[2].eval[0])
    assert [e.head for e in curriculum_stream(ParityTask, [2, 3], seed=0, multi_head=True)] == [0, 1]
    with pytest.raises(TypeError, match="expected an object with sample"):
        curriculum_stream(lambda n: object(), [2], seed=0)
    with pytest.raises(ValueError, match="ns: got"):
        curriculum_stream(ParityTask, [], seed=0)
    with pytest.raises(TypeError, match="task_factory"):
        curriculum_stream(None, [2], seed=0)


def test_stream_heads_are_known_without_building():
    xtr, ytr, xte, yte = make_data()
    task = split_stream(xtr, ytr, xte, yte, n_experiences=3, scenario="task")
    assert task.heads == (0, 1, 2) and [e.head for e in task] == [0, 1, 2]
    assert split_stream(xtr, ytr, xte, yte, n_experiences=3).heads == (0, 0, 0)
    multi = permuted_stream(xtr, ytr, xte, yte, n_experiences=3, seed=0, multi_head=True)
    env = power_law_stream(multi, exponent=1.0, budget=1, seed=0)
    assert env.heads == tuple(env.task_ids) and [e.head for e in env] == list(env.task_ids)
    with pytest.raises(ValueError, match=r"heads\[1\]: got 2"):
        Stream([0, 1], lambda i: None, scenario="task", n_outputs=2, n_heads=2, heads=[0, 2])
    with pytest.raises(ValueError, match="heads: got 1 entries"):
        Stream([0, 1], lambda i: None, scenario="task", n_outputs=2, n_heads=2, heads=[0])


def test_curriculum_stream_pads_to_a_fixed_length():
    import seqcore.tasks as tasks
    stream = curriculum_stream(lambda n: tasks.make("nparity", n=n, n_max=4), [2, 4], seed=0, eval_size=32,
                               length=20)
    for exp, n in zip(stream, (2, 4)):
        for x, y in (exp.eval, exp.sample(np.random.default_rng(2), 16)):
            assert x.shape[1:] == (20, 1)
            np.testing.assert_array_equal(y, x[:, -n:, 0].sum(axis=1) % 2)
    # end alignment recomputed by hand from the task's own batch, drawn with the same generator
    raw = tasks.make("nparity", n=4, n_max=4).sample(np.random.default_rng(2), 16)
    x, y = stream[1].sample(np.random.default_rng(2), 16)
    last = tasks.last_step_index(raw.mask)
    for b in range(16):
        L = last[b] + 1
        np.testing.assert_array_equal(x[b, 20 - L:], raw.x[b, :L])
        assert np.all(x[b, :20 - L] == 0)
    np.testing.assert_array_equal(y, raw.y)
    with pytest.raises(ValueError, match="length: got 5, expected at least the longest sequence"):
        curriculum_stream(lambda n: tasks.make("nparity", n=n, n_max=4), [2], seed=0, length=5)
    with pytest.raises(ValueError, match="length: got 8, expected None"):
        curriculum_stream(ParityTask, [2], seed=0, length=8)


def test_experience_sampling_and_stream_indexing():
    xtr, ytr, xte, yte = make_data()
    stream = split_stream(xtr, ytr, xte, yte, n_experiences=3)
    exp = stream[-1]
    assert exp.task_id == 2 and len(stream[0:2]) == 2
    assert [e.task_id for e in stream[0:2]] == [0, 1] and [e.classes for e in stream[1:]] == [(2, 3), (4, 5)]
    assert [e.task_id for e in stream[::-1]] == [2, 1, 0]
    x, y = exp.sample(np.random.default_rng(0), 20)
    ids = sample_ids(x)
    assert len(set(ids)) == 20 and set(ids) == set(sample_ids(exp.train[0]))
    np.testing.assert_array_equal(y, ytr[ids])
    with pytest.raises(ValueError, match="batch_size: got 21"):
        exp.sample(np.random.default_rng(0), 21)
    with pytest.raises(IndexError):
        stream[3]
    with pytest.raises(TypeError, match="train: got"):
        Experience(0, [xtr, ytr], (xte, yte))
    with pytest.raises(ValueError, match="eval: got x"):
        Experience(0, (xtr, ytr), (xte, yte[:-1]))
    with pytest.raises(ValueError, match="scenario"):
        Stream([0], lambda i: exp, scenario="online", n_outputs=2)


def test_curriculum_stream_of_nparity_tasks_aligns_sequences_to_the_last_step():
    import seqcore.tasks as tasks
    from seqcore.tasks.streams import curriculum_stream
    stream = curriculum_stream(lambda n: tasks.make("nparity", n=n), [2, 3], seed=0, eval_size=64)
    for exp, n in zip(stream, (2, 3)):
        x, y = exp.eval
        bits = x[..., 0]
        # the label is the parity of the final n steps, recomputed here
        np.testing.assert_array_equal(y, bits[:, -n:].sum(axis=1) % 2)
        xb, yb = exp.sample(np.random.default_rng(1), 32)
        np.testing.assert_array_equal(yb, xb[:, -n:, 0].sum(axis=1) % 2)


# ------------------------------------------------------------------ bad arguments (round 2)

class _Sampler:
    def __init__(self, labels):
        self.labels = labels

    def sample(self, rng, batch_size):
        return np.zeros((batch_size, 3)), np.full(batch_size, self.labels)


def test_stream_flags_refuse_truthy_strings():
    xtr, ytr, xte, yte = make_data()
    with pytest.raises(TypeError, match="first_identity: got 'no'"):
        permuted_stream(xtr, ytr, xte, yte, 2, seed=0, first_identity="no")
    with pytest.raises(TypeError, match="multi_head: got 'no'"):
        permuted_stream(xtr, ytr, xte, yte, 2, seed=0, multi_head="no")
    with pytest.raises(TypeError, match="multi_head: got 'no'"):
        curriculum_stream(lambda n: _Sampler(0), [2], seed=0, multi_head="no")


def test_streams_refuse_non_numeric_or_non_finite_inputs():
    xtr, ytr, xte, yte = make_data()
    with pytest.raises(TypeError, match=r"\(x_train, y_train\): got inputs of dtype object"):
        permuted_stream(np.empty((60, 2), object), ytr, np.empty((30, 2), object), yte, 2, seed=0)
    bad = xtr.copy()
    bad[3, 1, 1] = np.nan
    with pytest.raises(ValueError, match="x_train: got NaN or inf"):
        split_stream(bad, ytr, xte, yte, n_experiences=2)


def test_split_stream_class_order_of_floats_is_named():
    xtr, ytr, xte, yte = make_data()
    with pytest.raises(ValueError, match="class_order: got"):  # was an IndexError from the label lookup
        split_stream(xtr, ytr, xte, yte, n_experiences=2, class_order=[0.0, 1, 2, 3, 4, 5])


def test_real_parameters_refuse_bools_and_accept_numpy_ints():
    xtr, ytr, xte, yte = make_data()
    s = split_stream(xtr, ytr, xte, yte, n_experiences=3)
    assert blurry(s, np.int64(0), seed=0)[0].n_train == s[0].n_train  # was refused as not a float
    # overlap 0: every experience keeps exactly its own samples (shuffled), all credited to itself
    for i, exp in enumerate(blurry(s, np.int64(0), seed=0)):
        ids = sample_ids(exp.train[0])
        assert sorted(ids) == sorted(sample_ids(s[i].train[0]))
        np.testing.assert_array_equal(exp.train[1], ytr[ids])
        assert np.all(exp.info["source_experience"] == i) and exp.classes == s[i].classes
    with pytest.raises(TypeError, match="overlap: got True \\(bool\\)"):
        blurry(s, True, seed=0)
    with pytest.raises(TypeError, match="exponent: got True \\(bool\\)"):
        power_law_steps(3, True, 2, 0)
    with pytest.raises(TypeError, match="exponent: got True \\(bool\\)"):
        scole_stream(xtr, ytr, xte, yte, 3, 2, class_distribution="zipf", exponent=True)


def test_scole_stream_names_an_exponent_that_leaves_too_few_classes():
    xtr, ytr, xte, yte = make_data()
    with pytest.raises(ValueError, match="exponent: got 1000000.0, which leaves 1 of the 6 classes"):
        scole_stream(xtr, ytr, xte, yte, 3, 2, class_distribution="zipf", exponent=1e6)


def test_scole_stream_refuses_test_classes_never_trained():
    xtr, ytr, xte, yte = make_data()
    with pytest.raises(ValueError, match="y_test: got classes"):
        scole_stream(xtr, ytr, xte, yte + 10, 3, 2)


def test_curriculum_stream_refuses_negative_labels():
    with pytest.raises(ValueError, match=r"task_factory\(2\)\.sample: got a negative label"):
        curriculum_stream(lambda n: _Sampler(-1), [2], seed=0)


def test_experience_and_stream_fields_are_checked():
    x, y = np.zeros((4, 3)), np.arange(4)
    with pytest.raises(TypeError, match=r"classes\[0\]: got float 1.5"):
        Experience(0, (x, y), (x, y), classes=(1.5,))
    with pytest.raises(TypeError, match="classes: got int"):
        Experience(0, (x, y), (x, y), classes=3)
    with pytest.raises(TypeError, match="info: got list"):
        Experience(0, (x, y), (x, y), info=[1])
    with pytest.raises(TypeError, match=r"task_ids\[0\]: got float"):
        Stream([0.5], lambda i: None, scenario="class", n_outputs=2)
    with pytest.raises(ValueError, match=r"task_ids\[0\]: got -1"):
        Stream([-1], lambda i: None, scenario="class", n_outputs=2)
    with pytest.raises(ValueError, match="n_outputs: got 0"):
        Stream([0], lambda i: None, scenario="class", n_outputs=0)
    with pytest.raises(TypeError, match="build: got int"):
        Stream([0], 5, scenario="class", n_outputs=2)
    with pytest.raises(TypeError, match="info: got list"):
        Stream([0], lambda i: None, scenario="class", n_outputs=2, info=[1])


def test_permuted_stream_refuses_more_permutations_than_memory_holds():
    from seqcore.tasks.streams import permuted_stream
    x = np.zeros((4, 3, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"n_experiences: got 1000000000000, whose permutations would take .* GiB"):
        permuted_stream(x, y, x, y, n_experiences=10**12, seed=0)


def test_blurry_classes_are_those_the_training_data_has():
    x, xt = np.zeros((600, 4)), np.zeros((100, 4))
    y, yt = np.arange(600) % 10, np.arange(100) % 10
    # before: (2, 3, 4, 5): experience 2 gave 1 sample (class 5 here) and added both its classes
    for scenario in ("class", "domain"):
        base = split_stream(x, y, xt, yt, n_experiences=5, scenario=scenario)
        stream = blurry(base, 0.01, seed=0)
        assert stream[1].classes == (2, 3, 5)
        for i, exp in enumerate(stream):
            source = exp.info["source_experience"]
            present = set()
            for j in np.unique(source):  # labels back to original ids through the source's label map
                original = {label: c for c, label in base[j].info["label_map"].items()}
                present |= {original[label] for label in exp.train[1][source == j].tolist()}
            assert exp.classes == tuple(sorted(present))
    permuted = blurry(permuted_stream(x[:40], y[:40], xt, yt, n_experiences=2, seed=0), 0.5, seed=0)
    assert permuted[0].classes == tuple(np.unique(permuted[0].train[1]))  # labels kept: the labels drawn


@pytest.mark.parametrize("call,message", [
    (lambda d: scole_stream(*d, n_experiences=10**12, classes_per_experience=2),
     r"^n_experiences: got 1000000000000, whose drawn classes .* would take .* GiB"),
    (lambda d: power_law_steps(3, 1.0, 10**12, 0), r"^budget: got 1000000000000, whose draws of one step"),
    (lambda d: power_law_steps(10**12, 1.0, 1, 0), r"^n_tasks: got 1000000000000, whose steps would take"),
    (lambda d: curriculum_stream(ParityTask, [2, 3], seed=0, eval_size=10**12),
     r"^eval_size: got 1000000000000, whose evaluation sets .* would take"),
    (lambda d: split_stream(d[0], d[1] + 10**15, d[2], d[3] + 10**15, n_experiences=2),
     r"^y_train: got a label 1000000000000005, whose per-class tables \(1000000000000006 class ids\)"),
    (lambda d: scole_stream(d[0], d[1] + 10**15, d[2], d[3] + 10**15, 2, 2, samples_per_class=1),
     r"^y_train: got a label 1000000000000005"),
], ids=["scole-n_experiences", "power_law-budget", "power_law-n_tasks", "curriculum-eval_size", "split-labels",
        "scole-labels"])
def test_stream_sizes_no_machine_holds_are_refused_when_built(call, message):
    # before: hours of building (scole), or a MemoryError that names no argument
    with pytest.raises(ValueError, match=message):
        call(make_data())


def test_power_law_rehearsals_keep_the_order_first_drawn():
    rng = np.random.default_rng(0)  # the draws of power_law_steps(5, 1.0, 50, 0), replayed
    last_seen, expected = np.zeros(5, dtype=np.int64), []
    for t in range(5):
        rehearsed = []
        if t:
            weights = (t - last_seen[:t]).astype(np.float64) ** -1.0
            rehearsed = list(dict.fromkeys(rng.choice(t, size=50, p=weights / weights.sum()).tolist()))
        last_seen[[t] + rehearsed] = t
        expected.append((t, *rehearsed))
    assert power_law_steps(5, 1.0, 50, 0) == expected


def test_curriculum_stream_refuses_a_length_some_draw_would_exceed():
    import seqcore.tasks as tasks
    # before: accepted or refused depending on seed and eval_size (the longest sequence drawn so far)
    for seed in range(8):
        with pytest.raises(ValueError, match=r"^length: got 16, expected at least the longest sequence \(17 steps"):
            curriculum_stream(lambda n: tasks.make("nparity", n=n), [4], seed=seed, eval_size=3, length=16)
    stream = curriculum_stream(lambda n: tasks.make("nparity", n=n), [4], seed=8, eval_size=3, length=17)
    assert stream[0].sample(np.random.default_rng(0), 256)[0].shape == (256, 17, 1)


def test_scole_exponent_only_with_zipf():
    xtr, ytr, xte, yte = make_data(n_train=200, n_test=50, n_classes=10)
    with pytest.raises(ValueError, match=r"^exponent: got 5.0, expected None with class_distribution='uniform'"):
        scole_stream(xtr, ytr, xte, yte, 5, 3, class_distribution="uniform", exponent=5.0)
    default = scole_stream(xtr, ytr, xte, yte, 5, 3, class_distribution="zipf", seed=1)
    one = scole_stream(xtr, ytr, xte, yte, 5, 3, class_distribution="zipf", exponent=1.0, seed=1)
    assert default.info == one.info and [e.classes for e in default] == [e.classes for e in one]


def test_cli_scole_refuses_an_exponent_with_the_uniform_distribution(tmp_path):
    import click
    from click.testing import CliRunner
    from seqcore_cli.continual import register

    @click.group()
    def group():
        pass

    register(group)
    result = CliRunner().invoke(group, ["continual", "--stream", "scole", "--stream-exponent", "2",
                                        "--dataset", "synthetic", "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and not (tmp_path / "run").exists()
    assert result.output.strip().splitlines()[-1] == (
        "Error: --stream-exponent: not used by this run; it is read only with --stream power-law, "
        "or scole with --class-distribution zipf")


def test_curriculum_stream_takes_the_number_of_outputs_from_the_task_not_its_few_labels():
    """Every evaluation label of this seed is 0: the 2-class N-parity head stayed 1 output wide,
    and training then failed with 'labels: got values in [0, 1], expected [0, 0]'."""
    from seqcore import tasks
    s = curriculum_stream(lambda n: tasks.make("nparity", n=n), [2, 3], seed=4, eval_size=1)
    assert [e.classes for e in s] == [(0,), (0,)]
    assert s.n_outputs == 2 == tasks.make("nparity", n=2).heads[0].output_size
    # other samplers still count their labels
    rng_task = type("Draws", (), {"sample": lambda self, rng, b: (rng.normal(size=(b, 3)), np.full(b, 4))})()
    assert curriculum_stream(lambda n: rng_task, [1], seed=0, eval_size=2).n_outputs == 5


# ------------------------------------------------------------------ blurry: sizes checked up front (QA r8)

def test_blurry_refuses_an_overlap_that_leaves_an_experience_none_of_its_own():
    """m = round(overlap·N): on N = 50, 0.99 rounds to m = 50 (half to even), like overlap 1;
    0.98 leaves one own sample, and the halves round to the even integer."""
    y = np.arange(100) % 4
    x = np.zeros((100, 2), np.float32)
    base = split_stream(x, y, x, y, n_experiences=2)  # N = 50 per experience
    with pytest.raises(ValueError, match=re.escape(
            "overlap: got 0.99, which leaves experience 0 none of its 50 samples (m = round(overlap·50) = 50); "
            "expected overlap < 0.99 for an experience of 50 samples")):
        blurry(base, 0.99, seed=0)
    for e in blurry(base, 0.98, seed=0):  # m = 49: one own sample left
        assert (e.info["source_experience"] == e.task_id).sum() == 1
    # round half to even: N = 50, overlap 0.01 → 0.5 → m = 0; overlap 0.03 → 1.5 → m = 2
    assert [(e.info["source_experience"] != e.task_id).sum() for e in blurry(base, 0.01, seed=0)] == [0, 0]
    assert [(e.info["source_experience"] != e.task_id).sum() for e in blurry(base, 0.03, seed=0)] == [2, 2]


def test_blurry_refuses_a_blurred_stream():
    """A second blur used the first blur's label_map, which lists only the experience's own
    classes, and reported classes (0, 1, 2, 3) for samples of all six."""
    x = np.zeros((120, 2), np.float32)
    y = np.arange(120) % 6
    once = blurry(split_stream(x, y, x, y, n_experiences=3), 0.5, seed=0)
    with pytest.raises(ValueError, match=re.escape(
            "stream: got a blurred stream ('blurry-split-class': experience 0 already has "
            "info['source_experience']), expected one not yet blurred")):
        blurry(once, 0.5, seed=1)


def test_blurry_checks_the_neighbours_sizes_when_built():
    """Experience 1 needs 14 samples of experience 2 (m = 28, the next one gives 14), which has 10:
    refused by blurry() itself, naming both, not when experience 1 is first accessed."""
    y = np.repeat([0, 1, 2], [40, 40, 10])
    x = np.zeros((90, 2), np.float32)
    with pytest.raises(ValueError, match=re.escape(
            "overlap: got 0.7, which needs 14 samples of experience 2 for experience 1; experience 2 has 10")):
        blurry(split_stream(x, y, x, y, n_experiences=3), 0.7, seed=0)


def test_streams_refuse_inputs_without_features():
    y = np.arange(6) % 2
    for shape in ((6, 0), (6, 3, 0)):
        x = np.zeros(shape, np.float32)
        for make in (lambda: permuted_stream(x, y, x, y, 3, seed=0),
                     lambda: split_stream(x, y, x, y, n_experiences=2)):
            with pytest.raises(ValueError, match=re.escape(f"x_train: got shape {shape}, expected (N, ...) "
                                                           "with N >= 1 and at least one feature")):
                make()


# ------------------------------------------------------------------ QA r12

def test_power_law_stream_records_the_base_streams_task_ids():
    """QA r12: the positions of the base stream were recorded as task ids, while the built
    experiences kept the base's own ids ([7, 8, 9] gave task_ids (0, 1, 0, 2, 0) and [7, 8, 7, 9, 7])."""
    x, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    base = Stream([7, 8, 9], lambda i: Experience(7 + i, (x, y), (x, y), (0, 1)), scenario="domain", n_outputs=2)
    env = power_law_stream(base, 1.0, 1, seed=0)
    # the oracle: each step's tasks are base positions, whose ids are 7 + position
    expected = [7 + t for step in power_law_steps(3, 1.0, 1, 0) for t in step]
    assert env.task_ids == tuple(expected) and [e.task_id for e in env] == expected
    assert set(env.task_ids) == {7, 8, 9}
    nested = power_law_stream(env, 1.0, 1, seed=1)  # positions of env, whose ids repeat
    expected = [env.task_ids[t] for step in power_law_steps(len(env), 1.0, 1, 1) for t in step]
    assert nested.task_ids == tuple(expected) and [e.task_id for e in nested] == expected


def test_streams_do_not_hand_out_arrays_whose_edits_change_later_accesses():
    """QA r12: info["permutation"] of a permuted stream was the stored array, and a curriculum's
    experiences (and their fixed evaluation sets) were the same objects on every access."""
    xtr, ytr, xte, yte = make_data()
    s = permuted_stream(xtr, ytr, xte, yte, n_experiences=2, seed=0)
    perm = s[1].info["permutation"].copy()
    with pytest.raises(ValueError, match="read-only"):
        s[1].info["permutation"].sort()
    np.testing.assert_array_equal(s[1].info["permutation"], perm)
    np.testing.assert_array_equal(s[1].train[0].reshape(60, 12), xtr.reshape(60, 12)[:, perm])
    from seqcore import tasks
    c = curriculum_stream(lambda n: tasks.make("nparity", n=n), [2], seed=0, eval_size=4)
    x, y = (a.copy() for a in c[0].eval)
    assert x.any()
    for a in c[0].eval:
        with pytest.raises(ValueError, match="read-only"):
            a[:] = 0
    c[0].info["n"] = 99
    np.testing.assert_array_equal(c[0].eval[0], x)
    np.testing.assert_array_equal(c[0].eval[1], y)
    assert c[0].info == {"n": 2}
    # the read-only arrays still feed the power-law and blurry streams built on them
    assert power_law_stream(s, 1.0, 1, seed=0)[1].info["permutation"].tolist() == perm.tolist()


def test_a_ragged_input_is_refused_naming_the_argument():
    y = np.array([0, 1])
    with pytest.raises(ValueError, match=r"^\(x_train, y_train\): got x that NumPy cannot make into an array \("):
        permuted_stream([[1, 2], [3]], y, [[1, 2], [3, 4]], y, n_experiences=2, seed=0)
    with pytest.raises(ValueError, match=r"^\(x_test, y_test\): got y that NumPy cannot make into an array \("):
        split_stream([[1, 2], [3, 4]], y, [[1, 2], [3, 4]], [[0], [1, 1]], n_experiences=2)
    with pytest.raises(ValueError, match=r"^eval: got x that NumPy cannot make into an array \("):
        Experience(0, (np.zeros((2, 1)), y), ([[1.0], [2.0, 3.0]], y))
