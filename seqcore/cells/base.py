"""The cell protocol: a frozen dataclass with ``init``, a one-step function and its VJP.

A cell splits its work in two:

* ``project(params, x)`` — the input-dependent part for all steps at once
  (``xi: (B, T, P)``), built from differentiable ops;
* the recurrence over time, one primitive ``<name>_recurrence(xi, state0, *recurrent
  params)`` whose reference runs ``step_fwd`` forward and ``step_bwd`` backward (exact
  BPTT).  Backends replace this primitive with fused loops.

The recurrent state is a flat array ``(B, S)`` (``S = state_factor * H``); cells with
several state vectors (LSTM: ``c`` and ``h``) interleave them per neuron, so that the
state reshaped to ``(B, H, k)`` holds the k-block of neuron i — the layout block
Jacobians need.  ``step_jacobian`` returns ``∂state_t/∂state_{t-1}`` in the structure
named by ``jacobian_structure``: ``"diag"`` → ``(N, S)``, ``"block"`` →
``(N, S // k, k, k)``, ``"dense"`` → ``(N, S, S)``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .. import backends, ops
from ..primitives import Primitive, define
from ..validate import check_array, check_choice, check_param_dtype, check_params, check_positive_int, check_rng
from ..validate import check_detached, check_same_backend, check_shape, store_python_scalars

__all__ = ["Cell", "MODES"]

MODES = ("sequential", "parallel")


def _recurrence_fwd(xp, xi, state0, *rec, cell):
    p = dict(zip(cell.recurrent_keys, rec))
    states, caches, s = [], [], state0
    for t in range(xi.shape[1]):
        s, cache = cell.step_fwd(xp, p, s, xi[:, t])
        states.append(s)
        caches.append(cache)
    return xp.stack(states, axis=1), (p, caches, xi.shape)


def _recurrence_bwd(xp, res, dstates, cell):
    p, caches, xi_shape = res
    ds = xp.zeros_like(dstates[:, 0])
    dxi = xp.zeros(xi_shape, dtype=dstates.dtype)
    dp = {k: xp.zeros_like(v) for k, v in p.items()}
    for t in range(xi_shape[1] - 1, -1, -1):
        ds, dxi_t, dp_t = cell.step_bwd(xp, p, caches[t], ds + dstates[:, t])
        dxi[:, t] = dxi_t
        for k, g in dp_t.items():
            dp[k] = dp[k] + g
    return (dxi, ds) + tuple(dp[k] for k in cell.recurrent_keys)


@dataclass(frozen=True)
class Cell:
    """Base class of recurrent cells.  Subclasses set the class variables and the hooks."""

    input_size: int
    hidden_size: int

    name: ClassVar[str] = ""
    state_factor: ClassVar[int] = 1             # S = state_factor * hidden_size
    jacobian_structure: ClassVar[str] = "dense"  # "diag", "block" (k = state_factor) or "dense"
    recurrent_keys: ClassVar[tuple] = ()        # params the recurrence primitive differentiates
    # {recurrent key: the params it is computed from}, where not the param of its own name
    recurrent_sources: ClassVar[dict] = {}
    linear_in_state: ClassVar[bool] = False     # True: the recurrence is a linear scan
    # the reference (fwd, bwd) of `<name>_recurrence`: the step loop unless a cell has a faster one
    recurrence_reference: ClassVar[tuple] = (_recurrence_fwd, _recurrence_bwd)
    _primitives: ClassVar[dict] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.name:
            cls.recurrence()  # register `<name>_recurrence` at import, so every primitive is known up front

    def __post_init__(self):
        store_python_scalars(self)  # a cell's config stays JSON-friendly
        check_positive_int("input_size", self.input_size)
        check_positive_int("hidden_size", self.hidden_size)

    # -- hooks for subclasses ------------------------------------------------------------------
    def init(self, rng: np.random.Generator, dtype=np.float32) -> dict:
        raise NotImplementedError

    def project(self, params: dict, x):
        """Input-dependent part of every step: ``x: (B, T, I) -> xi: (B, T, P)``.

        With :meth:`recurrent_params` it covers every parameter; a bias that the recurrence
        adds anyway may be left to it (LSTM, Elman: :class:`FoldedInputBias`)."""
        raise NotImplementedError

    def recurrent_params(self, params: dict) -> dict:
        """``{key: value}`` for :attr:`recurrent_keys`: what the recurrence and the step
        functions read, computed from the cell's parameters (here: those entries)."""
        return {k: params[k] for k in self.recurrent_keys}

    def recurrent_args(self, params: dict) -> tuple:
        """:meth:`recurrent_params` as positional arguments of the recurrence primitive."""
        rp = self.recurrent_params(params)
        return tuple(rp[k] for k in self.recurrent_keys)

    def step_fwd(self, xp, p: dict, state, xi_t):
        """One step on raw arrays: ``state (N, S), xi_t (N, P) -> (state', cache)``."""
        raise NotImplementedError

    def step_bwd(self, xp, p: dict, cache, dstate):
        """VJP of one step: ``dstate' (N, S) -> (dstate, dxi_t, {key: dparam})`` (params summed over N)."""
        raise NotImplementedError

    def step_jacobian(self, xp, p: dict, state, xi_t):
        """``∂state'/∂state`` at ``(state, xi_t)``, in the cell's ``jacobian_structure``."""
        raise NotImplementedError

    def constrain(self, params: dict) -> dict:
        """Project parameters back onto their feasible set after an optimizer update
        (identity here; LeakyRNN clamps its timescales to τ ≥ 1)."""
        self.check_params(params)  # else anything, None included, passed through unchecked
        return params

    # -- state layout --------------------------------------------------------------------------
    @property
    def state_size(self) -> int:
        return self.state_factor * self.hidden_size

    @property
    def block_size(self) -> int:
        return {"diag": 1, "block": self.state_factor, "dense": self.state_size}[self.jacobian_structure]

    def pack_state(self, h0, batch: int, xp, dtype):
        """User-facing initial state (``(B, H)``; LSTM-like cells: ``(h0, c0)``) → ``(B, S)``."""
        if h0 is None:
            return xp.zeros((batch, self.state_size), dtype=dtype)
        return self.state_parts(h0, batch)[0][1]

    def state_parts(self, h0, batch: int) -> list:
        """The arrays of a user-facing initial state with their names (``[("h0", h0)]``), after
        checking their shapes: each is checked on its own, not as the packed (promoted) state."""
        check_array("h0", h0, 2)
        check_shape("h0", h0, (batch, self.hidden_size), "(B, hidden_size)")
        return [("h0", h0)]

    def unpack_state(self, state):
        """``(B, S)`` → the user-facing final state (``h`` or ``(h, c)``)."""
        return state

    def output(self, states):
        """``(B, T, S)`` → hidden outputs ``(B, T, H)``."""
        return states

    # -- the sequence ----------------------------------------------------------------------------
    @classmethod
    def recurrence(cls) -> Primitive:
        """The ``<name>_recurrence`` primitive of this cell class (defined once)."""
        key = f"{cls.name}_recurrence"
        if key not in Cell._primitives:  # subclasses that keep the name share it (the cell is a static argument)
            prim = define(key, *cls.recurrence_reference,
                          doc=f"{cls.__name__} over time: (xi (B,T,P), state0 (B,S), params) -> states (B,T,S)")
            Cell._primitives[key] = prim
        return Cell._primitives[key]

    def check_input(self, x):
        check_array("x", x, 3)
        if x.shape[2] != self.input_size:
            raise ValueError(f"x: got shape {tuple(x.shape)}, expected (B, T, {self.input_size}) "
                             f"(input_size={self.input_size})")
        if x.shape[1] < 1:
            raise ValueError(f"x: got T = {x.shape[1]} steps, expected T >= 1")

    def check_params(self, params: dict):
        """Every parameter of :meth:`init` present, a float array of its shape."""
        check_params("params", params, self.param_shapes(), f"{type(self).__name__}.init")

    def param_shapes(self) -> dict:
        """``{name: shape}`` of :meth:`init`'s parameters (computed once per cell: every apply checks them)."""
        try:
            return dict(_param_shapes(self))
        except TypeError:  # a field that cannot be hashed: no memo
            return _shapes_from_init(self)

    def states(self, params: dict, x, state0, mode: str = "sequential", **newton_kwargs):
        """All states ``(B, T, S)`` from ``x: (B, T, I)`` and a packed ``state0: (B, S)``
        (:meth:`pack_state`; ``S = state_size``)."""
        self.check_input(x)
        self.check_params(params)
        check_array("state0", state0, ndim=2)
        check_shape("state0", state0, (x.shape[0], self.state_size), "(B, state_size)")
        check_detached("x", x)
        for name, v in (*((f"params[{k!r}]", v) for k, v in params.items()), ("state0", state0)):
            check_same_backend(name, v, "x", x)
            check_detached(name, v)
        _check_state_dtype("state0", state0, x, params)
        return self._states(params, x, state0, mode, **newton_kwargs)

    def _states(self, params: dict, x, state0, mode: str = "sequential", **newton_kwargs):
        check_choice("mode", mode, MODES)
        if newton_kwargs and mode == "sequential":
            check_newton_options(self, x, newton_kwargs)  # not used, but a typo or a bad value is refused
        xi = self.project(params, x)
        if mode == "parallel":
            from ..newton import _parallel_states  # imported here: the Newton engine sits above cells
            return _parallel_states(self, params, xi, state0, **newton_kwargs)
        return self.recurrence()(xi, state0, *self.recurrent_args(params), cell=self)

    def apply(self, params: dict, x, h0=None, mode: str = "sequential", **newton_kwargs):
        """Run the cell over a sequence.

        Args:
            params: from :meth:`init`.
            x: ``(B, T, input_size)``.
            h0: initial state ``(B, hidden_size)`` (LSTM-like cells: ``(h0, c0)``), zeros if ``None``.
            mode: ``"sequential"`` or ``"parallel"`` (Newton scan for nonlinear cells,
                associative scan for cells linear in the state).
            **newton_kwargs: ``tol``, ``max_iters``, ``jacobian``, ``damping``: the Newton scan's
                options, as in :func:`seqcore.newton_scan`; used by ``mode="parallel"`` on nonlinear
                cells, and checked (an unknown name is a ``TypeError``) but unused otherwise.
        Returns:
            ``(hs, h_last)``: ``hs: (B, T, hidden_size)`` and the final state (same form as ``h0``).
        """
        state0 = self.checked_state0(params, x, h0)
        states = self._states(params, x, state0, mode, **newton_kwargs)  # checked just above
        return self.output(states), self.unpack_state(states[:, -1])

    def checked_state0(self, params: dict, x, h0):
        """The packed initial state ``(B, S)`` for a run over ``x`` (zeros if ``h0`` is None), after
        checking ``x``, ``params`` and ``h0``: shapes, one backend, and a given ``h0`` in the dtype
        the cell computes in."""
        self.check_input(x)
        self.check_params(params)
        check_detached("x", x)
        for k, v in params.items():  # one backend: a torch weight beside NumPy data is named, not adopted
            check_same_backend(f"params[{k!r}]", v, "x", x)
            check_detached(f"params[{k!r}]", v)  # nn.LSTM's own parameters, say
        if h0 is not None:  # before packing, which would promote (h0 float32, c0 float64) to float64
            for name, part in self.state_parts(h0, x.shape[0]):
                check_same_backend(name, part, "x", x)
                check_detached(name, part)
                _check_state_dtype(name, part, x, params)
        return self.pack_state(h0, x.shape[0], backends.namespace(x), x.dtype)


