"""IDX files (the MNIST / Fashion-MNIST format) and the image-as-sequence task.

IDX layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), a byte with the number of dimensions
n, n big-endian uint32 sizes, then the values, big-endian, row-major. Files may
be gzip-compressed (recognised by content, whatever the name).
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..runs import atomic_write
from .base import DatasetTask, Head, check_choice, check_int

__all__ = ["DatasetError", "read_idx", "write_idx", "find_idx_file", "load_idx_split",
           "ImageTask", "DEFAULT_DATA_DIRS"]

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_TYPE_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}

DEFAULT_DATA_DIRS = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",
    "mnist": "/usr/share/datasets/mnist",
}

HOW_TO_GET = (
    "Fashion-MNIST comes with the Debian package dataset-fashion-mnist "
    "(apt-get install dataset-fashion-mnist, files under /usr/share/datasets/fashion-mnist); "
    "for MNIST or another copy, give a directory holding the four IDX files "
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte (each optionally .gz) as data_dir (--data-dir)"
)


class DatasetError(FileNotFoundError, ValueError):
    """A data file is missing or corrupt. Caught by ``except FileNotFoundError``
    and ``except ValueError`` alike; the message names the file and how to get it."""


def _fail(path: os.PathLike | str, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}. {HOW_TO_GET}")


def read_idx(path: os.PathLike | str) -> np.ndarray:
    """Read an IDX file (raw or gzip) into an array in native byte order,
    shaped by the dimensions in its header. Raises ``DatasetError`` when the
    file is missing, truncated, too long or has a malformed header."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except OSError as e:
        raise _fail(path, f"cannot read the file ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise _fail(path, f"corrupt gzip data ({e})") from None
    if len(raw) < 4:
        raise _fail(path, f"not an IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise _fail(path, f"not an IDX file: magic number {raw[:4].hex()} "
                          "(expected 0000 then a type byte 08/09/0b/0c/0d/0e and a dimension count)")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _fail(path, f"truncated header: {len(raw)} bytes, expected {header} for {ndim} dimensions")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: np.prod wraps past int64
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "too long"
        raise _fail(path, f"{kind}: {len(raw)} bytes, expected {expected} for shape {shape} of {dtype.name}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: os.PathLike | str, array: np.ndarray) -> None:
    """Write ``array`` (uint8, int8, int16, int32, float32 or float64; 1 to 255
    dimensions) as an IDX file, gzip-compressed when ``path`` ends in ``.gz``, atomically
    (via a temporary file and a rename)."""
    array = np.asarray(array)
    code = _TYPE_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"array: got dtype {array.dtype}, expected one of "
                        "uint8, int8, int16, int32, float32, float64")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"array: got {array.ndim} dimensions, expected 1 to 255")
    payload = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
               + array.astype(_IDX_TYPES[code]).tobytes())
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload)
    if not Path(path).parent.is_dir():  # atomic_write would create it: a misspelt path would go unnoticed
        raise ValueError(f"path: got {str(path)!r}, whose directory does not exist; expected a file in an "
                         "existing directory")
    atomic_write(path, payload)  # an interrupted write leaves no truncated file behind


def find_idx_file(data_dir: os.PathLike | str, split: str, kind: str) -> Path:
    """The IDX file of ``split`` ("train"/"test") and ``kind`` ("images"/"labels")
    in ``data_dir``. Accepts ``train-images-idx3-ubyte`` and ``train-images.idx3-ubyte``
    spellings, the ``t10k`` or ``test`` prefix, with or without ``.gz``."""
    check_choice("split", split, ("train", "test"))
    check_choice("kind", kind, ("images", "labels"))
    rank = 3 if kind == "images" else 1
    prefixes = ("train",) if split == "train" else ("t10k", "test")
    candidates = [Path(data_dir) / f"{p}-{kind}{sep}idx{rank}-ubyte{gz}"
                  for p in prefixes for sep in ("-", ".") for gz in ("", ".gz")]
    for c in candidates:
        if c.is_file():
            return c
    odd = next((c for c in candidates if c.exists()), None)
    if odd is not None:  # a directory (or other non-file) by the file's name: not "file not found"
        raise _fail(str(odd), "is a directory (or another non-file), expected the IDX file itself")
    if Path(data_dir).is_dir():
        where = ""
    elif Path(data_dir).exists():
        where = f" ({data_dir} is a file, expected the directory holding the IDX files)"
    else:
        where = f" (directory {data_dir} does not exist)"
    raise _fail(f"{candidates[0]}[.gz]", "file not found" + where)


