"""The training loop: exact resume, NaN guard, curricula in a run, hooks."""
import dataclasses
import json
import math

import numpy as np
import pytest

from seqcore.runs import RunDir, load_checkpoint, save_checkpoint
from seqcore.tree import tree_leaves
from seqcore.train import Hooks, TrainConfig, load_run, resume, train

SMALL = dict(task="nparity", task_kwargs={"n": 2}, cell="gru", hidden=8, steps=40, batch_size=16,
             eval_every=10, eval_batches=1, eval_batch_size=32, lr=0.02, optimizer="adam", schedule="cosine")


class InterruptAt(Hooks):
    def __init__(self, step):
        self.at = step

    def after_step(self, trainer, batch, loss):
        if trainer.step_count == self.at:
            raise KeyboardInterrupt


def _params(path):
    arrays, meta = load_checkpoint(path)
    return {k: v for k, v in arrays.items() if k.startswith("params/")}, meta


class Snapshots(Hooks):
    """Records, for every step s (1-based), the batch it trained on and the parameters before it."""

    def __init__(self):
        self.before, self.batches = {}, {}

    def prepare_batch(self, trainer, batch):
        from seqcore.tree import tree_map
        step = trainer.step_count + 1
        self.before[step] = tree_map(lambda v: np.array(v, copy=True), trainer.params)
        self.batches[step] = batch
        return batch


def numpy_last_step_head(model, params, batch, name):
    """Mean cross-entropy and accuracy of a last-step head, written out in NumPy (float64)."""
    x, y, mask = batch
    logits = np.asarray(model.outputs(params, x, mask, heads=[name])[name], dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    y = np.asarray(y).reshape(-1)
    return float(-logp[np.arange(len(y)), y].mean()), float(np.mean(logits.argmax(axis=1) == y))


@pytest.mark.parametrize("curriculum", ["fixed", "multi-head", "cyclical"])
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, curriculum):
    cfg = TrainConfig(curriculum=curriculum, **SMALL)
    s_full, _ = train(cfg, tmp_path / "full", quiet=True)
    s_cut, _ = train(cfg, tmp_path / "cut", quiet=True, hooks=InterruptAt(25))
    assert s_cut["status"] == "interrupted"
    assert _params(tmp_path / "cut" / "checkpoint.npz")[1]["step"] == 20  # the last checkpoint survives
    s_res, _ = resume(tmp_path / "cut", quiet=True)
    assert s_res["steps"] == s_full["steps"] == 40
    full, _ = _params(tmp_path / "full" / "checkpoint.npz")
    res, _ = _params(tmp_path / "cut" / "checkpoint.npz")
    assert full.keys() == res.keys()
    for k in full:
        np.testing.assert_array_equal(full[k], res[k], err_msg=k)
    # the resumed log has each evaluation step exactly once
    steps = [r["step"] for r in RunDir(tmp_path / "cut").read_metrics()]
    assert steps == [10, 20, 30, 40]


def test_a_checkpoint_with_per_parameter_optimizer_state_still_resumes(tmp_path):
    """Checkpoints written before the optimizer ran on one vector hold a moment per parameter."""
    cfg = TrainConfig(**SMALL)
    train(cfg, tmp_path / "full", quiet=True)
    train(cfg, tmp_path / "cut", quiet=True, hooks=InterruptAt(25))
    path = tmp_path / "cut" / "checkpoint.npz"
    arrays, meta = load_checkpoint(path)
    params = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
    old = {}
    for key, value in arrays.items():
        if key.startswith("opt_state/") and value.ndim == 1:  # split each vector into per-parameter entries
            start = 0
            for name, p in params.items():
                old[f"{key}/{name}"] = value[start:start + p.size].reshape(p.shape)
                start += p.size
            assert start == value.size
        else:
            old[key] = value
    assert any(k.endswith("/mu/" + next(iter(params))) for k in old)
    save_checkpoint(path, old, meta)
    resume(tmp_path / "cut", quiet=True)
    full, _ = _params(tmp_path / "full" / "checkpoint.npz")
    res, _ = _params(path)
    for k in full:
        np.testing.assert_array_equal(full[k], res[k], err_msg=k)


def test_wall_time_and_log_times_go_on_across_a_resume(tmp_path):
    cfg = TrainConfig(**SMALL)
    train(cfg, tmp_path / "cut", quiet=True, hooks=InterruptAt(25))
    before = _params(tmp_path / "cut" / "checkpoint.npz")[1]["elapsed"]  # training time at step 20
    assert before > 0
    s_res, _ = resume(tmp_path / "cut", quiet=True)
    times = {r["step"]: r["time"] for r in RunDir(tmp_path / "cut").read_metrics()}
    assert times[20] <= before < times[30] < times[40] <= s_res["wall_time_s"]
    assert before < _params(tmp_path / "cut" / "checkpoint.npz")[1]["elapsed"] <= s_res["wall_time_s"]


class PoisonAt(Hooks):
    def __init__(self, step):
        self.at = step

    def extra_loss(self, trainer, params, batch):
        if trainer.step_count == self.at:
            return params["heads"]["n2"]["bias"].sum() * float("nan")
        return None


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(**SMALL)
    summary, _ = train(cfg, tmp_path / "run", quiet=True, hooks=PoisonAt(15))
    assert summary["status"] == "diverged" and "step 15" in summary["message"]
    assert "the last good checkpoint was kept" in summary["message"]
    # without a run directory there is no checkpoint to speak of
    no_dir, _ = train(cfg, quiet=True, hooks=PoisonAt(15))
    assert no_dir["status"] == "diverged" and "checkpoint" not in no_dir["message"]
    assert no_dir["message"].endswith("(try a lower learning rate or gradient clipping)")
    arrays, meta = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert meta["step"] == 10
    assert all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith("params/"))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"
    assert summary["steps"] == 15  # the poisoned update was not applied
    # oracle: the same run stopped cleanly at step 15 keeps the same step-10 checkpoint, bit for bit
    train(cfg, tmp_path / "clean", quiet=True, hooks=InterruptAt(15))
    clean, clean_meta = _params(tmp_path / "clean" / "checkpoint.npz")
    assert clean_meta["step"] == 10 and clean.keys() == {k for k in arrays if k.startswith("params/")}
    for k in clean:
        np.testing.assert_array_equal(arrays[k], clean[k], err_msg=k)


def test_multi_head_curriculum_advances_and_keeps_heads(tmp_path):
    cfg = TrainConfig(**{**SMALL, "cell": "lstm", "hidden": 32, "steps": 300, "batch_size": 64,
                         "eval_every": 25, "eval_batch_size": 256, "lr": 0.01, "schedule": "constant",
                         "curriculum": "multi-head"})

    class Advances(Hooks):
        calls = []

        def on_advance(self, run, previous_level, level):  # called at the evaluation, before the next step
            self.calls.append((run.trainer.step_count, previous_level, level, run.curriculum.level))
    summary, _ = train(cfg, tmp_path / "run", quiet=True, hooks=Advances())
    assert summary["max_level"] >= 3
    # every head of the multi-head curriculum is still evaluated (none dropped)
    assert set(summary["heads"]) == {f"n{n}" for n in range(2, summary["level"] + 1)}
    # oracle: the README's rule replayed on the log: heads n2..nN are evaluated at level N, the
    # curriculum advances exactly when every head reaches the default threshold 0.98, one N at a time
    recs = RunDir(tmp_path / "run").read_metrics()
    assert [r["step"] for r in recs] == list(range(25, 301, 25))
    level = 2
    for r in recs:
        assert r["level"] == level and set(r["eval"]) == {f"n{n}" for n in range(2, level + 1)}, r["step"]
        ready = all(h["accuracy"] >= 0.98 for h in r["eval"].values())
        assert r["advanced"] == ready, r["step"]
        level += ready
    assert summary["level"] == level and summary["max_level"] == level
    assert any(r["advanced"] for r in recs)
    assert Advances.calls == [(r["step"], r["level"], r["level"] + 1, r["level"] + 1) for r in recs if r["advanced"]]


