"""Continual-learning metrics: the accuracy matrix and continual evaluation.

Two kinds of input, both plain NumPy:

* the **accuracy matrix** ``R`` of shape (n, n): ``R[i, j]`` is the accuracy on
  experience j after training experience i. Entries above the diagonal (j > i)
  may be NaN (not evaluated); entries on and below it must be finite.
* an :class:`EvalCurve`: per-iteration evaluations (continual evaluation,
  De Lange, van de Ven & Tuytelaars, ICLR 2023, "Continual evaluation for
  lifelong learning: identifying the stability gap").

Accuracies may be fractions or percentages; every metric is in the same unit.
Conventions are stated in each docstring and in the README (section "Metrics").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from .validate import check_bool, check_fits_in_memory, check_positive_int, is_integer

__all__ = [
    "average_accuracy", "forgetting", "bwt", "fwt",
    "EvalCurve", "min_acc", "wc_acc", "windowed_forgetting", "windowed_plasticity", "lca",
    "summarize",
]


# ---------------------------------------------------------------- accuracy matrix

def _real_array(name: str, value: Any, expected: str) -> np.ndarray:
    """``value`` as a float64 array; complex, string, object and ragged inputs raise TypeError naming ``name``."""
    if value is None:
        raise TypeError(f"{name}: got None, expected {expected}")
    try:
        raw = np.asarray(value) if not isinstance(value, np.ndarray) else value
    except ValueError as err:  # ragged nested lists
        raise TypeError(f"{name}: got {type(value).__name__}, expected {expected}") from err
    if raw.dtype.kind not in "biuf":
        raise TypeError(f"{name}: got {type(value).__name__} of dtype {raw.dtype}, expected {expected}")
    return raw.astype(np.float64)


def _accuracy_matrix(R: Any) -> np.ndarray:
    R = _real_array("R", R, "a real (n, n) array")
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"R: got shape {R.shape}, expected a non-empty square (n, n) matrix")
    lower = np.tril(R)
    if not np.all(np.isfinite(lower)):
        i, j = np.argwhere(~np.isfinite(lower))[0]
        raise ValueError(
            f"R: got a non-finite entry R[{i}, {j}]={R[i, j]}, expected finite values on and "
            "below the diagonal (only j > i may be NaN)")
    return R


def average_accuracy(R: Any, per_step: bool = False) -> float | np.ndarray:
    """Average accuracy over the experiences seen so far.

    ``A = (1/n) Σ_j R[n-1, j]`` (mean of the last row). With ``per_step=True``
    returns the (n,) vector ``A_i = (1/(i+1)) Σ_{j<=i} R[i, j]``, the average over
    the experiences seen after training experience i.

    R: (n, n) accuracy matrix.
    """
    R = _accuracy_matrix(R)
    if check_bool("per_step", per_step):
        return np.array([R[i, : i + 1].mean() for i in range(R.shape[0])])
    return float(R[-1].mean())


def forgetting(R: Any, convention: str = "last") -> float:
    """Average forgetting of the experiences before the last one.

    ``convention="last"`` (accuracy right after learning minus final):
        ``F = (1/(n-1)) Σ_{j<n-1} (R[j, j] − R[n-1, j])``  (equals ``−bwt(R)``).
    ``convention="max"`` (Chaudhry et al. 2018, "Riemannian walk"; best accuracy
    since learned minus final):
        ``F = (1/(n-1)) Σ_{j<n-1} (max_{j<=i<=n-2} R[i, j] − R[n-1, j])``.
    The max runs over evaluations from the end of experience j to the one before
    the final, never over evaluations before j was trained. Always
    ``forgetting(R, "max") >= forgetting(R, "last")``. NaN when n == 1.

    R: (n, n) accuracy matrix.
    """
    R = _accuracy_matrix(R)
    if not isinstance(convention, str) or convention not in ("last", "max"):
        raise ValueError(f"convention: got {convention!r}, expected 'last' or 'max'")
    n = R.shape[0]
    if n == 1:
        return float("nan")
    if convention == "last":
        reference = np.diag(R)[: n - 1]
    else:
        reference = np.array([R[j : n - 1, j].max() for j in range(n - 1)])
    return float(np.mean(reference - R[n - 1, : n - 1]))


def bwt(R: Any) -> float:
    """Backward transfer (Lopez-Paz & Ranzato 2017, GEM).

    ``BWT = (1/(n-1)) Σ_{j<n-1} (R[n-1, j] − R[j, j])``; negative means forgetting.
    NaN when n == 1.

    R: (n, n) accuracy matrix.
    """
    return -forgetting(R, "last")


def fwt(R: Any, baseline: Any) -> float:
    """Forward transfer against a baseline (Lopez-Paz & Ranzato 2017, GEM).

    ``FWT = (1/(n-1)) Σ_{j>=1} (R[j-1, j] − b_j)``, with ``b_j`` the accuracy on
    experience j of the model at random initialisation (``b_0`` is unused). Needs
    the super-diagonal ``R[j-1, j]`` to be evaluated (finite). NaN when n == 1.

    R: (n, n) accuracy matrix; baseline: (n,).
    """
    R = _accuracy_matrix(R)
    n = R.shape[0]
    b = _real_array("baseline", baseline, f"a real ({n},) array")
    if b.shape != (n,):
        raise ValueError(f"baseline: got shape {b.shape}, expected ({n},) to match R")
    if n == 1:
        return float("nan")
    before = np.array([R[j - 1, j] for j in range(1, n)])
    for name, values, entry in (("R", before, "R[j-1, j]"), ("baseline", b[1:], "baseline[j]")):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            j = int(bad[0]) + 1
            raise ValueError(f"{name}: fwt needs a finite {entry} for every j >= 1; got {values[bad[0]]} at j={j}")
    return float(np.mean(before - b[1:]))


# ---------------------------------------------------------------- continual evaluation

@dataclass(frozen=True, eq=False)
class EvalCurve:
    """Per-iteration evaluations of a continual run (E evaluations, n experiences).

    iterations: (E,) int, non-decreasing — the global training iteration of each
        evaluation (number of updates done so far).
    experience: (E,) int, non-decreasing in [0, n) — the experience being trained
        when the evaluation was taken. Experience ``experience[e]`` and all earlier
        ones count as *seen* at evaluation e.
    accuracy: (E, n) float — ``accuracy[e, j]`` on experience j. Seen entries
        (j <= experience[e]) must be finite; unseen ones are ignored (NaN is fine).

    The protocol behind it: evaluate every k iterations on all seen experiences,
    including once at the end of each experience.
    """

    iterations: np.ndarray
    experience: np.ndarray
    accuracy: np.ndarray

    def __post_init__(self) -> None:
        it = np.asarray(self.iterations)
        ex = np.asarray(self.experience)
        acc = _real_array("accuracy", self.accuracy, "a real (E, n) array")
        for name, arr in (("iterations", it), ("experience", ex)):
            if arr.ndim != 1 or arr.size == 0:
                raise ValueError(f"{name}: got shape {arr.shape}, expected a non-empty (E,) vector")
            if not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(f"{name}: got dtype {arr.dtype}, expected integers")
            if np.any(np.diff(arr) < 0):
                raise ValueError(f"{name}: got {arr.tolist()}, expected non-decreasing values")
        if it[0] < 0:  # non-decreasing: the first is the smallest
            raise ValueError(f"iterations: got {it.tolist()}, expected counts of updates >= 0")
        E = it.shape[0]
        if ex.shape[0] != E:
            raise ValueError(f"experience: got length {ex.shape[0]}, expected E={E} like iterations")
        if acc.ndim != 2 or acc.shape[0] != E or acc.shape[1] == 0:
            raise ValueError(f"accuracy: got shape {acc.shape}, expected (E={E}, n) with n >= 1")
        n = acc.shape[1]
        if ex[0] < 0 or ex[-1] >= n:
            raise ValueError(f"experience: got values in [{ex[0]}, {ex[-1]}], expected in [0, {n})")
        seen = np.arange(n)[None, :] <= ex[:, None]
        if not np.all(np.isfinite(acc[seen])):
            e, j = np.argwhere(seen & ~np.isfinite(acc))[0]
            raise ValueError(f"accuracy: got non-finite accuracy[{e}, {j}] for a seen experience")
        object.__setattr__(self, "iterations", it.astype(np.int64))
        object.__setattr__(self, "experience", ex.astype(np.int64))
        object.__setattr__(self, "accuracy", acc)

    @property
    def n_seen(self) -> int:
        """k: the number of experiences seen by the last evaluation."""
        return int(self.experience[-1]) + 1

    def upto(self, n_evaluations: int) -> "EvalCurve":
        """The curve restricted to its first ``n_evaluations`` evaluations (a metric over time)."""
        check_positive_int("n_evaluations", n_evaluations, 1, self.iterations.shape[0])
        return EvalCurve(self.iterations[:n_evaluations], self.experience[:n_evaluations],
                         self.accuracy[:n_evaluations])

    def to_records(self) -> list[dict]:
        """One JSON-ready dict per evaluation: ``{"iteration", "experience", "accuracy": [...]}``
        with the accuracies of the seen experiences 0..experience."""
        return [{"iteration": int(i), "experience": int(x),
                 "accuracy": [float(a) for a in self.accuracy[e, : x + 1]]}
                for e, (i, x) in enumerate(zip(self.iterations, self.experience))]

    @classmethod
    def from_records(cls, records: Iterable[Mapping], n_experiences: int | None = None) -> "EvalCurve":
        """Build from dicts as written by :meth:`to_records` (e.g. lines of ``metrics.jsonl``).

        ``n_experiences`` sets the number of columns (default: the most seen).
        """
        if isinstance(records, Mapping):  # its keys would be taken for the records
            raise TypeError(f"records: got one dict {records!r:.60}, expected a list of them (one per evaluation)")
        try:
            records = list(records)
        except TypeError:
            raise TypeError(f"records: got {type(records).__name__}, expected an iterable of dicts "
                            "(e.g. the lines of metrics.jsonl)") from None
        if not records:
            raise ValueError("records: got an empty sequence, expected at least one evaluation")
        for e, r in enumerate(records):
            if not isinstance(r, Mapping) or not {"iteration", "experience", "accuracy"} <= set(r):
                raise ValueError(f"records: got {r!r}, expected a dict with keys "
                                 "'iteration', 'experience', 'accuracy'")
            if not isinstance(r["accuracy"], (list, tuple, np.ndarray)):
                raise TypeError(f"records[{e}]['accuracy']: got {type(r['accuracy']).__name__} "
                                f"{r['accuracy']!r:.40}, expected a list of real accuracies")
            x = r["experience"]  # not an integer: EvalCurve names its dtype
            if is_integer(x) and 0 <= x and len(r["accuracy"]) < x + 1:
                raise ValueError(f"records[{e}]['accuracy']: got {len(r['accuracy'])} accuracies for experience {x}, "
                                 f"expected at least {x + 1} (one per seen experience 0..{x})")
        longest = max(len(r["accuracy"]) for r in records)
        n = longest if n_experiences is None else n_experiences
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < longest:
            raise ValueError(f"n_experiences: got {n_experiences!r}, expected an int >= {longest} "
                             "(the longest accuracy list)")
        check_fits_in_memory("n_experiences", n, len(records) * n * 8,
                             f"accuracy array ({len(records)} evaluations x {n} experiences, float64)")
        acc = np.full((len(records), n), np.nan)
        for e, r in enumerate(records):
            acc[e, : len(r["accuracy"])] = _real_array(f"records[{e}]['accuracy']", r["accuracy"],
                                                       "a list of real accuracies")
        return cls(np.array([r["iteration"] for r in records]),
                   np.array([r["experience"] for r in records]), acc)


def _check_curve(curve: Any) -> EvalCurve:
    if not isinstance(curve, EvalCurve):
        raise TypeError(f"curve: got {type(curve).__name__}, expected EvalCurve")
    return curve


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: got {value!r}, expected an int >= 1")
    return int(value)


def _after_learning(curve: EvalCurve, j: int) -> np.ndarray:
    """Accuracies on j from the end of its training (last evaluation while training j,
    or the first one after if there was none) to the end of the curve."""
    ex = curve.experience
    during = np.flatnonzero(ex == j)
    start = during[-1] if during.size else np.flatnonzero(ex > j)[0]
    return curve.accuracy[start:, j]


def _after_task(curve: EvalCurve, j: int) -> np.ndarray:
    """Mask of the evaluations after j's training ended (see :func:`min_acc`)."""
    later = curve.experience > j
    during = np.flatnonzero(curve.experience == j)
    if during.size:
        strictly = later & (curve.iterations > curve.iterations[during[-1]])
        if strictly.any():
            return strictly
    return later


