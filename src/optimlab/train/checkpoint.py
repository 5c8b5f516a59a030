"""Atomic checkpoints that load with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only. It is written to a temporary file
in the same folder, fsynced and renamed, so a kill at any moment leaves either the old file or the new one.
Loading tries the newest checkpoint first and falls back to older ones with a warning when a file is
unreadable.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import torch

from optimlab.atomic import atomic_write_bytes

_NAME = re.compile(r"^step-(\d+)\.pt$")


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    path = folder / f"step-{step}.pt"
    atomic_write_bytes(path, lambda file: torch.save(state, file))
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_latest_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint; unreadable ones are reported and skipped."""
    for path in reversed(list_checkpoints(folder)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated or corrupted file: any unpickling error
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"optimlab: warning: checkpoint {path} is unreadable ({reason}); trying an older one", file=sys.stderr)
    return None
