"""Leaky RNN with trainable per-neuron timescales (RESEARCH §4).

    h' = φ((1 − 1/τ) ⊙ h + (W_hh h + W_ih x + b) / τ),   τ ≥ 1 per neuron

φ is LeakyReLU (negative slope ``slope``, the original setup) or tanh.  The diagonal of
``W_hh`` is held at zero: the forward uses ``W_hh`` with its diagonal masked out and the
gradient of ``W_hh`` is zero on the diagonal (``init`` also stores zeros there), so a
neuron's self-memory comes only from its timescale τ.

τ is stored as the parameter ``tau: (H,)`` and clamped in every step: the cell uses
``max(tau, 1)``, and the gradient of ``tau`` is zero where ``tau < 1`` (where the clamp is
active).  At ``tau == 1`` exactly the gradient is that of the unclamped formula, so τ can
grow from its usual initial value 1.  ``cell.timescales(params)`` returns the effective τ.

Gradients are exact: ``project`` computes ``u = W_ih x + b`` and the recurrence primitive
takes ``tau`` as a recurrent parameter, so the coupling of τ with the input term
``u / τ`` is differentiated inside ``step_bwd`` (``recurrent_keys = (weight_hh, tau)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import ops
from ..autodiff import stop_gradient
from ..validate import check_choice, is_finite_number, is_real_number
from .base import Cell, input_projection, uniform_init


@dataclass(frozen=True)
class LeakyRNN(Cell):
    """Leaky RNN; ``nonlinearity`` ``"leaky_relu"`` (slope ``slope``) or ``"tanh"``; τ starts at ``tau_init``."""

    nonlinearity: str = "leaky_relu"
    slope: float = 0.01
    tau_init: float = 1.0

    name: ClassVar[str] = "leaky"
    recurrent_keys: ClassVar[tuple] = ("weight_hh", "tau")

    def __post_init__(self):
        super().__post_init__()
        check_choice("nonlinearity", self.nonlinearity, ("leaky_relu", "tanh"))
        if not is_real_number(self.slope) or not (0 <= self.slope < 1):
            raise ValueError(f"slope: got {self.slope!r}, expected a number in [0, 1)")
        if not is_finite_number(self.tau_init) or self.tau_init < 1:
            raise ValueError(f"tau_init: got {self.tau_init!r}, expected a finite number >= 1 (timescales are >= 1)")

    def init(self, rng, dtype=np.float32):
        """``W_ih: (H, I)``, ``W_hh: (H, H)`` (zero diagonal), ``bias_ih: (H,)`` ~ U(±1/√H); ``tau: (H,) = tau_init``."""
        H, I = self.hidden_size, self.input_size
        k = 1.0 / np.sqrt(H)
        w_hh = uniform_init(rng, (H, H), k, dtype)  # checks rng and dtype first
        np.fill_diagonal(w_hh, 0)
        if self.tau_init > float(np.finfo(w_hh.dtype).max):  # np.full would store inf: a "divergence" at once
            raise ValueError(f"tau_init: got {self.tau_init!r}, expected at most {np.finfo(w_hh.dtype).max:.4g} "
                             f"(the largest {w_hh.dtype.name})")
        return {"weight_ih": uniform_init(rng, (H, I), k, dtype), "weight_hh": w_hh,
                "bias_ih": uniform_init(rng, (H,), k, dtype), "tau": np.full((H,), self.tau_init, dtype=dtype)}

    def timescales(self, params):
        """Effective timescales ``max(tau, 1): (H,)`` as a plain array (no gradient)."""
        self.check_params(params)
        tau = stop_gradient(params["tau"])
        return tau.clip(1, None)

    def constrain(self, params):
        """Projected gradient descent on τ: after each update, ``tau ← max(tau, 1)``.

        Without it an update could push ``tau`` below 1, where the clamp's gradient is zero
        and τ would never grow again.
        """
        self.check_params(params)  # a missing or misshapen tau is named, not a KeyError
        tau = params["tau"]
        # a select, not ``tau * (tau >= 1) + (tau < 1)``: −inf · 0 is NaN; a Python 1 keeps float32 float32
        return {**params, "tau": ops.where(tau >= 1, tau, 1)}

    def project(self, params, x):
        """``x: (B, T, I) -> u = W_ih x + b: (B, T, H)``."""
        return input_projection(params, x)

    # -- one step ------------------------------------------------------------------------------
    def _masked(self, xp, w):
        return w * (1 - xp.eye(w.shape[0], dtype=w.dtype))

    def _act(self, xp, pre):
        return xp.tanh(pre) if self.nonlinearity == "tanh" else xp.where(pre > 0, pre, self.slope * pre)

    def _act_grad(self, xp, pre, out):
        if self.nonlinearity == "tanh":
            return 1 - out * out
        return xp.where(pre > 0, 1.0, self.slope).astype(pre.dtype)

    def step_fwd(self, xp, p, h, xi_t):
        inv = 1 / xp.maximum(p["tau"], 1)
        u = h @ self._masked(xp, p["weight_hh"]).T + xi_t
        pre = (1 - inv) * h + u * inv
        out = self._act(xp, pre)
        return out, (h, u, pre, out)

    def step_bwd(self, xp, p, cache, dout):
        h, u, pre, out = cache
        tau = p["tau"]
        inv = 1 / xp.maximum(tau, 1)
        w0 = self._masked(xp, p["weight_hh"])
        dpre = dout * self._act_grad(xp, pre, out)
        du = dpre * inv
        dh = dpre * (1 - inv) + du @ w0
        # pre = h + (u − h)/τ  ⇒  ∂pre/∂τ = −(u − h)/τ²; zero where the clamp is active
        dtau = -(dpre * (u - h)).sum(axis=0) * inv * inv * (tau >= 1)
        dw = (du.T @ h) * (1 - xp.eye(h.shape[1], dtype=h.dtype))
        return dh, du, {"weight_hh": dw, "tau": dtau}

    def step_jacobian(self, xp, p, h, xi_t):
        """``∂h'/∂h = diag(φ'(pre)) (diag(1 − 1/τ) + W_hh⁰ / τ): (N, H, H)``."""
        out, (_, _, pre, _) = self.step_fwd(xp, p, h, xi_t)
        inv = 1 / xp.maximum(p["tau"], 1)
        H = h.shape[1]
        M = (1 - inv)[:, None] * xp.eye(H, dtype=h.dtype) + inv[:, None] * self._masked(xp, p["weight_hh"])
        return self._act_grad(xp, pre, out)[:, :, None] * M[None]
