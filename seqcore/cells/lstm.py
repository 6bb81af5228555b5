"""LSTM with PyTorch's parameterisation (gate order i, f, g, o; ``torch.nn.LSTM``).

The state is ``[c, h]`` interleaved per neuron: ``state.reshape(N, H, 2)[..., 0] = c``,
``[..., 1] = h``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import ops
from ..backends.numpy.ops import sigmoid_np
from ..validate import check_array, check_shape
from .base import Cell, FoldedInputBias, uniform_init


def pack_hc(h0, c0):
    """``(h, c)`` each ``(B, H)`` → interleaved state ``(B, 2H)``."""
    B, H = h0.shape
    return ops.reshape(ops.stack([c0, h0], axis=-1), (B, 2 * H))


def check_hc(h0, batch, hidden):
    if not isinstance(h0, (tuple, list)) or len(h0) != 2:
        raise TypeError(f"h0: got {type(h0).__name__}, expected a tuple (h0, c0) of (B, H) arrays")
    for name, a in zip(("h0", "c0"), h0):
        check_array(name, a, 2)
        check_shape(name, a, (batch, hidden), "(B, hidden_size)")


class InterleavedCH:
    """State layout of cells with a cell state and a hidden state: ``[c, h]`` interleaved per
    neuron; ``h0`` is ``(h0, c0)`` like ``torch.nn.LSTM``, outputs are the ``h`` halves."""

    def pack_state(self, h0, batch, xp, dtype):
        if h0 is None:
            return xp.zeros((batch, self.state_size), dtype=dtype)
        return pack_hc(*(part for _, part in self.state_parts(h0, batch)))

    def state_parts(self, h0, batch):
        check_hc(h0, batch, self.hidden_size)
        return [("h0", h0[0]), ("c0", h0[1])]

    def unpack_state(self, state):
        return state[:, 1::2], state[:, 0::2]

    def output(self, states):
        return states[:, :, 1::2]


@dataclass(frozen=True)
class LSTM(InterleavedCH, FoldedInputBias, Cell):
    name: ClassVar[str] = "lstm"
    state_factor: ClassVar[int] = 2
    recurrent_keys: ClassVar[tuple] = ("weight_hh", "bias_hh")

    def init(self, rng, dtype=np.float32):
        H, I = self.hidden_size, self.input_size
        k = 1.0 / np.sqrt(H)
        return {"weight_ih": uniform_init(rng, (4 * H, I), k, dtype),
                "weight_hh": uniform_init(rng, (4 * H, H), k, dtype),
                "bias_ih": uniform_init(rng, (4 * H,), k, dtype), "bias_hh": uniform_init(rng, (4 * H,), k, dtype)}

    def _gates(self, xp, p, state, xi_t):
        # contiguous copies: NumPy multiplies strided operands without BLAS (10-50x slower)
        c, h = xp.ascontiguousarray(state[:, 0::2]), xp.ascontiguousarray(state[:, 1::2])
        z = xi_t + h @ p["weight_hh"].T + p["bias_hh"]
        H = self.hidden_size
        i, f, o = sigmoid_np(xp, z[:, :H]), sigmoid_np(xp, z[:, H:2 * H]), sigmoid_np(xp, z[:, 3 * H:])
        g = xp.tanh(z[:, 2 * H:3 * H])
        return c, h, i, f, g, o

    def step_fwd(self, xp, p, state, xi_t):
        c, h, i, f, g, o = self._gates(xp, p, state, xi_t)
        c2 = f * c + i * g
        tc = xp.tanh(c2)
        h2 = o * tc
        new = xp.stack([c2, h2], axis=-1).reshape(state.shape)
        return new, (c, h, i, f, g, o, tc)

    def step_bwd(self, xp, p, cache, dnew):
        c, h, i, f, g, o, tc = cache
        dc2 = dnew[:, 0::2] + dnew[:, 1::2] * o * (1 - tc * tc)
        do = dnew[:, 1::2] * tc
        dz = xp.concatenate([dc2 * g * i * (1 - i), dc2 * c * f * (1 - f), dc2 * i * (1 - g * g),
                             do * o * (1 - o)], axis=-1)
        dh = dz @ p["weight_hh"]
        dstate = xp.stack([dc2 * f, dh], axis=-1).reshape(dnew.shape)
        return dstate, dz, {"weight_hh": dz.T @ h, "bias_hh": dz.sum(axis=0)}

    def step_jacobian(self, xp, p, state, xi_t):
        """``∂[c', h']/∂[c, h]: (N, 2H, 2H)`` in the interleaved order.  ``∂c'/∂c = diag(f)``,
        ``∂h'/∂c = diag(k f)`` with ``k = o(1 − tanh²c')``; the ``∂/∂h`` blocks are rows of
        ``W_hh`` scaled per row and summed in place (1.7× faster at N = 16384, H = 32 than one
        (N, H, H) product per term)."""
        c, h, i, f, g, o = self._gates(xp, p, state, xi_t)
        N, H = h.shape
        W = p["weight_hh"]
        tc = xp.tanh(f * c + i * g)
        k = o * (1 - tc * tc)
        dc_dh = (g * i * (1 - i))[:, :, None] * W[None, :H]
        dc_dh += (c * f * (1 - f))[:, :, None] * W[None, H:2 * H]
        dc_dh += (i * (1 - g * g))[:, :, None] * W[None, 2 * H:3 * H]
        dh_dh = (tc * o * (1 - o))[:, :, None] * W[None, 3 * H:]
        dh_dh += k[:, :, None] * dc_dh
        J = xp.zeros((N, H, 2, H, 2), dtype=h.dtype)
        J[:, :, 0, :, 1] = dc_dh
        J[:, :, 1, :, 1] = dh_dh
        flat = J.reshape(N, 4 * H * H)  # a view: the diagonals of the two ∂/∂c blocks
        flat[:, ::4 * H + 2] = f        # J[:, j, 0, j, 0]
        flat[:, 2 * H::4 * H + 2] = k * f  # J[:, j, 1, j, 0]
        return J.reshape(N, 2 * H, 2 * H)
