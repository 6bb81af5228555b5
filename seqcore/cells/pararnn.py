"""ParaRNN's cells (Danieli et al., 2025): a diagonal GRU and a diagonal CIFG-LSTM.

Both have diagonal recurrent weights (vectors), so the step Jacobian is diagonal (DiagGRU)
or 2×2 block-diagonal (CIFG-LSTM, state ``[c, h]``) — the structure that makes Newton's
method over the whole sequence cheap (RESEARCH §3).  The equations follow ParaRNN's
reference cells (``gru_diag_mh``, ``lstm_cifg_diag_mh``).

**Multi-head input projections.**  With ``heads`` groups, the input ``x: (…, I)`` is split
into ``heads`` consecutive slices of ``I / heads`` features, and hidden neurons are split
likewise into slices of ``H / heads``; head ``m``'s neurons see only input slice ``m``.  The
weight is stored per head, ``weight_ih: (heads, 3·H/heads, I/heads)`` (rows of a head in
gate order, ``H/heads`` rows per gate), not as a masked dense matrix: no wasted parameters
and no mask on the gradient.  ``project`` returns gate-major pre-activations
``xi: (B, T, 3H)`` — ``xi[..., g·H + j]`` is gate ``g`` of neuron ``j`` — plus ``bias_ih: (3H,)``.

Initialisation: ``weight_ih`` ~ U(±1/√(I/heads)) (a head's fan-in), ``bias_ih`` ~ U(±1/√H),
diagonal recurrent weights and peepholes ~ U(−1, 1) (one weight per neuron, so O(1)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import ops
from ..backends.numpy.ops import sigmoid_np
from ..validate import check_positive_int
from .base import Cell, uniform_init
from .lstm import InterleavedCH


def grouped_projection(params, x, heads: int, gates: int):
    """Block-diagonal input projection: ``x: (B, T, I) -> xi: (B, T, gates·H)``, gate-major.

    ``params["weight_ih"]: (heads, gates·H/heads, I/heads)``, ``params["bias_ih"]: (gates·H,)``.
    One ``linear`` per head (no broadcast batch matmul, whose weight gradient would need a
    ``(B·T, heads, I/heads, gates·H/heads)`` intermediate).
    """
    W, b = params["weight_ih"], params["bias_ih"]
    if heads == 1:
        return ops.linear(x, W[0], b)
    Ih, Hh = x.shape[-1] // heads, W.shape[1] // gates
    ys = [ops.linear(x[..., m * Ih:(m + 1) * Ih], W[m]) for m in range(heads)]   # (B, T, gates·Hh) each
    parts = [ys[m][..., g * Hh:(g + 1) * Hh] for g in range(gates) for m in range(heads)]
    return ops.concatenate(parts, axis=-1) + b


@dataclass(frozen=True)
class _MultiHeadCell(Cell):
    heads: int = 1

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("heads", self.heads)
        for field in ("input_size", "hidden_size"):
            size = getattr(self, field)
            if size % self.heads:
                raise ValueError(f"heads: got {self.heads}, expected a divisor of {field}={size}")

    def init(self, rng, dtype=np.float32):
        H, I, m = self.hidden_size, self.input_size, self.heads
        params = {"weight_ih": uniform_init(rng, (m, 3 * H // m, I // m), 1.0 / np.sqrt(I // m), dtype),
                  "bias_ih": uniform_init(rng, (3 * H,), 1.0 / np.sqrt(H), dtype),
                  "weight_hh": uniform_init(rng, (3 * H,), 1.0, dtype)}
        return params

    def project(self, params, x):
        """``x: (B, T, I) -> xi: (B, T, 3H)`` (gate-major, block-diagonal over heads)."""
        return grouped_projection(params, x, self.heads, 3)


@dataclass(frozen=True)
class DiagGRU(_MultiHeadCell):
    """ParaRNN's diagonal GRU (gate order r, z, n; diagonal ``weight_hh: (3H,)``):

        r  = σ(xi_r + a_r ⊙ h)
        z  = σ(xi_z + a_z ⊙ h)
        n  = tanh(xi_n + a_n ⊙ r ⊙ h)
        h' = (1 − z) ⊙ h + z ⊙ n

    with ``xi = W_ih x + b_ih`` (multi-head, see the module docstring) and
    ``weight_hh = [a_r, a_z, a_n]``.  Note ParaRNN's convention: ``z`` weighs the *candidate*
    (PyTorch's GRU weighs the old state with ``z``); there is one bias per gate and no
    recurrent bias.  Step Jacobian: diagonal ``(N, H)``.
    """

    name: ClassVar[str] = "diaggru"
    jacobian_structure: ClassVar[str] = "diag"
    recurrent_keys: ClassVar[tuple] = ("weight_hh",)

    def _gates(self, xp, p, h, xi_t):
        H = self.hidden_size
        a = p["weight_hh"]
        ar, az, an = a[:H], a[H:2 * H], a[2 * H:]
        r = sigmoid_np(xp, xi_t[:, :H] + ar * h)
        z = sigmoid_np(xp, xi_t[:, H:2 * H] + az * h)
        n = xp.tanh(xi_t[:, 2 * H:] + an * r * h)
        return ar, az, an, r, z, n

    def step_fwd(self, xp, p, h, xi_t):
        ar, az, an, r, z, n = self._gates(xp, p, h, xi_t)
        return (1 - z) * h + z * n, (h, r, z, n)

    def step_bwd(self, xp, p, cache, dout):
        h, r, z, n = cache
        H = self.hidden_size
        a = p["weight_hh"]
        ar, az, an = a[:H], a[H:2 * H], a[2 * H:]
        dkn = dout * z * (1 - n * n)
        dkz = dout * (n - h) * z * (1 - z)
        dkr = dkn * an * h * r * (1 - r)
        dh = dout * (1 - z) + dkn * an * r + dkz * az + dkr * ar
        dxi = xp.concatenate([dkr, dkz, dkn], axis=-1)
        da = xp.concatenate([(dkr * h).sum(axis=0), (dkz * h).sum(axis=0), (dkn * r * h).sum(axis=0)])
        return dh, dxi, {"weight_hh": da}

    def step_jacobian(self, xp, p, h, xi_t):
        """``∂h'/∂h`` diagonal: ``(1 − z) + (n − h) z(1 − z) a_z + z (1 − n²) a_n (r + h r(1 − r) a_r)``, ``(N, H)``."""
        ar, az, an, r, z, n = self._gates(xp, p, h, xi_t)
        return (1 - z) + (n - h) * z * (1 - z) * az + z * (1 - n * n) * an * (r + h * r * (1 - r) * ar)


@dataclass(frozen=True)
class CIFGLSTM(InterleavedCH, _MultiHeadCell):
    """ParaRNN's LSTM with coupled input–forget gate (i = 1 − f), diagonal recurrence and peepholes:

        f  = σ(xi_f + a_f ⊙ h + p_f ⊙ c)
        g  = tanh(xi_g + a_g ⊙ h)
        c' = f ⊙ c + (1 − f) ⊙ g
        o  = σ(xi_o + a_o ⊙ h + p_o ⊙ c')
        h' = o ⊙ tanh(c')

    ``xi = W_ih x + b_ih`` (multi-head, gate order f, g, o), ``weight_hh = [a_f, a_g, a_o]: (3H,)``,
    ``weight_peephole = [p_f, p_o]: (2H,)`` (the forget gate peeks at the old cell, the output
    gate at the new one, as in ParaRNN).  The state is ``[c, h]`` interleaved per neuron as in
    :class:`~seqcore.cells.LSTM`; ``h0`` is a tuple ``(h0, c0)``.  Step Jacobian: 2×2 blocks
    ``(N, H, 2, 2)``, rows ``(c', h')``, columns ``(c, h)``.
    """

    name: ClassVar[str] = "cifg-lstm"
    state_factor: ClassVar[int] = 2
    jacobian_structure: ClassVar[str] = "block"
    recurrent_keys: ClassVar[tuple] = ("weight_hh", "weight_peephole")

    def init(self, rng, dtype=np.float32):
        params = super().init(rng, dtype)
        params["weight_peephole"] = uniform_init(rng, (2 * self.hidden_size,), 1.0, dtype)
        return params

    def _split(self, p):
        H = self.hidden_size
        a, pp = p["weight_hh"], p["weight_peephole"]
        return a[:H], a[H:2 * H], a[2 * H:], pp[:H], pp[H:]

    def _gates(self, xp, p, state, xi_t):
        H = self.hidden_size
        af, ag, ao, pf, po = self._split(p)
        c, h = state[:, 0::2], state[:, 1::2]
        f = sigmoid_np(xp, xi_t[:, :H] + af * h + pf * c)
        g = xp.tanh(xi_t[:, H:2 * H] + ag * h)
        c2 = f * c + (1 - f) * g
        o = sigmoid_np(xp, xi_t[:, 2 * H:] + ao * h + po * c2)
        return c, h, f, g, c2, o, xp.tanh(c2)

    def step_fwd(self, xp, p, state, xi_t):
        c, h, f, g, c2, o, tc = self._gates(xp, p, state, xi_t)
        new = xp.stack([c2, o * tc], axis=-1).reshape(state.shape)
        return new, (c, h, f, g, c2, o, tc)

    def step_bwd(self, xp, p, cache, dnew):
        c, h, f, g, c2, o, tc = cache
        af, ag, ao, pf, po = self._split(p)
        dh2 = dnew[:, 1::2]
        dko = dh2 * tc * o * (1 - o)
        dc2 = dnew[:, 0::2] + dh2 * o * (1 - tc * tc) + dko * po
        dkf = dc2 * (c - g) * f * (1 - f)
        dkg = dc2 * (1 - f) * (1 - g * g)
        dstate = xp.stack([dc2 * f + dkf * pf, dkf * af + dkg * ag + dko * ao], axis=-1).reshape(dnew.shape)
        dxi = xp.concatenate([dkf, dkg, dko], axis=-1)
        da = xp.concatenate([(dkf * h).sum(axis=0), (dkg * h).sum(axis=0), (dko * h).sum(axis=0)])
        dpeep = xp.concatenate([(dkf * c).sum(axis=0), (dko * c2).sum(axis=0)])
        return dstate, dxi, {"weight_hh": da, "weight_peephole": dpeep}

    def step_jacobian(self, xp, p, state, xi_t):
        """2×2 blocks ``[[∂c'/∂c, ∂c'/∂h], [∂h'/∂c, ∂h'/∂h]]`` per neuron: ``(N, H, 2, 2)``."""
        c, h, f, g, c2, o, tc = self._gates(xp, p, state, xi_t)
        af, ag, ao, pf, po = self._split(p)
        sf = f * (1 - f)
        jcc = f + (c - g) * sf * pf
        jch = (c - g) * sf * af + (1 - f) * (1 - g * g) * ag
        so = tc * o * (1 - o)           # ∂h'/∂(pre-activation of o)
        k = o * (1 - tc * tc)           # ∂h'/∂c' through tanh(c')
        jhc = (so * po + k) * jcc
        jhh = so * (ao + po * jch) + k * jch
        return xp.stack([xp.stack([jcc, jch], axis=-1), xp.stack([jhc, jhh], axis=-1)], axis=-2)
