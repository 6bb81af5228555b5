"""minGRU and minLSTM (Feng et al., "Were RNNs all we needed?", 2024).

The gates depend on the input only, so the recurrence is linear in the state,
``h_t = a_t ⊙ h_{t−1} + b_t``, and a whole sequence is one :func:`seqcore.linear_scan`:

    minGRU:   z = σ(k_z),  h̃ = v,  h' = (1 − z) ⊙ h + z ⊙ h̃
    minLSTM:  f = σ(k_f),  i = σ(k_i),  h̃ = v,
              f' = f / (f + i),  i' = i / (f + i),  h' = f' ⊙ h + i' ⊙ h̃

with ``[k_z, v] = W_ih x + b_ih`` (minGRU, rows z, h̃) and ``[k_i, k_f, v] = W_ih x + b_ih``
(minLSTM, rows i, f, h̃, as in PyTorch's LSTM order).  The normalised gates are computed
stably as ``f' = σ(−d)``, ``i' = σ(d)`` with ``d = log(i/f) = softplus(−k_f) − softplus(−k_i)``.

**Log space** (``log_space=True``, the paper's stable variant): the candidate becomes
``h̃ = g(v)`` with ``g(v) = v + ½`` for ``v ≥ 0`` and ``σ(v)`` otherwise, so that ``h̃ > 0``;
the input-driven part of the state is then computed by :func:`seqcore.log_linear_scan`
from ``log a`` (``−softplus(k_z)``, resp. ``−softplus(d)``) and ``log b = log z + log g(v)``
(resp. ``log i' + log g(v)``).  The contribution of ``h0`` is added separately as
``exp(Σ log a) ⊙ h0`` (the cumulative sum is a linear scan too), so ``h0`` may have any
sign and its gradient is exact even at ``h0 = 0``.  ``log_space`` changes the model (the
``g`` on the candidate), not only the arithmetic; ``step_fwd`` uses the same ``g``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import backends, ops
from ..autodiff import stop_gradient
from ..backends.numpy import scan as _scan_ref
from ..backends.numpy.ops import sigmoid_np
from ..scan import linear_scan, log_linear_scan
from ..validate import check_bool, check_choice
from .base import MODES, Cell, check_newton_options, input_projection, uniform_init


def _softplus(xp, x):
    return xp.logaddexp(0, x)


def _candidate(xp, v, log_space):
    """``h̃`` and ``∂h̃/∂v`` (``g`` and ``g'`` in log space)."""
    if not log_space:
        return v, xp.ones_like(v)
    s = sigmoid_np(xp, v)
    pos = v >= 0
    return xp.where(pos, v + 0.5, s), xp.where(pos, 1.0, s * (1 - s)).astype(v.dtype)


def _log_candidate(v):
    """``log g(v)`` with differentiable ops."""
    return ops.where(stop_gradient(v) >= 0, ops.log(ops.relu(v) + 0.5), -ops.softplus(-v))


def _minimal_recurrence_fwd(xp, xi, state0, *, cell):
    """The reference of ``<name>_recurrence``: every step's ``(a, b)`` at once, then one
    sequential linear scan (in linear space, also for ``log_space``: step by step no long
    product of gates is formed, so nothing under- or overflows)."""
    a, b, cache = cell._step_coefficients(xp, xi)
    h, scan_res = _scan_ref.linear_scan_fwd(xp, a, b, state0)
    return h, (scan_res, cache)


def _minimal_recurrence_bwd(xp, res, dh, *, cell):
    scan_res, cache = res
    da, db, dh0 = _scan_ref.linear_scan_bwd(xp, scan_res, dh)
    return cell._step_coefficients_bwd(xp, cache, da, db), dh0


@dataclass(frozen=True)
class _MinimalCell(Cell):
    """Shared machinery: gates from the input, state update ``h' = a ⊙ h + b``."""

    log_space: bool = False

    jacobian_structure: ClassVar[str] = "diag"
    linear_in_state: ClassVar[bool] = True
    recurrence_reference: ClassVar[tuple] = (_minimal_recurrence_fwd, _minimal_recurrence_bwd)
    recurrent_keys: ClassVar[tuple] = ()
    n_projections: ClassVar[int] = 0

    def __post_init__(self):
        super().__post_init__()
        check_bool("log_space", self.log_space)

    def init(self, rng, dtype=np.float32):
        """``weight_ih: (G·H, I)``, ``bias_ih: (G·H,)`` ~ U(±1/√I) (``nn.Linear``'s init)."""
        G, H, I = self.n_projections, self.hidden_size, self.input_size
        k = 1.0 / np.sqrt(I)
        return {"weight_ih": uniform_init(rng, (G * H, I), k, dtype), "bias_ih": uniform_init(rng, (G * H,), k, dtype)}

    def project(self, params, x):
        """``x: (B, T, I) -> W_ih x + b_ih: (B, T, G·H)``."""
        return input_projection(params, x)

    # -- hooks: gate coefficients on traced values (sequence) and raw arrays (one step) --------
    def _coefficients(self, xi):
        """``(a, b)`` each ``(B, T, H)`` from ``xi`` with differentiable ops."""
        raise NotImplementedError

    def _log_coefficients(self, xi):
        """``(log a, log b)`` each ``(B, T, H)`` (log-space variant)."""
        raise NotImplementedError

    def _step_coefficients(self, xp, xi_t):
        """``(a, b, cache)`` each ``(..., H)`` on raw arrays (one step ``(N, ·)`` or a sequence ``(B, T, ·)``)."""
        raise NotImplementedError

    def _step_coefficients_bwd(self, xp, cache, da, db):
        """``dxi: (..., G·H)`` from the gradients of ``a`` and ``b`` (shapes as in :meth:`_step_coefficients`)."""
        raise NotImplementedError

    # -- the sequence: one linear scan ----------------------------------------------------------
    def _states(self, params, x, state0, mode="sequential", **newton_kwargs):
        """All states ``(B, T, H)`` by a linear scan.

        ``"sequential"``: the ``<name>_recurrence`` primitive (gates and scan in one; fused
        loops on the Numba backend), in linear space.  ``"parallel"``: the associative scan,
        in log space when ``log_space``.  ``newton_kwargs`` are accepted for interface
        compatibility and ignored (the scan is exact), but they are validated like the
        Newton scan's: an unknown name or a bad value raises.
        """
        check_choice("mode", mode, MODES)
        if newton_kwargs:
            check_newton_options(self, x, newton_kwargs)
        xi = self.project(params, x)
        if mode == "sequential" or not self.log_space:
            if state0.dtype != xi.dtype:  # float64 weights, float32 inputs: the scan runs in the promoted dtype
                state0 = ops.add(state0, backends.namespace(xi).zeros((), dtype=xi.dtype))
            if mode == "sequential":
                return self.recurrence()(xi, state0, cell=self)
            a, b = self._coefficients(xi)
            return linear_scan(a, b, state0, method=mode)
        log_a, log_b = self._log_coefficients(xi)
        h = ops.exp(log_linear_scan(log_a, log_b, None, method=mode))
        xp = backends.namespace(log_a)
        Bn, T, H = log_a.shape
        # exp(Σ_{s≤t} log a_s) ⊙ h0: the h0 part, kept out of log space so h0 may be ≤ 0
        decay = ops.exp(linear_scan(xp.ones((Bn, T, H), dtype=log_a.dtype), log_a, method=mode))
        return h + decay * ops.reshape(state0, (Bn, 1, H))

    # -- one step (the protocol; used by generic engines and tests) ----------------------------
    def step_fwd(self, xp, p, h, xi_t):
        a, b, cache = self._step_coefficients(xp, xi_t)
        return a * h + b, (h, a, cache)

    def step_bwd(self, xp, p, cache, dout):
        h, a, coef_cache = cache
        return dout * a, self._step_coefficients_bwd(xp, coef_cache, dout * h, dout), {}

    def step_jacobian(self, xp, p, h, xi_t):
        """``∂h'/∂h = a``, the diagonal ``(N, H)``."""
        a, _, _ = self._step_coefficients(xp, xi_t)
        return a


@dataclass(frozen=True)
class MinGRU(_MinimalCell):
    """minGRU: ``h' = (1 − z) ⊙ h + z ⊙ h̃``, ``z = σ(k_z)``; ``weight_ih: (2H, I)`` rows (z, h̃)."""

    name: ClassVar[str] = "mingru"
    n_projections: ClassVar[int] = 2

    def _split(self, xi):
        H = self.hidden_size
        return xi[..., :H], xi[..., H:]

    def _coefficients(self, xi):
        kz, v = self._split(xi)
        return ops.sigmoid(-kz), ops.sigmoid(kz) * v

    def _log_coefficients(self, xi):
        kz, v = self._split(xi)
        return -ops.softplus(kz), -ops.softplus(-kz) + _log_candidate(v)

    def _step_coefficients(self, xp, xi_t):
        kz, v = self._split(xi_t)
        z, a = sigmoid_np(xp, kz), sigmoid_np(xp, -kz)
        c, dc = _candidate(xp, v, self.log_space)
        return a, z * c, (z, a, c, dc)

    def _step_coefficients_bwd(self, xp, cache, da, db):
        z, a, c, dc = cache  # σ'(k_z) = z·a: z·(1 − z) would be 0 once z rounds to 1
        return xp.concatenate([z * a * (db * c - da), db * z * dc], axis=-1)


@dataclass(frozen=True)
class MinLSTM(_MinimalCell):
    """minLSTM: ``h' = f' ⊙ h + i' ⊙ h̃`` with normalised gates; ``weight_ih: (3H, I)`` rows (i, f, h̃)."""

    name: ClassVar[str] = "minlstm"
    n_projections: ClassVar[int] = 3

    def _split(self, xi):
        H = self.hidden_size
        return xi[..., :H], xi[..., H:2 * H], xi[..., 2 * H:]

    def _log_ratio(self, xi):
        ki, kf, v = self._split(xi)
        return ops.softplus(-kf) - ops.softplus(-ki), v   # d = log(i / f)

    def _coefficients(self, xi):
        d, v = self._log_ratio(xi)
        return ops.sigmoid(-d), ops.sigmoid(d) * v

    def _log_coefficients(self, xi):
        d, v = self._log_ratio(xi)
        return -ops.softplus(d), -ops.softplus(-d) + _log_candidate(v)

    def _step_coefficients(self, xp, xi_t):
        ki, kf, v = self._split(xi_t)
        d = _softplus(xp, -kf) - _softplus(xp, -ki)
        a, s = sigmoid_np(xp, -d), sigmoid_np(xp, d)
        c, dc = _candidate(xp, v, self.log_space)
        return a, s * c, (ki, kf, a, s, c, dc)

    def _step_coefficients_bwd(self, xp, cache, da, db):
        ki, kf, a, s, c, dc = cache
        dd = a * s * (db * c - da)
        return xp.concatenate([dd * sigmoid_np(xp, -ki), -dd * sigmoid_np(xp, -kf), db * s * dc], axis=-1)
