"""The local backend: N worker slots on this machine, each running one run's process at a time.

Threads only wait on the runs' processes, so they cost nothing; the runs themselves are separate processes.
No service to start. With `warm=True` (the default, backend `local`), a training run is forked from a
server that has imported torch and optimlab once (optimlab.sweep.warm), which saves each run seconds of
start-up; with `warm=False` (backend `fresh`), and for any command that is not `optimlab train`, each run
is a fresh `python` subprocess.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from optimlab.sweep.execute import Launch, execute
from optimlab.sweep.warm import ForkServer, WarmProcess, execute_warm, is_train_command

OnDone = Callable[[Launch, "int | None", "str | None"], None]
More = Callable[[], "list[Launch]"]


class LocalBackend:
    grows = True  # `run` takes `more`: runs added while the sweep runs

    def __init__(self, workers: int = 1, grace: float = 60.0, warm: bool = True):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.grace = grace  # seconds a run gets to checkpoint after SIGTERM before it is killed
        self.warm = warm
        self.name = "local" if warm else "fresh"
        self._server = ForkServer() if warm else None

    def run(self, launches: list[Launch], on_done: OnDone, more: More | None = None) -> None:
        """Run every launch, calling `on_done(launch, exit code, error)` as each ends (from a pool thread).
        After runs end (and their `on_done` returned), `more()` may give launches to run as well.

        On KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one by the sweep), running runs get SIGTERM,
        which makes the trainer checkpoint and exit 75; runs not started yet are not started.
        """
        live: dict[str, subprocess.Popen | WarmProcess] = {}
        lock = threading.Lock()
        stopping = threading.Event()

        def started(key: str, process: subprocess.Popen | WarmProcess) -> None:
            with lock:
                live[key] = process
                if stopping.is_set():
                    process.send_signal(signal.SIGTERM)

        def work(launch: Launch) -> None:
            if stopping.is_set():
                return
            error = None
            try:
                if self._server is not None and is_train_command(launch.argv):
                    code, error = execute_warm(self._server, launch, lambda p: started(launch.key, p))
                else:
                    code = execute(launch, on_start=lambda p: started(launch.key, p))
            except Exception as failure:  # could not start the process at all
                on_done(launch, None, f"{type(failure).__name__}: {failure}")
                return
            finally:
                with lock:
                    live.pop(launch.key, None)
            on_done(launch, code, error)

        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="optimlab-run")
        futures: list[Future] = [pool.submit(work, launch) for launch in launches]
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # an error in on_done (e.g. writing sweep.json) stops the sweep
                if done and more is not None:
                    added = [pool.submit(work, launch) for launch in more()]
                    futures += added
                    pending.update(added)
        except BaseException:
            stopping.set()
            for future in futures:
                future.cancel()
            with lock:
                for process in live.values():
                    if process.poll() is None:
                        process.send_signal(signal.SIGTERM)
            self._drain(futures, live, lock)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _drain(self, futures: list[Future], live: dict, lock: threading.Lock) -> None:
        """Wait for stopped runs to exit (they record their outcome); kill those past the grace period."""
        _, not_done = wait(futures, timeout=self.grace)
        if not_done:
            with lock:
                for process in live.values():
                    if process.poll() is None:
                        process.kill()
            wait(futures)
