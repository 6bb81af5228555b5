"""examples/timescales.py: the mean τ per N, and the report rebuilt from a stored timescales.json."""
import json

import pytest

from test_examples import load_example, refusal


@pytest.fixture(scope="module")
def timescales():
    return load_example("timescales")


def row(step, level, tau):  # N=2's head at 0.5 once left, the current N at 1.0
    return {"step": step, "level": level, "acc_all_n": {"n2": 0.5, f"n{level}": 1.0}, "mean_tau": tau}


def result(task, curriculum, curve, status="completed"):
    return {"task": task, "curriculum": curriculum, "curve": curve,
            "summary": {"status": status, "message": "", "max_level": max([r["level"] for r in curve], default=2)}}


# single-head: 2 evaluations at N=2, one at N=3, three at N=5 (N=4 passed between evaluations)
SINGLE = [row(10, 2, 1.0), row(20, 2, 1.2), row(30, 3, 1.5), row(40, 5, 2.0), row(50, 5, 2.5), row(60, 5, 3.5)]
MULTI = [row(10, 2, 1.0), row(20, 3, 1.25), row(30, 4, 1.0)]


def test_tau_per_n_is_the_mean_over_the_evaluations_at_each_n(timescales):
    taus = timescales.tau_per_n(SINGLE)
    assert list(taus) == [2, 3, 5]
    assert taus == pytest.approx({2: (1.0 + 1.2) / 2, 3: 1.5, 5: (2.0 + 2.5 + 3.5) / 3}, rel=1e-15)
    assert timescales.tau_per_n([]) == {}


TAU_LINES = ["Mean τ per N: the mean over the evaluations made while the curriculum was at N.", "",
             "| N | nparity single-head | nparity multi-head |",
             "| --- | --- | --- |",
             "| 2 | 1.100 | 1.000 |",
             "| 3 | 1.500 | 1.250 |",
             "| 4 | — | 1.000 |",
             "| 5 | 2.667 | — |"]


def test_tau_table_has_a_row_per_n_and_a_column_per_finished_run(timescales):
    diverged = result("ndms", "single-head", [row(10, 2, 9.0)], status="diverged")  # no result: no column
    results = [result("nparity", "single-head", SINGLE), result("nparity", "multi-head", MULTI), diverged]
    assert timescales.tau_table(results).splitlines() == TAU_LINES
    md = timescales.table(results).splitlines()  # the runs' table first, then this one
    assert md[:5] == timescales.runs_table(results).splitlines() and md[5:] == ["", *TAU_LINES]
    assert timescales.tau_table([diverged]) == ""


@pytest.mark.parametrize("curve, error, message", [
    ({"level": 2}, TypeError, "curve: got dict, expected a list"),
    ([{"level": 2}], ValueError, "curve[0]: got {'level': 2}, expected a record with 'level' and 'mean_tau'"),
    ([row(10, 0, 1.0)], ValueError, "curve[0]['level']: got 0, expected an integer >= 1"),
    ([row(10, 2, 1.0), row(20, 2, None)], TypeError, "curve[1]['mean_tau']: got None"),
])
def test_tau_per_n_names_a_bad_record(timescales, curve, error, message):
    with pytest.raises(error) as info:
        timescales.tau_per_n(curve)
    assert str(info.value).startswith(message)


def test_from_json_rebuilds_the_tables_and_the_figure_without_training(tmp_path, timescales, monkeypatch):
    results = [result("nparity", "single-head", SINGLE), result("nparity", "multi-head", MULTI)]
    stored = tmp_path / "stored.json"
    stored.write_text(json.dumps(results))
    plotted = []
    monkeypatch.setattr(timescales, "train", lambda *a, **k: pytest.fail("--from-json trained"))
    monkeypatch.setattr(timescales, "plot", lambda res, path: plotted.append((res, path.name)))
    out = tmp_path / "out"
    timescales.main(["--from-json", str(stored), "--out", str(out)])
    md = (out / "timescales.md").read_text().splitlines()
    assert md[2:4] == ["| nparity | single-head | 5 | 0.500 | 0.500 | 3.50 |",
                       "| nparity | multi-head | 4 | 0.500 | 0.500 | 1.00 |"]
    assert md[5:] == TAU_LINES
    assert json.loads((out / "timescales.json").read_text()) == results
    assert plotted == [(results, "timescales.png")]


