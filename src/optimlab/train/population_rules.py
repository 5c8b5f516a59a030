"""Which runs can train together in one population, and which population a run belongs to.

A population trains runs that differ only in their seed and in float hyperparameters: the optimizer's
(lr, momentum, betas, weight decay, a critical-gradient memory's decay, ...), the schedule's (gamma,
min_lr) and the clipping threshold. Everything else (task and its options, batch size, optimizer name and
its non-float arguments, schedule kind, step counts and cadences, device, thread count) must be equal, so
`population_key` is the config tree with those member settings removed.

`config_ineligibility` answers from the config alone (the sweep groups runs with it before starting
anything); `model_ineligibility` needs the built task and model, and is checked by the population itself.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from torch import nn

from optimlab.config import Config, to_tree
from optimlab.optim.critical.base import CriticalOptimizer
from optimlab.optim.registry import get_optimizer_class, optimizer_arguments

# Optimizers whose state lives entirely in `state[p]` and whose hyperparameters are read from each param
# group at every step: torch.optim's (LBFGS evaluates a closure per step, which a population cannot batch)
# and the critical-gradient family. Others may keep settings or state on the optimizer object itself.
_CLOSURE_OPTIMIZERS = ("LBFGS",)
# Critical-gradient admission policies that draw random numbers seeded by the param group's index: a
# member's groups sit at other indices in the population's optimizer, so its draws would differ.
_DETERMINISTIC_SAMPLING = (None, "KotH")


def config_ineligibility(cfg: Config) -> str | None:
    """Why `cfg` cannot train in a population, from its config alone; None when it can."""
    if cfg.hyper.name != "none":
        return f"hyper={cfg.hyper.name} differentiates through each run's own steps"
    if cfg.instruments.names:
        return "instruments observe one run's backward"
    if cfg.direction.name != "sgd":
        return f"direction={cfg.direction.name} replaces the gradient with a per-run estimate"
    if cfg.precond.name != "none":
        return f"precond={cfg.precond.name} preconditions one run's gradient"
    if cfg.train.sampler in ("loss", "gradnorm"):
        return f"train.sampler={cfg.train.sampler} draws examples from per-run scores"
    if cfg.train.length_bucketing:
        return "train.length_bucketing=true gives batches of different lengths to different seeds"
    if cfg.train.microbatch_size is not None and cfg.train.microbatch_size < cfg.task.batch_size:
        return "train.microbatch_size accumulates the gradient in pieces"
    if cfg.train.amp != "none":
        return f"train.amp={cfg.train.amp}"
    if cfg.log.wandb:
        return "log.wandb=true keeps one W&B run per process"
    return optimizer_ineligibility(cfg.optim.name, cfg.optim.kwargs)


def optimizer_ineligibility(name: str, kwargs: dict[str, Any]) -> str | None:
    cls = get_optimizer_class(name)
    if not inspect.isclass(cls):
        return f"optim={name} is built by a factory, not an optimizer class"
    if issubclass(cls, CriticalOptimizer):
        if kwargs.get("sampling") not in _DETERMINISTIC_SAMPLING:
            return f"optim.sampling={kwargs.get('sampling')} seeds its draws by param-group index"
        return None
    if cls.__module__.startswith("torch.optim") and cls.__name__ not in _CLOSURE_OPTIMIZERS:
        return None
    return f"optim={name} may keep settings or state outside its param groups"


def model_ineligibility(model: nn.Module) -> str | None:
    """Why a model cannot be trained as a population member (randomness or state its forward updates)."""
    for name, module in model.named_modules():
        where = name or "the model"
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return f"{where} is a BatchNorm layer (its running statistics are updated in the forward)"
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"{where} is a dropout layer (random masks in the forward)"
        if isinstance(module, nn.RNNBase) and module.dropout > 0 and module.num_layers > 1:
            return f"{where} has dropout between its recurrent layers"
    return None


def step_cost(cfg: Config, members: int) -> float:
    """The rough cost of one step of a population of `members` runs of `cfg`, in units of one member's
    forward and backward: what the sweep orders populations by, so that the longest starts first and no
    worker is left with a long one at the end. The optimizer adds its per-member work on top: moment
    estimates (an optimizer with `betas`) and a critical-gradient memory cost about as much again as
    plain SGD's step each (measured on mnist1d_mlp populations of 9: SGD 1, Adam 1.7, SGD_C 1.55,
    Adam_C 2.5)."""
    weight = 1.0
    cls = get_optimizer_class(cfg.optim.name)
    if inspect.isclass(cls) and issubclass(cls, CriticalOptimizer):
        weight += 0.6
    if "betas" in optimizer_arguments(cfg.optim.name):
        weight += 0.6
    return members * weight


def member_settings(cfg: Config) -> dict[str, Any]:
    """The settings in which members of one population may differ: seed, run_dir and float hyperparameters
    (dotted keys: `optim.lr`, `optim.betas`, `schedule.gamma`, `train.clip_grad_norm`, ...)."""
    settings: dict[str, Any] = {"seed": cfg.seed, "run_dir": cfg.run_dir}
    defaults = optimizer_arguments(cfg.optim.name)
    for key, value in cfg.optim.kwargs.items():
        parameter = defaults.get(key)
        default = parameter.default if parameter is not None else None
        if _is_float_setting(value, default):
            settings[f"optim.{key}"] = value
    for key in ("gamma", "min_lr"):
        settings[f"schedule.{key}"] = getattr(cfg.schedule, key)
    settings["train.clip_grad_norm"] = cfg.train.clip_grad_norm
    return settings


def population_key(cfg: Config) -> str:
    """Runs with equal keys can train in one population (when each is eligible)."""
    tree = to_tree(cfg)
    for dotted in member_settings(cfg):
        group, _, name = dotted.partition(".")
        if not name:
            tree.pop(group, None)
        elif isinstance(tree.get(group), dict):
            tree[group].pop(name, None)
    return json.dumps(tree, sort_keys=True, default=str)


def _is_float_setting(value: Any, default: Any) -> bool:
    """A float hyperparameter: a float, an int given where the default is a float (`lr=1`), or a tuple or
    list of such numbers (`betas`)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return True
    if isinstance(value, int):
        return isinstance(default, float) and not isinstance(default, bool)
    if isinstance(value, (list, tuple)) and value:
        items = default if isinstance(default, (list, tuple)) and len(default) == len(value) else [None] * len(value)
        return all(isinstance(v, float) or _is_float_setting(v, d) for v, d in zip(value, items))
    return False
