"""Bad arguments raise ValueError/TypeError naming the argument (house rule), never an
IndexError, KeyError, AttributeError, a broadcasting error, a silent wrong result or a NaN.

One test per bug found by calling the public API adversarially; each fails without its fix.
"""
import importlib.util

import numpy as np
import pytest

import seqcore
from seqcore import cells, metrics, models, nn, ops, optim, schedules, tasks
from seqcore.cells.stack import Bidirectional, Stack, stack
from seqcore.tasks import streams

HAS_NUMBA = importlib.util.find_spec("numba") is not None


# -- scans and vjp ----------------------------------------------------------------------------

def test_block_scan_rejects_empty_blocks():
    A, b = np.zeros((2, 3, 1, 0, 0)), np.zeros((2, 3, 1, 0))
    with pytest.raises(ValueError, match=r"^A: got blocks of shape \(0, 0\)"):
        seqcore.block_scan(A, b)


def test_value_and_grad_argnums_out_of_range():
    f = seqcore.value_and_grad(lambda a: (a * a).sum(), argnums=3)
    with pytest.raises(ValueError, match="^argnums: got 3"):
        f(np.ones(2))
    with pytest.raises(TypeError, match="^argnums: got 'x'"):
        seqcore.value_and_grad(lambda a: a, argnums="x")


def test_value_and_grad_needs_a_scalar_output():
    with pytest.raises(ValueError, match=r"^f: returned ndarray of shape \(2,\)"):
        seqcore.value_and_grad(lambda a: a * 2.0)(np.ones(2))


def test_numpy_integer_sizes_are_integers():
    # np.int64 used to be refused with "expected an integer"
    assert cells.GRU(np.int64(2), np.int64(4)).hidden_size == 4
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=(2, 9, 3)), rng.normal(size=(2, 9, 3))  # other chunk sizes round differently
    got = seqcore.linear_scan(a, b, method="chunked", chunk_size=np.int64(2))
    # the same chunking as the Python int (bit for bit), and the sequential spec's result
    np.testing.assert_array_equal(got, seqcore.linear_scan(a, b, method="chunked", chunk_size=2))
    np.testing.assert_allclose(got, seqcore.linear_scan(a, b), rtol=1e-13, atol=1e-15)


# -- cells ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", cells.names())
def test_cell_params_must_be_float_arrays(name):
    rng = np.random.default_rng(0)
    cell = cells.make(name, 2, 4)
    params = cell.init(rng, np.float64)
    x = rng.normal(size=(2, 3, 2))
    key = cell.recurrent_keys[0] if cell.recurrent_keys else "weight_ih"
    with pytest.raises(TypeError, match=rf"^params\['{key}'\]: got list"):
        cell.apply({**params, key: params[key].tolist()}, x)      # was AttributeError
    with pytest.raises(TypeError, match=rf"^params\['{key}'\]: got dtype int64"):
        cell.apply({**params, key: params[key].astype(np.int64)}, x)  # was accepted


def test_newton_scan_params_list_leaf():
    rng = np.random.default_rng(0)
    cell = cells.GRU(2, 4)
    params = {k: v.tolist() for k, v in cell.init(rng, np.float64).items()}
    with pytest.raises(TypeError, match=r"^params\['weight_ih'\]"):
        seqcore.newton_scan(cell, params, rng.normal(size=(1, 3, 2)))


@pytest.mark.parametrize("name", ["mingru", "minlstm", "gru"])
def test_newton_options_checked_where_unused(name):
    rng = np.random.default_rng(0)
    cell = cells.make(name, 2, 4)
    params, x = cell.init(rng, np.float64), rng.normal(size=(1, 3, 2))
    mode = "parallel" if cell.linear_in_state else "sequential"
    with pytest.raises(TypeError, match="^newton options: got unknown"):
        cell.apply(params, x, mode=mode, tolerance=1e-3)
    with pytest.raises(ValueError, match="^tol: got 0"):
        cell.apply(params, x, mode=mode, tol=0)
    cell.apply(params, x, mode=mode, tol=1e-3, max_iters=np.int64(4))  # valid options are accepted


def test_stack_and_bidirectional_checks():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="^bidirectional: got 'yes'"):
        stack(cells.LSTM, 2, 4, bidirectional="yes")
    with pytest.raises(TypeError, match="^cell_class: got 'lstm'"):
        stack("lstm", 2, 4)
    with pytest.raises(TypeError, match=r"^layers\[0\]: got int"):
        Stack((1, 2))
    with pytest.raises(TypeError, match="^backward: got int"):
        Bidirectional(cells.GRU(2, 4), 3)
    bi = Bidirectional(cells.GRU(2, 4), cells.GRU(2, 4))
    params, x = bi.init(rng, np.float64), rng.normal(size=(3, 5, 2))
    with pytest.raises(ValueError, match=r"^params: got \['forward'\]"):   # was KeyError
        bi.apply({"forward": params["forward"]}, x)
    with pytest.raises(ValueError, match="^params: got"):
        bi.constrain({})
    with pytest.raises(TypeError, match="^h0: got ndarray"):             # was 'too many values to unpack'
        bi.apply(params, x, np.zeros((3, 4)))


# -- layers, models, losses -------------------------------------------------------------------

def test_linear_checks_params_rng_and_bias_flag():
    rng = np.random.default_rng(0)
    lin = nn.Linear(3, 2)
    p, x = lin.init(rng, np.float64), rng.normal(size=(4, 3))
    with pytest.raises(ValueError, match="^params: missing 'weight'"):   # was KeyError
        lin.apply({}, x)
    with pytest.raises(ValueError, match=r"^params\['bias'\]: got shape \(5,\)"):  # was a broadcasting error
        lin.apply({**p, "bias": np.zeros(5)}, x)
    with pytest.raises(TypeError, match=r"^params\['weight'\]: got dtype int64"):
        lin.apply({**p, "weight": p["weight"].astype(np.int64)}, x)
    with pytest.raises(TypeError, match="^rng: got int"):                # was AttributeError
        lin.init(0)
    with pytest.raises(TypeError, match="^dtype: got"):
        lin.init(rng, np.int32)
    with pytest.raises(TypeError, match="^bias: got 'no'"):
        nn.Linear(3, 2, bias="no")
    with pytest.raises(ValueError, match=r"^x: got shape \(\)"):          # was IndexError
        lin.apply(p, np.float64(1.0))


