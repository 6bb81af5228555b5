"""Run directories: creating one where it cannot be written is a ValueError naming ``out``."""
import errno
import json
import os
import re

import pytest

from seqcore.runs import RunDir


def test_create_writes_the_config(tmp_path):
    rd = RunDir(tmp_path / "a" / "b")
    rd.create({"x": 1})
    assert json.loads(rd.config.read_text()) == {"x": 1}
    # written atomically: no temporary file left beside it, and an ordinary file's mode (not mkstemp's 0600)
    assert sorted(p.name for p in rd.path.iterdir()) == ["config.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert rd.config.stat().st_mode & 0o777 == 0o644 & ~umask
    # a run killed before its first checkpoint: the same config again may start over, another is refused
    rd.create({"x": 1})
    with pytest.raises(ValueError, match=r"holds config.json but no checkpoint.npz .*--overwrite"):
        rd.create({"x": 2})
    assert json.loads(rd.config.read_text()) == {"x": 1}
    # with a log or a summary beside it, even the same config is refused: they would be lost
    rd.log({"step": 1})
    with pytest.raises(ValueError, match=r"holds config.json, metrics.jsonl but no checkpoint.npz"):
        rd.create({"x": 1})
    assert rd.read_metrics() == [{"step": 1}]
    rd.create({"x": 2}, overwrite=True)
    assert json.loads(rd.config.read_text()) == {"x": 2} and rd.read_metrics() == []
    rd.log({"step": 3, "v": [1.5]})
    rd.log({"step": 4})
    assert rd.read_metrics() == [{"step": 3, "v": [1.5]}, {"step": 4}]
    # with a checkpoint there, a run is refused unless overwritten
    from seqcore.runs import save_checkpoint
    save_checkpoint(rd.checkpoint, {}, {"step": 0})
    with pytest.raises(ValueError, match="already holds a run"):
        rd.create({"x": 3})
    assert json.loads(rd.config.read_text()) == {"x": 2} and len(rd.read_metrics()) == 2
    rd.create({"x": 3}, overwrite=True)
    assert json.loads(rd.config.read_text()) == {"x": 3} and rd.read_metrics() == []
    # the overwritten run's checkpoint and summary go with it: a process killed before the new
    # run's first checkpoint leaves nothing to resume, not the new config beside the old weights
    assert not rd.checkpoint.exists() and not rd.summary.exists()


def test_files_that_are_not_a_run_are_not_replaced(tmp_path):
    """A config file kept in --out (``--config exp/config.json --out exp``) is not a run to replace."""
    (tmp_path / "config.json").write_text('{"task": "nparity"}')
    rd = RunDir(tmp_path)
    with pytest.raises(ValueError, match="holds config.json but no checkpoint.npz"):
        rd.create({"task": "nparity", "steps": 5})
    assert (tmp_path / "config.json").read_text() == '{"task": "nparity"}'
    (tmp_path / "config.json").unlink()
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match="holds summary.json but no checkpoint.npz"):
        rd.create({"x": 1})
    # a checkpoint.npz that is not a file is named as such, not taken for a run to resume
    (tmp_path / "summary.json").unlink()
    rd.checkpoint.mkdir()
    with pytest.raises(ValueError, match=r"checkpoint.npz is not a file"):
        rd.create({"x": 1})


def test_the_lock_holder_removes_temporaries_of_killed_writes(tmp_path):
    rd = RunDir(tmp_path)
    rd.create({"x": 1})
    stale = [tmp_path / ".checkpoint.npz.abc123.tmp", tmp_path / ".summary.json.x9.tmp"]
    for f in stale:
        f.write_bytes(b"partial")
    other = tmp_path / ".notes.tmp"
    other.write_text("not a run file")
    with rd.lock():
        assert not any(f.exists() for f in stale) and other.exists()


