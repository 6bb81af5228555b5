"""The `seqcore` command line end to end through click's test runner.

Runs are tiny (hidden 6, batches of 8, 40 steps) on the NumPy backend; oracles are the
library itself (the CLI must do exactly what `seqcore.train.train` does), runs of other
lengths (an interrupted run resumed equals an uninterrupted one, bit for bit) and the
files a run writes.
"""
from __future__ import annotations

import json
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner

from seqcore import backends, cells, tasks
from seqcore import train as train_module
from seqcore.runs import load_checkpoint, params_to_arrays
from seqcore.train import Hooks, TrainConfig, Run, train as library_train
from seqcore_cli import common
from seqcore_cli.main import build_config, default_backend, main

TINY = ["--backend", "numpy", "--hidden", "6", "--batch-size", "8", "--eval-batch-size", "32",
        "--eval-batches", "1", "--steps", "40", "--eval-every", "10"]
TINY_CONFIG = dict(backend="numpy", hidden=6, batch_size=8, eval_batch_size=32, eval_batches=1, steps=40,
                   eval_every=10)


@pytest.fixture(autouse=True)
def _no_blas_pin_note(monkeypatch):
    """Output as on a machine without an OPENBLAS_CORETYPE pin (only its note would differ)."""
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args):
    result = invoke(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def params_of(run_dir) -> dict[str, np.ndarray]:
    arrays, _ = load_checkpoint(run_dir / "checkpoint.npz")
    return {k: v for k, v in arrays.items() if k.startswith("params/")}


def numpy_head_scores(model, params, batches, names):
    """Per-head mean cross-entropy and accuracy of last-step heads over ``batches``, weighted by
    sequences, written out in NumPy (labels of head k in column k of y when there are several)."""
    totals = {n: [0.0, 0.0] for n in names}
    count = 0
    for x, y, mask in batches:
        outs = model.outputs(params, x, mask, heads=list(names))
        for k, name in enumerate(names):
            logits = np.asarray(outs[name], dtype=np.float64)
            labels = np.asarray(y)[:, k] if len(names) > 1 else np.asarray(y).reshape(-1)
            shifted = logits - logits.max(axis=1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            totals[name][0] += -logp[np.arange(len(labels)), labels].sum()
            totals[name][1] += (logits.argmax(axis=1) == labels).sum()
        count += len(x)
    return {n: {"loss": t[0] / count, "accuracy": t[1] / count} for n, t in totals.items()}


def checkpoint_params(run_dir):
    """The checkpoint's parameters as the model's tree (via the library's own loader)."""
    from seqcore.train import load_run as library_load_run
    run = library_load_run(run_dir)
    return run.model, run.trainer.params


def assert_one_line_error(result):
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # not an escaped exception
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output


# -- listings -------------------------------------------------------------------------------------

def test_backends_lists_every_backend_with_its_availability():
    out = ok("backends").stdout.splitlines()
    table = out[1:out.index("")]
    rows = {ln.split()[0]: ln.split() for ln in table}
    for info in backends.info():
        row = rows[info["name"]]
        assert row[1] == ("yes" if info["available"] else "no")
        if info["available"]:
            assert row[2] == info["version"]
        else:
            assert info["reason"].split()[0] in " ".join(row[3:])
    assert len(rows) == len(backends.names())
    kernels = [ln for ln in out if ln.startswith("numba kernels' matrix products: ")]
    if "numba" in backends.available():  # how the kernels multiply matrices (panels.py)
        from seqcore.backends.numba import panels
        assert kernels == [f"numba kernels' matrix products: packed-panel micro-kernels, {panels.VECTOR_BYTES}-byte "
                           "vectors (no BLAS; products narrower than one panel: NumPy's)"]
        out.remove(kernels[0])
    assert out[-2].startswith("OpenBLAS kernels: ")  # a pin (OPENBLAS_CORETYPE) can halve GEMM speed
    from seqcore.backends import heap
    assert out[-1] == ("heap: freed memory kept for the next step" if heap._mallopt() is not None
                       else "heap: glibc defaults (freed memory may go back to the OS between steps)")


def test_tasks_and_cells_list_their_names():
    out = ok("tasks").stdout.splitlines()
    listed = [ln.split()[0] for ln in out if ln and not ln.startswith("curricula")]
    assert listed == list(tasks.names())
    assert out[-1] == "curricula: " + ", ".join(tasks.curriculum_names())
    first = out[0].split(None, 1)[1]
    assert first == tasks.describe("nparity")
    fields = ok("tasks", "ndms").stdout.splitlines()[2:]
    assert fields[-1] == "the task's seed is the run's --seed"  # not a --task-arg (TrainConfig refuses it)
    assert dict(ln.strip().split(" = ") for ln in fields[:-1]) == {k: json.dumps(v) for k, v in
                                                                   tasks.fields("ndms").items() if k != "seed"}
    out = ok("cells").stdout.splitlines()
    assert [ln.split()[0] for ln in out] == list(cells.names())
    assert all(len(ln.split(None, 1)) == 2 for ln in out)  # every cell has a description
    assert "tau_init = 1.0" in ok("cells", "leaky").stdout


def test_default_backend_prefers_numba_then_numpy(monkeypatch):
    monkeypatch.delenv("SEQCORE_BACKEND", raising=False)
    real_get = backends.get

    def no_numba(name=None):
        if name == "numba":
            raise backends.BackendUnavailable("no numba here")
        return real_get(name)

    monkeypatch.setattr(backends, "get", no_numba)
    assert default_backend() == "numpy"
    monkeypatch.setattr(backends, "get", lambda name=None: None)
    assert default_backend() == "numba"
    monkeypatch.setenv("SEQCORE_BACKEND", "torch")
    assert default_backend() == "torch"
    cfg, _ = build_config(None, {"task": None})
    assert cfg.backend == "torch"


# -- a tiny run -----------------------------------------------------------------------------------

def test_tiny_run_writes_the_run_directory_and_matches_the_library(tmp_path):
    out = tmp_path / "run"
    result = ok("train", *TINY, "--task-arg", "n=[2,3]", "--out", out)
    expected_cfg = TrainConfig(**TINY_CONFIG, task_kwargs={"n": [2, 3]})
    assert json.loads((out / "config.json").read_text()) == expected_cfg.to_dict()

    metrics = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [10, 20, 30, 40]
    assert all({"step", "loss", "lr", "level", "eval", "time"} <= set(m) for m in metrics)
    assert all(set(m["eval"]) == {"n2", "n3"} for m in metrics)

    summary = json.loads((out / "summary.json").read_text())
    assert {"status", "steps", "wall_time_s", "final_loss", "final_accuracy", "heads", "max_level"} <= set(summary)
    assert summary["status"] == "completed" and summary["steps"] == 40
    assert summary["heads"] == metrics[-1]["eval"]
    assert summary["final_accuracy"] == pytest.approx(np.mean([h["accuracy"] for h in summary["heads"].values()]))

    arrays, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["step"] == 40
    run = Run(expected_cfg)
    assert {k for k in arrays if k.startswith("params/")} == set(params_to_arrays(run.trainer.params))
    assert any(k.startswith("opt_state/") for k in arrays)

    # the CLI trains exactly what the library trains
    lib_summary, lib_params = library_train(expected_cfg)
    for key, value in params_to_arrays(lib_params).items():
        np.testing.assert_array_equal(arrays[key], value, err_msg=key)
    assert lib_summary["heads"] == summary["heads"]

    # one line per evaluation (not a terminal), then the summary
    text = result.stdout
    assert [ln.split()[1] for ln in text.splitlines() if ln.startswith("step ")] == ["10", "20", "30", "40"]
    assert "status          completed" in text and "steps           40 in" in text
    assert f"{summary['final_loss']:.4f}" in text and str(out) in text
    for head, r in summary["heads"].items():
        assert any(ln.split()[:2] == [head, f"{r['accuracy']:.4f}"] for ln in text.replace("last evaluation", "")
                   .splitlines()), head
    quiet = ok("train", *TINY, "--out", tmp_path / "quiet", "--quiet").stdout
    assert not any(ln.startswith(("step ", "seqcore train")) for ln in quiet.splitlines())


def test_eval_reproduces_the_last_evaluation_and_draws_fresh_batches(tmp_path):
    out = tmp_path / "run"
    ok("train", *TINY, "--task-arg", "n=[2,3]", "--out", out, "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    same = json.loads(ok("eval", out, "--run-eval-set", "--json").stdout)
    assert same["step"] == 40 and same["heads"] == summary["heads"]
    result = invoke("eval", out, "--run-eval-set", "--seed", 1)  # the fixed batches take no seed
    assert_one_line_error(result)
    assert result.stderr.startswith("Error: --seed: got 1 with --run-eval-set, expected one of them")
    # other sizes scored another set under the label "the run's evaluation set"
    for option, value, field, own in (("--batches", 2, "eval_batches", 1), ("--batch-size", 16, "eval_batch_size", 32)):
        result = invoke("eval", out, "--run-eval-set", option, value)
        assert_one_line_error(result)
        assert result.stderr.startswith(f"Error: {option}: got {value} with --run-eval-set, expected the run's "
                                        f"{field} ({own})")
    assert json.loads(ok("eval", out, "--run-eval-set", "--batches", 1, "--json").stdout) == same  # its own size
    fresh = [json.loads(ok("eval", out, "--json", "--seed", s, "--batches", 2).stdout)["heads"] for s in (1, 1, 2)]
    assert fresh[0] == fresh[1] and fresh[0] != fresh[2] and fresh[0] != summary["heads"]
    # oracle: the scores recomputed in NumPy from the checkpoint on the batches eval drew, and on the
    # run's fixed evaluation set
    model, params = checkpoint_params(out)
    drawn = []
    task_class = type(tasks.make("nparity"))
    real_sample = task_class.sample
    with pytest.MonkeyPatch.context() as m:
        m.setattr(task_class, "sample", lambda self, rng, b: drawn.append(real_sample(self, rng, b)) or drawn[-1])
        again = json.loads(ok("eval", out, "--json", "--seed", 1, "--batches", 2).stdout)["heads"]
    assert again == fresh[0] and [len(b[0]) for b in drawn] == [32, 32]
    want = numpy_head_scores(model, params, drawn, ["n2", "n3"])
    for head in ("n2", "n3"):
        assert fresh[0][head]["loss"] == pytest.approx(want[head]["loss"], rel=1e-5), head
        assert fresh[0][head]["accuracy"] == pytest.approx(want[head]["accuracy"], abs=1e-12), head
    eval_set = list(tasks.make("nparity", n=[2, 3], seed=0).eval_batches(32, 1))
    assert len(eval_set) == 1
    assert not any(np.array_equal(b[0], e[0]) for b in drawn for e in eval_set if b[0].shape == e[0].shape)
    want = numpy_head_scores(model, params, eval_set, ["n2", "n3"])
    for head in ("n2", "n3"):
        assert same["heads"][head]["loss"] == pytest.approx(want[head]["loss"], rel=1e-5), head
        assert same["heads"][head]["accuracy"] == pytest.approx(want[head]["accuracy"], abs=1e-12), head
    text = ok("eval", out, "--seed", 1, "--batches", 2).stdout
    assert "64 sequences" in text
    assert any(ln.split()[:2] == ["n3", f"{fresh[0]['n3']['accuracy']:.4f}"] for ln in text.splitlines())


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be caught on Windows")
def test_sigterm_stops_a_run_like_ctrl_c(tmp_path):
    """`kill PID` (a scheduler's stop): summary "interrupted", exit 130, the run resumes."""
    import signal
    import subprocess
    import time
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", "from seqcore_cli.main import main; main()", "train", *map(str, TINY),
                             "--steps", "1000000", "--eval-every", "5", "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 2
                   and (out / "checkpoint.npz").exists()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "seqcore resume" in stderr
    step = load_checkpoint(out / "checkpoint.npz")[1]["step"]
    # a checkpoint at every evaluation (the metrics line of one is written just before it)
    assert step >= 5 and step % 5 == 0
    ok("resume", out, "--steps", step + 5, "--quiet")
    assert load_checkpoint(out / "checkpoint.npz")[1]["step"] == step + 5


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    ok("train", *TINY, "--out", tmp_path / "whole", "--quiet")

    def interrupt_at_25(self, trainer, batch, loss):
        if trainer.step_count == 25:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Hooks, "after_step", interrupt_at_25)
        result = invoke("train", *TINY, "--out", tmp_path / "cut", "--quiet")
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert "seqcore resume" in result.stderr and "step 20" in result.stderr
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "interrupted"
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.npz")[1]["step"] == 20

    result = ok("resume", tmp_path / "cut")
    assert "from step 20 to 40" in result.stdout
    assert [ln.split()[1] for ln in result.stdout.splitlines() if ln.startswith("step ")] == ["30", "40"]
    whole, cut = params_of(tmp_path / "whole"), params_of(tmp_path / "cut")
    assert whole.keys() == cut.keys()
    for key in whole:
        np.testing.assert_array_equal(cut[key], whole[key], err_msg=key)
    strip = lambda d: [{k: v for k, v in json.loads(ln).items() if k != "time"}  # noqa: E731
                       for ln in (d / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "cut") == strip(tmp_path / "whole")

    assert_one_line_error(invoke("resume", tmp_path / "cut"))  # nothing left to do
    ok("resume", tmp_path / "cut", "--steps", 50, "--quiet")
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.npz")[1]["step"] == 50


# -- config files ---------------------------------------------------------------------------------

def test_config_file_json_and_toml_with_command_line_override(tmp_path):
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"task": "ndms", "hidden": 9, "batch-size": 8, "steps": 30, "clip": 0.5,
                              "task_kwargs": {"n": [2, 3]}, "cell_kwargs": {}, "out": "from-file"}))
    cfg, out = build_config(str(js), {"hidden": 7, "clip": common.NONE, "task": None}, task_args=[("n_max", 5)])
    assert (cfg.task, cfg.hidden, cfg.batch_size, cfg.steps, cfg.clip, out) == ("ndms", 7, 8, 30, None, "from-file")
    assert cfg.task_kwargs == {"n": [2, 3], "n_max": 5}
    cfg, _ = build_config(str(js), {"task": "nparity"})  # another task: the file's task fields do not apply
    assert cfg.task == "nparity" and cfg.task_kwargs == {}

    toml = tmp_path / "run.toml"
    toml.write_text(f'task = "nparity"\nhidden = 6\nbatch_size = 8\nsteps = 20\neval_every = 10\n'
                    f'eval_batch_size = 32\neval_batches = 1\nbackend = "numpy"\nout = "{tmp_path / "toml-run"}"\n'
                    '[task_kwargs]\nn = [2, 3]\n')
    ok("train", "--config", toml, "--steps", 30, "--task-arg", "n=[2,4]", "--quiet")
    saved = json.loads((tmp_path / "toml-run" / "config.json").read_text())
    assert saved == TrainConfig(**{**TINY_CONFIG, "steps": 30}, task_kwargs={"n": [2, 4]}).to_dict()
    assert json.loads((tmp_path / "toml-run" / "summary.json").read_text())["steps"] == 30


