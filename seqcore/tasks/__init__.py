"""Tasks (data generators and data sets) and curricula.

``make(name, **fields)`` builds a task by its command-line name; ``names()``
lists them; ``describe(name)`` gives a one-line summary. Every task is a frozen
dataclass with a ``seed``; ``task.sample(rng, batch_size)`` returns a
``Batch(x, y, mask)`` of NumPy arrays (conventions in ``seqcore.tasks.base``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .base import (Batch, DatasetTask, Head, Task, check_choice, concat, head_targets,
                   last_step_index, take)
from .idx import DatasetError, ImageTask, read_idx, write_idx
from .lorenz import Lorenz96Task
from .memory import AddingTask, FlipFlopTask, SetDisjointnessTask
from .mnist1d import MNIST1DTask
from .parity import NDMSTask, NParityTask
from .recall import CopyTask, MQARTask, PasskeyTask, SelectiveCopyTask
from .state_tracking import DEGREES, PermutationTask, ZnTask
from .curricula import Curriculum, curriculum_names, make_curriculum

__all__ = [
    "Batch", "Head", "Task", "DatasetTask", "DatasetError", "make", "names", "describe", "fields", "config",
    "last_step_index", "head_targets", "take", "concat", "read_idx", "write_idx",
    "NParityTask", "NDMSTask", "CopyTask", "SelectiveCopyTask", "AddingTask", "MQARTask",
    "SetDisjointnessTask", "PasskeyTask", "FlipFlopTask", "PermutationTask", "ZnTask",
    "Lorenz96Task", "ImageTask", "MNIST1DTask",
    "Curriculum", "make_curriculum", "curriculum_names",
]

# name -> (class, fields fixed by the name)
_REGISTRY: dict[str, tuple[type, dict[str, Any]]] = {
    "nparity": (NParityTask, {}),
    "ndms": (NDMSTask, {}),
    "copy": (CopyTask, {}),
    "selective-copy": (SelectiveCopyTask, {}),
    "adding": (AddingTask, {}),
    "mqar": (MQARTask, {}),
    "set-disjointness": (SetDisjointnessTask, {}),
    "passkey": (PasskeyTask, {}),
    "flip-flop": (FlipFlopTask, {}),
    # every degree has its name (the name PermutationTask.name gives), so config(task) round-trips
    **{f"s{k}": (PermutationTask, {"degree": k}) for k in DEGREES},
    "zn": (ZnTask, {}),
    "lorenz96": (Lorenz96Task, {}),
    "image": (ImageTask, {}),
    "mnist1d": (MNIST1DTask, {}),
}


def names() -> tuple[str, ...]:
    """The task names accepted by ``make`` (the command-line names)."""
    return tuple(_REGISTRY)


def _lookup(name: str) -> tuple[type, dict[str, Any]]:
    return _REGISTRY[check_choice("task", name, _REGISTRY)]


def fields(name: str) -> dict[str, Any]:
    """The settable fields of task ``name`` and their defaults."""
    cls, fixed = _lookup(name)
    return {f.name: f.default for f in dataclasses.fields(cls) if f.name not in fixed}


def describe(name: str) -> str:
    """One line saying what task ``name`` is."""
    cls, _ = _lookup(name)
    return " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())


def make(name: str, **kwargs: Any) -> Task:
    """Build the task called ``name`` with the given fields, e.g.
    ``make("nparity", n=[2, 3, 4])`` or ``make("image", dataset="mnist", order="pixel")``.

    Unknown names and fields raise ValueError listing the valid ones.
    """
    cls, fixed = _lookup(name)
    allowed = fields(name)
    for key, value in fixed.items():
        given = kwargs.pop(key, value)
        if given != value:
            raise ValueError(f"{name}: got {key}={given!r}, expected no {key} or "
                             f"{key}={value!r} (fixed by the name {name!r})")
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: got unknown field(s) {', '.join(unknown)}, "
                         f"expected some of {', '.join(allowed)}")
    return cls(**fixed, **kwargs)


def config(task: Task) -> dict[str, Any]:
    """``{"name": ..., field: value, ...}`` of ``task``, JSON-friendly (tuples as
    lists); ``make(**config(task))`` builds an equal task."""
    if not isinstance(task, Task):
        raise TypeError(f"task: got {type(task).__name__}, expected a seqcore task")
    out: dict[str, Any] = {"name": task.name}
    for f in dataclasses.fields(task):
        value = getattr(task, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
