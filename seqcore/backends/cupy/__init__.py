"""CuPy backend (GPU arrays).

Today it runs the NumPy reference of every primitive on ``cupy.ndarray`` unchanged (the
reference is written against the array namespace ``xp``); raw CUDA kernels that replace
the hot primitives are future work and are not claimed here.  Importing this module
imports CuPy; ``seqcore.backends.get("cupy")`` raises ``BackendUnavailable`` naming
``pip install 'seqcore[cuda]'`` when CuPy or a GPU is missing.
"""
import numpy as np

try:
    import cupy
    cupy.cuda.runtime.getDeviceCount()
except Exception as exc:  # no package, no driver or no device
    from .. import BackendUnavailable
    raise BackendUnavailable(f"backend 'cupy' cannot load: {exc} (needs CuPy and a CUDA GPU; "
                             "install it with pip install 'seqcore[cuda]')") from exc

name = "cupy"
xp = cupy
version = cupy.__version__
primitives: dict = {}


def asarray(x, dtype=None):
    return cupy.asarray(x, dtype=dtype)


def to_numpy(x):
    return cupy.asnumpy(x) if isinstance(x, cupy.ndarray) else np.asarray(x)
