"""Continual learners: ``make(name, **hyperparameters)``, ``names()``, ``hyperparameters(name)``.

Every learner implements the protocol of :mod:`seqcore.learners.base` (the training
loop's hooks plus experience boundaries and checkpointable state) against a generic
classifier interface (:mod:`seqcore.learners.classifiers`), so each one runs with an
MLP or any recurrent cell, on every backend. The README (section "Learners") lists them with
what each hyperparameter means.
"""
from __future__ import annotations

from typing import Any

from .base import HP, ExperienceData, Learner
from .basic import Cumulative, Joint, Naive
from .classifiers import MLPClassifier, RNNClassifier
from .distillation import DER, DERpp, LwF
from .hypernet import HyperNetwork
from .orthogonal import OrthogonalProjection
from .refresh import Refresh
from .regularization import EWC, L2, MAS, SI, OnlineEWC
from .replay import AGEM, ClassBalancedBuffer, PowerLawRehearsal, Replay, ReservoirBuffer, agem_project
from .sharp import SHARP

__all__ = ["make", "names", "hyperparameters", "describe", "Learner", "HP", "ExperienceData",
           "MLPClassifier", "RNNClassifier", "ReservoirBuffer", "ClassBalancedBuffer", "agem_project",
           "Naive", "Joint", "Cumulative", "L2", "EWC", "OnlineEWC", "SI", "MAS", "LwF", "Replay", "AGEM",
           "DER", "DERpp", "PowerLawRehearsal", "Refresh", "SHARP", "HyperNetwork", "OrthogonalProjection"]

_REGISTRY: dict[str, type[Learner]] = {cls.name: cls for cls in (
    Naive, Joint, Cumulative, L2, EWC, OnlineEWC, SI, MAS, LwF, Replay, AGEM, DER, DERpp,
    PowerLawRehearsal, Refresh, SHARP, HyperNetwork, OrthogonalProjection)}


def names() -> tuple[str, ...]:
    """Every learner name accepted by :func:`make` (the command-line names)."""
    return tuple(_REGISTRY)


def _lookup(name: str) -> type[Learner]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"learner: got {name!r}, expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def hyperparameters(name: str) -> dict[str, HP]:
    """``{hyperparameter: HP(default, help, low, high, choices)}`` of learner ``name``."""
    return dict(_lookup(name).hyperparameters)


def describe(name: str) -> str:
    """The first line of learner ``name``'s docstring."""
    return (_lookup(name).__doc__ or "").strip().splitlines()[0]


def make(name: str, **hparams: Any) -> Learner:
    """A fresh learner ``name`` with the given hyperparameters (others at their defaults).

    >>> make("ewc", strength=1000.0)
    EWC(strength=1000.0, fisher_samples=200, fisher='empirical')
    """
    return _lookup(name)(**hparams)
