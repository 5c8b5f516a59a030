"""Imported by the warm workers' fork server only (its preload), never by the sweep's own process.

The server imports everything a run needs (optimlab.sweep.warm_child) and ignores SIGTERM: a SIGTERM sent to
the sweep's whole process group must reach the runs (which checkpoint and exit 75) without killing the
server, which would lose their exit codes. The server still exits when the sweep process does
(multiprocessing closes its "alive" pipe); each forked run restores SIGTERM's default first thing.
"""

import signal

import optimlab.sweep.warm_child  # noqa: F401

signal.signal(signal.SIGTERM, signal.SIG_IGN)
