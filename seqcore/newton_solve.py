"""The Newton scan on raw arrays: linearised solves, the Newton loop and the adjoint pass.

Unknowns are the whole trajectory ``s: (B, T, S)``.  With ``f`` the cell's step,
``F_t = s_t − f(s_{t−1}, xi_t)`` and ``J_t = ∂f/∂s_{t−1}`` at the current iterate, one
Newton iteration solves the block-bidiagonal system ``δ_t = J_t δ_{t−1} − F_t`` (δ_0 = 0)
with a parallel linear scan and sets ``s ← s + δ`` — computed as ``f_t + J_t δ_{t−1}``,
equal in exact arithmetic, and bit-exact at the steps whose predecessor has already
converged (so iteration k leaves steps ≤ k + 1 with a zero residual; RESEARCH §3).  That is
the batched ``f``'s fixed point: it may round differently from the sequential recurrence.

Every routine works on all ``B·T`` steps at once (the cell's step functions take
``(N, S)`` states); none loops over time.  Written against the array namespace ``xp``.
A backend can hand the engine a view of the cell with compiled pieces: ``step_fwd_and_jacobian``
or ``step_jacobian_cached`` (see :func:`_steps`), ``newton_residual`` and ``newton_update``
(same contracts as :func:`residual` and :func:`update` here, which are the reference).
"""
from __future__ import annotations

import numpy as np

from .backends.numpy import scan as _scan
from .backends.numpy.assoc import matvec

STRUCTURES = ("diag", "block", "dense")
JACOBIANS = ("auto",) + STRUCTURES + ("quasi",)
_RICHNESS = {"diag": 0, "block": 1, "dense": 2}


def resolve_jacobian(cell, jacobian: str) -> str:
    """The structure a Newton solve uses: ``"diag"``, ``"block"``, ``"dense"`` or ``"quasi"``.

    ``"auto"`` is the cell's own ``jacobian_structure``.  A structure poorer than the cell's
    (``"diag"`` for an LSTM) would silently drop terms, so it is refused; ``"quasi"`` is the
    explicit way to keep only the diagonal.
    """
    native = cell.jacobian_structure
    if jacobian == "auto":
        return native
    if jacobian in STRUCTURES and _RICHNESS[jacobian] < _RICHNESS[native]:
        raise ValueError(f"jacobian: got {jacobian!r} for {type(cell).__name__}, whose Jacobian is {native!r}; "
                         f"expected 'auto', a structure at least as rich as {native!r}, or 'quasi' "
                         f"(keep only the diagonal)")
    return jacobian


# -- Jacobians as scan operators -------------------------------------------------------------

def scan_operator(xp, J, native: str, target: str, k: int):
    """Convert step Jacobians from the cell's ``native`` structure to the ``target`` one.

    ``J``: ``(N, S)`` (diag), ``(N, S // k, k, k)`` (block) or ``(N, S, S)`` (dense).
    Returns ``(N, S)`` for ``"diag"``/``"quasi"``, ``(N, G, k, k)`` for ``"block"`` and
    ``(N, 1, S, S)`` for ``"dense"`` — the per-step elements of a linear or block scan.
    """
    N = J.shape[0]
    if target in ("diag", "quasi"):
        if native == "diag":
            return J
        return xp.diagonal(J, axis1=-2, axis2=-1).reshape(N, -1)
    if target == "block":
        if native == "block":
            return J
        G = J.shape[1] // k
        return xp.einsum("ngi,ij->ngij", J.reshape(N, G, k), xp.eye(k, dtype=J.dtype))
    # dense
    if native == "dense":
        return J[:, None]
    if native == "diag":
        return xp.einsum("ni,ij->nij", J, xp.eye(J.shape[1], dtype=J.dtype))[:, None]
    G = J.shape[1]
    dense = xp.einsum("ngij,gh->ngihj", J, xp.eye(G, dtype=J.dtype))
    return dense.reshape(N, 1, G * k, G * k)


def transpose_operator(xp, A, target: str):
    """``A_tᵀ`` for every step (a diagonal operator is its own transpose)."""
    return A if target in ("diag", "quasi") else xp.swapaxes(A, -1, -2)


def apply_operator(xp, A, v, target: str):
    """``A_t v_t`` for every step: ``A`` from :func:`scan_operator`, ``v: (N, S)``."""
    if target in ("diag", "quasi"):
        return A * v
    N, G, k, _ = A.shape
    return matvec(A, v.reshape(N, G, k)).reshape(v.shape)


