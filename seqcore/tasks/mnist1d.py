"""MNIST-1D: ten 1-D digit templates (length 12), padded, scaled, translated,
sheared, with correlated and i.i.d. noise, resampled to length 40.

Generated locally by the optional package ``mnist1d`` (``pip install mnist1d``)
with its published settings; nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import random

import numpy as np

from ..validate import check_fits_in_memory
from .base import DatasetTask, Head, check_choice, check_real, check_int

__all__ = ["MNIST1DTask"]

_MISSING = ("the mnist1d task needs the optional package 'mnist1d', which generates the data "
            "locally: pip install mnist1d")


@functools.lru_cache(maxsize=4)
def _generate(num_samples: int, train_split: float, seed: int) -> dict:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise ModuleNotFoundError(f"{_MISSING} ({e})", name="mnist1d") from None
    args = get_dataset_args()  # the published recipe; we only change size, split and seed
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    # make_dataset seeds NumPy's and Python's global generators; put them back afterwards
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    out = {
        "train": (np.asarray(data["x"], np.float32)[:, :, None], np.asarray(data["y"], np.int64)),
        "test": (np.asarray(data["x_test"], np.float32)[:, :, None], np.asarray(data["y_test"], np.int64)),
    }
    for x, y in out.values():
        x.setflags(write=False)
        y.setflags(write=False)
    return out


@dataclasses.dataclass(frozen=True)
class MNIST1DTask(DatasetTask):
    """MNIST-1D classification read one value per step: x (B, 40, 1) float32
    (the data set is standardised to mean 0, std 1), label = digit template 0..9.

    ``num_samples`` sequences (a multiple of 10: as many of each digit) are generated
    from ``seed`` (the package's defaults are 5000 and 42) and split ``train_split`` : rest into train : test.
    """

    num_samples: int = 5000
    train_split: float = 0.8
    seed: int = 42
    name = "mnist1d"

    def _check(self) -> None:
        check_int("num_samples", self.num_samples, minimum=20)
        if self.num_samples % 10:  # the generator makes num_samples // 10 per class and drops the rest
            raise ValueError(f"num_samples: got {self.num_samples}, expected a multiple of 10 "
                             "(num_samples // 10 sequences of each digit)")
        # the generator's float64 sequences and our float32 copy, 40 values each
        check_fits_in_memory("num_samples", self.num_samples, self.num_samples * 40 * 12, "data set")
        check_real("train_split", self.train_split, low=0.0, high=1.0, low_open=True)
        total = self.num_samples
        if not 0 < int(total * self.train_split) < total:
            raise ValueError(f"train_split: got {self.train_split}, expected a split leaving both "
                             f"train and test non-empty for num_samples={self.num_samples}")
        if importlib.util.find_spec("mnist1d") is None:
            raise ModuleNotFoundError(_MISSING, name="mnist1d")

    def _split(self, split: str):
        check_choice("split", split, ("train", "test"))
        return _generate(self.num_samples, self.train_split, self.seed)[split]

    @property
    def input_size(self) -> int:
        return 1

    @property
    def heads(self) -> tuple[Head, ...]:
        return (Head("digit", 10, "last"),)

    def labels(self, split: str = "train") -> np.ndarray:
        return self._split(split)[1]

    def _inputs(self, split, indices):
        return np.array(self._split(split)[0][indices])
