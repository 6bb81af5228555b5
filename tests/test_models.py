"""SequenceModel: cell fields reach every layer; loss gradients equal finite differences (float64)."""
import numpy as np
import pytest

from seqcore.models import HeadSpec, SequenceModel
from seqcore.tree import tree_map

from primitive_cases import paired_leaves


def last_step_head_oracle(model, params, x, mask, y, name):
    """A last-step classification head written out in NumPy (float64): logits at each sequence's
    last marked step, mean cross-entropy, accuracy, and the gradients of the head's weight and bias."""
    feats = np.asarray(model.features(params, x), dtype=np.float64)
    B = x.shape[0]
    last = np.array([np.flatnonzero(row)[-1] for row in mask])
    h = feats[np.arange(B), last]
    W, b = (np.asarray(params["heads"][name][k], dtype=np.float64) for k in ("weight", "bias"))
    logits = h @ W.T + b
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    loss = float(np.mean(-np.log(probs[np.arange(B), y])))
    delta = probs.copy()
    delta[np.arange(B), y] -= 1.0
    return {"loss": loss, "accuracy": float(np.mean(logits.argmax(axis=1) == y)),
            "weight": delta.T @ h / B, "bias": delta.mean(axis=0), "logits": logits}



def check_against_finite_differences(model, params, batch, grads, rng, eps=1e-6):
    """One random coordinate of every parameter leaf: the gradient equals central differences of the loss."""
    for name, g, leaf in paired_leaves(grads, params, "params"):
        if leaf is None:
            continue
        idx = tuple(int(rng.integers(0, s)) for s in leaf.shape)
        values = []
        for sign in (1, -1):
            leaf[idx] += sign * eps
            values.append(float(model.loss(params, batch)))
            leaf[idx] -= sign * eps
        assert g[idx] == pytest.approx((values[0] - values[1]) / (2 * eps), rel=1e-5, abs=1e-8), name


