"""Data variants of the classification tasks: duplicated examples, class imbalance, label corruption.

The gradient-variance study (Faghri et al. 2020) runs its estimators on data whose gradients cluster:
training sets with repeated examples, with one class made rare, or with corrupted labels. Every variant
transforms the training split only (validation and test stay as they are), is drawn with its own seed
(`variant_seed`), and is off at its default, where the task is exactly the original one:

    optimlab train task=mnist1d_mlp task.duplicates=100 task.duplicate_copies=20
    optimlab train task=digits_cnn task.imbalance_class=3 task.imbalance_ratio=0.1
    optimlab train task=mnist1d_mlp task.label_noise=0.2

Order: imbalance first (drop examples of one class), then label corruption, then duplication (copies of
corrupted examples stay corrupted, as in the original's single indexed dataset).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from optimlab.errors import ConfigError
from optimlab.tasks.base import Split, Task
from optimlab.tasks.registry import TaskSpec


@dataclass
class DataVariants:
    duplicates: int = 0  # this many random training examples are repeated...
    duplicate_copies: int = 10  # ...this many extra times each
    imbalance_class: int = -1  # keep only imbalance_ratio of this class's training examples (-1: off)
    imbalance_ratio: float = 1.0
    label_noise: float = 0.0  # share of training labels replaced by a different, uniformly random class
    variant_seed: int = 0  # seed of the variants' random choices


VARIANT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DataVariants)}


def apply_variants(train: Split, options: Any, classes: int) -> Split:
    """The training split with the variants of `options` (any object with DataVariants' fields) applied."""
    _check(options, classes)
    generator = torch.Generator().manual_seed(options.variant_seed)
    labels = train.tensors[-1]
    if options.imbalance_class >= 0 and options.imbalance_ratio < 1.0:
        members = (labels == options.imbalance_class).nonzero().squeeze(1)
        kept = members[torch.randperm(len(members), generator=generator)[: round(len(members) * options.imbalance_ratio)]]
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[members] = False
        keep[kept] = True
        train = train.subset(keep.nonzero().squeeze(1))
    if options.label_noise > 0:
        labels = train.tensors[-1].clone()
        chosen = torch.randperm(len(labels), generator=generator)[: round(len(labels) * options.label_noise)]
        shift = torch.randint(1, classes, (len(chosen),), generator=generator)
        labels[chosen] = (labels[chosen] + shift) % classes  # always a different class
        train = Split((*train.tensors[:-1], labels), train.lengths, train.padded)
    if options.duplicates > 0 and options.duplicate_copies > 0:
        chosen = torch.randperm(len(train), generator=generator)[: options.duplicates]
        index = torch.cat([torch.arange(len(train)), chosen.repeat(options.duplicate_copies)])
        train = train.subset(index)
    return train


def _check(options: Any, classes: int) -> None:
    if options.duplicates < 0 or options.duplicate_copies < 0:
        key = "duplicates" if options.duplicates < 0 else "duplicate_copies"
        raise ConfigError(f"task option {key!r} must be >= 0, got {getattr(options, key)}")
    if not 0.0 <= options.imbalance_ratio <= 1.0:
        raise ConfigError(f"task option 'imbalance_ratio' must be in [0, 1], got {options.imbalance_ratio}")
    if options.imbalance_class >= classes:
        raise ConfigError(f"task option 'imbalance_class' must be below the {classes} classes, got {options.imbalance_class}")
    if not 0.0 <= options.label_noise <= 1.0:
        raise ConfigError(f"task option 'label_noise' must be in [0, 1], got {options.label_noise}")


def with_variants(spec: TaskSpec) -> TaskSpec:
    """A classification task's spec whose options also carry DataVariants' fields and whose training split
    has them applied (the number of classes is the built task's `info["classes"]`)."""

    def build(options: Any, data_dir: Path) -> Task:
        task = spec.build(options, data_dir)
        return dataclasses.replace(task, train=apply_variants(task.train, options, task.info["classes"]))

    return TaskSpec(spec.name, build, variant_options(spec.options), spec.description)


def variant_options(options: type) -> type:
    """The task's options dataclass extended with DataVariants' fields."""
    extended = dataclasses.make_dataclass(f"{options.__name__}WithVariants", [], bases=(options, DataVariants))
    extended.__module__ = options.__module__
    return extended
