"""Typed configuration of `optimlab meta-train` (dataclasses + OmegaConf, like the trainer's config).

    optimlab meta-train policy=rnnprop tasks=[mnist1d_mlp] strategy=curriculum estimator=tbptt \
        strategy.unroll_len=100 meta_optimizer.lr=1e-3 run_dir=runs/meta/rnnprop

`group=value` is shorthand for `group.name=value` (policy, strategy, estimator, distill); `policy.*` keys
beyond `name` are the policy's constructor arguments; `task_options.*` are the tasks' options. `preset=quick`
starts from a small configuration that meta-trains in about a minute on a CPU; `preset=a,b,c` applies
several presets in order, as Optimizer Amalgamation's `--presets` do (`preset=conv_train,adam,rmsprop,il_more`,
docs/amalgamation.md). Every error names its key.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from optimlab.config import LogConfig, default_data_dir, read_yaml_mapping
from optimlab.errors import ConfigError, suggest, unknown_name
from optimlab.learned.perturb import PerturbConfig, check_config as check_perturb

SHORTHAND = ("policy", "strategy", "estimator", "perturb", "distill")


@dataclass
class PolicyConfig:
    name: str = "rnnprop"  # rnnprop | dm | scale | small_fc_lopt
    options: dict = field(default_factory=dict)  # constructor arguments (policy.layers=[20,20])


@dataclass
class StrategyConfig:
    name: str = "curriculum"  # curriculum | repeat
    unroll_len: int = 100  # inner steps per truncation (one meta-gradient each)
    depths: list[int] = field(
        default_factory=lambda: [1, 2, 5, 10]
    )  # truncations per trajectory: per stage / per period
    validation_depths: list[int] = field(
        default_factory=lambda: [2, 5, 10, 20]
    )  # per stage (curriculum) / [d] (repeat)
    epochs: int = 10  # trajectories per period
    min_periods: int = 6  # curriculum: periods a stage runs at least
    num_chances: int = 5  # curriculum: periods a stage continues past its best validation
    max_periods: int = 30  # curriculum: cap on periods per stage
    num_periods: int = 5  # repeat: periods in all
    max_repeat: int = 4  # rollbacks of one period before it is accepted anyway
    repeat_threshold: float = 0.5  # blow-up: value > reference + threshold * |reference|
    validation_trajectories: int = 10
    validation_seed: int = 12345
    warmup_steps: int = 100  # SGD steps at warmup_lr opening every trajectory (also the packaged optimizer's)
    warmup_lr: float = 0.05
    scale_spread: float = 3.0  # random parameter scale exp(U(-spread, spread)); 0 disables
    select: str = "best"  # repeat: final weights from the best-validation period or the last one


@dataclass
class EstimatorConfig:
    name: str = "tbptt"  # tbptt | es | pes
    second_order: bool = True  # tbptt: backpropagate through the inner gradients
    std: float = 0.01  # es / pes: perturbation standard deviation
    pairs: int = 1  # es / pes: antithetic pairs per estimate


@dataclass
class MetaOptimizerConfig:
    lr: float = 1e-3  # Adam
    eps: float = 1e-7
    clip_ratio: float = 0.1  # adaptive gradient clipping: |G| <= ratio * max(|W|, clip_eps), per tensor
    clip_eps: float = 1e-3


@dataclass
class DistillConfig:
    """Optimizer Amalgamation's distillation (optimlab.learned.distill; docs/amalgamation.md). Off by default."""

    name: str = "none"  # none | analytical (pool rules as teachers) | choice (one trained optimizer as teacher)
    teachers: list[str] = field(default_factory=list)  # analytical: rule names or NAME:LR (presets adam, rmsprop)
    teacher: Optional[str] = None  # choice: a learned-optimizer directory, e.g. a choice policy's run_dir
    compat: str = "l2o"  # analytical teachers: the original's rules (l2o) or the textbook ones (standard)
    reduce: str = "max"  # over teachers, per step: max (min-max amalgamation) | mean
    weights: list[float] = field(default_factory=lambda: [0.2, 0.1, 0.05, 0.02])  # imitation weight per stage
    teacher_scale: str = "oracle"  # teachers step in the unscaled coordinates (oracle) or the student's (student)


