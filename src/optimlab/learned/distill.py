"""Distillation of optimizers into a learned student (Huang et al., "Optimizer Amalgamation", ICLR 2022;
VITA-Group/OptimizerAmalgamation and its framework thetianshuhuang/l2o, `train/loss_mixins.py`).

Teachers run their own optimizee trajectories next to the student's: from the same starting point (after
the shared SGD warm-up, during which their states advance but their parameters follow the student's), on
the same minibatches, never reset to the student's parameters. After inner step i the imitation distance to
teacher k is the log mean squared distance in parameter space,

    d_k = log( Σ_tensors Σ_coords 0.5 (θ_{i+1} − φ^k_{i+1})² + ε ) − log(number of coordinates),   ε = 1e-10,

reduced over teachers per step by their maximum (`reduce=max`, the original's "min-max" amalgamation: the
student is pulled towards whichever teacher is currently farthest) or their mean (`reduce=mean`, the log of
a geometric mean of distances). The imitation loss of a truncation is the mean over its steps, and the
truncation's loss is meta-loss + w · imitation, with w the imitation weight of the curriculum stage
(`stage_weight`; the original's `il_more` schedule is 0.2, 0.1, 0.05, 0.02). Validation uses w = 0.

Teachers are analytical rules of the pool (`optimlab.learned.pool`, e.g. the original's l2o-Adam and
RMSProp at learning rate 0.005) or one trained learned optimizer, in the original a choice policy, run with
fixed weights. Both are constants for the meta-gradient: they depend on the batches, not on the student.

**Scaling mismatch.** The student sees randomly rescaled parameters θ̃ = θ / s (RNNProp's random scaling).
With `teacher_scale="oracle"` (the original's `do_teacher_parameter_scale=False`, and the default) a teacher
receives the gradient ∇f in the original coordinates and computes its step there; the step is divided by s
to move the teacher's θ̃: teachers never experience the rescaling that the student must learn to undo, and
the distance is measured in θ̃ coordinates. With `teacher_scale="student"` a teacher runs on exactly the
rescaled problem the student sees (gradient s ⊙ ∇f, step in θ̃).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from optimlab.errors import ConfigError
from optimlab.learned.policies import Policy
from optimlab.learned.pool import Rule, build_rule

EPS = 1e-10
REDUCTIONS = ("max", "mean")
TEACHER_SCALES = ("oracle", "student")
Params = dict[str, Tensor]


# ---- the loss ----------------------------------------------------------------------------------------


def log_mean_sq_distance(student: Params, teacher: Params, eps: float = EPS) -> Tensor:
    """log(Σ 0.5 (θ − φ)² + ε) − log(n) over every coordinate of every tensor (n coordinates in all)."""
    total = sum(0.5 * (student[k] - teacher[k].detach()).pow(2).sum() for k in student)
    n = sum(v.numel() for v in student.values())
    return torch.log(total + eps) - math.log(n)


def reduce_teachers(distances: Tensor, how: str) -> Tensor:
    """One step's imitation term from the [K] per-teacher log distances: their max or mean."""
    if how == "max":
        return distances.max()
    if how == "mean":
        return distances.mean()
    raise ConfigError(f"config key 'distill.reduce': {how!r} is not one of {', '.join(REDUCTIONS)}")


def stage_weight(weights: list[float], strategy: str, stage: int, period: int) -> float:
    """The imitation weight: per curriculum stage, or per period of the repeat strategy (the last entry
    repeats)."""
    index = stage if strategy == "curriculum" else period
    return float(weights[min(index, len(weights) - 1)])


# ---- teachers -----------------------------------------------------------------------------------------


class RuleTeacher:
    """An analytical rule of the pool as a teacher."""

    recurrent_keys: tuple[str, ...] = ()

    def __init__(self, rule: Rule):
        self.rule, self.name = rule, rule.name

    def init(self, param: Tensor) -> dict[str, Tensor]:
        return self.rule.init(param.reshape(-1))

    def step(self, param: Tensor, grad: Tensor, state: dict, step: Tensor) -> tuple[Tensor, dict]:
        return self.rule.update(grad, state, step)


class PolicyTeacher:
    """A trained learned optimizer as a teacher (the original: a trained choice policy), with fixed weights."""

    def __init__(self, policy: Policy, name: str = "learned", sha256: str | None = None):
        if policy.init_global_state(torch.zeros(1)):
            raise ConfigError(
                f"distill.teacher: policy {policy.name!r} keeps a global state; use a coordinate-wise one"
            )
        self.policy, self.name = policy.eval().requires_grad_(False), name
        self.sha256 = sha256  # the weights file's sha256: a resumed meta-training run checks it is unchanged
        self.recurrent_keys = policy.recurrent_keys
        self._copies: dict[torch.dtype, Policy] = {}

    def _policy(self, dtype: torch.dtype) -> Policy:
        if next(self.policy.parameters()).dtype == dtype:
            return self.policy
        if dtype not in self._copies:
            from optimlab.learned.optimizer import _copy_policy

            self._copies[dtype] = _copy_policy(self.policy).to(dtype)
        return self._copies[dtype]

    def init(self, param: Tensor) -> dict[str, Tensor]:
        return self._policy(param.dtype).init_state_for(param)

    def step(self, param: Tensor, grad: Tensor, state: dict, step: Tensor) -> tuple[Tensor, dict]:
        return self._policy(param.dtype)(param, grad, state, step, {})


