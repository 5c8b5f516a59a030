"""A run's record writes on a thread of their own, so that training does not wait for the disk.

Every checkpoint file and summary is written atomically and fsynced (`optimlab.atomic`): a few to ten
milliseconds of waiting for the disk each, three files per checkpoint, a few percent of a short run. The
loop still takes what a write needs itself (the checkpoint's bytes, the summary's values), since the next
steps change the model, and hands the writing here: one write at a time, in order, while training goes on.
`wait()` returns once everything handed over is on disk and raises the error of a write that failed, so a
failed checkpoint stops the run at the next checkpoint or at the end, with the same message and the same
last good checkpoint as a write in the loop would give (a few steps later).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class BackgroundWrites:
    """At most one write in flight, on one thread started at the first write."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def submit(self, write: Callable[[], None]) -> None:
        """Run `write` on the writer thread, after the write before it has finished (and raised, if it failed)."""
        self.wait()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optimlab-records")
        self._pending = self._executor.submit(write)

    def wait(self) -> None:
        """Block until the pending write is done; raise its error if it failed (once)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> Exception | None:
        """Wait for the pending write and stop the thread; returns the write's error instead of raising it
        (the run is already ending: its caller decides which error to report)."""
        failure = None
        try:
            self.wait()
        except Exception as error:  # noqa: BLE001 - handed to the caller, which is ending the run
            failure = error
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        return failure
