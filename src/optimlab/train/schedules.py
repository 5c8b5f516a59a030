"""Learning-rate schedules, built from torch.optim.lr_scheduler and stepped once per training iteration.

The lr used by step t (0-based) is the schedule's value at t: the scheduler is stepped after each optimizer
step, never with an explicit epoch, so there is none of the one-epoch lag of `scheduler.step(epoch)`.

| name        | lr at step t (after warm-up)                                   | torch scheduler             |
|-------------|----------------------------------------------------------------|-----------------------------|
| constant    | lr                                                             | none                        |
| step        | lr * gamma^(number of milestones <= t), or gamma^floor(t/size) | MultiStepLR / StepLR        |
| exponential | lr * gamma^t                                                   | ExponentialLR               |
| cosine      | min_lr + (lr - min_lr)(1 + cos(pi t / T)) / 2, T = steps       | CosineAnnealingLR           |
| sgdr        | cosine within cycles of T_0, T_0 T_mult, ... steps (restarts)   | CosineAnnealingWarmRestarts |

Linear warm-up (`warmup_steps=w`) ramps lr/w, 2lr/w, ..., lr over the first w steps; the main schedule then
starts at its step 0 (its horizon shortened by w for cosine).
"""

from __future__ import annotations

from collections.abc import Callable

from torch.optim import Optimizer, lr_scheduler

from optimlab.config import ScheduleConfig
from optimlab.errors import ConfigError
from optimlab.registry import Registry


def build_scheduler(cfg: ScheduleConfig, optimizer: Optimizer, total_steps: int) -> lr_scheduler.LRScheduler | None:
    """The scheduler for `cfg`, or None for a constant lr without warm-up (nothing to step)."""
    main_steps = max(total_steps - cfg.warmup_steps, 1)
    main = _main_scheduler(cfg, optimizer, main_steps)
    if cfg.warmup_steps <= 1:  # a one-step warm-up is lr/1 = lr: nothing to do
        return main
    # LinearLR reaches end_factor after total_iters steps: factors 1/w, 2/w, ..., w/w at steps 0..w-1.
    warmup = lr_scheduler.LinearLR(
        optimizer, start_factor=1.0 / cfg.warmup_steps, end_factor=1.0, total_iters=cfg.warmup_steps - 1
    )
    if main is None:
        return warmup
    return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[cfg.warmup_steps])


def _main_scheduler(cfg: ScheduleConfig, optimizer: Optimizer, steps: int) -> lr_scheduler.LRScheduler | None:
    return SCHEDULES.get(cfg.name)(cfg, optimizer, steps)


# name -> builder (cfg, optimizer, steps after warm-up) -> scheduler, or None when the lr never changes.
SCHEDULES: Registry[Callable[[ScheduleConfig, Optimizer, int], lr_scheduler.LRScheduler | None]] = Registry("schedule")


@SCHEDULES.register("constant", description="lr throughout")
def _constant(cfg: ScheduleConfig, optimizer: Optimizer, steps: int) -> None:
    return None


@SCHEDULES.register("step", description="lr * gamma at each milestone (or every step_size steps)")
def _step(cfg: ScheduleConfig, optimizer: Optimizer, steps: int) -> lr_scheduler.LRScheduler:
    if cfg.step_size is not None and cfg.milestones:
        raise ConfigError("schedule 'step': give schedule.milestones or schedule.step_size, not both")
    if cfg.step_size is not None:
        return lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if not cfg.milestones:
        raise ConfigError("schedule 'step' needs schedule.milestones=[...] or schedule.step_size=N")
    return lr_scheduler.MultiStepLR(optimizer, milestones=sorted(cfg.milestones), gamma=cfg.gamma)


@SCHEDULES.register("exponential", description="lr * gamma^t")
def _exponential(cfg: ScheduleConfig, optimizer: Optimizer, steps: int) -> lr_scheduler.LRScheduler:
    return lr_scheduler.ExponentialLR(optimizer, gamma=cfg.gamma)


@SCHEDULES.register("cosine", description="half a cosine from lr to min_lr over the run")
def _cosine(cfg: ScheduleConfig, optimizer: Optimizer, steps: int) -> lr_scheduler.LRScheduler:
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=cfg.min_lr)


@SCHEDULES.register("sgdr", description="cosine with warm restarts every T_0, T_0 T_mult, ... steps")
def _sgdr(cfg: ScheduleConfig, optimizer: Optimizer, steps: int) -> lr_scheduler.LRScheduler:
    return lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=cfg.T_0, T_mult=cfg.T_mult, eta_min=cfg.min_lr)