@pytest.mark.parametrize("cell", ["diaggru", "cifg-lstm"])
def test_multi_head_input_projections_in_a_stack(cell):
    # heads=2 must be checked against the real sizes (8 inputs, 8 hidden), not placeholder ones
    model = SequenceModel(cell, 8, 6, (HeadSpec("y", 3, "last"),), num_layers=2, cell_kwargs={"heads": 2})
    params = tree_map(lambda v: v.astype(np.float64), model.init(np.random.default_rng(0), np.float64))
    assert params["rnn"][0]["weight_ih"].shape[0] == 2 and params["rnn"][1]["weight_ih"].shape[0] == 2
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5, 8))
    y = rng.integers(0, 3, size=3)
    mask = np.zeros((3, 5))
    mask[np.arange(3), [4, 2, 3]] = 1.0
    batch = (x, y, mask)
    loss, grads = model.loss_and_grad(params, batch)
    # the loss and the head's gradients are the cross-entropy at each sequence's last marked step
    want = last_step_head_oracle(model, params, x, mask, y, "y")
    assert loss == pytest.approx(want["loss"], rel=1e-12)
    np.testing.assert_allclose(grads["heads"]["y"]["weight"], want["weight"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(grads["heads"]["y"]["bias"], want["bias"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(model.outputs(params, x, mask)["y"], want["logits"], rtol=1e-12, atol=1e-14)
    check_against_finite_differences(model, params, batch, grads, rng)
    with pytest.raises(ValueError, match="heads: got 3, expected a divisor"):
        SequenceModel(cell, 8, 6, (HeadSpec("y", 3, "last"),), cell_kwargs={"heads": 3}).init(np.random.default_rng(0))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_several_last_step_heads_of_one_size_are_summed_jointly(backend, monkeypatch):
    """``loss`` with last-step heads of one size takes one product and one cross-entropy for all of
    them; it equals the sum of the per-head losses, and so do its gradients."""
    import seqcore
    if backend not in seqcore.backends.available():
        pytest.skip(f"backend {backend} cannot load here")
    joint_calls = []
    original = SequenceModel._joint_last_loss
    monkeypatch.setattr(SequenceModel, "_joint_last_loss",
                        lambda self, *a: joint_calls.append(1) or original(self, *a))
    heads = tuple(HeadSpec(f"n{k}", 2, "last") for k in range(2, 6))
    model = SequenceModel("leaky", 1, 7, heads)
    params = model.init(np.random.default_rng(0), np.float64)
    rng = np.random.default_rng(1)
    B, T = 5, 9
    x = rng.normal(size=(B, T, 1))
    mask = np.zeros((B, T))
    mask[np.arange(B), rng.integers(3, T, B)] = 1.0
    names = ["n3", "n5", "n2"]  # active heads in curriculum order: label column k belongs to names[k]
    y = rng.integers(0, 2, size=(B, len(names)))
    batch = (x, y, mask)
    with seqcore.use(backend):
        joint, g_joint = seqcore.vjp(lambda p: model.loss(p, batch, heads=names), params)
        per_head, g_sum = seqcore.vjp(lambda p: sum(model.losses(p, batch, heads=names).values()), params)
        (dj,), (ds,) = g_joint(np.ones(())), g_sum(np.ones(()))
    assert joint_calls  # the joint path ran
    np.testing.assert_allclose(float(joint), float(per_head), rtol=1e-13)
    for name, a, b in paired_leaves(dj, ds, "grads"):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14, err_msg=name)
    assert not np.any(dj["heads"]["n4"]["weight"])  # an inactive head gets no gradient
    # oracle: each head written out in NumPy, its labels in column k of y (names[k])
    want = {name: last_step_head_oracle(model, params, x, mask, y[:, k], name) for k, name in enumerate(names)}
    assert float(joint) == pytest.approx(sum(w["loss"] for w in want.values()), rel=1e-10)
    got = model.losses(params, batch, heads=names)
    assert {k: float(v) for k, v in got.items()} == pytest.approx({k: w["loss"] for k, w in want.items()}, rel=1e-10)
    ev = model.evaluate(params, batch, heads=names)
    assert ev == {k: {"loss": pytest.approx(w["loss"], rel=1e-10), "accuracy": pytest.approx(w["accuracy"])}
                  for k, w in want.items()}
    # per-example losses (the cyclical curriculum's weights): each sequence's cross-entropies summed over heads
    per_example = np.zeros(B)
    for k, (name, w) in enumerate(want.items()):
        z = w["logits"] - w["logits"].max(axis=1, keepdims=True)
        per_example -= z[np.arange(B), y[:, k]] - np.log(np.exp(z).sum(axis=1))
    with seqcore.use(backend):
        np.testing.assert_allclose(model.example_losses(params, batch, heads=names), per_example, rtol=1e-10)
    assert per_example.mean() == pytest.approx(float(joint), rel=1e-10)
    for name, w in want.items():
        np.testing.assert_allclose(dj["heads"][name]["weight"], w["weight"], rtol=1e-9, atol=1e-13, err_msg=name)
        np.testing.assert_allclose(dj["heads"][name]["bias"], w["bias"], rtol=1e-9, atol=1e-13, err_msg=name)
    with pytest.raises(ValueError, match=r"^y: got shape \(5, 2\), expected \(5, 3\) \(B, heads\) for 3 .last. heads"):
        model.loss(params, (x, y[:, :2], mask), heads=names)


@pytest.mark.parametrize("loss", ["per_step", "regression"])
def test_example_losses_are_each_examples_own_loss_with_fractional_weights(loss):
    """Each example's loss equals ``loss()`` on that example alone: a weighted mean over its steps,
    also where its weights sum to less than 1 (was divided by max(Σw, 1)); 0 where all are 0."""
    rng = np.random.default_rng(23)
    model = SequenceModel("gru", 3, 4, (HeadSpec("s", 2, loss),))
    params = model.init(rng, np.float64)
    x = rng.normal(size=(3, 5, 3))
    y = rng.integers(0, 2, size=(3, 5)) if loss == "per_step" else rng.normal(size=(3, 5, 2))
    mask = np.array([[0.2, 0.2, 0, 0, 0], [0.5, 1, 2, 0, 0.1], [0, 0, 0, 0, 0]])
    got = model.example_losses(params, (x, y, mask))
    for b in range(2):
        alone = model.loss(params, (x[b:b + 1], y[b:b + 1], mask[b:b + 1]))
        assert got[b] == pytest.approx(float(alone), rel=1e-12)
    assert got[2] == 0


def test_a_last_step_head_names_the_rows_without_a_marked_step():
    model = SequenceModel("lstm", 3, 4, (HeadSpec("a", 3, "last"),))
    params, x = model.init(np.random.default_rng(0)), np.zeros((3, 5, 3), np.float32)
    mask = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"^mask: rows \[1, 2\] have no marked step .*2 of 3 rows.*expected"):
        model.loss(params, (x, np.zeros(3, np.int64), mask))


def closed_loop_oracle(model, params, x, alpha):
    """Generalised teacher forcing written out: one cell step at a time from the stack's layers,
    the input at t >= 1 mixing the data with the head's forecast from step t - 1."""
    W, b = (np.asarray(params["heads"]["next"][k]) for k in ("weight", "bias"))
    layers = model.rnn.layers
    states = [None] * len(layers)
    preds, forecast = [], None
    for t in range(x.shape[1]):
        u = x[:, t:t + 1] if forecast is None else alpha * x[:, t:t + 1] + (1 - alpha) * forecast
        for i, (cell, p) in enumerate(zip(layers, params["rnn"], strict=True)):
            u, states[i] = cell.apply(p, u, states[i])
        forecast = np.asarray(u) @ W.T + b
        preds.append(forecast)
    return np.concatenate(preds, axis=1)


@pytest.mark.parametrize("cell", ["lstm", "gru", "leaky"])
def test_generalised_teacher_forcing_matches_the_closed_loop_and_finite_differences(cell):
    head = (HeadSpec("next", 3, "regression"),)
    kw = {"tau_init": 2.0} if cell == "leaky" else {}  # away from the clamp at tau = 1, where differences halve
    model = SequenceModel(cell, 3, 5, head, num_layers=2, feedback=0.4, cell_kwargs=kw)
    rng = np.random.default_rng(3)
    params = model.init(rng, np.float64)
    x, y = rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6, 3))
    batch = (x, y, np.ones((2, 6)))
    np.testing.assert_allclose(model.outputs(params, x)["next"], closed_loop_oracle(model, params, x, 0.4),
                               rtol=1e-12, atol=1e-14)
    teacher = SequenceModel(cell, 3, 5, head, num_layers=2, feedback=1.0, cell_kwargs=kw)
    open_loop = SequenceModel(cell, 3, 5, head, num_layers=2, cell_kwargs=kw)
    np.testing.assert_allclose(teacher.outputs(params, x)["next"], open_loop.outputs(params, x)["next"], rtol=1e-12)
    free = SequenceModel(cell, 3, 5, head, num_layers=2, feedback=0.0, cell_kwargs=kw).outputs(params, x)["next"]
    np.testing.assert_allclose(free, closed_loop_oracle(model, params, x, 0.0), rtol=1e-12, atol=1e-14)
    assert np.abs(free - open_loop.outputs(params, x)["next"]).max() > 1e-3  # the data is really replaced
    loss, grads = model.loss_and_grad(params, batch)
    # gradients flow through the fed-back forecasts, head included
    check_against_finite_differences(model, params, batch, grads, rng)


