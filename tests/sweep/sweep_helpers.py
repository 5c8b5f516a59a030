"""Helpers shared by the sweep tests."""

import os
import sys
import time
from pathlib import Path

FAKE = Path(__file__).with_name("fake_train.py")


def fake_command(modes: dict[int, str] | None = None, steps: int = 20):
    """A `command(run)` running fake_train.py; the run's seed picks its mode (default ok)."""
    modes = modes or {}

    def command(run):
        return [sys.executable, str(FAKE), str(run.run_dir), modes.get(run.config.seed, "ok"), str(steps)]

    return command


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.05, describe=None):
    """Poll until predicate() is truthy and return its value; fail the test after `timeout` seconds.

    Tests wait on exactly the condition their assertions need, never on a sleep. `describe()` (optional)
    says what was seen instead, for the failure message.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    seen = f"; {describe()}" if describe is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}{seen}")


def describe_dir(path: Path, log: Path | None = None) -> str:
    """The files below `path` and the end of `log`: what a timed-out wait saw."""
    files = sorted(str(p.relative_to(path)) for p in Path(path).rglob("*")) if Path(path).exists() else []
    tail = Path(log).read_text()[-600:] if log is not None and Path(log).exists() else ""
    return f"files under {path}: {files}; log tail: {tail!r}"


def pids_with_arg(text: str, cwd: Path | None = None) -> list[int]:
    """Processes whose command line contains `text` (Linux /proc), and that run in `cwd` when it is given:
    a relative path in `text` is the same in every test session running on the machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmdline and (cwd is None or Path(os.readlink(entry / "cwd")) == Path(cwd).resolve()):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def pids_holding(path: Path, exclude: tuple[int, ...] = ()) -> list[int]:
    """Processes with `path` open (Linux /proc): the trainer of a run holds `<run_dir>/.lock`, whether it is a
    fresh subprocess or a run forked by a warm worker (whose command line is the fork server's)."""
    target = str(Path(path).resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), *exclude):
            continue
        try:
            if any(os.readlink(fd) == target for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


FAKE_LR = Path(__file__).with_name("fake_lr_train.py")


def fake_lr_command(peaks: dict[str, float]):
    """A `command(run)` running fake_lr_train.py: each optimizer's accuracy peaks at its lr in `peaks`."""

    def command(run):
        cfg = run.config
        return [sys.executable, str(FAKE_LR), str(run.run_dir), cfg.task.name, cfg.optim.name, repr(cfg.optim.kwargs["lr"]),
                str(cfg.seed), repr(peaks[cfg.optim.name])]

    return command
