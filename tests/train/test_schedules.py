"""Schedules: the lr used at each step matches the closed form, with no off-by-one."""

import math

import pytest
import torch

from optimlab.config import ScheduleConfig
from optimlab.errors import ConfigError
from optimlab.train.schedules import build_scheduler

LR = 0.1


def lrs(cfg: ScheduleConfig, steps: int) -> list[float]:
    """The lr each optimizer step uses, stepping the scheduler after each step as the trainer does."""
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=LR)
    scheduler = build_scheduler(cfg, optimizer, steps)
    used = []
    for _ in range(steps):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return used


def close(a, b):
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b)):
        assert x == pytest.approx(y, rel=1e-9, abs=1e-12), f"step {t}: {x} != {y}"


def test_constant():
    close(lrs(ScheduleConfig(), 5), [LR] * 5)


def test_staircase_decays_exactly_at_step_size():
    close(lrs(ScheduleConfig(name="step", step_size=3, gamma=0.5), 8), [LR * 0.5 ** (t // 3) for t in range(8)])


def test_milestones():
    expected = [LR * 0.1 ** sum(t >= m for m in (2, 5)) for t in range(7)]
    close(lrs(ScheduleConfig(name="step", milestones=[5, 2], gamma=0.1), 7), expected)


def test_exponential():
    close(lrs(ScheduleConfig(name="exponential", gamma=0.9), 6), [LR * 0.9**t for t in range(6)])


def test_cosine_reaches_min_lr_at_the_horizon():
    steps, floor = 10, 0.01
    expected = [floor + (LR - floor) * (1 + math.cos(math.pi * t / steps)) / 2 for t in range(steps)]
    close(lrs(ScheduleConfig(name="cosine", min_lr=floor), steps), expected)


def test_sgdr_restarts_at_T0_then_T0_times_Tmult():
    floor = 0.0

    def expected(t):
        start, length = 0, 3
        while t >= start + length:
            start, length = start + length, length * 2
        return floor + (LR - floor) * (1 + math.cos(math.pi * (t - start) / length)) / 2

    close(lrs(ScheduleConfig(name="sgdr", T_0=3, T_mult=2, min_lr=floor), 20), [expected(t) for t in range(20)])


def test_linear_warmup_then_main_schedule_from_its_start():
    got = lrs(ScheduleConfig(name="step", step_size=2, gamma=0.5, warmup_steps=4), 9)
    expected = [LR * (t + 1) / 4 for t in range(4)] + [LR * 0.5 ** ((t - 4) // 2) for t in range(4, 9)]
    close(got, expected)


def test_step_schedule_needs_a_rule():
    with pytest.raises(ConfigError, match="milestones"):
        lrs(ScheduleConfig(name="step"), 3)
