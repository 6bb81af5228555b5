"""The CuPy backend on a GPU: every primitive on ``cupy.ndarray`` equals the NumPy reference,
forward and VJP, and cells (both modes), optimizers, the training loop and the command line run
on the GPU and agree with NumPy.  Oracle: the NumPy reference on the same data (float64; CUDA's
libraries sum in another order, so agreement is to rounding, not bit for bit).

Skips, with the reason, where CuPy or a CUDA GPU is missing (every CI machine).
"""
import json
import re

import numpy as np
import pytest

import seqcore
import seqcore.models  # noqa: F401  (registers losses)
import seqcore.newton  # noqa: F401  (registers the Newton recurrence)
from seqcore import cells, optim, primitives, schedules
from seqcore.tree import tree_leaves, tree_map

from primitive_cases import cases, is_library_primitive, paired_leaves

cp = pytest.importorskip("cupy", reason="the cupy backend needs CuPy")


@pytest.fixture(scope="module")
def cb():
    try:
        return seqcore.backends.get("cupy")
    except seqcore.backends.BackendUnavailable as exc:
        pytest.skip(str(exc))


def _gpu(x):
    return cp.asarray(x) if isinstance(x, np.ndarray) else x


def _host(tree):
    return tree_map(lambda v: cp.asnumpy(v) if isinstance(v, cp.ndarray) else v, tree,
                    is_leaf=lambda v: isinstance(v, cp.ndarray))


def assert_close(got, want, what, rtol=1e-10):
    """Agreement to rounding, relative to the array's scale; the same NaN/inf positions."""
    got, want = np.asarray(got), np.asarray(want)
    assert (got.shape, got.dtype) == (want.shape, want.dtype), (
        f"{what}: {got.shape} {got.dtype} vs {want.shape} {want.dtype}")
    finite = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), finite), f"{what}: non-finite entries differ"
    if finite.any():
        scale = max(1.0, float(np.max(np.abs(want[finite]))))
        err = float(np.max(np.abs(got[finite] - want[finite]))) / scale
        assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol}"


@pytest.mark.parametrize("name", sorted(n for n in primitives.registry() if is_library_primitive(n)))
def test_primitive_on_cupy_arrays_equals_reference(cb, name):
    rng = np.random.default_rng(1)
    prim = primitives.get(name)
    for k, (args, static) in enumerate(cases(name, rng)):
        ref_out, ref_pb = seqcore.vjp(lambda *a: prim(*a, **static), *args)
        outs = ref_out if isinstance(ref_out, tuple) else (ref_out,)
        cot = tuple(rng.normal(size=np.shape(o)) for o in outs)
        ref_grads = ref_pb(cot if len(cot) > 1 else cot[0])
        out, pb = seqcore.vjp(lambda *a: prim(*a, **static), *[_gpu(a) for a in args])
        grads = pb(tuple(map(_gpu, cot)) if len(cot) > 1 else _gpu(cot[0]))
        got = out if isinstance(out, tuple) else (out,)
        for what, g, r in paired_leaves(got, outs, f"{name} case {k} output"):
            assert isinstance(g, cp.ndarray), f"{what}: got {type(g).__name__}"
            assert_close(cp.asnumpy(g), r, what)
        for what, g, r in paired_leaves(grads, ref_grads, f"{name} case {k} grad"):  # None only where the reference's is
            if r is not None:
                assert isinstance(g, cp.ndarray), f"{what}: got {type(g).__name__}"
                assert_close(cp.asnumpy(g), r, what)


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
@pytest.mark.parametrize("name", sorted(cells.names()))
def test_cells_on_the_gpu_equal_the_reference(cb, name, mode):
    rng = np.random.default_rng(0)
    cell = cells.make(name, 3, 5)
    params = cell.init(rng, np.float64)
    x = rng.normal(size=(2, 33, 3))

    def run(p, x):
        out, pb = seqcore.vjp(lambda p, x: cell.apply(p, x, mode=mode), p, x)
        cot = tree_map(lambda o: np.random.default_rng(5).normal(size=o.shape), _host(out))
        return out, pb(tree_map(cb.asarray, cot) if isinstance(x, cp.ndarray) else cot)

    want, gwant = run(params, x)
    got, ggot = run(tree_map(cb.asarray, params), cb.asarray(x))
    assert all(isinstance(v, cp.ndarray) for v in tree_leaves(got) + tree_leaves(ggot) if v is not None)
    for what, g, w in paired_leaves(_host(got), want, f"{name} {mode} output"):
        assert_close(g, w, what, rtol=1e-9)
    for what, g, w in paired_leaves(_host(ggot), gwant, f"{name} {mode} gradient"):
        if w is not None:
            assert_close(g, w, what, rtol=1e-9)


