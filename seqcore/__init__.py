"""seqcore — a workbench for recurrent sequence learning.

``import seqcore`` needs only NumPy; other backends load on first use.
"""
from . import backends, ops
from .autodiff import stop_gradient, value_and_grad, vjp
from .backends import use
from .scan import block_scan, linear_scan, log_linear_scan

__version__ = "0.1.0"

__all__ = ["backends", "ops", "use", "vjp", "value_and_grad", "stop_gradient",
           "linear_scan", "block_scan", "log_linear_scan"]
