"""Reference scans (forward + exact VJP): diagonal, block-diagonal and log-space.

Shapes: ``a, b: (B, T, D)``; block ``A: (B, T, G, k, k)``, ``b: (B, T, G, k)``.
``reverse=True`` runs the recurrence from t = T down to 1 (``h0`` is then the state
after the last step).  The backward pass of each scan is itself a reverse scan of the
same kind with shifted (and, for blocks, transposed) transitions — RESEARCH §2.
"""
from __future__ import annotations

from ...primitives import define
from . import assoc


def _flip(xp, x):
    return None if x is None else xp.flip(x, axis=1)


def _zeros_state(xp, like):
    return xp.zeros((like.shape[0],) + like.shape[2:], dtype=like.dtype)


def _shift_next(xp, x, fill):
    """``x[:, t+1]`` at position t, with ``fill`` after the last step."""
    pad = xp.full((x.shape[0], 1) + x.shape[2:], fill, dtype=x.dtype) if not callable(fill) else fill(x)
    return xp.concatenate([x[:, 1:], pad], axis=1)


def _previous(xp, h, h0):
    """``h_{t-1}`` at position t (``h0`` at t = 1)."""
    return xp.concatenate([xp.expand_dims(h0, 1), h[:, :-1]], axis=1)


# -- diagonal linear scan ----------------------------------------------------------------------

def _diag_scan(xp, a, b, h0, method, chunk_size):
    return assoc.run(xp, assoc.DIAGONAL, (a, b), h0, method, chunk_size)


def linear_scan_fwd(xp, a, b, h0=None, reverse=False, method="sequential", chunk_size=64):
    has_h0 = h0 is not None
    h0 = h0 if has_h0 else _zeros_state(xp, b)
    if reverse:
        a, b = _flip(xp, a), _flip(xp, b)
    h = _diag_scan(xp, a, b, h0, method, chunk_size)
    out = _flip(xp, h) if reverse else h
    return out, (a, h, h0, has_h0)


def linear_scan_bwd(xp, res, dh, reverse=False, method="sequential", chunk_size=64):
    a, h, h0v, has_h0 = res  # a and h in scan order (flipped when reverse)
    if reverse:
        dh = _flip(xp, dh)
    a_next = _shift_next(xp, a, 0)
    # g_t = dh_t + a_{t+1} g_{t+1}: a linear scan run backwards in time
    g = _flip(xp, _diag_scan(xp, _flip(xp, a_next), _flip(xp, dh), _zeros_state(xp, dh), method, chunk_size))
    da = g * _previous(xp, h, h0v)
    dh0 = a[:, 0] * g[:, 0] if has_h0 else None
    if reverse:
        da, g = _flip(xp, da), _flip(xp, g)
    return da, g, dh0


linear_scan = define("linear_scan", linear_scan_fwd, linear_scan_bwd,
                     doc="h_t = a_t * h_{t-1} + b_t; a, b: (B, T, D); h0: (B, D)")

# -- block-diagonal / dense scan ---------------------------------------------------------------

def _block_scan(xp, A, b, h0, method, chunk_size):
    return assoc.run(xp, assoc.BLOCK, (A, b), h0, method, chunk_size)


def block_scan_fwd(xp, A, b, h0=None, reverse=False, method="sequential", chunk_size=64):
    has_h0 = h0 is not None
    h0 = h0 if has_h0 else _zeros_state(xp, b)
    if reverse:
        A, b = _flip(xp, A), _flip(xp, b)
    h = _block_scan(xp, A, b, h0, method, chunk_size)
    return (_flip(xp, h) if reverse else h), (A, h, h0, has_h0)


def block_scan_bwd(xp, res, dh, reverse=False, method="sequential", chunk_size=64):
    A, h, h0v, has_h0 = res
    if reverse:
        dh = _flip(xp, dh)
    At = xp.swapaxes(A, -1, -2)
    At_next = _shift_next(xp, At, lambda x: xp.zeros_like(x[:, :1]))
    # g_t = dh_t + A_{t+1}^T g_{t+1}
    g = _flip(xp, _block_scan(xp, _flip(xp, At_next), _flip(xp, dh), _zeros_state(xp, dh), method, chunk_size))
    hp = _previous(xp, h, h0v)
    dA = g[..., :, None] * hp[..., None, :]
    dh0 = (At[:, 0] @ g[:, 0, ..., None])[..., 0] if has_h0 else None
    if reverse:
        dA, g = _flip(xp, dA), _flip(xp, g)
    return dA, g, dh0


block_scan = define("block_scan", block_scan_fwd, block_scan_bwd,
                    doc="h_t = A_t @ h_{t-1} + b_t per group; A: (B, T, G, k, k); b: (B, T, G, k); h0: (B, G, k)")

# -- log-space scan ------------------------------------------------------------------------------

def _log_scan(xp, la, lb, y0, method, chunk_size):
    return assoc.run(xp, assoc.LOG, (la, lb), y0, method, chunk_size)


def log_linear_scan_fwd(xp, log_a, log_b, log_h0=None, reverse=False, method="sequential", chunk_size=64):
    has_h0 = log_h0 is not None
    y0 = log_h0 if has_h0 else xp.full((log_b.shape[0],) + log_b.shape[2:], -xp.inf, dtype=log_b.dtype)
    if reverse:
        log_a, log_b = _flip(xp, log_a), _flip(xp, log_b)
    y = _log_scan(xp, log_a, log_b, y0, method, chunk_size)
    return (_flip(xp, y) if reverse else y), (log_a, log_b, y, y0, has_h0)


def _safe_exp_diff(xp, num, y):
    """exp(num − y) with 0 where both are −inf (an empty sum has no weight)."""
    with_inf = xp.isneginf(num)
    d = xp.where(with_inf, 0.0, num - xp.where(xp.isneginf(y), 0.0, y))
    return xp.where(with_inf, 0.0, xp.exp(d))


def log_linear_scan_bwd(xp, res, dy, reverse=False, method="sequential", chunk_size=64):
    la, lb, y, y0, has_h0 = res
    if reverse:
        dy = _flip(xp, dy)
    yp = _previous(xp, y, y0)
    w = _safe_exp_diff(xp, la + yp, y)      # ∂y_t/∂y_{t-1} = ∂y_t/∂log_a_t
    v = _safe_exp_diff(xp, lb, y)           # ∂y_t/∂log_b_t
    w_next = _shift_next(xp, w, 0)
    g = _flip(xp, _diag_scan(xp, _flip(xp, w_next), _flip(xp, dy), _zeros_state(xp, dy), method, chunk_size))
    dla, dlb = w * g, v * g
    dy0 = w[:, 0] * g[:, 0] if has_h0 else None
    if reverse:
        dla, dlb = _flip(xp, dla), _flip(xp, dlb)
    return dla, dlb, dy0


log_linear_scan = define(
    "log_linear_scan", log_linear_scan_fwd, log_linear_scan_bwd,
    doc="y_t = logaddexp(log_a_t + y_{t-1}, log_b_t), i.e. h = exp(y) with h_t = a_t h_{t-1} + b_t, a, b > 0")
