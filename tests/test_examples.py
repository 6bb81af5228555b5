"""The reproduction scripts' table arithmetic, on hand-made run directories."""
import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tables():
    return load_example("continual_tables")


def write_run(path, summary, records=()):
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_gap_table_reads_the_dip_the_recovery_and_the_end(tmp_path, tables):
    # experience 1 ends at 0.80; in experience 2 it dips to 0.60 after 10 updates, is back
    # within 0.03 (>= 0.77) at update 20, and ends at 0.75
    acc1 = {0: 0.80, 5: 0.70, 10: 0.60, 15: 0.76, 20: 0.78, 25: 0.75}
    records = [{"iteration": 95, "experience": 0, "accuracy": [0.79]},
               {"iteration": 100, "experience": 0, "accuracy": [0.80]}]
    records += [{"iteration": 100 + s, "experience": 1, "accuracy": [a, 0.1]} for s, a in acc1.items()]
    write_run(tables.run_dir(tmp_path, "gap", "replay", 0), {"status": "completed"}, records)
    write_run(tables.run_dir(tmp_path, "gap", "naive", 0), {"status": "failed"}, records)  # not completed: left out
    text, curves = tables.gap_table(tmp_path, 0)
    rows = [line for line in text.splitlines() if line.startswith("| ER")]
    assert rows == ["| ER | 0.800 | 0.600 (after 10 updates) | 20 | 0.750 |"]
    assert list(curves) == ["ER"]
    assert curves["ER"] == (list(acc1), list(acc1.values()))


def test_gap_table_says_never_when_accuracy_does_not_come_back(tmp_path, tables):
    records = [{"iteration": 10 + s, "experience": 1, "accuracy": [a, 0.2]} for s, a in ((0, 0.9), (5, 0.5), (10, 0.6))]
    write_run(tables.run_dir(tmp_path, "gap", "naive", 0), {"status": "completed"}, records)
    text, _ = tables.gap_table(tmp_path, 0)
    assert "| naive | 0.900 | 0.500 (after 5 updates) | never | 0.600 |" in text


def test_gap_table_names_a_run_with_no_evaluation_in_the_gap_window(tmp_path, tables):
    """A log that stops before experience 2's first updates were evaluated said 'min() arg is an empty
    sequence'."""
    records = [{"iteration": 10, "experience": 1, "accuracy": [0.9, 0.2]}]  # only the boundary evaluation
    path = tables.run_dir(tmp_path, "gap", "naive", 0)
    write_run(path, {"status": "completed"}, records)
    with pytest.raises(ValueError, match=f"^{path}: no evaluation of experience 1 in experience 2's first"):
        tables.gap_table(tmp_path, 0)


def test_metric_table_gives_mean_and_sample_sd_over_completed_seeds(tmp_path, tables):
    keys = tables.METRICS
    for seed, base in ((0, 0.5), (1, 0.7)):
        write_run(tables.run_dir(tmp_path, "sgd", "ewc", seed),
                  {"status": "completed", "wall_time_s": 10 + 20 * seed, **{k: base for k in keys}})
    write_run(tables.run_dir(tmp_path, "sgd", "si", 0), {"status": "completed", "wall_time_s": 3,
                                                          **{k: -0.25 for k in keys}})
    text = tables.metric_table(tmp_path, "sgd", [0, 1])
    ewc = next(line for line in text.splitlines() if line.startswith("| EWC"))
    # mean 0.6, sample standard deviation sqrt(2 * 0.1**2 / 1) = 0.141; mean wall 20 s
    assert ewc == "| EWC | `--strength 1` | 2 | " + " | ".join(["0.600 ± 0.141"] * len(keys)) + " | 20 |"
    si = next(line for line in text.splitlines() if line.startswith("| SI"))
    assert si.endswith("| 1 | " + " | ".join(["−0.250"] * len(keys)) + " | 3 |")
    naive = next(line for line in text.splitlines() if line.startswith("| naive"))
    assert "| 0 |" in naive


