"""Running a sweep: validate every run, skip finished ones, run the rest on a backend, keep `sweep.json`.

    result = run_sweep(load_spec("hypergradient"), backend="local", workers=2)
    result.run_dirs, result.statuses, result.exit_code

Re-running the same sweep is always safe: completed and diverged runs are skipped, interrupted and failed
runs are launched again and resume from their checkpoints, runs whose directory another process holds
are left alone.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimlab.errors import ConfigError
from optimlab.sweep.backends import SWEEP_BACKENDS
from optimlab.sweep.execute import Launch, make_launch, thread_env, threads_per_run, train_command
from optimlab.sweep.expand import Run, expand, sweep_dir
from optimlab.sweep.halving import early_stopping_of, halving_runs, run_halving
from optimlab.sweep.spec import SweepSpec
from optimlab import rundir
from optimlab.rundir import DONE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, read_summary, write_json
from optimlab.sweep.state import BUSY, STATUSES, SweepLock, log_tail, now, outcome, read_sweep_record, scan_status

BACKENDS = tuple(SWEEP_BACKENDS.names())


@dataclass
class SweepResult:
    name: str
    folder: Path  # <root>/<name>, holding sweep.json and logs/
    runs: list[Run]
    statuses: dict[str, str]  # run key -> status
    interrupted: bool = False
    skipped: int = 0  # runs already completed or diverged before this invocation

    @property
    def run_dirs(self) -> list[Path]:
        return [run.run_dir for run in self.runs]

    @property
    def counts(self) -> dict[str, int]:
        return {s: n for s in STATUSES if (n := sum(v == s for v in self.statuses.values()))}

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if all(s in DONE for s in self.statuses.values()) else EXIT_FAILED


@dataclass
class _Record:
    """sweep.json's entry for one run."""

    run: Run
    status: str
    attempts: int = 0
    exit_code: int | None = None
    error: str | None = None
    log: str = ""
    step: int | None = None
    wall_time: float | None = None

    def refresh(self) -> None:
        """Read the progress fields from the run's summary.json (once per change, not per save)."""
        summary = read_summary(self.run.run_dir) or {}
        self.step, self.wall_time = summary.get("step"), summary.get("wall_time")

    def to_json(self) -> dict[str, Any]:
        return {
            "dir": self.run.key,
            "path": str(self.run.run_dir),
            "status": self.status,
            "overrides": list(self.run.overrides),
            "config_hash": self.run.config_hash,
            "attempts": self.attempts,
            "exit_code": self.exit_code,
            "error": self.error,
            "step": self.step,
            "wall_time": self.wall_time,
            "log": self.log,
        }


def make_backend(name: str, *, workers: int, cpus_per_run: int, folder: Path, options: dict | None = None):
    """A backend by name; a missing optional dependency is a ConfigError, raised before any run starts."""
    return SWEEP_BACKENDS.get(name)(workers, cpus_per_run, folder, dict(options or {}))


def run_sweep(
    spec: SweepSpec,
    *,
    root: str | Path = "runs",
    backend: str | Any = "local",
    workers: int = 1,
    extra: Sequence[str] = (),
    cpus_per_run: int | None = None,
    backend_options: dict | None = None,
    command: Callable[[Run], Sequence[str]] = train_command,
    progress: bool = True,
    config_cache: dict | None = None,
    grow: Grow | None = None,
) -> SweepResult:
    """Run `spec` (with `extra` overrides on every run) and return each run's status.

    Every run is validated before any starts (ConfigError names the bad run and key). `backend` is a name
    in BACKENDS or an object with `run(launches, on_done)`. `command(run)` gives the argv of a run (the
    `optimlab train` command by default; tests substitute a stand-in). Each run gets
    `OMP_NUM_THREADS=cpus_per_run`, by default max(1, cores // workers). `config_cache`: see `expand`.

    `grow(runs, running)` lets the sweep grow while it runs: it is called before the first run starts and
    after each run ends, with the sweep's runs and the keys of those started or still to start, and may
    return a larger spec whose new runs join the sweep at once (compare's lr-grid extension). It needs a
    backend whose `run` takes `more` (local, fresh, population).
    """
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    early_stopping = early_stopping_of(spec.data)
    runs = (halving_runs(spec, early_stopping, root, extra) if early_stopping
            else expand(spec, root, extra, cache=config_cache))
    threads = cpus_per_run or threads_per_run(workers)
    folder = sweep_dir(root, spec.name)
    if isinstance(backend, str):
        backend = make_backend(backend, workers=workers, cpus_per_run=threads, folder=folder, options=backend_options)
    lock = SweepLock(folder)
    if not lock.acquire():
        raise ConfigError(f"sweep folder {folder} is in use by another sweep process (see {lock.path})")
    try:
        if early_stopping:  # successive halving: the trials run rung by rung (optimlab.sweep.halving)
            return run_halving(spec, early_stopping, runs, folder, backend, threads, tuple(extra), command,
                               _sigterm_as_interrupt)
        if grow is not None and not getattr(backend, "grows", False):
            raise ConfigError(f"backend {getattr(backend, 'name', type(backend).__name__)!r} cannot add runs to a "
                              "running sweep")
        growth = None if grow is None else _Growth(grow, root, tuple(extra), config_cache)
        return _run(spec, runs, folder, backend, workers, threads, tuple(extra), command, progress, growth)
    finally:
        lock.release()


