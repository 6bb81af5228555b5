"""Orthogonal projection of updates away from the subspace of past inputs (GPM-style).

After Saha, Garg & Roy (2021, "Gradient projection memory"). A weight matrix W (out, in)
with bias b maps an input x to ``W x + b``; an update ΔW leaves the outputs for every
past input unchanged when ``[ΔW, Δb] [x; 1] = 0``. So, per layer:

* after each experience, the layer's inputs on ``samples`` training examples are
  collected (``model.projection_layers``), with a constant 1 appended when the layer
  has a bias: ``R (in+1, N)``. The part not yet covered by the basis M,
  ``R̂ = R − M Mᵀ R``, is decomposed by SVD; its leading left singular vectors are
  added to M until the basis holds the fraction ``threshold`` of R's energy:
  ``‖M Mᵀ R‖² + Σ_{i≤k} σ̂_i² ≥ threshold · ‖R‖²`` (Frobenius norms);
* every update, after the optimizer, is projected onto the orthogonal complement:
  ``[ΔW, Δb] ← [ΔW, Δb] (I − M Mᵀ)``. Projecting the update rather than the gradient
  keeps the guarantee under any optimizer (Adam's per-coordinate scaling, momentum and
  weight decay would mix the projected directions back in).

Parameters the model does not list (diagonal recurrences, peepholes, time constants)
are held fixed once the first basis exists: a diagonal weight's input is one number per
unit, whose span the projection would remove anyway. For an RNN, ``weight_hh``'s inputs
are the hidden states h_{t−1}, so the guarantee holds at the hidden states recorded when
the basis was built.

A weight whose forward masks its diagonal (``W ⊙ (1 − I)``, LeakyRNN's ``weight_hh``;
the model's optional ``masked_diagonal_paths()``) needs ``Σ_{j≠i} ΔW_ij z_j = 0`` per
row i: ΔW_ii = 0 and row i orthogonal to span(M, e_i) (:func:`project_out_masked_diagonal`).
With (I − MMᵀ) alone the projected diagonal would be non-zero and, masked out by the
forward, leave ``−ΔW_ii z_i`` on the past outputs.
"""
from __future__ import annotations

import numpy as np

from ..tree import tree_key_paths, tree_map
from ..validate import check_array
from .base import HP, Learner, get_path, set_path
from .classifiers import masked_diagonals

__all__ = ["OrthogonalProjection", "extend_basis", "project_out", "project_out_masked_diagonal"]


def extend_basis(basis: np.ndarray | None, inputs: np.ndarray, threshold: float) -> np.ndarray:
    """Grow an orthonormal basis ``(D, k)`` with the principal directions of ``inputs (N, D)``.

    Adds the fewest leading singular vectors of the inputs' uncovered part so that the
    basis captures at least ``threshold`` of the inputs' energy. Returns ``(D, k')``.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold: got {threshold!r}, expected a number in (0, 1]")
    check_array("inputs", inputs, ndim=2)
    if basis is not None:
        check_array("basis", basis, ndim=2)
        if inputs.shape[1] != basis.shape[0]:
            raise ValueError(f"inputs: got shape {tuple(inputs.shape)}, expected (N, {basis.shape[0]}) "
                             f"(one feature per row of basis {tuple(basis.shape)})")
        _check_orthonormal(basis)
    R = np.asarray(inputs, np.float64).T  # (D, N)
    if not np.isfinite(R).all():  # the eigensolver would fail with "did not converge"
        raise ValueError("inputs: got NaN or inf, expected finite values")
    D = R.shape[0]
    total = float(np.sum(R * R))
    if total == 0.0:
        return basis if basis is not None else np.zeros((D, 0))
    if basis is None:
        basis = np.zeros((D, 0))
    covered = basis @ (basis.T @ R)
    kept = float(np.sum(covered * covered))
    # one tolerance for both tests: inputs inside span(M) leave kept a rounding error below
    # total, and at threshold 1 a direction of pure rounding residual would otherwise be added
    need = threshold * total * (1.0 - 1e-12)
    if kept >= need:
        return basis
    U, energy = _principal_directions(R - covered)
    k = int(np.searchsorted(kept + np.cumsum(energy), need) + 1)
    k = min(k, D - basis.shape[1], U.shape[1])
    if k <= 0:
        return basis
    Q, _ = np.linalg.qr(np.concatenate([basis, U[:, :k]], axis=1))  # re-orthonormalise against rounding
    return Q


def _check_orthonormal(basis: np.ndarray) -> None:
    """``basisᵀ basis = I`` to the rounding of ``basis``' dtype (a float32 copy of a float64 basis passes)."""
    k = basis.shape[1]
    gram = np.asarray(basis, np.float64).T @ np.asarray(basis, np.float64)
    tol = 100 * max(basis.shape[0], 1) * float(np.finfo(basis.dtype).eps)
    err = float(np.abs(gram - np.eye(k)).max()) if k else 0.0
    if not err <= tol:  # NaN too
        raise ValueError(f"basis: got columns that are not orthonormal (max |basisᵀ basis − I| = {err:.3g}), "
                         f"expected an orthonormal basis (D, k) as extend_basis returns (tolerance {tol:.3g})")


