"""Typed run configuration: one dataclass per concern, YAML files and dotted `key=value` overrides.

    optimlab train task=mnist1d_mlp optim=adam optim.lr=3e-3 train.steps=2000 seed=1 run_dir=runs/a

Parsing and typing are OmegaConf's (structured configs). Two groups are open-ended because their keys
depend on a name: `task.*` beyond the common keys are the task's own options (validated against the task's
options dataclass) and `optim.*` beyond `name` and `no_decay` (the param-group policy) are keyword arguments
of the optimizer (validated against its constructor signature). `group=value` is shorthand for
`group.name=value`. Every error names the key.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import io
import math
import os
import re
from dataclasses import dataclass, field
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from optimlab import rundir
from optimlab.errors import ConfigError, suggest, unknown_name
from optimlab.registry import RegistryNames
from optimlab.validate import check_number

NAMED_GROUPS = ("task", "optim", "schedule", "hyper", "direction", "precond", "privacy")
# List-valued shorthands: `instruments=[grad_stats,hessian_top]` is `instruments.names=[...]`.
LIST_GROUPS = {"instruments": "names"}

MAX_SEED = 2**32 - 1


def bounded(default: Any, **bounds: Any) -> Any:
    """A dataclass field whose numeric value (or each element of its list) must lie within `bounds`.

    `bounds` are `optimlab.validate.check_number`'s keywords (low, high, low_inclusive, high_inclusive); an
    int field must hold an integer; every float, bounded or not, must be finite. `validate` checks them all
    in one loop, so a field's constraint sits next to its default.
    """
    if callable(default):
        return field(default_factory=default, metadata={"bounds": bounds})
    return field(default=default, metadata={"bounds": bounds})


def default_data_dir() -> str:
    return os.environ.get("OPTIMLAB_DATA_DIR", str(Path("~/.cache/optimlab/data").expanduser()))


@dataclass
class TaskConfig:
    """The dataset and model, by name (`optimlab list tasks`), and how they are batched."""

    name: str = "mnist1d_mlp"  # the task (`optimlab list tasks`)
    batch_size: int = bounded(128, low=1)  # training examples per optimizer step
    eval_batch_size: int = bounded(1000, low=1)  # examples per evaluation batch
    data_dir: str = field(default_factory=default_data_dir)  # where datasets are downloaded ($OPTIMLAB_DATA_DIR)
    # Task-specific options (`task.width=512`), validated against the task's options dataclass.
    options: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    """The optimizer, by name (`optimlab list optimizers`), and its keyword arguments."""

    name: str = "adam"  # the optimizer (`optimlab list optimizers`)
    # Optimizer keyword arguments (`optim.lr=3e-3`), validated against its constructor signature.
    kwargs: dict = field(default_factory=dict)
    # Parameters exempt from weight decay: any of bias, norm (`optim.no_decay=[bias,norm]`); see
    # optimlab.optim.param_groups. Written to config.yaml only when set, so older run hashes stay valid.
    no_decay: list[str] = field(default_factory=list)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, stepped once per training iteration."""

    name: str = "constant"  # constant | step | exponential | cosine | sgdr
    warmup_steps: int = bounded(0, low=0)  # linear warm-up from lr/warmup_steps to lr
    milestones: list[int] = bounded(list, low=0)  # step: multiply by gamma at these steps
    step_size: Optional[int] = bounded(None, low=1)  # step: or multiply by gamma every step_size steps (staircase)
    gamma: float = bounded(0.1, low=0, low_inclusive=False)  # step: factor per milestone; exponential: factor per step
    min_lr: float = bounded(0.0, low=0)  # cosine and sgdr: the floor
    T_0: int = bounded(1000, low=1)  # sgdr: length of the first cycle in steps
    T_mult: int = bounded(1, low=1)  # sgdr: cycle length multiplier