def _run(spec, runs, folder, backend, workers, threads, extra, command, progress, growth=None) -> SweepResult:
    previous = {r.get("dir"): r for r in read_sweep_record(folder / "sweep.json").get("runs", [])}
    records: dict[str, _Record] = {}

    def add_records(new_runs: list[Run]) -> list[Run]:
        """Records for `new_runs`; returns those to run (not finished, not held by another process)."""
        for run in new_runs:
            old = previous.get(run.key, {})
            records[run.key] = _Record(run, scan_status(run.run_dir), attempts=int(old.get("attempts") or 0),
                                       exit_code=old.get("exit_code"), error=old.get("error"), log=f"logs/{run.key}.log")
            records[run.key].refresh()
        return [run for run in new_runs if records[run.key].status not in (*DONE, BUSY)]

    runs = list(runs)
    todo = add_records(runs)
    header = {
        "name": spec.name,
        "description": spec.description,
        "source": spec.source,
        "spec": spec.data or None,
        "extra": list(extra),
        "backend": getattr(backend, "name", type(backend).__name__),
        "workers": workers,
        "cpus_per_run": threads,
        "started": now(),
    }
    write_lock = threading.Lock()

    def save(finished: bool = False) -> None:
        entries = [records[run.key].to_json() for run in runs]
        counts = {s: n for s in STATUSES if (n := sum(e["status"] == s for e in entries))}
        write_json(folder / "sweep.json",
                          {**header, "updated": now(), "finished": finished, "counts": counts, "runs": entries})

    env = thread_env(threads)
    by_key = {run.key: run for run in todo}
    running = set(by_key)  # started or still to start

    def grown() -> list[Run]:
        """The runs to start that `growth` adds now (none without one); the sweep's runs and header grow.
        Called by one thread at a time (before the runs, then the backend's); `grow` and the expansion run
        outside the lock, so that runs ending meanwhile are recorded and their workers go on."""
        added: list[Run] = []
        while growth is not None:
            with write_lock:
                current, active = list(runs), set(running)
            larger = growth.grow(current, active)
            if larger is None:
                break
            new_runs = [run for run in growth.expand(larger) if run.key not in records]
            if not new_runs:
                break
            with write_lock:
                header["spec"] = larger.data or None
                runs.extend(new_runs)
                pending = add_records(new_runs)
                by_key.update((run.key, run) for run in pending)
                running.update(run.key for run in pending)
                if bar is not None:
                    bar.total = len(runs)
                    save()
            added += pending
            if pending:  # the new runs must end before the sweep can grow again
                break
        return added

    def skipped() -> int:
        """Runs finished before this invocation: done, and not started by it."""
        return sum(records[run.key].status in DONE and run.key not in by_key for run in runs)

    bar = None
    todo += grown()
    bar = _progress(spec.name, len(runs), skipped(), enabled=progress)
    launches = [make_launch(run, command, env, folder / "logs") for run in todo]

    def more() -> list[Launch]:
        return [make_launch(run, command, env, folder / "logs") for run in grown()]

    def on_done(launch: Launch, code: int | None, error: str | None) -> None:
        run = by_key[launch.key]
        status, detail = outcome(run.run_dir, code, error or log_tail(launch.log))
        with write_lock:
            running.discard(run.key)
            record = records[run.key]
            record.status, record.exit_code, record.error = status, code, detail
            record.attempts += 1
            record.refresh()
            save()
            if status not in DONE:
                bar.write(f"optimlab sweep: {status}: {run.key}: {detail or ''}".rstrip(": "), file=sys.stderr)
            bar.set_postfix_str(_postfix(records), refresh=False)
            bar.update(1)

    interrupted = False
    with write_lock:
        save()
    try:
        with _sigterm_as_interrupt():
            if launches:
                backend.run(launches, on_done, **({"more": more} if growth is not None else {}))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        with write_lock:
            save(finished=not interrupted)
        bar.close()
    result = SweepResult(spec.name, folder, runs, {k: r.status for k, r in records.items()}, interrupted, skipped())
    counts = ", ".join(f"{n} {s}" for s, n in result.counts.items())
    note = " (interrupted; run the same command again to resume)" if interrupted else ""
    print(f"optimlab sweep {spec.name}: {len(runs)} runs: {counts}{note}; {folder / 'sweep.json'}", file=sys.stderr)
    return result


#: `run_sweep`'s `grow`: (the sweep's runs, keys of runs started or to start) -> a larger spec, or None.
Grow = Callable[[list[Run], set[str]], "SweepSpec | None"]


@dataclass
class _Growth:
    """A growing sweep's callback and how to expand the specs it returns."""

    grow: Grow
    root: str | Path
    extra: tuple[str, ...]
    cache: dict | None

    def expand(self, spec: SweepSpec) -> list[Run]:
        return expand(spec, self.root, self.extra, cache=self.cache)


def _postfix(records: dict[str, _Record]) -> str:
    bad = {s: sum(r.status == s for r in records.values()) for s in (rundir.FAILED, rundir.INTERRUPTED, rundir.DIVERGED)}
    return " ".join(f"{s}={n}" for s, n in bad.items() if n)


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, text: str, refresh: bool = True) -> None: ...
    def close(self) -> None: ...

    @staticmethod
    def write(text: str, file=None) -> None:
        print(text, file=file or sys.stderr)


def _progress(name: str, total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"sweep {name}", unit="run", file=sys.stderr,
                dynamic_ncols=True, mininterval=1.0, smoothing=0.0)


@contextmanager
def _sigterm_as_interrupt():
    """In the main thread, SIGTERM stops the sweep like Ctrl-C: runs checkpoint, the record is kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def dry_run(spec: SweepSpec, *, root: str | Path = "runs", extra: Sequence[str] = ()) -> list[tuple[Run, str]]:
    """Validate and list the runs of `spec` with their current status, starting nothing."""
    early_stopping = early_stopping_of(spec.data)
    runs = halving_runs(spec, early_stopping, root, extra) if early_stopping else expand(spec, root, extra)
    return [(run, scan_status(run.run_dir)) for run in runs]