def _since_start(curve: EvalCurve, j: int) -> np.ndarray:
    """Accuracies on j from the first evaluation at which j was seen."""
    start = np.flatnonzero(curve.experience >= j)[0]
    return curve.accuracy[start:, j]


def _largest_change(values: np.ndarray, window: int, sign: float) -> float:
    """max over m <= n <= m + window of sign·(values[n] − values[m]); 0 for no change."""
    best = 0.0
    for d in range(1, min(window, values.shape[0] - 1) + 1):
        best = max(best, float(np.max(sign * (values[d:] - values[:-d]))))
    return best


def min_acc(curve: EvalCurve, per_task: bool = False) -> float | np.ndarray:
    """min-ACC: average over past experiences of their worst accuracy since learned.

    With k = ``curve.n_seen`` and |T_j| the iteration of the last evaluation taken while training j:
    ``min-ACC = (1/(k-1)) Σ_{j<k-1} min_{e : iterations[e] > |T_j|} accuracy[e, j]``
    (De Lange et al. 2023: the minimum over iterations strictly after task j ended; the loop's
    evaluation of experience j+1 before its first update, at iteration |T_j| with the same
    parameters, is not one of them). While no evaluation is later yet (or j was never evaluated
    while trained), the evaluations of later experiences are used.
    ``per_task=True`` returns the (k-1,) vector of minima. NaN when k == 1.
    """
    curve = _check_curve(curve)
    k = curve.n_seen
    minima = np.array([curve.accuracy[_after_task(curve, j), j].min() for j in range(k - 1)])
    if check_bool("per_task", per_task):
        return minima
    return float(minima.mean()) if k > 1 else float("nan")