def test_ops_linear_checks_x_and_bias():
    w = np.zeros((2, 3))
    with pytest.raises(TypeError, match="^x: got list"):
        ops.linear([[1.0, 2.0, 3.0]], w)
    with pytest.raises(ValueError, match=r"^bias: got shape \(4,\)"):
        ops.linear(np.ones((1, 3)), w, np.zeros(4))


def test_embedding_checks_params_and_empty_tokens():
    rng = np.random.default_rng(0)
    emb = nn.Embedding(5, 3)
    p = emb.init(rng)
    with pytest.raises(ValueError, match=r"^params\['weight'\]: got shape \(3, 3\)"):  # was IndexError
        emb.apply({"weight": np.zeros((3, 3), np.float32)}, np.array([[4]]))
    assert emb.apply(p, np.zeros((0, 2), np.int64)).shape == (0, 2, 3)  # was a NumPy reduction error


def test_losses_need_a_class_axis():
    with pytest.raises(ValueError, match=r"^logits: got shape \(\)"):     # was IndexError
        nn.cross_entropy(np.float64(1.0), np.int64(0))
    with pytest.raises(ValueError, match=r"^logits: got shape \(4, 0\)"):
        nn.cross_entropy(np.zeros((4, 0)), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"^pred: got shape \(\)"):
        nn.mse(np.float64(1.0), np.float64(1.0))


@pytest.mark.parametrize("call,error,match", [
    (lambda x: ops.add(np.ones((4, 3)), np.ones((2, 4))), ValueError,
     r"^add: got a shape \(4, 3\) \(float64\), b shape \(2, 4\) \(float64\); operands could not be broadcast"),
    (lambda x: ops.reshape(x, (5,)), ValueError, r"^reshape: got x shape \(3, 4\) \(float64\), shape=\(5,\); cannot"),
    (lambda x: ops.concatenate([x, np.ones((2, 5))]), ValueError, r"^concatenate: got xs\[0\] shape \(3, 4\)"),
    (lambda x: ops.stack([x, np.ones(2)]), ValueError, r"^stack: got xs\[0\] shape \(3, 4\) \(float64\), xs\[1\]"),
    (lambda x: ops.sum(x, 5), ValueError, r"^axis: got 5, expected an axis in \[-2, 2\) \(x has 2 dims\)"),
    (lambda x: ops.mean(x, 5), ValueError, r"^axis: got 5, expected an axis in \[-2, 2\) \(x has 2 dims\)"),
    (lambda x: ops.getitem(x, 10), IndexError, r"^getitem: got x shape \(3, 4\) \(float64\), index=10"),
    (lambda x: ops.swapaxes(x, 0, 5), ValueError, r"^axis2: got 5, expected an axis in \[-2, 2\) \(x has 2 dims\)"),
    (lambda x: ops.matmul(x, x), ValueError, r"^matmul: got a shape \(3, 4\) \(float64\), b shape \(3, 4\)"),
    (lambda x: ops.leaky_relu(x, "a"), TypeError, r"^negative_slope: got str 'a', expected a number"),
])
def test_array_operations_name_what_they_got(call, error, match):
    """NumPy's own errors (broadcasting, reshape, axes, indices) come back naming the operation
    and its operands, traced or not; index errors stay IndexErrors (they end iteration)."""
    for traced in (False, True):
        with pytest.raises(error, match=match) as info:
            if traced:
                seqcore.vjp(call, np.ones((3, 4)))
            else:
                call(np.ones((3, 4)))
        assert isinstance(info.value, (ValueError, TypeError))


def test_strings_where_numbers_belong_are_named():
    """Each was a bare comparison error ('>' not supported between 'str' and 'int') or a
    constructor's unexpected-keyword error."""
    from seqcore.continual import ContinualConfig
    with pytest.raises(ValueError, match=r"^heads\[0\].tolerance: got '0.1' for a 'regression' head"):
        models.SequenceModel("lstm", 1, 8, (("a", 2, "regression", "0.1"),))
    with pytest.raises(ValueError, match=r"^heads\[1\].loss: got 'lats'"):  # the index says which head
        models.SequenceModel("lstm", 1, 8, (("a", 2, "last"), ("b", 2, "lats")))
    with pytest.raises(ValueError, match=r"^overlap: got '0.2', expected a number in \[0, 1\)"):
        ContinualConfig(overlap="0.2")
    with pytest.raises(ValueError, match=r"^stream_exponent: got '1', expected a number >= 0"):
        ContinualConfig(stream_exponent="1")
    with pytest.raises(TypeError, match=r"^cell_kwargs: got \['foo'\], unknown keys for the 'lstm' cell"):
        stack(cells.LSTM, 3, 4, foo=1)
    assert stack(cells.DiagGRU, 4, 4, num_layers=2, heads=2).layers[1].heads == 2


def test_errors_inside_a_stack_say_which_layer_and_direction():
    rng = np.random.default_rng(0)
    st = stack(cells.LSTM, 3, 4, num_layers=2, bidirectional=True)
    p = st.init(rng)
    x, h = np.ones((2, 5, 3), np.float32), np.zeros((2, 4), np.float32)
    with pytest.raises(TypeError, match=r"^layer 1: forward direction: h0: got ndarray, expected a tuple \(h0, c0\)"):
        st.apply(p, x, [((h, h), (h, h)), (h, None)])
    with pytest.raises(TypeError, match=r"^backward direction: h0: got ndarray"):  # one layer: no layer number
        stack(cells.LSTM, 3, 4, bidirectional=True).apply(st.init(rng)[:1], x, [((h, h), h)])


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_an_initial_state_of_another_dtype_is_named_in_both_modes(mode):
    """It was promoted sequentially and refused in parallel as 'the dtype of a' (an internal name)."""
    rng = np.random.default_rng(0)
    for cell in (cells.MinGRU(3, 4), cells.GRU(3, 4)):
        p = cell.init(rng, np.float32)
        x = rng.normal(size=(2, 5, 3)).astype(np.float32)
        with pytest.raises(TypeError, match=r"^h0: got dtype float64, expected float32 \(the dtype of x and the"):
            cell.apply(p, x, np.zeros((2, 4)), mode=mode)
        assert cell.apply(p, x, np.zeros((2, 4), np.float32), mode=mode)[0].dtype == np.float32