def test_metrics_log_and_summary_layout(tmp_path):
    snaps = Snapshots()
    summary, final_params = train(TrainConfig(**SMALL), tmp_path / "run", quiet=True, hooks=snaps)
    rd = RunDir(tmp_path / "run")
    for f in (rd.config, rd.metrics, rd.summary, rd.checkpoint):
        assert f.exists(), f
    recs = rd.read_metrics()
    assert [r["step"] for r in recs] == [10, 20, 30, 40]
    assert {"step", "loss", "lr", "eval", "level"} <= set(recs[0])
    s = json.loads(rd.summary.read_text())
    assert {"final_loss", "final_accuracy", "heads", "steps", "wall_time_s"} <= set(s)
    assert s["heads"]["n2"]["accuracy"] == recs[-1]["eval"]["n2"]["accuracy"]
    # oracles: the values in the log, recomputed
    from seqcore.train import Run
    run = Run(TrainConfig(**SMALL))
    eval_batch, = run.task.eval_batches(32, 1)
    for r in recs:
        step = r["step"]
        # lr: the cosine schedule (peak 0.02 over 40 steps) at the update that made this step
        assert r["lr"] == pytest.approx(0.02 * 0.5 * (1 + math.cos(math.pi * (step - 1) / 40)), rel=1e-12)
        assert r["level"] is None and r["advanced"] is False
        # loss: the training batch of this step at the parameters before its update
        want_loss, _ = numpy_last_step_head(run.model, snaps.before[step], snaps.batches[step], "n2")
        assert r["loss"] == pytest.approx(want_loss, rel=1e-5), step
        # eval: the fixed evaluation batch at the parameters after this step
        after = final_params if step == 40 else snaps.before[step + 1]
        loss, acc = numpy_last_step_head(run.model, after, eval_batch, "n2")
        assert r["eval"]["n2"]["loss"] == pytest.approx(loss, rel=1e-5), step
        assert r["eval"]["n2"]["accuracy"] == pytest.approx(acc, abs=1e-12), step
    assert s["steps"] == 40 and s["status"] == "completed" and s["final_loss"] == recs[-1]["loss"]
    assert s["final_accuracy"] == recs[-1]["eval"]["n2"]["accuracy"] and s["level"] is None
    assert [r["time"] for r in recs] == sorted(r["time"] for r in recs) and recs[-1]["time"] <= s["wall_time_s"]


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru", "leaky", "mingru", "minlstm", "diaggru", "cifg-lstm"])
def test_training_keeps_the_parameter_dtype(cell):
    # a float64 leaf would silently send every later step to float64 (and numba to the reference)
    from seqcore.tree import tree_leaves
    cfg = TrainConfig(**{**SMALL, "cell": cell, "steps": 3, "eval_every": 3}, dtype="float32")
    _, params = train(cfg, None, quiet=True)
    assert {str(v.dtype) for v in tree_leaves(params)} == {"float32"}
    from seqcore.train import Run
    init = tree_leaves(Run(cfg).trainer.params)
    assert any(not np.array_equal(a, b) for a, b in zip(init, tree_leaves(params)))  # it did train


def test_load_run_restores_the_trained_parameters_and_reproduces_the_last_evaluation(tmp_path):
    from seqcore.runs import params_to_arrays
    summary, params = train(TrainConfig(**SMALL), tmp_path / "run", quiet=True)
    run = load_run(tmp_path / "run")
    assert run.trainer.step_count == 40 and run.cfg == TrainConfig(**SMALL)
    for key, value in params_to_arrays(params).items():
        np.testing.assert_array_equal(params_to_arrays(run.trainer.params)[key], value, err_msg=key)
    again = run.evaluate()  # the run's fixed evaluation batches: the summary's last evaluation
    assert again["n2"]["accuracy"] == pytest.approx(summary["heads"]["n2"]["accuracy"], abs=1e-12)
    assert load_run(tmp_path / "run", backend="numpy").cfg.backend == "numpy"
    with pytest.raises(ValueError, match="holds no run"):
        load_run(tmp_path / "nothing")


def test_existing_run_directory_is_not_overwritten(tmp_path):
    train(TrainConfig(**{**SMALL, "steps": 10}), tmp_path / "run", quiet=True)
    files = {f.name: f.read_bytes() for f in (tmp_path / "run").iterdir() if f.is_file()}
    with pytest.raises(ValueError, match="already holds a run"):
        train(TrainConfig(**{**SMALL, "steps": 20, "seed": 1}), tmp_path / "run", quiet=True)
    assert {f.name: f.read_bytes() for f in (tmp_path / "run").iterdir() if f.is_file()} == files


@pytest.mark.parametrize("field,value,match", [
    ("lr", -1.0, "lr: got -1.0"), ("task", "sudoku", "task: got 'sudoku'"), ("cell", "tcn", "cell: got 'tcn'"),
    ("steps", 0, "steps: got 0"), ("warmup", 50, "warmup: got 50"), ("mode", "fast", "mode: got 'fast'"),
    # checked with the config, not later when the optimizer is built (or never, for adam's momentum)
    ("momentum", 2.0, r"momentum: got 2.0, expected a number in \[0, 1\)"), ("clip", float("inf"), "clip: got inf"),
    ("weight_decay", float("nan"), "weight_decay: got nan"), ("lr", True, "lr: got True"),
    # wrong types in a hand-edited config.json: the field's message, not "'<' not supported ..."
    ("warmup", "x", "warmup: got 'x'"), ("target_accuracy", "x", "target_accuracy: got 'x'"),
])
def test_bad_config_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{**SMALL, field: value})


