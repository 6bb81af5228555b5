"""CuPy backend (GPU arrays).

Primitives with a CUDA kernel (``kernels/*.cu``, compiled on first use by CuPy's NVRTC and
cached on disk by CuPy) are replaced: today ``linear_scan`` (``scan.py``).  Every other
primitive runs the NumPy reference on ``cupy.ndarray`` unchanged (the reference is written
against the array namespace ``xp``).  Importing this module imports CuPy;
``seqcore.backends.get("cupy")`` raises ``BackendUnavailable`` naming
``pip install 'seqcore[cuda]'`` when CuPy or a GPU is missing.
"""
import numpy as np

try:
    import cupy
    if cupy.cuda.runtime.getDeviceCount() < 1:
        raise RuntimeError("CUDA sees no GPU")
except Exception as exc:  # no package, no driver or no device
    from .. import BackendUnavailable
    raise BackendUnavailable(f"backend 'cupy' cannot load: {exc} (needs CuPy and a CUDA GPU; "
                             "install it with pip install 'seqcore[cuda]', or 'seqcore[cuda13]' for "
                             "CUDA 13)") from exc

from .scan import PRIMITIVES as _SCAN_PRIMITIVES  # noqa: E402  (needs CuPy, checked above)

name = "cupy"
xp = cupy
version = cupy.__version__
primitives: dict = dict(_SCAN_PRIMITIVES)


def asarray(x, dtype=None):
    return cupy.asarray(x, dtype=dtype)


def to_numpy(x):
    return cupy.asnumpy(x) if isinstance(x, cupy.ndarray) else np.asarray(x)


def synchronize() -> None:
    """Wait until the GPU has finished the work queued so far (kernels run asynchronously:
    time a call only after this)."""
    cupy.cuda.Device().synchronize()
