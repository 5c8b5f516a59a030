"""The run-directory contract: file names, statuses, exit codes, JSON records, the lock and run identity.

A run directory is what `optimlab train` writes and what sweeps and reports read (docs/run-directory.md):

    <run_dir>/config.yaml      the fully resolved configuration
    <run_dir>/metrics.jsonl    one JSON object per logged step
    <run_dir>/summary.json     status, steps, final and best values, hashes, versions
    <run_dir>/checkpoints/     step-<N>.pt, written atomically
    <run_dir>/.lock            held (flock) by the one process training the run
    <run_dir>/.lock.pid        the lock instead, where the filesystem has no flock (`host pid`)

This module is the only place that defines that vocabulary; it imports no torch, so sweep and report code
that only reads run directories stays light.
"""

from __future__ import annotations

import copy
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from optimlab.atomic import atomic_write_bytes
from optimlab.errors import ConfigError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"

# Statuses a summary.json can hold.
RUNNING = "running"
COMPLETED = "completed"
DIVERGED = "diverged"
FAILED = "failed"
INTERRUPTED = "interrupted"  # stopped by a signal after a checkpoint: run again to resume
STOPPED = "stopped"  # ended early on purpose (a search's early stopping): a result, not an error
STATUSES = (RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED, STOPPED)
DONE = (COMPLETED, DIVERGED, STOPPED)  # finished: re-running does nothing
HAS_RESULT = (COMPLETED, DIVERGED)  # their final numbers enter statistics (diverged as the worst)

# Exit codes of `optimlab train`, `sweep` and `compare`.
EXIT_OK = 0
EXIT_FAILED = 1  # a run failed (or, for a sweep, some runs did)
EXIT_BAD_INPUT = 2  # invalid input: one line on stderr, nothing written
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: checkpointed and stopped on a signal; run again to resume
EXIT_CTRL_C = 130  # 128 + SIGINT: Ctrl-C stopped the command where it could not checkpoint (e.g. start-up)

# Config keys that do not change what a run computes: left out of its identity.
# Instruments only observe (a run with them ends bit-identical to one without), so they are not identity.
# train.threads is recorded so that a run can be reproduced, but it is where the run ran, not what it computes.
NOT_IDENTITY = (
    "run_dir", "log", "instruments", "train.resume", "train.device", "train.log_every", "task.data_dir",
    "train.threads",
)
# Config keys a resumed run may change (to extend it, or to checkpoint differently).
RESUMABLE_CHANGES = ("train.steps", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints")


# --------------------------------------------------------------------------------------------------------
# Identity


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 0.1}} -> {'optim.lr': 0.1}; an empty mapping stays a value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def identity(tree: dict[str, Any], *, with_seed: bool = True) -> dict[str, Any]:
    """A config tree (config.yaml's contents) without the keys that do not change what the run computes.

    Groups added after runs were written are left out while they hold their "off" choice, so adding a
    group never changes the hash of an existing run directory.
    """
    tree = copy.deepcopy(tree)
    for key in NOT_IDENTITY + (() if with_seed else ("seed",)):
        group, _, name = key.partition(".")
        if not name:
            tree.pop(group, None)
        elif isinstance(tree.get(group), dict):
            tree[group].pop(name, None)
    for group, off in OPTIONAL_GROUPS.items():
        node = tree.get(group)
        if node is None or (isinstance(node, dict) and node.get("name") == off):
            tree.pop(group, None)
    for key, default in OPTIONAL_KEYS.items():
        group, _, name = key.partition(".")
        if isinstance(tree.get(group), dict) and tree[group].get(name, default) == default:
            tree[group].pop(name, None)
    return tree


# Config groups that are not part of a run's identity while their `name` is the "off" choice given here.
OPTIONAL_GROUPS = {"direction": "sgd", "precond": "none", "perturb": "none", "privacy": "none", "distill": "none"}
# Keys added after runs were written: not part of a run's identity while they hold this default value.
OPTIONAL_KEYS = {"train.sampler": "auto", "train.sampler_floor": 0.1, "train.init_from": None, "train.deterministic": False,
                 "task.pools": None}


