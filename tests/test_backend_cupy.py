"""The CuPy backend on a GPU: every primitive on ``cupy.ndarray`` equals the NumPy reference,
forward and VJP, and cells (both modes), optimizers, the training loop and the command line run
on the GPU and agree with NumPy.  Oracle: the NumPy reference on the same data (float64; CUDA's
libraries sum in another order, so agreement is to rounding, not bit for bit).

Skips, with the reason, where CuPy or a CUDA GPU is missing (every CI machine).
"""
import json

import numpy as np
import pytest

import seqcore
import seqcore.models  # noqa: F401  (registers losses)
import seqcore.newton  # noqa: F401  (registers the Newton recurrence)
from seqcore import cells, optim, primitives, schedules
from seqcore.tree import tree_leaves, tree_map

from primitive_cases import cases, is_library_primitive

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
    assert got.shape == want.shape and got.dtype == want.dtype, f"{what}: {got.shape} {got.dtype} vs {want.shape} {want.dtype}"
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
        for i, (g, r) in enumerate(zip(got, outs)):
            assert isinstance(g, cp.ndarray), f"{name} case {k} output {i}: got {type(g).__name__}"
            assert_close(cp.asnumpy(g), r, f"{name} case {k} output {i}")
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            if r is None:
                continue
            assert isinstance(g, cp.ndarray), f"{name} case {k} grad {i}: got {type(g).__name__}"
            assert_close(cp.asnumpy(g), r, f"{name} case {k} grad {i}")


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
    for i, (g, w) in enumerate(zip(tree_leaves(_host(got)), tree_leaves(want))):
        assert_close(g, w, f"{name} {mode} output {i}", rtol=1e-9)
    for i, (g, w) in enumerate(zip(tree_leaves(_host(ggot)), tree_leaves(gwant))):
        if w is not None:
            assert_close(g, w, f"{name} {mode} gradient {i}", rtol=1e-9)


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
    for a, b in zip(tree_leaves(ref), tree_leaves(got)):
        assert isinstance(b, cp.ndarray)
        assert_close(cp.asnumpy(b), a, "trained parameters", rtol=1e-9)


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
    assert "accuracy" in evaluated.output
