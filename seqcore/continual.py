"""The continual-learning loop: a stream, a model, a learner, continual evaluation.

``run_continual(config, out=DIR)`` trains the experiences of a stream one after the
other with a learner (:mod:`seqcore.learners`) and writes a run directory in the layout
of :mod:`seqcore.runs`:

* ``config.json`` — the :class:`ContinualConfig`;
* ``metrics.jsonl`` — one line per evaluation (continual evaluation): every
  ``eval_every`` iterations, before the first update of each experience and at its end,
  the accuracy on every experience seen so far:
  ``{"step", "iteration", "experience", "accuracy": [a_0, …, a_experience], "loss", "time"}``
  (the records of :meth:`seqcore.metrics.EvalCurve.to_records`);
* ``summary.json`` — the accuracy matrix ``R[i, j]`` (after experience i, on experience j,
  every j, so forward transfer is defined), the random-init baseline, and every metric
  of :func:`seqcore.metrics.summarize` under its plain name (``average_accuracy``,
  ``forgetting``, ``forgetting_max``, ``bwt``, ``fwt``, ``min_acc``, ``wc_acc``,
  ``windowed_forgetting``, ``windowed_plasticity``, ``lca``), plus status and wall time;
* ``checkpoint.npz`` — parameters, optimizer state, learner state, RNG states, the
  matrix so far and the position in the stream, written at the end of each experience
  and every ``checkpoint_every`` iterations; ``resume_continual(DIR)`` continues from it
  and ends with exactly the parameters of an uninterrupted run.

``is_continual_run(DIR)`` tells such a directory from a ``seqcore train`` run's (by the
continual-only keys of its ``config.json``).

Data: ``dataset="synthetic"`` generates Gaussian class clusters locally (tests and quick
runs need no files); ``"fashion-mnist"``/``"mnist"`` read IDX files
(:mod:`seqcore.tasks.idx`). Streams: ``"permuted"`` (experience 0 is the identity),
``"split"``, ``"blurry"``, ``"power-law"``, ``"scole"`` over that data, and
``"curriculum"``: N-parity or N-DMS with N = ``n_start``, ``n_start`` + 1, … (one N per
experience, sequences generated on the fly, no data set).

Scenarios (``scenario``; None takes the stream's own): ``"class"`` (one head over every
class), ``"domain"`` (one shared head, labels per experience) and ``"task"``
(task-incremental: one head per experience, and the experience's head is used to
evaluate it). A multi-head model is one output layer of ``n_heads · n_outputs`` logits:
labels become global (``head · n_outputs + label``) and every cross-entropy is taken over
the sample's own head (:meth:`seqcore.learners.Learner.mask_heads`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import backends, learners, metrics, optim
from .learners.base import ExperienceData
from .learners.classifiers import MLPClassifier, RNNClassifier
from .runs import (JsonConfig, RunDir, atomic_write, check_finite_params, load_checkpoint, read_json_object, restoring,
                   save_checkpoint, write_json)
from .train import (DTYPES, MODEL_COPIES, Trainer, TrainingDiverged, diverged_message, interrupt_requested,
                    progress_bar, request_interrupt)
from .tree import tree_map
from .validate import (INT64_MAX, check_choice, check_fits_in_memory, check_model_fits, check_positive_int,
                       is_finite_number, is_integer)

__all__ = ["ContinualConfig", "run_continual", "resume_continual", "is_continual_run", "synthetic_clusters",
           "load_dataset", "build_stream", "build_model", "scenario_of", "DATASETS", "STREAMS", "STREAM_SCENARIOS",
           "CURRICULUM_TASKS"]

DATASETS = ("synthetic", "fashion-mnist", "mnist")
STREAMS = ("permuted", "split", "blurry", "power-law", "scole", "curriculum")
CURRICULUM_TASKS = ("nparity", "ndms")
# scenarios each stream can be built in; the first is the stream's own (scenario=None)
STREAM_SCENARIOS = {"permuted": ("domain", "task"), "power-law": ("domain", "task"),
                    "split": ("class", "task", "domain"), "blurry": ("class", "domain"),
                    "scole": ("class",), "curriculum": ("domain", "task")}


@dataclass(frozen=True)
class ContinualConfig(JsonConfig):
    """Everything that defines a continual run (saved as ``config.json``).

    ``steps`` counts updates per experience; ``eval_size`` evaluation samples are used per
    experience (at most the experience's test split: a larger value takes all of it);
    ``train_size`` keeps that many training samples (None: all). ``model`` is
    ``"mlp"`` or a cell name (recurrent classifier; flat samples are cut into steps of
    ``step_features`` features, images are read row by row). ``reset_optimizer``
    re-initialises the optimizer state (Adam's moments) at the start of every experience.
    ``scenario`` None takes the stream's own (``STREAM_SCENARIOS``). The ``split`` and
    ``blurry`` streams deal the classes into experiences in an order drawn from ``seed``
    (not sorted: seed 0 on ten classes and five experiences gives (4, 6), (2, 7), ...), as
    the permutations of ``permuted``/``power-law`` are. ``task`` and
    ``n_start``: the curriculum stream (``dataset``, ``data_dir`` and ``train_size`` do
    not apply to it).
    """

    stream: str = "permuted"
    dataset: str = "synthetic"
    data_dir: str | None = None
    experiences: int = 3
    scenario: str | None = None
    task: str = "nparity"                  # curriculum: the task whose N grows
    n_start: int = 2                       # curriculum: N of the first experience
    overlap: float = 0.2                   # blurry: fraction of each experience taken from its neighbours
    classes_per_experience: int = 2        # scole: classes in each small task
    class_distribution: str = "uniform"    # scole: "uniform" or "zipf"
    stream_exponent: float = 1.0           # power-law stream decay / scole Zipf exponent
    stream_budget: int = 1                 # power-law stream: rehearsals per new task
    train_size: int | None = None
    eval_size: int = 1000
    synthetic: dict = field(default_factory=dict)
    model: str = "mlp"
    hidden: int = 100
    layers: int = 1
    step_features: int | None = None
    learner: str = "naive"
    learner_kwargs: dict = field(default_factory=dict)
    optimizer: str = "adam"                # the learners' defaults (EWC's strength 1000, ...) are tuned for Adam
    lr: float = 0.001
    momentum: float = 0.0
    reset_optimizer: bool = False
    clip: float | None = None
    batch_size: int = 64
    steps: int = 500
    eval_every: int = 50
    checkpoint_every: int | None = None
    backend: str = "numpy"
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        from . import cells
        check_choice("stream", self.stream, STREAMS)
        check_choice("dataset", self.dataset, DATASETS)
        if self.scenario is not None:
            check_choice("scenario", self.scenario, ("class", "task", "domain"))
            allowed = STREAM_SCENARIOS[self.stream]
            if self.scenario not in allowed:
                raise ValueError(f"scenario: got {self.scenario!r} for stream {self.stream!r}, "
                                 f"expected one of {allowed}")
        check_choice("task", self.task, CURRICULUM_TASKS)
        check_positive_int("n_start", self.n_start, 2 if self.task == "ndms" else 1)
        check_choice("class_distribution", self.class_distribution, ("uniform", "zipf"))
        if not (is_finite_number(self.overlap) and 0 <= self.overlap < 1):
            raise ValueError(f"overlap: got {self.overlap!r}, expected a number in [0, 1)")
        # 0: uniform rehearsal (power-law) or uniform class draws (scole)
        if not (is_finite_number(self.stream_exponent) and self.stream_exponent >= 0):
            raise ValueError(f"stream_exponent: got {self.stream_exponent!r}, expected a number >= 0")
        check_positive_int("classes_per_experience", self.classes_per_experience)
        check_positive_int("stream_budget", self.stream_budget)
        check_choice("model", self.model, ("mlp", *cells.names()))
        check_choice("learner", self.learner, learners.names())
        check_choice("optimizer", self.optimizer, ("sgd", "adam"))
        check_choice("backend", self.backend, backends.names())
        check_choice("dtype", self.dtype, tuple(DTYPES))
        for name in ("experiences", "eval_size", "hidden", "layers", "batch_size", "eval_every"):
            check_positive_int(name, getattr(self, name))
        # bounded before steps, whose bound derives from it: a huge count is the mistake, not steps
        _check_run_fits(self, self.experiences)
        check_positive_int("experiences", self.experiences, maximum=INT64_MAX)  # where the memory is unknown
        check_positive_int("steps", self.steps, maximum=INT64_MAX // self.experiences)  # the run's step count
        if self.stream == "blurry" and self.experiences < 2:  # named here: blurry() would blame its `stream`
            raise ValueError(f"experiences: got {self.experiences}, expected at least 2 for stream 'blurry' "
                             "(it mixes neighbouring experiences)")
        for name in ("train_size", "checkpoint_every", "step_features"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if not isinstance(self.reset_optimizer, bool):
            raise TypeError(f"reset_optimizer: got {self.reset_optimizer!r}, expected True or False")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: got {self.seed!r}, expected an integer >= 0")
        if not (is_finite_number(self.lr) and self.lr > 0):
            raise ValueError(f"lr: got {self.lr!r}, expected a positive finite number")
        if not (is_finite_number(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum: got {self.momentum!r}, expected a number in [0, 1)")
        if self.clip is not None and not (is_finite_number(self.clip) and self.clip > 0):
            raise ValueError(f"clip: got {self.clip!r}, expected a positive finite number or None")
        for name in ("synthetic", "learner_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name}: got {type(getattr(self, name)).__name__}, expected a dict")
        unknown = sorted(set(self.synthetic) - set(SYNTHETIC_DEFAULTS))
        if unknown:
            raise ValueError(f"synthetic: got unknown keys {unknown}, expected some of {sorted(SYNTHETIC_DEFAULTS)}")
        learners.make(self.learner, **self.learner_kwargs)  # validates the hyperparameters




# ---------------------------------------------------------------- data, stream, model

SYNTHETIC_DEFAULTS = {"n_features": 16, "n_classes": 8, "n_train": 1000, "n_test": 500, "noise": 0.7, "rank": None}


def synthetic_clusters(n_train: int = 1000, n_test: int = 500, n_features: int = 16, n_classes: int = 8,
                       noise: float = 0.7, rank: int | None = None, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Gaussian class clusters: class c is ``N(μ_c, noise² I)`` with ``μ_c ~ N(0, I)``.

    With ``rank`` the clusters live in ``rank`` dimensions that a random orthonormal map
    embeds in ``n_features`` (low-rank data, like images); otherwise in all of them.
    Returns ``(x_train (n_train, n_features) float32, y_train (n_train,) int64, x_test,
    y_test)``, the same for the same ``seed``.
    """
    for name, v in (("n_train", n_train), ("n_test", n_test), ("n_features", n_features)):
        check_positive_int(name, v)
    check_positive_int("n_classes", n_classes, 2)
    if rank is not None and not (is_integer(rank) and 1 <= rank <= n_features):
        raise ValueError(f"rank: got {rank!r}, expected None or an integer in [1, n_features={n_features}]")
    if not (is_finite_number(noise) and noise >= 0):  # inf would give NaN data; True is no noise level
        raise ValueError(f"noise: got {noise!r}, expected a finite number >= 0")
    seed = int(check_positive_int("seed", seed, 0))
    latent = rank or n_features
    # NumPy's unnamed errors, or an out-of-memory kill, otherwise: the embedding and the class means
    # (float64), then a draw's float64 latent, noise and product, its float32 copy and int64 labels
    check_fits_in_memory("n_features", n_features, n_features * latent * 8, f"embedding ({n_features}x{latent})")
    check_fits_in_memory("n_classes", n_classes, n_classes * latent * 8, f"class means ({n_classes}x{latent})")
    row = 8 * (2 * latent + n_features + 1) + 4 * n_features
    check_fits_in_memory("n_train", n_train, n_train * row, f"training set ({row} bytes per sample while drawn)")
    check_fits_in_memory("n_test", n_test, n_train * (4 * n_features + 8) + n_test * row,
                         f"test set ({row} bytes per sample while drawn) beside the training set")
    rng = np.random.default_rng([seed, 99])
    means = rng.normal(0.0, 1.0, (n_classes, latent))
    embed = np.linalg.qr(rng.normal(size=(n_features, latent)))[0] if rank else np.eye(n_features)

    def draw(n):
        y = rng.integers(0, n_classes, n)
        z = means[y] + noise * rng.normal(0.0, 1.0, (n, latent))
        return (z @ embed.T).astype(np.float32), y.astype(np.int64)

    return draw(n_train) + draw(n_test)


def load_dataset(cfg: ContinualConfig) -> tuple[tuple[np.ndarray, ...], float]:
    """``((x_train, y_train, x_test, y_test), input_scale)`` for ``cfg.dataset`` (train subset applied)."""
    if cfg.dataset == "synthetic":
        data = synthetic_clusters(**{**SYNTHETIC_DEFAULTS, **cfg.synthetic}, seed=cfg.seed)
        scale = 1.0
    else:
        from .tasks.idx import DEFAULT_DATA_DIRS, load_idx_split
        where = cfg.data_dir or DEFAULT_DATA_DIRS[cfg.dataset]
        (xtr, ytr), (xte, yte) = load_idx_split(where, "train"), load_idx_split(where, "test")
        data = (xtr, ytr.astype(np.int64), xte, yte.astype(np.int64))
        scale = 1.0 / 255.0  # uint8 pixels stay uint8 in memory; batches are scaled to [0, 1]
    if cfg.train_size is not None:
        if cfg.train_size > data[0].shape[0]:
            raise ValueError(f"train_size: got {cfg.train_size}, expected <= {data[0].shape[0]} "
                             f"(the training samples of {cfg.dataset})")
        keep = np.sort(np.random.default_rng([cfg.seed, 98]).choice(data[0].shape[0], cfg.train_size, replace=False))
        data = (data[0][keep], data[1][keep]) + data[2:]
    return data, scale


def scenario_of(cfg: ContinualConfig) -> str:
    """The scenario ``cfg`` runs in: its own, or the stream's default."""
    return cfg.scenario or STREAM_SCENARIOS[cfg.stream][0]


def build_stream(cfg: ContinualConfig, data: tuple[np.ndarray, ...] | None):
    """The :class:`seqcore.tasks.streams.Stream` of ``cfg`` over ``data`` (None for the curriculum)."""
    from .tasks.streams import (blurry, curriculum_stream, permuted_stream, power_law_stream, scole_stream,
                                split_stream)
    scenario = scenario_of(cfg)
    if cfg.stream == "curriculum":
        from . import tasks
        ns = list(range(cfg.n_start, cfg.n_start + cfg.experiences))
        length = tasks.make(cfg.task, n=ns[-1], seed=cfg.seed).length_range[1] - 1  # the longest sequence
        return curriculum_stream(lambda n: tasks.make(cfg.task, n=n, n_max=ns[-1], seed=cfg.seed), ns,
                                 seed=cfg.seed, eval_size=cfg.eval_size, multi_head=scenario == "task",
                                 length=length)
    if cfg.stream in ("permuted", "power-law"):
        stream = permuted_stream(*data, n_experiences=cfg.experiences, seed=cfg.seed, first_identity=True,
                                 multi_head=scenario == "task")
        if cfg.stream == "permuted":
            return stream
        # permuted tasks, earlier ones rehearsed with power-law probability
        return power_law_stream(stream, exponent=cfg.stream_exponent, budget=cfg.stream_budget, seed=cfg.seed)
    if cfg.stream == "scole":
        return scole_stream(*data, n_experiences=cfg.experiences, classes_per_experience=cfg.classes_per_experience,
                            class_distribution=cfg.class_distribution, seed=cfg.seed,
                            exponent=cfg.stream_exponent if cfg.class_distribution == "zipf" else None)
    try:
        split = split_stream(*data, n_experiences=cfg.experiences, scenario=scenario, seed=cfg.seed)
    except ValueError as exc:  # the stream's argument is the config's `experiences` (--experiences)
        if str(exc).startswith("n_experiences:"):
            raise ValueError("experiences" + str(exc)[len("n_experiences"):]) from None
        raise
    return blurry(split, cfg.overlap, seed=cfg.seed) if cfg.stream == "blurry" else split


def build_model(cfg: ContinualConfig, sample_shape: tuple, n_classes: int):
    """An :class:`MLPClassifier` or :class:`RNNClassifier` for samples of ``sample_shape``."""
    features = int(np.prod(sample_shape))
    if cfg.model == "mlp":
        return MLPClassifier(features, (cfg.hidden,) * cfg.layers, n_classes)
    step = cfg.step_features or (sample_shape[-1] if len(sample_shape) >= 2 else min(4, features))
    if features % step:
        raise ValueError(f"step_features: got {step}, expected a divisor of the {features} features per sample")
    return RNNClassifier(cfg.model, step, cfg.hidden, n_classes, num_layers=cfg.layers)


def build_optimizer(cfg: ContinualConfig) -> optim.GradientTransformation:
    opt = optim.sgd(cfg.lr, momentum=cfg.momentum) if cfg.optimizer == "sgd" else optim.adam(cfg.lr)
    return optim.flatten(optim.chain(optim.clip_by_global_norm(cfg.clip), opt) if cfg.clip else opt)


# ---------------------------------------------------------------- the run

class _Run:
    """A continual run assembled from a config (shared by ``run_continual`` and ``resume_continual``)."""

    def __init__(self, cfg: ContinualConfig):
        self.cfg = cfg
        self.dtype = DTYPES[cfg.dtype]
        _check_run_fits(cfg, cfg.experiences)  # before building the stream: a stream has >= experiences of them
        data, self.scale = (None, 1.0) if cfg.stream == "curriculum" else load_dataset(cfg)
        self.stream = build_stream(cfg, data)
        if self.stream.n_outputs is None:
            raise ValueError("stream: got one without class labels, expected a classification stream")
        self.n = len(self.stream)
        # task-incremental: one output layer holding every head, labels made global
        self.head_size = self.stream.n_outputs if self.stream.scenario == "task" else None
        self._cache: dict[int, Any] = {}
        self.learner = learners.make(cfg.learner, **cfg.learner_kwargs)
        x0, y0 = self._experience(0).eval
        sample_shape = x0.shape[1:]
        # experience 0's evaluation set stands for every one's (samples kept, int64 labels)
        _check_run_fits(cfg, self.n, min(cfg.eval_size, len(y0)), x0.dtype.itemsize * int(np.prod(sample_shape)) + 8)
        n_outputs = self.stream.n_outputs * self.stream.n_heads
        def build(h, layers=cfg.layers):  # with layers: the depth is counted without building the stack
            return build_model(dataclasses.replace(cfg, hidden=h, layers=layers), sample_shape, n_outputs)
        check_model_fits("hidden", cfg.hidden, build, np.dtype(self.dtype).itemsize, MODEL_COPIES, layers=cfg.layers)
        self.model = build_model(cfg, sample_shape, n_outputs)
        self.be = backends.get(cfg.backend)
        self.learner.bind(self.model, n_experiences=self.n, backend=cfg.backend,
                          rng=np.random.default_rng([cfg.seed, 2]), stream=self.stream, data_for=self.data_for,
                          head_size=self.head_size)
        _check_learner_fits(self.learner, cfg, int(np.prod(sample_shape)), n_outputs)
        params = self.learner.init_params(np.random.default_rng([cfg.seed, 0]), self.dtype)
        self.trainer = Trainer(self.learner.loss, tree_map(self.be.asarray, params), build_optimizer(cfg),
                               cfg.backend, hooks=self.learner, constrain=self.learner.constrain)
        self.rng = np.random.default_rng([cfg.seed, 1])
        pick = np.random.default_rng([cfg.seed, 3])
        self.eval_sets = []
        for j in range(self.n):
            exp = self._experience(j, keep=j == 0)
            # found now, not at experience j's first step, after the run directory was written
            if exp.n_train is not None and exp.n_train < cfg.batch_size:
                raise ValueError(f"batch_size: got {cfg.batch_size}, expected at most {exp.n_train}, the training "
                                 f"samples of experience {j}")
            x, y = exp.eval
            if len(y) == 0:  # its accuracy would be 0/0; refused before the run directory is written
                # blurry's classes include its neighbours'; the evaluation set holds only its own
                classes = list(exp.info.get("label_map", {})) or list(exp.classes)
                raise ValueError(f"experiences: got {cfg.experiences}, whose experience {j} (classes {classes}) has "
                                 "no test samples to evaluate on; expected at least one per experience: fewer "
                                 "experiences, or more test samples (of those classes)")
            index = np.sort(pick.permutation(len(y))[: cfg.eval_size])
            self.eval_sets.append((x[index], self.global_labels(j, np.asarray(y)[index])))
        self.R = np.full((self.n, self.n), np.nan)
        self.baseline = np.array([self.accuracy(j) for j in range(self.n)])
        self.experience, self.step_in_experience, self.started = 0, 0, False
        self.curve_records: list[dict] = []
        self.records_at_checkpoint = 0
        self.elapsed = 0.0
        self.last_loss = float("nan")

    # -- data ----------------------------------------------------------------------------------
    def _experience(self, j: int, keep: bool = True):
        if j not in self._cache:
            exp = self.stream[j]
            if keep:
                if not getattr(self.learner, "uses_all_experiences", False):
                    self._cache.clear()
                self._cache[j] = exp
            return exp
        return self._cache[j]

    def head_block(self, j: int) -> slice:
        """The logits of experience j's head (all of them without heads)."""
        if self.head_size is None:
            return slice(0, None)
        start = self.stream.heads[j] * self.head_size
        return slice(start, start + self.head_size)

    def global_labels(self, j: int, y: np.ndarray) -> np.ndarray:
        """Labels of experience j as the model's outputs index them (offset by its head's block)."""
        return np.asarray(y).astype(np.int64) + self.head_block(j).start

    def as_float(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        return x * self.dtype(self.scale) if self.scale != 1.0 else x

    def data_for(self, j: int) -> ExperienceData:
        """The :class:`ExperienceData` of experience j (batches scaled to floats)."""
        exp = self._experience(j)

        def sample(rng, n):
            x, y = exp.sample(rng, n)
            return self.as_float(x), self.global_labels(j, y)

        return ExperienceData(j, exp.task_id, sample, exp.n_train, exp.classes, exp.head)

    # -- evaluation ----------------------------------------------------------------------------
    def accuracy(self, j: int, chunk: int = 1000) -> float:
        x, y = self.eval_sets[j]
        params = self.trainer.params
        block = self.head_block(j)
        correct = 0
        for s in range(0, len(y), chunk):
            logits = self.learner.predict(params, self.be.asarray(self.as_float(x[s:s + chunk])), j)
            guess = np.asarray(self.be.to_numpy(logits))[:, block].argmax(-1) + block.start
            correct += int((guess == y[s:s + chunk]).sum())
        return correct / len(y)

    def evaluate(self, rd: RunDir | None, upto: int, t0: float, accs: list | None = None) -> None:
        """Log one continual-evaluation record: accuracy on experiences 0..upto.  The optimizer
        state is checked first (:class:`TrainingDiverged` when it is no longer finite)."""
        self.trainer.checked_state()
        accs = [self.accuracy(j) for j in range(upto + 1)] if accs is None else list(accs[: upto + 1])
        record = {"step": self.trainer.step_count, "iteration": self.trainer.step_count, "experience": upto,
                  "accuracy": accs, "loss": self.last_loss, "time": self.elapsed + time.perf_counter() - t0}
        if rd is not None:
            rd.log(record)
        self.curve_records.append(record)

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path, t0: float) -> None:
        arrays = self.trainer.state_arrays()
        learner_arrays, learner_meta = self.learner.state_dict()
        arrays.update(learner_arrays)
        arrays["R"], arrays["baseline"] = self.R, self.baseline
        meta = {"step": self.trainer.step_count, "experience": self.experience,
                "step_in_experience": self.step_in_experience, "started": self.started,
                "rng": self.rng.bit_generator.state, "learner": learner_meta, "records": len(self.curve_records),
                "elapsed": self.elapsed + time.perf_counter() - t0, "last_loss": self.last_loss}
        save_checkpoint(path, arrays, meta)

    def load(self, path) -> None:
        arrays, meta = load_checkpoint(path)
        with restoring(path):
            self.trainer.load_state_arrays(arrays, meta["step"])
            self.learner.load_state_dict(arrays, meta["learner"])
            self.R, self.baseline = np.array(arrays["R"]), np.array(arrays["baseline"])
            self.experience, self.step_in_experience = int(meta["experience"]), int(meta["step_in_experience"])
            self.started = bool(meta["started"])
            self.records_at_checkpoint = int(meta["records"])
            self.rng.bit_generator.state = meta["rng"]
            self.elapsed, self.last_loss = float(meta["elapsed"]), float(meta["last_loss"])
            if self.R.shape != (self.n, self.n) or not 0 <= self.experience <= self.n:
                raise ValueError(f"R: got shape {self.R.shape} at experience {self.experience}, expected "
                                 f"({self.n}, {self.n}) and an experience in [0, {self.n}]")
        check_finite_params(path, arrays)

    # -- summary -------------------------------------------------------------------------------
    def summary(self, rd: RunDir | None, status: str, message: str) -> dict:
        finished = int(np.sum(np.all(np.isfinite(self.R), axis=1)))
        out = {"status": status, "message": message, "learner": self.cfg.learner,
               "hyperparameters": self.learner.hparams(), "model": self.cfg.model, "stream": self.cfg.stream,
               "scenario": self.stream.scenario,
               "dataset": self.cfg.task if self.cfg.stream == "curriculum" else self.cfg.dataset,
               "backend": self.cfg.backend, "experiences": self.n,
               "experiences_done": finished, "steps": self.trainer.step_count, "wall_time_s": self.elapsed,
               "accuracy_matrix": _nan_to_none(self.R.tolist()), "baseline": self.baseline.tolist()}
        if finished:
            R = self.R[:finished, :finished]
            kept = [r for r in self.curve_records if r["experience"] < finished]
            curve = metrics.EvalCurve.from_records(kept, finished) if kept else None
            values = metrics.summarize(R, curve, baseline=self.baseline[:finished])
            out.update({k: (None if math.isnan(v) else v) for k, v in values.items()})
            out["final_accuracies"] = R[-1].tolist()
        if rd is not None:
            write_json(rd.summary, out)
        return out


def _check_run_fits(cfg: ContinualConfig, n: int, eval_samples: int = 0, sample_bytes: int = 0) -> None:
    """Refuse a run whose (n, n) accuracy matrix and n evaluation sets of ``eval_samples``
    samples could not fit in memory, before the long loop that builds the sets."""
    sets = f" and {n} evaluation sets of {eval_samples} samples (eval_size {cfg.eval_size})" if eval_samples else ""
    check_fits_in_memory("experiences", cfg.experiences, n * n * 8 + n * eval_samples * sample_bytes,
                         f"{n}x{n} accuracy matrix{sets}")


def _check_learner_fits(learner: learners.Learner, cfg: ContinualConfig, sample_floats: int, n_outputs: int) -> None:
    """Refuse a learner size whose arrays could never fit in memory, naming the hyperparameter,
    before the run directory is written: a replay buffer is allocated at its first insert (after
    the first step), the hypernetwork when its parameters are drawn (a dimension error)."""
    from .learners.distillation import DER
    from .learners.hypernet import HyperNetwork
    from .learners.replay import Replay
    from .learners.sharp import SHARP
    itemsize = np.dtype(DTYPES[cfg.dtype]).itemsize
    if isinstance(learner, (Replay, DER, SHARP)):
        # a stored row: an int64 label and the batch's input (SHARP: the readout's input, cfg.hidden
        # wide in both classifiers), plus DER's logits
        floats = cfg.hidden if isinstance(learner, SHARP) else sample_floats + n_outputs * isinstance(learner, DER)
        row = floats * itemsize + 8
        check_fits_in_memory("memory_size", learner.memory_size, learner.memory_size * row,
                             f"buffer ({row} bytes per sample)")
    if isinstance(learner, HyperNetwork):
        H, E, C, S = learner.hnet_hidden, learner.task_embedding, learner.chunk_embedding, learner.chunk_size
        K, n = learner.n_chunks, learner.n_experiences
        # task and chunk embeddings, the cell (at least its input weights, H per input) and the head
        count = n * E + K * C + H * (E + C) + H * S + S
        # the field named is the one whose terms weigh most
        share = {"hnet_hidden": H * (E + C + S), "task_embedding": (n + H) * E, "chunk_embedding": (K + H) * C,
                 "chunk_size": (H + 1) * S}
        name = max(share, key=share.get)
        check_fits_in_memory(name, getattr(learner, name), count * itemsize * MODEL_COPIES,
                             f"hypernetwork of at least {count:.3g} parameters (with their gradients and optimizer "
                             "state)")


def _check_curve_record(rd: RunDir, line: int, r: dict, n: int, previous: dict | None, step: int) -> None:
    """An evaluation record as the continual loop writes it (``EvalCurve.to_records``), in order
    after ``previous`` and no later than the checkpoint's ``step``, else a ValueError naming the
    file and line (found before training, not by the final summary's ``EvalCurve``)."""
    ok = is_integer(r.get("iteration")) and is_integer(r.get("experience")) and 0 <= r["experience"] < n
    acc = r.get("accuracy")
    # the loop writes correct/len, never null or a non-finite accuracy
    ok = ok and isinstance(acc, list) and len(acc) == r["experience"] + 1 and all(is_finite_number(a) for a in acc)
    if not ok:
        raise ValueError(f"{rd.metrics}: line {line}: got {r!r:.100}, expected an evaluation record "
                         '{"iteration": int, "experience": int in [0, ' + str(n) + '), "accuracy": [one number '
                         "per seen experience]} (the file is damaged)")
    low_it, low_exp = (0, 0) if previous is None else (previous["iteration"], previous["experience"])
    if not (low_it <= r["iteration"] <= step and r["experience"] >= low_exp):
        raise ValueError(f"{rd.metrics}: line {line}: got iteration {r['iteration']}, experience {r['experience']}, "
                         f"expected an iteration in [{low_it}, {step}] (from the previous record's to the "
                         f"checkpoint's step) and an experience >= {low_exp} (the file is damaged)")


def _nan_to_none(rows):
    return [[None if (isinstance(v, float) and math.isnan(v)) else v for v in row] for row in rows]


def _built_run(cfg: ContinualConfig) -> _Run:
    """The run of ``cfg``, built on its backend: the random-init baseline is evaluated there, as
    the training is (not on ``$SEQCORE_BACKEND``'s default, which may not even load)."""
    with backends.use(cfg.backend):
        return _Run(cfg)


def _loop(run: _Run, *args, **kwargs) -> dict:
    # NumPy-array backends (numba) are chosen by the current default. A diverging run floods stderr
    # with NumPy overflow warnings; the trainer's NaN guard reports it once (status "diverged"), as
    # in seqcore.train's loop
    with backends.use(run.cfg.backend), np.errstate(over="ignore", invalid="ignore"):
        return _loop_on_backend(run, *args, **kwargs)


def _loop_on_backend(run: _Run, rd: RunDir | None, quiet: bool, log: Callable[[str], None] | None,
                     stop_at_step: int | None) -> dict:
    cfg, tr, learner = run.cfg, run.trainer, run.learner
    bar = progress_bar(run.n * cfg.steps, tr.step_count, quiet)
    t0 = time.perf_counter()
    status, message = "completed", ""
    try:
        while run.experience < run.n:
            i = run.experience
            data = run.data_for(i)
            learner.index = i
            if not run.started:
                if cfg.reset_optimizer:
                    tr.opt_state = tr.optimizer.init(tr.params)
                learner.before_experience(tr, data)
                run.evaluate(rd, i, t0)  # before the first update: the stability gap's starting point
                run.started = True
            while run.step_in_experience < cfg.steps:
                if stop_at_step is not None and tr.step_count >= stop_at_step:
                    status, message = "stopped", f"stopped at step {tr.step_count}; resume to continue"
                    raise _Stop
                if interrupt_requested():  # a signal whose KeyboardInterrupt was lost (see train.request_interrupt)
                    raise KeyboardInterrupt
                x, y = data.sample(run.rng, cfg.batch_size)
                run.last_loss = tr.step((x, y, None))
                run.step_in_experience += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(exp=i, loss=f"{run.last_loss:.4f}")
                if tr.step_count % cfg.eval_every == 0 and run.step_in_experience < cfg.steps:
                    run.evaluate(rd, i, t0)
                if rd is not None and cfg.checkpoint_every and tr.step_count % cfg.checkpoint_every == 0:
                    run.save(rd.checkpoint, t0)
            learner.after_experience(tr, data)
            row = [run.accuracy(j) for j in range(run.n)]
            run.R[i] = row
            run.evaluate(rd, i, t0, row)
            run.experience, run.step_in_experience, run.started = i + 1, 0, False
            if log is not None and bar is None:
                log(f"experience {i}: " + " ".join(f"{a:.3f}" for a in row[: i + 1])
                    + f"  (mean {np.mean(row[: i + 1]):.3f})")
            if rd is not None:
                run.save(rd.checkpoint, t0)
    except _Stop:
        if rd is not None:
            try:
                run.save(rd.checkpoint, t0)
            except TrainingDiverged as exc:  # the optimizer state, checked at each checkpoint
                status, message = "diverged", diverged_message(exc, rd is not None)
    except TrainingDiverged as exc:
        status, message = "diverged", diverged_message(exc, rd is not None)
    except KeyboardInterrupt:
        where = f" --out {rd.path}" if rd is not None else ""
        status, message = "interrupted", f"resume with `seqcore continual --resume{where}`"
    finally:
        # handled, or come too late to stop anything (the last step, a stop): a later run starts afresh
        request_interrupt(False)
        if bar is not None:
            bar.close()
    run.elapsed += time.perf_counter() - t0
    return run.summary(rd, status, message)


class _Stop(Exception):
    pass


def run_continual(config: ContinualConfig, out: str | None = None, *, quiet: bool = False,
                  log: Callable[[str], None] | None = None, overwrite: bool = False,
                  stop_at_step: int | None = None) -> tuple[dict, Any]:
    """Run ``config``; write the run directory ``out`` when given. Returns ``(summary, params)``.

    ``stop_at_step``: stop (with a checkpoint) once that many updates are done, as a
    budgeted or interrupted run would; :func:`resume_continual` continues it.
    """
    if not isinstance(config, ContinualConfig):
        raise TypeError(f"config: got {type(config).__name__}, expected a ContinualConfig")
    rd = None if out is None else RunDir(out)
    if rd is not None:  # before _Run, so the refusal does not wait for the data to load
        rd.refuse_existing(overwrite, config.to_dict())
    run = _built_run(config)
    with contextlib.nullcontext() if rd is None else rd.lock():
        if rd is not None:
            rd.create(config.to_dict(), overwrite=overwrite)
            run.save(rd.checkpoint, time.perf_counter())
        summary = _loop(run, rd, quiet, log, stop_at_step)
    return summary, run.trainer.params


def is_continual_run(path: str | os.PathLike) -> bool:
    """Whether directory ``path`` holds a continual run (one of :func:`run_continual`).

    Decided by its ``config.json`` (written when the run starts, so interrupted runs count
    too): it must hold the continual-only keys ``stream``, ``experiences``, ``learner`` and
    ``learner_kwargs``. False when there is no readable ``config.json`` object.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: got {type(path).__name__}, expected a str or os.PathLike run directory")
    return RunDir(path).holds_continual_run()


def resume_continual(out: str, *, quiet: bool = False, log: Callable[[str], None] | None = None,
                     stop_at_step: int | None = None) -> tuple[dict, Any]:
    """Continue the continual run in directory ``out`` from its last checkpoint."""
    rd = RunDir(out)
    with rd.lock(create=False):
        return _resume_continual(rd, quiet, log, stop_at_step)


def _resume_continual(rd: RunDir, quiet, log, stop_at_step) -> tuple[dict, Any]:
    cfg = ContinualConfig.read(rd.config)
    run = _built_run(cfg)
    run.load(rd.checkpoint)
    if run.experience >= run.n and rd.summary.exists():  # finished: nothing to do, nothing rewritten
        summary = read_json_object(rd.summary)
        # only the final summary: a stopped or interrupted run's, left when the final one was never
        # written (Ctrl-C or an error while summarising), is rebuilt below, as a missing one is
        if summary.get("status") == "completed" and summary.get("steps") == run.trainer.step_count:
            return summary, run.trainer.params
    lines = rd.metrics.read_text().splitlines(keepends=True) if rd.metrics.exists() else []
    if len(lines) < run.records_at_checkpoint:  # the continual metrics are computed from all of them
        raise ValueError(f"{rd.metrics}: holds {len(lines)} evaluation records, expected the "
                         f"{run.records_at_checkpoint} logged before the checkpoint (the file was truncated, "
                         "emptied or removed)")
    lines = lines[: run.records_at_checkpoint]  # drop evaluations logged after the checkpoint
    atomic_write(rd.metrics, "".join(lines).encode())
    run.curve_records = rd.read_metrics()  # a damaged line is an error naming the file and line
    previous = None
    for i, record in enumerate(run.curve_records, 1):
        _check_curve_record(rd, i, record, run.n, previous, run.trainer.step_count)
        previous = record
    summary = _loop(run, rd, quiet, log, stop_at_step)
    return summary, run.trainer.params
