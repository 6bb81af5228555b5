"""Continual-learning streams: ordered sequences of experiences.

An :class:`Experience` is one stage of a stream: a task id, training data (arrays
``(x, y)`` or a sampler with ``sample(rng, batch_size)``), evaluation arrays, the
classes it holds and the output head to use. A :class:`Stream` builds its
experiences lazily (so ten permuted copies of a data set are never in memory at
once); everything random is fixed when the stream is built, from ``seed``, so a
stream is the same on every access and every run.

Streams take in-memory arrays ``x`` of shape (N, ...) — images (N, H, W), flattened
images (N, D) or sequences (N, T, D) — and integer labels ``y`` of shape (N,).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ..validate import check_bool, check_fits_in_memory, check_real

__all__ = [
    "Experience", "Stream", "permuted_stream", "split_stream", "blurry",
    "power_law_steps", "power_law_schedule", "power_law_stream", "scole_stream",
    "curriculum_stream",
]

SCENARIOS = ("class", "task", "domain")


# ---------------------------------------------------------------- validation helpers

def _check_int(name: str, value: Any, low: int, high: int | None = None, why: str = "") -> int:
    """An int in ``[low, high]``; ``why`` says where the bound comes from (e.g. "the number of classes")."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: got {type(value).__name__} {value!r}, expected an int")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}: got {value}, expected an int {bound}{f' ({why})' if why else ''}")
    return int(value)


def _check_pair(name: str, pair: Any, integer_labels: bool = True) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise TypeError(f"{name}: got {type(pair).__name__}, expected a tuple (x, y) of arrays")
    arrays = []
    for part, a in zip("xy", pair):
        try:
            arrays.append(np.asarray(a))
        except ValueError as exc:  # ragged nested lists: NumPy's message names no argument
            raise ValueError(f"{name}: got {part} that NumPy cannot make into an array ({exc}), "
                             "expected x (N, ...) and y (N,) of numbers") from None
    x, y = arrays
    if x.ndim < 1 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: got x {x.shape} and y {y.shape}, expected x (N, ...) and y (N,)")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name}: got inputs of dtype {x.dtype}, expected numbers (float, int or bool)")
    if integer_labels and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name}: got labels of dtype {y.dtype}, expected integer class labels")
    if not integer_labels and y.dtype.kind not in "biuf":
        raise TypeError(f"{name}: got labels of dtype {y.dtype}, expected numbers (class ids or targets)")
    return x, y


def _check_dataset(x_train, y_train, x_test, y_test) -> tuple[np.ndarray, ...]:
    x_train, y_train = _check_pair("(x_train, y_train)", (x_train, y_train))
    x_test, y_test = _check_pair("(x_test, y_test)", (x_test, y_test))
    if x_train.ndim < 2 or x_train.shape[0] == 0 or 0 in x_train.shape[1:]:
        raise ValueError(f"x_train: got shape {x_train.shape}, expected (N, ...) with N >= 1 "
                         "and at least one feature (no feature axis of length 0)")
    if x_test.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"x_test: got feature shape {x_test.shape[1:]}, "
                         f"expected {x_train.shape[1:]} like x_train")
    if y_train.min() < 0 or (y_test.size and y_test.min() < 0):
        raise ValueError("y_train/y_test: got a negative label, expected class labels >= 0")
    # class ids index tables and heads of max + 1 entries (split's label lookup, scole's class counts)
    name, labels = max((("y_train", y_train), ("y_test", y_test)), key=lambda p: p[1].max(initial=0))
    top = int(labels.max())
    check_fits_in_memory(name, f"a label {top}", (top + 1) * 8, f"per-class tables ({top + 1} class ids)")
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ValueError(f"{name}: got NaN or inf inputs, expected finite values")
    return x_train, y_train, x_test, y_test


