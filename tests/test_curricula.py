"""Curricula driven by hand-written accuracies: transitions, heads, resume."""
from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest

from seqcore import tasks
from seqcore.tasks import last_step_index, make_curriculum
from seqcore.tasks.curricula import curriculum_names


def head_names(cur):
    return [h.name for h in cur.heads()]


def test_names():
    assert curriculum_names() == ("fixed", "single-head", "multi-head", "sliding", "anti", "cyclical")
    with pytest.raises(ValueError, match="fixed.*cyclical"):
        make_curriculum("linear", tasks.make("nparity"))


def test_fixed_never_moves_but_checks_accuracies():
    task = tasks.make("copy")
    cur = make_curriculum("fixed", task)
    assert cur.current_task() is task and cur.update(10, {"copy": 1.0}) is False
    assert cur.current_task() is task and cur.level is None
    with pytest.raises(ValueError, match="accuracies"):
        cur.update(11, {"other": 1.0})
    with pytest.raises(ValueError, match="accuracies"):
        cur.update(11, [1.2])
    with pytest.raises(ValueError, match="accuracies"):
        cur.update(11, [0.5, 0.5])


def test_single_head_advances_at_threshold_and_stops_at_max_n():
    cur = make_curriculum("single-head", tasks.make("nparity", n=2), max_n=4)
    assert head_names(cur) == ["n2"] and cur.current_task().length_range == (4, 10)
    assert cur.update(100, {"n2": 0.979}) is False and cur.level == 2
    assert cur.update(200, {"n2": 0.98}) is True and cur.level == 3
    assert head_names(cur) == ["n3"] and cur.current_task().length_range == (5, 14)
    assert cur.update(300, [0.99]) is True and head_names(cur) == ["n4"]
    assert cur.update(400, [1.0]) is False and cur.finished and cur.level == 4
    assert cur.transitions == [(200, 3), (300, 4)]
    with pytest.raises(ValueError, match=r"step: got 299, expected >= the step of the last transition=300"):
        cur.update(299, [1.0])  # reports come in time order


def test_single_head_task_labels_follow_n():
    cur = make_curriculum("single-head", tasks.make("ndms", n=3))
    cur.update(0, [1.0])
    b = cur.sample(np.random.default_rng(0), 64)
    last = last_step_index(b.mask)
    for i in range(64):
        L = last[i] + 1
        assert 6 <= L < 18 and b.y[i] == int(b.x[i, L - 4, 0] == b.x[i, L - 1, 0])


def test_multi_head_adds_heads_when_all_pass():
    cur = make_curriculum("multi-head", tasks.make("nparity", n=2), threshold=0.9)
    assert cur.update(1, {"n2": 0.95}) is True
    assert head_names(cur) == ["n2", "n3"]
    assert cur.update(2, {"n2": 0.85, "n3": 0.99}) is False  # an old head is below threshold
    assert cur.update(3, {"n2": 0.9, "n3": 0.9}) is True
    assert head_names(cur) == ["n2", "n3", "n4"] and cur.level == 4
    b = cur.sample(np.random.default_rng(1), 50)
    assert b.y.shape == (50, 3)
    last = last_step_index(b.mask)
    for i in range(50):
        L = last[i] + 1
        assert 6 <= L < 18
        bits = b.x[i, :L, 0]
        assert list(b.y[i]) == [int(bits[L - n:].sum()) % 2 for n in (2, 3, 4)]


def test_multi_head_newest_rule():
    cur = make_curriculum("multi-head", tasks.make("nparity", n=2), advance_when="newest")
    cur.update(1, [0.99])
    assert cur.update(2, [0.5, 0.99]) is True and head_names(cur) == ["n2", "n3", "n4"]
    with pytest.raises(ValueError, match="advance_when"):
        make_curriculum("multi-head", tasks.make("nparity"), advance_when="any")


def test_sliding_drops_the_oldest_head():
    cur = make_curriculum("sliding", tasks.make("nparity", n=2), window=2)
    seen = [head_names(cur)]
    for step in range(3):
        assert cur.update(step, [1.0] * len(cur.heads())) is True
        seen.append(head_names(cur))
    assert seen == [["n2"], ["n2", "n3"], ["n3", "n4"], ["n4", "n5"]]