def _principal_directions(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors of ``R (D, N)`` and their energies σ², largest first."""
    D, N = R.shape
    if N <= D:
        U, S, _ = np.linalg.svd(R, full_matrices=False)
        return U, S * S
    energy, U = np.linalg.eigh(R @ R.T)  # the Gram matrix is smaller: (D, D)
    order = np.argsort(energy)[::-1]
    return U[:, order], np.clip(energy[order], 0.0, None)


def _check_projection(grad, basis) -> None:
    if np.ndim(grad) != 2:
        raise ValueError(f"grad: got shape {np.shape(grad)}, expected (out, D)")
    if basis is not None and (np.ndim(basis) != 2 or np.shape(basis)[0] != np.shape(grad)[1]):
        raise ValueError(f"basis: got shape {np.shape(basis)}, expected ({np.shape(grad)[1]}, k) like grad's "
                         "columns")


def project_out(grad: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``grad (out, D) (I − basis basisᵀ)``: remove the components along the basis' span."""
    _check_projection(grad, basis)
    if basis is None or basis.shape[1] == 0:
        return grad
    return grad - (grad @ basis) @ basis.T


# ‖(I − MMᵀ) e_i‖² below this: e_i counts as inside span(M). Rounding then makes the rank-one
# direction unreliable, and r_ii ≈ 0 anyway; at ‖w‖ = 1e-8 both errors are ~1e-8·‖row‖.
_IN_SPAN = 1e-16


def project_out_masked_diagonal(grad: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Project ``grad (out, D)`` of a weight whose forward masks its diagonal (``W ⊙ (1 − I)``).

    Row i must satisfy ``Σ_{j≠i} g_ij z_j = 0`` for every z in the basis' span, with
    ``g_ii = 0``: that is, row i orthogonal to span(M, e_i). That span is M plus one
    direction ``w_i = (I − MMᵀ) e_i``, so each row is ``r_i = g_i (I − MMᵀ)`` less its part
    along w_i: a rank-one correction per row, O(out·D·k) and one (out, D) array instead of
    a basis per row. Returns float64 ``(out, D)`` with a zero diagonal. (Exact for the
    basis' span; a ``threshold`` < 1 is met over all inputs, not row by row.)
    """
    _check_projection(grad, basis)
    out, D = np.shape(grad)
    if out > D:
        raise ValueError(f"grad: got shape {np.shape(grad)}, expected out <= D (row i's diagonal is column i)")
    g = np.array(grad, dtype=np.float64)
    rows = np.arange(out)
    g[rows, rows] = 0.0  # the forward never sees it
    if basis is None or basis.shape[1] == 0:
        return g
    r = g - (g @ basis) @ basis.T
    w = -(basis[:out] @ basis.T)
    w[rows, rows] += 1.0
    w -= (w @ basis) @ basis.T  # second pass: w_i must stay orthogonal to M after rounding
    norm2 = np.einsum("ij,ij->i", w, w)
    outside = norm2 > _IN_SPAN
    coef = np.where(outside, np.einsum("ij,ij->i", r, w) / np.where(outside, norm2, 1.0), 0.0)
    r -= coef[:, None] * w
    r[rows, rows] = 0.0
    return r


class OrthogonalProjection(Learner):
    """Project every listed layer's update away from the inputs of past experiences."""

    name = "orthogonal"
    needs = ("projection_layers",)
    hyperparameters = {
        "threshold": HP(0.97, "fraction of each layer's input energy the basis must capture", low=1e-6, high=1.0),
        "samples": HP(300, "training examples whose layer inputs build the basis", low=1),
    }
    state_fields = ("bases", "paths")

    def _check_state(self, values):
        super()._check_state(values)
        bases, paths = values["bases"], values["paths"]
        if bases is None:
            return
        if not isinstance(bases, list) or not isinstance(paths, list) or len(bases) != len(paths):
            raise ValueError(f"bases/paths: got {type(bases).__name__} and {type(paths).__name__} of different "
                             "lengths, expected one basis per listed layer")
        template = self.model.init(np.random.default_rng(0), np.float64)
        for i, (basis, entry) in enumerate(zip(bases, paths)):
            try:
                w_path, b_path = entry
                rows = np.shape(get_path(template, tuple(w_path)))[1] + (b_path is not None)
            except (KeyError, IndexError, TypeError, ValueError):
                raise ValueError(f"paths[{i}]: got {entry!r:.80}, expected (weight path, bias path or None) of a "
                                 "2-D weight of the model") from None
            if basis is None:
                continue
            if basis.dtype.kind != "f" or basis.ndim != 2 or basis.shape[0] != rows or basis.shape[1] > rows \
                    or not np.isfinite(basis).all():
                raise ValueError(f"bases[{i}]: got a {basis.dtype} array of shape {basis.shape}, expected finite "
                                 f"floats ({rows}, k) with k <= {rows} for the layer at {tuple(w_path)}")

    def __init__(self, **hp):
        super().__init__(**hp)
        self.bases: list | None = None  # one (in [+1], k) basis per listed layer
        self.paths: list = []           # [(weight_path, bias_path or None)] of those layers
        self.masked_diagonal: set = set()  # weight paths whose forward masks the diagonal

    def bind(self, model, **kw):
        super().bind(model, **kw)
        self.masked_diagonal = masked_diagonals(model)

    def _layers(self, params, x):
        # on NumPy arrays whatever the backend: the inputs end in NumPy's SVD anyway, and a
        # model's forward pass then needs no conversions of its own
        return self.model.projection_layers(tree_map(self.be.to_numpy, params), np.asarray(x))

    def after_experience(self, trainer, data):
        n = min(self.samples, data.n_train) if data.n_train else self.samples
        x, _ = data.sample(self.rng, n)
        layers = self._layers(trainer.params, x)
        if self.bases is None:
            self.bases = [None] * len(layers)
            self.paths = [(tuple(w), None if b is None else tuple(b)) for w, b, _ in layers]
        for i, (_, bias_path, inputs) in enumerate(layers):
            inputs = np.asarray(self.be.to_numpy(inputs), np.float64)
            if bias_path is not None:
                inputs = np.concatenate([inputs, np.ones((inputs.shape[0], 1))], axis=1)
            self.bases[i] = extend_basis(self.bases[i], inputs, self.threshold)

    def _fixed_paths(self, tree) -> list[tuple]:
        """Leaves no listed layer covers (held fixed once a basis exists)."""
        listed = [tuple(p) for entry in self.paths for p in entry if p is not None]
        return [path for path, _ in tree_key_paths(tree) if not any(q[:len(path)] == path for q in listed)]

    def transform_updates(self, trainer, updates):
        if self.bases is None:
            return updates
        for (w_path, b_path), basis in zip(self.paths, self.bases):
            if basis is None or basis.shape[1] == 0:
                continue
            uw = np.asarray(self.be.to_numpy(get_path(updates, w_path)))
            full = uw.astype(np.float64)
            if b_path is not None:
                ub = np.asarray(self.be.to_numpy(get_path(updates, b_path)))
                full = np.concatenate([full, ub.astype(np.float64)[:, None]], axis=1)
            if tuple(w_path) in self.masked_diagonal:
                full = project_out_masked_diagonal(full, basis)
            else:
                full = project_out(full, basis)
            updates = set_path(updates, tuple(w_path), self.be.asarray(full[:, : uw.shape[1]].astype(uw.dtype)))
            if b_path is not None:
                updates = set_path(updates, tuple(b_path), self.be.asarray(full[:, -1].astype(ub.dtype)))
        for path in self._fixed_paths(updates):
            updates = set_path(updates, path, get_path(updates, path) * 0)
        return updates