def _check_test_classes(y_train: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """The classes of ``y_train``; test classes never trained are refused (they would never be evaluated)."""
    classes = np.unique(y_train)
    unknown = np.setdiff1d(y_test, classes)
    if unknown.size:
        raise ValueError(f"y_test: got classes {unknown.tolist()} absent from y_train")
    return classes


def _check_count(name: str, value: Any, low: int, bytes_each: int, what: str) -> int:
    """An int >= ``low`` whose ``value`` items of ``bytes_each`` bytes (``what``) could fit in memory:
    more would end in a MemoryError, or hours of building first, instead of an error naming ``name``."""
    value = _check_int(name, value, low)
    check_fits_in_memory(name, value, value * bytes_each, what)
    return value


# a stream's position: its task id and head (tuple entries, an int object), the experience's recipe
_POSITION_BYTES = 100


# ---------------------------------------------------------------- experience and stream

@dataclass(frozen=True, eq=False)
class Experience:
    """One stage of a stream.

    task_id: which task this is (repeats when a task re-occurs, e.g. rehearsal).
    train: ``(x, y)`` with x (N, ...) and y (N,), or a sampler: any object with
        ``sample(rng, batch_size) -> (x, y)``.
    eval: ``(x, y)`` evaluation arrays, x (M, ...) and y (M,).
    classes: the original class ids this experience holds (before any remapping).
    head: index of the output head (0 for single-head scenarios).
    info: extra facts about how it was made (permutation, label map, sources...).
    """

    task_id: int
    train: Any
    eval: tuple[np.ndarray, np.ndarray]
    classes: tuple[int, ...] = ()
    head: int = 0
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_int("task_id", self.task_id, 0)
        _check_int("head", self.head, 0)
        if isinstance(self.train, tuple):
            object.__setattr__(self, "train", _check_pair("train", self.train, integer_labels=False))
        elif not callable(getattr(self.train, "sample", None)):
            raise TypeError(f"train: got {type(self.train).__name__}, expected (x, y) arrays "
                            "or an object with sample(rng, batch_size)")
        object.__setattr__(self, "eval", _check_pair("eval", self.eval, integer_labels=False))
        if isinstance(self.classes, (str, bytes)) or not isinstance(self.classes, (Sequence, np.ndarray)):
            raise TypeError(f"classes: got {type(self.classes).__name__} {self.classes!r:.60}, "
                            "expected a sequence of int class ids")
        object.__setattr__(self, "classes", tuple(_check_int(f"classes[{i}]", c, 0)
                                                  for i, c in enumerate(np.asarray(self.classes).tolist()
                                                                        if isinstance(self.classes, np.ndarray)
                                                                        else self.classes)))
        if not isinstance(self.info, Mapping):
            raise TypeError(f"info: got {type(self.info).__name__}, expected a mapping (dict)")

    @property
    def is_sampled(self) -> bool:
        """True when training data comes from a sampler rather than fixed arrays."""
        return not isinstance(self.train, tuple)

    @property
    def n_train(self) -> int | None:
        """Number of training samples (None for a sampler)."""
        return None if self.is_sampled else int(self.train[1].shape[0])

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A training minibatch: x (B, ...), y (B,); distinct samples when train is arrays."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng: got {type(rng).__name__}, expected numpy.random.Generator")
        if self.is_sampled:
            _check_int("batch_size", batch_size, 1)
            return self.train.sample(rng, batch_size)
        batch_size = _check_int("batch_size", batch_size, 1, self.n_train)
        index = rng.choice(self.n_train, size=batch_size, replace=False)
        return self.train[0][index], self.train[1][index]


