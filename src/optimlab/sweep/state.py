"""What a sweep knows about its runs, read only from their run directories, and its own record `sweep.json`.

A run's status, as the sweep sees it:

| status        | meaning                                                                  | on re-run |
|---------------|--------------------------------------------------------------------------|-----------|
| `pending`     | never started (no summary.json)                                          | launched  |
| `completed`   | summary says completed                                                   | skipped   |
| `diverged`    | summary says diverged (a result, not an error)                           | skipped   |
| `stopped`     | summary says stopped (ended early by a search on purpose: a result)      | skipped   |
| `failed`      | the trainer failed (exit 1, bad input, a crash signal, no summary)       | launched  |
| `interrupted` | stopped by a signal (exit 75, exit 130 after Ctrl-C, SIGKILL/SIGTERM/SIGINT/...) or found `running` with no process holding its lock | launched: resumes from its last checkpoint |
| `busy`        | another process holds the run directory's lock                           | left alone |

The run-directory vocabulary (file names, the statuses a summary can hold, exit codes, the lock) is
`optimlab.rundir`'s; `pending` and `busy` are the sweep's own words for a run it has not started and a run
another process holds.

`sweep.json` is written by the sweep's parent process only, atomically (a temporary file, then
`os.replace`), so a reader never sees a half-written record.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path
from typing import Any

from optimlab import rundir
from optimlab.errors import ConfigError
from optimlab.rundir import is_locked, read_summary

PENDING = "pending"  # the sweep's own view: never started
BUSY = "busy"  # the sweep's own view: another process holds the run directory's lock
STATUSES = (PENDING, *(s for s in rundir.STATUSES if s != rundir.RUNNING), BUSY)

# Signals that stop a healthy process from outside (a kill, a preemption, Ctrl-C): the run is resumable.
_STOP_SIGNALS = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2}


def scan_status(run_dir: str | Path) -> str:
    """The status of a run directory before launching it (see the module docstring)."""
    summary = read_summary(run_dir)
    if is_locked(run_dir):
        return BUSY
    if summary is None:
        return PENDING
    status = summary.get("status")
    if status in rundir.DONE or status in (rundir.FAILED, rundir.INTERRUPTED):
        return status
    return rundir.INTERRUPTED  # `running` with no process holding the lock: it was killed


def outcome(run_dir: str | Path, returncode: int | None, log_tail: str = "") -> tuple[str, str | None]:
    """(status, error) of a run after its process ended with `returncode` (negative: killed by that signal)."""
    summary = read_summary(run_dir) or {}
    status = summary.get("status")
    if status in rundir.DONE:
        return status, None
    if returncode is None:
        return rundir.FAILED, log_tail or "no exit code (the job ended without a result)"
    if returncode == rundir.EXIT_INTERRUPTED:
        return rundir.INTERRUPTED, None
    if returncode == rundir.EXIT_CTRL_C:  # a stop, not an error: the run resumes from its last checkpoint
        return rundir.INTERRUPTED, "stopped by Ctrl-C (exit 130)"
    if returncode < 0:
        sig = _signal_name(-returncode)
        if -returncode in _STOP_SIGNALS:
            return rundir.INTERRUPTED, f"killed by {sig}"
        return rundir.FAILED, f"killed by {sig}"
    if returncode == rundir.EXIT_BAD_INPUT and is_locked(run_dir):
        return BUSY, "the run directory is in use by another process"
    if returncode == rundir.EXIT_OK:
        return rundir.FAILED, f"exited 0 but {rundir.SUMMARY} says {status!r}"
    error = summary.get("error") if status == rundir.FAILED else None
    return rundir.FAILED, error or log_tail or f"exit code {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def log_tail(path: str | Path, lines: int = 1) -> str:
    """The last non-empty line(s) of a log file, for the one-line error of a failed run."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 8192))
            text = file.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])



def read_sweep_record(path: str | Path) -> dict[str, Any]:
    return rundir.read_json(path) or {}


class SweepLock:
    """An exclusive lock on `<sweep dir>/.sweep.lock`: one sweep process per sweep folder at a time.

    Runs are protected by the trainer's own lock; this one keeps two sweep processes from both writing
    sweep.json and both launching the same runs.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".sweep.lock"
        self._fd: int | None = None
        self._pid_file: Path | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in rundir.NO_FLOCK:
                return False
            # no flock on this filesystem (Lustre: ENOSYS): the same exclusive lock file as the trainer's
            rundir.warn_no_flock(self.path.parent, error)
            try:
                self._pid_file = rundir.acquire_pid_file(self.path.with_name(".sweep.lock.pid"))
            except ConfigError:
                return False
            return True
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._pid_file is not None:
            self._pid_file.unlink(missing_ok=True)
            self._pid_file = None


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