def test_anti_goes_down_from_the_hardest():
    cur = make_curriculum("anti", tasks.make("nparity", n=5))
    assert head_names(cur) == ["n5"]
    levels = [cur.level]
    while cur.update(len(levels), [1.0]):
        levels.append(cur.level)
    assert levels == [5, 4, 3, 2] and cur.finished
    assert make_curriculum("anti", tasks.make("nparity", n=5), min_n=1, start_n=3).level == 3


def test_n_curricula_need_a_task_with_n():
    with pytest.raises(ValueError, match="task"):
        make_curriculum("single-head", tasks.make("copy"))
    with pytest.raises(TypeError, match="task"):
        make_curriculum("multi-head", "nparity")
    with pytest.raises(ValueError, match="window"):
        make_curriculum("sliding", tasks.make("nparity"), window=0)
    with pytest.raises(ValueError, match="threshold"):
        make_curriculum("single-head", tasks.make("nparity"), threshold=1.5)
    with pytest.raises(ValueError, match="max_n"):
        make_curriculum("single-head", tasks.make("nparity", n=4), max_n=3)
    with pytest.raises(ValueError, match="window"):
        make_curriculum("multi-head", tasks.make("nparity"), window=3)  # sliding only


def test_explicit_n_max_is_kept_while_larger():
    cur = make_curriculum("single-head", tasks.make("nparity", n=2, n_max=3))
    assert cur.current_task().n_max == 3
    cur.update(0, [1.0])
    cur.update(1, [1.0])
    assert cur.level == 4 and cur.current_task().n_max == 4


@pytest.mark.parametrize("name", ["single-head", "multi-head", "sliding", "anti"])
def test_state_dict_resume(name):
    rng = np.random.default_rng(0)
    script = [(s, rng.random() * 0.1 + 0.9) for s in range(40)]

    def drive(cur, steps):
        return [cur.update(s, [a] * len(cur.heads())) for s, a in steps]

    whole = make_curriculum(name, tasks.make("nparity", n=6))
    first = make_curriculum(name, tasks.make("nparity", n=6))
    out = drive(whole, script)
    part = drive(first, script[:17])
    resumed = make_curriculum(name, tasks.make("nparity", n=6))
    resumed.load_state_dict(first.state_dict())
    part += drive(resumed, script[17:])
    assert part == out and any(out)
    assert resumed.state_dict()["n"] == whole.state_dict()["n"]
    assert np.array_equal(resumed.state_dict()["transitions"], whole.state_dict()["transitions"])
    with pytest.raises(ValueError, match="state"):
        make_curriculum("fixed", tasks.make("nparity")).load_state_dict(whole.state_dict())


# ---------------------------------------------------------------- cyclical

def start_next_epoch(cur, rng):
    cur.position = cur.epoch_size()  # as if the rest of the epoch had been drawn
    cur.sample(rng, 1)


def test_cyclical_fraction_cycles_between_start_and_one():
    cur = make_curriculum("cyclical", tasks.make("zn", length=4), num_examples=100,
                          start_fraction=0.25, alpha=0.5)
    rng = np.random.default_rng(0)
    sizes, fractions = [], []
    for _ in range(7):
        start_next_epoch(cur, rng)
        sizes.append(cur.epoch_size())
        fractions.append(cur.fraction)
    assert sizes == [25, 50, 100, 50, 25, 50, 100] and cur.epoch == 7
    assert fractions == [0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 1.0]
    # fractions that do not land on the ends are clamped there, and sizes are rounded up:
    # 0.3 → 0.3/0.6 = 0.5 → 0.8333 → 1.389 clamped to 0.9 → 0.54 → 0.324 → 0.194 clamped to 0.3 → 0.5
    cur = make_curriculum("cyclical", tasks.make("zn", length=4), num_examples=100,
                          start_fraction=0.3, alpha=0.6, end_fraction=0.9)
    sizes, fractions = [], []
    for _ in range(8):
        start_next_epoch(cur, rng)
        sizes.append(cur.epoch_size())
        fractions.append(cur.fraction)
    assert sizes == [30, 50, 84, 90, 54, 33, 30, 50]
    assert fractions == pytest.approx([0.3, 0.5, 0.5 / 0.6, 0.9, 0.54, 0.324, 0.3, 0.5], abs=1e-12)


