"""Oracle parity: seqcore Elman/LSTM/GRU stacks equal torch.nn.RNN/LSTM/GRU on the same weights."""
import numpy as np
import pytest

import seqcore
from seqcore import cells
from seqcore.cells.stack import stack

torch = pytest.importorskip("torch", reason="PyTorch is the oracle for these tests")

TOL = {np.float64: 1e-10, np.float32: 1e-5}
CASES = [("elman", "tanh"), ("elman", "relu"), ("lstm", None), ("gru", None)]


def _build(kind, nonlin, I, H, L, bi, dtype, rng):
    cls = {"elman": cells.Elman, "lstm": cells.LSTM, "gru": cells.GRU}[kind]
    kw = {"nonlinearity": nonlin} if kind == "elman" else {}
    model = stack(cls, I, H, L, bidirectional=bi, **kw)
    params = model.init(rng, dtype)
    tcls = {"elman": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    tkw = {"nonlinearity": nonlin} if kind == "elman" else {}
    tm = tcls(I, H, num_layers=L, bidirectional=bi, batch_first=True, **tkw).to(
        torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for layer in range(L):
            dirs = [("forward", ""), ("backward", "_reverse")] if bi else [(None, "")]
            for d, suffix in dirs:
                p = params[layer][d] if bi else params[layer]
                for k, v in p.items():
                    getattr(tm, f"{k}_l{layer}{suffix}").copy_(torch.from_numpy(v))
    return model, params, tm


def _our_h0(h0, c0, L, bi, is_lstm):
    """torch's (L * dirs, B, H) initial states → seqcore's per-layer list."""
    out = []
    for layer in range(L):
        def state(d):
            i = layer * (2 if bi else 1) + d
            return (h0[i], c0[i]) if is_lstm else h0[i]
        out.append((state(0), state(1)) if bi else state(0))
    return out


def _torch_order(last, bi, is_lstm):
    """seqcore's per-layer final states → lists of h and of c (None unless LSTM) in torch's
    ``(L * dirs, B, H)`` order of h_n and c_n: layer-major, forward before backward."""
    states = [s for layer in last for s in (layer if bi else (layer,))]
    return ([s[0] for s in states], [s[1] for s in states]) if is_lstm else (states, None)


@pytest.mark.parametrize("kind,nonlin", CASES)
@pytest.mark.parametrize("layers,bi", [(1, False), (2, False), (1, True), (2, True)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parity_outputs_and_gradients(kind, nonlin, layers, bi, dtype):
    """Outputs and final states (h_n, c_n) equal torch's; so do the gradients of a loss on both."""
    rng = np.random.default_rng(7)
    B, T, I, H = 3, 6, 4, 5
    model, params, tm = _build(kind, nonlin, I, H, layers, bi, dtype, rng)
    is_lstm = kind == "lstm"
    nd = layers * (2 if bi else 1)
    x = rng.normal(size=(B, T, I)).astype(dtype)
    h0 = (0.5 * rng.normal(size=(nd, B, H))).astype(dtype)
    c0 = (0.5 * rng.normal(size=(nd, B, H))).astype(dtype)
    w_out = rng.normal(size=(B, T, H * (2 if bi else 1))).astype(dtype)
    w_hn, w_cn = (rng.normal(size=(nd, B, H)).astype(dtype) for _ in range(2))  # cotangents of h_n, c_n

    xt = torch.from_numpy(x).requires_grad_()
    h0t = torch.from_numpy(h0).requires_grad_()
    c0t = torch.from_numpy(c0).requires_grad_()
    out_t, state_t = tm(xt, (h0t, c0t) if is_lstm else h0t)
    hn_t, cn_t = state_t if is_lstm else (state_t, None)
    loss_t = (out_t * torch.from_numpy(w_out)).sum() + (hn_t * torch.from_numpy(w_hn)).sum()
    if is_lstm:
        loss_t = loss_t + (cn_t * torch.from_numpy(w_cn)).sum()
    loss_t.backward()

    def loss(p, x, h0, c0):
        hs, last = model.apply(p, x, _our_h0(h0, c0, layers, bi, is_lstm))
        hn, cn = _torch_order(last, bi, is_lstm)
        val = (hs * w_out).sum() + sum((h * w).sum() for h, w in zip(hn, w_hn))
        return (val + sum((c * w).sum() for c, w in zip(cn, w_cn))) if is_lstm else val

    hs, last = model.apply(params, x, _our_h0(h0, c0, layers, bi, is_lstm))
    hn, cn = _torch_order(last, bi, is_lstm)
    _, pullback = seqcore.vjp(loss, params, x, h0, c0)
    gp, gx, gh0, gc0 = pullback(np.ones((), dtype))
    tol = TOL[dtype]
    np.testing.assert_allclose(hs, out_t.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(np.stack(hn), hn_t.detach().numpy(), rtol=tol, atol=tol)
    if is_lstm:
        np.testing.assert_allclose(np.stack(cn), cn_t.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(gh0, h0t.grad.numpy(), rtol=tol, atol=tol)
    if is_lstm:
        np.testing.assert_allclose(gc0, c0t.grad.numpy(), rtol=tol, atol=tol)
    for layer in range(layers):
        dirs = [("forward", ""), ("backward", "_reverse")] if bi else [(None, "")]
        for d, suffix in dirs:
            g = gp[layer][d] if bi else gp[layer]
            for k, v in g.items():
                ref = getattr(tm, f"{k}_l{layer}{suffix}").grad.numpy()
                np.testing.assert_allclose(v, ref, rtol=tol, atol=tol, err_msg=f"{k} layer {layer}{suffix}")


@pytest.mark.parametrize("kind,nonlin", [("lstm", None), ("gru", None)])
def test_bidirectional_stack_with_lengths_equals_packed_sequences(kind, nonlin):
    """Right-padded sequences of several lengths: with ``lengths`` the backward direction starts at
    each sequence's last step, as torch's packed sequences do; outputs at real steps and every
    gradient of a loss on them match (float64)."""
    rng = np.random.default_rng(3)
    B, T, I, H, L = 4, 7, 3, 5, 2
    model, params, tm = _build(kind, nonlin, I, H, L, True, np.float64, rng)
    lengths = np.array([7, 2, 5, 1])
    valid = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float64)[..., None]
    x = rng.normal(size=(B, T, I)) * valid  # what is in the padding must not matter: zeros here
    w_out = rng.normal(size=(B, T, 2 * H)) * valid

    xt = torch.from_numpy(x).requires_grad_()
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.from_numpy(lengths), batch_first=True,
                                                     enforce_sorted=False)
    out_t, _ = torch.nn.utils.rnn.pad_packed_sequence(tm(packed)[0], batch_first=True, total_length=T)
    (out_t * torch.from_numpy(w_out)).sum().backward()

    def loss(p, x):
        hs, _ = model.apply(p, x, lengths=lengths)
        return (hs * w_out).sum(), hs

    (_, hs), pullback = seqcore.vjp(loss, params, x)
    gp, gx = pullback((np.ones(()), np.zeros_like(hs)))
    np.testing.assert_allclose(hs * valid, out_t.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gx * valid, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    for layer in range(L):
        for d, suffix in (("forward", ""), ("backward", "_reverse")):
            for k, v in gp[layer][d].items():
                ref = getattr(tm, f"{k}_l{layer}{suffix}").grad.numpy()
                np.testing.assert_allclose(v, ref, rtol=1e-10, atol=1e-10, err_msg=f"{k} layer {layer}{suffix}")
    # without lengths the backward direction reads the padding first: the outputs differ
    assert not np.allclose(model.apply(params, x)[0] * valid, hs * valid)