class Stream(Sequence):
    """A fixed-length sequence of experiences built on access by ``build(position)``.

    task_ids: (L,) the task id of each position (known without building).
    scenario: "class" (global labels, one head), "task" (labels per experience, one
        head per task) or "domain" (labels per experience, one shared head).
    n_outputs: size of a head's label space (None when labels are not classes).
    n_heads: number of output heads.
    heads: (L,) the output head of each position (known without building); by default
        head i for position i under "task" with one head per position, else head 0.
    """

    def __init__(self, task_ids: Sequence[int], build: Callable[[int], Experience], *,
                 scenario: str, n_outputs: int | None, n_heads: int = 1, name: str = "stream",
                 info: Mapping[str, Any] | None = None, heads: Sequence[int] | None = None) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario: got {scenario!r}, expected one of {SCENARIOS}")
        if isinstance(task_ids, np.ndarray):
            task_ids = task_ids.tolist()
        if isinstance(task_ids, (str, bytes)) or not isinstance(task_ids, Sequence):
            raise TypeError(f"task_ids: got {type(task_ids).__name__}, expected a sequence of ints")
        if not callable(build):
            raise TypeError(f"build: got {type(build).__name__}, expected a callable position -> Experience")
        if n_outputs is not None:
            n_outputs = _check_int("n_outputs", n_outputs, 1)
        if not isinstance(name, str):
            raise TypeError(f"name: got {type(name).__name__}, expected str")
        if info is not None and not isinstance(info, Mapping):
            raise TypeError(f"info: got {type(info).__name__}, expected a mapping (dict) or None")
        self.task_ids = tuple(_check_int(f"task_ids[{i}]", t, 0) for i, t in enumerate(task_ids))
        self._build = build
        self.scenario = scenario
        self.n_outputs = n_outputs
        self.n_heads = _check_int("n_heads", n_heads, 1)
        if heads is None:
            per_position = scenario == "task" and self.n_heads == len(self.task_ids)
            heads = range(len(self.task_ids)) if per_position else [0] * len(self.task_ids)
        self.heads = tuple(_check_int(f"heads[{i}]", h, 0, self.n_heads - 1) for i, h in enumerate(heads))
        if len(self.heads) != len(self.task_ids):
            raise ValueError(f"heads: got {len(self.heads)} entries, expected one per position "
                             f"({len(self.task_ids)})")
        self.name = name
        self.info = dict(info or {})

    def __len__(self) -> int:
        return len(self.task_ids)

    def __getitem__(self, position):
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
            raise TypeError(f"position: got {type(position).__name__}, expected an int or a slice")
        if not -len(self) <= position < len(self):
            raise IndexError(f"position: got {position}, expected in [{-len(self)}, {len(self)})")
        return self._build(int(position) % len(self))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return (f"Stream({self.name!r}, {len(self)} experiences, scenario={self.scenario!r}, "
                f"n_outputs={self.n_outputs}, n_heads={self.n_heads})")


def _check_stream(stream: Any) -> Stream:
    if not isinstance(stream, Stream):
        raise TypeError(f"stream: got {type(stream).__name__}, expected Stream")
    return stream


# ---------------------------------------------------------------- permuted and split

def permuted_stream(x_train, y_train, x_test, y_test, n_experiences: int, seed: int,
                    first_identity: bool = True, multi_head: bool = False) -> Stream:
    """Permuted benchmark: experience i applies a fixed permutation of the features.

    The D = prod(x.shape[1:]) features of each sample are flattened, permuted and
    reshaped back, so (N, H, W) images, (N, D) vectors and (N, T, D) sequences keep
    their shape. Permutations are drawn when the stream is built, from ``seed``;
    with ``first_identity`` experience 0 is the unpermuted data. Labels are kept
    (domain-incremental, one head) or, with ``multi_head``, one head per experience.
    ``info["permutation"]`` holds each experience's (D,) permutation (read-only).
    """
    x_train, y_train, x_test, y_test = _check_dataset(x_train, y_train, x_test, y_test)
    n_features = int(np.prod(x_train.shape[1:]))
    n_experiences = _check_count("n_experiences", n_experiences, 1, n_features * 8, "permutations")
    first_identity = check_bool("first_identity", first_identity)
    multi_head = check_bool("multi_head", multi_head)
    rng = np.random.default_rng(_check_int("seed", seed, 0))
    permutations = [np.arange(n_features) if (i == 0 and first_identity) else rng.permutation(n_features)
                    for i in range(n_experiences)]
    for perm in permutations:  # handed out in info: an edit in place would change later accesses
        perm.setflags(write=False)
    classes = tuple(np.union1d(y_train, y_test).tolist())

    def permute(x: np.ndarray, perm: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], perm.size)[:, perm].reshape(x.shape)  # N may be 0 (no test split)

    def build(i: int) -> Experience:
        perm = permutations[i]
        return Experience(i, (permute(x_train, perm), y_train), (permute(x_test, perm), y_test),
                          classes, head=i if multi_head else 0, info={"permutation": perm})

    return Stream(range(n_experiences), build, scenario="task" if multi_head else "domain",
                  n_outputs=int(max(classes)) + 1, n_heads=n_experiences if multi_head else 1,
                  name="permuted")