def identity_hash(tree: dict[str, Any], *, with_seed: bool = True) -> str:
    """A short stable hash of `identity(tree)`: equal hashes mean the same computation."""
    blob = json.dumps(identity(tree, with_seed=with_seed), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def identity_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The identity keys on which two config trees differ, beyond those a resumed run may change."""
    a, b = flatten(identity(old)), flatten(identity(new))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES)


# --------------------------------------------------------------------------------------------------------
# Records


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` atomically as indented strict JSON (non-finite floats become null)."""
    blob = (json.dumps(strict(data), indent=2, allow_nan=False) + "\n").encode()
    atomic_write_bytes(Path(path), lambda file: file.write(blob))


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    return read_json(Path(run_dir) / SUMMARY)


def strict(value: Any) -> Any:
    """`value` made strict-JSON-encodable: NaN and infinities as null, tensors and numpy scalars as numbers."""
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if hasattr(value, "tolist"):  # tensors and numpy values, without importing either
        return strict(value.tolist())
    return str(value)


class MetricsFile:
    """Appends one strict-JSON object per line; `open(offset)` rewinds it to a checkpoint's byte offset."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = None

    def open(self, offset: int | None) -> None:
        self.path.touch()
        if offset is not None:
            os.truncate(self.path, offset)
        self._file = open(self.path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(strict(record), allow_nan=False) + "\n")
        self._file.flush()

    def offset(self) -> int:
        return self._file.tell() if self._file is not None else 0

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # a write already failed (full disk) and raised; closing must not raise again
                pass
            self._file = None


# --------------------------------------------------------------------------------------------------------
# The lock


class RunLock:
    """An exclusive flock on `<run_dir>/.lock`: one training process per run directory.

    Where the filesystem has no flock (Lustre mounted without it answers ENOSYS; some NFS setups ENOLCK or
    EOPNOTSUPP), a warning is printed once and the lock is the exclusive creation of `<run_dir>/.lock.pid`
    (O_CREAT | O_EXCL, which such filesystems do provide) holding `host pid`; a file left by a process that
    died on this host is recognised as stale and taken over. One left by another host cannot be checked:
    the run is reported in use, and the message names the file to delete.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self._file = None
        self._pid_file: Path | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a")
        except OSError as error:
            raise ConfigError(f"run directory {self.path.parent} cannot be created: {error.strerror}") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            self._file = None
            raise ConfigError(f"run directory {self.path.parent} is in use by another process") from None
        except OSError as error:
            if error.errno not in NO_FLOCK:
                raise
            self._file.close()
            self._file = None
            warn_no_flock(self.path.parent, error)
            self._pid_file = acquire_pid_file(self.path.parent / PID_LOCK)

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._pid_file is not None:
            self._pid_file.unlink(missing_ok=True)
            self._pid_file = None


PID_LOCK = ".lock.pid"  # the lock where flock is missing: `host pid` of the holder
NO_FLOCK = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)  # errnos of filesystems without flock
_WARNED = {"no_flock": False}


def warn_no_flock(folder: Path, error: OSError) -> None:
    if not _WARNED["no_flock"]:
        _WARNED["no_flock"] = True
        print(f"optimlab: warning: the filesystem of {folder} has no flock ({os.strerror(error.errno)}); "
              f"using an exclusive lock file ({PID_LOCK}) instead", file=sys.stderr)


def _holder(path: Path) -> tuple[str, int] | None:
    """(host, pid) written in a pid lock file, or None when it is unreadable or malformed."""
    try:
        host, pid = path.read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def pid_file_held(path: Path) -> bool:
    """Whether a pid lock file names a live holder (on another host: assumed alive, it cannot be checked)."""
    if not path.exists():
        return False
    holder = _holder(path)
    if holder is None:
        return True  # being written right now, or damaged: not ours to judge
    host, pid = holder
    return host != socket.gethostname() or _alive(pid)


def acquire_pid_file(path: Path) -> Path:
    """Create `path` exclusively with `host pid`; take over a stale one left by a dead process on this host."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and holder[0] == socket.gethostname() and not _alive(holder[1]):
                path.unlink(missing_ok=True)  # stale: its process died without releasing it
                continue
            who = f" (host {holder[0]}, pid {holder[1]})" if holder else ""
            raise ConfigError(f"run directory {path.parent} is in use by another process{who}; "
                              f"if it is not, delete {path}") from None
        with os.fdopen(fd, "w") as file:
            file.write(f"{socket.gethostname()} {os.getpid()}\n")
        return path
    raise ConfigError(f"run directory {path.parent} is in use by another process")


def is_locked(run_dir: str | Path) -> bool:
    """Whether a process holds the trainer's lock on `<run_dir>/.lock` (or its lock file, without flock)."""
    if pid_file_held(Path(run_dir) / PID_LOCK):
        return True
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return True
        if error.errno in NO_FLOCK:
            return False  # no flock here: the pid file above is the lock
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
