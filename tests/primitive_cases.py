"""Example inputs for every primitive, used by the generic gradient and cross-backend tests, and
``paired_leaves``, the tree comparison those and the model tests share.

``cases(name, rng, dtype)`` yields ``(args, static)`` pairs: positional arguments (arrays,
or None) and static keyword arguments.  Every kind of primitive runs on the three shapes of
``shapes(rng)``: T = 1; B = 1 and D = 1 with an odd T; and distinct sizes of at least 2.
The sizes are drawn from the caller's seeded ``rng``, so each caller sees the same cases on
every run.  A primitive without an entry here makes ``test_every_primitive_has_cases`` fail.
"""
from __future__ import annotations

import zlib

import numpy as np

from seqcore.tree import key_path_name, tree_key_paths

# outputs that carry no gradient (diagnostics): they get a zero cotangent in the checks
NONDIFF_OUTPUTS = {"newton_recurrence": (1,)}
# arguments that carry no gradient (masks, integer labels, conditions, exponents): the primitive's
# VJP gives None for these and a gradient for every other floating array.  Listed here, not read
# off the VJP under test, so a VJP that drops a gradient fails instead of going unchecked.
NONDIFF_ARGS = {"mse": (2,), "softmax_cross_entropy": (1, 2), "where": (0,), "power": (1,)}


def is_library_primitive(name: str) -> bool:
    """Primitives defined by tests themselves (names starting with ``test_``) are not checked here."""
    return not name.startswith("test_")


def paired_leaves(got, want, what="tree"):
    """``[(name, got_leaf, want_leaf)]`` of two trees, after checking they have one structure with
    ``None`` in the same places: ``zip(tree_leaves(got), tree_leaves(want))`` drops ``None`` leaves
    and stops at the shorter list, so a lost gradient or output went unnoticed."""
    g, w = (tree_key_paths(t, keep_none=True) for t in (got, want))
    gl, wl = ([(key_path_name(what, k), v is None) for k, v in paths] for paths in (g, w))
    assert gl == wl, (f"{what}: got (leaf, is None) {[x for x in gl if x not in wl]}, expected "
                      f"{[x for x in wl if x not in gl]} (the other leaves agree, maybe in another order)")
    return [(key_path_name(what, k), a, b) for (k, a), (_, b) in zip(g, w, strict=True)]


def stable_seed(*parts) -> int:
    """A seed from ``parts`` (strings, numbers, tuples of them) that is the same in every process;
    ``hash()`` of a string is salted per process, so a failure seeded by it would not reproduce."""
    return zlib.crc32(repr(parts).encode())


SCAN_STATICS = [dict(method=m, reverse=r) for m in ("sequential", "parallel", "chunked") for r in (False, True)]
BLOCK_SIZES = (1, 2, 3, "dense")  # dense: one group (G = 1) of k = 4


def shapes(rng, hi=(3, 7, 4)):
    """Three ``(B, T, D)`` drawn from ``rng`` with B, T, D at most ``hi``: T = 1; B = D = 1 with an
    odd T > 1; and three distinct sizes of at least 2 (an axis mix-up changes a shape there)."""
    B_hi, T_hi, D_hi = hi
    B = int(rng.integers(2, B_hi + 1))
    D = int(rng.choice([d for d in range(2, D_hi + 1) if d != B]))
    T = int(rng.choice([t for t in range(2, T_hi + 1) if t not in (B, D)]))
    return [(int(rng.integers(1, B_hi + 1)), 1, int(rng.integers(1, D_hi + 1))),
            (1, int(rng.choice(range(3, T_hi + 1, 2))), 1),
            (B, T, D)]