def test_run_files_are_strict_json(tmp_path):
    """A loss not measured yet (NaN) or diverged (inf) is written as null: strict parsers have no NaN."""
    import numpy as np
    from seqcore.runs import write_json
    rd = RunDir(tmp_path / "r")
    rd.create({"x": 1})
    rd.log({"step": 0, "loss": float("nan"), "accuracy": [np.float32(0.5), np.inf], "v": np.array([1.0, -np.inf])})
    line = rd.metrics.read_text().strip()
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line) == {"step": 0, "loss": None, "accuracy": [0.5, None], "v": [1.0, None]}
    write_json(tmp_path / "s.json", {"final_loss": np.float64("nan"), "n": np.int64(3)})
    assert json.loads((tmp_path / "s.json").read_text()) == {"final_loss": None, "n": 3}


def test_create_under_a_file_names_out(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match=r"^out: got '.*afile/sub', where no run directory can be written "
                                         r"\(Not a directory\)"):
        RunDir(tmp_path / "afile" / "sub").create({})


def refuse_entries_in(monkeypatch, directory):
    """Answer as the OS answers a user other than root for a directory of mode 0o500: no entry can be
    made in it (simulated, since root, as CI runs, may write anywhere)."""
    real_mkdir, real_open = os.mkdir, os.open

    def refuse(path):
        if os.path.dirname(os.fspath(path)) == os.fspath(directory):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    def mkdir(path, *args, **kwargs):
        refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


def permission_denied_for(path):
    return re.escape(f"out: got {str(path)!r}, where no run directory can be written (Permission denied); expected "
                     "a path where a directory can be created and written (--out)")