def _shapes_from_init(cell) -> dict:
    return {k: tuple(v.shape) for k, v in cell.init(np.random.default_rng(0), np.float64).items()}


@functools.lru_cache(maxsize=512)
def _param_shapes(cell) -> tuple:
    # a tuple of pairs, so callers cannot mutate the memo; init draws every weight, which at
    # H = 256 costs more than a short forward pass
    return tuple(_shapes_from_init(cell).items())


def _check_state_dtype(name: str, state0, x, params) -> None:
    """A given initial state ``name`` has the dtype the cell computes in (that of x and the
    parameters): a mixed one would be promoted on some paths and refused by the scans on others.
    Compared as NumPy dtypes on every backend (torch promoted a float64 h0 silently)."""
    from ..autodiff import stop_gradient
    from ..backends import numpy_dtype
    values = [stop_gradient(v) for v in (x, *params.values())]
    # x through an empty view: numpy_dtype reshapes, which would copy a strided tensor
    dtypes = [numpy_dtype(v[:0] if i == 0 else v) for i, v in enumerate(values)]
    want = np.result_type(*dtypes)
    state0 = stop_gradient(state0)
    if numpy_dtype(state0) != want:
        # in the arrays' own spelling (torch.float32): float dtypes promote to one of their own
        expected = next((v.dtype for v, d in zip(values, dtypes) if d == want), want)
        raise TypeError(f"{name}: got dtype {state0.dtype}, expected {expected} (the dtype of x and the parameters)")