def test_leaky_timescales_stay_feasible_and_can_grow():
    from seqcore.tree import tree_leaves
    cfg = TrainConfig(**{**SMALL, "cell": "leaky", "optimizer": "sgd", "lr": 0.5, "steps": 30,
                         "schedule": "constant", "clip": None})
    _, params = train(cfg, None, quiet=True)
    tau = params["rnn"][0]["tau"]
    assert (tau >= 1).all()           # projected after every update
    assert (tau > 1).any()            # and not stuck at the clamp
    # oracle in float64: torch's SGD (buf = g, then buf = 0.9 buf + g; p -= lr buf) followed by the
    # projection tau <- max(tau, 1), on the batches the loop drew
    from seqcore.train import Run
    from seqcore.tree import tree_map
    cfg64 = TrainConfig(**{**SMALL, "cell": "leaky", "optimizer": "sgd", "lr": 0.5, "steps": 3,
                           "eval_every": 3, "schedule": "constant", "clip": None, "dtype": "float64"})
    snaps = Snapshots()
    _, got = train(cfg64, None, quiet=True, hooks=snaps)
    run = Run(cfg64)
    p, buf = tree_map(np.array, run.trainer.params), None
    clamped = False
    for step in (1, 2, 3):
        _, g = run.model.loss_and_grad(p, snaps.batches[step], heads=["n2"])
        buf = g if buf is None else tree_map(lambda b, gi: 0.9 * b + gi, buf, g)
        p = tree_map(lambda v, b: v - 0.5 * b, p, buf)
        clamped |= bool((p["rnn"][0]["tau"] < 1).any())
        p["rnn"][0]["tau"] = np.maximum(p["rnn"][0]["tau"], 1.0)
    for a, b in zip(tree_leaves(got), tree_leaves(p)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert clamped and (p["rnn"][0]["tau"] > 1).any()  # both sides of the projection were exercised


def test_n_curriculum_needs_an_n_task():
    with pytest.raises(ValueError, match="curriculum: got 'multi-head' with task 'copy'"):
        train(TrainConfig(**{**SMALL, "task": "copy", "task_kwargs": {}, "curriculum": "multi-head"}), None, quiet=True)


def test_resume_of_finished_run_is_refused_and_summary_kept(tmp_path):
    train(TrainConfig(**{**SMALL, "steps": 10}), tmp_path / "run", quiet=True)
    before = (tmp_path / "run" / "summary.json").read_text()
    with pytest.raises(ValueError, match="already finished"):
        resume(tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "summary.json").read_text() == before
    s, _ = resume(tmp_path / "run", quiet=True, steps=20)
    assert s["steps"] == 20
    recs = RunDir(tmp_path / "run").read_metrics()
    assert [r["step"] for r in recs] == [10, 20]
    # the cosine schedule now spans 20 steps: the update that made step 20 used 0.02 * ½(1 + cos(π 19/20))
    assert recs[-1]["lr"] == pytest.approx(0.02 * 0.5 * (1 + math.cos(math.pi * 19 / 20)), rel=1e-12)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 20


class RecordBackend(Hooks):
    def __init__(self):
        self.seen = set()

    def after_step(self, trainer, batch, loss):
        from seqcore import backends
        self.seen.add(backends.current())


def test_numpy_array_backends_are_active_during_training():
    pytest.importorskip("numba", reason="the numba backend needs numba")
    from seqcore import backends
    if "numba" not in backends.available():
        pytest.skip(f"numba backend cannot load: {backends.info()}")
    hook = RecordBackend()
    before = backends.current()
    _, got = train(TrainConfig(**{**SMALL, "backend": "numba", "steps": 3}), None, quiet=True, hooks=hook)
    assert hook.seen == {"numba"}          # the run's primitives dispatch to numba
    assert backends.current() == before    # and the default is restored afterwards
    # oracle: the NumPy reference trains the same parameters (float32 rounding apart)
    from seqcore.tree import tree_leaves
    _, ref = train(TrainConfig(**{**SMALL, "backend": "numpy", "steps": 3}), None, quiet=True)
    for a, b in zip(tree_leaves(got), tree_leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


# -- QA fixes: resuming past an early stop, max_level, task seed, warmup, run directory errors -----

def _metrics_steps(path):
    return [r["step"] for r in RunDir(path).read_metrics()]


def test_resume_with_more_steps_trains_past_a_reached_target(tmp_path):
    # accuracy >= 0.01 holds at the first evaluation: the run stops at step 10
    cfg = TrainConfig(**{**SMALL, "schedule": "constant", "target_accuracy": 0.01})
    s, _ = train(cfg, tmp_path / "run", quiet=True)
    assert (s["status"], s["steps"]) == ("target-reached", 10)
    with pytest.raises(ValueError, match=r"already finished \(target-reached at step 10\).*larger `steps`"):
        resume(tmp_path / "run", quiet=True)
    s, _ = resume(tmp_path / "run", quiet=True, steps=30)
    assert (s["status"], s["steps"]) == ("completed", 30)  # not stopped again by the target
    assert _metrics_steps(tmp_path / "run") == [10, 20, 30]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["target_accuracy"] is None
    # oracle: the same run without a target (constant schedule: the budget does not change the lr)
    train(TrainConfig(**{**SMALL, "schedule": "constant", "steps": 30}), tmp_path / "whole", quiet=True)
    whole, _ = _params(tmp_path / "whole" / "checkpoint.npz")
    resumed, meta = _params(tmp_path / "run" / "checkpoint.npz")
    assert meta["step"] == 30
    for k in whole:
        np.testing.assert_array_equal(resumed[k], whole[k], err_msg=k)


class CrashAt(Hooks):
    """A hard kill at step ``at`` (before that step's checkpoint and without a summary)."""

    def __init__(self, at):
        self.at = at

    def after_step(self, trainer, batch, loss):
        if trainer.step_count == self.at:
            raise RuntimeError("killed")


def test_a_killed_resume_past_an_early_stop_resumes_from_its_checkpoint(tmp_path):
    """The early stop's summary no longer describes the checkpoint: plain resume goes on."""
    cfg = TrainConfig(**{**SMALL, "schedule": "constant", "target_accuracy": 0.01})
    train(cfg, tmp_path / "run", quiet=True)                 # target-reached at step 10
    with pytest.raises(RuntimeError, match="killed"):
        resume(tmp_path / "run", quiet=True, steps=40, hooks=CrashAt(25))  # checkpoint at 20, no summary
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 10
    s, _ = resume(tmp_path / "run", quiet=True)              # the config now says 40 steps, no target
    assert (s["status"], s["steps"]) == ("completed", 40)
    train(TrainConfig(**{**SMALL, "schedule": "constant", "steps": 40}), tmp_path / "whole", quiet=True)
    whole, _ = _params(tmp_path / "whole" / "checkpoint.npz")
    resumed, _ = _params(tmp_path / "run" / "checkpoint.npz")
    for k in whole:
        np.testing.assert_array_equal(resumed[k], whole[k], err_msg=k)


def test_a_run_killed_before_its_summary_gets_it_from_resume(tmp_path):
    s_full, _ = train(TrainConfig(**SMALL), tmp_path / "run", quiet=True)
    (tmp_path / "run" / "summary.json").unlink()           # killed between the last checkpoint and the summary
    s, _ = resume(tmp_path / "run", quiet=True)
    s_full.pop("wall_time_s"), s.pop("wall_time_s")
    assert s == s_full
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"


def test_resume_with_more_steps_trains_past_a_finished_curriculum(tmp_path):
    # threshold 0.01: N 2 -> 3 at step 10, finished (max_n = 3) at step 20
    cfg = TrainConfig(**{**SMALL, "curriculum": "multi-head", "curriculum_kwargs": {"threshold": 0.01, "max_n": 3}})
    s, _ = train(cfg, tmp_path / "run", quiet=True)
    assert (s["status"], s["steps"], s["level"]) == ("curriculum-finished", 20, 3)
    with pytest.raises(ValueError, match="already finished"):
        resume(tmp_path / "run", quiet=True)
    s, _ = resume(tmp_path / "run", quiet=True, steps=40)
    assert (s["status"], s["steps"], s["level"], s["max_level"]) == ("completed", 40, 3, 3)
    assert _metrics_steps(tmp_path / "run") == [10, 20, 30, 40]


@pytest.mark.parametrize("curriculum, n, steps, level, max_level", [
    ("multi-head", 2, 10, 3, 3),   # advances at its only (final) evaluation: 2 -> 3
    ("single-head", 2, 20, 4, 4),  # 2 -> 3 -> 4, the last advance at the final evaluation
    ("anti", 4, 20, 2, 4),         # moves down 4 -> 3 -> 2: the largest N is where it started
])
def test_max_level_includes_an_advance_at_the_final_evaluation(curriculum, n, steps, level, max_level):
    cfg = TrainConfig(**{**SMALL, "task_kwargs": {"n": n}, "steps": steps, "curriculum": curriculum,
                         "curriculum_kwargs": {"threshold": 0.01}})
    s, _ = train(cfg, None, quiet=True)
    assert (s["level"], s["max_level"]) == (level, max_level)


@pytest.mark.parametrize("kwargs", [{"seed": 3}, {"n": 2, "seed": 0}])
def test_task_seed_comes_from_the_run_seed(kwargs):
    with pytest.raises(ValueError, match=r"task_kwargs: got seed=\d.*`seed` field \(--seed"):
        TrainConfig(**{**SMALL, "task_kwargs": kwargs})


@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup-cosine", "wsd", "linear", "rex", "exponential",
                                      "piecewise-constant", "sgdr", "triangular", "infinite"])
def test_every_schedule_warms_up_linearly_from_zero(schedule):
    from seqcore.train import build_schedule
    lr = build_schedule(TrainConfig(**{**SMALL, "lr": 0.1, "steps": 20, "warmup": 4, "schedule": schedule}))
    top = 0.01 if schedule == "triangular" else 0.1  # triangular warms up to where its cycles start
    assert [lr(t) for t in (0, 1, 2, 4)] == pytest.approx([0.0, top / 4, top / 2, top])
    assert [lr(t) for t in (0.5, 3.5)] == pytest.approx([top / 8, top * 7 / 8])  # linear between steps too
    # after the warmup, hand-computed: cosine decays over the remaining 16 steps, wsd holds the peak
    # until its cooldown, constant stays; every decaying schedule ends at 0 at the budget
    after = {"constant": {10: 0.1, 20: 0.1},
             "cosine": {8: 0.05 * (1 + math.cos(math.pi / 4)), 12: 0.05, 20: 0.0},
             "warmup-cosine": {8: 0.05 * (1 + math.cos(math.pi / 4)), 12: 0.05, 20: 0.0},
             "wsd": {10: 0.1, 20: 0.0},
             "linear": {12: 0.05, 20: 0.0}, "rex": {12: 0.1 * 0.5 / 0.75, 20: 0.0},
             # defaults scaled to the 16 steps after warmup: to 1 % at the end; x0.1 at 8, x0.01 at 12;
             # cycles of 4; half cycles of 2 from lr/10; cooldown 3 to lr/10, plateau 10, anneal 3 to lr/100
             "exponential": {12: 0.1 * 0.1, 20: 0.1 * 0.01},
             "piecewise-constant": {11: 0.1, 12: 0.01, 16: 0.001, 20: 0.001},
             "sgdr": {6: 0.05, 8: 0.1, 10: 0.05},
             "triangular": {5: 0.055, 6: 0.1, 7: 0.055, 8: 0.01},
             "infinite": {7: 0.01, 16: 0.01, 17: 0.01, 20: 0.001}}[schedule]
    assert {t: lr(t) for t in after} == pytest.approx(after, abs=1e-15)