def test_parameter_dicts_with_unused_keys_are_refused():
    """A leftover or misspelt key was silently ignored (a bias given to a bias-free layer)."""
    rng = np.random.default_rng(0)
    lin = nn.Linear(3, 2, bias=False)
    with_bias = nn.Linear(3, 2).init(rng)
    with pytest.raises(ValueError, match=r"^params: got unused key\(s\) \['bias'\]; expected keys \['weight'\]"):
        lin.apply(with_bias, np.ones((4, 3), np.float32))
    cell = cells.GRU(3, 4)
    p = {**cell.init(rng), "weight_hh_l0": np.zeros((12, 4), np.float32)}
    with pytest.raises(ValueError, match=r"got unused key\(s\) \['weight_hh_l0'\]"):
        cell.apply(p, np.ones((2, 5, 3), np.float32))


@pytest.mark.parametrize("make", [cells.GRU, cells.LSTM, cells.Elman, cells.DiagGRU, cells.CIFGLSTM, cells.LeakyRNN])
def test_a_parameter_or_state_of_another_backend_is_named(make):
    """A torch leaf beside NumPy data used to switch the whole call to torch (or fail inside NumPy)."""
    rng = np.random.default_rng(0)
    torch = pytest.importorskip("torch", reason="the mixed-backend check needs a second backend")
    cell = make(4, 6)
    x = rng.normal(size=(2, 5, 4)).astype(np.float32)
    for key in cell.init(rng):
        p = cell.init(rng)
        p[key] = torch.tensor(p[key])
        with pytest.raises(TypeError, match=rf"^params\['{key}'\]: got a torch.Tensor, expected a numpy.ndarray like x"):
            cell.apply(p, x)
    h0 = torch.zeros(2, 6)
    if make in (cells.LSTM, cells.CIFGLSTM):
        h0 = (h0, torch.zeros(2, 6))
    with pytest.raises(TypeError, match=r"h0: got a torch.Tensor, expected a numpy.ndarray like x"):
        cell.apply(cell.init(rng), x, h0)


def test_masked_losses_are_weighted_means_and_refuse_bad_weights():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(5, 3)), np.array([0, 2, 1, 1, 0])
    pred, target = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    w = np.array([0.5, 0.0, 2.0, 1.0, 0.25])
    rows = -(logits - np.log(np.exp(logits).sum(-1, keepdims=True)))[np.arange(5), labels]
    for loss, per_row, args in ((nn.cross_entropy, rows, (logits, labels)),
                                (nn.mse, ((pred - target) ** 2).mean(-1), (pred, target))):
        # a uniform weighting leaves the mean unchanged (it once divided by max(Σw, 1))
        np.testing.assert_allclose(float(loss(*args, np.full(5, 0.1))), per_row.mean(), rtol=1e-12)
        np.testing.assert_allclose(float(loss(*args, w)), (w * per_row).sum() / w.sum(), rtol=1e-12)
        assert float(loss(*args, np.zeros(5))) == 0.0
        with pytest.raises(ValueError, match=r"^mask: got values in \[-1.0, 2.0\], expected finite weights"):
            loss(*args, np.array([1.0, -1.0, 2.0, 0.0, 1.0]))
        with pytest.raises(ValueError, match="^mask: got values in"):
            loss(*args, np.array([1.0, np.nan, 2.0, 0.0, 1.0]))
        with pytest.raises(TypeError, match="^mask: got dtype <U1"):
            loss(*args, np.array(["a"] * 5))


def test_accuracy_checks_labels_and_mask():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3))
    with pytest.raises(ValueError, match=r"^labels: got values in \[0, 7\]"):   # was a silent 0.75
        nn.accuracy(logits, np.array([0, 1, 7, 1]))
    with pytest.raises(ValueError, match=r"^labels: got shape \(4, 1\)"):      # was broadcast to (4, 4)
        nn.accuracy(logits, np.zeros((4, 1), np.int64))
    with pytest.raises(TypeError, match="^labels: got float64"):
        nn.accuracy(logits, np.zeros(4))
    with pytest.raises(ValueError, match=r"^mask: got shape \(3,\)"):
        nn.accuracy(logits, np.zeros(4, np.int64), np.ones(3))
    with pytest.raises(ValueError, match="^tolerance: got True"):
        nn.tolerance_accuracy(logits, logits, True)
    with pytest.raises(ValueError, match="^tolerance: got inf"):
        nn.tolerance_accuracy(logits, logits, float("inf"))
    with pytest.raises(ValueError, match=r"^mask: got shape \(5,\)"):
        nn.tolerance_accuracy(logits, logits, 0.1, np.ones(5))


H = models.HeadSpec


def test_sequence_model_head_checks():
    with pytest.raises(ValueError, match=r"^heads\[0\]\.output_size: got 2\.5"):  # was truncated to 2
        models.SequenceModel("gru", 2, 4, (H("a", 2.5, "last"),))
    with pytest.raises(ValueError, match="^heads: got names"):
        models.SequenceModel("gru", 2, 4, (H("a", 2, "last"), H("a", 3, "last")))
    with pytest.raises(TypeError, match=r"^heads\[0\]: got str"):               # was AttributeError
        models.SequenceModel("gru", 2, 4, ("a",))
    with pytest.raises(TypeError, match="^heads: got HeadSpec"):
        models.SequenceModel("gru", 2, 4, H("a", 2, "last"))
    with pytest.raises(TypeError, match="^bidirectional: got 'yes'"):
        models.SequenceModel("gru", 2, 4, (H("a", 2, "last"),), bidirectional="yes")
    with pytest.raises(TypeError, match="^cell_kwargs: got"):                   # was only at init
        models.SequenceModel("gru", 2, 4, (H("a", 2, "last"),), cell_kwargs=(("foo", 1),))