def wc_acc(curve: EvalCurve) -> float:
    """WC-ACC: worst-case accuracy at the last evaluation (De Lange et al. 2023).

    ``WC-ACC = (1/k)·A_current + (1 − 1/k)·min-ACC`` with k = ``curve.n_seen`` and
    ``A_current = accuracy[-1, k-1]`` the accuracy on the experience being trained.
    When k == 1 it is ``A_current``. Use ``wc_acc(curve.upto(e + 1))`` for its value
    at evaluation e.
    """
    curve = _check_curve(curve)
    k = curve.n_seen
    current = float(curve.accuracy[-1, k - 1])
    if k == 1:
        return current
    return current / k + (1.0 - 1.0 / k) * min_acc(curve)


def windowed_forgetting(curve: EvalCurve, window: int, per_task: bool = False) -> float | np.ndarray:
    """WF(window): largest accuracy drop on a past experience within a window of evaluations.

    For each past experience j < k-1, over its accuracies a_0, a_1, ... from the end of
    its training (the last evaluation while training j) onward:
    ``WF_j = max_{m <= n <= m + window} (a_m − a_n)`` (>= 0); WF is the mean over j.
    The window counts evaluations; with evaluation every ρ iterations it spans
    ``window·ρ`` iterations. ``per_task=True`` returns the (k-1,) vector. NaN when k == 1.
    """
    curve = _check_curve(curve)
    window = _check_positive_int("window", window)
    k = curve.n_seen
    drops = np.array([_largest_change(_after_learning(curve, j), window, -1.0) for j in range(k - 1)])
    if check_bool("per_task", per_task):
        return drops
    return float(drops.mean()) if k > 1 else float("nan")


