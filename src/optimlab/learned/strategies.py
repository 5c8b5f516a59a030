"""Meta-training schedules as plain decision functions over the run's progress (all plain numbers, so the
progress is checkpointed with everything else).

**Curriculum** (Chen et al., "Training Stronger Baselines for Learning to Optimize", NeurIPS 2020; `l2o`'s
`strategy/curriculum.py`): stage s trains trajectories of `depths[s]` truncations (100/200/500/1000 steps
with 100-step truncations) and validates each period with the longer `validation_depths[s]`. After a period:

1. blow-up check: in a stage's first period the period's training meta-loss is compared with the previous
   stage's best validation, otherwise the validation with the previous accepted period's; a value above
   ref + threshold * |ref| (or non-finite) rolls back to the weights and meta-optimizer state before the
   period and repeats it (at most `max_repeat` times, then it is accepted as it is);
2. the stage continues while it has run fewer than `min_periods` periods or fewer than `num_chances` periods
   have passed since its best validation (and fewer than `max_periods`);
3. otherwise the stage's best-validation weights are loaded and the next stage starts.

The final optimizer is the last stage's best-validation period.

**Repeat** (`strategy/repeat.py`): `num_periods` periods with depth `depths[p]` (the last entry repeats),
each validated at `validation_depths[0]`, with the same rollback rule; the final optimizer is the
best-validation period (`select=best`) or the last (`select=last`).
"""

from __future__ import annotations

import math

from optimlab.learned.metaconfig import StrategyConfig


def depth(cfg: StrategyConfig, stage: int, period: int) -> int:
    if cfg.name == "curriculum":
        return cfg.depths[stage]
    return cfg.depths[min(period, len(cfg.depths) - 1)]


def validation_depth(cfg: StrategyConfig, stage: int) -> int:
    return cfg.validation_depths[stage] if cfg.name == "curriculum" else cfg.validation_depths[0]


def blew_up(value: float, reference: float | None, threshold: float) -> bool:
    if not math.isfinite(value):
        return True
    return reference is not None and math.isfinite(reference) and value > reference + threshold * abs(reference)


def check_value_and_reference(progress: dict, validation: float, train_loss: float) -> tuple[float, float | None]:
    """What the blow-up check compares (value, reference) after the current period."""
    stage, period = progress["stage"], progress["period"]
    if period == 0 and stage > 0:
        best = progress["stage_best"].get(str(stage - 1))
        return train_loss, best["validation"] if best else None
    return validation, progress["last_validation"]


def should_roll_back(cfg: StrategyConfig, progress: dict, validation: float, train_loss: float) -> bool:
    """Whether the period just validated blew up and may still be repeated."""
    if progress["stage"] == 0 and progress["period"] == 0:  # nothing to compare the very first period with
        return False
    value, reference = check_value_and_reference(progress, validation, train_loss)
    return blew_up(value, reference, cfg.repeat_threshold) and progress["repeat"] < cfg.max_repeat


def next_action(cfg: StrategyConfig, progress: dict) -> str:
    """'continue', 'advance' (to the next stage) or 'finish', after the period was accepted and the stage's
    best validation updated."""
    period = progress["period"]
    if cfg.name == "repeat":
        return "continue" if period + 1 < cfg.num_periods else "finish"
    best = progress["stage_best"].get(str(progress["stage"]))
    since_best = period - (best["period"] if best else period)
    keep_going = period + 1 < cfg.min_periods or since_best < cfg.num_chances
    if keep_going and period + 1 < cfg.max_periods:
        return "continue"
    return "advance" if progress["stage"] + 1 < len(cfg.depths) else "finish"