@dataclass
class MetaTrainConfig:
    seed: int = 0
    run_dir: Optional[str] = None  # default: runs/meta/<policy>-<config hash>
    preset: Optional[str] = None
    tasks: list[str] = field(default_factory=lambda: ["mnist1d_mlp"])  # trajectories cycle through them
    task_options: dict = field(default_factory=dict)
    batch_size: int = 128
    data_dir: str = field(default_factory=default_data_dir)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    meta_optimizer: MetaOptimizerConfig = field(default_factory=MetaOptimizerConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    checkpoint_every: int = 10  # meta-iterations between checkpoints (and at every period's end)
    log: LogConfig = field(default_factory=LogConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)  # of the policy's weights while meta-training


# The choice policy's training schedule: the original's `cl_fixed` (a repeat strategy of 5 periods at depths
# 1, 2, 5, 5, 5, validated on one trajectory of 10 truncations, rollback threshold 0.9, no imitation).
_CL_FIXED = {
    "name": "repeat", "num_periods": 5, "depths": [1, 2, 5], "validation_depths": [10],
    "validation_trajectories": 1, "max_repeat": 4, "repeat_threshold": 0.9,
}  # fmt: skip

# Optimizer Amalgamation (docs/amalgamation.md): the presets of VITA-Group/OptimizerAmalgamation by name;
# they compose as its --presets do (preset=conv_train,adam,rmsprop,il_more). `conv_train` is the training
# problem at CPU scale: the original's 2-conv MNIST CNN becomes the offline sklearn-digits CNN (conv 16, conv
# 32, each 3x3 + 2x2 max-pool, linear head: 6 tensors, 6,090 weights), with 20-step truncations, 4
# trajectories per period and 2 to 3 periods per curriculum stage (the original: 100, 10 and at least 6).
AMALGAMATION_PRESETS: dict[str, dict[str, Any]] = {
    "conv_train": {
        "tasks": ["digits_cnn"],
        "task_options": {"hidden": 0},
        "batch_size": 128,
        "strategy": {
            "unroll_len": 20,
            "epochs": 4,
            "min_periods": 2,
            "num_chances": 1,
            "max_periods": 3,
            "validation_trajectories": 2,
            "warmup_steps": 5,
        },
    },  # fmt: skip
    # Teachers (min-max distillation by default); each preset adds one, with the original's settings.
    **{
        name: {"distill": {"name": "analytical", "teachers": [name]}}
        for name in ("adam", "rmsprop", "sgd", "momentum", "powersign", "addsign")
    },
    "il_more": {"distill": {"weights": [0.2, 0.1, 0.05, 0.02]}},  # imitation weight per curriculum stage
    "il_adjusted": {"distill": {"weights": [0.2, 0.04, 0.02, 0.01]}},
    "reduce_mean": {"distill": {"reduce": "mean"}},
    "cl_fixed": {"strategy": _CL_FIXED, "distill": {"weights": [0.0]}},
    # The choice policies, trained as the original trains them (cl_fixed); distil them with
    # distill=choice distill.teacher=<their run_dir>.
    "less_choice": {"policy": {"name": "choice", "pool": "small"}, "strategy": _CL_FIXED},
    "more_choice": {"policy": {"name": "choice", "pool": "large"}, "strategy": _CL_FIXED},
}

PRESETS: dict[str, dict[str, Any]] = {
    # About a minute on one CPU core: a narrow MNIST-1D MLP, short truncations, two curriculum stages.
    "quick": {
        "tasks": ["mnist1d_mlp"],
        "task_options": {"width": 32},
        "batch_size": 64,
        "strategy": {
            "unroll_len": 20,
            "depths": [1, 2],
            "validation_depths": [2, 3],
            "epochs": 3,
            "min_periods": 2,
            "num_chances": 1,
            "max_periods": 3,
            "validation_trajectories": 2,
            "warmup_steps": 10,
        },
        "checkpoint_every": 5,
    },
    **AMALGAMATION_PRESETS,
}

# Stability-aware meta-training (Optimizer Amalgamation, Huang et al. 2022): one perturbation of the policy's
# weights, named and sized as the original's presets (`gaussian_rel` is `relative_gaussian`, `cgd` is
# `adaptive_pgd`; the original has no persistent preset). Like the original's, they modify the presets before
# them: preset=conv_train,il_more,relative_gaussian.
PERTURBATIONS = {
    "gaussian": {"name": "gaussian", "magnitude": 1e-3},
    "relative_gaussian": {"name": "relative_gaussian", "magnitude": 5e-4},
    "persistent_gaussian": {"name": "persistent_gaussian", "magnitude": 1e-3},
    "fgsm": {"name": "fgsm", "magnitude": 1e-3},
    "pgd": {"name": "pgd", "magnitude": 1e-4, "steps": 1, "norm": "inf", "lr": 0.1},
    "adaptive_pgd": {"name": "adaptive_pgd", "magnitude": 1e-3, "steps": 1},
}
PRESETS.update({name: {"perturb": perturb} for name, perturb in PERTURBATIONS.items()})

_CHOICES = {
    "strategy.name": ("curriculum", "repeat"),
    "estimator.name": ("tbptt", "es", "pes"),
    "strategy.select": ("best", "last"),
    "distill.name": ("none", "analytical", "choice"),
    "distill.compat": ("l2o", "standard"),
    "distill.reduce": ("max", "mean"),
    "distill.teacher_scale": ("oracle", "student"),
}


def load_meta_config(overrides: list[str] | tuple[str, ...] = (), base: dict | None = None) -> MetaTrainConfig:
    items = [_expand(item) for item in overrides]
    tree: dict = {}
    for value in (v for k, v in items if k == "preset"):
        for name in value.split(","):  # preset=conv_train,adam,rmsprop,il_more, as the original's --presets
            tree = _merge_preset(tree, _preset(name.strip()))
        tree["preset"] = value
    tree = _merge(tree, base or {})
    dotted = [f"{k}={v}" for k, v in items]
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist(dotted))
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot parse overrides: {error}") from None
    return from_tree(_merge(tree, parsed))