def split_stream(x_train, y_train, x_test, y_test, *, n_experiences: int | None = None,
                 classes_per_experience: int | None = None, scenario: str = "class",
                 class_order: Sequence[int] | None = None, seed: int | None = None) -> Stream:
    """Split benchmark: the classes are dealt into experiences of equal size.

    Give exactly one of ``n_experiences`` and ``classes_per_experience`` (the number of
    classes must divide evenly). Class order: ``class_order`` if given, else a
    permutation drawn from ``seed`` if given, else sorted (giving both is an error).
    Scenarios: "class" — labels stay global, one head over all classes;
    "task" — labels become the index 0..c-1 within the experience, head = experience;
    "domain" — labels become the within-experience index, one shared head of size c.
    ``info["label_map"]`` maps each original class to its label.
    """
    x_train, y_train, x_test, y_test = _check_dataset(x_train, y_train, x_test, y_test)
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario: got {scenario!r}, expected one of {SCENARIOS}")
    classes = _check_test_classes(y_train, y_test)
    if class_order is not None:
        if seed is not None:  # the seed only draws an order, so one of them would be ignored
            raise ValueError(f"seed: got {seed!r} together with class_order, expected one of the two "
                             "(the seed draws a class order)")
        order = np.asarray(class_order)
        if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer) or \
                not np.array_equal(np.sort(order), classes):
            raise ValueError(f"class_order: got {order.tolist()!r:.200}, expected a 1-D permutation of the "
                             f"int classes {classes.tolist()}")
    elif seed is not None:
        order = np.random.default_rng(_check_int("seed", seed, 0)).permutation(classes)
    else:
        order = classes
    if (n_experiences is None) == (classes_per_experience is None):
        raise ValueError("n_experiences/classes_per_experience: got "
                         f"{n_experiences!r}/{classes_per_experience!r}, expected exactly one")
    n_classes = classes.size
    if n_experiences is not None:
        name, given = "n_experiences", _check_int("n_experiences", n_experiences, 1, n_classes,
                                                  f"{n_classes}: the number of classes in the data")
        n_experiences, per = given, n_classes // given
    else:
        name, given = "classes_per_experience", _check_int("classes_per_experience", classes_per_experience, 1,
                                                           n_classes, f"{n_classes}: the number of classes in the data")
        n_experiences, per = n_classes // given, given
    if n_classes % given:  # name the value the caller gave, not the group size derived from it
        divisors = ", ".join(str(d) for d in range(1, n_classes + 1) if n_classes % d == 0)
        raise ValueError(f"{name}: got {given}, expected a divisor of the {n_classes} classes ({divisors})")
    groups = order.reshape(n_experiences, per)
    global_labels = scenario == "class"

    def build(i: int) -> Experience:
        group = groups[i]
        lookup = np.full(int(classes.max()) + 1, -1, dtype=np.int64)
        lookup[group] = group if global_labels else np.arange(per)
        train = np.isin(y_train, group)
        test = np.isin(y_test, group)
        return Experience(i, (x_train[train], lookup[y_train[train]]),
                          (x_test[test], lookup[y_test[test]]), tuple(group.tolist()),
                          head=i if scenario == "task" else 0,
                          info={"label_map": {int(c): int(lookup[c]) for c in group}})

    return Stream(range(n_experiences), build, scenario=scenario,
                  n_outputs=int(classes.max()) + 1 if global_labels else per,
                  n_heads=n_experiences if scenario == "task" else 1, name=f"split-{scenario}")


# ---------------------------------------------------------------- blurry boundaries

def _classes_of(exp: Experience, labels: np.ndarray) -> set[int]:
    """The original class ids of ``labels``, training labels drawn from ``exp``."""
    if labels.size == 0:
        return set()
    present = set(np.unique(labels).tolist())
    label_map = exp.info.get("label_map")
    if isinstance(label_map, Mapping):  # labels renumbered within the experience (split, domain or task)
        return {int(c) for c, label in label_map.items() if label in present}
    if np.issubdtype(labels.dtype, np.integer) and present <= set(exp.classes):  # labels are the class ids
        return present
    return set(exp.classes)  # labels of an unknown numbering: all the experience says it holds