@pytest.mark.parametrize("text, suffix, message", [
    ("{not json", ".json", "not valid JSON"),
    ("hidden = = 3", ".toml", "not valid TOML"),
    ('{"hiden": 3}', ".json", "unknown keys ['hiden']"),
    ('hidden = "big"', ".toml", "hidden: got 'big' (str), expected an integer"),
    ('{"lr": true}', ".json", "lr: got True (bool), expected a number"),
    ("[1, 2]", ".json", "expected an object/table"),
])
def test_bad_config_files(tmp_path, text, suffix, message):
    path = tmp_path / f"cfg{suffix}"
    path.write_text(text)
    result = invoke("train", "--config", path, "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert message in result.stderr and str(path) in result.stderr
    assert not (tmp_path / "r").exists()


def test_key_value_parsing():
    kv = common.KeyValue()
    assert kv.convert("n=[2,3]", None, None) == ("n", [2, 3])
    assert kv.convert("n=4", None, None) == ("n", 4)
    assert kv.convert("tau_init=2.5", None, None) == ("tau_init", 2.5)
    assert kv.convert("dataset=fashion-mnist", None, None) == ("dataset", "fashion-mnist")
    assert kv.convert("flag=true", None, None) == ("flag", True)
    assert kv.convert("x=NaN", None, None) == ("x", "NaN")
    assert kv.convert("path=a=b", None, None) == ("path", "a=b")
    for bad in ("n", "=3", "two words=1"):
        with pytest.raises(click.BadParameter):
            kv.convert(bad, None, None)


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["train", "--task", "nope"], "'nope' is not one of"),
    (["train", "--lr", "-1"], "lr: got -1.0, expected a positive finite number"),
    (["train", "--hidden", "abc"], "'abc' is not a valid integer"),
    (["train", "--hidden", "0"], "hidden: got 0"),
    (["train", "--steps", "10", "--warmup", "10"], "warmup: got 10"),
    (["train", "--task-arg", "n"], "expected KEY=VALUE"),
    (["train", "--task-arg", "colour=red"], "unknown field(s) colour"),
    (["train", "--cell", "leaky", "--cell-arg", "tau_init=0.5"], "tau_init"),
    (["train", "--curriculum", "multi-head", "--task", "copy"], "expected a task with an N (nparity, ndms)"),
    (["train", "--clip", "lots"], "expected a number or 'none'"),
    (["train", "--task", "image", "--data-dir", "a", "--task-arg", "data_dir=b"],
     "--data-dir: got 'a' and --task-arg data_dir='b', expected one of them"),
    (["report", ".", "--plot", ""], "--plot: got '', expected a file name"),
    (["train", "--batch-size", "1000000000"], "--batch-size: got 1000000000, whose activations"),
    (["train", "--hidden", "100000"], "--hidden: got 100000, whose 4e+10 parameters"),  # before any output
    (["train", "--hidden", "10000000"], "--hidden: got 10000000, whose"),  # the cause, not the batch
    (["resume", "no/such/dir"], "does not exist"),
    (["eval", "no/such/dir"], "does not exist"),
    (["frobnicate"], "No such command"),
])
def test_bad_options_give_one_error_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert_one_line_error(result)
    assert message in result.stderr
    assert result.stdout == "" and not (tmp_path / "runs").exists()  # refused before the header line


def test_eval_refuses_a_batch_that_cannot_fit_in_memory(tmp_path):
    ok("train", *TINY, "--steps", 4, "--out", tmp_path / "r", "--quiet")
    result = invoke("eval", tmp_path / "r", "--batch-size", 10**9)  # was an out-of-memory kill, exit 137
    assert_one_line_error(result)
    assert "Error: --batch-size: got 1000000000, whose activations" in result.stderr


def test_a_config_file_in_out_is_not_taken_for_a_run(tmp_path):
    """`--config exp/config.json --out exp`: the user's file is kept, the run refused until --overwrite;
    a run killed before its first checkpoint (its config.json alone) starts again with the same command."""
    exp = tmp_path / "exp"
    exp.mkdir()
    mine = json.dumps({**TINY_CONFIG, "task": "nparity", "steps": 4})
    (exp / "config.json").write_text(mine)
    result = invoke("train", "--config", exp / "config.json", "--out", exp, "--quiet")
    assert_one_line_error(result)
    assert "holds config.json but no checkpoint.npz" in result.stderr and "--overwrite" in result.stderr
    assert (exp / "config.json").read_text() == mine and sorted(p.name for p in exp.iterdir()) == ["config.json"]
    ok("train", *TINY, "--steps", 4, "--out", tmp_path / "r", "--quiet")
    for name in ("checkpoint.npz", "metrics.jsonl", "summary.json"):  # as a kill before the step-0 checkpoint
        (tmp_path / "r" / name).unlink()
    ok("train", *TINY, "--steps", 4, "--out", tmp_path / "r", "--quiet")
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["steps"] == 4


