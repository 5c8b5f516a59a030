"""scikit-learn's bundled handwritten digits (UCI optdigits test set): 1797 8x8 images, 10 classes.

Offline: the arrays ship with optimlab (`tasks/arrays/digits.npz`, scikit-learn's copy). There is no official split: a fixed seeded 20 % is the test set,
and 10 % of the rest is the validation set. Pixels (0..16) are standardised with the training set's mean and
standard deviation. Images are stored as (N, 1, 8, 8); the MLP flattens them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np

from optimlab.tasks.base import Task
from optimlab.tasks.common import model_factory
from optimlab.tasks.data import check_fraction, check_non_negative, check_positive, classification_splits, rng
from optimlab.errors import ConfigError
from optimlab.tasks.models import MLP, ConvNet2d, LogisticRegression, ResNet

SIZE, CLASSES = 8, 10


@dataclass
class DigitsOptions:
    data_seed: int = 0  # seed of the test and validation splits
    test_fraction: float = 0.2  # share of the 1797 images in the test set (359)
    val_fraction: float = 0.1  # share of the remaining images held out for validation (144)
    train_samples: Optional[int] = None  # use only this many training samples (after the val split)


@dataclass
class DigitsMLPOptions(DigitsOptions):
    width: int = 128  # hidden units per layer
    depth: int = 2  # hidden layers
    activation: str = "relu"  # relu | tanh | sigmoid


@dataclass
class DigitsCNNOptions(DigitsOptions):
    channels: list[int] = field(default_factory=lambda: [16, 32])  # 3x3 conv + 2x2 max-pool stages
    hidden: int = 64  # hidden linear layer before the classifier (0: none)
    batch_norm: bool = False
    pools: Optional[list[int]] = None  # conv layers (0-based) followed by the max-pool (None: every one)


@dataclass
class DigitsResNetOptions(DigitsOptions):
    depth: int = 8  # 6n+2: a 3x3 stem and three stages of n basic blocks (8 x 8, 4 x 4, 2 x 2)
    width: int = 8  # channels of the first stage (then 2x and 4x)
    batch_norm: bool = True


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8x8 images (uint8, 0..16) and labels of scikit-learn's `load_digits`, shipped with optimlab
    (45 kB) so the digits tasks need neither scikit-learn nor a download. Source: the test set of the UCI
    "Optical Recognition of Handwritten Digits" data (Alpaydin & Kaynak, 1998; CC BY 4.0), as scikit-learn
    distributes it; tests check the copy against scikit-learn's where it is installed."""
    with resources.files("optimlab.tasks").joinpath("arrays/digits.npz").open("rb") as file:
        arrays = np.load(file)
        return arrays["images"], arrays["target"]


def load_digits(options: DigitsOptions) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test), images float32 (N, 1, 8, 8) standardised with train statistics."""
    check_fraction("test_fraction", options.test_fraction)
    images, target = digits_arrays()
    x = images.astype(np.float32)[:, None]
    y = target.astype(np.int64)
    order = rng(options.data_seed, 0).permutation(len(y))
    count = int(round(len(y) * options.test_fraction))
    test, train = np.sort(order[:count]), np.sort(order[count:])
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return x[train], y[train], x[test], y[test]


def _task(name: str, options: DigitsOptions, make) -> Task:
    x_train, y_train, x_test, y_test = load_digits(options)
    train, val, test = classification_splits(
        x_train, y_train, x_test, y_test,
        val_fraction=options.val_fraction, seed=options.data_seed, train_samples=options.train_samples,
    )  # fmt: skip
    factory = model_factory(name, make)
    info = {"input_shape": [1, SIZE, SIZE], "classes": CLASSES}
    return Task(name, train, val, test, factory(), info=info, model_factory=factory)


def build_logreg(options: DigitsOptions, data_dir: Path) -> Task:
    del data_dir  # bundled with scikit-learn
    return _task("digits_logreg", options, lambda: LogisticRegression(SIZE * SIZE, CLASSES))


def build_mlp(options: DigitsMLPOptions, data_dir: Path) -> Task:
    del data_dir
    check_positive(width=options.width)
    check_non_negative(depth=options.depth)
    hidden = [options.width] * options.depth
    return _task("digits_mlp", options, lambda: MLP(SIZE * SIZE, hidden, CLASSES, options.activation))


def build_cnn(options: DigitsCNNOptions, data_dir: Path) -> Task:
    del data_dir
    channels = list(options.channels)
    pools = None if options.pools is None else list(options.pools)
    if pools is not None and not set(pools) <= set(range(len(channels))):
        raise ConfigError(f"task option 'pools' must index the {len(channels)} conv layers (0-based), got {pools}")
    return _task(
        "digits_cnn",
        options,
        lambda: ConvNet2d(1, SIZE, CLASSES, channels, options.hidden, options.batch_norm, pools),
    )


def build_resnet(options: DigitsResNetOptions, data_dir: Path) -> Task:
    del data_dir
    check_positive(width=options.width)
    if options.depth < 8 or (options.depth - 2) % 6:
        raise ConfigError(f"task option 'depth' must be 6n+2 (8, 14, 20, ...), got {options.depth}")
    return _task("digits_resnet", options, lambda: ResNet(options.depth, CLASSES, 1, options.width, options.batch_norm))
