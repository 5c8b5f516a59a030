"""`meta_train(cfg)`: meta-train a learned optimizer and write its run directory (docs/learned.md).

    <run_dir>/config.yaml                   the resolved meta-training config
    <run_dir>/metrics.jsonl                 one strict-JSON object per meta-iteration and per validation
    <run_dir>/summary.json                  status, per-period records, per-stage best, final selection
    <run_dir>/periods/stage_S.P.R.safetensors   the policy after each accepted period (stage, period, repeat)
    <run_dir>/checkpoints/state.pt          everything needed to continue bit for bit (atomic)
    <run_dir>/config.json, weights.safetensors  the final learned optimizer (`optim=learned optim.path=<run_dir>`)

One meta-iteration is one gradient estimate (one truncation of each carried trajectory) and one meta-optimizer
step. The checkpoint holds the policy, the meta-optimizer, the estimator's carried trajectories, the random
generator, the schedule's progress and the metrics file's offset, so a run killed at any moment (even with
SIGKILL) and started again ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as load_safetensors_file
from safetensors.torch import save as save_safetensors

from optimlab import rundir
from optimlab.atomic import atomic_write_bytes
from optimlab.config import read_yaml_mapping
from optimlab.errors import ConfigError
from optimlab.learned import strategies
from optimlab.learned.distill import build_distillation, stage_weight, teacher_sha256
from optimlab.learned.estimators import build_estimator
from optimlab.learned.metaconfig import MetaTrainConfig, from_tree, to_tree, to_yaml
from optimlab.learned.metaopt import MetaOptimizer
from optimlab.learned.package import save, weights_sha256
from optimlab.learned.perturb import Perturbation, perturbed_estimate
from optimlab.learned.policies import build_policy
from optimlab.learned.problems import build_problem, seed_mix
from optimlab.learned.unroll import LearnedOptimizerSystem, Trajectory, evaluate_meta_loss

CHECKPOINT = Path("checkpoints") / "state.pt"
PERIODS = "periods"
_STOP = {"requested": False}


def config_hash(cfg: MetaTrainConfig) -> str:
    return rundir.identity_hash(to_tree(cfg))


def default_run_dir(cfg: MetaTrainConfig) -> Path:
    return Path("runs") / "meta" / f"{cfg.policy.name}-{config_hash(cfg)}"


def request_stop(*_: Any) -> None:
    _STOP["requested"] = True


def meta_train(cfg: MetaTrainConfig, *, handle_signals: bool = False) -> dict[str, Any]:
    """Meta-train to completion (or a stop request: checkpointed, status 'interrupted'); returns the summary."""
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    cfg = dataclasses.replace(cfg, run_dir=str(run_dir))
    _check_resumable(cfg, run_dir)
    done = rundir.read_summary(run_dir)
    if done and done.get("status") == rundir.COMPLETED:
        return done
    _STOP["requested"] = False
    lock = rundir.RunLock(run_dir)
    lock.acquire()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if handle_signals else {}
    for sig in previous:
        signal.signal(sig, request_stop)
    try:
        atomic_write_bytes(run_dir / rundir.CONFIG, lambda f: f.write(to_yaml(cfg).encode()))
        return MetaTrainer(cfg, run_dir).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lock.release()


def _check_resumable(cfg: MetaTrainConfig, run_dir: Path) -> None:

    path = run_dir / rundir.CONFIG
    if not path.is_file():
        return
    try:
        old = from_tree(read_yaml_mapping(path, "the run's config"))
    except ConfigError as error:
        raise ConfigError(f"run_dir {run_dir} holds an unreadable config.yaml ({error}); use another run_dir") from None
    changes = rundir.identity_changes(to_tree(old), to_tree(cfg))
    if changes:
        raise ConfigError(
            f"run_dir {run_dir} holds a different meta-training run (differs in {', '.join(changes)}); use another run_dir"
        )


# ------------------------------------------------------------------------------------------------------
# State (de)serialisation: Trajectory objects inside the estimators' states become plain dicts.


def _pack(obj: Any) -> Any:
    if isinstance(obj, Trajectory):
        return {"__trajectory__": _pack(obj.to_dict())}
    if isinstance(obj, dict):
        return {k: _pack(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_pack(v) for v in obj]
    return obj


def _unpack(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__trajectory__" in obj:
            return Trajectory.from_dict(_unpack(obj["__trajectory__"]))
        return {k: _unpack(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v) for v in obj]
    return obj


def _new_progress() -> dict[str, Any]:
    return {
        "iteration": 0, "stage": 0, "period": 0, "repeat": 0, "trajectory": 0, "truncation": 0,
        "phase": "train", "loss_sum": 0.0, "loss_count": 0, "skipped": 0, "stage_best": {},
        "last_validation": None, "records": [], "time": 0.0, "final": None, "done": False,
    }  # fmt: skip


class MetaTrainer:
    def __init__(self, cfg: MetaTrainConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.policy = build_policy(cfg.policy.name, **cfg.policy.options)
        s, e = cfg.strategy, cfg.estimator
        self.distill = build_distillation(cfg.distill)  # None unless distill= names teachers
        self.teacher_sha256 = teacher_sha256(self.distill)  # a learned teacher's identity (its path is not)
        self.systems = [
            LearnedOptimizerSystem(
                self.policy,
                build_problem(name, cfg.batch_size, cfg.data_dir, cfg.task_options),
                s.unroll_len,
                s.scale_spread,
                e.second_order,
                s.warmup_steps,
                s.warmup_lr,
                distill=self.distill,
            )  # fmt: skip
            for name in cfg.tasks
        ]
        self.estimators = [build_estimator(e.name, system, std=e.std, pairs=e.pairs) for system in self.systems]
        self.weights = dict(self.policy.named_parameters())
        self.perturbation = Perturbation(cfg.perturb)
        m = cfg.meta_optimizer
        self.meta_opt = MetaOptimizer(self.weights, lr=m.lr, eps=m.eps, clip_ratio=m.clip_ratio, clip_eps=m.clip_eps)
        self.generator = torch.Generator().manual_seed(seed_mix(cfg.seed, 7))
        self.progress = _new_progress()
        self.est_state: Any = None
        self.last_good = self._snapshot()
        self.metrics = rundir.MetricsFile(run_dir / rundir.METRICS)
        self.loggers = _loggers(cfg, run_dir)

    # ---- checkpoints --------------------------------------------------------------------------------

    def _snapshot(self) -> dict:
        return {
            "policy": {k: v.detach().clone() for k, v in self.policy.state_dict().items()},
            "meta_opt": _clone(self.meta_opt.state_dict()),
        }

    def _restore(self, snapshot: dict) -> None:
        self.policy.load_state_dict(snapshot["policy"])
        self.meta_opt.load_state_dict(_clone(snapshot["meta_opt"]))

    def save_checkpoint(self) -> None:
        state = {
            "policy": self.policy.state_dict(),
            "meta_opt": self.meta_opt.state_dict(),
            "generator": self.generator.get_state(),
            "progress": self.progress,
            "est_state": _pack(self.est_state),
            "last_good": self.last_good,
            "metrics_offset": self.metrics.offset(),
            "teacher_sha256": self.teacher_sha256,
        }

        def write(file):
            torch.save(state, file)

        atomic_write_bytes(self.run_dir / CHECKPOINT, write)

    def load_checkpoint(self) -> int | None:
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            return None
        state = torch.load(path, weights_only=True)
        self._check_teacher(state.get("teacher_sha256"))
        self.policy.load_state_dict(state["policy"])
        self.meta_opt.load_state_dict(state["meta_opt"])
        self.generator.set_state(state["generator"])
        self.progress = state["progress"]
        self.est_state = _unpack(state["est_state"])
        self.last_good = state["last_good"]
        return int(state["metrics_offset"])

    def _check_teacher(self, started_with: str | None) -> None:
        """Refuse to continue with a learned teacher whose weights changed since the run started: the config
        names the teacher by directory only, so the same path can hold another optimizer. (Checkpoints written
        before the sha256 was recorded hold None and are not checked.)"""
        if started_with is None or started_with == self.teacher_sha256:
            return
        now = f"{self.teacher_sha256[:12]}..." if self.teacher_sha256 else "none"
        raise ConfigError(
            f"config key 'distill.teacher': {self.cfg.distill.teacher} holds weights with sha256 {now}, but run_dir "
            f"{self.run_dir} started with {started_with[:12]}...; restore that teacher or use another run_dir"
        )

    # ---- the loop -----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        offset = self.load_checkpoint()
        self.metrics.open(offset if offset is not None else 0)
        started = time.perf_counter()
        bar = _progress_bar(self.cfg, self.progress["iteration"])
        status = rundir.RUNNING
        try:
            self._write_summary(status, started)
            since_checkpoint = 0
            while not self.progress["done"]:
                if self.progress["phase"] == "train":
                    record = self.meta_iteration()
                    since_checkpoint += 1
                else:
                    record = self.end_period()
                    since_checkpoint = self.cfg.checkpoint_every  # checkpoint at every period's end
                self.metrics.write(record)
                for logger in self.loggers:
                    logger.log(record)
                if bar is not None:
                    bar.update(record)
                if since_checkpoint >= self.cfg.checkpoint_every or self.progress["done"] or _STOP["requested"]:
                    self.progress["time"] += time.perf_counter() - started
                    started = time.perf_counter()
                    self.save_checkpoint()
                    since_checkpoint = 0
                if _STOP["requested"] and not self.progress["done"]:
                    status = rundir.INTERRUPTED
                    return self._write_summary(status, started)
            status = rundir.COMPLETED
            return self._write_summary(status, started)
        except BaseException as error:
            if status == rundir.RUNNING:
                summary = self._write_summary(rundir.FAILED, started)
                summary["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
                rundir.write_json(self.run_dir / rundir.SUMMARY, summary)
            raise
        finally:
            if bar is not None:
                bar.close()
            for logger in self.loggers:
                logger.close()
            self.metrics.close()

    def _task_index(self) -> int:
        return self.progress["trajectory"] % len(self.systems)

    def meta_iteration(self) -> dict[str, Any]:
        p, s = self.progress, self.cfg.strategy
        estimator = self.estimators[self._task_index()]
        system = self.systems[self._task_index()]
        if self.distill is not None:  # the imitation weight of this curriculum stage (repeat: period)
            system.imitation_weight = stage_weight(self.cfg.distill.weights, s.name, p["stage"], p["period"])
        if self.est_state is None:
            seed = seed_mix(self.cfg.seed, p["stage"], p["period"], p["repeat"], p["trajectory"])
            self.est_state = estimator.reset(seed)
        if self.perturbation.active:  # the policy's weights perturbed for this estimate only (perturb.py)
            grads, loss, new_state = perturbed_estimate(
                self.perturbation, estimator, self.systems, self.weights, self.est_state, self.generator
            )
        else:
            grads, loss, new_state = estimator.estimate(self.weights, self.est_state, self.generator)
        record = {
            "step": p["iteration"],
            "stage": p["stage"],
            "period": p["period"],
            "repeat": p["repeat"],
            "depth": strategies.depth(s, p["stage"], p["period"]),
        }
        if self.distill is not None:  # the two terms of the (last) unroll; the period's loss is the meta part
            record.update({"meta/meta_loss": system.last_parts.get("meta"), "meta/imitation": system.last_parts.get("imitation"),
                           "meta/imitation_weight": system.imitation_weight})  # fmt: skip
            loss_for_period = system.last_parts.get("meta", loss)
        else:
            loss_for_period = loss
        if grads is None:  # the NaN guard: the unroll blew up; the policy is untouched, the trajectory restarts
            record.update({"meta/loss": loss, "meta/skipped": 1.0})
            p["skipped"] += 1
            self.est_state = None
        else:
            step = self.meta_opt.step(grads)
            record.update({"meta/loss": loss, "meta/grad_norm": step["grad_norm"], "meta/skipped": step["skipped"]})
            if step["skipped"]:
                p["skipped"] += 1
                self.est_state = None
            else:
                self.est_state = new_state
                p["loss_sum"] += loss_for_period
                p["loss_count"] += 1
        p["iteration"] += 1
        p["truncation"] += 1
        if p["truncation"] >= record["depth"] or self.est_state is None:
            p["truncation"] = 0
            p["trajectory"] += 1
            self.est_state = None
        if p["trajectory"] >= s.epochs:
            p["phase"] = "validate"
        return record

    def validate(self) -> float:
        s, p = self.cfg.strategy, self.progress
        depth = strategies.validation_depth(s, p["stage"])
        seeds = [seed_mix(s.validation_seed, i) for i in range(s.validation_trajectories)]
        for system in self.systems:  # validation measures the meta-loss alone
            system.imitation_weight = 0.0
        values = [evaluate_meta_loss(system, self.weights, seeds, depth) for system in self.systems]
        return sum(values) / len(values)

    def end_period(self) -> dict[str, Any]:
        s, p = self.cfg.strategy, self.progress
        validation = self.validate()
        train_loss = p["loss_sum"] / p["loss_count"] if p["loss_count"] else float("inf")
        name = f"stage_{p['stage']}.{p['period']}.{p['repeat']}"
        record = {
            "step": p["iteration"], "stage": p["stage"], "period": p["period"], "repeat": p["repeat"],
            "depth": strategies.depth(s, p["stage"], p["period"]), "validation_depth": strategies.validation_depth(s, p["stage"]),
            "val/meta_loss": validation, "meta/period_loss": train_loss, "meta/skipped_in_period": p["skipped"],
        }  # fmt: skip
        if strategies.should_roll_back(s, p, validation, train_loss):
            self._restore(self.last_good)
            p["repeat"] += 1
            record["action"] = "rollback"
        else:
            self._save_period(name)
            best = p["stage_best"].get(str(p["stage"]))
            if math.isfinite(validation) and (best is None or validation < best["validation"]):
                p["stage_best"][str(p["stage"])] = {
                    "validation": validation,
                    "period": p["period"],
                    "repeat": p["repeat"],
                    "file": name,
                }
            p["last_validation"] = validation
            action = strategies.next_action(s, p)
            record["action"] = action
            p["records"].append(
                {
                    k: record[k]
                    for k in (
                        "stage",
                        "period",
                        "repeat",
                        "depth",
                        "validation_depth",
                        "val/meta_loss",
                        "meta/period_loss",
                        "meta/skipped_in_period",
                    )
                }
                | {"checkpoint": name, "iteration": p["iteration"]}
            )
            if action == "continue":
                p["period"] += 1
            elif action == "advance":
                self._load_period(p["stage_best"].get(str(p["stage"]), {"file": name})["file"])
                p["stage"] += 1
                p["period"] = 0
                p["last_validation"] = None
            else:
                self._finish(name)
            p["repeat"] = 0
            self.last_good = self._snapshot()
        p.update(trajectory=0, truncation=0, loss_sum=0.0, loss_count=0, skipped=0, phase="train")
        self.est_state = None
        return record

    def _save_period(self, name: str) -> None:
        tensors = {k: v.detach().contiguous() for k, v in self.policy.state_dict().items()}
        blob = save_safetensors(tensors)
        atomic_write_bytes(self.run_dir / PERIODS / f"{name}.safetensors", lambda f: f.write(blob))

    def _load_period(self, name: str) -> None:
        self.policy.load_state_dict(load_safetensors_file(str(self.run_dir / PERIODS / f"{name}.safetensors")))

    def _finish(self, last_name: str) -> None:
        p, s = self.progress, self.cfg.strategy
        best = p["stage_best"].get(str(p["stage"]))
        if s.name == "repeat" and s.select == "last":
            best = {"file": last_name, "validation": p["last_validation"], "stage": p["stage"]}
        chosen = best["file"] if best else last_name
        self._load_period(chosen)
        save(
            self.policy, self.run_dir, warmup_steps=s.warmup_steps, warmup_lr=s.warmup_lr,
            metadata={
                "selected": chosen, "validation": best["validation"] if best else None, "tasks": list(self.cfg.tasks),
                "estimator": self.cfg.estimator.name, "strategy": s.name, "meta_train_config_hash": config_hash(self.cfg),
                **_distill_metadata(self.cfg, self.distill),
            },
        )  # fmt: skip
        p["final"] = {
            "checkpoint": chosen,
            "validation": best["validation"] if best else None,
            "sha256": weights_sha256(self.run_dir),
        }
        p["done"] = True

    def _write_summary(self, status: str, started: float) -> dict[str, Any]:
        from optimlab.train.records import git_commit, versions

        p = self.progress
        summary = {
            "status": status,
            "kind": "meta-train",
            "policy": self.cfg.policy.name,
            "tasks": list(self.cfg.tasks),
            "strategy": self.cfg.strategy.name,
            "estimator": self.cfg.estimator.name,
            "seed": self.cfg.seed,
            "config_hash": config_hash(self.cfg),
            "iterations": p["iteration"],
            "inner_steps": p["iteration"]
            * self.cfg.strategy.unroll_len
            * (2 * self.cfg.estimator.pairs if self.cfg.estimator.name != "tbptt" else 1),
            "stage": p["stage"],
            "periods": p["records"],
            "stage_best": p["stage_best"],
            "final": p["final"],
            "wall_time": round(p["time"] + (time.perf_counter() - started if status == rundir.RUNNING else 0.0), 3),
            "policy_sha256": _policy_sha256(self.policy),
            "teacher_sha256": self.teacher_sha256,
            "versions": versions(),
            "git_commit": git_commit(),
            "error": None,
        }
        rundir.write_json(self.run_dir / rundir.SUMMARY, summary)
        return summary


def _distill_metadata(cfg: MetaTrainConfig, distill) -> dict[str, Any]:
    """What the packaged optimizer was distilled from (nothing when distillation was off)."""
    if distill is None:
        return {}
    d = cfg.distill
    return {"distill": {"name": d.name, "teachers": [t.name for t in distill.teachers], "reduce": d.reduce,
                        "weights": list(d.weights), "teacher_scale": d.teacher_scale}}  # fmt: skip


def _policy_sha256(policy) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(policy.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _clone(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_clone(v) for v in tree]
    return tree.clone() if isinstance(tree, torch.Tensor) else tree


# ------------------------------------------------------------------------------------------------------
# Progress bar and optional loggers


class _Bar:
    def __init__(self, initial: int):
        from tqdm import tqdm

        self.bar = tqdm(initial=initial, unit="meta-it", dynamic_ncols=True, file=sys.stderr)

    def update(self, record: dict) -> None:
        if "meta/loss" in record:
            self.bar.update(1)
            self.bar.set_postfix(
                {"stage": record["stage"], "period": record["period"], "meta_loss": f"{record['meta/loss']:.4g}"},
                refresh=False,
            )
        else:
            self.bar.write(
                f"stage {record['stage']} period {record['period']}.{record['repeat']}: validation {record['val/meta_loss']:.4g} -> {record['action']}"
            )

    def close(self) -> None:
        self.bar.close()


def _progress_bar(cfg: MetaTrainConfig, initial: int):
    from optimlab.train.loggers import progress_enabled

    return _Bar(initial) if progress_enabled(cfg.log) else None


class _WandbLogger:
    def __init__(self, cfg: MetaTrainConfig, run_dir: Path):
        import hashlib

        try:
            import wandb
        except ImportError:
            raise ConfigError("log.wandb=true needs wandb: pip install 'optimlab[wandb]'") from None
        run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=cfg.log.wandb_project, dir=str(run_dir), mode=cfg.log.wandb_mode, id=run_id,
                              resume="allow", config=to_tree(cfg), name=run_dir.name)  # fmt: skip

    def log(self, record: dict) -> None:
        self.run.log(
            {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}, step=record["step"]
        )

    def close(self) -> None:
        self.run.finish()


def _loggers(cfg: MetaTrainConfig, run_dir: Path) -> list:
    loggers: list = []
    if cfg.log.tensorboard:
        from optimlab.train.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir))
    if cfg.log.wandb:
        loggers.append(_WandbLogger(cfg, run_dir))
    return loggers
