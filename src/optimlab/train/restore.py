"""`optimlab train --restore CHECKPOINT [key=value ...]`: a new run that continues from any checkpoint file.

The config is the checkpoint's own (optimlab stores it in every checkpoint), or else the `config.yaml` of
the run directory the file sits in (`<run_dir>/checkpoints/step-N.pt`); overrides apply on top. The new run
gets its own directory (`run_dir=...`, or the default one named by its config hash with `-from-step<N>`
appended), which is seeded with a copy of the checkpoint and of the source's metrics up to it; training
then resumes there with the full state: weights, optimizer, schedule, sampler position, RNG states, hook
state and step counter. Re-running the same command resumes the new directory, like any run.

Optimizer hyperparameters given as overrides (e.g. `optim.lr=0.01`) replace the saved ones in the
optimizer's parameter groups (and the schedule's base learning rates), so they take effect; with a
different optimizer (`optim=...`) its state starts fresh, as it cannot be carried over.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any

from optimlab import rundir
from optimlab.config import Config, default_run_dir, load_config, read_yaml_mapping
from optimlab.errors import ConfigError
from optimlab.train.checkpoint import CheckpointError, list_checkpoints, read_checkpoint, save_checkpoint


def read_source(path: Path) -> dict[str, Any]:
    """The checkpoint at `path`, checked against its sha256 file when it has one."""
    if not path.is_file():
        raise ConfigError(f"--restore: checkpoint not found: {path}")
    try:
        return read_checkpoint(path)
    except CheckpointError as error:
        raise ConfigError(f"--restore: checkpoint {path} {error}") from None


def saved_config(path: Path, checkpoint: dict[str, Any]) -> dict:
    """The checkpoint's config tree, or its run directory's config.yaml."""
    if isinstance(checkpoint.get("config"), dict):
        return checkpoint["config"]
    config_file = path.parent.parent / rundir.CONFIG
    if config_file.is_file():
        return read_yaml_mapping(config_file, "the checkpoint's run config")
    raise ConfigError(f"--restore: {path} holds no config and {config_file} does not exist")


def prepare_restore(checkpoint_path: str | Path, overrides: list[str]) -> Config:
    """The restored run's config, with its new run directory seeded from the checkpoint."""
    path = Path(checkpoint_path).expanduser().resolve()
    checkpoint = read_source(path)
    if not isinstance(checkpoint.get("progress"), dict) or "model" not in checkpoint:
        raise ConfigError(
            f"--restore: {path} is not an optimlab checkpoint (use train.init_from=PATH for weights only)"
        )
    tree = {k: v for k, v in saved_config(path, checkpoint).items() if k != "run_dir"}
    cfg = load_config(overrides, tree)
    step = int(checkpoint["progress"]["step"])
    if cfg.run_dir is None:
        base = default_run_dir(cfg)
        cfg = dataclasses.replace(cfg, run_dir=str(base.parent / f"{base.name}-from-step{step}"))
    if not cfg.train.resume:  # the new directory is trained by resuming from the copied checkpoint
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume=True))
    target = Path(cfg.run_dir)
    if target.resolve() == path.parent.parent:
        raise ConfigError(f"--restore: run_dir {target} is the checkpoint's own run directory; choose another")
    if list_checkpoints(target / rundir.CHECKPOINTS):
        print(f"optimlab: {target} already holds a restored run; resuming it", file=sys.stderr)
        return cfg
    if (target / rundir.CONFIG).exists():
        raise ConfigError(f"--restore: run_dir {target} already holds a run; choose another")
    checkpoint = _apply_overrides(checkpoint, tree, cfg)
    checkpoint["metrics_offset"] = _copy_metrics(
        path.parent.parent / rundir.METRICS, target, checkpoint.get("metrics_offset", 0)
    )
    (target / rundir.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    save_checkpoint(target / rundir.CHECKPOINTS, step, checkpoint, keep=1)
    print(f"optimlab: restoring {path} (step {step}) into {target}", file=sys.stderr)
    return cfg


def _apply_overrides(checkpoint: dict[str, Any], tree: dict, cfg: Config) -> dict[str, Any]:
    old_optim = tree.get("optim", {}) if isinstance(tree.get("optim"), dict) else {"name": tree.get("optim")}
    if old_optim.get("name", cfg.optim.name) != cfg.optim.name:
        print(f"optimlab: --restore: optimizer changed to {cfg.optim.name}; its state starts fresh", file=sys.stderr)
        checkpoint.pop("optimizer", None)
        return checkpoint
    groups = checkpoint.get("optimizer", {}).get("param_groups", [])
    for key, value in cfg.optim.kwargs.items():
        if key in old_optim and old_optim[key] != value:
            for group in groups:
                if key in group:
                    group[key] = value
                    if key == "lr" and "initial_lr" in group:
                        group["initial_lr"] = value
            if key == "lr" and isinstance(checkpoint.get("scheduler"), dict) and "base_lrs" in checkpoint["scheduler"]:
                checkpoint["scheduler"]["base_lrs"] = [value] * len(checkpoint["scheduler"]["base_lrs"])
    return checkpoint


def _copy_metrics(source: Path, target: Path, offset: int) -> int:
    """Copy the source's metrics up to the checkpoint's offset; the offset in the copy (0 without source)."""
    target.mkdir(parents=True, exist_ok=True)
    if not source.is_file() or source.stat().st_size < offset:
        return 0
    with open(source, "rb") as src, open(target / rundir.METRICS, "wb") as dst:
        shutil.copyfileobj(_Limited(src, offset), dst)
    return offset


class _Limited:
    """The first `limit` bytes of a binary file, for shutil.copyfileobj."""

    def __init__(self, file, limit: int):
        self.file, self.left = file, limit

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.file.read(size)
        self.left -= len(data)
        return data