def load_meta_config_file(path: str | Path, overrides=()) -> MetaTrainConfig:
    return load_meta_config(overrides, read_yaml_mapping(path, "config file"))


def _expand(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"expected key=value, got {item!r}")
    if key in SHORTHAND:
        key = f"{key}.name"
    return key, value


def _preset(name: str) -> dict:
    if name not in PRESETS:
        raise unknown_name("preset", name, PRESETS)
    return {**PRESETS[name], "preset": name}


def _merge_preset(tree: dict, preset: dict) -> dict:
    """Presets compose like the original's: each adds its teachers to those of the presets before it."""
    before = list((tree.get("distill") or {}).get("teachers") or [])
    merged = _merge(tree, preset)
    added = (preset.get("distill") or {}).get("teachers")
    if added is not None:
        merged["distill"] = {**merged["distill"], "teachers": before + list(added)}
    return merged


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("task_options",)
            else value
        )
    return out


def from_tree(tree: dict) -> MetaTrainConfig:
    tree = dict(tree)
    known = {f.name for f in dataclasses.fields(MetaTrainConfig)}
    for key in tree:
        if key not in known:
            raise unknown_name("config key", key, known)
    policy = dict(tree.pop("policy", None) or {})
    name = policy.pop("name", PolicyConfig.name)
    options = dict(policy.pop("options", None) or {})
    options.update(policy)
    _check_policy(name, options)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(MetaTrainConfig), tree)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or ""
        raise ConfigError(f"config key {key!r}: {str(error).splitlines()[0]}") from None
    cfg.policy = PolicyConfig(name=name, options=options)
    validate(cfg)
    return cfg


