"""``seqcore bench``: run the benchmark scripts of ``benchmarks/`` and print their tables.

The scripts live in the source tree (they are not installed with the package), so this
command works from a checkout (``pip install -e .``); it says so when they are missing.
Each script prints ratios against a baseline measured in the same process (``memory``:
in alternating child processes, since the heap policy it compares is process-wide; ``blas-pin``
likewise, since OpenBLAS reads ``OPENBLAS_CORETYPE`` when it loads).  A suite whose optional
packages (numba, torch, cupy) are not installed, or whose GPU is missing, is skipped with a line
saying which extra to install or why.  The ``rnn`` suite runs with 1 thread on each side, as the
table in BENCHMARKS.md; ``python benchmarks/rnn_vs_torch.py --threads N`` runs it with others.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

# name -> (script, arguments of the quick variant)
SUITES = {
    "scan": ("scan_bandwidth.py", ["--log2-size", "20", "--repeats", "3"]),
    "primitives": ("primitives_vs_numpy.py", ["--repeats", "1", "--scan-shape", "2", "512", "16",
                                              "--cell-shape", "4", "64", "16"]),
    "rnn": ("rnn_vs_torch.py", ["--repeats", "1", "--batch", "16", "--steps", "128", "--hidden", "64"]),
    "newton": ("newton.py", ["--T", "256", "1024", "--repeats", "1"]),
    "training": ("training_steps.py", ["--steps", "20", "--cells", "leaky", "gru"]),
    "memory": ("step_memory.py", ["--shape", "16", "64", "32", "--steps", "5", "--rounds", "1"]),
    "minimal": ("minimal_cells.py", ["--shape", "4", "64", "16", "--repeats", "1"]),
    "blas-pin": ("blas_pin.py", ["--rounds", "1"]),
    "products": ("sequence_products.py", ["--shapes", "16,32,64", "--repeats", "1"]),
    "gpu": ("gpu_scan.py", ["--log2-size", "20", "--repeats", "2"]),
}

# name -> arguments of every run, quick or not: the rnn suite as BENCHMARKS.md's reference table ran it,
# 1 thread per side (the script's default, every core, mixes in the thread pools' behaviour)
ALWAYS = {"rnn": ["--threads", "1"]}

# name -> the optional packages a suite needs, each installed by the pip extra of the same name
# (EXTRAS names the others)
NEEDS = {"scan": ("numba",), "primitives": ("numba",), "rnn": ("numba", "torch"), "memory": ("numba",),
         "minimal": ("numba",), "products": ("numba",), "gpu": ("cupy",)}
EXTRAS = {"cupy": "cuda"}
# suites that need a backend that can load, not only its package: CuPy installs without a GPU
NEEDS_BACKEND = {"gpu": "cupy"}


def unavailable_backend(name: str) -> str | None:
    """Why the backend suite ``name`` needs cannot load here (None when it loads or none is needed)."""
    from seqcore import backends
    if name not in NEEDS_BACKEND:
        return None
    try:
        backends.get(NEEDS_BACKEND[name])
    except backends.BackendUnavailable as exc:
        return str(exc)
    return None


def missing_packages(name: str) -> list[str]:
    """The packages suite ``name`` needs that are not installed here (found without importing
    them: a suite's own child imports what it uses)."""
    import importlib.util
    if name not in SUITES:
        raise ValueError(f"name: got {name!r}, expected a suite, one of {list(SUITES)}")
    return [p for p in NEEDS.get(name, ()) if importlib.util.find_spec(p) is None]


def benchmarks_dir() -> Path:
    import seqcore
    return Path(seqcore.__file__).resolve().parents[1] / "benchmarks"


def register(group: click.Group) -> None:
    @group.command("bench")
    @click.argument("suites", nargs=-1, type=click.Choice(["all", *SUITES]))
    @click.option("--quick", is_flag=True, help="Small sizes and one to three repeats (a smoke run; figures are not for reporting).")
    def bench(suites, quick):
        """Run benchmarks (scan, primitives, rnn, newton, training, memory, minimal, blas-pin, products, gpu; default: all)."""
        root = benchmarks_dir()
        if not root.is_dir():
            raise click.ClickException(f"the benchmark scripts are not here ({root}); run `seqcore bench` from a "
                                       "source checkout installed with `pip install -e .`")
        chosen = list(SUITES) if not suites or "all" in suites else list(dict.fromkeys(suites))
        failed = []
        for name in chosen:
            script, quick_args = SUITES[name]
            missing = missing_packages(name)
            if missing:  # an optional extra not installed: not a failure of the benchmark
                extras = ",".join(dict.fromkeys(EXTRAS.get(p, p) for p in missing))
                click.echo(f"\n=== {name}: skipped (needs {', '.join(missing)}: pip install 'seqcore[{extras}]')")
                continue
            why = unavailable_backend(name)
            if why:  # installed, but no device to run on: not a failure either
                click.echo(f"\n=== {name}: skipped ({why})")
                continue
            cmd = [sys.executable, str(root / script), *ALWAYS.get(name, ()), *(quick_args if quick else [])]
            click.echo(f"\n=== {name}: {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", err=False)
            if subprocess.run(cmd).returncode != 0:
                failed.append(name)
        if failed:
            raise click.ClickException(f"benchmark(s) failed: {', '.join(failed)}")