@pytest.mark.parametrize("start,alpha", [(0.01, 0.1), (0.001, 0.1), (1 / 3, 1 / 3), (0.2, 0.2 ** 0.5)])
def test_cyclical_ends_run_once_each_despite_rounding(start, alpha):
    # start / alpha**k lands on 1 only up to rounding: the end fractions must still run one epoch each
    k = round(math.log(start) / math.log(alpha))
    cur = make_curriculum("cyclical", tasks.make("zn", length=4), num_examples=1000,
                          start_fraction=start, alpha=alpha)
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(4 * k + 1):
        start_next_epoch(cur, rng)
        fractions.append(cur.fraction)
    up = [start / alpha ** i for i in range(k + 1)]
    expected = up + up[-2::-1] + up[1:] + up[-2::-1]
    assert fractions == pytest.approx(expected, rel=1e-9)
    assert fractions.count(1.0) == 2 and fractions.count(start) == 3


def test_cyclical_refuses_a_training_set_larger_than_memory():
    with pytest.raises(ValueError, match="num_examples: got 10000000000000.*GiB"):
        make_curriculum("cyclical", tasks.make("nparity", n=4), num_examples=10 ** 13)


def test_single_head_refuses_min_n_which_only_anti_uses():
    with pytest.raises(ValueError, match="min_n"):
        make_curriculum("single-head", tasks.make("nparity", n=2), min_n=3)


def test_cyclical_epochs_have_no_repeats_and_batches_follow_the_order():
    task = tasks.make("nparity", n=3)
    cur = make_curriculum("cyclical", task, num_examples=40, start_fraction=0.5)
    rng = np.random.default_rng(2)
    b = cur.sample(rng, 8)
    order = cur.order.copy()
    assert len(set(order)) == 20 and np.array_equal(cur.last_indices, order[:8])
    pool = task.fixed_set(40)
    assert np.array_equal(b.y, pool.y[order[:8]])
    assert np.array_equal(b.x, pool.x[order[:8], :b.x.shape[1]])
    b2 = cur.sample(rng, 16)  # 12 left in this epoch, 4 from the next
    assert np.array_equal(cur.last_indices[:12], order[8:]) and cur.epoch == 2 and len(b2.y) == 16
    # the next epoch (fraction 1: all 40 examples, each once) starts the second part of the batch
    assert sorted(cur.order) == list(range(40)) and np.array_equal(cur.last_indices[12:], cur.order[:4])
    assert cur.position == 4
    assert np.array_equal(b2.y, pool.y[cur.last_indices])
    assert np.array_equal(b2.x, pool.x[cur.last_indices, :b2.x.shape[1]])
    assert np.array_equal(b2.mask, pool.mask[cur.last_indices, :b2.x.shape[1]])
    assert not pool.x[cur.last_indices, b2.x.shape[1]:].any()  # only padding was cut off


def test_cyclical_prefers_low_loss_examples():
    cur = make_curriculum("cyclical", tasks.make("zn", length=3), num_examples=100,
                          start_fraction=0.25, end_fraction=0.5)
    rng = np.random.default_rng(3)
    cur.sample(rng, 25)
    cur.last_indices = np.arange(100)
    cur.record_losses(np.where(np.arange(100) < 50, 0.01, 100.0))  # weights 100 : 0.01
    for _ in range(3):
        start_next_epoch(cur, rng)
        assert cur.epoch_size() in (25, 50) and (cur.order < 50).mean() > 0.95
    # losses below min_loss count as min_loss: zero and 1e-6 losses weigh the same (no division by 0)
    flat = make_curriculum("cyclical", tasks.make("zn", length=3), num_examples=100,
                           start_fraction=0.5, end_fraction=0.5, alpha=0.5, min_loss=1e-4)
    flat.sample(rng, 1)
    flat.last_indices = np.arange(100)
    flat.record_losses(np.where(np.arange(100) < 50, 0.0, 1e-6))
    shares = []
    for _ in range(40):
        start_next_epoch(flat, rng)
        shares.append((flat.order < 50).mean())
    assert abs(np.mean(shares) - 0.5) < 0.05  # 40 draws of 50: standard error of the mean 0.01
    with pytest.raises(ValueError, match="losses"):
        cur.record_losses(np.ones(3))
    with pytest.raises(ValueError, match="losses"):
        cur.record_losses(np.array([np.nan]))