def linear_solve(xp, A, rhs, target: str, reverse: bool = False):
    """Solve ``δ_t = A_t δ_{t−1} + rhs_t`` (δ_0 = 0) for all t with one parallel scan.

    ``A``: ``(B, T, …)`` as from :func:`scan_operator` with the step axis split into
    ``(B, T)``; ``rhs: (B, T, S)``.  ``reverse`` runs ``δ_t = A_t δ_{t+1} + rhs_t``.
    Returns ``δ: (B, T, S)``.
    """
    if target in ("diag", "quasi"):
        return _scan.linear_scan(A, rhs, None, reverse=reverse, method="parallel")
    B, T, G, k, _ = A.shape
    out = _scan.block_scan(A, rhs.reshape(B, T, G, k), None, reverse=reverse, method="parallel")
    return out.reshape(rhs.shape)


# -- the Newton loop -------------------------------------------------------------------------

def previous_states(xp, states, state0):
    """``s_{t−1}`` at position t, ``(B, T, S)``, with ``state0`` at t = 1."""
    return xp.concatenate([state0[:, None], states[:, :-1]], axis=1)


def _step_all(xp, cell, p, prev, xi):
    """``f(prev_t, xi_t)`` for every (b, t) at once: ``(B, T, S)`` and the step cache."""
    B, T, S = prev.shape
    out, cache = cell.step_fwd(xp, p, prev.reshape(B * T, S), xi.reshape(B * T, xi.shape[2]))
    return out.reshape(B, T, S), cache


def _jacobians(xp, cell, p, prev, xi):
    B, T, S = prev.shape
    return cell.step_jacobian(xp, p, prev.reshape(B * T, S), xi.reshape(B * T, xi.shape[2]))


def _steps(xp, cell, p, prev, xi):
    """``(f, cache, jacobians)`` at ``prev``; ``jacobians()`` gives ``∂f/∂s``.

    Where the cell offers ``step_jacobian_cached(xp, p, state, xi_t, cache)`` (a backend's
    kernel building J from the step's cache), ``jacobians()`` calls it; where it offers
    ``step_fwd_and_jacobian`` (a backend's fused kernel) the Jacobians come from the same
    pass as the step; otherwise ``jacobians()`` computes them from scratch.  In the first and
    last cases a caller that stops early never builds them (dense ones are large).
    """
    B, T, S = prev.shape
    cached = getattr(cell, "step_jacobian_cached", None)
    fused = getattr(cell, "step_fwd_and_jacobian", None)
    if cached is None and fused is not None:
        out, cache, J = fused(xp, p, prev.reshape(B * T, S), xi.reshape(B * T, xi.shape[2]))
        return out.reshape(B, T, S), cache, lambda: J
    f, cache = _step_all(xp, cell, p, prev, xi)
    if cached is not None:
        return f, cache, lambda: cached(xp, p, prev.reshape(B * T, S), xi.reshape(B * T, xi.shape[2]), cache)
    return f, cache, lambda: _jacobians(xp, cell, p, prev, xi)


def relative_residual(xp, row_F, row_s, state0) -> float:
    """The stopping rule's measure: ``max_{b,t} ‖F_{b,t}‖_∞ / (1 + max(‖s_{b,t}‖_∞, ‖s_{b,t−1}‖_∞))``
    from the row maxima ``row_F, row_s: (B, T)`` of ``|F|`` and ``|s|`` (``s_{b,0}`` = state0).

    Each step is measured against its own scale (its state and the one it is computed from,
    whose rounding ``f`` inherits), not the largest state anywhere in the batch: a residual at
    a step whose states are small is not hidden by states that grew large elsewhere.  NaN or
    inf anywhere comes out as NaN or inf."""
    first = xp.amax(xp.abs(state0), axis=-1)[:, None]
    prev = xp.concatenate([first, row_s[:, :-1]], axis=1)
    with np.errstate(invalid="ignore"):  # inf / inf: NaN, as it should come out
        return float(xp.max(row_F / (1.0 + xp.maximum(row_s, prev))))


def residual(xp, states, f, state0):
    """``(−F, ρ)`` with ``F = s − f``: the right-hand side of the next solve and its
    :func:`relative_residual` ρ (NaN or inf in ``F`` must come out non-finite)."""
    neg_F = f - states  # exactly −(s − f): IEEE subtraction is antisymmetric
    rho = relative_residual(xp, xp.amax(xp.abs(neg_F), axis=-1), xp.amax(xp.abs(states), axis=-1), state0)
    return neg_F, rho


def update(xp, f, A, delta, target):
    """The next iterate ``f_t + A_t δ_{t−1}`` (``δ_0`` = 0): ``f, delta: (B, T, S)``, ``A`` as
    from :func:`scan_operator` (``(B·T, …)``).  Rounded as ``f + (A δ)``, so a step whose
    predecessor's correction is exactly zero keeps ``f`` bit for bit."""
    B, T, S = f.shape
    dprev = previous_states(xp, delta, xp.zeros((B, S), dtype=delta.dtype)).reshape(B * T, S)
    return f + apply_operator(xp, A, dprev, target).reshape(B, T, S)


