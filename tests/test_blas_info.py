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
    assert "OPENBLAS_CORETYPE='Haswell' (pinned)" in text


@needs_openblas
def test_without_a_pin_openblas_chooses_and_says_so():
    cores, text = _run({})
    assert cores and all(v and v != "?" for v in cores.values())
    assert text.endswith("OPENBLAS_CORETYPE unset")
    assert all(f"{lib}: {core}" in text for lib, core in cores.items())