# ---- the teachers' trajectories ------------------------------------------------------------------------


class Distillation:
    """Teachers, how their distances are reduced and which coordinates they step in."""

    def __init__(self, teachers: list, reduce: str = "max", teacher_scale: str = "oracle"):
        if not teachers:
            raise ConfigError("config key 'distill.teachers': expected at least one teacher")
        if reduce not in REDUCTIONS:
            raise ConfigError(f"config key 'distill.reduce': {reduce!r} is not one of {', '.join(REDUCTIONS)}")
        if teacher_scale not in TEACHER_SCALES:
            raise ConfigError(
                f"config key 'distill.teacher_scale': {teacher_scale!r} is not one of {', '.join(TEACHER_SCALES)}"
            )
        self.teachers, self.reduce, self.teacher_scale = teachers, reduce, teacher_scale

    def init(self, params: Params) -> list[dict[str, Any]]:
        """Every teacher's trajectory state at the student's (stored) parameters."""
        return [
            {"params": {k: v.detach().clone() for k, v in params.items()},
             "state": {k: teacher.init(v.detach()) for k, v in params.items()}}
            for teacher in self.teachers
        ]  # fmt: skip

    def advance(
        self, problem, teachers: list[dict], scales: Params, buffers: Params, batch, step: int,
        follow: Params | None = None,
    ) -> list[dict]:  # fmt: skip
        """Every teacher's step on `batch` (no graph to the student). With `follow` (the SGD warm-up) the
        teachers' states advance on their own gradients and their parameters are set to `follow`."""
        oracle = self.teacher_scale == "oracle"
        out = []
        for teacher, traj in zip(self.teachers, teachers):
            stored = traj["params"]
            names = list(stored)
            with torch.enable_grad():
                # oracle: differentiate in the original coordinates x = θ̃ ⊙ s (gradient ∇f); else in θ̃.
                leaves = {k: (v * scales[k] if oracle else v).detach().requires_grad_(True) for k, v in stored.items()}
                model = {k: (leaves[k] if oracle else leaves[k] * scales[k]) for k in names}
                loss = problem.loss({**model, **buffers}, batch)
                grads = torch.autograd.grad(loss, [leaves[k] for k in names])
            with torch.no_grad():
                t = torch.tensor(float(step), dtype=loss.dtype)
                params, states = {}, {}
                for k, g in zip(names, grads):
                    x = leaves[k].detach()
                    delta, st = teacher.step(x.reshape(-1), g.reshape(-1), traj["state"][k], t)
                    if follow is not None:
                        st = {
                            key: (traj["state"][k][key] if key in teacher.recurrent_keys else v)
                            for key, v in st.items()
                        }
                        params[k] = follow[k].detach()
                    else:
                        delta = delta.view_as(x)
                        params[k] = stored[k] - (delta / scales[k] if oracle else delta)
                    states[k] = st
            out.append({"params": params, "state": states})
        return out

    def imitation(self, student: Params, teachers: list[dict]) -> Tensor:
        """This step's imitation term: the per-teacher log distances reduced over teachers."""
        distances = torch.stack([log_mean_sq_distance(student, traj["params"]) for traj in teachers])
        return reduce_teachers(distances, self.reduce)


def build_teachers(cfg) -> list:
    """The teachers of a `distill` config group: analytical rules or one saved learned optimizer."""
    if cfg.name == "analytical":
        return [RuleTeacher(build_rule(spec, cfg.compat, key="distill.teachers")) for spec in cfg.teachers]
    from optimlab.learned.package import load

    try:
        spec = load(cfg.teacher)
    except ConfigError as error:  # name the key the user set, not the deployment's
        raise ConfigError(f"config key 'distill.teacher': {str(error).removeprefix('optim.path: ')}") from None
    return [PolicyTeacher(spec.policy, name=f"{spec.policy.name}:{spec.sha256[:12]}", sha256=spec.sha256)]


def teacher_sha256(distill: Distillation | None) -> str | None:
    """The sha256 of the weights of a learned teacher (distill=choice); None for analytical teachers or none.
    The teacher directory is named by path only, so its identity has to be recorded to notice a change."""
    if distill is None:
        return None
    return next((t.sha256 for t in distill.teachers if getattr(t, "sha256", None)), None)


def build_distillation(cfg) -> Distillation | None:
    """The distillation of a `distill` config group, or None when it is off (`distill=none`)."""
    if cfg is None or cfg.name == "none":
        return None
    if cfg.name == "choice" and not cfg.teacher:
        raise ConfigError("config key 'distill.teacher': distill=choice needs the directory of a trained optimizer")
    return Distillation(build_teachers(cfg), cfg.reduce, cfg.teacher_scale)