def test_cyclical_draws_an_epoch_with_probability_proportional_to_one_over_loss():
    """README: an epoch's examples are "drawn without replacement with probability ∝ 1/loss (losses
    from record_losses, floored at min_loss; unseen examples count as 1) and shuffled". Oracle: the
    rule replayed on the same generator state with NumPy's weighted draw without replacement."""
    n, min_loss = 60, 1e-3
    cur = make_curriculum("cyclical", tasks.make("zn", length=3), num_examples=n, start_fraction=0.25,
                          alpha=0.5, min_loss=min_loss)
    rng = np.random.default_rng(4)
    cur.sample(rng, 1)
    seen = np.arange(0, n, 2)  # the odd examples stay unseen: loss 1
    cur.last_indices = seen
    cur.record_losses(np.concatenate([[0.0, 1e-5], np.random.default_rng(1).uniform(0.01, 5.0, len(seen) - 2)]))
    losses = np.ones(n)
    losses[seen] = cur.losses[seen]
    weights = 1.0 / np.maximum(losses, min_loss)
    for _ in range(4):  # epochs of 30, 60, 30 and 15 examples
        state = rng.bit_generator.state
        start_next_epoch(cur, rng)
        replay = np.random.default_rng(0)
        replay.bit_generator.state = state
        chosen = replay.choice(n, size=cur.epoch_size(), replace=False, p=weights / weights.sum())
        assert np.array_equal(cur.order, replay.permutation(chosen))
        assert rng.bit_generator.state == replay.bit_generator.state  # nothing else drew from the rng


def test_cyclical_single_draws_follow_one_over_loss_statistically():
    """With epochs of one example the inclusion probability is exactly w/Σw: losses 1, 2, 4 give
    weights 4 : 2 : 1, probabilities 4/7, 2/7, 1/7. 1/loss² (0.76 for the first), 3 : 2 : 1 by rank
    (0.5) and softmax(−loss) (0.71) are each more than 10σ away at 10000 draws."""
    cur = make_curriculum("cyclical", tasks.make("zn", length=3), num_examples=3, start_fraction=1 / 3,
                          end_fraction=1 / 3)
    rng = np.random.default_rng(11)
    cur.sample(rng, 1)
    cur.last_indices = np.arange(3)
    cur.record_losses(np.array([1.0, 2.0, 4.0]))
    draws, picks = 10000, []
    for _ in range(draws):
        cur.sample(rng, 1)
        picks.append(cur.last_indices[0])
    assert cur.epoch == draws + 1  # every draw was an epoch of its own
    p = np.array([4, 2, 1]) / 7
    counts = np.bincount(picks, minlength=3)
    sigma = np.sqrt(draws * p * (1 - p))
    assert np.all(np.abs(counts - draws * p) < 4 * sigma), (counts, draws * p, sigma)


def test_cyclical_resume_equals_uninterrupted():
    def run(cur, rng, steps):
        out = []
        for _ in range(steps):
            b = cur.sample(rng, 6)
            out.append(cur.last_indices.copy())
            cur.record_losses(b.y.astype(float).mean(axis=1) + 0.1)
        return out

    make = lambda: make_curriculum("cyclical", tasks.make("zn", length=5), num_examples=30)
    whole_rng = np.random.default_rng(9)
    whole = run(make(), whole_rng, 20)
    first, rng = make(), np.random.default_rng(9)
    part = run(first, rng, 8)
    state, rng_state = first.state_dict(), rng.bit_generator.state
    resumed, rng2 = make(), np.random.default_rng(0)
    resumed.load_state_dict(state)
    rng2.bit_generator.state = rng_state
    part += run(resumed, rng2, 12)
    assert len(part) == len(whole) == 20  # zip alone would hide a missing tail
    assert all(np.array_equal(a, b) for a, b in zip(part, whole))
    assert resumed.epoch > 2  # the 120 draws of 6 from epochs of at most 30 crossed several epochs