def test_optimizer_on_cupy_leaves_follows_numpy_leaves(cb):
    rng = np.random.default_rng(2)
    params = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(schedules.wsd(0.1, 30, warmup_steps=5),
                                                                  weight_decay=0.01))
    state, gstate = opt.init(params), opt.init(tree_map(cb.asarray, params))
    p, gp = params, tree_map(cb.asarray, params)
    for t in range(30):
        grads = tree_map(lambda v: np.sin(3 * v + t), p)
        updates, state = opt.update(grads, state, p)
        p = optim.apply_updates(p, updates)
        gupdates, gstate = opt.update(tree_map(lambda v: cp.sin(3 * v + t), gp), gstate, gp)
        gp = optim.apply_updates(gp, gupdates)
    assert all(isinstance(v, cp.ndarray) for v in tree_leaves(gp))
    for key in params:
        assert_close(cp.asnumpy(gp[key]), p[key], key)


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_training_on_the_gpu_equals_training_on_numpy(cb, mode):
    from seqcore.train import TrainConfig, train
    cfg = dict(task="nparity", task_kwargs={"n": 3}, cell="gru", hidden=8, steps=20, batch_size=16,
               eval_every=10, eval_batches=1, eval_batch_size=32, lr=0.02, schedule="cosine", dtype="float64",
               mode=mode)
    ref_summary, ref = train(TrainConfig(**cfg), None, quiet=True)
    summary, got = train(TrainConfig(**cfg, backend="cupy"), None, quiet=True)
    assert summary["steps"] == ref_summary["steps"] == 20
    assert summary["final_accuracy"] == ref_summary["final_accuracy"]
    assert summary["final_loss"] == pytest.approx(ref_summary["final_loss"], rel=1e-9)
    for what, b, a in paired_leaves(got, ref, "trained parameters"):
        assert isinstance(b, cp.ndarray), what
        assert_close(cp.asnumpy(b), a, what, rtol=1e-9)


