"""Writers for the real on-disk dataset formats, used to test our readers without torchvision or network.

Written from the format descriptions, independently of `optimlab.tasks.formats`:
- IDX (yann.lecun.com/exdb/mnist): magic 0x00 0x00 <type> <ndim>, ndim big-endian uint32 sizes, data;
- CIFAR "python version": a pickled dict with `data` (N, 3072) uint8 rows (1024 R, 1024 G, 1024 B, each
  row-major 32x32) and `labels` (CIFAR-10) or `fine_labels`/`coarse_labels` (CIFAR-100);
- SVHN cropped digits: a MATLAB file with `X` (32, 32, 3, N) uint8 and `y` (N, 1), label 10 meaning 0.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wb") as file:
            file.write(data)
    else:
        path.write_bytes(data)


def write_mnist(folder: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray], compress=True) -> None:
    """folder/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz], as torchvision stores them."""
    suffix = ".gz" if compress else ""
    for prefix in ("train", "t10k"):
        write_idx(folder / "raw" / f"{prefix}-images-idx3-ubyte{suffix}", images[prefix], compress)
        write_idx(folder / "raw" / f"{prefix}-labels-idx1-ubyte{suffix}", labels[prefix], compress)


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key="labels", numpy1=True) -> None:
    """images (N, 3, 32, 32) uint8. `numpy1`: name numpy.core, as the files on the CIFAR site (numpy 1.x) do."""
    record = {"batch_label": "testing batch", label_key: [int(v) for v in labels],
              "data": np.asarray(images, dtype=np.uint8).reshape(len(images), 3 * 32 * 32)}  # fmt: skip
    if label_key == "fine_labels":
        record["coarse_labels"] = [int(v) // 5 for v in labels]
    blob = pickle.dumps(record, protocol=2)
    if numpy1:
        blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)


def write_svhn(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """images (N, 3, 32, 32) uint8, labels 0..9."""
    from scipy.io import savemat

    x = np.transpose(np.asarray(images, dtype=np.uint8), (2, 3, 1, 0))  # (H, W, C, N)
    y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"X": x, "y": y})


def fake_images(seed: int, n: int, channels: int, size: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)
    labels = np.arange(n) % classes  # every class present where n >= classes
    return images, labels.astype(np.int64)


def write_fake_vision_data(data_dir: Path, train: int = 30, test: int = 10) -> dict[str, tuple[np.ndarray, ...]]:
    """Small files of every image dataset under data_dir; returns {dataset: (x_train, y_train, x_test, y_test)}."""
    out = {}
    for seed, (name, folder) in enumerate([("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]):
        xtr, ytr = fake_images(2 * seed, train, 1, 28, 10)
        xte, yte = fake_images(2 * seed + 1, test, 1, 28, 10)
        write_mnist(data_dir / folder, {"train": xtr[:, 0], "t10k": xte[:, 0]}, {"train": ytr, "t10k": yte},
                    compress=(name == "mnist"))  # fmt: skip
        out[name] = (xtr, ytr, xte, yte)
    # CIFAR-10: five training batches and a test batch.
    xtr, ytr = fake_images(10, train, 3, 32, 10)
    xte, yte = fake_images(11, test, 3, 32, 10)
    for i, part in enumerate(np.array_split(np.arange(train), 5), start=1):
        write_cifar_batch(data_dir / "cifar-10-batches-py" / f"data_batch_{i}", xtr[part], ytr[part])
    write_cifar_batch(data_dir / "cifar-10-batches-py" / "test_batch", xte, yte, numpy1=False)
    out["cifar10"] = (xtr, ytr, xte, yte)
    xtr, ytr = fake_images(12, train, 3, 32, 100)
    xte, yte = fake_images(13, test, 3, 32, 100)
    write_cifar_batch(data_dir / "cifar-100-python" / "train", xtr, ytr, "fine_labels")
    write_cifar_batch(data_dir / "cifar-100-python" / "test", xte, yte, "fine_labels")
    out["cifar100"] = (xtr, ytr, xte, yte)
    xtr, ytr = fake_images(14, train, 3, 32, 10)
    xte, yte = fake_images(15, test, 3, 32, 10)
    write_svhn(data_dir / "svhn" / "train_32x32.mat", xtr, ytr)
    write_svhn(data_dir / "svhn" / "test_32x32.mat", xte, yte)
    out["svhn"] = (xtr, ytr, xte, yte)
    return out
