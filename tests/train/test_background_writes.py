"""The loop's writer thread: writes in order, one at a time, errors raised once at the next wait."""

import threading

import pytest

from optimlab.train.background_writes import BackgroundWrites


def test_writes_run_in_order_off_the_calling_thread():
    writes, seen = BackgroundWrites(), []
    for i in range(5):
        writes.submit(lambda i=i: seen.append((i, threading.current_thread() is threading.main_thread())))
    writes.wait()
    assert seen == [(i, False) for i in range(5)]
    writes.close()


def test_an_error_is_raised_once_at_the_next_wait_or_submit():
    writes = BackgroundWrites()
    release = threading.Event()

    def fail():
        release.wait(5)
        raise OSError(28, "No space left on device")

    writes.submit(fail)
    release.set()
    with pytest.raises(OSError, match="No space left"):
        writes.submit(lambda: None)  # a new write waits for the one before, and sees its error
    writes.wait()  # raised once
    writes.submit(fail)
    failure = writes.close()  # the run is ending on another error: returned, not raised
    assert isinstance(failure, OSError) and failure.errno == 28
    assert writes.close() is None