def test_command_line_trains_resumes_and_evaluates_on_the_gpu(cb, tmp_path):
    click_testing = pytest.importorskip("click.testing", reason="the command line needs click")
    from seqcore_cli.main import main as cli
    from seqcore.runs import load_checkpoint
    runner = click_testing.CliRunner()
    common = ["--task", "nparity", "--task-arg", "n=2", "--cell", "lstm", "--hidden", "6", "--batch-size", "8",
              "--eval-batch-size", "32", "--eval-batches", "1", "--eval-every", "10", "--quiet"]
    out = tmp_path / "gpu"
    first = runner.invoke(cli, ["train", *common, "--backend", "cupy", "--steps", "10", "--out", str(out)])
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(cli, ["resume", str(out), "--steps", "20", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    ref = tmp_path / "cpu"
    whole = runner.invoke(cli, ["train", *common, "--backend", "numpy", "--steps", "10", "--out", str(ref)])
    assert whole.exit_code == 0, whole.output
    assert runner.invoke(cli, ["resume", str(ref), "--steps", "20", "--quiet"]).exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 20 and json.loads((out / "config.json").read_text())["backend"] == "cupy"
    got, want = load_checkpoint(out / "checkpoint.npz")[0], load_checkpoint(ref / "checkpoint.npz")[0]
    assert got.keys() == want.keys()
    for key in want:
        if key.startswith("params/"):  # float32 runs: the GPU's float32 rounding, not bitwise
            np.testing.assert_allclose(got[key], want[key], rtol=1e-3, atol=1e-4, err_msg=key)
    evaluated = runner.invoke(cli, ["eval", str(out), "--backend", "cupy"])
    assert evaluated.exit_code == 0, evaluated.output
    on_numpy = runner.invoke(cli, ["eval", str(out), "--backend", "numpy"])  # the oracle: same checkpoint and batches
    assert on_numpy.exit_code == 0, on_numpy.output
    assert_same_eval(evaluated.output, on_numpy.output)


def eval_figures(output):
    """The header line and ``{head: (accuracy, loss)}`` of the table ``seqcore eval`` prints."""
    header = re.search(r"^.+: step \d+.*; \d+ sequences .+ backend$", output, re.M)
    rows = re.findall(r"^(\S+) +(\d+\.\d+) +(\d+\.\d+)$", output, re.M)
    assert header and rows, f"no header or no 'head accuracy loss' rows in:\n{output}"
    return header[0], {head: (float(acc), float(loss)) for head, acc, loss in rows}


def assert_same_eval(gpu_output, numpy_output):
    """The GPU's ``seqcore eval`` figures are the NumPy backend's on the same checkpoint: the same
    step and batches, the same accuracy, the loss to float32 rounding (a unit of the last printed digit)."""
    (got_header, got), (want_header, want) = eval_figures(gpu_output), eval_figures(numpy_output)
    assert got_header == want_header.replace(", numpy backend", ", cupy backend"), (got_header, want_header)
    assert got.keys() == want.keys(), (got, want)
    for head, (acc, loss) in want.items():
        assert got[head][0] == acc, (head, got[head], want[head])
        assert got[head][1] == pytest.approx(loss, abs=1.5e-4), (head, got[head], want[head])


# -- the CUDA kernels of linear_scan -----------------------------------------------------------

SCAN_RTOL = {np.float32: 1e-4, np.float64: 1e-10}


def _scan_and_vjp(a, b, h0, dh, **static):
    h, pullback = seqcore.vjp(lambda a, b, h0: seqcore.linear_scan(a, b, h0, **static), a, b, h0)
    return (h,) + tuple(pullback(dh))


def assert_every_method_equals_the_reference(scan_and_vjp, args, names, what):
    """``scan_and_vjp(*args)`` on the GPU against NumPy: every method and direction, outputs and
    gradients (``None`` where the reference gives ``None``), in the inputs' dtype and shape."""
    dtype = args[1].dtype.type
    for method in ("sequential", "parallel", "chunked"):
        for reverse in (False, True):
            static = dict(method=method, reverse=reverse, chunk_size=5)
            want = scan_and_vjp(*args, **static)
            got = scan_and_vjp(*map(_gpu, args), **static)
            for name, g, w in zip(names, got, want, strict=True):
                if w is None:
                    assert g is None
                    continue
                assert isinstance(g, cp.ndarray) and g.dtype == dtype and g.shape == w.shape
                assert_close(cp.asnumpy(g), w, f"{what}{name} {method} reverse={reverse} h0={args[2] is not None}",
                             SCAN_RTOL[dtype])


def test_linear_scan_runs_the_cuda_kernels(cb):
    from seqcore.backends.cupy import scan as gpu_scan
    assert cb.primitives["linear_scan"] == gpu_scan.PRIMITIVES["linear_scan"]
    a = cp.full((1, 5, 2), 0.5)
    out, res = gpu_scan.linear_scan_fwd(cp, a, cp.ones_like(a))
    assert res[0] == "cuda"
    cb.synchronize()  # what the benchmarks call before reading a clock
    np.testing.assert_allclose(cp.asnumpy(out[0, :, 0]), [1, 1.5, 1.75, 1.875, 1.9375], rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 7, 3), (3, 1023, 33), (1, 4097, 2), (2, 64, 1), (4, 300, 257)])
def test_linear_scan_kernels_equal_the_reference(cb, shape, dtype):
    rng = np.random.default_rng(sum(shape))
    a = rng.uniform(-1.0, 1.0, shape).astype(dtype)
    a[..., :1][rng.random(a[..., :1].shape) < 0.1] = 0.0  # gates exactly 0 and 1
    a[..., -1:][rng.random(a[..., -1:].shape) < 0.1] = 1.0
    b, dh = rng.normal(size=shape).astype(dtype), rng.normal(size=shape).astype(dtype)
    for h0 in (None, rng.normal(size=(shape[0], shape[2])).astype(dtype)):
        assert_every_method_equals_the_reference(_scan_and_vjp, (a, b, h0, dh), ("h", "da", "db", "dh0"), "")


@pytest.mark.parametrize("method", ["parallel", "chunked"])
def test_chunk_products_that_overflow_fall_back_to_one_chunk(cb, method):
    """a = 1e3 over 16-step chunks overflows float32 (1e48), while the states stay finite (inputs
    only at the last step, cotangents only at the first): chaining would give inf · 0 = NaN."""
    a = np.full((1, 64, 2), 1e3, np.float32)
    b, dh = np.zeros_like(a), np.zeros_like(a)
    b[:, -1], dh[:, 0] = 1.0, 1.0
    want = _scan_and_vjp(a, b, None, dh, method="sequential")
    got = _scan_and_vjp(_gpu(a), _gpu(b), None, _gpu(dh), method=method, chunk_size=16)
    assert all(np.isfinite(w).all() for w in want[:3])
    for g, w in zip(got[:3], want[:3]):
        assert_close(cp.asnumpy(g), w, method, 1e-5)


