"""The trainer's side of the run directory: checks before a run starts, and the summary it keeps current.

The files and their vocabulary are `optimlab.rundir`'s; this module decides, for one configuration,
whether a run directory may be resumed, whether it is already finished, and what summary.json says.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn

from optimlab import rundir
from optimlab.config import Config, config_hash, from_tree, read_yaml_mapping, to_tree, to_yaml
from optimlab.errors import ConfigError, RunFailed
from optimlab.tasks import Task
from optimlab.train import records
from optimlab.train.state import Progress
from optimlab.train.threads import with_threads


class RunRecord:
    """One run directory, as the trainer of `cfg` writes it (only the main rank writes)."""

    def __init__(self, cfg: Config, writes: bool = True):
        self.cfg = cfg
        self.path = Path(cfg.run_dir)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"config key 'run_dir': {self.path} exists and is not a directory")
        self.writes = writes
        self.started = time.perf_counter()
        self.checkpoints = self.path / rundir.CHECKPOINTS

    def check_resumable(self) -> None:
        """A run directory holding a different run is an error, not something to continue or overwrite."""
        saved_path = self.path / rundir.CONFIG
        if not saved_path.exists():
            return
        try:
            saved = to_tree(from_tree(read_yaml_mapping(saved_path, "the run's config")))
        except ConfigError as error:
            raise ConfigError(f"{saved_path} cannot be read ({error}); use train.resume=false to start over") from None
        new = to_tree(self.cfg)
        changed = rundir.identity_changes(saved, new)
        if changed:
            old_flat, new_flat = rundir.flatten(rundir.identity(saved)), rundir.flatten(rundir.identity(new))
            detail = ", ".join(f"{k}: {old_flat.get(k)!r} -> {new_flat.get(k)!r}" for k in changed[:5])
            raise ConfigError(
                f"{self.path} holds a run with a different config ({detail}); "
                "pass train.resume=false to start over or choose another run_dir"
            )

    def finished(self) -> dict | None:
        """The summary of a run that already finished what `cfg` asks for (re-running it does nothing)."""
        summary = rundir.read_summary(self.path)
        if summary and summary.get("status") in rundir.DONE and summary.get("steps") == self.cfg.train.steps:
            return summary
        return None

    def start_over(self) -> None:
        """Clear what an earlier attempt left (metrics, summary, checkpoints) before a fresh start."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in (rundir.METRICS, rundir.SUMMARY):
            (self.path / name).unlink(missing_ok=True)
        for old in self.checkpoints.glob("*.pt") if self.checkpoints.is_dir() else []:
            old.unlink()

    def write_config(self) -> None:
        if self.writes:
            # With the thread count the run computes with: re-running config.yaml reproduces it bit for bit.
            (self.path / rundir.CONFIG).write_text(to_yaml(with_threads(self.cfg)))

    def start_clock(self) -> None:
        """Training time counts from here (set-up, data generation and imports are not training)."""
        self.started = time.perf_counter()

    def elapsed(self, progress: Progress) -> float:
        return progress.time + time.perf_counter() - self.started

    def summary(self, status: str, progress: Progress, task: Task, model: nn.Module, device: Any) -> dict:
        cfg = self.cfg
        final: dict[str, Any] = {}
        if progress.last_train_loss is not None:
            final["train/loss"] = progress.last_train_loss
        final.update(progress.last_eval)
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
            "configuration_hash": config_hash(cfg, with_seed=False),
            "main_metric": task.main_metric,
            "higher_is_better": task.higher_is_better,
            "final": final,
            "best": progress.best,
            "diverged_step": progress.diverged_step,
            "error": None,
            "wall_time": round(self.elapsed(progress), 4),
            "params_sha256": records.params_sha256(model),
            "versions": records.versions(),
            "device": str(device),
            "deterministic": cfg.train.deterministic,
            "git_commit": records.git_commit(),
        }

    def write_summary(self, summary: dict) -> dict:
        if self.writes:
            rundir.write_json(self.path / rundir.SUMMARY, summary)
        return summary

    def write_failure(self, status: str, error: BaseException, progress: Progress, task: Task, model, device) -> None:
        """Record how the run ended; never raises (it runs while another error is on its way up)."""
        message = str(error) if isinstance(error, RunFailed) else f"{type(error).__name__}: {error}"
        try:
            summary = self.summary(status, progress, task, model, device)
            summary["error"] = message.splitlines()[0] if message else type(error).__name__
            self.write_summary(summary)
        except Exception:  # noqa: BLE001 - the disk may be full or read-only: the error itself says so
            pass