def test_create_in_a_read_only_directory_names_out(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    refuse_entries_in(monkeypatch, ro)
    # the run directory cannot be made inside a read-only one
    for attempt in (lambda rd: rd.create({}), RunDir.ensure_writable):
        with pytest.raises(ValueError, match=f"^{permission_denied_for(ro / 'run')}$"):
            attempt(RunDir(ro / "run"))
    # a read-only directory given as the run directory itself: its config.json cannot be written
    with pytest.raises(ValueError, match=f"^{permission_denied_for(ro)}$"):
        RunDir(ro).create({})
    assert os.listdir(ro) == []  # nothing written, no temporary file left


def test_create_on_a_virtual_file_system_names_out():
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    with pytest.raises(ValueError, match=r"^out: got '/proc/nope'"):
        RunDir("/proc/nope").create({})


def test_damaged_metrics_lines_name_the_file_and_line(tmp_path):
    rd = RunDir(tmp_path)
    rd.metrics.write_text('{"step": 1}\n[2]\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2: got a JSON list, expected one object per line"):
        rd.read_metrics()
    rd.metrics.write_text('{"step": 1}\n{bad\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2: not valid JSON"):
        rd.truncate_metrics(5)
    # a partial last line is what a run killed while appending leaves: work after its checkpoint
    rd.metrics.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    rd.truncate_metrics(2)
    assert rd.read_metrics() == [{"step": 1}, {"step": 2}]
    # lines after the step are dropped, those at or before it kept in order
    rd.metrics.write_text("".join(json.dumps({"step": k, "i": i}) + "\n" for i, k in enumerate([5, 10, 15, 20])))
    rd.truncate_metrics(15)
    assert rd.read_metrics() == [{"step": 5, "i": 0}, {"step": 10, "i": 1}, {"step": 15, "i": 2}]
    rd.truncate_metrics(4)
    assert rd.read_metrics() == [] and rd.metrics.read_text() == ""


def test_damaged_checkpoint_meta_and_config_name_the_file(tmp_path):
    import numpy as np
    from seqcore.runs import JsonConfig, blas_threads, load_checkpoint, read_json_object, save_checkpoint
    path = tmp_path / "checkpoint.npz"
    np.savez(path, a=np.zeros(2))
    with pytest.raises(ValueError, match=r"checkpoint.npz: unreadable checkpoint \(no __meta__ record"):
        load_checkpoint(path)
    for meta, match in (([1], r"__meta__: got a JSON list, expected an object"),
                        ({"step": -1}, r"__meta__ step: got -1, expected an integer >= 0")):
        np.savez(path, a=np.zeros(2), __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        with pytest.raises(ValueError, match=match):
            load_checkpoint(path)
    with pytest.raises(TypeError, match=r"^meta: got list, expected a dict"):
        save_checkpoint(path, {}, [1])
    # a checkpoint written and read back holds the same arrays (bits, dtypes) and meta
    arrays = {"params/w": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "opt_state/0/count": np.array(3),
              "curriculum/order": np.array([2, 0, 1], np.int64)}
    meta = {"step": 7, "rng": {"state": 12345678901234567890}, "history": [{"level": None}], "elapsed": 1.25}
    save_checkpoint(path, arrays, meta)
    got, got_meta = load_checkpoint(path)
    assert got_meta == {**meta, "blas_threads": blas_threads()} and got.keys() == arrays.keys()
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k
    (tmp_path / "summary.json").write_text("[1]")
    with pytest.raises(ValueError, match=r"summary.json: got a JSON list, expected an object"):
        read_json_object(tmp_path / "summary.json")
    with pytest.raises(ValueError, match=r"^config: got a list, expected an object of JsonConfig fields"):
        JsonConfig.from_dict([1])


def test_a_run_directory_in_use_is_refused_to_a_second_writer(tmp_path):
    pytest.importorskip("fcntl", reason="run directories are locked with flock, which this OS lacks")
    from seqcore.continual import ContinualConfig, resume_continual, run_continual
    from seqcore.train import TrainConfig, resume, train
    cfg = TrainConfig(task="nparity", task_kwargs={"n": 2}, cell="gru", hidden=4, steps=4, batch_size=4,
                      eval_every=2, eval_batches=1, eval_batch_size=8)
    out = tmp_path / "run"
    with RunDir(out).lock():  # as another process training here would hold it
        with pytest.raises(ValueError, match=rf"out: {out} is in use by another seqcore process \(pid {os.getpid()}\)"):
            train(cfg, out, quiet=True)
        assert not RunDir(out).checkpoint.exists()  # nothing written
    summary, _ = train(cfg, out, quiet=True)  # the lock went with its holder
    assert summary["steps"] == 4
    assert (out / ".lock").read_text() == str(os.getpid())  # the last writer's process id
    with RunDir(out).lock(), pytest.raises(ValueError, match="is in use by another seqcore process"):
        resume(out, quiet=True, steps=6)
    assert resume(out, quiet=True, steps=6)[0]["steps"] == 6
    small = ContinualConfig(experiences=2, steps=4, eval_every=2, eval_size=16, hidden=4, batch_size=4)
    with RunDir(tmp_path / "cl").lock(), pytest.raises(ValueError, match="is in use by another seqcore process"):
        run_continual(small, tmp_path / "cl", quiet=True)
    summary, _ = run_continual(small, tmp_path / "cl", quiet=True, stop_at_step=4)
    assert (summary["status"], summary["steps"]) == ("stopped", 4)
    assert (tmp_path / "cl" / ".lock").read_text() == str(os.getpid())
    with RunDir(tmp_path / "cl").lock(), pytest.raises(ValueError, match="is in use by another seqcore process"):
        resume_continual(tmp_path / "cl", quiet=True)
    assert not (tmp_path / "missing").exists()
    with pytest.raises((ValueError, OSError)):
        resume(tmp_path / "missing", quiet=True)
    assert not (tmp_path / "missing").exists()  # resuming nothing makes no directory


def test_read_metrics_can_skip_a_partial_last_line_and_says_so(tmp_path):
    rd = RunDir(tmp_path)
    rd.metrics.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 3: not valid JSON"):
        rd.read_metrics()
    skipped = []
    assert rd.read_metrics(skip_partial_tail=True, on_skip=lambda: skipped.append(1)) == [{"step": 1}, {"step": 2}]
    assert skipped == [1]
    rd.metrics.write_text('{"step": 1}\n{"st\n{"step": 3}\n')  # damage before the last line is still an error
    with pytest.raises(ValueError, match=r"line 2: not valid JSON"):
        rd.read_metrics(skip_partial_tail=True, on_skip=lambda: skipped.append(2))
    assert skipped == [1]


def test_an_overwritten_run_loses_the_old_runs_report_plot(tmp_path):
    from seqcore.runs import REPORT_PLOT
    rd = RunDir(tmp_path / "r")
    rd.create({"a": 1})
    (rd.path / REPORT_PLOT).write_bytes(b"\x89PNG old curves")
    (rd.path / "notes.txt").write_text("the user's own file")
    rd.create({"a": 2}, overwrite=True)
    assert not (rd.path / REPORT_PLOT).exists()
    assert (rd.path / "notes.txt").read_text() == "the user's own file"  # nothing else is touched


def test_blas_threads_reads_the_count_openblas_was_started_with():
    """The real OpenBLAS's thread count, as OPENBLAS_NUM_THREADS sets it when NumPy loads (OpenBLAS
    caps it at the usable cores); the checkpoints' use of it is tested on every machine below."""
    import subprocess
    import sys
    from seqcore.runs import blas_threads
    if blas_threads() is None:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS whose thread count can be read")
    code = "from seqcore.runs import blas_threads; print(blas_threads())"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for value, expected in (("1", 1), ("2", min(2, cores))):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OPENBLAS_NUM_THREADS": value},
                             capture_output=True, text=True, check=True).stdout
        assert out.strip() == str(expected), (value, out)


def test_checkpoints_record_the_blas_thread_count_and_a_resume_under_another_is_noted(tmp_path, monkeypatch):
    """QA r10: a run checkpointed under 2 OpenBLAS threads (the library's default here) and resumed
    by the CLI (1 thread) ended 4.5e-8 away from the uninterrupted run, with nothing said. The count
    is simulated, so this runs whatever BLAS NumPy has."""
    from seqcore import runs
    from seqcore.runs import blas_threads_note, load_checkpoint, save_checkpoint
    monkeypatch.setattr(runs, "blas_threads", lambda: 3)
    save_checkpoint(tmp_path / "c.npz", {}, {"step": 3})
    meta = load_checkpoint(tmp_path / "c.npz")[1]
    assert meta == {"step": 3, "blas_threads": 3}
    assert blas_threads_note(meta) is None  # resumed under the same count: nothing to say
    assert blas_threads_note({"step": 3}) is None  # a checkpoint older than the record: unknown
    save_checkpoint(tmp_path / "c.npz", {}, {"step": 3, "blas_threads": 5})  # an explicit record wins
    meta = load_checkpoint(tmp_path / "c.npz")[1]
    assert meta["blas_threads"] == 5
    assert blas_threads_note(meta) == (
        "note: the checkpoint was written with 5 BLAS threads, this process runs 3: the resumed run will not be "
        "bit-identical to an uninterrupted one; to match, start it with OPENBLAS_NUM_THREADS=5 in the environment")
    assert blas_threads_note({"step": 3, "blas_threads": 1}).startswith(
        "note: the checkpoint was written with 1 BLAS thread, this process runs 3: ")
    for junk in (0, True, "5", 2.0):  # not a count a checkpoint writes: nothing to say
        assert blas_threads_note({"step": 3, "blas_threads": junk}) is None, junk
    with pytest.raises(TypeError, match="^meta: got list, expected a checkpoint's meta dict$"):
        blas_threads_note([])
    # NumPy's BLAS is not a readable OpenBLAS: the record says so, and no resume is noted
    monkeypatch.setattr(runs, "blas_threads", lambda: None)
    save_checkpoint(tmp_path / "c.npz", {}, {"step": 4})
    meta = load_checkpoint(tmp_path / "c.npz")[1]
    assert meta == {"step": 4, "blas_threads": None}
    assert blas_threads_note({"step": 4, "blas_threads": 5}) is None


def test_the_lock_holder_is_seen_without_taking_the_lock(tmp_path):
    pytest.importorskip("fcntl", reason="run directories are locked with flock, which this OS lacks")
    rd = RunDir(tmp_path / "run")
    assert rd.holder() is None and not rd.path.exists()  # only looks: nothing created
    with rd.lock():
        assert rd.holder() == str(os.getpid())
        (rd.path / ".lock").write_text("")  # the instant before the holder writes its pid
        assert rd.holder() == ""
    assert rd.holder() is None  # released: the file stays, no holder
    with rd.lock():  # holder() gave its shared lock back: a writer can still take the directory
        pass


# -- checkpoints and atomic writes (QA r12 fuzz, F2 and F9) --------------------------------------

def test_load_checkpoint_names_a_bad_keys_argument_not_the_file(tmp_path):
    """keys=object() was 'unreadable checkpoint (argument of type 'object' is not iterable)', which
    blames a good file; a str was matched by substring ('params/w' read 'w')."""
    import numpy as np
    from seqcore.runs import load_checkpoint, save_checkpoint
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"params/w": np.arange(3.0), "w": np.ones(2)}, {"step": 1})
    for keys, match in ((object(), r"^keys: got object <object"), ("params/w", r"^keys: got str 'params/w'"),
                        (["params/w", 3], r"^keys: got int 3 among the names, expected array names \(str\)")):
        with pytest.raises(TypeError, match=match):
            load_checkpoint(path, keys=keys)
    # names the file does not hold are left out: callers ask for optional records ("R" in arrays)
    arrays, meta = load_checkpoint(path, keys=("params/w", "R"))
    assert list(arrays) == ["params/w"] and np.array_equal(arrays["params/w"], np.arange(3.0)) and meta["step"] == 1
    assert list(load_checkpoint(path, keys={"w"})[0]) == ["w"]


def test_save_checkpoint_refuses_a_meta_load_checkpoint_would_refuse(tmp_path):
    """A meta without a valid step was written, and every later load said the file was unreadable."""
    import numpy as np
    from seqcore.runs import save_checkpoint
    path = tmp_path / "c.npz"
    for meta in ({"a": 1}, {"step": -1}, {"step": True}, {"step": 2.0}):
        with pytest.raises(ValueError, match=rf"^meta\['step'\]: got {meta.get('step')!r}, expected an integer >= 0"):
            save_checkpoint(path, {"w": np.ones(2)}, meta)
    assert not path.exists()
    save_checkpoint(path, {"w": np.ones(2)}, {"step": np.int64(0)})  # a NumPy integer is an integer


def test_every_damaged_byte_of_a_checkpoint_is_a_value_error_naming_the_file(tmp_path):
    """The except around the read was narrowed from Exception to what a damaged file raises: each
    byte of a checkpoint flipped in turn must still come back as one ValueError naming the file."""
    import numpy as np
    from seqcore.runs import load_checkpoint, save_checkpoint
    good, path = tmp_path / "good.npz", tmp_path / "bad.npz"
    save_checkpoint(good, {"params/w": np.arange(20.0)}, {"step": 3})
    data = good.read_bytes()
    for i in range(len(data)):
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
        try:
            load_checkpoint(path)
        except ValueError as exc:
            assert str(exc).startswith(f"{path}: "), (i, exc)
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"bad.npz: unreadable checkpoint"):
        load_checkpoint(path)