def windowed_plasticity(curve: EvalCurve, window: int, per_task: bool = False) -> float | np.ndarray:
    """WP(window): largest accuracy gain on an experience within a window of evaluations.

    For each seen experience j < k, over its accuracies a_0, a_1, ... from the first
    evaluation at which it was seen (normally the start of its training) onward:
    ``WP_j = max_{m <= n <= m + window} (a_n − a_m)`` (>= 0); WP is the mean over the
    k seen experiences. ``per_task=True`` returns the (k,) vector.
    """
    curve = _check_curve(curve)
    window = _check_positive_int("window", window)
    gains = np.array([_largest_change(_since_start(curve, j), window, 1.0)
                      for j in range(curve.n_seen)])
    return gains if check_bool("per_task", per_task) else float(gains.mean())


def lca(curve: EvalCurve, beta: int, per_task: bool = False) -> float | np.ndarray:
    """LCA(beta): area under the learning curve (Chaudhry et al. 2019, A-GEM).

    For each experience j with evaluations taken while training it, the mean of its
    first ``min(beta, n_j)`` such accuracies (n_j = number of evaluations while
    training j); LCA is the mean over those experiences. Chaudhry's ``LCA_β`` (β+1
    points from before the first update) equals ``lca(curve, β + 1)`` when the loop
    evaluates before the first update of each experience and after every update.
    ``per_task=True`` returns a vector over experiences 0..k-1 (NaN for those never
    evaluated while being trained).
    """
    curve = _check_curve(curve)
    beta = _check_positive_int("beta", beta)
    values = np.full(curve.n_seen, np.nan)
    for j in range(curve.n_seen):
        phase = curve.accuracy[curve.experience == j, j]
        if phase.size:
            values[j] = phase[:beta].mean()
    if check_bool("per_task", per_task):
        return values
    return float(np.nanmean(values)) if np.any(np.isfinite(values)) else float("nan")