def _model_and_batch(loss="last"):
    rng = np.random.default_rng(0)
    m = models.SequenceModel("gru", 2, 4, (H("a", 3, loss),))
    x = rng.normal(size=(5, 6, 2))
    mask = np.zeros((5, 6))
    mask[:, -1] = 1
    y = np.array([0, 1, 2, 0, 1]) if loss == "last" else np.zeros((5, 6), np.int64)
    return m, m.init(rng, np.float64), (x, y, mask)


def test_sequence_model_params_and_batch_checks():
    m, params, batch = _model_and_batch()
    with pytest.raises(ValueError, match=r"^params: got \['rnn'\]"):            # was KeyError
        m.loss({"rnn": params["rnn"]}, batch)
    with pytest.raises(ValueError, match=r"^params\['heads'\]: missing \['a'\]"):
        m.loss({**params, "heads": {}}, batch)
    with pytest.raises(ValueError, match=r"^params\['heads'\]\['a'\]\['bias'\]: got shape \(4,\)"):
        m.loss({**params, "heads": {"a": {"weight": np.zeros((3, 4)), "bias": np.zeros(4)}}}, batch)
    with pytest.raises(ValueError, match="^params: got"):
        m.constrain({})
    with pytest.raises(TypeError, match="^batch: got tuple of length 2"):        # was IndexError
        m.loss(params, batch[:2])
    with pytest.raises(TypeError, match="^heads: got 'a'"):
        m.loss(params, batch, heads="a")
    x, y, mask = batch
    short = np.zeros((5, 3))
    short[:, 0] = 1
    with pytest.raises(ValueError, match=r"^mask: got shape \(5, 3\)"):         # was read as a (B, 3) mask
        m.outputs(params, x, short)


def test_example_losses_checks_labels_and_mask():
    rng = np.random.default_rng(0)
    m, params, (x, y, mask) = _model_and_batch()
    with pytest.raises(ValueError, match=r"^y: got labels in \[0, 3\] for head 'a', expected \[0, 2\]"):
        m.example_losses(params, (x, np.array([0, 1, 3, 0, 1]), mask))
    m, params, (x, y, mask) = _model_and_batch("per_step")
    y = rng.integers(0, 3, size=(5, 6))
    losses = m.example_losses(params, (x, y, None))                           # was NaN with mask=None
    # mask=None weighs every step: as an all-ones mask, and each row is that example's loss alone
    np.testing.assert_allclose(losses, m.example_losses(params, (x, y, np.ones((5, 6)))), rtol=1e-12)
    np.testing.assert_allclose(losses, [float(m.loss(params, (x[b:b + 1], y[b:b + 1], None))) for b in range(5)],
                               rtol=1e-10)
    mr = models.SequenceModel("gru", 2, 4, (H("r", 2, "regression"),))
    with pytest.raises(ValueError, match=r"^y: got shape \(5, 6, 3\), expected \(5, 6, 2\) \(B, T, out\)"):
        mr.example_losses(mr.init(rng, np.float64), (x, np.zeros((5, 6, 3)), mask))


def test_several_heads_need_one_label_column_each():
    rng = np.random.default_rng(0)
    m = models.SequenceModel("gru", 2, 4, (H("a", 3, "last"), H("b", 2, "last")))
    params = m.init(rng, np.float64)
    x, mask = rng.normal(size=(5, 6, 2)), np.ones((5, 6))
    with pytest.raises(ValueError, match=r"^y: got shape \(5, 3\)"):             # extra column was ignored
        m.loss(params, (x, np.zeros((5, 3), np.int64), mask))


def test_mlp_checks():
    rng = np.random.default_rng(0)
    mlp = models.MLP(4, (3,), 2)
    params = mlp.init(rng)
    x = rng.normal(size=(2, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="^params: got list of length 1"):     # silently skipped layers
        mlp.apply(params[:1], x)
    with pytest.raises(TypeError, match="^x: got list"):                        # was AttributeError
        mlp.apply(params, x.tolist())
    with pytest.raises(TypeError, match="^hidden_sizes: got 3"):
        models.MLP(4, 3, 2)


# -- optimizers and schedules -----------------------------------------------------------------

def test_optimizer_flags_must_be_bool():
    with pytest.raises(TypeError, match="^nesterov: got 'yes'"):
        optim.sgd(0.1, momentum=0.9, nesterov="yes")
    with pytest.raises(TypeError, match="^amsgrad: got 'x'"):
        optim.adam(1e-3, amsgrad="x")
    with pytest.raises(TypeError, match="^centered: got 'no'"):
        optim.rmsprop(1e-2, centered="no")
    with pytest.raises(TypeError, match="^staircase: got 'y'"):
        schedules.exponential(1.0, 0.5, 10, staircase="y")


def _step(opt, params, grads):
    return opt.update(grads, opt.init(params), params)


def test_schedule_values_must_be_finite_numbers():
    p = {"w": np.zeros(2)}
    with pytest.raises(ValueError, match="^learning_rate: schedule gave nan"):  # NaN parameters before
        _step(optim.sgd(lambda s: float("nan")), p, p)
    with pytest.raises(TypeError, match="^learning_rate: schedule gave 'x'"):
        _step(optim.sgd(lambda s: "x"), p, p)
    with pytest.raises(ValueError, match="^schedule: schedule gave inf"):
        _step(optim.scale_by_schedule(lambda s: float("inf")), p, p)


def test_apply_updates_checks_leaf_shapes():
    params = {"w": np.zeros((2, 3))}
    with pytest.raises(ValueError, match=r"^updates: got a leaf of shape \(1, 3\)"):  # was broadcast
        optim.apply_updates(params, {"w": np.ones((1, 3))})
    with pytest.raises(ValueError, match=r"^updates: got a leaf of shape \(3, 2\)"):
        optim.apply_updates(params, {"w": np.ones((3, 2))})


def test_global_norm_rejects_non_array_leaves():
    with pytest.raises(TypeError, match="^tree: got a float leaf"):              # was AttributeError
        optim.global_norm([1.0, 2.0])


# -- metrics ----------------------------------------------------------------------------------

def test_metrics_reject_complex_and_non_bool_flags():
    R = np.eye(2)
    with pytest.raises(TypeError, match="^R: got ndarray of dtype complex128"):  # imaginary part dropped
        metrics.average_accuracy(R.astype(complex))
    with pytest.raises(TypeError, match="^per_step: got 'yes'"):
        metrics.average_accuracy(R, per_step="yes")
    with pytest.raises(TypeError, match="^baseline: got str"):
        metrics.fwt(R, "ab")
    curve = metrics.EvalCurve(np.arange(2), np.array([0, 1]), np.ones((2, 2)))
    with pytest.raises(TypeError, match="^per_task: got 'x'"):
        metrics.lca(curve, 1, per_task="x")
    with pytest.raises(TypeError, match=r"^records\[0\]\['accuracy'\]"):
        metrics.EvalCurve.from_records([{"iteration": 0, "experience": 0, "accuracy": "ab"}])


# -- tasks and streams ------------------------------------------------------------------------

def test_lorenz_overflow_is_an_error_not_nan_data():
    # refused when the task is built (a trial trajectory), not at the run's first step; states
    # that fit float32 but whose squared errors would not (forcing 1e30) too
    for forcing in (1e6, 1e30, -1e30):
        with pytest.raises(ValueError, match=r"^forcing: got forcing=.*the RK4 integration overflowed"):
            tasks.make("lorenz96", forcing=forcing, length=20, dim=8)


def test_permuted_stream_with_an_empty_test_split():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 2, 3)), np.arange(8) % 2
    stream = streams.permuted_stream(x, y, x[:0], y[:0], 2, 0)  # was a reshape error
    assert stream[1].eval[0].shape == (0, 2, 3)


