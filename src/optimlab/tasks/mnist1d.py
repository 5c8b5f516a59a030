"""MNIST-1D (Greydanus 2020): 40-sample 1-D signals of 10 digit templates, generated locally.

The data comes from the `mnist1d` package's own generator (`mnist1d.data.make_dataset`), never downloaded.
Defaults are the package's: 5000 samples, 4000 train / 1000 test, seed 42. Validation is carved out of the
training set. Generation takes about 2 s, so the arrays are cached in `data_dir/mnist1d/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional
from pathlib import Path

import numpy as np

from optimlab.errors import ConfigError
from optimlab.tasks.base import Task
from optimlab.tasks.common import model_factory
from optimlab.tasks.data import (
    cached_arrays,
    check_non_negative,
    check_positive,
    classification_splits,
    preserved_global_rng,
)
from optimlab.tasks.models import MLP, ConvNet1d, LogisticRegression

LENGTH, CLASSES = 40, 10

# The generator's arguments: `mnist1d.data.get_dataset_args()` of mnist1d 0.0.2 (github.com/greydanus/mnist1d),
# without its download url. Kept here so that loading cached data does not import the `mnist1d` package
# (about 1 s); the package is imported only to generate. They are also the cache key of the generated arrays.
GENERATOR_ARGS = {
    "num_samples": 5000,
    "train_split": 0.8,
    "template_len": 12,
    "padding": [36, 60],
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "shuffle_seq": False,
    "final_seq_length": 40,
    "seed": 42,
}


@dataclass
class MNIST1DOptions:
    num_samples: int = 5000  # generated samples; 80 % train, 20 % test (mnist1d's split): 4000 / 1000
    data_seed: int = 42  # seed of the generator (mnist1d's default) and of the validation split
    val_fraction: float = 0.1  # share of the training samples held out for validation (400)
    shuffle_seq: bool = False  # permute the 40 positions with one fixed permutation ("shuffled MNIST-1D")
    train_samples: Optional[int] = None  # use only this many training samples (after the val split)


@dataclass
class MNIST1DMLPOptions(MNIST1DOptions):
    width: int = 100  # hidden units per layer
    depth: int = 2  # hidden layers
    activation: str = "relu"  # relu | tanh | sigmoid


@dataclass
class MNIST1DCNNOptions(MNIST1DOptions):
    channels: list[int] = field(default_factory=lambda: [32, 32, 32])  # per strided conv layer
    batch_norm: bool = False


def load_mnist1d(options: MNIST1DOptions, data_dir: Path) -> dict[str, np.ndarray]:
    """x (num_samples * 0.8, 40) float32, y int64, x_test, y_test; cached in data_dir/mnist1d/."""
    check_positive(num_samples=options.num_samples)
    if options.num_samples < 5 * CLASSES:
        raise ConfigError(f"task option 'num_samples' must be at least {5 * CLASSES}, got {options.num_samples}")
    args = {**GENERATOR_ARGS, "padding": list(GENERATOR_ARGS["padding"])}
    args.update(num_samples=options.num_samples, seed=options.data_seed, shuffle_seq=options.shuffle_seq)

    def make() -> dict[str, np.ndarray]:
        from mnist1d.data import make_dataset
        from mnist1d.utils import ObjectView

        with preserved_global_rng():  # make_dataset seeds numpy's and Python's global generators
            data = make_dataset(ObjectView(dict(args)))
        return {
            "x": data["x"].astype(np.float32),
            "y": data["y"].astype(np.int64),
            "x_test": data["x_test"].astype(np.float32),
            "y_test": data["y_test"].astype(np.int64),
        }

    return cached_arrays(data_dir, "mnist1d", args, make)


def _task(name: str, options: MNIST1DOptions, data_dir: Path, make) -> Task:
    data = load_mnist1d(options, data_dir)
    train, val, test = classification_splits(
        data["x"], data["y"], data["x_test"], data["y_test"],
        val_fraction=options.val_fraction, seed=options.data_seed, train_samples=options.train_samples,
    )  # fmt: skip
    factory = model_factory(name, make)
    info = {"input_shape": [LENGTH], "classes": CLASSES}
    return Task(name, train, val, test, factory(), info=info, model_factory=factory)


def build_logreg(options: MNIST1DOptions, data_dir: Path) -> Task:
    return _task("mnist1d_logreg", options, data_dir, lambda: LogisticRegression(LENGTH, CLASSES))


def build_mlp(options: MNIST1DMLPOptions, data_dir: Path) -> Task:
    check_positive(width=options.width)
    check_non_negative(depth=options.depth)
    hidden = [options.width] * options.depth
    return _task("mnist1d_mlp", options, data_dir, lambda: MLP(LENGTH, hidden, CLASSES, options.activation))


def build_cnn(options: MNIST1DCNNOptions, data_dir: Path) -> Task:
    channels = list(options.channels)
    return _task("mnist1d_cnn", options, data_dir, lambda: ConvNet1d(LENGTH, CLASSES, channels, 1, options.batch_norm))
