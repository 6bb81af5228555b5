"""GRU with PyTorch's parameterisation (gate order r, z, n; ``torch.nn.GRU``).

    r  = σ(W_ir x + b_ir + W_hr h + b_hr)
    z  = σ(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 − z) ⊙ n + z ⊙ h

``weight_ih: (3H, I)``, ``weight_hh: (3H, H)``, ``bias_ih, bias_hh: (3H,)``, rows in the
order r, z, n — a weight copy from ``torch.nn.GRU`` (``weight_ih_l0`` …) gives the same cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..backends.numpy.ops import sigmoid_np
from .base import Cell, input_projection, uniform_init


@dataclass(frozen=True)
class GRU(Cell):
    """Gated recurrent unit; dense step Jacobian ``(N, H, H)``."""

    name: ClassVar[str] = "gru"
    recurrent_keys: ClassVar[tuple] = ("weight_hh", "bias_hh")

    def init(self, rng, dtype=np.float32):
        """PyTorch's init: every entry U(−1/√H, 1/√H)."""
        H, I = self.hidden_size, self.input_size
        k = 1.0 / np.sqrt(H)
        return {"weight_ih": uniform_init(rng, (3 * H, I), k, dtype),
                "weight_hh": uniform_init(rng, (3 * H, H), k, dtype),
                "bias_ih": uniform_init(rng, (3 * H,), k, dtype), "bias_hh": uniform_init(rng, (3 * H,), k, dtype)}

    def project(self, params, x):
        """``x: (B, T, I) -> W_ih x + b_ih: (B, T, 3H)``."""
        return input_projection(params, x)

    def _gates(self, xp, p, h, xi_t):
        H = self.hidden_size
        gh = h @ p["weight_hh"].T + p["bias_hh"]          # (N, 3H)
        r = sigmoid_np(xp, xi_t[:, :H] + gh[:, :H])
        z = sigmoid_np(xp, xi_t[:, H:2 * H] + gh[:, H:2 * H])
        n = xp.tanh(xi_t[:, 2 * H:] + r * gh[:, 2 * H:])
        return r, z, n, gh[:, 2 * H:]

    def step_fwd(self, xp, p, h, xi_t):
        r, z, n, ghn = self._gates(xp, p, h, xi_t)
        return (1 - z) * n + z * h, (h, r, z, n, ghn)

    def step_bwd(self, xp, p, cache, dout):
        h, r, z, n, ghn = cache
        dkn = dout * (1 - z) * (1 - n * n)           # ∂/∂(pre-activation of n)
        dkz = dout * (h - n) * z * (1 - z)
        dkr = dkn * ghn * r * (1 - r)
        dxi = xp.concatenate([dkr, dkz, dkn], axis=-1)
        dgh = xp.concatenate([dkr, dkz, dkn * r], axis=-1)  # gradient of h @ W_hh.T + b_hh
        dh = dout * z + dgh @ p["weight_hh"]
        return dh, dxi, {"weight_hh": dgh.T @ h, "bias_hh": dgh.sum(axis=0)}

    def step_jacobian(self, xp, p, h, xi_t):
        """``∂h'/∂h: (N, H, H)``, row i: ``z_i e_i + a_i W_z[i] + b_i r_i W_n[i] + b_i ghn_i r_i(1 − r_i) W_r[i]``
        with ``a = (h − n) z(1 − z)``, ``b = (1 − z)(1 − n²)``.

        Each term is scaled per row and added in place: at N = 16384, H = 32 this is 2× faster
        than building every (N, H, H) product on its own (and the identity as a full matrix).
        """
        r, z, n, ghn = self._gates(xp, p, h, xi_t)
        H = self.hidden_size
        W = p["weight_hh"]
        b = (1 - z) * (1 - n * n)
        J = ((h - n) * z * (1 - z))[:, :, None] * W[None, H:2 * H]
        J += (b * r)[:, :, None] * W[None, 2 * H:]
        J += (b * ghn * r * (1 - r))[:, :, None] * W[None, :H]
        # J takes W's memory order (a Fortran-ordered W gives a non-C J, whose reshape would be a
        # copy), so the diagonal is written by index, not through a reshaped view
        i = xp.arange(H)
        J[:, i, i] += z
        return J
