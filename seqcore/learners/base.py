"""The learner protocol: :class:`seqcore.train.Hooks` plus experience boundaries and state.

A learner is attached to one continual run. The loop (:mod:`seqcore.continual`) calls

* ``bind(model, n_experiences=…, backend=…, rng=…, stream=…)`` once;
* ``init_params(rng, dtype)`` for the trainable parameters (the model's, or a
  hypernetwork's);
* ``before_experience(trainer, data)`` / ``after_experience(trainer, data)`` around
  each experience, ``data`` being an :class:`ExperienceData`;
* the :class:`~seqcore.train.Hooks` of every step: ``prepare_batch`` (replay),
  ``extra_loss`` (differentiable regularisers built from :mod:`seqcore.ops` on the
  traced parameters), ``transform_grads`` (what the optimizer sees), ``transform_updates``
  (what is applied: parameters held fixed or steps projected, whatever the optimizer),
  ``after_step``;
* ``loss(params, batch)`` is the task loss handed to the :class:`~seqcore.train.Trainer`,
  ``predict(params, x, index)`` the logits used to evaluate experience ``index``.

Models are reached only through a small interface (see :mod:`seqcore.learners.classifiers`):
``forward(params, x) -> logits (B, C)`` and ``init(rng, dtype)``; a few learners also
need ``hidden``/``readout`` (SHARP) or ``projection_layers`` (orthogonal projection).

Everything a learner must remember between experiences lives in the attributes named
by ``state_fields`` (NumPy arrays, trees of them, numbers, buffers); ``state_dict`` /
``load_state_dict`` put them into a checkpoint, so a resumed run continues exactly.
"""
from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple

import numpy as np

from .. import nn, ops
from ..autodiff import stop_gradient, vjp
from ..train import Hooks
from ..validate import check_positive_int, check_real, check_rng, is_array, is_integer
from ..tree import key_path_name, tree_key_paths, tree_leaves, tree_map

__all__ = ["HP", "Learner", "ExperienceData", "pack_state", "unpack_state", "tree_dot", "tree_to_numpy",
           "get_path", "set_path", "example_gradients", "softmax", "head_mask", "MASKED_LOGIT"]


class HP(NamedTuple):
    """A hyperparameter: default, one-line help, and optional bounds or choices."""

    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    low_open: bool = False  # the value must exceed ``low`` (a divisor, say), not only reach it


@dataclass
class ExperienceData:
    """The experience being trained, as the loop hands it to learners.

    index: position in the stream (0-based); task_id: the stream's task id.
    sample(rng, n) -> (x (n, ...) float, y (n,) int): training samples, already scaled.
    classes: original class ids of the experience.
    head: its output head (task-incremental streams; 0 otherwise).
    """

    index: int
    task_id: int
    sample: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    n_train: int | None = None
    classes: tuple = ()
    head: int = 0


# ---------------------------------------------------------------- tree helpers

def tree_to_numpy(tree, to_numpy=np.asarray):
    """Every leaf as a NumPy array (a copy, so later in-place updates cannot alias it)."""
    return tree_map(lambda v: np.array(to_numpy(stop_gradient(v))), tree)


def _shape(leaf) -> tuple:
    return tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)


def check_tree_like(name: str, tree, ref, ref_name: str) -> tuple[list, list]:
    """``tree`` has ``ref``'s key paths (in order) and leaf shapes; returns both trees' leaves.

    Leaves are paired by position, so a shorter tree would silently drop terms (zip) and a
    differently shaped leaf would broadcast. One walk of each tree, no per-element work."""
    got, want = tree_key_paths(tree), tree_key_paths(ref)
    differ = next((i for i, (g, w) in enumerate(zip(got, want)) if g[0] != w[0]), None)
    if len(got) != len(want):
        at = min(len(got), len(want)) if differ is None else differ
        first = key_path_name(name, (want if at < len(want) else got)[at][0])
        raise ValueError(f"{name}: got a tree with {len(got)} arrays, expected {len(want)} like {ref_name} "
                         f"(first difference at {first})")
    if differ is not None:
        raise ValueError(f"{name}: got an array at {key_path_name(name, got[differ][0])}, expected one at "
                         f"{key_path_name(name, want[differ][0])} like {ref_name}")
    for (keys, leaf), (_, like) in zip(got, want):
        if _shape(leaf) != _shape(like):
            raise ValueError(f"{key_path_name(name, keys)}: got shape {_shape(leaf)}, expected {_shape(like)} "
                             f"like {key_path_name(ref_name, keys)}")
    return [leaf for _, leaf in got], [like for _, like in want]