def uniform_init(rng, shape, bound, dtype):
    """PyTorch's default RNN init: U(−1/√H, 1/√H). Every cell's ``init(rng, dtype)`` draws through here,
    so the checks of ``rng`` and ``dtype`` live here too."""
    check_rng(rng)
    kind = check_param_dtype(dtype)
    return rng.uniform(-bound, bound, size=shape).astype(kind)


def check_newton_options(cell, x, newton_kwargs: dict):
    """Validate Newton options (``tol``, ``max_iters``, ``jacobian``, ``damping``) where they are not used:
    ``mode="sequential"``, and cells whose parallel mode is an exact associative scan."""
    from ..newton import check_options  # the Newton engine sits above cells
    check_options(cell, x.dtype, x.shape[1], newton_kwargs)


def input_projection(params, x, weight="weight_ih", bias="bias_ih"):
    return ops.linear(x, params[weight], params[bias])


class FoldedInputBias:
    """Cells whose ``bias_ih`` and ``bias_hh`` enter only as a sum (LSTM, Elman): the input
    projection leaves ``bias_ih`` out and the recurrence adds ``bias_ih + bias_hh``.

    That saves a pass over the ``(B, T, kH)`` projection each way (the bias added to it in
    the forward, its column sums in the backward: about 9 % of an LSTM layer's forward +
    backward at B = 64, H = 64; BENCHMARKS.md); both biases get the recurrence's bias
    gradient, the one they had before."""

    recurrent_sources: ClassVar[dict] = {"bias_hh": ("bias_ih", "bias_hh")}

    def project(self, params, x):
        return ops.linear(x, params["weight_ih"])

    def recurrent_params(self, params):
        return {"weight_hh": params["weight_hh"], "bias_hh": params["bias_ih"] + params["bias_hh"]}
