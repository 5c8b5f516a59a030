"""The pieces of one run, built from its config: task, model, optimizer, schedule, scaler, samplers, hooks.

`build_run` does everything that can fail on bad input, before the run directory is touched. `Run.state`
declares, once, every piece a checkpoint holds.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from optimlab.config import Config, config_hash, to_tree
from optimlab.directions.hook import build_direction_hooks
from optimlab.precond.hook import build_precond_hooks
from optimlab.errors import ConfigError
from optimlab.optim import build_optimizer
from optimlab.optim.param_groups import build_param_groups
from optimlab.rundir import MetricsFile
from optimlab.tasks import Split, Task, build_task
from optimlab.train.distributed import World
from optimlab.train.evaluate import to_device
from optimlab.train.gradients import backward, backward_seed
from optimlab.train.hooks import RunContext, StepHook, StepInfo, prefixed
from optimlab.train.carried_state_hook import build_carried_state_hook
from optimlab.train.dp_sgd import build_dp_sgd_hooks
from optimlab.train.hyper_hook import build_hypergradient_hook
from optimlab.train.init_from import init_from
from optimlab.train.importance import WeightedSampler, importance_hooks, weighted_task, with_weights
from optimlab.train.sampler import BatchSampler, rank_slice
from optimlab.train.sampler_choice import build_sampler
from optimlab.train.schedules import build_scheduler
from optimlab.train.state import Progress, RunState, rng_state, set_rng_state
from optimlab.train.threads import apply_threads

# Every kind of step hook enters the loop here: a builder (cfg, ctx) -> hooks, in the order they are called.
# Instruments come first: their after_backward reads the training backward before other hooks differentiate
# through its graph (the hypergradient's Hessian-vector products).
HOOK_BUILDERS: list[Callable[[Config, RunContext], list[StepHook]]] = [
    build_dp_sgd_hooks,  # privacy=dp_sgd replaces `.grad` first: every other hook sees the private gradient
    lambda cfg, ctx: _build_instruments(cfg, ctx),
    lambda cfg, ctx: [hook] if (hook := build_hypergradient_hook(cfg, ctx)) is not None else [],
    build_carried_state_hook,  # recurrent state carried across batches (word-level language models)
    build_direction_hooks,
    build_precond_hooks,
]


def _build_instruments(cfg: Config, ctx: RunContext) -> list[StepHook]:
    # Imported here: the instruments import the train package, which imports this module.
    from optimlab.instruments.registry import build_instruments

    return build_instruments(cfg.instruments, ctx)


@dataclasses.dataclass
class Run:
    cfg: Config
    world: World
    device: torch.device
    task: Task
    train_split: Split  # the training split left after hooks reserved their share
    model: nn.Module
    trained: nn.Module  # the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    sampler: BatchSampler  # or a StreamSampler / WeightedSampler (train.sampler)
    augment_generator: torch.Generator
    hooks: list[StepHook]
    # The loss the gradient is taken of: the task's, or its weighted form (train.sampler=loss|gradnorm|stratified).
    train_task: Task | None = None

    @functools.cached_property
    def parameters(self) -> list[Tensor]:
        return list(self.model.parameters())

    def next_batch(self, step: int) -> StepInfo:
        """The step's training batch (this rank's slice), augmented, with its example indices."""
        indices = rank_slice(self.sampler.next(), self.world.rank, self.world.world_size)
        batch = to_device(self.train_split.batch(indices), self.device)
        if self.task.augment is not None:
            batch = self.task.augment(batch, self.augment_generator)
        return StepInfo(step, batch, indices)

    def backward(self, step: StepInfo) -> None:
        """The gradient of the batch's mean loss into `.grad` (with its graph when a hook needs it)."""
        create_graph = any(hook.needs_graph for hook in self.hooks)
        task, batch = self._training_loss(step)
        step.loss_sum, step.count = backward(
            self.trained, task, batch, self.cfg.train.microbatch_size, self.amp_dtype, self.scaler, self.world,
            create_graph,
        )
        if self.hooks:  # layer hooks saw grad_scale x the gradients of the per-example loss summands
            step.grad_scale = backward_seed(
                len(step.batch[0]), step.count, self.cfg.train.microbatch_size, self.scaler, self.world
            )

    def _training_loss(self, step: StepInfo) -> tuple[Task, tuple[Tensor, ...]]:
        """The task and batch the gradient is taken of: weighted samplers append weights and indices."""
        if isinstance(self.sampler, WeightedSampler):
            return self.train_task, with_weights(step.batch, self.sampler, step.indices)
        return self.task, step.batch

    def zero_grad(self) -> None:
        """`optimizer.zero_grad(set_to_none=True)`. torch.optim's own (when the optimizer keeps it) sets each
        parameter's `.grad` to None inside a profiler range behind torch.compile's guard, about 8 us a step
        on a CPU; setting them here does the same in well under one."""
        if type(self.optimizer).zero_grad is not _TORCH_ZERO_GRAD:
            self.optimizer.zero_grad(set_to_none=True)
            return
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.grad = None

    def optimizer_step(self, step: StepInfo) -> None:
        if _needs_closure(self.optimizer):
            self.optimizer.step(lambda: self._reevaluate(step))
        elif self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def _reevaluate(self, step: StepInfo) -> Tensor:
        """The closure of optimizers that evaluate the loss again (L-BFGS): same batch, current weights."""
        self.optimizer.zero_grad(set_to_none=True)
        task, batch = self._training_loss(step)
        loss_sum, count = backward(
            self.trained, task, batch, self.cfg.train.microbatch_size, self.amp_dtype, self.scaler, self.world
        )
        return loss_sum / count

    def measurements(self) -> dict[str, float]:
        """The measurement channel at log time: the lr, the optimizer's and every hook's statistics."""
        values = {"lr": float(self.optimizer.param_groups[0]["lr"])}
        stats = getattr(self.optimizer, "stats", None)
        if callable(stats):
            values.update(prefixed("optim", stats()))
        for hook in self.hooks:
            values.update(prefixed(hook.prefix, hook.stats()))
        return values

    def state(self, progress: Progress, window: list, metrics: MetricsFile, elapsed: Callable[[], float]) -> RunState:
        """Every piece a checkpoint holds, declared once for both save and restore."""
        state = RunState()
        state.add_stateful("model", self.model)
        state.add_stateful("optimizer", self.optimizer)
        if self.scheduler is not None:
            state.add_stateful("scheduler", self.scheduler)
        state.add_stateful("scaler", self.scaler)
        state.add_stateful("sampler", self.sampler)
        state.add("augment_generator", self.augment_generator.get_state, self.augment_generator.set_state)
        state.add("rng", rng_state, set_rng_state)
        state.add("progress", lambda: {**progress.state_dict(), "time": elapsed()}, progress.load_state_dict)
        state.add("window", lambda: _window_tensor(window), lambda saved: _load_window(window, saved, self.device))
        state.add(
            "hooks",
            lambda: {hook.name: hook.state_dict() for hook in self.hooks},
            lambda saved: [hook.load_state_dict(saved[hook.name]) for hook in self.hooks if hook.name in saved],
        )
        state.add("metrics_offset", metrics.offset)  # read by the loop to rewind metrics.jsonl on resume
        state.add("config_hash", lambda: config_hash(self.cfg))  # for inspection
        state.add("config", lambda: to_tree(self.cfg))  # read by `optimlab train --restore CHECKPOINT`
        return state