def test_feedback_needs_one_forecasting_head_and_the_sequential_mode():
    with pytest.raises(ValueError, match=r"feedback: got 1.5, expected None or a number in \[0, 1\]"):
        SequenceModel("gru", 3, 4, (HeadSpec("next", 3, "regression"),), feedback=1.5)
    with pytest.raises(ValueError, match="expected one per-step head of input_size=3"):
        SequenceModel("gru", 3, 4, (HeadSpec("y", 3, "last"),), feedback=0.5)
    with pytest.raises(ValueError, match="expected one per-step head of input_size=3"):
        SequenceModel("gru", 3, 4, (HeadSpec("next", 2, "regression"),), feedback=0.5)
    with pytest.raises(ValueError, match="one-directional"):
        SequenceModel("gru", 3, 4, (HeadSpec("next", 3, "regression"),), bidirectional=True, feedback=0.5)
    model = SequenceModel("gru", 3, 4, (HeadSpec("next", 3, "regression"),), feedback=0.5)
    with pytest.raises(ValueError, match="mode: got 'parallel' with feedback=0.5, expected 'sequential'"):
        model.outputs(model.init(np.random.default_rng(0)), np.zeros((1, 4, 3), np.float32), mode="parallel")


def test_heads_masks_and_inputs_are_checked_alike_by_every_method():
    rng = np.random.default_rng(0)
    two = SequenceModel("gru", 2, 4, (HeadSpec("a", 3, "per_step"), HeadSpec("b", 3, "per_step")))
    params = two.init(rng, np.float64)
    x, y, mask = rng.normal(size=(2, 3, 2)), rng.integers(0, 3, (2, 3, 2)), np.ones((2, 3))
    for heads in ([], ["a", "a"]):  # nothing to sum, or one head counted twice against two columns
        for method in (two.loss, two.evaluate, two.example_losses):
            with pytest.raises(ValueError, match="heads: got .*expected one or more distinct names"):
                method(params, (x, y, mask), heads=heads)
    # no mask: every step weighs 1, for per-step heads as for last-step ones
    assert two.loss(params, (x, y, None)) == pytest.approx(float(two.loss(params, (x, y, mask))), rel=1e-15)
    assert two.evaluate(params, (x, y.tolist(), mask.tolist())) == two.evaluate(params, (x, y, mask))
    bad = mask.copy()
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="mask: got values in"):
        two.example_losses(params, (x, y, bad))  # as loss and evaluate refuse it
    with pytest.raises(ValueError, match="tolerance: got inf"):
        SequenceModel("gru", 2, 4, (("r", 1, "regression", float("inf")),))
    closed = SequenceModel("gru", 3, 4, (HeadSpec("n", 3, "regression"),), feedback=0.5)
    with pytest.raises(ValueError, match=r"x: got shape \(2, 4, 2\), expected \(B, T, 3\)"):
        closed.outputs(closed.init(rng), np.zeros((2, 4, 2), np.float32))  # the input, not a one-step slice
    tokens = SequenceModel("gru", 3, 4, (HeadSpec("c", 2, "last"),), vocab_size=5)
    with pytest.raises(ValueError, match=r"x: got shape \(1, 3, 1\), expected integer tokens \(B, T\)"):
        tokens.outputs(tokens.init(rng), np.zeros((1, 3, 1), np.int64))


