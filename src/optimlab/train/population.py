"""Population training: runs of one task that differ only in seed and float hyperparameters, trained in one
process, each writing its own ordinary run directory.

    summaries = train_population([cfg_lr1_seed0, cfg_lr1_seed1, cfg_lr2_seed0, ...])

What is batched, and what stays per member:

- **Parameters** are stacked: each member's trainable parameters are one row of a (members, columns)
  buffer per dtype (`population_stacked.FlatParameters`), and the forward reads one (members, ...) view
  per parameter name. Each member's model holds leaf `nn.Parameter`s that are views of its row, so an
  optimizer updating a member's parameters in place updates the buffer, with no copy in either direction.
  Members are sorted by their settings, so that members with equal settings have adjacent rows.
- **Gradients** of all members come from one forward and one backward: `torch.func.vmap` over members of the
  task's `functional_loss` on a stacked batch (each member's own batch, drawn from its own sampler, seeded
  by its own seed exactly as its stand-alone run draws it), or for an MLP the same loss written out with
  batched matrix products (`population_batched`); then autograd of the sum of the members' losses, in
  which each member's row receives exactly its own gradient. The gradients are copied into a gradient
  buffer of the parameters' layout: each member's `.grad` is a contiguous view of its row.
- **One optimizer** holds every member's param groups (each member's own split, `optim.param_groups`) and
  steps them all. Each member also has its own optimizer object over its own group dicts, whose `state`
  routes to the shared one: its checkpoint, its scheduler and its statistics are exactly those of the
  stand-alone run's optimizer. For torch.optim's optimizers (every computation per parameter) the shared
  optimizer merges the groups of members with equal settings and steps them with torch's multi-tensor
  (foreach) kernels; for those whose every computation is per element (Adam, SGD, ...:
  `population_stacked.ELEMENTWISE`) a merged group steps one block of the buffer (its members' rows x
  its parameters' columns) as one tensor, each member's state being views of the block's. optimlab's
  critical-gradient optimizers, which compute across a group, keep one group per member group.
- Per member: schedule, sampler, evaluation, metrics, checkpoints, summary (the run directory of a
  stand-alone run, plus `"population": {"size": M, "index": i}` in summary.json, which is not part of the
  run's identity).

A member whose training loss becomes non-finite ends `diverged` as its stand-alone run would; its gradients
are set to None from then on, so the optimizer leaves it alone while the others go on. A member's final
parameters equal its stand-alone run's up to float rounding (the batched products sum in another order:
~1e-7 relative per step in float32), not bit for bit; a killed and resumed population continues bit-identically.
Which runs qualify: `optimlab.train.population_rules`.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import signal
import sys
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap

from optimlab import rundir
from optimlab.config import MAX_SEED, Config, default_run_dir, normalize, to_tree
from optimlab.errors import ConfigError, RunFailed
from optimlab.optim import build_optimizer
from optimlab.optim.param_groups import build_param_groups
from optimlab.rundir import MetricsFile, RunLock
from optimlab.tasks import build_task
from optimlab.train import loop
from optimlab.train.checkpoint import resume_latest, save_checkpoint
from optimlab.train.distributed import World, resolve_device
from optimlab.train.evaluate import evaluate, is_better
from optimlab.train.hooks import RunContext
from optimlab.train.init_from import init_from
from optimlab.train.loggers import build_loggers
from optimlab.train.population_batched import batched_loss
from optimlab.train.population_rules import config_ineligibility, member_settings, model_ineligibility, population_key
from optimlab.train.population_stacked import ELEMENTWISE, Block, FlatParameters, member_view, stack_state, unstack_state
from optimlab.train.run import HOOK_BUILDERS, Run, step_losses, upgrade_checkpoint, use_deterministic_algorithms
from optimlab.train.run_record import RunRecord
from optimlab.train.sampler import BatchSampler
from optimlab.train.schedules import build_scheduler
from optimlab.train.state import Progress, RunState, seed_everything
from optimlab.train.threads import apply_threads


class NotBatchable(ConfigError):
    """These runs cannot train as one population (the message says why); train them one by one instead."""


def train_population(cfgs: Sequence[Config], *, handle_signals: bool = False) -> list[dict[str, Any]]:
    """Train `cfgs` as one population; returns each member's summary, in order.

    Every config is normalised as `optimlab.train.train` normalises it. Members already finished are not
    trained again (their summary is returned); interrupted ones resume from their own newest checkpoint.
    Raises `NotBatchable` before anything is written when the runs cannot share a population.
    """
    cfgs = _normalized(cfgs)
    cfgs = [dataclasses.replace(cfg, run_dir=str(cfg.run_dir or default_run_dir(cfg))) for cfg in cfgs]
    if not cfgs:
        return []
    _check_configs(cfgs)
    done: dict[int, dict] = {}
    records = []
    for i, cfg in enumerate(cfgs):
        record = RunRecord(cfg)
        if cfg.train.resume:
            record.check_resumable()
            if (summary := record.finished()) is not None:
                done[i] = summary
        records.append(record)
    # Members with equal settings next to each other: their rows of the stacked parameters form one block
    # (population_stacked). Each member's results do not depend on its row.
    todo = sorted((i for i in range(len(cfgs)) if i not in done), key=lambda i: _settings_key(cfgs[i]))
    if todo:
        population = _Population([cfgs[i] for i in todo], [records[i] for i in todo], len(cfgs), todo)
        for i, summary in zip(todo, population.train(handle_signals)):
            done[i] = summary
    return [done[i] for i in range(len(cfgs))]


def _normalized(cfgs: Sequence[Config]) -> list[Config]:
    """Each config normalised as `optimlab.train.train` normalises it. A config that differs from an earlier
    one only in its seed (an int in range) and run_dir (a str or None) is that one's normalised config with
    its own seed and run_dir: the validation (~60 ms a config) checks each of those two on its own."""
    done: dict[str, Config] = {}
    normalized = []
    for cfg in cfgs:
        tree = to_tree(cfg)
        key = json.dumps({k: v for k, v in tree.items() if k not in ("seed", "run_dir")}, sort_keys=True, default=str)
        seed, run_dir = cfg.seed, cfg.run_dir
        if (key in done and type(seed) is int and 0 <= seed <= MAX_SEED
                and (run_dir is None or type(run_dir) is str)):
            cfg = copy.deepcopy(done[key])
            cfg.seed, cfg.run_dir = seed, run_dir
        else:
            cfg = normalize(cfg)
            done.setdefault(key, cfg)
        normalized.append(cfg)
    return normalized


def _check_configs(cfgs: list[Config]) -> None:
    for cfg in cfgs:
        if (reason := config_ineligibility(cfg)) is not None:
            raise NotBatchable(f"{cfg.run_dir}: {reason}")
    key = population_key(cfgs[0])
    for cfg in cfgs[1:]:
        if population_key(cfg) != key:
            raise NotBatchable(f"{cfg.run_dir} differs from {cfgs[0].run_dir} in more than seed and float "
                               "hyperparameters")
    dirs = [str(cfg.run_dir) for cfg in cfgs]
    if len(set(dirs)) != len(dirs):
        raise NotBatchable("two members share one run directory")


class MemberState(MutableMapping):
    """A member optimizer's `state`: the shared optimizer's state, restricted to the member's parameters.

    `where(p)` locates a parameter that the shared optimizer steps as part of a block of the stacked
    parameters (`population_stacked`): its state is then the member's views of the block's state."""

    def __init__(self, shared: dict, params: list[Tensor],
                 where: Callable[[Tensor], tuple[Block, int, str] | None] | None = None):
        self.shared = shared
        self.params = params
        self.where = where or (lambda p: None)
        self._ids = {id(p) for p in params}

    def __getitem__(self, p: Tensor) -> Any:
        if id(p) not in self._ids:
            raise KeyError(p)
        located = self.where(p)
        if located is None:
            if p not in self.shared:
                raise KeyError(p)
            return self.shared[p]
        block, row, name = located
        if block.tensor not in self.shared:
            raise KeyError(p)
        return {key: member_view(value, block, row, name, p.shape) for key, value in self.shared[block.tensor].items()}

    def __setitem__(self, p: Tensor, value: Any) -> None:
        located = self.where(p)
        if located is None:
            self.shared[p] = value
            return
        current = self[p]  # a stacked member's state is its views of the block's: written in place
        if set(current) != set(value):
            raise KeyError(f"a stacked member's state has the keys {sorted(current)}")
        for key, item in value.items():
            if isinstance(current[key], Tensor) and current[key].shape == p.shape and current[key].dim():
                current[key].copy_(item)
            elif not _same(current[key], item):
                raise ValueError(f"state {key!r} is shared by the members of a stacked param group")

    def __delitem__(self, p: Tensor) -> None:
        if self.where(p) is not None:
            raise KeyError(f"a stacked member's state is part of its param group's: {p.shape}")
        del self.shared[p]

    def __iter__(self) -> Iterator[Tensor]:
        return (p for p in self.params if p in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b.to(a.dtype)))
    return not isinstance(a, Tensor) and not isinstance(b, Tensor) and a == b


@dataclasses.dataclass
class _Stack:
    """A merged param group stepped on blocks of the stacked parameters."""

    group: dict
    rows: list[int]
    params: list[Tensor]  # the group's member parameters, which it holds again when unstacked
    blocks: list[Block]


@dataclasses.dataclass
class _Member:
    index: int  # the member's row in the stacked tensors
    cfg: Config
    record: RunRecord
    run: Run  # the member's pieces: its model (views of the stacked parameters), optimizer, schedule, sampler
    params: list[Tensor]  # its trainable parameters, in the order of the stacked names
    progress: Progress = dataclasses.field(default_factory=Progress)
    window: list = dataclasses.field(default_factory=list)
    metrics: MetricsFile | None = None
    state: RunState | None = None
    lock: RunLock | None = None
    loggers: list = dataclasses.field(default_factory=list)
    saved_at: int = -1
    summary: dict | None = None  # set when the member has ended

    @property
    def live(self) -> bool:
        return self.summary is None


class _Population:
    def __init__(self, cfgs: list[Config], records: list[RunRecord], size: int, indices: list[int]):
        self.cfgs, self.size, self.indices = cfgs, size, indices
        first = cfgs[0]
        world = World()
        self.device = resolve_device(first.train.device, world)
        apply_threads(first)
        if first.train.deterministic:
            use_deterministic_algorithms()
        seed_everything(first.seed)
        self.task = task = build_task(first.task.name, first.task.options, first.task.data_dir)
        self.template = task.model.to(self.device)  # stands in for every member in the functional forward
        if (reason := model_ineligibility(self.template)) is not None:
            raise NotBatchable(reason)
        models = []
        for cfg in cfgs:
            model = task.new_model(cfg.seed)
            if cfg.train.init_from is not None:
                init_from(model, cfg.train.init_from)
            models.append(model.to(self.device))
        order = _column_order(models[0], first)
        self.names, self.flat, self.frozen, member_params = _stack_parameters(models, order, self.device)
        self.stacked = {name: self.flat.view(name) for name in self.names}
        self.buffer_names, self.buffers = _stack_buffers(models)
        self.train_split = task.train
        if task.train.lengths is not None and task.train.padded:
            raise NotBatchable(f"task {task.name!r} has sequences of varying length (batches differ in shape)")
        self.members: list[_Member] = []
        optimizers = []
        for row, (cfg, record, model) in enumerate(zip(cfgs, records, models)):
            groups = build_param_groups(model, cfg.optim.name, cfg.optim.no_decay)
            optimizer = build_optimizer(cfg.optim.name, groups, **cfg.optim.kwargs)  # the member's own checks
            optimizers.append(optimizer)
            scheduler = build_scheduler(cfg.schedule, optimizer, cfg.train.steps)
            optimizer._opt_called = True  # the shared optimizer steps, not this one: no "scheduler first" warning
            if row == 0:
                self._check_hooks(cfg, model, optimizer)
            sampler = BatchSampler(len(self.train_split), cfg.task.batch_size, cfg.seed)
            scaler = torch.amp.GradScaler(self.device.type, enabled=False)
            run = Run(cfg, world, self.device, task, self.train_split, model, model, optimizer, scheduler, scaler,
                      None, sampler, torch.Generator().manual_seed(cfg.seed), [], task)
            self.members.append(_Member(row, cfg, record, run, member_params[row]))
        # One optimizer over every member's groups, one state shared by all (see _merged_groups).
        self.merged = _merged_groups(cfgs, optimizers)
        groups = [group for group, _, _ in self.merged] or [dict(g) for o in optimizers for g in o.param_groups]
        self.optimizer = build_optimizer(first.optim.name, groups, **first.optim.kwargs)
        if not self.merged:  # the members' own group dicts
            self.optimizer.param_groups = [g for o in optimizers for g in o.param_groups]
        self.stacks: list[_Stack] = []  # see _stack_groups
        self.located: dict[int, tuple[Block, int, str]] = {}  # id of a stacked member parameter -> where
        self.loose: list[tuple[int, Tensor, str, Tensor]] = []  # the others: (row, parameter, name, grad view)
        self.unused: set[str] = set()  # parameters the loss does not use (no gradient)
        for member in self.members:
            self._route(member)
        self._loosen()
        self.clip = torch.tensor([cfg.train.clip_grad_norm or float("inf") for cfg in cfgs], device=self.device)
        self.clipping = any(cfg.train.clip_grad_norm for cfg in cfgs)  # known here: no device read per step
        self.loss_fn = vmap(self._member_loss)
        self.batched = batched_loss(task, self.template)  # the written-out batched loss, where there is one
        self._check_vmap()

    # ---------------------------------------------------------------------------------------------------
    # Set-up

    def _check_hooks(self, cfg: Config, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Step hooks (carried recurrent state, ...) act on one run: such runs train one by one."""
        ctx = RunContext(self.task, model, optimizer, self.device, cfg.seed, cfg.task.batch_size, cfg.train.steps)
        hooks = [hook for build in HOOK_BUILDERS for hook in build(cfg, ctx)]
        if hooks:
            raise NotBatchable(f"the run has step hooks ({', '.join(h.name for h in hooks)})")
        if self.task.info.get("order") == "stream" and cfg.train.sampler == "auto":
            raise NotBatchable(f"task {self.task.name!r} reads its data as a stream of contiguous windows")

    def _check_vmap(self) -> None:
        """One batched gradient on a fixed batch, so that a task whose forward vmap cannot batch is caught
        before anything is written (and a model the written-out batched loss does not cover uses vmap)."""
        index = torch.arange(self.cfgs[0].task.batch_size).expand(len(self.members), -1)
        if self.batched is not None:
            try:
                grads, _, _ = self._gradients(index, [torch.Generator().manual_seed(0) for _ in self.members])
                self.unused = {name for name, grad in grads.items() if grad is None}
                return
            except Exception:  # noqa: BLE001 - Unsupported, or any other failure: vmap decides
                self.batched = None
        try:
            grads, _, _ = self._gradients(index, [torch.Generator().manual_seed(0) for _ in self.members])
            self.unused = {name for name, grad in grads.items() if grad is None}
        except Exception as error:  # noqa: BLE001 - any failure means: not batchable
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise NotBatchable(f"the task's loss cannot be batched over members with torch.func.vmap ({first})") from None

    def _route(self, member: _Member) -> None:
        """Point the member's optimizer at the shared state, and the shared optimizer at the member's groups
        (after a checkpoint load replaced them)."""
        optimizer = member.run.optimizer
        if not isinstance(optimizer.state, MemberState):
            for p in member.run.model.parameters():
                self.optimizer.state.pop(p, None)
            self.optimizer.state.update(optimizer.state)
            optimizer.state = MemberState(self.optimizer.state, list(member.run.model.parameters()),
                                          lambda p: self.located.get(id(p)))
        if self.merged:
            return
        start = sum(len(m.run.optimizer.param_groups) for m in self.members[: member.index])
        count = len(optimizer.param_groups)
        self.optimizer.param_groups[start : start + count] = optimizer.param_groups

    def _stack_groups(self) -> None:
        """Step each merged group on blocks of the stacked parameters (`population_stacked`) where its
        members allow it: an optimizer of `ELEMENTWISE`, members that step together (all live, all at one
        step), parameters that all get gradients, and optimizer states (from checkpoints) that fit in one
        block. Other groups keep their members' own parameters."""
        if type(self.optimizer) not in ELEMENTWISE:
            return
        steps = [member.progress.step for member in self.members]
        for group, rows, position in self.merged:
            if (rows != list(range(rows[0], rows[0] + len(rows))) or len({steps[row] for row in rows}) != 1
                    or not all(self.members[row].live for row in rows)):
                continue
            names = [self._names(self.members[row], position) for row in rows]
            if any(n != names[0] for n in names) or None in names[0] or self.unused & set(names[0]):
                continue
            if any(self.flat.columns[name].shape == () for name in names[0]):
                continue  # a 0-d parameter's state could not be told from the scalars (step counts)
            blocks = self.flat.block(range(rows[0], rows[0] + len(rows)), names[0])
            if blocks is None:
                continue
            for block in blocks:
                block.members = [(p, row - rows[0], name) for row in rows
                                 for p, name in zip(self.members[row].run.optimizer.param_groups[position]["params"], names[0])
                                 if name in block.spans]
            if not stack_state(self.optimizer.state, blocks):
                continue
            stack = _Stack(group, rows, list(group["params"]), blocks)
            for block in blocks:
                block.tensor.grad = block.grad  # the gradient buffer's block: filled in place every step
                for p, row, name in block.members:
                    self.located[id(p)] = (block, row, name)
            group["params"] = [block.tensor for block in blocks]
            self.stacks.append(stack)
        self._loosen()

    def _unstack(self, rows: set[int]) -> None:
        """The stacked groups holding any of `rows` step their members' own parameters from now on."""
        for stack in [stack for stack in self.stacks if rows & set(stack.rows)]:
            unstack_state(self.optimizer.state, stack.blocks)
            for block in stack.blocks:
                block.tensor.grad = None
                for p, _, _ in block.members:
                    del self.located[id(p)]
            stack.group["params"] = stack.params
            self.stacks.remove(stack)
        self._loosen()

    def _names(self, member: _Member, position: int) -> list[str | None]:
        """The names of the trainable parameters in the member's param group at `position` (None: frozen)."""
        names = {id(p): name for p, name in zip(member.params, self.names)}
        return [names.get(id(p)) for p in member.run.optimizer.param_groups[position]["params"]]

    def _loosen(self) -> None:
        """The member parameters that the optimizer steps one by one, with their views of the gradient buffer."""
        self.loose = [(member.index, p, name, self.flat.grad_view(name)[member.index])
                      for member in self.members for p, name in zip(member.params, self.names)
                      if id(p) not in self.located]

    # ---------------------------------------------------------------------------------------------------
    # The batched gradient

    def _member_loss(self, params: dict[str, Tensor], frozen: dict[str, Tensor], buffers: dict[str, Tensor],
                     batch: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        loss_sum, count = self.task.functional_loss({**params, **frozen, **buffers}, batch, self.template)
        if loss_sum.dtype in (torch.float16, torch.bfloat16):
            loss_sum = loss_sum.float()
        count = torch.as_tensor(count, device=loss_sum.device)
        # Times 1/count, as the stand-alone backward seeds it, so the gradients are the same products.
        return loss_sum * (1.0 / count).to(loss_sum.dtype), (loss_sum.detach(), count)

    def _batch(self, index: Tensor, generators: list[torch.Generator]) -> tuple[Tensor, ...]:
        """Each member's batch, stacked: (members, batch, ...), augmented with the member's generator."""
        if self.task.augment is None:  # index_select: the rows t[index] gathers, at a quarter of its cost
            rows = index.reshape(-1)
            return tuple(torch.index_select(t, 0, rows).view(*index.shape, *t.shape[1:]) for t in self.train_split.tensors)
        pieces = [self.task.augment(self.train_split.batch(row), generator) for row, generator in zip(index, generators)]
        return tuple(torch.stack(parts) for parts in zip(*pieces))

    def _gradients(self, index: Tensor, generators: list[torch.Generator] | None = None) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        generators = generators or [m.run.augment_generator for m in self.members]
        batch = tuple(t.to(self.device) for t in self._batch(index, generators))
        # The batched forward (vmap), then one ordinary backward through its graph: each member's loss depends
        # on its own row only, so the gradient of the sum of the members' losses is each member's gradient
        # (faster than vmapping torch.func.grad, whose transform wraps every operation of the backward too).
        params = {name: tensor.detach().requires_grad_() for name, tensor in self.stacked.items()}
        with torch.enable_grad():
            if self.batched is not None:
                losses, loss_sums, counts = self.batched({**params, **self.frozen}, batch)
            else:
                losses, (loss_sums, counts) = self.loss_fn(params, self.frozen, self.buffers, batch)
            grads = torch.autograd.grad(losses.sum(), list(params.values()), allow_unused=True)
        # A parameter the loss does not use gets no gradient (None), as in a stand-alone backward.
        return dict(zip(params, grads)), loss_sums, counts

    # ---------------------------------------------------------------------------------------------------
    # Training

    def train(self, handle_signals: bool) -> list[dict[str, Any]]:
        loop._STOP["requested"] = False
        for member in self.members:
            member.record.start_clock()
            member.metrics = MetricsFile(member.record.path / rundir.METRICS)
            member.state = member.run.state(member.progress, member.window, member.metrics,
                                            lambda m=member: m.record.elapsed(m.progress))
        if handle_signals:
            previous = {sig: signal.signal(sig, loop.request_stop) for sig in loop._STOP_SIGNALS}
        try:
            for member in self.members:
                lock = RunLock(member.record.path)
                lock.acquire()
                member.lock = lock
            for member in self.members:
                self._open(member)
            self._stack_groups()
            self._loop()
            return [member.summary for member in self.members]
        except BaseException as error:
            if isinstance(error, OSError):
                error = RunFailed(f"cannot write {error.filename or 'a run directory'}: {error.strerror or error}")
            if not isinstance(error, ConfigError):
                status = rundir.INTERRUPTED if isinstance(error, KeyboardInterrupt) else rundir.FAILED
                for member in self.members:
                    if member.live and member.lock is not None:
                        member.record.write_failure(status, error, member.progress, self.task, member.run.model,
                                                    self.device)
            if isinstance(error, RunFailed):
                raise error from None
            raise
        finally:
            for member in self.members:
                member.metrics.close()
                for logger in member.loggers:
                    logger.close()
                if member.lock is not None:
                    member.lock.release()
            if handle_signals:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def _open(self, member: _Member) -> None:
        """Resume the member from its newest usable checkpoint, or start it over; write its config."""
        resumed = None
        if member.cfg.train.resume:
            resumed = resume_latest(member.record.checkpoints, lambda found: self._load(member, found))
        if resumed is not None:
            member.saved_at = member.progress.step
            print(f"optimlab: resumed from step {member.progress.step} in {member.record.path}", file=sys.stderr)
        else:
            member.record.start_over()
        member.record.write_config()
        member.metrics.open(offset=resumed["metrics_offset"] if resumed is not None else 0)
        # No progress bar per member (log.* is not part of a run's identity).
        quiet = dataclasses.replace(member.cfg, log=dataclasses.replace(member.cfg.log, progress="never"))
        member.loggers = build_loggers(quiet, member.record.path, member.progress.step)
        self._write_summary(member, rundir.RUNNING)

    def _load(self, member: _Member, checkpoint: dict[str, Any]) -> None:
        try:
            member.state.load_state_dict(upgrade_checkpoint(checkpoint))
        finally:  # loading replaced the member optimizer's state and groups (also when it was rolled back)
            self._route(member)

    def _loop(self) -> None:
        cfg = self.cfgs[0]
        steps, eval_every, log_every = cfg.train.steps, cfg.train.eval_every, cfg.train.log_every
        start = min(m.progress.step for m in self.members)
        for step in range(start, steps):
            # Members resumed from a later checkpoint than others wait until the population reaches them.
            active = [m.live and m.progress.step == step for m in self.members]
            if step % eval_every == 0:
                for member, on in zip(self.members, active):
                    if on:
                        self._evaluate_validation(member)
            if loop._STOP["requested"]:
                live = [member for member in self.members if member.live]
                self._checkpoint(live)
                self._finish(live, rundir.INTERRUPTED)
                return
            if not any(active):
                continue
            first = active.index(True)
            rows = [m.run.sampler.next() if on else None for m, on in zip(self.members, active)]
            index = torch.stack([row if row is not None else rows[first] for row in rows])
            grads, loss_sums, counts = self._gradients(index)
            log_now = [on and (len(m.window) + 1 == log_every or step + 1 == steps)
                       for m, on in zip(self.members, active)]
            norms = self._clip_and_measure(grads) if any(log_now) or self.clipping else None
            self._set_gradients(grads, active)
            self._sync_merged(active)
            self.optimizer.step()
            # Counts as Python numbers on the CPU (as a stand-alone run's window holds them): the window's
            # mean at log time is then one division (`run.step_losses`), with the same quotients.
            sums, numbers = loss_sums.unbind(), counts.tolist() if counts.device.type == "cpu" else counts.unbind()
            for member, on in zip(self.members, active):
                if not on:
                    continue
                if member.run.scheduler is not None:
                    member.run.scheduler.step()
                member.window.append((sums[member.index], numbers[member.index]))
                member.progress.step = step + 1
            for member, now in zip(self.members, log_now):
                if now:
                    self._log_training(member, float(norms[member.index]))
            self._checkpoint([member for member, on in zip(self.members, active)
                              if on and member.live and member.progress.step % cfg.train.checkpoint_every == 0])
        self._end([member for member in self.members if member.live])

    def _set_gradients(self, grads: dict[str, Tensor | None], active: list[bool]) -> None:
        """This step's gradients into the gradient buffer, whose blocks and rows are the `.grad`s the optimizer
        reads; a member that does not step now, or a parameter without a gradient, gets None."""
        if self.stacks and any(grads[name] is None for name in self.names):
            missing = {name for name in self.names if grads[name] is None}
            self._unstack({stack.rows[0] for stack in self.stacks
                           if any(missing & set(block.spans) for block in stack.blocks)})
        self.flat.copy_grads(grads)
        for row, p, name, grad in self.loose:
            p.grad = grad if active[row] and grads[name] is not None else None

    def _sync_merged(self, active: list[bool]) -> None:
        """Merged groups take their hyperparameters (the lr a schedule sets) from the group of their first
        member that steps now (a diverged member's schedule stops; one resumed ahead is at another step)."""
        for group, rows, position in self.merged:
            row = next((row for row in rows if active[row]), None)
            if row is None:
                continue
            source = self.members[row].run.optimizer.param_groups[position]
            for key, value in source.items():
                if key not in ("params", "foreach"):
                    group[key] = value

    def _clip_and_measure(self, grads: dict[str, Tensor]) -> Tensor:
        """Each member's gradient norm before clipping; clips each to its own `train.clip_grad_norm`
        (as `torch.nn.utils.clip_grad_norm_`: scaled by min(1, max_norm / (norm + 1e-6)))."""
        members = len(self.members)
        with torch.no_grad():
            used = [grads[n] for n in self.names if grads[n] is not None]
            if not used:
                return torch.zeros(members, device=self.device)
            per_tensor = torch.stack([torch.linalg.vector_norm(g.reshape(members, -1), dim=1) for g in used])
            norms = torch.linalg.vector_norm(per_tensor, dim=0)
            if self.clipping:
                coef = torch.clamp(self.clip / (norms + 1e-6), max=1.0)
                for g in used:
                    g.mul_(coef.view(members, *([1] * (g.dim() - 1))))
        return norms

    def _log(self, member: _Member, values: dict[str, Any]) -> None:
        line = {"step": member.progress.step, "time": round(member.record.elapsed(member.progress), 4), **values}
        member.metrics.write(line)
        for logger in member.loggers:
            logger.log(line)

    def _log_training(self, member: _Member, grad_norm: float) -> None:
        losses = step_losses(member.window)
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            progress = member.progress
            progress.diverged_step = progress.step - len(member.window) + int((~finite).nonzero()[0]) + 1
            self._log(member, {"train/loss": float("nan"), "diverged_step": progress.diverged_step})
            self._finish([member], rundir.DIVERGED)
            self._unstack({member.index})
            for p in member.params:  # frozen: the optimizer skips parameters without a gradient
                p.grad = None
            return
        member.progress.last_train_loss = float(losses.mean())
        self._log(member, {"train/loss": member.progress.last_train_loss, "train/grad_norm": grad_norm,
                           **member.run.measurements()})
        member.window.clear()

    def _evaluate_validation(self, member: _Member) -> None:
        cfg, run = member.cfg, member.run
        values = evaluate(run.model, self.task, self.task.val, cfg.task.eval_batch_size, cfg.train.eval_batches,
                          self.device, run.optimizer, "val")
        member.progress.last_eval = values
        if is_better(values, member.progress.best, self.task):
            member.progress.best = {"step": member.progress.step, **values}
        self._log(member, values)

    def _checkpoint(self, members: list[_Member]) -> None:
        """Checkpoint `members` (the state is read here; the files are written and fsynced on I/O threads)."""
        states = [own_storage(member.state.state_dict()) for member in members]
        summaries = [self._summary(member, rundir.RUNNING) for member in members]
        self._on_io_threads(lambda member, state, summary: self._write_checkpoint(member, state, summary),
                            members, states, summaries)

    def _write_checkpoint(self, member: _Member, state: dict, summary: dict) -> None:
        progress, record = member.progress, member.record
        try:
            save_checkpoint(record.checkpoints, progress.step, state, member.cfg.train.keep_checkpoints)
        except OSError as error:
            last = f"step-{member.saved_at}" if member.saved_at >= 0 else "none"
            path = record.checkpoints / f"step-{progress.step}.pt"
            raise RunFailed(f"cannot write checkpoint {path}: {error.strerror}; last good checkpoint: {last}") from None
        member.saved_at = progress.step
        record.write_summary(summary)

    def _end(self, members: list[_Member]) -> None:
        """A last checkpoint, validation and test."""
        self._checkpoint([member for member in members if member.saved_at != member.progress.step])
        for member in members:
            cfg, run = member.cfg, member.run
            self._evaluate_validation(member)
            test = evaluate(run.model, self.task, self.task.test, cfg.task.eval_batch_size, cfg.train.eval_batches,
                            self.device, run.optimizer, "test")
            member.progress.last_eval = {**member.progress.last_eval, **test}
            self._log(member, test)
        self._finish(members, rundir.COMPLETED)

    def _summary(self, member: _Member, status: str) -> dict:
        summary = member.record.summary(status, member.progress, self.task, member.run.model, self.device)
        summary["population"] = {"size": self.size, "index": self.indices[member.index]}
        return summary

    def _write_summary(self, member: _Member, status: str) -> dict:
        return member.record.write_summary(self._summary(member, status))

    def _finish(self, members: list[_Member], status: str) -> None:
        summaries = [self._summary(member, status) for member in members]
        self._on_io_threads(lambda member, summary: member.record.write_summary(summary), members, summaries)
        for member, summary in zip(members, summaries):
            member.summary = summary

    def _on_io_threads(self, write: Callable[..., Any], *columns: list) -> None:
        """Run `write` over the rows of `columns` on threads: each file is fsynced, and the waits overlap."""
        if len(columns[0]) <= 1:
            for row in zip(*columns):
                write(*row)
            return
        with ThreadPoolExecutor(max_workers=min(8, len(columns[0])), thread_name_prefix="optimlab-io") as pool:
            for future in [pool.submit(write, *row) for row in zip(*columns)]:
                future.result()


def _settings_key(cfg: Config) -> str:
    """The member settings that decide which merged param groups a member joins (all but seed and run_dir)."""
    settings = {k: v for k, v in member_settings(cfg).items() if k not in ("seed", "run_dir")}
    return json.dumps(settings, sort_keys=True, default=str)


def _merged_groups(cfgs: list[Config], optimizers: list[torch.optim.Optimizer]) -> list[tuple[dict, list[int], int]]:
    """For torch.optim's optimizers, whose every computation is per parameter: one group per distinct set of
    member settings and group position, holding the parameters of every member with those settings, stepped
    with torch's multi-tensor (foreach) kernels, so the optimizer's cost does not grow with one Python loop
    per member. Returns (group, its members' rows, position of the group in each member's optimizer); empty
    for other optimizers (optimlab's critical-gradient ones compute across a group: their groups stay per
    member) or when `foreach=False`, `fused` or `differentiable` is set."""
    first = optimizers[0]
    if not type(first).__module__.startswith("torch.optim") or "foreach" not in first.defaults:
        return []
    if first.defaults.get("foreach") is False or first.defaults.get("fused") or first.defaults.get("differentiable"):
        return []
    merged: dict[tuple[str, int], tuple[dict, list[int], int]] = {}
    for row, (cfg, optimizer) in enumerate(zip(cfgs, optimizers)):
        settings = _settings_key(cfg)
        for position, group in enumerate(optimizer.param_groups):
            key = (settings, position)
            if key not in merged:
                merged[key] = ({**group, "params": [], "foreach": True}, [], position)
            merged[key][0]["params"] += group["params"]
            merged[key][1].append(row)
    return list(merged.values())


def _stack_parameters(models: list[nn.Module], order: list[str], device: torch.device) -> tuple[
        list[str], FlatParameters, dict[str, Tensor], list[list[Tensor]]]:
    """Stack the members' parameters and make each member's parameters views of its row.

    Returns the trainable names (in the model's order), the trainable parameters in buffers (`order`: their
    column order), the stacked frozen ones (requires_grad=False: passed to the forward, never
    differentiated) and each member's trainable parameters in name order.
    """
    named = [dict(model.named_parameters()) for model in models]
    names = list(named[0])
    trainable = [name for name in names if named[0][name].requires_grad]
    flat = FlatParameters(models, [name for name in order if name in trainable], device)
    frozen = {name: torch.stack([n[name].detach() for n in named]) for name in names if name not in trainable}
    for row, model in enumerate(models):
        stacked = {name: flat.view(name) if name in flat.columns else frozen[name] for name in names}
        views = {id(named[row][name]): nn.Parameter(stacked[name][row], requires_grad=named[row][name].requires_grad)
                 for name in names}
        for module in model.modules():  # every module holding a parameter (tied ones too) gets its view
            for key, param in module._parameters.items():
                if param is not None and id(param) in views:
                    module._parameters[key] = views[id(param)]
    members = [[dict(model.named_parameters())[name] for name in trainable] for model in models]
    return trainable, flat, frozen, members


def _column_order(model: nn.Module, cfg: Config) -> list[str]:
    """The parameter names with the names of each of the member's param groups next to each other (in
    group order), so that a merged group's parameters are adjacent columns of the buffers."""
    names = {id(param): name for name, param in model.named_parameters()}
    grouped = [names[id(p)] for group in build_param_groups(model, cfg.optim.name, cfg.optim.no_decay)
               for p in group["params"] if id(p) in names]
    return list(dict.fromkeys(grouped + list(names.values())))


def _stack_buffers(models: list[nn.Module]) -> tuple[list[str], dict[str, Tensor]]:
    named = [dict(model.named_buffers()) for model in models]
    names = list(named[0])
    return names, {name: torch.stack([n[name] for n in named]) for name in names}


def own_storage(value: Any) -> Any:
    """`value` with every tensor that views a larger storage (a member's row of the stacked parameters)
    copied: torch.save writes a view's whole storage, which would put every member into each checkpoint."""
    if isinstance(value, Tensor):
        return value.clone() if value.untyped_storage().nbytes() > value.numel() * value.element_size() else value
    if isinstance(value, dict):
        items = ((key, own_storage(item)) for key, item in value.items())
        copied = collections.OrderedDict(items) if isinstance(value, collections.OrderedDict) else dict(items)
        if hasattr(value, "_metadata"):  # a module state_dict's version information
            copied._metadata = value._metadata
        return copied
    if type(value) in (list, tuple):
        return type(value)(own_storage(item) for item in value)
    return value


__all__ = ["MemberState", "NotBatchable", "own_storage", "train_population"]