def _check_policy(name: str, options: dict) -> None:
    from optimlab.learned.policies import POLICIES

    if name not in POLICIES:
        raise ConfigError(f"config key 'policy.name': unknown policy {name!r}{suggest(name, POLICIES)}")
    accepted = inspect.signature(POLICIES[name]).parameters
    for key in options:
        if key not in accepted:
            raise ConfigError(f"unknown config key 'policy.{key}' for policy {name!r}{suggest(key, accepted)}")


def validate(cfg: MetaTrainConfig) -> None:
    for key, choices in _CHOICES.items():
        group, name = key.split(".")
        value = getattr(getattr(cfg, group), name)
        if value not in choices:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(choices)}")
    s = cfg.strategy
    positive = {
        "batch_size": cfg.batch_size, "checkpoint_every": cfg.checkpoint_every, "strategy.unroll_len": s.unroll_len,
        "strategy.epochs": s.epochs, "strategy.min_periods": s.min_periods, "strategy.num_periods": s.num_periods,
        "strategy.validation_trajectories": s.validation_trajectories, "strategy.max_periods": s.max_periods,
        "estimator.pairs": cfg.estimator.pairs, "meta_optimizer.lr": cfg.meta_optimizer.lr,
        "estimator.std": cfg.estimator.std, "meta_optimizer.clip_ratio": cfg.meta_optimizer.clip_ratio,
    }  # fmt: skip
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"config key {key!r}: must be positive, got {value}")
    for key, values in (("strategy.depths", s.depths), ("strategy.validation_depths", s.validation_depths)):
        if not values or min(values) <= 0:
            raise ConfigError(f"config key {key!r}: expected a non-empty list of positive integers, got {list(values)}")
    if s.name == "curriculum" and len(s.validation_depths) != len(s.depths):
        raise ConfigError(
            f"config key 'strategy.validation_depths': needs one entry per stage ({len(s.depths)}), got {len(s.validation_depths)}"
        )
    if not cfg.tasks:
        raise ConfigError("config key 'tasks': expected at least one task")
    check_perturb(cfg.perturb)
    _validate_distill(cfg.distill)
    for key, value in (
        ("strategy.warmup_steps", s.warmup_steps),
        ("strategy.max_repeat", s.max_repeat),
        ("strategy.scale_spread", s.scale_spread),
        ("strategy.num_chances", s.num_chances),
    ):
        if value < 0:
            raise ConfigError(f"config key {key!r}: must be >= 0, got {value}")


def _validate_distill(d: DistillConfig) -> None:
    if not d.weights or min(d.weights) < 0:
        raise ConfigError(
            f"config key 'distill.weights': expected a non-empty list of weights >= 0, got {list(d.weights)}"
        )
    if d.name == "analytical":
        from optimlab.learned.pool import build_rule

        if not d.teachers:
            raise ConfigError("config key 'distill.teachers': distill=analytical needs teachers, e.g. [adam,rmsprop]")
        for spec in d.teachers:
            build_rule(spec, d.compat, key="distill.teachers")
    if d.name == "choice" and not d.teacher:
        raise ConfigError("config key 'distill.teacher': distill=choice needs the directory of a trained optimizer")


def to_tree(cfg: MetaTrainConfig) -> dict:
    tree = dataclasses.asdict(cfg)
    policy = tree["policy"]
    policy.update(policy.pop("options"))
    return tree


def to_yaml(cfg: MetaTrainConfig) -> str:
    return yaml.safe_dump(to_tree(cfg), sort_keys=False)
