"""Readers for the on-disk formats of the image datasets, with numpy/scipy only (no torchvision).

torchvision is used only to download missing files; reading is ours, so the readers are tested on small
files written by the tests in the same formats:

- MNIST / Fashion-MNIST: IDX files (`train-images-idx3-ubyte[.gz]`, ...), http://yann.lecun.com/exdb/mnist/;
- CIFAR-10 / CIFAR-100: the "python version" pickles (`data_batch_1`, ..., `test_batch`; `train`, `test`);
- SVHN: the cropped-digits MATLAB files (`train_32x32.mat`, `test_32x32.mat`).

Images come back as uint8 arrays (N, C, H, W), labels as int64 (N,).
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

# IDX type codes (third byte of the magic number) -> numpy dtype; multi-byte types are big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzip-compressed, by its `.gz` suffix) as a numpy array of its shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        data = file.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_TYPES[data[2]]), data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset != expected:
        raise ValueError(f"{path}: {len(data) - offset} bytes of data for shape {shape}, expected {expected}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file cannot run arbitrary code."""

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        # Files pickled by numpy 1.x name `numpy.core`, which numpy 2 renamed to `numpy._core`.
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if module.startswith("numpy._core") and not hasattr(np, "_core"):  # numpy 1.x
            module = "numpy.core" + module[len("numpy._core") :]
        return super().find_class(module, name)


def read_pickle(path: str | Path) -> dict:
    with open(path, "rb") as file:
        return _ArrayUnpickler(file, encoding="latin1").load()


def read_cifar(paths: list[Path], label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Concatenated CIFAR batches: images (N, 3, 32, 32) uint8 and labels (N,) int64.

    `label_key` is "labels" for CIFAR-10 and "fine_labels" (or "coarse_labels") for CIFAR-100.
    """
    images, labels = [], []
    for path in paths:
        batch = read_pickle(path)
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        data = np.asarray(batch["data"], dtype=np.uint8)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_svhn(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """An SVHN cropped-digits .mat file: images (N, 3, 32, 32) uint8, labels (N,) int64 with digit 0 as 0.

    The file stores X as (32, 32, 3, N) (height, width, channel, sample) and labels 1..10, 10 meaning 0.
    """
    from scipy.io import loadmat

    mat = loadmat(str(path))
    images = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)), dtype=np.uint8)
    labels = mat["y"].astype(np.int64).reshape(-1) % 10
    return images, labels