# -- the numba backend rejects the same inputs through the shared front end ---------------------

@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_numba_backend_rejects_the_same_inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 2))
    with seqcore.use("numba"):
        for cell in (cells.LSTM(2, 4), cells.DiagGRU(2, 4), cells.MinGRU(2, 4)):
            params = cell.init(rng, np.float64)
            bad = {k: v.astype(np.int64) for k, v in params.items()}
            with pytest.raises(TypeError, match=r"^params\['"):
                cell.apply(bad, x)
        with pytest.raises(ValueError, match=r"^A: got blocks of shape \(0, 0\)"):
            seqcore.block_scan(np.zeros((2, 3, 1, 0, 0)), np.zeros((2, 3, 1, 0)))
        with pytest.raises(ValueError, match=r"^labels: got values in \[0, 2\]"):
            nn.cross_entropy(rng.normal(size=(3, 2)), np.array([0, 1, 2]))


# -- masks (round 2) ---------------------------------------------------------------------------

@pytest.mark.parametrize("mask, error, match", [
    (None, TypeError, r"^mask: got NoneType"),                       # was "got shape ()"
    ({"a": 1}, TypeError, r"^mask: got dict"),
    (np.array([[None, 1]], dtype=object), TypeError, r"^mask: got dtype object"),   # was a '>' TypeError
    (np.array([["a", "b"]]), TypeError, r"^mask: got dtype <U1"),                  # was a UFuncTypeError
    (np.array([[1j, 0]]), TypeError, r"^mask: got dtype complex128"),              # was accepted
    (np.array([[1.0, np.nan]]), ValueError, r"^mask: got NaN"),                    # NaN step was unmarked
    (np.array([[1.0, -1.0]]), ValueError, r"^mask: got a negative entry"),
    ([[1, 0], [1]], ValueError, r"^mask: got a ragged nested sequence"),
])
def test_last_step_index_names_bad_masks(mask, error, match):
    with pytest.raises(error, match=match):
        tasks.last_step_index(mask)


def test_last_step_index_accepts_lists_bools_and_traced_masks():
    from seqcore.autodiff import Traced
    assert tasks.last_step_index([[0, 1], [1, 0]]).tolist() == [1, 0]
    assert tasks.last_step_index(np.array([[True, False, True]])).tolist() == [2]
    assert tasks.last_step_index(Traced(np.array([[0.0, 1.0, 0.0]]))).tolist() == [1]


def test_linear_refuses_arrays_of_two_backends_and_get_names_its_argument():
    torch = pytest.importorskip("torch", reason="torch is not installed: no second backend to mix")
    from seqcore import ops, primitives
    with pytest.raises(TypeError, match=r"weight: got a numpy.ndarray, expected a torch.Tensor like x"):
        ops.linear(torch.zeros(3, 4), np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match=r"bias: got a numpy.ndarray, expected a torch.Tensor like x"):
        ops.linear(torch.zeros(3, 4), torch.zeros(2, 4), np.zeros(2, np.float32))
    assert ops.linear(np.zeros((3, 4), np.float32), np.zeros((2, 4))).dtype == np.float64  # dtypes promote
    with pytest.raises(TypeError, match=r"name: got int 3, expected a primitive's name"):
        primitives.get(3)
    with pytest.raises(ValueError, match=r"name: got unknown primitive 'nope'"):
        primitives.get("nope")


@pytest.mark.parametrize("cell, cell_kwargs, layers, hidden", [
    ("lstm", (), 2, 37), ("leaky", (), 1, 64), ("cifg-lstm", (), 3, 10), ("diaggru", (("heads", 2),), 2, 18),
    ("mingru", (), 1, 5),
])
def test_parameter_count_equals_the_models_count_without_building_it(cell, cell_kwargs, layers, hidden):
    from seqcore.tree import tree_leaves
    from seqcore.validate import parameter_count
    heads = [models.HeadSpec("a", 3, "last"), models.HeadSpec("b", 5, "last")]

    def build(h):
        return models.SequenceModel(cell, 4, h, heads, num_layers=layers, cell_kwargs=cell_kwargs)

    real = sum(np.size(leaf) for leaf in tree_leaves(build(hidden).init(np.random.default_rng(0))))
    assert parameter_count(build, hidden) == real
    assert parameter_count(build, 10**8) > 10**8  # found from three small models, nothing allocated


