"""The training loop: any task, curriculum, cell, optimizer, schedule and backend.

``train(config, out=DIR)`` runs a :class:`TrainConfig` and writes a run directory
(see :mod:`seqcore.runs`); ``resume(DIR)`` continues an interrupted run and ends with
exactly the parameters of an uninterrupted one (the data RNG, optimizer state,
curriculum state and step are all in the checkpoint).

Learners plug in through :class:`Hooks`: they can replace a batch (replay), add loss
terms (regularisers, distillation), transform gradients (projections), and act after
each step.  :class:`Trainer` is the single-step engine reused by continual learning.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import backends, optim
from .autodiff import vjp
from .models import HeadSpec, SequenceModel
from .run_schedules import SCHEDULES, check_schedule_kwargs, complete_grad_norms, recorded_grad_norms, run_schedule
from .runs import (JsonConfig, RunDir, check_finite_params, checkpoint_meta, first_nonfinite, load_checkpoint, params_from_arrays,
                   params_to_arrays, read_json_object, restoring, save_checkpoint, write_json)
from .tree import tree_leaves, tree_map, tree_paths
from .validate import (INT64_MAX, is_finite_number, is_integer, check_bool, check_choice, check_fits_in_memory, check_model_fits,
                       check_positive_int, parameter_count, physical_memory)

__all__ = ["TrainConfig", "Hooks", "Trainer", "TrainingDiverged", "Run", "load_run", "train", "resume", "build_optimizer",
           "request_interrupt", "interrupt_requested", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw", "rmsprop", "adagrad")
DTYPES = {"float32": np.float32, "float64": np.float64}
# parameter-sized arrays alive at the peak of a training step: measured 9.5-11.1 with Adam (the
# parameters, gradients, two moments, their successors and the update transforms' temporaries), 7-8 with SGD
MODEL_COPIES = 12
BATCH_FLOATS = 4  # floats per hidden unit and step that any cell's forward + backward holds at least
EARLY_STOPS = ("curriculum-finished", "target-reached")  # statuses of runs that stopped before their budget


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN/Inf; a run with a directory keeps its last good checkpoint."""

    def __init__(self, step: int, what: str, after: bool = False):
        what = what if after else f"{what} of the next update"
        super().__init__(f"training diverged after step {step}: {what} is not finite")
        self.step = step


def diverged_message(exc: TrainingDiverged, kept_checkpoint: bool) -> str:
    """What a run's summary says of a divergence: the checkpoint only where one is written."""
    kept = "; the last good checkpoint was kept" if kept_checkpoint else ""
    return f"{exc}{kept} (try a lower learning rate or gradient clipping)"


