"""Typed run configuration: one dataclass per concern, YAML files and dotted `key=value` overrides.

    optimlab train task=mnist1d_mlp optim=adam optim.lr=3e-3 train.steps=2000 seed=1 run_dir=runs/a

Parsing and typing are OmegaConf's (structured configs). Two groups are open-ended because their keys
depend on a name: `task.*` beyond the common keys are the task's own options (validated against the task's
options dataclass) and `optim.*` beyond `name` and `no_decay` (the param-group policy) are keyword arguments
of the optimizer (validated against its constructor signature). `group=value` is shorthand for
`group.name=value`. Every error names the key.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from optimlab import rundir
from optimlab.errors import ConfigError, suggest, unknown_name
from optimlab.registry import RegistryNames

NAMED_GROUPS = ("task", "optim", "schedule", "hyper")
# List-valued shorthands: `instruments=[grad_stats,hessian_top]` is `instruments.names=[...]`.
LIST_GROUPS = {"instruments": "names"}


def default_data_dir() -> str:
    return os.environ.get("OPTIMLAB_DATA_DIR", str(Path("~/.cache/optimlab/data").expanduser()))


@dataclass
class TaskConfig:
    name: str = "mnist1d_mlp"
    batch_size: int = 128
    eval_batch_size: int = 1000
    data_dir: str = field(default_factory=default_data_dir)
    # Task-specific options (`task.width=512`), validated against the task's options dataclass.
    options: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "adam"
    # Optimizer keyword arguments (`optim.lr=3e-3`), validated against its constructor signature.
    kwargs: dict = field(default_factory=dict)
    # Parameters exempt from weight decay: any of bias, norm (`optim.no_decay=[bias,norm]`); see
    # optimlab.optim.param_groups. Written to config.yaml only when set, so older run hashes stay valid.
    no_decay: list[str] = field(default_factory=list)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, stepped once per training iteration."""

    name: str = "constant"  # constant | step | exponential | cosine | sgdr
    warmup_steps: int = 0  # linear warm-up from lr/warmup_steps to lr
    milestones: list[int] = field(default_factory=list)  # step: multiply by gamma at these steps
    step_size: Optional[int] = None  # step: or multiply by gamma every step_size steps (staircase)
    gamma: float = 0.1  # step: factor per milestone; exponential: factor per step
    min_lr: float = 0.0  # cosine and sgdr: the floor
    T_0: int = 1000  # sgdr: length of the first cycle in steps
    T_mult: int = 1  # sgdr: cycle length multiplier


@dataclass
class HyperConfig:
    """Hypergradient learning-rate control (MARTHE family); `none` trains with a fixed schedule."""

    name: str = "none"  # none | marthe | rtho
    # Defaults suit small nets (docs/hypergradients.md has tuned values): AdaTune's 1e-8 was for big ones.
    hyper_lr: float = 1e-6
    mu: float = -1.0  # tangent discount in [0, 1]; < 0 adapts it (MARTHE), 1 is RTHO
    alpha: float = 0.0  # > 0 adapts hyper_lr
    first_order: bool = False
    variant: str = "adatune"  # adatune | marthe_tf
    lr_min: float = 0.0
    lr_max: Optional[float] = None
    val_every: int = 1  # validation gradient and lr update every this many steps
    holdout_fraction: float = 0.1  # share of the training split held out for the validation gradient


@dataclass
class InstrumentsConfig:
    """Gradient instruments (docs/instruments.md): measurements that never change the trajectory."""

    names: list[str] = field(default_factory=list)  # see `optimlab list instruments`
    every: int = 50  # measure every this many steps...
    start: int = 0  # ...from this step on
    log_spaced: int = 0  # > 0: instead, about this many log-spaced measurements per decade of steps
    draws: int = 10  # direction_variance: T draws (2T with compat=study)
    draw_batch_size: Optional[int] = None  # direction_variance: batch size g of a draw (None: training's)
    compat: str = "unbiased"  # direction_variance: unbiased | study (the original's biased two-phase form)
    hessian_iterations: int = 20  # hessian_top: at most this many power iterations (one HVP each)
    hessian_tol: float = 1e-3  # hessian_top: stop at this relative change of the eigenvalue
    microbatch_size: Optional[int] = None  # grad_stats: examples per per-example pass (memory bound)


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps (iterations) in the whole run
    microbatch_size: Optional[int] = None  # examples per forward/backward, gradients accumulated (None: whole batch)
    clip_grad_norm: Optional[float] = None  # max global L2 norm of the gradient before each step (None: no clipping)
    amp: str = "none"  # none | bf16 | fp16 (GPU only: on CPU it is ignored)
    length_bucketing: bool = False  # batches of similar sequence length (sequence tasks only)
    log_every: int = 10  # steps between training-loss log lines (metrics.jsonl and loggers)
    eval_every: int = 200  # steps between validation evaluations
    eval_batches: Optional[int] = None  # cap on evaluation batches per split (None: the whole split)
    checkpoint_every: int = 500  # steps between checkpoints
    keep_checkpoints: int = 2  # most recent checkpoints kept on disk (older ones deleted)
    resume: bool = True  # continue from the run directory's latest checkpoint (false: start over)
    device: str = "auto"  # auto (the GPU with the most free memory, else CPU) | cpu | cuda | cuda:N
    # Training order: auto (the task's own: contiguous lanes for language models, else shuffled) | uniform |
    # loss | gradnorm (importance sampling with unbiasing weights, optimlab.train.importance).
    sampler: str = "auto"
    sampler_floor: float = 0.1  # loss/gradnorm: share of the uniform distribution mixed in, in (0, 1]
    init_from: Optional[str] = None  # model weights only, from an optimlab checkpoint or a state_dict file
    # Intra-op CPU threads (torch.set_num_threads); None: the process's own (OMP_NUM_THREADS). The thread count
    # changes float results (reduction order), so config.yaml records the count the run used.
    threads: Optional[int] = None