def test_writing_to_a_directory_path_names_the_path(tmp_path, monkeypatch):
    """atomic_write('') ended in a raw OSError (EBUSY: a rename onto '.')."""
    import numpy as np
    from seqcore.runs import atomic_write, save_checkpoint, write_json
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    for path in ("", ".", "..", "d", tmp_path / "d"):
        with pytest.raises(ValueError, match=rf"^path: got {re.escape(repr(str(path)))}, which names a directory"):
            atomic_write(path, b"x")
    with pytest.raises(ValueError, match=r"^path: got ''"):
        write_json("", {"a": 1})
    with pytest.raises(ValueError, match=r"^path: got ''"):
        save_checkpoint("", {"w": np.ones(2)}, {"step": 0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"] and not list((tmp_path / "d").iterdir())
    atomic_write(tmp_path / "d" / "f", b"x")
    assert (tmp_path / "d" / "f").read_bytes() == b"x"


def test_params_whose_leaves_share_a_checkpoint_path_are_refused():
    """{"a/b": x, "a": {"b": y}} would write one array for two leaves and restore it into both."""
    import numpy as np
    from seqcore.runs import params_from_arrays, params_to_arrays
    with pytest.raises(ValueError, match=r"^params: leaves at keys \('a/b',\) and \('a', 'b'\) have the same"):
        params_to_arrays({"a/b": np.zeros(2), "a": {"b": np.ones(2)}})
    tree = {"a": {"b": np.ones(2)}, "c": [np.zeros(1)]}
    back = params_from_arrays(tree, params_to_arrays(tree))
    assert np.array_equal(back["a"]["b"], tree["a"]["b"]) and np.array_equal(back["c"][0], tree["c"][0])