DEFAULT_MOMENTUM = 0.9  # TrainConfig.momentum, which only MOMENTUM_OPTIMIZERS read
MOMENTUM_OPTIMIZERS = ("sgd", "nesterov")


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """Everything that defines a run (saved as ``config.json``)."""

    task: str = "nparity"
    task_kwargs: dict = field(default_factory=dict)
    curriculum: str = "fixed"
    curriculum_kwargs: dict = field(default_factory=dict)
    cell: str = "lstm"
    cell_kwargs: dict = field(default_factory=dict)
    hidden: int = 64
    layers: int = 1
    backend: str = "numpy"
    mode: str = "sequential"
    optimizer: str = "adam"
    lr: float = 1e-2
    schedule: str = "constant"
    schedule_kwargs: dict = field(default_factory=dict)
    warmup: int = 0
    steps: int = 1000
    batch_size: int = 64
    seed: int = 0
    clip: float | None = 1.0
    weight_decay: float = 0.0
    momentum: float = DEFAULT_MOMENTUM  # read by sgd and nesterov only
    eval_every: int = 50
    eval_batches: int = 4
    eval_batch_size: int = 256
    target_accuracy: float | None = None
    checkpoint_every: int | None = None  # default: every evaluation
    dtype: str = "float32"

    def __post_init__(self):
        from . import cells, tasks
        check_choice("task", self.task, tasks.names())
        check_choice("curriculum", self.curriculum, tasks.curriculum_names())
        check_choice("cell", self.cell, cells.names())
        check_choice("backend", self.backend, backends.names())
        check_choice("mode", self.mode, ("sequential", "parallel"))
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_schedule_kwargs(self.schedule, self.schedule_kwargs)
        check_choice("dtype", self.dtype, tuple(DTYPES))
        for name in ("hidden", "layers", "batch_size", "eval_every", "eval_batches", "eval_batch_size"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("steps", self.steps, maximum=INT64_MAX)
        check_positive_int("seed", self.seed, minimum=0)
        if not (is_finite_number(self.lr) and self.lr > 0):
            raise ValueError(f"lr: got {self.lr!r}, expected a positive finite number")
        # checked here, not only when the optimizer is built: a bad value must fail before the run starts
        if self.clip is not None and not (is_finite_number(self.clip) and self.clip > 0):
            raise ValueError(f"clip: got {self.clip!r}, expected a positive finite number or None")
        if not (is_finite_number(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay: got {self.weight_decay!r}, expected a finite number >= 0")
        if not (is_finite_number(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum: got {self.momentum!r}, expected a number in [0, 1)")
        if self.optimizer not in MOMENTUM_OPTIMIZERS and self.momentum != DEFAULT_MOMENTUM:
            # the default is every config's (config.json records it); another value would be ignored
            raise ValueError(f"momentum: got {self.momentum!r} with optimizer {self.optimizer!r}, which does not "
                             f"use momentum; expected optimizer 'sgd' or 'nesterov', or the default {DEFAULT_MOMENTUM}")
        if self.optimizer == "nesterov" and self.momentum == 0:
            raise ValueError(f"momentum: got {self.momentum!r} with optimizer 'nesterov', expected a number in (0, 1)")
        if self.target_accuracy is not None and not (is_finite_number(self.target_accuracy)
                                                     and 0 < self.target_accuracy <= 1):
            raise ValueError(f"target_accuracy: got {self.target_accuracy!r}, expected a number in (0, 1] or None")
        check_positive_int("warmup", self.warmup, minimum=0)
        if self.warmup >= self.steps:
            raise ValueError(f"warmup: got {self.warmup}, expected 0 <= warmup < steps={self.steps}")
        if self.checkpoint_every is not None:
            check_positive_int("checkpoint_every", self.checkpoint_every)
        for name in ("task_kwargs", "curriculum_kwargs", "cell_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name}: got {type(getattr(self, name)).__name__}, expected a dict")
        if "seed" in self.task_kwargs:  # the run passes its own seed to the task (one seed per run)
            raise ValueError(f"task_kwargs: got seed={self.task_kwargs['seed']!r}, expected no seed: the task's "
                             "seed is the run's `seed` field (--seed on the command line)")
        settable = [k for k in tasks.fields(self.task) if k != "seed"]
        unknown = sorted(set(self.task_kwargs) - set(settable))
        if unknown:  # tasks.make would say so too, but offer the seed it refuses here
            raise ValueError(f"task_kwargs: got unknown field(s) {', '.join(unknown)} for the {self.task!r} task, "
                             f"expected some of {', '.join(settable)}")




def build_schedule(cfg: TrainConfig, refined_norms: np.ndarray | None = None) -> Callable[[int], float]:
    """The learning rate of ``cfg`` at each step: ``cfg.schedule`` over ``cfg.steps``, after a linear
    warmup from 0 over ``cfg.warmup`` steps, its fields from ``cfg.schedule_kwargs``
    (:func:`seqcore.run_schedules.run_schedule`; ``refined_norms``: the gradient norms ``refined``
    refines, instead of reading them from its ``from_run``)."""
    return run_schedule(cfg.schedule, cfg.lr, cfg.steps, cfg.warmup, cfg.schedule_kwargs, norms=refined_norms)


def build_optimizer(cfg: TrainConfig, refined_norms: np.ndarray | None = None) -> optim.GradientTransformation:
    """The optimizer of ``cfg`` (with global-norm clipping first when ``cfg.clip`` is set)."""
    lr = build_schedule(cfg, refined_norms)
    name = cfg.optimizer
    if name in MOMENTUM_OPTIMIZERS:
        opt = optim.sgd(lr, momentum=cfg.momentum, nesterov=name == "nesterov", weight_decay=cfg.weight_decay)
    elif name == "adam":
        opt = optim.adam(lr, weight_decay=cfg.weight_decay)
    elif name == "adamw":
        opt = optim.adamw(lr, weight_decay=cfg.weight_decay)
    elif name == "rmsprop":
        opt = optim.rmsprop(lr, weight_decay=cfg.weight_decay)
    else:
        opt = optim.adagrad(lr, weight_decay=cfg.weight_decay)
    opt = optim.chain(optim.clip_by_global_norm(cfg.clip), opt) if cfg.clip else opt
    return optim.flatten(opt)  # one vector instead of dozens of small leaves: 4x less optimizer time


def merge_tree_state(arrays, params, prefix: str = "opt_state/") -> dict:
    """A checkpoint's optimizer state as :func:`optim.flatten` keeps it: per-parameter entries
    (``opt_state/1/0/mu/cell/weight_hh``, written before the optimizers were flattened) are joined
    into one vector per moment (``opt_state/1/0/mu``), in the parameters' leaf order, so that such
    runs still resume. Other entries pass unchanged."""
    paths = [path for path, _ in tree_paths(params)]
    merged = {k: arrays[k] for k in arrays.keys()}
    if not paths:
        return merged
    groups = {k[: -len(paths[0]) - 1] for k in merged if k.startswith(prefix) and k.endswith("/" + paths[0])}
    for base in groups:
        keys = [f"{base}/{q}" for q in paths]
        if base not in merged and all(k in merged for k in keys):
            merged[base] = np.concatenate([np.asarray(merged.pop(k)).reshape(-1) for k in keys])
    return merged


class Hooks:
    """Extension points of :class:`Trainer` (no-ops here; learners override them)."""

    def prepare_batch(self, trainer: "Trainer", batch):
        """Return the batch to train on (replay learners mix in stored samples)."""
        return batch

    def extra_loss(self, trainer: "Trainer", params, batch):
        """A differentiable scalar added to the task loss (or ``None``)."""
        return None

    def transform_grads(self, trainer: "Trainer", grads, batch):
        """Return the gradients the optimizer sees (projection learners edit them)."""
        return grads

    def transform_updates(self, trainer: "Trainer", updates):
        """Return the parameter updates to apply, after the optimizer: a learner that holds
        parameters fixed or projects steps edits them here, where momentum, Adam's scaling or
        weight decay can no longer move what it holds."""
        return updates

    def after_step(self, trainer: "Trainer", batch, loss: float) -> None:
        """Called after each update (``trainer.params`` holds the new parameters)."""

    def on_evaluate(self, run, record: dict) -> dict | None:
        """Called at each evaluation of a curriculum run; returned keys are added to the
        ``metrics.jsonl`` record (e.g. accuracies on earlier N, statistics of parameters)."""
        return None

    def on_advance(self, run, previous_level: int, level: int) -> None:
        """Called when the curriculum moves from ``previous_level`` (its N) to ``level``, after
        the evaluation that decided it and before the first step there: the place to act
        between tasks (consolidate importances, snapshot the parameters in ``run.trainer``)."""


def _leaves_vector(tree, to_numpy) -> np.ndarray:
    """Every leaf side by side in one NumPy vector: one check over it is 3x faster than one per leaf
    for a 66-leaf model (float32 beside float64 promotes, which keeps every Inf and NaN)."""
    leaves = [np.ravel(to_numpy(g)) for g in tree_leaves(tree)]
    return np.concatenate(leaves) if leaves else np.zeros(0)


def _all_finite(tree, to_numpy) -> bool:
    """No NaN or Inf in any leaf."""
    return bool(np.isfinite(_leaves_vector(tree, to_numpy)).all())


class Trainer:
    """One optimisation step at a time: loss → gradients → hooks → NaN guard → update.

    Args:
        loss_fn: ``loss_fn(params, batch) -> differentiable scalar``.
        params: initial parameters (arrays of ``backend``).
        optimizer: a :class:`seqcore.optim.GradientTransformation`.
        backend: backend name.
        hooks: a :class:`Hooks` (learner); default none.
        constrain: ``params -> params`` applied after every update (projected gradient
            descent, e.g. ``SequenceModel.constrain``); default none.
    """

    def __init__(self, loss_fn, params, optimizer, backend: str = "numpy", hooks: Hooks | None = None,
                 constrain: Callable | None = None):
        # checked here: a bad one would otherwise fail at the first step, after a run directory was written
        if not callable(loss_fn):
            raise TypeError(f"loss_fn: got {type(loss_fn).__name__}, expected a callable loss_fn(params, batch)")
        if not isinstance(optimizer, optim.GradientTransformation):
            raise TypeError(f"optimizer: got {type(optimizer).__name__}, expected a seqcore.optim "
                            "GradientTransformation (e.g. optim.adam(1e-3))")
        if hooks is not None and not isinstance(hooks, Hooks):
            raise TypeError(f"hooks: got {type(hooks).__name__}, expected a seqcore.train.Hooks (or a learner) or None")
        if constrain is not None and not callable(constrain):
            raise TypeError(f"constrain: got {type(constrain).__name__}, expected a callable params -> params or None")
        self.constrain = constrain
        self.loss_fn = loss_fn
        self.backend = backends.get(backend)
        bad = next((path for path, v in tree_paths(params)
                    if not np.isfinite(np.asarray(self.backend.to_numpy(v))).all()), None)
        if bad is not None:  # else the first step would report a divergence, with no good checkpoint to keep
            raise ValueError(f"params[{bad!r}]: got NaN or inf in the initial parameters, expected finite values")
        self.params = params
        self.optimizer = optimizer
        self.opt_state = optimizer.init(params)
        self.hooks = hooks if hooks is not None else Hooks()
        self.step_count = 0
        self.grad_norm = float("nan")  # global norm of the last step's gradients (before clipping)

    def state_arrays(self) -> dict:
        """Parameters and optimizer state as NumPy arrays for a checkpoint (the step goes in its meta).

        Raises :class:`TrainingDiverged` when the optimizer state is not finite (see
        :meth:`checked_state`): the last good checkpoint is kept."""
        arrays = params_to_arrays(self.params, to_numpy=self.backend.to_numpy)
        arrays.update(self.checked_state())
        return arrays

    def checked_state(self) -> dict:
        """The optimizer state as NumPy arrays; :class:`TrainingDiverged` when it is not finite.
        The loops check it at every evaluation and checkpoint (an overflowed second moment makes
        every later Adam update zero: the parameters freeze while loss and gradients stay finite)."""
        state = optim.state_to_arrays(self.opt_state)
        bad = first_nonfinite(state)
        if bad is not None:
            raise TrainingDiverged(self.step_count, f"the optimizer state ({bad})", after=True)
        return state

    def load_state_arrays(self, arrays: dict, step: int) -> None:
        """Inverse of :meth:`state_arrays`, with the step count saved beside them."""
        self.params = params_from_arrays(self.params, arrays, asarray=self.backend.asarray)
        try:
            self.opt_state = optim.state_from_arrays(self.opt_state, arrays)
        except ValueError:  # a checkpoint from before the optimizers were flattened?
            merged = merge_tree_state(arrays, self.params)
            if len(merged) == len(arrays):
                raise
            self.opt_state = optim.state_from_arrays(self.opt_state, merged)
        self.step_count = int(step)

    def to_backend(self, batch):
        """Move a NumPy batch ``(x, y, mask)`` to the trainer's backend (float parts in the params' dtype)."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 3:
            raise TypeError(f"batch: got {type(batch).__name__}, expected a tasks.Batch or an (x, y, mask) tuple")
        x, y, mask = batch
        return type(batch)(self.backend.asarray(x), y, mask) if hasattr(batch, "_fields") else (
            self.backend.asarray(x), y, mask)

    def step(self, batch) -> float:
        with backends.use(self.backend.name):
            return self._step(batch)

    def _step(self, batch) -> float:
        batch = self.hooks.prepare_batch(self, batch)
        dev_batch = self.to_backend(batch)

        def total(p):
            loss = self.loss_fn(p, dev_batch)
            if tuple(getattr(loss, "shape", ())) != ():
                raise ValueError(f"loss_fn: returned shape {tuple(loss.shape)}, expected a scalar loss "
                                 "(reduce it, e.g. with ops.mean)")
            extra = self.hooks.extra_loss(self, p, batch)
            return loss if extra is None else loss + extra

        value, pullback = vjp(total, self.params)
        loss = float(self.backend.to_numpy(value))
        if not math.isfinite(loss):
            raise TrainingDiverged(self.step_count, "the loss")
        (grads,) = pullback(self.backend.xp.ones_like(value))
        grads = self.hooks.transform_grads(self, grads, batch)
        flat = _leaves_vector(grads, self.backend.to_numpy)
        if not np.isfinite(flat).all():
            raise TrainingDiverged(self.step_count, "a gradient")
        with np.errstate(over="ignore"):  # float32 squares overflow from |g| ≈ 1.8e19: optim.global_norm rescales
            squares = float(np.dot(flat, flat))
        # an overflow (inf) or squares small enough to have lost digits: optim.global_norm rescales
        rescale = squares == math.inf or squares < optim.RESCALED_NORM_BELOW
        self.grad_norm = optim.global_norm(flat) if rescale else math.sqrt(squares)
        if not math.isfinite(self.grad_norm):  # a norm beyond the float64 range
            raise TrainingDiverged(self.step_count, "the gradient norm")
        del flat  # a parameter-sized copy: not kept alive through the update
        # the new state is kept only with the new parameters: a caller that catches the divergence
        # still holds a consistent trainer (the state of the last good step)
        updates, new_state = self.optimizer.update(grads, self.opt_state, self.params)
        updates = self.hooks.transform_updates(self, updates)
        new_params = optim.apply_updates(self.params, updates)
        if self.constrain is not None:
            new_params = self.constrain(new_params)
        if not _all_finite(new_params, self.backend.to_numpy):
            raise TrainingDiverged(self.step_count, "a parameter")
        self.params, self.opt_state = new_params, new_state
        self.step_count += 1
        self.hooks.after_step(self, batch, loss)
        return loss


# -- runs --------------------------------------------------------------------------------------

# the model holds a head for every N its curriculum may reach, each built up front (about 0.25 ms
# and 640 bytes apiece besides its parameters, measured): a bound on their number keeps an absurd
# max_n from building for hours, and HEAD_BYTES (a lower bound of that memory) from an out-of-memory kill
MAX_HEADS = 100_000
HEAD_BYTES = 512


def _n_range(curriculum) -> tuple[int, int]:
    """The smallest and largest N a curriculum over N may reach."""
    lo = min(curriculum.min_n, curriculum.start_n)
    return lo, curriculum.max_n if curriculum.max_n is not None else curriculum.start_n


def _check_head_count(cfg: TrainConfig, task, curriculum) -> None:
    """Refuse a curriculum over N whose heads (one per N it may reach) are too many to build, or
    could not fit in memory, before any is built; the error names the field that set the top N."""
    if not hasattr(curriculum, "n"):
        return
    lo, hi = _n_range(curriculum)
    name = "max_n" if curriculum.max_n is not None else "start_n"
    count = hi - lo + 1
    if count > MAX_HEADS:
        raise ValueError(f"{name}: got {hi}, which needs {count} heads (one per N from {lo} to {hi}, all built with "
                         f"the model), expected at most {MAX_HEADS} heads ({name} <= {lo + MAX_HEADS - 1})")
    h = dataclasses.replace(task, n=lo, n_max=None).heads[0]  # the tasks over N: one output size for every N
    first = HeadSpec(h.name, h.output_size, h.loss, h.tolerance)
    itemsize = np.dtype(DTYPES[cfg.dtype]).itemsize

    def one_head(hidden, layers=cfg.layers):
        return SequenceModel(cfg.cell, task.input_size, hidden, (first,), num_layers=layers,
                             cell_kwargs=tuple(sorted(cfg.cell_kwargs.items())))
    # a stack too large with one head is the hidden size's (or the depth's) fault, not the heads'
    check_model_fits("hidden", cfg.hidden, one_head, itemsize, MODEL_COPIES, cfg.layers)
    rest = parameter_count(one_head, cfg.hidden, layers=cfg.layers) * itemsize * MODEL_COPIES
    per_head = HEAD_BYTES + (cfg.hidden + 1) * first.output_size * itemsize * MODEL_COPIES
    check_fits_in_memory(name, hi, rest + (count - 1) * per_head,
                         f"{count} heads (one per N from {lo}; {per_head} bytes each at hidden {cfg.hidden}, with "
                         "their gradients and optimizer state) and the rest of the model")


def _potential_heads(task, curriculum) -> tuple:
    """Every head the curriculum may ever use (so the parameter tree never changes shape)."""
    if not hasattr(curriculum, "n"):
        return tuple(HeadSpec(h.name, h.output_size, h.loss, h.tolerance) for h in curriculum.heads())
    lo, hi = _n_range(curriculum)
    heads = []
    for n in range(lo, hi + 1):
        h = dataclasses.replace(task, n=n, n_max=None).heads[0]
        heads.append(HeadSpec(h.name, h.output_size, h.loss, h.tolerance))
    return tuple(heads)


def model_builder(cfg: TrainConfig, task):
    """``(curriculum, build)`` of a run: its curriculum, and ``build(hidden)`` giving its
    :class:`SequenceModel` with every head the curriculum may use, at that hidden size."""
    from . import tasks
    ckw = dict(cfg.curriculum_kwargs)
    if cfg.curriculum in ("single-head", "multi-head", "sliding", "anti") and not hasattr(task, "ns"):
        raise ValueError(f"curriculum: got {cfg.curriculum!r} with task {cfg.task!r}, expected a task with "
                         "an N (nparity, ndms) for the N-curricula; use 'fixed' or 'cyclical' here")
    if cfg.curriculum in ("single-head", "multi-head", "sliding") and "max_n" in ckw and ckw["max_n"] is None:
        # the curriculum's "no limit": the model would hold heads up to start_n only, and fail at the first advance
        raise ValueError(f"max_n: got None for the {cfg.curriculum!r} curriculum of a run, expected an int >= start_n: "
                         "the model holds a head for every N up to max_n (leave max_n out for the default, 30 past "
                         "the larger of start_n and the task's largest N)")
    if cfg.curriculum in ("single-head", "multi-head", "sliding") and "max_n" not in ckw:
        # heads are created up front for N up to max_n: by default 30 past the first N
        start = ckw.get("start_n")
        first = int(start) if is_integer(start) else min(task.ns)  # a bad start_n: the curriculum names it
        ckw["max_n"] = max(max(task.ns), first) + 30
    curriculum = tasks.make_curriculum(cfg.curriculum, task, **ckw)
    _check_head_count(cfg, task, curriculum)  # before one task object per N is made
    heads = _potential_heads(task, curriculum)
    if cfg.target_accuracy is not None and all(h.loss == "regression" and h.tolerance is None for h in heads):
        raise ValueError(f"target_accuracy: got {cfg.target_accuracy} with task {cfg.task!r}, whose heads report "
                         "no accuracy (regression without a tolerance); expected no target (None; `--target-accuracy none`, "
                         "null in a config file)")
    # generalised teacher forcing (lorenz96's alpha): the model runs closed-loop, step by step
    feedback = task.alpha if callable(getattr(task, "mix", None)) and task.alpha != 1 else None
    if feedback is not None and cfg.mode != "sequential":
        raise ValueError(f"mode: got {cfg.mode!r} with task {cfg.task!r} alpha={feedback}, expected 'sequential' "
                         "(generalised teacher forcing feeds each forecast back into the next step)")

    def build(hidden, layers=cfg.layers):  # layers: for validate.parameter_count's small stacks
        return SequenceModel(cfg.cell, task.input_size, hidden, heads, num_layers=layers,
                             cell_kwargs=tuple(sorted(cfg.cell_kwargs.items())), feedback=feedback)
    return curriculum, build


def check_sizes(cfg: TrainConfig, task, build) -> None:
    """Refuse a hidden size whose parameters, or batch sizes whose activations, could never fit
    in this machine's memory (the hidden size first: when it is the cause, it is named), and an
    evaluation too large to finish (:func:`check_eval_count`)."""
    check_model_fits("hidden", cfg.hidden, build, np.dtype(DTYPES[cfg.dtype]).itemsize, MODEL_COPIES, cfg.layers)
    for name in ("batch_size", "eval_batch_size"):
        check_batch_fits(name, getattr(cfg, name), cfg, task)
    check_eval_count(cfg.eval_batches, cfg.eval_batch_size, task)


# batches are scored one at a time, so their number costs time, not memory: at the fastest measured
# (0.6 µs a sequence: nparity, hidden 1, NumPy) this many take a minute, at every evaluation; most runs
# take far longer per sequence. A larger evaluation would look like a hang, with no message
MAX_EVAL_SEQUENCES = 10**8


def check_eval_count(num_batches: int, batch_size: int, task, names: tuple[str, str] = ("eval_batches",
                                                                                       "eval_batch_size")) -> None:
    """Refuse an evaluation of more than :data:`MAX_EVAL_SEQUENCES` sequences (``num_batches`` ×
    ``batch_size``; a data set's stops at the end of its test split). ``names``: the fields that
    set the two numbers, for the error."""
    batches_name, size_name = names
    check_positive_int(batches_name, num_batches)
    check_positive_int(size_name, batch_size)
    total = num_batches * batch_size
    if total <= MAX_EVAL_SEQUENCES:
        return
    split = task.num_examples("test")  # None for generated tasks (read only here: it may load a data set)
    if split is not None and split <= MAX_EVAL_SEQUENCES:
        return
    if batch_size > MAX_EVAL_SEQUENCES:
        raise ValueError(f"{size_name}: got {batch_size}, expected at most {MAX_EVAL_SEQUENCES} sequences per "
                         "evaluation (an evaluation that large would run for hours)")
    raise ValueError(f"{batches_name}: got {num_batches}, expected at most {MAX_EVAL_SEQUENCES // batch_size} batches "
                     f"of {size_name}={batch_size}: at most {MAX_EVAL_SEQUENCES} sequences per evaluation (an "
                     "evaluation that large would run for hours)")


class Run:
    """A training run assembled from a config: task, curriculum, model, trainer and RNG.

    ``train`` and ``resume`` drive it; :func:`load_run` rebuilds one from a run directory.
    Attributes: ``cfg``, ``task``, ``curriculum``, ``model``, ``trainer`` (parameters in
    ``trainer.params``, the step in ``trainer.step_count``) and ``history`` (evaluations).
    ``evaluate(task=None, heads=None, batches=None)`` gives the per-head loss and accuracy.
    """

    def __init__(self, cfg: TrainConfig, hooks: Hooks | None = None, *, refined_norms: np.ndarray | None = None):
        from . import tasks
        self.cfg = cfg
        # the refined schedule's gradient norms, read once and kept in this run's checkpoints: a resumed
        # run follows its own schedule whatever becomes of from_run (overwritten, even by this run)
        self.refined_norms = refined_norms
        if cfg.schedule == "refined" and refined_norms is None:
            self.refined_norms = recorded_grad_norms(cfg.schedule_kwargs["from_run"])
        self.task = tasks.make(cfg.task, seed=cfg.seed, **cfg.task_kwargs)
        self.curriculum, build = model_builder(cfg, self.task)
        check_sizes(cfg, self.task, build)
        self.model = build(cfg.hidden)
        self.be = backends.get(cfg.backend)
        init = self.model.init(np.random.default_rng([cfg.seed, 0]), DTYPES[cfg.dtype])
        params = tree_map(self.be.asarray, init)
        self.schedule = build_schedule(cfg, self.refined_norms)  # the optimizer builds its own; this one is for the log
        self.trainer = Trainer(self.loss, params, build_optimizer(cfg, self.refined_norms), cfg.backend, hooks,
                               constrain=self.model.constrain)
        self.rng = np.random.default_rng([cfg.seed, 1])
        self.history: list[dict] = []
        self.elapsed = 0.0  # seconds of training before this process (from the checkpoint)
        self.stopped: str | None = None  # an early stop (EARLY_STOPS) reached at the checkpointed step
        self.grad_norms: list[float] = []  # per step: what the refined schedule of a later run reads

    def active(self) -> list[str]:
        return [h.name for h in self.curriculum.heads()]

    def loss(self, params, batch):
        return self.model.loss(params, batch, self.cfg.mode, heads=self.active())

    def evaluate(self, task=None, heads=None, batches=None) -> dict:
        """Mean per-head loss/accuracy over sequences on ``batches`` (default: ``task``'s
        evaluation batches; ``task`` defaults to the current task, ``heads`` to its heads)."""
        cfg = self.cfg
        task = self.curriculum.current_task() if task is None else task
        heads = self.active() if heads is None else heads
        if batches is None:
            batches = task.eval_batches(cfg.eval_batch_size, cfg.eval_batches)
        per_head: dict[str, dict] = {}
        n = 0
        for batch in batches:
            dev = self.trainer.to_backend(batch)
            res = self.model.evaluate(self.trainer.params, dev, cfg.mode, heads=heads)
            w = batch[0].shape[0]
            for name, r in res.items():
                acc = per_head.setdefault(name, {k: 0.0 for k in r})
                for k, v in r.items():
                    acc[k] += v * w
            n += w
        return {name: {k: v / n for k, v in r.items()} for name, r in per_head.items()}

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path) -> None:
        arrays = self.trainer.state_arrays()
        cur = self.curriculum.state_dict()
        cur_arrays = {f"curriculum/{k}": np.asarray(v) for k, v in cur.items() if isinstance(v, np.ndarray)}
        arrays.update(cur_arrays)
        arrays["grad_norms"] = np.asarray(self.grad_norms, dtype=np.float64)
        if self.refined_norms is not None:
            arrays["refined_norms"] = self.refined_norms
        meta = {"step": self.trainer.step_count, "rng": self.rng.bit_generator.state,
                "curriculum": {k: v for k, v in cur.items() if not isinstance(v, np.ndarray)},
                "history": self.history, "elapsed": self.elapsed, "stopped": self.stopped}
        save_checkpoint(path, arrays, meta)

    def load(self, path) -> None:
        arrays, meta = load_checkpoint(path)
        with restoring(path):
            self.trainer.load_state_arrays(arrays, meta["step"])
            self.rng.bit_generator.state = meta["rng"]
            cur = dict(meta["curriculum"])
            cur.update({k[len("curriculum/"):]: v for k, v in arrays.items() if k.startswith("curriculum/")})
            self.curriculum.load_state_dict(cur)
            self.history = list(meta.get("history", []))
            self.elapsed = float(meta.get("elapsed", 0.0))  # absent from checkpoints written before it was kept
            norms = arrays.get("grad_norms")  # absent from checkpoints written before they were kept: unknown
            norms = np.full(meta["step"], np.nan) if norms is None else np.asarray(norms, dtype=np.float64)
            if norms.shape != (meta["step"],):
                raise ValueError(f"grad_norms: got shape {norms.shape}, expected ({meta['step']},), one per step")
            self.grad_norms = norms.tolist()
            self.stopped = meta.get("stopped")
            if self.stopped not in (None, *EARLY_STOPS):
                raise ValueError(f"__meta__ stopped: got {self.stopped!r}, expected null or one of {list(EARLY_STOPS)}")
        check_finite_params(path, arrays)


def progress_bar(total: int, initial: int, quiet: bool):
    """A tqdm bar on a terminal (``None`` when quiet, not a terminal, or tqdm is missing)."""
    if quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, dynamic_ncols=True, leave=True)


_interrupt_requested = False  # set by request_interrupt, read by the loop before each step


def request_interrupt(requested: bool = True) -> None:
    """Make the training loop of :func:`train` or :func:`resume` stop before its next step (its first,
    when asked before it starts) as a KeyboardInterrupt does: status "interrupted", the last
    checkpoint kept. ``False`` withdraws the request; the loop withdraws it once it has stopped.

    For signal handlers, beside the KeyboardInterrupt they raise: that one is lost when it lands
    in a finaliser (``__del__``, a weakref callback), where Python prints "Exception ignored" and
    goes on, and the run would end "completed"."""
    global _interrupt_requested
    _interrupt_requested = check_bool("requested", requested)


def interrupt_requested() -> bool:
    """Whether :func:`request_interrupt` asked the running loop to stop (read before each step)."""
    return _interrupt_requested


def _run_loop(run: Run, rd: RunDir | None, quiet: bool, log: Callable[[str], None] | None) -> dict:
    # NumPy-array backends (numba) are chosen by the current default. A diverging run would flood
    # stderr with NumPy overflow warnings; the trainer's NaN guard reports it once (status "diverged")
    with backends.use(run.cfg.backend), np.errstate(over="ignore", invalid="ignore"):
        return _run_loop_on_backend(run, rd, quiet, log)


def _run_loop_on_backend(run: Run, rd: RunDir | None, quiet: bool, log: Callable[[str], None] | None) -> dict:
    cfg, tr = run.cfg, run.trainer
    every_ckpt = cfg.checkpoint_every or cfg.eval_every
    bar = progress_bar(cfg.steps, tr.step_count, quiet)
    t0 = time.perf_counter() - run.elapsed  # training time so far: wall_time_s and "time" go on across resumes
    run.stopped = None  # training on: an earlier stop no longer describes the checkpoints to come

    def checkpoint():
        run.elapsed = time.perf_counter() - t0
        run.save(rd.checkpoint)
    status, message, last_eval, loss = "completed", "", None, float("nan")
    try:
        while tr.step_count < cfg.steps:
            if interrupt_requested():  # a signal whose KeyboardInterrupt was lost (see request_interrupt)
                raise KeyboardInterrupt
            batch = run.curriculum.sample(run.rng, cfg.batch_size)
            try:
                loss = tr.step(batch)
            except TrainingDiverged as exc:
                status, message = "diverged", diverged_message(exc, rd is not None)
                break
            if run.cfg.curriculum == "cyclical":
                losses = run.model.example_losses(tr.params, tr.to_backend(batch), cfg.mode, heads=run.active())
                # finite new parameters can still overflow the forward pass (a ReLU cell's states)
                if not np.isfinite(losses).all():
                    raise TrainingDiverged(tr.step_count, "a per-example loss (cyclical curriculum)", after=True)
                run.curriculum.record_losses(losses)
            step = tr.step_count
            run.grad_norms.append(tr.grad_norm)
            if bar is not None:
                bar.update(1)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                tr.checked_state()  # the optimizer state too, at every evaluation (TrainingDiverged below)
                last_eval = run.evaluate()
                accs = {k: v["accuracy"] for k, v in last_eval.items() if "accuracy" in v}
                record = {"step": step, "loss": loss, "lr": run.schedule(step - 1),
                          "level": run.curriculum.level, "eval": last_eval,
                          "time": time.perf_counter() - t0}
                record.update(tr.hooks.on_evaluate(run, record) or {})
                was_finished = run.curriculum.finished  # True only when resumed past a finished curriculum
                advanced = run.curriculum.update(step, accs) if accs else False
                record["advanced"] = advanced
                if advanced:
                    tr.hooks.on_advance(run, record["level"], run.curriculum.level)
                run.history.append({"step": step, "level": record["level"], "accuracy": accs})
                if rd is not None:
                    rd.log(record)
                if bar is not None:
                    bar.set_postfix(_bar_postfix(record))
                elif log is not None:
                    log(_format_record(record))
                if rd is not None and step % every_ckpt == 0:
                    checkpoint()
                if run.curriculum.finished and not was_finished:
                    status = "curriculum-finished"
                    break
                if cfg.target_accuracy is not None and accs and min(accs.values()) >= cfg.target_accuracy \
                        and not advanced:
                    status = "target-reached"
                    break
            elif rd is not None and step % every_ckpt == 0:
                checkpoint()
    except TrainingDiverged as exc:  # the optimizer state, found at an evaluation or a checkpoint
        status, message = "diverged", diverged_message(exc, rd is not None)
    except KeyboardInterrupt:
        status, message = "interrupted", "interrupted; resume with `seqcore resume`"
    finally:
        # handled, or come too late to stop anything (the last step, a stop): a later run starts afresh
        request_interrupt(False)
        if bar is not None:
            bar.close()
    if rd is not None and status in ("completed", *EARLY_STOPS):
        # the stop goes into the checkpoint too: killed before summary.json, a resumed run still stops
        run.stopped = status if status in EARLY_STOPS else None
        try:
            checkpoint()
        except TrainingDiverged as exc:
            status, message = "diverged", diverged_message(exc, rd is not None)
    summary = _summary(run, status, message, loss, last_eval, time.perf_counter() - t0)
    if rd is not None:
        write_json(rd.summary, summary)
    return summary


def _summary(run: Run, status: str, message: str, loss: float, last_eval: dict | None, wall: float) -> dict:
    """``summary.json`` of ``run`` at its current step."""
    cfg = run.cfg
    accs = [v["accuracy"] for v in (last_eval or {}).values() if "accuracy" in v]
    return {
        "status": status, "message": message, "steps": run.trainer.step_count, "final_loss": loss,
        "wall_time_s": wall, "level": run.curriculum.level, "heads": last_eval or {},
        "final_accuracy": float(np.mean(accs)) if accs else None,
        "max_level": max((lv for lv in [*(h["level"] for h in run.history), run.curriculum.level]
                          if lv is not None), default=None),
        "max_n": getattr(run.curriculum, "max_n", None),  # the default (N + 30) is resolved: record it
        "backend": cfg.backend, "cell": cfg.cell, "task": cfg.task, "curriculum": cfg.curriculum,
    }


def current_status(out) -> tuple[int, str | None, bool]:
    """``(step, status, described)`` of the run in ``out``: the step of its checkpoint, and whether a
    ``summary.json`` describes that step.

    ``status`` is that summary's; without one (a segment killed before it wrote its summary
    leaves an earlier segment's, or none) it is the early stop the checkpoint records, or None.
    """
    rd = RunDir(out)
    meta = checkpoint_meta(rd.checkpoint)
    step, stopped = meta["step"], meta.get("stopped")
    stopped = stopped if stopped in EARLY_STOPS else None
    if not rd.summary.exists():
        return step, stopped, False
    summary = read_json_object(rd.summary)
    if summary.get("steps") != step:
        return step, stopped, False
    return step, summary.get("status"), True


def check_batch_fits(name: str, batch_size: int, cfg: TrainConfig, task) -> None:
    """Refuse a batch whose activations alone could not fit in memory (``--batch-size 10**8``
    would otherwise end in the kernel's out-of-memory kill, with no message): a lower bound of
    ``BATCH_FLOATS`` floats per hidden unit, layer and step, at the task's first length."""
    per_step = (task.input_size + BATCH_FLOATS * cfg.hidden * cfg.layers) * np.dtype(DTYPES[cfg.dtype]).itemsize
    total = physical_memory()
    if total is None or batch_size * per_step * 10**5 <= total:
        return  # no task here is 10^5 steps long: nothing to sample (the usual case)
    steps = np.shape(task.sample(np.random.default_rng(0), 1).x)[1]
    if steps * per_step > total:
        return  # one sequence does not fit: the hidden size is the cause, whose own check names it
    check_fits_in_memory(name, batch_size, batch_size * steps * per_step,
                         f"activations at hidden {cfg.hidden} × {cfg.layers} layer(s) (at least "
                         f"{per_step * steps:.3g} bytes per sequence of {steps} steps)")


def _summary_from_log(run: Run, rd: RunDir, status: str) -> dict:
    """The summary of a run that was killed after its last checkpoint and before its summary:
    rebuilt from the ``metrics.jsonl`` record of that step (every run logs its last step)."""
    step = run.trainer.step_count
    last = next((r for r in reversed(rd.read_metrics()) if r.get("step") == step), None)
    if last is None:
        raise ValueError(f"{rd.metrics}: no record of step {step}, the checkpoint's; expected the last step's "
                         "evaluation (the file is damaged)")
    _check_evaluation_record(rd, last)
    loss = last.get("loss")
    summary = _summary(run, status, "", float("nan") if loss is None else float(loss), last.get("eval"),
                       run.elapsed)
    write_json(rd.summary, summary)
    return summary


def _check_evaluation_record(rd: RunDir, record: dict, line: int | None = None) -> None:
    """A ``metrics.jsonl`` evaluation record as the loop writes it: ``step`` an int, ``loss`` a number
    (or null), ``eval`` per head ``{"loss": …, "accuracy": …}`` of numbers — else a ValueError naming
    the file (and ``line``)."""
    heads = record.get("eval") if isinstance(record, dict) else None
    def number_or_null(v):  # null: a value written while not finite
        return v is None or is_finite_number(v)
    ok = isinstance(heads, dict) and is_integer(record.get("step")) and number_or_null(record.get("loss")) and all(
        isinstance(h, dict) and all(number_or_null(h.get(k)) for k in ("loss", "accuracy")) for h in heads.values())
    if not ok:
        where = f"line {line}" if line is not None else f"the record of step {record.get('step')}"
        raise ValueError(f"{rd.metrics}: {where} holds {record!r:.120}; expected "
                         '"step" an int, "loss" a number and "eval" {head: {"loss": number, "accuracy": number}} '
                         "(the file is damaged)")


def _bar_postfix(r: dict) -> dict:
    """The progress bar's fields for evaluation record ``r``, as :func:`_format_record` shows it: N
    only for a curriculum over N, the evaluation loss when no head has an accuracy."""
    accs = [v["accuracy"] for v in r["eval"].values() if "accuracy" in v]
    postfix = {"loss": f"{r['loss']:.4f}"}
    if r["level"] is not None:
        postfix["N"] = r["level"]
    if accs:
        postfix["acc"] = f"{np.mean(accs):.3f}"
    elif r["eval"]:
        postfix["eval_loss"] = f"{np.mean([v['loss'] for v in r['eval'].values()]):.4f}"
    return postfix


def _format_record(r: dict) -> str:
    # a head without an accuracy (regression without a tolerance) shows its loss, labelled as one
    accs = " ".join(f"{k}={v['accuracy']:.3f}" if "accuracy" in v else f"{k} loss={v['loss']:.3f}"
                    for k, v in r["eval"].items())
    lvl = f" N={r['level']}" if r["level"] is not None else ""
    return f"step {r['step']:>6}  loss {r['loss']:.4f}{lvl}  {accs}"


def train(config: TrainConfig, out: str | None = None, *, hooks: Hooks | None = None, quiet: bool = False,
          log: Callable[[str], None] | None = None, overwrite: bool = False) -> tuple[dict, Any]:
    """Run ``config``; write the run directory ``out`` when given.

    Returns ``(summary, params)``.  ``log`` receives one line per evaluation when no
    progress bar is shown.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: got {type(config).__name__}, expected a TrainConfig")
    run = Run(config, hooks)  # a bad config is refused before the directory is made
    rd = None if out is None else RunDir(out)
    with contextlib.nullcontext() if rd is None else rd.lock():
        if rd is not None:
            rd.create(config.to_dict(), overwrite=overwrite)
            run.save(rd.checkpoint)  # step 0: a resumable starting point
        summary = _run_loop(run, rd, quiet, log)
    return summary, run.trainer.params


def load_run(out: str, backend: str | None = None) -> Run:
    """The run in directory ``out`` rebuilt from its ``config.json``, its last checkpoint loaded.

    ``backend`` runs it on another backend than the one it was trained on (e.g. to evaluate
    a numba-trained run with the NumPy reference). Raises ValueError when ``out`` holds no run.
    """
    rd = RunDir(out)
    if not rd.config.exists() or not rd.checkpoint.exists():
        missing = "config.json" if not rd.config.exists() else "checkpoint.npz"
        raise ValueError(f"out: got {str(out)!r}, which holds no run (no {missing}); "
                         "expected a directory written by train(config, out=...) or `seqcore train --out`")
    cfg = TrainConfig.read(rd.config)
    if backend is not None:
        cfg = dataclasses.replace(cfg, backend=backend)
    run = _run_from_config(rd, cfg)
    run.load(rd.checkpoint)
    return run


def _run_from_config(rd: RunDir, cfg: TrainConfig, hooks: Hooks | None = None) -> Run:
    """``Run(cfg)`` for a config read from ``rd.config``: a value the task, curriculum or cell
    refuses (``task_kwargs`` edited by hand) is an error naming that file."""
    from .tasks.idx import DatasetError
    norms = None
    if cfg.schedule == "refined":  # its own copy of from_run's norms (see Run)
        norms = load_checkpoint(rd.checkpoint, keys=("refined_norms",))[0].get("refined_norms")
        if norms is not None and not complete_grad_norms(norms):
            raise ValueError(f"{rd.checkpoint}: refined_norms: got {norms.size} values of shape {norms.shape}, "
                             "expected a finite gradient-norm history of at least 2 steps")
    try:
        return Run(cfg, hooks, refined_norms=norms)
    except DatasetError:
        raise  # names its own file
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{rd.config}: {exc}") from exc


def resume(out: str, *, hooks: Hooks | None = None, quiet: bool = False,
           log: Callable[[str], None] | None = None, steps: int | None = None) -> tuple[dict, Any]:
    """Continue the run in directory ``out`` from its last checkpoint (optionally with a new step budget).

    A run that stopped early (status ``target-reached`` or ``curriculum-finished``) is continued
    only with a larger ``steps``, and then trains the whole new budget: its ``target_accuracy``
    is dropped (``config.json`` records null) and a finished curriculum stays at its last N.
    """
    rd = RunDir(out)
    with rd.lock(create=False):
        return _resume(rd, out, hooks, quiet, log, steps)


def _resume(rd: RunDir, out, hooks, quiet, log, steps) -> tuple[dict, Any]:
    cfg_dict = read_json_object(rd.config)
    _, previous, described = current_status(out)
    stopped = previous in EARLY_STOPS
    if steps is not None:
        cfg_dict["steps"] = steps
        if stopped:  # else the target check would stop it again at its next evaluation
            cfg_dict["target_accuracy"] = None
    try:
        cfg = TrainConfig.from_dict(cfg_dict)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{rd.config}: {exc}") from exc
    run = _run_from_config(rd, cfg, hooks)
    run.load(rd.checkpoint)
    if not described and steps is None and (run.trainer.step_count >= cfg.steps or stopped):
        return _summary_from_log(run, rd, previous or "completed"), run.trainer.params
    if run.trainer.step_count >= cfg.steps or (stopped and steps is None):
        raise ValueError(f"out: the run in {out} already finished ({previous or 'completed'} at step "
                         f"{run.trainer.step_count}); pass a larger `steps` to continue it")
    rd.truncate_metrics(run.trainer.step_count)
    records = rd.read_metrics()
    for line, record in enumerate(records, 1):  # the summary is built from them: a damaged one is refused now
        _check_evaluation_record(rd, record, line)
    logged = len(records)
    if logged != len(run.history):  # one record per evaluation, as the checkpoint's history
        raise ValueError(f"{rd.metrics}: holds {logged} evaluation records up to step {run.trainer.step_count}, "
                         f"expected the {len(run.history)} logged before the checkpoint (the file was truncated, "
                         "emptied or removed)")
    if steps is not None:
        write_json(rd.config, cfg.to_dict())
    summary = _run_loop(run, rd, quiet, log)
    return summary, run.trainer.params
