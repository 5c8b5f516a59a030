"""The Python entry points a notebook uses: `train(cfg)` and `load_run(run_dir)`.

    from optimlab.config import Config, OptimConfig, TrainConfig
    from optimlab.train import train, load_run

    summary = train(Config(optim=OptimConfig("sgd", {"lr": 0.1}), train=TrainConfig(steps=500)))
    run = load_run(summary["run_dir"])       # task, model and optimizer at the last checkpoint
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from optimlab import rundir
from optimlab.config import Config, from_tree, normalize, read_yaml_mapping
from optimlab.errors import ConfigError
from optimlab.tasks import Task
from optimlab.train import loop
from optimlab.train.checkpoint import CheckpointError, list_checkpoints, read_checkpoint
from optimlab.train.distributed import World


def train(cfg: Config, *, handle_signals: bool = False) -> dict[str, Any]:
    """Train one run to completion, divergence or a stop request; returns its summary.

    A `Config` built directly in Python is first normalised exactly as the command line normalises one
    (optimizer and task defaults filled in, every key validated), so its config.yaml, its hashes and its
    place in a report are those `optimlab train` gives for the same settings.
    """
    return loop.train(normalize(cfg), handle_signals=handle_signals)


@dataclasses.dataclass
class LoadedRun:
    """A run directory's trained state, restored from its newest usable checkpoint."""

    cfg: Config
    task: Task
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: int  # the step the checkpoint was written at
    checkpoint: Path
    summary: dict[str, Any] | None  # summary.json, when the run wrote one


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """The task, model and optimizer of `run_dir`, restored from its newest readable checkpoint.

    The model is in eval mode on `device`; the optimizer holds its state at that step (continue training
    with it, or inspect its moments). A run without a usable checkpoint is a ConfigError.
    """
    from optimlab.train.run import build_run

    run_dir = Path(run_dir)
    cfg = from_tree(read_yaml_mapping(run_dir / rundir.CONFIG, "run config"))
    paths = list_checkpoints(run_dir / rundir.CHECKPOINTS)
    for path in reversed(paths):
        try:
            checkpoint = read_checkpoint(path)
        except CheckpointError:
            continue
        run = build_run(cfg, torch.device(device), World())
        run.model.load_state_dict(checkpoint["model"])
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        run.model.eval()
        step = int((checkpoint.get("progress") or {}).get("step", 0))
        return LoadedRun(cfg, run.task, run.model, run.optimizer, step, path, rundir.read_summary(run_dir))
    raise ConfigError(f"run directory {run_dir} has no readable checkpoint")