def _split_steps(A, B, T):
    return A.reshape((B, T) + tuple(A.shape[1:]))


def newton_solve(xp, cell, p, xi, state0, *, tol: float, max_iters: int, jacobian: str, damping: float):
    """Run Newton iterations on the trajectory; no fallback here (the caller decides).

    Args:
        p: recurrent parameters by name; xi: ``(B, T, P)``; state0: ``(B, S)``.
        tol: stop when the :func:`relative_residual` ρ ≤ tol.
        max_iters: at most this many Newton updates (0: the initial guess only).
        jacobian: ``"diag"``, ``"block"``, ``"dense"`` or ``"quasi"`` (already resolved).
        damping: λ ≥ 0; the solve uses ``J_t / (1 + λ)`` in place of ``J_t``.
    Returns:
        ``(states (B, T, S), history)``: history is a list of ``(ρ, tol)`` floats, one for
        the initial guess and one after each update.
    """
    if xi.shape[0] == 0:  # no sequences: nothing to solve (and no residual to take a maximum of)
        B, T, S = xi.shape[0], xi.shape[1], state0.shape[1]
        return xp.zeros((B, T, S), dtype=state0.dtype), [(0.0, tol)]
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing iterate is detected and reported
        return _newton_loop(xp, cell, p, xi, state0, tol, max_iters, jacobian, damping)


def _newton_loop(xp, cell, p, xi, state0, tol, max_iters, jacobian, damping):
    B, T, S = xi.shape[0], xi.shape[1], state0.shape[1]
    native, k = cell.jacobian_structure, cell.state_factor
    residual_fn = getattr(cell, "newton_residual", None) or (lambda states, f, s0: residual(xp, states, f, s0))
    update_fn = getattr(cell, "newton_update", None) or (lambda f, A, delta, target: update(xp, f, A, delta, target))
    scale = 1.0 / (1.0 + damping)
    # initial guess f(0, xi_t), with the true state0 at t = 1 (so step 1 is exact from the start)
    guess_prev = xp.concatenate([state0[:, None], xp.zeros((B, T - 1, S), dtype=state0.dtype)], axis=1)
    states, _ = _step_all(xp, cell, p, guess_prev, xi)
    history = []
    for it in range(max_iters + 1):
        prev = previous_states(xp, states, state0)
        f, _, jacobians = _steps(xp, cell, p, prev, xi)
        neg_F, res = residual_fn(states, f, state0)
        history.append((res, tol))
        if res <= tol or not res < float("inf") or it == max_iters:
            break  # converged, diverged (inf/nan: the caller falls back), or out of iterations
        A = scan_operator(xp, jacobians(), native, jacobian, k)
        if scale != 1.0:
            A = A * scale
        delta = linear_solve(xp, _split_steps(A, B, T), neg_F, jacobian)
        # s + δ written as f + J δ_{t−1}: bit-exact wherever δ_{t−1} is exactly zero
        states = update_fn(f, A, delta, jacobian)
    return states, history


# -- the adjoint (backward without Newton) ---------------------------------------------------

def adjoint(xp, cell, p, xi, state0, states, dstates):
    """Exact VJP of the trajectory at the solution, for all steps at once.

    ``g_t = dS_t + J_{t+1}ᵀ g_{t+1}`` (one reverse parallel scan with the exact transposed
    Jacobians), then the cell's ``step_bwd`` on every step gives ``∂L/∂xi``,
    ``∂L/∂state0`` and the parameter gradients (summed over steps).
    Returns ``(dxi (B, T, P), dstate0 (B, S), {key: dparam})``.
    """
    B, T, S = states.shape
    native, k = cell.jacobian_structure, cell.state_factor
    prev = previous_states(xp, states, state0)
    _, cache, jacobians = _steps(xp, cell, p, prev, xi)
    At = _split_steps(transpose_operator(xp, scan_operator(xp, jacobians(), native, native, k), native), B, T)
    # A_{t+1}ᵀ at position t.  NumPy's concatenation keeps the transposed view's layout (a plain
    # copy, 6× faster than a transposing one here), and the Numba block scan reads such
    # transposed blocks in place
    At_next = xp.concatenate([At[:, 1:], xp.zeros_like(At[:, :1])], axis=1)
    g = linear_solve(xp, At_next, dstates, native, reverse=True)
    dprev, dxi, dp = cell.step_bwd(xp, p, cache, g.reshape(B * T, S))
    return dxi.reshape(xi.shape), dprev.reshape(B, T, S)[:, 0], dp