@dataclass
class HyperConfig:
    """Hypergradient learning-rate control (MARTHE family); `none` trains with a fixed schedule."""

    name: str = "none"  # none | marthe | rtho
    # Defaults suit small nets (docs/hypergradients.md has tuned values): AdaTune's 1e-8 was for big ones.
    hyper_lr: float = bounded(1e-6, low=0)  # beta of lr <- lr - beta * hypergradient
    mu: float = bounded(-1.0, high=1)  # tangent discount in [0, 1]; < 0 adapts it (MARTHE), 1 is RTHO
    alpha: float = bounded(0.0, low=0)  # > 0 adapts hyper_lr
    first_order: bool = False  # use the one-step derivative as the tangent on every step, whatever mu is
    variant: str = "adatune"  # adatune | marthe_tf
    lr_min: float = bounded(0.0, low=0)  # the lr is projected into [lr_min, lr_max] after every update
    lr_max: Optional[float] = bounded(None, low=0)  # upper clip of the learning rate (None: no upper bound)
    val_every: int = bounded(1, low=1)  # validation gradient and lr update every this many steps
    holdout_fraction: float = bounded(0.1, low=0, high=1, low_inclusive=False, high_inclusive=False)  # share of the training split held out for the validation gradient


@dataclass
class DirectionConfig:
    """The step direction written into `.grad` for the optimizer (docs/directions.md); `sgd` is the plain
    mini-batch gradient, `svrg` the SVRG control variate, `gc` gradient clustering's stratified estimate."""

    name: str = "sgd"  # sgd | svrg | gc
    snapshot_every: int = bounded(1000, low=1)  # svrg: steps between snapshots; gc: steps between full clusterings / assignments
    snapshot_mode: str = "eval"  # svrg: eval | train (the model's mode in snapshot gradients)
    clusters: int = bounded(10, low=1)  # gc: number of clusters
    gc_mode: str = "batch"  # gc: batch (citers full passes per clustering) | online (EM step every online_every)
    citers: int = bounded(2, low=1)  # gc batch: assignment+update passes per clustering
    online_every: int = bounded(10, low=1)  # gc online: steps between EM steps on a fresh batch
    beta: float = bounded(0.99, low=0.0, high=1.0, high_inclusive=False)  # gc online: decay of the running cluster sizes and centres
    min_size: int = bounded(1, low=1)  # gc: clusters smaller than this are repaired by splitting the most distorted one
    size_weighting: bool = True  # gc: weight assignment distances by cluster size (N_k + 1)
    allocation: str = "equal"  # gc: equal (weights M N_k / N) | proportional (weights 1)
    apply: bool = True  # false: keep the direction up to date on its schedules without training with it


@dataclass
class PrecondConfig:
    """A preconditioner applied to `.grad` before the optimizer step (docs/directions.md); `none` is off."""

    name: str = "none"  # none | kfac
    t_cov: int = bounded(10, low=1)  # kfac: steps between factor statistics
    t_inv: int = bounded(100, low=1)  # kfac: steps between eigendecompositions
    damping: float = bounded(1e-3, low=0.0)  # kfac: added to the Kronecker eigenvalue products
    decay: float = bounded(0.95, low=0.0, high=1.0, high_inclusive=False)  # kfac: running-average decay of the factors
    kl_clip: Optional[float] = bounded(1e-3, low=0.0, low_inclusive=False)  # kfac: bound on lr^2 <V, g> (null: no clipping)
    fisher: str = "true"  # kfac: true (labels sampled from the model) | empirical (the batch's labels)
    apply: bool = True  # false: keep the factors up to date on their schedules without preconditioning


@dataclass
class PrivacyConfig:
    """Differentially private gradients (docs/amalgamation.md): `dp_sgd` clips every example's gradient and adds
    Gaussian noise (Abadi et al. 2016); `none` is off."""

    name: str = "none"  # none | dp_sgd
    clip: float = bounded(1.0, low=0.0, low_inclusive=False)  # dp_sgd: bound C on each example's gradient norm
    noise_multiplier: float = bounded(1.1, low=0.0)  # dp_sgd: noise std sigma * C on the summed clipped gradients


