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
from .base import Cell, input_projection, uniform_init


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
        check_hc(h0, batch, self.hidden_size)
        return pack_hc(*h0)

    def unpack_state(self, state):
        return state[:, 1::2], state[:, 0::2]

    def output(self, states):
        return states[:, :, 1::2]


@dataclass(frozen=True)
class LSTM(InterleavedCH, Cell):
    name: ClassVar[str] = "lstm"
    state_factor: ClassVar[int] = 2
    recurrent_keys: ClassVar[tuple] = ("weight_hh", "bias_hh")

    def init(self, rng, dtype=np.float32):
        H, I = self.hidden_size, self.input_size
        k = 1.0 / np.sqrt(H)
        return {"weight_ih": uniform_init(rng, (4 * H, I), k, dtype),
                "weight_hh": uniform_init(rng, (4 * H, H), k, dtype),
                "bias_ih": uniform_init(rng, (4 * H,), k, dtype), "bias_hh": uniform_init(rng, (4 * H,), k, dtype)}

    def project(self, params, x):
        return input_projection(params, x)

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
        c, h, i, f, g, o = self._gates(xp, p, state, xi_t)
        N, H = h.shape
        W = p["weight_hh"]
        Mi, Mf, Mg, Mo = ((s[:, :, None] * W[None, k * H:(k + 1) * H]) for k, s in
                          enumerate((i * (1 - i), f * (1 - f), 1 - g * g, o * (1 - o))))
        tc = xp.tanh(f * c + i * g)
        dc_dh = c[:, :, None] * Mf + g[:, :, None] * Mi + i[:, :, None] * Mg
        eye = xp.eye(H, dtype=h.dtype)[None]
        dc_dc = f[:, :, None] * eye
        k = (o * (1 - tc * tc))[:, :, None]
        J = xp.zeros((N, H, 2, H, 2), dtype=h.dtype)
        J[:, :, 0, :, 0] = dc_dc
        J[:, :, 0, :, 1] = dc_dh
        J[:, :, 1, :, 0] = k * dc_dc
        J[:, :, 1, :, 1] = tc[:, :, None] * Mo + k * dc_dh
        return J.reshape(N, 2 * H, 2 * H)
