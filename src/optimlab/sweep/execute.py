"""Running one run: the `optimlab train` command, its environment, and the subprocess that runs it.

Every backend runs a run the same way, as a subprocess of whatever process the backend provides (a pool
thread, a Ray worker, a SLURM job), so a crash or a `kill -9` of the run takes down only that run.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from optimlab.sweep.expand import Run

# The variable that sets a run's CPU threads. torch reads OMP_NUM_THREADS when it starts; the others cover
# BLAS libraries numpy may use.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# Stands for "the Python interpreter of the process that launches the run" (a Ray worker's may differ).
PYTHON = "{python}"


def train_command(run: Run) -> list[str]:
    """The command that trains `run`: `python -m optimlab train <overrides> run_dir=<dir> log.progress=never`."""
    return [PYTHON, "-m", "optimlab", "train", *run.overrides, f"run_dir={run.run_dir}", "log.progress=never"]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_run(workers: int) -> int:
    """Cores shared equally among concurrent runs: max(1, cores // workers)."""
    return max(1, cpu_count() // max(1, workers))


def thread_env(threads: int) -> dict[str, str]:
    return {name: str(threads) for name in THREAD_VARS}


@dataclass(frozen=True)
class Launch:
    """Everything a worker needs to run one run; plain data, so it pickles for Ray and submitit."""

    key: str  # the run's key (its directory relative to the sweep folder)
    run_dir: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)  # added to the worker's environment
    log: str = ""  # the run's output is appended here ("" discards it)
    cwd: str | None = None


def execute(
    launch: Launch,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    preexec: Callable[[], None] | None = None,
) -> int:
    """Run `launch` to the end and return its exit code (negative: killed by that signal).

    If the calling process is interrupted (KeyboardInterrupt, SystemExit, e.g. a cancelled Ray task), the
    child is asked to stop with SIGTERM (it writes a checkpoint and exits 75), given time to do so, and
    killed after that.
    """
    argv = [sys.executable if a == PYTHON else a for a in launch.argv]
    env = {**os.environ, **launch.env}
    if launch.log:
        Path(launch.log).parent.mkdir(parents=True, exist_ok=True)
    with open(launch.log or os.devnull, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=launch.cwd,
            preexec_fn=preexec,
        )
        if on_start is not None:
            on_start(process)
        try:
            code = process.wait()
        except BaseException as error:  # this process is being stopped: stop the run too
            code = stop(process)
            log.write(f"=== exit code {code} (stopped: {type(error).__name__})\n".encode())
            raise
        log.write(f"=== exit code {code}\n".encode())
    return code


def stop(process: subprocess.Popen, grace: float = 60.0, sig: int = signal.SIGTERM) -> int | None:
    """Ask a run to stop (it checkpoints and exits 75); kill it if it has not within `grace` seconds."""
    if process.poll() is None:
        try:
            process.send_signal(sig)
            return process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
        except ProcessLookupError:
            pass
    return process.wait()


def signal_and_wait(process: subprocess.Popen, sig: int, grace: float = 60.0) -> None:
    """Send `sig` and wait up to `grace` seconds for the process to exit, then SIGKILL it.

    Safe inside a signal handler that interrupted `process.wait()`: it never takes Popen's internal lock
    (the interrupted wait holds it) and leaves the exit status for that wait (or `poll`) to collect.
    """
    if process.returncode is not None:
        return
    try:
        os.kill(process.pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:  # already collected
            return
        time.sleep(0.05)
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def make_launch(run: Run, command: Callable[[Run], Sequence[str]], env: dict[str, str], logs: Path) -> Launch:
    return Launch(
        key=run.key,
        run_dir=str(run.run_dir),
        argv=tuple(str(a) for a in command(run)),
        env=dict(env),
        log=str(logs / f"{run.key}.log"),
        cwd=os.getcwd(),
    )
