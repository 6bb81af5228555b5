"""The benchmark scripts (``benchmarks/``), ``seqcore bench`` and ``seqcore.backends.blas``'s pin
report.  The scripts run with tiny options, with their timing replaced where a figure is checked."""
import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}_under_test", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts benchmarks/ on sys.path, as running the script does
    return module


def run_without(packages, script, *argv):
    """Run ``benchmarks/<script>`` as ``python script argv`` in a process where importing any of
    ``packages`` fails, as on an install without that optional extra."""
    code = ("import runpy, sys\n"
            f"for p in {list(packages)!r}:\n"
            "    sys.modules[p] = None\n"
            "sys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code, str(BENCHMARKS / script), *argv], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


# -- primitives_vs_numpy.py: the Newton rows are not in the geometric mean ---------------------------

@pytest.fixture
def fixed_ratios(monkeypatch):
    """Replace the timing with fixed numpy / numba ratios, one per row, in row order."""
    pytest.importorskip("numba")
    prims = load_script("primitives_vs_numpy")
    import scan_bandwidth
    ratios = []

    def best_of(fns, repeats, streak=1):
        return {"numpy": ratios.pop(0) * 1e-3, "numba": 1e-3}
    monkeypatch.setattr(scan_bandwidth, "best_of", best_of)
    monkeypatch.setattr(scan_bandwidth, "machine_info", lambda: "")
    return prims, ratios


def test_primitives_summary_leaves_the_newton_rows_out_of_the_mean(fixed_ratios, capsys):
    prims, ratios = fixed_ratios
    ratios += [4.0, 16.0, 2.0, 3.0]  # two scan rows, then the DiagGRU and CIFG-LSTM Newton rows
    prims.main(["--scan-shape", "1", "8", "4", "--cell-shape", "1", "4", "4", "--repeats", "1",
                "--only", "linear_scan sequential", "linear_scan chunked", "newton"])
    out = capsys.readouterr().out.splitlines()
    assert "primitives: smallest ratio 4.0× (target ≥ 10×); geometric mean 8.0×" in out  # sqrt(4 · 16)
    assert "newton_recurrence (not in the mean): 2.0×, 3.0×" in out


def test_primitives_summary_with_only_newton_rows(fixed_ratios, capsys):
    prims, ratios = fixed_ratios
    ratios += [2.0, 3.0]
    prims.main(["--cell-shape", "1", "4", "4", "--repeats", "1", "--only", "newton"])
    out = capsys.readouterr().out
    assert "geometric mean" not in out and "smallest ratio" not in out
    assert "newton_recurrence (not in the mean): 2.0×, 3.0×" in out.splitlines()


def test_primitives_times_linear_as_the_lstm_input_projection(fixed_ratios, monkeypatch, capsys):
    """The numba backend replaces ``linear``, which had no row: the ≥ 10× target left it unmeasured."""
    prims, ratios = fixed_ratios
    import types

    import numpy as np
    import scan_bandwidth

    from seqcore import backends, primitives
    nb = backends.get("numba")
    calls = []

    def spy(side, fwd):
        def run(xp, x, w, b):
            y, res = fwd(xp, x, w, b)
            np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-5, atol=1e-5)
            calls.append((side, x.shape, w.shape, b.shape))
            return y, res
        return run

    ref = primitives.get("linear")
    fwd, bwd = nb.primitives["linear"]
    monkeypatch.setitem(nb.primitives, "linear", (spy("numba", fwd), bwd))
    real_get = primitives.get
    monkeypatch.setattr(primitives, "get", lambda name: types.SimpleNamespace(fwd=spy("numpy", ref.fwd), bwd=ref.bwd)
                        if name == "linear" else real_get(name))

    def best_of(fns, repeats, streak=1):  # run each side once, then the fixed ratio
        for f in fns.values():
            f()
        return {"numpy": ratios.pop(0) * 1e-3, "numba": 1e-3}
    monkeypatch.setattr(scan_bandwidth, "best_of", best_of)
    ratios += [4.0, 16.0]  # the sequential scan row, then the linear row
    prims.main(["--scan-shape", "1", "8", "4", "--cell-shape", "2", "8", "16", "--repeats", "1",
                "--only", "linear_scan sequential", "linear x"])
    out = capsys.readouterr().out.splitlines()
    # (B, T, H) = (2, 8, 16): x (2, 8, 16) against the LSTM's input weight (4H, H) = (64, 16); 16 ms / 1 ms
    assert f"{'linear x (2, 8, 16), W (64, 16)':42s} {16.0:9.1f} {1.0:9.2f} {16.0:7.1f}" in out
    assert "primitives: smallest ratio 4.0× (target ≥ 10×); geometric mean 8.0×" in out  # in the mean
    # the reference once for the cotangent's shape, then each side once
    assert calls == [(side, (2, 8, 16), (64, 16), (64,)) for side in ("numpy", "numpy", "numba")]


