"""The training loop: `train(cfg)` trains one run and writes its run directory (docs/run-directory.md).

Per step: sample a global batch, take this rank's slice, compute gradients (microbatched, AMP, DDP), clip,
step the optimizer (or the hypergradient controller), step the schedule. Every `log_every` steps the mean
training loss is logged and checked for divergence; every `eval_every` steps (and at step 0 and the end) the
validation split is evaluated; every `checkpoint_every` steps a checkpoint is written. Resuming from a
checkpoint continues bit-identically: model, optimizer, schedule, scaler, hypergradient state, sampler
position, RNG states and the metrics file offset are all restored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from optimlab.config import Config, config_hash, default_run_dir, from_tree, identity, to_tree, to_yaml
from optimlab.errors import ConfigError
from optimlab.optim import build_optimizer
from optimlab.tasks import Split, Task, build_task
from optimlab.train import records
from optimlab.train.checkpoint import load_latest_checkpoint, rng_state, save_checkpoint, set_rng_state
from optimlab.train.distributed import World, all_reduce_sum, init_world, resolve_device
from optimlab.train.loggers import build_loggers
from optimlab.rundir import MetricsFile, RunLock, read_json, write_json
from optimlab.train.records import params_sha256
from optimlab.train.sampler import BatchSampler, rank_slice
from optimlab.train.schedules import build_scheduler

STOP_EXIT_CODE = 75  # EX_TEMPFAIL: interrupted after a checkpoint; run again to resume
_STOP = {"requested": False}

# Config keys that may change when a run is resumed (to extend it, or to log differently).
_RESUMABLE_CHANGES = {"train.steps", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints"}


def request_stop(*_: Any) -> None:
    """Ask the running loop to checkpoint and return at the end of the current step (signal-safe)."""
    _STOP["requested"] = True


@dataclasses.dataclass
class Progress:
    """The loop's own state, checkpointed with everything else."""

    step: int = 0
    time: float = 0.0
    best: dict | None = None
    last_eval: dict = dataclasses.field(default_factory=dict)
    last_train_loss: float | None = None
    diverged_step: int | None = None