@pytest.mark.parametrize("schedule, expected", [
    # after a 4-step warmup the decay runs over the remaining 16 steps: p = (t - 4) / 16
    ("linear", {5: 0.1 * (1 - 1 / 16), 12: 0.05, 19: 0.1 / 16}),
    ("rex", {5: 0.1 * (15 / 16) / (1 - 1 / 32), 12: 0.1 * 0.5 / 0.75, 19: 0.1 * (1 / 16) / (1 - 15 / 32)}),
])
def test_linear_and_rex_decay_over_the_steps_after_the_warmup(schedule, expected):
    from seqcore import schedules
    from seqcore.train import build_schedule
    cfg = TrainConfig(**{**SMALL, "lr": 0.1, "steps": 20, "warmup": 4, "schedule": schedule})
    lr = build_schedule(cfg)
    assert {t: lr(t) for t in expected} == pytest.approx(expected)
    # without a warmup: the plain schedule over the whole budget
    plain = build_schedule(TrainConfig(**{**SMALL, "lr": 0.1, "steps": 20, "schedule": schedule}))
    reference = schedules.linear_decay(0.1, 20) if schedule == "linear" else schedules.rex(0.1, 20)
    assert [plain(t) for t in range(21)] == [reference(t) for t in range(21)]


@pytest.mark.parametrize("schedule, fields, reference", [
    ("cosine", {"alpha": 0.1, "power": 2.0}, lambda s: s.cosine(0.1, 20, alpha=0.1, power=2.0)),
    ("wsd", {"cooldown_steps": 5, "cooldown": "sqrt", "floor_ratio": 0.1},
     lambda s: s.wsd(0.1, 20, cooldown_steps=5, cooldown="sqrt", floor_ratio=0.1)),
    ("exponential", {"decay_rate": 0.5, "decay_steps": 3, "staircase": True},
     lambda s: s.exponential(0.1, 0.5, 3, staircase=True)),
    ("piecewise-constant", {"factors": [1, 0.5], "boundaries": [7]}, lambda s: s.piecewise_constant([0.1, 0.05], [7])),
    ("sgdr", {"cycle_steps": 6, "cycle_mult": 2.0, "alpha": 0.1}, lambda s: s.sgdr(0.1, 6, alpha=0.1, cycle_mult=2.0)),
    ("triangular", {"base_value": 0.02, "half_cycle_steps": 3, "mode": "triangular2"},
     lambda s: s.triangular(0.02, 0.1, 3, mode="triangular2")),
    ("infinite", {"constant_value": 0.05, "min_value": 0.01, "constant_steps": 6, "anneal_steps": 5,
                  "start_in_constant": True},
     lambda s: s.infinite(0.1, 0.05, 0.01, 0, 0, 6, 5, start_in_constant=True)),
])
def test_schedule_fields_reach_the_schedule(schedule, fields, reference):
    from seqcore import schedules
    from seqcore.train import build_schedule
    lr = build_schedule(TrainConfig(**{**SMALL, "lr": 0.1, "steps": 20, "schedule": schedule,
                                       "schedule_kwargs": fields}))
    want = reference(schedules)
    assert [lr(t) for t in range(25)] == [want(t) for t in range(25)]


@pytest.mark.parametrize("fields, error, match", [
    ({"cycle_steps": 5}, ValueError, r"schedule_kwargs: got 'cycle_steps' for the 'cosine' schedule, expected some "
                                     r"of: alpha, power"),
    ([("alpha", 0.1)], TypeError, "schedule_kwargs: got list, expected a dict"),
])
def test_schedule_fields_are_checked(fields, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**{**SMALL, "schedule": "cosine", "schedule_kwargs": fields})


def test_runs_record_gradient_norms_and_refined_reads_them(tmp_path):
    from seqcore import schedules
    from seqcore.train import Run, build_schedule
    cfg = TrainConfig(**{**SMALL, "steps": 12, "eval_every": 4, "schedule": "constant"})  # budget-free
    seen = []

    class Norms(Hooks):  # oracle: the global norm of the gradients the optimizer is given
        def transform_grads(self, trainer, grads, batch):
            seen.append(math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in tree_leaves(grads))))
            return grads

    train(cfg, tmp_path / "a", hooks=Norms(), quiet=True)
    norms = load_checkpoint(tmp_path / "a" / "checkpoint.npz")[0]["grad_norms"]
    np.testing.assert_allclose(norms, seen, rtol=1e-5)
    # an interrupted run resumed records the same history
    train(dataclasses.replace(cfg, steps=8), tmp_path / "b", quiet=True)
    resume(tmp_path / "b", steps=12, quiet=True)
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "b" / "checkpoint.npz")[0]["grad_norms"], norms)
    refined = TrainConfig(**{**SMALL, "steps": 30, "warmup": 5, "schedule": "refined",
                             "schedule_kwargs": {"from_run": str(tmp_path / "a"), "power": 1.0}})
    lr, want = build_schedule(refined), schedules.refined(norms, SMALL["lr"], total_steps=25, power=1.0)
    assert [lr(t) for t in range(5, 31)] == pytest.approx([want(t) for t in range(26)], abs=1e-15)
    assert lr(0) == 0 and Run(refined).schedule(7) == lr(7)


def test_refined_needs_a_run_with_gradient_norms(tmp_path):
    with pytest.raises(ValueError, match="from_run: got '.*nowhere', which holds no run"):
        train(TrainConfig(**{**SMALL, "schedule": "refined", "schedule_kwargs": {"from_run": str(tmp_path / "nowhere")}}))


def test_refined_resumes_from_its_own_copy_of_the_norms(tmp_path):
    import shutil
    base = TrainConfig(**{**SMALL, "steps": 12, "eval_every": 4, "schedule": "constant"})
    train(base, tmp_path / "a", quiet=True)
    for name in ("self", "whole"):  # a run refining its own directory's norms, overwriting it
        shutil.copytree(tmp_path / "a", tmp_path / name)
    norms = load_checkpoint(tmp_path / "a" / "checkpoint.npz")[0]["grad_norms"]

    def refined(out):
        return TrainConfig(**{**SMALL, "steps": 20, "eval_every": 5, "schedule": "refined",
                              "schedule_kwargs": {"from_run": str(out)}})
    train(refined(tmp_path / "whole"), tmp_path / "whole", quiet=True, overwrite=True)
    train(refined(tmp_path / "self"), tmp_path / "self", quiet=True, overwrite=True, hooks=InterruptAt(13))
    # the copy is the norms read when the run was built, not the run's own new ones
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "self" / "checkpoint.npz")[0]["refined_norms"], norms)
    resume(tmp_path / "self", quiet=True)
    whole, _ = _params(tmp_path / "whole" / "checkpoint.npz")
    resumed, _ = _params(tmp_path / "self" / "checkpoint.npz")
    assert whole.keys() == resumed.keys()
    for k in whole:
        np.testing.assert_array_equal(resumed[k], whole[k], err_msg=k)
    # the source may go away once the run is built
    train(refined(tmp_path / "a"), tmp_path / "gone", quiet=True, hooks=InterruptAt(13))
    shutil.rmtree(tmp_path / "a")
    resume(tmp_path / "gone", quiet=True)
    gone, _ = _params(tmp_path / "gone" / "checkpoint.npz")
    for k in whole:
        np.testing.assert_array_equal(gone[k], whole[k], err_msg=k)


@pytest.mark.parametrize("steps, warmup, expected", [
    # the default boundaries (half, three quarters of the steps after warmup) that are distinct steps >= 1
    (1, 0, [0.1, 0.1]), (2, 0, [0.1, 0.01, 0.01]), (3, 0, [0.1, 0.01, 0.001, 0.001]),
    (4, 0, [0.1, 0.1, 0.01, 0.001, 0.001]), (10, 9, [0.0, *[0.1 * t / 9 for t in range(1, 10)], 0.1]),
])
def test_piecewise_constant_defaults_fit_short_runs(steps, warmup, expected):
    from seqcore.train import build_schedule
    lr = build_schedule(TrainConfig(**{**SMALL, "lr": 0.1, "steps": steps, "warmup": warmup,
                                       "schedule": "piecewise-constant"}))
    assert [lr(t) for t in range(steps + 1)] == pytest.approx(expected, abs=1e-15)