def test_from_json_plots_tau_against_n(tmp_path, timescales):
    plt = pytest.importorskip("matplotlib.pyplot")
    figures = []
    close = plt.close
    try:  # the figure, kept when plot closes it
        plt.close = lambda fig: (figures.append(fig), close(fig))
        timescales.plot([result("nparity", "single-head", SINGLE), result("nparity", "multi-head", MULTI)],
                        tmp_path / "t.png")
    finally:
        plt.close = close
    axes = [ax for ax in figures[0].axes if ax.get_xlabel() == "N"]
    assert [ax.get_ylabel() for ax in axes] == ["mean τ at N", "mean τ at N"]
    assert [list(ax.lines[0].get_xdata()) for ax in axes] == [[2, 3, 5], [2, 3, 4]]
    assert list(axes[0].lines[0].get_ydata()) == pytest.approx([1.1, 1.5, 8 / 3])
    assert (tmp_path / "t.png").stat().st_size > 0


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("{", "not valid JSON"),
    ("{}", "got {}, expected a non-empty list of runs"),
    ('[{"task": "nparity"}]', "run 0: lacks ['curriculum', 'summary', 'curve']"),
    (json.dumps([result("nparity", "single-head", [row(10, 2, None)])]), "run 0: curve[0]['mean_tau']: got None"),
    (json.dumps([result("nparity", "single-head", [{"level": 2, "mean_tau": 1.0}])]),
     "run 0: curve[0]: got {'level': 2, 'mean_tau': 1.0}, expected a record with 'step' and 'acc_all_n'"),
    (json.dumps([result("nparity", "single-head", [{**row(10, 2, 1.0), "acc_all_n": {"x2": 0.5}}])]),
     "run 0: curve[0]['acc_all_n']: got the key 'x2', expected 'n<N>' (n2, n3, ...)"),
    (json.dumps([result("nparity", "single-head", [{**row(10, 2, 1.0), "acc_all_n": {"n2": 2.5}}])]),
     "run 0: curve[0]['acc_all_n']['n2']: got 2.5"),
    (json.dumps([result("nparity", "single-head", [{**row(10, 2, 1.0), "acc_all_n": {"n2": None}}])]),
     "run 0: curve[0]['acc_all_n']['n2']: got None"),
    (json.dumps([{**result("nparity", "single-head", [row(10, 2, 1.0)]),
                  "summary": {"status": "completed", "max_level": "3"}}]), "run 0: summary['max_level']: got '3'"),
    (json.dumps([result("nparity", "single-head", [row(10, 2, 1.0)], status="diverged"),
                 result("ndms", "multi-head", [], status="interrupted")]),
     "got no finished run (diverged, interrupted), expected at least one"),
])
def test_from_json_refuses_a_file_it_cannot_rebuild_from_in_one_line(tmp_path, timescales, capsys, content, message):
    stored = tmp_path / "stored.json"
    if content is not None:
        stored.write_text(content)
    out = tmp_path / "out"
    line = refusal(capsys, timescales.main, ["--from-json", str(stored), "--out", str(out)])
    assert f"error: --from-json: {stored}: " in line and message in line
    assert not out.exists()


def test_from_json_refuses_training_options(tmp_path, timescales, capsys):
    line = refusal(capsys, timescales.main, ["--from-json", str(tmp_path / "t.json"), "--steps", "5", "--seed", "1"])
    assert line.endswith("--from-json: got it with --steps, --seed, expected no training options (nothing is trained)")


def test_runs_table_counts_an_n_passed_at_the_last_evaluation_as_earlier(timescales):
    """The last evaluation records the level before its advance (3 → 4): N = 3, passed there, is an
    earlier N of the run that reached 4, as the "largest N reached" column beside it says."""
    curve = [row(10, 2, 1.0), {"step": 20, "level": 3, "acc_all_n": {"n2": 0.6, "n3": 0.98}, "mean_tau": 1.1}]
    res = result("nparity", "multi-head", curve)
    res["summary"]["max_level"] = 4
    assert timescales.runs_table([res]).splitlines()[2] == "| nparity | multi-head | 4 | 0.790 | 0.600 | 1.10 |"
    # nothing earlier, and no N = 2 reading after leaving it: a dash, as in the README's table
    only = result("ndms", "single-head", [row(10, 2, 1.0)])
    assert timescales.runs_table([only]).splitlines()[2] == "| ndms | single-head | 2 | — | — | 1.00 |"