def test_a_hidden_size_no_machine_holds_is_refused_before_allocating():
    from seqcore.train import Run, TrainConfig
    with pytest.raises(ValueError, match=r"hidden: got 100000000, whose 4e\+16 parameters .* GiB, more than this "
                                         r"machine's"):  # was an out-of-memory kill or a MemoryError mid-build
        Run(TrainConfig(task="nparity", hidden=10**8, backend="numpy"))


def test_accuracy_counts_non_finite_logits_as_wrong():
    """argmax of an all-NaN row is 0, so a diverged model scored 0.75 on labels mostly 0."""
    labels = np.array([0, 0, 1, 0])
    assert nn.accuracy(np.full((4, 2), np.nan), labels) == 0.0
    logits = np.array([[1.0, 0.0], [np.inf, 0.0], [0.0, 1.0], [1.0, -np.inf]])
    assert nn.accuracy(logits, labels) == 0.5  # rows with ±inf are wrong too
    assert nn.tolerance_accuracy(np.full((4, 1), np.nan), np.zeros((4, 1)), 0.5) == 0.0


def test_accuracy_masks_are_weights_of_any_scale():
    """The denominator was max(Σw, 1e-12): tiny weights gave 0.2 for an all-correct batch."""
    logits, labels = np.array([[[2.0, 0.0], [0.0, 2.0]]]), np.array([[0, 1]])
    for scale in (1e-13, 1e-300, 1.0, 1e300):
        assert nn.accuracy(logits, labels, np.full((1, 2), scale)) == 1.0
        assert nn.tolerance_accuracy(logits, logits, 0.1, np.full((1, 2), scale)) == 1.0
    assert nn.accuracy(logits, np.array([[0, 0]]), np.array([[3e-13, 1e-13]])) == pytest.approx(0.75)  # weighted
    assert nn.accuracy(logits, labels, np.zeros((1, 2))) == 0.0  # all-zero mask: 0.0, as documented
    assert nn.accuracy(logits, labels, np.array([[True, False]])) == 1.0


@pytest.mark.parametrize("call,name", [
    (lambda: ops.mul([1.0, 2.0], 3), "a"),           # was list repetition
    (lambda: ops.add((1.0,), (2.0,)), "a"),          # was tuple concatenation
    (lambda: ops.add(np.ones(2), [1.0, 2.0]), "b"),
    (lambda: ops.sum([1.0, 2.0]), "x"),              # was an AttributeError
    (lambda: ops.tanh([0.5]), "x"),
    (lambda: ops.matmul(np.ones((2, 2)), [[1.0], [2.0]]), "b"),
    (lambda: ops.stack([np.ones(2), [1.0, 2.0]]), r"xs\[1\]"),
    (lambda: ops.where(np.ones(2) > 0, [1.0, 2.0], 0.0), "a"),
])
def test_ops_refuse_python_sequences_naming_the_operand(call, name):
    with pytest.raises(TypeError, match=rf"^{name}: got (list|tuple) .*expected an array"):
        call()


def test_ops_still_take_numbers_arrays_and_traced_values():
    x = np.array([1.0, 2.0])
    np.testing.assert_array_equal(ops.mul(x, 3), [3.0, 6.0])
    np.testing.assert_array_equal(ops.add(np.float32(1.0), x), [2.0, 3.0])
    np.testing.assert_array_equal(ops.concatenate((x, x)), [1.0, 2.0, 1.0, 2.0])
    out, pullback = seqcore.vjp(lambda v: ops.sum(2 * v + 1) * v[0], x)
    np.testing.assert_allclose(pullback(np.float64(1.0))[0], [2 * 1 + 8, 2.0])
    with pytest.raises(TypeError, match=r"^b: got list"):
        seqcore.vjp(lambda v: v + [1.0, 2.0], x)


def test_power_refuses_bools_and_takes_numpy_numbers():
    x = np.array([1.0, 2.0], np.float32)
    with pytest.raises(TypeError, match=r"^p: got bool True, expected a real number"):
        ops.power(x, True)
    with pytest.raises(TypeError, match=r"^p: got str '2', expected a real number"):
        ops.power(x, "2")
    y = ops.power(x, np.float64(2.0))  # a NumPy exponent is a number, not a float64 operand
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [1.0, 4.0])


def test_numpy_numbers_are_numbers_for_slopes_and_timescales():
    """Each was refused as 'expected a number' (the checks listed int and float only)."""
    x = np.array([-1.0, 2.0], np.float32)
    np.testing.assert_allclose(ops.leaky_relu(x, np.float32(0.1)), [-0.1, 2.0])
    assert ops.leaky_relu(x, np.float32(0.1)).dtype == np.float32
    with pytest.raises(TypeError, match=r"^negative_slope: got bool True, expected a number"):
        ops.leaky_relu(x, True)
    with pytest.raises(TypeError, match=r"^negative_slope: got bool_? (np\.)?True_?, expected a number"):
        ops.leaky_relu(x, np.True_)


def test_apply_updates_refuses_updates_of_another_dtype():
    """float64 or int64 updates (or lists) for float32 params silently promoted them to float64."""
    params = {"w": np.zeros((2, 3), np.float32), "cells": [np.zeros(2, np.float32)]}
    ok = {"w": np.ones((2, 3), np.float32), "cells": [np.ones(2, np.float32)]}
    with pytest.raises(TypeError, match=r"^updates\['w'\]: got dtype float64, expected float32 like the parameter"):
        optim.apply_updates(params, {**ok, "w": np.ones((2, 3))})
    with pytest.raises(TypeError, match=r"^updates\['cells/0'\]: got dtype int64, expected float32 like the parameter"):
        optim.apply_updates(params, {**ok, "cells": [np.ones(2, np.int64)]})
    with pytest.raises(TypeError, match=r"^updates\['w'\]: got list \[\[1.0, 1.0, 1.0\], .*expected an array of "
                                        r"dtype float32 like the parameter"):
        optim.apply_updates(params, {**ok, "w": [[1.0] * 3] * 2})
    new = optim.apply_updates(params, ok)
    assert new["w"].dtype == np.float32 and new["cells"][0].dtype == np.float32