def train(cfg: Config, *, handle_signals: bool = False) -> dict[str, Any]:
    """Train one run to completion, divergence or a stop request; returns its summary."""
    world = init_world(cfg.train.device)
    device = resolve_device(cfg.train.device, world)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    cfg = dataclasses.replace(cfg, run_dir=str(run_dir))
    _STOP["requested"] = False

    # Everything that can fail on bad input happens before anything is written.
    if cfg.train.resume:
        _check_resumable(cfg, run_dir)
    done = _finished_summary(cfg, run_dir) if cfg.train.resume else None
    if done is not None:
        return done
    _seed_everything(cfg.seed)
    task = build_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    train_split, holdout = _split_holdout(task.train, cfg)
    model = task.model.to(device)
    optimizer = build_optimizer(cfg.optim.name, model.parameters(), **cfg.optim.kwargs)
    scheduler = build_scheduler(cfg.schedule, optimizer, cfg.train.steps)
    hyper = _build_hyper(cfg, optimizer, world)
    amp_dtype = _amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    lengths = train_split.lengths if cfg.train.length_bucketing else None
    if cfg.train.length_bucketing and lengths is None:
        raise ConfigError(f"train.length_bucketing=true: task {task.name!r} has no sequence lengths")
    sampler = BatchSampler(len(train_split), cfg.task.batch_size, cfg.seed, lengths)
    holdout_sampler = None if holdout is None else BatchSampler(len(holdout), min(cfg.task.batch_size, len(holdout)), cfg.seed + 1)
    augment_generator = torch.Generator().manual_seed(cfg.seed)
    trained = nn.parallel.DistributedDataParallel(model) if world.distributed else model

    # torch imports its compiler stack on the first zero_grad (seconds): pay that before the clock starts.
    optimizer.zero_grad(set_to_none=True)

    lock = RunLock(run_dir) if world.is_main else None
    if lock:
        lock.acquire()
    metrics = MetricsFile(run_dir / "metrics.jsonl")
    checkpoints = run_dir / "checkpoints"
    progress = Progress()
    window: list = []  # (loss sum, count) of each step since the last log, still on the device
    loggers: list = []
    saved_at = [-1]  # the step of the last checkpoint written or loaded
    started = time.perf_counter()
    try:
        checkpoint = load_latest_checkpoint(checkpoints) if cfg.train.resume else None
        if checkpoint is None and world.is_main:
            _start_over(run_dir)
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(checkpoint["scheduler"])
            scaler.load_state_dict(checkpoint["scaler"])
            if hyper is not None:
                hyper.load_state_dict(checkpoint["hyper"])
            sampler.load_state_dict(checkpoint["sampler"])
            if holdout_sampler is not None:
                holdout_sampler.load_state_dict(checkpoint["holdout_sampler"])
            augment_generator.set_state(checkpoint["augment_generator"])
            set_rng_state(checkpoint["rng"])
            progress = Progress(**checkpoint["progress"])
            saved_at[0] = progress.step
            window = [(loss, 1) for loss in checkpoint["window"].to(device).unbind()]
        if world.is_main:
            (run_dir / "config.yaml").write_text(to_yaml(cfg))
            metrics.open(offset=checkpoint["metrics_offset"] if checkpoint is not None else 0)
            loggers = build_loggers(cfg, run_dir, progress.step)
            write_json(run_dir / "summary.json", _summary(cfg, "running", progress, task, model, device, started))
        if handle_signals:
            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGUSR1, request_stop)

        def elapsed() -> float:
            return progress.time + time.perf_counter() - started

        def log(record: dict[str, Any]) -> None:
            if world.is_main:
                record = {"step": progress.step, "time": round(elapsed(), 4), **record}
                metrics.write(record)
                for logger in loggers:
                    logger.log(record)

        def evaluate_validation() -> None:
            values = _evaluate(model, task, task.val, cfg, device, optimizer, "val")
            progress.last_eval = values
            if _is_better(values, progress.best, task):
                progress.best = {"step": progress.step, **values}
            log(values)

        def checkpoint_now() -> None:
            if world.is_main:
                state = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict(),
                    "hyper": hyper.state_dict() if hyper is not None else None,
                    "sampler": sampler.state_dict(),
                    "holdout_sampler": holdout_sampler.state_dict() if holdout_sampler is not None else None,
                    "augment_generator": augment_generator.get_state(),
                    "rng": rng_state(),
                    "progress": dataclasses.asdict(dataclasses.replace(progress, time=elapsed())),
                    "window": _step_losses(window).cpu() if window else torch.zeros(0, dtype=torch.float64),
                    "metrics_offset": metrics.offset(),
                    "config_hash": config_hash(cfg),
                }
                save_checkpoint(checkpoints, progress.step, state, cfg.train.keep_checkpoints)
                saved_at[0] = progress.step
                summary = _summary(cfg, "running", progress, task, model, device, started)
                write_json(run_dir / "summary.json", summary)

        def val_closure() -> Tensor:
            """The hypergradient's validation loss: a held-out training batch, model in eval mode."""
            batch = _to_device(holdout.batch(holdout_sampler.next()), device)
            model.eval()
            try:
                loss_sum, count = task.loss(task.forward(model, batch), batch)
            finally:
                model.train()
            return loss_sum / count

        model.train()
        for step in range(progress.step, cfg.train.steps):
            if step % cfg.train.eval_every == 0:
                evaluate_validation()
            if _STOP["requested"]:
                checkpoint_now()
                return _finish(cfg, "interrupted", progress, task, model, device, started, run_dir, world)

            batch = _to_device(train_split.batch(rank_slice(sampler.next(), world.rank, world.world_size)), device)
            if task.augment is not None:
                batch = task.augment(batch, augment_generator)
            if hyper is not None:
                loss_sum, count = task.loss(task.forward(model, batch), batch)
                hyper.step(loss_sum / count, val_closure)
                loss_sum = loss_sum.detach()
            else:
                optimizer.zero_grad(set_to_none=True)
                loss_sum, count = _backward(trained, task, batch, cfg.train.microbatch_size, amp_dtype, scaler, world)
                if cfg.train.clip_grad_norm is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
                if scaler.is_enabled():
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
            if scheduler is not None:
                scheduler.step()
            window.append((loss_sum, count))
            progress.step = step + 1

            if len(window) == cfg.train.log_every or progress.step == cfg.train.steps:
                losses = _step_losses(window)
                finite = torch.isfinite(losses)
                if not bool(finite.all()):
                    first_bad = int((~finite).nonzero()[0])
                    progress.diverged_step = progress.step - len(window) + first_bad + 1
                    log({"train/loss": float("nan"), "diverged_step": progress.diverged_step})
                    return _finish(cfg, "diverged", progress, task, model, device, started, run_dir, world)
                progress.last_train_loss = float(losses.mean())
                log({"train/loss": progress.last_train_loss, **_optimizer_values(optimizer, hyper)})
                window.clear()
            if progress.step % cfg.train.checkpoint_every == 0:
                checkpoint_now()

        if saved_at[0] != progress.step:
            checkpoint_now()
        evaluate_validation()
        test = _evaluate(model, task, task.test, cfg, device, optimizer, "test")
        progress.last_eval = {**progress.last_eval, **test}
        log(test)
        return _finish(cfg, "completed", progress, task, model, device, started, run_dir, world)
    except BaseException as error:
        if world.is_main and not isinstance(error, ConfigError):
            status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            summary = _summary(cfg, status, progress, task, model, device, started)
            summary["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
            write_json(run_dir / "summary.json", summary)
        raise
    finally:
        metrics.close()
        for logger in loggers:
            logger.close()
        if lock:
            lock.release()
        if handle_signals:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)