def test_infinite_continuing_task_fills_the_run():
    from seqcore import schedules
    from seqcore.train import build_schedule
    cfg = TrainConfig(**{**SMALL, "lr": 0.1, "steps": 40, "schedule": "infinite",
                         "schedule_kwargs": {"start_in_constant": True}})
    lr = build_schedule(cfg)  # plateau at lr/10 for 32 steps, anneal over the last 8 to lr/100
    want = schedules.infinite(0.1, 0.01, 0.001, 0, 0, 32, 8, start_in_constant=True)
    assert [lr(t) for t in range(41)] == [want(t) for t in range(41)]
    assert lr(0) == lr(32) == pytest.approx(0.01) and lr(40) == pytest.approx(0.001) and lr(39) > lr(40)


@pytest.mark.parametrize("steps, warmup, schedule, fields, error, match", [
    (40, 5, "infinite", {"start_in_constant": True}, ValueError,
     r"warmup: got 5 with the infinite schedule's start_in_constant, expected 0"),
    (40, 3, "infinite", {"start_in_constant": np.True_}, ValueError, r"warmup: got 3 with the infinite schedule's"),
    (40, 0, "infinite", {"start_in_constant": True, "cooldown_steps": 4}, ValueError,
     r"cooldown_steps: got 4 with start_in_constant, expected none"),
    (40, 0, "infinite", {"cooldown_steps": 100}, ValueError, r"cooldown_steps: got 100, expected <= steps - warmup = 40"),
    (40, 10, "infinite", {"anneal_steps": 31}, ValueError, r"anneal_steps: got 31, expected <= steps - warmup = 30"),
    (3, 2, "refined", {"from_run": "x"}, ValueError, r"steps: got 3 with warmup 2, expected steps - warmup >= 2"),
    (10, 0, "refined", {"from_run": 3}, TypeError, r"from_run: got 3 \(int\), expected the directory of a run"),
    (10, 0, "refined", {"from_run": ""}, TypeError, r"from_run: got '' \(str\)"),
    (10, 0, "piecewise-constant", {"factors": [1, 2]}, ValueError,
     r"factors: got 2 values with boundaries \[5, 7\], expected len\(boundaries\) \+ 1 = 3"),
    (10, 0, "piecewise-constant", {"factors": [1, -1, 0.1]}, ValueError,
     r"factors: got \[1, -1, 0.1\], expected a list of finite numbers >= 0"),
    (10, 0, "piecewise-constant", {"boundaries": 5}, TypeError, r"boundaries: got 5, expected a list of steps"),
])
def test_run_schedule_fields_are_checked_by_name(steps, warmup, schedule, fields, error, match):
    from seqcore.train import build_schedule
    with pytest.raises(error, match=match):
        build_schedule(TrainConfig(**{**SMALL, "steps": steps, "warmup": warmup, "schedule": schedule,
                                      "schedule_kwargs": fields}))


@pytest.mark.parametrize("field", ["clip", "lr", "weight_decay"])
def test_integers_too_large_for_a_float_are_refused_by_name(field):
    with pytest.raises(ValueError, match=f"^{field}: got 1000"):
        TrainConfig(**{**SMALL, field: 10 ** 400})


def test_unwritable_run_directory_names_out(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"out: got '.*afile/sub'.*\(--out\)"):
        train(TrainConfig(**{**SMALL, "steps": 2}), tmp_path / "afile" / "sub", quiet=True)


def test_a_diverging_run_ends_diverged_without_numpy_warnings(tmp_path):
    import warnings
    cfg = TrainConfig(**{**SMALL, "cell": "elman", "cell_kwargs": {"nonlinearity": "relu"}, "optimizer": "sgd",
                         "lr": 1e12, "clip": None, "schedule": "constant"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would escape as an exception
        summary, _ = train(cfg, tmp_path / "run", quiet=True)
    assert summary["status"] == "diverged"
    # the message names the step where it stopped: the updates applied so far
    import re
    step = int(re.search(r"training diverged after step (\d+): ", summary["message"]).group(1))
    assert summary["steps"] == step < 10
    # no evaluation came before it: the kept checkpoint is step 0's, the initial parameters
    from seqcore.runs import params_to_arrays
    from seqcore.train import Run
    kept, meta = _params(tmp_path / "run" / "checkpoint.npz")
    assert meta["step"] == 0
    for k, v in params_to_arrays(Run(cfg).trainer.params).items():
        np.testing.assert_array_equal(kept[k], v, err_msg=k)


def test_all_finite_sees_a_nan_or_inf_in_any_leaf():
    from seqcore.train import _all_finite
    ok = {"a": np.zeros((2, 3), np.float32), "b": [np.ones(4), np.float64(2.0)], "c": None}
    assert _all_finite(ok, np.asarray) and _all_finite({}, np.asarray)
    for path, bad in ((("a",), np.float32(np.inf)), (("b", 0), np.nan), (("b", 1), -np.inf)):
        tree = {"a": ok["a"].copy(), "b": [ok["b"][0].copy(), ok["b"][1]], "c": None}
        if path == ("b", 1):
            tree["b"][1] = np.float64(bad)
        elif path == ("a",):
            tree["a"][1, 2] = bad
        else:
            tree["b"][0][3] = bad
        assert not _all_finite(tree, np.asarray), path


def test_an_overflowed_optimizer_state_ends_diverged_and_is_never_checkpointed(tmp_path):
    # Adam in float32 with a huge learning rate and no clipping: the squared gradients overflow the
    # second moment to inf, after which every update is zero while loss and gradients stay finite;
    # the run must stop as diverged at the next checkpoint, keeping the last finite one
    cfg = TrainConfig(**{**SMALL, "cell": "leaky", "hidden": 16, "optimizer": "adam", "lr": 30.0, "clip": None,
                         "schedule": "constant", "steps": 200, "eval_every": 10})
    summary, _ = train(cfg, tmp_path / "run", quiet=True)
    assert summary["status"] == "diverged", summary["message"]
    assert "the optimizer state (opt_state/" in summary["message"]
    arrays, meta = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert meta["step"] < summary["steps"]
    assert all(np.isfinite(v).all() for k, v in arrays.items() if v.dtype.kind == "f")
    # a checkpoint holding such a state is refused as damaged on resume
    from seqcore.runs import check_finite_params
    bad = dict(arrays)
    key = next(k for k in bad if k.startswith("opt_state/") and bad[k].dtype.kind == "f")
    bad[key] = np.full_like(bad[key], np.inf)
    with pytest.raises(ValueError, match="holds NaN or Inf"):
        check_finite_params("ckpt", bad)


def test_resume_refuses_a_log_that_lost_or_damaged_its_records(tmp_path):
    """metrics.jsonl holds one record per evaluation before the checkpoint; a missing, emptied or
    hand-damaged one is one error naming the file, not a traceback or a silently shorter log."""
    cfg = TrainConfig(**SMALL)
    out = tmp_path / "run"
    train(cfg, out, quiet=True, hooks=InterruptAt(25))  # checkpoint at 20, two records
    good = (out / "metrics.jsonl").read_text()
    for damage, match in [(lambda p: p.unlink(), "holds 0 evaluation records up to step 20, expected the 2"),
                          (lambda p: p.write_text(""), "holds 0 evaluation records"),
                          (lambda p: p.write_text(good.splitlines()[0] + "\n"), "holds 1 evaluation records"),
                          (lambda p: p.write_text('{"step": "x"}\n' + good), 'record 1: "step": got \'x\''),
                          # a hand-damaged record in the middle, which the summary would be built from
                          (lambda p: p.write_text('{"step": 15, "garbage": true}\n' + good.splitlines()[1] + "\n"),
                           "line 1 holds {'step': 15, 'garbage': True}; expected \"step\" an int")]:
        damage(out / "metrics.jsonl")
        with pytest.raises(ValueError, match="metrics.jsonl: " + match):
            resume(out, quiet=True)
        (out / "metrics.jsonl").write_text(good)
    # a finished run whose summary is rebuilt from its last record: that record is checked
    train(cfg, tmp_path / "done", quiet=True)
    (tmp_path / "done" / "summary.json").unlink()
    log = tmp_path / "done" / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for bad in ({"eval": 5}, {"loss": "abc"}, {"eval": {"n2": {"loss": 0.5, "accuracy": "high"}}}):
        log.write_text("".join(json.dumps({**r, **bad} if i == len(records) - 1 else r) + "\n"
                               for i, r in enumerate(records)))
        with pytest.raises(ValueError, match="metrics.jsonl: the record of step 40 holds"):
            resume(tmp_path / "done", quiet=True)


def test_a_task_field_edited_in_config_json_is_an_error_naming_the_file(tmp_path):
    train(TrainConfig(**{**SMALL, "steps": 10}), tmp_path / "run", quiet=True)
    path = tmp_path / "run" / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "task_kwargs": {"n": "x"}}))
    for call in (lambda: resume(tmp_path / "run", quiet=True, steps=20), lambda: load_run(tmp_path / "run")):
        with pytest.raises(ValueError, match=r"config.json: n: got 'x'"):
            call()