def tree_dot(a, b) -> float:
    """Σ over all leaves of ``a * b`` (the dot product of two trees of one structure), in float64."""
    lb, la = check_tree_like("b", b, a, "a")
    return float(sum(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in zip(la, lb)))


def _index(key):
    """A path element as an array index: a list or tuple of ints selects those rows."""
    return np.asarray(key, np.int64) if isinstance(key, (list, tuple)) else key


def get_path(tree, path: tuple):
    """The subtree of ``tree`` at ``path`` (a tuple of dict keys / list indices). Elements past
    a leaf index into the array: ``(…, "weight_ih", 0)`` is its first slab, and a tuple of
    ints selects those rows (a head's share of a grouped weight or bias)."""
    for key in path:
        tree = tree[_index(key)]
    return tree


def set_path(tree, path: tuple, value):
    """A copy of ``tree`` with the part at ``path`` replaced by ``value`` (containers are
    copied; an array indexed past its leaf is copied and the indexed part assigned)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        out = dict(tree)
    elif isinstance(tree, (list, tuple)):
        out = list(tree)
    elif hasattr(tree, "shape") and not isinstance(head, str):
        out = tree.clone() if hasattr(tree, "clone") else tree.copy()  # torch tensors clone
        out[_index(head)] = set_path(tree[_index(head)], rest, value)
        return out
    else:
        raise TypeError(f"path: got {path!r}, which goes through a {type(tree).__name__}")
    out[head] = set_path(tree[head], rest, value)
    return out if not isinstance(tree, tuple) else type(tree)(out)


MASKED_LOGIT = -1e9  # added to the logits of other heads: exp() of it is exactly 0 in float32 and float64


def head_mask(y: np.ndarray, n_outputs: int, head_size: int, dtype=np.float64) -> np.ndarray:
    """Additive logit mask ``(B, n_outputs)`` of a multi-head (task-incremental) model.

    Heads are consecutive blocks of ``head_size`` outputs and labels are global
    (``head · head_size + label within the head``): row i is 0 on the block of ``y[i]``
    and ``MASKED_LOGIT`` elsewhere, so a softmax over the masked logits is the softmax of
    the sample's own head.
    """
    heads = check_labels("y", y).reshape(-1) // head_size
    blocks = np.arange(n_outputs) // head_size
    return np.where(blocks[None, :] == heads[:, None], 0.0, MASKED_LOGIT).astype(dtype)


def softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``z / temperature`` (NumPy, float64); z: (B, C)."""
    z = np.asarray(z, np.float64) / check_real("temperature", temperature, low=0.0, low_open=True)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def check_labels(name: str, y) -> np.ndarray:
    """``y`` as a NumPy integer array; float labels are refused, as by :func:`seqcore.nn.cross_entropy`
    (a cast would floor 0.9 to class 0)."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name}: got {y.dtype}, expected integer labels")
    return y


def check_examples(x, y) -> None:
    """``x (N, ...)`` holds N >= 1 examples and ``y (N,)`` one label per example (extra labels
    would be silently ignored, missing ones reported as a shape error deep in a loss)."""
    if not is_array(x) or x.ndim < 1:
        raise ValueError(f"x: got {type(x).__name__} of shape {np.shape(x)}, expected an array (N, ...) of examples")
    if x.shape[0] < 1:
        raise ValueError("x: got 0 examples, expected at least 1")
    if np.ndim(y) != 1 or len(y) != x.shape[0]:
        got = f"{len(y)} labels" if np.ndim(y) == 1 else f"labels of shape {np.shape(y)}"
        raise ValueError(f"y: got {got}, expected {x.shape[0]} (one per example of x)")


def example_gradients(fn: Callable, params, xs: np.ndarray, ys: np.ndarray, backend):
    """Yield the gradient of ``fn(params, x_i[None], y_i[None])`` for every example i.

    ``fn`` returns a differentiable scalar; ``xs`` (N, ...) with N >= 1 and ``ys`` (N,) are NumPy;
    gradients come back as NumPy float64 trees shaped like ``params``. One pullback per
    example: exact per-example gradients for any model (``backend`` is a backend module).
    """
    check_examples(xs, ys)  # here, not when the first gradient is drawn
    return _example_gradients(fn, params, xs, np.asarray(ys), backend)


def _example_gradients(fn, params, xs, ys, backend):
    for i in range(xs.shape[0]):
        x = backend.asarray(xs[i:i + 1])
        value, pullback = vjp(lambda p: fn(p, x, ys[i:i + 1]), params)
        (g,) = pullback(backend.xp.ones_like(value))
        yield tree_map(lambda v: np.asarray(backend.to_numpy(v), np.float64), g)


# ---------------------------------------------------------------- state (checkpoints)

def _walk_pack(value, key: str, arrays: dict) -> Any:
    if isinstance(value, np.random.Generator):
        return {"t": "rng", "state": value.bit_generator.state}
    if isinstance(value, dict):
        return {"t": "dict", "items": {str(k): _walk_pack(v, f"{key}/{k}", arrays) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"t": "list", "items": [_walk_pack(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, str)):
        return {"t": "value", "v": value}
    if isinstance(value, numbers.Number) and not isinstance(value, np.ndarray):
        return {"t": "value", "v": value.item() if isinstance(value, np.generic) else value}
    if hasattr(value, "state_dict") and hasattr(value, "load_state_dict"):
        return {"t": "object", "items": _walk_pack(value.state_dict(), key, arrays)}
    arrays[key] = np.array(np.asarray(value))
    return {"t": "array", "key": key}


def pack_state(fields: dict[str, Any], prefix: str = "learner") -> tuple[dict[str, np.ndarray], dict]:
    """``{name: value}`` → ``(arrays, skeleton)``: arrays for an ``.npz``, a JSON skeleton for the rest.

    Values may be NumPy arrays, numbers, strings, None, Generators, objects with
    ``state_dict``/``load_state_dict`` (e.g. buffers) and nested dicts/lists of these.
    """
    arrays: dict[str, np.ndarray] = {}
    skeleton = {name: _walk_pack(v, f"{prefix}/{name}", arrays) for name, v in fields.items()}
    return arrays, skeleton


_NODE_KEYS = {"rng": ("state",), "dict": ("items",), "list": ("items",), "value": ("v",), "object": ("items",),
              "array": ("key",)}


def _walk_unpack(node: dict, arrays: dict, current: Any, where: str) -> Any:
    if not isinstance(node, dict) or node.get("t") not in _NODE_KEYS or any(k not in node for k in _NODE_KEYS[node["t"]]):
        raise ValueError(f"meta{where}: got {node!r:.80}, expected a node written by pack_state "
                         f"({{'t': one of {sorted(_NODE_KEYS)}, ...}})")
    kind = node["t"]
    if kind == "rng":
        rng = current if isinstance(current, np.random.Generator) else np.random.default_rng()
        try:
            rng.bit_generator.state = node["state"]
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"meta{where}: got an RNG state numpy refuses ({exc}), expected "
                             f"Generator.bit_generator.state of a {type(rng.bit_generator).__name__}") from None
        return rng
    if kind in ("dict", "list") and not isinstance(node["items"], dict if kind == "dict" else list):
        raise ValueError(f"meta{where}['items']: got {type(node['items']).__name__}, expected a "
                         f"{'dict' if kind == 'dict' else 'list'}")
    if kind == "dict":
        cur = current if isinstance(current, dict) else {}
        return {k: _walk_unpack(v, arrays, cur.get(k), f"{where}[{k!r}]") for k, v in node["items"].items()}
    if kind == "list":
        cur = current if isinstance(current, (list, tuple)) else []
        return [_walk_unpack(v, arrays, cur[i] if i < len(cur) else None, f"{where}[{i}]")
                for i, v in enumerate(node["items"])]
    if kind == "value":
        return node["v"]
    if kind == "object":
        if not callable(getattr(current, "load_state_dict", None)):
            raise ValueError(f"meta{where}: got the state of an object (a buffer), expected "
                             f"{type(current).__name__} here (a state of another learner?)")
        loaded = copy.deepcopy(current)  # the live object stays as it was if a later field is refused
        try:
            loaded.load_state_dict(_walk_unpack(node["items"], arrays, None, where))
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"meta{where}: {exc}") from None
        return loaded
    if node["key"] not in arrays:
        raise ValueError(f"checkpoint: missing learner array {node['key']!r}")
    return np.array(arrays[node["key"]])


def unpack_state(arrays: dict[str, np.ndarray], skeleton: dict, current: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`pack_state`; ``current`` supplies the objects (buffers) whose copies are loaded
    (the objects themselves are left untouched).

    A malformed skeleton raises ``ValueError`` naming the node (``meta['anchor'][0]``)."""
    if not (hasattr(arrays, "keys") and hasattr(arrays, "__getitem__")):
        raise TypeError(f"arrays: got {type(arrays).__name__}, expected a dict of arrays (a checkpoint)")
    if not isinstance(skeleton, dict):
        raise TypeError(f"meta: got {type(skeleton).__name__}, expected the dict written by state_dict")
    return {name: _walk_unpack(node, arrays, current.get(name), f"[{name!r}]") for name, node in skeleton.items()}


