"""Data plumbing shared by the task modules: a cache for generated arrays, split helpers, checked files.

Generated data (MNIST-1D, GRU repeat strings) is deterministic in its options, so it is cached under
`data_dir/<namespace>/<hash of the options>.npz` and loaded from there afterwards. The cache is written to a
temporary file and moved into place with `os.replace`, so concurrent runs never read a half-written file.

Every random choice about data uses its own seeded numpy generator, never torch's global generator: the
trainer seeds torch before building a task so that model initialisation follows the run seed, and data must
be the same for every run seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from optimlab.errors import ConfigError
from optimlab.tasks.base import Split

# Bump to invalidate every cached array (e.g. after a change to how generated data is stored).
CACHE_VERSION = 1


def cache_key(namespace: str, args: dict) -> str:
    """A short hash identifying generated data: same namespace and args, same file."""
    blob = json.dumps({"namespace": namespace, "version": CACHE_VERSION, "args": args}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_arrays(
    data_dir: Path, namespace: str, args: dict, make: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """`make()` once per distinct `args`, then the arrays from `data_dir/namespace/<hash>.npz`.

    A cache that cannot be read is regenerated; one that cannot be written (read-only data directory) is
    skipped with a warning, and the data is still returned.
    """
    path = Path(data_dir) / namespace / f"{cache_key(namespace, args)}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError, EOFError):
            pass  # corrupt or truncated by hand: regenerate below
    arrays = make()
    try:
        save_npz_atomic(path, arrays)
    except OSError as error:
        warnings.warn(f"cannot cache generated data in {path.parent}: {error}", stacklevel=2)
    return arrays


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Restore Python's and numpy's global generators afterwards (for libraries that seed them)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent numpy generator for (seed, stream...), e.g. one per split."""
    return np.random.default_rng([seed, *stream])


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) of a seeded random split of range(n); held out is round(n * fraction).

    Both are sorted, so the kept samples stay in their original order.
    """
    check_fraction("val_fraction", fraction)
    count = int(round(n * fraction))
    if fraction > 0 and not 0 < count < n:
        raise ConfigError(f"cannot hold out a fraction {fraction} of {n} samples")
    order = rng(seed, 1).permutation(n)
    return np.sort(order[count:]), np.sort(order[:count])


def check_fraction(name: str, value: float, *, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise ConfigError(f"task option {name!r} must be in {bound}, got {value}")


def check_positive(**values: float | int | None) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise ConfigError(f"task option {name!r} must be positive, got {value}")


def check_non_negative(**values: float | int) -> None:
    for name, value in values.items():
        if value < 0:
            raise ConfigError(f"task option {name!r} must be >= 0, got {value}")


def classification_splits(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    val_fraction: float,
    seed: int,
    train_samples: int | None = None,
    inputs: Callable[[np.ndarray], torch.Tensor] | None = None,
) -> tuple[Split, Split, Split]:
    """Train/val/test Splits (float32 inputs, int64 targets); val is carved out of train with `seed`.

    `train_samples` keeps only the first that many of the remaining training samples (after the val split,
    so val does not depend on it). `inputs` converts input arrays to tensors (default: float32 as they are).
    """
    to_tensor = inputs or (lambda x: torch.as_tensor(x, dtype=torch.float32))
    kept, held = holdout(len(x_train), val_fraction, seed)
    if train_samples is not None:
        check_positive(train_samples=train_samples)
        kept = kept[:train_samples]

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split((to_tensor(x), torch.as_tensor(y, dtype=torch.int64)))

    return split(x_train[kept], y_train[kept]), split(x_train[held], y_train[held]), split(x_test, y_test)


# --------------------------------------------------------------------------------------------------------
# Files with a known checksum


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checked_file(path: Path, sha256: str, url: str | None, *, download: bool, what: str) -> Path:
    """`path` after verifying its sha256; if missing, download it once from `url` (when allowed).

    Every failure is a one-line ConfigError naming the file and how to get it.
    """
    path = Path(path)
    how = f"place {what} at {path}" + (f" (from {url})" if url else "")
    if not path.exists():
        if not (download and url):
            raise ConfigError(f"data file not found: {path}; {how}")
        try:
            download_file(url, path)
        except OSError as error:
            raise ConfigError(f"data file not found: {path}, and downloading it failed ({error}); {how}") from None
    actual = sha256_file(path)
    if actual != sha256:
        raise ConfigError(
            f"data file {path} has sha256 {actual}, expected {sha256}; delete it and {how}"
        )
    return path


def download_file(url: str, path: Path, timeout: float = 60.0) -> None:
    """Download `url` to `path` atomically (a temporary file beside it, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".download")
    try:
        with os.fdopen(fd, "wb") as file, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                file.write(block)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
