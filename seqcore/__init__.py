"""seqcore — a workbench for recurrent sequence learning.

``import seqcore`` needs only NumPy; other backends load on first use.  The numeric core
(scans, ops, vjp, cells, layers, optimizers) is imported eagerly; the layers above it
(tasks, training loop, metrics, learners, the Newton engine) on first attribute access.
"""
import importlib

from . import backends, cells, models, nn, ops, optim, schedules
from .autodiff import stop_gradient, value_and_grad, vjp
from .backends import use
from .scan import block_scan, linear_scan, log_linear_scan

__version__ = "0.1.0"

_LAZY_MODULES = ("tasks", "train", "runs", "metrics", "learners", "continual", "newton")

__all__ = ["backends", "cells", "models", "nn", "ops", "optim", "schedules", "use", "vjp", "value_and_grad",
           "stop_gradient", "linear_scan", "block_scan", "log_linear_scan", "newton_scan", *_LAZY_MODULES]


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "newton_scan":
        return importlib.import_module(".newton", __name__).newton_scan
    raise AttributeError(f"module 'seqcore' has no attribute {name!r}")