def test_linear_scan_kernels_take_strided_inputs_and_propagate_nan(cb):
    rng = np.random.default_rng(3)
    a = rng.uniform(-0.9, 0.9, (3, 40, 8))
    b = rng.normal(size=(3, 40, 8))
    a[1, 18, 4] = np.nan
    sl = (slice(None), slice(None, None, 2), slice(1, 7))  # strided views of both
    dh = rng.normal(size=a[sl].shape)
    want = _scan_and_vjp(a[sl], b[sl], None, dh, method="sequential")
    got = _scan_and_vjp(_gpu(a)[sl], _gpu(b)[sl], None, _gpu(dh)[:, ::-1][:, ::-1], method="parallel")
    for g, w in zip(got[:3], want[:3]):
        assert_close(cp.asnumpy(g), w, "strided", 1e-12)


def test_other_dtypes_run_the_reference(cb):
    a = cp.full((2, 6, 3), 0.5, dtype=cp.float16)
    h = seqcore.linear_scan(a, cp.ones_like(a))
    assert h.dtype == cp.float16
    np.testing.assert_allclose(cp.asnumpy(h), seqcore.linear_scan(cp.asnumpy(a), np.ones((2, 6, 3), np.float16)))


def _block_scan_and_vjp(A, b, h0, dh, **static):
    h, pullback = seqcore.vjp(lambda A, b, h0: seqcore.block_scan(A, b, h0, **static), A, b, h0)
    return (h,) + tuple(pullback(dh))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])  # 6: the reference on CuPy arrays
@pytest.mark.parametrize("B,T,G", [(1, 1, 1), (2, 7, 3), (1, 1025, 2), (3, 300, 5)])
def test_block_scan_kernels_equal_the_reference(cb, k, B, T, G, dtype):
    rng = np.random.default_rng(k * 1000 + T)
    A = (rng.uniform(-1.0, 1.0, (B, T, G, k, k)) / k).astype(dtype)  # spectral radius below 1
    b, dh = rng.normal(size=(B, T, G, k)).astype(dtype), rng.normal(size=(B, T, G, k)).astype(dtype)
    for h0 in (None, rng.normal(size=(B, G, k)).astype(dtype)):
        assert_every_method_equals_the_reference(_block_scan_and_vjp, (A, b, h0, dh), ("h", "dA", "db", "dh0"),
                                                 f"k={k} ")


def test_block_scan_runs_the_cuda_kernels_and_copies_transposed_views(cb):
    from seqcore.backends.cupy import scan as gpu_scan
    assert cb.primitives["block_scan"] == gpu_scan.PRIMITIVES["block_scan"]
    rng = np.random.default_rng(4)
    A = rng.uniform(-0.5, 0.5, (2, 40, 3, 2, 2))
    b, dh = rng.normal(size=(2, 40, 3, 2)), rng.normal(size=(2, 40, 3, 2))
    At = np.swapaxes(A, -1, -2)  # as the Newton adjoint passes its Jacobians
    _, res = gpu_scan.block_scan_fwd(cp, cp.swapaxes(_gpu(A), -1, -2), _gpu(b), None, False, "parallel")
    assert res[0] == "cuda"
    want = _block_scan_and_vjp(At, b, None, dh, method="sequential")
    got = _block_scan_and_vjp(cp.swapaxes(_gpu(A), -1, -2), _gpu(b), None, _gpu(dh), method="parallel")
    for g, w in zip(got[:3], want[:3]):
        assert_close(cp.asnumpy(g), w, "transposed view", 1e-12)


def test_block_chunk_products_that_overflow_fall_back_to_one_chunk(cb):
    A = np.zeros((1, 64, 1, 2, 2), np.float32)
    A[..., 0, 0] = A[..., 1, 1] = 1e3  # products overflow float32 over 16-step chunks
    b, dh = np.zeros((1, 64, 1, 2), np.float32), np.zeros((1, 64, 1, 2), np.float32)
    b[:, -1], dh[:, 0] = 1.0, 1.0
    want = _block_scan_and_vjp(A, b, None, dh, method="sequential")
    got = _block_scan_and_vjp(_gpu(A), _gpu(b), None, _gpu(dh), method="chunked", chunk_size=16)
    assert all(np.isfinite(w).all() for w in want[:3])
    for g, w in zip(got[:3], want[:3]):
        assert_close(cp.asnumpy(g), w, "overflow", 1e-5)
