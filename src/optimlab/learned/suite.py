"""Evaluation suites: named problems that each change one thing about the training problem, for
`optimlab evaluate suite=...` and `optimlab baseline suite=...` (docs/amalgamation.md).

`amalgamation` mirrors the evaluation of Optimizer Amalgamation (Huang et al., ICLR 2022;
github.com/VITA-Group/OptimizerAmalgamation, `config/evaluation.py`) on data that needs no download: the
training ConvNet is `digits_cnn` (scikit-learn's 8x8 digits, bundled) and every other problem departs from it
in one respect, as the original's departs from its 2-conv MNIST net. Every ConvNet variant keeps the training
net's `hidden=0` (no hidden linear layer before the classifier):

| problem | change | the original's |
|---|---|---|
| `conv_train` | none: `digits_cnn` with `hidden=0` (conv 16, conv 32, each 3x3 with a 2x2 max-pool, then the linear classifier; 6,090 weights), the meta-training problem of `preset=conv_train` | `conv_train` |
| `conv_deeper_pool` | 5 convs [16, 32, 32, 64, 64], max-pools after the 3rd and 5th | `conv_deeper_pool` |
| `conv_wider` | conv 32, conv 64 | `conv_wider` |
| `conv_mnist1d` | another dataset: MNIST-1D with its 1-D ConvNet (`mnist1d_cnn`) | `conv_fmnist`, `conv_svhn` |
| `conv_smallbatch` | batch 32 | `conv_smallbatch` |
| `conv_train_dp` | DP-SGD gradients: per-example clip 1.0, noise multiplier 1.1 (`privacy=dp_sgd`) | `conv_train_dp` |
| `mlp_train` | an MLP with one layer of 20 sigmoid units (`digits_mlp`) | `mlp_train` |
| `resnet` | ResNet-14 with BatchNorm, width 8 (`digits_resnet`) | `resnet` (CIFAR-10) |

Each problem trains for 25 epochs (the original's), the last partial batch of an epoch dropped, with
validation after every epoch; the score is log of the best validation loss.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

from optimlab.errors import ConfigError, unknown_name


@dataclass(frozen=True)
class SuiteProblem:
    name: str
    task: str  # a registered task
    description: str
    options: dict = field(default_factory=dict)  # the task's options
    batch_size: int = 128
    train: tuple[str, ...] = ()  # extra trainer overrides (privacy=dp_sgd, ...)
    epochs: int = 25


# The training ConvNet of preset=conv_train (digits_cnn, hidden=0); the variants below change one thing about it.
_CONV = {"channels": [16, 32], "hidden": 0}

SUITES: dict[str, list[SuiteProblem]] = {
    "amalgamation": [
        SuiteProblem("conv_train", "digits_cnn", "the training ConvNet", dict(_CONV)),
        SuiteProblem("conv_deeper_pool", "digits_cnn", "5 convs, pooled after the 3rd and 5th",
                     {**_CONV, "channels": [16, 32, 32, 64, 64], "pools": [2, 4]}),
        SuiteProblem("conv_wider", "digits_cnn", "twice the filters (32, 64)", {**_CONV, "channels": [32, 64]}),
        SuiteProblem("conv_mnist1d", "mnist1d_cnn", "another dataset: MNIST-1D, 1-D ConvNet"),
        SuiteProblem("conv_smallbatch", "digits_cnn", "batch 32", dict(_CONV), batch_size=32),
        SuiteProblem("conv_train_dp", "digits_cnn", "DP-SGD gradients (clip 1.0, noise 1.1)", dict(_CONV),
                     train=("privacy=dp_sgd", "privacy.clip=1.0", "privacy.noise_multiplier=1.1")),
        SuiteProblem("mlp_train", "digits_mlp", "MLP, 20 sigmoid units",
                     {"width": 20, "depth": 1, "activation": "sigmoid"}),
        SuiteProblem("resnet", "digits_resnet", "ResNet-14 with BatchNorm", {"depth": 14, "width": 8}),
    ],
}  # fmt: skip


def suite_problems(suite: str, names: list[str] | None = None) -> list[SuiteProblem]:
    """The suite's problems, all or those named (in the given order); errors name the key."""
    if suite not in SUITES:
        raise unknown_name("suite", suite, SUITES)
    problems = {p.name: p for p in SUITES[suite]}
    if not names:
        return list(problems.values())
    for name in names:
        if name not in problems:
            raise ConfigError(f"key 'tasks': {name!r} is not a problem of suite {suite!r} ({', '.join(problems)})")
    return [problems[name] for name in names]


@functools.cache
def _train_size(task: str, options: tuple, data_dir: str | None) -> int:
    from optimlab.tasks import build_task

    return len(build_task(task, dict(options), data_dir).train)


def steps_per_epoch(problem: SuiteProblem, data_dir: str | None = None, options: dict | None = None) -> int:
    """Full batches per pass over the problem's training split (the remainder dropped, as the original)."""
    merged = {**problem.options, **(options or {})}
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in merged.items()))
    size = _train_size(problem.task, key, data_dir)
    return max(1, size // problem.batch_size)


def trainer_overrides(
    problem: SuiteProblem, *, steps: int | None, eval_every: int | None, options: dict | None = None,
    data_dir: str | None = None,
) -> list[str]:  # fmt: skip
    """The `optimlab train` overrides of one problem: task, options, batch size, length, validation cadence
    (by default 25 epochs with validation after each) and its extra trainer keys."""
    epoch = steps_per_epoch(problem, data_dir, options)
    merged = {**problem.options, **(options or {})}
    out = [f"task={problem.task}", f"task.batch_size={problem.batch_size}"]
    out += [f"task.{k}={_value(v)}" for k, v in merged.items()]
    total = steps or problem.epochs * epoch
    out += [f"train.steps={total}", f"train.eval_every={eval_every or epoch}", f"train.checkpoint_every={total}"]
    if data_dir:
        out.append(f"task.data_dir={data_dir}")
    return [*out, *problem.train]


def _value(value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def describe(suite: str) -> list[dict]:
    return [dataclasses.asdict(p) for p in suite_problems(suite)]