def test_model_params_with_a_key_the_model_does_not_use_are_refused():
    """An "embedding" given to a model without a vocabulary was silently ignored."""
    model = SequenceModel("gru", 3, 4, (HeadSpec("y", 2, "last"),))
    params = model.init(np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(2, 5, 3))
    with pytest.raises(ValueError,
                       match=r"params: got unused key\(s\) \['embedding'\], expected the keys \['rnn', 'heads'\]"):
        model.features({**params, "embedding": np.zeros((5, 3))}, x)
    assert model.features(params, x).shape == (2, 5, 4)


def test_a_model_refuses_last_step_heads_beside_heads_with_a_time_axis():
    """No label array fits both layouts: loss() failed later with 'labels: got shape (2, 5), expected (2,)'."""
    for other in ("per_step", "regression"):
        with pytest.raises(ValueError,
                           match=rf"^heads: got loss kinds \['last', '{other}'\], expected 'last' heads alone"):
            SequenceModel("gru", 3, 4, (HeadSpec("a", 2, "last"), HeadSpec("b", 2, other)))
    SequenceModel("gru", 3, 4, (HeadSpec("a", 2, "last"), HeadSpec("b", 3, "last")))  # one layout: fine


@pytest.mark.parametrize("loss", ["per_step", "regression"])
def test_example_losses_ignore_a_nan_at_a_step_of_weight_zero(loss):
    """As loss() does: a NaN target (regression) or a NaN logit (per-step, from a NaN input at the
    last step) where the mask weight is 0 does not count; NaN · 0 made the example's loss NaN."""
    rng = np.random.default_rng(5)
    model = SequenceModel("gru", 2, 4, (HeadSpec("s", 2, loss),))
    params = model.init(rng, np.float64)
    x = rng.normal(size=(3, 5, 2))
    y = rng.integers(0, 2, size=(3, 5)) if loss == "per_step" else rng.normal(size=(3, 5, 2))
    mask = np.ones((3, 5))
    mask[0, 4] = 0.0
    want = model.example_losses(params, (x[:, :4], y[:, :4], mask[:, :4]))  # the step cut off
    want[1:] = model.example_losses(params, (x[1:], y[1:], mask[1:]))
    if loss == "per_step":
        x[0, 4] = np.nan  # the GRU's output at step 4 of example 0, and so its logits, are NaN
    else:
        y[0, 4] = np.nan
    with np.errstate(invalid="ignore"):
        got = model.example_losses(params, (x, y, mask))
        alone = float(model.loss(params, (x[:1], y[:1], mask[:1])))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == pytest.approx(alone, rel=1e-12)