@dataclass
class InstrumentsConfig:
    """Gradient instruments (docs/instruments.md): measurements that never change the trajectory."""

    names: list[str] = field(default_factory=list)  # see `optimlab list instruments`
    every: int = bounded(50, low=1)  # measure every this many steps...
    start: int = bounded(0, low=0)  # ...from this step on
    log_spaced: int = bounded(0, low=0)  # > 0: instead, about this many log-spaced measurements per decade of steps
    draws: int = bounded(10, low=2)  # direction_variance: T draws (2T with compat=study)
    draw_batch_size: Optional[int] = bounded(None, low=1)  # direction_variance: batch size g of a draw (None: training's)
    compat: str = "unbiased"  # direction_variance: unbiased | study (the original's biased two-phase form)
    hessian_iterations: int = bounded(20, low=1)  # hessian_top: at most this many power iterations (one HVP each)
    hessian_tol: float = bounded(1e-3, low=0)  # hessian_top: stop at this relative change of the eigenvalue
    microbatch_size: Optional[int] = bounded(None, low=1)  # grad_stats: examples per per-example pass (memory bound)


@dataclass
class TrainConfig:
    """The training loop: length, evaluation and checkpoint cadence, device, precision, sampling."""

    steps: int = bounded(1000, low=0)  # optimizer steps (iterations) in the whole run
    microbatch_size: Optional[int] = bounded(None, low=1)  # examples per forward/backward, gradients accumulated (None: whole batch)
    clip_grad_norm: Optional[float] = bounded(None, low=0, low_inclusive=False)  # max global L2 norm of the gradient before each step (None: no clipping)
    amp: str = "none"  # none | bf16 | fp16 (GPU only: on CPU it is ignored)
    length_bucketing: bool = False  # batches of similar sequence length (sequence tasks only)
    log_every: int = bounded(10, low=1)  # steps between training-loss log lines (metrics.jsonl and loggers)
    eval_every: int = bounded(200, low=1)  # steps between validation evaluations
    eval_batches: Optional[int] = bounded(None, low=1)  # cap on evaluation batches per split (None: the whole split)
    checkpoint_every: int = bounded(500, low=1)  # steps between checkpoints
    keep_checkpoints: int = bounded(2, low=1)  # most recent checkpoints kept on disk (older ones deleted)
    resume: bool = True  # continue from the run directory's latest checkpoint (false: start over)
    device: str = "auto"  # auto (the GPU with the most free memory, else CPU) | cpu | cuda | cuda:N
    # Training order: auto (the task's own: contiguous lanes for language models, else shuffled) | uniform |
    # loss | gradnorm (importance sampling with unbiasing weights, optimlab.train.importance) | stratified
    # (direction=gc's stratified batches as the training batches: GC-SGD without its extra gradient per step).
    sampler: str = "auto"
    sampler_floor: float = bounded(0.1, low=0.0, low_inclusive=False, high=1.0)  # loss/gradnorm: share of the uniform distribution mixed in, in (0, 1]
    init_from: Optional[str] = None  # model weights only, from an optimlab checkpoint or a state_dict file
    deterministic: bool = False  # deterministic algorithms only (torch.use_deterministic_algorithms, cuDNN); slower on GPU
    # The thread count changes float results (reduction order), so config.yaml records the count the run used.
    threads: Optional[int] = bounded(None, low=1)  # intra-op CPU threads (torch.set_num_threads); null: the process's own (OMP_NUM_THREADS)


@dataclass
class LogConfig:
    """Where metrics go besides metrics.jsonl; none of these keys changes what a run computes."""

    tensorboard: bool = False  # also write TensorBoard event files to <run_dir>/tensorboard
    wandb: bool = False  # also log to Weights & Biases
    wandb_project: str = "optimlab"  # the W&B project
    wandb_entity: Optional[str] = None  # the W&B team or user (None: your default entity)
    wandb_group: Optional[str] = None  # W&B group (None: <sweep folder>/<task> for sweep runs, else the task)
    wandb_tags: list[str] = field(default_factory=list)  # extra W&B tags, beside optim=<name> and seed=<n>
    wandb_mode: str = "offline"  # offline | online | disabled
    progress: str = "auto"  # auto (on interactive terminals) | always | never