@functools.lru_cache(maxsize=8)
def _load_pair(images: str, labels: str, _stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise _fail(images, f"expected uint8 images of shape (N, H, W), got {x.dtype} of shape {x.shape}")
    if 0 in x.shape[1:]:  # an image of no pixels: nothing to read as a sequence
        raise _fail(images, f"expected images of at least 1 x 1 pixels, got shape {x.shape}")
    if y.ndim != 1 or y.dtype != np.uint8:
        raise _fail(labels, f"expected uint8 labels of shape (N,), got {y.dtype} of shape {y.shape}")
    if len(x) != len(y):
        raise _fail(labels, f"{len(y)} labels for {len(x)} images in {images}")
    if len(x) == 0:  # nothing to sample or score: refused here, where the file can be named
        raise _fail(images, "holds 0 images, expected at least one")
    if len(y) and y.max() > 9:
        raise _fail(labels, f"label {int(y.max())} out of range, expected classes 0..9")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_idx_split(data_dir: os.PathLike | str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 and labels (N,) uint8 of ``split`` from ``data_dir``
    (read-only arrays, cached while the files are unchanged)."""
    images, labels = find_idx_file(data_dir, split, "images"), find_idx_file(data_dir, split, "labels")
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in (images, labels))
    x, y = _load_pair(str(images.resolve()), str(labels.resolve()), stamp)
    if split == "test":  # the model reads (H, W) from the training images and is scored on these
        train = load_idx_split(data_dir, "train")[0]
        if x.shape[1:] != train.shape[1:]:
            train_file = find_idx_file(data_dir, "train", "images")
            raise _fail(images, f"images of shape {x.shape[1:]}, expected {train.shape[1:]} like the "
                                f"training images (shapes {x.shape} here, {train.shape} in {train_file})")
    return x, y


@functools.lru_cache(maxsize=32)
def _permutation(seed: int, size: int) -> np.ndarray:
    perm = np.random.default_rng(seed).permutation(size)
    perm.setflags(write=False)
    return perm


@dataclasses.dataclass(frozen=True)
class ImageTask(DatasetTask):
    """Image classification read as a sequence (10 classes, last-step head).

    ``order="row"``: one row per step, x (B, H, W) -> T = H, D = W (28 x 28);
    ``order="pixel"``: one pixel per step, T = H·W, D = 1 (784 x 1).
    ``permutation_seed``: when set, a fixed pixel permutation (from
    ``numpy.random.default_rng(permutation_seed).permutation(H·W)``) is applied
    to the flattened image before it is cut into steps. Pixels are scaled to [0, 1].
    ``data_dir`` defaults to ``DEFAULT_DATA_DIRS[dataset]``.
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    order: str = "row"
    permutation_seed: int | None = None
    seed: int = 0
    name = "image"

    def _check(self) -> None:
        check_choice("dataset", self.dataset, tuple(DEFAULT_DATA_DIRS))
        check_choice("order", self.order, ("row", "pixel"))
        if self.data_dir is not None:
            if not isinstance(self.data_dir, (str, os.PathLike)):
                raise TypeError(f"data_dir: got {self.data_dir!r}, expected a path or None")
            object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
            if not self.data_dir:  # '' would look in the current directory, and the error name neither
                raise ValueError("data_dir: got '', expected a directory path, or None for the default")
        if self.permutation_seed is not None:
            check_int("permutation_seed", self.permutation_seed, minimum=0)

    @property
    def resolved_data_dir(self) -> str:
        """The directory the IDX files are read from."""
        return self.data_dir if self.data_dir is not None else DEFAULT_DATA_DIRS[self.dataset]

    def images(self, split: str = "train") -> np.ndarray:
        """The raw images of ``split``, (N, H, W) uint8 (unpermuted)."""
        return load_idx_split(self.resolved_data_dir, check_choice("split", split, ("train", "test")))[0]

    def labels(self, split: str = "train") -> np.ndarray:
        y = load_idx_split(self.resolved_data_dir, check_choice("split", split, ("train", "test")))[1]
        return y.astype(np.int64)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the images (reads both splits: a test split of another shape is refused
        here, when the model is sized, not at the first evaluation)."""
        shape = tuple(self.images("train").shape[1:])
        self.images("test")
        return shape

    @property
    def permutation(self) -> np.ndarray | None:
        """The fixed pixel permutation (H·W,) or None."""
        if self.permutation_seed is None:
            return None
        H, W = self.image_shape
        return _permutation(self.permutation_seed, H * W)

    @property
    def input_size(self) -> int:
        return self.image_shape[1] if self.order == "row" else 1

    @property
    def heads(self) -> tuple[Head, ...]:
        return (Head("class", 10, "last"),)

    def _inputs(self, split, indices):
        images = self.images(split)
        H, W = images.shape[1:]
        flat = images[indices].reshape(len(indices), H * W)
        perm = self.permutation
        if perm is not None:
            flat = flat[:, perm]
        x = flat.astype(np.float32) / 255.0
        return x.reshape(len(indices), H, W) if self.order == "row" else x[:, :, None]
