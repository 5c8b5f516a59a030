"""The run directory's files: config.yaml, metrics.jsonl, summary.json, and the lock (docs/run-directory.md)."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
from torch import nn

import optimlab
from optimlab.errors import ConfigError
from optimlab.atomic import atomic_write_bytes


class RunLock:
    """An exclusive fcntl lock on `<run_dir>/.lock`: one training process per run directory."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self._file = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            self._file = None
            raise ConfigError(f"run directory {self.path.parent} is in use by another process") from None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class MetricsFile:
    """Appends one JSON object per line; `truncate` rewinds it to a checkpoint's byte offset on resume."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None

    def open(self, offset: int | None) -> None:
        self.path.touch()
        if offset is not None:
            os.truncate(self.path, offset)
        self._file = open(self.path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, default=_plain) + "\n")
        self._file.flush()

    def offset(self) -> int:
        return self._file.tell() if self._file is not None else 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_json(path: Path, data: dict[str, Any]) -> None:
    blob = (json.dumps(data, indent=2, default=_plain) + "\n").encode()
    atomic_write_bytes(path, lambda file: file.write(blob))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _plain(value: Any) -> Any:
    """JSON for what json cannot encode itself: tensors as numbers or lists, anything else as its string."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return str(value)


def params_sha256(model: nn.Module) -> str:
    """sha256 of the parameters' raw bytes, in name order: equal hashes mean bit-identical parameters."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    return {"optimlab": optimlab.__version__, "torch": torch.__version__, "python": platform.python_version()}


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the optimlab checkout, when it runs from one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