def check_param_tree(name: str, tree, template) -> None:
    """``tree`` is None or a tree of finite float arrays with ``template``'s structure and leaf shapes
    (``template``: NumPy parameters, e.g. ``model.init(...)``)."""
    if tree is None:
        return
    from ..tree import tree_paths
    want = dict(tree_paths(template))
    got = dict(tree_paths(tree))
    if set(got) != set(want):
        raise ValueError(f"{name}: got a tree with paths {sorted(got)[:4]}..., expected the parameters' paths "
                         f"{sorted(want)[:4]}... (a state of another model?)")
    for path, leaf in got.items():
        arr = np.asarray(leaf)
        if arr.dtype.kind != "f":
            raise TypeError(f"{name}[{path!r}]: got dtype {arr.dtype}, expected floats")
        if arr.shape != tuple(np.shape(want[path])):
            raise ValueError(f"{name}[{path!r}]: got shape {arr.shape}, expected {tuple(np.shape(want[path]))} "
                             "like the parameter")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}[{path!r}]: got NaN or inf, expected finite values")


# ---------------------------------------------------------------- the protocol

class Learner(Hooks):
    """Base class of continual learners (naive fine-tuning when nothing is overridden).

    Hyperparameters are declared in ``hyperparameters`` (name → :class:`HP`) and become
    attributes; unknown names or values out of range raise ValueError/TypeError.
    """

    name: ClassVar[str] = "naive"
    hyperparameters: ClassVar[dict[str, HP]] = {}
    state_fields: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[tuple[str, ...]] = ()  # model methods beyond forward/init this learner uses
    # True: the continual loop keeps every experience built once asked for (learners that sample
    # from many experiences at every step); False: only the latest, to bound memory
    uses_all_experiences: ClassVar[bool] = False

    def __init__(self, **hparams: Any):
        unknown = sorted(set(hparams) - set(self.hyperparameters))
        if unknown:
            allowed = ", ".join(self.hyperparameters) or "none"
            raise ValueError(f"{unknown[0]}: got a value for an unknown hyperparameter of learner "
                             f"{self.name!r}; expected one of: {allowed}")
        for key, spec in self.hyperparameters.items():
            setattr(self, key, _check_hp(key, hparams.get(key, spec.default), spec))
        self.model = None
        self.stream = None
        self.n_experiences = 0
        self.index = -1  # the experience being trained
        self.rng = np.random.default_rng(0)
        self.be = None
        self.data_for = None
        self.head_size = None  # task-incremental: logits are blocks of head_size, one per head

    # -- configuration ---------------------------------------------------------------------
    def hparams(self) -> dict[str, Any]:
        """The hyperparameters as a JSON-ready dict."""
        return {key: getattr(self, key) for key in self.hyperparameters}

    def bind(self, model, *, n_experiences: int, backend: str = "numpy", rng: np.random.Generator | None = None,
             stream=None, data_for=None, head_size: int | None = None) -> None:
        """Attach the learner to a run: the model, the stream length, the backend and its RNG.

        ``data_for(i)`` returns the :class:`ExperienceData` of experience i (used by joint
        and cumulative training). ``head_size`` (task-incremental streams): the model's
        outputs are heads of that many logits and labels are global (``head · head_size +
        label``); every cross-entropy is then taken over the sample's own head.
        """
        if head_size is not None and (isinstance(head_size, bool) or not isinstance(head_size, int)
                                      or head_size < 1):
            raise ValueError(f"head_size: got {head_size!r}, expected None or an int >= 1")
        self.head_size = head_size
        from .. import backends
        missing = [m for m in ("init", "forward", *self.needs) if not callable(getattr(model, m, None))]
        if missing:
            raise TypeError(f"model: got {type(model).__name__} without {', '.join(missing)}, "
                            f"which learner {self.name!r} needs")
        n_experiences = int(check_positive_int("n_experiences", n_experiences))
        self.model = model
        self.n_experiences = n_experiences
        self.be = backends.get(backend)
        self.rng = check_rng(rng) if rng is not None else np.random.default_rng(0)
        self.stream = stream
        self.data_for = data_for

    def init_params(self, rng: np.random.Generator, dtype=np.float32):
        """The trainable parameters (NumPy); the model's by default."""
        return self.model.init(rng, dtype)

    def constrain(self, params):
        """The projection applied to the trainable parameters after every update (the
        :class:`~seqcore.train.Trainer`'s ``constrain``): the model's own, where it has one
        (LeakyRNN's τ >= 1; without it τ sinks below 1, where its gradient is 0, and stays)."""
        project = getattr(self.model, "constrain", None)
        return params if project is None else project(params)

    # -- model access --------------------------------------------------------------------------
    def dev(self, tree):
        """A NumPy tree moved to the run's backend (no copy on NumPy)."""
        return tree_map(self.be.asarray, tree)

    def numpy(self, tree):
        """A backend tree (possibly traced) as NumPy copies."""
        return tree_to_numpy(tree, self.be.to_numpy)

    def param_dtype(self, params) -> np.dtype:
        """The NumPy dtype of the (possibly traced, any-backend) parameters."""
        return np.asarray(self.be.to_numpy(stop_gradient(tree_leaves(params)[0]))).dtype

    def forward(self, params, x):
        """Training logits ``(B, C)`` for inputs ``x`` (B, ...)."""
        return self.model.forward(params, x)

    def predict(self, params, x, index: int):
        """Logits ``(B, C)`` used to evaluate experience ``index`` (task-aware learners use it)."""
        return self.forward(params, x)

    def cross_entropy(self, logits, y):
        """Mean cross-entropy of ``logits (B, C)`` and labels ``y (B,)``, over each sample's head."""
        y = check_labels("y", y).astype(np.int64, copy=False)
        return nn.cross_entropy(self.mask_heads(logits, y), self.be.asarray(y))

    def mask_heads(self, logits, y):
        """``logits`` restricted to the heads of labels ``y`` (unchanged without heads); traced or plain."""
        if self.head_size is None:
            return logits
        dtype = np.asarray(self.be.to_numpy(stop_gradient(logits))).dtype
        return ops.add(logits, self.be.asarray(head_mask(y, logits.shape[-1], self.head_size, dtype)))

    def loss(self, params, batch):
        """Mean cross-entropy of the batch ``(x, y, mask)`` (x already on the backend)."""
        x, y = batch[0], batch[1]
        return self.cross_entropy(self.forward(params, x), y)

    def gradient(self, params, batch):
        """Gradient of :meth:`loss` (no extra terms) at ``params`` on a NumPy batch ``(x, y)``."""
        x = self.be.asarray(batch[0])
        value, pullback = vjp(lambda p: self.loss(p, (x, batch[1], None)), params)
        (g,) = pullback(self.be.xp.ones_like(value))
        return g

    def logits_numpy(self, params, x) -> np.ndarray:
        """Forward pass without the tape: logits (B, C) as NumPy float64."""
        out = self.forward(tree_map(stop_gradient, params), self.be.asarray(x))
        return np.asarray(self.be.to_numpy(out), np.float64)

    # -- experience boundaries ---------------------------------------------------------------
    def before_experience(self, trainer, data: ExperienceData) -> None:
        """Called before the first step of experience ``data.index``."""

    def after_experience(self, trainer, data: ExperienceData) -> None:
        """Called after the last step of experience ``data.index`` (before its evaluation)."""

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(arrays, meta)`` holding everything in ``state_fields`` plus the learner's RNG."""
        fields = {name: getattr(self, name) for name in self.state_fields}
        fields["rng"] = self.rng
        fields["index"] = self.index
        return pack_state(fields)

    # fields that are None or trees shaped like the model's parameters (checked on load)
    param_fields: ClassVar[tuple[str, ...]] = ()

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore :meth:`state_dict`'s ``(arrays, meta)``. The fields must be this learner's (a state
        of another learner is refused), and each is checked before any is set: a damaged state raises
        ``ValueError``/``TypeError`` naming ``meta[field]`` or the field."""
        if not isinstance(meta, dict):
            raise TypeError(f"meta: got {type(meta).__name__}, expected the dict written by state_dict")
        expected = set(self.state_fields) | {"rng", "index"}
        missing, extra = sorted(expected - set(meta)), sorted(set(meta) - expected)
        if missing or extra:
            raise ValueError(f"meta: got fields {sorted(meta)}, expected {sorted(expected)} of learner {self.name!r}"
                             f"{f'; missing {missing}' if missing else ''}{f'; unknown {extra}' if extra else ''}"
                             " (a state of another learner?)")
        current = {name: getattr(self, name, None) for name in self.state_fields}
        current["rng"] = np.random.default_rng()  # restored into a copy, set once every check has passed
        values = unpack_state(arrays, meta, current)
        self._check_state(values)
        self.rng.bit_generator.state = values.pop("rng").bit_generator.state
        for name, value in values.items():
            setattr(self, name, value)

    def _check_state(self, values: dict[str, Any]) -> None:
        """Validate unpacked state fields before they are set (subclasses add their own checks)."""
        index = values["index"]
        high = self.n_experiences - 1 if self.n_experiences else None
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or index < -1 or \
                (high is not None and index > high):
            raise ValueError(f"index: got {index!r}, expected an int in [-1, {high if high is not None else '...'}] "
                             "(the experience being trained)")
        if self.param_fields and self.model is not None:
            template = self.model.init(np.random.default_rng(0), np.float64)
            for name in self.param_fields:
                check_param_tree(name, values[name], template)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"


def _check_hp(key: str, value: Any, spec: HP) -> Any:
    default = spec.default
    if spec.choices is not None:
        if not isinstance(value, type(spec.default)) or value not in spec.choices:
            raise ValueError(f"{key}: got {value!r}, expected one of {list(spec.choices)}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{key}: got {value!r}, expected true or false")
        return bool(value)
    if isinstance(default, int) and not isinstance(default, bool):
        if not is_integer(value):  # 2.0 too, as check_positive_int refuses it everywhere else
            raise TypeError(f"{key}: got {value!r}, expected an integer")
        value = int(value)
    elif isinstance(default, float):
        value = check_real(key, value)  # 10**400 too, which np.isfinite cannot take
    elif isinstance(default, str) and not isinstance(value, str):
        raise TypeError(f"{key}: got {value!r}, expected a string")
    if spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low):
        raise ValueError(f"{key}: got {value!r}, expected {'>' if spec.low_open else '>='} {spec.low}")
    if spec.high is not None and value > spec.high:
        raise ValueError(f"{key}: got {value!r}, expected <= {spec.high}")
    return value