@dataclass
class Config:
    seed: int = bounded(0, low=0, high=MAX_SEED)  # seeds parameters, data order and augmentation (32-bit)
    run_dir: Optional[str] = None  # default: runs/<task>/<optim>-<config hash>
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    hyper: HyperConfig = field(default_factory=HyperConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    direction: DirectionConfig = field(default_factory=DirectionConfig)
    precond: PrecondConfig = field(default_factory=PrecondConfig)
    instruments: InstrumentsConfig = field(default_factory=InstrumentsConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


# The config groups that are mappings (the named ones also accept `group: name`).
_GROUPS = tuple(f.name for f in dataclasses.fields(Config) if f.name not in ("seed", "run_dir"))

# Names chosen from a registry are read from it when a config is validated (the registries import torch).
_CHOICES = {
    "schedule.name": RegistryNames("optimlab.train.schedules", "SCHEDULES"),
    "hyper.name": RegistryNames("optimlab.hyper", "CONTROLLERS"),
    "hyper.variant": ("adatune", "marthe_tf"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.sampler": ("auto", "uniform", "loss", "gradnorm", "stratified"),
    "log.wandb_mode": ("offline", "online", "disabled"),
    "log.progress": ("auto", "always", "never"),
    "direction.name": ("sgd", "svrg", "gc"),
    "direction.snapshot_mode": ("eval", "train"),
    "direction.gc_mode": ("batch", "online"),
    "direction.allocation": ("equal", "proportional"),
    "precond.name": ("none", "kfac"),
    "precond.fisher": ("true", "empirical"),
    "privacy.name": ("none", "dp_sgd"),
    "instruments.compat": ("unbiased", "study"),
}


# --------------------------------------------------------------------------------------------------------
# Loading


def load_config(overrides: list[str] | tuple[str, ...] = (), base: dict | None = None) -> Config:
    """Defaults <- `base` (a nested dict, e.g. a YAML file's contents) <- dotted `key=value` overrides.

    Overrides follow Hydra's grammar where it applies: `+key=v` and `++key=v` set a key like `key=v`,
    `~key` removes a key set so far (by `base` or an earlier override), so it takes its default again.
    """
    tree = OmegaConf.create(_as_tree(base or {}))
    pending: list[str] = []
    try:  # interpolations (`${oc.env:HOME}`) resolve here, so a bad one is an error naming its key
        for item in overrides:
            if item.startswith("~"):
                tree = OmegaConf.merge(tree, parse_overrides(pending))
                pending = []
                _remove_key(tree, item[1:].partition("=")[0])
            else:
                pending.append(item)
        tree = OmegaConf.to_container(OmegaConf.merge(tree, parse_overrides(pending)), resolve=True)
    except OmegaConfBaseException as error:
        raise _config_error(error) from None
    return from_tree(tree)


def load_config_cached(overrides: Iterable[str], cache: dict[tuple[str, ...], Config]) -> Config:
    """`load_config(overrides)`, validated once per override set without its `seed=<digits>` and
    `run_dir=<plain path>` (the runs of a grid or a population differ only in those, which validation does not
    look at, and loading a config takes 30 to 60 ms): a later run of the same set is a copy of the cached
    config with its own seed and run_dir. `cache` maps override sets to their configs; anything else (a seed
    out of range, a run_dir the override grammar would read otherwise, either given twice) loads normally."""
    overrides = tuple(str(o) for o in overrides)
    varying = [(key, value) for key, _, value in (o.partition("=") for o in overrides) if key in ("seed", "run_dir")]
    values = dict(varying)
    plain = (len(values) == len(varying)
             and (values.get("seed", "0").isdigit() and int(values.get("seed", "0")) <= MAX_SEED)
             and _PLAIN_PATH.fullmatch(values.get("run_dir", "/")) is not None)
    if not plain:
        return load_config(overrides)
    rest = tuple(o for o in overrides if o.partition("=")[0] not in values)
    if rest not in cache:
        cache[rest] = load_config(rest)
    cfg = copy.deepcopy(cache[rest])
    if "seed" in values:
        cfg.seed = int(values["seed"])
    if "run_dir" in values:
        cfg.run_dir = values["run_dir"]
    return cfg


# A path that the override grammar reads as itself, a string (no quotes, escapes, brackets, commas,
# interpolations, spaces; a slash, so never a number, bool or null).
_PLAIN_PATH = re.compile(r"[\w./+-]*/[\w./+-]*")


def load_config_file(path: str | Path | list, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A config from one YAML file, or several composed in order (later files win), then the overrides."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    tree = OmegaConf.create()
    for each in paths:
        tree = OmegaConf.merge(tree, _as_tree(read_yaml_mapping(each, "config file")))
    return load_config(overrides, OmegaConf.to_container(tree))


def _remove_key(tree: DictConfig, key: str) -> None:
    """`~key`: drop a dotted key (or a whole group) from the tree; absent already is fine."""
    group = key.partition(".")[0]
    if not key or group not in {f.name for f in dataclasses.fields(Config)}:
        raise unknown_name("config key", key or "~", {f.name for f in dataclasses.fields(Config)})
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node.get(part) if isinstance(node, DictConfig) else None
    if isinstance(node, DictConfig) and last in node:
        del node[last]


def _multirun_hint(key: str, value: str) -> str | None:
    """A hint when `value` is a Hydra multirun list (`1e-3,1e-2`): commas outside brackets and quotes."""
    depth, quote = 0, ""
    for char in value:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            return (f"{key}={value} asks for several runs (a Hydra multirun); `optimlab train` runs one: "
                    f"use `optimlab compare` (lrs=[...]) or a sweep file with `optimlab sweep` (docs/sweeps.md)")
    return None


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
    except OSError:  # OmegaConf's loader refuses a top-level scalar this way
        raise ConfigError(f"{what} {path} must hold a mapping, not a single value") from None
    except (yaml.YAMLError, OmegaConfBaseException, ValueError) as error:  # ValueError: a 5,000-digit int
        raise ConfigError(f"{what} {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{what} {path} must hold a mapping, not {type(tree).__name__}")
    return tree


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """Dotted `key=value` pairs (values parsed as YAML; `+key=v` and `++key=v` alike) to a nested DictConfig."""
    items = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key[2:] if key.startswith("++") else key[1:] if key.startswith("+") else key
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        if (hint := _multirun_hint(key, value)) is not None:
            raise ConfigError(hint)
        if key in NAMED_GROUPS:  # `optim=adam` is `optim.name=adam`
            key = f"{key}.name"
        elif key in LIST_GROUPS:  # `instruments=[a,b]` is `instruments.names=[a,b]`
            key = f"{key}.{LIST_GROUPS[key]}"
        items.append(f"{key}={value}")
    try:
        return OmegaConf.from_dotlist(items)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as error:  # ValueError: a 5,000-digit int
        for item in items:  # name the override that does not parse
            try:
                OmegaConf.from_dotlist([item])
            except (OmegaConfBaseException, yaml.YAMLError, ValueError) as alone:
                key, _, value = item.partition("=")
                reason = " ".join(str(alone).split())[:120]
                raise ConfigError(f"config key {key!r}: cannot parse {value[:40]!r}: {reason}") from None
        raise ConfigError(f"cannot parse overrides: {' '.join(str(error).split())[:160]}") from None


def _as_tree(base: dict) -> dict:
    """Accept both nested mappings and dotted keys (`{'optim.lr': 0.1}`) and the `group: name` shorthand."""
    tree = OmegaConf.create()
    for key, value in base.items():
        key = str(key)
        if key in NAMED_GROUPS and not isinstance(value, dict):
            key, value = f"{key}.name", value
        elif key in LIST_GROUPS and not isinstance(value, dict):
            key = f"{key}.{LIST_GROUPS[key]}"
        elif key in _GROUPS and not isinstance(value, dict) and value is not None:
            # `train: 5` would be silently replaced by any train.* override merged on top of it
            raise ConfigError(f"config key {key!r} must be a mapping of {key}.* keys, got {value!r}")
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
    _check_scalar_types(_PlainConfig, plain)
    try:
        merged = OmegaConf.merge(_schema(_PlainConfig), plain)
    except OmegaConfBaseException as error:
        raise _config_error(error) from None
    obj = OmegaConf.to_object(merged)
    cfg = Config(task=task, optim=optim, **{f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    validate(cfg)
    return cfg


def _check_scalar_types(schema: type, tree: dict, prefix: str = "") -> None:
    """Booleans that are booleans and numbers that are not: OmegaConf reads `2` as true and `true` as 1."""
    for spec in dataclasses.fields(schema):
        if spec.name not in tree:
            continue
        key, value, kind = f"{prefix}{spec.name}", tree[spec.name], str(spec.type)
        nested = spec.default_factory if spec.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(nested):
            if isinstance(value, dict):
                _check_scalar_types(nested, value, f"{key}.")
        elif value is None or "list" in kind or "dict" in kind:
            continue
        elif "bool" in kind and not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected true or false, got {value!r}")
        elif ("int" in kind or "float" in kind) and isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")


@dataclass
class _PlainConfig:
    """The groups OmegaConf types directly."""

    seed: int = 0
    run_dir: Optional[str] = None
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    hyper: HyperConfig = field(default_factory=HyperConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    direction: DirectionConfig = field(default_factory=DirectionConfig)
    precond: PrecondConfig = field(default_factory=PrecondConfig)
    instruments: InstrumentsConfig = field(default_factory=InstrumentsConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)


@functools.cache
def _schema(dataclass_type: type) -> DictConfig:
    """The structured config of a dataclass, built once (OmegaConf.structured is slow); merges copy it."""
    return OmegaConf.structured(dataclass_type)


def build_caches(option_types: Iterable[type] = ()) -> None:
    """Build now what the first `load_config` of a process builds: the structured configs it merges with
    (the config's groups and `option_types`, task options dataclasses) and OmegaConf's override parser
    (its regular expressions). A fork server calls it once, so that none of its forked runs pays for it
    (about 20 ms each)."""
    for schema in (_PlainConfig, TaskConfig, *option_types):
        _schema(schema)
    parse_overrides(["seed=0"])


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
    _check_scalar_types(TaskConfig, base, "task.")
    try:
        task = OmegaConf.to_object(OmegaConf.merge(_schema(TaskConfig), base))
    except OmegaConfBaseException as error:
        raise ConfigError(f"config key 'task.{getattr(error, 'full_key', '')}': {str(error).splitlines()[0]}") from None
    spec = get_task_spec(task.name)
    _check_scalar_types(spec.options, options, "task.")
    try:
        typed = OmegaConf.merge(_schema(spec.options), options)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "")
        raise ConfigError(f"config key 'task.{key}' (task {task.name!r}): {str(error).splitlines()[0]}") from None
    task.options = OmegaConf.to_container(typed)
    for key, value in task.options.items():  # the task checks its own bounds; every float must be finite
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key 'task.{key}' (task {task.name!r}): must be a finite number, got {value}")
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
    for key, bounds in _OPTIM_BOUNDS.items():
        values = resolved.get(key)
        for value in values if isinstance(values, (tuple, list)) else [values]:
            if isinstance(value, (int, float)):
                try:
                    check_number(f"optim.{key}", value, **bounds)
                except ValueError as error:
                    raise ConfigError(f"config key 'optim.{key}': {error}") from None
    _try_optimizer(name, resolved)
    # An optimizer may complete its own arguments from what they point at (the learned optimizer records the
    # sha256 of its weights file, so that the run's identity follows the weights, not only their path).
    resolve_config = getattr(get_optimizer_class(name), "resolve_config", None)
    if resolve_config is not None:
        resolved = resolve_config(resolved)
    return OptimConfig(name=name, kwargs=resolved, no_decay=check_no_decay([] if no_decay is None else no_decay, name))


# Optimizer arguments with the same meaning, and so the same bounds, in every optimizer that takes them
# (torch.optim's conventions); the optimizer's own constructor checks the rest (`_try_optimizer`).
_OPTIM_BOUNDS = {
    "lr": {"low": 0},
    "weight_decay": {"low": 0},
    "eps": {"low": 0},
    "momentum": {"low": 0},
    "dampening": {"low": 0, "high": 1},
    "betas": {"low": 0, "high": 1, "high_inclusive": False},
}


def _try_optimizer(name: str, kwargs: dict) -> None:
    """Build the optimizer on two throw-away tensors, so its own argument checks run before anything is written.

    Constructors check their arguments with `optimlab.validate` or torch.optim's checks; a ValueError there
    becomes a ConfigError naming the first argument its message mentions.
    """
    import torch

    from optimlab.optim.registry import get_optimizer_class

    params = [torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))]
    try:
        get_optimizer_class(name)(params, **kwargs)
    except (ValueError, TypeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        named = [key for key in kwargs if key in message] or [key for key in kwargs if key.rstrip("s") in message]
        key = f"optim.{named[0]}" if named else "optim"
        raise ConfigError(f"config key {key!r} (optimizer {name!r}): {message}") from None


def _is_plain(value: Any) -> bool:
    if value is inspect.Parameter.empty:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (tuple, list)) and all(_is_plain(v) for v in value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    if value is None and (default is None or "None" in text or "Optional" in text):
        return value
    if isinstance(default, (tuple, list)) or text.startswith(("tuple", "list", "typing.Tuple", "typing.List")):
        ok, kind = isinstance(value, (tuple, list)), "a list"
        fixed = "..." not in text and "| tuple" not in text and "Union[tuple" not in text  # one length allowed
        if ok and fixed and isinstance(default, tuple) and default and len(value) != len(default):
            # a pair like betas=(0.9, 0.999) given one value would fail deep inside the optimizer
            ok, kind = False, f"a list of {len(default)} values like {list(default)}"
        if ok and isinstance(default, tuple) and default:  # a fixed-length tuple: its default gives the length
            ok, kind = len(value) == len(default), f"a list of {len(default)} values like {list(default)}"
        if ok and isinstance(default, (tuple, list)) and default and all(_is_number(d) for d in default):
            finite = all(math.isfinite(d) for d in default)
            ok = all(_is_number(v) and (math.isfinite(v) or not finite) for v in value)
            kind = f"{kind[:-1] if kind == 'a list' else kind} of finite numbers" if not ok else kind
        value = tuple(value) if ok and isinstance(default, tuple) else value
    elif "float" in text or (not text and isinstance(default, float)):
        ok, kind = _is_number(value), "a number"
        if ok and not math.isfinite(value) and (not _is_number(default) or math.isfinite(default)):
            ok, kind = False, "a finite number"
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
    """Value checks OmegaConf's types cannot express: choices, every field's bounds, contradictions."""
    for key, choices in _CHOICES.items():
        group, name = key.split(".")
        value = getattr(getattr(cfg, group), name)
        if value not in choices:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(choices)}")
    for key, value, spec in _numeric_fields(cfg):
        _check_field(key, value, spec)
    _validate_instruments(cfg.instruments)
    _validate_combinations(cfg)
    _validate_lr_control(cfg)


def _numeric_fields(cfg: Config):
    """(dotted key, value, dataclass field) of every int, float or list-of-numbers field of every group."""
    for outer in dataclasses.fields(cfg):
        node = getattr(cfg, outer.name)
        pairs = ([(f"{outer.name}.{f.name}", getattr(node, f.name), f) for f in dataclasses.fields(node)]
                 if dataclasses.is_dataclass(node) else [(outer.name, node, outer)])
        for key, value, spec in pairs:
            if "bounds" in spec.metadata or isinstance(value, float):
                yield key, value, spec


def _check_field(key: str, value: Any, spec: dataclasses.Field) -> None:
    bounds = dict(spec.metadata.get("bounds", {}))
    integer = "int" in str(spec.type) and "float" not in str(spec.type)
    for i, item in enumerate(value if isinstance(value, list) else [value]):
        if item is None:
            continue
        try:
            check_number(key if not isinstance(value, list) else f"{key}[{i}]", item, integer=integer, **bounds)
        except ValueError as error:
            raise ConfigError(f"config key {key!r}: {error}") from None


def _validate_combinations(cfg: Config) -> None:
    """Settings that are each valid but contradict one another."""
    hyper = cfg.hyper
    if hyper.name == "rtho" and hyper.mu not in (HyperConfig.mu, 1.0):
        raise ConfigError(f"config key 'hyper.mu': rtho fixes mu = 1, got {hyper.mu}; use hyper=marthe to choose mu")
    if hyper.lr_max is not None and hyper.lr_max < hyper.lr_min:
        raise ConfigError(f"config key 'hyper.lr_max': {hyper.lr_max} is below hyper.lr_min={hyper.lr_min}")
    milestones = cfg.schedule.milestones
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ConfigError(f"config key 'schedule.milestones': must be strictly increasing, got {milestones}")
    if cfg.schedule.step_size is not None and milestones:
        raise ConfigError("config key 'schedule.step_size': give schedule.milestones or schedule.step_size, not both")
    if cfg.train.sampler == "stratified" and (cfg.direction.name != "gc" or not cfg.direction.apply):
        raise ConfigError("config key 'train.sampler': stratified draws direction=gc's batches; set direction=gc (applied)")


def _validate_lr_control(cfg: Config) -> None:
    """An optimizer that tunes its own lr (hypergradient descent, `*_hd`) and a schedule would both set it."""
    if cfg.optim.name.endswith("_hd"):
        for key, active in (("schedule.name", cfg.schedule.name != "constant"),
                            ("schedule.warmup_steps", cfg.schedule.warmup_steps > 1)):
            if active:
                raise ConfigError(f"config key {key!r}: optim={cfg.optim.name} tunes its own lr by hypergradient "
                                  "descent and does not combine with an lr schedule")


def _validate_instruments(cfg: InstrumentsConfig) -> None:
    if cfg.names:
        from optimlab.instruments.registry import INSTRUMENTS

        for i, name in enumerate(cfg.names):
            if name not in INSTRUMENTS:
                raise ConfigError(f"config key 'instruments.names': unknown instrument {name!r}{suggest(name, INSTRUMENTS)}")
            if name in cfg.names[:i]:
                raise ConfigError(f"config key 'instruments.names': {name!r} is listed twice")


# --------------------------------------------------------------------------------------------------------
# Saving and identity


def to_tree(cfg: Config) -> dict:
    """The nested plain dict written to config.yaml; `from_tree(to_tree(cfg)) == cfg`."""
    from optimlab.tasks.variants import VARIANT_DEFAULTS

    tree = dataclasses.asdict(cfg)
    task = tree["task"]
    task.update(task.pop("options"))
    # Data variants at their defaults (off) are left out, so adding them changed no run's hash.
    for key, default in VARIANT_DEFAULTS.items():
        if key in task and task[key] == default:
            task.pop(key)
    optim = tree["optim"]
    optim.update(optim.pop("kwargs"))
    if not optim["no_decay"]:  # absent at its default: configs written before it existed keep their hash
        del optim["no_decay"]
    return _lists(tree)


def normalize(cfg: Config) -> Config:
    """A directly built `Config` resolved and validated as the command line resolves one: the optimizer's and
    the task's defaults filled in, types checked. Same config.yaml and hash as `optimlab train` would give."""
    return from_tree(to_tree(cfg))


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
