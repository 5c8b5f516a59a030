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


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):
    """Poll until predicate() is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


def pids_with_arg(text: str) -> list[int]:
    """Processes whose command line contains `text` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found