def build_run(cfg: Config, device: torch.device, world: World) -> Run:
    apply_threads(cfg)  # before anything computes; config.yaml records the count (RunRecord.write_config)
    if cfg.train.deterministic:
        use_deterministic_algorithms()
    task = build_task(cfg.task.name, cfg.task.options, cfg.task.data_dir)
    if cfg.train.init_from is not None:  # weights only; a resumed run then loads its own checkpoint over them
        init_from(task.model, cfg.train.init_from)
    model = task.model.to(device)
    groups = build_param_groups(model, cfg.optim.name, cfg.optim.no_decay)
    optimizer = build_optimizer(cfg.optim.name, groups, **cfg.optim.kwargs)
    scheduler = build_scheduler(cfg.schedule, optimizer, cfg.train.steps)
    amp_dtype = _amp_dtype(cfg.train.amp, device)
    if amp_dtype is torch.float16 and _needs_closure(optimizer):
        raise ConfigError(f"optim={cfg.optim.name} evaluates a closure, which fp16 loss scaling cannot; use train.amp=bf16")
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    ctx = RunContext(task, model, optimizer, device, cfg.seed, cfg.task.batch_size, cfg.train.steps, world.world_size)
    hooks = [hook for build in HOOK_BUILDERS for hook in build(cfg, ctx)]
    train_split = task.train
    for hook in hooks:
        train_split = hook.reserve(train_split)
    lengths = train_split.lengths if cfg.train.length_bucketing else None
    if cfg.train.length_bucketing and lengths is None:
        raise ConfigError(f"train.length_bucketing=true: task {task.name!r} has no sequence lengths")
    sampler = build_sampler(cfg, task, train_split, lengths, world.world_size, hooks)
    hooks += importance_hooks(task, model, sampler, cfg.train.microbatch_size)
    train_task = weighted_task(task, sampler) if isinstance(sampler, WeightedSampler) else task
    trained = nn.parallel.DistributedDataParallel(model) if world.distributed else model
    return Run(
        cfg, world, device, task, train_split, model, trained, optimizer, scheduler, scaler, amp_dtype, sampler,
        torch.Generator().manual_seed(cfg.seed), hooks, train_task,
    )


