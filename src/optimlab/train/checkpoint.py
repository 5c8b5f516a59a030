"""Atomic checkpoints that load with `torch.load(weights_only=True)`, and the RNG state they carry.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only. It is written to a temporary file
in the same folder, fsynced and renamed, so a kill at any moment leaves either the old file or the new one.
Loading tries the newest checkpoint first and falls back to older ones with a warning when a file is
unreadable.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
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


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states in weights_only-loadable types."""
    version, mt_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