def test_lorenz96_alpha_trains_a_closed_loop_model(tmp_path):
    """alpha < 1 is generalised teacher forcing: the run's model feeds its forecasts back."""
    from seqcore.train import Run

    def cfg(alpha, mode="sequential"):
        return TrainConfig(task="lorenz96", task_kwargs=dict(dim=6, length=8, burn_in=5, alpha=alpha), hidden=8,
                           steps=4, batch_size=4, eval_every=2, eval_batches=1, eval_batch_size=4, mode=mode)
    run = Run(cfg(0.25))
    assert run.model.feedback == 0.25 and Run(cfg(1.0)).model.feedback is None
    losses = {a: train(cfg(a), quiet=True)[0]["final_loss"] for a in (1.0, 0.0)}
    assert losses[1.0] != losses[0.0]
    with pytest.raises(ValueError, match="mode: got 'parallel' with task 'lorenz96' alpha=0.25, expected 'sequential'"):
        Run(cfg(0.25, "parallel"))


def test_n_curricula_default_max_n_counts_from_the_first_n():
    from seqcore.tasks import make
    from seqcore.train import model_builder
    for kwargs, first in (({}, 2), ({"start_n": 40}, 40), ({"start_n": np.int64(40)}, 40)):
        cfg = TrainConfig(**{**SMALL, "curriculum": "single-head", "curriculum_kwargs": kwargs})
        curriculum, build = model_builder(cfg, make("nparity", n=2))
        assert curriculum.start_n == first and curriculum.max_n == first + 30
        assert [h.name for h in build(4).heads][-1] == f"n{first + 30}"


def test_target_accuracy_is_refused_where_no_head_reports_an_accuracy():
    cfg = TrainConfig(task="lorenz96", task_kwargs={"dim": 5, "length": 8}, cell="gru", hidden=4, steps=2,
                      batch_size=2, eval_every=1, eval_batches=1, eval_batch_size=2, target_accuracy=0.9)
    with pytest.raises(ValueError, match="target_accuracy: got 0.9 with task 'lorenz96'"):
        train(cfg)


def test_a_step_that_diverges_leaves_the_trainer_as_it_was():
    from seqcore import optim
    from seqcore.train import Trainer, TrainingDiverged

    def loss(p, batch):
        return (p["w"] * batch[0]).sum()

    trainer = Trainer(loss, {"w": np.ones(3)}, optim.adam(1.0))
    trainer.step((np.ones(3), None, None))
    state, params = optim.state_to_arrays(trainer.opt_state), trainer.params["w"].copy()
    # a finite loss and gradient whose update overflows the parameters
    trainer.constrain = lambda p: {"w": p["w"] + np.inf}
    with pytest.raises(TrainingDiverged, match="a parameter"):
        trainer.step((np.ones(3), None, None))
    after = optim.state_to_arrays(trainer.opt_state)
    assert after.keys() == state.keys() and all(np.array_equal(after[k], state[k]) for k in state)
    assert np.array_equal(trainer.params["w"], params) and trainer.step_count == 1


def test_trainer_records_the_norm_of_a_huge_finite_float32_gradient():
    """Squaring float32 entries near 1e20 overflowed: the step's norm was recorded as inf (and a
    refined schedule then refused the run's history). Oracle: the float64 norm."""
    from seqcore import ops, optim
    from seqcore.train import Trainer
    c = np.array([3e19, -6e19, 1.0], np.float32)  # the gradient of sum(w · c)
    trainer = Trainer(lambda p, batch: ops.sum(p["w"] * c), {"w": np.zeros(3, np.float32)}, optim.sgd(0.0))
    trainer.step((np.zeros((1, 1, 1), np.float32), np.zeros(1, np.int64), None))
    want = float(np.linalg.norm(c.astype(np.float64)))
    assert math.isfinite(trainer.grad_norm) and trainer.grad_norm == pytest.approx(want, rel=1e-6)


# -- QA r4_train: evaluation size, progress bar, lost interrupts, the resolved max_n ----------------

def test_an_evaluation_of_more_than_1e8_sequences_is_refused_by_name():
    """A huge eval_batches was accepted and the run hung at its first evaluation."""
    from seqcore.train import MAX_EVAL_SEQUENCES, Run, check_eval_count
    from seqcore.tasks import make
    assert MAX_EVAL_SEQUENCES == 10**8
    with pytest.raises(ValueError, match=r"^eval_batches: got 1000000000, expected at most 25000000 batches of "
                                         r"eval_batch_size=4: at most 100000000 sequences per evaluation"):
        Run(TrainConfig(**{**SMALL, "eval_batches": 10**9, "eval_batch_size": 4}))
    with pytest.raises(ValueError, match=r"^eval_batches: got 10{23}, expected at most 390625 batches"):
        Run(TrainConfig(**{**SMALL, "eval_batches": 10**23, "eval_batch_size": 256}))
    task = make("nparity", n=2)
    check_eval_count(25_000_000, 4, task)  # exactly 10^8 sequences: allowed
    with pytest.raises(ValueError, match="^eval_batches: got 25000001, expected at most 25000000"):
        check_eval_count(25_000_001, 4, task)
    with pytest.raises(ValueError, match=r"^eval_batch_size: got 100000001, expected at most 100000000 sequences"):
        check_eval_count(1, 10**8 + 1, task)
    with pytest.raises(ValueError, match=r"^--batches: got 0, expected an integer >= 1"):
        check_eval_count(0, 4, task, ("--batches", "--batch-size"))

    class TestSplit:  # a data set's evaluation stops at the end of its test split
        def __init__(self, size):
            self.size = size

        def num_examples(self, split="train"):
            assert split == "test"
            return self.size
    check_eval_count(10**9, 256, TestSplit(10_000))
    with pytest.raises(ValueError, match="^eval_batches: got 1000000000"):
        check_eval_count(10**9, 256, TestSplit(10**8 + 1))


class Bar:
    """A stand-in for the tqdm bar: records every postfix."""

    def __init__(self):
        self.postfixes = []

    def update(self, n):
        pass

    def set_postfix(self, postfix):
        self.postfixes.append(dict(postfix))

    def close(self):
        pass


@pytest.mark.parametrize("task, curriculum", [
    ({"task": "lorenz96", "task_kwargs": {"dim": 5, "length": 8, "burn_in": 5}}, "fixed"),
    ({"task": "nparity", "task_kwargs": {"n": 2}}, "multi-head"),
])
def test_the_progress_bar_shows_n_and_accuracy_only_where_the_run_has_them(tmp_path, monkeypatch, task, curriculum):
    """The bar showed `acc=nan, N=None` for lorenz96. Oracle: the metrics.jsonl records."""
    from seqcore import train as train_module
    bar = Bar()
    monkeypatch.setattr(train_module, "progress_bar", lambda total, initial, quiet: bar)
    cfg = TrainConfig(**{**SMALL, **task, "curriculum": curriculum, "steps": 20})
    train(cfg, tmp_path / "run")
    records = RunDir(tmp_path / "run").read_metrics()
    want = []
    for r in records:
        heads = r["eval"].values()
        if curriculum == "fixed":  # regression without a tolerance: no accuracy, no N
            want.append({"loss": f"{r['loss']:.4f}", "eval_loss": f"{np.mean([h['loss'] for h in heads]):.4f}"})
        else:
            want.append({"loss": f"{r['loss']:.4f}", "N": r["level"],
                         "acc": f"{np.mean([h['accuracy'] for h in heads]):.3f}"})
    assert len(records) == 2 and bar.postfixes == want


def test_an_interrupt_request_stops_the_loop_at_the_next_step(tmp_path):
    """A signal handler's KeyboardInterrupt raised inside a finaliser is printed and dropped by Python;
    the request the handler makes as well stops the loop before its next step."""
    from seqcore.train import request_interrupt

    class LostInterrupt(Hooks):
        def after_step(self, trainer, batch, loss):
            if trainer.step_count == 13:
                request_interrupt()  # as the handler does, its KeyboardInterrupt lost
    summary, _ = train(TrainConfig(**SMALL), tmp_path / "run", hooks=LostInterrupt(), quiet=True)
    assert (summary["status"], summary["steps"]) == ("interrupted", 13)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz")[1]["step"] == 10  # the last checkpoint is kept
    # the request is withdrawn once handled: the run resumes to the end
    assert resume(tmp_path / "run", quiet=True)[0]["status"] == "completed"
    with pytest.raises(TypeError, match="requested: got 'yes', expected True or False"):
        request_interrupt("yes")


