"""The README's first screen and CI stay in sync."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _first_screen_commands():
    text = (ROOT / "README.md").read_text()
    head = text.split("\n---\n")[0]
    blocks = re.findall(r"```bash\n(.*?)```", head, re.S)
    return [ln for b in blocks for ln in b.splitlines() if ln.strip() and not ln.startswith("#")]


def test_first_screen_has_exactly_two_commands():
    cmds = _first_screen_commands()
    assert len(cmds) == 2, cmds
    assert "seqcore train" in cmds[0] and "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim():
    test_cmd = _first_screen_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci


def _python_blocks():
    """Every ```python block of the README as a script: a block that starts with
    "# continues the example above" runs after the one before it."""
    import textwrap
    text = (ROOT / "README.md").read_text()
    blocks, prev = [], ""
    for m in re.finditer(r"```python\n(.*?)```", text, re.S):
        own = textwrap.dedent(m.group(1))
        code = prev + own if own.startswith("# continues the example above") else own
        prev = code
        blocks.append((text[:m.start()].count("\n") + 1, code, own))
    return blocks


# needs the Fashion-MNIST files and minutes: the same run_continual path runs on synthetic data
# in tests/test_continual.py
NOT_RUN = ('dataset="fashion-mnist"',)
# examples that need a GPU: run (and checked) only where the cupy backend loads
NEEDS_GPU = ("import cupy",)

# What each example's comments promise, checked after the example has run (keyed by a line
# that names the example): an example that runs but no longer does what the README says fails.
CHECKS = {
    'hs = seqcore.linear_scan(a, b, method="parallel")': """
import numpy as np
ref, ref_pullback = seqcore.vjp(lambda a, b: seqcore.linear_scan(a, b), cupy.asnumpy(a), cupy.asnumpy(b))
assert isinstance(hs, cupy.ndarray) and isinstance(da, cupy.ndarray)
for got, want in zip((hs, da, db), (ref,) + tuple(ref_pullback(np.ones_like(ref)))):
    err = float(np.max(np.abs(cupy.asnumpy(got) - want))) / float(np.max(np.abs(want)))
    assert err < 1e-4, err
""",
    'h = seqcore.linear_scan(a, b, method="parallel")': """
ref = np.zeros_like(b); prev = np.zeros_like(b[:, 0])
for t in range(b.shape[1]):
    prev = a[:, t] * prev + b[:, t]; ref[:, t] = prev
np.testing.assert_allclose(h, ref, rtol=1e-10, atol=1e-12)
assert hs.shape == (4, 50, 16) and np.array_equal(hs[:, -1], h_last)
assert set(grads) == set(params) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
assert all(grads[k].shape == params[k].shape for k in params) and dx.shape == x.shape

def lstm64(p, x):  # torch.nn.LSTM's equations (gates i, f, g, o) in float64, written out
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    H = p["weight_hh"].shape[1]
    h = c = np.zeros((x.shape[0], H))
    sig = lambda z: 1 / (1 + np.exp(-z))
    out = []
    for t in range(x.shape[1]):
        z = x[:, t] @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
        i, f, g, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1), h, c

x64 = x.astype(np.float64)
ref_hs, ref_h, ref_c = lstm64(params, x64)
for got, want in ((hs, ref_hs), (h_last, ref_h), (c_last, ref_c)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
assert abs(float(loss) / float((ref_hs ** 2).sum()) - 1) < 1e-5
# the vjp's gradients against central finite differences of the float64 oracle, a few coordinates each
eps = 1e-5
loss64 = lambda p, xx: float((lstm64(p, xx)[0] ** 2).sum())
for k in list(params) + ["x"]:
    got = dx if k == "x" else grads[k]
    for flat in (0, got.size // 2, got.size - 1):
        idx = np.unravel_index(flat, got.shape)
        p_up = {q: np.array(v, np.float64) for q, v in params.items()}
        p_down = {q: v.copy() for q, v in p_up.items()}
        x_up, x_down = x64.copy(), x64.copy()
        up, down = (x_up, x_down) if k == "x" else (p_up[k], p_down[k])
        up[idx] += eps
        down[idx] -= eps
        fd = (loss64(p_up, x_up) - loss64(p_down, x_down)) / (2 * eps)
        # float32 gradients: measured relative errors below 5e-7
        assert abs(float(got[idx]) - fd) <= 1e-5 * abs(fd) + 1e-6, (k, idx, float(got[idx]), fd)
""",
    'seqcore.use("numba")              # default from now on': """
assert "numpy" in seqcore.backends.available()
assert seqcore.backends.get().name == "numba"
""",
    'hs_newton, _ = cell.apply(params, x, mode="parallel")': """
assert hs.shape == (2, 100, 16)
np.testing.assert_allclose(hs_newton, hs, rtol=1e-9, atol=1e-9)
assert set(dparams) == set(params) and dx.shape == x.shape
# the float64 gradients against central finite differences of the loss, a few coordinates each
eps = 1e-6
for k in list(params) + ["x"]:
    got = dx if k == "x" else dparams[k]
    assert got.shape == (x if k == "x" else params[k]).shape
    for flat in (0, got.size // 2, got.size - 1):
        idx = np.unravel_index(flat, got.shape)
        p_up, p_down = dict(params), dict(params)
        x_up, x_down = x.copy(), x.copy()
        if k == "x":
            up, down = x_up, x_down
        else:
            up, down = p_up[k], p_down[k] = params[k].copy(), params[k].copy()
        up[idx] += eps
        down[idx] -= eps
        fd = (float(loss(p_up, x_up)) - float(loss(p_down, x_down))) / (2 * eps)
        assert abs(float(got[idx]) - fd) <= 1e-6 * max(1e-3, abs(fd)), (k, idx, float(got[idx]), fd)
assert cells.names() == ['elman', 'lstm', 'gru', 'leaky', 'mingru', 'minlstm', 'diaggru', 'cifg-lstm']
""",
    'hs, info = seqcore.newton_scan(cell, params, x, h0=None,': """
seq, _ = cell.apply(params, x, mode="sequential")
np.testing.assert_allclose(hs, seq, rtol=1e-4, atol=1e-4)
assert info.converged and 1 <= info.iterations <= 6 and len(info.residuals) == info.iterations + 1  # initial guess first
""",
    'opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(lr))': """
for k, v in params.items():
    np.testing.assert_allclose(v, 1.0, atol=1e-3)
""",
    'state = optim.state_from_arrays(opt.init(params), data)': """
assert optim.step_count(state) == 10_000
""",
    'task = tasks.make("nparity", n=[2, 3, 4])': """
assert task.input_size == 1 and [h.name for h in task.heads] == ["n2", "n3", "n4"]
assert batch.x.shape[0] == 256 and batch.y.shape == (256, 3)
# the labels recomputed: head k is the parity of the last N_k bits before the sequence's end
for i in range(256):
    length = int(np.flatnonzero(batch.mask[i])[-1]) + 1
    bits = batch.x[i, :, 0]
    assert 4 + 2 <= length < 4 * 4 + 2 and set(np.unique(bits)) <= {0.0, 1.0} and not bits[length:].any()
    for k, n in enumerate((2, 3, 4)):
        assert batch.y[i, k] == int(bits[length - n:length].sum()) % 2, (i, n)
assert "nparity" in tasks.names() and tasks.make(**tasks.config(task)) == task
""",
    'cur = make_curriculum("multi-head", make("nparity", n=2), threshold=0.98)': """
assert advanced and cur.level == 3 and [h.name for h in cur.heads()] == ["n2", "n3"] and not cur.finished
""",
    'stream = permuted_stream(x_train, y_train, x_test, y_test, n_experiences=10, seed=0)': """
assert len(stream) == 10 and xb.shape == (128, 28, 28) and yb.shape == (128,)
first, second = stream[0].train[0], stream[1].train[0]
assert not np.array_equal(first, second) and np.array_equal(np.sort(first.ravel()), np.sort(second.ravel()))
""",
    'out, pullback = seqcore.vjp(lambda p, x: cell.apply(p, x)[0], params, x)': """
with seqcore.use("numpy"):
    ref = cell.apply(params, x)[0]
np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
""",
    'class L2(Hooks):': """
import json, pathlib
import numpy as np
from seqcore.runs import load_checkpoint
assert summary["status"] == "completed" and summary["steps"] == 80
records = [json.loads(line) for line in pathlib.Path("runs/python-api/metrics.jsonl").read_text().splitlines()]
assert records[-1]["step"] == 80
arrays, meta = load_checkpoint("runs/python-api/checkpoint.npz")
assert meta["step"] == 80 and np.array_equal(arrays["params/rnn/0/weight_hh"], params["rnn"][0]["weight_hh"])
""",
    'heap.retain()': """
import platform, sys
assert heap.retain() is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")
""",
}


def _cupy_unavailable() -> str | None:
    """Why the cupy backend cannot load here, or None where it loads."""
    import seqcore
    try:
        seqcore.backends.get("cupy")
    except seqcore.backends.BackendUnavailable as exc:
        return str(exc)
    return None


def _run_blocks():
    """The examples this file runs: every ```python block but the NOT_RUN ones."""
    return [b for b in _python_blocks() if not any(marker in b[1] for marker in NOT_RUN)]


def test_readme_examples_are_all_collected():
    blocks = _python_blocks()
    assert len(_run_blocks()) >= 10
    # NOT_RUN leaves out the Fashion-MNIST example only: a marker that also matched others would hide them
    assert len(blocks) - len(_run_blocks()) == 1


@pytest.mark.parametrize("line,code,own", [pytest.param(*b, id=f"README.md:{b[0]}") for b in _run_blocks()])
def test_readme_python_examples_run_and_keep_their_promises(tmp_path, line, code, own):
    import subprocess
    import sys
    if any(marker in own for marker in NEEDS_GPU):
        reason = _cupy_unavailable()
        if reason is not None:
            pytest.skip(f"README.md:{line} needs the cupy backend, which cannot load here: {reason}")
    checks = [check for key, check in CHECKS.items() if key in own]
    assert len(checks) == 1, f"README.md:{line}: expected one entry of CHECKS for this example, found {len(checks)}"
    result = subprocess.run([sys.executable, "-c", code + "\n" + checks[0]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"README.md:{line}: {result.stderr[-2000:]}"


def test_the_learners_table_lists_every_hyperparameter():
    """Each learner's row names all its hyperparameters (a row "as DER + ..." / "ER's + ..." takes
    that learner's row's names too)."""
    from seqcore import learners
    section = (ROOT / "README.md").read_text().split("\n### Learners\n")[1].split("\n### ")[0]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z0-9-]+)` \|.*$", section, re.M)}
    based_on = {"derpp": "der", "refresh": "replay"}
    for name in learners.names():
        assert name in rows, f"no README row for the learner {name!r}"
        text = rows[name] + rows.get(based_on.get(name, ""), "")
        missing = [k for k in learners.hyperparameters(name) if f"`{k}`" not in text]
        assert not missing, f"README row of {name!r} misses {missing}"