def test_single_seed_metric_table_has_the_readme_columns(tmp_path, tables):
    keys = tables.METRICS
    write_run(tables.run_dir(tmp_path, "sgd", "ewc", 0), {"status": "completed", "wall_time_s": 7,
                                                           **{k: 0.5 for k in keys}})
    lines = tables.metric_table(tmp_path, "sgd", [0]).splitlines()
    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text().splitlines()
    assert lines[0] in readme and lines[1] == "|" + "---|" * (len(keys) + 3)
    assert next(x for x in lines if x.startswith("| EWC")) == \
        "| EWC | `--strength 1` | " + " | ".join(["0.500"] * len(keys)) + " | 7 |"
    naive = next(x for x in lines if x.startswith("| naive"))
    assert naive.count("|") == lines[1].count("|")


def test_every_table_entry_is_a_valid_config(tables):
    from seqcore.continual import ContinualConfig
    for table, (changes, rows) in tables.TABLES.items():
        for label, name, learner, kwargs, extra, _ in rows:
            cfg = ContinualConfig(**{**tables.PROTOCOL, **changes, **extra}, learner=learner, learner_kwargs=kwargs)
            assert cfg.learner == learner, (table, label)


# -- argument checks, resumption and atomic outputs of the example and benchmark scripts ------------

BENCHMARKS = EXAMPLES.parent / "benchmarks"


