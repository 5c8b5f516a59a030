"""Atomic, self-verifying checkpoints that load with `torch.load(weights_only=True)`.

A checkpoint `step-<N>.pt` is a dict of tensors, numbers, strings, lists and dicts only, written to a
temporary file in the same folder, fsynced and renamed, so a kill at any moment leaves either the old file or
the new one. Beside it, `step-<N>.pt.sha256` holds the sha256 of its bytes, written first; loading checks it,
so a file damaged after it was written (a bad disk, a stray write) is detected instead of training on from
wrong weights.

Resuming tries the newest checkpoint first and falls back to older ones, with one warning line each, when a
file is unreadable, does not match its checksum, or does not fit the run (a different structure). When no
checkpoint is usable the run starts over and the bad files are kept aside, renamed `*.unusable`.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from optimlab.atomic import atomic_write_bytes

_NAME = re.compile(r"^step-(\d+)\.pt$")
_CHECKSUM_SUFFIX = ".sha256"
_ASIDE_SUFFIX = ".unusable"


class CheckpointError(Exception):
    """A checkpoint file that cannot be used: unreadable, damaged, or of another run's structure."""


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    return write_checkpoint(folder, step, serialize_checkpoint(state), keep)


def serialize_checkpoint(state: dict[str, Any]) -> memoryview:
    """The bytes of a checkpoint of `state`: a copy, so training may change the tensors once this returns."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer()


def write_checkpoint(folder: Path, step: int, payload: bytes | memoryview, keep: int) -> Path:
    """Write `step-<step>.pt` (its checksum first) and drop all but the newest `keep` checkpoints."""
    path = folder / f"step-{step}.pt"
    digest = hashlib.sha256(payload).hexdigest().encode()
    atomic_write_bytes(_checksum_path(path), lambda file: file.write(digest))
    atomic_write_bytes(path, lambda file: file.write(payload))
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
        _checksum_path(old).unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load one checkpoint, verifying its checksum when it has one (checkpoints of older versions do not)."""
    try:
        payload = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"is unreadable ({error.strerror or error})") from None
    checksum = _checksum_path(path)
    if checksum.exists() and hashlib.sha256(payload).hexdigest() != checksum.read_text().strip():
        raise CheckpointError("does not match its checksum (damaged after it was written)")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or corrupted file: any unpickling error
        raise CheckpointError(f"is unreadable ({_first_line(error)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"is unreadable (holds a {type(state).__name__}, not a checkpoint)")
    return state


def resume_latest(folder: Path, load: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
    """Pass the newest usable checkpoint to `load` and return it; None (starting over) when none is usable.

    `load` raising means the checkpoint does not fit the run; it must leave the run as it was (see
    `RunState.load_state_dict`).
    """
    paths = list_checkpoints(folder)
    for path in reversed(paths):
        try:
            checkpoint = read_checkpoint(path)
            try:
                load(checkpoint)
            except Exception as error:
                raise CheckpointError(f"does not fit this run ({type(error).__name__}: {_first_line(error)})") from None
            return checkpoint
        except CheckpointError as error:
            _warn(f"checkpoint {path} {error}; trying an older one")
    if paths:
        for path in paths:
            for file in (path, _checksum_path(path)):
                if file.exists():
                    file.rename(file.with_name(file.name + _ASIDE_SUFFIX))
        _warn(f"no usable checkpoint: starting over (the bad files are kept in {folder} as *{_ASIDE_SUFFIX})")
    return None


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + _CHECKSUM_SUFFIX)


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def _warn(message: str) -> None:
    print(f"optimlab: warning: {message}", file=sys.stderr)
