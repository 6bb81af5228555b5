"""Example inputs for every primitive, used by the generic gradient and cross-backend tests.

``cases(name, rng, dtype)`` yields ``(args, static)`` pairs: positional arguments (arrays,
or None) and static keyword arguments.  Shapes include T = 1, odd T, B = 1 and D = 1.
A primitive without an entry here makes ``test_every_primitive_has_cases`` fail.
"""
from __future__ import annotations

import numpy as np

# outputs that carry no gradient (diagnostics): they get a zero cotangent in the checks
NONDIFF_OUTPUTS = {"newton_recurrence": (1,)}


def is_library_primitive(name: str) -> bool:
    """Primitives defined by tests themselves (names starting with ``test_``) are not checked here."""
    return not name.startswith("test_")


SCAN_SHAPES = [(1, 1, 1), (2, 7, 3), (3, 4, 1), (1, 5, 2)]
SCAN_STATICS = [dict(method=m, reverse=r, chunk_size=3) for m in ("sequential", "parallel", "chunked")
                for r in (False, True)]


def _n(rng, shape, dtype, lo=None, hi=None):
    if lo is not None:
        return rng.uniform(lo, hi, shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


def _away_from_zero(rng, shape, dtype):
    x = rng.uniform(0.2, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
    return x.astype(dtype)


def _scan_cases(name, rng, dtype):
    for (B, T, D), static in zip(SCAN_SHAPES * 2, SCAN_STATICS):
        with_h0 = T % 2 == 1
        if name == "linear_scan":
            args = (_n(rng, (B, T, D), dtype, -0.9, 0.9), _n(rng, (B, T, D), dtype),
                    _n(rng, (B, D), dtype) if with_h0 else None)
        elif name == "log_linear_scan":
            args = (np.log(_n(rng, (B, T, D), dtype, 0.2, 0.95)), _n(rng, (B, T, D), dtype),
                    _n(rng, (B, D), dtype) if with_h0 else None)
        else:  # block_scan with k = 1, 2, 3
            k = 1 + T % 3
            G = D
            args = (_n(rng, (B, T, G, k, k), dtype, -0.6, 0.6), _n(rng, (B, T, G, k), dtype),
                    _n(rng, (B, G, k), dtype) if with_h0 else None)
        yield args, static
    if name == "block_scan":  # dense transition: G = 1, k = D
        yield (_n(rng, (2, 6, 1, 4, 4), dtype, -0.4, 0.4), _n(rng, (2, 6, 1, 4), dtype),
               _n(rng, (2, 1, 4), dtype)), dict(method="parallel")


def _cell_recurrence_cases(name, rng, dtype):
    from seqcore import cells
    cell_name = name[: -len("_recurrence")]
    by_prim = {type(c).name: c for c in (cells.make(n, 3, 4) for n in cells.names())} \
        if hasattr(cells, "make") else {}
    by_prim.setdefault("elman", cells.Elman(3, 4))
    by_prim.setdefault("lstm", cells.LSTM(3, 4))
    variants = [by_prim[cell_name]]
    if getattr(variants[0], "log_space", None) is False:  # minGRU / minLSTM: the log-space candidate too
        variants.append(cells.make(cell_name, 3, 4, log_space=True))
    for cell, (B, T) in zip(variants * 3, [(1, 1), (2, 5), (3, 2)] * len(variants)):
        params = cell.init(rng, dtype)
        if "tau" in params:  # timescales away from the clamp at 1, where finite differences are one-sided
            params["tau"] = _n(rng, params["tau"].shape, dtype, 1.5, 3.0)
        x = _n(rng, (B, T, 3), dtype)
        xi = np.asarray(cell.project(params, x))
        state0 = 0.5 * _n(rng, (B, cell.state_size), dtype)
        yield (xi, state0) + tuple(params[k] for k in cell.recurrent_keys), dict(cell=cell)


def cases(name, rng, dtype=np.float64):
    s = (2, 3, 4)
    n = lambda *shape: _n(rng, shape, dtype)  # noqa: E731
    if name in ("linear_scan", "block_scan", "log_linear_scan"):
        yield from _scan_cases(name, rng, dtype)
    elif name == "newton_recurrence":
        from seqcore import cells
        for cell in (cells.make("diaggru", 3, 4), cells.make("cifg-lstm", 3, 4), cells.make("gru", 3, 4),
                     cells.make("lstm", 3, 4)):
            for args, _ in _cell_recurrence_cases(f"{cell.name}_recurrence", rng, dtype):
                yield args, dict(cell=cell, tol=1e-13, max_iters=64, jacobian=cell.jacobian_structure, damping=0.0)
    elif name.endswith("_recurrence"):
        yield from _cell_recurrence_cases(name, rng, dtype)
    elif name in ("add", "sub", "mul"):
        yield (n(*s), n(*s)), {}
        yield (n(*s), n(4)), {}          # broadcasting
        yield (n(1, 3, 1), n(*s)), {}
        yield (n(*s), 2.5), {}
    elif name == "div":
        yield (n(*s), _away_from_zero(rng, s, dtype)), {}
        yield (1.5, _away_from_zero(rng, (4,), dtype)), {}
    elif name in ("neg", "tanh", "sigmoid", "exp", "softplus", "square"):
        yield (n(*s),), {}
    elif name == "power":
        yield (_n(rng, s, dtype, 0.5, 2.0), 3), {}
        yield (_n(rng, s, dtype, 0.5, 2.0), -0.5), {}
    elif name == "log":
        yield (_n(rng, s, dtype, 0.3, 3.0),), {}
    elif name == "relu":
        yield (_away_from_zero(rng, s, dtype),), {}
    elif name == "leaky_relu":
        yield (_away_from_zero(rng, s, dtype),), dict(slope=0.1)
    elif name == "clip":
        yield (_away_from_zero(rng, s, dtype),), dict(lo=-1.0, hi=1.0)
    elif name in ("sum", "mean"):
        yield (n(*s),), dict(axis=None)
        yield (n(*s),), dict(axis=1, keepdims=True)
        yield (n(*s),), dict(axis=(0, 2))
    elif name == "reshape":
        yield (n(*s),), dict(shape=(6, 4))
    elif name == "swapaxes":
        yield (n(*s),), dict(a1=0, a2=2)
    elif name == "getitem":
        yield (n(*s),), dict(index=(slice(None), slice(None, None, -1)))
        yield (n(*s),), dict(index=(np.array([0, 1, 1]), np.array([2, 0, 0])))  # repeated positions
    elif name == "concatenate":
        yield (n(2, 3), n(2, 1), n(2, 2)), dict(axis=1)
    elif name == "stack":
        yield (n(2, 3), n(2, 3)), dict(axis=1)
    elif name == "where":
        yield (rng.random(s) > 0.5, n(*s), n(*s)), {}
    elif name == "matmul":
        yield (n(2, 3, 4), n(4, 5)), {}
        yield (n(3, 4), n(2, 4, 2)), {}
        yield (n(2, 3, 4), n(4)), {}  # 1-D operands: a column on the right, a row on the left
        yield (n(4), n(2, 4, 5)), {}
        yield (n(4), n(4)), {}
    elif name == "linear":
        yield (n(2, 5, 3), n(4, 3), n(4)), {}
        yield (n(6, 3), n(2, 3), None), {}
        yield (n(2, 5, 1), n(4, 1), n(4)), {}  # one input feature: the broadcast path
    elif name == "softmax_cross_entropy":
        yield (n(3, 5, 4), rng.integers(0, 4, (3, 5)), (rng.random((3, 5)) > 0.3).astype(dtype)), {}
        yield (n(4, 6), rng.integers(0, 6, (4,)), None), {}
    elif name == "mse":
        yield (n(3, 5, 2), n(3, 5, 2), (rng.random((3, 5)) > 0.3).astype(dtype)), {}
        yield (n(4, 3), n(4, 3), None), {}
    else:
        raise KeyError(name)
