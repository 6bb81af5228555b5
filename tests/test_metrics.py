"""Continual-learning metrics against values computed by hand."""
import math

import numpy as np
import pytest

from seqcore.metrics import (EvalCurve, average_accuracy, bwt, forgetting, fwt, lca, min_acc,
                             summarize, wc_acc, windowed_forgetting, windowed_plasticity)

NAN = float("nan")

# R[i, j]: accuracy on j after training i. R[1, 0] > R[0, 0] makes the two forgetting
# conventions differ; R[0, 1] = 0.99 (before task 1 was trained) must not enter "max".
R3 = np.array([
    [0.90, 0.99, 0.20],
    [0.95, 0.80, 0.15],
    [0.60, 0.50, 0.95],
])


def test_average_accuracy_final_and_per_step():
    assert average_accuracy(R3) == pytest.approx((0.60 + 0.50 + 0.95) / 3)
    np.testing.assert_allclose(average_accuracy(R3, per_step=True),
                               [0.90, (0.95 + 0.80) / 2, (0.60 + 0.50 + 0.95) / 3])


def test_forgetting_both_conventions_and_bwt():
    # last: (0.90 - 0.60 + 0.80 - 0.50) / 2 ; max: (max(0.90, 0.95) - 0.60 + 0.80 - 0.50) / 2
    assert forgetting(R3) == pytest.approx(0.30)
    assert forgetting(R3, convention="last") == pytest.approx(0.30)
    assert forgetting(R3, convention="max") == pytest.approx(0.325)
    assert bwt(R3) == pytest.approx(-0.30)


def test_fwt_against_baseline():
    # ((R[0,1] - b1) + (R[1,2] - b2)) / 2 = ((0.99 - 0.5) + (0.15 - 0.1)) / 2
    assert fwt(R3, [0.1, 0.5, 0.1]) == pytest.approx(0.27)
    with pytest.raises(TypeError, match=r"^baseline: got None, expected a real \(3,\) array"):
        fwt(R3, None)  # it said "got NoneType of dtype object"


def test_upper_triangle_may_be_nan_but_fwt_needs_superdiagonal():
    R = R3.copy()
    R[0, 2] = NAN
    assert average_accuracy(R) == pytest.approx((0.60 + 0.50 + 0.95) / 3)
    assert fwt(R, [0.1, 0.5, 0.1]) == pytest.approx(0.27)  # R[0, 2] is not used
    with pytest.raises(ValueError, match=r"baseline: fwt needs a finite baseline\[j\].*got nan at j=1"):
        fwt(R, [0.1, NAN, 0.1])  # the baseline is at fault, not R
    R[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"R: fwt needs a finite R\[j-1, j\].*got inf at j=2"):
        fwt(R, [0.1, 0.5, 0.1])


def test_forgetting_convention_must_be_a_name():
    with pytest.raises(ValueError, match="convention"):
        forgetting(R3, np.array(["last", "max"]))  # not NumPy's "truth value ... is ambiguous"


def test_single_task():
    R = np.array([[0.7]])
    assert average_accuracy(R) == pytest.approx(0.7)
    assert math.isnan(forgetting(R)) and math.isnan(bwt(R)) and math.isnan(fwt(R, [0.1]))
    assert math.isnan(forgetting(R, "max"))
    np.testing.assert_allclose(average_accuracy(R, per_step=True), [0.7])
    # a curve over one experience: nothing is past, so min-ACC and WF are NaN and WC-ACC is the current accuracy
    one = EvalCurve(np.array([0, 5, 10]), np.array([0, 0, 0]), np.array([[0.2], [0.6], [0.5]]))
    assert math.isnan(min_acc(one)) and math.isnan(windowed_forgetting(one, 3))
    assert wc_acc(one) == pytest.approx(0.5)
    assert windowed_plasticity(one, 1) == pytest.approx(0.4) and lca(one, 2) == pytest.approx(0.4)


# ------------------------------------------------------------------ brute-force oracles on random inputs

