"""Public scans: validate the arguments, then call the primitive of the array's backend.

Every scan is differentiable through :func:`seqcore.vjp` with an exact hand-written VJP.
"""
from __future__ import annotations

from .backends.numpy import scan as _ref
from .validate import check_array, check_bool, check_choice, check_positive_int, check_same_dtype, check_shape

__all__ = ["linear_scan", "block_scan", "log_linear_scan", "METHODS"]

METHODS = ("sequential", "parallel", "chunked")


def _check_common(reverse, method, chunk_size):
    check_bool("reverse", reverse)
    check_choice("method", method, METHODS)
    check_positive_int("chunk_size", chunk_size)


def _check_diagonal(names, a, b, h0):
    """The arguments of a diagonal scan: ``a, b (B, T, D)`` of one float dtype, ``h0 (B, D)`` or None."""
    na, nb, nh = names
    check_array(na, a, 3)
    check_array(nb, b, 3)
    check_shape(nb, b, tuple(a.shape), f"(the shape of {na})")
    check_same_dtype(nb, b, na, a)
    if a.shape[1] < 1:
        raise ValueError(f"{na}: got T = {a.shape[1]} steps, expected T >= 1")
    if h0 is not None:
        check_array(nh, h0, 2)
        check_shape(nh, h0, (a.shape[0], a.shape[2]), f"(B, D) from {na}")
        check_same_dtype(nh, h0, na, a)


def check_linear_scan(a, b, h0=None, *, reverse: bool = False, method: str = "sequential", chunk_size: int = 64):
    """The argument checks of :func:`linear_scan` alone (backends that run the primitive themselves)."""
    _check_diagonal(("a", "b", "h0"), a, b, h0)
    _check_common(reverse, method, chunk_size)


def check_log_linear_scan(log_a, log_b, log_h0=None, *, reverse: bool = False, method: str = "sequential",
                          chunk_size: int = 64):
    """The argument checks of :func:`log_linear_scan` alone."""
    _check_diagonal(("log_a", "log_b", "log_h0"), log_a, log_b, log_h0)
    _check_common(reverse, method, chunk_size)


def check_block_scan(A, b, h0=None, *, reverse: bool = False, method: str = "sequential", chunk_size: int = 64):
    """The argument checks of :func:`block_scan` alone."""
    check_array("A", A, 5)
    check_array("b", b, 4)
    Bn, T, G, k, k2 = A.shape
    if k != k2 or k < 1:
        raise ValueError(f"A: got blocks of shape ({k}, {k2}), expected square blocks (k, k) with k >= 1")
    check_shape("b", b, (Bn, T, G, k), "(B, T, G, k) from A")
    check_same_dtype("b", b, "A", A)
    if T < 1:
        raise ValueError(f"A: got T = {T} steps, expected T >= 1")
    if h0 is not None:
        check_array("h0", h0, 3)
        check_shape("h0", h0, (Bn, G, k), "(B, G, k) from A")
        check_same_dtype("h0", h0, "A", A)
    _check_common(reverse, method, chunk_size)


def linear_scan(a, b, h0=None, *, reverse: bool = False, method: str = "sequential", chunk_size: int = 64):
    """Diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t``.

    Args:
        a, b: ``(B, T, D)`` gates and inputs (same float dtype).
        h0: ``(B, D)`` initial state, zeros when ``None``.
        reverse: run from t = T down to 1 (``h_t = a_t * h_{t+1} + b_t``).
        method: ``"sequential"`` (the spec), ``"parallel"`` (Hillis–Steele, any T ≥ 1) or
            ``"chunked"`` (sequential in chunks of ``chunk_size``, then carries).
    Returns:
        h: ``(B, T, D)``.
    """
    check_linear_scan(a, b, h0, reverse=reverse, method=method, chunk_size=chunk_size)
    return _ref.linear_scan(a, b, h0, reverse=bool(reverse), method=method, chunk_size=chunk_size)


def block_scan(A, b, h0=None, *, reverse: bool = False, method: str = "sequential", chunk_size: int = 64):
    """Block-diagonal linear recurrence ``h_t[g] = A_t[g] @ h_{t-1}[g] + b_t[g]``.

    Args:
        A: ``(B, T, G, k, k)`` transitions — G independent blocks of size k (k = 1, 2, 3 for
            diagonal / 2×2 / 3×3 structure; G = 1, k = D for a dense transition).
        b: ``(B, T, G, k)``.
        h0: ``(B, G, k)`` or ``None`` (zeros).
    Returns:
        h: ``(B, T, G, k)``.
    """
    check_block_scan(A, b, h0, reverse=reverse, method=method, chunk_size=chunk_size)
    return _ref.block_scan(A, b, h0, reverse=bool(reverse), method=method, chunk_size=chunk_size)


def log_linear_scan(log_a, log_b, log_h0=None, *, reverse: bool = False, method: str = "sequential",
                    chunk_size: int = 64):
    """Linear recurrence with positive gates, computed in log space.

    ``y_t = logaddexp(log_a_t + y_{t-1}, log_b_t)`` so that ``h = exp(y)`` solves
    ``h_t = a_t h_{t-1} + b_t`` for ``a, b > 0``.  Long products of gates neither
    underflow nor overflow (``log_b = -inf`` encodes b = 0).

    Args:
        log_a, log_b: ``(B, T, D)``; log_h0: ``(B, D)`` or ``None`` (h0 = 0, i.e. −inf).
    Returns:
        log_h: ``(B, T, D)``.
    """
    check_log_linear_scan(log_a, log_b, log_h0, reverse=reverse, method=method, chunk_size=chunk_size)
    return _ref.log_linear_scan(log_a, log_b, log_h0, reverse=bool(reverse), method=method, chunk_size=chunk_size)


# the checks by primitive name, for backends that call the primitives directly (torch's autograd functions)
CHECKS = {"linear_scan": check_linear_scan, "block_scan": check_block_scan, "log_linear_scan": check_log_linear_scan}