# ---------------------------------------------------------------------------------------------------------
# One step's gradients


def _backward(
    model: nn.Module,
    task: Task,
    batch: tuple[Tensor, ...],
    microbatch_size: int | None,
    amp_dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler,
    world: World,
) -> tuple[Tensor, Tensor | int]:
    """Accumulate the gradient of the mean loss over the global batch into `.grad`; return (loss sum, count).

    Losses are (sum, count) pairs, so the result is exact for uneven microbatches, uneven rank shares and
    token-count losses: the gradients of the sums are accumulated and divided once by the global count.
    """
    size = len(batch[0])
    autocast = (
        torch.autocast(batch[0].device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    if (microbatch_size is None or microbatch_size >= size) and not world.distributed:
        with autocast:
            loss_sum, count = task.loss(task.forward(model, batch), batch)
        loss_sum = _at_least_float32(loss_sum)
        # Seeding backward with 1/count gives the gradient of sum/count without a division node in the graph.
        scaler.scale(loss_sum).backward(_reciprocal(count, loss_sum))
        return loss_sum.detach(), count

    step = microbatch_size or size
    starts = range(0, size, step)
    total = torch.zeros(2, dtype=torch.float64, device=batch[0].device)
    for i, start in enumerate(starts):
        piece = tuple(t[start : start + step] for t in batch)
        last = i == len(starts) - 1
        sync = model.no_sync() if world.distributed and not last else contextlib.nullcontext()
        with sync:
            with autocast:
                loss_sum, count = task.loss(task.forward(model, piece), piece)
            scaler.scale(_at_least_float32(loss_sum)).backward()
        total[0] += loss_sum.detach().double()
        total[1] += count
    all_reduce_sum(total, world)
    # DDP averages gradients over ranks; undo that and divide by the global count instead.
    factor = world.world_size / float(total[1])
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    torch._foreach_mul_(grads, factor)
    return total[0], total[1]


def _reciprocal(count: Tensor | int, like: Tensor) -> Tensor:
    if isinstance(count, Tensor):
        return (1.0 / count).to(like.dtype)
    return _constant(1.0 / count, like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A cached scalar tensor (creating one costs microseconds, a noticeable share of a small step)."""
    return torch.tensor(value, dtype=dtype, device=device)


def _at_least_float32(loss: Tensor) -> Tensor:
    """Half-precision losses (under autocast) are summed and backpropagated in float32."""
    return loss.float() if loss.dtype in (torch.float16, torch.bfloat16) else loss


@torch.no_grad()
def _evaluate(
    model: nn.Module, task: Task, split: Split, cfg: Config, device: torch.device, optimizer, prefix: str
) -> dict[str, float]:
    """Mean loss and metrics over a split (or its first `train.eval_batches` batches)."""
    swap = hasattr(optimizer, "eval") and hasattr(optimizer, "train")  # Schedule-Free: evaluate the averaged iterate
    if swap:
        optimizer.eval()
    model.eval()
    sums: dict[str, list[float]] = {}
    size = cfg.task.eval_batch_size
    starts = list(range(0, len(split), size))[: cfg.train.eval_batches]
    for start in starts:
        batch = _to_device(split.batch(torch.arange(start, min(start + size, len(split)))), device)
        outputs = task.forward(model, batch)
        values = {"loss": task.loss(outputs, batch), **task.metrics(outputs, batch)}
        for name, (total, count) in values.items():
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0] += float(total)
            acc[1] += float(count)
    model.train()
    if swap:
        optimizer.train()
    return {f"{prefix}/{name}": total / count if count else float("nan") for name, (total, count) in sums.items()}


# ---------------------------------------------------------------------------------------------------------
# Set-up helpers


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(batch: tuple[Tensor, ...], device: torch.device) -> tuple[Tensor, ...]:
    if device.type == "cpu":
        return batch
    return tuple(t.to(device, non_blocking=True) for t in batch)


def _amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    if choice == "none" or device.type != "cuda":
        return None  # AMP is a GPU feature; on CPU it is off
    return torch.bfloat16 if choice == "bf16" else torch.float16


def _split_holdout(split: Split, cfg: Config) -> tuple[Split, Split | None]:
    """Hold out part of the training split for the hypergradient's validation gradient (never the test split)."""
    if cfg.hyper.name == "none":
        return split, None
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(12345))
    held = max(1, int(round(len(split) * cfg.hyper.holdout_fraction)))
    return split.subset(order[held:]), split.subset(order[:held])


def _build_hyper(cfg: Config, optimizer, world: World):
    if cfg.hyper.name == "none":
        return None
    conflicts = {
        "train.microbatch_size": cfg.train.microbatch_size is not None,
        "train.amp": cfg.train.amp != "none",
        "train.clip_grad_norm": cfg.train.clip_grad_norm is not None,
        "schedule.name": cfg.schedule.name != "constant" or cfg.schedule.warmup_steps > 0,
        "distributed training": world.distributed,
    }
    for key, conflict in conflicts.items():
        if conflict:
            raise ConfigError(f"hyper={cfg.hyper.name} controls the lr itself and does not combine with {key}")
    from optimlab.hyper import build_hyper

    return build_hyper(cfg.hyper, optimizer)


def _step_losses(window: list) -> Tensor:
    """The mean training loss of each step in the window, in float64."""
    return torch.stack([loss_sum.double() / count for loss_sum, count in window])


def _optimizer_values(optimizer, hyper) -> dict[str, float]:
    values = {"lr": float(optimizer.param_groups[0]["lr"])}
    if hyper is not None:
        values["hyper/hypergradient"] = float(hyper.last_hypergradient)
        values["hyper/hyper_lr"] = float(hyper.hyper_lr)
        values["hyper/mu"] = float(hyper.mu)
    return values


def _main_key(task: Task) -> str:
    return f"val/{task.main_metric}"


def _is_better(values: dict[str, float], best: dict | None, task: Task) -> bool:
    value = values.get(_main_key(task), float("nan"))
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best[_main_key(task)] if task.higher_is_better else value < best[_main_key(task)]


# ---------------------------------------------------------------------------------------------------------
# Run directory


def _check_resumable(cfg: Config, run_dir: Path) -> None:
    """A run directory holding a different run is an error, not something to silently continue or overwrite."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        return
    import yaml

    try:
        saved = from_tree(yaml.safe_load(saved_path.read_text()))
    except (ConfigError, yaml.YAMLError) as error:
        raise ConfigError(f"{saved_path} cannot be read ({error}); use train.resume=false to start over") from None
    old, new = _flatten(identity(saved)), _flatten(identity(cfg))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in _RESUMABLE_CHANGES)
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise ConfigError(
            f"{run_dir} holds a run with a different config ({detail}); "
            "pass train.resume=false to start over or choose another run_dir"
        )


def _finished_summary(cfg: Config, run_dir: Path) -> dict | None:
    """The summary of a run that already finished what `cfg` asks for (re-running it does nothing)."""
    summary = read_json(run_dir / "summary.json")
    if summary and summary.get("status") in ("completed", "diverged") and summary.get("steps") == cfg.train.steps:
        return summary
    return None


def _start_over(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "summary.json"):
        (run_dir / name).unlink(missing_ok=True)
    for old in (run_dir / "checkpoints").glob("*.pt") if (run_dir / "checkpoints").is_dir() else []:
        old.unlink()


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _summary(cfg: Config, status: str, progress: Progress, task: Task, model: nn.Module, device, started: float) -> dict:
    final = {}
    if progress.last_train_loss is not None:
        final["train/loss"] = progress.last_train_loss
    final.update(progress.last_eval)
    wall = progress.time + time.perf_counter() - started
    return {
        "status": status,
        "step": progress.step,
        "steps": cfg.train.steps,
        "task": cfg.task.name,
        "optim": cfg.optim.name,
        "hyper": cfg.hyper.name,
        "schedule": cfg.schedule.name,
        "seed": cfg.seed,
        "config_hash": config_hash(cfg),
        "main_metric": task.main_metric,
        "higher_is_better": task.higher_is_better,
        "final": final,
        "best": progress.best,
        "diverged_step": progress.diverged_step,
        "error": None,
        "wall_time": round(wall, 4),
        "params_sha256": params_sha256(model),
        "versions": records.versions(),
        "device": str(device),
        "git_commit": records.git_commit(),
    }


def _finish(cfg, status, progress, task, model, device, started, run_dir: Path, world: World) -> dict:
    summary = _summary(cfg, status, progress, task, model, device, started)
    if world.is_main:
        write_json(run_dir / "summary.json", summary)
    return summary


__all__ = ["STOP_EXIT_CODE", "request_stop", "train", "to_tree"]