def load_script(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refusal(capsys, main, argv):
    """The one-line usage error ``main(argv)`` exits with (status 2, nothing else printed)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_continual_tables_refuses_unknown_rows_and_repeated_or_negative_seeds(tmp_path, tables, capsys):
    out = tmp_path / "out"
    line = refusal(capsys, tables.main, ["--out", str(out), "--tables", "gap", "--rows", "nosuch"])
    assert "--rows: got ['nosuch']" in line and line.endswith("naive, replay, ewc")
    line = refusal(capsys, tables.main, ["--out", str(out), "--tables", "sgd", "--rows", "sharp"])  # an Adam row
    assert "--rows: got ['sharp']" in line
    line = refusal(capsys, tables.main, ["--out", str(out), "--no-run", "--tables", "adam", "--seeds", "0", "1", "0"])
    assert "--seeds: got [0, 1, 0], which repeats [0]" in line
    assert "--seeds: got '-1', expected an integer >= 0" in refusal(capsys, tables.main, ["--out", str(out),
                                                                                          "--seeds", "-1"])
    (tmp_path / "file").write_text("")
    assert "which is a file" in refusal(capsys, tables.main, ["--out", str(tmp_path / "file"), "--no-run"])
    assert not out.exists()


def test_continual_tables_leaves_an_unmeasured_metric_out_of_its_mean(tmp_path, tables):
    for seed, fwt in ((0, None), (1, 0.2), (2, None)):
        write_run(tables.run_dir(tmp_path, "adam", "ewc", seed), {"status": "completed", "wall_time_s": 4,
                                                                 **{k: 0.5 for k in tables.METRICS}, "fwt": fwt})
    text = tables.metric_table(tmp_path, "adam", [0, 1, 2])
    ewc = next(line for line in text.splitlines() if line.startswith("| EWC"))
    assert ewc.endswith("| 3 | " + " | ".join(["0.500 ± 0.000"] * (len(tables.METRICS) - 1)) + " | 0.200 | 4 |")
    write_run(tables.run_dir(tmp_path, "sgd", "ewc", 0), {"status": "completed", "wall_time_s": None,
                                                         **{k: None for k in tables.METRICS}})
    ewc = next(line for line in tables.metric_table(tmp_path, "sgd", [0]).splitlines() if line.startswith("| EWC"))
    assert ewc.endswith(" | ".join(["—"] * (len(tables.METRICS) + 1)) + " |")


def test_continual_tables_reports_a_damaged_run_and_an_unwritable_out_in_one_line(tmp_path, tables, monkeypatch):
    records = [{"iteration": 10 + s, "experience": 1, "accuracy": [a, 0.2]} for s, a in ((0, 0.9), (5, 0.5))]
    write_run(tables.run_dir(tmp_path, "gap", "naive", 0), {"status": "completed"}, records)
    metrics = tables.run_dir(tmp_path, "gap", "naive", 0) / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 61, "itera')
    with pytest.raises(SystemExit) as info:
        tables.main(["--no-run", "--out", str(tmp_path), "--tables", "gap", "--seeds", "0"])
    assert info.value.code == f"continual_tables.py: error: {metrics}: line 3: not valid JSON " \
        "(Unterminated string starting at: line 1 column 14 (char 13))"
    assert not (tmp_path / "tables.md").exists()

    with pytest.raises(SystemExit) as info:  # no sgd run yet: empty tables would read like results
        tables.main(["--no-run", "--out", str(tmp_path), "--tables", "sgd"])
    assert info.value.code == f"continual_tables.py: error: no completed runs under {tmp_path} for the tables " \
        "sgd; run the sweep first (without --no-run)"
    write_run(tables.run_dir(tmp_path, "sgd", "ewc", 0), {"status": "completed", **{k: 0.5 for k in tables.METRICS}})

    def full(path, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(tables, "atomic_write", full)
    with pytest.raises(SystemExit) as info:
        tables.main(["--no-run", "--out", str(tmp_path), "--tables", "sgd"])
    assert info.value.code == f"continual_tables.py: error: cannot write the tables into {tmp_path} " \
        "(No space left on device)"


def test_continual_tables_interrupted_while_writing_keeps_the_earlier_tables(tmp_path, tables, monkeypatch, capsys):
    (tmp_path / "tables.md").write_text("earlier tables\n")
    write_run(tables.run_dir(tmp_path, "sgd", "ewc", 0), {"status": "completed", **{k: 0.5 for k in tables.METRICS}})

    def ctrl_c(path, data):
        raise KeyboardInterrupt
    monkeypatch.setattr(tables, "atomic_write", ctrl_c)
    with pytest.raises(SystemExit) as info:
        tables.main(["--no-run", "--out", str(tmp_path), "--tables", "sgd"])
    assert info.value.code == 130  # was a traceback
    assert capsys.readouterr().err.strip() == "interrupted while writing the tables; the earlier tables.md is unchanged"
    assert (tmp_path / "tables.md").read_text() == "earlier tables\n"


def test_continual_tables_resumes_an_interrupted_run_and_restarts_another_config(tmp_path, tables, monkeypatch):
    import seqcore.continual as continual
    from seqcore.continual import ContinualConfig
    protocol = dict(dataset="synthetic", experiences=2, steps=6, eval_every=3, hidden=4, batch_size=8, eval_size=20,
                    synthetic=dict(n_train=40, n_test=20))
    monkeypatch.setattr(tables, "PROTOCOL", protocol)
    monkeypatch.setattr(tables, "TABLES", {"t": ({}, [("naive", "naive", "naive", {}, {}, "—"),
                                                      ("EWC", "ewc", "ewc", dict(strength=1), {}, "")])})
    cfg = {name: ContinualConfig(**protocol, learner=name, learner_kwargs=kw)
           for name, kw in (("naive", {}), ("ewc", dict(strength=1)))}
    # naive: stopped after 4 of its 12 updates (a checkpoint, no completed summary); ewc: another config's run
    continual.run_continual(cfg["naive"], str(tables.run_dir(tmp_path, "t", "naive", 0)), quiet=True, stop_at_step=4)
    other = ContinualConfig(**{**protocol, "lr": 0.01}, learner="ewc", learner_kwargs=dict(strength=1))
    continual.run_continual(other, str(tables.run_dir(tmp_path, "t", "ewc", 0)), quiet=True, stop_at_step=4)
    calls = []
    for fn in ("run_continual", "resume_continual"):
        real = getattr(continual, fn)
        monkeypatch.setattr(continual, fn, lambda *a, _f=fn, _real=real, **k: calls.append((_f, a, k)) or _real(*a, **k))
    tables.run_missing(tmp_path, ["t"], [0])
    assert [(f, a[1] if f == "run_continual" else a[0], k.get("overwrite")) for f, a, k in calls] == [
        ("resume_continual", str(tables.run_dir(tmp_path, "t", "naive", 0)), None),
        ("run_continual", str(tables.run_dir(tmp_path, "t", "ewc", 0)), True)]
    resumed = tables.completed(tables.run_dir(tmp_path, "t", "naive", 0))
    fresh, _ = continual.run_continual(cfg["naive"], str(tmp_path / "fresh"), quiet=True)
    assert resumed["steps"] == 12 and resumed["accuracy_matrix"] == fresh["accuracy_matrix"]
    assert tables.completed(tables.run_dir(tmp_path, "t", "ewc", 0))
    assert ContinualConfig.read(tables.run_dir(tmp_path, "t", "ewc", 0) / "config.json") == cfg["ewc"]
    calls.clear()
    tables.run_missing(tmp_path, ["t"], [0])  # everything completed: nothing runs
    assert calls == []


@pytest.fixture(scope="module")
def timescales():
    return load_example("timescales")


TINY_TIMESCALES = ["--backend", "numpy", "--steps", "20", "--hidden", "4", "--eval-every", "10", "--batch-size", "8",
                   "--max-n", "3", "--tasks", "nparity", "--curricula", "single-head"]


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "--steps: got 0, expected an integer >= 1"),
    (["--eval-every", "0"], "--eval-every: got 0"),
    (["--lr", "-1"], "--lr: got -1.0"),
    (["--seed", "-1"], "--seed: got -1"),
    (["--max-n", "1"], "--max-n: got 1, expected >= start_n=2"),
    (["--curricula", "anti"], "--curricula: got ['anti']"),
    (["--tasks", "nparity,nparity"], "--tasks: got 'nparity,nparity', expected each name once"),
    (["--out", " "], "--out: got ' ', expected a folder name"),
    # the memory checks train makes at its start, here before any run (not a traceback from inside one)
    (["--hidden", "300000"], "--hidden: got 300000, whose 9e+10 parameters"),
    (["--batch-size", "100000000"], "--batch-size: got 100000000, whose activations"),
])
def test_timescales_refuses_bad_options_before_creating_the_output_folder(tmp_path, timescales, capsys, extra,
                                                                         message):
    out = tmp_path / "out"
    line = refusal(capsys, timescales.main, [*TINY_TIMESCALES, "--out", str(out), *extra])
    assert message in line
    assert not out.exists()


def test_timescales_refuses_a_file_as_output_folder(tmp_path, timescales, capsys):
    (tmp_path / "f").write_text("keep")
    assert "--out: got" in refusal(capsys, timescales.main, [*TINY_TIMESCALES, "--out", str(tmp_path / "f")])
    assert (tmp_path / "f").read_text() == "keep"


def test_timescales_writes_through_atomic_write_and_reports_a_failed_write_in_one_line(tmp_path, timescales,
                                                                                       monkeypatch, capsys):
    real, written = timescales.atomic_write, []

    def write(path, data):
        if str(path).endswith(".png"):
            raise OSError(27, "File too large")
        written.append(path.name)
        real(path, data)
    monkeypatch.setattr(timescales, "atomic_write", write)
    with pytest.raises(SystemExit) as info:
        timescales.main([*TINY_TIMESCALES, "--out", str(tmp_path)])
    assert "cannot write the results into" in str(info.value.code) and "File too large" in str(info.value.code)
    assert written == ["timescales.json", "timescales.md"]
    assert json.loads((tmp_path / "timescales.json").read_text())[0]["task"] == "nparity"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timescales.json", "timescales.md"]  # no temporaries


def fake_result(task, curriculum, status, curve, message=""):
    return {"task": task, "curriculum": curriculum, "curve": curve,
            "summary": {"status": status, "message": message, "max_level": 3, "final_loss": float("nan")}}


CURVE = [{"step": 10, "level": 3, "acc_all_n": {"n2": 0.75, "n3": 0.5}, "mean_tau": 1.5}]


def test_timescales_ctrl_c_exits_130_and_keeps_the_published_results(tmp_path, timescales, monkeypatch, capsys):
    (tmp_path / "timescales.md").write_text("published")
    ran = []

    def run_one(cfg):
        ran.append(cfg.curriculum)
        return fake_result(cfg.task, cfg.curriculum, "interrupted", CURVE[:1])
    monkeypatch.setattr(timescales, "run_one", run_one)
    argv = [*TINY_TIMESCALES, "--curricula", "single-head,multi-head", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as info:
        timescales.main(argv)
    assert info.value.code == 130 and ran == ["single-head"]  # the next run never started
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timescales.md"]
    assert (tmp_path / "timescales.md").read_text() == "published"


def test_timescales_says_why_a_run_diverged_marks_its_row_and_writes_strict_json(tmp_path, timescales, monkeypatch,
                                                                                 capsys):
    def run_one(cfg):  # single-head diverges before its first evaluation; multi-head completes
        if cfg.curriculum == "single-head":
            return fake_result(cfg.task, cfg.curriculum, "diverged", [], "training diverged after step 0: boom")
        return fake_result(cfg.task, cfg.curriculum, "completed", CURVE)
    monkeypatch.setattr(timescales, "run_one", run_one)
    monkeypatch.setattr(timescales, "plot", lambda results, path: None)
    with pytest.raises(SystemExit) as info:
        timescales.main([*TINY_TIMESCALES, "--curricula", "single-head,multi-head", "--out", str(tmp_path)])
    assert "1 run(s) did not finish (nparity single-head)" in str(info.value.code)
    captured = capsys.readouterr()
    assert "nparity single-head: diverged: training diverged after step 0: boom" in captured.err
    md = (tmp_path / "timescales.md").read_text().splitlines()
    assert md[2] == "| nparity | single-head (diverged) | — | — | — | — |"
    # multi-head: level 3, earlier N is n2 only (0.75), n2 while level > 2 is 0.75, τ 1.5
    assert md[3] == "| nparity | multi-head | 3 | 0.750 | 0.750 | 1.50 |"

    def reject(token):
        raise ValueError(f"not strict JSON: {token}")
    results = json.loads((tmp_path / "timescales.json").read_text(), parse_constant=reject)
    assert [r["summary"]["final_loss"] for r in results] == [None, None]  # NaN written as null
    assert timescales.table(results).splitlines() == md  # the table is recomputed from the JSON


def test_timescales_writes_nothing_when_every_run_diverged(tmp_path, timescales, monkeypatch, capsys):
    monkeypatch.setattr(timescales, "run_one", lambda cfg: fake_result(cfg.task, cfg.curriculum, "diverged", [],
                                                                        "training diverged after step 0: boom"))
    with pytest.raises(SystemExit) as info:
        timescales.main([*TINY_TIMESCALES, "--out", str(tmp_path)])
    assert "every run failed (nparity single-head); nothing written" in str(info.value.code)
    assert "boom" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_plot_schedules_refuses_folders_and_unknown_formats_and_appends_png(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    plot_schedules = load_example("plot_schedules")
    assert "which is a folder" in refusal(capsys, plot_schedules.main, [str(tmp_path), "--steps", "40"])
    assert "output: got '', expected a file name" in refusal(capsys, plot_schedules.main, ["", "--steps", "40"])
    line = refusal(capsys, plot_schedules.main, [str(tmp_path / "s.txt"), "--steps", "40"])
    assert "suffix 'txt'" in line and ".png" in line
    assert "does not exist" in refusal(capsys, plot_schedules.main, [str(tmp_path / "no" / "s.png"), "--steps", "40"])
    monkeypatch.setattr(plot_schedules, "build_schedules", lambda total: {"constant": [("1", lambda t: 1.0)]})
    plot_schedules.main([str(tmp_path / "s"), "--steps", "40"])
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 's.png'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")


def schedule_names():
    from seqcore import schedules
    return set(schedules.__all__) - {"Schedule"}  # the type alias is no schedule


def test_plot_schedules_prints_every_schedule_without_matplotlib(capsys, monkeypatch):
    plot_schedules = load_example("plot_schedules")
    panels = plot_schedules.build_schedules(40)
    assert set(panels) == schedule_names()  # a new schedule, or one the example no longer builds, fails here
    monkeypatch.setattr(plot_schedules, "pyplot", lambda: None)  # as seqcore.plotting.pyplot without matplotlib
    plot_schedules.main(["--steps", "40"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "matplotlib is missing (pip install 'seqcore[plot]'); printing values instead."
    assert lines[1].split() == ["schedule", "0", "4", "10", "20", "30", "39", "40"]
    rows = {line[:48].strip(): [float(v) for v in line[48:].split()] for line in lines[2:]}
    assert len(rows) == len(lines) - 2 == sum(len(curves) for curves in panels.values())
    assert {label.split(" / ")[0] for label in rows} == schedule_names()
    # hand values at steps 0, 4, 10, 20, 30, 39, 40 of T = 40 (printed to 4 decimals)
    assert rows["constant / constant(1)"] == [1.0] * 7
    assert rows["linear_decay / η(1 − t/T)"] == [1.0, 0.9, 0.75, 0.5, 0.25, 0.025, 0.0]
    assert rows["piecewise_constant / ÷10 at ½T, ¾T"] == [1.0, 1.0, 1.0, 0.1, 0.01, 0.01, 0.01]
    assert rows["cosine / α=0"] == [1.0, 0.9755, 0.8536, 0.5, 0.1464, 0.0015, 0.0]  # ½(1 + cos(πt/40))


def test_plot_schedules_draws_a_panel_per_schedule(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    plot_schedules = load_example("plot_schedules")
    plt = plot_schedules.pyplot()
    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append(fig), close(fig)))  # keep the figure to read it
    plot_schedules.main([str(tmp_path / "s.png"), "--steps", "40"])
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 's.png'}"
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")
    drawn = {ax.get_title(): len(ax.get_lines()) for ax in figures[0].axes if ax.axison}
    panels = plot_schedules.build_schedules(40)
    assert set(drawn) == schedule_names()
    assert drawn == {title: len(curves) for title, curves in panels.items()}


@pytest.mark.parametrize("script, argv, message", [
    ("scan_bandwidth.py", ["--repeats", "0"], "argument --repeats: got 0, expected an integer >= 1"),
    ("step_memory.py", ["--shape", "1", "0", "4"], "argument --shape: got 0, expected an integer >= 1"),
    ("blas_pin.py", ["--pin", ""], "--pin: got ''"),
    ("sequence_products.py", ["--shapes", "16,32"], "argument --shapes: got '16,32', expected B,T,H"),
    ("rnn_vs_torch.py", ["--threads", "0"], "argument --threads: got 0"),
    ("newton.py", ["--backends", "nosuch"], "--backends: got unknown ['nosuch']"),
    ("training_steps.py", ["--steps", "0"], "argument --steps: got 0, expected an integer >= 1"),
    ("training_steps.py", ["--cells", "nosuch"], "--cells: got unknown ['nosuch']"),
])
def test_benchmark_scripts_refuse_bad_arguments_in_one_line(script, argv, message):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), *argv], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert "Traceback" not in out.stderr and message in out.stderr.strip().splitlines()[-1]


def test_benchmark_helpers_report_a_failed_child_and_ctrl_c_in_one_line(capsys):
    import sys
    common = load_script(BENCHMARKS / "_common.py", "benchmarks_common_under_test")
    with pytest.raises(SystemExit) as info:
        common.run_child([sys.executable, "-c", "print('partial'); 1 / 0"], None, "defaults")
    assert info.value.code == "error: child (defaults) failed: ZeroDivisionError: division by zero"
    assert "ZeroDivisionError" in capsys.readouterr().err  # the child's own traceback, not the parent's
    assert common.run_child([sys.executable, "-c", "print('{\"ms\": 1.5}')"], None, "x") == {"ms": 1.5}

    def interrupted():
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as info:
        common.run_script(interrupted)
    assert info.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_newton_benchmark_exits_nonzero_when_a_case_fails():
    import subprocess
    import sys
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('nb', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m.machine_info = lambda: ''; "
            "m.run_case = lambda *a: 1 / 0; "
            "m.main(['--T', '8', '--backends', 'numpy', '--cells', 'diag_gru', '--hidden', '4', '--batch', '1'])")
    out = subprocess.run([sys.executable, "-c", code, str(BENCHMARKS / "newton.py")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1, out.stderr
    assert "failed: ZeroDivisionError" in out.stdout
    assert out.stderr.strip() == "error: 1 case(s) failed (see the 'failed:' rows above)"
