"""Parameter trees: nested dicts (and lists/tuples) of arrays.

Parameters, gradients and optimizer states are trees; these helpers map over
their leaves without caring which backend the arrays belong to.
"""
from __future__ import annotations

from typing import Any, Callable

__all__ = ["tree_map", "tree_leaves", "tree_flatten", "tree_unflatten", "tree_paths"]


def _is_node(x: Any) -> bool:
    return isinstance(x, (dict, list, tuple))


def tree_map(fn: Callable, tree: Any, *rest: Any, is_leaf: Callable | None = None) -> Any:
    """Apply ``fn(leaf, *other_leaves)`` to every leaf; ``None`` leaves stay ``None``.

    All trees must share the structure of ``tree`` (dict keys, list lengths).
    """
    if tree is None:
        return None
    if is_leaf is not None and is_leaf(tree):
        return fn(tree, *rest)
    if isinstance(tree, dict):
        for r in rest:
            if not isinstance(r, dict) or r.keys() != tree.keys():
                raise ValueError(
                    f"tree structure mismatch: expected dict with keys {sorted(tree)}, "
                    f"got {sorted(r) if isinstance(r, dict) else type(r).__name__}")
        return {k: tree_map(fn, v, *(r[k] for r in rest), is_leaf=is_leaf) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        for r in rest:
            if not isinstance(r, (list, tuple)) or len(r) != len(tree):
                raise ValueError(f"tree structure mismatch: expected sequence of length {len(tree)}, got {r!r:.80}")
        out = [tree_map(fn, v, *(r[i] for r in rest), is_leaf=is_leaf) for i, v in enumerate(tree)]
        return type(tree)(out) if isinstance(tree, tuple) and not hasattr(tree, "_fields") else (
            type(tree)(*out) if isinstance(tree, tuple) else out)
    return fn(tree, *rest)


# The walkers are module-level functions taking their accumulator as an argument: a nested
# recursive closure refers to itself through its cell, a reference cycle that would keep the
# leaves (arrays, traced values and the tapes behind them) alive until the cyclic garbage
# collector ran.

def _flatten_into(t: Any, leaves: list) -> Any:
    if isinstance(t, dict):
        return ("dict", [(k, _flatten_into(v, leaves)) for k, v in t.items()])
    if isinstance(t, (list, tuple)):
        return (type(t), [_flatten_into(v, leaves) for v in t])
    if t is None:
        return ("none", None)
    leaves.append(t)
    return ("leaf", None)


def tree_flatten(tree: Any) -> tuple[list, Any]:
    """Return ``(leaves, treedef)``; ``tree_unflatten(treedef, leaves)`` rebuilds the tree."""
    leaves: list = []
    return leaves, _flatten_into(tree, leaves)


def _build(d: Any, it) -> Any:
    kind, children = d
    if kind == "leaf":
        return next(it)
    if kind == "none":
        return None
    if kind == "dict":
        return {k: _build(c, it) for k, c in children}
    vals = [_build(c, it) for c in children]
    if kind is list:
        return vals
    return kind(*vals) if hasattr(kind, "_fields") else kind(vals)


def tree_unflatten(treedef: Any, leaves: list) -> Any:
    """The tree of ``treedef`` (from :func:`tree_flatten`) with ``leaves`` in order."""
    return _build(treedef, iter(leaves))


def tree_leaves(tree: Any) -> list:
    return tree_flatten(tree)[0]


def tree_paths(tree: Any, prefix: str = "", keep_none: bool = False) -> list[tuple[str, Any]]:
    """``[(path, leaf)]`` with paths like ``"cells/0/weight_hh"`` (used for checkpoints).

    ``None`` marks an empty subtree and is skipped, unless ``keep_none`` lists it as a leaf."""
    out: list[tuple[str, Any]] = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += tree_paths(v, f"{prefix}{k}/", keep_none)
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out += tree_paths(v, f"{prefix}{i}/", keep_none)
    elif tree is not None or keep_none:
        out.append((prefix[:-1], tree))
    return out