# -- cotangents (round 3) -----------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_a_cotangent_of_another_backend_or_a_non_float_dtype_is_named(backend):
    """Only the shape was checked: a torch cotangent failed inside numpy.flip ('step must be greater
    than zero') on numpy and came back as ndarrays on numba, a NumPy one was taken on torch, and
    complex (imaginary part dropped), bool and int cotangents were cast silently everywhere."""
    if backend == "numba" and not HAS_NUMBA:
        pytest.skip("numba is not installed")
    torch = pytest.importorskip("torch", reason="a second backend to mix")
    mod = seqcore.backends.get(backend)
    a, b = np.full((1, 3, 2), 0.5), np.ones((1, 3, 2))
    with seqcore.use(backend if backend != "torch" else "numpy"):
        out, pullback = seqcore.vjp(lambda a, b: seqcore.linear_scan(a, b), mod.asarray(a), mod.asarray(b))
        other = np.ones((1, 3, 2)) if backend == "torch" else torch.ones(1, 3, 2, dtype=torch.float64)
        with pytest.raises(TypeError, match=r"^cotangent: got a (numpy.ndarray|torch.Tensor), expected a "
                                            r"(torch.Tensor|numpy.ndarray) like f's output"):
            pullback(other)
        for bad in (np.full((1, 3, 2), 1 + 1j), np.ones((1, 3, 2), bool), np.ones((1, 3, 2), np.int64)):
            with pytest.raises(TypeError, match=rf"^cotangent: got dtype {'torch.' if backend == 'torch' else ''}"
                                                r"(complex128|bool|int64), expected a floating-point array"):
                pullback(mod.asarray(bad))
        # a float cotangent of another float dtype is taken: gradients come back in the arguments' dtype
        da, db = pullback(mod.asarray(np.ones((1, 3, 2), np.float32)))
        want_da, want_db = pullback(mod.asarray(np.ones((1, 3, 2))))  # the oracle: the same cotangent in float64
        np.testing.assert_allclose(mod.to_numpy(db), mod.to_numpy(want_db), rtol=1e-7)
        assert db.dtype == want_db.dtype
        np.testing.assert_allclose(mod.to_numpy(db)[0, :, 0], [1 + 0.5 + 0.25, 1 + 0.5, 1])  # Σ_{s≥t} a^(s-t)


def test_a_scalar_cotangent_may_be_a_real_number_but_not_a_bool_or_complex_number():
    torch = pytest.importorskip("torch", reason="a second backend")
    for x in (np.array([1.0, 2.0]), torch.tensor([1.0, 2.0], dtype=torch.float64)):
        out, pullback = seqcore.vjp(lambda v: (v * v).sum(), x)
        for ok in (1.0, 1, np.int64(1), np.float64(1.0), np.float32(1.0),
                   seqcore.backends.namespace(x).ones((), dtype=x.dtype)):
            np.testing.assert_array_equal(np.asarray(pullback(ok)[0]), [2.0, 4.0])  # d Σv² = 2v
        for bad in (True, 1 + 0j, np.bool_(True), np.complex128(1)):
            with pytest.raises(TypeError, match=rf"^cotangent: got {type(bad).__name__} .*, expected a real number "
                                                "or a floating-point array like f's output"):
                pullback(bad)
    # an integer output carries no gradient: any cotangent of its shape is taken for it, as before
    out, pullback = seqcore.vjp(lambda v: ((v * v).sum(), np.arange(2)), np.array([1.0, 2.0]))
    np.testing.assert_array_equal(pullback((1.0, np.zeros(2, np.int64)))[0], [2.0, 4.0])


@pytest.mark.parametrize("cell, cell_kwargs, bidirectional", [
    ("lstm", (), False), ("diaggru", (("heads", 2),), False), ("leaky", (), False), ("gru", (), True),
])
def test_parameter_count_extrapolates_the_depth_from_three_shallow_stacks(cell, cell_kwargs, bidirectional):
    """Layer 1 reads the inputs, layers 2..L the layer below: alike, so the count is linear in L. The
    count of a deep stack equals the real one, and no stack deeper than 3 layers is built."""
    from seqcore.tree import tree_leaves
    from seqcore.validate import parameter_count
    heads = [models.HeadSpec("a", 3, "last")]
    depths = []

    def build(h, layers=1):
        depths.append(layers)
        return models.SequenceModel(cell, 4, h, heads, num_layers=layers, cell_kwargs=cell_kwargs,
                                    bidirectional=bidirectional)

    for layers, hidden in ((4, 10), (7, 38), (2, 6)):
        real = sum(np.size(leaf) for leaf in tree_leaves(build(hidden, layers).init(np.random.default_rng(0))))
        depths.clear()
        assert parameter_count(build, hidden, layers=layers) == real
        assert max(depths) <= 3
    depths.clear()
    deep = parameter_count(build, 10, layers=10**8)
    assert max(depths) <= 3 and deep == parameter_count(build, 10, layers=1) + (10**8 - 1) * (
        parameter_count(build, 10, layers=2) - parameter_count(build, 10, layers=1))


def test_parameter_count_builds_a_stack_whose_layers_differ_at_its_depth():
    """The linear rule is checked on 3 layers: a model whose third layer adds more than its second
    (here layer l holds l·H weights) is counted by building it, exactly."""
    from seqcore.validate import parameter_count

    class Model:
        def __init__(self, h, layers):
            self.h, self.layers = h, layers

        def init(self, rng):
            return {f"w{l}": np.zeros(l * self.h) for l in range(1, self.layers + 1)}

    assert parameter_count(lambda h, layers=1: Model(h, layers), 5, layers=6) == 5 * (1 + 2 + 3 + 4 + 5 + 6)
    assert parameter_count(lambda h: Model(h, 6), 5, layers=6) == 105  # no layers parameter: its own depth