def test_cyclical_over_a_data_set(tmp_path):
    images = np.arange(10 * 2 * 3, dtype=np.uint8).reshape(10, 2, 3)
    labels = np.arange(10, dtype=np.uint8)
    for prefix, n in (("train", 10), ("t10k", 2)):
        for kind, arr in (("images", images[:n]), ("labels", labels[:n])):
            rank = 3 if kind == "images" else 1
            raw = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
            (tmp_path / f"{prefix}-{kind}-idx{rank}-ubyte.gz").write_bytes(gzip.compress(raw + arr.tobytes()))
    task = tasks.make("image", data_dir=tmp_path)
    cur = make_curriculum("cyclical", task, start_fraction=0.5)
    b = cur.sample(np.random.default_rng(0), 5)
    assert sorted(b.y) == sorted(cur.order) and len(set(b.y)) == 5  # label i is row i
    assert np.allclose(b.x, images[cur.order] / 255.0)
    with pytest.raises(ValueError, match="num_examples"):
        make_curriculum("cyclical", task, num_examples=11)


@pytest.mark.parametrize("kwargs,field", [
    (dict(start_fraction=0.0), "start_fraction"),
    (dict(start_fraction=0.5, end_fraction=0.25), "end_fraction"),
    (dict(alpha=1.0), "alpha"),
    (dict(alpha=0.0), "alpha"),
    (dict(num_examples=0), "num_examples"),
    (dict(speed=2), "speed"),
])
def test_cyclical_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_curriculum("cyclical", tasks.make("zn"), **kwargs)


def test_unknown_curriculum_argument_names_it_and_the_allowed_ones():
    import pytest
    import seqcore.tasks as tasks
    with pytest.raises(ValueError, match=r"got 'foo' for the 'sliding' curriculum, expected some of \['start_n', 'window'"):
        tasks.make_curriculum("sliding", tasks.make("nparity", n=2), foo=1)
    with pytest.raises(ValueError, match=r"got 'threshold' for the 'fixed' curriculum, expected none"):
        tasks.make_curriculum("fixed", tasks.make("nparity", n=2), threshold=0.5)


# ---------------------------------------------------------------- bad input (round 2)

def test_update_refuses_non_sequences_and_unknown_head_names():
    cur = make_curriculum("single-head", tasks.make("nparity", n=2))
    with pytest.raises(TypeError, match="accuracies: got NoneType"):
        cur.update(0, None)
    with pytest.raises(TypeError, match="accuracies: got int"):
        cur.update(0, 1)
    with pytest.raises(ValueError, match=r"accuracies: got keys \['n9'\] that name no current head"):
        cur.update(0, {"n2": 0.5, "n9": 1.0})  # was accepted, n9 ignored
    with pytest.raises(ValueError, match="curriculum: got"):
        make_curriculum(["fixed"], tasks.make("nparity"))  # was TypeError: unhashable type


def _corrupt(cur, **changes):
    state = cur.state_dict()
    state.update(changes)
    return state


@pytest.mark.parametrize("changes, error, match", [
    ({"n": 3.7}, TypeError, r"state\['n'\]: got 3.7"),            # was truncated to 3
    ({"n": "x"}, TypeError, r"state\['n'\]"),
    ({"n": 3}, ValueError, r"state\['n'\]: got 3, expected >= start_n=4"),
    ({"n": 9}, ValueError, r"state\['n'\]: got 9, expected <= max_n=6"),
    ({"finished": "no"}, TypeError, r"state\['finished'\]: got 'no'"),  # was read as True
    ({"transitions": np.zeros(3)}, TypeError, r"state\['transitions'\]: got dtype float64"),
    ({"transitions": np.zeros((1, 3), np.int64)}, ValueError, r"state\['transitions'\]: got shape \(1, 3\)"),
    ({"transitions": np.array([[20, 5], [10, 6]])}, ValueError, r"got steps \[20, 10\], expected them in time"),
])
def test_n_curriculum_load_state_dict_refuses_damaged_states(changes, error, match):
    cur = make_curriculum("multi-head", tasks.make("nparity", n=2), start_n=4, max_n=6)
    with pytest.raises(error, match=match):
        cur.load_state_dict(_corrupt(cur, **changes))
    assert cur.n == 4 and cur.finished is False  # nothing applied