# ---------------------------------------------------------------- summary

def summarize(R: Any, curve: EvalCurve | None = None, *, baseline: Any = None,
              window: int = 10, lca_beta: int = 10) -> dict[str, float]:
    """Every metric under a plain name, as Python floats (NaN where undefined).

    Keys: ``average_accuracy``, ``forgetting`` ("last" convention), ``forgetting_max``,
    ``bwt``; ``fwt`` when ``baseline`` (n,) is given; with a ``curve`` also ``min_acc``,
    ``wc_acc``, ``windowed_forgetting``, ``windowed_plasticity`` (both with ``window``
    evaluations) and ``lca`` (with ``lca_beta``).

    R: (n, n) accuracy matrix; curve: an :class:`EvalCurve` with n columns.
    """
    R = _accuracy_matrix(R)
    window = _check_positive_int("window", window)
    lca_beta = _check_positive_int("lca_beta", lca_beta)
    out = {
        "average_accuracy": average_accuracy(R),
        "forgetting": forgetting(R, "last"),
        "forgetting_max": forgetting(R, "max"),
        "bwt": bwt(R),
    }
    if baseline is not None:
        out["fwt"] = fwt(R, baseline)
    if curve is not None:
        curve = _check_curve(curve)
        if curve.accuracy.shape[1] != R.shape[0]:
            raise ValueError(f"curve: got {curve.accuracy.shape[1]} experiences, "
                             f"expected {R.shape[0]} to match R")
        out.update(
            min_acc=min_acc(curve),
            wc_acc=wc_acc(curve),
            windowed_forgetting=windowed_forgetting(curve, window),
            windowed_plasticity=windowed_plasticity(curve, window),
            lca=lca(curve, lca_beta),
        )
    return {key: float(value) for key, value in out.items()}