def test_a_model_refuses_per_step_heads_beside_regression_heads():
    """Integer classes and real targets cannot share one y: loss() failed at the first step with
    'labels: got float64' or 'target: got dtype int64', whichever y was given."""
    with pytest.raises(ValueError, match=r"^heads: got loss kinds \['per_step', 'regression'\], expected "
                                         r"'per_step' heads alone .* or 'regression' heads alone"):
        SequenceModel("gru", 3, 4, (HeadSpec("a", 2, "per_step"), HeadSpec("b", 1, "regression")))
    SequenceModel("gru", 3, 4, (HeadSpec("a", 2, "per_step"), HeadSpec("b", 3, "per_step")))  # one layout: fine
    SequenceModel("gru", 3, 4, (HeadSpec("a", 1, "regression"), HeadSpec("b", 1, "regression")))


def test_model_params_with_a_head_the_model_does_not_have_are_refused():
    """A misspelt head's parameters were carried silently: zero gradients, saved in checkpoints."""
    rng = np.random.default_rng(0)
    model = SequenceModel("gru", 2, 4, (HeadSpec("a", 3, "per_step"),))
    params = model.init(rng, np.float64)
    batch = (rng.normal(size=(3, 5, 2)), np.zeros((3, 5), np.int64), None)
    bad = {**params, "heads": {**params["heads"], "b_typo": params["heads"]["a"]}}
    for method in (model.loss, model.loss_and_grad, model.evaluate, model.example_losses):
        with pytest.raises(ValueError, match=r"^params\['heads'\]: got unused key\(s\) \['b_typo'\], "
                                             r"expected the keys \['a'\] from SequenceModel.init"):
            method(bad, batch)
    with pytest.raises(ValueError, match=r"^params\['heads'\]: got unused key\(s\) \['b_typo'\]"):
        model.features(bad, batch[0])
    assert sorted(model.loss_and_grad(params, batch)[1]["heads"]) == ["a"]


def test_an_mlp_takes_an_empty_batch():
    """B = 0 failed in reshape: 'cannot reshape array of size 0 into shape (0,newaxis)'."""
    from seqcore.models import MLP
    mlp = MLP(4, (3,), 2)
    params = mlp.init(np.random.default_rng(0), np.float64)
    for shape in ((0, 4), (0, 2, 2)):
        out = mlp.apply(params, np.zeros(shape))
        assert out.shape == (0, 2) and out.dtype == np.float64
    x = np.random.default_rng(1).normal(size=(3, 2, 2))  # flattened as before
    np.testing.assert_array_equal(mlp.apply(params, x), mlp.apply(params, x.reshape(3, 4)))
    with pytest.raises(ValueError, match=r"^x: got 3 features per sample, expected 4"):
        mlp.apply(params, np.zeros((0, 3)))


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_a_bidirectional_last_step_model_does_not_read_the_padding(mode):
    """The mask of a last-step head ends each sequence: padding one sequence with more steps (of any
    value) leaves its logits and gradients unchanged, in both modes; each equals the sequence alone."""
    rng = np.random.default_rng(0)
    model = SequenceModel("gru", 3, 4, (HeadSpec("y", 2, "last"),), num_layers=2, bidirectional=True)
    params = model.init(rng, np.float64)
    seq = rng.normal(size=(1, 4, 3))

    def padded(extra):
        x = np.concatenate([seq, rng.normal(size=(1, extra, 3))], axis=1)  # padding of random values
        mask = np.zeros((1, 4 + extra))
        mask[0, :4] = 1.0
        return x, mask

    alone = model.outputs(params, seq, mode=mode)["y"]
    loss_alone, grads_alone = model.loss_and_grad(params, (seq, np.array([1]), None), mode=mode)
    for extra in (0, 3, 10):
        x, mask = padded(extra)
        np.testing.assert_allclose(model.outputs(params, x, mask, mode=mode)["y"], alone, rtol=1e-12, atol=1e-12)
        loss, grads = model.loss_and_grad(params, (x, np.array([1]), mask), mode=mode)
        assert abs(loss - loss_alone) < 1e-12
        for name, g, ref in paired_leaves(grads, grads_alone, "grads"):
            np.testing.assert_allclose(g, ref, rtol=1e-9, atol=1e-12, err_msg=name)