def test_n_curriculum_load_state_dict_names_missing_entries_and_non_dicts():
    cur = make_curriculum("anti", tasks.make("nparity", n=(2, 3, 4, 5)))
    state = cur.state_dict()
    del state["n"]
    with pytest.raises(ValueError, match="state: missing 'n'"):  # was KeyError
        cur.load_state_dict(state)
    with pytest.raises(TypeError, match="state: got NoneType"):
        cur.load_state_dict(None)
    with pytest.raises(ValueError, match=r"state\['n'\]: got 9, expected <= start_n=5"):
        cur.load_state_dict(_corrupt(cur, n=9))


@pytest.mark.parametrize("changes, error, match", [
    ({"order": np.array([100, 200])}, ValueError, r"state\['order'\]: got values in \[100, 200\]"),
    ({"order": np.array([1, 1])}, ValueError, r"state\['order'\]: got repeated"),
    ({"order": np.array([1.5])}, TypeError, r"state\['order'\]: got dtype float64"),
    ({"last_indices": np.array([50])}, ValueError, r"state\['last_indices'\]"),  # was IndexError later
    ({"position": -1}, ValueError, r"state\['position'\]: got -1"),
    ({"fraction": float("nan")}, ValueError, r"state\['fraction'\]"),
    ({"fraction": 5.0}, ValueError, r"state\['fraction'\]: got 5.0"),
    ({"epoch": -1}, ValueError, r"state\['epoch'\]: got -1"),
    ({"increasing": "no"}, TypeError, r"state\['increasing'\]"),
    ({"losses": np.full(20, np.nan)}, ValueError, r"state\['losses'\]: got non-finite"),
])
def test_cyclical_load_state_dict_refuses_damaged_states(changes, error, match):
    cur = make_curriculum("cyclical", tasks.make("nparity", n=2), num_examples=20)
    cur.sample(np.random.default_rng(0), 4)
    with pytest.raises(error, match=match):
        cur.load_state_dict(_corrupt(cur, **changes))


def test_cyclical_record_losses_refuses_non_real_values():
    cur = make_curriculum("cyclical", tasks.make("nparity", n=2), num_examples=20)
    cur.sample(np.random.default_rng(0), 4)
    with pytest.raises(TypeError, match="losses: got dtype complex128"):  # the imaginary part was dropped
        cur.record_losses(np.ones(4) * 1j)
    with pytest.raises(TypeError, match="losses: got dtype"):
        cur.record_losses(["a"] * 4)


def test_anti_blames_the_field_that_was_given():
    # before: "min_n: got 2, expected <= start_n=1", though min_n was never given
    with pytest.raises(ValueError, match=r"^start_n: got 1 \(the task's largest N\), expected >= min_n=2 "
                                         r"\(the default; pass a smaller min_n"):
        make_curriculum("anti", tasks.make("nparity", n=1))
    with pytest.raises(ValueError, match=r"^start_n: got 1, expected >= min_n=2 \(the default"):
        make_curriculum("anti", tasks.make("nparity", n=3), start_n=1)
    with pytest.raises(ValueError, match=r"^min_n: got 4, expected <= start_n=3 \(the task's largest N\)$"):
        make_curriculum("anti", tasks.make("nparity", n=3), min_n=4)
    with pytest.raises(ValueError, match=r"^start_n: got 2, expected >= min_n=3$"):
        make_curriculum("anti", tasks.make("nparity", n=3), min_n=3, start_n=2)
    assert make_curriculum("anti", tasks.make("nparity", n=1), min_n=1).level == 1


@pytest.mark.parametrize("name", ["single-head", "multi-head", "sliding", "anti"])
def test_a_start_n_whose_task_cannot_be_built_is_blamed_as_start_n(name):
    """QA r12: anti's start_n=10**9 was accepted, and the first sample failed blaming the task's
    field ``n``, which the user never set."""
    huge = 10 ** 13  # one sequence of 4·10**13 steps: no machine holds it
    with pytest.raises(ValueError, match=rf"^start_n: got {huge}, whose task 'nparity' is refused \(n: got {huge}, "
                                         r"whose one sequence .* would take .* GiB"):
        make_curriculum(name, tasks.make("nparity", n=2), start_n=huge)
    # a start_n that can be built is the first task, as before
    assert make_curriculum(name, tasks.make("nparity", n=2), start_n=5).current_task().n == 5
