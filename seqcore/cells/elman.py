"""Elman RNN: ``h' = φ(W_ih x + b_ih + W_hh h + b_hh)``, φ ∈ {tanh, relu} (``torch.nn.RNN``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..validate import check_choice
from .base import Cell, FoldedInputBias, uniform_init


@dataclass(frozen=True)
class Elman(FoldedInputBias, Cell):
    """Elman cell with PyTorch's parameter names; ``nonlinearity`` is ``"tanh"`` or ``"relu"``."""

    nonlinearity: str = "tanh"

    name: ClassVar[str] = "elman"
    recurrent_keys: ClassVar[tuple] = ("weight_hh", "bias_hh")

    def __post_init__(self):
        super().__post_init__()
        check_choice("nonlinearity", self.nonlinearity, ("tanh", "relu"))

    def init(self, rng, dtype=np.float32):
        H, I = self.hidden_size, self.input_size
        k = 1.0 / np.sqrt(H)
        return {"weight_ih": uniform_init(rng, (H, I), k, dtype), "weight_hh": uniform_init(rng, (H, H), k, dtype),
                "bias_ih": uniform_init(rng, (H,), k, dtype), "bias_hh": uniform_init(rng, (H,), k, dtype)}

    def _act(self, xp, pre):
        return xp.tanh(pre) if self.nonlinearity == "tanh" else xp.maximum(pre, 0)

    def _act_grad(self, xp, out):
        return 1 - out * out if self.nonlinearity == "tanh" else (out > 0).astype(out.dtype)

    def step_fwd(self, xp, p, h, xi_t):
        out = self._act(xp, xi_t + h @ p["weight_hh"].T + p["bias_hh"])
        return out, (h, out)

    def step_bwd(self, xp, p, cache, dout):
        h, out = cache
        dpre = dout * self._act_grad(xp, out)
        return dpre @ p["weight_hh"], dpre, {"weight_hh": dpre.T @ h, "bias_hh": dpre.sum(axis=0)}

    def step_jacobian(self, xp, p, h, xi_t):
        out, _ = self.step_fwd(xp, p, h, xi_t)
        return self._act_grad(xp, out)[:, :, None] * p["weight_hh"][None]