def test_check_model_fits_names_the_depth_when_one_layer_would_fit(monkeypatch):
    from seqcore import validate
    heads = [models.HeadSpec("a", 2, "last")]

    def build(h, layers=1):
        return models.SequenceModel("elman", 1, h, heads, num_layers=layers)

    monkeypatch.setattr(validate, "physical_memory", lambda: 2 ** 30)
    validate.check_model_fits("hidden", 64, build, 4, 3, layers=3)  # fits
    # elman at hidden 4: 4·1 + 4·4 + 4 (+ 4: two biases) for layer 1, 4·4·2 + 8 = 40 for each later one, 10 for the head
    count = validate.parameter_count(build, 4, layers=10**8)
    assert count == 28 + (10**8 - 1) * 40 + 10
    with pytest.raises(ValueError, match=r"^layers: got 100000000, whose 4e\+09 parameters in 100000000 layers "
                                         r"of 4 hidden units \(with their gradients and optimizer state\) would take"):
        validate.check_model_fits("hidden", 4, build, 4, 3, layers=10**8)
    with pytest.raises(ValueError, match=r"^hidden: got 100000, whose .* parameters in 2 layers"):  # one layer too big
        validate.check_model_fits("hidden", 10**5, build, 4, 3, layers=2)


# -- QA r12 fuzz: dtype None, Cell.constrain, y named as the batch's ------------------------------

@pytest.mark.parametrize("make", [lambda: nn.Linear(2, 3), lambda: nn.Embedding(4, 2), lambda: cells.GRU(2, 3),
                                  lambda: cells.LSTM(2, 3), lambda: models.MLP(2, (3,), 2),
                                  lambda: models.SequenceModel("gru", 2, 3, (H("a", 2, "last"),))])
def test_init_refuses_dtype_none(make):
    """np.dtype(None) is float64: init(rng, None) gave float64 parameters without a word."""
    with pytest.raises(TypeError, match=r"^dtype: got None, expected float32 or float64"):
        make().init(np.random.default_rng(0), None)


@pytest.mark.parametrize("name", ["gru", "lstm", "elman", "mingru", "minlstm", "diaggru", "cifg-lstm"])
def test_cell_constrain_checks_its_params(name):
    """Every cell but LeakyRNN returned whatever it was given: None, missing or extra keys, wrong shapes."""
    cell = cells.make(name, 2, 4)
    params = cell.init(np.random.default_rng(0), np.float64)
    with pytest.raises(TypeError, match=r"^params: got NoneType, expected a dict"):
        cell.constrain(None)
    first = next(iter(params))
    with pytest.raises(ValueError, match=rf"^params: missing '{first}'"):
        cell.constrain({k: v for k, v in params.items() if k != first})
    with pytest.raises(ValueError, match=r"^params: got unused key\(s\) \['extra'\]"):
        cell.constrain({**params, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=rf"^params\['{first}'\]: got shape \(1,\)"):
        cell.constrain({**params, first: np.zeros(1)})
    assert cell.constrain(params) is params  # the identity on valid parameters


def test_sequence_model_names_y_with_its_own_shape():
    """Problems in y were reported as labels/target with the shape of one head's slice: 'labels: got
    shape (3,), expected (2, 3)' for a y of shape (3, 2)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 2))
    m = models.SequenceModel("gru", 2, 4, (H("a", 2, "per_step"), H("b", 3, "per_step")))
    params = m.init(rng, np.float64)
    good = np.array([[[0, 2], [1, 1], [0, 0]], [[1, 0], [1, 2], [0, 1]]])
    cases = [(np.zeros((3, 2), np.int64), ValueError,
              r"^y: got shape \(3, 2\), expected \(2, 3, 2\) \(B, T, heads\) for 2 'per_step' heads$"),
             (good.astype(np.float64), TypeError,
              r"^y: got dtype float64, expected integer class labels \(B, T, heads\) for 2 'per_step' heads$"),
             (None, TypeError, r"^y: got NoneType None, expected an array \(B, T, heads\)"),
             (good + [0, 1], ValueError, r"^y\[\.\.\., 1\]: got labels in \[1, 3\] for head 'b', expected \[0, 2\]$"),
             (good - [1, 0], ValueError, r"^y\[\.\.\., 0\]: got labels in \[-1, 0\] for head 'a', expected \[0, 1\]$")]
    for method in (m.loss, m.losses, m.loss_and_grad, m.evaluate, m.example_losses):
        for y, error, match in cases:
            with pytest.raises(error, match=match):
                method(params, (x, y, None))
        method(params, (x, good, None))
    last = models.SequenceModel("gru", 2, 4, (H("a", 2, "last"), H("b", 2, "last")))  # the joint loss
    with pytest.raises(ValueError, match=r"^y: got shape \(2,\), expected \(2, 2\) \(B, heads\) for 2 'last' heads"):
        last.loss(last.init(rng, np.float64), (x, np.zeros(2, np.int64), None))
    reg = models.SequenceModel("gru", 2, 4, (H("r", 2, "regression", 0.5),))
    rp = reg.init(rng, np.float64)
    with pytest.raises(ValueError, match=r"^y: got shape \(2, 3\), expected \(2, 3, 2\) \(B, T, out\) for 1 "
                                         r"'regression' head$"):
        reg.evaluate(rp, (x, np.zeros((2, 3)), None))
    with pytest.raises(TypeError, match=r"^y: got dtype int64, expected a floating-point array"):
        reg.loss(rp, (x, np.zeros((2, 3, 2), np.int64), None))
    # the per-head slices still reach the losses: the loss is the sum of each head's on its own
    a, b = (models.SequenceModel("gru", 2, 4, (h,)) for h in m.heads)
    pa = {"rnn": params["rnn"], "heads": {"a": params["heads"]["a"]}}
    pb = {"rnn": params["rnn"], "heads": {"b": params["heads"]["b"]}}
    want = float(a.loss(pa, (x, good[..., 0], None))) + float(b.loss(pb, (x, good[..., 1], None)))
    assert float(m.loss(params, (x, good, None))) == pytest.approx(want, rel=1e-12)


def test_mlp_names_the_hidden_size_it_refuses_by_index():
    with pytest.raises(ValueError, match=r"^hidden_sizes\[1\]: got -1, expected an integer >= 1"):
        models.MLP(3, (4, -1), 2)
    with pytest.raises(ValueError, match=r"^hidden_sizes\[0\]: got True"):
        models.MLP(3, [True], 2)