def _n(rng, shape, dtype, lo=None, hi=None):
    if lo is not None:
        return rng.uniform(lo, hi, shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


def _away_from_zero(rng, shape, dtype, kinks=()):
    """|x| in [0.2, 1.5] and at least 0.1 from each of ``kinks``: finite differences cross no corner."""
    x = rng.uniform(0.2, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
    for kink in kinks:
        near = np.abs(x - kink) < 0.1
        x[near] += np.where(x[near] < kink, -0.1, 0.1)
    return x.astype(dtype)


def _mask(rng, shape, dtype):
    m = (rng.random(shape) > 0.3).astype(dtype)
    m.flat[0] = 1  # never all zero: the loss is then exactly 0 whatever the inputs
    return m


def _scan_cases(name, rng, dtype):
    # round r pairs method/direction j with shape (j + r) % 3: over three rounds each of them
    # meets every shape; block_scan spends its rounds on k = 1, 2, 3 and dense (four rounds)
    sh = shapes(rng, hi=(3, 7, 3))
    for r, size in enumerate(BLOCK_SIZES if name == "block_scan" else (None,) * 3):
        for j, static in enumerate(SCAN_STATICS):
            B, T, D = sh[(j + r) % 3]
            with_h0 = (j // 2 + r) % 2 == 0
            static = dict(static, chunk_size=int(rng.integers(1, 5)))
            if name == "linear_scan":
                args = (_n(rng, (B, T, D), dtype, -0.9, 0.9), _n(rng, (B, T, D), dtype),
                        _n(rng, (B, D), dtype) if with_h0 else None)
            elif name == "log_linear_scan":
                args = (np.log(_n(rng, (B, T, D), dtype, 0.2, 0.95)), _n(rng, (B, T, D), dtype),
                        _n(rng, (B, D), dtype) if with_h0 else None)
            else:
                G, k = (1, 4) if size == "dense" else (D, size)
                args = (_n(rng, (B, T, G, k, k), dtype, -0.6, 0.6), _n(rng, (B, T, G, k), dtype),
                        _n(rng, (B, G, k), dtype) if with_h0 else None)
            yield args, static


def _cell_recurrence_cases(name, rng, dtype):
    from seqcore import cells
    cell_name = name[: -len("_recurrence")]
    for B, T, H in shapes(rng, hi=(3, 5, 4)):
        I = int(rng.integers(1, 4))
        variants = [cells.make(cell_name, I, H)]
        if getattr(variants[0], "log_space", None) is False:  # minGRU / minLSTM: the log-space candidate too
            variants.append(cells.make(cell_name, I, H, log_space=True))
        for cell in variants:
            params = cell.init(rng, dtype)
            if "tau" in params:  # timescales away from the clamp at 1, where finite differences are one-sided
                params["tau"] = _n(rng, params["tau"].shape, dtype, 1.5, 3.0)
            xi = np.asarray(cell.project(params, _n(rng, (B, T, I), dtype)))
            state0 = 0.5 * _n(rng, (B, cell.state_size), dtype)
            yield (xi, state0) + tuple(params[k] for k in cell.recurrent_keys), dict(cell=cell)


def _array_cases(name, rng, dtype, s):
    """Every other primitive on arrays built from one shape ``s = (B, T, D)``."""
    B, T, D = s
    n = lambda *dims: _n(rng, dims, dtype)  # noqa: E731
    if name in ("add", "sub", "mul"):
        yield (n(*s), n(*s)), {}
        yield (n(*s), n(D)), {}          # broadcasting
        yield (n(1, T, 1), n(*s)), {}
        yield (n(*s), 2.5), {}
    elif name == "div":
        yield (n(*s), _away_from_zero(rng, s, dtype)), {}
        yield (1.5, _away_from_zero(rng, (D,), dtype)), {}
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
        yield (_away_from_zero(rng, s, dtype, kinks=(-1.0, 1.0)),), dict(lo=-1.0, hi=1.0)
    elif name in ("sum", "mean"):
        yield (n(*s),), dict(axis=None)
        yield (n(*s),), dict(axis=1, keepdims=True)
        yield (n(*s),), dict(axis=(0, 2))
    elif name == "reshape":
        yield (n(*s),), dict(shape=(B * T, D))
    elif name == "swapaxes":
        yield (n(*s),), dict(a1=0, a2=2)
    elif name == "getitem":
        yield (n(*s),), dict(index=(slice(None), slice(None, None, -1)))
        yield (n(*s),), dict(index=(np.array([0, B - 1, B - 1]), np.array([T - 1, 0, 0])))  # repeated positions
    elif name == "concatenate":
        yield (n(B, T, D), n(B, 1, D), n(B, 2, D)), dict(axis=1)
    elif name == "stack":
        yield (n(*s), n(*s)), dict(axis=1)
    elif name == "where":
        yield (rng.random(s) > 0.5, n(*s), n(*s)), {}
    elif name == "matmul":
        K = int(rng.integers(1, 5))
        yield (n(B, T, D), n(D, K)), {}
        yield (n(T, D), n(B, D, K)), {}
        yield (n(B, T, D), n(D)), {}  # 1-D operands: a column on the right, a row on the left
        yield (n(D), n(B, D, K)), {}
        yield (n(D), n(D)), {}
    elif name == "linear":  # D = 1: one input feature, the broadcast path
        O = int(rng.integers(1, 5))
        yield (n(B, T, D), n(O, D), n(O)), {}
        yield (n(B * T, D), n(O, D), None), {}
    elif name == "softmax_cross_entropy":  # D classes (one class: a loss of 0 with gradient 0)
        yield (n(B, T, D), rng.integers(0, D, (B, T)), _mask(rng, (B, T), dtype)), {}
        yield (n(B * T, D), rng.integers(0, D, (B * T,)), None), {}
    elif name == "mse":
        yield (n(B, T, D), n(B, T, D), _mask(rng, (B, T), dtype)), {}
        yield (n(B * T, D), n(B * T, D), None), {}
    else:
        raise KeyError(name)


def cases(name, rng, dtype=np.float64):
    if name in ("linear_scan", "block_scan", "log_linear_scan"):
        yield from _scan_cases(name, rng, dtype)
    elif name == "newton_recurrence":
        for cell_name in ("diaggru", "cifg-lstm", "gru", "lstm"):
            for args, static in _cell_recurrence_cases(f"{cell_name}_recurrence", rng, dtype):
                cell = static["cell"]
                yield args, dict(cell=cell, tol=1e-13, max_iters=64, jacobian=cell.jacobian_structure, damping=0.0)
    elif name.endswith("_recurrence"):
        yield from _cell_recurrence_cases(name, rng, dtype)
    else:
        for shape in shapes(rng):
            yield from _array_cases(name, rng, dtype, shape)