def test_run_directory_errors(tmp_path, monkeypatch):
    assert_one_line_error(invoke("resume", tmp_path))  # no config.json
    assert_one_line_error(invoke("eval", tmp_path))
    ok("train", *TINY, "--steps", 10, "--out", tmp_path / "r", "--quiet")
    before = {f.name: f.read_bytes() for f in (tmp_path / "r").iterdir() if f.is_file() and f.name != ".lock"}
    result = invoke("train", *TINY, "--seed", 1, "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert "--overwrite" in result.stderr
    assert {f.name: f.read_bytes() for f in (tmp_path / "r").iterdir()
            if f.is_file() and f.name != ".lock"} == before  # the refused run touched nothing
    ok("train", *TINY, "--steps", 10, "--seed", 1, "--out", tmp_path / "r", "--overwrite", "--quiet")
    assert json.loads((tmp_path / "r" / "config.json").read_text())["seed"] == 1  # replaced by the new run
    assert [json.loads(ln)["step"] for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()] == [10]
    _, seeded = library_train(TrainConfig(**{**TINY_CONFIG, "steps": 10, "seed": 1}))
    for key, value in params_to_arrays(seeded).items():
        np.testing.assert_array_equal(params_of(tmp_path / "r")[key], value, err_msg=key)

    def unavailable(name=None):
        raise backends.BackendUnavailable(f"backend {name!r} cannot load: pip install 'seqcore[cuda]'")

    monkeypatch.setattr(backends, "get", unavailable)
    result = invoke("train", *TINY, "--backend", "cupy", "--out", tmp_path / "c")
    assert_one_line_error(result)
    assert "seqcore[cuda]" in result.stderr


def test_traceback_flag_reraises():
    result = invoke("--traceback", "train", "--lr", "-1")
    assert isinstance(result.exception, ValueError)
    assert "lr: got -1.0, expected a positive finite number" in str(result.exception)
    assert result.exit_code != 0 and "Error: " not in result.output  # the exception, not the one-line form


# -- NaN guard ------------------------------------------------------------------------------------

def test_nan_gradient_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    def nan_at_25(self, trainer, grads, batch):
        if trainer.step_count == 25:
            from seqcore.tree import tree_map
            return tree_map(lambda g: g * np.nan, grads)
        return grads

    with monkeypatch.context() as m:
        m.setattr(Hooks, "transform_grads", nan_at_25)
        result = invoke("train", *TINY, "--out", tmp_path / "nan", "--quiet")
    assert_one_line_error(result)
    assert "diverged after step 25: a gradient" in result.stderr and "gradient" in result.stderr
    assert "status          diverged" in result.stdout
    assert json.loads((tmp_path / "nan" / "summary.json").read_text())["status"] == "diverged"
    arrays, meta = load_checkpoint(tmp_path / "nan" / "checkpoint.npz")
    assert meta["step"] == 20
    # the kept checkpoint is the step-20 state: equal to a clean 20-step run (constant schedule)
    ok("train", *TINY, "--steps", 20, "--out", tmp_path / "clean", "--quiet")
    clean = params_of(tmp_path / "clean")
    for key in clean:
        assert np.isfinite(arrays[key]).all()
        np.testing.assert_array_equal(arrays[key], clean[key], err_msg=key)


def test_absurd_learning_rate_diverges(tmp_path):
    result = invoke("train", *TINY, "--lr", "1e38", "--out", tmp_path / "big")
    assert_one_line_error(result)
    assert "diverged after step" in result.stderr
    assert json.loads((tmp_path / "big" / "summary.json").read_text())["status"] == "diverged"
    kept = params_of(tmp_path / "big")
    init = params_to_arrays(Run(TrainConfig(**TINY_CONFIG)).trainer.params)  # checkpoint of step 0
    for key, value in init.items():
        assert np.isfinite(kept[key]).all()
        np.testing.assert_array_equal(kept[key], value, err_msg=key)


# -- optional command modules ---------------------------------------------------------------------

def test_optional_commands_missing_broken_or_present(tmp_path, monkeypatch):
    pkg = tmp_path / "plugins_for_cli_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "broken.py").write_text("import a_package_that_is_not_installed\n")
    (pkg / "good.py").write_text(
        "import click\n"
        "def register(group):\n"
        "    @group.command('continual')\n"
        "    def continual():\n"
        "        click.echo('continual ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("broken", "good"):
        monkeypatch.delitem(sys.modules, f"plugins_for_cli_test.{name}", raising=False)

    group = click.Group(commands={"train": click.Command("train")})
    common.register_optional(group, "plugins_for_cli_test.missing", ("continual", "report"))
    assert set(group.commands) == {"train"}  # no module: nothing added, nothing said

    group = common.SeqcoreGroup()
    common.register_optional(group, "plugins_for_cli_test.broken", ("continual", "report"))
    assert set(group.commands) == {"continual", "report"}
    result = CliRunner().invoke(group, ["report", "--anything"])
    assert_one_line_error(result)
    assert "a_package_that_is_not_installed" in result.stderr and "broken" in result.stderr

    group = common.SeqcoreGroup()
    common.register_optional(group, "plugins_for_cli_test.good", ("continual", "report"))
    assert set(group.commands) == {"continual"}
    assert CliRunner().invoke(group, ["continual"]).stdout == "continual ran\n"


def test_blas_pin_benchmark_compares_a_pinned_and_a_free_child():
    import subprocess
    import sys
    from seqcore.backends import blas
    from seqcore_cli.bench import benchmarks_dir
    if not blas.openblas_cores():
        pytest.skip("NumPy is not linked against OpenBLAS here: no pin to compare")
    out = subprocess.run([sys.executable, str(benchmarks_dir() / "blas_pin.py"), "--rounds", "1", "--pin", "Haswell"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    pinned_line = next(ln for ln in lines if ln.startswith("pinned:"))
    if "OPENBLAS_CORETYPE='Haswell' (set, no effect" in pinned_line:  # AVX2: OpenBLAS picks Haswell unpinned too
        assert any(ln.startswith("note: OPENBLAS_CORETYPE=Haswell selects the kernels") for ln in lines)
    else:
        assert "OPENBLAS_CORETYPE='Haswell' (pinned)" in pinned_line
    assert any(ln.startswith("unpinned:") and "OPENBLAS_CORETYPE unset" in ln for ln in lines)
    rows = [ln for ln in lines if ln.strip().startswith("(") and " x " in ln and "us" not in ln]
    assert len(rows) == 6
    for row in rows:  # pinned us, unpinned us, ratio = pinned / unpinned (twice)
        p, u, r = (float(v) for v in row.split(")")[-1].split()[:3])
        assert p > 0 and u > 0 and abs(r - p / u) < 0.01 + 0.01 * r


def test_sequence_products_benchmark_reports_the_kernel_each_product_takes():
    """The benchmark's path column follows the dispatch rule of ``products`` (panels from one whole
    panel of output columns, weight gradients only up to TN_MAX_ROW_BYTES wide), and its ratio
    column is its two times' quotient."""
    import subprocess
    import sys
    pytest.importorskip("numba", reason="the products benchmark needs the numba backend")
    from seqcore.backends.numba import panels
    from seqcore_cli.bench import benchmarks_dir
    NR = panels.panel_width(np.float32)
    H = NR // 4  # projection 4H = one panel; the gradients (H columns) stay OpenBLAS
    out = subprocess.run([sys.executable, str(benchmarks_dir() / "sequence_products.py"), "--repeats", "1",
                          "--shapes", f"4,8,{H}", f"2,8,{NR}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [ln.rsplit(")", 1)[1].split() for ln in out.stdout.splitlines() if ln.rstrip().endswith(("panels", "OpenBLAS"))]
    assert [r[-1] for r in rows] == ["panels", "OpenBLAS", "OpenBLAS", "panels", "panels", "panels"]
    for blas_ms, ours_ms, ratio, *_ in rows:  # times shown to ±0.0005 ms, the ratio to ±0.005
        b, o, r = float(blas_ms), float(ours_ms), float(ratio)
        assert (b - 5e-4) / (o + 5e-4) - 0.005 <= r <= (b + 5e-4) / max(o - 5e-4, 1e-9) + 0.005, (b, o, r)


def test_bench_runs_the_training_benchmark_and_prints_ratios():
    from click.testing import CliRunner
    from seqcore_cli.bench import SUITES
    from seqcore_cli.main import main
    import subprocess
    import sys
    # the command runs scripts in subprocesses: check one end to end through the console entry
    out = subprocess.run([sys.executable, "-c", "from seqcore_cli.main import main; main()", "bench", "--quick",
                          "training"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ratios vs numpy" in out.stdout and "leaky" in out.stdout
    # the table: steps/s per backend, then each backend's ratio to numpy, which must be their quotient
    lines = out.stdout.splitlines()
    header = next(ln for ln in lines if ln.startswith("cell") and "ratios vs numpy" in ln)
    names = [w.split()[-1] for w in header.split("steps/s")[:-1]]
    assert names[0] == "numpy" and set(names) <= set(backends.names())
    rows = {ln.split()[0]: ln.split() for ln in lines[lines.index(header) + 1:] if ln.split()}
    assert set(rows) == {"leaky", "gru"}  # the quick variant's cells
    for cell, row in rows.items():
        rates = dict(zip(names, map(float, row[1:1 + len(names)])))
        assert all(r > 0 for r in rates.values()), row
        ratios = dict(w.rstrip("x").split("=") for w in row[1 + len(names):])
        assert set(ratios) == set(names) - {"numpy"}, row
        n = rates["numpy"]
        for b, r in ratios.items():  # rates shown to ±0.05, ratios to ±0.005: the rounding's worst case
            assert abs(float(r) - rates[b] / n) <= 0.005 + 0.05 / n + 0.05 * rates[b] / n ** 2 + 1e-9, row
    bad = CliRunner().invoke(main, ["bench", "nope"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert set(SUITES) == {"scan", "primitives", "rnn", "newton", "training", "memory", "minimal", "blas-pin", "products", "gpu"}
    from seqcore_cli.bench import benchmarks_dir
    assert all((benchmarks_dir() / script).is_file() for script, _ in SUITES.values())



# -- QA fixes -------------------------------------------------------------------------------------

def test_resume_with_steps_continues_a_run_stopped_on_its_target(tmp_path):
    out = tmp_path / "tgt"
    ok("train", *TINY, "--target-accuracy", "0.01", "--out", out, "--quiet")
    assert json.loads((out / "summary.json").read_text())["status"] == "target-reached"
    result = invoke("resume", out)
    assert_one_line_error(result)
    assert "pass --steps N" in result.stderr
    result = ok("resume", out, "--steps", 30)
    assert "from step 10 to 30" in result.stdout and "past its earlier stop (target-reached)" in result.stdout
    assert [ln.split()[1] for ln in result.stdout.splitlines() if ln.startswith("step ")] == ["20", "30"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("completed", 30)
    # oracle: an uninterrupted 30-step run without a target (constant schedule: the budget changes nothing)
    ok("train", *TINY, "--steps", 30, "--out", tmp_path / "whole", "--quiet")
    whole, resumed = params_of(tmp_path / "whole"), params_of(out)
    assert whole.keys() == resumed.keys()
    for key in whole:
        np.testing.assert_array_equal(resumed[key], whole[key], err_msg=key)
    assert json.loads((out / "config.json").read_text())["target_accuracy"] is None


@pytest.mark.parametrize("stop_args, status", [(["--target-accuracy", "0.01"], "target-reached"),
                                               (["--curriculum", "single-head", "--curriculum-arg", "threshold=0.01",
                                                 "--curriculum-arg", "max_n=3", "--task-arg", "n=2"],
                                                "curriculum-finished")])
def test_a_run_killed_after_its_early_stop_is_not_trained_on(tmp_path, stop_args, status):
    # killed between the final checkpoint and summary.json: the checkpoint holds the stop
    out = tmp_path / "stop"
    ok("train", *TINY, *stop_args, "--out", out, "--quiet")
    written = json.loads((out / "summary.json").read_text())
    assert written["status"] == status and written["steps"] < 40
    before = params_of(out)
    (out / "summary.json").unlink()
    result = ok("resume", out)
    assert "its summary was not written, rebuilding it" in result.stdout
    rebuilt = json.loads((out / "summary.json").read_text())
    assert (rebuilt["status"], rebuilt["steps"], rebuilt["heads"]) == (status, written["steps"], written["heads"])
    after = params_of(out)
    assert all(np.array_equal(after[k], before[k]) for k in before)
    assert_one_line_error(invoke("resume", out))  # now described by its summary: needs --steps


def test_a_checkpoint_of_another_dtype_than_the_config_is_refused_naming_it(tmp_path):
    out = tmp_path / "dt"
    ok("train", *TINY, "--steps", 20, "--out", out, "--quiet")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "dtype": "float64"}))
    metrics = (out / "metrics.jsonl").read_text()
    for args in (["resume", out, "--steps", 30], ["eval", out]):
        result = invoke(*args)
        assert_one_line_error(result)
        assert "checkpoint.npz" in result.stderr and "has dtype float32, expected float64" in result.stderr
    assert (out / "metrics.jsonl").read_text() == metrics  # refused before anything was rewritten


def test_resume_steps_the_config_refuses_names_the_option(tmp_path, monkeypatch):
    out = tmp_path / "warm"

    def interrupt_at_15(self, trainer, batch, loss):
        if trainer.step_count == 15:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:  # 40 steps with 25 of warmup, interrupted after the checkpoint of step 10
        m.setattr(Hooks, "after_step", interrupt_at_15)
        invoke("train", *TINY, "--schedule", "warmup-cosine", "--warmup", "25", "--out", out, "--quiet")
    result = invoke("resume", out, "--steps", 24)
    assert_one_line_error(result)
    assert "--steps: got 24, which this run's config refuses (warmup: got 25" in result.stderr
    assert "seqcore resume:" not in result.stdout  # refused before the header
    # a schedule field the shorter total cannot hold: the option is named too, not config.json
    out = tmp_path / "wsd"
    with monkeypatch.context() as m:
        m.setattr(Hooks, "after_step", interrupt_at_15)
        invoke("train", *TINY, "--schedule", "wsd", "--schedule-arg", "cooldown_steps=20", "--out", out, "--quiet")
    result = invoke("resume", out, "--steps", 18)
    assert_one_line_error(result)
    assert "--steps: got 18, which this run's config refuses (cooldown_steps: got 20" in result.stderr


def test_resume_steps_notes_a_learning_rate_the_rebuilt_schedule_changes(tmp_path):
    """cosine over 10 steps ends at 0; over 20 it is at half the peak at step 10: said, not silent."""
    ok("train", *TINY, "--steps", 10, "--schedule", "cosine", "--lr", "0.02", "--out", tmp_path / "cos", "--quiet")
    note = "note: the cosine schedule is rebuilt over 20 steps: the learning rate at step 10 goes from 0 to 0.01"
    assert note in ok("resume", tmp_path / "cos", "--steps", 20).stderr
    # --quiet drops the progress lines, not this note: the run's course changes
    ok("train", *TINY, "--steps", 10, "--schedule", "cosine", "--lr", "0.02", "--out", tmp_path / "cos-q", "--quiet")
    quiet = ok("resume", tmp_path / "cos-q", "--steps", 20, "--quiet")
    assert note in quiet.stderr and "seqcore resume:" not in quiet.stdout
    ok("train", *TINY, "--steps", 10, "--out", tmp_path / "const", "--quiet")
    assert "note: the" not in ok("resume", tmp_path / "const", "--steps", 20).stderr  # constant: unchanged


def test_resume_under_another_blas_thread_count_says_so(tmp_path, monkeypatch):
    """A product's rounding depends on OpenBLAS's thread count: a resume under another is not
    bit-identical to an uninterrupted run, and says so (also with --quiet). The count is simulated,
    so this runs whatever BLAS NumPy has."""
    from seqcore.runs import save_checkpoint
    monkeypatch.setattr("seqcore.runs.blas_threads", lambda: 3)
    out = tmp_path / "run"
    ok("train", *TINY, "--steps", 10, "--out", out, "--quiet")
    arrays, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["blas_threads"] == 3  # recorded by the run's checkpoint
    save_checkpoint(out / "checkpoint.npz", arrays, {**meta, "blas_threads": 5})
    result = ok("resume", out, "--steps", 12, "--quiet")
    assert ("note: the checkpoint was written with 5 BLAS threads, this process runs 3: the resumed run will not be "
            "bit-identical to an uninterrupted one; to match, start it with OPENBLAS_NUM_THREADS=5 in the environment"
            "\n") in result.stderr
    assert load_checkpoint(out / "checkpoint.npz")[1]["blas_threads"] == 3  # its new checkpoint: this process's
    assert "BLAS threads" not in ok("resume", out, "--steps", 14, "--quiet").stderr  # written under this count


def test_summary_table_prints_values_logged_as_null():
    from seqcore_cli.main import _head_table
    lines = _head_table({"n2": {"loss": None, "accuracy": None}, "sum": {"loss": 0.5}})
    assert lines[1].split() == ["n2", "nan", "nan"] and lines[2].split() == ["sum", "-", "0.5000"]


@pytest.mark.parametrize("args, config, message", [
    (["--task-arg", "seed=5"], None, "--task-arg: got seed=5, expected no seed"),
    ([], {"task_kwargs": {"seed": 3}}, "--task-arg (or task_kwargs in {file}): got seed=3"),
    (["--cell-arg", "bogus=1"], None, "--cell-arg: got ['bogus'], unknown keys for the 'lstm' cell"),
    (["--cell", "leaky", "--cell-arg", "bogus=1"], None,
     "--cell-arg: got ['bogus'], unknown keys for the 'leaky' cell; expected some of ['nonlinearity', 'slope', "
     "'tau_init']"),
    ([], {"cell_kwargs": {"bogus": 1}}, "--cell-arg (or cell_kwargs in {file}): got ['bogus']"),
    (["--curriculum-arg", "threshold=0.5"], None, "--curriculum-arg: got 'threshold' for the 'fixed' curriculum"),
    (["--data-dir", "somewhere"], None, "--data-dir: task 'nparity' reads no files, expected a task that does (image)"),
    (["--dataset", "mnist"], None, "--dataset: task 'nparity' reads no files, expected a task that does (image)"),
    (["--task", "image", "--data-dir", "no-such-dir"], None,
     "no-such-dir/train-images-idx3-ubyte[.gz]: file not found"),
    (["--cell", "diaggru", "--cell-arg", "heads=3", "--task", "lorenz96", "--task-arg", "dim=8"], None,
     "--cell-arg heads: got 3, expected a divisor of input_size=8"),  # checked against the real layer sizes
    (["--task-arg", "n=0"], None, "--task-arg n: got 0, expected >= 1"),
    (["--curriculum", "single-head", "--curriculum-arg", "threshold=2"], None,
     "--curriculum-arg threshold: got 2, expected <= 1.0"),
    (["--cell", "leaky", "--cell-arg", "tau_init=0.5"], None, "--cell-arg tau_init: got 0.5, expected a finite"),
    ([], {"task_kwargs": {"n": 0}}, "--task-arg n (or task_kwargs in {file}): got 0"),
])
def test_field_errors_name_the_option_before_anything_is_printed(tmp_path, args, config, message):
    extra = []
    if config is not None:
        (tmp_path / "cfg.json").write_text(json.dumps(config))
        extra = ["--config", tmp_path / "cfg.json"]
        message = message.format(file=tmp_path / "cfg.json")
    result = invoke("train", *TINY, *args, *extra, "--out", tmp_path / "r")  # not --quiet
    assert_one_line_error(result)
    assert message in result.stderr
    assert result.stdout == ""  # no "seqcore train: ..." header before the error
    assert not (tmp_path / "r").exists()


def test_seed_error_says_where_the_task_seed_comes_from():
    result = invoke("train", "--task-arg", "seed=5")
    assert_one_line_error(result)
    assert "(--seed on the command line)" in result.stderr


def test_max_n_is_the_largest_n_reached(tmp_path):
    # threshold 0.01: the curriculum advances 2 -> 3 at the only (final) evaluation
    out = tmp_path / "mh"
    result = ok("train", *TINY, "--steps", 10, "--curriculum", "multi-head", "--curriculum-arg", "threshold=0.01",
                "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["level"], summary["max_level"]) == (3, 3)
    assert "max N           3\n" in result.stdout
    # the anti curriculum moves down: the largest N is where it started
    result = ok("train", *TINY, "--steps", 20, "--task-arg", "n=4", "--curriculum", "anti",
                "--curriculum-arg", "threshold=0.01", "--out", tmp_path / "anti")
    assert "max N           4 (now at N=2)\n" in result.stdout


@pytest.mark.parametrize("command", ["train", "continual"])
def test_unwritable_out_names_the_option(tmp_path, command):
    (tmp_path / "afile").write_text("")
    args = (TINY if command == "train" else ["--dataset", "synthetic", "--experiences", 2, "--steps", 2])
    result = invoke(command, *args, "--quiet", "--out", tmp_path / "afile" / "sub")
    assert_one_line_error(result)
    assert f"out: got '{tmp_path / 'afile' / 'sub'}', where no run directory can be written" in result.stderr
    assert "(--out)" in result.stderr
    if command == "train":  # without --quiet: refused before the header line is printed
        loud = invoke(command, *args, "--out", tmp_path / "afile" / "sub")
        assert_one_line_error(loud)
        assert loud.stdout == ""


def test_unknown_seqcore_backend_names_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQCORE_BACKEND", "bogus")
    result = invoke("train", "--steps", 2, "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert "Error: $SEQCORE_BACKEND: got 'bogus', expected one of" in result.stderr
    assert not (tmp_path / "r").exists()
    result = invoke("backends")  # still lists the backends, then says what is wrong
    assert_one_line_error(result)
    assert "$SEQCORE_BACKEND" in result.stderr and result.stdout.startswith("name ")
    ok("train", *TINY, "--steps", 2, "--quiet", "--out", tmp_path / "explicit")  # --backend numpy given


def _write_tiny_idx(directory):
    rng = np.random.default_rng(0)
    directory.mkdir()
    for split, n in (("train", 24), ("t10k", 12)):
        tasks.write_idx(directory / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 4, 5), dtype=np.uint8))
        tasks.write_idx(directory / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))


def test_data_dir_and_dataset_set_the_image_task_fields(tmp_path):
    _write_tiny_idx(tmp_path / "idx")
    small = ["--backend", "numpy", "--hidden", 4, "--batch-size", 4, "--steps", 4, "--eval-every", 2,
             "--eval-batches", 1, "--eval-batch-size", 12]
    ok("train", "--task", "image", "--dataset", "mnist", "--data-dir", tmp_path / "idx", *small,
       "--out", tmp_path / "img", "--quiet")
    cfg = TrainConfig(task="image", task_kwargs={"data_dir": str(tmp_path / "idx"), "dataset": "mnist"},
                      backend="numpy", hidden=4, batch_size=4, steps=4, eval_every=2, eval_batches=1,
                      eval_batch_size=12)
    assert json.loads((tmp_path / "img" / "config.json").read_text()) == cfg.to_dict()
    lib_summary, _ = library_train(cfg)  # the same run as the library's, on the files of --data-dir
    summary = json.loads((tmp_path / "img" / "summary.json").read_text())
    assert summary["heads"] == lib_summary["heads"] and summary["steps"] == 4
    # its test split has no fresh batches: eval's --seed would change nothing, so it is refused
    tested = json.loads(ok("eval", tmp_path / "img", "--json").stdout)["heads"]
    assert tested == json.loads(ok("eval", tmp_path / "img", "--json", "--run-eval-set").stdout)["heads"]
    result = invoke("eval", tmp_path / "img", "--seed", 3)
    assert_one_line_error(result)
    assert result.stderr.startswith("Error: --seed: got 3 for task 'image', which is evaluated on its data set's "
                                    "test split")


def _run_with_closed_stdout(*args):
    import os
    import subprocess
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written: every write fails with EPIPE
    try:
        return subprocess.run([sys.executable, "-c", "from seqcore_cli.main import main; main()", *map(str, args)],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)


def test_a_closed_stdout_ends_quietly_like_sigpipe(tmp_path):
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "summary.json").write_text(json.dumps({"accuracy_matrix": [[0.5, 0.5], [0.4, 0.6]]}))
    for args in (["report", tmp_path / "rep", "--no-plot"], ["tasks"]):  # inside and outside user_errors
        result = _run_with_closed_stdout(*args)
        assert (result.returncode, result.stderr) == (common.BROKEN_PIPE_STATUS, ""), args


def test_multi_head_cell_fields_are_checked_against_the_real_sizes(tmp_path):
    # heads=2 divides the task's 8 inputs and the 8 hidden units: accepted, and trained
    result = invoke("train", *TINY, "--cell", "diaggru", "--cell-arg", "heads=2", "--task", "lorenz96",
                    "--task-arg", "dim=8", "--task-arg", "length=6", "--hidden", "8", "--steps", "4",
                    "--quiet", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "config.json").read_text())["cell_kwargs"] == {"heads": 2}
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["steps"] == 4
    params = params_of(tmp_path / "r")
    # two heads of 8/2 = 4 inputs each, mapping to 3 gates x 8/2 = 12 units
    assert params["params/rnn/0/weight_ih"].shape == (2, 12, 4)
    cfg = TrainConfig(**{**TINY_CONFIG, "hidden": 8, "steps": 4}, cell="diaggru", cell_kwargs={"heads": 2},
                      task="lorenz96", task_kwargs={"dim": 8, "length": 6})
    _, lib_params = library_train(cfg)  # the CLI trained exactly the library's run
    assert params.keys() == params_to_arrays(lib_params).keys()
    for key, value in params_to_arrays(lib_params).items():
        np.testing.assert_array_equal(params[key], value, err_msg=key)


# -- adversarial inputs ---------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--clip", "inf"], "Error: --clip: got inf, expected a positive finite number or None"),
    (["--momentum", "2"], "Error: --momentum: got 2.0, expected a number in [0, 1)"),  # ignored by adam, still wrong
    (["--optimizer", "sgd", "--momentum", "nan"], "Error: --momentum: got nan, expected a number in [0, 1)"),
    (["--optimizer", "nesterov", "--momentum", "0"], "Error: --momentum: got 0.0 with optimizer 'nesterov'"),
    (["--weight-decay", "nan"], "Error: --weight-decay: got nan, expected a finite number >= 0"),
    (["--batch-size", "-1"], "Error: --batch-size: got -1, expected an integer >= 1"),
    (["--eval-every", "0"], "Error: --eval-every: got 0, expected an integer >= 1"),
    (["--warmup", "-1"], "Error: --warmup: got -1, expected an integer >= 0"),
])
def test_optimizer_and_run_fields_name_their_option_before_anything_is_printed(tmp_path, args, message):
    result = invoke("train", *TINY, *args, "--out", tmp_path / "r")  # not --quiet: no header line either
    assert_one_line_error(result)
    assert message in result.stderr
    assert result.stdout == "" and not (tmp_path / "r").exists()


def test_config_file_values_name_the_file_and_key(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"seed": -1, "checkpoint_every": 5}))
    result = invoke("train", *TINY, "--config", path, "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert f"Error: seed (in {path}): got -1, expected an integer >= 0" in result.stderr
    path.write_text(json.dumps({"lr": -2.0}))  # the command line's value wins, and is the one named
    result = invoke("train", *TINY, "--config", path, "--lr", "-3", "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert "Error: --lr: got -3.0" in result.stderr


@pytest.mark.parametrize("text, message", [
    ('{"steps": 3, "steps": 4}', "key 'steps' given twice"),
    ('{"batch-size": 3, "batch_size": 4}', "keys 'batch-size' and 'batch_size' both set batch_size"),
])
def test_config_file_setting_a_field_twice_is_refused(tmp_path, text, message):
    path = tmp_path / "cfg.json"
    path.write_text(text)
    result = invoke("train", *TINY, "--config", path, "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert message in result.stderr and str(path) in result.stderr


def test_an_unstable_lorenz_task_is_refused_before_the_run_starts(tmp_path):
    result = invoke("train", "--task", "lorenz96", "--task-arg", "forcing=1e30", "--task-arg", "dim=8",
                    "--steps", 2, "--backend", "numpy", "--out", tmp_path / "lz")
    assert_one_line_error(result)
    assert "Error: --task-arg forcing: got forcing=1e+30" in result.stderr, result.stderr
    assert result.stdout == "" and not (tmp_path / "lz").exists()


def test_out_of_memory_and_empty_out_are_one_line(tmp_path, monkeypatch):
    def too_big(self, cfg, hooks=None):  # what --hidden 100000000 does, without allocating gigabytes first
        raise MemoryError("Unable to allocate 284. PiB for an array with shape (400000000, 100000000)")

    with monkeypatch.context() as m:
        m.setattr(Run, "__init__", too_big)
        m.setattr(train_module, "check_sizes", lambda *a: None)  # its own refusal is tested elsewhere
        result = invoke("train", *TINY, "--hidden", 10**8, "-q", "--out", tmp_path / "big")
    assert_one_line_error(result)
    assert "out of memory (Unable to allocate 284. PiB" in result.stderr and "--hidden" in result.stderr
    monkeypatch.chdir(tmp_path)
    result = invoke("train", *TINY, "-q", "--out", "")
    assert_one_line_error(result)
    assert "Error: --out: got '', expected a directory path" in result.stderr
    (tmp_path / "e.json").write_text('{"out": ""}')
    result = invoke("train", *TINY, "-q", "--config", tmp_path / "e.json")
    assert_one_line_error(result)
    assert f"Error: out: got '' in {tmp_path / 'e.json'}, expected a directory path" in result.stderr
    assert not (tmp_path / "runs").exists()  # not the default directory instead


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "run"
    ok("train", *TINY, "--steps", 10, "--eval-every", 5, "--out", out, "-q")
    return out


def _replace_checkpoint(run, arrays=None, **meta_changes):
    from seqcore.runs import save_checkpoint
    old_arrays, meta = load_checkpoint(run / "checkpoint.npz")
    meta.update(meta_changes)
    meta = {k: v for k, v in meta.items() if v is not None}
    arrays = old_arrays if arrays is None else arrays(old_arrays)
    if "step" not in meta:  # save_checkpoint refuses such a meta: the damaged file is written by hand
        np.savez(run / "checkpoint.npz", **arrays, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        return
    save_checkpoint(run / "checkpoint.npz", arrays, meta)


def _edit_json(name, change):
    def edit(run):
        data = json.loads((run / name).read_text())
        (run / name).write_text(json.dumps(change(data)))
    return edit


def _no_meta(run):
    arrays, _ = load_checkpoint(run / "checkpoint.npz")
    np.savez(run / "checkpoint.npz", **arrays)


DAMAGE = {  # name -> (edit of a finished run's directory, message of both resume and eval or None for eval)
    "config a list": (lambda run: (run / "config.json").write_text("[1]"),
                      "config.json: config: got a list, expected an object of TrainConfig fields", True),
    "config type": (_edit_json("config.json", lambda d: {**d, "hidden": "x"}),
                    "config.json: hidden: got 'x', expected an integer >= 1", True),
    "summary a list": (lambda run: (run / "summary.json").write_text("[1]"),
                       "summary.json: got a JSON list, expected an object", False),
    "metrics line": (lambda run: (run / "metrics.jsonl").write_text('[1]\n{"step": 5}\n'),
                     "metrics.jsonl: line 1: got a JSON list, expected one object per line", False),
    "no meta": (_no_meta, "unreadable checkpoint (no __meta__ record", True),
    "no step": (lambda run: _replace_checkpoint(run, step=None), "__meta__ step: got None", True),
    "no curriculum": (lambda run: _replace_checkpoint(run, curriculum=None), "no 'curriculum' record", True),
    "bad rng": (lambda run: _replace_checkpoint(run, rng={"x": 1}), "checkpoint.npz: cannot be restored", True),
    "nan params": (lambda run: _replace_checkpoint(run, arrays=lambda a: {
        k: v * np.nan if k.startswith("params/") else v for k, v in a.items()}), "holds NaN or Inf", True),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_run_directories_give_one_line_naming_the_file(tmp_path, finished_run, damage):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    edit, message, also_eval = DAMAGE[damage]
    edit(run)
    result = invoke("resume", run, "--steps", 20, "-q")
    assert_one_line_error(result)
    assert message in result.stderr
    if also_eval:
        result = invoke("eval", run)
        assert_one_line_error(result)
        assert message in result.stderr


def test_resume_drops_a_partial_last_metrics_line(tmp_path, finished_run):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "lo')  # a run killed while appending
    ok("resume", run, "--steps", 15, "-q")
    assert [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()] == [5, 10, 15]


def test_eval_draws_its_batches_as_it_scores_them(finished_run, monkeypatch):
    from seqcore_cli import main as cli_main
    drawn = []
    task_class = type(tasks.make("nparity"))
    real_sample = task_class.sample

    def counting_sample(self, rng, batch_size):
        drawn.append(batch_size)
        return real_sample(self, rng, batch_size)

    def first_batch_only(run, batches):
        next(iter(batches))
        return {"n2": {"loss": 0.5, "accuracy": 0.5}}

    monkeypatch.setattr(task_class, "sample", counting_sample)
    monkeypatch.setattr(cli_main, "evaluate_run", first_batch_only)
    ok("eval", finished_run, "--batches", 1000, "--batch-size", 4)
    assert drawn == [4]  # not 1000 batches held in memory before the first is scored


CONTINUAL = ["continual", "--dataset", "synthetic", "--synthetic", "n_train=40", "--synthetic", "n_test=20",
             "--experiences", 2, "--steps", 2, "--eval-every", 1, "--eval-size", 10, "--hidden", 4,
             "--batch-size", 8, "--backend", "numpy", "-q"]


@pytest.mark.parametrize("args, message", [
    (["--clip", "inf"], "Error: --clip: got inf, expected a positive finite number or None"),
    (["--synthetic", "n_classes=1"], "Error: --synthetic n_classes: got 1, expected an integer >= 2"),
    (["--learner", "replay", "--replay-batch", "0"], "Error: --replay-batch: got 0, expected >= 1"),
    (["--stream", "split", "--experiences", 20],
     "Error: --experiences: got 20, expected an int in [1, 8] (8: the number of classes in the data)"),
    # found before the run directory is written, not at the first step
    (["--batch-size", 64], "Error: --batch-size: got 64, expected at most 40, the training samples of experience 0"),
    (["--out", ""], "Error: --out: got '', expected a directory path"),
])
def test_continual_errors_name_the_option(tmp_path, args, message):
    result = invoke(*CONTINUAL, "--out", tmp_path / "c", *args)
    assert_one_line_error(result)
    assert message in result.stderr
    assert not (tmp_path / "c").exists()


def test_continual_resume_of_a_damaged_or_training_run_is_one_line(tmp_path, finished_run):
    result = invoke("continual", "--resume", "--out", finished_run)
    assert_one_line_error(result)
    assert f"holds a `seqcore train` run, not a continual one; continue it with `seqcore resume {finished_run}`" \
        in result.stderr
    out = tmp_path / "c"
    ok(*CONTINUAL, "--out", out, "--learner", "ewc")
    _replace_checkpoint(out, learner=None)
    result = invoke("continual", "--resume", "--out", out)
    assert_one_line_error(result)
    assert f"{out / 'checkpoint.npz'}: no 'learner' record" in result.stderr
    (out / "config.json").write_text("[1]")
    result = invoke("continual", "--resume", "--out", out)
    assert_one_line_error(result)
    assert "config.json: config: got a list, expected an object of ContinualConfig fields" in result.stderr


@pytest.fixture(scope="module")
def continual_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("continual") / "c"
    ok(*CONTINUAL, "--out", out)
    return out


@pytest.mark.parametrize("summary, message", [
    ({"accuracy_matrix": "x"}, "summary.json: accuracy_matrix: got 'x', expected a list of rows of numbers"),
    ({"accuracy_matrix": [1, 2]}, "summary.json: accuracy_matrix: got [1, 2], expected a list of rows"),
    ({"accuracy_matrix": [[0.5]], "forgetting": "y"}, "summary.json: forgetting: got 'y', expected a finite number "
                                                       "or null"),
    ({"accuracy_matrix": [[0.5]], "bwt": float("inf")}, "summary.json: bwt: got inf, expected a finite number or null"),
    ({"accuracy_matrix": [[0.5]], "baseline": [3.0]}, "baseline: got [3.0], expected a list of 1 accuracies in [0, 1]"),
    ({"accuracy_matrix": [[0.5], [0.4, 0.3]]}, "accuracy_matrix: got rows of lengths [1, 2], expected 2 rows of 2"),
    ({"accuracy_matrix": [[5.0, None], [0.3, 0.2]]}, "accuracy_matrix: got [[5.0, None], [0.3, 0.2]], expected "
                                                     "accuracies in [0, 1]"),
    ({"accuracy_matrix": [[0.5]], "baseline": [0.1, 0.2]}, "baseline: got [0.1, 0.2], expected a list of 1 accuracies"),
    ([1], "summary.json: got a JSON list, expected an object"),
])
def test_report_of_a_damaged_summary_names_the_file_and_key(tmp_path, summary, message):
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    result = invoke("report", tmp_path, "--no-plot")
    assert_one_line_error(result)
    assert message in result.stderr


def test_report_errors_name_the_metrics_file_and_the_plot_option(tmp_path, continual_run):
    import shutil
    run = tmp_path / "c"
    shutil.copytree(continual_run, run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "wall_time_s": None}))
    text = ok("report", run, "--no-plot").stdout
    assert "wall time - s" in text  # null is shown, not a format error
    # the report shows the summary's matrix and metrics, and those follow the README's formulas (n = 2)
    R, b = summary["accuracy_matrix"], summary["baseline"]
    rows = [ln.split()[2:] for ln in text.splitlines() if ln.startswith("after ")]
    assert [float(v) for row in rows for v in row] == pytest.approx([v for row in R for v in row], abs=5e-4)
    oracle = {"average_accuracy": (R[1][0] + R[1][1]) / 2, "forgetting": R[0][0] - R[1][0],
              "forgetting_max": R[0][0] - R[1][0], "bwt": R[1][0] - R[0][0], "fwt": R[0][1] - b[1]}
    for key, value in oracle.items():
        assert summary[key] == pytest.approx(value, abs=1e-12), key
        line = next(ln for ln in text.splitlines() if ln.split()[:1] == [key])
        assert float(line.split()[1]) == pytest.approx(value, abs=5e-4), key
    result = invoke("report", run, "--plot", tmp_path / "no" / "such" / "dir.png")
    assert_one_line_error(result)
    assert f"Error: --plot: got '{tmp_path / 'no' / 'such' / 'dir.png'}', whose directory" in result.stderr
    assert result.stdout == ""
    import importlib.util
    if importlib.util.find_spec("matplotlib") is not None:  # without it nothing is plotted or read
        result = invoke("report", run, "--plot", tmp_path / "curve.nope")
        assert_one_line_error(result)
        assert "--plot: got" in result.stderr and "expected a file name ending in a format" in result.stderr
        first = (run / "metrics.jsonl").read_text().splitlines()[0]
        with open(run / "metrics.jsonl", "a") as f:  # damage in the middle, not a killed run's last line
            f.write("{bad\n" + first + "\n")
        n = len((run / "metrics.jsonl").read_text().splitlines()) - 1
        result = invoke("report", run, "--plot", tmp_path / "curve.png")  # asked for by name: an error
        assert_one_line_error(result)
        assert f"{run / 'metrics.jsonl'}: line {n}: not valid JSON" in result.stderr
        result = invoke("report", run)  # the default plot: the report, and a note saying why no plot
        assert result.exit_code == 0 and "after " in result.stdout
        assert "note: no plot" in result.stderr and f"line {n}: not valid JSON" in result.stderr


def test_train_notes_a_blas_pin_narrower_than_the_cpu_on_stderr(tmp_path, monkeypatch):
    from seqcore.backends import blas
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setattr(blas, "_cpu_flags", lambda: {"avx2", "avx512f"})
    result = ok("train", *TINY, "--steps", 2, "--out", tmp_path / "a")
    assert result.stderr.startswith("note: OPENBLAS_CORETYPE=Haswell holds OpenBLAS to older kernels")
    assert "note:" not in result.stdout
    assert "note:" not in ok("train", *TINY, "--steps", 2, "--out", tmp_path / "b", "-q").stderr
    assert ok("backends").stdout.splitlines()[-1].startswith("note: OPENBLAS_CORETYPE=Haswell holds OpenBLAS")
    monkeypatch.setattr(blas, "_cpu_flags", lambda: {"avx2"})
    assert ok("train", *TINY, "--steps", 2, "--out", tmp_path / "c").stderr == ""
    assert "note:" not in ok("backends").stdout


def test_bench_scan_times_the_kernels_it_names():
    """`seqcore bench scan` runs its kernel rows through the builds scan.py dispatches to (it once
    called a pair of builds as if it were a kernel); ratios are the bandwidths' quotients."""
    pytest.importorskip("numba", reason="the scan benchmark times the numba kernels")
    import subprocess
    out = subprocess.run([sys.executable, "-c", "from seqcore_cli.main import main; main()", "bench", "--quick",
                          "scan"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {ln[:44].strip(): ln[44:].split() for ln in out.stdout.splitlines() if len(ln) > 44 and ln[44:].split()}
    base = float(rows["baseline out = a + b"][1])
    for name in ("scan fwd", "kernel fwd (outputs preallocated)", "kernel bwd (outputs preallocated)"):
        ms, gbs, vs = map(float, rows[name][:3])
        assert ms > 0 and abs(vs - gbs / base) <= 0.01 + 0.005 * gbs / base, (name, rows[name])


CUPY_FAILS = "backend 'cupy' cannot load: no CUDA GPU (simulated)"


@pytest.fixture
def cupy_cannot_load(monkeypatch):
    """The cupy backend fails to load as it does without a GPU (its module raises BackendUnavailable),
    whether or not it loads on this machine."""
    import importlib
    real_import_module = importlib.import_module

    def import_module(name, *args, **kwargs):
        if name == "seqcore.backends.cupy":
            raise backends.BackendUnavailable(CUPY_FAILS)
        return real_import_module(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", import_module)
    monkeypatch.delitem(backends._LOADED, "cupy", raising=False)
    monkeypatch.setattr(backends, "_FAILED", {})


def test_a_backend_that_cannot_load_is_refused_before_anything_is_written(tmp_path, monkeypatch, cupy_cannot_load):
    result = invoke("train", *TINY, "--backend", "cupy", "--out", tmp_path / "a")
    assert_one_line_error(result)
    assert result.stderr == f"Error: --backend: {CUPY_FAILS}\n" and not (tmp_path / "a").exists()
    monkeypatch.setenv("SEQCORE_BACKEND", "cupy")
    result = invoke("train", *[a for a in TINY if a not in ("--backend", "numpy")], "--out", tmp_path / "b")
    assert_one_line_error(result)
    assert result.stderr == f"Error: $SEQCORE_BACKEND: {CUPY_FAILS}\n" and not (tmp_path / "b").exists()
    result = invoke("backends")  # lists the backends, then says the variable's choice cannot load
    assert_one_line_error(result)
    assert "Error: $SEQCORE_BACKEND: got 'cupy', which cannot load here" in result.stderr
    assert result.stdout.startswith("name ")
    assert f"cupy     no         -              {CUPY_FAILS}" in result.stdout.splitlines()  # and why


@pytest.mark.parametrize("raised", [KeyboardInterrupt, "chained"])
def test_an_interrupt_outside_the_training_loop_exits_130_in_one_line(tmp_path, monkeypatch, raised):
    """Ctrl-C while a run is built (or an import it triggers is half done, which Python reports as
    a RuntimeError raised by the interrupt): one line and status 130, as inside the loop."""
    def interrupted(self, cfg, hooks=None):
        if raised is KeyboardInterrupt:
            raise KeyboardInterrupt
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance 'info' in 'Experience'")

    monkeypatch.setattr(Run, "__init__", interrupted)
    result = invoke("train", *TINY, "-q", "--out", tmp_path / "r")
    assert result.exit_code == 130 and result.stderr == "Error: interrupted\n", result.output
    assert "Traceback" not in result.output and "Aborted" not in result.output


def test_step_budgets_beyond_the_int64_step_counter_are_refused(tmp_path, finished_run):
    huge = str(2 ** 63)  # a checkpoint stores the step count as int64
    result = invoke("resume", finished_run, "--steps", huge, "-q")
    assert_one_line_error(result)
    assert f"--steps: got {huge}, expected an integer <= {2 ** 63 - 1}" in result.stderr
    result = invoke("train", "--task", "nparity", "--steps", huge, "--out", tmp_path / "r", "-q")
    assert_one_line_error(result)
    assert "--steps: got" in result.stderr and not (tmp_path / "r").exists()


# -- paths, config-file kwargs, unused options, absurd sizes (QA report of the command line) ---------

IMAGE_SMALL = ["--backend", "numpy", "--task", "image", "--hidden", 4, "--batch-size", 4, "--steps", 4,
               "--eval-every", 2, "--eval-batches", 1, "--eval-batch-size", 12, "-q"]


def test_a_relative_data_dir_is_stored_absolute_so_the_run_works_from_any_directory(tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    _write_tiny_idx(work / "idx")
    monkeypatch.chdir(work)
    ok("train", *IMAGE_SMALL, "--data-dir", "idx", "--out", "img")
    assert json.loads((work / "img" / "config.json").read_text())["task_kwargs"]["data_dir"] == str(work / "idx")
    # the refined schedule's from_run is a path read again on resume: stored absolute too
    ok("train", *IMAGE_SMALL, "--data-dir", "idx", "--schedule", "refined", "--schedule-arg", "from_run=img",
       "--steps", 6, "--out", "refined")
    saved = json.loads((work / "refined" / "config.json").read_text())
    assert saved["schedule_kwargs"]["from_run"] == str(work / "img")
    ok("continual", "--backend", "numpy", "--dataset", "mnist", "--data-dir", "idx", "--experiences", 2,
       "--steps", 2, "--eval-every", 1, "--eval-size", 10, "--hidden", 4, "--batch-size", 4, "-q", "--out", "k")
    assert json.loads((work / "k" / "config.json").read_text())["data_dir"] == str(work / "idx")
    monkeypatch.chdir(elsewhere)  # eval and resume find the data from another directory
    ok("eval", work / "img")
    ok("resume", work / "img", "--steps", 6, "-q")
    ok("resume", work / "refined", "--steps", 8, "-q")


def test_data_missing_at_load_time_points_to_the_runs_config_json_not_to_data_dir(tmp_path):
    from seqcore.continual import ContinualConfig, run_continual
    _write_tiny_idx(tmp_path / "idx")
    ok("train", *IMAGE_SMALL, "--data-dir", tmp_path / "idx", "--out", tmp_path / "img")
    cfg = ContinualConfig(dataset="mnist", data_dir=str(tmp_path / "idx"), experiences=2, steps=4, eval_every=2,
                          hidden=4, batch_size=4, eval_size=10, backend="numpy")
    run_continual(cfg, str(tmp_path / "k"), quiet=True, stop_at_step=4)  # interrupted: resumable
    (tmp_path / "idx").rename(tmp_path / "gone")
    for args, run in ((["eval", tmp_path / "img"], tmp_path / "img"),
                      (["resume", tmp_path / "img", "--steps", 6], tmp_path / "img"),
                      (["continual", "--resume", "--out", tmp_path / "k"], tmp_path / "k")):
        result = invoke(*args)
        assert_one_line_error(result)
        assert f"{tmp_path / 'idx'}/train-images-idx3-ubyte[.gz]: file not found" in result.stderr
        assert f"as the data_dir that this run's {run / 'config.json'} names" in result.stderr, args
        assert "--data-dir" not in result.stderr, args  # none of these commands has that option
        assert result.stdout == "", args  # refused before the header line


def test_config_file_kwargs_are_kept_when_the_command_line_names_the_files_default_task(tmp_path):
    path = tmp_path / "kw.json"
    path.write_text(json.dumps({"task_kwargs": {"n": 3}}))  # no "task": the kwargs are the default task's
    cfg, _ = build_config(str(path), {"task": "nparity", "backend": "numpy"})
    assert cfg.task_kwargs == {"n": 3}
    cfg, _ = build_config(str(path), {"task": "nparity", "backend": "numpy"}, task_args=[("n_max", 12)])
    assert cfg.task_kwargs == {"n": 3, "n_max": 12}
    cfg, _ = build_config(str(path), {"task": "ndms", "backend": "numpy"})  # another task: dropped
    assert cfg.task_kwargs == {}
    out = tmp_path / "r"
    ok("train", *TINY, "--steps", 2, "-q", "--config", path, "--task", "nparity", "--out", out)
    assert json.loads((out / "config.json").read_text())["task_kwargs"] == {"n": 3}


@pytest.mark.parametrize("args, config, message", [
    (["--optimizer", "adam", "--momentum", "0.3"], None,
     "Error: --momentum: got 0.3 with --optimizer adam, which does not use momentum; expected --optimizer sgd or "
     "nesterov, or no momentum"),
    (["--momentum", "0.5"], None, "Error: --momentum: got 0.5 with the default optimizer 'adam', which does not use"),
    (["--optimizer", "rmsprop"], {"momentum": 0.5},
     "Error: momentum (in {file}): got 0.5 with --optimizer rmsprop, which does not use momentum"),
    ([], {"optimizer": "adagrad", "momentum": 0.5},
     "Error: momentum (in {file}): got 0.5 with optimizer 'adagrad' (in {file}), which does not use momentum"),
])
def test_a_momentum_the_optimizer_does_not_use_is_refused(tmp_path, args, config, message):
    assert_train_refused(tmp_path, args, config, message)
    assert not (tmp_path / "r").exists()


def assert_train_refused(tmp_path, args, config, message):
    """``train`` with ``args`` (and ``config`` as a --config file) fails with the one line ``message``
    (``{file}`` in it: the config file's path) before printing anything."""
    extra = []
    if config is not None:
        (tmp_path / "cfg.json").write_text(json.dumps(config))
        extra = ["--config", tmp_path / "cfg.json"]
        message = message.format(file=tmp_path / "cfg.json")
    result = invoke("train", *TINY, *args, *extra, "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert message in result.stderr and result.stdout == ""


def test_momentum_is_taken_by_sgd_and_nesterov_and_defaults_are_not_refused(tmp_path):
    ok("train", *TINY, "--steps", 2, "-q", "--optimizer", "sgd", "--momentum", "0.3", "--out", tmp_path / "s")
    assert json.loads((tmp_path / "s" / "config.json").read_text())["momentum"] == 0.3
    (tmp_path / "n.json").write_text(json.dumps({"optimizer": "nesterov", "momentum": 0.5}))
    ok("train", *TINY, "--steps", 2, "-q", "--config", tmp_path / "n.json", "--out", tmp_path / "n")
    assert json.loads((tmp_path / "n" / "config.json").read_text())["momentum"] == 0.5
    ok("train", *TINY, "--steps", 2, "-q", "--optimizer", "adamw", "--out", tmp_path / "a")  # TrainConfig's 0.9


@pytest.mark.parametrize("args, message", [
    (["--stream", "power-law", "--stream-budget", "100000000000"], "Error: --stream-budget: got 100000000000, whose"),
    (["--stream", "power-law", "--stream-budget", "100000000000", "--learner", "power-law"],
     "Error: --stream-budget: got 100000000000, whose"),
    (["--stream", "power-law", "--learner", "power-law", "--budget", "100000000000"],
     "Error: --budget: got 100000000000, whose"),  # the learner's own budget keeps its name
    (["--momentum", "0.5"],
     "Error: --momentum: not used by this run (--optimizer adam does not use it); it is read only with "
     "--optimizer sgd"),
    (["--synthetic", "n_train=30"], "Error: --synthetic: key 'n_train' given twice (n_train=40 and n_train=30)"),
])
def test_continual_stream_options_and_unused_options_are_named(tmp_path, args, message):
    result = invoke(*CONTINUAL, "--out", tmp_path / "c", *args)
    assert_one_line_error(result)
    assert message in result.stderr, result.stderr


def test_continual_curriculum_stream_refuses_train_size(tmp_path):
    result = invoke("continual", "--stream", "curriculum", "--model", "lstm", "--experiences", 2, "--steps", 2,
                    "--hidden", 4, "--batch-size", 8, "--backend", "numpy", "-q", "--train-size", 10,
                    "--out", tmp_path / "c")
    assert_one_line_error(result)
    assert result.stderr == ("Error: --train-size: not used by this run; it is read only with streams of images or "
                             "synthetic data (not --stream curriculum)\n")
    assert not (tmp_path / "c").exists()


def test_continual_momentum_with_sgd_is_used(tmp_path):
    ok(*CONTINUAL, "--optimizer", "sgd", "--momentum", "0.5", "--out", tmp_path / "c")
    assert json.loads((tmp_path / "c" / "config.json").read_text())["momentum"] == 0.5


def test_absurd_depth_and_head_counts_are_refused_without_building_them(tmp_path, monkeypatch):
    from seqcore import models
    real_stack = models.stack

    def shallow_stack(cls, input_size, hidden_size, num_layers=1, *args, **kwargs):
        assert num_layers <= 3, f"a stack of {num_layers} layers was built"
        return real_stack(cls, input_size, hidden_size, num_layers, *args, **kwargs)

    monkeypatch.setattr(models, "stack", shallow_stack)
    result = invoke("train", *TINY, "--layers", 100000000, "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert "Error: --layers: got 100000000, whose 3.36e+10 parameters in 100000000 layers of 6 hidden units" \
        in result.stderr and result.stdout == ""
    monkeypatch.setattr(models, "stack", real_stack)

    real_head = train_module.HeadSpec
    built = []

    def counted_head(*args, **kwargs):
        built.append(1)
        assert len(built) <= 1000, "more than 1000 heads built"
        return real_head(*args, **kwargs)

    monkeypatch.setattr(train_module, "HeadSpec", counted_head)
    result = invoke("train", *TINY, "--curriculum", "single-head", "--curriculum-arg", "max_n=100000000000",
                    "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert ("Error: --curriculum-arg max_n: got 100000000000, which needs 99999999999 heads (one per N from 2 to "
            "100000000000, all built with the model), expected at most 100000 heads (max_n <= 100001)") in result.stderr
    assert not built and not (tmp_path / "r").exists()


def test_config_integer_too_large_for_a_float_is_one_line(tmp_path):
    (tmp_path / "big.json").write_text('{"clip": 1' + "0" * 400 + "}")
    result = invoke("train", *TINY, "--config", tmp_path / "big.json", "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert result.stderr.startswith("Error: clip (in ") and "expected a positive finite number or None" in result.stderr
    result = invoke("train", *TINY, "--schedule", "cosine", "--schedule-arg", "alpha=1" + "0" * 400,
                    "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert result.stderr.startswith("Error: --schedule-arg alpha: got 1000") and "expected a finite number" in result.stderr


def test_heads_that_cannot_fit_in_memory_name_max_n(tmp_path, monkeypatch):
    from seqcore import validate
    monkeypatch.setattr(validate, "physical_memory", lambda: 2 ** 30)
    # 12000 heads of 1001 x 2 float32 weights, 12 copies, plus 512 bytes each, and a 1000-unit LSTM: 1.26 GiB
    result = invoke("train", *TINY, "--hidden", 1000, "--curriculum", "multi-head", "--curriculum-arg",
                    "max_n=12001", "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert ("Error: --curriculum-arg max_n: got 12001, whose 12000 heads (one per N from 2; 96608 bytes each at "
            "hidden 1000, with their gradients and optimizer state) and the rest of the model would take 1.26 GiB, "
            "more than this machine's 1 GiB of memory") in result.stderr
    # a stack too large with one head is the hidden size's fault, however many heads
    result = invoke("train", *TINY, "--hidden", 100000, "--curriculum", "multi-head", "--curriculum-arg",
                    "max_n=50001", "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert result.stderr.startswith("Error: --hidden: got 100000, whose 4e+10 parameters")
    # a sane max_n is unchanged: a head for every N from 2 to 6
    cfg, _ = build_config(None, {"curriculum": "multi-head", "backend": "numpy"}, curriculum_args=[("max_n", 6)])
    curriculum, build = train_module.model_builder(cfg, tasks.make("nparity", seed=0))
    assert [h.name for h in build(4).heads] == ["n2", "n3", "n4", "n5", "n6"]


@pytest.mark.parametrize("args, config, message", [
    (["--task", "lorenz96", "--task-arg", "alpha=0.5", "--mode", "parallel"], None,
     "Error: --mode: got 'parallel' with task 'lorenz96' alpha=0.5, expected 'sequential'"),
    (["--task", "copy", "--curriculum", "anti"], None, "Error: --curriculum: got 'anti' with task 'copy', expected"),
    ([], {"task": "lorenz96", "target_accuracy": 0.5, "task_kwargs": {"dim": 4}},
     "Error: target_accuracy (in {file}): got 0.5 with task 'lorenz96', whose heads report no accuracy"),
    (["--task", "lorenz96", "--target-accuracy", "0.5"], None,
     "Error: --target-accuracy: got 0.5 with task 'lorenz96', whose heads report no accuracy"),
])
def test_errors_raised_while_the_model_is_built_name_the_option_or_file(tmp_path, args, config, message):
    assert_train_refused(tmp_path, args, config, message)


def test_eval_names_backend_when_the_backend_cannot_load(finished_run, cupy_cannot_load):
    result = invoke("eval", finished_run, "--backend", "cupy")
    assert_one_line_error(result)
    assert result.stderr == f"Error: --backend: {CUPY_FAILS}\n"


def test_report_refuses_plot_with_no_plot(tmp_path, continual_run):
    result = invoke("report", continual_run, "--plot", tmp_path / "p.png", "--no-plot")
    assert_one_line_error(result)
    assert f"Error: --plot: got '{tmp_path / 'p.png'}' with --no-plot, expected one of them" in result.stderr
    assert result.stdout == "" and not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("flag, first, second", [
    ("--task-arg", "n=[2,3]", "n=4"), ("--curriculum-arg", "max_n=5", "max_n=6"),
    ("--cell-arg", "tau_init=2.0", "tau_init=3.0"), ("--schedule-arg", "alpha=0.1", "alpha=0.2"),
])
def test_a_key_given_twice_to_a_key_value_option_is_refused(tmp_path, flag, first, second):
    kinds = {"--curriculum-arg": ["--curriculum", "single-head"], "--cell-arg": ["--cell", "leaky"],
             "--schedule-arg": ["--schedule", "cosine"]}
    result = invoke("train", *TINY, *kinds.get(flag, []), flag, first, flag, second, "--out", tmp_path / "r")
    assert_one_line_error(result)
    key, a, b = first.split("=")[0], first.split("=")[1], second.split("=")[1]
    assert (f"Error: {flag}: key '{key}' given twice ({key}={json.dumps(json.loads(a))} and "
            f"{key}={json.dumps(json.loads(b))}), expected each key once") in result.stderr


def test_per_evaluation_lines_label_the_loss_of_heads_without_accuracy(tmp_path):
    from seqcore.train import _format_record
    record = {"step": 2, "loss": 1.0, "level": None,
              "eval": {"next_state": {"loss": 0.123}, "n2": {"loss": 0.5, "accuracy": 0.75}}}
    assert _format_record(record) == "step      2  loss 1.0000  next_state loss=0.123 n2=0.750"
    out = tmp_path / "lz"
    result = ok("train", *TINY, "--steps", 2, "--eval-every", 2, "--task", "lorenz96", "--out", out)
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("step "))
    assert line.endswith(f"  next_state loss={logged['eval']['next_state']['loss']:.3f}")


def test_a_runs_config_json_works_as_config_again(tmp_path):
    # config.json records every field, the defaults among them (momentum 0.9 with adam)
    ok("train", *TINY, "--steps", 4, "-q", "--out", tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["optimizer"] == "adam" and saved["momentum"] == 0.9
    ok("train", "--config", tmp_path / "a" / "config.json", "-q", "--out", tmp_path / "b")
    again = json.loads((tmp_path / "b" / "config.json").read_text())
    assert again == saved
    a, b = params_of(tmp_path / "a"), params_of(tmp_path / "b")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_run_directory_in_use_is_refused_before_the_header(tmp_path):
    pytest.importorskip("fcntl", reason="run directories are locked with flock, which this OS lacks")
    from seqcore.runs import RunDir
    out = tmp_path / "run"
    ok("train", *TINY, "--steps", 2, "--out", out, "--quiet")
    with RunDir(out).lock():  # as another process training there would hold it
        for args in (("train", *TINY, "--steps", 2, "--out", out, "--overwrite"), ("resume", out, "--steps", 4)):
            result = invoke(*args)
            assert_one_line_error(result)
            assert result.stdout == "" and "is in use by another seqcore process" in result.stderr, args


# -- QA r4_train: evaluation size, defaulted N fields, eval without a checkpoint, lost interrupts -------

@pytest.mark.parametrize("args, config, message", [
    (["--eval-batches", 10**9, "--eval-batch-size", 4], None,
     "Error: --eval-batches: got 1000000000, expected at most 25000000 batches of eval_batch_size=4: at most "
     "100000000 sequences per evaluation"),
    # start_n and max_n left to their defaults come from the task's N (or a given start_n): name that
    (["--curriculum", "anti", "--task-arg", "n=1"], None,
     "Error: --task-arg n: got 1 (the task's largest N), expected >= min_n=2"),
    (["--curriculum", "anti"], {"task_kwargs": {"n": 1}},
     "Error: --task-arg n (or task_kwargs in {file}): got 1 (the task's largest N), expected >= min_n=2"),
    (["--curriculum", "anti", "--task-arg", "n=200000"], None,
     "Error: --task-arg n: got 200000, which needs 199999 heads"),
    (["--curriculum", "multi-head", "--task-arg", "n=200000"], None,
     "Error: max_n (by default 30 past --task-arg n): got 200030, which needs 200029 heads"),
    (["--curriculum", "single-head", "--curriculum-arg", "start_n=200000"], None,
     "Error: max_n (by default 30 past --curriculum-arg start_n): got 200030, which needs 200029 heads"),
    # given fields keep their own names
    (["--curriculum", "anti", "--task-arg", "n=1", "--curriculum-arg", "start_n=1"], None,
     "Error: --curriculum-arg start_n: got 1, expected >= min_n=2"),
])
def test_sizes_and_defaulted_n_fields_name_what_the_user_set(tmp_path, args, config, message):
    assert_train_refused(tmp_path, args, config, message)


def test_a_huge_eval_batches_in_a_config_file_names_the_file(tmp_path):
    (tmp_path / "cfg.json").write_text('{"eval_batches": 100000000000000000000000, "backend": "numpy"}')
    result = invoke("train", "--config", tmp_path / "cfg.json", "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert result.stderr.startswith(f"Error: eval_batches (in {tmp_path / 'cfg.json'}): got 100000000000000000000000, "
                                    "expected at most 390625 batches of eval_batch_size=256") and result.stdout == ""


def test_eval_without_a_checkpoint_names_the_directory_and_the_file(tmp_path, finished_run):
    """It named `out:`, which is no option of eval; now as resume says it."""
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((finished_run / "config.json").read_text())
    for command in ("eval", "resume"):
        result = invoke(command, bare)
        assert_one_line_error(result)
        assert result.stderr == (f"Error: {bare / 'checkpoint.npz'}: no checkpoint (was the run started with this "
                                 "directory as --out?)\n")


def test_eval_refuses_more_than_1e8_sequences(finished_run):
    result = invoke("eval", finished_run, "--batches", 10**9)  # batches of the run's 32
    assert_one_line_error(result)
    # the batch size is named as the option that sets it (it named the library field batch_size)
    assert result.stderr.startswith("Error: --batches: got 1000000000, expected at most 3125000 batches of "
                                    "--batch-size=32: at most 100000000 sequences per evaluation")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be caught on Windows")
def test_a_sigterm_whose_interrupt_a_finaliser_swallows_still_stops_the_run(tmp_path, monkeypatch):
    """The handler's KeyboardInterrupt, raised inside a __del__, is printed and dropped by Python;
    the run went on to "completed" with exit status 0."""
    import signal
    swallowed = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: swallowed.append(info.exc_type))

    class Finaliser:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)  # the handler runs here, inside __del__
            sum(range(100))

    real_step = train_module.Trainer.step

    def step(self, batch):
        loss = real_step(self, batch)
        if self.step_count == 13:
            Finaliser()  # dropped at once
        return loss
    monkeypatch.setattr(train_module.Trainer, "step", step)
    out = tmp_path / "run"
    result = invoke("train", *TINY, "--out", out, "--quiet")
    assert swallowed == [KeyboardInterrupt]
    assert result.exit_code == 130, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("interrupted", 13)
    assert load_checkpoint(out / "checkpoint.npz")[1]["step"] == 10
    # the request does not outlive the command: the next one runs to the end
    monkeypatch.setattr(train_module.Trainer, "step", real_step)
    ok("resume", out, "--quiet")
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"


def test_a_toml_config_turns_an_optional_field_off_with_none(tmp_path):
    """TOML has no null, and "none" (what --clip takes) was refused: clipping could not be turned off."""
    for word in ("none", "OFF", "null"):
        cfg = tmp_path / f"{word}.toml"
        cfg.write_text(f'task = "nparity"\nhidden = 6\nsteps = 5\neval-every = 5\nclip = "{word}"\n')
        ok("train", "--config", cfg, "--quiet", "--out", tmp_path / word)
        assert json.loads((tmp_path / word / "config.json").read_text())["clip"] is None
    bad = tmp_path / "bad.toml"
    bad.write_text('clip = "never"\n')
    result = invoke("train", "--config", bad, "--out", tmp_path / "bad")
    assert_one_line_error(result)
    assert result.stderr.strip() == (f"Error: {bad}: clip: got 'never' (str), expected a number or null "
                                     '("none" in TOML)')


def test_a_cyclical_run_whose_example_losses_overflow_stops_as_diverged(tmp_path):
    """It ended in "Error: losses: got non-finite or negative values" with no summary.json, and
    resume repeated it; --curriculum fixed stopped as diverged."""
    args = ["--task", "nparity", "--task-arg", "n=8", "--curriculum", "cyclical", "--curriculum-arg",
            "num_examples=200", "--cell", "elman", "--cell-arg", "nonlinearity=relu", "--hidden", 16, "--steps", 30,
            "--eval-every", 10, "--optimizer", "sgd", "--momentum", 0, "--lr", 10, "--clip", "none",
            "--backend", "numpy", "--quiet"]
    result = invoke("train", *args, "--out", tmp_path / "r")
    assert_one_line_error(result)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "status          diverged" in result.stdout
    assert result.stderr == (f"Error: training diverged after step {summary['steps']}: a per-example loss (cyclical "
                             "curriculum) is not finite; the last good checkpoint was kept (try a lower learning "
                             "rate or gradient clipping)\n")
    assert load_checkpoint(tmp_path / "r" / "checkpoint.npz")[1]["step"] == 0  # before the first evaluation
    again = invoke("resume", tmp_path / "r", "--quiet")
    assert_one_line_error(again)
    assert again.stderr == result.stderr


@pytest.mark.parametrize("curriculum", ["single-head", "multi-head", "sliding"])
def test_a_null_max_n_is_refused_before_anything_is_written(tmp_path, curriculum):
    """It was taken as the curriculum's "no limit": the model held heads up to the first N only,
    and the run crashed at its first advance ("heads: got ['n3'] ..."), leaving a run directory
    that resume and eval could not load."""
    expected = (f"got None for the {curriculum!r} curriculum of a run, expected an int >= start_n: the model "
                "holds a head for every N up to max_n (leave max_n out for the default, 30 past the larger of "
                "start_n and the task's largest N)\n")
    result = invoke("train", *TINY, "--curriculum", curriculum, "--curriculum-arg", "max_n=null",
                    "--curriculum-arg", "threshold=0.6", "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert result.stderr == f"Error: --curriculum-arg max_n: {expected}"
    path = tmp_path / "run.json"
    path.write_text(json.dumps({**TINY_CONFIG, "curriculum": curriculum, "curriculum_kwargs": {"max_n": None}}))
    result = invoke("train", "--config", path, "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert result.stderr == f"Error: --curriculum-arg max_n (or curriculum_kwargs in {path}): {expected}"
    assert not (tmp_path / "r").exists()


def test_an_element_of_a_list_field_is_named_by_its_option(tmp_path):
    """piecewise-constant's per-element errors said "boundaries[0]: ...", naming neither the
    option nor the config file, where the whole list's said "--schedule-arg boundaries: ..."."""
    base = ["train", "--backend", "numpy", "--steps", 20, "--hidden", 4, "--out", tmp_path / "r",
            "--schedule", "piecewise-constant"]
    for value, message in (("[0]", "got 0, expected >= 1"), ("[1.5,2]", "got 1.5 (float), expected an int")):
        result = invoke(*base, "--schedule-arg", f"boundaries={value}")
        assert_one_line_error(result)
        assert result.stderr == f"Error: --schedule-arg boundaries[0]: {message}\n"
    toml = tmp_path / "run.toml"
    toml.write_text('schedule = "piecewise-constant"\n[schedule_kwargs]\nboundaries = [4, 2.5]\n')
    result = invoke("train", "--backend", "numpy", "--steps", 20, "--hidden", 4, "--config", toml,
                    "--out", tmp_path / "r")
    assert_one_line_error(result)
    assert result.stderr == (f"Error: --schedule-arg boundaries[1] (or schedule_kwargs in {toml}): got 2.5 (float), "
                             "expected an int\n")
    assert not (tmp_path / "r").exists()


def test_user_errors_maps_an_indexed_name_by_its_base_name():
    for options, message, shown in (
            ({"n": "--task-arg n"}, "n[2]: got 0", "--task-arg n[2]: got 0"),
            ({"n": "n (in run.toml)"}, "n[0]: bad", "n[0] (in run.toml): bad"),
            ({"n[1]": "exact"}, "n[1]: bad", "exact: bad"),  # an exact entry wins
            ({"n": "--task-arg n"}, "m[0]: bad", "m[0]: bad"),  # not a name given
            ({"n": "--task-arg n"}, "n[0] without a colon", "n[0] without a colon")):
        with pytest.raises(click.ClickException) as info:
            with common.user_errors(options):
                raise ValueError(message)
        assert info.value.message == shown
