"""seqcore.backends.blas reports the kernels OpenBLAS picked, and an OPENBLAS_CORETYPE pin."""
import os
import platform
import subprocess
import sys

import numpy  # noqa: F401  (loads NumPy's OpenBLAS, if it has one)
import pytest

from seqcore.backends import blas

CODE = "import numpy, json; from seqcore.backends import blas; print(json.dumps([blas.openblas_cores(), blas.describe()]))"


def _run(env_changes):
    import json
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


needs_openblas = pytest.mark.skipif(not blas.openblas_cores(), reason="NumPy is not linked against OpenBLAS here")


@needs_openblas
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="Haswell kernels are x86-64 kernels")
def test_a_pin_is_reported_as_the_core_in_use():
    cores, text = _run({"OPENBLAS_CORETYPE": "Haswell"})
    assert cores and set(cores.values()) == {"Haswell"}
    free, _ = _run({})
    # "(pinned)" only when the pin changes the kernels: an AVX2 CPU gets Haswell unpinned too
    effect = "(set, no effect" if free == cores else "(pinned)"
    assert f"OPENBLAS_CORETYPE='Haswell' {effect}" in text


@needs_openblas
def test_without_a_pin_openblas_chooses_and_says_so():
    cores, text = _run({})
    assert cores and all(v and v != "?" for v in cores.values())
    assert text.endswith("OPENBLAS_CORETYPE unset")
    assert all(f"{lib}: {core}" in text for lib, core in cores.items())


@pytest.mark.parametrize("pin, flags, unit", [
    ("Haswell", {"avx2", "avx512f"}, "AVX-512"),
    ("Zen", {"avx2", "avx512f"}, "AVX-512"),
    ("Sandybridge", {"avx", "avx2"}, "AVX2"),
    ("SkylakeX", {"avx2", "avx512f"}, None),  # the widest kernels: nothing to say
    ("Haswell", {"avx", "avx2"}, None),  # the CPU's own level
    ("Haswell", set(), None),  # flags unknown (not Linux x86): no guess
    ("", {"avx512f"}, None),
])
def test_pin_note_only_when_the_pin_is_narrower_than_the_cpu(monkeypatch, pin, flags, unit):
    monkeypatch.setenv("OPENBLAS_CORETYPE", pin)
    note = blas.pin_note(flags)
    if unit is None:
        assert note is None
    else:
        assert note.startswith(f"note: OPENBLAS_CORETYPE={pin} holds OpenBLAS") and unit in note


def test_pin_note_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Core2")
    monkeypatch.setattr(blas, "_cpu_flags", lambda: {"avx2"})
    assert "AVX2" in blas.pin_note()