def test_an_interrupt_request_at_the_last_step_does_not_stop_the_next_run():
    """A request made during the last step comes too late to stop that run; it used to stay set and
    stop the next run of the process at step 0."""
    from seqcore.train import interrupt_requested, request_interrupt

    class LateInterrupt(Hooks):
        def after_step(self, trainer, batch, loss):
            if trainer.step_count == SMALL["steps"]:
                request_interrupt()
    first, _ = train(TrainConfig(**SMALL), hooks=LateInterrupt(), quiet=True)
    assert first["status"] == "completed" and not interrupt_requested()
    second, _ = train(TrainConfig(**SMALL), quiet=True)
    assert (second["status"], second["steps"]) == ("completed", SMALL["steps"])


def test_the_default_max_n_counts_from_the_tasks_largest_n_and_is_recorded():
    """README said "the first N + 30": it is the larger of the first N and the task's largest N, + 30."""
    cfg = TrainConfig(**{**SMALL, "task_kwargs": {"n": [2, 10]}, "curriculum": "multi-head", "steps": 10})
    summary, _ = train(cfg, quiet=True)
    assert summary["max_n"] == 10 + 30
    assert train(TrainConfig(**{**SMALL, "steps": 10}), quiet=True)[0]["max_n"] is None


def test_a_momentum_is_refused_with_an_optimizer_that_ignores_it():
    """The CLI refused it; the library took it silently. The default (recorded in every
    config.json) stays accepted with any optimizer."""
    TrainConfig(optimizer="adam")
    assert TrainConfig(optimizer="sgd", momentum=0.5).momentum == 0.5
    for name in ("adam", "adamw", "rmsprop", "adagrad"):
        with pytest.raises(ValueError, match=rf"^momentum: got 0.5 with optimizer '{name}', which does not use"):
            TrainConfig(optimizer=name, momentum=0.5)


def test_a_trainer_refuses_initial_parameters_that_are_not_finite():
    """They were reported as a divergence at step 0, 'the last good checkpoint was kept', with none."""
    from seqcore import optim
    from seqcore.train import Trainer
    params = {"w": np.array([1.0, np.inf]), "rnn": [{"b": np.zeros(2)}]}
    with pytest.raises(ValueError, match=r"^params\['w'\]: got NaN or inf in the initial parameters"):
        Trainer(lambda p, b: (p["w"] * 0).sum(), params, optim.sgd(0.1))
    with pytest.raises(ValueError, match=r"^params\['rnn/0/b'\]: got NaN or inf"):
        Trainer(lambda p, b: 0.0, {"w": np.ones(2), "rnn": [{"b": np.array([np.nan, 0.0])}]}, optim.sgd(0.1))


def test_a_leaky_tau_init_beyond_the_dtype_is_refused_by_name():
    from seqcore import cells
    cell = cells.make("leaky", 2, 3, tau_init=1e39)  # finite as a Python float, inf in float32
    with pytest.raises(ValueError, match=r"^tau_init: got 1e\+39, expected at most 3.403e\+38 \(the largest float32\)"):
        cell.init(np.random.default_rng(0))
    assert cell.init(np.random.default_rng(0), np.float64)["tau"][0] == 1e39


class KeepAfterStep(Hooks):
    """Copies of the parameters after each step, and the batch it trained on."""

    def __init__(self):
        self.params, self.batches = {}, {}

    def after_step(self, trainer, batch, loss):
        from seqcore.tree import tree_map
        self.params[trainer.step_count] = tree_map(lambda v: np.array(v, copy=True), trainer.params)
        self.batches[trainer.step_count] = batch


def test_a_cyclical_run_whose_example_losses_overflow_ends_diverged(tmp_path):
    """Finite new parameters whose forward pass overflows (ReLU Elman states) made the cyclical
    curriculum's record_losses raise: no status, no summary.json, and resume failed the same way.
    It is a divergence after that step, as the fixed curriculum reports one."""
    from seqcore.runs import params_to_arrays
    from seqcore.train import Run
    cfg = TrainConfig(task="nparity", task_kwargs={"n": 8}, curriculum="cyclical",
                      curriculum_kwargs={"num_examples": 200}, cell="elman", cell_kwargs={"nonlinearity": "relu"},
                      hidden=16, steps=30, batch_size=16, eval_every=1, eval_batches=1, eval_batch_size=32,
                      optimizer="sgd", momentum=0.0, lr=10.0, clip=None, schedule="constant")
    hook = KeepAfterStep()
    summary, _ = train(cfg, tmp_path / "run", quiet=True, hooks=hook)
    assert summary["status"] == "diverged", summary["message"]
    step = summary["steps"]
    assert summary["message"].startswith(f"training diverged after step {step}: a per-example loss (cyclical "
                                         "curriculum) is not finite; the last good checkpoint was kept")
    # oracle: the parameters after that step are finite, but their outputs on its batch are not;
    # those of the step before are finite throughout
    for s, finite in ((step - 1, True), (step, False)):
        assert all(np.isfinite(v).all() for v in params_to_arrays(hook.params[s]).values())
        x, _, mask = hook.batches[s]
        with np.errstate(over="ignore", invalid="ignore"):
            out = Run(cfg).model.outputs(hook.params[s], x, mask)
        assert all(np.isfinite(np.asarray(o)).all() for o in out.values()) == finite, s
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"
    kept, meta = _params(tmp_path / "run" / "checkpoint.npz")
    assert meta["step"] == step - 1  # checkpointed at every evaluation: the last good step's
    for k, v in params_to_arrays(hook.params[step - 1]).items():
        np.testing.assert_array_equal(kept[k], v, err_msg=k)
    again, _ = resume(tmp_path / "run", quiet=True)
    assert (again["status"], again["steps"]) == ("diverged", step)


def test_a_run_refuses_a_null_max_n_before_its_directory_is_made(tmp_path):
    """None is the curricula's "no limit"; a run built heads up to start_n only and crashed at its
    first advance ("heads: got ['n3'], expected names among ['n2']"), leaving an unusable directory."""
    from seqcore.tasks import make, make_curriculum
    for curriculum in ("single-head", "multi-head", "sliding"):
        assert make_curriculum(curriculum, make("nparity", n=2), max_n=None).max_n is None  # the library's own
        cfg = TrainConfig(**{**SMALL, "curriculum": curriculum, "curriculum_kwargs": {"max_n": None}})
        with pytest.raises(ValueError, match=rf"^max_n: got None for the '{curriculum}' curriculum of a run, "
                                             r"expected an int >= start_n: the model holds a head for every N"):
            train(cfg, tmp_path / "run", quiet=True)
        assert not (tmp_path / "run").exists()


def test_trainer_checks_its_arguments_when_built_and_the_loss_is_a_scalar():
    """Each failed at the first step with an unnamed AttributeError/TypeError, after `train` had
    written its run directory."""
    from seqcore import ops, optim
    from seqcore.train import Trainer
    params = {"w": np.ones(3)}
    good = dict(loss_fn=lambda p, b: ops.sum(p["w"] * b[0]), params=params, optimizer=optim.sgd(0.1))
    for change, message in ((dict(loss_fn=None), "^loss_fn: got NoneType, expected a callable"),
                            (dict(optimizer=0.1), "^optimizer: got float, expected a seqcore.optim"),
                            (dict(hooks="x"), "^hooks: got str, expected a seqcore.train.Hooks"),
                            (dict(constrain=1), "^constrain: got int, expected a callable")):
        with pytest.raises(TypeError, match=message):
            Trainer(**{**good, **change})
    vector = Trainer(**{**good, "loss_fn": lambda p, b: p["w"] * b[0]})
    with pytest.raises(ValueError, match=r"^loss_fn: returned shape \(3,\), expected a scalar loss"):
        vector.step((np.ones(3), None, None))
    trainer = Trainer(**good)
    with pytest.raises(TypeError, match="^batch: got dict, expected a tasks.Batch or an"):
        trainer.step({"x": np.ones(3)})
    assert trainer.step([np.ones(3), None, None]) == 3.0  # a list batch too, as the model takes it
    trainer = Trainer(**good)
    assert trainer.step((np.arange(3.0), None, None)) == 3.0  # sum(w · x) at w = 1
    np.testing.assert_array_equal(trainer.params["w"], 1 - 0.1 * np.arange(3.0))  # the SGD step, by hand


