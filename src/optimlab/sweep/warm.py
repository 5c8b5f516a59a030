"""Warm workers: runs forked from a server process that has imported torch and optimlab once.

A fresh `python -m optimlab train` pays about 3.5 s before its first step (importing torch, torch's
compiler stack that torch.optim's constructors import, optimlab); a run of a small task may take less
than that. Here a fork server (`multiprocessing`'s "forkserver" context) imports all of that once, and
every run is a fork of it: a new process that starts with the modules loaded and runs
`optimlab train ARGS` exactly as the command line would (`optimlab.cli.main`).

Why a fork per run and not one long-lived interpreter running run after run: a fork starts from the
server's pristine state, so nothing a run does (seeding the global generators, `torch.set_num_threads`,
deterministic flags, the default dtype, plugins registered through OPTIMLAB_PLUGINS, modules it imports)
can leak into the next run; a run that crashes or is killed takes only its own process with it; and the
run's process handles SIGTERM / SIGINT with the trainer's own handlers (checkpoint, exit 75). The server
never computes with torch, so its OpenMP pool is never started and forking it is safe; each run sets its
intra-op thread count from its OMP_NUM_THREADS (torch read that variable once, in the server).

The server ignores SIGTERM (a SIGTERM to the sweep's process group reaches the runs, which checkpoint, and
not the server that reports their exit codes) and exits with the sweep process. If it is killed anyway
(kill -9), runs already forked go on as orphans and are waited for, with an unknown exit code (their
summary still says how they ended); the next run starts a new server
(`multiprocessing.forkserver.ensure_running`).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from optimlab.sweep.execute import PYTHON, THREAD_VARS, Launch, thread_env

# Imported once by the fork server: everything a training run imports before its first step.
PRELOAD = ["optimlab.sweep.warm_server"]

# The exit code multiprocessing reports for a run whose fork server died before reporting it (the trainer
# itself exits 0, 1, 2, 75 or 130).
_SERVER_LOST = 255


def is_train_command(argv: tuple[str, ...]) -> bool:
    """Whether `argv` is `{python} -m optimlab train ...`, which a warm worker can run in-process."""
    return len(argv) >= 4 and argv[0] == PYTHON and argv[1:4] == ("-m", "optimlab", "train")


class WarmProcess:
    """A run forked from the server, with the part of `subprocess.Popen`'s interface the backend uses."""

    def __init__(self, process: multiprocessing.process.BaseProcess):
        self._process = process
        self.pid = process.pid
        self.returncode: int | None = None
        self._orphan = False

    @property
    def orphaned(self) -> bool:
        """Whether the fork server died while this run ran (then its exit code is unknown)."""
        return self._orphan

    def poll(self) -> int | None:
        if self.returncode is None and not self._orphan:
            code = self._process.exitcode
            if code == _SERVER_LOST:  # the server died; the run may still be going
                self._orphan = True
            elif code is not None:
                self.returncode = code
        if self._orphan and not _alive(self.pid):
            self.returncode = _SERVER_LOST
        return self.returncode

    def wait(self, interval: float = 0.2) -> int:
        self._process.join()
        while self.poll() is None:  # an orphan: not our child, so poll until it is gone
            time.sleep(interval)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purposes: it has exited, only its status is not collected yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class ForkServer:
    """The fork server shared by every warm run of this process (multiprocessing keeps one per process)."""

    def __init__(self) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self._lock = threading.Lock()  # the environment below is this process's, shared by the pool threads

    def start(self, launch: Launch) -> WarmProcess:
        """Fork a run of `launch` (whose argv is a train command) from the server."""
        from optimlab.sweep.warm_child import run_launch

        # A server started now gets the runs' thread variables: numpy's BLAS pools size themselves at import.
        with self._lock, _server_environment(launch.env):
            environ = {**os.environ, **launch.env}  # what a fresh subprocess of the run would get
            process = self.context.Process(target=run_launch, args=(launch, environ), name=launch.key)
            process.start()
        return WarmProcess(process)


@contextmanager
def _server_environment(env: dict[str, str]):
    """While the fork server may be started, this process's environment holds the runs' thread variables."""
    saved = {name: os.environ.get(name) for name in THREAD_VARS}
    os.environ.update({name: env[name] for name in THREAD_VARS if name in env})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_fork_server(threads: int) -> None:
    """Start the warm workers' fork server now rather than at the first run, so that
    its imports (torch, torch's compiler stack, optimlab: seconds) run on one core while this process
    imports torch and validates every run's config on the other (`optimlab compare` and `optimlab sweep` with
    the local and population backends call it first). The server is started with the runs' thread
    variables, as a server started by the first run would be; later sweeps of this process reuse it."""
    ForkServer()  # sets the server's preloaded modules
    with _server_environment(thread_env(threads)):
        multiprocessing.forkserver.ensure_running()  # spawns the server and returns; it imports on its own


def log_header(launch: Launch) -> str:
    import shlex

    argv = [sys.executable if a == PYTHON else a for a in launch.argv]
    return f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} (warm worker) {shlex.join(argv)}\n"


def execute_warm(server: ForkServer, launch: Launch, on_start) -> tuple[int | None, str | None]:
    """Run `launch` as a fork of `server` to the end: (exit code, error), like `execute` for a subprocess.

    The exit code is None, with an error, only when the fork server was killed while the run ran (its own
    exit status then reaches no one); the run's summary still says how it ended.
    """
    if launch.log:
        Path(launch.log).parent.mkdir(parents=True, exist_ok=True)
    process = server.start(launch)
    on_start(process)
    code = process.wait()
    lost = process.orphaned
    if launch.log:
        with open(launch.log, "ab") as log:
            log.write(f"=== exit code {'unknown (fork server killed)' if lost else code}\n".encode())
    if lost:
        return None, "the warm workers' fork server was killed while the run ran; its exit code is unknown"
    return code, None