# -- scan_bandwidth.py: a --batch that does not divide the size -----------------------------------

def test_scan_bandwidth_counts_the_elements_of_the_arrays_it_makes():
    pytest.importorskip("numba")
    out = subprocess.run([sys.executable, str(BENCHMARKS / "scan_bandwidth.py"), "--log2-size", "14", "--batch", "3",
                          "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # 2**14 = 16384; B·D = 3 · 1024, so T = 5 and the arrays hold 3 · 5 · 1024 = 15360 = 240 · 64 elements
    assert "arrays: (B, T, D) = (3, 5, 1024) float32 = 15360 elements" in out.stdout
    assert "narrow state (1, 240, 64)" in out.stdout


@pytest.mark.parametrize("script", ["scan_bandwidth.py", "gpu_scan.py"])
def test_scan_benchmarks_refuse_a_size_no_memory_here_holds(script):
    """--log2-size 60 ended in a NumPy allocation traceback (or 'Unable to allocate 8 TiB')."""
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--log2-size", "60"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: --log2-size: got 60, whose 8 arrays would take" in out.stderr and "GiB of memory" in out.stderr


# -- optional extras not installed: one line, and `seqcore bench` skips the suite -----------------

@pytest.mark.parametrize("script, argv", [
    ("scan_bandwidth.py", ["--log2-size", "14", "--repeats", "1"]),
    ("primitives_vs_numpy.py", ["--repeats", "1"]),
    ("minimal_cells.py", ["--repeats", "1"]),
    ("sequence_products.py", ["--repeats", "1"]),
    ("lstm_step_gemm.py", ["--repeats", "1"]),
    ("step_memory.py", ["--steps", "1", "--rounds", "1"]),
    ("rnn_vs_torch.py", ["--repeats", "1"]),
])
def test_benchmarks_without_numba_exit_with_one_line_naming_the_extra(script, argv):
    out = run_without(["numba"], script, *argv)
    assert out.returncode == 1 and out.stdout == "", out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: this benchmark needs the numba backend: backend 'numba' cannot load")
    assert "pip install 'seqcore[numba]'" in lines[0]


def test_rnn_benchmark_without_torch_names_the_torch_extra():
    out = run_without(["torch"], "rnn_vs_torch.py", "--repeats", "1")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    line = out.stderr.strip()
    assert line.startswith("error: this benchmark needs the torch backend") and "pip install 'seqcore[torch]'" in line


@pytest.mark.parametrize("blocked, suite, needs", [("numba", "scan", "numba"), ("numba", "memory", "numba"),
                                                   ("torch", "rnn", "torch")])
def test_bench_skips_a_suite_whose_extra_is_missing(monkeypatch, blocked, suite, needs):
    from click.testing import CliRunner
    from seqcore_cli import bench
    from seqcore_cli.main import main
    monkeypatch.setitem(sys.modules, blocked, None)  # find_spec then reports it missing
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    result = CliRunner().invoke(main, ["bench", "--quick", suite])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"=== {suite}: skipped (needs {needs}: pip install 'seqcore[{needs}]')"
    assert bench.missing_packages(suite) == [needs] and bench.missing_packages("newton") == []
    with pytest.raises(ValueError, match="name: got 'nope'"):
        bench.missing_packages("nope")


@pytest.mark.parametrize("quick", [False, True])
def test_bench_runs_the_rnn_suite_on_one_thread_per_side(monkeypatch, quick):
    """It ran rnn_vs_torch.py with its default of every core, the setting BENCHMARKS.md says not to read."""
    from click.testing import CliRunner
    from seqcore_cli import bench
    from seqcore_cli.main import main
    ran = []
    monkeypatch.setattr(bench, "missing_packages", lambda name: [])
    monkeypatch.setattr(bench.subprocess, "run",
                        lambda cmd, **k: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    result = CliRunner().invoke(main, ["bench", *(["--quick"] if quick else []), "rnn", "scan"])
    assert result.exit_code == 0, result.output
    (rnn, scan) = ran
    quick_args = ["--repeats", "1", "--batch", "16", "--steps", "128", "--hidden", "64"] if quick else []
    assert Path(rnn[1]).name == "rnn_vs_torch.py" and rnn[2:] == ["--threads", "1", *quick_args]
    assert load_script("rnn_vs_torch").parse(rnn[2:]).threads == 1
    assert "rnn_vs_torch.py --threads 1" in result.output
    assert Path(scan[1]).name == "scan_bandwidth.py" and "--threads" not in scan  # the other suites as before


def test_gpu_benchmark_without_cupy_names_the_cuda_extra():
    out = run_without(["cupy"], "gpu_scan.py", "--repeats", "1")
    assert out.returncode == 1 and out.stdout == "" and "Traceback" not in out.stderr
    line = out.stderr.strip()
    assert line.startswith("error: this benchmark needs the cupy backend") and "pip install 'seqcore[cuda]'" in line


def test_bench_skips_the_gpu_suite_without_cupy_or_without_a_gpu(monkeypatch):
    from click.testing import CliRunner
    from seqcore import backends
    from seqcore_cli import bench
    from seqcore_cli.main import main
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    monkeypatch.setitem(sys.modules, "cupy", None)
    result = CliRunner().invoke(main, ["bench", "--quick", "gpu"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "=== gpu: skipped (needs cupy: pip install 'seqcore[cuda]')"  # the extra's name
    # CuPy installed, no GPU: the backend's own reason
    monkeypatch.setattr(bench, "missing_packages", lambda name: [])

    def no_gpu(name=None):
        raise backends.BackendUnavailable("backend 'cupy' cannot load: CUDA sees no GPU")
    monkeypatch.setattr(backends, "get", no_gpu)
    result = CliRunner().invoke(main, ["bench", "--quick", "gpu"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "=== gpu: skipped (backend 'cupy' cannot load: CUDA sees no GPU)"


# -- newton.py / training_steps.py: a backend named in --backends must load -------------------------

def test_chosen_backends_refuses_a_named_backend_that_cannot_load_and_skips_only_defaults(monkeypatch, capsys):
    common = load_script("_common")
    from seqcore import backends
    monkeypatch.setitem(sys.modules, "cupy", None)  # as on a machine without CuPy, even where it is installed
    monkeypatch.delitem(sys.modules, "seqcore.backends.cupy", raising=False)
    monkeypatch.delitem(backends._LOADED, "cupy", raising=False)
    monkeypatch.setattr(backends, "_FAILED", dict(backends._FAILED))
    ap = argparse.ArgumentParser(prog="bench")
    assert common.chosen_backends(ap, ["numpy", "numpy"]) == ["numpy"]
    defaults = common.chosen_backends(ap, None)
    assert "cupy" not in defaults and defaults == backends.available()
    with pytest.raises(SystemExit) as info:
        common.chosen_backends(ap, ["numpy", "cupy"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "bench: error: --backends: backend 'cupy' cannot load")


def test_newton_benchmark_refuses_a_named_backend_that_cannot_load():
    out = run_without(["cupy"], "newton.py", "--backends", "cupy", "--T", "8", "--cells", "diag_gru", "--hidden", "4",
                      "--batch", "1", "--repeats", "1")
    assert out.returncode == 2 and out.stdout == "", (out.stdout, out.stderr)
    assert out.stderr.strip().splitlines()[-1].startswith("newton.py: error: --backends: backend 'cupy' cannot load")


# -- blas.pin_effect / describe() and blas_pin.py ---------------------------------------------------

LIB = "libopenblas.so"


@pytest.mark.parametrize("pin, cores, unpinned, effect", [
    ("Sandybridge", {LIB: "Sandybridge"}, {LIB: "Haswell"}, "pinned"),
    ("Prescott", {LIB: "Katmai"}, {LIB: "Haswell"}, "pinned"),  # another core's kernels, but not the default's
    ("Haswell", {LIB: "Haswell"}, {LIB: "Haswell"}, "no effect"),
    ("haswell", {LIB: "Haswell"}, {LIB: "Haswell"}, "no effect"),  # OpenBLAS ignores case
    ("NoSuchCore", {LIB: "Haswell"}, {LIB: "Haswell"}, "not taken"),
    ("Zen", {LIB: "Haswell"}, {LIB: "Haswell"}, "not taken"),
    ("Haswell", {LIB: "Haswell"}, {}, "unknown"),
    ("Haswell", {LIB: "Haswell", "scipy.so": "Haswell"}, {LIB: "Haswell"}, "no effect"),  # compares libs in both
])
def test_pin_effect(pin, cores, unpinned, effect):
    from seqcore.backends import blas
    assert blas.pin_effect(pin, cores, unpinned) == effect


def test_pin_effect_validates_its_arguments():
    from seqcore.backends import blas
    with pytest.raises(TypeError, match="pin: got ''"):
        blas.pin_effect("", {LIB: "Haswell"}, {})
    with pytest.raises(TypeError, match="cores: got"):
        blas.pin_effect("Haswell", ["Haswell"], {})
    with pytest.raises(TypeError, match="unpinned: got"):
        blas.pin_effect("Haswell", {LIB: "Haswell"}, {LIB: 1})
    with pytest.raises(ValueError, match="cores: got {}"):
        blas.pin_effect("Haswell", {}, {})


def _child_blas(pin):
    code = ("import json, numpy; from seqcore.backends import blas; "
            "print(json.dumps([blas.openblas_cores(), blas.describe()]))")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if pin is not None:
        env["OPENBLAS_CORETYPE"] = pin
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 OpenBLAS core names")
def test_describe_says_pinned_only_when_the_pin_changes_the_kernels():
    from seqcore.backends import blas
    if not blas.openblas_cores():
        pytest.skip("NumPy is not linked against OpenBLAS here")
    free, _ = _child_blas(None)
    own = next(iter(free.values()))  # what OpenBLAS picks here unpinned
    _, text = _child_blas(own)
    assert text.endswith(f"OPENBLAS_CORETYPE={own!r} (set, no effect: OpenBLAS picks these kernels unpinned too)")
    _, text = _child_blas("NoSuchCore")
    assert text.endswith("OPENBLAS_CORETYPE='NoSuchCore' (not taken: OpenBLAS runs the kernels it picks unpinned; "
                         "misspelled?)")
    other = "Nehalem" if own.lower() == "sandybridge" else "Sandybridge"  # an older core every x86-64 CPU here runs
    cores, text = _child_blas(other)
    if set(cores.values()) != {other}:
        pytest.skip(f"this OpenBLAS runs {other} as {cores}")
    assert text.endswith(f"OPENBLAS_CORETYPE={other!r} (pinned)")


def _fake_children(monkeypatch, pinned_core, free_core):
    """blas_pin.py with its measuring children replaced: 2 µs unpinned, 3 µs pinned for every shape."""
    script = load_script("blas_pin")
    import scan_bandwidth
    monkeypatch.setattr(scan_bandwidth, "machine_info", lambda: "")
    calls = []

    def run_child(pin):
        calls.append(pin)
        core = free_core if pin is None else pinned_core
        res = {"cores": f"{LIB}: {core}", "core_names": {LIB: core}}
        res.update({"x".join(map(str, s)): [3e-6 if pin else 2e-6] * 2 for s in script.SHAPES})
        return res
    monkeypatch.setattr(script, "run_child", run_child)
    return script, calls


def test_blas_pin_notes_a_pin_that_selects_the_unpinned_kernels(monkeypatch, capsys):
    script, calls = _fake_children(monkeypatch, "Haswell", "Haswell")
    script.main(["--pin", "Haswell", "--rounds", "2"])
    out = capsys.readouterr().out
    assert calls == ["Haswell", None, "Haswell", None]
    assert ("note: OPENBLAS_CORETYPE=Haswell selects the kernels OpenBLAS picks unpinned here; the ratios below are "
            "run-to-run noise") in out.splitlines()
    script, _ = _fake_children(monkeypatch, "Sandybridge", "Haswell")
    script.main(["--pin", "Sandybridge", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "note:" not in out and out.count(" 1.50") == 12  # 3 µs / 2 µs, both columns of the 6 shapes


def test_blas_pin_refuses_a_pin_openblas_did_not_take(monkeypatch, capsys):
    script, calls = _fake_children(monkeypatch, "Haswell", "Haswell")
    with pytest.raises(SystemExit) as info:
        script.main(["--pin", "NoSuchCore", "--rounds", "3"])
    assert info.value.code == 2 and calls == ["NoSuchCore", None]  # refused after the first round
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.split(": ", 1)[1].startswith("error: --pin: got 'NoSuchCore', but OpenBLAS ran Haswell with it")


# -- descriptions and BENCHMARKS.md -------------------------------------------------------------------

def test_minimal_cells_help_gives_the_whole_first_sentence():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "minimal_cells.py"), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0
    assert ("the fused recurrence against the composed path it replaced, and against the NumPy backend, in one "
            "process.") in " ".join(out.stdout.split())


def test_benchmarks_md_intro_names_the_scripts_that_measure_in_child_processes():
    intro = (ROOT / "BENCHMARKS.md").read_text().split("\n\n")[1]
    children = [p.name for p in sorted(BENCHMARKS.glob("*.py")) if not p.name.startswith("_")
                and "child process" in " ".join((p.read_text().split('"""')[1]).split())]
    assert children == ["blas_pin.py", "step_memory.py"]
    assert "in the same process" in intro and all(f"`{name}`" in intro for name in children)


def _table_range(text, backend):
    """(min, max) of the fwd and of the f+b ratios in the table's dense GRU row of ``backend``, as
    Decimals (a cell holds "fwd / f+b", each one number or a range "a–b"; skipped cells hold none)."""
    row = re.search(rf"^\| {backend} \| GRU \(dense\) \|(.*)$", text, re.M).group(1)
    pairs = [c.split(" / ") for c in row.split("|") if " / " in c]
    fwd, fb = ([Decimal(v) for p in pairs for v in re.findall(r"\d+(?:\.\d+)?", p[i])] for i in (0, 1))
    assert fwd and fb, f"no measured {backend} dense GRU cell in the table"
    return (min(fwd), max(fwd)), (min(fb), max(fb))


def _assert_bullet_gives(bullet_range, table_range, what):
    """A bullet's "a–b" is the table's min–max, each rounded half up to the digits the bullet shows."""
    for shown, measured, end in zip(bullet_range, table_range, ("min", "max"), strict=True):
        digits = Decimal(1).scaleb(-len(shown.partition(".")[2]))
        assert Decimal(shown) == measured.quantize(digits, ROUND_HALF_UP), (
            f"{what}: the bullet says {shown}, the table's {end} is {measured}")


def test_benchmarks_md_dense_newton_bullets_match_the_table():
    text = (ROOT / "BENCHMARKS.md").read_text()
    numpy_fwd, numpy_fb = _table_range(text, "numpy")
    torch_fwd, torch_fb = _table_range(text, "torch")
    numba_fwd, numba_fb = _table_range(text, "numba")
    n = r"(\d+(?:\.\d+)?)"
    dense = " ".join(re.search(r"- \*\*Dense Jacobians:\*\*(.*?)\n- ", text, re.S).group(1).split())
    m = re.search(rf"{n}–{n}× the sequential time forward and {n}–{n}× forward \+ backward on NumPy "
                  rf"\({n}–{n}× and {n}–{n}× on torch\)", dense)
    assert m, dense
    for i, (table_range, what) in enumerate([(numpy_fwd, "numpy fwd"), (numpy_fb, "numpy f+b"),
                                             (torch_fwd, "torch fwd"), (torch_fb, "torch f+b")]):
        _assert_bullet_gives(m.groups()[2 * i:2 * i + 2], table_range, what)
    gru = " ".join(re.search(r"- \*\*The dense GRU on Numba:\*\*(.*?)\n- ", text, re.S).group(1).split())
    m = re.match(rf"{n}–{n}× forward, {n}–{n}× forward \+ backward", gru)
    assert m, gru
    _assert_bullet_gives(m.groups()[:2], numba_fwd, "numba fwd")
    _assert_bullet_gives(m.groups()[2:], numba_fb, "numba f+b")
