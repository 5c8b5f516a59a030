"""Where metrics go besides metrics.jsonl: TensorBoard, Weights & Biases, a progress bar.

Each backend is optional and imported only when enabled. A logger has `log(record)` and `close()`.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from optimlab import rundir
from optimlab.config import Config, LogConfig, identity, to_tree
from optimlab.errors import ConfigError


class TensorBoardLogger:
    """Scalars per step, and at the end the run's hyperparameters with its last validation values (the
    HPARAMS tab), so runs of a sweep line up in one table."""

    def __init__(self, run_dir: Path, cfg: Config | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("log.tensorboard=true needs tensorboard: pip install 'optimlab[tensorboard]'") from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.hparams = hparams(cfg) if cfg is not None else {}
        self.last: dict[str, float] = {}

    def log(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key not in ("step", "time") and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, record["step"])
                if key.startswith(("val/", "test/")):
                    self.last[key] = float(value)

    def close(self) -> None:
        if self.hparams:
            # run_name="." writes the hparams summary beside the scalars, not in a timestamped sub-folder
            self.writer.add_hparams(self.hparams, {f"hparam/{k}": v for k, v in self.last.items()}, run_name=".")
        self.writer.close()


def hparams(cfg: Config) -> dict[str, Any]:
    """The run's identity keys, flat, as TensorBoard's hparams plugin takes them (numbers, strings, bools)."""
    flat = rundir.flatten(identity(cfg))
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}


def wandb_group(cfg: Config, run_dir: Path) -> str:
    """`log.wandb_group`, else `<sweep>/<task>` for a sweep's run (`<root>/<sweep>/<task>/<run>`), else the task."""
    if cfg.log.wandb_group:
        return cfg.log.wandb_group
    parent = run_dir.resolve().parent
    if parent.name == cfg.task.name and parent.parent.name not in ("runs", ""):
        return f"{parent.parent.name}/{cfg.task.name}"
    return cfg.task.name


class WandbLogger:
    """Offline mode by default: works without an account; `wandb sync` uploads later."""

    def __init__(self, run_dir: Path, cfg: Config):
        try:
            import wandb
        except ImportError:
            raise ConfigError("log.wandb=true needs wandb: pip install 'optimlab[wandb]'") from None
        # The run id is derived from the run directory, so a resumed run continues the same W&B run.
        run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(
            project=cfg.log.wandb_project,
            dir=str(run_dir),
            mode=cfg.log.wandb_mode,
            id=run_id,
            resume="allow",
            config=to_tree(cfg),
            name=run_dir.name,
            entity=cfg.log.wandb_entity,
            group=wandb_group(cfg, run_dir),
            tags=[f"optim={cfg.optim.name}", f"seed={cfg.seed}", *cfg.log.wandb_tags],
        )

    def log(self, record: dict[str, Any]) -> None:
        values = {k: v for k, v in record.items() if k != "step"}
        self.run.log(values, step=record["step"])

    def close(self) -> None:
        self.run.finish()


class ProgressBar:
    def __init__(self, total: int, initial: int):
        from tqdm.auto import tqdm  # a widget in Jupyter, text on a terminal

        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.last = initial

    def log(self, record: dict[str, Any]) -> None:
        step = record["step"]
        self.bar.update(step - self.last)
        self.last = step
        shown = {k: f"{v:.4g}" for k, v in record.items() if k in ("train/loss", "val/loss", "lr")}
        if shown:
            self.bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        self.bar.close()


def progress_enabled(cfg: LogConfig) -> bool:
    if cfg.progress == "auto":
        return (sys.stderr.isatty() or in_notebook()) and not os.environ.get("CI")
    return cfg.progress == "always"


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (its stderr is no terminal, yet a bar renders there)."""
    if "IPython" not in sys.modules:  # never import IPython just to ask
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def build_loggers(cfg: Config, run_dir: Path, step: int) -> list:
    loggers: list = []
    if cfg.log.tensorboard:
        loggers.append(TensorBoardLogger(run_dir, cfg))
    if cfg.log.wandb:
        loggers.append(WandbLogger(run_dir, cfg))
    if progress_enabled(cfg.log):
        loggers.append(ProgressBar(cfg.train.steps, step))
    return loggers