# -- QA w2: a hook's extra loss reaches the update, and the hooks run in the README's order ----------

class SquaredWeightHh(Hooks):
    """The README's L2 example: extra loss c·Σ w_hh²."""

    def __init__(self, c):
        self.c = c

    def extra_loss(self, trainer, params, batch):
        from seqcore import ops
        w = params["rnn"][0]["weight_hh"]
        return self.c * ops.sum(w * w)


def _float64_run_and_batch(batch_size=16):
    from seqcore.train import Run
    from seqcore.tree import tree_map
    run = Run(TrainConfig(**{**SMALL, "dtype": "float64"}))
    return run, tree_map(np.array, run.trainer.params), run.task.sample(np.random.default_rng(5), batch_size)


def test_a_hooks_extra_loss_gradient_joins_the_task_gradient_before_the_optimizer():
    """README: the extra loss's "gradient joins the task loss's before the optimizer sees it" and
    "the step's reported loss is the sum". Oracle: one plain SGD step written out, with the task
    gradient from model.loss_and_grad and the extra term's 2c·w by hand; the total gradient also
    against central finite differences of the summed loss on a few coordinates."""
    from seqcore import optim
    from seqcore.train import Trainer
    from seqcore.tree import tree_map, tree_paths
    run, theta, batch = _float64_run_and_batch()
    c, lr = 0.5, 0.1
    trainer = Trainer(run.loss, theta, optim.sgd(lr), hooks=SquaredWeightHh(c))
    loss = trainer.step(batch)
    task_loss, g = run.model.loss_and_grad(theta, batch, heads=["n2"])
    w = theta["rnn"][0]["weight_hh"]
    assert loss == pytest.approx(task_loss + c * np.sum(w * w), rel=1e-12, abs=0)
    assert c * np.sum(w * w) > 0.1 * task_loss  # the extra term is no rounding error of the sum
    want = tree_map(lambda p, gi: p - lr * gi, theta, g)
    want["rnn"][0]["weight_hh"] = w - lr * (g["rnn"][0]["weight_hh"] + 2 * c * w)
    got = dict(tree_paths(trainer.params))
    for path, v in tree_paths(want):
        np.testing.assert_allclose(got[path], v, rtol=1e-12, atol=1e-14, err_msg=path)
    # the gradient the update applied, against finite differences of task + extra loss
    applied = (w - trainer.params["rnn"][0]["weight_hh"]) / lr

    def total(weight_hh):
        p = tree_map(np.array, theta)
        p["rnn"][0]["weight_hh"] = weight_hh
        return float(run.loss(p, batch)) + c * np.sum(weight_hh * weight_hh)
    eps = 1e-6
    for idx in ((0, 0), (3, 5), (17, 2)):
        up, down = w.copy(), w.copy()
        up[idx] += eps
        down[idx] -= eps
        assert applied[idx] == pytest.approx((total(up) - total(down)) / (2 * eps), rel=1e-6, abs=1e-9), idx


class RecordOrder(Hooks):
    """Every hook records its call; transform_grads doubles the gradients, transform_updates adds
    a constant: the final parameters tell in which order these ran."""

    def __init__(self, events, c, shift, poison=False):
        self.events, self.c, self.shift, self.poison, self.seen = events, c, shift, poison, {}

    def prepare_batch(self, trainer, batch):
        from seqcore.tasks import Batch
        self.events.append("prepare_batch")
        self.seen["prepared"] = Batch(batch.x[:8], batch.y[:8], batch.mask[:8])  # as a replay learner swaps it
        return self.seen["prepared"]

    def extra_loss(self, trainer, params, batch):
        from seqcore import ops
        self.events.append("extra_loss")
        self.seen["extra_batch"] = batch
        w = params["rnn"][0]["weight_hh"]
        return self.c * ops.sum(w * w)

    def transform_grads(self, trainer, grads, batch):
        from seqcore.tree import tree_map
        self.events.append("transform_grads")
        self.seen["grads"] = tree_map(np.array, grads)
        if self.poison:
            return tree_map(lambda v: v * np.nan, grads)
        return tree_map(lambda v: 2 * v, grads)

    def transform_updates(self, trainer, updates):
        from seqcore.tree import tree_map
        self.events.append("transform_updates")
        self.seen["updates"] = tree_map(np.array, updates)
        return tree_map(lambda u: u + self.shift, updates)

    def after_step(self, trainer, batch, loss):
        from seqcore.tree import tree_map
        self.events.append("after_step")
        self.seen["after"] = (batch, loss, trainer.step_count, tree_map(np.array, trainer.params))


def _recording_trainer(run, theta, lr, hooks, events):
    """A Trainer whose loss, optimizer and projection record their calls in ``events`` too."""
    from seqcore import optim
    from seqcore.train import Trainer
    from seqcore.tree import tree_map
    sgd = optim.sgd(lr)

    def loss(p, batch):
        events.append("loss")
        return run.loss(p, batch)

    def update(grads, state, params=None):
        events.append("optimizer")
        hooks.seen["optimizer_grads"] = tree_map(np.array, grads)
        return sgd.update(grads, state, params)

    def constrain(p):
        events.append("constrain")
        hooks.seen["constrain_in"] = tree_map(np.array, p)
        return tree_map(lambda v: 0.5 * v, p)
    return Trainer(loss, theta, optim.GradientTransformation(sgd.init, update), hooks=hooks, constrain=constrain)


def test_hooks_run_in_the_order_the_readme_documents():
    """README "Training from Python": prepare_batch → loss + extra_loss → transform_grads → NaN guard
    → optimizer → transform_updates → update and constrain → after_step. Oracle: every stage's input
    computed by hand from the task gradient on the prepared batch (model.loss_and_grad) plus 2c·w."""
    from seqcore.train import TrainingDiverged
    from seqcore.tree import tree_map, tree_paths
    run, theta, batch = _float64_run_and_batch()
    c, lr, shift = 0.5, 0.1, 1e-3
    events = []
    hooks = RecordOrder(events, c, shift)
    trainer = _recording_trainer(run, theta, lr, hooks, events)
    loss = trainer.step(batch)
    assert events == ["prepare_batch", "loss", "extra_loss", "transform_grads", "optimizer", "transform_updates",
                      "constrain", "after_step"]
    prepared = hooks.seen["prepared"]
    assert hooks.seen["extra_batch"] is prepared  # extra_loss gets the (prepared) NumPy batch
    task_loss, g = run.model.loss_and_grad(theta, prepared, heads=["n2"])
    w = theta["rnn"][0]["weight_hh"]
    g["rnn"][0]["weight_hh"] = g["rnn"][0]["weight_hh"] + 2 * c * w
    stages = {  # what each stage must receive, by hand
        "grads": g,                                                         # task + extra gradient
        "optimizer_grads": tree_map(lambda v: 2 * v, g),                    # after transform_grads
        "updates": tree_map(lambda v: -lr * 2 * v, g),                      # the SGD step
        "constrain_in": tree_map(lambda p, v: p - lr * 2 * v + shift, theta, g),  # after transform_updates
    }
    final = tree_map(lambda p, v: 0.5 * (p - lr * 2 * v + shift), theta, g)  # the projection last
    batch_after, loss_after, step_after, params_after = hooks.seen["after"]
    compared = [(name, hooks.seen[name], want) for name, want in stages.items()]
    compared += [("trainer.params", trainer.params, final), ("after_step's trainer.params", params_after, final)]
    for name, tree, want in compared:
        got = dict(tree_paths(tree))
        for path, v in tree_paths(want):
            np.testing.assert_allclose(got[path], v, rtol=1e-12, atol=1e-14, err_msg=f"{name}: {path}")
    assert loss == loss_after == pytest.approx(task_loss + c * np.sum(w * w), rel=1e-12, abs=0)
    assert batch_after is prepared and step_after == 1
    # the NaN guard sees the transformed gradients and stops before the optimizer: nothing changes
    events.clear()
    poisoned = _recording_trainer(run, theta, lr, RecordOrder(events, c, shift, poison=True), events)
    with pytest.raises(TrainingDiverged, match="a gradient"):
        poisoned.step(batch)
    assert events == ["prepare_batch", "loss", "extra_loss", "transform_grads"]
    assert poisoned.step_count == 0 and all(np.array_equal(a, b) for a, b in
                                            zip(tree_leaves(poisoned.params), tree_leaves(theta)))
