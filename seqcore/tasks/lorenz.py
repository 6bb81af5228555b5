"""Lorenz-96 forecasting (regression), with generalised teacher forcing.

dx_i/dt = (x_{i+1} - x_{i-2})·x_{i-1} - x_i + F, indices mod D, integrated
with fourth-order Runge-Kutta.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .base import Batch, Head, Task, check_real, check_int, check_sample_fits

__all__ = ["Lorenz96Task", "lorenz96_derivative", "lorenz96_rk4_step"]


def lorenz96_derivative(x: np.ndarray, forcing: float) -> np.ndarray:
    """dx/dt of Lorenz-96 for states x (..., D), D >= 4."""
    return (np.roll(x, -1, axis=-1) - np.roll(x, 2, axis=-1)) * np.roll(x, 1, axis=-1) - x + forcing


def lorenz96_rk4_step(x: np.ndarray, forcing: float, dt: float) -> np.ndarray:
    """One RK4 step of size ``dt`` from states x (..., D)."""
    k1 = lorenz96_derivative(x, forcing)
    k2 = lorenz96_derivative(x + 0.5 * dt * k1, forcing)
    k3 = lorenz96_derivative(x + 0.5 * dt * k2, forcing)
    k4 = lorenz96_derivative(x + dt * k3, forcing)
    return x + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)


STATE_LIMIT = 1e15  # |state| above this is an overflowed integration (see Lorenz96Task._sample)
# RK4 steps one trajectory may take (about a minute of NumPy at dim=40): a sequence is integrated
# at construction and at every draw, so a longer one would look like a hang
MAX_RK4_STEPS = 10**6
# RK4 is stable while dt·|local rate| stays inside its stability region (~2.8); the rate scales with
# |state|, and the first swings from the start state forcing + N(0, 1) reach ~3·|forcing|. Measured:
# sequences diverge in those swings from dt·|forcing| = 0.75 (~1 in 4000 at dim 400, more with dim),
# none of 16384 at dim 400 at 0.7; above the bound a run would fail at some draw, so it is refused
MAX_DT_FORCING = 0.6
TRIAL_SEQUENCES = 8  # integrated when the task is built: an instability of other settings shows there
REFERENCE_OBSERVATIONS = 2200  # of the trajectories behind attractor_stats: 200 of burn-in, 2000 pooled


# below this (relative to 1 + |forcing|) the state's spread is a decaying transient, not an attractor
MIN_ATTRACTOR_STD = 1e-3


def fixed_point_is_stable(dim: int, forcing: float) -> bool:
    """Whether the steady state x_i = F attracts: the linearisation's Fourier modes
    θ_k = 2πk/dim grow at rate F·(cos θ_k − cos 2θ_k) − 1, all negative when it is stable
    (for dim = 40: −0.5 < F < 0.894). Near the bound the decay is slow enough for a finite
    reference run to mistake the transient for an attractor, hence this exact test."""
    theta = 2 * np.pi * np.arange(dim) / dim
    return bool(np.max(forcing * (np.cos(theta) - np.cos(2 * theta))) < 1)


@functools.lru_cache(maxsize=32)
def _attractor_stats(dim: int, forcing: float, dt: float, substeps: int) -> tuple[float, float]:
    # 16 trajectories, 200 observations of burn-in, then 2000 observations pooled; fixed seed
    state = forcing + np.random.default_rng(96).standard_normal((16, dim))
    seen = []
    for t in range(REFERENCE_OBSERVATIONS):
        for _ in range(substeps):
            state = lorenz96_rk4_step(state, forcing, dt)
        if t >= 200:
            seen.append(state)
    seen = np.asarray(seen)
    return float(seen.mean()), float(seen.std())


@dataclasses.dataclass(frozen=True)
class Lorenz96Task(Task):
    """Lorenz-96 next-state prediction.

    Each sequence starts from ``forcing + N(0, 1)`` noise, runs ``burn_in``
    observation intervals to reach the attractor, then records ``length + 1``
    states s_0..s_T, one every ``substeps`` RK4 steps of size ``dt``.
    x = s_0..s_{T-1} and y = s_1..s_T, both (B, T, dim) float32 (raw values:
    mean ≈ 2.3, std ≈ 3.6 for F = 8); every step is marked; one regression head.
    With ``normalize`` both are standardised, ``(s − μ)/σ``, with the attractor's mean and
    standard deviation (:meth:`attractor_stats`, pooled over 16 reference trajectories from a
    fixed seed, so they depend only on ``dim``, ``forcing``, ``dt`` and ``substeps``); refused
    where the steady state x = F is stable (:func:`fixed_point_is_stable`).

    Generalised teacher forcing (``alpha`` in [0, 1]): the task gives true states; the
    model runs closed-loop and reads ``mix(x[:, t], prediction of x[:, t])``, i.e.
    ``alpha·data + (1 - alpha)·prediction`` for t >= 1 (x[:, 0] as is) — the training
    loop builds ``SequenceModel(..., feedback=alpha)``. alpha = 1 is classic teacher
    forcing (feed x as given), alpha = 0 free running.
    """

    dim: int = 40
    forcing: float = 8.0
    dt: float = 0.01
    substeps: int = 5
    length: int = 100
    burn_in: int = 100
    alpha: float = 1.0
    normalize: bool = False
    seed: int = 0
    name = "lorenz96"
    input_kind = "real"

    def _check(self) -> None:
        check_int("dim", self.dim, minimum=4)
        check_real("forcing", self.forcing)
        check_real("dt", self.dt, low=0.0, high=0.1, low_open=True)
        check_int("substeps", self.substeps, minimum=1)
        check_int("length", self.length, minimum=1)
        check_int("burn_in", self.burn_in, minimum=0)
        check_real("alpha", self.alpha, low=0.0, high=1.0)
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise TypeError(f"normalize: got {self.normalize!r}, expected True or False")
        # x float32, and y with the float64 states: about 12 more bytes a coordinate and step
        check_sample_fits(self, ("dim", "length"), self.length + 1, self.dim, labels=self.dim)
        self._check_rk4_steps(("burn_in", "length", "substeps"), self.burn_in + self.length,
                              "(burn_in + length)·substeps", "a sequence")
        if self.normalize:
            self._check_reference_steps()
            std = self.attractor_stats()[1]
            settles = fixed_point_is_stable(self.dim, self.forcing)
            if settles or not std >= MIN_ATTRACTOR_STD * (1 + abs(self.forcing)):  # NaN fails too
                raise ValueError(f"forcing: got {self.forcing}: the dynamics settle to a fixed point (state std "
                                 f"{std:.2g}), so normalize=True would scale by 1/std; expected a |forcing| "
                                 "with a chaotic attractor (the usual 8) or normalize=False")
        # refused here, not at step 0; the trial first, so a setting that overflows at once says so
        self._sample(np.random.default_rng(0), TRIAL_SEQUENCES)
        if self.dt * abs(self.forcing) > MAX_DT_FORCING * (1 + 1e-12):  # 0.075·8 is 0.6000000000000001
            raise self._overflow(f"dt·|forcing| = {self.dt * abs(self.forcing):.3g} is above MAX_DT_FORCING = "
                                 f"{MAX_DT_FORCING}, where the RK4 integration diverges in some sequences")

    def _check_rk4_steps(self, fields: tuple[str, ...], observations: int, formula: str, what: str) -> None:
        steps = observations * self.substeps
        if steps > MAX_RK4_STEPS:
            got = "/".join(str(getattr(self, f)) for f in fields)
            raise ValueError(f"{'/'.join(fields)}: got {got}, expected {formula} <= {MAX_RK4_STEPS:.0e} RK4 steps "
                             f"for {what} (MAX_RK4_STEPS), not {steps:.3g}")

    def _check_reference_steps(self) -> None:
        self._check_rk4_steps(("substeps",), REFERENCE_OBSERVATIONS, f"{REFERENCE_OBSERVATIONS}·substeps",
                              "the reference trajectory of attractor_stats")

    def _overflow(self, why: str = "") -> ValueError:
        why = why or f"the RK4 integration overflowed (|state| > {STATE_LIMIT:g})"
        return ValueError(f"forcing: got forcing={self.forcing} with dt={self.dt}, substeps={self.substeps}: "
                          f"{why}; expected a smaller |forcing| or dt")

    def attractor_stats(self) -> tuple[float, float]:
        """``(mean, std)`` of the state on the attractor (all coordinates pooled)."""
        self._check_reference_steps()
        return _attractor_stats(self.dim, float(self.forcing), float(self.dt), self.substeps)

    @property
    def input_size(self) -> int:
        return self.dim

    @property
    def heads(self) -> tuple[Head, ...]:
        return (Head("next_state", self.dim, "regression"),)

    def mix(self, data: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        """Teacher-forced input ``alpha·data + (1 - alpha)·prediction`` (same shapes)."""
        if np.shape(data) != np.shape(prediction):
            raise ValueError(f"prediction: got shape {np.shape(prediction)}, expected {np.shape(data)} "
                             "(the shape of data)")
        return self.alpha * data + (1.0 - self.alpha) * prediction

    def _observe(self, state: np.ndarray) -> np.ndarray:
        for _ in range(self.substeps):
            state = lorenz96_rk4_step(state, self.forcing, self.dt)
        return state

    def _sample(self, rng, batch_size):
        state = self.forcing + rng.standard_normal((batch_size, self.dim))
        states = np.empty((batch_size, self.length + 1, self.dim))
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(self.burn_in):
                state = self._observe(state)
            states[:, 0] = state
            for t in range(1, self.length + 1):
                state = self._observe(state)
                states[:, t] = state
        if self.normalize:
            mean, std = self.attractor_stats()
            states = (states - mean) / std
        with np.errstate(over="ignore"):
            states = states.astype(np.float32)
        # RK4 is unstable when dt·|forcing| is large; and states beyond float32's range would reach
        # the model as inf, beyond ~1e19 their squared errors would (STATE_LIMIT leaves room)
        if not np.abs(states).max(initial=0.0) <= STATE_LIMIT:  # NaN fails too
            raise self._overflow()
        mask = np.ones((batch_size, self.length), dtype=np.float32)
        return Batch(states[:, :-1], states[:, 1:], mask)