def use_deterministic_algorithms() -> None:
    """`train.deterministic=true`: torch raises on an operation without a deterministic implementation
    instead of silently varying, cuDNN picks deterministic kernels and stops benchmarking, and cuBLAS gets
    the fixed workspace it needs (read when its handle is created, at the first matmul on the GPU)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def upgrade_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints written before step hooks kept the hypergradient state under `hyper`/`holdout_sampler`."""
    if "hooks" not in checkpoint and checkpoint.get("hyper") is not None:
        checkpoint["hooks"] = {"hyper": {"controller": checkpoint["hyper"], "sampler": checkpoint["holdout_sampler"]}}
    return checkpoint


def step_losses(window: list) -> Tensor:
    """The mean training loss of each step in the window, in float64."""
    sums, counts = zip(*window)
    if all(type(count) is int for count in counts):
        # Three operations instead of two per step: the same float64 quotients (the int counts are exact
        # doubles), a few tens of microseconds less at every log.
        return torch.stack(sums).double() / torch.tensor(counts, dtype=torch.float64)
    return torch.stack([loss_sum.double() / count for loss_sum, count in window])


def first_nonfinite(losses: Tensor) -> int | None:
    """The position of the first loss that is NaN or infinite, None when all are finite."""
    bad = (~torch.isfinite(losses)).nonzero()
    return int(bad[0]) if len(bad) else None


def _window_tensor(window: list) -> Tensor:
    return step_losses(window).cpu() if window else torch.zeros(0, dtype=torch.float64)


def _load_window(window: list, saved: Tensor, device: torch.device) -> None:
    window[:] = [(loss, 1) for loss in saved.to(device).unbind()]


_TORCH_ZERO_GRAD = torch.optim.Optimizer.zero_grad


def _needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    return isinstance(optimizer, torch.optim.LBFGS)


def _amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    if choice == "none" or device.type != "cuda":
        return None  # AMP is a GPU feature; on CPU it is off
    return torch.bfloat16 if choice == "bf16" else torch.float16