def blurry(stream: Stream, overlap: float, seed: int) -> Stream:
    """Blurry task boundaries: part of each experience's training data comes from its neighbours.

    Experience i keeps ``N_i − m`` of its own training samples (drawn without
    replacement) and takes ``m = round(overlap·N_i)`` samples from the adjacent
    experiences, split evenly between i−1 and i+1 (the previous one gets ``m // 2``)
    or all from the only neighbour at either end; the result is shuffled, so each
    experience keeps its size N_i. ``round`` is Python's, which rounds halves to the
    even integer: overlap 0.5 gives m = 0 on N_i = 1 and m = 2 on N_i = 5. Evaluation
    data is unchanged; ``info["source_experience"]`` gives, per training sample, the
    experience it came from, and ``classes`` the original ids of the classes the
    training samples have (a neighbour adds those of the samples it gives, not all of
    its own). Needs array training data and a single label space (scenario "class" or
    "domain"); overlap in [0, 1). Every experience must keep at least one of its own
    samples (m < N_i) and each neighbour must have the samples it is asked for; both
    are checked here, which builds each experience of ``stream`` once. A blurred stream
    is refused (its experiences' ``label_map`` covers only their own classes): blur
    once, with the overlap wanted.
    """
    stream = _check_stream(stream)
    overlap = check_real("overlap", overlap, low=0, high=1, high_open=True)
    if stream.scenario == "task":
        raise ValueError("stream: got scenario 'task', expected 'class' or 'domain' (mixing samples "
                         "across heads would be ambiguous)")
    if len(stream) < 2:
        raise ValueError(f"stream: got {len(stream)} experience, expected at least 2 to blur")
    seed = _check_int("seed", seed, 0)
    sizes = []
    for j, exp in enumerate(stream):  # one at a time: a bad size fails here, not mid-training
        if exp.is_sampled:
            raise TypeError(f"stream[{j}].train: got a sampler, expected (x, y) arrays to blur")
        if "source_experience" in exp.info:
            raise ValueError(f"stream: got a blurred stream ({stream.name!r}: experience {j} already has "
                             "info['source_experience']), expected one not yet blurred; blur once, "
                             "with the overlap wanted")
        sizes.append(exp.n_train)
    counts = []  # per experience: [(source, samples it gives)], itself first
    for i, n in enumerate(sizes):
        n_mix = int(round(overlap * n))
        if n and n_mix == n:
            raise ValueError(f"overlap: got {overlap}, which leaves experience {i} none of its {n} samples "
                             f"(m = round(overlap·{n}) = {n}); expected overlap < {(n - 0.5) / n} "
                             f"for an experience of {n} samples")
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(sizes)]
        shares = [n_mix // 2, n_mix - n_mix // 2] if len(neighbours) == 2 else [n_mix]
        for j, count in zip(neighbours, shares):
            if count > sizes[j]:
                raise ValueError(f"overlap: got {overlap}, which needs {count} samples of experience {j} "
                                 f"for experience {i}; experience {j} has {sizes[j]}")
        counts.append([(i, n - n_mix)] + list(zip(neighbours, shares)))

    def build(i: int) -> Experience:
        own = stream[i]
        rng = np.random.default_rng([seed, i])
        xs, ys, origin, classes = [], [], [], set()
        for j, count in counts[i]:
            exp = own if j == i else stream[j]
            index = rng.choice(exp.n_train, size=count, replace=False)
            xs.append(exp.train[0][index])
            ys.append(exp.train[1][index])
            origin.append(np.full(count, j))
            classes.update(_classes_of(exp, ys[-1]))
        order = rng.permutation(own.n_train)
        info = dict(own.info, source_experience=np.concatenate(origin)[order])
        train = (np.concatenate(xs)[order], np.concatenate(ys)[order])
        return dataclasses.replace(own, train=train, classes=tuple(sorted(classes)), info=info)

    return Stream(stream.task_ids, build, scenario=stream.scenario, n_outputs=stream.n_outputs,
                  n_heads=stream.n_heads, name=f"blurry-{stream.name}", info=stream.info)


# ---------------------------------------------------------------- power-law environment

def power_law_steps(n_tasks: int, exponent: float, budget: int, seed: int) -> list[tuple[int, ...]]:
    """The steps of a power-law environment: ``[(new_task, *rehearsed_tasks), ...]``.

    Step t (t = 0..n_tasks-1) first trains the new task t, then rehearses earlier
    tasks: ``budget`` draws are made, each picking task j < t with probability
    ``p_j ∝ Δ_j^(−exponent)``, where ``Δ_j >= 1`` is the number of steps since j was
    last trained (new or rehearsed); repeated draws are merged, so at most ``budget``
    distinct tasks are rehearsed per step, in the order first drawn. ``exponent = 0``
    gives uniform rehearsal.
    """
    n_tasks = _check_count("n_tasks", n_tasks, 1, _POSITION_BYTES, "steps")
    budget = _check_count("budget", budget, 0, 16, "draws of one step")  # a uniform float64 and an index each
    exponent = check_real("exponent", exponent, low=0)
    rng = np.random.default_rng(_check_int("seed", seed, 0))
    last_seen = np.zeros(n_tasks, dtype=np.int64)
    steps = []
    for t in range(n_tasks):
        rehearsed: list[int] = []
        if t > 0 and budget > 0:
            weights = (t - last_seen[:t]).astype(np.float64) ** (-float(exponent))
            draws = rng.choice(t, size=budget, p=weights / weights.sum())
            drawn, first = np.unique(draws, return_index=True)  # not a Python loop over `budget` draws
            rehearsed = drawn[np.argsort(first)].tolist()  # in the order first drawn
        last_seen[t] = t
        last_seen[rehearsed] = t
        steps.append((t, *rehearsed))
    return steps


def power_law_schedule(n_tasks: int, exponent: float, budget: int, seed: int) -> np.ndarray:
    """The task ids to train, in order: :func:`power_law_steps` flattened, shape (L,)."""
    steps = power_law_steps(n_tasks, exponent, budget, seed)
    return np.array([task for step in steps for task in step], dtype=np.int64)


def power_law_stream(stream: Stream, exponent: float, budget: int, seed: int) -> Stream:
    """A power-law environment over the tasks of ``stream`` (task j = ``stream[j]``).

    The experiences follow :func:`power_law_steps` with n_tasks = len(stream); each is
    the base experience of that task, with ``info["step"]`` and ``info["rehearsal"]``.
    """
    stream = _check_stream(stream)
    steps = power_law_steps(len(stream), exponent, budget, seed)
    entries = [(s, task, k > 0) for s, step in enumerate(steps) for k, task in enumerate(step)]

    def build(position: int) -> Experience:
        step, task, rehearsal = entries[position]
        base = stream[task]
        return dataclasses.replace(base, info=dict(base.info, step=step, rehearsal=rehearsal))

    return Stream([stream.task_ids[task] for _, task, _ in entries], build, scenario=stream.scenario,
                  n_outputs=stream.n_outputs, n_heads=stream.n_heads, heads=[stream.heads[t] for _, t, _ in entries],
                  name=f"power-law-{stream.name}", info=dict(stream.info, steps=steps))


# ---------------------------------------------------------------- SCoLe

def scole_stream(x_train, y_train, x_test, y_test, n_experiences: int, classes_per_experience: int,
                 *, class_distribution: str = "uniform", exponent: float | None = None,
                 samples_per_class: int | None = None, seed: int = 0) -> Stream:
    """SCoLe (scaling continual learning): many small tasks whose classes re-occur.

    Each of the ``n_experiences`` experiences (typically hundreds) draws
    ``classes_per_experience`` distinct classes without replacement from a class
    distribution: "uniform", or "zipf" — class of rank r (ranks from a permutation
    drawn from ``seed``) has probability ∝ (r + 1)^(−exponent), exponent 1 by default
    (an exponent with "uniform" is refused: it would be ignored). Training data are the
    training samples of those classes (``samples_per_class`` of each, drawn per
    experience, or all); evaluation data all their test samples. Labels stay global
    (class-incremental, one head); task_id is the position.
    ``info["class_probabilities"]`` of the stream maps class to probability.
    """
    x_train, y_train, x_test, y_test = _check_dataset(x_train, y_train, x_test, y_test)
    classes = _check_test_classes(y_train, y_test)
    per = _check_int("classes_per_experience", classes_per_experience, 1, classes.size)
    # each experience's drawn classes: an array (about 100 bytes) of `per` int64
    n_experiences = _check_count("n_experiences", n_experiences, 1, _POSITION_BYTES + 100 + 8 * per,
                                 f"drawn classes ({per} per experience)")
    if class_distribution not in ("uniform", "zipf"):
        raise ValueError(f"class_distribution: got {class_distribution!r}, expected 'uniform' or 'zipf'")
    if class_distribution == "uniform" and exponent is not None:
        raise ValueError(f"exponent: got {exponent!r}, expected None with class_distribution='uniform' "
                         "(the exponent shapes only 'zipf')")
    exponent = 1.0 if exponent is None else check_real("exponent", exponent, low=0)
    if samples_per_class is not None:
        smallest = int(np.bincount(y_train)[classes].min())
        samples_per_class = _check_int("samples_per_class", samples_per_class, 1, smallest)
    seed = _check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    ranks = np.empty(classes.size, dtype=np.int64)
    ranks[rng.permutation(classes.size)] = np.arange(classes.size)
    if class_distribution == "uniform":
        probabilities = np.full(classes.size, 1.0 / classes.size)
    else:
        weights = (ranks + 1.0) ** (-float(exponent))
        probabilities = weights / weights.sum()
        if np.count_nonzero(probabilities) < per:  # the weights of low ranks underflowed to 0
            raise ValueError(f"exponent: got {exponent}, which leaves {np.count_nonzero(probabilities)} of the "
                             f"{classes.size} classes a nonzero probability, expected at least "
                             f"classes_per_experience={per} (a smaller exponent)")
    drawn = [np.sort(rng.choice(classes, size=per, replace=False, p=probabilities))
             for _ in range(n_experiences)]

    def build(i: int) -> Experience:
        sample_rng = np.random.default_rng([seed, i])
        parts = []
        for c in drawn[i]:
            index = np.flatnonzero(y_train == c)
            if samples_per_class is not None:
                index = sample_rng.choice(index, size=samples_per_class, replace=False)
            parts.append(index)
        train = np.concatenate(parts)
        test = np.isin(y_test, drawn[i])
        return Experience(i, (x_train[train], y_train[train]), (x_test[test], y_test[test]),
                          tuple(drawn[i].tolist()))

    info = {"class_probabilities": {int(c): float(p) for c, p in zip(classes, probabilities)}}
    return Stream(range(n_experiences), build, scenario="class", n_outputs=int(classes.max()) + 1,
                  name=f"scole-{class_distribution}", info=info)


# ---------------------------------------------------------------- curricula as streams

def _is_masked_task(task) -> bool:
    return hasattr(task, "heads") and hasattr(task, "input_size")


class _EndAligned:
    """A seqcore task as an ``(x, y)`` sampler: each sequence is shifted right (zeros in
    front) so that its labelled last step is the final step of the batch.

    Sequence models of the continual loop read the final step, and zeros in front leave the
    labels of the N-parity and N-DMS tasks unchanged.  Only last-step tasks with one head
    can be aligned this way.
    """

    def __init__(self, task, length: int | None = None):
        heads = task.heads
        if len(heads) != 1 or heads[0].loss != "last":
            raise ValueError(f"task_factory: got a task with heads {[(h.name, h.loss) for h in heads]}, "
                             "expected one last-step classification head")
        low_high = getattr(task, "length_range", None)
        if length is not None and low_high is not None and length < low_high[1] - 1:
            # refused here, not when a long enough sequence happens to be drawn
            raise ValueError(f"length: got {length}, expected at least the longest sequence ({low_high[1] - 1} "
                             f"steps, from length_range {tuple(low_high)}) of task {task!r}")
        self.task = task
        self.length = length

    def sample(self, rng, batch_size):
        x, y, mask = self.task.sample(rng, batch_size)
        T = x.shape[1]
        last = T - 1 - np.argmax(mask[:, ::-1] > 0, axis=1)
        L = T if self.length is None else self.length
        if int(last.max()) + 1 > L:
            raise ValueError(f"length: got {L}, expected at least the longest sequence "
                             f"({int(last.max()) + 1} steps) of task {self.task!r}")
        out = np.zeros((x.shape[0], L) + x.shape[2:], x.dtype)
        for b in range(x.shape[0]):
            out[b, L - 1 - last[b]:] = x[b, : last[b] + 1]
        return out, y


def _declared_head(task):
    """The single head a seqcore task declares (None for other samplers, or several heads)."""
    try:
        heads = task.heads
    except (AttributeError, NotImplementedError):
        return None
    return heads[0] if isinstance(heads, tuple) and len(heads) == 1 and hasattr(heads[0], "output_size") else None


def curriculum_stream(task_factory: Callable[[int], Any], ns: Sequence[int], *, seed: int,
                      eval_size: int = 512, multi_head: bool = False, length: int | None = None) -> Stream:
    """A curriculum as a stream: experience i samples from ``task_factory(ns[i])``.

    E.g. N-parity with ns = (2, 3, 4, ...). Each task object needs
    ``sample(rng, batch_size) -> (x, y)`` (duck typing); it becomes the experience's
    sampler. A fixed evaluation set of ``eval_size`` samples (read-only arrays) is drawn
    per experience when the stream is built, from ``seed``. Single head by default (the
    single-head curriculum, scenario "domain"); ``multi_head`` gives head i to experience i.
    ``info["n"]`` holds the experience's N; classes are the labels of its eval set.
    seqcore tasks with a last-step mask (N-parity, N-DMS) are end-aligned: each sequence
    is shifted right, zeros in front, so its labelled step is the batch's last step;
    ``length`` pads every batch to that many steps (fixed-shape batches, as replay
    buffers need; at least ``length_range[1] - 1``, the longest sequence a task may draw,
    checked when built; default: the batch's own longest sequence).
    """
    if not callable(task_factory):
        raise TypeError(f"task_factory: got {type(task_factory).__name__}, expected a callable n -> task")
    if isinstance(ns, np.ndarray):
        ns = ns.tolist()
    if isinstance(ns, (str, bytes)) or not isinstance(ns, Sequence) or len(ns) == 0:
        raise ValueError(f"ns: got {ns!r}, expected a non-empty sequence of ints")
    ns = [_check_int(f"ns[{i}]", n, 0) for i, n in enumerate(ns)]
    seed = _check_int("seed", seed, 0)
    multi_head = check_bool("multi_head", multi_head)
    eval_size = _check_int("eval_size", eval_size, 1)
    if length is not None:
        length = _check_int("length", length, 1)
    experiences, held, declared = [], 0, []
    for i, n in enumerate(ns):
        task = task_factory(n)
        if not callable(getattr(task, "sample", None)):
            raise TypeError(f"task_factory({n}): got {type(task).__name__}, "
                            "expected an object with sample(rng, batch_size)")
        # a task that declares its classifier head gives the number of outputs: the evaluation
        # labels may not show every class (a 2-class task whose few labels are all 0)
        head = _declared_head(task)
        if head is not None and head.loss != "regression":
            declared.append(int(head.output_size))
        if _is_masked_task(task):
            task = _EndAligned(task, length)
        elif length is not None:
            raise ValueError(f"length: got {length}, expected None for task_factory({n}), which is not a "
                             "seqcore sequence task with a last-step mask")
        # one sample, from a generator of its own, tells the size of the evaluation set to come
        probe = task.sample(np.random.default_rng([seed, i, 1]), 1)
        if isinstance(probe, (tuple, list)):  # else the check of the evaluation batch below says what is wrong
            held += eval_size * sum(np.asarray(a).nbytes for a in probe)
            check_fits_in_memory("eval_size", eval_size, held, f"evaluation sets (experiences 0..{i})")
        batch = task.sample(np.random.default_rng([seed, i]), eval_size)
        batch = tuple(batch) if isinstance(batch, list) else batch
        x, y = _check_pair(f"task_factory({n}).sample", batch, integer_labels=False)
        if x.shape[0] != eval_size:
            raise ValueError(f"task_factory({n}).sample: got {x.shape[0]} samples, expected {eval_size}")
        if np.issubdtype(y.dtype, np.integer) and y.size and y.min() < 0:
            raise ValueError(f"task_factory({n}).sample: got a negative label ({int(y.min())}), "
                             "expected class labels >= 0")
        classes = tuple(np.unique(y).tolist()) if np.issubdtype(y.dtype, np.integer) else ()
        for a in (x, y):  # the same arrays on every access: an edit in place would change later ones
            a.setflags(write=False)
        experiences.append(Experience(i, task, (x, y), classes, head=i if multi_head else 0,
                                      info={"n": n}))
    labels = [c for e in experiences for c in e.classes]
    n_outputs = max(declared + [max(labels) + 1 if labels else 0]) or None
    # a fresh info dict per access, as the other streams build one
    return Stream(range(len(ns)), lambda i: dataclasses.replace(experiences[i], info=dict(experiences[i].info)),
                  scenario="task" if multi_head else "domain",
                  n_outputs=n_outputs,
                  n_heads=len(ns) if multi_head else 1, name="curriculum")