def _random_matrix(rng, n, nan_above=True):
    R = rng.uniform(0.0, 1.0, (n, n))
    if nan_above:
        R[np.triu_indices(n, 1)] = np.where(rng.random(n * (n - 1) // 2) < 0.5, NAN, R[np.triu_indices(n, 1)])
    return R


@pytest.mark.parametrize("seed", range(5))
def test_matrix_metrics_equal_their_definitions_on_random_matrices(seed):
    """Each formula of the README, written as plain loops, against the library on random matrices."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    R = _random_matrix(rng, n)
    for j in range(1, n):  # fwt needs the super-diagonal
        R[j - 1, j] = rng.uniform()
    b = rng.uniform(0, 1, n)
    avg = sum(R[n - 1, j] for j in range(n)) / n
    per_step = [sum(R[i, j] for j in range(i + 1)) / (i + 1) for i in range(n)]
    last = sum(R[j, j] - R[n - 1, j] for j in range(n - 1)) / (n - 1)
    best = sum(max(R[i, j] for i in range(j, n - 1)) - R[n - 1, j] for j in range(n - 1)) / (n - 1)
    back = sum(R[n - 1, j] - R[j, j] for j in range(n - 1)) / (n - 1)
    fwd = sum(R[j - 1, j] - b[j] for j in range(1, n)) / (n - 1)
    assert average_accuracy(R) == pytest.approx(avg, abs=1e-12)
    np.testing.assert_allclose(average_accuracy(R, per_step=True), per_step, atol=1e-12)
    assert forgetting(R, "last") == pytest.approx(last, abs=1e-12)
    assert forgetting(R, "max") == pytest.approx(best, abs=1e-12)
    assert forgetting(R, "max") >= forgetting(R, "last") - 1e-12
    assert bwt(R) == pytest.approx(back, abs=1e-12)
    assert fwt(R, b) == pytest.approx(fwd, abs=1e-12)
    # the unit follows the input: percentages give percentages
    P = 100 * R
    assert average_accuracy(P) == pytest.approx(100 * avg, abs=1e-9)
    assert forgetting(P, "max") == pytest.approx(100 * best, abs=1e-9)
    assert fwt(P, 100 * b) == pytest.approx(100 * fwd, abs=1e-9)


def _random_curve(rng, n):
    """A curve with 0..4 evaluations per experience while it is trained (some experiences never
    evaluated while trained) and always at least one evaluation at the end of the stream."""
    its, exps = [], []
    it = 0
    for j in range(n):
        for _ in range(int(rng.integers(0, 5)) if j < n - 1 else int(rng.integers(1, 5))):
            it += int(rng.integers(0, 3))
            its.append(it)
            exps.append(j)
    acc = rng.uniform(0, 1, (len(its), n))
    acc[np.arange(n)[None, :] > np.array(exps)[:, None]] = NAN
    return EvalCurve(np.array(its), np.array(exps), acc)


def _oracle_curve_metrics(curve, window, beta):
    ex, acc = curve.experience, curve.accuracy
    E = len(ex)
    k = int(ex[-1]) + 1
    its = curve.iterations

    def after(j):  # strictly later iterations than j's last evaluation while trained, when there are any
        during = [e for e in range(E) if ex[e] == j]
        later = [e for e in range(E) if ex[e] > j and (not during or its[e] > its[during[-1]])]
        return later or [e for e in range(E) if ex[e] > j]
    minima = [min(acc[e, j] for e in after(j)) for j in range(k - 1)]
    min_acc_v = sum(minima) / (k - 1) if k > 1 else NAN
    wc = acc[-1, k - 1] if k == 1 else acc[-1, k - 1] / k + (1 - 1 / k) * min_acc_v
    wf = []
    for j in range(k - 1):
        during = [e for e in range(E) if ex[e] == j]
        start = during[-1] if during else min(e for e in range(E) if ex[e] > j)
        a = [acc[e, j] for e in range(start, E)]
        wf.append(max([0.0] + [a[m] - a[q] for m in range(len(a)) for q in range(m, min(m + window, len(a) - 1) + 1)]))
    wp = []
    for j in range(k):
        start = min(e for e in range(E) if ex[e] >= j)
        a = [acc[e, j] for e in range(start, E)]
        wp.append(max([0.0] + [a[q] - a[m] for m in range(len(a)) for q in range(m, min(m + window, len(a) - 1) + 1)]))
    phases = [[acc[e, j] for e in range(E) if ex[e] == j] for j in range(k)]
    lcas = [sum(p[:beta]) / len(p[:beta]) for p in phases if p]
    return dict(min_acc=min_acc_v, wc_acc=wc, wf=sum(wf) / len(wf) if wf else NAN, wp=sum(wp) / k,
                lca=sum(lcas) / len(lcas), minima=minima, wf_per=wf, wp_per=wp)


@pytest.mark.parametrize("seed", range(8))
def test_curve_metrics_equal_their_definitions_on_random_curves(seed):
    rng = np.random.default_rng(100 + seed)
    curve = _random_curve(rng, int(rng.integers(1, 5)))
    window, beta = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    want = _oracle_curve_metrics(curve, window, beta)
    k = curve.n_seen
    if k > 1:
        np.testing.assert_allclose(min_acc(curve, per_task=True), want["minima"], atol=1e-12)
        assert min_acc(curve) == pytest.approx(want["min_acc"], abs=1e-12)
        np.testing.assert_allclose(windowed_forgetting(curve, window, per_task=True), want["wf_per"], atol=1e-12)
        assert windowed_forgetting(curve, window) == pytest.approx(want["wf"], abs=1e-12)
    else:
        assert math.isnan(min_acc(curve)) and math.isnan(windowed_forgetting(curve, window))
    assert wc_acc(curve) == pytest.approx(want["wc_acc"], abs=1e-12)
    np.testing.assert_allclose(windowed_plasticity(curve, window, per_task=True), want["wp_per"], atol=1e-12)
    assert windowed_plasticity(curve, window) == pytest.approx(want["wp"], abs=1e-12)
    assert lca(curve, beta) == pytest.approx(want["lca"], abs=1e-12)
    # percentages in, percentages out
    scaled = EvalCurve(curve.iterations, curve.experience, 100 * curve.accuracy)
    assert wc_acc(scaled) == pytest.approx(100 * want["wc_acc"], abs=1e-9)
    assert windowed_plasticity(scaled, window) == pytest.approx(100 * want["wp"], abs=1e-9)


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros(3), np.zeros((0, 0)), np.zeros((2, 2, 2))])
def test_matrix_shape_validation(bad):
    with pytest.raises(ValueError, match="R: got shape"):
        average_accuracy(bad)


def test_matrix_value_and_argument_validation():
    R = R3.copy()
    R[2, 0] = NAN
    with pytest.raises(ValueError, match=r"R\[2, 0\]"):
        forgetting(R)
    with pytest.raises(ValueError, match="convention"):
        forgetting(R3, convention="min")
    with pytest.raises(ValueError, match=r"baseline: got shape \(2,\)"):
        fwt(R3, [0.1, 0.2])
    with pytest.raises(TypeError, match="R: got"):
        average_accuracy([["a", "b"], ["c", "d"]])


# ------------------------------------------------------------------ continual evaluation

# (iteration, experience being trained, accuracy on experiences 0, 1, 2)
ROWS = [
    (0, 0, [0.10, NAN, NAN]),
    (10, 0, [0.50, NAN, NAN]),
    (20, 0, [0.90, NAN, NAN]),
    (20, 1, [0.40, 0.20, NAN]),
    (30, 1, [0.60, 0.70, NAN]),
    (40, 1, [0.80, 0.90, NAN]),
    (40, 2, [0.70, 0.50, 0.10]),
    (50, 2, [0.30, 0.80, 0.60]),
    (60, 2, [0.75, 0.85, 0.90]),
]


@pytest.fixture
def curve():
    return EvalCurve(np.array([r[0] for r in ROWS]), np.array([r[1] for r in ROWS]),
                     np.array([r[2] for r in ROWS]))


def test_min_acc(curve):
    # task 0 after iteration 20 (its end): 0.6 0.8 0.7 0.3 0.75 -> 0.3; task 1 after iteration 40:
    # 0.8 0.85 -> 0.8 (its 0.5 at iteration 40 is task 2's evaluation before training, task 1's parameters)
    np.testing.assert_allclose(min_acc(curve, per_task=True), [0.3, 0.8])
    assert min_acc(curve) == pytest.approx(0.55)


def test_wc_acc(curve):
    assert wc_acc(curve) == pytest.approx(0.9 / 3 + (2 / 3) * 0.55)
    # after 6 evaluations only two experiences are seen: 0.5 * 0.9 + 0.5 * min(0.6, 0.8)
    assert wc_acc(curve.upto(6)) == pytest.approx(0.75)
    first = curve.upto(3)
    assert first.n_seen == 1 and math.isnan(min_acc(first)) and wc_acc(first) == pytest.approx(0.9)


def test_windowed_forgetting(curve):
    # task 0 from its end of training: 0.9 0.4 0.6 0.8 0.7 0.3 0.75; task 1: 0.9 0.5 0.8 0.85
    np.testing.assert_allclose(windowed_forgetting(curve, 1, per_task=True), [0.5, 0.4])
    assert windowed_forgetting(curve, 1) == pytest.approx(0.45)
    assert windowed_forgetting(curve, 4) == pytest.approx(0.45)
    # a window of 5 reaches from 0.9 to 0.3 on task 0
    assert windowed_forgetting(curve, 5) == pytest.approx((0.6 + 0.4) / 2)
    assert math.isnan(windowed_forgetting(curve.upto(3), 2))


def test_windowed_plasticity(curve):
    # largest adjacent gains: task 0 0.3->0.75, task 1 0.2->0.7, task 2 0.1->0.6
    np.testing.assert_allclose(windowed_plasticity(curve, 1, per_task=True), [0.45, 0.5, 0.5])
    assert windowed_plasticity(curve, 1) == pytest.approx(1.45 / 3)
    # window 2: 0.1->0.9, 0.2->0.9, 0.1->0.9
    assert windowed_plasticity(curve, 2) == pytest.approx((0.8 + 0.7 + 0.8) / 3)


def test_no_change_gives_zero():
    flat = EvalCurve(np.arange(4), np.array([0, 0, 1, 1]),
                     np.array([[0.5, NAN], [0.5, NAN], [0.6, 0.1], [0.7, 0.2]]))
    assert windowed_forgetting(flat, 3) == 0.0  # task 0 only gains after learning
    np.testing.assert_allclose(windowed_forgetting(flat, 1, per_task=True), [0.0])
    # gains by hand: task 0 from 0.5 0.5 0.6 0.7 (0.1 per step, 0.2 over two), task 1 from 0.1 0.2
    np.testing.assert_allclose(windowed_plasticity(flat, 1, per_task=True), [0.1, 0.1])
    np.testing.assert_allclose(windowed_plasticity(flat, 3, per_task=True), [0.2, 0.1])
    assert min_acc(flat) == pytest.approx(0.6)  # task 0 after its training: 0.6, 0.7
    assert wc_acc(flat) == pytest.approx(0.5 * 0.2 + 0.5 * 0.6)


def test_lca(curve):
    np.testing.assert_allclose(lca(curve, 2, per_task=True), [0.3, 0.45, 0.35])
    assert lca(curve, 2) == pytest.approx((0.3 + 0.45 + 0.35) / 3)
    assert lca(curve, 1) == pytest.approx((0.1 + 0.2 + 0.1) / 3)
    # beta beyond a phase's length uses the whole phase (3 evaluations each)
    assert lca(curve, 10) == pytest.approx(((0.1 + 0.5 + 0.9) + (0.2 + 0.7 + 0.9) + (0.1 + 0.6 + 0.9)) / 9)


def test_summarize(curve):
    R = np.array([[0.9, NAN, NAN], [0.8, 0.9, NAN], [0.75, 0.85, 0.9]])
    out = summarize(R, curve, window=1, lca_beta=2)
    assert set(out) == {"average_accuracy", "forgetting", "forgetting_max", "bwt", "min_acc",
                        "wc_acc", "windowed_forgetting", "windowed_plasticity", "lca"}
    assert all(type(v) is float for v in out.values())
    assert out["average_accuracy"] == pytest.approx(2.5 / 3)
    assert out["forgetting"] == pytest.approx(0.1)
    assert out["forgetting_max"] == pytest.approx(0.1)
    assert out["bwt"] == pytest.approx(-0.1)
    assert out["min_acc"] == pytest.approx(0.55)
    assert out["wc_acc"] == pytest.approx(0.3 + 1.1 / 3)
    assert out["windowed_forgetting"] == pytest.approx(0.45)
    assert out["windowed_plasticity"] == pytest.approx(1.45 / 3)
    assert out["lca"] == pytest.approx(1.1 / 3)
    only_matrix = summarize(R3, baseline=[0.1, 0.5, 0.1])
    assert set(only_matrix) == {"average_accuracy", "forgetting", "forgetting_max", "bwt", "fwt"}
    assert only_matrix["fwt"] == pytest.approx(0.27)
    with pytest.raises(ValueError, match="curve: got 3 experiences, expected 2"):
        summarize(R3[:2, :2], curve)


def test_records_round_trip(curve):
    records = curve.to_records()
    assert records[3] == {"iteration": 20, "experience": 1, "accuracy": [0.4, 0.2]}
    back = EvalCurve.from_records(records)
    np.testing.assert_array_equal(back.iterations, curve.iterations)
    np.testing.assert_array_equal(back.experience, curve.experience)
    np.testing.assert_array_equal(back.accuracy, curve.accuracy)  # NaNs in the same places
    assert EvalCurve.from_records(records[:4], n_experiences=5).accuracy.shape == (4, 5)
    with pytest.raises(ValueError, match="n_experiences"):
        EvalCurve.from_records(records, n_experiences=2)
    with pytest.raises(ValueError, match="records"):
        EvalCurve.from_records([{"iteration": 0}])


def test_curve_validation(curve):
    it, ex, acc = curve.iterations, curve.experience, curve.accuracy
    with pytest.raises(ValueError, match="experience: got .* non-decreasing"):
        EvalCurve(it, ex[::-1].copy(), acc)
    with pytest.raises(ValueError, match="iterations: got .* non-decreasing"):
        EvalCurve(it[::-1].copy(), ex, acc)
    with pytest.raises(TypeError, match="iterations: got dtype float64"):
        EvalCurve(it.astype(float), ex, acc)
    with pytest.raises(ValueError, match="accuracy: got shape"):
        EvalCurve(it, ex, acc[:-1])
    with pytest.raises(ValueError, match="experience: got values"):
        EvalCurve(it, ex, acc[:, :2])
    bad = acc.copy()
    bad[4, 1] = NAN
    with pytest.raises(ValueError, match=r"accuracy\[4, 1\]"):
        EvalCurve(it, ex, bad)
    with pytest.raises(ValueError, match="window: got 0"):
        windowed_forgetting(curve, 0)
    with pytest.raises(ValueError, match="beta: got '2'"):
        lca(curve, "2")
    with pytest.raises(TypeError, match="curve: got ndarray"):
        min_acc(acc)
    with pytest.raises(ValueError, match="n_evaluations"):
        curve.upto(0)


def test_min_acc_starts_strictly_after_the_task_ended():
    # as the continual loop writes it: task 0 ends at iteration 10, and task 1's evaluation before its
    # first update has the same iteration and parameters; only iterations 15 and 20 are after task 0
    c = EvalCurve(np.array([0, 5, 10, 10, 15, 20]), np.array([0, 0, 0, 1, 1, 1]),
                  np.array([[0.3, NAN], [0.6, NAN], [0.8, 0.1], [0.8, 0.1], [0.9, 0.5], [0.95, 0.9]]))
    assert min_acc(c) == pytest.approx(0.9) and wc_acc(c) == pytest.approx(0.9 / 2 + 0.9 / 2)
    # at the boundary itself nothing is later yet: the boundary evaluation stands in
    assert min_acc(c.upto(4)) == pytest.approx(0.8)


def test_records_with_a_scalar_accuracy_are_refused_by_name():
    with pytest.raises(TypeError, match=r"records\[1\]\['accuracy'\]: got float 0.5, expected a list"):
        EvalCurve.from_records([{"iteration": 0, "experience": 0, "accuracy": [0.1]},
                                {"iteration": 1, "experience": 0, "accuracy": 0.5}])


def test_ragged_inputs_and_non_iterable_records_are_named():
    # a ragged baseline raised NumPy's "setting an array element with a sequence"
    with pytest.raises(TypeError, match=r"^baseline: got list, expected a real \(3,\) array$"):
        fwt(R3, [0.1, [0.5], 0.1])
    with pytest.raises(TypeError, match=r"^records\[0\]\['accuracy'\]: got list, expected a list of real accuracies$"):
        EvalCurve.from_records([{"iteration": 0, "experience": 1, "accuracy": [0.1, [0.2]]}])
    # None said "'NoneType' object is not iterable"
    with pytest.raises(TypeError, match=r"^records: got NoneType, expected an iterable of dicts"):
        EvalCurve.from_records(None)
    with pytest.raises(TypeError, match=r"^records: got int, expected an iterable of dicts"):
        EvalCurve.from_records(3)


def test_upto_refuses_a_bool(curve):
    # True was taken as 1
    for bad in (True, np.True_, 2.0, 10):
        with pytest.raises(ValueError, match=f"^n_evaluations: got {bad!r}, expected an integer"):
            curve.upto(bad)
    first = curve.upto(np.int64(2))
    np.testing.assert_array_equal(first.iterations, [0, 10])
    np.testing.assert_array_equal(first.accuracy[:, 0], [0.10, 0.50])


def test_records_refuse_one_dict_a_short_accuracy_list_and_negative_iterations():
    """QA r10: one dict was iterated as its keys ("records: got 'iteration', ..."), an accuracy list
    shorter than its experience's was blamed on the experience's range, and negative iteration
    counts were accepted."""
    one = {"iteration": 0, "experience": 0, "accuracy": [0.1]}
    with pytest.raises(TypeError, match=r"^records: got one dict \{'iteration': 0, .*expected a list of them"):
        EvalCurve.from_records(one)
    assert EvalCurve.from_records([one]).accuracy.tolist() == [[0.1]]
    ok = {"iteration": 5, "experience": 1, "accuracy": [0.2, 0.3]}
    with pytest.raises(ValueError, match=r"^records\[1\]\['accuracy'\]: got 1 accuracies for experience 1, expected "
                                         r"at least 2 \(one per seen experience 0\.\.1\)$"):
        EvalCurve.from_records([one, {**ok, "accuracy": [0.2]}])
    # a list longer than the seen experiences is fine: unseen entries are ignored
    curve = EvalCurve.from_records([{**one, "accuracy": [0.1, 0.9]}, ok])
    assert curve.accuracy.tolist() == [[0.1, 0.9], [0.2, 0.3]]
    with pytest.raises(ValueError, match=r"^iterations: got \[-5, 1\], expected counts of updates >= 0$"):
        EvalCurve(np.array([-5, 1]), np.array([0, 0]), np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"^iterations: got \[-1, 5\]"):
        EvalCurve.from_records([{**one, "iteration": -1}, ok])
    assert EvalCurve(np.array([0, 1]), np.array([0, 0]), np.ones((2, 1))).iterations.tolist() == [0, 1]


def test_from_records_budgets_n_experiences_against_memory(monkeypatch):
    """QA r12: n_experiences=2**70 raised NumPy's unnamed dimension error, 10**9 a MemoryError
    or a long allocation."""
    from seqcore import validate
    records = [{"iteration": 0, "experience": 0, "accuracy": [0.5]}, {"iteration": 1, "experience": 0,
                                                                      "accuracy": [0.75]}]
    with pytest.raises(ValueError, match=rf"^n_experiences: got {2 ** 70}, whose accuracy array \(2 evaluations x "
                                         rf"{2 ** 70} experiences, float64\) would take .* GiB"):
        EvalCurve.from_records(records, 2 ** 70)
    monkeypatch.setattr(validate, "physical_memory", lambda: 2 ** 20)
    fits = 2 ** 20 // (2 * 8)  # by hand: 2 rows of float64 in 1 MiB
    with pytest.raises(ValueError, match=rf"^n_experiences: got {fits + 1}, whose"):
        EvalCurve.from_records(records, fits + 1)
    curve = EvalCurve.from_records(records, fits)
    assert curve.accuracy.shape == (2, fits) and curve.accuracy[:, 0].tolist() == [0.5, 0.75]
    assert np.isnan(curve.accuracy[:, 1:]).all()