@dataclass
class LogConfig:
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "optimlab"
    wandb_mode: str = "offline"  # offline | online | disabled
    progress: str = "auto"  # auto (on interactive terminals) | always | never


@dataclass
class Config:
    seed: int = 0
    run_dir: Optional[str] = None  # default: runs/<task>/<optim>-<config hash>
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    hyper: HyperConfig = field(default_factory=HyperConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    instruments: InstrumentsConfig = field(default_factory=InstrumentsConfig)


# Names chosen from a registry are read from it when a config is validated (the registries import torch).
_CHOICES = {
    "schedule.name": RegistryNames("optimlab.train.schedules", "SCHEDULES"),
    "hyper.name": RegistryNames("optimlab.hyper", "CONTROLLERS"),
    "hyper.variant": ("adatune", "marthe_tf"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.sampler": ("auto", "uniform", "loss", "gradnorm"),
    "log.wandb_mode": ("offline", "online", "disabled"),
    "log.progress": ("auto", "always", "never"),
    "instruments.compat": ("unbiased", "study"),
}


# --------------------------------------------------------------------------------------------------------
# Loading


def load_config(overrides: list[str] | tuple[str, ...] = (), base: dict | None = None) -> Config:
    """Defaults <- `base` (a nested dict, e.g. a YAML file's contents) <- dotted `key=value` overrides."""
    tree = OmegaConf.create(_as_tree(base or {}))
    tree = OmegaConf.merge(tree, parse_overrides(overrides))
    return from_tree(OmegaConf.to_container(tree))


def load_config_file(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    return load_config(overrides, read_yaml_mapping(path, "config file"))


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """A YAML file's mapping, read as the command line reads values: `1e-3`, `1E6` and `.5` are floats.

    PyYAML alone follows YAML 1.1, where `1e-3` is a string; OmegaConf's loader reads numbers as users write
    them. Python object tags are refused. Every failure is a ConfigError naming the file.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a text file") from None
    except OSError as error:
        raise ConfigError(f"{what} {path} cannot be read: {error.strerror}") from None
    try:
        tree = OmegaConf.to_container(OmegaConf.load(io.StringIO(text))) if text.strip() else {}
    except (yaml.YAMLError, OmegaConfBaseException) as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{what} {path} must hold a mapping, not {type(tree).__name__}")
    return tree


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """Dotted `key=value` pairs (values parsed as YAML) to a nested DictConfig."""
    items = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        if key in NAMED_GROUPS:  # `optim=adam` is `optim.name=adam`
            key = f"{key}.name"
        elif key in LIST_GROUPS:  # `instruments=[a,b]` is `instruments.names=[a,b]`
            key = f"{key}.{LIST_GROUPS[key]}"
        items.append(f"{key}={value}")
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot parse overrides: {error}") from None


def _as_tree(base: dict) -> dict:
    """Accept both nested mappings and dotted keys (`{'optim.lr': 0.1}`) and the `group: name` shorthand."""
    tree = OmegaConf.create()
    for key, value in base.items():
        key = str(key)
        if key in NAMED_GROUPS and not isinstance(value, dict):
            key, value = f"{key}.name", value
        elif key in LIST_GROUPS and not isinstance(value, dict):
            key = f"{key}.{LIST_GROUPS[key]}"
        if "." in key:
            OmegaConf.update(tree, key, value, force_add=True)
        else:
            tree = OmegaConf.merge(tree, {key: value})
    return OmegaConf.to_container(tree)


def from_tree(tree: dict) -> Config:
    """Validate a nested plain dict (the format of config.yaml) and build a `Config`."""
    tree = dict(tree)
    known = {f.name for f in dataclasses.fields(Config)}
    for key in tree:
        if key not in known:
            raise unknown_name("config key", key, known)
    task = _task_config(_group(tree, "task"))
    optim = _optim_config(_group(tree, "optim"))
    plain = {k: v for k, v in tree.items() if k not in ("task", "optim")}
    try:
        merged = OmegaConf.merge(_schema(_PlainConfig), plain)
    except OmegaConfBaseException as error:
        raise _config_error(error) from None
    obj = OmegaConf.to_object(merged)
    cfg = Config(task=task, optim=optim, **{f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    validate(cfg)
    return cfg


@dataclass
class _PlainConfig:
    """The groups OmegaConf types directly."""

    seed: int = 0
    run_dir: Optional[str] = None
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    hyper: HyperConfig = field(default_factory=HyperConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    instruments: InstrumentsConfig = field(default_factory=InstrumentsConfig)


@functools.cache
def _schema(dataclass_type: type) -> DictConfig:
    """The structured config of a dataclass, built once (OmegaConf.structured is slow); merges copy it."""
    return OmegaConf.structured(dataclass_type)


def _group(tree: dict, name: str) -> dict:
    value = tree.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"config key {name!r} must be a mapping, got {value!r}")
    return dict(value)


def _config_error(error: OmegaConfBaseException) -> ConfigError:
    key = getattr(error, "full_key", None) or ""
    message = str(error).splitlines()[0]
    return ConfigError(f"config key {key!r}: {message}" if key else message)


def _task_config(node: dict) -> TaskConfig:
    from optimlab.tasks.registry import get_task_spec

    common = {f.name for f in dataclasses.fields(TaskConfig)} - {"options"}
    options = {k: v for k, v in node.items() if k not in common}
    options.update(node.pop("options", None) or {})
    base = {k: v for k, v in node.items() if k in common}
    try:
        task = OmegaConf.to_object(OmegaConf.merge(_schema(TaskConfig), base))
    except OmegaConfBaseException as error:
        raise ConfigError(f"config key 'task.{getattr(error, 'full_key', '')}': {str(error).splitlines()[0]}") from None
    spec = get_task_spec(task.name)
    try:
        typed = OmegaConf.merge(_schema(spec.options), options)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "")
        raise ConfigError(f"config key 'task.{key}' (task {task.name!r}): {str(error).splitlines()[0]}") from None
    task.options = OmegaConf.to_container(typed)
    return task


def _optim_config(node: dict) -> OptimConfig:
    from optimlab.optim.param_groups import check_no_decay
    from optimlab.optim.registry import get_optimizer_class, optimizer_arguments

    name = node.pop("name", OptimConfig.name)
    if not isinstance(name, str):
        raise ConfigError(f"config key 'optim.name': expected an optimizer name, got {name!r}")
    no_decay = node.pop("no_decay", None)
    kwargs = dict(node.pop("kwargs", None) or {})
    kwargs.update(node)
    get_optimizer_class(name)
    accepted = optimizer_arguments(name)
    resolved = {}
    for key, parameter in accepted.items():
        if key in kwargs:
            resolved[key] = _coerce(f"optim.{key}", kwargs[key], parameter)
        elif _is_plain(parameter.default):
            resolved[key] = parameter.default
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(f"unknown config key 'optim.{key}' for optimizer {name!r}{suggest(key, accepted)}")
    return OptimConfig(name=name, kwargs=resolved, no_decay=check_no_decay([] if no_decay is None else no_decay, name))


def _is_plain(value: Any) -> bool:
    if value is inspect.Parameter.empty:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (tuple, list)) and all(_is_plain(v) for v in value)


def _lists(value: Any) -> Any:
    """Tuples to lists, recursively: the form YAML and JSON hold."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_lists(v) for v in value]
    return value


def _coerce(key: str, value: Any, parameter: inspect.Parameter) -> Any:
    """Check `value` against the argument's annotation, or else the type of its default."""
    default, annotation = parameter.default, parameter.annotation
    text = "" if annotation is inspect.Parameter.empty else str(annotation).replace("<class '", "")
    if value is None:
        return value
    if isinstance(default, (tuple, list)) or text.startswith(("tuple", "list", "typing.Tuple", "typing.List")):
        ok, kind = isinstance(value, (tuple, list)), "a list"
        value = tuple(value) if ok and isinstance(default, tuple) else value
    elif "float" in text or (not text and isinstance(default, float)):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif "bool" in text or (not text and isinstance(default, bool)):
        ok, kind = isinstance(value, bool), "true or false"
    elif "int" in text or (not text and isinstance(default, int)):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif "str" in text or (not text and isinstance(default, str)):
        ok, kind = isinstance(value, str), "a string"
    else:
        return value
    if not ok:
        raise ConfigError(f"config key {key!r}: expected {kind}, got {value!r}")
    return value


def validate(cfg: Config) -> None:
    """Value checks OmegaConf's types cannot express."""
    for key, choices in _CHOICES.items():
        group, name = key.split(".")
        value = getattr(getattr(cfg, group), name)
        if value not in choices:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(choices)}")
    positive = {
        "task.batch_size": cfg.task.batch_size,
        "task.eval_batch_size": cfg.task.eval_batch_size,
        "train.log_every": cfg.train.log_every,
        "train.eval_every": cfg.train.eval_every,
        "train.checkpoint_every": cfg.train.checkpoint_every,
        "train.keep_checkpoints": cfg.train.keep_checkpoints,
        "hyper.val_every": cfg.hyper.val_every,
        "schedule.T_0": cfg.schedule.T_0,
        "schedule.T_mult": cfg.schedule.T_mult,
    }
    for optional in ("microbatch_size", "eval_batches", "threads"):
        if getattr(cfg.train, optional) is not None:
            positive[f"train.{optional}"] = getattr(cfg.train, optional)
    if cfg.schedule.step_size is not None:
        positive["schedule.step_size"] = cfg.schedule.step_size
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key {key!r}: must be positive, got {value}")
    non_negative = {"train.steps": cfg.train.steps, "schedule.warmup_steps": cfg.schedule.warmup_steps}
    if cfg.train.clip_grad_norm is not None:
        positive_clip = cfg.train.clip_grad_norm
        if positive_clip <= 0:
            raise ConfigError(f"config key 'train.clip_grad_norm': must be positive or null, got {positive_clip}")
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"config key {key!r}: must be >= 0, got {value}")
    if not 0.0 < cfg.train.sampler_floor <= 1.0:
        raise ConfigError(f"config key 'train.sampler_floor': must be in (0, 1], got {cfg.train.sampler_floor}")
    if not 0.0 < cfg.hyper.holdout_fraction < 1.0:
        raise ConfigError(f"config key 'hyper.holdout_fraction': must be in (0, 1), got {cfg.hyper.holdout_fraction}")
    _validate_instruments(cfg.instruments)
    lr = cfg.optim.kwargs.get("lr")
    if isinstance(lr, (int, float)) and lr < 0:
        raise ConfigError(f"config key 'optim.lr': must be >= 0, got {lr}")


def _validate_instruments(cfg: InstrumentsConfig) -> None:
    if cfg.names:
        from optimlab.instruments.registry import INSTRUMENTS

        for i, name in enumerate(cfg.names):
            if name not in INSTRUMENTS:
                raise ConfigError(f"config key 'instruments.names': unknown instrument {name!r}{suggest(name, INSTRUMENTS)}")
            if name in cfg.names[:i]:
                raise ConfigError(f"config key 'instruments.names': {name!r} is listed twice")
    positive = {"every": cfg.every, "draws": cfg.draws - 1, "hessian_iterations": cfg.hessian_iterations}
    for key in ("draw_batch_size", "microbatch_size"):
        if getattr(cfg, key) is not None:
            positive[key] = getattr(cfg, key)
    for key, value in positive.items():
        if value <= 0:
            minimum = 2 if key == "draws" else 1
            raise ConfigError(f"config key 'instruments.{key}': must be >= {minimum}, got {getattr(cfg, key)}")
    for key in ("start", "log_spaced"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"config key 'instruments.{key}': must be >= 0, got {getattr(cfg, key)}")
    if cfg.hessian_tol < 0:
        raise ConfigError(f"config key 'instruments.hessian_tol': must be >= 0, got {cfg.hessian_tol}")


# --------------------------------------------------------------------------------------------------------
# Saving and identity


def to_tree(cfg: Config) -> dict:
    """The nested plain dict written to config.yaml; `from_tree(to_tree(cfg)) == cfg`."""
    tree = dataclasses.asdict(cfg)
    task = tree["task"]
    task.update(task.pop("options"))
    optim = tree["optim"]
    optim.update(optim.pop("kwargs"))
    if not optim["no_decay"]:  # absent at its default: configs written before it existed keep their hash
        del optim["no_decay"]
    return _lists(tree)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_tree(cfg), sort_keys=False)


def identity(cfg: Config) -> dict:
    """The config tree without the keys that do not change what the run computes."""
    return rundir.identity(to_tree(cfg))


def config_hash(cfg: Config, *, with_seed: bool = True) -> str:
    """A short stable hash of what the run computes: same config, same run directory.

    `with_seed=False` gives the configuration's hash, shared by all seeds of one configuration.
    """
    return rundir.identity_hash(to_tree(cfg), with_seed=with_seed)


def default_run_dir(cfg: Config, root: str | Path = "runs") -> Path:
    return Path(root) / cfg.task.name / f"{cfg.optim.name}-{config_hash(cfg)}"
